"""`moladapt adapt` (alias `moladapt auxiliary`): adapt an encoder to a target task by plain
fine-tuning, fine-tuning with auxiliary tasks (gradient surgery), or bi-level task weights.

    moladapt adapt --method rcgrad --dataset bbbp --init bundled --aux attrmask,edgepred,contextpred
    moladapt adapt --method blo+rcgrad --dataset bace --init bundled --aux attrmask,edgepred
    moladapt adapt --method finetune --dataset bace --init bundled
    moladapt auxiliary --dataset bbbp --aux attribute_masking,edge_prediction --combiner rcgrad
    moladapt auxiliary --dataset tox21 --bilevel --target NR-AR --sources all --aux none
    moladapt auxiliary --dataset bace --aux attrmask,graphcl -O attrmask.mask_rate=0.25 -O graphcl.temperature=0.2
"""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import (
    ENCODER_HELP,
    POOLING_HELP,
    data_changes,
    friendly_errors,
    init_spec,
    option_flags,
    options_given,
    split_list,
)


def _aux_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if value.strip().lower() in ("", "none"):
        return ()
    from moladapt.pretrain.objectives.base import canonical_objective

    return tuple(canonical_objective(n) for n in split_list(value)) or ()


def _merge_method(method: str, given: dict) -> dict:
    """``--method``'s settings under the options typed beside it; a contradiction is an error."""
    from moladapt.auxiliary_runs import method_changes

    implied = method_changes(method)
    flags = {"method": "--bilevel", "combiner": "--combiner", "aux_objectives": "--aux"}
    for key, value in implied.items():
        if key in given and given[key] != value:
            shown = "none" if value in (None, ()) else value
            raise ValueError(f"--method {method} sets {key} to {shown!r}, but {flags[key]} asks "
                             f"for {given[key]!r}; give one or the other")
    return {**given, **implied}


@friendly_errors
def auxiliary_command(
    ctx: typer.Context,
    method: str = typer.Option(None, help="finetune | aux (with --combiner) | sum | gcs | gns | pcgrad | "
                               "rcgrad | blo | blo+rcgrad (bi-level weights, any blo+<combiner>). "
                               "Sets --bilevel/--combiner/--aux none for you."),
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
    epochs: int = typer.Option(100),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3),
    patience: int = typer.Option(None, help="Stop after this many epochs without validation improvement."),
    seed: int = typer.Option(0),
    init: Path = typer.Option(None, help="Start the encoder from this (pretrained) checkpoint, or bundled[:name]."),
    encoder_lr_scale: float = typer.Option(1.0, help="Encoder learning rate = lr × this (auxiliary method)."),
    threads: int = typer.Option(None, help="torch threads (default: torch's choice)."),
    aux: str = typer.Option(None, help="Comma-separated auxiliary objectives: attribute_masking, "
                            "edge_prediction, context_prediction, infomax, graphcl; 'none' for none "
                            "(default: attribute_masking,edge_prediction)."),
    aux_option: list[str] = typer.Option(
        None, "--aux-option", "-O", help="An auxiliary objective's option as objective.option=value, "
        "repeatable: attribute_masking.mask_rate=0.25, graphcl.temperature=0.2, "
        "edge_prediction.scale_by_sqrt_dim=false."),
    combiner: str = typer.Option(None, help="Gradient combiner: rcgrad | gcs | gns | pcgrad | sum "
                                 "(with --bilevel also 'none': plain BLO; default: rcgrad)."),
    bilevel: bool = typer.Option(False, "--bilevel", help="Learn the task weights by bi-level optimisation."),
    sources: str = typer.Option(None, help="--bilevel: comma-separated supervised source columns, or 'all'."),
    target: str = typer.Option(None, help="The target column (default: all columns; with --bilevel --sources: the first)."),
    weighting: str = typer.Option(None, help="--bilevel: sigmoid | softmax (default: sigmoid)."),
    hypergradient: str = typer.Option(None, help="--bilevel: neumann | unrolled | exact (default: neumann)."),
    outer_steps: int = typer.Option(None, help="--bilevel: weight updates (default: --epochs worth of inner steps)."),
    inner_steps: int = typer.Option(None, help="--bilevel: model steps per weight update (default: 10)."),
    outer_lr: float = typer.Option(None, help="--bilevel: learning rate of the weight logits (default: 0.1)."),
    config: Path = typer.Option(None, help="A config.yaml (sections data/model/train/aux) to start from."),
    output: Path = typer.Option(Path("runs/auxiliary"), help="Directory for config.yaml, metrics.json, model.pt."),
) -> None:
    """Fine-tune with auxiliary tasks and report test metrics and how the tasks' gradients agreed."""
    import dataclasses

    from moladapt.auxiliary_runs import AuxConfig, load_configs, run_auxiliary
    from moladapt.config import RunConfig

    cfg, aux_cfg = load_configs(config) if config else (RunConfig(), AuxConfig())

    def given(**options) -> dict:
        return options_given(ctx, config, **options)

    data_cfg = given(featurizer=featurizer, split=split)
    data_cfg.update(data_changes(ctx, config, cfg.data.csv, dataset=dataset, data=data,
                                 smiles_column=smiles_column, target_columns=target_columns,
                                 task_type=task_type))
    train_cfg = given(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
                      init=init_spec(init), encoder_lr_scale=encoder_lr_scale,
                      threads=threads)
    if "threads" in train_cfg:
        train_cfg["num_threads"] = train_cfg.pop("threads")
    cfg = cfg.replace(
        data=data_cfg,
        model=given(encoder=encoder, hidden_dim=hidden_dim, num_layers=num_layers,
                    dropout=dropout, pooling=pooling),
        train=train_cfg,
    )
    options = {"aux_objectives": _aux_list(aux), "target": target, "weighting": weighting,
               "hypergradient": hypergradient, "outer_steps": outer_steps,
               "inner_steps": inner_steps, "outer_lr": outer_lr}
    changes = {k: v for k, v in options.items() if v is not None}  # the options typed
    if bilevel:
        changes["method"] = "bilevel"
    if sources is not None:
        changes["source_tasks"] = split_list(sources) or ()
    if combiner is not None:  # 'none' is a value (plain BLO), not "not given"
        changes["combiner"] = None if combiner.strip().lower() == "none" else combiner.strip()
    if method is not None:
        changes = _merge_method(method, changes)
    aux_cfg = dataclasses.replace(aux_cfg, **changes)
    if "combiner" in changes and not (aux_cfg.aux_objectives or aux_cfg.source_tasks):
        flag = f"--combiner {combiner}" if combiner is not None else f"--method {method}"
        raise ValueError(f"{flag} combines the gradients of auxiliary tasks with the target's, and "
                         "this run has none (--method finetune / --aux none): add --aux, or leave "
                         f"out {flag.split()[0]}")
    bilevel_only = [k for k in ("weighting", "hypergradient", "outer_steps", "inner_steps", "outer_lr")
                    if k in changes]
    if aux_cfg.method != "bilevel" and bilevel_only:
        raise ValueError(f"{option_flags(bilevel_only)} set the bi-level loop; add --bilevel "
                         "(or --method blo / blo+<combiner>)")
    if aux_option:
        from moladapt.pretrain.objectives import parse_objective_options

        merged = {n: dict(o) for n, o in (aux_cfg.objective_options or {}).items()}
        for name, options in parse_objective_options(aux_option, aux_cfg.aux_objectives).items():
            merged[name] = {**merged.get(name, {}), **options}
        aux_cfg = dataclasses.replace(aux_cfg, objective_options=merged)

    result = run_auxiliary(cfg, aux_cfg, output,
                           log=lambda m: typer.secho(m, fg=typer.colors.YELLOW, err=True))
    typer.echo(f"{aux_cfg.label()}: split sizes (train/valid/test): "
               f"{'/'.join(map(str, result.split_sizes))}; best "
               f"{'outer step' if aux_cfg.method == 'bilevel' else 'epoch'} {result.best_epoch}")
    for task, stats in result.details.get("gradient_log", {}).get("tasks", {}).items():
        typer.echo(f"  {task}: mean cosine to the target {stats['mean_cosine']:+.3f}, "
                   f"conflicting in {100 * stats['conflict_fraction']:.0f}% of steps")
    kept = result.details.get("weights_at_best_step", {})
    for task, weight in result.details.get("weights", {}).items():
        typer.echo(f"  learned weight {task}: {weight:.3f} at the end"
                   + (f" ({kept[task]:.3f} at outer step {result.best_epoch}, the model kept)"
                      if task in kept and abs(kept[task] - weight) > 5e-4 else ""))
    spread = result.details.get("embedding_spread")
    if spread:
        typer.echo(f"  atom-embedding spread (max per-dimension std): {spread[0]:.3g} before, "
                   f"{spread[-1]:.3g} after")
    unit = "outer_step" if aux_cfg.method == "bilevel" else "epoch"
    if result.details.get(f"collapsed_{unit}") is not None:
        typer.secho(f"WARNING: the encoder collapsed at {unit.replace('_', ' ')} "
                    f"{result.details[f'collapsed_{unit}']} (every "
                    "atom gets the same embedding): an auxiliary objective has destroyed the "
                    "representation the target needs; try a combiner that bounds the auxiliary "
                    "gradients by the target's (gns) or lower auxiliary weights", fg=typer.colors.RED, err=True)
    typer.echo(f"valid: {result.valid.summary()}")
    typer.echo(f"test:  {result.test.summary()}")
    typer.echo(f"wrote {output}/config.yaml, metrics.json, model.pt")
