"""Build the pretrained encoder bundled with moladapt, and its model card (one command).

Pretrains GIN 5×300 (``basic`` features, JK last, mean pooling, dropout 0, batch 256, Adam
lr 1e-3) with ``--objective`` on the first ``--corpus-size`` molecules of the MOSES training
set, then writes

* ``src/moladapt/bundled/encoder_<name>.pt`` (a :func:`moladapt.pretrain.save_pretrained_encoder`
  checkpoint; refused above ``--max-mb`` = 30 MB; GIN 5×300 is ≈ 7 MB), and
* ``src/moladapt/bundled/encoder_<name>.md``, the model card
  (:func:`moladapt.bundled_models.model_card`): corpus, objective(s), epochs,
  hyper-parameters, featurizer and version, this command, wall time, sha256 of the .pt and,
  with ``--downstream benchmarks/results/pretraining.md``, the measured fine-tuning effect.

``<name>`` is the objective (``--name`` overrides it); ``moladapt train --init bundled:<name>``
then starts from it (``--init bundled`` for the default, ``attribute_masking``).

Sizing (defaults: 200,000 molecules × 10 epochs): ``benchmarks/results/pretrain_speed.md``
measured GIN 5×300 pretraining on one thread of this machine at 292–403 mol/s in fp32 and
661–769 mol/s with ``--precision bf16`` (graphcl, two views per molecule: 192 / 429). So
attribute masking, 2.0 M molecule-epochs, takes ≈ 1.7 h in fp32 or ≈ 50 min in bf16 on one
thread, plus ≈ 20 s to featurize 200,000 SMILES (cached afterwards). The run is resumable: rerunning the same command continues from
``<work-dir>/pretrained/<hash>/last.pt`` after the last finished epoch.

    MOLADAPT_DATA_DIR=../shared/data OMP_NUM_THREADS=2 python benchmarks/build_bundled_encoder.py \
        --objective attribute_masking --downstream benchmarks/results/pretraining.md

Only the card again (after new downstream results; no training, the .pt is unchanged; on a
checkout without the build record under ``--work-dir``, only the card's downstream section is
renewed)::

    python benchmarks/build_bundled_encoder.py --objective attribute_masking --card-only \
        --downstream benchmarks/results/pretraining.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "src" / "moladapt" / "bundled"
DOWNSTREAM_HEADING = "## Measured downstream effect"  # the card's last section (bundled_models.model_card)


def downstream_table(path: Path, name: str) -> str:
    """From ``path`` (pretraining.md): its protocol paragraphs, its first objective table and
    the paired comparisons, every objective kept (so the card shows what ``name`` was chosen
    against) and ``name``'s rows in bold; or the whole file when it has no such table."""
    text = path.read_text()
    lines = text.splitlines()

    def tables_of(header_prefix: str) -> list[tuple[str, list[str]]]:
        """Every table whose header starts so, with the line that introduces it."""
        out = []
        for i, line in enumerate(lines):
            if line.startswith(header_prefix) and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
                keep = [line, lines[i + 1]]
                for row in lines[i + 2:]:
                    if not row.startswith("|"):
                        break
                    cells = row.strip().strip("|").split("|")
                    if cells[0].strip().strip("*`") == name:
                        row = "| " + " | ".join(f"**{c.strip()}**" if c.strip() else "" for c in cells) + " |"
                    keep.append(row)
                caption = next((c.lstrip("# ") for c in reversed(lines[:i]) if c.strip()
                                and not c.startswith(("Mean difference", "|"))), "")
                if len(keep) > 2:
                    out.append((caption, keep))
        return out

    tables = tables_of("| objective | ")
    table = next((t for caption, t in tables if "pairs" not in t[0]), [])
    if not table or not any(f"**{name}**" in row for row in table):
        return f"From `{path.name}`:\n\n{text}"
    protocol = [line for line in lines if line.startswith(("Test ROC-AUC", "Pretraining:"))]
    parts = [f"From `{path.name}` (scaffold split; this encoder in bold):", *protocol, "\n".join(table)]
    for caption, comparison in tables_of("| objective | pairs"):
        parts += [f"{caption.rstrip(':')}; ROC-AUC points, objective − none:", "\n".join(comparison)]
    return "\n\n".join(parts)


def build_config(args: argparse.Namespace) -> dict:
    """The resolved pretrain_finetune config of the build (what its pretraining hash names)."""
    from moladapt.study.pretrain_runner import resolve

    return resolve({
        "data": {"dataset": "bbbp", "featurizer": "basic"},
        "model": {"encoder": "gin", "hidden_dim": args.hidden_dim, "num_layers": args.num_layers},
        "train": {},
        "pretrain": {"objective": args.objective, "corpus": args.corpus, "corpus_size": args.corpus_size,
                     "labels_dataset": args.labels_dataset, "epochs": args.epochs,
                     "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                     "precision": args.precision},
    })


def write_identity(out_pt: Path, config: dict, summary: dict) -> Path:
    """``encoder_<name>.identity.json`` beside ``out_pt``: the pretraining hash and identity of
    ``config`` and the file's sha256, so a study asking for this very pretraining copies the
    bundled file (:func:`moladapt.bundled_models.find_by_pretrain_hash`)."""
    from moladapt.bundled_models import sha256_file
    from moladapt.study.pretrain_runner import pretrain_hash, pretrain_identity
    from moladapt.utils import write_json

    path = out_pt.with_name(out_pt.name[:-len(".pt")] + ".identity.json")
    write_json(path, {"hash": pretrain_hash(config), "identity": pretrain_identity(config),
                      "sha256": sha256_file(out_pt), "pretrain_seconds": summary.get("pretrain_seconds"),
                      "final_loss": summary.get("final_loss"), "date": str(dt.date.today())})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", default="attribute_masking",
                        help="objective, or stages as `moladapt pretrain --objective` reads them "
                             "(e.g. 'attribute_masking:10,supervised:10'); supervised uses --labels-dataset")
    parser.add_argument("--name", default=None, help="bundled name (default: the objective names joined by '_')")
    parser.add_argument("--corpus", default="moses_train")
    parser.add_argument("--corpus-size", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=10, help="epochs (when --objective has no stages)")
    parser.add_argument("--labels-dataset", default="toxcast")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16: bfloat16 autocast while pretraining (~1.6x faster on CPUs with AMX)")
    parser.add_argument("--hidden-dim", type=int, default=300)
    parser.add_argument("--num-layers", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "bundled_encoder",
                        help="checkpoints (resumable)")
    parser.add_argument("--output-dir", type=Path, default=BUNDLED, help="where encoder_<name>.pt/.md go")
    parser.add_argument("--downstream", type=Path, default=None,
                        help="results Markdown (benchmarks/results/pretraining.md) for the card")
    parser.add_argument("--max-mb", type=float, default=30.0)
    parser.add_argument("--card-only", action="store_true",
                        help="rewrite the card from the existing .pt and the saved build record")
    args = parser.parse_args()

    import torch

    from moladapt.bundled_models import model_card, sha256_file
    from moladapt.cli.pretrain import parse_objectives
    from moladapt.data.featurize import get_featurizer
    from moladapt.experiment import environment
    from moladapt.study.pretrain_runner import OBJECTIVE_COST, ensure_pretrained

    stages = parse_objectives(args.objective, args.epochs)
    name = args.name or "_".join(dict.fromkeys(n for names, _ in stages for n in names))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SystemExit(f"--name {name!r}: use letters, digits, '_', '-', '.'")
    out_pt = args.output_dir / f"encoder_{name}.pt"
    out_md = args.output_dir / f"encoder_{name}.md"
    record_path = args.work_dir / f"build_{name}.json"
    command = "python benchmarks/build_bundled_encoder.py " + shlex.join(sys.argv[1:])

    if args.card_only and not record_path.exists() and out_pt.exists() and out_md.exists():
        # no build record on this checkout (it is not committed): renew only the card's last
        # section, the measured downstream effect, after checking the card describes this .pt
        card = out_md.read_text()
        if sha256_file(out_pt) not in card:
            raise SystemExit(f"{out_md} does not carry the sha256 of {out_pt}: rebuild the card from a build")
        if not args.downstream:
            raise SystemExit("--card-only without a build record renews the downstream section: give --downstream")
        head = card.split(DOWNSTREAM_HEADING)[0]
        out_md.write_text(f"{head}{DOWNSTREAM_HEADING}\n\n{downstream_table(args.downstream, name).strip()}\n")
        print(f"renewed the downstream section of {out_md} from {args.downstream}")
        return
    if args.card_only:
        if not out_pt.exists() or not record_path.exists():
            raise SystemExit(f"--card-only needs {out_pt} and {record_path} from a build")
        info = json.loads(record_path.read_text())
    else:
        torch.set_num_threads(args.threads)
        feat = get_featurizer("basic")
        config = build_config(args)
        pre = config["pretrain"]
        mol_epochs = sum(args.corpus_size * n * max(OBJECTIVE_COST.get(o, 1.5) for o in names)
                         for names, n in stages)
        print(f"pretraining {name}: {stages} on {args.corpus_size:,} molecules of {args.corpus}, "
              f"{args.threads} threads; expect ~{mol_epochs / 300 / 3600:.1f} h at 300 mol/s "
              "(GIN 5×300, 2 threads)", flush=True)
        t0 = time.perf_counter()
        built = ensure_pretrained(config, args.work_dir, log=lambda m: print(m, flush=True))
        wall = time.perf_counter() - t0
        summary = built.summary
        args.output_dir.mkdir(parents=True, exist_ok=True)
        size_mb = built.encoder_path.stat().st_size / 1e6
        if size_mb > args.max_mb:
            raise SystemExit(f"{built.encoder_path} is {size_mb:.1f} MB > --max-mb {args.max_mb}: not bundled")
        shutil.copyfile(built.encoder_path, out_pt)
        write_identity(out_pt, config, summary)
        from moladapt.training import load_checkpoint

        extra = load_checkpoint(out_pt, feat).extra.get("pretrain", {})
        obj_hparams = {f"{o['name']}.{k}": v for stage in extra.get("objectives", [])
                       for o in stage for k, v in (o.get("hparams") or {}).items()}
        corpus = summary.get("corpus") or {}
        info = {
            "name": name, "objectives": [[list(n), e] for n, e in stages],
            "corpus": (f"{pre['corpus']} ({Path(corpus['source']).name}, first {pre['corpus_size']} rows)"
                       if corpus.get("source") else pre["corpus"]),
            "corpus_size": corpus.get("num_molecules", pre["corpus_size"]),
            "labels": (f"{summary['labels']['source']} ({summary['labels']['molecules']} molecules, "
                       f"{summary['labels']['tasks']} tasks)") if summary.get("labels") else None,
            "epochs": sum(e for _, e in stages),
            "hparams": {"encoder": "gin", "hidden_dim": args.hidden_dim, "num_layers": args.num_layers,
                        "jk": "last", "pooling": "mean", "dropout": pre["dropout"],
                        "batch_size": pre["batch_size"], "lr": pre["lr"], "optimizer": "Adam",
                        "seed": pre["seed"], "precision": pre["precision"], "threads": args.threads,
                        **obj_hparams},
            "featurizer": feat.name, "featurizer_version": feat.version,
            "command": f"MOLADAPT_DATA_DIR=../shared/data OMP_NUM_THREADS={args.threads} {command}",
            # the whole build across resumed attempts (pretrain_seconds), or this call's time
            "wall_seconds": float(summary.get("pretrain_seconds") or wall),
            "final_loss": summary.get("final_loss"),
            "date": str(dt.date.today()),
            "environment": {**environment(), "cpus": f"{torch.get_num_threads()} threads",
                            "platform": platform.platform(terse=True)},
        }
        args.work_dir.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(info, indent=2))

    info["sha256"] = sha256_file(out_pt)
    info["file_size"] = out_pt.stat().st_size
    info["downstream"] = downstream_table(args.downstream, name) if args.downstream else None
    out_md.write_text(model_card(info))
    print(f"wrote {out_pt} ({info['file_size'] / 1e6:.1f} MB, sha256 {info['sha256'][:12]}…) and {out_md}; "
          f"pretraining wall time {info['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
