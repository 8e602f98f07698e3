"""Per-task metrics for multi-task molecular property prediction, NaN-aware.

Labels are ``[M, T]`` float arrays with NaN for "not measured". Every task is scored on
its measured rows only. A task whose score is undefined (a classification task with a
single class among its measured labels, a regression task with fewer than two labels)
is *not scored*: its metrics are NaN, it is listed in :attr:`MetricReport.skipped` with
the reason, and it does not enter the means. It never receives a placeholder score
(FS-Mol, for example, reports 0.0 for such tasks, which silently biases the mean).

Classification metrics per task: ROC-AUC, AUPRC (average precision) and
ΔAUPRC = AUPRC − positive rate (FS-Mol's headline metric: the AUPRC of a random scorer is
the positive rate, so ΔAUPRC ≈ 0 means "no better than chance" whatever the balance).
Regression metrics per task: RMSE, MAE, R² and Spearman's ρ.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

CLASSIFICATION_METRICS = ("roc_auc", "auprc", "delta_auprc", "positive_rate")
REGRESSION_METRICS = ("rmse", "mae", "r2", "spearman")
PRIMARY_METRIC = {"classification": "roc_auc", "regression": "rmse"}


@dataclass(frozen=True)
class MetricReport:
    """Metrics of one evaluation, per task and averaged over the scored tasks.

    Attributes:
        task_type: ``"classification"`` or ``"regression"``.
        mean: metric name → mean over the scored tasks (NaN when no task was scored).
        per_task: task name → metric name → value, for every task (NaN where not scored);
            also the counts ``n`` (measured labels) and, for classification, ``n_positive``.
        skipped: task name → why it was not scored.
        n_tasks_scored: how many tasks enter the means.
    """

    task_type: str
    mean: dict[str, float]
    per_task: dict[str, dict[str, float]]
    skipped: dict[str, str]
    n_tasks_scored: int

    @property
    def n_tasks(self) -> int:
        return len(self.per_task)

    @property
    def primary_name(self) -> str:
        """The model-selection metric: ``roc_auc`` (higher is better) or ``rmse`` (lower)."""
        return PRIMARY_METRIC[self.task_type]

    @property
    def primary(self) -> float:
        return float(self.mean.get(self.primary_name, math.nan))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy: numpy scalars become Python numbers, NaN/inf → None."""
        return {
            "task_type": self.task_type,
            "primary_metric": self.primary_name,
            "primary": _json_number(self.primary),
            "n_tasks": self.n_tasks,
            "n_tasks_scored": int(self.n_tasks_scored),
            "mean": {k: _json_number(v) for k, v in self.mean.items()},
            "per_task": {
                task: {k: _json_number(v) for k, v in values.items()}
                for task, values in self.per_task.items()
            },
            "skipped": dict(self.skipped),
        }

    def summary(self) -> str:
        """One line, e.g. ``roc_auc 0.812 | auprc 0.403 | ... (11/12 tasks scored; ...)``."""
        names = CLASSIFICATION_METRICS[:3] if self.task_type == "classification" else REGRESSION_METRICS
        scores = " | ".join(f"{k} {_fmt(self.mean.get(k, math.nan))}" for k in names)
        text = f"{scores} ({self.n_tasks_scored}/{self.n_tasks} tasks scored"
        if self.skipped:
            shown = list(self.skipped.items())[:2]
            text += "; skipped " + "; ".join(f"{task}: {why}" for task, why in shown)
            if len(self.skipped) > len(shown):
                text += f"; and {len(self.skipped) - len(shown)} more"
        return text + ")"


def classification_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    task_names: Sequence[str] | None = None,
    not_scored: Mapping[str, str] | None = None,
) -> MetricReport:
    """ROC-AUC, AUPRC and ΔAUPRC per task of binary labels ``y_true`` (0/1, NaN = unmeasured).

    ``y_score`` holds scores or probabilities of the positive class, same shape.
    ``not_scored`` maps tasks the caller knows have no predictions (e.g. outside a trained
    task sample) to the reason: they are skipped with it and their scores are not read.
    """
    y_true, y_score, names = _prepare(y_true, y_score, task_names)
    not_scored = _known_tasks(not_scored, names)
    measured = ~np.isnan(y_true)
    bad = measured & (y_true != 0) & (y_true != 1)
    if bad.any():
        values = np.unique(y_true[bad])[:5].tolist()
        raise ValueError(f"classification labels must be 0, 1 or NaN; found {values}")
    per_task: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for t, name in enumerate(names):
        if name in not_scored:
            y, s = y_true[measured[:, t], t], None
        else:
            y, s = _measured(y_true[:, t], y_score[:, t], measured[:, t], name)
        n, n_pos = len(y), int(y.sum())
        rate = n_pos / n if n else math.nan
        row = {"n": n, "n_positive": n_pos, "positive_rate": rate}
        if name in not_scored:
            skipped[name] = not_scored[name]
        elif n == 0:
            skipped[name] = "no measured labels"
        elif n_pos in (0, n):
            skipped[name] = f"one class present (all {int(y[0])}) in {n} measured labels"
        if name in skipped:
            row.update(roc_auc=math.nan, auprc=math.nan, delta_auprc=math.nan)
        else:
            auprc = float(average_precision_score(y, s))
            row.update(
                roc_auc=float(roc_auc_score(y, s)), auprc=auprc, delta_auprc=auprc - rate
            )
        per_task[name] = row
    return _report("classification", CLASSIFICATION_METRICS, per_task, skipped)


def regression_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, task_names: Sequence[str] | None = None,
    not_scored: Mapping[str, str] | None = None,
) -> MetricReport:
    """RMSE, MAE, R² and Spearman's ρ per task (NaN in ``y_true`` = unmeasured).

    R² and ρ are NaN for a task whose measured targets are all equal (they are undefined
    there); such a task is still scored on RMSE and MAE, and the means of R² and ρ are
    taken over the tasks where they are defined. ``not_scored``: as in
    :func:`classification_metrics`.
    """
    y_true, y_pred, names = _prepare(y_true, y_pred, task_names)
    not_scored = _known_tasks(not_scored, names)
    measured = ~np.isnan(y_true)
    per_task: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for t, name in enumerate(names):
        if name in not_scored:
            skipped[name] = not_scored[name]
            per_task[name] = {"n": int(measured[:, t].sum()), **{k: math.nan for k in REGRESSION_METRICS}}
            continue
        y, p = _measured(y_true[:, t], y_pred[:, t], measured[:, t], name)
        n = len(y)
        if n < 2:
            skipped[name] = f"fewer than 2 measured labels ({n})"
            per_task[name] = {"n": n, **{k: math.nan for k in REGRESSION_METRICS}}
            continue
        err = p - y
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        constant = ss_tot == 0.0 or np.all(p == p[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConstantInputWarning: handled just below
            rho = math.nan if constant else float(stats.spearmanr(y, p).statistic)
        per_task[name] = {
            "n": n,
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else math.nan,
            "spearman": rho,
        }
    return _report("regression", REGRESSION_METRICS, per_task, skipped)


def compute_metrics(
    task_type: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    task_names: Sequence[str] | None = None,
    not_scored: Mapping[str, str] | None = None,
) -> MetricReport:
    """:func:`classification_metrics` or :func:`regression_metrics` by ``task_type``."""
    if task_type == "classification":
        return classification_metrics(y_true, y_pred, task_names, not_scored)
    if task_type == "regression":
        return regression_metrics(y_true, y_pred, task_names, not_scored)
    raise ValueError(f"unknown task_type {task_type!r}; use 'classification' or 'regression'")


# --- helpers -------------------------------------------------------------------------------


def _prepare(
    y_true: np.ndarray, y_pred: np.ndarray, task_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Both arrays as float64 ``[M, T]`` (a 1-D array is one task) and the T task names."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if y_true.ndim != 2 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and predictions must both be [M, T]; got {y_true.shape} and {y_pred.shape}"
        )
    n_tasks = y_true.shape[1]
    names = [f"task_{t}" for t in range(n_tasks)] if task_names is None else [str(n) for n in task_names]
    if len(names) != n_tasks:
        raise ValueError(f"{len(names)} task names for {n_tasks} tasks")
    if len(set(names)) != len(names):
        raise ValueError("task names must be unique")
    return y_true, y_pred, names


def _known_tasks(not_scored: Mapping[str, str] | None, names: Sequence[str]) -> Mapping[str, str]:
    unknown = sorted(set(not_scored or {}) - set(names))
    if unknown:
        raise ValueError(f"not_scored names unknown tasks: {unknown[:5]}")
    return not_scored or {}


def _measured(
    y: np.ndarray, pred: np.ndarray, mask: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    y, pred = y[mask], pred[mask]
    if not np.all(np.isfinite(pred)):
        raise ValueError(
            f"task {name!r}: {int(np.sum(~np.isfinite(pred)))} non-finite predictions "
            "on measured labels"
        )
    return y, pred


def _report(
    task_type: str,
    metrics: Sequence[str],
    per_task: dict[str, dict[str, float]],
    skipped: dict[str, str],
) -> MetricReport:
    scored = [row for name, row in per_task.items() if name not in skipped]
    mean = {}
    for k in metrics:
        values = [row[k] for row in scored if not math.isnan(row[k])]
        mean[k] = float(np.mean(values)) if values else math.nan
    return MetricReport(task_type, mean, per_task, skipped, len(scored))


def _json_number(value: Any) -> float | int | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"
