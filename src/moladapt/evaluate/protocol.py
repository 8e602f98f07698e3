"""The few-shot evaluation protocol (FS-Mol style): many episodes per task and support size.

For every task, support size ``k`` and draw ``d`` the protocol samples an episode with
:class:`~moladapt.data.episodes.EpisodeSampler` (seed ``seed + d``: the same seed gives the
same episodes for every method), calls ``fit_predict(support_graphs, support_y,
query_graphs)`` once, and scores the returned query scores with ROC-AUC, AUPRC and
ΔAUPRC = AUPRC − query positive rate (FS-Mol's headline metric).

Result rows are tidy, one per (task, k, draw, method), with :data:`COLUMNS`. A ``k`` a task
cannot serve (too few molecules, or of one class) gives rows with ``status="skipped"``,
the sampler's reason in ``reason`` and NaN metrics — never a placeholder score.

With ``results_path`` each row is appended to a CSV as soon as it is done (one ``write``,
then flush and fsync, so a killed run loses at most the row in progress), and rows already
in the file for the same (task_id, k, draw, method) are not computed again: rerunning a
killed evaluation resumes it. A trailing partial line left by a crash is dropped on load.
Tasks are featurized once each (:class:`~moladapt.adapt.base.TaskFeatureCache`); molecules
RDKit cannot parse are dropped before sampling.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moladapt.adapt.base import TaskFeatureCache
from moladapt.data.episodes import EpisodeSampler, TaskTooSmall
from moladapt.data.featurize import Featurizer
from moladapt.evaluate.metrics import classification_metrics
from moladapt.types import MolGraphs, Task

__all__ = ["COLUMNS", "DEFAULT_SUPPORT_SIZES", "evaluate_few_shot", "load_results"]

DEFAULT_SUPPORT_SIZES = (16, 32, 64, 128, 256)
COLUMNS = (
    "task_id", "group", "method", "k", "draw", "status", "reason",
    "n_support", "n_query", "query_positive_rate",
    "roc_auc", "auprc", "delta_auprc", "seconds",
)
_KEY = ("task_id", "k", "draw", "method")


def evaluate_few_shot(
    tasks: Sequence[Task],
    fit_predict: Callable[[MolGraphs, np.ndarray, MolGraphs], np.ndarray],
    method: str,
    support_sizes: Sequence[int] = DEFAULT_SUPPORT_SIZES,
    draws: int = 10,
    featurizer: str | Featurizer | TaskFeatureCache = "basic",
    results_path: str | Path | None = None,
    sampler: EpisodeSampler | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Evaluate ``fit_predict`` on ``draws`` episodes per (task, support size).

    Args:
        tasks: binary tasks (e.g. :func:`~moladapt.data.tasks.load_fsmol_tasks` ``("test")``).
        fit_predict: ``(support_graphs, support_y [k], query_graphs) -> scores [n_query]``;
            higher = more likely positive (e.g. ``adapter.fit_predict(encoder)``).
        method: name written in the ``method`` column (part of the resume key).
        support_sizes: the ``k`` values.
        draws: episodes per (task, k); draw ``d`` uses episode seed ``seed + d``.
        featurizer: featurizer name/object, or a shared :class:`TaskFeatureCache`.
        results_path: CSV to append rows to and resume from (``None``: keep in memory).
        sampler: episode sampler (default ``EpisodeSampler()``: ≥16 query molecules).
        progress: called with each new row (dict) as it finishes.

    Returns:
        The rows of this evaluation (loaded ones included), in task / k / draw order, with
        :data:`COLUMNS`. Other rows in ``results_path`` (other methods) are left as they are.
    """
    sampler = EpisodeSampler() if sampler is None else sampler
    cache = featurizer if isinstance(featurizer, TaskFeatureCache) else TaskFeatureCache(featurizer)
    path = None if results_path is None else Path(results_path)
    done: dict[tuple[str, int, int, str], dict[str, Any]] = {}
    if path is not None:
        _check_episode_identity(path, seed, sampler, tasks)
        previous = load_results(path)
        for row in previous.to_dict("records"):
            done[(str(row["task_id"]), int(row["k"]), int(row["draw"]), str(row["method"]))] = row
    rows: list[dict[str, Any]] = []
    for task in tasks:
        item = None
        for k in support_sizes:
            for draw in range(int(draws)):
                key = (str(task.task_id), int(k), draw, str(method))
                if key in done:
                    rows.append(done[key])
                    continue
                if item is None:
                    item = cache(task)
                row = _run_one(item.task, item.graphs, fit_predict, method, int(k), draw, seed, sampler)
                if path is not None:
                    _append_row(path, row)
                if progress is not None:
                    progress(row)
                rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return _typed(frame)


def _task_fingerprint(task: Task) -> str:
    """A content hash of a task's molecules and labels (in order: episodes index into them)."""
    import hashlib

    from moladapt.data.featurize import smiles_hash

    h = hashlib.sha256(smiles_hash(task.smiles).encode())
    h.update(np.asarray(task.labels, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _check_episode_identity(path: Path, seed: int, sampler: EpisodeSampler, tasks: Sequence[Task]) -> None:
    """The rows of ``path`` are reused only for the same episodes: same seed, sampler and
    task content (two task files may use the same task ids for other molecules).

    The resume key (task, k, draw, method) does not hold them, so they live beside the CSV
    (``<results>.episodes.json``): the settings, and a fingerprint per task id seen."""
    import json

    from moladapt.utils import atomic_write_text

    identity = {"seed": int(seed), "min_query": sampler.min_query, "min_per_class": sampler.min_per_class}
    fingerprints = {str(t.task_id): _task_fingerprint(t) for t in tasks}
    side = path.with_name(path.name + ".episodes.json")
    known: dict[str, str] = {}
    if side.exists():
        before = json.loads(side.read_text())
        diff = [f"{k} {before.get(k)!r} there, {v!r} now" for k, v in identity.items() if before.get(k) != v]
        if diff:
            raise ValueError(f"{path} holds episodes drawn otherwise ({'; '.join(diff)}); "
                             "write these results to another file")
        known = before.get("tasks", {})  # absent in a file from before task fingerprints
        changed = [t for t, fp in fingerprints.items() if t in known and known[t] != fp]
        if changed:
            raise ValueError(f"{path} holds rows of other tasks with the same id ({', '.join(changed[:5])}"
                             f"{', ...' if len(changed) > 5 else ''}: other molecules or labels); "
                             "write these results to another file")
    if not side.exists() or not fingerprints.keys() <= known.keys():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(side, json.dumps({**identity, "tasks": {**known, **fingerprints}}) + "\n")


def _run_one(
    task: Task, graphs: MolGraphs, fit_predict: Callable, method: str, k: int, draw: int,
    seed: int, sampler: EpisodeSampler,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": str(task.task_id), "group": task.group, "method": str(method), "k": k,
        "draw": draw, "status": "ok", "reason": "", "n_support": 0, "n_query": 0,
        "query_positive_rate": math.nan, "roc_auc": math.nan, "auprc": math.nan,
        "delta_auprc": math.nan, "seconds": math.nan,
    }
    try:
        episode = sampler.sample(task, k, seed + draw)
    except TaskTooSmall as exc:
        row.update(status="skipped", reason=exc.reason)
        return row
    y = np.asarray(task.labels, dtype=np.float64).reshape(-1)
    y_query = y[episode.query]
    start = time.perf_counter()
    scores = fit_predict(graphs.subset(episode.support), y[episode.support], graphs.subset(episode.query))
    seconds = time.perf_counter() - start
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape != y_query.shape:
        raise ValueError(
            f"{method}: fit_predict returned {scores.shape[0]} scores for {len(y_query)} query "
            f"molecules (task {task.task_id!r}, k={k}, draw={draw})"
        )
    report = classification_metrics(y_query, scores, [str(task.task_id)])
    metrics = report.per_task[str(task.task_id)]
    row.update(
        n_support=len(episode.support), n_query=len(episode.query),
        query_positive_rate=float(y_query.mean()), roc_auc=metrics["roc_auc"],
        auprc=metrics["auprc"], delta_auprc=metrics["delta_auprc"], seconds=seconds,
    )
    return row


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["task_id"] = frame["task_id"].astype(str)
    for col in ("group", "method", "status"):
        frame[col] = frame[col].astype(str)
    frame["reason"] = frame["reason"].fillna("").astype(str)
    for col in ("k", "draw", "n_support", "n_query"):
        frame[col] = frame[col].astype(np.int64)
    for col in ("query_positive_rate", "roc_auc", "auprc", "delta_auprc", "seconds"):
        frame[col] = frame[col].astype(np.float64)
    return frame


def load_results(path: str | Path) -> pd.DataFrame:
    """The rows of a results CSV (empty frame with :data:`COLUMNS` if there is no file).

    A trailing partial line (a run killed mid-write) is removed from the file first.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return _typed(pd.DataFrame(columns=list(COLUMNS)))
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    if not text:
        return _typed(pd.DataFrame(columns=list(COLUMNS)))
    frame = pd.read_csv(
        io.StringIO(text), dtype={"task_id": str, "group": str, "method": str, "reason": str},
        keep_default_na=False, na_values={c: ["", "nan", "NaN"] for c in COLUMNS if c not in
                                          ("task_id", "group", "method", "status", "reason")},
    )
    if tuple(frame.columns) != COLUMNS:
        raise ValueError(
            f"{path}: not a few-shot results file (columns {list(frame.columns)}, "
            f"expected {list(COLUMNS)})"
        )
    return _typed(frame)


def _append_row(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    new_file = not path.exists() or path.stat().st_size == 0
    if new_file:
        writer.writerow(COLUMNS)
    writer.writerow([_cell(row[c]) for c in COLUMNS])
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value
