"""SGNN-EBM against multi-task baselines on dense multi-task datasets (Liu et al., AISTATS 2022).

Every method of :data:`moladapt.multitask.MULTITASK_METHODS` (single-task, multi-task,
uncertainty, gradnorm, sgnn, sgnn-ebm) on each dataset × seed, with the same GIN, the same
filtered random split per seed (every task has both classes in train/valid/test), model
selection on the mean validation ROC-AUC. Datasets (defaults; change with ``--dense NAME=N``):

* ``toxcast``: ToxCast Dense-50, task graph from the assay names (``toxcast-names``);
* ``fsmol``: FS-Mol's training assays pivoted into molecules × assays, Dense-50 with the
  molecules measured on >= 3 of its tasks (``--min-tasks fsmol=3``);
* ``tox21``, ``sider``: the full benchmarks (Dense-N not needed);

the last three with the label co-activity graph of the training rows (phi correlation,
|phi| >= 0.3; FS-Mol 0.5 — see GRAPH_THRESHOLD). Each finished run
goes to ``<raw-dir>/<dataset>/<method>/seed<k>.json`` at once, so an interrupted benchmark
resumes where it stopped; then the report (``benchmarks/results/sgnn_ebm.md``) is rebuilt
from every raw file: mean ± std test ROC-AUC per method × dataset, paired differences
against multi-task (Wilcoxon signed-rank and paired t-test over seeds, Holm-corrected),
graph statistics per dataset, and SGNN-EBM's training/inference time relative to multi-task.

    MOLADAPT_DATA_DIR=../shared/data python benchmarks/sgnn_ebm.py --seeds 0,1,2,3,4 --jobs 2

A smoke test (never into benchmarks/results):

    python benchmarks/sgnn_ebm.py --datasets tox21 --methods multi-task,sgnn-ebm --seeds 0 \\
        --epochs 1 --hidden-dim 32 --num-layers 2 --max-molecules 400 --dense tox21=15 \\
        --raw-dir /tmp/sgnn/raw --report /tmp/sgnn/sgnn_ebm.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ALL_METHODS = ("single-task", "multi-task", "uncertainty", "gradnorm", "sgnn", "sgnn-ebm")
# dataset → (loader name, default Dense-N, task graph)
DATASETS = {
    "toxcast": ("toxcast", 50, "toxcast-names"),
    "fsmol": ("fsmol-train", 50, "coactivity"),
    "tox21": ("tox21", None, "coactivity"),
    "sider": ("sider", None, "coactivity"),
}
MIN_TASKS_PER_MOLECULE = {"fsmol": 3}  # the rest: 1
# Co-activity graphs link tasks whose labels correlate (|phi| >= threshold) on the training
# rows. Jaccard of positives is meaningless for balanced tasks (FS-Mol's are ~50% positive:
# two unrelated ones already score ~0.33; SIDER's Jaccard graph has density 0.58). At 0.3,
# FS-Mol's 418 tasks get 12.6k edges (mean degree 60) and the EBM's pairwise term over them
# costs minutes per epoch; at 0.5 they get 1.7k (mean degree 8).
GRAPH_METHOD = "correlation"
GRAPH_THRESHOLD = {"fsmol": 0.5}  # the rest: 0.3
BASELINE = "multi-task"


def load_table(dataset: str, dense_n: int | None, max_molecules: int | None):
    """The dataset as a LabeledData, cut to its first ``max_molecules`` molecules (Dense-N is
    applied later by run_multitask, after the cut)."""
    import dataclasses

    import numpy as np

    from moladapt.data.sources import load_dataset
    from moladapt.multitask import FSMOL_DATASETS, fsmol_labeled_data

    name = DATASETS[dataset][0]
    if name in FSMOL_DATASETS:
        data = fsmol_labeled_data(name.split("-", 1)[1], min_per_class=dense_n or 1)
    else:
        data = load_dataset(name)
    data = dataclasses.replace(data, name=dataset)
    if max_molecules is not None and len(data) > max_molecules:
        keep = np.arange(max_molecules)
        data = dataclasses.replace(
            data, smiles=[data.smiles[i] for i in keep], labels=data.labels[keep],
            rows=data.rows[keep], predefined_split=None,
            metadata={**data.metadata, "all_task_names": list(data.task_names)})
    return data


def raw_path(raw_dir: Path, dataset: str, method: str, seed: int) -> Path:
    return raw_dir / dataset / method / f"seed{seed}.json"


# the job fields that decide a run's result, under the names its raw record stores them;
# a stored run is reused or reported only if they all match what is asked now
IDENTITY = {"dense_n": "dense_n", "min_tasks": "min_tasks_per_molecule", "task_graph": "task_graph",
            "graph_method": "graph_method", "graph_threshold": "graph_threshold",
            "max_molecules": "max_molecules", "options": "options"}


def run_options(job: dict) -> dict:
    options = dict(job["options"])
    if job["method"] == "gradnorm":
        options["params"] = {"grad_norm_of": job["gradnorm_of"]}
    return options


def identity_differences(job: dict, record: dict) -> list[str]:
    """The settings in which a stored record differs from ``job`` ("name: stored → asked").
    Unlike :func:`moladapt.resume.differences`, a setting only one side has is a difference:
    a single-task run on a task sample must not stand in for one on every task."""
    def settings(values: dict, options: dict | None) -> dict:
        return {**{name: values.get(name) for name in IDENTITY.values() if name != "options"},
                **(options or {})}  # the options' names never clash with the others

    asked = settings({IDENTITY[k]: job[k] for k in IDENTITY}, run_options(job))
    stored = settings(record, record.get("options"))
    return [f"{name}: {stored.get(name)!r} → {asked.get(name)!r}"
            for name in sorted(set(asked) | set(stored)) if stored.get(name) != asked.get(name)]


def run_one(job: dict) -> dict:
    """One (dataset, method, seed) run → its record, written to its raw JSON file."""
    os.environ.setdefault("OMP_NUM_THREADS", str(job["threads"]))
    import torch

    torch.set_num_threads(job["threads"])
    from moladapt.multitask import run_multitask
    from moladapt.utils import write_json

    data = load_table(job["dataset"], job["dense_n"], job["max_molecules"])
    options = run_options(job)
    t0 = time.perf_counter()
    result = run_multitask(data, job["method"], job["task_graph"], dense_n=job["dense_n"],
                           min_tasks_per_molecule=job["min_tasks"], seed=job["seed"],
                           graph_method=job["graph_method"], graph_threshold=job["graph_threshold"],
                           num_threads=job["threads"], **options)
    record = result.to_dict()
    record["table"] = record.pop("dataset")  # e.g. "toxcast-dense50"
    record.update(dataset=job["dataset"], method=job["method"], seed=job["seed"],
                  dense_n=job["dense_n"], min_tasks_per_molecule=job["min_tasks"],
                  task_graph=job["task_graph"], graph_method=job["graph_method"],
                  graph_threshold=job["graph_threshold"],
                  max_molecules=job["max_molecules"], options=options,
                  wall_seconds=time.perf_counter() - t0, threads=job["threads"])
    record.pop("test", None)  # the per-task table is in per_task_test_roc_auc; keep files small
    record.pop("valid", None)
    record["valid_roc_auc"] = float(result.valid.mean.get("roc_auc", float("nan")))
    record["test_auprc"] = float(result.test.mean.get("auprc", float("nan")))
    record["n_tasks_scored"] = int(result.test.n_tasks_scored)
    write_json(Path(job["path"]), record)
    return record


# --- report ------------------------------------------------------------------------------------
def load_records(raw_dir: Path):
    import pandas as pd

    rows = []
    for path in sorted(raw_dir.glob("*/*/seed*.json")):
        rec = json.loads(path.read_text())
        flat = {k: v for k, v in rec.items() if not isinstance(v, (dict, list))}
        flat.update({f"graph.{k}": v for k, v in rec.get("graph", {}).items()})
        flat["per_task"] = rec.get("per_task_test_roc_auc", {})
        sample = (rec.get("options", {}).get("params") or {}).get("task_sample")
        flat["task_sample"] = sample
        flat["tasks_trained"] = tuple(rec.get("tasks_trained", ())) if sample else ()
        rows.append(flat)
    return pd.DataFrame(rows)


def _pm(values) -> str:
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return "–"
    sd = v.std(ddof=1) if len(v) > 1 else float("nan")
    return f"{100 * v.mean():.1f} ± {100 * sd:.1f}" if len(v) > 1 else f"{100 * v.mean():.1f}"


def _p(value) -> str:
    return "–" if value != value else f"{value:.3g}"


def _ci(r) -> str:
    return "–" if r.ci_low != r.ci_low else f"[{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"


def _tests(r) -> str:
    """The Wilcoxon and t-test cells of a paired_comparisons row: p (Holm p)."""
    return (f"{_p(r.p_wilcoxon)} ({_p(r.p_wilcoxon_holm)}) | {_p(r.p_ttest)} "
            f"({_p(r.p_ttest_holm)})")


def _task_sample_section(frame, sampled_frame) -> list[str]:
    """Every method on the tasks a sampled single-task run trained (from per-task scores)."""
    import numpy as np
    import pandas as pd

    from moladapt.evaluate.statistics import paired_comparisons

    if sampled_frame.empty:
        return []
    rows = []
    sizes = {}
    for d, runs in sampled_frame.groupby("dataset"):
        task_sets = set(runs["tasks_trained"])
        if len(task_sets) != 1:
            raise ValueError(f"{d}: single-task runs trained different task samples; rerun them")
        tasks = sorted(task_sets.pop())
        sizes[d] = len(tasks)
        for r in pd.concat([frame[frame["dataset"] == d], runs]).itertuples(index=False):
            values = [r.per_task.get(t) for t in tasks]
            values = [v for v in values if v is not None and v == v]
            rows.append({"dataset": d, "method": r.method, "seed": r.seed,
                         "test_roc_auc": float(np.mean(values)) if values else float("nan")})
    sample = pd.DataFrame(rows)
    methods = [m for m in ALL_METHODS if m in set(sample["method"])]
    datasets = list(sizes)
    lines = ["", "## Single-task on a task sample (every method scored on the same tasks)", "",
             "One model per task is beyond this budget on the datasets with hundreds of tasks, so "
             "single-task trained a seeded random sample of their tasks (the same sample for every "
             "seed; every other method trained on all tasks as above). Cells: mean over the sampled "
             "tasks of the per-task test ROC-AUC (×100), mean ± std over seeds.", "",
             "| method | " + " | ".join(f"{d} ({sizes[d]} tasks)" for d in datasets) + " |",
             "|---|" + "---|" * len(datasets)]
    for m in methods:
        cells = []
        for d in datasets:
            sub = sample[(sample["method"] == m) & (sample["dataset"] == d)]
            cells.append(f"{_pm(sub['test_roc_auc'])} (n={len(sub)})" if len(sub) else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if BASELINE in methods and len(methods) > 1:
        comp = paired_comparisons(sample, "test_roc_auc", baseline=BASELINE, unit_cols=["seed"],
                                  by="dataset", n_boot=2000)
        lines += ["", f"Paired against {BASELINE} on the sampled tasks (units = seeds; Holm over "
                  "the rows of this table):", "",
                  "| dataset | method | pairs | Δ ROC-AUC | 95% CI | p Wilcoxon (Holm) | "
                  "p t-test (Holm) | note |", "|---|---|---|---|---|---|---|---|"]
        for r in comp.itertuples(index=False):
            lines.append(f"| {r.dataset} | {r.method} | {r.n_pairs} | {100 * r.mean_diff:+.2f} | "
                         f"{_ci(r)} | {_tests(r)} | {r.note} |")
    return lines


def report(frame, header: list[str]) -> str:
    import pandas as pd

    from moladapt.evaluate.statistics import paired_comparisons

    datasets = [d for d in [*DATASETS, *sorted(set(frame["dataset"]) - set(DATASETS))]
                if d in set(frame["dataset"])]
    methods = [m for m in ALL_METHODS if m in set(frame["method"])]
    lines = [*header, ""]
    # single-task runs on a task sample score other tasks than the rest: they are compared in
    # a table of their own (every method on the sampled tasks), not in the all-task tables
    sampled_runs = frame["task_sample"].notna() if "task_sample" in frame else pd.Series(False, index=frame.index)
    sampled_frame = frame[sampled_runs]
    frame = frame[~sampled_runs]

    lines += ["## Test ROC-AUC (×100, mean ± std over seeds)", "",
              "| method | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for m in methods:
        cells = []
        for d in datasets:
            sub = frame[(frame["method"] == m) & (frame["dataset"] == d)]
            on_sample = sampled_frame[(sampled_frame["method"] == m) & (sampled_frame["dataset"] == d)]
            cells.append(f"{_pm(sub['test_roc_auc'])} (n={len(sub)})" if len(sub) else
                         f"task sample: see below (n={len(on_sample)})" if len(on_sample) else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += _task_sample_section(frame, sampled_frame)

    if BASELINE in methods and len(methods) > 1:
        comp = paired_comparisons(frame, "test_roc_auc", baseline=BASELINE, unit_cols=["seed"],
                                  by="dataset", n_boot=2000)
        lines += ["", f"## Paired differences against {BASELINE} (per dataset, units = seeds)", "",
                  "Mean difference of test ROC-AUC (×100, method − multi-task) with a 95% "
                  "bootstrap CI; two-sided Wilcoxon signed-rank and paired t-test p-values, each "
                  "Holm-corrected over all rows of this table. With 5 seeds the exact Wilcoxon "
                  "test cannot go below p = 0.0625, so read the t-test too.", "",
                  "| dataset | method | pairs | Δ ROC-AUC | 95% CI | p Wilcoxon (Holm) | "
                  "p t-test (Holm) | note |", "|---|---|---|---|---|---|---|---|"]
        on_sample = set(zip(sampled_frame["dataset"], sampled_frame["method"], strict=True))
        for r in comp.itertuples(index=False):
            if r.n_pairs == 0 and (r.dataset, r.method) in on_sample:
                continue  # compared on its task sample above
            lines.append(f"| {r.dataset} | {r.method} | {r.n_pairs} | {100 * r.mean_diff:+.2f} | "
                         f"{_ci(r)} | {_tests(r)} | {r.note} |")
        pooled = frame.assign(unit=frame["dataset"] + "/" + frame["seed"].astype(str))
        if pooled["dataset"].nunique() > 1:
            comp = paired_comparisons(pooled, "test_roc_auc", baseline=BASELINE,
                                      unit_cols=["unit"], n_boot=2000)
            lines += ["", "Pooled over datasets (units = dataset × seed):", "",
                      "| method | pairs | Δ ROC-AUC | p Wilcoxon (Holm) | p t-test (Holm) |",
                      "|---|---|---|---|---|"]
            for r in comp.itertuples(index=False):
                lines.append(f"| {r.method} | {r.n_pairs} | {100 * r.mean_diff:+.2f} | {_tests(r)} |")

    if {"sgnn", "sgnn-ebm"} <= set(methods):
        pair = frame[frame["method"].isin(["sgnn", "sgnn-ebm"])]
        comp = paired_comparisons(pair, "test_roc_auc", baseline="sgnn", unit_cols=["seed"],
                                  by="dataset", n_boot=2000)
        lines += ["", "## The EBM's own effect: SGNN-EBM against SGNN (the paper's 0.805 vs 0.797)", "",
                  "Same seeds and settings. The EBM stage starts from the SGNN and keeps that start "
                  "when no NCE epoch beats it on validation; 'EBM chosen' counts the seeds where an "
                  "EBM epoch was kept (the run's `ebm_best_epoch` ≥ 0). Where it was not, the SGNN-EBM "
                  "model is its SGNN stage, the same training as the `sgnn` run, so Δ = 0 there "
                  "when both were run by the same code (the Wilcoxon test drops such zeros). Holm "
                  "over the datasets.", "",
                  "| dataset | pairs | Δ ROC-AUC | 95% CI | p Wilcoxon (Holm) | p t-test (Holm) | "
                  "EBM chosen | note |", "|---|---|---|---|---|---|---|---|"]
        for r in comp.itertuples(index=False):
            ebm = pair[(pair["dataset"] == r.dataset) & (pair["method"] == "sgnn-ebm")]
            kept = pd.to_numeric(ebm["ebm_best_epoch"] if "ebm_best_epoch" in ebm
                                 else pd.Series(dtype=float), errors="coerce")
            chosen = f"{int((kept >= 0).sum())}/{int(kept.notna().sum())}"
            lines.append(f"| {r.dataset} | {r.n_pairs} | {100 * r.mean_diff:+.2f} | {_ci(r)} | "
                         f"{_tests(r)} | {chosen} | {r.note} |")

    lines += ["", "## Datasets and task graphs", "",
              "Graph statistics are means over the seeds' splits (the co-activity graph is "
              "built on each seed's training rows).", "",
              "| dataset | Dense-N | task graph | molecules | tasks | label density | edges | "
              "mean degree | max degree | isolated | components | density |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    every_run = pd.concat([frame, sampled_frame])  # graph statistics hold for sampled runs too
    for d in datasets:
        sub = every_run[every_run["dataset"] == d]
        first = sub.iloc[0]
        dense = "–" if pd.isna(first.get("dense_n")) else int(first["dense_n"])

        def g(col, fmt="{:.1f}", sub=sub):
            return fmt.format(sub[col].mean()) if col in sub else "–"

        lines.append(f"| {d} | {dense} | {first['task_graph']} | {int(first['n_molecules'])} | "
                     f"{int(first['n_tasks'])} | {first['label_density']:.3f} | {g('graph.edges')} | "
                     f"{g('graph.mean_degree', '{:.2f}')} | {g('graph.max_degree')} | "
                     f"{g('graph.isolated_nodes')} | {g('graph.components')} | "
                     f"{g('graph.density', '{:.3f}')} |")

    timed = [m for m in ("sgnn", "sgnn-ebm") if m in methods]
    if BASELINE in methods and timed:
        lines += ["", f"## Time relative to {BASELINE}", "",
                  "Training = wall time of fit (all epochs, per-epoch validation included; "
                  "SGNN-EBM: SGNN stage + EBM stage); inference = predicting the test part "
                  "(SGNN-EBM: mean-field marginals). Ratio = mean over seeds of the per-seed "
                  f"ratio to {BASELINE}; seconds are means.", "",
                  f"| dataset | method | train s | {BASELINE} train s | train × | inference s | "
                  f"{BASELINE} inference s | inference × |", "|---|---|---|---|---|---|---|---|"]
        cols = ["dataset", "seed", "train_seconds", "inference_seconds"]
        base = frame.loc[frame["method"] == BASELINE, cols]
        for d in datasets:
            for m in timed:
                sub = frame.loc[(frame["method"] == m) & (frame["dataset"] == d), cols]
                both = sub.merge(base, on=["dataset", "seed"], suffixes=("", "_base"))
                if not len(both):
                    continue
                tr = (both["train_seconds"] / both["train_seconds_base"]).mean()
                inf = (both["inference_seconds"] / both["inference_seconds_base"]).mean()
                lines.append(f"| {d} | {m} | {both['train_seconds'].mean():.1f} | "
                             f"{both['train_seconds_base'].mean():.1f} | {tr:.2f} | "
                             f"{both['inference_seconds'].mean():.3f} | "
                             f"{both['inference_seconds_base'].mean():.3f} | {inf:.2f} |")
    counts = frame.groupby(["dataset", "method"]).size()
    if len(counts) and counts.nunique() > 1:
        lines += ["", f"Unequal numbers of runs per cell (min {counts.min()}, max {counts.max()}): "
                  "the benchmark is incomplete; paired tests use only matched seeds."]
    return "\n".join(lines) + "\n"


def _threads(frame, asked: int) -> str:
    """The thread counts the runs record (older records lack it: then the count asked)."""
    recorded = frame["threads"].dropna().astype(int) if "threads" in frame else []
    counts = sorted(set(recorded)) if len(recorded) == len(frame) else []
    return "/".join(map(str, counts)) if counts else str(asked)


def _graph_label(source: str, method: str, threshold: float) -> str:
    return f"{source}, |phi| >= {threshold:g}" if source == "coactivity" and method == "correlation" \
        else (f"{source}, Jaccard >= {threshold:g}" if source == "coactivity" else source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(ALL_METHODS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--dense", action="append", default=[],
                        help="NAME=N: Dense-N for a dataset (NAME=none: no Dense-N cut); repeatable.")
    parser.add_argument("--graph-method", default=GRAPH_METHOD, choices=("correlation", "jaccard"),
                        help="co-activity measure")
    parser.add_argument("--graph-threshold", action="append", default=[],
                        help="NAME=X: co-activity threshold for a dataset (default fsmol=0.5, "
                        "others 0.3); repeatable.")
    parser.add_argument("--min-tasks", action="append", default=[],
                        help="NAME=M: with Dense-N, keep the molecules measured on >= M of the "
                        "kept tasks (default fsmol=3, others 1); repeatable.")
    parser.add_argument("--task-graph", action="append", default=[],
                        help="NAME=SOURCE: task graph for a dataset (coactivity, toxcast-names, "
                        "none or an edge-list file); repeatable.")
    parser.add_argument("--single-task-sample", action="append", default=[],
                        help="NAME=N: single-task on dataset NAME trains (and scores) a seeded "
                        "random sample of N tasks (the same for every seed); the report compares "
                        "every method on those tasks. Repeatable.")
    parser.add_argument("--max-molecules", type=int, default=None,
                        help="Use only each dataset's first N molecules (smoke tests).")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--ebm-epochs", type=int, default=None, help="default: epochs // 2")
    parser.add_argument("--hidden-dim", type=int, default=300)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gradnorm-of", default="weight", choices=("weight", "representation"),
                        help="GradNorm's gradient norms: on the last shared weight (the paper; "
                        "one backward per task) or on the graph embedding (one batched backward)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel single-process runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--raw-dir", type=Path, default=RESULTS / "raw" / "sgnn_ebm")
    parser.add_argument("--report", type=Path, default=RESULTS / "sgnn_ebm.md")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from raw files")
    parser.add_argument("--note", action="append", default=[],
                        help="a paragraph for the report's header (e.g. what was left out and why)")
    args = parser.parse_args(argv)

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for d in datasets:
        if d not in DATASETS:
            parser.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    for m in methods:
        if m not in ALL_METHODS:
            parser.error(f"unknown method {m!r}; choose from {', '.join(ALL_METHODS)}")
    dense = {d: DATASETS[d][1] for d in DATASETS}
    graph = {d: DATASETS[d][2] for d in DATASETS}
    for item in args.dense:
        name, _, value = item.partition("=")
        dense[name] = None if value.lower() == "none" else int(value)
    min_tasks = {d: MIN_TASKS_PER_MOLECULE.get(d, 1) for d in DATASETS}
    for item in args.min_tasks:
        name, _, value = item.partition("=")
        min_tasks[name] = int(value)
    threshold = {d: GRAPH_THRESHOLD.get(d, 0.3) for d in DATASETS}
    for item in args.graph_threshold:
        name, _, value = item.partition("=")
        threshold[name] = float(value)
    for item in args.task_graph:
        name, _, value = item.partition("=")
        graph[name] = value
    st_sample: dict[str, int] = {}
    for item in args.single_task_sample:
        name, _, value = item.partition("=")
        if name not in DATASETS or not value.isdigit() or int(value) < 1:
            parser.error(f"--single-task-sample {item!r}: expected NAME=N with NAME one of {', '.join(DATASETS)}")
        st_sample[name] = int(value)
    options = {"epochs": args.epochs, "ebm_epochs": args.ebm_epochs, "hidden_dim": args.hidden_dim,
               "num_layers": args.num_layers, "dropout": args.dropout,
               "batch_size": args.batch_size, "lr": args.lr}

    jobs, mismatched = [], []
    for d in datasets:
        for seed in seeds:
            for m in methods:
                path = raw_path(args.raw_dir, d, m, seed)
                job = {"dataset": d, "method": m, "seed": seed, "dense_n": dense[d],
                       "min_tasks": min_tasks[d], "graph_method": args.graph_method,
                       "graph_threshold": threshold[d],
                       "task_graph": graph[d], "max_molecules": args.max_molecules,
                       "options": ({**options, "params": {"task_sample": st_sample[d]}}
                                   if m == "single-task" and d in st_sample else options),
                       "gradnorm_of": args.gradnorm_of,
                       "threads": args.threads, "path": str(path)}
                if path.exists():
                    differences = identity_differences(job, json.loads(path.read_text()))
                    if differences:
                        mismatched.append(f"{path}: {'; '.join(differences)}")
                elif not args.report_only:
                    jobs.append(job)
    if mismatched:
        # never pool runs of other settings into a row, nor label them with this command's setup
        print(f"{len(mismatched)} stored run(s) differ from the settings asked (stored → asked); "
              "pass the settings they were run with, or another --raw-dir:\n  "
              + "\n  ".join(mismatched[:10]) + ("\n  ..." if len(mismatched) > 10 else ""),
              file=sys.stderr)
        return 2
    print(f"{len(jobs)} runs to do ({len(datasets)} datasets × {len(methods)} methods × "
          f"{len(seeds)} seeds, finished ones skipped)", flush=True)
    failed = 0

    def done(rec: dict) -> None:
        print(f"  {rec['dataset']:>8} {rec['method']:>12} seed {rec['seed']}: test ROC-AUC "
              f"{rec['test_roc_auc']:.4f}  train {rec['train_seconds']:.1f}s", flush=True)

    if args.jobs > 1 and len(jobs) > 1:
        import multiprocessing

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, job): job for job in jobs}
            for fut in as_completed(futures):
                try:
                    done(fut.result())
                except Exception as exc:  # noqa: BLE001 - one failed run must not stop the rest
                    failed += 1
                    job = futures[fut]
                    print(f"  FAILED {job['dataset']} {job['method']} seed {job['seed']}: {exc!r}",
                          file=sys.stderr, flush=True)
    else:
        for job in jobs:
            try:
                done(run_one(job))
            except Exception as exc:  # noqa: BLE001
                failed += 1
                print(f"  FAILED {job['dataset']} {job['method']} seed {job['seed']}: {exc!r}",
                      file=sys.stderr, flush=True)

    frame = load_records(args.raw_dir)
    if frame.empty:
        print("no finished runs: no report written", file=sys.stderr)
        return 1
    frame = frame[frame["dataset"].isin(datasets) & frame["method"].isin(methods)
                  & frame["seed"].isin(seeds)]
    import torch

    import moladapt

    header = [
        "# SGNN-EBM vs multi-task baselines on dense multi-task datasets",
        "",
        f"Generated {dt.datetime.now().isoformat(timespec='seconds')} by `benchmarks/sgnn_ebm.py` "
        f"(moladapt {moladapt.__version__}, torch {torch.__version__}, python "
        f"{platform.python_version()}, {platform.machine()}, {_threads(frame, args.threads)} torch "
        "thread(s) per run).",
        "",
        f"Setup: GIN {args.num_layers}×{args.hidden_dim}, dropout {args.dropout}, Adam lr {args.lr}, "
        f"batch {args.batch_size}, {args.epochs} epochs (SGNN-EBM: {args.epochs} SGNN + "
        f"{args.ebm_epochs if args.ebm_epochs is not None else max(1, args.epochs // 2)} EBM "
        f"epochs); GradNorm's norms on the {'last shared weight' if args.gradnorm_of == 'weight' else 'graph embedding'}; filtered random split 80/10/10 per seed (every task keeps both classes in "
        "every part); the epoch with the best mean validation ROC-AUC; test ROC-AUC is the mean "
        "over tasks. Datasets: "
        + "; ".join(f"{d} (Dense-{dense[d]}"
                    + (f", molecules on >= {min_tasks[d]} tasks" if min_tasks[d] > 1 else "")
                    + f", graph {_graph_label(graph[d], args.graph_method, threshold[d])})"
                    if dense[d] else f"{d} (graph {_graph_label(graph[d], args.graph_method, threshold[d])})"
                    for d in datasets)
        + (f"; first {args.max_molecules} molecules only" if args.max_molecules else "") + ".",
        *[line for note in args.note for line in ("", note)],
    ]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report(frame, header))
    print(f"wrote {args.report} ({len(frame)} runs{f', {failed} failed' if failed else ''})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
