"""Dense multi-task subsets and class-preserving random splits (SGNN-EBM's ``Dense-N``).

Liu et al. (AISTATS 2022) evaluate on ChEMBL-Dense-N: the tasks with at least N positive and
N negative labels, and the molecules measured on them. :func:`dense_subset` builds that for
any :class:`LabeledData`; :func:`filtered_random_split` draws random splits until every task
keeps both classes in train, valid and test (so every task's ROC-AUC is defined).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from moladapt.data.sources import DataError, LabeledData
from moladapt.data.splits import Split, random_split, split_has_both_classes

__all__ = ["dense_subset", "filtered_random_split"]


def dense_subset(data: LabeledData, n_min: int = 50, min_tasks_per_molecule: int = 1,
                 max_rounds: int = 100) -> LabeledData:
    """The Dense-``n_min`` subset of a binary multi-task dataset.

    Repeated until nothing changes (dropping molecules can push a task below the threshold):
    keep the tasks with ``>= n_min`` positives **and** ``>= n_min`` negatives among the kept
    molecules, then the molecules measured (non-NaN) on ``>= min_tasks_per_molecule`` kept
    tasks. Columns and rows keep their original order; ``rows``/``predefined_split`` follow
    the rows. ``metadata["dense"]`` records the parameters and the kept original indices
    (``task_indices``, ``molecule_indices``). Raises :class:`DataError` if nothing is left.
    """
    y = np.asarray(data.labels, dtype=np.float64)
    if min_tasks_per_molecule < 1:
        raise ValueError("min_tasks_per_molecule must be >= 1")
    rows = np.arange(y.shape[0])
    cols = np.arange(y.shape[1])
    for _ in range(max_rounds):
        sub = y[np.ix_(rows, cols)]
        pos = (sub == 1).sum(0)
        neg = (sub == 0).sum(0)
        keep_c = (pos >= n_min) & (neg >= n_min)
        sub = sub[:, keep_c]
        keep_r = (~np.isnan(sub)).sum(1) >= min_tasks_per_molecule
        if keep_c.all() and keep_r.all():
            break
        cols, rows = cols[keep_c], rows[keep_r]
    else:
        raise RuntimeError(f"dense_subset did not converge in {max_rounds} rounds")
    if len(cols) == 0 or len(rows) == 0:
        raise DataError(
            f"{data.source}: no task has >= {n_min} positives and >= {n_min} negatives "
            f"(with molecules measured on >= {min_tasks_per_molecule} kept tasks)"
        )
    meta = dict(data.metadata)
    meta["dense"] = {"n_min": n_min, "min_tasks_per_molecule": min_tasks_per_molecule,
                     "task_indices": cols.tolist(), "molecule_indices": rows.tolist()}
    return dataclasses.replace(
        data,
        name=f"{data.name}-dense{n_min}",
        smiles=[data.smiles[i] for i in rows],
        labels=np.asarray(data.labels)[np.ix_(rows, cols)],
        task_names=[data.task_names[j] for j in cols],
        rows=np.asarray(data.rows)[rows],
        predefined_split=None if data.predefined_split is None else np.asarray(data.predefined_split)[rows],
        metadata=meta,
    )


def filtered_random_split(labels: np.ndarray, frac: Sequence[float] = (0.8, 0.1, 0.1),
                          seed: int = 0, max_tries: int = 100) -> Split:
    """A random split in which every task has both classes in every part.

    Try ``k = 0, 1, ...`` draws :func:`random_split` with seed ``seed + 7919 * k`` and
    returns the first that passes :func:`split_has_both_classes`; deterministic in ``seed``.
    Raises ``ValueError`` naming the tasks that failed most often after ``max_tries``.
    """
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    placeholder = [""] * y.shape[0]
    fails = np.zeros(y.shape[1], dtype=np.int64)
    for k in range(max_tries):
        split = random_split(placeholder, y, frac, seed=seed + 7919 * k)
        report = split_has_both_classes(y, split)
        bad = sorted({t for part in report.values() for t in part})
        if not bad:
            return split
        fails[bad] += 1
    worst = np.argsort(-fails)[:5].tolist()
    raise ValueError(
        f"no random split in {max_tries} tries keeps both classes of every task in every part; "
        f"most often failing task columns: {worst} (failed {fails[worst].tolist()} times). "
        "Use a larger Dense-N (`moladapt multitask --dense N`; dense_subset(n_min=...) in Python) "
        "or other split fractions (--split-frac)."
    )
