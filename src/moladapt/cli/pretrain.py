"""`moladapt pretrain`: pretrain an encoder; write config.yaml, last.pt, encoder.pt, history.json.

``--objective`` takes objective names joined by ``,`` (their losses are summed, for
``--epochs`` epochs), or stages ``name:epochs`` joined by ``,`` run one after the other,
with ``+`` joining objectives within a stage, e.g. ``context_prediction:10,supervised:5``
or ``attribute_masking+infomax:20``. Self-supervised stages train on ``--corpus``;
``supervised`` stages on ``--labels-dataset`` (a benchmark name or a CSV of 0/1 labels).
``-O objective.option=value`` (repeatable) sets an objective's constructor option, e.g.
``-O attribute_masking.mask_rate=0.25``; an unknown option is refused with the list of known ones.
``--init`` starts from the encoder of a checkpoint (``bundled``, ``bundled:<name>`` or a path)
instead of random weights, e.g. supervised pretraining on top of a self-supervised encoder, as
pretrain-gnns does; the checkpoint's own record travels into the new ``encoder.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from moladapt.cli.common import ENCODER_HELP, POOLING_HELP, friendly_errors


def parse_objectives(spec: str, epochs: int) -> list[tuple[list[str], int]]:
    """``"a,b"`` → ``[(["a", "b"], epochs)]``; ``"a:5,b+c:10"`` → ``[(["a"], 5), (["b", "c"], 10)]``."""
    from moladapt.pretrain.objectives.base import canonical_objective

    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ValueError("--objective: give at least one objective")
    staged = [":" in s for s in items]
    if not any(staged):
        return [([canonical_objective(s) for item in items for s in item.split("+")], int(epochs))]
    if not all(staged):
        raise ValueError(f"--objective {spec!r}: give every stage its epochs (name:epochs), or none")
    stages = []
    for item in items:
        names, _, n = item.rpartition(":")
        try:
            n_epochs = int(n)
        except ValueError:
            raise ValueError(f"--objective: {item!r} is not name:epochs") from None
        stages.append(([canonical_objective(s) for s in names.split("+") if s.strip()], n_epochs))
    return stages


def _load_labels(labels: str, smiles_column: str, featurizer: str, log) -> Any:
    from moladapt.data.sources import CLASSIFICATION, DATASETS, DataError, load_csv, load_dataset
    from moladapt.training import prepare

    data = (load_dataset(labels) if labels.lower() in DATASETS.names() and not Path(labels).exists()
            else load_csv(labels, smiles_column))
    if data.task_type != CLASSIFICATION:
        raise DataError(f"{data.source}: supervised pretraining needs 0/1 labels (masked BCE), "
                        f"this is a {data.task_type} dataset")
    prepared = prepare(data, featurizer)
    if prepared.invalid:
        log(prepared.invalid_summary())
    return prepared


def finetune_command(encoder_path: Path, featurizer: str, model: dict) -> str:
    """The `moladapt train` line that rebuilds this encoder's architecture and featurizer
    around the pretrained weights (train's defaults left out where they match)."""
    words = [f"moladapt train --init {encoder_path}"]
    if featurizer != "basic":
        words.append(f"--featurizer {featurizer}")
    words.append(f"--encoder {model['encoder']} --hidden-dim {model['hidden_dim']} "
                 f"--num-layers {model['num_layers']} --pooling {model['pooling']}")
    if model["jk"] != "last":
        words.append(f"--jk {model['jk']}")
    if model.get("fingerprint_bits"):
        words.append(f"--fingerprint-bits {model['fingerprint_bits']}")
        if model.get("fingerprint_counts"):
            words.append("--fingerprint-counts")
    return " ".join(words)


@friendly_errors
def pretrain_command(
    objective: str = typer.Option("attribute_masking", help="Objectives, comma-separated (summed), or stages "
                                  "'context_prediction:10,supervised:5' ('+' joins objectives in a stage)."),
    corpus: str = typer.Option(None, help="Unlabelled SMILES: moses_train | moses_test | "
                               "moses_test_scaffolds, or a CSV/CSV.gz/.smi/.txt file."),
    smiles_column: str = typer.Option(None, help="SMILES column of a CSV corpus (default: 'smiles' in any case)."),
    objective_option: list[str] = typer.Option(
        None, "--objective-option", "-O", help="An objective's option as objective.option=value, "
        "repeatable: attribute_masking.mask_rate=0.25, 'graphcl.augmentations=\\[node_drop,subgraph]', "
        "edge_prediction.scale_by_sqrt_dim=false, context_prediction.r2=4 (every stage using the "
        "objective gets it)."),
    labels_dataset: str = typer.Option(None, help="Labelled molecules for 'supervised' stages: a benchmark "
                                       "name (e.g. toxcast) or a CSV of 0/1 labels."),
    labels_smiles_column: str = typer.Option("smiles", help="SMILES column of a --labels-dataset CSV."),
    featurizer: str = typer.Option("basic", help="basic (pretrain-gnns) | rich (OGB-like)."),
    init: str = typer.Option(None, help="Start from this checkpoint's encoder: bundled | bundled:<name> | "
                             "a path (encoder.pt or model.pt); its architecture and featurizer must match."),
    encoder: str = typer.Option("gin", help=f"{ENCODER_HELP}."),
    hidden_dim: int = typer.Option(300),
    num_layers: int = typer.Option(5),
    dropout: float = typer.Option(0.0, help="Encoder dropout while pretraining."),
    jk: str = typer.Option("last", help="Jumping knowledge: last | concat | max | sum."),
    pooling: str = typer.Option("mean", help=f"{POOLING_HELP}."),
    fingerprint_bits: int = typer.Option(0, help="Pretrain a fingerprint-fused encoder (GNN readout ⊕ this many "
                                         "ECFP4 bits → MLP 1024 → 512, FS-Mol's gnn+ecfp+fc) as a whole; "
                                         "'supervised' stages only. 0: graph encoder."),
    fingerprint_counts: bool = typer.Option(False, help="Fingerprint occurrence counts instead of bits (FS-Mol's ECFP input); with --fingerprint-bits."),
    epochs: int = typer.Option(100, help="Epochs when --objective gives no stages."),
    batch_size: int = typer.Option(256, help="Molecules per batch (per process under torchrun)."),
    lr: float = typer.Option(1e-3),
    limit: int = typer.Option(None, help="Use only the first N rows of the corpus."),
    shard_size: int = typer.Option(100_000, help="Corpus rows per featurization-cache shard."),
    jobs: int = typer.Option(1, help="Featurization worker processes (-1: all cores)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(None, help="torch threads (default: torch's choice)."),
    device: str = typer.Option("cpu", help="cpu | cuda (cuda:<LOCAL_RANK> under torchrun)."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (bfloat16 autocast: faster on CPUs with AMX/AVX512-BF16 and on GPUs)."),
    output: Path = typer.Option(Path("runs/pretrain"), help="Directory for config.yaml, last.pt, "
                                "encoder.pt, history.json."),
    resume: bool = typer.Option(True, help="Continue from OUTPUT/last.pt if it exists."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Pretrain a graph encoder (self-supervised and/or supervised) for `moladapt train --init`."""
    import torch
    import yaml

    from moladapt.bundled_models import resolve_init
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.pretrain import OBJECTIVES, pretrain, trained_on
    from moladapt.pretrain import distributed as ddp
    from moladapt.pretrain.corpus import featurize_corpus
    from moladapt.pretrain.objectives import parse_objective_options, with_options
    from moladapt.training import build_model
    from moladapt.utils import atomic_write_text, check_precision, write_json

    # checked before the corpus is read and featurized (pretrain() checks the precision too)
    check_precision(precision)
    if init is not None and not Path(str(resolve_init(init))).is_file():
        raise ValueError(f"--init {init}: no such checkpoint file")

    def log(message: str) -> None:
        typer.secho(message, fg=typer.colors.YELLOW, err=True)

    ctx = ddp.init_from_env(device)  # under torchrun: join the group now (pretrain() reuses it)
    main = ctx.is_main
    if threads:
        torch.set_num_threads(threads)
    stages = parse_objectives(objective, epochs)
    options = parse_objective_options(objective_option, [n for names, _ in stages for n in names])
    needs = [any(OBJECTIVES.get(n).needs_labels for n in names) for names, _ in stages]
    if any(needs) and not labels_dataset:
        raise ValueError("a 'supervised' stage needs --labels-dataset")
    if not all(needs) and not corpus:
        raise ValueError("self-supervised objectives need --corpus")
    if fingerprint_bits and not all(OBJECTIVES.get(n).molecule_level for names, _ in stages for n in names):
        raise ValueError("--fingerprint-bits: only 'supervised' stages can train a fingerprint-fused "
                         "encoder (self-supervised objectives work on the graph); pretrain the graph "
                         "encoder and fuse it when fine-tuning (train/few-shot --fingerprint-bits)")
    feat = get_featurizer(featurizer)

    if not main:
        ddp.barrier(ctx)  # rank 0 featurizes first; the other ranks then read its cache entries
    corpus_data = None
    if not all(needs):
        corpus_data = featurize_corpus(corpus, smiles_column, feat, limit=limit, shard_size=shard_size,
                                       n_jobs=jobs, log=log if main else None)
        if main:
            typer.echo(f"corpus {corpus_data.source}: {len(corpus_data)} molecules in "
                       f"{corpus_data.num_shards} shard(s), {corpus_data.num_invalid} invalid SMILES skipped")
    labelled = _load_labels(labels_dataset, labels_smiles_column, feat, log) if any(needs) else None
    if main:
        ddp.barrier(ctx)

    torch.manual_seed(seed)
    model_options = {"encoder": encoder, "hidden_dim": hidden_dim, "num_layers": num_layers,
                     "dropout": dropout, "jk": jk, "pooling": pooling}
    if fingerprint_bits:
        model_options["fingerprint_bits"] = fingerprint_bits
        model_options["fingerprint_counts"] = fingerprint_counts
    # the encoder is built first, so its weights are the same as build_encoder's with this seed
    enc = build_model(ModelConfig(**model_options), feat, 1).encoder
    init_record = None
    if init:
        from moladapt.pretrain.trainer import init_encoder_from

        init_record = init_encoder_from(enc, resolve_init(init), feat)
        if main:
            typer.echo(f"starting from {init_record['path']} (sha256 {init_record['sha256'][:12]}…)")
    config = {
        "init": None if init_record is None else {"option": init, "path": init_record["path"],
                                                  "sha256": init_record["sha256"]},
        "objective": objective, "stages": [{"objectives": n, "epochs": e} for n, e in stages],
        "objective_options": options,
        "corpus": corpus, "smiles_column": smiles_column, "limit": limit, "shard_size": shard_size,
        "labels_dataset": labels_dataset, "featurizer": featurizer,
        "model": model_options,
        "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
        "world_size": ctx.world_size,
    }
    # before training, so a crashed run still says what it was; but a last.pt to resume keeps
    # its config.yaml until pretrain() has accepted it (a refused resume must not rewrite it)
    resuming = resume and (output / "last.pt").exists()
    if main and not resuming:
        atomic_write_text(output / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    data_record = trained_on(corpus_data, labelled)
    default = corpus_data if corpus_data is not None else labelled.graphs
    stage_data = [(labelled.graphs, labelled.y) if need else None for need in needs]
    history = pretrain(enc, None, default, stages=[(with_options(names, options), n) for names, n in stages], batch_size=batch_size,
                       lr=lr, seed=seed, checkpoint_dir=output, resume=resume, progress=progress,
                       device=device, stage_data=stage_data, precision=precision, init_from=init_record,
                       data_record=data_record)
    if not main:
        return
    if resuming:
        atomic_write_text(output / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    summary: dict[str, Any] = {**history.to_dict(), "init": init_record, **data_record}
    if corpus_data is not None:
        summary["corpus"] = {**summary["corpus"], "invalid_examples": [
            {"line": line, "smiles": s} for line, s in corpus_data.invalid]}
    write_json(output / "history.json", summary)
    if history.start_epoch and not history.epochs_run:
        typer.echo(f"nothing to do: {output}/last.pt already has all {history.start_epoch} epochs")
    elif history.epochs:
        typer.echo(f"trained epochs {history.epochs_run[0]}..{history.epochs_run[-1]}; "
                   f"final loss {history.epochs[-1]['loss']:.4f}")
    if history.collapsed is not None:
        typer.echo(f"WARNING: the encoder collapsed at epoch {history.collapsed} (every atom gets the "
                   "same embedding): fine-tuning from it starts from a constant representation; "
                   "see history.json 'embedding_spread'", err=True)
    typer.echo(f"wrote {output}/config.yaml, last.pt, encoder.pt, history.json; "
               f"fine-tune with: {finetune_command(output / 'encoder.pt', featurizer, config['model'])}")
