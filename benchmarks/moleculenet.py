"""Reproduce the pretrain-gnns "no pretraining" row (Hu et al., ICLR 2020, Table 1).

GIN 5×300, `basic` features (or `--featurizer rich`), scaffold split 80/10/10, batch 32,
Adam lr 1e-3, dropout 0.5, up to 100 epochs; the test ROC-AUC at the epoch of best
validation ROC-AUC. Independent (dataset, seed) runs go to parallel single-threaded
processes. Each finished run is written to ``benchmarks/results/raw/...`` at once, so an
interrupted benchmark resumes where it stopped.

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

PUBLISHED = {  # Hu et al. 2020, Table 1, "No pretrain" (mean over 10 seeds)
    "bbbp": 65.8, "tox21": 74.0, "toxcast": 63.4, "sider": 57.3,
    "clintox": 58.0, "muv": 71.8, "hiv": 75.3, "bace": 70.1,
}
RESULTS = Path(__file__).resolve().parent / "results"


def run_one(dataset: str, seed: int, featurizer: str, epochs: int, patience: int | None,
            raw_dir: str) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from moladapt.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from moladapt.experiment import run_training

    cfg = RunConfig(data=DataConfig(dataset=dataset, split="scaffold", featurizer=featurizer),
                    model=ModelConfig(encoder="gin", hidden_dim=300, num_layers=5, dropout=0.5),
                    train=TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, seed=seed,
                                      patience=patience, num_threads=1))
    out = Path(raw_dir) / f"{dataset}_seed{seed}"
    result = run_training(cfg, out, progress=False, log=lambda m: None)
    record = {"dataset": dataset, "seed": seed, "featurizer": featurizer, "epochs": epochs,
              "patience": patience, "test_roc_auc": result.test.mean["roc_auc"],
              "valid_roc_auc": result.valid.mean["roc_auc"], "best_epoch": result.best_epoch,
              "epochs_run": len(json.loads((out / "metrics.json").read_text())["history"]["epochs"]),
              "tasks_scored": result.test.n_tasks_scored, "tasks_skipped": len(result.test.skipped),
              "train_seconds": result.train_seconds, "mol_per_s": result.molecules_per_second}
    (out / "summary.json").write_text(json.dumps(record, indent=2))
    (out / "model.pt").unlink(missing_ok=True)  # keep results, not 7 MB of weights per run
    return record


def table(records: list[dict], featurizer: str) -> str:
    lines = [f"| dataset | published | moladapt ({featurizer}) mean ± std | seeds | max epochs, patience | epochs run | Δ |",
             "|---|---|---|---|---|---|---|"]
    means = []
    for name in PUBLISHED:
        rs = [r for r in records if r["dataset"] == name]
        if not rs:
            lines.append(f"| {name} | {PUBLISHED[name]:.1f} | not run | 0 | | | |")
            continue
        vals = np.array([r["test_roc_auc"] * 100 for r in rs])
        means.append((PUBLISHED[name], vals.mean()))
        ep = sorted({r["epochs_run"] for r in rs})
        budget = ", ".join(sorted({f"{r['epochs']}, {r['patience'] if r['patience'] is not None else '–'}" for r in rs}))
        std = f"{vals.std(ddof=1):.1f}" if len(vals) > 1 else "– (1 seed)"
        lines.append(f"| {name} | {PUBLISHED[name]:.1f} | {vals.mean():.1f} ± {std} | {len(vals)} | {budget} "
                     f"| {ep[0]}–{ep[-1]} | {vals.mean() - PUBLISHED[name]:+.1f} |")
    if means:
        pub, ours = np.mean([m[0] for m in means]), np.mean([m[1] for m in means])
        lines.append(f"| **average over the {len(means)} datasets run** | {pub:.1f} | {ours:.1f} | | | | {ours - pub:+.1f} |")
    return "\n".join(lines)


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
    todo = [(d, int(s)) for d in args.datasets.split(",") for s in args.seeds.split(",")
            if not (raw / f"{d}_seed{s}" / "summary.json").exists()]
    if args.report_only:
        todo = []
    print(f"{len(todo)} runs to do ({args.jobs} processes)", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, d, s, args.featurizer, args.epochs, args.patience, str(raw)): (d, s)
                   for d, s in todo}
        for fut in as_completed(futures):
            d, s = futures[fut]
            try:
                r = fut.result()
                print(f"{d} seed {s}: test ROC-AUC {r['test_roc_auc']:.4f} ({r['epochs_run']} epochs, "
                      f"{r['mol_per_s']:.0f} mol/s)", flush=True)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other runs
                print(f"{d} seed {s}: FAILED {exc!r}", flush=True)
    records = [json.loads(p.read_text()) for p in sorted(raw.glob("*/summary.json"))]
    md = (f"# MoleculeNet, no pretraining — GIN 5×300, `{args.featurizer}` features, scaffold split\n\n"
          f"Test ROC-AUC (%) at the epoch of best validation ROC-AUC (early stopping: training stops once "
          f"validation ROC-AUC has not improved for more than `patience` epochs). Table written "
          f"{dt.date.today()}, {platform.machine()} with {os.cpu_count()} cores, one thread per run. "
          f"Each run's budget is in the table; per-run files are in `results/raw/moleculenet_{args.featurizer}/`.\n\n"
          f"Command (one invocation per budget): `MOLADAPT_DATA_DIR=../shared/data python benchmarks/moleculenet.py "
          f"--featurizer {args.featurizer} --datasets D1,D2 --seeds 0,1,2 --epochs E [--patience P]`; "
          f"`--report-only` rewrites this table.\n\n"
          + table(records, args.featurizer) + "\n")
    out = RESULTS / f"moleculenet_no_pretrain_{args.featurizer}.md"
    out.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
