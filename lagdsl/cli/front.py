"""The commands that read schedules and never import torch: validate, plan, schema, ops."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

if TYPE_CHECKING:
    from lagdsl.lang import Checked
    from lagdsl.lang.diagnostics import Diagnostic
    from lagdsl.lang.source import Source

from lagdsl.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, _cannot_read, _color, _counts, _load_valid, main
from lagdsl.cli.complete import grow_files


@main.command(
    epilog="""\b
Examples:
  lagdsl validate schedules/*.grow
  lagdsl validate --format json my.grow | jq '.[].message'

Exit codes: 0 every file valid, 1 a file has errors (or warnings, with --strict), 2 a file cannot be read."""
)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path), shell_complete=grow_files
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(files: tuple[Path, ...], fmt: str, strict: bool) -> None:
    """Check .grow files and report every problem, with its position."""
    from lagdsl.lang import load
    from lagdsl.lang.diagnostics import render_json, render_text

    status = EXIT_OK
    collected: list[tuple[Diagnostic, Source]] = []
    color = _color(sys.stderr)
    for path in files:
        try:
            result = load(path)
        except (OSError, UnicodeDecodeError) as error:
            _cannot_read(path, error)
            status = EXIT_USAGE
            continue
        collected.extend((d, result.source) for d in result.diagnostics)
        failed = bool(result.errors) or (strict and bool(result.warnings))
        if failed and status == EXIT_OK:
            status = EXIT_INVALID
        if fmt == "json":
            continue
        for diagnostic in result.diagnostics:
            click.echo(render_text(diagnostic, result.source, color=color), err=True)
        if result.schedule is not None and not failed:
            click.echo(_summary_line(str(path), result))
        else:
            counts = _counts(len(result.errors), len(result.warnings))
            click.echo(f"{path}: {counts}" + (" (--strict)" if not result.errors else ""), err=True)
    if fmt == "json":
        click.echo(render_json(collected), nl=False)
    sys.exit(status)


def _summary_line(name: str, result: Checked) -> str:
    schedule = result.schedule
    assert schedule is not None
    first, last = schedule.stages[0].before, schedule.final_shape
    stages = len(schedule.stages)
    depth = f"depth {first.depth}" + (f" -> {last.depth}" if last.depth != first.depth else "")
    width = f"width {first.width}" + (f" -> {last.width}" if last.width != first.width else "")
    if last.experts > 1:  # a mixture of experts, from the start or grown
        width += f", experts {first.experts}" + (f" -> {last.experts}" if last.experts != first.experts else "")
    warnings = len(result.warnings)
    extra = f" ({_counts(0, warnings)})" if warnings else ""
    return (
        f"{name}: ok: {stages} stage{'s' if stages != 1 else ''}, {depth}, {width}, {schedule.total_steps} steps{extra}"
    )


PLAN_FORMATS = ("table", "json", "dot", "mermaid", "svg", "png")


@main.command(
    epilog="""\b
Examples:
  lagdsl plan schedules/stack_lag.grow
  lagdsl plan my.grow --format json | jq .totals
  lagdsl plan my.grow --format png -o plan.png   (one box per stage; --detail: every node)
  lagdsl plan my.grow --ranks 8                 (memory per rank on 8 ranks)

Exit codes: 0 ok, 1 schedule errors, 2 usage or I/O problems."""
)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), shell_complete=grow_files)
@click.option("--format", "fmt", type=click.Choice(PLAN_FORMATS), default="table", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of stdout (svg and png default to NAME-plan.svg or .png).",
)
@click.option(
    "--ranks",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Show memory per rank for a run on this many ranks (torchrun; see the `parallel` setting).",
)
@click.option(
    "--detail",
    is_flag=True,
    help="svg, png: every node of the plan graph (evaluations, checkpoints) instead of one box per stage.",
)
@click.pass_context
def plan(ctx: click.Context, file: Path, fmt: str, output: Path | None, ranks: int, detail: bool) -> None:
    """Show the plan: the model at each stage, where the FLOPs go, what probes cost, what growth saves."""
    from lagdsl.plan import build_plan
    from lagdsl.plan import render as r

    the_plan = build_plan(_load_valid(file, ctx)[0], ranks)
    if fmt in ("svg", "png"):
        from lagdsl.plan.draw import draw

        target = output or Path(f"{the_plan.schedule.name}-plan.{fmt}")
        _write(ctx, target, lambda: draw(the_plan, target, fmt, detail))
        return
    if fmt == "table":
        if output is None:
            r.print_table(the_plan, sys.stdout)
            return
        with _opened(ctx, output) as stream:
            r.print_table(the_plan, stream)
        click.echo(f"wrote {output}", err=True)
        return
    text = {"json": r.to_json, "dot": r.to_dot, "mermaid": r.to_mermaid}[fmt](the_plan)
    if output is None:
        click.echo(text, nl=False)
        return
    _write(ctx, output, lambda: output.write_text(text, encoding="utf-8"))


def _write(ctx: click.Context, path: Path, write: Callable[[], object]) -> None:
    try:
        write()
    except OSError as error:
        click.echo(f"error: cannot write `{path}`: {error.strerror or error}", err=True)
        ctx.exit(EXIT_USAGE)
    click.echo(f"wrote {path}", err=True)


@contextmanager
def _opened(ctx: click.Context, path: Path) -> Iterator[TextIO]:
    try:
        stream = path.open("w", encoding="utf-8")
    except OSError as error:
        click.echo(f"error: cannot write `{path}`: {error.strerror or error}", err=True)
        ctx.exit(EXIT_USAGE)
    with stream:
        yield stream


SCHEMAS = ("run", "events", "summary", "study", "plan")


@main.command(
    epilog="""\b
Example:
  lagdsl schema events > events.schema.json

Exit codes: 0 ok, 2 an unknown name."""
)
@click.argument("artifact", type=click.Choice(SCHEMAS))
def schema(artifact: str) -> None:
    """Print the JSON Schema of a file lagdsl writes: run (run.json), events (each line of
    metrics.jsonl), summary (summary.json), study (study.json), plan (plan.json)."""
    from lagdsl.artifacts import json_schemas

    click.echo(json.dumps(json_schemas()[artifact], indent=2))


@main.command(
    epilog="""\b
Example:
  lagdsl ops --format json | jq '.[] | select(.dim == "depth") | .name'

Exit code: 0."""
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def ops(fmt: str) -> None:
    """List the growth operators: what each grows, its parameters, whether it preserves the function."""
    from lagdsl.lang.catalogue import default_catalogue

    catalogue = default_catalogue()
    entries = list(catalogue)
    for problem in catalogue.problems:
        click.echo(f"warning: {problem}", err=True)
    if fmt == "json":
        payload = [
            {
                "name": e.name,
                "dim": e.dim,
                "params": [
                    {"name": p.name, "type": p.kind, "default": None if p.required else p.default} for p in e.params
                ],
                "preserves_function": e.preserves,
                "description": e.description,
            }
            for e in entries
        ]
        click.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="growth operators", title_justify="left", show_lines=False)
    for column in ("operator", "grows", "parameters", "preserves function", "what the new layers or units are"):
        table.add_column(column, overflow="fold")
    for e in entries:
        params = ", ".join(p.signature_text() for p in e.params) or "-"
        table.add_row(e.name, e.dim, params, e.preserves, e.description)
    Console().print(table)  # the terminal's width (80 columns when piped; COLUMNS overrides)
