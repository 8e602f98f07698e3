"""Pretraining throughput: molecules/s per objective, and the 2-process torchrun speed-up.

For each objective, GIN (default 5×300, ``basic``) pretrains on the first ``--molecules``
molecules of MOSES train (``supervised``: the first ``--molecules`` ToxCast molecules and
their labels) for ``--epochs`` epochs with one thread; the rate is molecules / seconds of the
last epoch (the first one warms up). Then ``python -m torch.distributed.run
--nproc_per_node 2`` runs the same pretraining in two single-threaded processes (gloo,
data-parallel, batch ``--batch-size`` per process) and the total rate (all molecules / epoch
seconds) is compared with the 1-process rate. ``--precisions fp32,bf16`` measures every
objective in both (bf16 = bfloat16 autocast, weights in float32). Prints a Markdown table.

    MOLADAPT_DATA_DIR=../shared/data python benchmarks/pretrain_speed.py --molecules 2000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

OBJECTIVES = ["attribute_masking", "context_prediction", "edge_prediction", "infomax", "graphcl", "supervised"]


def measure(objective: str, molecules: int, epochs: int, hidden_dim: int, num_layers: int,
            batch_size: int, threads: int, result: str | None = None, precision: str = "fp32") -> dict:
    """Pretrain once; the rate of the last epoch (per process and in total)."""
    import torch

    torch.set_num_threads(threads)
    from moladapt.data.featurize import get_featurizer
    from moladapt.models.encoders import build_encoder
    from moladapt.pretrain import distributed as ddp
    from moladapt.pretrain import pretrain
    from moladapt.pretrain.corpus import featurize_corpus

    ctx = ddp.init_from_env("cpu")
    feat = get_featurizer("basic")
    y = None
    if objective == "supervised":
        from moladapt.cli.pretrain import _load_labels

        labelled = _load_labels("toxcast", "smiles", feat, lambda m: None)
        idx = list(range(min(molecules, len(labelled.graphs))))
        graphs, y = labelled.graphs.subset(idx), labelled.y[idx]
    else:
        graphs = featurize_corpus("moses_train", featurizer=feat, limit=molecules, shard_size=max(molecules, 1))
    torch.manual_seed(0)
    enc = build_encoder("gin", feat.atom_vocab_sizes, feat.bond_vocab_sizes, hidden_dim=hidden_dim,
                        num_layers=num_layers)
    history = pretrain(enc, objective, graphs, y, epochs=epochs, batch_size=batch_size, progress=False,
                       checkpoint_dir=None, precision=precision)
    seconds = history.epochs[-1]["seconds"]
    n = len(graphs)
    record = {"objective": objective, "precision": precision, "molecules": n, "world_size": ctx.world_size, "threads": threads,
              "seconds": seconds, "total_mol_per_s": n / seconds,
              "mol_per_s_per_process": n / seconds / ctx.world_size}
    if result and ctx.is_main:
        Path(result).write_text(json.dumps(record))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden-dim", type=int, default=300)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--torchrun-objective", default="attribute_masking",
                        help="objective for the 2-process comparison ('none' to skip it)")
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32,bf16")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # torchrun child: result file
    args = parser.parse_args()
    common = (args.molecules, args.epochs, args.hidden_dim, args.num_layers, args.batch_size)
    if args.worker:
        measure(args.objectives, *common, threads=1, result=args.worker)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    for obj in [o.strip() for o in args.objectives.split(",") if o.strip()]:
        for precision in args.precisions.split(","):
            r = measure(obj, *common, threads=1, precision=precision)
            rows.append(r)
            print(f"{obj} {precision}: {r['total_mol_per_s']:.0f} mol/s (1 process, 1 thread)", flush=True)
    lines = [f"## Pretraining throughput — GIN {args.num_layers}×{args.hidden_dim}, `basic`, batch "
             f"{args.batch_size}, {args.molecules} molecules, last of {args.epochs} epochs", "",
             "| objective | precision | processes × threads | mol/s per process | total mol/s | speed-up |",
             "|---|---|---|---|---|---|"]
    fp32 = {r["objective"]: r["total_mol_per_s"] for r in rows if r["precision"] == "fp32"}
    lines += [f"| {r['objective']} | {r['precision']} | 1 × 1 | {r['mol_per_s_per_process']:.0f} | "
              f"{r['total_mol_per_s']:.0f} | "
              + (f"{r['total_mol_per_s'] / fp32[r['objective']]:.2f}" if r["objective"] in fp32 else "") + " |"
              for r in rows]
    if args.torchrun_objective != "none":
        base = next((r for r in rows if r["objective"] == args.torchrun_objective
                     and r["precision"] == "fp32"), None)
        if base is None:
            base = measure(args.torchrun_objective, *common, threads=1)
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "ddp.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   str(Path(__file__).resolve()), "--objectives", args.torchrun_objective,
                   "--molecules", str(args.molecules), "--epochs", str(args.epochs),
                   "--hidden-dim", str(args.hidden_dim), "--num-layers", str(args.num_layers),
                   "--batch-size", str(args.batch_size), "--worker", str(result)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0 or not result.exists():
                lines.append(f"| {args.torchrun_objective} | fp32 | torchrun 2 × 1 | failed (rc {proc.returncode}): "
                             f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''} | | |")
            else:
                r = json.loads(result.read_text())
                lines.append(f"| {r['objective']} | fp32 | torchrun 2 × 1 | {r['mol_per_s_per_process']:.0f} | "
                             f"{r['total_mol_per_s']:.0f} | {r['total_mol_per_s'] / base['total_mol_per_s']:.2f} |")
        lines += ["", "Speed-up: bf16 rows over the fp32 row of the same objective; torchrun row: "
                  f"total mol/s of 2 torchrun processes (gloo, batch {args.batch_size} each, "
                  "so twice the global batch) over 1 process with 1 thread."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
