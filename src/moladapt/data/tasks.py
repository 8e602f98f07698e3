"""Task collections: many small prediction tasks (assays) for few-shot and multi-task work.

* FS-Mol (Stanley et al., NeurIPS 2021): 5,131 ChEMBL assays, each a binary task, with
  FS-Mol's own train / valid / test split of the *tasks*.
* Any multi-task table (a :class:`~moladapt.data.sources.LabeledData`, e.g. ToxCast's
  617 or Tox21's 12 assays): each label column becomes one task holding the molecules
  measured on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from moladapt.data.sources import CLASSIFICATION, FSMOL, DataError, LabeledData, resolve_file
from moladapt.types import Task

FSMOL_SPLITS = ("train", "valid", "test")


def load_fsmol_tasks(split: str = "test", min_size: int = 0, download: bool = True) -> list[Task]:
    """FS-Mol tasks of one split (``train`` / ``valid`` / ``test``), sorted by task id.

    Each task's ``labels`` are FS-Mol's binary activity labels and ``values`` its
    ``log_regression_value``; ``group`` is ``"fsmol-<split>"``.
    """
    if split not in FSMOL_SPLITS:
        raise ValueError(f"FS-Mol split must be one of {FSMOL_SPLITS}, got {split!r}")
    path = resolve_file(FSMOL, download=download)
    expected = {"split", "task_id", "smiles", "label", "log_regression_value"}
    try:
        frame = pd.read_csv(path, usecols=lambda c: c in expected)
    except (UnicodeDecodeError, pd.errors.ParserError, EOFError, OSError) as exc:
        # e.g. the whole archive, gzipped, that moladapt 0.1's download saved under this name
        raise DataError(f"{path}: not FS-Mol's long-format CSV ({type(exc).__name__}: {exc}); "
                        "delete it to download and convert FS-Mol again") from None
    if not expected <= set(frame.columns):
        raise DataError(f"{path}: expected FS-Mol long-format columns {sorted(expected)}, "
                        f"missing {sorted(expected - set(frame.columns))}")
    frame = frame[frame["split"] == split]
    tasks = []
    for task_id, part in frame.groupby("task_id", sort=True):
        if len(part) < min_size:
            continue
        tasks.append(Task(task_id=str(task_id), smiles=tuple(part["smiles"].astype(str)),
                          labels=part["label"].to_numpy(dtype=np.float32),
                          values=part["log_regression_value"].to_numpy(dtype=np.float32),
                          group=f"fsmol-{split}"))
    return tasks


def tasks_from_table(data: LabeledData, columns: Sequence[str] | None = None,
                     min_per_class: int = 1, dropped: list[str] | None = None) -> list[Task]:
    """One task per label column of a multi-task classification table.

    A task holds the molecules measured on its column; columns with fewer than
    ``min_per_class`` molecules of either class are left out (their names are appended to
    ``dropped``, and listed in the error if none remain).
    """
    if data.task_type != CLASSIFICATION:
        raise DataError(f"{data.source}: tasks_from_table needs classification labels")
    names = list(columns) if columns is not None else data.task_names
    tasks = []
    dropped = [] if dropped is None else dropped
    for name in names:
        j = data.task_names.index(name)
        col = data.labels[:, j]
        measured = np.flatnonzero(~np.isnan(col))
        y = col[measured]
        if min(int((y == 1).sum()), int((y == 0).sum())) < min_per_class:
            dropped.append(name)
            continue
        tasks.append(Task(task_id=name, smiles=tuple(data.smiles[i] for i in measured),
                          labels=y.astype(np.float32), group=data.name))
    if not tasks:
        raise DataError(f"{data.source}: no column has {min_per_class} molecules of each class "
                        f"(dropped: {dropped[:10]})")
    return tasks
