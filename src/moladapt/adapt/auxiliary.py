"""Fine-tuning with auxiliary self-supervised tasks and gradient surgery.

Dey & Ning, "Enhancing molecular property prediction with auxiliary learning and
task-specific adaptation", J Cheminform 16:85, 2024: a (pretrained) encoder is fine-tuned on
the target property *jointly* with self-supervised auxiliary objectives
(:mod:`moladapt.pretrain.objectives`), and the per-task gradients of the shared encoder are
combined by a gradient combiner (:mod:`moladapt.adapt.gradients`) so that conflicting
auxiliary tasks do not hurt the target.

One optimisation step on a mini-batch ``B`` (the same molecules for every task):

.. math::
    \\mathcal L_t = \\mathrm{masked\\_loss}(f_{\\theta_h}(\\phi_{\\theta_s}(B)), y_B),
    \\qquad \\mathcal L_i = \\mathrm{objective}_i(\\phi_{\\theta_s}, B)
    \\quad (i = 1..T-1)

.. math::
    G = [\\nabla_{\\theta_s} \\mathcal L_t; \\nabla_{\\theta_s} \\mathcal L_1; \\dots],
    \\qquad d = \\mathrm{combiner}(G, \\text{target}=0, w)

* the shared encoder parameters :math:`\\theta_s` get :math:`d` as their gradient
  (:func:`~moladapt.adapt.gradients.assign_direction`);
* the target head :math:`\\theta_h` gets :math:`\\nabla_{\\theta_h} \\mathcal L_t`, each
  objective's own head (if any) :math:`\\nabla \\mathcal L_i` (unweighted);
* one Adam step on all of them.

``w`` are fixed per-task weights (``task_weights``; e.g. the ones learned by
:class:`moladapt.adapt.bilevel.BiLevelTaskWeighting`), ``None`` meaning 1 for every task.
The auxiliary objectives draw their corruptions from a ``torch.Generator`` seeded by
``seed``. Every step's :class:`~moladapt.adapt.gradients.CombineResult` goes into
``gradient_log_`` (a :class:`~moladapt.adapt.gradients.GradientLog`; ``summary()`` gives, per
auxiliary task, the mean cosine to the target gradient and the fraction of steps in
conflict).

Model selection follows :class:`moladapt.training.Trainer`: after every epoch the validation
metric of :func:`moladapt.training.selection_metric` (ROC-AUC, or RMSE for regression) is
computed and the best epoch's state
is restored at the end (the last epoch when there is no validation set); ``patience``
stops early. Regression targets are standardised with the training mean / std.

:class:`AuxiliaryAdapter` (registered as ``"auxiliary"`` in :data:`ADAPTERS`) applies the
same joint training to few-shot adaptation, following the rule of
:class:`moladapt.adapt.finetune.FineTune`: a new seeded head, a fixed number of
full-batch steps on the support set (balanced BCE), no validation split.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from moladapt.adapt.base import ADAPTERS, Adapter, ModulePredictor, new_head
from moladapt.adapt.gradients import (
    GradientLog,
    assign_direction,
    build_combiner,
    per_task_gradients,
)
from moladapt.data.featurize import Featurizer, get_featurizer
from moladapt.data.sources import CLASSIFICATION
from moladapt.evaluate.metrics import MetricReport, compute_metrics
from moladapt.models.fingerprint import graph_part
from moladapt.models.heads import MolecularModel
from moladapt.pretrain.objectives import OBJECTIVES, PretrainObjective, build_objective
from moladapt.pretrain.trainer import embedding_spread, first_collapse
from moladapt.training import (
    EpochLog,
    TrainHistory,
    label_mean_std,
    masked_loss,
    predict,
    selection_metric,
)
from moladapt.types import MolGraphs
from moladapt.utils import adam

__all__ = [
    "AuxiliaryAdapter",
    "AuxiliaryFineTuner",
    "ObjectiveSpec",
    "build_aux_objectives",
    "featurizer_of",
    "objective_names",
    "safe_task_gradients",
    "task_weight_vector",
]

#: An auxiliary task: a registered objective name, ``(name, options)`` or a built objective.
ObjectiveSpec = str | tuple[str, Mapping[str, Any]] | PretrainObjective


def featurizer_of(graphs: MolGraphs, featurizer: str | Featurizer | None) -> Featurizer:
    if featurizer is None:
        return get_featurizer(graphs.featurizer)
    return get_featurizer(featurizer) if isinstance(featurizer, str) else featurizer


def build_aux_objectives(
    specs: Sequence[ObjectiveSpec], featurizer: Featurizer, encoder: nn.Module
) -> nn.ModuleList:
    """Build the auxiliary objectives for ``encoder`` (its dtype and device).

    Label-needing objectives (``supervised``) are refused: supervised source tasks are label
    columns (see :class:`moladapt.adapt.bilevel.BiLevelTaskWeighting`), not objectives.
    """
    if isinstance(specs, (str, PretrainObjective)):
        specs = [specs]
    out = []
    for spec in specs:
        if isinstance(spec, PretrainObjective):
            obj = spec
        else:
            name, options = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
            if OBJECTIVES.get(name).needs_labels:
                raise ValueError(f"objective {name!r} needs labels; it cannot be an auxiliary task")
            obj = build_objective(name, featurizer, encoder, **options)  # type: ignore[arg-type]
        out.append(obj)
    ref = next(iter(encoder.parameters()))
    return nn.ModuleList(out).to(device=ref.device, dtype=ref.dtype)


def objective_names(objectives: Sequence[nn.Module]) -> list[str]:
    """Unique names (``edge_prediction``, ``edge_prediction_2`` for a repeat)."""
    names: list[str] = []
    for obj in objectives:
        base = str(getattr(obj, "name", "") or type(obj).__name__)
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def task_weight_vector(
    task_weights: Sequence[float] | Mapping[str, float] | Tensor | None,
    aux_names: Sequence[str],
    like: Tensor,
) -> Tensor | None:
    """``[T]`` weights (target first, ``1``) from one weight per auxiliary task.

    ``task_weights``: ``None`` (all 1), a sequence of ``len(aux_names)`` values, or a mapping
    from auxiliary task name to weight (missing names get 1).
    """
    if task_weights is None:
        return None
    if isinstance(task_weights, Mapping):
        unknown = sorted(set(task_weights) - set(aux_names))
        if unknown:
            raise KeyError(f"task_weights for unknown tasks {unknown}; tasks: {list(aux_names)}")
        values = [float(task_weights.get(n, 1.0)) for n in aux_names]
    else:
        values = [float(v) for v in torch.as_tensor(task_weights).reshape(-1).tolist()]
        if len(values) != len(aux_names):
            raise ValueError(f"{len(values)} task_weights for {len(aux_names)} auxiliary tasks")
    return torch.tensor([1.0, *values], dtype=like.dtype, device=like.device)


def safe_task_gradients(params: Sequence[Tensor], losses: Sequence[Tensor]) -> Tensor:
    """:func:`per_task_gradients` that accepts losses with no graph (a zero row for those).

    Some objectives return a constant zero loss for a batch they cannot learn from.
    """
    params = list(params)
    live = [k for k, loss in enumerate(losses) if loss.requires_grad]
    total = sum(p.numel() for p in params)
    ref = params[0]
    out = torch.zeros((len(losses), total), dtype=ref.dtype, device=ref.device)
    if live:
        out[live] = per_task_gradients(params, [losses[k] for k in live], retain_graph=True)
    return out


class AuxiliaryFineTuner:
    """Joint fine-tuning of a target property and auxiliary objectives (module docstring).

    Args:
        aux_objectives: auxiliary tasks (names in :data:`OBJECTIVES`, ``(name, options)``
            pairs or built objectives, whose heads are then trained in place).
        combiner: gradient combiner name (``sum``, ``gcs``, ``gns``, ``pcgrad``, ``rcgrad``).
        combiner_options: keyword hyper-parameters of the combiner.
        epochs: passes over ``train_idx``.
        batch_size: molecules per step (one batch for the target and every auxiliary task).
        lr: Adam learning rate of the heads; the encoder uses ``encoder_lr`` (default ``lr``).
        seed: parameter-free randomness: shuffling, dropout, the objectives' corruptions.
        task_weights: fixed auxiliary weights passed to the combiner (``None``: 1 each; a
            sequence in ``aux_objectives`` order, or ``{name: weight}``).
        task_type: ``"classification"`` (masked BCE) or ``"regression"`` (masked MSE on
            standardised targets).
        encoder_lr: learning rate of the encoder.
        weight_decay: Adam weight decay.
        patience: early stopping on the validation metric (epochs without improvement).
        max_steps: stop after this many optimiser steps in all (``None``: no limit).
        grad_clip: clip the global gradient norm (``None``: no clipping).
        pos_weight: ``"balanced"`` weights positives by ``n_neg / n_pos`` of each training
            column (classification only); ``None``: unweighted.
        featurizer: the featurizer of ``graphs`` (default: looked up by ``graphs.featurizer``).
        eval_batch_size: batch size of predictions.

    Fitted attributes: ``model_`` (the model given to :meth:`fit`, trained in place),
    ``objectives_``, ``combiner_``, ``gradient_log_``, ``history_`` (a
    :class:`~moladapt.training.TrainHistory`), ``loss_history_`` (per step: the target and
    auxiliary losses), ``aux_names_``, ``target_mean_`` / ``target_std_`` (regression),
    ``embedding_spread_`` (before training, then after every epoch: the largest per-dimension
    std of the atom embeddings of up to 256 training molecules,
    :func:`moladapt.pretrain.trainer.embedding_spread`) and ``collapsed_`` (the first epoch at
    which the encoder had collapsed — every atom the same embedding — or ``None``): an
    auxiliary objective can collapse the shared encoder, and the target then learns nothing.
    """

    def __init__(
        self,
        aux_objectives: Sequence[ObjectiveSpec] = ("attribute_masking", "edge_prediction"),
        combiner: str = "rcgrad",
        combiner_options: Mapping[str, Any] | None = None,
        epochs: int = 10,
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
        task_weights: Sequence[float] | Mapping[str, float] | None = None,
        task_type: str = CLASSIFICATION,
        encoder_lr: float | None = None,
        weight_decay: float = 0.0,
        patience: int | None = None,
        max_steps: int | None = None,
        grad_clip: float | None = None,
        pos_weight: str | None = None,
        featurizer: str | Featurizer | None = None,
        eval_batch_size: int = 256,
    ) -> None:
        self.aux_objectives = aux_objectives
        self.combiner = combiner
        self.combiner_options = combiner_options
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.task_weights = task_weights
        self.task_type = task_type
        self.encoder_lr = encoder_lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.max_steps = max_steps
        self.grad_clip = grad_clip
        self.pos_weight = pos_weight
        self.featurizer = featurizer
        self.eval_batch_size = eval_batch_size

    def __repr__(self) -> str:
        keys = ("aux_objectives", "combiner", "epochs", "batch_size", "lr", "seed")
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"

    # -- training -------------------------------------------------------------------------
    def _pos_weight(self, y: np.ndarray, like: Tensor) -> Tensor | None:
        if self.pos_weight is None or self.task_type != CLASSIFICATION:
            return None
        if self.pos_weight != "balanced":
            raise ValueError(f"pos_weight must be None or 'balanced', got {self.pos_weight!r}")
        n_pos = np.nansum(y, axis=0)
        n_neg = np.sum(~np.isnan(y), axis=0) - n_pos
        ratio = np.where((n_pos > 0) & (n_neg > 0), n_neg / np.maximum(n_pos, 1), 1.0)
        return torch.as_tensor(ratio, dtype=like.dtype, device=like.device)

    def fit(
        self,
        model: MolecularModel,
        graphs: MolGraphs,
        y: np.ndarray,
        train_idx: np.ndarray,
        valid_idx: np.ndarray | None = None,
    ) -> AuxiliaryFineTuner:
        """Train ``model`` (in place) on ``y[train_idx]`` jointly with the auxiliary tasks.

        ``y``: ``[M]`` or ``[M, T]`` labels aligned with ``graphs`` (NaN = missing); the
        model's head must have ``T`` outputs.
        """
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape[1] != model.head.num_tasks:
            raise ValueError(f"y has {y.shape[1]} columns, the model's head {model.head.num_tasks}")
        train_idx = np.asarray(train_idx, dtype=np.int64)
        if len(train_idx) == 0:
            raise ValueError("train_idx is empty")
        ref = next(iter(model.parameters()))
        if self.task_type == CLASSIFICATION:
            self.target_mean_, self.target_std_ = None, None
            y_fit = y
        else:
            self.target_mean_, self.target_std_ = label_mean_std(y[train_idx])
            self.target_std_ = self.target_std_ + 1e-8
            y_fit = (y - self.target_mean_) / self.target_std_
        pos_weight = self._pos_weight(y[train_idx], ref)

        featurizer = featurizer_of(graphs, self.featurizer)
        self.model_ = model
        self.objectives_ = build_aux_objectives(self.aux_objectives, featurizer, graph_part(model.encoder))
        self.aux_names_ = objective_names(self.objectives_)
        self.combiner_ = build_combiner(self.combiner, **dict(self.combiner_options or {}))
        weights = task_weight_vector(self.task_weights, self.aux_names_, ref)
        self.gradient_log_ = GradientLog(target=0, task_names=["target", *self.aux_names_])
        self.loss_history_: list[dict[str, float]] = []

        shared = [p for p in model.encoder.parameters() if p.requires_grad]
        specific = [p for p in [*model.head.parameters(), *self.objectives_.parameters()]
                    if p.requires_grad]
        enc_lr = self.lr if self.encoder_lr is None else self.encoder_lr
        groups = [{"params": specific, "lr": self.lr}]
        if shared:
            groups.append({"params": shared, "lr": enc_lr})
        optimizer = adam(groups, lr=self.lr, weight_decay=self.weight_decay)

        history = TrainHistory()
        probe = graphs.collate(np.asarray(train_idx)[:256]).to(ref.device)
        self.embedding_spread_ = [embedding_spread(graph_part(model.encoder), probe)]
        better = (lambda a, b: a > b) if self.task_type == CLASSIFICATION else (lambda a, b: a < b)
        best_state: dict[str, Any] | None = None
        since_best, steps, n_seen, t_train = 0, 0, 0, 0.0
        rng = np.random.default_rng(self.seed)
        generator = torch.Generator(device=ref.device)
        generator.manual_seed(int(self.seed))
        with torch.random.fork_rng(devices=[] if ref.device.type == "cpu" else [ref.device]):
            torch.manual_seed(int(self.seed))
            for epoch in range(int(self.epochs)):
                if self.max_steps is not None and steps >= self.max_steps:
                    break
                t0 = time.perf_counter()
                model.train()
                self.objectives_.train()
                order = rng.permutation(train_idx)
                total, batches = 0.0, 0
                for start in range(0, len(order), int(self.batch_size)):
                    if self.max_steps is not None and steps >= self.max_steps:
                        break
                    idx = order[start : start + int(self.batch_size)]
                    if len(idx) < 2 and len(order) > 1:
                        continue  # BatchNorm cannot train on a batch of one
                    loss = self._step(graphs, y_fit, idx, shared, specific, optimizer, weights,
                                      generator, pos_weight)
                    total += loss
                    batches += 1
                    steps += 1
                    n_seen += len(idx)
                t_train += time.perf_counter() - t0
                self.embedding_spread_.append(embedding_spread(graph_part(model.encoder), probe))
                valid_metric = float("nan")
                if valid_idx is not None and len(valid_idx):
                    valid_metric = selection_metric(self.score(graphs, y, valid_idx), self.target_std_)
                history.epochs.append(
                    EpochLog(epoch, total / max(batches, 1), valid_metric, time.perf_counter() - t0)
                )
                improved = not np.isnan(valid_metric) and (
                    np.isnan(history.best_valid) or better(valid_metric, history.best_valid))
                # nothing to select on (no validation part, or one that cannot be scored: one
                # class everywhere): the last epoch is the best so far and patience never runs out
                unscorable = np.isnan(valid_metric) and np.isnan(history.best_valid)
                if valid_idx is None or not len(valid_idx) or unscorable:
                    history.best_epoch, history.best_valid = epoch, valid_metric  # the last
                elif improved:
                    history.best_epoch, history.best_valid = epoch, valid_metric
                    best_state = copy.deepcopy(model.state_dict())
                    since_best = 0
                else:
                    since_best += 1
                    if self.patience is not None and since_best > self.patience:
                        break
        if best_state is not None:
            model.load_state_dict(best_state)
        for p in [*shared, *specific]:
            p.grad = None
        self.collapsed_ = first_collapse(self.embedding_spread_[1:])  # index = epoch
        history.train_seconds = t_train
        history.molecules_per_second = n_seen / t_train if t_train > 0 else float("nan")
        self.history_ = history
        self.steps_ = steps
        return self

    def _step(
        self,
        graphs: MolGraphs,
        y_fit: np.ndarray,
        idx: np.ndarray,
        shared: list[Tensor],
        specific: list[Tensor],
        optimizer: torch.optim.Optimizer,
        weights: Tensor | None,
        generator: torch.Generator,
        pos_weight: Tensor | None,
    ) -> float:
        model = self.model_
        ref = shared[0] if shared else specific[0]
        batch = graphs.collate(idx, y_fit).to(ref.device)
        target_y = batch.y.to(ref.dtype)  # type: ignore[union-attr]
        target_loss = masked_loss(model(batch), target_y, self.task_type, pos_weight)
        aux_losses = [obj(graph_part(model.encoder), batch, generator) for obj in self.objectives_]
        losses = [target_loss, *aux_losses]
        optimizer.zero_grad(set_to_none=True)
        if shared:
            grads = safe_task_gradients(shared, losses)
            result = self.combiner_(grads, target=0, weights=weights)
            self.gradient_log_.update(result)
        # Heads: each gets the gradient of its own loss only (the summed backward gives that).
        live = [loss for loss in losses if loss.requires_grad]
        if live and specific:
            torch.autograd.backward(torch.stack(live).sum(), inputs=specific)
        if shared:
            assign_direction(shared, result.direction)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([*shared, *specific], self.grad_clip)
        optimizer.step()
        self.loss_history_.append(
            {name: float(loss.detach()) for name, loss in
             zip(["target", *self.aux_names_], losses, strict=True)}
        )
        return float(target_loss.detach())

    # -- inference ------------------------------------------------------------------------
    def predict(self, graphs: MolGraphs, idx: np.ndarray | None = None) -> np.ndarray:
        """Probabilities (classification) or values in original units: ``[len(idx), T]``."""
        ref = next(iter(self.model_.parameters()))
        return predict(self.model_, graphs, self.task_type, idx, self.eval_batch_size,
                       self.target_mean_, self.target_std_, ref.device)

    def score(self, graphs: MolGraphs, y: np.ndarray, idx: np.ndarray,
              task_names: list[str] | None = None) -> MetricReport:
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        idx = np.asarray(idx)
        return compute_metrics(self.task_type, y[idx], self.predict(graphs, idx), task_names)


@ADAPTERS.register("auxiliary")
class AuxiliaryAdapter(Adapter):
    """Few-shot adaptation by joint fine-tuning with auxiliary tasks (module docstring).

    ``adapt`` copies the encoder, adds a new seeded one-logit head and runs
    :class:`AuxiliaryFineTuner` for ``steps`` full-batch steps on the support set (balanced
    BCE, encoder in train mode); the last iterate is the predictor, as
    :class:`~moladapt.adapt.finetune.FineTune` does. No meta-training.

    Args: as :class:`AuxiliaryFineTuner`; ``encoder_lr`` defaults to ``lr / 10`` as in
    ``FineTune``.
    """

    def __init__(
        self,
        aux_objectives: Sequence[ObjectiveSpec] = ("attribute_masking", "edge_prediction"),
        combiner: str = "rcgrad",
        combiner_options: Mapping[str, Any] | None = None,
        steps: int = 100,
        lr: float = 5e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 0.0,
        task_weights: Sequence[float] | Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.aux_objectives = aux_objectives
        self.combiner = combiner
        self.combiner_options = combiner_options
        self.steps = steps
        self.lr = lr
        self.encoder_lr = encoder_lr
        self.weight_decay = weight_decay
        self.task_weights = task_weights
        self.seed = seed

    def adapt(
        self, encoder: nn.Module, support_graphs: MolGraphs, support_y: np.ndarray
    ) -> ModulePredictor:
        enc = copy.deepcopy(encoder)
        for p in enc.parameters():
            p.grad = None
        head = new_head(int(encoder.out_dim), enc, self.seed)  # type: ignore[arg-type]
        model = MolecularModel(enc, head)  # type: ignore[arg-type]
        y = np.asarray(support_y, dtype=np.float64).reshape(-1)
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("support labels must be binary 0/1")
        tuner = AuxiliaryFineTuner(
            aux_objectives=self.aux_objectives, combiner=self.combiner,
            combiner_options=self.combiner_options, epochs=int(self.steps),
            batch_size=max(len(y), 2), lr=self.lr,
            encoder_lr=self.lr / 10 if self.encoder_lr is None else self.encoder_lr,
            weight_decay=self.weight_decay, task_weights=self.task_weights, seed=self.seed,
            pos_weight="balanced",
        )
        aux = self.aux_objectives
        if isinstance(aux, (str, PretrainObjective)):
            aux = [aux]
        # Built objectives are copied so their heads (meta-parameters of no one) stay untouched.
        tuner.aux_objectives = [copy.deepcopy(a) if isinstance(a, nn.Module) else a for a in aux]
        # objective heads and dropout draw from the global RNG: fork it, so the same support
        # always gives the same predictor (the Adapter contract)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            tuner.fit(model, support_graphs, y[:, None], np.arange(len(y)), None)
        self.gradient_log_ = tuner.gradient_log_
        return ModulePredictor(model)
