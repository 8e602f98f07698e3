"""MAML and first-order MAML (Finn, Abbeel & Levine, ICML 2017) for molecular graphs.

The meta-parameters :math:`\\theta` are the encoder and a one-logit head. For a task with
support :math:`S` and query :math:`Q`, the inner loop takes ``inner_steps`` plain gradient
steps on the support loss,

.. math:: \\theta_{j+1} = \\theta_j - \\alpha \\nabla_{\\theta_j} L_S(\\theta_j),
    \\qquad \\theta_0 = \\theta,

and the meta-objective is the query loss at the adapted parameters,
:math:`L_Q(\\theta_n(\\theta))`, minimised over :math:`\\theta` with Adam on meta-batches of
tasks. Second-order MAML (default) differentiates through the inner loop
(``create_graph=True``); first-order MAML (``first_order=True``, FO-MAML) treats each
inner gradient as a constant, so its meta-gradient is :math:`\\nabla L_Q` evaluated at
:math:`\\theta_n` (Nguyen, Kreatsoulas & Branson 2020 use both for molecules).

Implementation: parameters are a plain ``dict`` of tensors and the model is called with
:func:`torch.func.functional_call`; :func:`inner_adapt` is a pure function (it returns a new
dict and never mutates its inputs). Losses are BCE with ``pos_weight`` from the support
balance. Outer gradients are accumulated task by task (one ``backward`` per task, one
optimiser step per meta-batch), so memory does not grow with the meta-batch size.

BatchNorm: the inner loop and the meta-training query loss run in train mode, i.e. with the
statistics of the batch (support or query), as Finn et al. do; during meta-training the
meta-model's running statistics are updated by these forwards and are then used (eval
mode) for predictions after adaptation. Second-order gradients through BatchNorm's batch
statistics are exact but lose precision in float32 (a finite-difference check drifts); the
tests check them in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from moladapt.adapt.base import (
    ADAPTERS,
    Adapter,
    HeadMixin,
    MetaCheckpoint,
    MetaValidation,
    ModulePredictor,
    TaskFeatureCache,
    TrainingEpisode,
    balanced_bce,
    full_batch,
    labels_tensor,
    meta_training_stream,
    run_outer_loop,
    support_pos_weight,
)
from moladapt.data.featurize import Featurizer
from moladapt.models.heads import MolecularModel
from moladapt.types import MolGraphs, Task

__all__ = ["FOMAML", "MAML", "inner_adapt", "maml_query_loss"]

Params = dict[str, Tensor]


def inner_adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    support_batch: object,
    y: Tensor,
    steps: int,
    lr: float,
    create_graph: bool,
    pos_weight: Tensor | None = None,
) -> Params:
    """``steps`` gradient steps of size ``lr`` on the support loss; returns the new params.

    Pure: ``params`` is not modified (a new dict of new tensors is returned). Only entries
    with ``requires_grad`` are updated. ``model(support_batch)`` must give ``[B]`` or
    ``[B, 1]`` logits under :func:`torch.func.functional_call` with ``(params, buffers)``.
    With ``create_graph=True`` the result is differentiable to second order w.r.t.
    ``params`` (MAML); with ``False`` the inner gradients are constants, so the result
    depends on ``params`` through the identity only (FO-MAML). BatchNorm modules update
    running statistics found in ``buffers`` in place when ``model`` is in train mode: pass
    copies if they must stay untouched.
    """
    if pos_weight is None:
        pos_weight = support_pos_weight(y)
    current: Params = dict(params)
    names = [n for n, p in current.items() if p.requires_grad]
    if not names:
        raise ValueError("inner_adapt: no parameter requires grad, nothing to adapt")
    for _ in range(int(steps)):
        logits = functional_call(model, (current, dict(buffers)), (support_batch,))
        loss = balanced_bce(logits, y, pos_weight)
        grads = torch.autograd.grad(
            loss, [current[n] for n in names], create_graph=create_graph, allow_unused=True
        )
        current = dict(current)
        for name, g in zip(names, grads, strict=True):
            if g is not None:
                current[name] = current[name] - lr * g
    return current


def maml_query_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    support_batch: object,
    support_y: Tensor,
    query_batch: object,
    query_y: Tensor,
    steps: int,
    lr: float,
    first_order: bool = False,
) -> Tensor:
    """The MAML meta-objective of one task: query loss at the inner-loop-adapted params.

    Back-propagating it gives the MAML (or, with ``first_order``, FO-MAML) meta-gradient
    w.r.t. ``params``. ``pos_weight`` is the support balance for both losses.
    """
    pos_weight = support_pos_weight(support_y)
    adapted = inner_adapt(
        model, params, buffers, support_batch, support_y, steps, lr,
        create_graph=not first_order, pos_weight=pos_weight,
    )
    logits = functional_call(model, (adapted, dict(buffers)), (query_batch,))
    return balanced_bce(logits, query_y, pos_weight)


@ADAPTERS.register("maml")
class MAML(HeadMixin, Adapter):
    """MAML over encoder + linear head.

    Args:
        inner_steps, inner_lr: the inner loop (plain SGD on the support loss).
        test_inner_steps: inner steps at adaptation time (default: ``inner_steps``).
        first_order: FO-MAML (no second-order terms) instead of MAML.
        meta_steps, meta_batch_size, meta_lr: the outer loop (Adam, ``meta_batch_size``
            tasks per step).
        train_k, query_size: support size and largest query of the meta-training episodes.
        grad_clip: max norm of the outer gradient (``None``: no clipping).
        seed: episode stream, head initialisation and adaptation randomness.
        min_query: a training task serves only if it leaves at least this many query
            molecules after its ``train_k`` support (a smaller task's query is all the rest).
            FS-Mol's trainers keep any task that leaves 2 (their stratified sampler's floor).

    Attributes:
        head_: the meta-learned head initialisation (``None`` before :meth:`meta_train`;
            :meth:`adapt` then starts from a fresh seeded head).
        history_: mean meta-batch query loss of every outer step.
    """

    def __init__(
        self,
        inner_steps: int = 5,
        inner_lr: float = 0.05,
        test_inner_steps: int | None = None,
        first_order: bool = False,
        meta_steps: int = 300,
        meta_batch_size: int = 4,
        meta_lr: float = 1e-3,
        train_k: int = 16,
        query_size: int = 64,
        grad_clip: float | None = 10.0,
        seed: int = 0,
        min_query: int = 16,
    ) -> None:
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.test_inner_steps = test_inner_steps
        self.first_order = first_order
        self.meta_steps = meta_steps
        self.meta_batch_size = meta_batch_size
        self.meta_lr = meta_lr
        self.train_k = train_k
        self.query_size = query_size
        self.grad_clip = grad_clip
        self.seed = seed
        self.min_query = min_query

    def meta_train(
        self,
        encoder: nn.Module,
        train_tasks: Sequence[Task],
        featurizer: str | Featurizer | TaskFeatureCache = "basic",
        validation: MetaValidation | None = None,
        checkpoint: MetaCheckpoint | None = None,
    ) -> MAML:
        stream = meta_training_stream(self, train_tasks, featurizer)
        self.skipped_tasks_ = dict(stream.skipped)  # too small for a train_k episode
        model = MolecularModel(encoder, self._train_head(encoder))  # type: ignore[arg-type]
        was_training = model.training
        model.train()

        def episode_loss(ep: TrainingEpisode) -> Tensor:
            return maml_query_loss(
                model, dict(model.named_parameters()), dict(model.named_buffers()),
                ep.support, ep.support_y, ep.query, ep.query_y,
                self.inner_steps, self.inner_lr, self.first_order,
            )

        try:
            run_outer_loop(self, list(model.parameters()), stream, episode_loss, model,
                           encoder, [model], validation, checkpoint)
        finally:
            model.train(was_training)
        return self

    def adapt(
        self, encoder: nn.Module, support_graphs: MolGraphs, support_y: np.ndarray
    ) -> ModulePredictor:
        model = self._model_copy(encoder)
        model.train()
        params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
        buffers = dict(model.named_buffers())  # the copy's: BatchNorm may update them
        batch = full_batch(support_graphs, model)
        y = labels_tensor(support_y, model)
        steps = self.inner_steps if self.test_inner_steps is None else self.test_inner_steps
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            adapted = inner_adapt(
                model, params, buffers, batch, y, steps, self.inner_lr, create_graph=False
            )
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(adapted[name])
        return ModulePredictor(model)


@ADAPTERS.register("fomaml")
class FOMAML(MAML):
    """First-order MAML: :class:`MAML` with ``first_order=True`` by default."""

    def __init__(
        self,
        inner_steps: int = 5,
        inner_lr: float = 0.05,
        test_inner_steps: int | None = None,
        first_order: bool = True,
        meta_steps: int = 300,
        meta_batch_size: int = 4,
        meta_lr: float = 1e-3,
        train_k: int = 16,
        query_size: int = 64,
        grad_clip: float | None = 10.0,
        seed: int = 0,
        min_query: int = 16,
    ) -> None:
        super().__init__(
            inner_steps, inner_lr, test_inner_steps, first_order, meta_steps,
            meta_batch_size, meta_lr, train_k, query_size, grad_clip, seed, min_query,
        )
