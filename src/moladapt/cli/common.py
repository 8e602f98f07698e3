"""Options shared by several subcommands, and turning a library error into a clean exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from moladapt.config import parse_scalar, split_list  # noqa: F401  (the CLI modules import split_list from here)

# click ParameterSource names (typer vendors click, so compare by name)
_DEFAULT_SOURCES = ("DEFAULT", "DEFAULT_MAP")
# The encoder registry's keys, spelt out so that `--help` does not import torch
# (tests/cli check it against moladapt.models.encoders.ENCODERS).
ENCODER_CHOICES = ("gin", "gcn", "gat", "sage", "fsmol", "fsmol-pna")
ENCODER_HELP = " | ".join(ENCODER_CHOICES)
POOLING_CHOICES = ("mean", "sum", "max", "attention", "combined")  # encoders.POOLINGS
POOLING_HELP = " | ".join(POOLING_CHOICES)


def options_given(ctx: typer.Context, config_file: object, **options) -> dict:
    """``options`` minus those left at their default when a ``--config`` file is used:
    a default must not override the file's value, an option typed on the command line must."""
    return dict(options) if config_file is None else typed_options(ctx, **options)


def typed_options(ctx: typer.Context, **options) -> dict:
    """The ``options`` typed on the command line (not left at their default)."""
    return {k: v for k, v in options.items()
            if getattr(ctx.get_parameter_source(k), "name", None) not in _DEFAULT_SOURCES}


def option_flags(names) -> str:
    """``["smiles_column", "task_type"]`` → ``"--smiles-column and --task-type"`` (for messages)."""
    return " and ".join(f"--{n.replace('_', '-')}" for n in names)


def data_changes(ctx: typer.Context, config_file: object, config_csv: str | None, *,
                 dataset: str | None, data: object, smiles_column: str,
                 target_columns: str | None, task_type: str | None) -> dict:
    """The ``data`` section's changes from ``--dataset`` / ``--data`` and the CSV options.

    ``--target-columns`` picks columns of a CSV or tasks of a benchmark. ``--smiles-column``
    and ``--task-type`` describe a CSV (``--data``, or the CSV of a ``--config`` file): typed
    for a benchmark they are refused, never silently ignored. ``config_csv`` is the CSV of the
    ``--config`` file, if it names one.
    """
    csv_options = dict(smiles_column=smiles_column, target_columns=split_list(target_columns),
                       task_type=task_type)
    check_one_source(dataset, data)
    if data is not None:
        # absolute, so that `--config run/config.yaml` reproduces the run from any folder
        return {"dataset": None, "csv": str(Path(data).resolve()), **options_given(ctx, config_file, **csv_options)}
    typed = typed_options(ctx, **csv_options)
    if dataset is None and config_csv is not None:
        return typed  # options of the config file's CSV
    only_csv = [k for k in ("smiles_column", "task_type") if k in typed]
    if only_csv:
        raise ValueError(f"{option_flags(only_csv)} describe a CSV given with --data; a benchmark "
                         "(--dataset) has its own SMILES column and task type")
    if dataset is None:
        return typed  # --target-columns: tasks of the config file's benchmark
    return {"dataset": dataset, "csv": None, "smiles_column": "smiles", "task_type": None,
            "target_columns": typed.get("target_columns")}


def check_one_source(dataset: object, data: object) -> None:
    """``--dataset`` and ``--data`` name the data two ways: one of them, not both."""
    if data is not None and dataset is not None:
        raise ValueError("give --dataset (a benchmark) or --data (your CSV), not both")


def friendly_errors(fn: Callable) -> Callable:
    """Show a bad-input error as one clear line and exit 2, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import sqlite3

        from moladapt.data.sources import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, KeyError, ValueError, OSError, sqlite3.DatabaseError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
                msg = f"{exc.filename}: {exc.strerror}"  # e.g. a directory where a file belongs
            typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
            sys.exit(2)

    return wrapper


def init_spec(init: object) -> str | None:
    """``--init`` as config.yaml keeps it: ``bundled[:name]`` as given, a file as an absolute
    path (so that ``--config run/config.yaml`` works from any folder)."""
    if not init:
        return None
    text = str(init)
    from moladapt.bundled_models import is_bundled

    if is_bundled(text):
        return text
    if not Path(text).is_file():  # checked here, before any data is read and featurized
        raise ValueError(f"--init {text}: no such checkpoint file (give a model.pt / encoder "
                         "file, or bundled[:name])")
    return str(Path(text).resolve())


def study_grid(spec: Path | None) -> tuple[str | None, set[str] | None]:
    """The study name and run keys of a study file's current grid (``None``s without one):
    what ``--spec`` of ``study status``, ``study export`` and ``report`` keep."""
    if spec is None:
        return None, None
    from moladapt.study.spec import StudySpec

    loaded = StudySpec.load(spec)
    return loaded.name, {run.key for run in loaded.runs()}


def parse_params(values: list[str] | None) -> dict:
    """``--param name=value`` options (repeatable) → ``{name: value}`` (values as
    :func:`moladapt.config.parse_scalar` reads them)."""
    params: dict = {}
    for item in values or []:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param expects name=value, got {item!r}")
        params[name.strip()] = parse_scalar(raw)
    return params
