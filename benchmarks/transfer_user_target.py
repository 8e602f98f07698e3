"""Does public ADMET data help a scarce in-house assay? ``moladapt transfer`` with a CSV target.

A MoleculeNet dataset stands in for the in-house assay: ``--n`` of its molecules, sampled with
``--sample-seed``, are written as a CSV (SMILES + one label column) and used as the target of
:func:`moladapt.transfer.transfer`, with the 22 TDC ADMET datasets as candidate sources (those
of the target's task type are used). Three methods, every seed: single-task (``--ratios
none``), uniform multi-task and bi-level learned transfer ratios, from the same initial
weights. The target is split by scaffold (80/10/10 of the sample), the same split for every
seed, so seeds differ in initialisation and batches only.

Reported (printed, and written to ``benchmarks/results/transfer_user_target_<dataset>.md``) by
:func:`moladapt.transfer.compare_methods`, as ``moladapt transfer --ratios none,uniform,bilevel
--seed 0,1,...`` reports a user's own assay: the metric (MAE for regression, ROC-AUC for
classification) as mean ± std over seeds, the paired difference of each multi-task method to
single-task over seeds (Wilcoxon signed-rank and paired t, Holm over the two comparisons) and
the sources with the largest learned ratios.

A source may hold the target's own molecules (AqSolDB, a TDC source, merges ESOL): their
source labels are dropped on the target's test molecules, so nothing leaks into the test
score, but they stay on its training and validation molecules, as they would for a user whose
compounds are in public data. The report counts the dropped labels.

    MOLADAPT_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/transfer_user_target.py \\
        --dataset esol --n 200 --seeds 0,1,2,3,4,5,6,7,8,9

Every finished run keeps ``<out>/<ratios>_seed<s>/metrics.json``; a rerun skips it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
RATIOS = ("none", "uniform", "bilevel")


def write_target(dataset: str, n: int, sample_seed: int, path: Path) -> str:
    """``n`` molecules of ``dataset`` (one label column) as a user's CSV; its label column."""
    from moladapt.data.sources import load_dataset

    data = load_dataset(dataset)
    if data.num_tasks != 1:
        raise SystemExit(f"{dataset} has {data.num_tasks} tasks; the stand-in assay needs one")
    labelled = np.flatnonzero(~np.isnan(np.asarray(data.labels[:, 0], dtype=float)))
    if n > len(labelled):
        raise SystemExit(f"{dataset} has {len(labelled)} labelled molecules, fewer than --n {n}")
    rows = np.sort(np.random.default_rng(sample_seed).choice(labelled, size=n, replace=False))
    label = data.task_names[0]
    frame = pd.DataFrame({"smiles": [data.smiles[i] for i in rows], label: data.labels[rows, 0]})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return label


def report(records: list[dict], args: argparse.Namespace, csv: Path) -> str:
    from moladapt.transfer import compare_methods

    first = next((r for r in records if r["method"] != "single_task"), records[0])  # one with sources
    seeds = sorted({r["seed"] for r in records})
    head = [f"# Transfer to a scarce assay: {args.dataset}, {first['n_train']} training molecules",
            "",
            f"Written by `benchmarks/transfer_user_target.py` on {dt.date.today()}, {platform.machine()}, "
            f"one thread. Target: {args.n} molecules of `{args.dataset}` (sample seed {args.sample_seed}; "
            f"{csv.name}), scaffold split {first['n_train']}/{first['n_valid']}/{first['n_test']}; "
            f"sources: the TDC ADMET datasets of its task type ({len(first['sources'])}: "
            f"{', '.join(x.removeprefix('tdc_') for x in first['sources'])}); "
            f"GIN {first['settings']['num_layers']}×{first['settings']['hidden_dim']}, "
            f"{first['settings']['epochs']} epochs, extra source-only molecules capped at "
            f"{first['settings']['extra_ratio']}× the target's training set; seeds "
            f"{', '.join(map(str, seeds))} (initialisation and batches; the split is the same).",
            "",
            f"Command: `MOLADAPT_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/transfer_user_target.py "
            f"--dataset {args.dataset} --n {args.n} --seeds {args.seeds}`",
            ""]
    return "\n".join(head) + "\n" + compare_methods(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="esol")
    parser.add_argument("--n", type=int, default=200, help="molecules in the stand-in assay")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS / "raw" / "transfer_user_target")
    args = parser.parse_args()
    from moladapt.transfer import transfer

    run_dir = args.out / f"{args.dataset}_n{args.n}_s{args.sample_seed}"
    csv = run_dir / f"{args.dataset}_{args.n}.csv"
    label = write_target(args.dataset, args.n, args.sample_seed, csv)
    records = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for ratios in RATIOS:
            out = run_dir / f"{ratios}_seed{seed}"
            if not (out / "metrics.json").exists():
                transfer(str(csv), ratios, "all", seed, out, target_column=label, epochs=args.epochs)
            rec = json.loads((out / "metrics.json").read_text())
            records.append(rec)
            print(f"{ratios:8s} seed {seed}: test {rec['metric']} {rec['test_value']:.4f} "
                  f"({rec['train_seconds']:.0f} s)", flush=True)
    text = report(records, args, csv)
    (RESULTS / f"transfer_user_target_{args.dataset}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
