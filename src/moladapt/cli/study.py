"""`moladapt study`: plan, run, inspect and export a grid of runs described by a YAML file."""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import friendly_errors, study_grid

study_app = typer.Typer(help="Grids of runs from a study YAML: plan, run (resumable), status, export.",
                        no_args_is_help=True, add_completion=False)


def _require_db(db: Path) -> None:
    if not db.exists():
        raise FileNotFoundError(f"no study database at {db} (create one with `moladapt study run`)")


@study_app.command("plan")
@friendly_errors
def plan_cmd(file: Path = typer.Argument(..., help="The study YAML file.")) -> None:
    """Show the grid a study file expands to, and an estimate of its cost."""
    from moladapt.study.spec import StudySpec, plan

    typer.echo(plan(StudySpec.load(file)))


@study_app.command("run")
@friendly_errors
def run_cmd(
    file: Path = typer.Argument(..., help="The study YAML file."),
    db: Path = typer.Option(..., help="SQLite results database (created if missing; run files go "
                            "next to it, under runs/<key>/)."),
    executor: str = typer.Option("local", help="local (process pool) | ray."),
    address: str = typer.Option(None, help="Ray cluster address (default: auto, a running cluster; "
                                "'local' starts Ray on this machine for the study)."),
    workers: int = typer.Option(None, help="Runs at once (default: CPU count, or the cluster's CPUs)."),
    retry_failed: bool = typer.Option(False, help="Run failed runs again."),
    threads: int = typer.Option(None, help="torch/BLAS threads per run (default: CPU count ÷ "
                                "--workers; fewer on a machine shared with other jobs)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Run every run of a study not done yet. Safe to interrupt and to run twice at once."""
    import os

    from moladapt.study.executors import run_study

    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        os.environ["MOLADAPT_STUDY_THREADS"] = str(threads)  # read by the executors' workers

    try:
        counts = run_study(file, db, executor=executor, workers=workers, retry_failed=retry_failed,
                           address=address, progress=progress)
    except ImportError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.secho(f"interrupted: finished runs are stored in {db}, the runs in progress were given "
                    "back; the same command resumes the study", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    typer.echo(_counts_line(counts))
    if counts["failed"]:
        typer.secho(f"{counts['failed']} run(s) failed: see `moladapt study status {db}`; "
                    "rerun with --retry-failed", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(1)


SPEC_HELP = ("A study file: only the runs of its current grid (leave out runs of other slices or "
             "of earlier versions of the file stored under the same study name).")


@study_app.command("status")
@friendly_errors
def status_cmd(db: Path = typer.Argument(..., help="SQLite results database."),
               spec: Path = typer.Option(None, help=SPEC_HELP)) -> None:
    """Runs per study and status, and the last error line of failed runs."""
    from moladapt.study.store import ResultStore

    _require_db(db)
    store = ResultStore(db, create=False)
    name, keys = study_grid(spec)
    studies = store.studies() if name is None else [name]
    if not studies:
        typer.echo("no runs")
        return
    orphans = store.orphaned()
    for study in studies:  # a run shared by two studies counts in both
        stored = store.rows(study)
        rows = stored if keys is None else [row for row in stored if row["key"] in keys]
        typer.echo(f"{study}: " + _counts_line(store.counts(study, keys=keys)))
        if keys is not None:
            outside = len(stored) - len(rows)
            if outside:
                typer.echo(f"  {outside} stored run(s) of {study} are not in {spec}'s grid (other slices "
                           "or earlier versions of the file); left out here")
        gone = sum(row["key"] in orphans for row in rows)
        if gone:
            typer.echo(f"  {gone} of the running runs belong to a process that is gone: "
                       "`moladapt study run` resumes them")
        for row in rows:
            if row["status"] == "failed":
                last = (row["error"] or "").strip().splitlines()
                typer.echo(f"  failed {row['key']}: {last[-1] if last else ''}")


@study_app.command("export")
@friendly_errors
def export_cmd(
    db: Path = typer.Argument(..., help="SQLite results database."),
    output: Path = typer.Option(..., help="A .csv, .csv.gz or .parquet file."),
    study: str = typer.Option(None, help="Only this study's runs."),
    spec: Path = typer.Option(None, help=SPEC_HELP),
) -> None:
    """One row per run: axes (e.g. data.dataset) and metrics (e.g. test.roc_auc)."""
    from moladapt.study.store import ResultStore

    _require_db(db)
    name, keys = study_grid(spec)
    if name is not None and study is not None and study != name:
        raise ValueError(f"--study {study} and --spec {spec} (study {name!r}) name different studies")
    try:
        frame = ResultStore(db, create=False).export(output, study=study or name, keys=keys)
    except ImportError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {len(frame)} run(s) to {output}")


def _counts_line(counts: dict[str, int]) -> str:
    return (f"{counts['done']} done, {counts['failed']} failed, {counts['running']} running, "
            f"{counts['pending']} pending (of {counts['total']})")
