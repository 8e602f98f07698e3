"""`moladapt demo`: train and evaluate on the bundled BBBP data in a few minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import friendly_errors


@friendly_errors
def demo(
    output: Path = typer.Option(Path("runs/demo"), help="Where the run's files go."),
    epochs: int = typer.Option(20),
    full: bool = typer.Option(False, help="Use the reference GIN 5×300 (slower) instead of 3×128."),
) -> None:
    """Train a GIN on bundled BBBP (scaffold split), evaluate it, and predict three molecules."""
    from moladapt.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from moladapt.experiment import predict_csv, run_training

    model = ModelConfig() if full else ModelConfig(hidden_dim=128, num_layers=3, dropout=0.2)
    cfg = RunConfig(data=DataConfig(dataset="bbbp", split="scaffold", featurizer="basic"),
                    model=model, train=TrainConfig(epochs=epochs, batch_size=32, seed=0))
    typer.echo(f"moladapt demo: GIN {model.num_layers}×{model.hidden_dim} on BBBP (scaffold split), {epochs} epochs")
    result = run_training(cfg, output, log=lambda m: typer.secho(m, fg=typer.colors.YELLOW, err=True))
    typer.echo(f"test ROC-AUC {result.test.mean['roc_auc']:.3f}  AUPRC {result.test.mean['auprc']:.3f}  "
               f"(train/valid/test {'/'.join(map(str, result.split_sizes))}, {result.n_invalid} invalid SMILES skipped)")
    examples = output / "examples.csv"
    examples.write_text("name,smiles\ncaffeine,Cn1cnc2c1c(=O)n(C)c(=O)n2C\n"
                        "penicillin G,CC1(C)SC2C(NC(=O)Cc3ccccc3)C(=O)N2C1C(=O)O\nnot a molecule,xyz\n")
    out = predict_csv(output / "model.pt", examples, output / "examples_predicted.csv")
    for _, row in out.iterrows():
        p = row["p_np_probability"]
        typer.echo(f"  {row['name']:<14} P(BBB-penetrating) = {'invalid SMILES' if p != p else f'{p:.2f}'}")
    typer.echo(f"files in {output}: config.yaml metrics.json model.pt examples.csv examples_predicted.csv")
