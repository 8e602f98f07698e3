"""Bi-level optimisation of task weights (transfer ratios) for auxiliary / source tasks.

Dey & Ning, J Cheminform 16:85, 2024 (BLO and BLO+RCGrad); Lee et al., "Scalable
Multi-Task Transfer Learning for Molecular Property Prediction", 2024 (learned transfer
ratios between source and target properties); the hypergradient follows Lorraine, Vicol &
Duvenaud, "Optimizing Millions of Hyperparameters by Implicit Differentiation", AISTATS 2020.

**Problem.** T tasks, row 0 the target, rows 1..T-1 the source tasks (auxiliary SSL
objectives and/or supervised source properties). With weights :math:`w \\in \\mathbb R^{T-1}`:

.. math::
    \\theta^*(w) = \\arg\\min_\\theta \\mathcal L_T(\\theta, w)
    = \\mathcal L_0(\\theta) + \\sum_{i \\ge 1} w_i \\mathcal L_i(\\theta),
    \\qquad \\min_w \\mathcal L_V(\\theta^*(w))

(:math:`\\mathcal L_V`: the target's loss on validation data; the target's weight is fixed at
1). ``w = sigmoid(phi)`` (each in [0, 1]) or ``w = softmax(phi)`` (the simplex, sum 1): the
outer optimiser updates the logits ``phi``.

**Inner loop** (``inner_steps`` per outer step, online: the model is never reset): an
optimiser step along the direction

.. math:: d(\\theta, w) = [\\,\\mathrm{combiner}(G_s, 0, \\bar w);\\ \\bar w^\\top G_h\\,],
    \\qquad \\bar w = (1, w)

with :math:`G = [\\nabla_\\theta \\mathcal L_0; \\dots]` split into the shared columns
:math:`G_s` and the task-specific (head) columns :math:`G_h`. Without a combiner
(``combiner=None``) this is :math:`\\nabla_\\theta \\mathcal L_T`; with ``combiner="rcgrad"`` it
is BLO+RCGrad (the current weights are the combiner's ``weights``).

**Hypergradient.** By the implicit function theorem at a stationary point
:math:`d(\\theta^*, w) = 0`:

.. math::
    \\frac{d\\mathcal L_V}{dw} = -\\Big(\\frac{\\partial d}{\\partial w}\\Big)^{\\!\\top}
    H^{-1} v, \\qquad v = \\nabla_\\theta \\mathcal L_V, \\quad
    H = \\nabla^2_\\theta \\mathcal L_T

* ``"neumann"`` (default): :math:`p = \\alpha \\sum_{j=0}^{J} (I - \\alpha H)^j v \\approx
  H^{-1} v` with Hessian-vector products of the training loss (double backward; converges
  when the eigenvalues of H lie in :math:`(0, 2/\\alpha)`). Lorraine et al.'s Algorithm
  omits the leading :math:`\\alpha`; it is kept here so that :math:`p \\to H^{-1} v`, which
  only rescales the hypergradient.
* ``"exact"``: the dense Hessian solved (tiny models only, for checking).
* ``"unrolled"``: one inner step unrolled, :math:`\\theta' = \\theta - \\eta\\, d(\\theta, w)`,
  :math:`d\\mathcal L_V(\\theta')/dw = -(\\partial d/\\partial w)^\\top \\eta\\, \\nabla
  \\mathcal L_V(\\theta')` (exact for an SGD step of size :math:`\\eta` = ``inner_lr``).

:math:`(\\partial d/\\partial w)^\\top p` is computed by differentiating
:math:`d(G, \\bar w)^\\top p` in :math:`w` through the combiner with :math:`G` held fixed (the
combiners are differentiable in their weights); without a combiner its row i is
:math:`g_i^\\top p`, i.e. :math:`\\partial^2 \\mathcal L_T / \\partial w_i \\partial \\theta`
as in Lorraine et al. With a combiner, :math:`H` is still the Hessian of
:math:`\\mathcal L_T` (the Jacobian of the combined direction is neither symmetric nor cheap):
an approximation, exact for ``sum``.

All second-order quantities are computed on one fresh training batch (and the validation
loss on the validation set) per outer step. Validation losses run the model in eval mode
(BatchNorm running statistics, no dropout), as predictions do.

**Problems.** :class:`BiLevelProblem` is the interface (parameters, training losses,
validation loss); :class:`GraphTaskProblem` builds it for molecules: (a) auxiliary SSL
objectives and (b) supervised source properties (extra label columns of a multi-task table,
each with its own output of a linear source head; missing labels ignored), target = one
column. :class:`CallableProblem` wraps plain functions (tests, toy problems).
:class:`BiLevelTaskWeighting` runs the optimisation.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from moladapt.adapt.auxiliary import (
    ObjectiveSpec,
    build_aux_objectives,
    featurizer_of,
    objective_names,
    safe_task_gradients,
)
from moladapt.adapt.gradients import GradientCombiner, GradientLog, assign_direction, build_combiner
from moladapt.data.featurize import Featurizer
from moladapt.data.sources import CLASSIFICATION
from moladapt.evaluate.metrics import MetricReport, compute_metrics
from moladapt.models.fingerprint import graph_part
from moladapt.models.heads import MolecularModel, PredictionHead
from moladapt.pretrain.trainer import embedding_spread, first_collapse
from moladapt.training import label_mean_std, masked_loss, predict
from moladapt.types import MolGraphs
from moladapt.utils import adam

__all__ = [
    "HYPERGRADIENTS",
    "WEIGHTINGS",
    "BiLevelProblem",
    "BiLevelTaskWeighting",
    "CallableProblem",
    "GraphTaskProblem",
    "exact_hypergradient",
    "hypergradient",
    "inner_direction",
    "logits_from_weights",
    "neumann_hypergradient",
    "unrolled_hypergradient",
    "weights_from_logits",
]

WEIGHTINGS = ("sigmoid", "softmax")
HYPERGRADIENTS = ("neumann", "unrolled", "exact")


# --- weight parameterisations ------------------------------------------------------------


def weights_from_logits(phi: Tensor, weighting: str = "sigmoid") -> Tensor:
    """``sigmoid(phi)`` (each weight in [0, 1]) or ``softmax(phi)`` (the simplex)."""
    if weighting == "sigmoid":
        return torch.sigmoid(phi)
    if weighting == "softmax":
        return torch.softmax(phi, dim=-1)
    raise ValueError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")


def logits_from_weights(weights: Tensor, weighting: str = "sigmoid", eps: float = 1e-6) -> Tensor:
    """The logits giving ``weights`` (clamped into the open domain; softmax: ``log w``)."""
    if weighting == "sigmoid":
        w = weights.clamp(eps, 1 - eps)
        return torch.log(w) - torch.log1p(-w)
    if weighting == "softmax":
        if not math.isclose(float(weights.sum()), 1.0, rel_tol=1e-5):
            raise ValueError(f"softmax weights must sum to 1, got {float(weights.sum())}")
        return torch.log(weights.clamp_min(eps))
    raise ValueError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")


# --- problems ----------------------------------------------------------------------------


class BiLevelProblem(ABC):
    """What the bi-level optimisation needs to know about a model and its tasks.

    ``parameters() = shared_parameters() + task_parameters()``: the shared ones are handed to
    the combiner; the task-specific ones (heads) get the weighted sum of their tasks'
    gradients. ``task_names[0]`` is the target.
    """

    task_names: list[str]

    @abstractmethod
    def shared_parameters(self) -> list[Tensor]: ...

    def task_parameters(self) -> list[Tensor]:
        return []

    def parameters(self) -> list[Tensor]:
        return [*self.shared_parameters(), *self.task_parameters()]

    @abstractmethod
    def train_losses(self) -> Tensor:
        """``[T]`` losses (target first) on a (fresh) training batch, with their graph."""

    @abstractmethod
    def valid_loss(self) -> Tensor:
        """The target's validation loss (scalar, with its graph)."""


class CallableProblem(BiLevelProblem):
    """A :class:`BiLevelProblem` from functions of the (captured) parameters.

    Args:
        shared: the shared parameters.
        train_losses: ``() -> [T]`` losses, target first.
        valid_loss: ``() -> scalar``.
        task_parameters: task-specific parameters (default none).
        task_names: T names (default ``target, task1, ...``).
    """

    def __init__(
        self,
        shared: Sequence[Tensor],
        train_losses: Callable[[], Tensor],
        valid_loss: Callable[[], Tensor],
        task_parameters: Sequence[Tensor] = (),
        task_names: Sequence[str] | None = None,
    ) -> None:
        self._shared, self._specific = list(shared), list(task_parameters)
        self._train, self._valid = train_losses, valid_loss
        if task_names is None:
            num = int(train_losses().shape[0])
            task_names = ["target", *[f"task{i}" for i in range(1, num)]]
        self.task_names = list(task_names)

    def shared_parameters(self) -> list[Tensor]:
        return self._shared

    def task_parameters(self) -> list[Tensor]:
        return self._specific

    def train_losses(self) -> Tensor:
        return self._train()

    def valid_loss(self) -> Tensor:
        return self._valid()


class GraphTaskProblem(BiLevelProblem):
    """Target column(s) + supervised source columns + auxiliary objectives on molecules.

    Args:
        model: encoder + target head with one output per target column (trained in place).
        graphs: the molecules; ``y`` ``[M, C]`` labels aligned with them (NaN = missing).
        train_idx, valid_idx: molecules for the inner loop and for :math:`\\mathcal L_V`.
        target: the target column of ``y``, or several: one target *task* whose loss is the
            masked loss over all of them (a multi-task dataset such as ClinTox or Tox21
            adapted with auxiliary objectives).
        source_tasks: source columns of ``y`` (a linear ``source_head`` with one output
            each is created, seeded).
        objectives: built auxiliary objectives (``nn.ModuleList``), in task order after the
            sources.
        task_type: ``classification`` (masked BCE) or ``regression`` (masked MSE on
            columns standardised with the training mean / std).
        batch_size: training molecules per batch (drawn without replacement, seeded).
        valid_batch_size: validation molecules per outer step (``None``: all of them).
        column_names: names of ``y``'s columns (default ``col{c}``).
        seed: batches, source-head initialisation, the objectives' corruptions.
    """

    def __init__(
        self,
        model: MolecularModel,
        graphs: MolGraphs,
        y: np.ndarray,
        train_idx: np.ndarray,
        valid_idx: np.ndarray,
        target: int | Sequence[int] = 0,
        source_tasks: Sequence[int] = (),
        objectives: nn.ModuleList | None = None,
        task_type: str = CLASSIFICATION,
        batch_size: int = 32,
        valid_batch_size: int | None = None,
        column_names: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        targets = [int(target)] if np.ndim(target) == 0 else [int(c) for c in target]  # type: ignore[union-attr]
        if not targets:
            raise ValueError("need at least one target column")
        if model.head.num_tasks != len(targets):
            raise ValueError(f"the model's head must have one output per target column "
                             f"({len(targets)}), got {model.head.num_tasks}")
        self.num_targets = len(targets)
        cols = [*targets, *[int(c) for c in source_tasks]]
        for c in cols:
            if not 0 <= c < y.shape[1]:
                raise IndexError(f"column {c} out of range for y with {y.shape[1]} columns")
        if len(set(cols)) != len(cols):
            raise ValueError(f"target and source columns must be distinct, got {cols}")
        names = list(column_names) if column_names is not None else [f"col{c}" for c in range(y.shape[1])]
        self.model, self.graphs, self.task_type = model, graphs, task_type
        self.train_idx = np.asarray(train_idx, dtype=np.int64)
        self.valid_idx = np.asarray(valid_idx, dtype=np.int64)
        if len(self.train_idx) < 2 or len(self.valid_idx) < 1:
            raise ValueError("need at least 2 training and 1 validation molecules")
        self.columns = cols
        self.y = y
        if task_type == CLASSIFICATION:
            self.mean, self.std = None, None
            self.y_fit = y[:, cols]
        else:
            self.mean, self.std = label_mean_std(y[self.train_idx][:, cols])
            self.std = self.std + 1e-8
            self.y_fit = (y[:, cols] - self.mean) / self.std
        ref = next(iter(model.parameters()))
        self.source_head: PredictionHead | None = None
        if len(cols) > self.num_targets:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                head = PredictionHead(model.encoder.out_dim, len(cols) - self.num_targets)
            self.source_head = head.to(device=ref.device, dtype=ref.dtype)
        self.objectives = objectives if objectives is not None else nn.ModuleList()
        target_name = "+".join(names[c] for c in targets)
        self.task_names = ([target_name] + [names[c] for c in cols[self.num_targets:]]
                           + objective_names(self.objectives))
        self.batch_size = int(batch_size)
        self.valid_batch_size = valid_batch_size
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device=ref.device)
        self.generator.manual_seed(int(seed))

    def shared_parameters(self) -> list[Tensor]:
        return [p for p in self.model.encoder.parameters() if p.requires_grad]

    def task_parameters(self) -> list[Tensor]:
        mods: list[nn.Module] = [self.model.head, self.objectives]
        if self.source_head is not None:
            mods.append(self.source_head)
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def _batch(self, idx: np.ndarray):
        ref = next(iter(self.model.parameters()))
        batch = self.graphs.collate(idx, self.y_fit).to(ref.device)
        return batch, batch.y.to(ref.dtype)  # type: ignore[union-attr]

    def train_losses(self) -> Tensor:
        n = min(self.batch_size, len(self.train_idx))
        idx = np.sort(self.rng.choice(self.train_idx, size=n, replace=False))
        batch, y = self._batch(idx)
        self.model.train()
        self.objectives.train()
        z = self.model.encoder(batch)
        nt = self.num_targets
        losses = [masked_loss(self.model.head(z), y[:, :nt], self.task_type)]
        if self.source_head is not None:
            out = self.source_head(z)
            losses += [masked_loss(out[:, j : j + 1], y[:, nt + j : nt + j + 1], self.task_type)
                       for j in range(out.shape[1])]
        losses += [obj(graph_part(self.model.encoder), batch, self.generator) for obj in self.objectives]
        return torch.stack(losses)

    def valid_loss(self) -> Tensor:
        idx = self.valid_idx
        if self.valid_batch_size is not None and len(idx) > self.valid_batch_size:
            idx = np.sort(self.rng.choice(idx, size=int(self.valid_batch_size), replace=False))
        batch, y = self._batch(idx)
        was_training = self.model.training
        self.model.eval()
        try:
            return masked_loss(self.model(batch), y[:, : self.num_targets], self.task_type)
        finally:
            self.model.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy({
            "model": self.model.state_dict(), "objectives": self.objectives.state_dict(),
            "source_head": None if self.source_head is None else self.source_head.state_dict(),
        })

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.objectives.load_state_dict(state["objectives"])
        if self.source_head is not None:
            self.source_head.load_state_dict(state["source_head"])


# --- directions and hypergradients ---------------------------------------------------------


def _full_weights(weights: Tensor, like: Tensor) -> Tensor:
    """``(1, w)``: the target's weight fixed at 1."""
    weights = weights.to(dtype=like.dtype, device=like.device)
    return torch.cat([torch.ones(1, dtype=like.dtype, device=like.device), weights])


def inner_direction(
    grads: Tensor, num_shared: int, weights: Tensor, combiner: GradientCombiner | None = None
) -> Tensor:
    """``[P]`` update direction from per-task gradients ``grads [T, P]`` (module docstring).

    ``weights``: ``[T - 1]`` source weights (differentiable); the first ``num_shared``
    columns are the shared parameters (combined), the rest task-specific (weighted sum).
    """
    wf = _full_weights(weights, grads)
    shared, specific = grads[:, :num_shared], grads[:, num_shared:]
    if combiner is None:
        d_shared = wf @ shared
    else:
        d_shared = combiner(shared, target=0, weights=wf).direction
    return torch.cat([d_shared, wf @ specific])


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    return torch.cat([
        (torch.zeros_like(p) if g is None else g).reshape(-1)
        for g, p in zip(grads, params, strict=True)
    ])


def _flat_grad(out: Tensor, params: Sequence[Tensor], **kwargs: Any) -> Tensor:
    if not out.requires_grad:
        return _flat([None] * len(params), params)
    return _flat(torch.autograd.grad(out, list(params), allow_unused=True, **kwargs), params)


def _mixed_term(
    grads: Tensor, num_shared: int, weights: Tensor, p: Tensor, combiner: GradientCombiner | None
) -> Tensor:
    """:math:`-(\\partial d / \\partial w)^\\top p` with the per-task gradients held fixed."""
    w = weights.detach().clone().requires_grad_(True)
    d = inner_direction(grads.detach(), num_shared, w, combiner)
    (g,) = torch.autograd.grad(d @ p.detach(), w, allow_unused=True)
    return -(torch.zeros_like(w) if g is None else g).detach()


class _TrainingHessian:
    """Hessian-vector products of :math:`\\mathcal L_T = (1, w)^\\top L` at the current θ."""

    def __init__(self, losses: Tensor, params: Sequence[Tensor], weights: Tensor) -> None:
        self.params = list(params)
        total = (_full_weights(weights.detach(), losses) * losses).sum()
        if total.requires_grad:
            grads = torch.autograd.grad(total, self.params, create_graph=True, allow_unused=True)
        else:
            grads = [None] * len(self.params)
        live = [(g, p) for g, p in zip(grads, self.params, strict=True)
                if g is not None and g.requires_grad]
        self._outputs = [g for g, _ in live]
        self._slices: list[tuple[int, int] | None] = []
        offset = 0
        live_ids = {id(p) for _, p in live}
        for p in self.params:
            n = p.numel()
            self._slices.append((offset, offset + n) if id(p) in live_ids else None)
            offset += n
        self.size = offset

    def __call__(self, vec: Tensor) -> Tensor:
        if not self._outputs:
            return torch.zeros_like(vec)
        cotangents = [vec[s[0]:s[1]].view_as(p) for s, p in zip(self._slices, self.params, strict=True)
                      if s is not None]
        hv = torch.autograd.grad(self._outputs, self.params, grad_outputs=cotangents,
                                 retain_graph=True, allow_unused=True)
        return _flat(hv, self.params).detach()

    def dense(self) -> Tensor:
        eye = torch.eye(self.size, dtype=self._dtype(), device=self._device())
        return torch.stack([self(e) for e in eye])

    def _dtype(self) -> torch.dtype:
        return self.params[0].dtype

    def _device(self) -> torch.device:
        return self.params[0].device


def _num_shared_columns(problem: BiLevelProblem) -> int:
    """Columns of the flattened ``[T, P]`` gradients that belong to the shared parameters."""
    return sum(p.numel() for p in problem.shared_parameters())


def _check_weights(problem: BiLevelProblem, weights: Tensor) -> Tensor:
    weights = torch.as_tensor(weights).detach().reshape(-1)
    if weights.numel() != len(problem.task_names) - 1:
        raise ValueError(f"{weights.numel()} weights for {len(problem.task_names) - 1} source tasks")
    return weights


def neumann_hypergradient(
    problem: BiLevelProblem,
    weights: Tensor,
    combiner: GradientCombiner | None = None,
    alpha: float = 0.01,
    terms: int = 5,
) -> Tensor:
    """:math:`dL_V/dw` by the implicit function theorem with a Neumann-series :math:`H^{-1}v`.

    :math:`p = \\alpha \\sum_{j=0}^{J} (I - \\alpha H)^j v`, ``terms`` = J; returns ``[T-1]``.
    """
    weights = _check_weights(problem, weights)
    params = problem.parameters()
    v = _flat_grad(problem.valid_loss(), params).detach()
    losses = problem.train_losses()
    grads = safe_task_gradients(params, list(losses))
    hvp = _TrainingHessian(losses, params, weights)
    cur, acc = v, v.clone()
    for _ in range(int(terms)):
        cur = cur - alpha * hvp(cur)
        acc = acc + cur
    p = alpha * acc
    return _mixed_term(grads, _num_shared_columns(problem), weights, p, combiner)


def exact_hypergradient(
    problem: BiLevelProblem,
    weights: Tensor,
    combiner: GradientCombiner | None = None,
    max_params: int = 4096,
) -> Tensor:
    """The implicit hypergradient with the dense Hessian solved exactly (tiny models only)."""
    weights = _check_weights(problem, weights)
    params = problem.parameters()
    total = sum(p.numel() for p in params)
    if total > max_params:
        raise ValueError(f"hypergradient 'exact' solves the dense Hessian of the trainable parameters, "
                         f"at most {max_params:,} of them; this model has {total:,}: use 'neumann' "
                         "(the default) or 'unrolled' for a model this size")
    v = _flat_grad(problem.valid_loss(), params).detach()
    losses = problem.train_losses()
    grads = safe_task_gradients(params, list(losses))
    hessian = _TrainingHessian(losses, params, weights).dense()
    hessian = 0.5 * (hessian + hessian.T)
    p = torch.linalg.lstsq(hessian, v[:, None]).solution[:, 0]
    return _mixed_term(grads, _num_shared_columns(problem), weights, p, combiner)


def unrolled_hypergradient(
    problem: BiLevelProblem,
    weights: Tensor,
    lr: float,
    combiner: GradientCombiner | None = None,
) -> Tensor:
    """:math:`dL_V(\\theta - \\eta\\, d(\\theta, w))/dw` for one SGD step of size ``lr``.

    The parameters are moved to :math:`\\theta'` for the validation gradient and restored.
    """
    weights = _check_weights(problem, weights)
    params = problem.parameters()
    losses = problem.train_losses()
    grads = safe_task_gradients(params, list(losses))
    num_shared = _num_shared_columns(problem)
    with torch.no_grad():
        d = inner_direction(grads, num_shared, weights, combiner)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            offset = 0
            for p in params:
                n = p.numel()
                p.sub_(lr * d[offset : offset + n].view_as(p))
                offset += n
        v = _flat_grad(problem.valid_loss(), params).detach()
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    return _mixed_term(grads, num_shared, weights, lr * v, combiner)


def hypergradient(
    problem: BiLevelProblem,
    weights: Tensor,
    method: str = "neumann",
    combiner: GradientCombiner | None = None,
    alpha: float = 0.01,
    terms: int = 5,
    lr: float = 0.01,
) -> Tensor:
    """Dispatch to :func:`neumann_hypergradient`, :func:`unrolled_hypergradient` or
    :func:`exact_hypergradient` by ``method``."""
    if method == "neumann":
        return neumann_hypergradient(problem, weights, combiner, alpha, terms)
    if method == "unrolled":
        return unrolled_hypergradient(problem, weights, lr, combiner)
    if method == "exact":
        return exact_hypergradient(problem, weights, combiner)
    raise ValueError(f"unknown hypergradient {method!r}; choose one of: {', '.join(HYPERGRADIENTS)}")


# --- the optimiser -----------------------------------------------------------------------


class BiLevelTaskWeighting:
    """Learn source-task weights by bi-level optimisation (see the module docstring).

    Args:
        source_tasks: supervised source columns of ``y`` (:meth:`fit`).
        aux_objectives: auxiliary SSL objectives (names, ``(name, options)`` or built).
        target: the target column of ``y``, or a sequence of columns trained as one target
            task (their masked loss together; the model's head has one output each).
        weighting: ``"sigmoid"`` (each weight in [0, 1]) or ``"softmax"`` (the simplex).
        init_weights: initial weights (scalar or one per source task; default 0.5 for
            sigmoid, uniform for softmax).
        hypergradient: ``"neumann"``, ``"unrolled"`` or ``"exact"``.
        combiner: ``None`` (the weighted-sum gradient) or a combiner name, e.g.
            ``"rcgrad"`` for BLO+RCGrad (it receives the current weights).
        combiner_options: keyword hyper-parameters of the combiner.
        outer_steps: weight updates.
        inner_steps: model steps between two weight updates.
        inner_lr: learning rate of the inner optimiser (and :math:`\\eta` of ``unrolled``).
        outer_lr: learning rate of the outer optimiser on the logits ``phi``.
        inner_optimizer, outer_optimizer: ``"adam"`` or ``"sgd"``.
        neumann_alpha: :math:`\\alpha` of the Neumann series (default ``inner_lr``).
        neumann_terms: J, the number of Hessian-vector products.
        batch_size, valid_batch_size: molecules per training batch / validation loss.
        seed: batches, head initialisation, dropout and corruptions.
        task_type: ``"classification"`` or ``"regression"``.
        select_best: restore the state with the best validation metric after the run
            (:meth:`fit` only; computed after every outer step).
        patience: stop after this many outer steps without a better validation metric
            (:meth:`fit` only; ``None``: run every outer step).
        featurizer: the featurizer of ``graphs`` (default: looked up by name).

    Fitted attributes: ``weights_history_`` (``[outer_steps + 1, T - 1]``, the initial
    weights first), ``weights_`` (``{task: weight}`` at the end), ``weights_at_best_step_``
    (:meth:`fit`: those the kept state was trained under at its step), ``task_names_`` (T names,
    target first), ``hypergradient_history_`` (``[outer_steps, T - 1]``, w.r.t. ``w``),
    ``valid_loss_history_``, ``valid_metric_history_`` (:meth:`fit`), ``gradient_log_``
    (with a combiner), ``problem_``, ``model_``; from :meth:`fit`, ``embedding_spread_`` (before
    training, then after every outer step; see :class:`~moladapt.adapt.auxiliary.AuxiliaryFineTuner`)
    and ``collapsed_`` (the first outer step with a collapsed encoder, or ``None``).
    """

    def __init__(
        self,
        source_tasks: Sequence[int] = (),
        aux_objectives: Sequence[ObjectiveSpec] = (),
        target: int | Sequence[int] = 0,
        weighting: str = "sigmoid",
        init_weights: float | Sequence[float] | None = None,
        hypergradient: str = "neumann",
        combiner: str | None = None,
        combiner_options: Mapping[str, Any] | None = None,
        outer_steps: int = 10,
        inner_steps: int = 5,
        inner_lr: float = 1e-3,
        outer_lr: float = 0.1,
        inner_optimizer: str = "adam",
        outer_optimizer: str = "adam",
        neumann_alpha: float | None = None,
        neumann_terms: int = 5,
        batch_size: int = 32,
        valid_batch_size: int | None = None,
        seed: int = 0,
        task_type: str = CLASSIFICATION,
        select_best: bool = True,
        featurizer: str | Featurizer | None = None,
        eval_batch_size: int = 256,
        patience: int | None = None,
    ) -> None:
        self.source_tasks = source_tasks
        self.aux_objectives = aux_objectives
        self.target = target
        self.weighting = weighting
        self.init_weights = init_weights
        self.hypergradient = hypergradient
        self.combiner = combiner
        self.combiner_options = combiner_options
        self.outer_steps = outer_steps
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.outer_lr = outer_lr
        self.inner_optimizer = inner_optimizer
        self.outer_optimizer = outer_optimizer
        self.neumann_alpha = neumann_alpha
        self.neumann_terms = neumann_terms
        self.batch_size = batch_size
        self.valid_batch_size = valid_batch_size
        self.seed = seed
        self.task_type = task_type
        self.select_best = select_best
        self.featurizer = featurizer
        self.eval_batch_size = eval_batch_size
        self.patience = patience

    def __repr__(self) -> str:
        keys = ("source_tasks", "aux_objectives", "weighting", "hypergradient", "combiner",
                "outer_steps", "inner_steps")
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"

    # -- set-up ---------------------------------------------------------------------------
    def _initial_logits(self, num: int, like: Tensor) -> Tensor:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")
        if self.init_weights is None:
            w = torch.full((num,), 0.5 if self.weighting == "sigmoid" else 1.0 / num)
        else:
            w = torch.as_tensor(self.init_weights, dtype=torch.float64).reshape(-1)
            w = w.expand(num).clone() if w.numel() == 1 else w
            if w.numel() != num:
                raise ValueError(f"{w.numel()} init_weights for {num} source tasks")
        return logits_from_weights(w.to(like.dtype), self.weighting).to(like.device)

    @staticmethod
    def _optimizer(name: str, params: list[Any], lr: float) -> torch.optim.Optimizer:
        if name == "adam":
            return adam(params, lr=lr)
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr)
        raise ValueError(f"unknown optimizer {name!r}; choose 'adam' or 'sgd'")

    # -- the run --------------------------------------------------------------------------
    def fit_problem(
        self,
        problem: BiLevelProblem,
        on_outer_step: Callable[[int], bool | None] | None = None,
    ) -> BiLevelTaskWeighting:
        """Run the bi-level optimisation on any :class:`BiLevelProblem`; ``on_outer_step(step)``
        runs after every outer step and stops the run by returning ``True``."""
        if self.hypergradient not in HYPERGRADIENTS:
            raise ValueError(f"unknown hypergradient {self.hypergradient!r}; "
                             f"choose one of: {', '.join(HYPERGRADIENTS)}")
        params = problem.parameters()
        if not params:
            raise ValueError("the problem has no parameters")
        num_sources = len(problem.task_names) - 1
        if num_sources < 1:
            raise ValueError("need at least one source / auxiliary task besides the target")
        ref = params[0]
        num_shared = _num_shared_columns(problem)
        combiner = (None if self.combiner is None
                    else build_combiner(self.combiner, **dict(self.combiner_options or {})))
        self.combiner_ = combiner
        self.problem_ = problem
        self.task_names_ = list(problem.task_names)
        self.gradient_log_ = GradientLog(target=0, task_names=self.task_names_)
        phi = self._initial_logits(num_sources, ref).requires_grad_(True)
        outer = self._optimizer(self.outer_optimizer, [phi], self.outer_lr)
        inner = self._optimizer(self.inner_optimizer, params, self.inner_lr)
        alpha = self.inner_lr if self.neumann_alpha is None else self.neumann_alpha
        history = [weights_from_logits(phi, self.weighting).detach().cpu().numpy().copy()]
        hypergrads, valid_losses = [], []
        for step in range(int(self.outer_steps)):
            w = weights_from_logits(phi, self.weighting).detach()
            for _ in range(int(self.inner_steps)):
                self._inner_step(problem, params, num_shared, w, combiner, inner)
            hyper = hypergradient(problem, w, self.hypergradient, combiner, alpha,
                                  self.neumann_terms, self.inner_lr)
            (phi.grad,) = torch.autograd.grad(weights_from_logits(phi, self.weighting), phi,
                                              hyper.to(phi.dtype))
            outer.step()
            outer.zero_grad(set_to_none=True)
            for p in params:
                p.grad = None
            hypergrads.append(hyper.detach().cpu().numpy())
            history.append(weights_from_logits(phi, self.weighting).detach().cpu().numpy().copy())
            with torch.no_grad():
                valid_losses.append(float(problem.valid_loss()))
            if on_outer_step is not None and on_outer_step(step):
                break
        self.weights_history_ = np.stack(history)
        self.hypergradient_history_ = (np.stack(hypergrads) if hypergrads
                                       else np.zeros((0, num_sources)))
        self.valid_loss_history_ = valid_losses
        self.weights_ = dict(zip(self.task_names_[1:], self.weights_history_[-1].tolist(), strict=True))
        self.logits_ = phi.detach()
        return self

    def _inner_step(
        self,
        problem: BiLevelProblem,
        params: list[Tensor],
        num_shared: int,
        w: Tensor,
        combiner: GradientCombiner | None,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        losses = problem.train_losses()
        optimizer.zero_grad(set_to_none=True)
        if combiner is None:
            total = (_full_weights(w, losses) * losses).sum()
            if total.requires_grad:
                total.backward(inputs=params)
        else:
            grads = safe_task_gradients(params, list(losses))
            wf = _full_weights(w, grads)
            result = combiner(grads[:, :num_shared], target=0, weights=wf)
            self.gradient_log_.update(result)
            direction = torch.cat([result.direction, wf @ grads[:, num_shared:]])
            assign_direction(params, direction)
        optimizer.step()

    def fit(
        self,
        model: MolecularModel,
        graphs: MolGraphs,
        y: np.ndarray,
        train_idx: np.ndarray,
        valid_idx: np.ndarray,
        column_names: Sequence[str] | None = None,
    ) -> BiLevelTaskWeighting:
        """Learn the weights of ``source_tasks`` / ``aux_objectives`` for the ``target``
        column(s) of ``y`` while training ``model`` (a head with one output per target
        column; trained in place)."""
        ref = next(iter(model.parameters()))
        objectives = build_aux_objectives(self.aux_objectives, featurizer_of(graphs, self.featurizer),
                                          graph_part(model.encoder)) if self.aux_objectives else nn.ModuleList()
        problem = GraphTaskProblem(
            model, graphs, y, train_idx, valid_idx, target=self.target,
            source_tasks=self.source_tasks, objectives=objectives, task_type=self.task_type,
            batch_size=self.batch_size, valid_batch_size=self.valid_batch_size,
            column_names=column_names, seed=self.seed,
        )
        self.model_ = model
        nt = problem.num_targets
        self.target_mean_ = None if problem.mean is None else problem.mean[:nt]
        self.target_std_ = None if problem.std is None else problem.std[:nt]
        better = (lambda a, b: a > b) if self.task_type == CLASSIFICATION else (lambda a, b: a < b)
        metrics: list[float] = []
        best: dict[str, Any] = {"metric": math.nan, "state": None, "step": -1}
        y2 = problem.y[:, problem.columns[:nt]]
        probe = graphs.collate(np.asarray(train_idx)[:256]).to(ref.device)
        self.embedding_spread_ = [embedding_spread(graph_part(model.encoder), probe)]

        last = {"step": -1}

        def select(step: int) -> bool:
            """Keep the best state; ``True`` (stop) after ``patience`` steps without a better one."""
            last["step"] = step
            self.embedding_spread_.append(embedding_spread(graph_part(model.encoder), probe))
            metric = self.score(graphs, y2, problem.valid_idx).primary
            metrics.append(metric)
            if not math.isnan(metric) and (math.isnan(best["metric"]) or better(metric, best["metric"])):
                best.update(metric=metric, step=step,
                            state=problem.state_dict() if self.select_best else None)
            return (self.patience is not None and best["step"] >= 0  # NaN metrics never stop a run
                    and step - best["step"] >= self.patience)

        with torch.random.fork_rng(devices=[] if ref.device.type == "cpu" else [ref.device]):
            torch.manual_seed(int(self.seed))
            self.fit_problem(problem, on_outer_step=select)
        if best["state"] is not None:
            problem.load_state_dict(best["state"])
        model.eval()
        self.valid_metric_history_ = metrics
        self.collapsed_ = first_collapse(self.embedding_spread_[1:])  # index = outer step
        # no scorable validation step: the last state is kept, and that is the step to report
        self.best_step_ = int(best["step"]) if best["step"] >= 0 else int(last["step"])
        # the weights the kept state's last inner steps were trained under (weights_ are the
        # end of the run: after a best step early on, they moved on without the model kept)
        self.weights_at_best_step_ = dict(zip(self.task_names_[1:],
                                              self.weights_history_[self.best_step_].tolist(), strict=True))
        self.objectives_ = objectives
        self.source_head_ = problem.source_head
        return self

    # -- inference ------------------------------------------------------------------------
    def predict(self, graphs: MolGraphs, idx: np.ndarray | None = None) -> np.ndarray:
        """The target's probabilities (or values in original units), ``[len(idx), n_targets]``."""
        ref = next(iter(self.model_.parameters()))
        return predict(self.model_, graphs, self.task_type, idx, self.eval_batch_size,
                       self.target_mean_, self.target_std_, ref.device)

    def score(self, graphs: MolGraphs, y: np.ndarray, idx: np.ndarray) -> MetricReport:
        """Metrics of the target; ``y`` is ``[M]`` or ``[M, n_targets]`` (the target columns)."""
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        idx = np.asarray(idx)
        return compute_metrics(self.task_type, y[idx], self.predict(graphs, idx))
