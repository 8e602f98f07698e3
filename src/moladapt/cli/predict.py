"""`moladapt predict`: CSV in → CSV out, one prediction column per task."""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import friendly_errors


@friendly_errors
def predict(
    checkpoint: Path = typer.Argument(..., help="model.pt written by `moladapt train`."),
    input: Path = typer.Option(..., "--input", "-i", help="CSV with a SMILES column."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV to write."),
    smiles_column: str = typer.Option(None, help="Default: the SMILES column of the CSV the model was "
                                      "trained on, else 'smiles' (in any case)."),
) -> None:
    """Predict every row; rows with invalid SMILES are kept and flagged (valid_smiles = False)."""
    from moladapt.experiment import predict_csv

    out = predict_csv(checkpoint, input, output, smiles_column)
    n_bad = int((~out["valid_smiles"]).sum())
    typer.echo(f"wrote {len(out)} rows to {output}" + (f" ({n_bad} with invalid SMILES, flagged)" if n_bad else ""))
