"""A study's SQLite rows → the tidy table that statistics and reports consume."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

import pandas as pd

from moladapt.study.spec import get_dotted
from moladapt.study.store import ResultStore

# Config fields that name *where* a run was measured (its unit), not *what* was compared.
UNIT_FIELDS = {"data.dataset": "dataset", "data.split": "split", "train.seed": "seed",
               "data.featurizer": "featurizer", "model.encoder": "encoder"}


def tidy_results(db_path: str | Path, study: str | None = None,
                 method_axes: Sequence[str] | None = None,
                 keys: Collection[str] | None = None,
                 include_unfinished: bool = False) -> pd.DataFrame:
    """One row per finished run with ``method``, ``dataset``, ``split``, ``seed``,
    ``featurizer``, ``encoder`` and the metrics (``test.roc_auc`` → ``roc_auc``).

    ``method`` joins the values of ``method_axes``; by default every varied axis that is
    not a unit field (dataset, split, seed), so a study over ``model.encoder`` compares
    encoders and one over ``train.init`` compares pretrained checkpoints.

    ``keys``: only these run keys (e.g. those of a study file's current grid, so runs of
    grid points edited away since are left out; the store never deletes a result).
    ``include_unfinished``: also the failed, running and pending runs, with a ``run_status``
    column, so that a report can say what it leaves out.

    ``dataset`` is the benchmark's name, or the file name of a run's own CSV.
    """
    store = ResultStore(db_path, create=False)
    rows = [r for r in store.rows(study) if (keys is None or r["key"] in keys)]
    if not any(r["status"] == "done" for r in rows):
        raise ValueError(f"{db_path}: no finished runs" + (f" in study {study!r}" if study else "")
                         + (" among the study file's runs" if keys is not None else ""))
    if not include_unfinished:
        rows = [r for r in rows if r["status"] == "done"]
    axes_seen: list[str] = []
    for r in rows:
        for name in json.loads(r["axes_json"] or "{}"):
            if name not in axes_seen:
                axes_seen.append(name)
    if method_axes is None:
        method_axes = [a for a in axes_seen if a not in ("data.dataset", "data.split", "train.seed")]
    records, csv_paths = [], set()
    for r in rows:
        config = json.loads(r["config_json"])
        axes = json.loads(r["axes_json"] or "{}")
        # a field that defines the method cannot also pair the runs: leave it out
        record = {short: get_dotted(config, dotted) for dotted, short in UNIT_FIELDS.items()
                  if dotted not in method_axes}
        if record.get("dataset") is None and "data.dataset" not in method_axes:
            csv = get_dotted(config, "data.csv")
            record["dataset"] = str(csv) if csv else "(unnamed data)"
            if csv:
                csv_paths.add(str(csv))
        if include_unfinished:
            record["run_status"] = r["status"]
        record["method"] = " / ".join(f"{axes.get(a, get_dotted(config, a))}" for a in method_axes) or "run"
        for name, value in json.loads(r["metrics_json"] or "{}").items():
            if name.startswith("test.") and isinstance(value, (int, float)):
                record[name[len("test."):]] = value
            elif isinstance(value, (int, float)):
                record[name] = value
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    return _short_csv_names(frame, csv_paths)


def _short_csv_names(frame: pd.DataFrame, csvs: set[str]) -> pd.DataFrame:
    """A user's CSV datasets by file name, or by full path where two files share a name."""
    names = [Path(c).name for c in csvs]
    short = {c: Path(c).name for c in csvs if names.count(Path(c).name) == 1}
    if short and "dataset" in frame.columns:
        frame["dataset"] = frame["dataset"].map(lambda d: short.get(d, d))
    return frame
