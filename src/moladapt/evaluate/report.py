"""A results report from a tidy table: the answer first, then the table, then the plots.

:func:`write_report` turns a tidy results DataFrame — one row per run, with at least the
columns ``method``, ``dataset`` and the metric, usually ``seed``, optionally ``split``,
``k`` (few-shot support size), ``featurizer``, ``encoder`` — into a directory with

* ``report.md`` (images linked as the PNG files next to it) and ``report.html``
  (self-contained: the same PNGs embedded as base64, inline CSS, no external assets);
* ``bars.png``: mean ± standard deviation per method, per dataset (points);
* ``cd_diagram.png``: Demšar's critical-difference diagram (average ranks, methods joined
  by a bar when their ranks differ by less than the Nemenyi CD);
* ``differences.png``: a forest plot of every (method, dataset) paired difference from the
  baseline with its bootstrap CI, filled where significant (:func:`forest_plot`);
* ``<metric>_vs_k.png`` when a ``k`` column exists: the metric against k, one line per
  method with a 95% confidence band;
* ``heatmap_<a>_<b>.png`` when ``heatmap=(a, b)`` is given: the mean metric over a × b;
* ``comparisons.csv``: the per-dataset paired comparisons against the baseline;
* with ``breakdown=("split", "featurizer")``, a table per column of the gain over the
  baseline at each of its values, pooled over datasets (does a method's gain hold with rich
  features, on a harder split?), and ``breakdown.csv`` with those comparisons.

Statistics come from :mod:`moladapt.evaluate.statistics`. Runs are paired on the unit
columns present among ``split, seed, k, featurizer, encoder`` (within a dataset); the
significance marks are Holm-corrected Wilcoxon signed-rank tests against the baseline, one
Holm family over every (method, dataset) comparison of the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from moladapt.evaluate.statistics import (
    FriedmanResult,
    friedman_nemenyi,
    paired_comparisons,
)
from moladapt.utils import atomic_write_text

LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse", "loss", "nll", "brier", "ece"})
"""Metric names where lower is better; every other metric is taken as higher-is-better."""

PAIRING_COLS = ("split", "seed", "k", "featurizer", "encoder")
"""Columns that, when present, identify a run within a dataset (the pairing units)."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.3em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
p.answer{font-size:1.08em;background:#f4f8ff;border-left:4px solid #3b6fd8;padding:.7em 1em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}
p.note{color:#555;font-size:.9em}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-size:.9em}
"""


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]


@dataclass(frozen=True)
class _Image:
    filename: str
    png: bytes
    caption: str

#: significance marks by direction; a significant "tie" (a zero shift) gets none
_MARKS = {"better": "*", "worse": "†"}


def write_report(
    df: pd.DataFrame,
    output_dir: str | Path,
    metric: str = "roc_auc",
    baseline: str | None = None,
    title: str = "moladapt results",
    *,
    heatmap: tuple[str, str] | None = None,
    breakdown: Sequence[str] = (),
    higher_is_better: bool | None = None,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> Path:
    """Write ``report.md``, ``report.html``, the PNGs and ``comparisons.csv`` to ``output_dir``.

    Args:
        df: tidy results, one row per run (see the module docstring for the columns). Rows
            with a NaN metric are left out, and so are rows whose ``run_status`` (if that
            column exists) is not ``done``; the page lists both, per method. Within a dataset,
            two rows of one method must differ in one of :data:`PAIRING_COLS` (else the
            pairing is ambiguous: error).
        output_dir: created if needed; existing files of the same names are replaced.
        metric: the metric column reported.
        baseline: the method the others are tested against; None → the first method in
            the table (order of first appearance).
        title: the page title.
        heatmap: two columns, e.g. ``("featurizer", "encoder")``: also plot the mean metric
            over their grid (all other columns pooled).
        breakdown: columns (e.g. ``split``, ``featurizer``) whose values each get the paired
            mean difference against the baseline, pooled over datasets: one table per column,
            every method × value, Holm-corrected over all the cells of all those tables.
        higher_is_better: None → False for the names in :data:`LOWER_IS_BETTER`, else True.
        alpha: significance level of the tests and of the Nemenyi CD.
        n_boot, seed: bootstrap resamples and seed for the CIs of the mean differences.

    Returns:
        ``output_dir`` as a :class:`~pathlib.Path`.
    """
    for col in ("method", "dataset", metric, *(heatmap or ()), *breakdown):
        if col not in df.columns:
            raise ValueError(f"column {col!r} not in the results table {list(df.columns)}")
    if heatmap is not None and len(heatmap) != 2:
        raise ValueError(f"heatmap needs two column names; got {heatmap!r}")
    finished = df if "run_status" not in df.columns else df[df["run_status"] == "done"]
    data = finished[~finished[metric].isna()].drop(columns="run_status", errors="ignore").copy()
    left_out = _left_out_note(df, metric)
    if data.empty:
        raise ValueError(f"no rows with a value of {metric!r}" + (f" ({left_out})" if left_out else ""))
    hib = (metric.lower() not in LOWER_IS_BETTER) if higher_is_better is None else higher_is_better
    methods = [m for m in pd.unique(data["method"])]
    datasets = [d for d in pd.unique(data["dataset"])]
    if baseline is None:
        baseline = methods[0]
    elif baseline not in methods:
        raise ValueError(f"baseline {baseline!r} not among the methods {methods}")
    units = [c for c in PAIRING_COLS if c in data.columns]

    comps = paired_comparisons(
        data,
        metric,
        baseline,
        unit_cols=["dataset", *units],
        by="dataset",
        higher_is_better=hib,
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
    )
    ranks, rank_note = _ranks(data, metric, units, hib, alpha)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [
        _Image("bars.png", _bar_chart(data, metric, methods, datasets), _bars_caption(metric))
    ]
    if not comps.empty:
        images.append(
            _Image(
                "differences.png",
                forest_plot(comps, label_cols=("dataset", "method"),
                            xlabel=f"{metric}: method − {baseline}"),
                f"Paired difference from the baseline {baseline!r} per dataset: mean and 95% "
                f"bootstrap CI over the paired runs; filled = significant (Wilcoxon, Holm over "
                f"all {len(comps)} comparisons, α = {alpha}), green better, red worse.",
            )
        )
    if math.isfinite(ranks.cd) and ranks.n_methods >= 2 and math.isfinite(ranks.pvalue):  # Nemenyi follows Friedman
        images.append(
            _Image(
                "cd_diagram.png",
                _cd_diagram(ranks),
                f"Critical-difference diagram: average rank over {ranks.n_blocks} blocks "
                f"(1 = best); methods joined by a bar are not significantly different "
                f"(Nemenyi, α = {alpha}, CD = {ranks.cd:.2f}).",
            )
        )
    if "k" in data.columns:
        images.append(
            _Image(
                f"{_slug(metric)}_vs_k.png",
                _k_curves(data, metric, methods),
                f"{metric} against the support size k: mean over datasets, seeds and "
                f"splits, with 95% t confidence bands.",
            )
        )
    if heatmap is not None:
        a, b = heatmap
        images.append(
            _Image(
                f"heatmap_{_slug(a)}_{_slug(b)}.png",
                _heatmap(data, metric, a, b),
                f"Mean {metric} over {a} × {b} (all other columns pooled).",
            )
        )

    answer = _answer(comps, ranks, rank_note, baseline, datasets, alpha, metric)
    if left_out:
        answer += f" Left out: {left_out}."
    table = _summary_table(data, metric, methods, datasets, comps, ranks, baseline, hib)
    comp_table = _comparison_table(comps)
    breakdowns, breakdown_frame = _breakdowns(
        data, metric, methods, baseline, units, list(breakdown), hib, alpha, n_boot, seed
    )
    legend = (
        f"Mean ± standard deviation over runs; bold = best mean on the dataset "
        f"({'higher' if hib else 'lower'} is better). * / † = significantly better / worse "
        f"than the baseline {baseline!r} (Wilcoxon signed-rank on paired runs, Holm-corrected "
        f"over all {len(comps)} comparisons, α = {alpha})."
    )
    if units:
        legend += f" Runs are paired on {', '.join(units)}."

    written = ["report.md", "report.html", "comparisons.csv", *(img.filename for img in images)]
    if breakdown_frame is not None:
        written.append("breakdown.csv")
    # files an earlier report wrote here and this one does not (a heatmap no longer asked
    # for) would sit beside it as if current: the manifest says which are ours to remove
    manifest = out / "report_files.json"
    if manifest.exists():
        for name in set(json.loads(manifest.read_text(encoding="utf-8"))) - set(written):
            if "/" not in name and name != manifest.name:
                (out / name).unlink(missing_ok=True)
    comps.to_csv(out / "comparisons.csv", index=False)
    if breakdown_frame is not None:
        breakdown_frame.to_csv(out / "breakdown.csv", index=False)
    for image in images:
        (out / image.filename).write_bytes(image.png)
    sections = (title, answer, table, legend, breakdowns, comp_table, images, metric)
    atomic_write_text(out / "report.md", _markdown(*sections))
    atomic_write_text(out / "report.html", _html(*sections))
    atomic_write_text(manifest, json.dumps(sorted(written), indent=1))
    return out


def _left_out_note(df: pd.DataFrame, metric: str) -> str:
    """Which runs the tables do not count, per method: unfinished (failed, running, pending)
    and finished without a value of ``metric``; ``""`` when none."""
    parts = []
    for method, rows in df.groupby("method", sort=False):
        status = rows["run_status"] if "run_status" in rows.columns else pd.Series("done", index=rows.index)
        counts = status[status != "done"].value_counts()
        missing = int((rows[metric].isna() & (status == "done")).sum())
        bits = [f"{n} {state} run{'s' if n > 1 else ''}" for state, n in counts.items()]
        if missing:
            bits.append(f"{missing} run{'s' if missing > 1 else ''} without a value of {metric}")
        if bits:
            kept = len(rows) - int(counts.sum()) - missing
            bits.append(f"{kept} of {len(rows)} counted" if kept else "no run counted")
            parts.append(f"{method}: " + ", ".join(bits))
    return "; ".join(parts)


# --- statistics for the page ----------------------------------------------------------------


def _ranks(
    data: pd.DataFrame, metric: str, units: list[str], hib: bool, alpha: float
) -> tuple[FriedmanResult, str]:
    """Friedman/Nemenyi over (dataset, split, k, featurizer, encoder) blocks, seeds averaged.

    Seeds of one dataset are not independent samples of "a data set" (Demšar 2006 §3), so
    they are averaged within a block; only when that leaves fewer than 2 blocks are the
    seeds used as blocks, and the page says so.
    """
    blocks = ["dataset", *(c for c in units if c != "seed")]
    res = friedman_nemenyi(data, metric, blocks, hib, alpha=alpha)
    if res.n_blocks < 2 and "seed" in units:
        res = friedman_nemenyi(data, metric, [*blocks, "seed"], hib, alpha=alpha)
        return res, "seeds used as blocks (fewer than 2 blocks otherwise)"
    return res, ""


def _best_methods(ranks: FriedmanResult) -> list:
    """The methods sharing the best mean rank (more than one on a tie)."""
    best = ranks.avg_ranks[ranks.methods[0]]
    tied = [m for m in ranks.methods if math.isclose(ranks.avg_ranks[m], best, abs_tol=1e-9)]
    return tied or [ranks.methods[0]]  # NaN ranks (no complete block): the order given


def _answer(
    comps: pd.DataFrame,
    ranks: FriedmanResult,
    rank_note: str,
    baseline: str,
    datasets: list,
    alpha: float,
    metric: str,
) -> str:
    """The one-paragraph answer at the top of the page."""
    tied = _best_methods(ranks)
    r = ranks.avg_ranks[tied[0]]
    if len(tied) > 1:
        text = f"Best methods on average, tied: {', '.join(map(str, tied))} (mean rank {_num(r, 2)}"
    else:
        text = f"Best method on average: {tied[0]} (mean rank {_num(r, 2)}"
    text += f" of {ranks.n_methods} over {ranks.n_blocks} blocks)"
    m = len(datasets)
    if ranks.n_methods < 2:
        return text + f"; it is the only method with a value of {metric}, so nothing is compared."
    sentences = []
    for best in tied:
        if best == baseline:
            wins = comps[comps["significant"] & (comps["direction"] == "better")]
            sentences.append(
                f"{best} is the baseline; another method is significantly better than it on "
                f"{wins['dataset'].nunique()} of {m} datasets (Holm-corrected Wilcoxon)")
            continue
        mine = comps[comps["method"] == best]
        n_better = int((mine["significant"] & (mine["direction"] == "better")).sum())
        n_worse = int((mine["significant"] & (mine["direction"] == "worse")).sum())
        sentences.append(
            f"{best} is significantly better than the baseline {baseline} on {n_better} of {m} "
            f"datasets (Holm-corrected Wilcoxon, α = {alpha})"
            + (f" and significantly worse on {n_worse}" if n_worse else ""))
    text += ". " + "; ".join(sentences) + "."
    untested = comps[comps["p_wilcoxon"].isna()]
    if len(untested):
        text += (
            f" {len(untested)} of {len(comps)} comparisons had too few paired runs for a "
            f"Wilcoxon test (no p-value; counted as not significant)."
        )
    if math.isfinite(ranks.pvalue):
        verdict = "differ" if ranks.pvalue < alpha else "do not differ significantly"
        text += (
            f" Friedman test: the methods {verdict} (χ² = {ranks.statistic:.2f}, "
            f"p = {_p(ranks.pvalue)}); Nemenyi CD = {ranks.cd:.2f}."
        )
    elif ranks.note:
        text += f" Friedman test not run: {ranks.note}."
    if rank_note:
        text += f" Ranks: {rank_note}."
    return text


def _summary_table(
    data: pd.DataFrame,
    metric: str,
    methods: list,
    datasets: list,
    comps: pd.DataFrame,
    ranks: FriedmanResult,
    baseline: str,
    hib: bool,
) -> _Table:
    """method × dataset cells "mean ± std" (+ * / † marks), bold = best, and mean rank."""
    g = data.groupby(["method", "dataset"], sort=False)[metric].agg(["mean", "std"])
    marks = {}
    for row in comps.itertuples(index=False):
        if row.significant and row.direction in _MARKS:
            marks[(row.method, row.dataset)] = _MARKS[row.direction]
    header = ["method", *map(str, datasets), "mean rank"]
    rows, bold = [], []
    for m in methods:
        cells, flags = [_label(m, baseline)], [False]
        for d in datasets:
            if (m, d) not in g.index:
                cells.append("–")
                flags.append(False)
                continue
            mean, std = g.loc[(m, d)]
            col = g.xs(d, level="dataset")["mean"].round(3)
            best = col.max() if hib else col.min()
            text = f"{mean:.3f}" + (f" ± {std:.3f}" if math.isfinite(std) else "")
            cells.append(text + marks.get((m, d), ""))
            flags.append(bool(round(mean, 3) == best))
        r = ranks.avg_ranks.get(m, math.nan)
        cells.append(_num(r, 2))
        flags.append(m in _best_methods(ranks) and math.isfinite(r))
        rows.append(cells)
        bold.append(flags)
    return _Table(header, rows, bold)


def _comparison_table(comps: pd.DataFrame) -> _Table:
    header = [
        "dataset",
        "method",
        "n pairs",
        "mean diff [95% CI]",
        "p Wilcoxon (Holm)",
        "p t (Holm)",
        "note",
    ]
    rows, bold = [], []
    for r in comps.itertuples(index=False):
        ci = f" [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if math.isfinite(r.ci_low) else ""
        rows.append(
            [
                str(r.dataset),
                str(r.method),
                str(r.n_pairs),
                (f"{r.mean_diff:+.3f}" if math.isfinite(r.mean_diff) else "–") + ci,
                _p(r.p_wilcoxon_holm),
                _p(r.p_ttest_holm),
                str(r.note),
            ]
        )
        bold.append([False] * 4 + [bool(r.significant)] + [False] * 2)
    return _Table(header, rows, bold)


@dataclass(frozen=True)
class _Breakdown:
    column: str
    table: _Table
    legend: str


def _breakdowns(
    data: pd.DataFrame,
    metric: str,
    methods: list,
    baseline: str,
    units: list[str],
    columns: list[str],
    hib: bool,
    alpha: float,
    n_boot: int,
    seed: int,
) -> tuple[list[_Breakdown], pd.DataFrame | None]:
    """Per breakdown column: method × value cells "mean Δ [CI] (n)" against the baseline.

    Pairs are (dataset, units) within a value of the column, so a cell pools the datasets;
    one Holm family spans every cell of every breakdown table (they are all read together).
    """
    if not columns:
        return [], None
    # one copy of the runs per column, grouped by (column, value): a single call then makes
    # one Holm family of every cell; the column is constant within a group, so it pairs nothing
    stacked = pd.concat(
        [data.assign(breakdown=col, value=data[col]) for col in columns], ignore_index=True
    )
    allc = paired_comparisons(
        stacked,
        metric,
        baseline,
        unit_cols=["dataset", *units],
        by=["breakdown", "value"],
        higher_is_better=hib,
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
    )
    out = []
    for col in columns:
        comp = allc[allc["breakdown"] == col]
        values = list(pd.unique(data[col].dropna()))
        header = ["method", *[f"{col} = {v}" for v in values]]
        rows, bold = [], []
        for m in methods:
            if m == baseline:
                continue
            cells, flags = [str(m)], [False]
            for v in values:
                hit = comp[(comp["method"] == m) & (comp["value"] == v)]
                if hit.empty or not math.isfinite(hit["mean_diff"].iloc[0]):
                    cells.append("–")
                    flags.append(False)
                    continue
                r = hit.iloc[0]
                mark = _MARKS.get(r["direction"], "") if r["significant"] else ""
                ci = f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if math.isfinite(r["ci_low"]) else ""
                cells.append(f"{r['mean_diff']:+.3f}{mark}{ci} ({int(r['n_pairs'])})")
                flags.append(bool(r["significant"]))
            rows.append(cells)
            bold.append(flags)
        legend = (
            f"{metric} of the method minus the baseline {baseline!r} at each {col}, pooled over "
            f"datasets: mean difference, 95% bootstrap CI, (number of paired runs). "
            f"* / † = significantly better / worse (Wilcoxon signed-rank, Holm-corrected over "
            f"all {len(allc)} cells of the breakdown tables, α = {alpha})."
        )
        out.append(_Breakdown(col, _Table(header, rows, bold), legend))
    return out, allc


# --- plots (matplotlib's Agg canvas through Figure: no pyplot, no global backend switch) ----


def _bar_chart(data: pd.DataFrame, metric: str, methods: list, datasets: list) -> bytes:
    from matplotlib.figure import Figure

    # Points, not bars: the axis is cut to the data (differences of a few points would vanish
    # from 0), and a cut axis makes bar lengths lie. Whiskers are ± std: a 95% t interval
    # over 2-3 seeds (t = 12.7 at 2) would span the whole metric range.
    g = data.groupby(["dataset", "method"], sort=False)[metric]
    mean, spread = g.mean(), g.std().fillna(0.0)
    n_m = len(methods)
    width = 0.8 / n_m
    fig = Figure(figsize=(max(5.0, 1.0 + len(datasets) * (0.35 * n_m + 0.4)), 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(datasets))
    for i, m in enumerate(methods):
        keys = [(d, m) for d in datasets]
        y = [mean.get(k, np.nan) for k in keys]
        err = [spread.get(k, np.nan) for k in keys]
        ax.errorbar(x + (i - (n_m - 1) / 2) * width, y, yerr=err, fmt="o", ms=5, capsize=3, label=str(m))
    ax.set_xticks(x, [str(d) for d in datasets], rotation=30 if len(datasets) > 6 else 0)
    ax.set_xlim(-0.5, len(datasets) - 0.5)
    for edge in x[:-1] + 0.5:
        ax.axvline(edge, color="0.85", lw=0.8)
    ax.set_ylabel(metric)
    lo = np.nanmin((mean - spread).to_numpy())
    hi = np.nanmax((mean + spread).to_numpy())
    pad = 0.1 * (hi - lo) if hi > lo else 0.05 * (abs(hi) + 1e-9)
    ax.set_ylim(lo - pad, hi + pad)
    ax.legend(fontsize=8, ncols=min(n_m, 4), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


def forest_plot(
    comparisons: pd.DataFrame,
    *,
    label_cols: Sequence[str] = ("method",),
    xlabel: str = "difference from the baseline",
    title: str | None = None,
) -> bytes:
    """A forest plot (PNG bytes) of paired comparisons: one row per comparison, its mean
    difference as a point and its CI as a bar, a line at 0 (no difference).

    Args:
        comparisons: :func:`~moladapt.evaluate.statistics.paired_comparisons`' table (columns
            ``mean_diff``, ``ci_low``, ``ci_high``, ``significant``, ``direction`` and the
            ``label_cols``), one row per comparison, plotted top to bottom in its order.
        label_cols: columns joined (`` · ``) into each row's label.
        xlabel, title: axis label and optional title.

    Significant rows are filled (green when ``direction`` is ``better``, red when ``worse``);
    the others are hollow grey, so what the tests support stands out from what they do not.
    """
    from matplotlib.figure import Figure

    rows = comparisons.reset_index(drop=True)
    n = len(rows)
    fig = Figure(figsize=(6.4, 0.9 + 0.32 * max(n, 1)))
    ax = fig.add_subplot()
    ax.axvline(0.0, color="0.3", lw=1)
    colours = {"better": "#2a9d4b", "worse": "#d1495b"}
    for i, row in rows.iterrows():
        y = n - 1 - i
        significant = bool(row.get("significant", False))
        colour = colours.get(str(row.get("direction", "")), "0.45") if significant else "0.45"
        lo, hi = row.get("ci_low", np.nan), row.get("ci_high", np.nan)
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [y, y], color=colour, lw=2, solid_capstyle="butt")
        ax.plot([row["mean_diff"]], [y], marker="o", ms=6, color=colour,
                markerfacecolor=colour if significant else "white", markeredgewidth=1.5)
    labels = [" · ".join(str(r[c]) for c in label_cols if c in rows.columns) for _, r in rows.iterrows()]
    ax.set_yticks(range(n - 1, -1, -1), labels)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)


def _cd_diagram(res: FriedmanResult) -> bytes:
    """Demšar (2006) Fig. 1: ranks on an axis, best half labelled left, the rest right."""
    from matplotlib.figure import Figure

    k = res.n_methods
    ranks = [res.avg_ranks[m] for m in res.methods]
    cliques = res.cliques()
    n_left = (k + 1) // 2
    rows = max(n_left, k - n_left)
    top = 0.5
    first_label = -0.25 - 0.12 * len(cliques)
    step = 0.28
    fig = Figure(figsize=(7.0, 1.0 + 0.3 * rows + 0.1 * len(cliques)))
    ax = fig.add_subplot()
    lo, hi = 1.0, float(max(k, 2))
    ax.plot([lo, hi], [0, 0], color="k", lw=1)
    for t in range(1, int(hi) + 1):
        ax.plot([t, t], [0, 0.06], color="k", lw=1)
        ax.text(t, 0.1, str(t), ha="center", va="bottom", fontsize=9)
    # CD segment above the axis, from rank 1.
    ax.plot([lo, lo + res.cd], [top, top], color="k", lw=1.5)
    for x in (lo, lo + res.cd):
        ax.plot([x, x], [top - 0.04, top + 0.04], color="k", lw=1.5)
    ax.text(lo + res.cd / 2, top + 0.06, f"CD = {res.cd:.2f}", ha="center", va="bottom", fontsize=9)
    margin = 0.06 * (hi - lo) + 0.1
    for i, (m, r) in enumerate(zip(res.methods, ranks, strict=True)):
        left = i < n_left
        row = i if left else k - 1 - i  # right side: worst at the top, as in Demšar
        y = first_label - step * row
        x_end = lo - margin if left else hi + margin
        ax.plot([r, r, x_end], [0, y, y], color="0.3", lw=0.8)
        label = f"{m} ({r:.2f})" if left else f"({r:.2f}) {m}"
        ax.text(x_end, y, label, ha="right" if left else "left", va="center", fontsize=9)
    for j, group in enumerate(cliques):
        y = -0.12 - 0.12 * j
        xs = [res.avg_ranks[m] for m in group]
        ax.plot([min(xs) - 0.03, max(xs) + 0.03], [y, y], color="k", lw=3, solid_capstyle="round")
    ax.set_xlim(lo - margin, hi + margin)
    ax.set_ylim(first_label - step * rows, top + 0.3)
    ax.axis("off")
    return figure_png(fig)


def _k_curves(data: pd.DataFrame, metric: str, methods: list) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for m in methods:
        g = data[data["method"] == m].groupby("k")[metric]
        mean, half = g.mean().sort_index(), g.apply(_t_half_width).sort_index().fillna(0.0)
        ks = mean.index.to_numpy(dtype=float)
        (line,) = ax.plot(ks, mean.to_numpy(), marker="o", ms=3, label=str(m))
        ax.fill_between(ks, mean - half, mean + half, color=line.get_color(), alpha=0.2, lw=0)
    ks = data["k"].dropna().to_numpy(dtype=float)
    if ks.size and ks.min() > 0 and ks.max() / ks.min() >= 8:
        ax.set_xscale("log", base=2)  # support sizes usually double: 2, 4, 8, 16, ...
    uniq = np.unique(ks)
    if 0 < uniq.size <= 12:
        ax.set_xticks(uniq, [f"{v:g}" for v in uniq])
        ax.minorticks_off()
    ax.set_xlabel("k (support size)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def _heatmap(data: pd.DataFrame, metric: str, a: str, b: str) -> bytes:
    from matplotlib.figure import Figure

    grid = data.pivot_table(index=a, columns=b, values=metric, aggfunc="mean")
    values = grid.to_numpy(dtype=float)
    fig = Figure(figsize=(1.5 + 1.0 * grid.shape[1], 1.2 + 0.5 * grid.shape[0]))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], rotation=30)
    ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
    ax.set_xlabel(b)
    ax.set_ylabel(a)
    finite = values[np.isfinite(values)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), v in np.ndenumerate(values):
        if math.isfinite(v):
            color = "black" if v > mid else "white"  # readable on viridis' light/dark ends
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(im, ax=ax, label=f"mean {metric}")
    return figure_png(fig)


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (110 dpi, tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _t_half_width(values: pd.Series, level: float = 0.95) -> float:
    """Half-width of the t confidence interval of the mean; NaN for fewer than 2 values."""
    x = values.dropna().to_numpy(dtype=float)
    if x.size < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def _bars_caption(metric: str) -> str:
    return (f"Mean {metric} per method and dataset (points; the axis is cut to the data); "
            "whiskers: ± one standard deviation over runs (the table's ±).")


# --- rendering --------------------------------------------------------------------------------


def _markdown(
    title: str,
    answer: str,
    table: _Table,
    legend: str,
    breakdowns: Sequence[_Breakdown],
    comp_table: _Table,
    images: Sequence[_Image],
    metric: str,
) -> str:
    def md_table(t: _Table) -> str:
        def cell(text: str, bold: bool) -> str:
            text = text.replace("|", "\\|").replace("*", "\\*")
            return f"**{text}**" if bold and text not in ("", "–") else text

        lines = ["| " + " | ".join(cell(h, False) for h in t.header) + " |"]
        align = ["---"] + ["---" if h == "note" else "---:" for h in t.header[1:]]
        lines.append("|" + "|".join(align) + "|")
        for row, flags in zip(t.rows, t.bold, strict=True):
            lines.append(
                "| " + " | ".join(cell(c, b) for c, b in zip(row, flags, strict=True)) + " |"
            )
        return "\n".join(lines)

    parts = [
        f"# {title}",
        answer,
        f"## {metric}: mean ± std per method and dataset",
        md_table(table),
        legend,
    ]
    for b in breakdowns:
        parts += [f"## Gain over the baseline by {b.column}", md_table(b.table), b.legend]
    parts += [
        "## Paired comparisons against the baseline",
        md_table(comp_table),
        "## Plots",
    ]
    parts += [f"![{im.caption}]({im.filename})\n\n*{im.caption}*" for im in images]
    return "\n\n".join(parts) + "\n"


def _html(
    title: str,
    answer: str,
    table: _Table,
    legend: str,
    breakdowns: Sequence[_Breakdown],
    comp_table: _Table,
    images: Sequence[_Image],
    metric: str,
) -> str:
    e = html.escape

    def html_table(t: _Table) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in t.header)
        body = []
        for row, flags in zip(t.rows, t.bold, strict=True):
            tds = "".join(
                f"<td><b>{e(c)}</b></td>" if b else f"<td>{e(c)}</td>"
                for c, b in zip(row, flags, strict=True)
            )
            body.append(f"<tr>{tds}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"

    figures = [
        f'<figure><img alt="{e(im.caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(im.png).decode("ascii")}"><figcaption>{e(im.caption)}</figcaption></figure>'
        for im in images
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{e(title)}</h1>",
            f'<p class="answer">{e(answer)}</p>',
            f"<h2>{e(metric)}: mean ± std per method and dataset</h2>",
            html_table(table),
            f'<p class="note">{e(legend)}</p>',
            *[
                f"<h2>Gain over the baseline by {e(b.column)}</h2>{html_table(b.table)}"
                f'<p class="note">{e(b.legend)}</p>'
                for b in breakdowns
            ],
            "<h2>Paired comparisons against the baseline</h2>",
            html_table(comp_table),
            "<h2>Plots</h2>",
            *figures,
            "</body></html>",
            "",
        ]
    )


def _label(method, baseline) -> str:
    return f"{method} (baseline)" if method == baseline else str(method)


def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "–"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))
