"""The language's own tools, none of which imports torch: fmt, explain, init, lsp."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lagdsl.lang.source import Source

from lagdsl.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, _cannot_read, _color, main
from lagdsl.cli.complete import grow_files


@main.command(
    epilog="""\b
Examples:
  lagdsl fmt schedules/*.grow            (rewrite the files in place)
  lagdsl fmt --check schedules/*.grow    (CI, pre-commit: exit 1 when a file would change)
  lagdsl fmt --diff my.grow              (show what would change, write nothing)
  lagdsl fmt - < my.grow                 (stdin to stdout: for editors' format commands)

Exit codes: 0 formatted (or already so), 1 a file has syntax errors or, with --check, would
change, 2 a file cannot be read or written."""
)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path), shell_complete=grow_files
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when a file is not formatted.")
@click.option("--diff", "show_diff", is_flag=True, help="Write nothing; print a unified diff of the changes.")
def fmt(files: tuple[Path, ...], check: bool, show_diff: bool) -> None:
    """Rewrite .grow files in the one canonical layout (comments kept, meaning unchanged)."""
    from lagdsl.lang.fmt import as_read, as_written
    from lagdsl.lang.source import Source

    status = EXIT_OK
    changed = 0
    for path in files:
        if str(path) == "-":
            status = max(status, _fmt_stdin(check))
            continue
        try:
            raw = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            _cannot_read(path, error)
            status = EXIT_USAGE
            continue
        text = as_read(raw)
        formatted = _formatted(Source(str(path), text))
        if formatted is None:
            click.echo(f"{path}: not formatted: fix the syntax errors first", err=True)
            status = max(status, EXIT_INVALID)
            continue
        if as_written(formatted, raw) == raw:
            continue
        changed += 1
        if show_diff:
            lines = difflib.unified_diff(
                text.splitlines(keepends=True), formatted.splitlines(keepends=True), f"{path}", f"{path} (formatted)"
            )
            click.echo("".join(lines), nl=False)
        if check or show_diff:
            if check:
                click.echo(f"{path}: would be reformatted", err=True)
                status = max(status, EXIT_INVALID)
            continue
        try:
            _replace(path, as_written(formatted, raw))
        except OSError as error:
            click.echo(f"error: cannot write `{path}`: {error.strerror or error}", err=True)
            status = EXIT_USAGE
            continue
        click.echo(f"formatted {path}", err=True)
    unchanged = len(files) - changed
    if check and changed:
        click.echo(f"{changed} file(s) would be reformatted, {unchanged} already formatted", err=True)
    sys.exit(status)


def _formatted(source: Source) -> str | None:
    """The formatted text, or None after printing the syntax errors that prevent it."""
    from lagdsl.lang.diagnostics import render_text
    from lagdsl.lang.fmt import FormatError, format_source

    try:
        return format_source(source)
    except FormatError as error:
        for diagnostic in error.diagnostics:
            click.echo(render_text(diagnostic, source, color=_color(sys.stderr)), err=True)
        return None


def _fmt_stdin(check: bool) -> int:
    """`-`: the text on stdin, formatted to stdout (with --check, nothing printed: the exit says).
    Bytes in, bytes out, so that a CRLF document comes back with CRLF line ends, as a file does."""
    from lagdsl.lang.fmt import as_read, as_written
    from lagdsl.lang.source import Source

    try:
        raw = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as error:
        click.echo(f"error: cannot read stdin: {error}; .grow files are UTF-8", err=True)
        return EXIT_USAGE
    formatted = _formatted(Source("<stdin>", as_read(raw)))
    if formatted is None:
        return EXIT_INVALID
    written = as_written(formatted, raw)
    if check:
        return EXIT_INVALID if written != raw else EXIT_OK
    sys.stdout.flush()  # what click wrote before, ahead of the bytes
    stdout = sys.stdout.buffer
    stdout.write(written.encode("utf-8"))
    stdout.flush()
    return EXIT_OK


def _replace(path: Path, text: str) -> None:
    """`path` holds `text` afterwards, or its old text if writing fails (never half of either); a
    link is kept and its target formatted (`lagdsl.artifacts.atomic`)."""
    from lagdsl.artifacts.atomic import write_bytes

    write_bytes(path, text.encode("utf-8"))


@main.command(
    epilog="""\b
Examples:
  lagdsl explain E0201
  lagdsl explain w301          (case and leading zeros do not matter)
  lagdsl explain --list

Exit codes: 0 ok, 2 not a diagnostic code."""
)
@click.argument("code", required=False)
@click.option("--list", "list_codes", is_flag=True, help="List every code with its one-line meaning.")
@click.pass_context
def explain(ctx: click.Context, code: str | None, list_codes: bool) -> None:
    """Explain a diagnostic code: what it means, an example that gets it, and the fix."""
    from lagdsl.lang.diagnostics import CODES
    from lagdsl.lang.explain import UnknownCode, page

    if code is None and not list_codes:
        raise click.UsageError("give a CODE (such as E0201), or --list")
    if code is None:
        for name, entry in CODES.items():
            click.echo(f"{name}  {entry.severity:<7}  {entry.meaning}")
        return
    try:
        click.echo(page(code), nl=False)
    except UnknownCode:
        click.echo(f"error: `{code}` is not a diagnostic code: `lagdsl explain --list` lists them", err=True)
        ctx.exit(EXIT_USAGE)


TEMPLATES = ("quickstart", "stack", "width", "lag-study")


@main.command(
    epilog="""\b
Examples:
  lagdsl init                              (writes quickstart.grow)
  lagdsl init my_run --template stack      (writes my_run.grow)
  lagdsl init studies/ --template width    (writes studies/width.grow)
  lagdsl init studies/ops.grow --template lag-study

Exit codes: 0 written, 2 the file exists (init never overwrites) or cannot be written."""
)
@click.argument("name", required=False)
@click.option(
    "--template",
    type=click.Choice(TEMPLATES),
    default="quickstart",
    show_default=True,
    help="quickstart: depth 1 -> 4 in minutes on a CPU; stack: gradual stacking with probes; "
    "width: width growth over a total; lag-study: many candidates, for `lagdsl study`.",
)
@click.pass_context
def init(ctx: click.Context, name: str | None, template: str) -> None:
    """Write a commented starting schedule that validates."""
    import re
    from importlib import resources

    default = template.replace("-", "_")
    path = Path(name or default)
    if name and (name.endswith(("/", os.sep)) or path.is_dir()):  # a folder: the template's file in it
        path = path / default
    if path.suffix != ".grow":
        path = path.with_name(path.name + ".grow")
    schedule_name = re.sub(r"\W", "_", path.stem)
    if not re.match(r"[A-Za-z_]", schedule_name):
        schedule_name = f"s_{schedule_name}"
    text = (resources.files("lagdsl") / "templates" / f"{template}.grow").read_text(encoding="utf-8")
    text = text.replace("schedule NAME\n", f"schedule {schedule_name}\n").replace("NAME.grow", str(path))
    try:
        with path.open("x", encoding="utf-8") as stream:
            stream.write(text)
    except FileExistsError:
        click.echo(f"error: `{path}` exists: `lagdsl init` never overwrites a file; give another NAME", err=True)
        ctx.exit(EXIT_USAGE)
    except OSError as error:
        why = f"the folder `{path.parent}` does not exist" if not path.parent.is_dir() else error.strerror or error
        click.echo(f"error: cannot write `{path}`: {why}", err=True)
        ctx.exit(EXIT_USAGE)
    click.echo(f"wrote {path}: next, `lagdsl plan {path}` and `lagdsl run {path}`", err=True)


@main.command(
    epilog="""\b
Editors start it themselves: see docs/editors.md (VS Code, Neovim, Helix, Emacs).

Exit codes: 0 after the editor's shutdown, 2 pygls is not installed."""
)
@click.pass_context
def lsp(ctx: click.Context) -> None:
    """Serve the Language Server Protocol on stdio: diagnostics, hover, completion, definitions, formatting."""
    try:
        from lagdsl.lsp import main as serve
    except ImportError as error:
        if error.name is None or not error.name.startswith(("pygls", "lsprotocol")):
            raise
        click.echo("error: the language server needs pygls: pip install 'lagdsl[lsp]'", err=True)
        ctx.exit(EXIT_USAGE)
    serve()
