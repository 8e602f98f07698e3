"""Structured multi-task learning runs: SGNN-EBM and its baselines on one dense dataset.

:func:`run_multitask` trains one method on one (optionally Dense-N) multi-task
classification dataset and scores it on a held-out test part:

* ``single-task``: one :func:`~moladapt.training.build_model` per task, each trained on
  the molecules measured on its task; ``params={"task_sample": N}`` trains (and scores) only
  a seeded random sample of N tasks (``task_sample_seed``, default 0: the same tasks for every
  training seed), for datasets with hundreds of tasks where one model per task is beyond the
  budget — the other methods can then be compared on those tasks from their per-task scores;
* ``multi-task``: one shared encoder, one logit per task, masked BCE
  (:class:`~moladapt.training.Trainer`);
* ``uncertainty`` / ``gradnorm``: the same network with loss balancing
  (:class:`~moladapt.adapt.multitask_baselines.BalancedMultiTaskTrainer`);
* ``sgnn``: SGNN over the task graph, without the energy-based model
  (:class:`~moladapt.adapt.sgnn_ebm.SGNNEBM` with ``use_ebm=False``);
* ``sgnn-ebm``: SGNN then the EBM trained by NCE (two stages: ``epochs`` for the SGNN,
  ``ebm_epochs`` for the EBM).

The split is :func:`~moladapt.data.dense.filtered_random_split` (every task has both classes
in train, valid and test, so every task's ROC-AUC is defined). Each method keeps the epoch
with the best mean validation ROC-AUC. The task graph (``task_graph``) is
``"coactivity"`` (label co-activity on the **training rows** only), ``"toxcast-names"``
(the ToxCast assay-name rule), ``"none"`` (no edges) or the path of an edge-list file; it
feeds the SGNN methods and its statistics are reported for every method.

A run directory gets ``config.yaml`` (written first) and ``metrics.json``. This module also
registers the study runner ``"multitask"`` (config keys: the fields of
:class:`MultitaskConfig`).

Datasets are registered benchmark names (``tox21``, ``toxcast``, ``sider``, ...) or
``fsmol-train`` / ``fsmol-valid`` / ``fsmol-test``: FS-Mol's tasks of that fold pivoted into
a molecules × assays label matrix (:func:`fsmol_labeled_data`; needs ``dense_n``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moladapt.config import checked_arguments
from moladapt.study.executors import RUNNERS, Runner, _coerce

if TYPE_CHECKING:
    from moladapt.data.sources import LabeledData
    from moladapt.data.task_graph import TaskGraph
    from moladapt.evaluate.metrics import MetricReport

__all__ = [
    "FSMOL_DATASETS",
    "GRAPH_SOURCES",
    "MULTITASK_METHODS",
    "MultitaskConfig",
    "MultitaskResult",
    "build_task_graph",
    "fsmol_labeled_data",
    "load_multitask_data",
    "resolve_multitask_config",
    "run_multitask",
    "run_multitask_config",
]

MULTITASK_METHODS = ("single-task", "multi-task", "uncertainty", "gradnorm", "sgnn", "sgnn-ebm")
GRAPH_SOURCES = ("coactivity", "toxcast-names", "none")
FSMOL_DATASETS = ("fsmol-train", "fsmol-valid", "fsmol-test")
_GRAPH_METHODS = ("sgnn", "sgnn-ebm")


@dataclass(frozen=True)
class MultitaskConfig:
    """Everything a :func:`run_multitask` run depends on (its ``config.yaml``).

    ``params`` holds further hyper-parameters of the method: :class:`SGNNEBM` arguments for
    ``sgnn``/``sgnn-ebm`` (``coupling``, ``n_noise``, ``inference``, ``task_emb_dim``, ...),
    ``alpha``/``weight_lr`` for ``uncertainty``/``gradnorm``, and ``grad_norm_of``
    (``weight`` or ``representation``) for ``gradnorm``.
    """

    dataset: str = "tox21"
    method: str = "sgnn-ebm"
    task_graph: str = "coactivity"
    graph_method: str = "jaccard"
    graph_threshold: float = 0.3
    graph_min_common: int = 20
    dense_n: int | None = None
    min_tasks_per_molecule: int = 1  # Dense-N keeps molecules measured on >= this many kept tasks
    max_tasks: int | None = None
    split_frac: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int | None = None  # None: the training seed
    seed: int = 0
    featurizer: str = "basic"
    encoder: str = "gin"
    hidden_dim: int = 300
    num_layers: int = 5
    dropout: float = 0.5
    pooling: str = "mean"
    epochs: int = 100
    ebm_epochs: int | None = None  # sgnn-ebm's second stage; None: max(1, epochs // 2)
    batch_size: int = 32
    lr: float = 1e-3
    num_threads: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in MULTITASK_METHODS:
            raise ValueError(f"unknown multi-task method {self.method!r}; choose one of: "
                             f"{', '.join(MULTITASK_METHODS)}")
        frac = tuple(float(f) for f in self.split_frac)
        if len(frac) != 3 or abs(sum(frac) - 1.0) > 1e-6 or min(frac) <= 0:
            raise ValueError(f"split_frac must be 3 positive numbers summing to 1, got {self.split_frac}")
        object.__setattr__(self, "split_frac", frac)
        for name in ("epochs", "batch_size", "hidden_dim", "num_layers", "min_tasks_per_molecule"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dense_n", "max_tasks", "ebm_epochs"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 (or None), got {value}")
        if not isinstance(self.params, Mapping):
            raise ValueError(f"params must be a mapping of hyper-parameters, got {self.params!r}")
        object.__setattr__(self, "params", dict(self.params))

    def to_dict(self) -> dict[str, Any]:
        from moladapt.config import to_plain

        return to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MultitaskConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown multitask option(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class MultitaskResult:
    """One run's scores: test/valid reports (per task and mean), graph statistics, timings."""

    config: MultitaskConfig
    dataset: str
    test: MetricReport
    valid: MetricReport
    graph_stats: dict[str, float | int]
    split_sizes: tuple[int, int, int]
    n_molecules: int
    n_tasks: int
    train_seconds: float
    inference_seconds: float
    label_density: float
    output: Path | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def test_roc_auc(self) -> float:
        return float(self.test.mean.get("roc_auc", math.nan))

    @property
    def per_task_roc_auc(self) -> dict[str, float]:
        return {t: float(v.get("roc_auc", math.nan)) for t, v in self.test.per_task.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.config.method, "dataset": self.dataset,
            "test_roc_auc": self.test_roc_auc, "per_task_test_roc_auc": self.per_task_roc_auc,
            "test": self.test.to_dict(), "valid": self.valid.to_dict(),
            "graph": dict(self.graph_stats),
            "split_sizes": dict(zip(("train", "valid", "test"), self.split_sizes, strict=True)),
            "n_molecules": self.n_molecules, "n_tasks": self.n_tasks,
            "label_density": self.label_density,
            "train_seconds": self.train_seconds, "inference_seconds": self.inference_seconds,
            **self.extra,
        }


# --- data ------------------------------------------------------------------------------------
def fsmol_labeled_data(split: str = "train", min_per_class: int = 1,
                       download: bool = True) -> LabeledData:
    """FS-Mol's tasks of one fold as one multi-task table: molecules × task_id (NaN = unmeasured).

    Only tasks with ``>= min_per_class`` positives and negatives are pivoted (the full train
    fold, 207k molecules × 4935 assays, does not fit densely in memory; pass the Dense-N
    threshold here and :func:`~moladapt.data.dense.dense_subset` finishes the job). A
    molecule listed twice in one task with different labels is NaN there. ``rows`` are
    the first line of each molecule in the file (0-based, header excluded).
    """
    import pandas as pd

    from moladapt.data.sources import CLASSIFICATION, FSMOL, DataError, LabeledData, resolve_file
    from moladapt.data.tasks import FSMOL_SPLITS

    if split not in FSMOL_SPLITS:
        raise ValueError(f"FS-Mol split must be one of {FSMOL_SPLITS}, got {split!r}")
    path = resolve_file(FSMOL, download=download)
    frame = pd.read_csv(path, usecols=["split", "task_id", "smiles", "label"])
    frame = frame[frame["split"] == split]
    frame = frame.assign(smiles=frame["smiles"].astype(str), task_id=frame["task_id"].astype(str))
    counts = frame.groupby("task_id")["label"].agg(["sum", "count"])
    keep = counts.index[(counts["sum"] >= min_per_class)
                        & (counts["count"] - counts["sum"] >= min_per_class)]
    if len(keep) == 0:
        raise DataError(f"{path}: no FS-Mol {split} task has {min_per_class} molecules of each class")
    frame = frame[frame["task_id"].isin(keep)]
    first_row = frame.reset_index().groupby("smiles", sort=False)["index"].min()
    label = frame.groupby(["smiles", "task_id"], sort=False)["label"].mean()
    label = label.where(label.isin((0.0, 1.0)))  # conflicting duplicates → unmeasured
    wide = label.unstack("task_id").reindex(index=first_row.index, columns=sorted(keep))
    return LabeledData(
        name=f"fsmol-{split}", smiles=wide.index.tolist(),
        labels=wide.to_numpy(dtype=np.float64), task_names=[str(c) for c in wide.columns],
        task_type=CLASSIFICATION, source=str(path), rows=first_row.to_numpy(dtype=np.int64),
        metadata={"fsmol_split": split, "min_per_class": min_per_class,
                  "all_task_names": sorted(counts.index.astype(str))},
    )


def load_multitask_data(dataset: str, dense_n: int | None = None,
                        max_tasks: int | None = None, min_tasks_per_molecule: int = 1) -> LabeledData:
    """A registered classification benchmark, ``fsmol-<fold>`` or a CSV of 0/1 tasks
    (:func:`moladapt.data.sources.load_task_csv`), Dense-``dense_n`` if given, cut to its first
    ``max_tasks`` tasks (in column order) if given."""
    return select_tasks(_load_table(dataset, dense_n), dense_n, max_tasks, min_tasks_per_molecule)


def _load_table(dataset: str, dense_n: int | None) -> LabeledData:
    from moladapt.data.sources import (
        CLASSIFICATION,
        DataError,
        load_dataset,
        load_task_csv,
        names_a_file,
    )

    name = dataset.lower()
    if names_a_file(dataset):  # a user's assay panel
        data = load_task_csv(dataset)
    elif name in FSMOL_DATASETS:
        if dense_n is None:
            raise ValueError(f"{dataset}: FS-Mol as one table needs dense_n (--dense, e.g. 100): "
                             "its 4935 training assays share few molecules")
        data = fsmol_labeled_data(name.split("-", 1)[1], min_per_class=dense_n)
    else:
        data = load_dataset(name)
    if data.task_type != CLASSIFICATION:
        raise DataError(f"{data.source}: multi-task runs need a classification dataset, "
                        f"{data.name} is {data.task_type}")
    return data


def select_tasks(data: LabeledData, dense_n: int | None = None,
                 max_tasks: int | None = None, min_tasks_per_molecule: int = 1) -> LabeledData:
    """Dense-``dense_n`` subset (molecules measured on ``>= min_tasks_per_molecule`` of its
    tasks), then the first ``max_tasks`` tasks and their molecules.

    FS-Mol's assays hardly share molecules (Dense-50 of its training fold: 22k molecules ×
    528 tasks at 1.2% label density); ``min_tasks_per_molecule=3`` leaves the 7,030 molecules
    × 418 tasks (3.7%) on which relations between tasks can show.
    """
    from moladapt.data.dense import dense_subset

    if "all_task_names" not in data.metadata:  # an edge list may name tasks cut here
        data = dataclasses.replace(data, metadata={**data.metadata,
                                                   "all_task_names": list(data.task_names)})
    if dense_n is not None:
        data = dense_subset(data, n_min=int(dense_n),
                            min_tasks_per_molecule=int(min_tasks_per_molecule))
    elif int(min_tasks_per_molecule) != 1:  # it filters the Dense-N table: without one it would be ignored
        raise ValueError(f"min_tasks_per_molecule (--min-tasks-per-molecule) = {min_tasks_per_molecule} "
                         "applies to a Dense-N table; give dense_n (--dense N) too")
    if max_tasks is not None and data.num_tasks > max_tasks:
        y = np.asarray(data.labels)[:, :max_tasks]
        rows = np.flatnonzero((~np.isnan(y)).any(axis=1))
        meta = dict(data.metadata, max_tasks=int(max_tasks))
        data = dataclasses.replace(
            data, smiles=[data.smiles[i] for i in rows], labels=y[rows],
            task_names=list(data.task_names[:max_tasks]), rows=np.asarray(data.rows)[rows],
            predefined_split=(None if data.predefined_split is None
                              else np.asarray(data.predefined_split)[rows]),
            metadata=meta)
    return data


def build_task_graph(source: str | Path, labels: np.ndarray, train_idx: np.ndarray,
                     task_names: list[str], method: str = "jaccard", threshold: float = 0.3,
                     min_common: int = 20, all_task_names: list[str] | None = None) -> TaskGraph:
    """The task graph named by ``source`` (see the module docstring) over ``task_names``.

    An edge-list file is read against ``all_task_names`` (the dataset's tasks before a
    Dense-N or ``max_tasks`` cut, so a graph over the full dataset works) and then restricted
    to ``task_names``.
    """
    from moladapt.data.task_graph import TaskGraph

    key = str(source)
    if key == "coactivity":
        return TaskGraph.from_coactivity(labels, train_idx, task_names, method, threshold, min_common)
    if key == "toxcast-names":
        return TaskGraph.from_toxcast_names(task_names)
    if key == "none":
        return TaskGraph.empty(task_names)
    full = list(all_task_names) if all_task_names is not None else list(task_names)
    return TaskGraph.from_edge_list(Path(source), full).subset(task_names)


def _check_graph_source(source: str) -> None:
    if source not in GRAPH_SOURCES and not Path(source).exists():
        raise FileNotFoundError(f"task graph {source!r} is neither one of {', '.join(GRAPH_SOURCES)} "
                                "nor an existing edge-list file")


# --- training ----------------------------------------------------------------------------------
def run_multitask(dataset: str | LabeledData, method: str = "sgnn-ebm",
                  task_graph: str | Path = "coactivity", output: str | Path | None = None,
                  log: Callable[[str], Any] | None = None, **options: Any) -> MultitaskResult:
    """Train and test one multi-task method on one dataset; write ``config.yaml``/``metrics.json``.

    Args:
        dataset: a benchmark name (``tox21``, ``toxcast``, ``sider``, ``fsmol-train``, ...)
            or a :class:`LabeledData` (binary classification; ``dense_n``/``max_tasks`` still apply).
        method: one of :data:`MULTITASK_METHODS`.
        task_graph: ``"coactivity"``, ``"toxcast-names"``, ``"none"`` or an edge-list path.
        output: run directory (None: write nothing).
        log: called with progress lines (None: silent).
        **options: the other fields of :class:`MultitaskConfig` (``dense_n``, ``max_tasks``,
            ``split_frac``, ``seed``, ``hidden_dim``, ``num_layers``, ``epochs``, ``params``, ...).

    Returns:
        A :class:`MultitaskResult`: test ROC-AUC mean over tasks and per task, timings,
        task-graph statistics.
    """
    name = dataset if isinstance(dataset, str) else dataset.name
    from moladapt.data.sources import names_a_file

    if isinstance(dataset, str) and names_a_file(dataset):
        name = str(Path(dataset).resolve())  # the config replays the run from any directory
    cfg = MultitaskConfig.from_dict({**options, "dataset": name, "method": method,
                                     "task_graph": str(task_graph)})
    return run_multitask_config(cfg, output, data=None if isinstance(dataset, str) else dataset, log=log)


def run_multitask_config(cfg: MultitaskConfig, output: str | Path | None = None,
                         data: LabeledData | None = None,
                         log: Callable[[str], Any] | None = None) -> MultitaskResult:
    """:func:`run_multitask` from a :class:`MultitaskConfig` (``data`` overrides ``cfg.dataset``)."""
    import torch

    from moladapt.data.dense import filtered_random_split
    from moladapt.data.sources import CLASSIFICATION, DataError
    from moladapt.experiment import environment
    from moladapt.training import prepare
    from moladapt.utils import seed_everything, write_json

    say = log or (lambda _m: None)
    _check_graph_source(cfg.task_graph)
    out = Path(output) if output is not None else None
    if out is not None:
        import yaml

        from moladapt.utils import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        # config first, so a crashed run says what it was; but a finished run's config stays
        # with its metrics until this run finishes (a refused or killed rerun must not relabel it)
        if not (out / "metrics.json").exists():
            atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    seed_everything(cfg.seed)
    if data is None:
        data = _load_table(cfg.dataset, cfg.dense_n)
    elif data.task_type != CLASSIFICATION:
        raise DataError(f"{data.source}: multi-task runs need a classification dataset, "
                        f"{data.name} is {data.task_type}")
    full_names = list(data.metadata.get("all_task_names", data.task_names))
    data = select_tasks(data, cfg.dense_n, cfg.max_tasks, cfg.min_tasks_per_molecule)
    prepared = prepare(data, cfg.featurizer)
    if prepared.invalid:
        say(prepared.invalid_summary())
    graphs, y, names = prepared.graphs, np.asarray(prepared.y, dtype=np.float32), list(data.task_names)
    seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    split = filtered_random_split(y, cfg.split_frac, seed=seed)
    graph = build_task_graph(cfg.task_graph, y, split.train, names, cfg.graph_method,
                             cfg.graph_threshold, cfg.graph_min_common, full_names)
    stats = graph.stats()
    say(f"{data.name}: {len(graphs)} molecules × {len(names)} tasks "
        f"(label density {np.mean(~np.isnan(y)):.3f}); split "
        f"{len(split.train)}/{len(split.valid)}/{len(split.test)}")
    say("task graph: " + ", ".join(f"{k} {_fmt(v)}" for k, v in stats.items()))

    fit, predict = _METHODS[cfg.method](cfg, graph, names)
    t0 = time.perf_counter()
    extra = fit(graphs, y, split.train, split.valid) or {}
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_proba = predict(graphs, split.test)
    inference_seconds = time.perf_counter() - t0
    test = _score(y[split.test], test_proba, names, cfg.method)
    valid = _score(y[split.valid], predict(graphs, split.valid), names, cfg.method)
    say(f"{cfg.method}: test ROC-AUC {test.mean.get('roc_auc', math.nan):.4f} "
        f"({test.n_tasks_scored}/{test.n_tasks} tasks); train {train_seconds:.1f}s, "
        f"test inference {inference_seconds:.2f}s")
    result = MultitaskResult(
        config=cfg, dataset=data.name, test=test, valid=valid, graph_stats=stats,
        split_sizes=(len(split.train), len(split.valid), len(split.test)),
        n_molecules=len(graphs), n_tasks=len(names), train_seconds=train_seconds,
        inference_seconds=inference_seconds, label_density=float(np.mean(~np.isnan(y))),
        output=out, extra=extra)
    if out is not None:
        import yaml

        from moladapt.utils import atomic_write_text

        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_json(out / "metrics.json", {**result.to_dict(), "task_names": names,
                                          "n_invalid_smiles": len(prepared.invalid),
                                          "environment": environment()})
    return result


def _score(y: np.ndarray, proba: np.ndarray, names: list[str], method: str) -> MetricReport:
    """Classification metrics; tasks the method did not predict (all-NaN scores: outside a
    single-task ``task_sample``) are skipped with that reason instead of being scored."""
    from moladapt.evaluate.metrics import classification_metrics

    unpredicted = np.flatnonzero(np.all(np.isnan(proba), axis=0))
    reason = f"not predicted by {method} (outside its task sample)"
    return classification_metrics(y, proba, names, not_scored={names[t]: reason for t in unpredicted})


def _fmt(v: float | int) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _model_config(cfg: MultitaskConfig):
    from moladapt.config import ModelConfig

    return ModelConfig(encoder=cfg.encoder, hidden_dim=cfg.hidden_dim, num_layers=cfg.num_layers,
                       dropout=cfg.dropout, pooling=cfg.pooling)


def _train_config(cfg: MultitaskConfig):
    from moladapt.config import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                       num_threads=cfg.num_threads)


def _no_params(cfg: MultitaskConfig) -> None:
    if cfg.params:
        raise ValueError(f"method {cfg.method!r} takes no params, got {sorted(cfg.params)}")


def _plain_method(cfg: MultitaskConfig, graph: TaskGraph, names: list[str]):
    from moladapt.data.featurize import get_featurizer
    from moladapt.training import Trainer, build_model

    _no_params(cfg)
    model = build_model(_model_config(cfg), get_featurizer(cfg.featurizer), len(names))
    trainer = Trainer(model, "classification", _train_config(cfg), progress=False)

    def fit(graphs, y, train, valid):
        trainer.fit(graphs, y, train, valid)
        return {"best_epoch": trainer.history_.best_epoch}

    return fit, trainer.predict


def _single_task(cfg: MultitaskConfig, graph: TaskGraph, names: list[str]):
    import torch

    from moladapt.data.featurize import get_featurizer
    from moladapt.training import Trainer, build_model

    bad = sorted(set(cfg.params) - {"task_sample", "task_sample_seed"})
    if bad:
        raise ValueError(f"unknown single-task param(s) {bad}; known: ['task_sample', 'task_sample_seed']")
    n_sample = cfg.params.get("task_sample")
    if n_sample is None or int(n_sample) >= len(names):
        columns = np.arange(len(names))
    elif int(n_sample) < 1:
        raise ValueError(f"task_sample must be >= 1, got {n_sample}")
    else:
        rng = np.random.default_rng(int(cfg.params.get("task_sample_seed", 0)))
        columns = np.sort(rng.choice(len(names), size=int(n_sample), replace=False))
    trainers: list[Trainer] = []

    def fit(graphs, y, train, valid):
        feat = get_featurizer(cfg.featurizer)
        best = []
        for t in columns:
            col = y[:, [t]]
            tr = train[~np.isnan(col[train, 0])]
            va = valid[~np.isnan(col[valid, 0])]
            # each task's initialisation depends on (seed, task) only, not on which tasks were
            # trained before it: a task sample trains exactly the models of the full run
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(cfg.seed) * 1_000_003 + int(t))
                model = build_model(_model_config(cfg), feat, 1)
            trainer = Trainer(model, "classification", _train_config(cfg), progress=False)
            trainers.append(trainer.fit(graphs, col, tr, va))
            best.append(trainer.history_.best_epoch)
        return {"best_epoch_per_task": best, "tasks_trained": [names[t] for t in columns]}

    def predict(graphs, idx):
        out = np.full((len(idx), len(names)), np.nan)
        out[:, columns] = np.concatenate([tr.predict(graphs, idx) for tr in trainers], axis=1)
        return out

    return fit, predict


def _balanced(cfg: MultitaskConfig, graph: TaskGraph, names: list[str]):
    from moladapt.adapt.multitask_baselines import BalancedMultiTaskTrainer
    from moladapt.data.featurize import get_featurizer
    from moladapt.training import build_model

    allowed = {"alpha", "weight_lr"} | ({"grad_norm_of"} if cfg.method == "gradnorm" else set())
    bad = sorted(set(cfg.params) - allowed)
    if bad:
        raise ValueError(f"unknown {cfg.method} param(s) {bad}; known: {sorted(allowed)}")
    params = checked_arguments(BalancedMultiTaskTrainer, cfg.params, f"{cfg.method} param")
    model = build_model(_model_config(cfg), get_featurizer(cfg.featurizer), len(names))
    trainer = BalancedMultiTaskTrainer(model, "classification", _train_config(cfg),
                                       method=cfg.method, **params)

    def fit(graphs, y, train, valid):
        trainer.fit(graphs, y, train, valid)
        w = trainer.log_vars_ if cfg.method == "uncertainty" else trainer.task_weights_
        return {"log_vars" if cfg.method == "uncertainty" else "task_weights": w.tolist()}

    return fit, trainer.predict


_SGNN_FIXED = ("task_graph", "use_ebm", "encoder", "hidden_dim", "num_layers", "dropout",
               "pooling", "sgnn_epochs", "ebm_epochs", "batch_size", "lr", "seed")


def _sgnn(cfg: MultitaskConfig, graph: TaskGraph, names: list[str]):
    import inspect

    from moladapt.adapt.sgnn_ebm import SGNNEBM

    allowed = set(inspect.signature(SGNNEBM).parameters) - set(_SGNN_FIXED)
    bad = sorted(set(cfg.params) - allowed)
    if bad:
        raise ValueError(f"unknown {cfg.method} param(s) {bad}; known: {sorted(allowed)} "
                         "(the others come from the run's options)")
    params = checked_arguments(SGNNEBM, cfg.params, f"{cfg.method} param")
    use_ebm = cfg.method == "sgnn-ebm"
    ebm_epochs = cfg.ebm_epochs if cfg.ebm_epochs is not None else max(1, cfg.epochs // 2)
    model = SGNNEBM(task_graph=graph, use_ebm=use_ebm, encoder=cfg.encoder,
                    hidden_dim=cfg.hidden_dim, num_layers=cfg.num_layers, dropout=cfg.dropout,
                    pooling=cfg.pooling, sgnn_epochs=cfg.epochs, ebm_epochs=ebm_epochs,
                    batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, **params)

    def fit(graphs, y, train, valid):
        model.fit(graphs, y, train, valid, task_names=names, featurizer=cfg.featurizer)
        hist = model.history_
        stage_seconds = {k: float(sum(e["seconds"] for e in v)) for k, v in hist.items()}
        return {"stage_seconds": stage_seconds,
                "ebm_epochs": ebm_epochs if use_ebm else 0,
                "final_nce_accuracy": (hist["ebm"][-1].get("nce_accuracy") if hist["ebm"] else None),
                "ebm_best_epoch": model.best_epoch_.get("ebm")}

    return fit, model.predict_proba


_METHODS = {"single-task": _single_task, "multi-task": _plain_method, "uncertainty": _balanced,
            "gradnorm": _balanced, "sgnn": _sgnn, "sgnn-ebm": _sgnn}


# --- the study runner --------------------------------------------------------------------------
def resolve_multitask_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate a study's ``multitask`` config and fill its defaults (raise ValueError naming a
    bad key): options are :class:`MultitaskConfig`'s fields; names must be registered."""
    from moladapt.data.featurize import FEATURIZERS
    from moladapt.data.sources import CLASSIFICATION, DATASETS
    from moladapt.models.encoders import ENCODERS, POOLINGS

    if not isinstance(config, Mapping):
        raise ValueError(f"a multitask config must be a mapping of options, got {config!r}")
    types = {f.name: str(f.type) for f in fields(MultitaskConfig)}
    values = dict(config)
    for name in list(values):
        if name not in types:
            raise ValueError(f"unknown key {name!r}; multitask options are: {', '.join(sorted(types))}")
        values[name] = _coerce(name, types[name], values[name])
    cfg = MultitaskConfig.from_dict(values)
    dataset = cfg.dataset.lower()
    if dataset in FSMOL_DATASETS:
        if cfg.dense_n is None:
            raise ValueError(f"dataset {cfg.dataset!r} needs dense_n (--dense N, e.g. 50)")
    else:
        spec = DATASETS.get(dataset)
        if spec.task_type != CLASSIFICATION or spec.group == "fsmol":
            raise ValueError(f"dataset {cfg.dataset!r} is not a multi-task classification table")
    FEATURIZERS.get(cfg.featurizer)
    ENCODERS.get(cfg.encoder)
    if cfg.pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {cfg.pooling!r}; choose one of: {', '.join(POOLINGS)}")
    if cfg.task_graph not in GRAPH_SOURCES:
        _check_graph_source(cfg.task_graph)
        values["task_graph"] = str(Path(cfg.task_graph).resolve())  # workers may run elsewhere
        cfg = MultitaskConfig.from_dict(values)
    return cfg.to_dict()


def _run_study_multitask(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from moladapt.utils import json_safe

    cfg = MultitaskConfig.from_dict(config)
    threads = int(os.environ.get("MOLADAPT_STUDY_THREADS", "0"))
    if threads and cfg.num_threads is None:
        cfg = dataclasses.replace(cfg, num_threads=threads)
    result = run_multitask_config(cfg, run_dir)
    metrics: dict[str, Any] = {}
    for part, report in (("test", result.test), ("valid", result.valid)):
        for name, value in report.mean.items():
            metrics[f"{part}.{name}"] = float(value)
        metrics[f"{part}.n_tasks_scored"] = int(report.n_tasks_scored)
    metrics.update({f"graph.{k}": v for k, v in result.graph_stats.items()})
    n_train, n_valid, n_test = (int(n) for n in result.split_sizes)
    metrics.update(train_seconds=result.train_seconds, inference_seconds=result.inference_seconds,
                   n_molecules=result.n_molecules, n_tasks=result.n_tasks, n_train=n_train,
                   n_valid=n_valid, n_test=n_test, label_density=result.label_density,
                   run_dir=str(run_dir))
    return json_safe(metrics)


RUNNERS.add("multitask", Runner(_run_study_multitask, resolve_multitask_config))
