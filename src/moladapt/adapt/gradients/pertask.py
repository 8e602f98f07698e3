"""Per-task gradients of the shared parameters, writing a combined direction back, and logs.

A training step with gradient surgery:

.. code-block:: python

    shared = list(model.encoder.parameters())
    losses = [target_loss, *aux_losses]                  # T scalar losses, one graph
    grads = per_task_gradients(shared, losses)           # [T, P]
    result = combiner(grads, target=0, weights=w)        # CombineResult
    optimizer.zero_grad(set_to_none=True)
    sum(losses).backward(inputs=task_specific_params)    # heads: their own losses only
    assign_direction(shared, result.direction)           # .grad of the shared params
    optimizer.step()
    log.update(result)

Only the *shared* parameters belong in ``params``: a task-specific head receives the
gradient of its own loss alone, which the plain summed backward already gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from moladapt.adapt.gradients.base import CombineResult
from moladapt.utils import cap_heap_retention


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    return torch.cat([
        (torch.zeros_like(p) if g is None else g).reshape(-1)
        for g, p in zip(grads, params, strict=True)
    ])


def per_task_gradients(
    model_params: list[Tensor], losses: Sequence[Tensor], retain_graph: bool = True
) -> Tensor:
    """The gradient of each loss w.r.t. the shared parameters, one ``autograd.grad`` per task.

    .. math:: G_{k,:} = \\operatorname{vec}\\big(\\nabla_\\theta \\mathcal L_k\\big), \\quad
        k = 1..T

    Args:
        model_params: the P shared parameters θ (as ``list(encoder.parameters())``),
            flattened in this order; parameters a loss does not reach get zeros.
        losses: T scalar losses sharing one graph.
        retain_graph: keep the graph after the last task, so the caller can still
            back-propagate (e.g. to the task-specific heads). The graph is always kept
            between tasks.

    Returns:
        ``[T, P]`` (detached; ``P = sum(p.numel())``), dtype/device of the parameters.

    ``.grad`` of the parameters is neither read nor written.
    """
    params = list(model_params)
    if not params:
        raise ValueError("model_params is empty")
    if len(losses) == 0:
        raise ValueError("need at least one loss")
    cap_heap_retention()  # [T, P] buffers every step: keep freed ones from piling up
    rows = []
    for k, loss in enumerate(losses):
        if loss.ndim != 0:
            raise ValueError(f"loss {k} must be a scalar, got shape {tuple(loss.shape)}")
        keep = retain_graph or k < len(losses) - 1
        grads = torch.autograd.grad(loss, params, retain_graph=keep, allow_unused=True)
        rows.append(_flat(grads, params))
    return torch.stack(rows)


def per_task_gradients_func(
    model: nn.Module,
    loss_fn: Callable[[Any], Tensor],
    *inputs: Any,
    param_names: Sequence[str] | None = None,
    vectorize: bool = True,
) -> Tensor:
    """:func:`per_task_gradients` with ``torch.func``: one forward, all T backwards batched.

    ``losses = loss_fn(model(*inputs))`` must be a ``[T]`` vector. The per-task gradients
    are the rows of the Jacobian :math:`\\partial \\mathcal L / \\partial \\theta`, computed as
    ``vmap(vjp_fn)(I_T)`` (``functional_call`` + ``vjp`` + ``vmap`` over the T one-hot
    cotangents). If ``vmap`` has no batching rule for an op of the model (or
    ``vectorize=False``), it falls back to calling ``vjp_fn`` once per task.

    Args:
        param_names: the shared parameters (names from ``model.named_parameters()``), in
            the column order of the result; default every parameter that requires grad.

    Returns ``[T, P]`` (detached). Side effects are those of one forward pass (e.g. the
    BatchNorm running statistics update in train mode).
    """
    from torch.func import functional_call, vjp, vmap

    cap_heap_retention()
    named = dict(model.named_parameters())
    names = (
        list(param_names)
        if param_names is not None
        else [n for n, p in named.items() if p.requires_grad]
    )
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"unknown parameters: {missing}")
    shared = {n: named[n].detach() for n in names}
    others = {n: p.detach() for n, p in named.items() if n not in shared}
    buffers = dict(model.named_buffers())

    def losses_of(params: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        # Buffers are cloned inside the transform (mutating captured tensors is not
        # allowed) and copied back afterwards, so e.g. BatchNorm statistics still update.
        bufs = {n: b.clone() for n, b in buffers.items()}
        return loss_fn(functional_call(model, {**others, **params, **bufs}, inputs)), bufs

    losses, vjp_fn, new_buffers = vjp(losses_of, shared, has_aux=True)
    with torch.no_grad():
        for n, b in buffers.items():
            b.copy_(new_buffers[n])
    if losses.ndim != 1:
        raise ValueError(f"loss_fn must return a [T] vector, got shape {tuple(losses.shape)}")
    eye = torch.eye(losses.shape[0], dtype=losses.dtype, device=losses.device)
    grads: dict[str, Tensor] | None = None
    if vectorize:
        try:
            (grads,) = vmap(vjp_fn)(eye)
        except (RuntimeError, NotImplementedError):
            grads = None
    if grads is None:
        per_task = [vjp_fn(row)[0] for row in eye]
        grads = {n: torch.stack([g[n] for g in per_task]) for n in names}
    return torch.cat([grads[n].reshape(eye.shape[0], -1) for n in names], dim=1).detach()


def assign_direction(params: Sequence[Tensor], direction: Tensor, accumulate: bool = False) -> None:
    """Write the flat ``[P]`` ``direction`` into ``p.grad`` of ``params`` (same order as
    :func:`per_task_gradients`), replacing what is there (``accumulate=True`` adds to it)."""
    params = list(params)
    total = sum(p.numel() for p in params)
    if direction.ndim != 1 or direction.numel() != total:
        raise ValueError(f"direction must be [{total}], got shape {tuple(direction.shape)}")
    direction = direction.detach()
    offset = 0
    for p in params:
        n = p.numel()
        chunk = direction[offset : offset + n].view_as(p).to(dtype=p.dtype, device=p.device)
        offset += n
        if accumulate and p.grad is not None:
            p.grad.add_(chunk)
        else:
            p.grad = chunk.clone()


class GradientLog:
    """Accumulates per-step cosines, conflicts and coefficients of :class:`CombineResult` s.

    Args:
        target: the target row (excluded from the per-task summary).
        task_names: names of the T rows (default ``task0 .. task{T-1}``).
    """

    def __init__(self, target: int = 0, task_names: Sequence[str] | None = None) -> None:
        self.target = int(target)
        self.task_names = None if task_names is None else list(task_names)
        self._cosines: list[np.ndarray] = []
        self._conflicting: list[np.ndarray] = []
        self._coefficients: list[np.ndarray] = []

    def update(self, result: CombineResult) -> None:
        cos = result.cosines.detach().float().cpu().numpy()
        if self._cosines and cos.shape != self._cosines[0].shape:
            raise ValueError(f"expected {self._cosines[0].shape[0]} tasks, got {cos.shape[0]}")
        if self.task_names is not None and len(self.task_names) != cos.shape[0]:
            raise ValueError(f"{len(self.task_names)} task names for {cos.shape[0]} tasks")
        self._cosines.append(cos)
        self._conflicting.append(result.conflicting.detach().cpu().numpy().astype(bool))
        self._coefficients.append(result.coefficients.detach().float().cpu().numpy())

    def __len__(self) -> int:
        return len(self._cosines)

    def cosines(self) -> np.ndarray:
        """``[steps, T]`` cos(g_t, g_k) of every logged step."""
        return np.stack(self._cosines) if self._cosines else np.zeros((0, 0), np.float32)

    def conflicting(self) -> np.ndarray:
        """``[steps, T]`` bool, the conflicts of every logged step."""
        return np.stack(self._conflicting) if self._conflicting else np.zeros((0, 0), bool)

    def summary(self) -> dict[str, Any]:
        """Per auxiliary task: mean/std/min cosine, fraction of conflicting steps, mean
        coefficient. JSON-friendly: ``{"steps": n, "target": name, "tasks": {name: {...}}}``."""
        steps = len(self)
        if steps == 0:
            return {"steps": 0, "target": None, "tasks": {}}
        cos, conf, coef = self.cosines(), self.conflicting(), np.stack(self._coefficients)
        num_tasks = cos.shape[1]
        names = self.task_names or [f"task{k}" for k in range(num_tasks)]
        target = self.target % num_tasks
        tasks = {
            names[k]: {
                "mean_cosine": float(cos[:, k].mean()),
                "std_cosine": float(cos[:, k].std()),
                "min_cosine": float(cos[:, k].min()),
                "conflict_fraction": float(conf[:, k].mean()),
                "mean_coefficient": float(coef[:, k].mean()),
            }
            for k in range(num_tasks)
            if k != target
        }
        return {"steps": steps, "target": names[target], "tasks": tasks}


def benchmark_per_task_gradients(
    model: nn.Module,
    loss_fn: Callable[[Any], Tensor],
    *inputs: Any,
    param_names: Sequence[str],
    steps: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """ms/step of forward + per-task gradients: the ``autograd.grad`` loop vs ``torch.func``.

    ``loss_fn(model(*inputs))`` is a ``[T]`` loss vector. Returns ``loop_ms``, ``func_ms``
    (vmap over tasks, falling back to a vjp loop), ``max_abs_diff`` between the two results
    and ``num_params`` / ``num_tasks``.
    """
    named = dict(model.named_parameters())
    params = [named[n] for n in param_names]

    def loop() -> Tensor:
        losses = loss_fn(model(*inputs))
        return per_task_gradients(params, list(losses), retain_graph=False)

    def func() -> Tensor:
        return per_task_gradients_func(model, loss_fn, *inputs, param_names=param_names)

    def timed(fn: Callable[[], Tensor]) -> tuple[float, Tensor]:
        out = fn()
        for _ in range(max(warmup - 1, 0)):
            fn()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t0) / steps * 1e3, out

    loop_ms, g_loop = timed(loop)
    func_ms, g_func = timed(func)
    return {
        "loop_ms": loop_ms,
        "func_ms": func_ms,
        "max_abs_diff": float((g_loop - g_func).abs().max()),
        "num_params": float(g_loop.shape[1]),
        "num_tasks": float(g_loop.shape[0]),
    }
