"""Significance tests for comparing methods over matched units, from a tidy results table.

A *unit* is one matched experimental condition, e.g. ``(dataset, split, seed)``: every
method evaluated on the same unit sees the same data, so methods are compared on the
per-unit differences (paired tests), never on pooled, unpaired scores.

* :func:`paired_comparisons` — each method against a baseline (or every pair): mean
  difference, percentile-bootstrap CI of it, Wilcoxon signed-rank and paired t-test
  p-values, each family Holm–Bonferroni corrected across the comparisons.
* :func:`holm_bonferroni` — Holm's (1979) step-down adjustment, NaN-aware.
* :func:`friedman_nemenyi` — Friedman's test over blocks and the Nemenyi post-hoc test,
  with the critical difference of Demšar (2006), "Statistical Comparisons of Classifiers
  over Multiple Data Sets", JMLR 7:1–30.

The input is a pandas DataFrame with one row per (unit, method) and a metric column; rows
whose metric is NaN are left out (a pair needs both scores). Two rows for the same
(unit, method) are an error: the pairing would be ambiguous (add the missing unit column,
e.g. ``k`` or ``featurizer``, or aggregate first).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

DEFAULT_UNIT_COLS = ("dataset", "split", "seed", "k")
"""Unit columns used when ``unit_cols`` is None: those of these present in the table."""

COMPARISON_COLUMNS = (
    "method",
    "baseline",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_wilcoxon",
    "p_ttest",
    "p_wilcoxon_holm",
    "p_ttest_holm",
    "significant",
    "direction",
    "note",
    "median_shift",
)


def holm_bonferroni(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values, same order and shape as ``pvalues``.

    With the m finite p-values sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted values are
    ``p̃_(i) = min(1, max_{j ≤ i} (m − j + 1) · p_(j))`` (Holm 1979): the running maximum
    keeps them monotone in the raw p, and rejecting ``p̃ < α`` controls the family-wise
    error rate at α. NaN entries (tests not run) are not part of the family: they stay NaN
    and do not increase m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    flat, res = p.ravel(), out.ravel()
    finite = np.flatnonzero(~np.isnan(flat))
    if finite.size == 0:
        return out
    if np.any((flat[finite] < 0) | (flat[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1] (or be NaN)")
    m = finite.size
    order = finite[np.argsort(flat[finite], kind="stable")]
    scaled = (m - np.arange(m)) * flat[order]
    res[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def paired_comparisons(
    df: pd.DataFrame,
    metric: str,
    baseline: str | None = None,
    unit_cols: Sequence[str] | None = None,
    *,
    method_col: str = "method",
    by: str | Sequence[str] | None = None,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    ci: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
    min_pairs_wilcoxon: int = 5,
    min_pairs_ttest: int = 3,
    zero_method: str = "wilcox",
    test: str = "wilcoxon",
) -> pd.DataFrame:
    """Paired comparison of methods on the units where both were scored.

    For each comparison (``method`` vs ``baseline``; every method against ``baseline``, or
    every unordered pair in order of first appearance when ``baseline`` is None) the
    differences are ``d_u = metric(method, u) − metric(baseline, u)`` over the n matched
    units u, and the row reports:

    * ``n_pairs`` = n; ``mean_diff`` = mean of d (in metric units, method − baseline, so
      its sign does not depend on ``higher_is_better``);
    * ``ci_low``/``ci_high``: percentile bootstrap CI (level ``ci``) of the mean of d from
      ``n_boot`` resamples of the pairs, seeded by ``seed`` (each comparison uses the same
      seed, so a row does not depend on which other rows are computed); NaN for n < 3;
    * ``p_wilcoxon``: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon`` with
      ``zero_method``); ``p_ttest``: two-sided paired t-test (``scipy.stats.ttest_rel``);
    * ``p_wilcoxon_holm``/``p_ttest_holm``: :func:`holm_bonferroni` over all rows of the
      returned table, one family per test;
    * ``significant``: Holm-adjusted p of ``test`` < ``alpha``; ``direction``:
      ``"better"``/``"worse"``/``"tie"`` — the sign of the shift the decisive test measures,
      read through ``higher_is_better`` (whether or not it is significant): ``median_shift``
      for Wilcoxon, ``mean_diff`` for the t-test. They can disagree (most units gain a
      little, one loses a lot): the rank test then speaks of the typical unit, and the note
      says that the mean goes the other way;
    * ``note``: why a p-value is missing or degenerate, else ``""``;
    * ``median_shift``: the Hodges–Lehmann estimate of d (median of the Walsh averages
      (d_i + d_j)/2, i ≤ j), the shift the Wilcoxon signed-rank test is about.

    Differences are rounded to 12 decimals first, so values that tie up to floating-point
    noise (0.8 − 0.7 vs 0.73 − 0.63) tie in the tests.

    A p-value is never computed from fewer pairs than the test needs: below
    ``min_pairs_wilcoxon`` (non-zero differences, for ``zero_method="wilcox"`` which drops
    zeros) or ``min_pairs_ttest`` pairs, that p is NaN and the note says "too few pairs".
    The default 5 for Wilcoxon is the smallest n with a defined exact test worth reading;
    note that the exact two-sided test cannot reach p < 0.05 before n = 6 (its smallest p
    is 2/2ⁿ). When all differences are zero both tests are undefined; p = 1 is reported
    (no evidence of a difference) with a note.

    Args:
        df: tidy results, one row per (unit, method).
        metric: the metric column.
        baseline: the reference method, or None for all pairs.
        unit_cols: columns identifying a unit; None → those of :data:`DEFAULT_UNIT_COLS`
            present in ``df``.
        by: optional grouping column(s) (e.g. ``"dataset"``): comparisons are made within
            each group, the group values are prepended as columns, and the Holm families
            span all groups' rows. Grouping columns are removed from the unit columns.
        test: ``"wilcoxon"`` or ``"ttest"``, the test behind ``significant``.

    Returns:
        One row per comparison with the columns of :data:`COMPARISON_COLUMNS` (after the
        ``by`` columns).
    """
    if test not in ("wilcoxon", "ttest"):
        raise ValueError(f"unknown test {test!r}; use 'wilcoxon' or 'ttest'")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1); got {ci}")
    by_cols = [by] if isinstance(by, str) else list(by or [])
    units = _unit_columns(df, unit_cols, exclude=by_cols)
    _require_columns(df, [metric, method_col, *by_cols, *units])
    methods = _ordered_unique(df[method_col])
    if baseline is not None and baseline not in methods:
        raise ValueError(f"baseline {baseline!r} not among the methods {methods}")

    groups = df.groupby(by_cols, sort=False, dropna=False) if by_cols else [((), df)]
    rows: list[dict] = []
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        wide = _wide(sub, metric, method_col, units)
        if baseline is None:
            pairs = list(itertools.combinations(methods, 2))
        else:
            pairs = [(m, baseline) for m in methods if m != baseline]
        for a, b in pairs:
            row = dict(zip(by_cols, key, strict=True))
            row.update(
                _compare(
                    wide, a, b, ci, n_boot, seed, min_pairs_wilcoxon, min_pairs_ttest, zero_method
                )
            )
            rows.append(row)

    out = pd.DataFrame(rows, columns=[*by_cols, *COMPARISON_COLUMNS])
    out["p_wilcoxon_holm"] = holm_bonferroni(out["p_wilcoxon"].to_numpy(dtype=float))
    out["p_ttest_holm"] = holm_bonferroni(out["p_ttest"].to_numpy(dtype=float))
    decisive = out[f"p_{test}_holm"].to_numpy(dtype=float)
    # NaN < alpha is False: a comparison without a p-value is never significant.
    out["significant"] = decisive < alpha
    shift = out["median_shift" if test == "wilcoxon" else "mean_diff"].to_numpy(dtype=float)
    sign = np.sign(shift) * (1 if higher_is_better else -1)
    out["direction"] = np.where(sign > 0, "better", np.where(sign < 0, "worse", "tie"))
    out.loc[np.isnan(shift), "direction"] = ""
    if test == "wilcoxon":
        disagree = np.sign(out["mean_diff"].to_numpy(dtype=float)) * np.sign(shift) < 0
        for i in np.flatnonzero(disagree):
            extra = "the mean difference has the other sign (a few large differences against most units)"
            out.iat[i, out.columns.get_loc("note")] = "; ".join(filter(None, [out["note"].iat[i], extra]))
    return out


#: above this many differences the Walsh averages are sampled (n² pairs would not fit memory)
_HL_EXACT_MAX = 3000


def hodges_lehmann(d: np.ndarray, seed: int = 0) -> float:
    """Median of the Walsh averages (d_i + d_j) / 2, i ≤ j: the one-sample shift estimate
    that goes with the Wilcoxon signed-rank test (Hodges & Lehmann 1963); NaN when empty.
    Exact up to :data:`_HL_EXACT_MAX` differences, else over a seeded sample of as many pairs."""
    d = np.asarray(d, dtype=np.float64)
    if d.size == 0:
        return math.nan
    if d.size <= _HL_EXACT_MAX:
        i, j = np.triu_indices(d.size)
    else:
        rng = np.random.default_rng(seed)
        n_pairs = _HL_EXACT_MAX * (_HL_EXACT_MAX + 1) // 2
        i, j = rng.integers(0, d.size, n_pairs), rng.integers(0, d.size, n_pairs)
    return float(np.median((d[i] + d[j]) / 2))


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman test and Nemenyi post-hoc comparison of k methods over N blocks.

    Attributes:
        methods: the k methods, best average rank first.
        avg_ranks: method → average rank over the blocks (1 = best; ties get average ranks).
        n_blocks: N, the complete blocks used (blocks missing a method are dropped).
        statistic, pvalue: Friedman's χ²_F and its p (NaN when k < 3 or N < 2).
        cd: Nemenyi critical difference at ``alpha``: two methods whose average ranks
            differ by at least ``cd`` are significantly different (NaN when N = 0 or k < 2).
        q_alpha: the Nemenyi critical value, studentized range quantile / √2.
        nemenyi_p: k×k DataFrame of pairwise Nemenyi p-values (1 on the diagonal).
        alpha, higher_is_better: as passed.
        note: why something is NaN, or which blocks were dropped; ``""`` otherwise.
    """

    methods: tuple[str, ...]
    avg_ranks: dict[str, float]
    n_blocks: int
    statistic: float
    pvalue: float
    cd: float
    q_alpha: float
    nemenyi_p: pd.DataFrame = field(repr=False)
    alpha: float = 0.05
    higher_is_better: bool = True
    note: str = ""

    @property
    def n_methods(self) -> int:
        return len(self.methods)

    def cliques(self) -> list[tuple[str, ...]]:
        """Maximal runs of rank-adjacent methods whose average ranks span less than CD.

        These are the groups joined by a bar in a critical-difference diagram (Demšar
        2006, Fig. 1): within a group no pair is significantly different by Nemenyi.
        Groups of a single method are omitted.
        """
        if not math.isfinite(self.cd):
            return []
        ranks = [self.avg_ranks[m] for m in self.methods]
        out: list[tuple[str, ...]] = []
        last_end = -1
        for i in range(len(ranks)):
            j = i
            while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < self.cd:
                j += 1
            # A run ending where the previous one ended is contained in it: not maximal.
            if j > i and j > last_end:
                out.append(tuple(self.methods[i : j + 1]))
                last_end = j
        return out


def friedman_nemenyi(
    df: pd.DataFrame,
    metric: str,
    block_cols: Sequence[str],
    higher_is_better: bool = True,
    *,
    method_col: str = "method",
    alpha: float = 0.05,
) -> FriedmanResult:
    """Average ranks, Friedman test and Nemenyi critical difference (Demšar 2006, §3.2.2).

    Each block (a row of ``block_cols`` values, e.g. a dataset) ranks the k methods, 1 =
    best, ties sharing the average rank. With R_j the average rank of method j over N
    blocks, the Friedman statistic is ``χ²_F = 12N/(k(k+1)) · (Σ_j R_j² − k(k+1)²/4)``
    (``scipy.stats.friedmanchisquare``, which also corrects for ties), χ² with k − 1
    degrees of freedom. The Nemenyi test calls two methods different when
    ``|R_i − R_j| ≥ CD = q_α · sqrt(k(k+1)/(6N))`` with ``q_α`` the (1 − α) quantile of
    the studentized range for k groups and infinite degrees of freedom, divided by √2
    (for k = 4, α = 0.05: q_α = 2.569); its pairwise p-value is the studentized-range
    survival function at ``√2 · |R_i − R_j| / sqrt(k(k+1)/(6N))``.

    Only complete blocks (every method scored) are used; several rows of one (block,
    method) are averaged first (e.g. seeds, when the blocks are datasets).
    """
    block_cols = list(block_cols)
    _require_columns(df, [metric, method_col, *block_cols])
    methods = _ordered_unique(df[method_col])
    k = len(methods)
    notes: list[str] = []
    data = df[~df[metric].isna()]
    if block_cols:
        wide = data.pivot_table(
            index=block_cols, columns=method_col, values=metric, aggfunc="mean", dropna=False
        )
    else:  # one block: everything
        wide = data.groupby(method_col)[metric].mean().to_frame().T
    wide = wide.reindex(columns=methods)
    complete = wide.dropna(axis=0, how="any")
    if len(complete) < len(wide):
        notes.append(
            f"{len(wide) - len(complete)} of {len(wide)} blocks dropped (a method missing)"
        )
    n = len(complete)
    values = complete.to_numpy(dtype=np.float64)
    if n:
        ranks = stats.rankdata(-values if higher_is_better else values, axis=1, method="average")
        avg = ranks.mean(axis=0)
    else:
        avg = np.full(k, np.nan)

    statistic = pvalue = math.nan
    if k < 3 or n < 2:
        notes.append(f"Friedman test needs >= 3 methods and >= 2 blocks (k={k}, N={n})")
    elif np.all(values == values[:, :1]):
        notes.append("all methods tie in every block: Friedman statistic undefined")
    else:
        res = stats.friedmanchisquare(*values.T)
        statistic, pvalue = float(res.statistic), float(res.pvalue)

    q_alpha = cd = math.nan
    p_matrix = np.full((k, k), np.nan)
    if k >= 2 and n >= 1:
        q_alpha = float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))
        se = math.sqrt(k * (k + 1) / (6.0 * n))
        cd = q_alpha * se
        z = np.abs(avg[:, None] - avg[None, :]) / se
        p_matrix = stats.studentized_range.sf(z * math.sqrt(2), k, np.inf)
        np.fill_diagonal(p_matrix, 1.0)
        p_matrix = np.clip(p_matrix, 0.0, 1.0)

    order = np.argsort(avg, kind="stable") if n else np.arange(k)
    ordered = tuple(methods[i] for i in order)
    return FriedmanResult(
        methods=ordered,
        avg_ranks={methods[i]: float(avg[i]) for i in order},
        n_blocks=n,
        statistic=statistic,
        pvalue=pvalue,
        cd=cd,
        q_alpha=q_alpha,
        nemenyi_p=pd.DataFrame(p_matrix, index=methods, columns=methods).loc[ordered, ordered],
        alpha=alpha,
        higher_is_better=higher_is_better,
        note="; ".join(notes),
    )


def bootstrap_mean_ci(
    values: np.ndarray, ci: float = 0.95, n_boot: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (1-D): NaN, NaN for n < 3 (from two
    values the resampled means take three values, and the "CI" is just their range).

    Resamples are drawn with ``numpy.random.default_rng(seed)`` in chunks of bounded
    memory, so the result depends on (values, ci, n_boot, seed) only.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n < 3 or n_boot < 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # ≤ 2M indices (16 MB) at a time
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    tail = (1 - ci) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


# --- helpers -------------------------------------------------------------------------------


def _compare(
    wide: pd.DataFrame,
    a: str,
    b: str,
    ci: float,
    n_boot: int,
    seed: int,
    min_w: int,
    min_t: int,
    zero_method: str,
) -> dict:
    """One comparison row (without the Holm columns) of ``a`` against ``b``."""
    row: dict = {"method": a, "baseline": b}
    if a in wide.columns and b in wide.columns:
        both = wide[[a, b]].dropna()
        x, y = both[a].to_numpy(dtype=np.float64), both[b].to_numpy(dtype=np.float64)
    else:
        x = y = np.empty(0)
    d = np.round(x - y, 12)  # ties up to floating-point noise are ties
    n = d.size
    notes: list[str] = []
    row["n_pairs"] = n
    row["mean_diff"] = float(d.mean()) if n else math.nan
    row["median_shift"] = hodges_lehmann(d)
    row["ci_low"], row["ci_high"] = bootstrap_mean_ci(d, ci, n_boot, seed)
    p_w = p_t = math.nan
    if n == 0:
        notes.append("no matched units")
    elif np.all(d == 0):
        # Both tests divide by zero here; "no evidence of a difference" is p = 1.
        if n >= min_w:
            p_w = 1.0
        if n >= min_t:
            p_t = 1.0
        notes.append(f"all {n} differences are zero")
    else:
        n_w = int(np.count_nonzero(d)) if zero_method == "wilcox" else n
        if n_w >= min_w:
            p_w = float(stats.wilcoxon(d, zero_method=zero_method).pvalue)
        if n >= min_t:
            with warnings.catch_warnings():
                # Constant differences: t = ±inf, p = 0, with a precision-loss warning.
                warnings.simplefilter("ignore", RuntimeWarning)
                p_t = float(stats.ttest_rel(x, y).pvalue)
            if np.all(d == d[0]):
                notes.append("differences are constant: t-test degenerate")
        if n_w < min_w or n < min_t:
            short = []
            if n_w < min_w:
                extra = f", {n_w} non-zero" if n_w != n else ""
                short.append(f"Wilcoxon needs {min_w}{extra}")
            if n < min_t:
                short.append(f"t-test needs {min_t}")
            notes.insert(0, f"too few pairs (n={n}; {', '.join(short)})")
    row["p_wilcoxon"], row["p_ttest"] = p_w, p_t
    row["note"] = "; ".join(notes)
    return row


def _wide(df: pd.DataFrame, metric: str, method_col: str, units: list[str]) -> pd.DataFrame:
    """Units × methods table of the metric; duplicated (unit, method) rows are an error."""
    data = df[~df[metric].isna()]
    keys = [*units, method_col]
    dup = data.duplicated(subset=keys, keep=False)
    if dup.any():
        example = data.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(
            f"{int(dup.sum())} rows share a (unit, method) key, e.g. {example}: pairing is "
            f"ambiguous; add the distinguishing column to unit_cols (now {units}) or aggregate"
        )
    if not units:  # one unit: the whole table
        return data.set_index(method_col)[[metric]].T
    return data.pivot(index=units, columns=method_col, values=metric)


def _unit_columns(
    df: pd.DataFrame, unit_cols: Sequence[str] | None, exclude: Sequence[str] = ()
) -> list[str]:
    if unit_cols is None:
        unit_cols = [c for c in DEFAULT_UNIT_COLS if c in df.columns]
    elif isinstance(unit_cols, str):
        unit_cols = [unit_cols]
    return [c for c in unit_cols if c not in exclude]


def _require_columns(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in dict.fromkeys(cols) if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; the table has {list(df.columns)}")


def _ordered_unique(values: pd.Series) -> list[str]:
    """Distinct non-null values in order of first appearance."""
    return [v for v in pd.unique(values) if not pd.isna(v)]
