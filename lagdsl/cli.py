"""The `lagdsl` command: a thin layer over the library that maps outcomes to exit codes.

Exit codes: 0 ok, 1 the schedule has errors, 2 usage, I/O or internal problems. People read
stderr; stdout carries the payload (JSON, tables meant for pipes). `validate`, `plan` and `ops`
import no torch.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lagdsl.lang import Checked

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _color(stream: object) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()  # type: ignore[attr-defined]


class _Group(click.Group):
    """Turns an unexpected exception into one line and exit 2 (LAGDSL_DEBUG=1 shows the traceback)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as error:  # a bug of ours: say so plainly
            if os.environ.get("LAGDSL_DEBUG"):
                raise
            click.echo(f"lagdsl: internal error: {type(error).__name__}: {error}", err=True)
            click.echo("lagdsl: this is a bug in lagdsl; rerun with LAGDSL_DEBUG=1 for details", err=True)
            ctx.exit(EXIT_USAGE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lagdsl", prog_name="lagdsl")
def main() -> None:
    """Grow Transformers during pretraining, as a declarative schedule says."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(files: tuple[Path, ...], fmt: str, strict: bool) -> None:
    """Check .grow files and report every problem, with its position."""
    from lagdsl.lang import load
    from lagdsl.lang.diagnostics import render_json, render_text

    status = EXIT_OK
    collected = []
    color = _color(sys.stderr)
    for path in files:
        try:
            result = load(path)
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            click.echo(f"error: cannot read `{path}`: {reason}", err=True)
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


def _load_valid(path: Path, ctx: click.Context) -> Checked:
    """The checked file with its schedule, or its diagnostics on stderr and exit 1 (2 when it
    cannot be read)."""
    from lagdsl.lang import load
    from lagdsl.lang.diagnostics import render_text

    try:
        result = load(path)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        click.echo(f"error: cannot read `{path}`: {reason}", err=True)
        ctx.exit(EXIT_USAGE)
    for diagnostic in result.diagnostics:
        click.echo(render_text(diagnostic, result.source, color=_color(sys.stderr)), err=True)
    if result.schedule is None:
        click.echo(f"{path}: {_counts(len(result.errors), len(result.warnings))}", err=True)
        ctx.exit(EXIT_INVALID)
    return result


def _counts(errors: int, warnings: int) -> str:
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return ", ".join(parts)


def _summary_line(name: str, result: object) -> str:
    schedule = result.schedule  # type: ignore[attr-defined]
    first, last = schedule.stages[0].before, schedule.final_shape
    stages = len(schedule.stages)
    depth = f"depth {first.depth}" + (f" -> {last.depth}" if last.depth != first.depth else "")
    width = f"width {first.width}" + (f" -> {last.width}" if last.width != first.width else "")
    warnings = len(result.warnings)  # type: ignore[attr-defined]
    extra = f" ({_counts(0, warnings)})" if warnings else ""
    return (
        f"{name}: ok: {stages} stage{'s' if stages != 1 else ''}, {depth}, {width}, {schedule.total_steps} steps{extra}"
    )


@main.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="The run directory (default runs/NAME-TIME)."
)
@click.option("--device", help='Override the schedule\'s device: cpu, cuda, "cuda:1".')
@click.option("--seed", type=int, help="Override the schedule's seed.")
@click.option("--max-steps", type=click.IntRange(min=0), help="Stop after this many mainline steps.")
@click.option("--dry-run", is_flag=True, help="Print the lowered program and exit.")
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Continue a run.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.pass_context
def run(
    ctx: click.Context,
    file: Path | None,
    out: Path | None,
    device: str | None,
    seed: int | None,
    max_steps: int | None,
    dry_run: bool,
    resume: Path | None,
    quiet: bool,
) -> None:
    """Train: grow the model as the schedule says, probing where it asks; write a run directory."""
    from lagdsl.runtime.progress import Progress
    from lagdsl.runtime.run import Interrupted, RunError, RunOptions, execute, load_for_resume, prepare

    if file is None and resume is None:
        raise click.UsageError("give a schedule FILE, or --resume RUN_DIR")
    try:
        if file is not None:
            checked = _load_valid(file, ctx)
            schedule, source = checked.schedule, checked.source.text
        else:
            schedule, source = load_for_resume(resume)  # type: ignore[arg-type]
        if dry_run:
            from lagdsl.plan import build_plan
            from lagdsl.runtime.program import describe, lower

            click.echo(describe(lower(build_plan(schedule)), schedule), nl=False)  # type: ignore[arg-type]
            return
        progress = Progress(schedule.total_steps, quiet=quiet)  # type: ignore[attr-defined]
        options = RunOptions(out=out, device=device, seed=seed, max_steps=max_steps, quiet=quiet, resume=resume)
        engine, run_dir = prepare(schedule, source, options, progress)  # type: ignore[arg-type]
        if resume is not None and not quiet:
            click.echo(f"resuming `{run_dir}` at step {engine.step}", err=True)
        try:
            result = execute(engine, run_dir)
        finally:
            progress.close()
    except RunError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(error.code)
    except Interrupted as stop:
        click.echo(f"interrupted: checkpoint written to `{stop.checkpoint}`; resume with --resume", err=True)
        ctx.exit(130)
    summary = result.summary
    if not quiet:
        _print_summary(summary, result.run_dir)
    click.echo(str(result.run_dir))


def _print_summary(summary: dict[str, object], run_dir: Path) -> None:
    from lagdsl.plan.render import si

    state = "finished" if summary["finished"] else f"stopped after {summary['steps']} steps (--max-steps)"
    lines = [
        f"{summary['schedule']}: {state} in {summary['wall_seconds']:.0f} s",
        f"  final val loss   {summary['final_val_loss']:.4f}   (train {summary['final_train_loss']:.4f})",
        f"  FLOPs used       {si(summary['flops'])}FLOPs (probes {si(summary['probe_flops'])}FLOPs)",  # type: ignore[arg-type]
        f"  from scratch     {si(summary['scratch_flops'])}FLOPs for the final shape over the same steps",  # type: ignore[arg-type]
    ]
    winners = summary["winners"]
    if winners:
        lines.append("  winners          " + ", ".join(f"{k}: {v}" for k, v in winners.items()))  # type: ignore[union-attr]
    lines.append(f"  run directory    {run_dir}")
    click.echo("\n".join(lines), err=True)


PLAN_FORMATS = ("table", "json", "dot", "mermaid", "svg", "png")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(PLAN_FORMATS), default="table", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of stdout (svg and png default to NAME-plan.svg or .png).",
)
@click.pass_context
def plan(ctx: click.Context, file: Path, fmt: str, output: Path | None) -> None:
    """Show the plan: the model at each stage, where the FLOPs go, what probes cost, what growth saves."""
    from lagdsl.plan import build_plan
    from lagdsl.plan import render as r

    the_plan = build_plan(_load_valid(file, ctx).schedule)  # type: ignore[arg-type]
    if fmt in ("svg", "png"):
        from lagdsl.plan.draw import draw

        target = output or Path(f"{the_plan.schedule.name}-plan.{fmt}")
        _write(ctx, target, lambda: draw(the_plan, target, fmt))
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


def _write(ctx: click.Context, path: Path, write: object) -> None:
    try:
        write()  # type: ignore[operator]
    except OSError as error:
        click.echo(f"error: cannot write `{path}`: {error.strerror or error}", err=True)
        ctx.exit(EXIT_USAGE)
    click.echo(f"wrote {path}", err=True)


@contextmanager
def _opened(ctx: click.Context, path: Path) -> Iterator[object]:
    try:
        stream = path.open("w", encoding="utf-8")
    except OSError as error:
        click.echo(f"error: cannot write `{path}`: {error.strerror or error}", err=True)
        ctx.exit(EXIT_USAGE)
    with stream:
        yield stream


@main.command()
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
    Console(width=max(120, Console().width)).print(table)
