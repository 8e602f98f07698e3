"""`moladapt transfer`: one TDC ADMET target trained with source properties and transfer ratios.

A thin wrapper over :func:`moladapt.transfer.transfer` (the library does the work).
"""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import ENCODER_HELP, friendly_errors


@friendly_errors
def transfer_command(
    target: str = typer.Option(..., help="TDC ADMET target, e.g. caco2_wang (see `moladapt datasets`), or your "
                               "CSV: a SMILES column and the label column."),
    target_column: str = typer.Option(None, help="CSV target: its label column (default: the one column besides the SMILES)."),
    smiles_column: str = typer.Option(None, help="CSV target: its SMILES column (default: 'smiles' in any case)."),
    split: str = typer.Option("scaffold", help="CSV target: how its molecules are split 80/10/10 (scaffold | random | "
                              "balanced_scaffold | stratified_random); a TDC target keeps TDC's split."),
    sources: str = typer.Option("all", help="all, or comma-separated TDC names; sources of another task type are left out."),
    ratios: str = typer.Option("bilevel", help="bilevel (learned by bi-level optimisation) | uniform (all 1) | none (single-task); "
                               "comma-separated to compare them."),
    seed: str = typer.Option("0", help="A seed, or comma-separated seeds: with several ratios or seeds, one run each in "
                             "OUTPUT/<ratios>_seed<s>/ and OUTPUT/comparison.md (paired over seeds against none; "
                             "rerun to finish a killed comparison)."),
    epochs: int = typer.Option(50, help="Passes over the (multi-task) training set."),
    encoder: str = typer.Option("gin", help=f"{ENCODER_HELP}."),
    hidden_dim: int = typer.Option(128),
    num_layers: int = typer.Option(3),
    dropout: float = typer.Option(0.2),
    featurizer: str = typer.Option("basic", help="basic (pretrain-gnns) | rich (OGB-like)."),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3),
    extra_ratio: float = typer.Option(4.0, help="Cap of source-only molecules, × the target's training molecules (0 or less: no cap)."),
    inner_steps: int = typer.Option(10, help="Bi-level: optimiser steps per ratio update."),
    outer_lr: float = typer.Option(0.1, help="Bi-level: learning rate of the ratios."),
    hypergradient: str = typer.Option("neumann", help="neumann | unrolled | exact."),
    threads: int = typer.Option(1, help="torch threads."),
    output: Path = typer.Option(Path("runs/transfer"), help="Directory for config.yaml, metrics.json and model.pt."),
) -> None:
    """Train a target (TDC ADMET, or your CSV) with TDC ADMET properties as sources; report its metric and the ratios."""
    from moladapt.cli.common import split_list
    from moladapt.transfer import compare_methods, transfer
    from moladapt.utils import atomic_write_text

    all_ratios = split_list(ratios) or []
    try:
        seeds = [int(s) for s in split_list(seed) or []]
    except ValueError:
        raise ValueError(f"--seed takes integers, comma-separated; got {seed!r}") from None
    if not all_ratios or not seeds:
        raise ValueError("give at least one --ratios and one --seed")

    def run(one_ratios: str, one_seed: int, out: Path, reuse: bool = False) -> dict:
        return transfer(target, one_ratios, sources, one_seed, out, target_column=target_column,
                        smiles_column=smiles_column, split=split, reuse=reuse, epochs=epochs,
                        encoder=encoder, hidden_dim=hidden_dim, num_layers=num_layers,
                        dropout=dropout, featurizer=featurizer, batch_size=batch_size, lr=lr,
                        extra_ratio=extra_ratio if extra_ratio > 0 else None,
                        inner_steps=inner_steps, outer_lr=outer_lr, hypergradient=hypergradient,
                        threads=threads, log=lambda message: typer.echo(message, err=True))

    if len(all_ratios) > 1 or len(seeds) > 1:
        records = []
        for one_seed in seeds:
            for one_ratios in all_ratios:
                rec = run(one_ratios, one_seed, output / f"{one_ratios}_seed{one_seed}", reuse=True)
                typer.echo(f"{one_ratios} seed {one_seed}: test {rec['metric']} {rec['test_value']:.4f}", err=True)
                records.append(rec)
        text = f"# {records[0]['target']}: transfer compared over seeds {', '.join(map(str, seeds))}\n\n"
        text += compare_methods(records)
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / "comparison.md", text)
        typer.echo(text)
        typer.echo(f"wrote {output}/comparison.md; each run's model in {output}/<ratios>_seed<s>/model.pt")
        return
    rec = run(all_ratios[0], seeds[0], output)
    typer.echo(f"{rec['target']} ({rec['task_type']}): {rec['n_train']} training molecules + "
               f"{rec['n_train_mt'] - rec['n_train']} source-only; {len(rec['sources'])} sources")
    typer.echo(f"{rec['method']}: test {rec['metric']} {rec['test_value']:.4f}, valid "
               f"{rec['valid_value']:.4f}; train {rec['train_seconds']:.1f} s")
    weights = rec.get("weights") or {}
    if weights:
        typer.echo(f"learned ratios at the end of the run (the model kept is from outer step "
                   f"{rec.get('best_step')}; its ratios: metrics.json weights_at_best_step):")
    for name, w in sorted(weights.items(), key=lambda kv: -kv[1])[:10]:
        typer.echo(f"  ratio {name.removeprefix('tdc_'):<34} {w:.3f}")
    typer.echo(f"wrote {output}/config.yaml, metrics.json, model.pt (moladapt predict {output}/model.pt -i new.csv -o scored.csv)")
