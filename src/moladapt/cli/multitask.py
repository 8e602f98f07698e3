"""`moladapt multitask`: structured multi-task learning (SGNN-EBM) and its baselines.

A thin wrapper over :func:`moladapt.multitask.run_multitask` (the library does the work).
"""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import ENCODER_HELP, friendly_errors, parse_params

_METHOD_HELP = "single-task | multi-task | uncertainty | gradnorm | sgnn | sgnn-ebm."
_GRAPH_HELP = ("coactivity (label co-activity on the training rows) | toxcast-names | none | "
               "an edge-list CSV/TSV with columns task_a, task_b[, weight].")
_PARAM_HELP = ("Another hyper-parameter of the method, as name=value (repeatable), e.g. "
               "coupling=0.5 or n_noise=8 (SGNN-EBM), alpha=1.5 (gradnorm).")


def _split_frac(value: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"--split-frac expects three numbers like 0.8,0.1,0.1, got {value!r}") from None
    if len(parts) != 3:
        raise ValueError(f"--split-frac expects three numbers like 0.8,0.1,0.1, got {value!r}")
    return parts  # type: ignore[return-value]


@friendly_errors
def multitask_command(
    method: str = typer.Option("sgnn-ebm", help=_METHOD_HELP),
    dataset: str = typer.Option("tox21", help="A multi-task classification benchmark (tox21, toxcast, sider, ...), fsmol-train (needs --dense) "
                                "or your CSV (a smiles column, one 0/1 column per task)."),
    task_graph: str = typer.Option("coactivity", help=_GRAPH_HELP),
    dense: int = typer.Option(None, help="Dense-N: keep tasks with >= N positives and >= N negatives (and their molecules)."),
    min_tasks_per_molecule: int = typer.Option(1, help="With --dense: keep only molecules measured on >= M of the kept tasks (FS-Mol: 3)."),
    max_tasks: int = typer.Option(None, help="Keep only the first N tasks (after --dense)."),
    split_frac: str = typer.Option("0.8,0.1,0.1", help="train,valid,test fractions of the filtered random split."),
    seed: int = typer.Option(0, help="Training seed (and split seed unless --split-seed)."),
    split_seed: int = typer.Option(None, help="Seed of the split (default: --seed)."),
    epochs: int = typer.Option(100, help="Training epochs (SGNN-EBM: of the SGNN stage)."),
    ebm_epochs: int = typer.Option(None, help="SGNN-EBM's EBM stage epochs (default: max(1, epochs // 2))."),
    encoder: str = typer.Option("gin", help=f"{ENCODER_HELP}."),
    hidden_dim: int = typer.Option(300),
    num_layers: int = typer.Option(5),
    dropout: float = typer.Option(0.5),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3),
    featurizer: str = typer.Option("basic", help="basic (pretrain-gnns) | rich (OGB-like)."),
    graph_method: str = typer.Option("jaccard", help="Co-activity score: jaccard | correlation."),
    graph_threshold: float = typer.Option(0.3, help="Co-activity edge threshold."),
    graph_min_common: int = typer.Option(20, help="Co-activity: molecules measured on both tasks needed for an edge."),
    param: list[str] = typer.Option(None, "--param", "-p", help=_PARAM_HELP),
    threads: int = typer.Option(None, help="torch threads (default: torch's choice)."),
    output: Path = typer.Option(Path("runs/multitask"), help="Directory for config.yaml and metrics.json."),
) -> None:
    """Train one multi-task method over a task-relation graph; report the graph and test ROC-AUC."""
    from moladapt.multitask import run_multitask

    result = run_multitask(
        dataset, method, task_graph, output=output,
        log=lambda m: typer.secho(m, err=True, fg=typer.colors.BRIGHT_BLACK),
        dense_n=dense, min_tasks_per_molecule=min_tasks_per_molecule, max_tasks=max_tasks,
        split_frac=_split_frac(split_frac), seed=seed,
        split_seed=split_seed, epochs=epochs, ebm_epochs=ebm_epochs, encoder=encoder,
        hidden_dim=hidden_dim, num_layers=num_layers, dropout=dropout, batch_size=batch_size,
        lr=lr, featurizer=featurizer, graph_method=graph_method, graph_threshold=graph_threshold,
        graph_min_common=graph_min_common, num_threads=threads, params=parse_params(param),
    )
    g = result.graph_stats
    typer.echo(f"{result.dataset}: {result.n_molecules} molecules × {result.n_tasks} tasks; "
               f"split (train/valid/test) {'/'.join(map(str, result.split_sizes))}")
    typer.echo(f"task graph ({task_graph}): {g['nodes']} nodes, {g['edges']} edges, mean degree "
               f"{g['mean_degree']:.2f}, max degree {g['max_degree']}, {g['isolated_nodes']} isolated, "
               f"{g['components']} components, density {g['density']:.3f}")
    typer.echo(f"{method}: test ROC-AUC {result.test_roc_auc:.4f} "
               f"({result.test.n_tasks_scored}/{result.test.n_tasks} tasks scored); "
               f"valid {result.valid.mean.get('roc_auc', float('nan')):.4f}")
    typer.echo(f"train {result.train_seconds:.1f} s; test inference {result.inference_seconds:.2f} s")
    typer.echo(f"wrote {output}/config.yaml, metrics.json")
