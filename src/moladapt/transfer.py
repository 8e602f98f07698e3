"""Multi-property transfer with learned transfer ratios (Lee et al., "Scalable Multi-Task
Transfer Learning for Molecular Property Prediction", 2024).

One *target* property is trained together with *source* properties measured on other (or
the same) molecules, each source loss weighted by a transfer ratio: all 1 (``uniform_mt``),
learned by bi-level optimisation against the target's validation loss (``bilevel``,
:class:`moladapt.adapt.bilevel.BiLevelTaskWeighting`), or no sources (``single_task``).

**The multi-task table** (:func:`build_table`). Molecules are matched across datasets by
RDKit canonical (isomeric) SMILES. The target's rows exactly as published (its
train / valid / test split), then the *extra* molecules that only sources measure (target
label NaN, training only). Column 0 is the target, one column per source, NaN where a source
does not measure a molecule (repeated measurements are averaged; conflicting classification
labels become NaN). Sources of another task type are left out (one loss type per model);
no target test molecule carries a source label or becomes a training row
(:func:`check_no_leakage` asserts it); extra molecules are capped at ``extra_ratio ×`` the
target's training molecules (a seeded sample).

**Equal target exposure**: ``epochs`` are passes over each method's own training set, so the
multi-task methods take ``epochs × ceil(n_train_mt / batch_size)`` optimiser steps and
``uniform_mt`` runs the bi-level loop's schedule without its outer updates (the time ratio
of the two is the bi-level overhead).

``benchmarks/tdc_transfer.py`` runs this over the 22 TDC ADMET datasets; ``moladapt
transfer`` runs one target: a TDC dataset, or a user's own assay (a CSV,
:func:`load_user_target`) with the TDC datasets as sources.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SETTINGS", "TRANSFER_METHODS", "Corpus", "SavedModel", "TransferTable", "UserTarget",
           "build_table", "check_no_leakage", "estimated_seconds", "fit_uniform", "load_corpus",
           "compare_methods", "load_user_target", "resolve_names", "run_transfer", "tdc_names",
           "transfer"]

TRANSFER_METHODS = ("single_task", "uniform_mt", "bilevel")
DEFAULT_SETTINGS: dict[str, Any] = {
    "encoder": "gin", "hidden_dim": 128, "num_layers": 3, "dropout": 0.2, "featurizer": "basic",
    "epochs": 50, "batch_size": 32, "lr": 1e-3, "extra_ratio": 4.0, "inner_steps": 10,
    "outer_lr": 0.1, "weighting": "sigmoid", "init_weight": None, "hypergradient": "neumann",
    "neumann_terms": 5, "valid_batch_size": 256, "threads": 1,
}


def _check_settings(settings: dict[str, Any]) -> None:
    """Numeric settings that cannot train are refused before any data is loaded."""
    for key, low in (("epochs", 1), ("batch_size", 2), ("inner_steps", 1), ("hidden_dim", 1),
                     ("num_layers", 1), ("neumann_terms", 0), ("valid_batch_size", 1)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"transfer setting {key} must be an integer of at least {low}, got {value!r}")
    if settings["threads"] is not None and (not isinstance(settings["threads"], int) or settings["threads"] < 1):
        raise ValueError(f"transfer setting threads must be at least 1, got {settings['threads']!r}")
    for key in ("lr", "outer_lr", "extra_ratio"):
        value = settings[key]
        if value is not None and (not isinstance(value, (int, float)) or not value >= 0):
            raise ValueError(f"transfer setting {key} must be a number >= 0, got {value!r}")
    if not 0.0 <= float(settings["dropout"]) < 1.0:
        raise ValueError(f"transfer setting dropout must be in [0, 1), got {settings['dropout']!r}")
    from moladapt.adapt.bilevel import HYPERGRADIENTS, WEIGHTINGS

    for key, choices in (("hypergradient", HYPERGRADIENTS), ("weighting", WEIGHTINGS)):
        if settings[key] not in choices:
            raise ValueError(f"unknown {key} {settings[key]!r}; choose one of: {', '.join(choices)}")


def tdc_names() -> list[str]:
    """The 22 TDC ADMET datasets (``tdc_*``), in registry order."""
    from moladapt.data.sources import DATASETS

    return [n for n in DATASETS.names() if DATASETS.get(n).group == "tdc_admet"]


def resolve_names(text: str | None, known: list[str]) -> list[str]:
    """Comma-separated names, with or without the ``tdc_`` prefix (``None``/``all``: all)."""
    if text is None or text.strip() in ("", "all"):
        return list(known)
    out = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        name = raw if raw.startswith("tdc_") else f"tdc_{raw}"
        if name not in known:
            raise ValueError(f"unknown TDC dataset {raw!r}; choose from {', '.join(known)}")
        out.append(name)
    return list(dict.fromkeys(out))


@dataclass
class Corpus:
    """The involved datasets (TDC's, a user's target), row by row, keyed by canonical SMILES."""

    names: list[str]
    task_type: dict[str, str]
    metric: dict[str, str]
    keys: dict[str, list[str | None]]  # canonical SMILES per row (None: unparsable)
    labels: dict[str, np.ndarray]
    split: dict[str, np.ndarray]
    unique: list[str]  # sorted canonical SMILES of all rows: the molecules featurized once

    def __post_init__(self) -> None:
        self._graphs = None
        self._index: dict[str, int] | None = None

    def __getstate__(self) -> dict[str, Any]:  # the graphs are re-read from the cache
        state = dict(self.__dict__)
        state["_graphs"], state["_index"] = None, None
        return state

    def graphs(self, featurizer: str, n_jobs: int = 1):
        """All molecules featurized (the on-disk cache) and ``{canonical SMILES: index}``."""
        if self._graphs is None:
            from moladapt.data.cache import featurize_cached
            from moladapt.data.featurize import get_featurizer

            graphs = featurize_cached(self.unique, get_featurizer(featurizer), n_jobs=n_jobs)
            self._graphs = graphs
            self._index = {self.unique[int(r)]: i for i, r in enumerate(graphs.source_rows)}
        return self._graphs, self._index


@dataclass(frozen=True)
class UserTarget:
    """A target from a user's CSV (:func:`load_user_target`): one label column, a split."""

    name: str
    source: str
    smiles_column: str
    label_column: str
    split: str
    task_type: str
    metric: str
    keys: list[str | None]  # canonical SMILES per row (None: unparsable)
    labels: np.ndarray
    parts: np.ndarray  # "train" / "valid" / "test" per row ("" for an unparsable one)


#: the metric a user's target is scored with (TDC reports one per dataset; a CSV names none)
USER_TARGET_METRIC = {"classification": "roc_auc", "regression": "mae"}


def load_user_target(path: str | Path, label_column: str | None = None,
                     smiles_column: str | None = None, split: str = "scaffold",
                     seed: int = 0, known: Sequence[str] = ()) -> UserTarget:
    """A user's assay as a transfer target: its SMILES column (found in any case when not
    given), one label column (the only one besides the SMILES, or ``label_column``), split
    80/10/10 by ``split`` (:mod:`moladapt.data.splits`; ``scaffold`` by default, the
    harder and more honest test for new chemistry) over the rows RDKit parses. Scored by
    ROC-AUC (classification) or MAE (regression). ``known``: names a user target must not
    take (the TDC datasets)."""
    from moladapt.data.featurize import canonical_smiles
    from moladapt.data.sources import DataError, csv_header, find_smiles_column, load_csv
    from moladapt.data.splits import make_split

    path = Path(path)
    header = csv_header(path)
    smiles = find_smiles_column(path, header, smiles_column)
    if label_column is None:
        others = [c for c in header if c != smiles]
        if len(others) != 1:
            raise DataError(f"{path}: name the label column to transfer to with --target-column "
                            f"(the columns besides {smiles!r} are {others[:20]})")
        label_column = others[0]
    data = load_csv(path, smiles, [label_column])
    keys = canonical_smiles(data.smiles)
    parsed = np.flatnonzero([k is not None for k in keys])
    labels = np.asarray(data.labels[:, 0], dtype=np.float64)
    parts = np.full(len(keys), "", dtype=object)
    cut = make_split(split, [data.smiles[i] for i in parsed], labels[parsed, None], seed=seed)
    for part, idx in (("train", cut.train), ("valid", cut.valid), ("test", cut.test)):
        parts[parsed[idx]] = part
    name = path.name.removesuffix(".gz").removesuffix(".csv")
    name = f"user_{name}" if name in known else name
    return UserTarget(name, str(path.resolve()), smiles, label_column, split, data.task_type,
                      USER_TARGET_METRIC[data.task_type], keys, labels, parts.astype(str))


def load_corpus(names: list[str], user_target: UserTarget | None = None) -> Corpus:
    """The TDC datasets ``names`` (and a user's target), keyed by canonical SMILES."""
    from moladapt.data.featurize import canonical_smiles
    from moladapt.data.sources import DATASETS, load_dataset

    keys, labels, split, task_type, metric = {}, {}, {}, {}, {}
    for name in names:
        data = load_dataset(name, download=False)
        keys[name] = canonical_smiles(data.smiles)
        labels[name] = np.asarray(data.labels[:, 0], dtype=np.float64)
        split[name] = np.asarray(data.predefined_split)
        spec = DATASETS.get(name)
        task_type[name], metric[name] = spec.task_type, spec.metric
    names = list(names)
    if user_target is not None:
        u = user_target
        names.insert(0, u.name)
        keys[u.name], labels[u.name], split[u.name] = u.keys, u.labels, u.parts
        task_type[u.name], metric[u.name] = u.task_type, u.metric
    unique = sorted({k for name in names for k in keys[name] if k is not None})
    return Corpus(names, task_type, metric, keys, labels, split, unique)


@dataclass
class TransferTable:
    """One target's multi-task table: row i is molecule ``graph_rows[i]`` of the corpus."""

    target: str
    sources: list[str]
    graph_rows: np.ndarray
    y: np.ndarray  # [n, 1 + len(sources)], column 0 the target
    train_mt: np.ndarray  # target train rows + extra rows
    train: np.ndarray  # target train rows
    valid: np.ndarray
    test: np.ndarray
    n_extra_available: int
    n_dropped_source_labels: int
    n_unparsed: int
    dropped_sources: list[str]

    @property
    def column_names(self) -> list[str]:
        return [self.target, *self.sources]


def _aggregate(keys: list[str | None], labels: np.ndarray, classification: bool) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for k, v in zip(keys, labels, strict=True):
        if k is not None and not math.isnan(v):
            sums.setdefault(k, []).append(float(v))
    out = {}
    for k, values in sums.items():
        mean = float(np.mean(values))
        out[k] = mean if not classification or mean in (0.0, 1.0) else math.nan  # conflicting
    return out


def build_table(corpus: Corpus, target: str, sources: list[str], index: dict[str, int],
                extra_ratio: float | None, seed: int) -> TransferTable:
    """Target rows (as published) + capped source-only rows; no source label on a test molecule."""
    from moladapt.data.sources import CLASSIFICATION

    ttype = corpus.task_type[target]
    named = [s for s in sources if s != target]
    sources = [s for s in named if corpus.task_type[s] == ttype]
    if named and not sources:
        from moladapt.data.sources import DataError

        raise DataError(f"no source of {target}'s task type ({ttype}): {', '.join(named)} "
                        f"{'is' if len(named) == 1 else 'are'} {corpus.task_type[named[0]]}, and one "
                        "model trains one loss type; name sources of the same type, or 'all'")
    cls = ttype == CLASSIFICATION
    t_keys, t_split = corpus.keys[target], corpus.split[target]
    keep = [i for i, k in enumerate(t_keys) if k is not None and k in index]
    n_unparsed = len(t_keys) - len(keep)
    keys = [t_keys[i] for i in keep]
    split = t_split[keep]
    y0 = corpus.labels[target][keep]
    test_keys = {k for k, s in zip(keys, split, strict=True) if s == "test"}
    target_keys = set(keys)
    per_source = [_aggregate(corpus.keys[s], corpus.labels[s], cls) for s in sources]
    extra = sorted({k for agg in per_source for k in agg if k in index} - target_keys)
    n_extra_available = len(extra)
    n_train = int((split == "train").sum())
    if extra_ratio is not None and len(extra) > extra_ratio * n_train:
        rng = np.random.default_rng([int(seed), 7919])
        pick = rng.choice(len(extra), size=int(math.ceil(extra_ratio * n_train)), replace=False)
        extra = [extra[i] for i in np.sort(pick)]
    all_keys = keys + extra
    y = np.full((len(all_keys), 1 + len(sources)), np.nan)
    y[: len(keys), 0] = y0
    dropped = 0
    for j, agg in enumerate(per_source, start=1):
        for i, k in enumerate(all_keys):
            v = agg.get(k, math.nan)
            if k in test_keys:
                dropped += int(not math.isnan(v))
                continue
            y[i, j] = v
    rows = np.arange(len(keys))
    train = rows[split == "train"]
    extra_rows = np.arange(len(keys), len(all_keys))
    train_mt = np.concatenate([train, extra_rows])
    # a source with (almost) no training label cannot be fitted (regression: no mean / std)
    counts = (~np.isnan(y[train_mt, 1:])).sum(axis=0)
    usable = [j for j in range(len(sources)) if counts[j] >= 2]
    dropped_sources = [s for j, s in enumerate(sources) if j not in usable]
    y = y[:, [0, *[1 + j for j in usable]]]
    table = TransferTable(
        target=target, sources=[sources[j] for j in usable],
        graph_rows=np.asarray([index[k] for k in all_keys], dtype=np.int64), y=y,
        train_mt=train_mt, train=train, valid=rows[split == "valid"], test=rows[split == "test"],
        n_extra_available=n_extra_available, n_dropped_source_labels=dropped,
        n_unparsed=n_unparsed, dropped_sources=dropped_sources)
    check_no_leakage(table, all_keys, test_keys)
    return table


def check_no_leakage(table: TransferTable, keys: list[str], test_keys: set[str]) -> None:
    """No target test molecule is a training row with a label, nor carries a source label."""
    for i in table.train_mt:
        if keys[i] in test_keys and not np.all(np.isnan(table.y[i, 1:])):
            raise AssertionError(f"{table.target}: test molecule {keys[i]} has a source label")
    if np.any(~np.isnan(table.y[table.test, 1:])):
        raise AssertionError(f"{table.target}: a test row carries a source label")
    if set(table.train_mt) & set(table.test):
        raise AssertionError(f"{table.target}: a test row is a training row")


def fit_uniform(model, graphs, y: np.ndarray, train_idx: np.ndarray, valid_idx: np.ndarray,
                task_type: str, outer_steps: int, inner_steps: int, lr: float, batch_size: int,
                seed: int, column_names: list[str], eval_batch_size: int = 256):
    """Uniform multi-task training in the bi-level loop without its outer updates.

    Every source loss has weight 1; Adam on all parameters; after every ``inner_steps`` steps
    the target's validation metric picks the best state (the cadence of ``bilevel``).
    Returns ``(target_mean, target_std, best_step, valid_metric_history)``.
    """
    import torch

    from moladapt.adapt.bilevel import GraphTaskProblem
    from moladapt.data.sources import CLASSIFICATION
    from moladapt.evaluate.metrics import compute_metrics
    from moladapt.training import predict

    problem = GraphTaskProblem(model, graphs, y, train_idx, valid_idx, target=0,
                               source_tasks=list(range(1, y.shape[1])), task_type=task_type,
                               batch_size=batch_size, column_names=column_names, seed=seed)
    mean = None if problem.mean is None else problem.mean[:1]
    std = None if problem.std is None else problem.std[:1]
    params = problem.parameters()
    better = (lambda a, b: a > b) if task_type == CLASSIFICATION else (lambda a, b: a < b)
    best: dict[str, Any] = {"metric": math.nan, "state": None, "step": -1}
    history = []
    ref = next(iter(model.parameters()))
    with torch.random.fork_rng(devices=[] if ref.device.type == "cpu" else [ref.device]):
        torch.manual_seed(int(seed))
        optimizer = torch.optim.Adam(params, lr=lr)
        for step in range(int(outer_steps)):
            for _ in range(int(inner_steps)):
                losses = problem.train_losses()
                optimizer.zero_grad(set_to_none=True)
                total = losses.sum()
                if total.requires_grad:
                    total.backward(inputs=params)
                optimizer.step()
            pred = predict(model, graphs, task_type, valid_idx, eval_batch_size, mean, std)
            metric = compute_metrics(task_type, y[valid_idx, :1], pred).primary
            history.append(float(metric))
            if not math.isnan(metric) and (math.isnan(best["metric"]) or better(metric, best["metric"])):
                best.update(metric=metric, state=problem.state_dict(), step=step)
    if best["state"] is not None:
        problem.load_state_dict(best["state"])
    model.eval()
    return mean, std, int(best["step"]), history


def _thin(history: list, keep: int = 50) -> list:
    """At most ``keep`` evenly spaced rows (first and last included)."""
    if len(history) <= keep:
        return list(history)
    idx = np.unique(np.linspace(0, len(history) - 1, keep).round().astype(int))
    return [history[i] for i in idx]


# Training time of ``bilevel`` / ``uniform_mt`` at the same number of optimiser steps: the
# median of 66 (dataset, seed) pairs in benchmarks/results/tdc_transfer.md (2026-12-04).
BILEVEL_TIME_FACTOR = 2.17


def estimated_seconds(method: str, settings: dict[str, Any], n_train: int, n_train_mt: int) -> float:
    """A rough training time at ``settings["threads"]`` torch threads (``None``: torch's default).

    The study planner's 2-core throughput model, scaled linearly with the threads used, as
    the planner scales with cores: one thread takes twice as long. Checked against the 66
    uniform multi-task runs of benchmarks/results/tdc_transfer.md (1 thread, 2026-12-04):
    measured / estimated time had median 1.93. Bi-level costs :data:`BILEVEL_TIME_FACTOR` ×
    a uniform multi-task run of the same steps."""
    from moladapt.study.spec import estimated_throughput

    molecules = n_train if method == "single_task" else n_train_mt
    rate = estimated_throughput(int(settings["num_layers"]), int(settings["hidden_dim"]))
    factor = BILEVEL_TIME_FACTOR if method == "bilevel" else 1.0
    cores = min(settings["threads"] or _torch_threads(), _cpu_count())
    return factor * int(settings["epochs"]) * molecules / rate * 2 / cores


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _torch_threads() -> int:
    """What ``threads=None`` trains with (torch's default), as the log line reports it."""
    import torch

    return torch.get_num_threads()


@dataclass(frozen=True)
class SavedModel:
    """Where :func:`run_transfer` writes the target's model (a moladapt checkpoint that
    ``moladapt predict`` and ``evaluate`` read): its task name (``None``: the target's name;
    a user's target is named after its label column) and what goes in its ``extra``."""

    path: Path
    task_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_transfer(target: str, method: str, seed: int, settings: dict[str, Any],
                 corpus: Corpus, log: Callable[[str], None] | None = None,
                 save_model: SavedModel | None = None) -> dict[str, Any]:
    """Train one model of ``method`` (:data:`TRANSFER_METHODS`) for ``target``; return its
    record: the TDC metric on test and valid, the learned ratios (``weights``, bilevel),
    sizes, timings and ``settings`` (see :data:`DEFAULT_SETTINGS`; ``settings["sources"]``
    lists the candidate sources). ``log`` gets the table's size and a time estimate before
    training starts. ``save_model``: write the target's model (:class:`SavedModel`)."""
    import torch

    from moladapt.config import ModelConfig, TrainConfig
    from moladapt.evaluate.metrics import compute_metrics
    from moladapt.training import Trainer, build_model, predict

    if settings["threads"] is not None:
        torch.set_num_threads(int(settings["threads"]))
    all_graphs, index = corpus.graphs(settings["featurizer"])
    sources = [s for s in settings["sources"] if s in corpus.names]
    table = build_table(corpus, target, sources, index, settings["extra_ratio"], seed)
    graphs = all_graphs.subset(table.graph_rows)
    task_type, metric = corpus.task_type[target], corpus.metric[target]
    featurizer = all_graphs.featurizer
    from moladapt.data.featurize import get_featurizer

    feat = get_featurizer(featurizer)
    model_cfg = ModelConfig(encoder=settings["encoder"], hidden_dim=settings["hidden_dim"],
                            num_layers=settings["num_layers"], dropout=settings["dropout"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build_model(model_cfg, feat, 1)  # the same initial weights for every method
    bs, inner = int(settings["batch_size"]), int(settings["inner_steps"])
    n_mt = len(table.train_mt)
    if log is not None:
        from moladapt.study.spec import duration

        log(f"{target}: {len(table.train)} training molecules + {n_mt - len(table.train)} "
            f"source-only, {len(table.sources)} sources; {method}, {settings['epochs']} epochs: "
            f"roughly {duration(estimated_seconds(method, settings, len(table.train), n_mt))} "
            f"with {torch.get_num_threads()} thread(s) (the study planner's throughput estimate)")
    total_steps = settings["epochs"] * max(1, math.ceil(n_mt / bs))
    outer_steps = max(1, round(total_steps / inner))
    details: dict[str, Any] = {}
    t0 = time.perf_counter()
    if method == "single_task":
        cfg = TrainConfig(epochs=settings["epochs"], batch_size=bs, lr=settings["lr"], seed=seed,
                          num_threads=settings["threads"])
        trainer = Trainer(model, task_type, cfg, progress=False)
        trainer.fit(graphs, table.y[:, :1], table.train, table.valid)
        train_seconds = time.perf_counter() - t0
        pred_test = trainer.predict(graphs, table.test)
        pred_valid = trainer.predict(graphs, table.valid)
        mean, std = trainer.target_mean_, trainer.target_std_
        details = {"best_epoch": trainer.history_.best_epoch, "steps": None}
    elif method == "uniform_mt":
        mean, std, best_step, hist = fit_uniform(
            model, graphs, table.y, table.train_mt, table.valid, task_type, outer_steps, inner,
            settings["lr"], bs, seed, table.column_names)
        train_seconds = time.perf_counter() - t0
        pred_test = predict(model, graphs, task_type, table.test, 256, mean, std)
        pred_valid = predict(model, graphs, task_type, table.valid, 256, mean, std)
        details = {"best_step": best_step, "steps": outer_steps * inner,
                   "valid_metric_history": _thin(hist)}
    elif method == "bilevel":
        from moladapt.adapt.bilevel import BiLevelTaskWeighting

        est = BiLevelTaskWeighting(
            source_tasks=list(range(1, table.y.shape[1])), target=0,
            weighting=settings["weighting"], init_weights=settings["init_weight"],
            hypergradient=settings["hypergradient"], outer_steps=outer_steps, inner_steps=inner,
            inner_lr=settings["lr"], outer_lr=settings["outer_lr"],
            neumann_terms=settings["neumann_terms"], batch_size=bs,
            valid_batch_size=settings["valid_batch_size"], seed=seed, task_type=task_type,
            select_best=True, featurizer=feat)
        est.fit(model, graphs, table.y, table.train_mt, table.valid,
                column_names=table.column_names)
        train_seconds = time.perf_counter() - t0
        pred_test, pred_valid = est.predict(graphs, table.test), est.predict(graphs, table.valid)
        mean, std = est.target_mean_, est.target_std_
        details = {"best_step": est.best_step_, "steps": outer_steps * inner,
                   "weights": dict(est.weights_),
                   "weights_at_best_step": dict(est.weights_at_best_step_),
                   "weights_history": _thin(est.weights_history_.tolist()),
                   "valid_metric_history": _thin(list(est.valid_metric_history_))}
    else:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(TRANSFER_METHODS)}")
    test = compute_metrics(task_type, table.y[table.test, :1], pred_test)
    valid = compute_metrics(task_type, table.y[table.valid, :1], pred_valid)
    if save_model is not None:
        from moladapt.training import save_checkpoint

        # the target's model only: the source heads were training aids
        save_checkpoint(save_model.path, model, feat, model_cfg, [save_model.task_name or target],
                        task_type, mean, std, extra={**save_model.extra, "transfer": {
                            "target": target, "method": method, "seed": seed,
                            "epochs": settings["epochs"], "sources": table.sources,
                            "weights": details.get("weights")}})
    return {
        "target": target, "method": method, "seed": seed, "task_type": task_type,
        "metric": metric, "test_value": test.mean.get(metric), "valid_value": valid.mean.get(metric),
        "test": test.to_dict()["mean"], "valid": valid.to_dict()["mean"],
        "train_seconds": train_seconds, "sources": table.sources,
        "dropped_sources": table.dropped_sources,
        "n_train": len(table.train), "n_valid": len(table.valid), "n_test": len(table.test),
        "n_train_mt": n_mt, "n_extra_available": table.n_extra_available,
        "n_dropped_source_labels": table.n_dropped_source_labels,
        "n_unparsed_target_rows": table.n_unparsed, **details,
        "settings": settings, "threads": torch.get_num_threads(),
    }


RATIOS = {"bilevel": "bilevel", "uniform": "uniform_mt", "none": "single_task"}


def transfer(target: str, ratios: str = "bilevel", sources: str | list[str] | None = "all",
             seed: int = 0, output: str | Path | None = None,
             log: Callable[[str], None] | None = None, target_column: str | None = None,
             smiles_column: str | None = None, split: str = "scaffold", reuse: bool = False,
             **settings: Any) -> dict[str, Any]:
    """Train one target with TDC ADMET sources; write ``config.yaml``, ``metrics.json`` and
    ``model.pt`` (the target's model, for ``moladapt predict``).

    Args:
        target: a TDC ADMET name, with or without ``tdc_`` (e.g. ``caco2_wang``), or a
            user's CSV (:func:`load_user_target`: ``target_column``, ``smiles_column`` and
            ``split`` apply to it only; a TDC target keeps TDC's split).
        ratios: ``bilevel`` (learned transfer ratios), ``uniform`` (every source weight 1)
            or ``none`` (single-task: no sources).
        sources: ``"all"``/None (the other 21; those of another task type are left out) or
            names, comma-separated or as a list.
        seed: model initialisation, batches and the extra-molecule sample.
        output: run directory (None: write nothing).
        log: gets the training set's size and a time estimate before training.
        reuse: return the record of a finished run in ``output`` made with the same config
            instead of training again (a killed comparison resumes).
        **settings: overrides of :data:`DEFAULT_SETTINGS`.

    Returns:
        The run's record (see :func:`run_transfer`).
    """
    from moladapt.utils import atomic_write_text, write_json

    if ratios not in RATIOS:
        raise ValueError(f"ratios must be one of {', '.join(RATIOS)}, got {ratios!r}")
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown transfer setting(s) {unknown}; known: {sorted(DEFAULT_SETTINGS)}")
    names = tdc_names()
    user = None
    from moladapt.data.sources import names_a_file

    if names_a_file(target):
        user = load_user_target(target, target_column, smiles_column, split, int(seed), known=names)
        target_name = user.name
    else:
        if (target_column, smiles_column) != (None, None):
            raise ValueError("target_column / smiles_column (--target-column, --smiles-column) "
                             f"describe a CSV target; {target!r} is a TDC name")
        targets = resolve_names(target, names)
        if len(targets) != 1:
            raise ValueError(f"--target names one dataset, got {len(targets)} ({', '.join(targets[:4])}"
                             f"{', ...' if len(targets) > 4 else ''})")
        (target_name,) = targets
    text = ",".join(sources) if isinstance(sources, list) else sources
    source_names = [s for s in resolve_names(text, names) if s != target_name]
    if ratios != "none" and not source_names:
        raise ValueError(f"--sources leaves no source besides the target {target_name}")
    resolved = {**DEFAULT_SETTINGS, **settings, "sources": source_names}
    _check_settings(resolved)
    config = {"target": target_name, "ratios": ratios, "method": RATIOS[ratios], "seed": int(seed),
              "settings": resolved}
    if user is not None:  # what replays it: the file, its columns as read, the split
        config["target_csv"] = {"path": user.source, "smiles_column": user.smiles_column,
                                "label_column": user.label_column, "split": user.split,
                                "metric": user.metric}
    out = Path(output) if output is not None else None
    if reuse and out is not None and (out / "metrics.json").exists() and (out / "config.yaml").exists():
        import json

        import yaml

        if yaml.safe_load((out / "config.yaml").read_text()) == yaml.safe_load(yaml.safe_dump(config)):
            return json.loads((out / "metrics.json").read_text())
    if out is not None:
        import yaml

        out.mkdir(parents=True, exist_ok=True)
        # first, so a crashed run says what it was; but not over a finished run's (its metrics)
        if not (out / "metrics.json").exists():
            atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    involved = [] if ratios == "none" else source_names  # single-task: no sources
    corpus = load_corpus(involved if user is not None else [target_name, *involved], user)
    record = run_transfer(target_name, RATIOS[ratios], int(seed), resolved, corpus, log=log,
                          save_model=None if out is None else SavedModel(
                              out / "model.pt", None if user is None else user.label_column,
                              {} if user is None else {"smiles_column": user.smiles_column,
                                                       "target_csv": config["target_csv"]}))
    if out is not None:
        import yaml

        from moladapt.experiment import environment

        atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        write_json(out / "metrics.json", {**record, "environment": environment()})
    return record


METHOD_LABELS = {"single_task": "single-task", "uniform_mt": "uniform multi-task",
                 "bilevel": "bi-level ratios"}


def compare_methods(records: list[dict[str, Any]]) -> str:
    """Markdown: which transfer helped one target, from :func:`transfer` records over seeds.

    The test metric per method as mean ± std over seeds; every other method paired with
    ``single_task`` over the seeds both ran (:func:`moladapt.evaluate.statistics.paired_comparisons`:
    mean difference, bootstrap CI, Wilcoxon signed-rank and paired t, Holm over the
    comparisons; ``direction`` reads MAE/RMSE as lower-is-better); the largest learned
    ratios (mean over seeds); the source labels dropped on the target's test molecules.
    """
    import pandas as pd

    from moladapt.evaluate.statistics import paired_comparisons

    if not records:
        raise ValueError("no transfer runs to compare")
    metric = records[0]["metric"]
    lower_better = metric in ("mae", "rmse")
    order = [m for m in METHOD_LABELS if any(r["method"] == m for r in records)]
    frame = pd.DataFrame([{"method": METHOD_LABELS[r["method"]], "seed": r["seed"],
                           "score": r["test_value"]} for r in records])
    lines = [f"| method | test {metric} ({'lower' if lower_better else 'higher'} is better) | seeds "
             "| train s (mean) |", "|---|---|---|---|"]
    for method in order:
        rs = [r for r in records if r["method"] == method]
        v = np.array([r["test_value"] for r in rs], dtype=float)
        spread = f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""
        lines.append(f"| {METHOD_LABELS[method]} | {v.mean():.3f}{spread} | {len(v)} "
                     f"| {np.mean([r['train_seconds'] for r in rs]):.1f} |")
    if "single_task" in order and len(order) > 1:
        comp = paired_comparisons(frame, "score", baseline=METHOD_LABELS["single_task"],
                                  unit_cols=("seed",), higher_is_better=not lower_better)
        lines += ["", f"Paired over seeds against single-task ({metric}, method − single-task; "
                  "Holm over the comparisons):", "",
                  "| method | pairs | mean diff | 95% CI | Wilcoxon p | t-test p | direction | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in comp.itertuples():
            lines.append(f"| {row.method} | {row.n_pairs} | {row.mean_diff:+.3f} | "
                         f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}] | {row.p_wilcoxon_holm:.3g} | "
                         f"{row.p_ttest_holm:.3g} | {row.direction}"
                         f"{' (significant)' if row.significant else ''} | {row.note} |")
    learned = [r["weights"] for r in records if r.get("weights")]
    if learned:
        mean = pd.DataFrame(learned).mean().sort_values(ascending=False)
        lines += ["", "Largest learned ratios at the end of training (mean over seeds): "
                  + ", ".join(f"{k.removeprefix('tdc_')} {v:.2f}" for k, v in mean.head(5).items()) + "."]
    dropped = sorted({r["n_dropped_source_labels"] for r in records if r["method"] != "single_task"})
    if dropped:
        lines += ["", "Source labels dropped on the target's test molecules (so none leaks into the "
                  f"test score): {', '.join(map(str, dropped))}."]
    return "\n".join(lines) + "\n"
