"""Reproduce the pretrain-gnns "no pretraining" row (Hu et al., ICLR 2020, Table 1).

GIN 5×300, `basic` features (or `--featurizer rich`), scaffold split 80/10/10, batch 32,
Adam lr 1e-3, dropout 0.5, up to 100 epochs. Two test figures per run, from one training:
the test ROC-AUC at the *last* epoch (the protocol of pretrain-gnns and of the papers that copy
its table: their scripts log ``test_acc_list[-1]`` after 100 epochs) and at the epoch of best
*validation* ROC-AUC (what moladapt itself selects). The test part is scored every epoch for
that; it never steers training. Independent (dataset, seed) runs go to parallel single-threaded
processes. Each finished run is written to ``benchmarks/results/raw/...`` at once and a run
in progress saves its state after every epoch (``resume.pt``), so an interrupted benchmark
resumes where it stopped, within a run too.

    MOLADAPT_DATA_DIR=../shared/data python benchmarks/moleculenet.py --seeds 0,1,2 --jobs 2 \
        --datasets bbbp,bace,clintox,sider,tox21,toxcast
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from finetune_protocol import finetune_record, run_name

PUBLISHED = {  # Hu et al. 2020, Table 1, "No pretrain" (mean over 10 seeds)
    "bbbp": 65.8, "tox21": 74.0, "toxcast": 63.4, "sider": 57.3,
    "clintox": 58.0, "muv": 71.8, "hiv": 75.3, "bace": 70.1,
}
# molecules per dataset (MoleculeNet files): the cost estimate that orders the runs
SIZES = {"bbbp": 2039, "tox21": 7831, "toxcast": 8575, "sider": 1427, "clintox": 1478,
         "muv": 93087, "hiv": 41127, "bace": 1513}
RESULTS = Path(__file__).resolve().parent / "results"


def run_one(dataset: str, seed: int, featurizer: str, epochs: int, patience: int | None,
            raw_dir: str) -> dict:
    return finetune_record(dataset, seed, featurizer, epochs, patience,
                           Path(raw_dir) / run_name(dataset, seed, epochs, patience))


def _mean_std(vals: np.ndarray) -> str:
    if len(vals) == 0:
        return "–"
    return f"{vals.mean():.1f} ± {vals.std(ddof=1):.1f}" if len(vals) > 1 else f"{vals.mean():.1f} (1 seed)"


def table(records: list[dict], featurizer: str) -> str:
    """One row per dataset × budget (max epochs, patience); budgets are never pooled."""
    lines = ["| dataset | published | budget: max epochs, patience | seeds | epochs run "
             f"| **last epoch** ({featurizer}) | Δ | best-valid epoch ({featurizer}) |",
             "|---|---|---|---|---|---|---|---|"]
    main_rows = []  # the paper's protocol: 100 epochs, no early stopping, last epoch
    for name in PUBLISHED:
        rs_all = [r for r in records if r["dataset"] == name]
        if not rs_all:
            lines.append(f"| {name} | {PUBLISHED[name]:.1f} | not run | 0 | | | | |")
            continue
        budgets = sorted({(r["epochs"], r["patience"]) for r in rs_all},
                         key=lambda b: (b[1] is not None, -b[0], b[1] or 0))
        for epochs, patience in budgets:
            rs = [r for r in rs_all if (r["epochs"], r["patience"]) == (epochs, patience)]
            best = np.array([r["test_roc_auc"] * 100 for r in rs])
            last = np.array([r["test_roc_auc_last_epoch"] * 100 for r in rs
                             if r.get("test_roc_auc_last_epoch") is not None])
            if patience is not None:
                last = np.array([])  # early stopping: the "last epoch" is not the paper's
            ep = sorted({r["epochs_run"] for r in rs})
            delta = f"{last.mean() - PUBLISHED[name]:+.1f}" if len(last) else ""
            if patience is None and epochs == 100 and len(last):
                main_rows.append((PUBLISHED[name], last.mean(), best.mean()))
            lines.append(f"| {name} | {PUBLISHED[name]:.1f} | {epochs}, {patience if patience is not None else '–'} "
                         f"| {len(rs)} | {ep[0]}–{ep[-1]} | {_mean_std(last)} | {delta} | {_mean_std(best)} |")
    if main_rows:
        pub, last, best = (np.mean([m[i] for m in main_rows]) for i in range(3))
        lines.append(f"| **average, 100-epoch runs ({len(main_rows)} datasets)** | {pub:.1f} | 100, – | | "
                     f"| **{last:.1f}** | {last - pub:+.1f} | {best:.1f} |")
    return "\n".join(lines)


def report() -> str:
    """``moleculenet_no_pretrain.md``: one section per featurizer that has runs."""
    parts = ["# MoleculeNet, no pretraining — GIN 5×300, scaffold split\n\n"
             "Test ROC-AUC (%), mean ± std over seeds. **Last epoch** = after the full budget with no "
             "early stopping, the protocol behind the published row (Hu et al. 2020; their fine-tuning "
             "scripts report the test score of epoch 100); Δ compares it with the published mean. "
             "Best-valid epoch = the weights moladapt keeps (best validation ROC-AUC), from the same "
             "runs. Rows with a patience are older early-stopped runs (their last epoch is not the "
             "paper's, so only the best-valid figure is given); budgets are never pooled. Batch 32, "
             "Adam 1e-3, dropout 0.5, fp32. Table written "
             f"{dt.date.today()}, {platform.machine()} with {os.cpu_count()} cores, one thread per run.\n\n"
             "Command (one invocation per budget): `MOLADAPT_DATA_DIR=../shared/data OMP_NUM_THREADS=1 "
             "python benchmarks/moleculenet.py --featurizer F --datasets D1,D2 --seeds S "
             "--epochs E [--patience P]`, with the seeds and budget of each row (S = 0,1,2 where a "
             "row has 3 seeds, 0 where it has 1); `--report-only` rewrites this file.\n"]
    by_featurizer = {}
    for featurizer in ("basic", "rich"):
        raw = RESULTS / "raw" / f"moleculenet_{featurizer}"
        records = [json.loads(p.read_text()) for p in sorted(raw.glob("*/summary.json"))]
        by_featurizer[featurizer] = records
        parts.append(f"\n## `{featurizer}` features\n\n")
        parts.append(table(records, featurizer) + f"\n\nPer-run files: `results/raw/moleculenet_{featurizer}/`.\n"
                     if records else "Not run yet.\n")
    parts.append(featurizer_comparison(by_featurizer["basic"], by_featurizer["rich"]))
    return "".join(parts)


def featurizer_comparison(basic: list[dict], rich: list[dict]) -> str:
    """``rich`` − ``basic`` over the (dataset, seed) pairs both ran with the paper's budget
    (100 epochs, no early stopping): paired differences, bootstrap CI, Wilcoxon (Holm over
    the two read-outs)."""
    import pandas as pd

    from moladapt.evaluate.statistics import paired_comparisons

    rows = [{"featurizer": r["featurizer"], "dataset": r["dataset"], "seed": r["seed"],
             "last": r["test_roc_auc_last_epoch"] * 100, "best_valid": r["test_roc_auc"] * 100}
            for r in (*basic, *rich) if r["epochs"] == 100 and r["patience"] is None]
    frame = pd.DataFrame(rows)
    if frame.empty or frame["featurizer"].nunique() < 2:
        return ""
    long = frame.melt(id_vars=["featurizer", "dataset", "seed"], var_name="readout", value_name="roc_auc")
    cmp = paired_comparisons(long, "roc_auc", baseline="basic", unit_cols=["dataset", "seed"],
                             method_col="featurizer", by="readout")
    pairs = frame.pivot_table(index=["dataset", "seed"], columns="featurizer", values="last").dropna()
    datasets = sorted({d for d, _ in pairs.index})
    lines = ["\n## `rich` vs `basic` (same datasets and seeds, 100 epochs)\n",
             f"Paired over the {len(pairs)} (dataset, seed) runs both featurizers have "
             f"({', '.join(datasets)}): mean difference rich − basic in ROC-AUC points, 95% bootstrap "
             "CI, two-sided Wilcoxon signed-rank p, Holm-adjusted over the two read-outs.\n",
             "| read-out | pairs | mean Δ | 95% CI | Wilcoxon p | Holm p | significant | note |",
             "|---|---|---|---|---|---|---|---|"]
    for _, c in cmp.iterrows():
        name = "last epoch" if c["readout"] == "last" else "best-valid epoch"
        lines.append(f"| {name} | {int(c['n_pairs'])} | {c['mean_diff']:+.2f} | [{c['ci_low']:+.2f}, "
                     f"{c['ci_high']:+.2f}] | {c['p_wilcoxon']:.3g} | {c['p_wilcoxon_holm']:.3g} | "
                     f"{'yes' if c['significant'] else 'no'} | {c['note']} |")
    per_dataset = (pairs["rich"] - pairs["basic"]).groupby(level="dataset").mean()
    lines += ["", "Per dataset (last epoch, mean over seeds): "
              + ", ".join(f"{d} {v:+.1f}" for d, v in per_dataset.items()) + ".\n"]
    return "\n".join(lines)


def migrate_old_run_dirs(raw: Path) -> None:
    """Runs stored before budgets were part of the name (``<ds>_seed<k>``) get their budget added."""
    for summary in raw.glob("*/summary.json"):
        r = json.loads(summary.read_text())
        want = run_name(r["dataset"], r["seed"], r["epochs"], r["patience"])
        if summary.parent.name != want and not (raw / want).exists():
            summary.parent.rename(raw / want)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="bbbp,bace,clintox,sider,tox21,toxcast,hiv,muv")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--featurizer", default="basic")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="Rewrite the table from stored runs; run nothing.")
    args = parser.parse_args()
    raw = RESULTS / "raw" / f"moleculenet_{args.featurizer}"
    raw.mkdir(parents=True, exist_ok=True)
    migrate_old_run_dirs(raw)
    todo = [(d, int(s)) for d in args.datasets.split(",") for s in args.seeds.split(",")
            if not (raw / run_name(d, int(s), args.epochs, args.patience) / "summary.json").exists()]
    if args.report_only:
        todo = []
    # longest first, so the parallel processes finish close together (LPT scheduling)
    todo.sort(key=lambda run: -SIZES.get(run[0], 0))
    print(f"{len(todo)} runs to do ({args.jobs} processes)", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, d, s, args.featurizer, args.epochs, args.patience, str(raw)): (d, s)
                   for d, s in todo}
        for fut in as_completed(futures):
            d, s = futures[fut]
            try:
                r = fut.result()
                print(f"{d} seed {s}: test ROC-AUC {r['test_roc_auc_last_epoch']:.4f} at the last epoch, "
                      f"{r['test_roc_auc']:.4f} at the best-valid epoch ({r['epochs_run']} epochs, "
                      f"{r['mol_per_s']:.0f} mol/s)", flush=True)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
                print(f"{d} seed {s}: FAILED {exc!r}", flush=True)
    md = report()
    (RESULTS / "moleculenet_no_pretrain.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
