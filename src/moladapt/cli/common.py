"""Options shared by several subcommands, and turning a library error into a clean exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import typer

# click ParameterSource names (typer vendors click, so compare by name)
_DEFAULT_SOURCES = ("DEFAULT", "DEFAULT_MAP")


def options_given(ctx: typer.Context, config_file: object, **options) -> dict:
    """``options`` minus those left at their default when a ``--config`` file is used:
    a default must not override the file's value, an option typed on the command line must."""
    return {k: v for k, v in options.items()
            if config_file is None
            or getattr(ctx.get_parameter_source(k), "name", None) not in _DEFAULT_SOURCES}


def split_list(value: str | None) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def friendly_errors(fn: Callable) -> Callable:
    """Show a bad-input error as one clear line and exit 2, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from moladapt.data.sources import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, FileNotFoundError, KeyError, ValueError, ConnectionError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
            sys.exit(2)

    return wrapper
