"""Transfer between the 22 TDC ADMET properties: single-task vs uniform multi-task vs learned
transfer ratios (Lee et al., "Scalable Multi-Task Transfer Learning for Molecular Property
Prediction", 2024).

For every TDC ADMET dataset as the *target* (its predefined split as published, the test set
untouched) and every seed, three models start from the same initial weights:

* ``single_task``: :class:`moladapt.training.Trainer` on the target's training molecules only
  (model selection: the best validation epoch).
* ``uniform_mt``: the target plus the other TDC datasets as *source tasks*, every source loss
  with weight 1 (target loss + Σ source losses). The same training loop as ``bilevel``
  (:class:`moladapt.adapt.bilevel.GraphTaskProblem`, Adam, the same batches and number of
  optimiser steps, model selection on the target's validation metric at the same cadence),
  only without the outer (weight) updates, so the time ratio of the two is the overhead of
  the bi-level loop.
* ``bilevel``: the source-task weights (transfer ratios) learned by bi-level optimisation
  against the target's validation loss (:class:`moladapt.adapt.bilevel.BiLevelTaskWeighting`,
  Neumann hypergradient by default).

**The multi-task table.** Molecules are matched across datasets by RDKit canonical
(isomeric) SMILES. One table per target: the target's rows exactly as published (its
train / valid / test split), then the *extra* molecules that only source datasets measure
(target label NaN, used for training only). Column 0 is the target, one column per source
dataset, NaN where a dataset does not measure a molecule (several measurements of one
molecule in one source dataset are averaged; a classification molecule with conflicting
labels gets NaN).

* **Task types are not mixed**: the library's :class:`GraphTaskProblem` has one loss type for
  all columns (masked BCE or standardised MSE), so the sources of a target are the other
  TDC datasets *of the same task type* (12 classification sources for a classification
  target, 8 regression sources for a regression target).
* **No test leakage**: a molecule in the target's test set never carries a source label: the
  source labels of every row whose molecule is a target test molecule are set to NaN, and
  such molecules never become extra training rows (the number of dropped source labels is in
  each run's JSON as ``n_dropped_source_labels``). The validation molecules keep their
  source labels but are not training rows, so they are never trained on either.
* **Extra molecules are capped** (``--extra-ratio``, default 4): at most ``ratio × n_train``
  source-only molecules (a seeded uniform sample) join the target's training molecules, so a
  batch holds a fifth or more target-labelled molecules and a small target is not drowned
  by 30k source molecules (``--extra-ratio all`` keeps all of them).
* **Equal target exposure**: ``epochs`` means passes over each method's own training set:
  the multi-task methods take ``epochs × ceil(n_train_mt / batch_size)`` optimiser steps,
  i.e. each molecule (target ones included) is seen ``epochs`` times in expectation, as in
  single-task training.

Every finished run writes ``<raw>/<target>/<method>_seed<s>.json`` at once (atomically), so an
interrupted benchmark resumes where it stopped; a run whose stored settings differ from the
current ones is done again. The report (``tdc_transfer.md``) gives each dataset's TDC metric
(MAE, Spearman, ROC-AUC or AUPRC on the test set) as mean ± std over seeds per method, on how
many datasets the learned ratios beat single-task and uniform multi-task, paired tests
(Wilcoxon signed-rank and paired t; Holm-corrected) pooled over (dataset, seed) units and per
dataset, the heat map of the learned ratios (targets × sources, mean over seeds:
``tdc_transfer_ratios.png``) and the training time of the bi-level loop relative to plain
multi-task training.

Full run (CPU; see the report for the settings):

    MOLADAPT_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/tdc_transfer.py \\
        --seeds 0,1,2 --jobs 2 --threads 1

Smoke test (writes nothing under benchmarks/results):

    MOLADAPT_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/tdc_transfer.py \\
        --targets hia_hou,caco2_wang --sources hia_hou,bioavailability_ma,pgp_broccatelli,\\
    caco2_wang,half_life_obach,vdss_lombardo --seeds 0 --hidden-dim 16 --num-layers 2 \\
        --epochs 1 --jobs 1 --output /tmp/tdc_transfer_smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# the table, the leakage check and the three methods are the library's
from moladapt.transfer import TRANSFER_METHODS as METHODS
from moladapt.transfer import Corpus, load_corpus, resolve_names, run_transfer, tdc_names

if TYPE_CHECKING:
    import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
HIGHER_IS_BETTER = {"roc_auc": True, "auprc": True, "spearman": True, "mae": False}
SCALE_FLOOR = 0.1  # smallest per-dataset scale of the normalised score (see `normalised`)


# --- one run ---------------------------------------------------------------------------------
_CORPUS: Corpus | None = None


def _init_worker(corpus: Corpus, threads: int) -> None:
    global _CORPUS
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _CORPUS = corpus


def run_one(target: str, method: str, seed: int, settings: dict[str, Any],
            corpus: Corpus | None = None) -> dict[str, Any]:
    """One run with this process's corpus (set by ``_init_worker``) unless one is given."""
    corpus = corpus if corpus is not None else _CORPUS
    if corpus is None:
        raise RuntimeError("no corpus loaded")
    return run_transfer(target, method, seed, settings, corpus)


def run_and_write(target: str, method: str, seed: int, settings: dict[str, Any], path: str,
                  corpus: Corpus | None = None) -> dict[str, Any]:
    from moladapt.utils import write_json

    record = run_one(target, method, seed, settings, corpus)
    write_json(Path(path), record)
    return record


# --- report ----------------------------------------------------------------------------------
def _fmt(values: np.ndarray, digits: int = 3) -> str:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return "–"
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}"


def records_frame(records: list[dict[str, Any]]):
    import pandas as pd

    frame = pd.DataFrame([{k: r[k] for k in ("target", "method", "seed", "metric", "task_type",
                                              "train_seconds")}
                          | {"value": np.nan if r["test_value"] is None else float(r["test_value"])}
                          for r in records])
    sign = frame["metric"].map(lambda m: 1.0 if HIGHER_IS_BETTER[m] else -1.0)
    scale = frame.groupby("target")["value"].transform(lambda v: max(float(np.nanmean(np.abs(v))),
                                                                      SCALE_FLOOR))
    frame["score"] = 100.0 * sign * frame["value"] / scale  # higher is better; % of the scale
    return frame


def _p(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3g}"


def ratio_matrix(records: list[dict[str, Any]], names: list[str]):
    """Mean learned weight (over seeds) of each source for each target (NaN: not a source)."""
    import pandas as pd

    rows = [{"target": r["target"], "source": s, "weight": w}
            for r in records if r["method"] == "bilevel" for s, w in (r.get("weights") or {}).items()]
    if not rows:
        return pd.DataFrame()
    grid = pd.DataFrame(rows).pivot_table(index="target", columns="source", values="weight",
                                          aggfunc="mean")
    targets = [n for n in names if n in grid.index]
    return grid.reindex(index=targets, columns=[n for n in names if n in grid.columns])


def heatmap_png(grid, path: Path, weighting: str = "sigmoid") -> None:
    from matplotlib.figure import Figure

    values = grid.to_numpy(dtype=float)
    short = [str(c).removeprefix("tdc_") for c in grid.columns]
    fig = Figure(figsize=(2.5 + 0.45 * grid.shape[1], 1.8 + 0.35 * grid.shape[0]))
    ax = fig.add_subplot()
    vmax = 1.0 if weighting == "sigmoid" else float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto", vmin=0.0, vmax=vmax)
    ax.set_xticks(range(grid.shape[1]), short, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(grid.shape[0]), [str(i).removeprefix("tdc_") for i in grid.index], fontsize=7)
    ax.set_xlabel("source task")
    ax.set_ylabel("target")
    ax.set_facecolor("#dddddd")  # blank: not a source of that target (other task type / itself)
    for (i, j), v in np.ndenumerate(values):
        if math.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5,
                    color="black" if v > vmax / 2 else "white")
    fig.colorbar(im, ax=ax, label="learned transfer ratio (mean over seeds)")
    ax.set_title("Bi-level learned source-task weights (grey: not a source)", fontsize=9)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")


def per_dataset_tests(scores: pd.DataFrame) -> pd.DataFrame:
    """``bilevel`` against each other method on each dataset (``target``), a paired t-test
    over seeds, Holm-adjusted over exactly these rows: the family is what the report shows
    (the other methods' comparisons with each other are not shown, so not counted)."""
    from moladapt.evaluate.statistics import holm_bonferroni, paired_comparisons

    per = paired_comparisons(scores, "score", baseline=None, unit_cols=("seed",), by="target",
                             n_boot=200, test="ttest")
    per = per[per["method"] == "bilevel"].copy()
    per["p_ttest_holm"] = holm_bonferroni(per["p_ttest"].astype(float))
    per["significant"] = per["p_ttest_holm"] < 0.05
    return per


def report(records: list[dict[str, Any]], names: list[str], settings: dict[str, Any],
           command: str, png_name: str | None) -> str:
    import pandas as pd

    from moladapt.evaluate.statistics import paired_comparisons

    frame = records_frame(records)
    methods = [m for m in METHODS if m in set(frame["method"])]
    targets = [n for n in names if n in set(frame["target"])]
    lines = [
        "# Transfer between TDC ADMET properties: single-task vs uniform multi-task vs "
        "bi-level learned transfer ratios (Lee et al. 2024 style)", "",
        f"Date {dt.date.today()}, {platform.machine()} with {os.cpu_count()} cores, "
        f"{settings['threads']} thread(s) per run. {settings['encoder'].upper()} "
        f"{settings['num_layers']}×{settings['hidden_dim']} (dropout {settings['dropout']}), "
        f"`{settings['featurizer']}` features, {settings['epochs']} epochs (passes over each "
        f"method's training set), batch {settings['batch_size']}, Adam lr {settings['lr']}; "
        f"multi-task: sources = the other TDC datasets of the target's task type, source-only "
        f"molecules capped at {settings['extra_ratio'] if settings['extra_ratio'] is not None else '∞'}"
        f" × the target's training molecules, target test molecules never carry a source "
        f"label; bi-level: {settings['weighting']} weights (init "
        f"{settings['init_weight'] if settings['init_weight'] is not None else 'default'}), "
        f"{settings['hypergradient']} hypergradient ({settings['neumann_terms']} terms), "
        f"{settings['inner_steps']} inner steps per weight update, outer lr "
        f"{settings['outer_lr']}, validation batch {settings['valid_batch_size']}. Model "
        "selection on the target's validation metric (single-task: per epoch; multi-task: per "
        "weight update).", "",
        f"Command: `{command}`", "",
        "## Test metric per dataset (TDC metric; mean ± std over seeds)", "",
        "| target | metric | n train | sources | " + " | ".join(methods) + " | bilevel better than |",
        "|---|---|---|---|" + "---|" * (len(methods) + 1),
    ]
    wins = {"single_task": 0, "uniform_mt": 0}
    n_both = {"single_task": 0, "uniform_mt": 0}
    for t in targets:
        sub = frame[frame["target"] == t]
        metric = sub["metric"].iloc[0]
        rec = next(r for r in records if r["target"] == t)
        arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
        means = {m: sub.loc[sub["method"] == m, "value"].mean() for m in methods}
        beats = []
        if "bilevel" in means:
            for base in ("single_task", "uniform_mt"):
                if base in means and np.isfinite(means[base]) and np.isfinite(means["bilevel"]):
                    n_both[base] += 1
                    s = 1 if HIGHER_IS_BETTER[metric] else -1
                    if s * (means["bilevel"] - means[base]) > 0:
                        wins[base] += 1
                        beats.append(base)
        cells = [_fmt(sub.loc[sub["method"] == m, "value"].to_numpy(dtype=float)) for m in methods]
        lines.append(f"| {t.removeprefix('tdc_')} | {metric} {arrow} | {rec['n_train']} | "
                     f"{len(rec['sources'])} | " + " | ".join(cells) + f" | {', '.join(beats) or '–'} |")
    lines += [""]
    if "bilevel" in methods:
        lines += [f"Learned ratios beat single-task (mean over seeds) on **{wins['single_task']} of "
                  f"{n_both['single_task']}** datasets and uniform multi-task on "
                  f"**{wins['uniform_mt']} of {n_both['uniform_mt']}**.", ""]
    if len(methods) > 1:
        order = [m for m in ("bilevel", "uniform_mt", "single_task") if m in methods]
        sub = frame[frame["method"].isin(order)].copy()
        sub["method"] = pd.Categorical(sub["method"], categories=order, ordered=True)
        sub = sub.sort_values(["method", "target", "seed"])
        sub["method"] = sub["method"].astype(str)
        comp = paired_comparisons(sub, "score", baseline=None, unit_cols=("target", "seed"),
                                  n_boot=2000)
        lines += [
            "## Paired tests over (dataset, seed) units", "",
            "Score: the TDC metric signed so that higher is better, divided by the dataset's "
            f"mean |metric| over all runs (floor {SCALE_FLOOR}) and × 100, so a difference is a "
            "relative difference in % of the dataset's typical metric value. Wilcoxon "
            "signed-rank and paired t-test, each Holm-corrected across the rows of this table; "
            "`*`: Wilcoxon (Holm) p < 0.05.", "",
            "| method | vs | pairs | mean Δ (%) | 95% CI | p Wilcoxon (Holm) | p t (Holm) | "
            "direction | note |", "|---|---|---|---|---|---|---|---|---|"]
        for r in comp.itertuples():
            ci = "–" if not np.isfinite(r.ci_low) else f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
            lines.append(f"| {r.method} | {r.baseline} | {r.n_pairs} | {r.mean_diff:+.2f} | {ci} "
                         f"| {_p(r.p_wilcoxon_holm)} | {_p(r.p_ttest_holm)} | {r.direction}"
                         f"{' *' if r.significant else ''} | {r.note} |")
        per = per_dataset_tests(sub)
        lines += ["", "Per dataset (units: seeds; paired t-test, Holm across the datasets × "
                  "the two comparisons of the learned ratios): datasets where they are significantly "
                  "(p_Holm < 0.05) better / worse —"]
        for base in ("single_task", "uniform_mt"):
            b = per[per["baseline"] == base]
            if len(b):
                better = b[(b["significant"]) & (b["direction"] == "better")]["target"]
                worse = b[(b["significant"]) & (b["direction"] == "worse")]["target"]
                tested = int(np.isfinite(b["p_ttest"].astype(float)).sum())
                lines.append(f"* vs {base}: {len(better)} better, {len(worse)} worse of {tested} "
                             f"tested" + (f" (better: {', '.join(better)})" if len(better) else "")
                             + (f" (worse: {', '.join(worse)})" if len(worse) else ""))
        lines.append("")
    # time
    lines += ["## Training time", ""]
    tsec = frame.groupby("method")["train_seconds"]
    lines += ["| method | mean s per run | total CPU-h (× threads) |", "|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | {tsec.mean()[m]:.1f} | "
                     f"{tsec.sum()[m] * settings['threads'] / 3600:.2f} |")
    if {"bilevel", "uniform_mt"} <= set(methods):
        wide = frame.pivot_table(index=["target", "seed"], columns="method", values="train_seconds")
        ratio = (wide["bilevel"] / wide["uniform_mt"]).dropna()
        if len(ratio):
            lines += ["", f"Bi-level overhead (training time of `bilevel` / `uniform_mt`, same "
                      f"number of optimiser steps, same model selection): median "
                      f"**{ratio.median():.2f}×** (range {ratio.min():.2f}–{ratio.max():.2f}×, "
                      f"{len(ratio)} (dataset, seed) pairs)."]
    lines.append("")
    if png_name:
        lines += ["## Learned transfer ratios", "",
                  f"![learned ratios]({png_name})", "",
                  "Rows: targets; columns: sources; the final learned weight of each source "
                  "task, mean over seeds (grey: not a source — the other task type, or the "
                  "target itself).", ""]
    leak = sum(r["n_dropped_source_labels"] for r in records if r["method"] != "single_task")
    lines += [f"Source labels dropped because the molecule is in the target's test set: "
              f"{leak} over all multi-task runs.", ""]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------
def parse_ratio(text: str) -> float | None:
    if text.strip().lower() in ("all", "inf", "none"):
        return None
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("--extra-ratio must be >= 0 or 'all'")
    return value


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=None, help="comma-separated TDC names (with or "
                        "without tdc_; default: all 22)")
    parser.add_argument("--sources", default=None, help="restrict the source datasets (default: "
                        "all; only those of the target's task type are used)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--encoder", default="gin")
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--featurizer", default="basic")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--extra-ratio", type=parse_ratio, default=4.0,
                        help="cap of source-only molecules, × the target's training molecules "
                        "('all': no cap)")
    parser.add_argument("--inner-steps", type=int, default=10)
    parser.add_argument("--outer-lr", type=float, default=0.1)
    parser.add_argument("--weighting", default="sigmoid", choices=("sigmoid", "softmax"))
    parser.add_argument("--init-weight", type=float, default=None)
    parser.add_argument("--hypergradient", default="neumann",
                        choices=("neumann", "unrolled", "exact"))
    parser.add_argument("--neumann-terms", type=int, default=5)
    parser.add_argument("--valid-batch-size", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--output", default=None, help="write raw runs, table and heat map here "
                        "instead of benchmarks/results (smoke tests)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    args = parser.parse_args(argv)

    names = tdc_names()
    try:
        targets = resolve_names(args.targets, names)
        sources = resolve_names(args.sources, names)
    except ValueError as exc:
        parser.error(str(exc))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.output:
        root = Path(args.output)
        raw = root / "raw" / "tdc_transfer"
    else:
        root, raw = RESULTS, RESULTS / "raw" / "tdc_transfer"
    table_path, png_path = root / "tdc_transfer.md", root / "tdc_transfer_ratios.png"
    raw.mkdir(parents=True, exist_ok=True)
    settings = {"encoder": args.encoder, "hidden_dim": args.hidden_dim,
                "num_layers": args.num_layers, "dropout": args.dropout,
                "featurizer": args.featurizer, "epochs": args.epochs,
                "batch_size": args.batch_size, "lr": args.lr, "extra_ratio": args.extra_ratio,
                "inner_steps": args.inner_steps, "outer_lr": args.outer_lr,
                "weighting": args.weighting, "init_weight": args.init_weight,
                "hypergradient": args.hypergradient, "neumann_terms": args.neumann_terms,
                "valid_batch_size": args.valid_batch_size, "threads": args.threads,
                "sources": sources}

    def done(path: Path) -> bool:
        if not path.exists():
            return False
        try:
            stored = dict(json.loads(path.read_text()).get("settings") or {})
        except json.JSONDecodeError:
            return False
        stored.pop("threads", None)  # the thread count changes timings, not results
        return stored == {k: v for k, v in settings.items() if k != "threads"}

    todo = [(t, m, s) for t in targets for s in seeds for m in methods
            if not done(raw / t.removeprefix("tdc_") / f"{m}_seed{s}.json")]
    if todo and not args.report_only:
        involved = sorted({*targets, *sources}, key=names.index)
        t0 = time.perf_counter()
        corpus = load_corpus(involved)
        corpus.graphs(args.featurizer, n_jobs=max(1, args.jobs))  # warm the featurization cache
        print(f"{len(corpus.unique)} molecules from {len(involved)} datasets "
              f"({time.perf_counter() - t0:.0f} s); {len(todo)} runs to do, {args.jobs} "
              f"process(es) × {args.threads} thread(s)", flush=True)
        jobs = [(t, m, s, settings, str(raw / t.removeprefix("tdc_") / f"{m}_seed{s}.json"))
                for t, m, s in todo]

        def show(t, m, s, r):
            print(f"{t} {m} seed {s}: test {r['metric']} {r['test_value']} "
                  f"({r['train_seconds']:.1f} s)", flush=True)

        if args.jobs <= 1:
            os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
            for t, m, s, st, path in jobs:
                show(t, m, s, run_and_write(t, m, s, st, path, corpus))
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn"),
                                     initializer=_init_worker,
                                     initargs=(corpus, args.threads)) as pool:
                futures = {pool.submit(run_and_write, *job): job[:3] for job in jobs}
                for fut in as_completed(futures):
                    t, m, s = futures[fut]
                    try:
                        show(t, m, s, fut.result())
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        print(f"{t} {m} seed {s}: FAILED {exc!r}", flush=True)
    records = []
    for t in targets:
        for s in seeds:
            for m in methods:
                path = raw / t.removeprefix("tdc_") / f"{m}_seed{s}.json"
                if done(path):
                    records.append(json.loads(path.read_text()))
    if not records:
        print("no finished runs")
        return ""
    grid = ratio_matrix(records, names)
    png = None
    if not grid.empty:
        heatmap_png(grid, png_path, args.weighting)
        png = png_path.name
    command = "python benchmarks/tdc_transfer.py " + " ".join(  # the command that runs them
        a for a in (argv if argv is not None else __import__("sys").argv[1:]) if a != "--report-only")
    md = report(records, names, settings, command.strip(), png)
    from moladapt.utils import atomic_write_text

    atomic_write_text(table_path, md + "\n")
    print(md)
    return md


if __name__ == "__main__":
    main()
