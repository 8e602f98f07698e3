"""`moladapt train`: train and evaluate one model; write config.yaml, metrics.json, model.pt."""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import (
    ENCODER_HELP,
    POOLING_HELP,
    data_changes,
    friendly_errors,
    init_spec,
    options_given,
)


@friendly_errors
def train(
    ctx: typer.Context,
    dataset: str = typer.Option(None, help="A benchmark by name (see `moladapt datasets`)."),
    data: Path = typer.Option(None, help="Your own CSV/CSV.gz file instead of --dataset."),
    smiles_column: str = typer.Option("smiles", help="SMILES column of --data."),
    target_columns: str = typer.Option(None, help="Comma-separated label columns of --data (default: all others), or tasks of a --dataset (default: all)."),
    task_type: str = typer.Option(None, help="classification | regression (default: inferred)."),
    split: str = typer.Option("scaffold", help="random | scaffold | balanced_scaffold | stratified_random | predefined."),
    featurizer: str = typer.Option("basic", help="basic (pretrain-gnns) | rich (OGB-like)."),
    encoder: str = typer.Option("gin", help=f"{ENCODER_HELP}."),
    hidden_dim: int = typer.Option(300),
    num_layers: int = typer.Option(5),
    dropout: float = typer.Option(0.5),
    pooling: str = typer.Option("mean", help=f"{POOLING_HELP}."),
    jk: str = typer.Option("last", help="Jumping knowledge: last | concat | max | sum (as the --init encoder was pretrained)."),
    fingerprint_bits: int = typer.Option(0, help="Fuse the graph embedding with this many ECFP4 bits through an MLP (FS-Mol's gnn+ecfp+fc; 2048 there). 0: graph only."),
    fingerprint_counts: bool = typer.Option(False, help="Fingerprint occurrence counts instead of bits (FS-Mol's ECFP input); with --fingerprint-bits."),
    epochs: int = typer.Option(100),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3),
    patience: int = typer.Option(None, help="Early stopping: stop once the validation metric has not improved for more than this many epochs."),
    seed: int = typer.Option(0),
    init: Path = typer.Option(None, help="Start the encoder from this checkpoint, or bundled[:name] (the shipped pretrained encoder)."),
    freeze_encoder: bool = typer.Option(False, help="Train the head only (linear probe)."),
    head_only_epochs: int = typer.Option(0, help="Staged unfreezing: train the head only for this many epochs, then everything."),
    encoder_lr_scale: float = typer.Option(1.0, help="Encoder learning rate = lr × this (e.g. 0.1 for a pretrained encoder)."),
    threads: int = typer.Option(None, help="torch threads (default: torch's choice)."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (bfloat16 autocast while training: faster on CPUs with AMX/AVX512-BF16 and on GPUs)."),
    config: Path = typer.Option(None, help="A config.yaml to start from (options given here override it)."),
    output: Path = typer.Option(Path("runs/train"), help="Directory for config.yaml, metrics.json, model.pt."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    resume: bool = typer.Option(True, help="Continue an interrupted run from --output/resume.pt (--no-resume: start afresh)."),
) -> None:
    """Train a model on a benchmark or on your CSV and report its test metrics."""
    from moladapt.config import RunConfig
    from moladapt.experiment import run_training

    cfg = RunConfig.load(config) if config else RunConfig()

    def given(**options) -> dict:
        return options_given(ctx, config, **options)

    data_cfg = given(featurizer=featurizer, split=split)
    data_cfg.update(data_changes(ctx, config, cfg.data.csv, dataset=dataset, data=data,
                                 smiles_column=smiles_column, target_columns=target_columns,
                                 task_type=task_type))
    train_cfg = given(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
                      init=init_spec(init), freeze_encoder=freeze_encoder,
                      head_only_epochs=head_only_epochs, encoder_lr_scale=encoder_lr_scale,
                      threads=threads, precision=precision)
    if "threads" in train_cfg:
        train_cfg["num_threads"] = train_cfg.pop("threads")
    cfg = cfg.replace(
        data=data_cfg,
        model=given(encoder=encoder, hidden_dim=hidden_dim, num_layers=num_layers,
                    dropout=dropout, pooling=pooling, jk=jk, fingerprint_bits=fingerprint_bits,
                    fingerprint_counts=fingerprint_counts),
        train=train_cfg,
    )
    result = run_training(cfg, output, progress=progress, resume=resume, log=lambda m: typer.secho(m, fg=typer.colors.YELLOW, err=True))
    typer.echo(f"split sizes (train/valid/test): {'/'.join(map(str, result.split_sizes))}; "
               f"best epoch {result.best_epoch}; {result.molecules_per_second:.0f} mol/s")
    typer.echo(f"valid: {result.valid.summary()}")
    typer.echo(f"test:  {result.test.summary()}")
    typer.echo(f"wrote {output}/config.yaml, metrics.json, model.pt")
