"""`moladapt report STUDY.db --output DIR`: tables, significance and plots of a study."""

from __future__ import annotations

from pathlib import Path

import typer

from moladapt.cli.common import friendly_errors, split_list, study_grid


@friendly_errors
def report(
    db: Path = typer.Argument(..., help="The study's SQLite results (from `moladapt study run`)."),
    output: Path = typer.Option(Path("runs/report"), help="Directory for report.html, report.md and PNGs."),
    metric: str = typer.Option("roc_auc", help="Test metric to report (roc_auc, auprc, delta_auprc, rmse, ...)."),
    baseline: str = typer.Option(None, help="Method the others are tested against (default: the first)."),
    study: str = typer.Option(None, help="Only this study's rows (a DB may hold several)."),
    method_axes: str = typer.Option(None, help="Comma-separated axes that define a method (default: all varied non-unit axes)."),
    heatmap: str = typer.Option(None, help="Two columns for a heatmap, e.g. featurizer,encoder."),
    spec: Path = typer.Option(None, help="A study file: only the runs of its current grid (leave out runs "
                                          "of grid points edited away since they ran)."),
    breakdown: str = typer.Option(None, help="Columns whose every value gets the gain over the baseline, "
                                             "pooled over datasets, e.g. split,featurizer."),
) -> None:
    """Write a self-contained HTML + Markdown report of a study's results."""
    from moladapt.evaluate.report import write_report
    from moladapt.study.results import tidy_results

    if not db.exists():
        raise FileNotFoundError(f"{db}: no such study database")
    _, keys = study_grid(spec)
    frame = tidy_results(db, study, split_list(method_axes), keys=keys, include_unfinished=True)
    if metric not in frame.columns:
        raise ValueError(f"metric {metric!r} not in the results; available: "
                         f"{sorted(c for c in frame.columns if frame[c].dtype.kind == 'f')}")
    axes = tuple(split_list(heatmap)) if heatmap else None
    try:
        out = write_report(frame, output, metric=metric, baseline=baseline,
                           title=f"moladapt study {study or _study_name(db)}", heatmap=axes,
                           breakdown=split_list(breakdown) or ())
    except ValueError as exc:
        if "pairing is ambiguous" not in str(exc) or spec is not None:
            raise
        # typically runs of an earlier version of the study file (a changed fixed value)
        raise ValueError(f"{exc}. The runs differ in a setting that is not an axis of the study, "
                         "typically runs of an earlier version of the study file stored under the "
                         "same name: pass --spec STUDY.yaml to keep only its current grid") from None
    done = frame[(frame["run_status"] == "done") & frame[metric].notna()]
    typer.echo(f"wrote {out}/report.html and report.md ({len(done)} runs with {metric}"
               + (f"; {len(frame) - len(done)} left out, listed in the report)" if len(done) < len(frame) else ")"))


def _study_name(db: Path) -> str:
    """The name of the one study a database holds, else the database's file name."""
    from moladapt.study.store import ResultStore

    names = ResultStore(db, create=False).studies()
    return names[0] if len(names) == 1 else db.name
