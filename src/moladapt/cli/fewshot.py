"""`moladapt meta-train`, `moladapt few-shot`, `moladapt few-shot-plot`: the few-shot protocol.

Thin wrappers over :mod:`moladapt.fewshot` (the library does the work).
"""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import (
    ENCODER_HELP,
    POOLING_HELP,
    friendly_errors,
    parse_params,
    split_list,
    typed_options,
)

_METHOD_HELP = "maml | fomaml | anil | protonet | finetune | linear_probe, or (few-shot only) rf-ecfp | knn-ecfp."
_TASKS_HELP = ("fsmol-train | fsmol-valid | fsmol-test, a multi-task classification benchmark "
               "(tox21, toxcast, ...) or your CSV (a smiles column, one 0/1 column per task); "
               "'<tasks>:<n>' keeps a seeded random subset of n tasks.")
_PARAM_HELP = "Another hyper-parameter of the method, as name=value (repeatable), e.g. distance=mahalanobis."


def _spec(tasks: str, max_tasks: int | None) -> str:
    return tasks if max_tasks is None else f"{tasks}:{max_tasks}"


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _summary_lines(summary) -> list[str]:
    lines = []
    for row in summary.itertuples(index=False):
        ci = ("" if row.delta_auprc_ci_low != row.delta_auprc_ci_low  # NaN: fewer than 2 tasks
              else f" [{row.delta_auprc_ci_low:+.3f}, {row.delta_auprc_ci_high:+.3f}]")
        lines.append(f"  {row.method:>12}  k={row.k:<4d} ΔAUPRC {row.delta_auprc_mean:+.3f}{ci}  "
                     f"AUPRC {row.auprc_mean:.3f}  ROC-AUC {row.roc_auc_mean:.3f}  "
                     f"({row.n_tasks} tasks, {row.n_tasks_skipped} too small)")
    return lines


def _support_sizes(text: str, option: str) -> list[int]:
    """Comma-separated support sizes, e.g. ``"16,128"``."""
    sizes = split_list(text)
    if not sizes:
        raise ValueError(f"{option} needs at least one support size")
    try:
        return [int(k) for k in sizes]
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, got {text!r}") from None


@friendly_errors
def meta_train_command(
    ctx: typer.Context,
    method: str = typer.Option(..., help="maml | fomaml | anil | protonet (an adapter with meta-training)."),
    tasks: str = typer.Option("fsmol-train", help=_TASKS_HELP),
    max_tasks: int = typer.Option(None, help="Meta-train on a seeded random subset of this many tasks."),
    encoder: str = typer.Option("gin", help=f"{ENCODER_HELP} (with --init: must match the checkpoint)."),
    hidden_dim: int = typer.Option(300),
    num_layers: int = typer.Option(5),
    dropout: float = typer.Option(0.0, help="Encoder dropout in meta-training (also replaces an --init checkpoint's)."),
    jk: str = typer.Option("last", help="Layer aggregation: last | concat | max | sum (with --init: must match the checkpoint)."),
    pooling: str = typer.Option("mean", help=f"Graph readout: {POOLING_HELP} (with --init: must match the checkpoint)."),
    fingerprint_bits: int = typer.Option(0, help="Fuse the graph embedding with this many ECFP4 bits through an MLP 1024 → 512 (FS-Mol's ProtoNet features gnn+ecfp+fc use 2048). 0: graph only."),
    fingerprint_counts: bool = typer.Option(False, help="Fingerprint occurrence counts instead of bits (FS-Mol's ECFP input); with --fingerprint-bits."),
    featurizer: str = typer.Option("basic", help="basic (pretrain-gnns) | rich (OGB-like)."),
    meta_steps: int = typer.Option(None, help="Outer (meta) steps (default: the method's, 300)."),
    inner_steps: int = typer.Option(None, help="Inner-loop steps (MAML family; default: the method's)."),
    inner_lr: float = typer.Option(None, help="Inner-loop learning rate (MAML family)."),
    meta_batch_size: int = typer.Option(None, help="Tasks per outer step (default 4)."),
    meta_lr: float = typer.Option(None, help="Outer Adam learning rate (default 1e-3)."),
    param: list[str] = typer.Option(None, "--param", "-p", help=_PARAM_HELP),
    seed: int = typer.Option(0, help="Encoder initialisation, episodes and head."),
    init: Path = typer.Option(None, help="Start from this checkpoint's encoder (train / pretrain / meta-train), or bundled[:name]."),
    valid_tasks: str = typer.Option(None, help="Held-out tasks for model selection (e.g. fsmol-valid): keep the best-scoring "
                                    "state (mean ΔAUPRC) instead of the last. Same spec syntax as --tasks."),
    validate_every: int = typer.Option(50, help="Outer steps between validations (with --valid-tasks)."),
    validation_support: str = typer.Option("16", help="Comma-separated support sizes of the validation episodes "
                                           "(FS-Mol's trainers: 16,128)."),
    validation_draws: int = typer.Option(1, help="Validation episodes per task (the same ones every time)."),
    checkpoint_every: int = typer.Option(100, help="Save OUTPUT/resume.pt every this many outer steps; rerunning the "
                                         "same command continues from it (also to train further with a larger "
                                         "--meta-steps). 0: off."),
    threads: int = typer.Option(None, help="torch threads (default: torch's choice)."),
    output: Path = typer.Option(Path("runs/meta-train"), help="Directory for model.pt, meta.json, config.yaml."),
) -> None:
    """Meta-train a few-shot method on many tasks (FS-Mol's training tasks by default)."""
    from moladapt.fewshot import build_adapter, meta_train, resolve_tasks

    _threads(threads)
    hparams = {name: value for name, value in (
        ("meta_steps", meta_steps), ("inner_steps", inner_steps), ("inner_lr", inner_lr),
        ("meta_batch_size", meta_batch_size), ("meta_lr", meta_lr)) if value is not None}
    hparams.update(parse_params(param))
    build_adapter(method, hparams, seed)  # a bad method or hyper-parameter fails before loading tasks
    task_list = resolve_tasks(tasks, max_tasks=max_tasks, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"meta-training {method} on {len(task_list)} tasks ({_spec(tasks, max_tasks)})", err=True)
    encoder_cfg = {"encoder": encoder, "hidden_dim": hidden_dim, "num_layers": num_layers,
                   "dropout": dropout, "jk": jk, "pooling": pooling, "fingerprint_bits": fingerprint_bits,
                   "fingerprint_counts": fingerprint_counts}
    if init is not None:  # the checkpoint fixes the architecture: only typed options count (checked)
        encoder_cfg = typed_options(ctx, **encoder_cfg)
    result = meta_train(
        method, task_list,
        encoder_cfg=encoder_cfg,
        featurizer=featurizer, hparams=hparams, init=init, output=output, seed=seed,
        tasks_name=_spec(tasks, max_tasks), valid_tasks=valid_tasks, validate_every=validate_every,
        validation_support=_support_sizes(validation_support, "--validation-support"), validation_draws=validation_draws,
        checkpoint_every=checkpoint_every,
    )
    info = result.info
    loss = "" if info["final_loss"] is None else f"; final meta-loss {info['final_loss']:.4f}"
    resumed = f" (resumed from step {info['resumed_from_step']})" if info["resumed_from_step"] else ""
    typer.echo(f"{method}: {len(result.history)} meta steps{resumed} in {info['seconds']:.1f}s{loss}")
    if info["skipped_train_tasks"]:
        example = next(iter(info["skipped_examples"].items()))
        typer.echo(f"left out {info['skipped_train_tasks']} of {len(task_list)} training tasks too small "
                   f"for a train_k={info['params'].get('train_k')} episode (e.g. {example[0]}: {example[1]}); "
                   "meta.json lists the count", err=True)
    checked = info["validation"]
    if checked is not None:
        scores = dict(checked["scores"])

        def shown(step: int) -> str:
            return "n/a" if scores[step] is None else f"{scores[step]:+.3f}"

        best = checked["best_step"]
        kept = "the last state (no validation task fits k)" if best is None else f"step {best} (ΔAUPRC {shown(best)})"
        typer.echo(f"validation on {valid_tasks}: {len(scores)} checks; kept {kept}; "
                   f"last step ΔAUPRC {shown(max(scores))}")
    typer.echo(f"wrote {output}/model.pt, meta.json, config.yaml")


@friendly_errors
def few_shot_command(
    method: str = typer.Option(..., help=_METHOD_HELP),
    tasks: str = typer.Option("fsmol-test", help=_TASKS_HELP),
    max_tasks: int = typer.Option(None, help="Evaluate on a seeded random subset of this many tasks."),
    checkpoint: Path = typer.Option(None, help="model.pt from `moladapt meta-train` (or any moladapt checkpoint). "
                                    "Without one, adapters start from a random GIN; baselines need none."),
    support: str = typer.Option("16,32,64,128,256", help="Comma-separated support sizes k."),
    draws: int = typer.Option(10, help="Episodes per task and k."),
    seed: int = typer.Option(0, help="Episode seed (draw d uses seed + d)."),
    param: list[str] = typer.Option(None, "--param", "-p", help=_PARAM_HELP),
    label: str = typer.Option(None, help="Name of the method in the results (default: --method)."),
    threads: int = typer.Option(None, help="torch threads (default: torch's choice)."),
    output: Path = typer.Option(Path("runs/few-shot"), help="Directory for results.csv, summary.csv, metrics.json, config.yaml and the plot."),
    plot: bool = typer.Option(True, help="Write OUTPUT/delta_auprc_vs_k.png."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Evaluate a method with the few-shot protocol (resumable: rerun to finish a killed run)."""
    from tqdm.auto import tqdm

    from moladapt.fewshot import BASELINES, check_method, check_protocol, few_shot, resolve_tasks

    _threads(threads)
    check_method(method, checkpoint)
    ks = _support_sizes(support, "--support")
    check_protocol(ks, draws)  # before the tasks are loaded
    task_list = resolve_tasks(tasks, max_tasks=max_tasks, log=lambda m: typer.echo(m, err=True))
    if checkpoint is None and method not in BASELINES:
        typer.secho(f"note: no --checkpoint: {method} adapts a randomly initialised GIN (5 x 300)",
                    fg=typer.colors.YELLOW, err=True)
    total = len(task_list) * len(set(ks)) * draws
    bar = tqdm(total=total, desc=f"{label or method}", unit="episode", disable=not progress, leave=False)
    try:
        run = few_shot(method, task_list, checkpoint=checkpoint, support_sizes=ks, draws=draws,
                       output=output, seed=seed, hparams=parse_params(param), label=label, plot=plot,
                       progress=lambda row: bar.update(1), tasks_name=_spec(tasks, max_tasks))
    finally:
        bar.close()
    done = int((run.results["status"] == "ok").sum())
    skipped = int((run.results["status"] == "skipped").sum())
    typer.echo(f"{len(task_list)} tasks × k in {{{', '.join(map(str, sorted(set(ks))))}}} × {draws} draws: "
               f"{run.n_new} new episodes, {len(run.results) - run.n_new} from {output}/results.csv; "
               f"{done} scored, {skipped} skipped (task too small for k)")
    for line in _summary_lines(run.summary):
        typer.echo(line)
    written = "results.csv, summary.csv, metrics.json, config.yaml" + (", delta_auprc_vs_k.png" if run.plot else "")
    typer.echo(f"wrote {output}/{written}")
    if done == 0:
        reasons = run.results.loc[run.results["status"] == "skipped", "reason"].dropna().unique()[:2]
        typer.secho("no episode could be scored" + (f" (e.g. {'; '.join(map(str, reasons))})" if len(reasons) else "")
                    + ": use smaller --support sizes or larger tasks", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@friendly_errors
def plot_command(
    results: list[Path] = typer.Argument(..., help="results.csv files written by `moladapt few-shot`."),
    output: Path = typer.Option(Path("delta_auprc_vs_k.png"), "--output", "-o", help="PNG to write."),
    metric: str = typer.Option("delta_auprc", help="delta_auprc | auprc | roc_auc."),
    title: str = typer.Option(None, help="Plot title (default: says the tasks and draws behind each point)."),
) -> None:
    """Plot mean ΔAUPRC against support size k, one line per method, with 95% bootstrap bands."""
    from moladapt.fewshot import plot_delta_auprc_vs_k

    path = plot_delta_auprc_vs_k(list(results), output, metric=metric, title=title)
    typer.echo(f"wrote {path}")


@friendly_errors
def compare_command(
    results: list[Path] = typer.Argument(..., help="results.csv files written by `moladapt few-shot`."),
    baseline: str = typer.Option(None, help="Method every other is compared with (default: every pair)."),
    metric: str = typer.Option("delta_auprc", help="delta_auprc | auprc | roc_auc."),
    output: Path = typer.Option(None, "--output", "-o", help="Also write the table as CSV."),
) -> None:
    """Paired comparison per support size k on the episodes all runs share: mean difference over
    tasks with its 95% bootstrap CI, Wilcoxon signed-rank p, Holm-adjusted over every row."""
    from moladapt.fewshot import compare_few_shot
    from moladapt.utils import atomic_write_text

    table = compare_few_shot(list(results), baseline=baseline, metric=metric)
    for r in table.itertuples():
        verdict = f"{r.direction}, significant" if r.significant else "no significant difference"
        typer.echo(f"k={int(r.k):>4}  {r.method} vs {r.baseline}: {metric} {r.mean_diff:+.4f} "
                   f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] over {int(r.n_pairs)} tasks, "
                   f"Holm p = {r.p_wilcoxon_holm:.2g} ({verdict})" + (f"; {r.note}" if r.note else ""))
    if output is not None:
        atomic_write_text(output, table.to_csv(index=False))
        typer.echo(f"wrote {output}")
