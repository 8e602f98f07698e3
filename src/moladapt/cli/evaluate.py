"""`moladapt evaluate`: score a saved model on a dataset or CSV."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from moladapt.cli.common import (
    check_one_source,
    friendly_errors,
    option_flags,
    split_list,
    typed_options,
)


@friendly_errors
def evaluate(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="model.pt written by `moladapt train`."),
    dataset: str = typer.Option(None, help="A benchmark by name."),
    data: Path = typer.Option(None, help="Your CSV instead of --dataset."),
    smiles_column: str = typer.Option(None, help="SMILES column of --data. Default: the SMILES column of the CSV "
                                      "the model was trained on, else 'smiles' (in any case)."),
    target_columns: str = typer.Option(None, help="Comma-separated label columns of --data: the model's task names (some of "
                                      "them: only those are scored), or one column per task in the model's task order under "
                                      "other names (default: the model's tasks)."),
    part: str = typer.Option(None, help="train | valid | test: score one part of the run's split. Default: test "
                             "when neither --dataset nor --data is given (the run's own data), else all of the data."),
    output: Path = typer.Option(Path("runs/evaluate"), help="Directory for metrics.json and config.yaml."),
) -> None:
    """Evaluate a trained model; metrics are written to OUTPUT/metrics.json and what was
    evaluated (checkpoint, data, part) to OUTPUT/config.yaml."""
    import yaml

    from moladapt.config import RunConfig
    from moladapt.data.sources import csv_header, find_smiles_column, load_csv, load_dataset
    from moladapt.experiment import (
        evaluate_checkpoint,
        is_the_runs_data,
        label_columns_for,
        smiles_column_candidates,
    )
    from moladapt.training import load_checkpoint
    from moladapt.utils import atomic_write_text, write_json

    if part is not None and part not in ("train", "valid", "test"):
        raise ValueError(f"--part must be train, valid or test, got {part!r}")
    check_one_source(dataset, data)
    if (output / "model.pt").exists():
        raise ValueError(f"--output {output} holds a trained model, whose metrics.json and "
                         "config.yaml an evaluation would replace; give another --output")
    loaded = load_checkpoint(checkpoint)
    loaded.require_trained_head(checkpoint)
    # the config the model was trained with travels inside it; config.yaml beside it may have
    # been rewritten since (a later run into the same folder that failed)
    cfg = None
    run_cfg_path = checkpoint.parent / "config.yaml"
    if (loaded.extra or {}).get("run_config"):
        cfg = RunConfig.from_dict(loaded.extra["run_config"])
    elif run_cfg_path.exists():
        cfg = RunConfig.load(run_cfg_path)
    typed = typed_options(ctx, smiles_column=smiles_column, target_columns=target_columns)
    if data is None and typed:
        raise ValueError(f"{option_flags(typed)} describe a CSV "
                         "given with --data; without --data the labels are the benchmark's or the run's")
    if data is not None:
        columns, tasks = label_columns_for(list(loaded.task_names), split_list(target_columns))
        smiles_column = find_smiles_column(data, csv_header(data), smiles_column,
                                           smiles_column_candidates(loaded.extra))
        # The model's task type, not one guessed from the labels; a task with one class in
        # this file is reported as skipped by the metrics, not refused.
        labeled = load_csv(data, smiles_column, columns, task_type=loaded.task_type, strict=False)
        labeled = dataclasses.replace(labeled, task_names=tasks)
    elif dataset is not None:
        labeled = load_dataset(dataset)
    elif cfg is not None:
        from moladapt.experiment import load_data

        labeled = load_data(cfg)
        if part is None:  # all of it would score the training molecules too
            part = "test"
            typer.echo("scoring the test part of the run's split (--part to choose another)", err=True)
    else:
        raise ValueError("give --dataset or --data (no config.yaml beside the checkpoint)")
    report, prepared = evaluate_checkpoint(checkpoint, labeled, split=part, cfg=cfg, loaded=loaded)
    if prepared.invalid:
        typer.secho(prepared.invalid_summary(), fg=typer.colors.YELLOW, err=True)
    if part is None and cfg is not None and is_the_runs_data(labeled, cfg):
        typer.secho(f"warning: {labeled.source} is the data the model was trained on, and all of it "
                    "was scored, training molecules included; --part test scores the held-out part",
                    fg=typer.colors.YELLOW, err=True)
    output.mkdir(parents=True, exist_ok=True)
    evaluation = {"command": "evaluate", "checkpoint": str(Path(checkpoint).resolve()),
                  "data": {"dataset": dataset, "csv": None if data is None else str(Path(data).resolve()),
                           "smiles_column": smiles_column if data is not None else None,
                           "label_columns": None if data is None else dict(zip(labeled.task_names, columns, strict=True)),
                           "source": labeled.source},
                  "part": part or "all", "data_sha256": labeled.fingerprint(),
                  "model_run_config": None if cfg is None else cfg.to_dict()}
    atomic_write_text(output / "config.yaml", yaml.safe_dump(evaluation, sort_keys=False))
    write_json(output / "metrics.json", {"checkpoint": str(checkpoint), "source": labeled.source,
                                         "part": part or "all", "metrics": report.to_dict(),
                                         "n_invalid_smiles": len(prepared.invalid),
                                         "invalid_smiles": [{"line": line, "smiles": smi}
                                                            for line, smi in prepared.invalid]})
    typer.echo(report.summary())
    typer.echo(f"wrote {output}/metrics.json")
