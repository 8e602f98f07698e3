"""`moladapt inspect`: what a checkpoint is and what it was trained on, back through every --init."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from moladapt.cli.common import friendly_errors


@friendly_errors
def inspect_command(
    checkpoint: str = typer.Argument(..., help="A checkpoint (encoder.pt, model.pt, last.pt) or bundled[:name]."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole record as JSON."),
) -> None:
    """Say what a checkpoint holds (featurizer, architecture, tasks) and how it was trained:
    objectives, data, epochs, and the checkpoints it started from, each with its sha256."""
    from moladapt.bundled_models import resolve_init
    from moladapt.provenance import describe_checkpoint, format_description

    info = describe_checkpoint(Path(resolve_init(checkpoint)))
    typer.echo(json.dumps(info, indent=2) if as_json else format_description(info))
