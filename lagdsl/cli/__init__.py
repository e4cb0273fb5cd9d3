"""The `lagdsl` command: a thin layer over the library that maps outcomes to exit codes.

Exit codes: 0 ok, 1 the schedule has errors, 2 usage, I/O or internal problems, 130 and 143 after
SIGINT and SIGTERM. People read stderr; stdout carries the payload (JSON, tables meant for pipes).
The group and what every command shares live here; the commands in `front` (validate, plan,
schema, ops: no torch), `tools` (fmt, explain, init, lsp: no torch), `model` (export, sample,
tokenize) and `training` (run, report, study).
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

if TYPE_CHECKING:
    from lagdsl.lang.schedule import Schedule

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

#: a seed on the command line: what the schedule's `seed` takes (and a generator can be seeded with)
SEED = click.IntRange(0, 2**63 - 1)


class FiniteFloat(click.FloatRange):
    """A `FloatRange` that refuses `nan` and `inf` (which compare false to every bound)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _color(stream: TextIO) -> bool:
    return "NO_COLOR" not in os.environ and stream.isatty()


class _Group(click.Group):
    """Turns an unexpected exception into one line and exit 2 (LAGDSL_DEBUG=1 shows the traceback)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # Ctrl-C outside a run's own handling (loading, start-up): 130, no "Aborted!"
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except BrokenPipeError:  # `lagdsl ... | head`: the reader has all it wants
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            ctx.exit(EXIT_OK)
        except Exception as error:  # a bug of ours, or a broken installation: say so plainly
            from lagdsl.lang.parser import BrokenInstall

            if isinstance(error, BrokenInstall):
                click.echo(f"error: {error}", err=True)
                ctx.exit(EXIT_USAGE)
            if os.environ.get("LAGDSL_DEBUG"):
                raise
            click.echo(f"lagdsl: internal error: {type(error).__name__}: {error}", err=True)
            click.echo("lagdsl: this is a bug in lagdsl; rerun with LAGDSL_DEBUG=1 for details", err=True)
            ctx.exit(EXIT_USAGE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lagdsl", prog_name="lagdsl")
def main() -> None:
    """Grow Transformers during pretraining, as a declarative schedule says."""


def _device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """`--device`: one of the devices the language knows, checked before anything loads."""
    if value is None or re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        return value
    raise click.BadParameter(f"`{value}` is not a device: use auto, cpu, cuda or cuda:N (such as cuda:1)")


#: warnings that commands which read the data leave to the data's own error (W0601: the files are not there)
DATA_WARNINGS = frozenset({"W0601"})


def _load_valid(
    path: Path, ctx: click.Context, quiet: bool = False, unsaid: frozenset[str] = frozenset()
) -> tuple[Schedule, str]:
    """The file's schedule and text, or its diagnostics on stderr and exit 1 (2 when it cannot be
    read); warnings go to stderr either way but those of `unsaid` (a command that reads the data
    says what is wrong with it itself). `quiet` (ranks other than 0): the exit alone."""
    from lagdsl.lang import load
    from lagdsl.lang.diagnostics import render_text

    try:
        result = load(path)
    except (OSError, UnicodeDecodeError) as error:
        if not quiet:
            _cannot_read(path, error)
        ctx.exit(EXIT_USAGE)
    for diagnostic in [] if quiet else [d for d in result.diagnostics if d.code not in unsaid]:
        click.echo(render_text(diagnostic, result.source, color=_color(sys.stderr)), err=True)
    if result.schedule is None:
        if not quiet:
            click.echo(f"{path}: {_counts(len(result.errors), len(result.warnings))}", err=True)
        ctx.exit(EXIT_INVALID)
    assert result.schedule is not None
    return result.schedule, result.source.text


def _cannot_read(path: Path, error: OSError | UnicodeDecodeError) -> None:
    """The one line said when a file cannot be read (its exit code is the caller's)."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    click.echo(f"error: cannot read `{path}`: {reason}", err=True)


def _counts(errors: int, warnings: int) -> str:
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return ", ".join(parts)


# the commands register themselves on `main` as they are imported
from lagdsl.cli import front, model, tools, training  # noqa: E402, F401
