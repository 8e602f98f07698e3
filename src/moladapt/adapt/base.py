"""The few-shot adaptation interface shared by fine-tuning, MAML, ANIL and ProtoNet.

An :class:`Adapter` follows the scikit-learn convention: ``__init__`` only stores its
hyper-parameters (:meth:`Adapter.get_params` / :meth:`Adapter.set_params`), learned state
ends in ``_`` (``head_``, ``history_``). Two steps:

* ``meta_train(encoder, train_tasks, featurizer, validation=None) -> self``: learn an
  initialisation (or a metric) from many training tasks. It updates ``encoder``'s parameters
  **in place** (they are the meta-parameters, together with ``head_`` where the method has
  one); with a :class:`MetaValidation` it keeps the state that scored best on held-out tasks.
  Methods without meta-training (fine-tuning a pretrained encoder) make it a no-op.
* ``adapt(encoder, support_graphs, support_y) -> Predictor``: fit one new task from its
  support set. It works on copies and never modifies the meta-parameters (the encoder's
  parameters *and* buffers, and ``head_``); ``Predictor.predict_proba(graphs)`` returns the
  probability of the positive class, ``[n]`` float64 in ``[0, 1]``.

Conventions every adapter follows (so that methods differ only in what they are about):

* **Loss**: binary cross-entropy on logits, positives weighted by
  ``pos_weight = n_negative / n_positive`` of the *support* set (:func:`support_pos_weight`),
  so an imbalanced support counts both classes equally.
* **BatchNorm / dropout**: forward passes whose parameters are being adapted or trained
  (an inner loop, fine-tuning, meta-training) run in train mode: BatchNorm normalises with
  the statistics of the batch at hand (the support set, or the query during meta-training,
  as in Finn et al. 2017; methods whose encoder is frozen at adaptation, ProtoNet and ANIL,
  meta-train on support ∪ query in one batch, so both sets share the episode's statistics as
  they share the running ones later). Adaptation runs on a copy, so the running statistics it
  updates are the copy's. Predictions always run in eval mode: BatchNorm uses the running statistics and
  dropout is off, so a molecule's score never depends on the other query molecules. Frozen
  encoders (linear probes, ANIL at test time, ProtoNet) are evaluated in eval mode throughout.
* **Randomness**: ``adapt`` runs under :func:`torch.random.fork_rng` seeded by the adapter's
  ``seed``, so the same support set always gives the same predictor (and the global torch
  random state is left untouched).
* **dtype / device**: new heads take the encoder's dtype and device (tests run float64).

:class:`TaskFeatureCache` featurizes each task once, so that episodes are cut by index.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moladapt.data.cache import featurize_cached
from moladapt.data.episodes import EpisodeSampler, TaskTooSmall
from moladapt.data.featurize import Featurizer, get_featurizer
from moladapt.models.heads import MolecularModel, PredictionHead
from moladapt.registry import Registry
from moladapt.resume import ResumeFile
from moladapt.types import GraphBatch, MolGraphs, Task
from moladapt.utils import adam

__all__ = [
    "ADAPTERS",
    "Adapter",
    "EpisodeStream",
    "FeaturizedTask",
    "FitPredict",
    "MetaCheckpoint",
    "MetaValidation",
    "ModulePredictor",
    "Predictor",
    "TaskFeatureCache",
    "balanced_bce",
    "embed",
    "new_head",
    "support_pos_weight",
]

#: ``fit_predict(support_graphs, support_y, query_graphs) -> query scores [n_query]``.
FitPredict = Callable[[MolGraphs, np.ndarray, MolGraphs], np.ndarray]


@runtime_checkable
class Predictor(Protocol):
    """A model adapted to one task."""

    def predict_proba(self, graphs: MolGraphs) -> np.ndarray:
        """Probability that each molecule is positive, ``[len(graphs)]`` float64.

        A predictor may also have ``decision_function(graphs)``: a score monotone in the
        probability but not rounded to 0/1 (logits); the protocol ranks by it when present."""
        ...


# --- small shared pieces -----------------------------------------------------------------


def support_pos_weight(y: Tensor) -> Tensor:
    """``n_negative / n_positive`` of binary labels ``y`` (1 when a class is missing)."""
    n_pos = y.sum()
    n_neg = y.numel() - n_pos
    if n_pos <= 0 or n_neg <= 0:
        return torch.ones((), dtype=y.dtype, device=y.device)
    return (n_neg / n_pos).detach()


def balanced_bce(logits: Tensor, y: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Mean BCE-with-logits of ``[B]`` logits; ``pos_weight`` defaults to ``y``'s balance."""
    logits = logits.reshape(-1)
    y = y.reshape(-1).to(logits.dtype)
    if pos_weight is None:
        pos_weight = support_pos_weight(y)
    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight.to(logits.dtype))


def _reference(module: nn.Module) -> Tensor:
    for t in module.parameters():
        return t
    return torch.zeros(())


def new_head(in_dim: int, like: nn.Module, seed: int, hidden_dims: Sequence[int] = ()) -> PredictionHead:
    """A fresh one-logit :class:`PredictionHead`, seeded, with ``like``'s dtype and device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        head = PredictionHead(in_dim, 1, hidden_dims=tuple(hidden_dims))
    ref = _reference(like)
    return head.to(device=ref.device, dtype=ref.dtype)


@torch.no_grad()
def embed(encoder: nn.Module, graphs: MolGraphs, batch_size: int = 256) -> Tensor:
    """Graph embeddings of all ``graphs`` in eval mode (no grad), ``[n, out_dim]``.

    The encoder's train/eval flag is restored afterwards.
    """
    was_training = encoder.training
    encoder.eval()
    device = _reference(encoder).device
    try:
        outs = [
            encoder(graphs.collate(np.arange(s, min(s + batch_size, len(graphs)))).to(device))
            for s in range(0, len(graphs), batch_size)
        ]
    finally:
        encoder.train(was_training)
    if not outs:
        out_dim = int(getattr(encoder, "out_dim", 0))
        return torch.zeros((0, out_dim), dtype=_reference(encoder).dtype, device=device)
    return torch.cat(outs)


def full_batch(graphs: MolGraphs, like: nn.Module) -> GraphBatch:
    """All of ``graphs`` as one batch on ``like``'s device."""
    return graphs.collate(np.arange(len(graphs))).to(_reference(like).device)


def labels_tensor(y: np.ndarray, like: nn.Module) -> Tensor:
    ref = _reference(like)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("support labels must be binary 0/1")
    return torch.as_tensor(y, dtype=ref.dtype, device=ref.device)


class ModulePredictor:
    """Scores molecules with ``module(batch) -> logits [B, 1]``; sigmoid, eval mode, batched.

    ``module`` is owned by the predictor (adapters hand it a copy).
    """

    def __init__(self, module: nn.Module, batch_size: int = 256) -> None:
        self.module = module.eval()
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def decision_function(self, graphs: MolGraphs) -> np.ndarray:
        """The logits ``[len(graphs)]`` float64: what ranking metrics should see (a sigmoid
        rounds every logit above ~37 to exactly 1, turning distinct scores into ties)."""
        self.module.eval()
        device = _reference(self.module).device
        outs = [
            self.module(graphs.collate(np.arange(s, min(s + self.batch_size, len(graphs)))).to(device))
            .reshape(-1)
            .double()
            for s in range(0, len(graphs), self.batch_size)
        ]
        if not outs:
            return np.zeros(0, dtype=np.float64)
        return torch.cat(outs).cpu().numpy()

    def predict_proba(self, graphs: MolGraphs) -> np.ndarray:
        from scipy.special import expit

        return expit(self.decision_function(graphs))


# --- featurized tasks and training episodes ---------------------------------------------


@dataclass(frozen=True)
class FeaturizedTask:
    """A task and its graphs, aligned: molecule ``i`` of ``task`` is graph ``i`` of ``graphs``.

    ``task`` holds only the molecules RDKit parsed (``n_invalid`` were dropped, which
    shifts the episode indices relative to the raw task); ``y`` is its labels as float64.
    """

    task: Task
    graphs: MolGraphs
    n_invalid: int = 0

    @property
    def y(self) -> np.ndarray:
        return np.asarray(self.task.labels, dtype=np.float64).reshape(-1)


class TaskFeatureCache:
    """Featurizes each :class:`Task` once (in memory, on top of the on-disk cache).

    ``cache(task)`` returns a :class:`FeaturizedTask`; episodes are then cut by index with
    ``graphs.subset(episode.support)``. Keyed by task id *and* SMILES, so two different
    tasks that share an id never share graphs.
    """

    def __init__(self, featurizer: str | Featurizer = "basic", use_disk_cache: bool = True) -> None:
        self.featurizer = get_featurizer(featurizer) if isinstance(featurizer, str) else featurizer
        self.use_disk_cache = bool(use_disk_cache)
        self._items: dict[tuple[str, tuple[str, ...]], FeaturizedTask] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __call__(self, task: Task) -> FeaturizedTask:
        key = (task.task_id, tuple(task.smiles))
        hit = self._items.get(key)
        if hit is not None:
            return hit
        graphs = featurize_cached(list(task.smiles), self.featurizer, use_cache=self.use_disk_cache)
        rows = np.asarray(graphs.source_rows, dtype=np.int64)
        n_invalid = len(task) - len(rows)
        if n_invalid:
            task = Task(
                task_id=task.task_id,
                smiles=tuple(task.smiles[i] for i in rows),
                labels=np.asarray(task.labels)[rows],
                values=None if task.values is None else np.asarray(task.values)[rows],
                group=task.group,
            )
        item = FeaturizedTask(task=task, graphs=graphs, n_invalid=n_invalid)
        self._items[key] = item
        return item


@dataclass
class TrainingEpisode:
    support: GraphBatch
    support_y: Tensor
    query: GraphBatch
    query_y: Tensor


class EpisodeStream:
    """An endless, seeded stream of meta-training episodes drawn from many tasks.

    Each episode: a task chosen uniformly, a stratified ``k``-shot support from
    :class:`EpisodeSampler`, and at most ``query_size`` of the remaining molecules (a
    random subset) as query. Tasks too small for ``k`` are left out up front
    (``skipped`` lists them); a ``ValueError`` is raised if none is left.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        featurizer: str | Featurizer | TaskFeatureCache = "basic",
        k: int = 16,
        query_size: int = 64,
        seed: int = 0,
        sampler: EpisodeSampler | None = None,
    ) -> None:
        cache = featurizer if isinstance(featurizer, TaskFeatureCache) else TaskFeatureCache(featurizer)
        self.cache = cache
        self.sampler = sampler or EpisodeSampler()
        self.k, self.query_size = int(k), int(query_size)
        self.items: list[FeaturizedTask] = []
        self.skipped: dict[str, str] = {}
        for task in tasks:
            item = cache(task)
            try:
                self.sampler.num_support_positives(item.task, self.k)
            except TaskTooSmall as exc:
                self.skipped[task.task_id] = exc.reason
                continue
            self.items.append(item)
        if not self.items:
            raise ValueError(
                f"no training task can provide a k={self.k} episode "
                f"({len(self.skipped)} too small, e.g. {list(self.skipped.items())[:2]})"
            )
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[TrainingEpisode]:
        return self

    def __next__(self) -> TrainingEpisode:
        return self.draw()

    def draw(self, like: nn.Module | None = None) -> TrainingEpisode:
        item = self.items[int(self.rng.integers(len(self.items)))]
        episode = self.sampler.sample(item.task, self.k, int(self.rng.integers(2**31 - 1)))
        query = episode.query
        if len(query) > self.query_size:
            query = np.sort(self.rng.choice(query, size=self.query_size, replace=False))
        y = item.y
        ref = torch.zeros((), dtype=torch.float32) if like is None else _reference(like)
        device, dtype = ref.device, ref.dtype
        return TrainingEpisode(
            support=item.graphs.collate(episode.support).to(device),
            support_y=torch.as_tensor(y[episode.support], dtype=dtype, device=device),
            query=item.graphs.collate(query).to(device),
            query_y=torch.as_tensor(y[query], dtype=dtype, device=device),
        )


# --- the interface -----------------------------------------------------------------------


class Adapter(ABC):
    """Base class of few-shot adaptation methods (see the module docstring for the contract)."""

    def get_params(self) -> dict[str, Any]:
        """The constructor's hyper-parameters and their current values."""
        sig = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name, p in sig.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def set_params(self, **params: Any) -> Adapter:
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no hyper-parameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def meta_train(
        self,
        encoder: nn.Module,
        train_tasks: Sequence[Task],
        featurizer: str | Featurizer | TaskFeatureCache = "basic",
        validation: MetaValidation | None = None,
        checkpoint: MetaCheckpoint | None = None,
    ) -> Adapter:
        """Learn from ``train_tasks`` (updates ``encoder`` in place). Default: no-op.

        ``validation``: keep the best state on held-out tasks (:class:`MetaValidation`)
        instead of the last one. ``checkpoint``: save the training state as it goes and
        resume from it (:class:`MetaCheckpoint`).
        """
        return self

    @abstractmethod
    def adapt(self, encoder: nn.Module, support_graphs: MolGraphs, support_y: np.ndarray) -> Predictor:
        """Fit one task from its support set; never modifies the meta-parameters."""

    def fit_predict(self, encoder: nn.Module) -> FitPredict:
        """The ``fit_predict`` callback of :func:`moladapt.evaluate.protocol.evaluate_few_shot`."""

        def fit_predict(support: MolGraphs, support_y: np.ndarray, query: MolGraphs) -> np.ndarray:
            predictor = self.adapt(encoder, support, support_y)
            # unsaturated scores where the predictor has them: ranking metrics need no probabilities
            score = getattr(predictor, "decision_function", None) or predictor.predict_proba
            return score(query)

        return fit_predict


class HeadMixin:
    """Adapters with a meta-learned one-logit head (``head_``; ``None`` before meta-training)."""

    head_: PredictionHead | None = None
    seed: int = 0

    def _train_head(self, encoder: nn.Module) -> PredictionHead:
        """The head to meta-train: ``head_`` (warm start) or a new one, stored in ``head_``."""
        out_dim = int(encoder.out_dim)  # type: ignore[arg-type]
        if self.head_ is None or self.head_.in_dim != out_dim:
            self.head_ = new_head(out_dim, encoder, self.seed)
        return self.head_

    def _model_copy(self, encoder: nn.Module) -> MolecularModel:
        """A deep copy of ``encoder`` + head initialisation (a fresh seeded head if none)."""
        out_dim = int(encoder.out_dim)  # type: ignore[arg-type]
        head = self.head_
        if head is None:
            head = new_head(out_dim, encoder, self.seed)
        elif head.in_dim != out_dim:
            raise ValueError(
                f"meta-trained head expects {head.in_dim}-d embeddings, encoder gives {out_dim}"
            )
        model = copy.deepcopy(MolecularModel(encoder, head))  # type: ignore[arg-type]
        for p in model.parameters():
            p.grad = None
        return model


ADAPTERS: Registry[Callable[..., Adapter]] = Registry("adapter")


@dataclass(frozen=True)
class MetaValidation:
    """Model selection during meta-training, FS-Mol's rule (its trainers validate every 50 steps).

    Every ``every`` outer steps, and after the last, the current meta-parameters are scored
    with the evaluation protocol (:func:`moladapt.evaluate.protocol.evaluate_few_shot`) on
    ``tasks`` (held-out tasks, e.g. FS-Mol's validation split): ``draws`` episodes per task
    and support size in ``support_sizes`` (FS-Mol's trainers use 16 and 128, 5 draws), the
    rest of the task as query, the same episodes every time (episode seeds ``seed + draw``).
    The score is the mean over tasks of the task's mean ΔAUPRC over its episodes; the
    meta-parameters (parameters *and* buffers) of the best-scoring step are restored at the
    end. Scoring adapts copies under a forked RNG, so validating never changes the training
    trajectory, only which of its states is kept.
    """

    tasks: Sequence[Task]
    every: int = 50
    support_sizes: tuple[int, ...] = (16,)
    draws: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.every) < 1:
            raise ValueError(f"validation interval must be >= 1 outer step, got {self.every}")
        if not self.tasks:
            raise ValueError("meta-validation needs at least one task")
        object.__setattr__(self, "support_sizes", tuple(int(k) for k in self.support_sizes))

    def score(self, adapter: Adapter, encoder: nn.Module, cache: TaskFeatureCache) -> float:
        """Mean ΔAUPRC over tasks of ``adapter`` adapted from ``encoder`` (NaN: no task is
        large enough for any of the support sizes)."""
        from moladapt.evaluate.protocol import evaluate_few_shot  # the protocol imports this module

        rows = evaluate_few_shot(self.tasks, adapter.fit_predict(encoder), "validation",
                                 self.support_sizes, int(self.draws), cache, seed=int(self.seed))
        scored = rows[rows["status"] == "ok"]
        if scored.empty:
            return float("nan")
        return float(scored.groupby("task_id")["delta_auprc"].mean().mean())


@dataclass(frozen=True)
class MetaCheckpoint(ResumeFile):
    """Resumable meta-training: every ``every`` outer steps (and after the last) the whole
    training state is written atomically to ``path`` — the meta-parameters, Adam's state, the
    episode stream's and torch's random states, the losses, the validation log and the best
    validated state — and a run that finds the file continues from its step. A resumed run
    follows the same trajectory as an uninterrupted one (same episodes, same updates), so a
    killed meta-training loses at most ``every`` steps; asking for more steps than the file
    holds continues training. ``identity`` (JSON-like: method, hyper-parameters except
    ``meta_steps``, tasks, encoder...) must match the file's, so a file of another
    configuration is refused instead of silently mixed in.
    """

    every: int = 100

    FORMAT: ClassVar[str] = "moladapt-meta-resume-1"
    KIND: ClassVar[str] = "meta-training"

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.every) < 1:
            raise ValueError(f"checkpoint interval must be >= 1 outer step, got {self.every}")


@dataclass
class OuterLoopLog:
    """What :func:`outer_loop` did: the mean meta-batch loss of every step, and with
    validation the ``(step, score)`` pairs and the step whose state was kept (steps count
    from 1; step 0 is the state before training, a candidate too)."""

    losses: list[float]
    validation: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    resumed_from: int = 0  # the checkpoint's step this run continued from (0: a fresh start)
    validation_seconds: float = 0.0  # spent scoring (in this process)


def outer_loop(
    parameters: Sequence[Tensor],
    stream: EpisodeStream,
    episode_loss: Callable[[TrainingEpisode], Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    grad_clip: float | None,
    like: nn.Module,
    validate: Callable[[], float] | None = None,
    validate_every: int = 50,
    keep: Sequence[nn.Module] = (),
    checkpoint: MetaCheckpoint | None = None,
) -> OuterLoopLog:
    """Episodic meta-training with Adam.

    Each step draws ``batch_size`` episodes; each episode's loss is divided by
    ``batch_size`` and back-propagated at once (gradients accumulate in ``.grad``), so the
    memory held never grows with the meta-batch; then one (clipped) optimiser step.

    ``keep``: the modules holding the meta-parameters. With ``validate`` (higher is better;
    NaN never wins) their state is scored before training, every ``validate_every`` steps and
    after the last step, and the best one is loaded back at the end (see
    :class:`MetaValidation`). With ``checkpoint`` the run saves itself and resumes (see
    :class:`MetaCheckpoint`).
    """
    params = [p for p in parameters if p.requires_grad]
    optimiser = adam(params, lr=lr)
    log = OuterLoopLog(losses=[])
    best: tuple[float, list[dict[str, Tensor]]] | None = None
    first = 1
    saved = None if checkpoint is None else checkpoint.load()
    if saved is not None:
        for module, state in zip(keep, saved["modules"], strict=True):
            module.load_state_dict(state)
        optimiser.load_state_dict(saved["optimiser"])
        stream.rng.bit_generator.state = saved["stream_rng"]
        torch.set_rng_state(saved["torch_rng"])
        log = OuterLoopLog(list(saved["losses"]), [(int(a), float(b)) for a, b in saved["validation"]],
                           saved["best_step"])
        if saved["best_modules"] is not None:
            best = (float(saved["best_score"]), saved["best_modules"])
        first = int(saved["step"]) + 1
        log.resumed_from = first - 1
        if log.resumed_from > int(steps):
            raise ValueError(f"{checkpoint.path} already holds {log.resumed_from} outer steps; asked for "
                             f"{int(steps)} (ask for at least as many, or use another output)")

    def save(step: int) -> None:
        assert checkpoint is not None
        checkpoint.save({
            "step": step, "modules": [m.state_dict() for m in keep], "optimiser": optimiser.state_dict(),
            "stream_rng": stream.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "losses": log.losses, "validation": [list(v) for v in log.validation], "best_step": log.best_step,
            "best_score": None if best is None else best[0], "best_modules": None if best is None else best[1],
        })

    def check(step: int) -> None:
        nonlocal best
        start = time.perf_counter()
        score = float(validate())  # type: ignore[misc]
        log.validation_seconds += time.perf_counter() - start
        log.validation.append((step, score))
        if score == score and (best is None or score > best[0]):
            best = (score, [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in keep])
            log.best_step = step

    if validate is not None and first == 1:
        check(0)
    for step in range(first, int(steps) + 1):
        optimiser.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(int(batch_size)):
            loss = episode_loss(stream.draw(like)) / batch_size
            loss.backward()
            total += float(loss.detach())
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimiser.step()
        log.losses.append(total)
        if validate is not None and (step % int(validate_every) == 0 or step == int(steps)):
            check(step)
        if checkpoint is not None and (step % int(checkpoint.every) == 0 or step == int(steps)):
            save(step)
    if best is not None:
        for module, state in zip(keep, best[1], strict=True):
            module.load_state_dict(state)
    return log


def meta_training_stream(adapter: Adapter, train_tasks: Sequence[Task],
                         featurizer: str | Featurizer | TaskFeatureCache) -> EpisodeStream:
    """The episode stream of an episodic meta-learner: its ``train_k``-shot supports, queries of
    at most ``query_size``, tasks kept when they leave at least ``min_query`` query molecules,
    drawn under its ``seed``."""
    a: Any = adapter
    return EpisodeStream(train_tasks, featurizer, a.train_k, a.query_size, a.seed,
                         sampler=EpisodeSampler(min_query=a.min_query))


def run_outer_loop(
    adapter: Adapter,
    parameters: Sequence[Tensor],
    stream: EpisodeStream,
    episode_loss: Callable[[TrainingEpisode], Tensor],
    like: nn.Module,
    encoder: nn.Module,
    keep: Sequence[nn.Module],
    validation: MetaValidation | None,
    checkpoint: MetaCheckpoint | None = None,
) -> None:
    """:func:`outer_loop` with ``adapter``'s meta-training hyper-parameters (``meta_steps``,
    ``meta_batch_size``, ``meta_lr``, ``grad_clip``) under its ``seed``; sets its
    ``history_`` (losses), ``validation_`` (``(step, score)`` pairs), ``best_step_``,
    ``resumed_from_step_`` and ``validation_seconds_``.

    ``keep``: the modules holding the meta-parameters (restored to the best validated state).
    ``checkpoint``: save and resume (its identity gains the adapter's class and
    hyper-parameters, except ``meta_steps``: more steps continue a finished run).
    """
    a: Any = adapter
    validate = None if validation is None else (lambda: validation.score(adapter, encoder, stream.cache))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(a.seed)
        log = outer_loop(
            parameters, stream, episode_loss, a.meta_steps, a.meta_batch_size, a.meta_lr,
            a.grad_clip, like, validate, validation.every if validation else 1, keep,
            _with_adapter_identity(checkpoint, adapter, validation, stream),
        )
    a.history_ = log.losses
    a.validation_ = log.validation
    a.best_step_ = log.best_step
    a.resumed_from_step_ = log.resumed_from
    a.validation_seconds_ = log.validation_seconds


def _with_adapter_identity(
    checkpoint: MetaCheckpoint | None, adapter: Adapter, validation: MetaValidation | None,
    stream: EpisodeStream,
) -> MetaCheckpoint | None:
    if checkpoint is None:
        return None
    tasks = hashlib.sha1("\n".join(item.task.task_id for item in stream.items).encode()).hexdigest()
    params = {k: v for k, v in adapter.get_params().items() if k != "meta_steps"}
    checked = None if validation is None else {
        "tasks": [t.task_id for t in validation.tasks], "every": validation.every,
        "support_sizes": list(validation.support_sizes), "draws": validation.draws, "seed": validation.seed}
    return checkpoint.with_identity(adapter=type(adapter).__name__, params=params, train_tasks_sha1=tasks,
                                    episode_k=stream.k, validation=checked)
