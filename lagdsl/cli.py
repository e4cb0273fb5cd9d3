"""The `lagdsl` command: a thin layer over the library that maps outcomes to exit codes.

Exit codes: 0 ok, 1 the schedule has errors, 2 usage, I/O or internal problems. People read
stderr; stdout carries the payload (JSON, tables meant for pipes). `validate`, `plan` and `ops`
import no torch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

if TYPE_CHECKING:
    from lagdsl.artifacts import SpreadInfo, Study, Summary
    from lagdsl.lang import Checked
    from lagdsl.lang.diagnostics import Diagnostic
    from lagdsl.lang.schedule import Schedule
    from lagdsl.lang.source import Source

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


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


def _device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """`--device`: one of the devices the language knows, checked before anything loads."""
    if value is None or re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        return value
    raise click.BadParameter(f"`{value}` is not a device: use auto, cpu, cuda or cuda:N (such as cuda:1)")


@main.command(
    epilog="""\b
Examples:
  lagdsl validate schedules/*.grow
  lagdsl validate --format json my.grow | jq '.[].message'

Exit codes: 0 every file valid, 1 a file has errors (or warnings, with --strict), 2 a file cannot be read."""
)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
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


def _load_valid(path: Path, ctx: click.Context) -> tuple[Schedule, str]:
    """The file's schedule and text, or its diagnostics on stderr and exit 1 (2 when it cannot be
    read); warnings go to stderr either way."""
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
    assert result.schedule is not None
    return result.schedule, result.source.text


def _counts(errors: int, warnings: int) -> str:
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return ", ".join(parts)


def _summary_line(name: str, result: Checked) -> str:
    schedule = result.schedule
    assert schedule is not None
    first, last = schedule.stages[0].before, schedule.final_shape
    stages = len(schedule.stages)
    depth = f"depth {first.depth}" + (f" -> {last.depth}" if last.depth != first.depth else "")
    width = f"width {first.width}" + (f" -> {last.width}" if last.width != first.width else "")
    warnings = len(result.warnings)
    extra = f" ({_counts(0, warnings)})" if warnings else ""
    return (
        f"{name}: ok: {stages} stage{'s' if stages != 1 else ''}, {depth}, {width}, {schedule.total_steps} steps{extra}"
    )


@main.command(
    epilog="""\b
Examples:
  lagdsl run schedules/quickstart.grow
  lagdsl run my.grow --out runs/try1 --max-steps 500
  lagdsl run --resume runs/try1          (FILE is optional with --resume)

Exit codes: 0 ok (also: nothing left to resume), 1 schedule errors or a diverged run,
2 usage, data, device or disk problems, 130 after Ctrl-C, 143 after SIGTERM (a checkpoint is
written first; --resume goes on from it)."""
)
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="The run directory (default runs/NAME-TIME)."
)
@click.option("--device", callback=_device, help="Override the schedule's device: auto, cpu, cuda or cuda:N.")
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
    from lagdsl.runtime.run import (
        Interrupted,
        NothingToDo,
        RunError,
        RunOptions,
        execute,
        load_for_resume,
        prepare,
    )

    def say(message: str) -> None:
        click.echo(f"note: {message}", err=True)

    if file is None and resume is None:
        raise click.UsageError("give a schedule FILE, or --resume RUN_DIR")
    try:
        if file is not None:
            schedule, source = _load_valid(file, ctx)
        else:
            assert resume is not None
            schedule, source = load_for_resume(resume)
        if dry_run:
            from lagdsl.plan import build_plan
            from lagdsl.runtime.program import describe, lower

            click.echo(describe(lower(build_plan(schedule)), schedule), nl=False)
            return
        progress = Progress(schedule.total_steps, quiet=quiet)
        options = RunOptions(
            out=out, device=device, seed=seed, max_steps=max_steps, quiet=quiet, resume=resume, say=say
        )
        engine, run_dir = prepare(schedule, source, options, progress)
        engine.metrics.listeners.append(progress.event)
        if resume is not None:
            progress.note(f"resuming `{run_dir}` at step {engine.step}")
        try:
            result = execute(engine, run_dir)
        finally:
            progress.close()
    except RunError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(error.code)
    except NothingToDo as done:
        click.echo(str(done), err=True)
        ctx.exit(EXIT_OK)
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        click.echo(
            f"interrupted ({name}): checkpoint written to `{stop.checkpoint}`; resume with "
            f"`lagdsl run --resume {stop.run_dir}`",
            err=True,
        )
        ctx.exit(stop.exit_code)
    summary = result.summary
    if not quiet:
        _print_summary(summary, result.run_dir)
    click.echo(str(result.run_dir))


def _print_summary(summary: Summary, run_dir: Path) -> None:
    from lagdsl.plan.render import si

    state = "finished" if summary.finished else f"stopped after {summary.steps} steps (--max-steps)"
    train = f"{summary.final_train_loss:.4f}" if summary.final_train_loss is not None else "n/a"
    lines = [
        f"{summary.schedule}: {state} in {summary.wall_seconds:.0f} s",
        f"  final val loss   {summary.final_val_loss:.4f}   (train {train})",
        f"  FLOPs used       {si(summary.flops)}FLOPs (probes {si(summary.probe_flops)}FLOPs)",
        f"  from scratch     {si(summary.scratch_flops)}FLOPs for the final shape over the same steps",
    ]
    if summary.winners:
        lines.append("  winners          " + ", ".join(f"{k}: {v}" for k, v in summary.winners.items()))
    lines.append(f"  run directory    {run_dir}")
    click.echo("\n".join(lines), err=True)


PLAN_FORMATS = ("table", "json", "dot", "mermaid", "svg", "png")


@main.command(
    epilog="""\b
Examples:
  lagdsl plan schedules/stack_lag.grow
  lagdsl plan my.grow --format json | jq .totals
  lagdsl plan my.grow --format png -o plan.png

Exit codes: 0 ok, 1 schedule errors, 2 usage or I/O problems."""
)
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

    the_plan = build_plan(_load_valid(file, ctx)[0])
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


@main.command(
    epilog="""\b
Examples:
  lagdsl report runs/quickstart-20261129-120000
  lagdsl report runs/grown --compare runs/scratch -o cmp/

Exit codes: 0 ok, 2 not a run directory or a damaged one."""
)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--compare",
    "compare",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Another run directory to overlay on a FLOPs axis (repeatable).",
)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder [RUN_DIR/report].")
@click.pass_context
def report(ctx: click.Context, run_dir: Path, compare: tuple[Path, ...], output: Path | None) -> None:
    """Write report.html (self-contained) and its PNGs: loss curves, probes, selection, plan, summary."""
    from lagdsl.analysis.report import build_report
    from lagdsl.analysis.runlog import RunDirError

    out = output or run_dir / "report"
    try:
        result = build_report(run_dir, out, list(compare))
    except RunDirError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)
    except OSError as error:
        click.echo(f"error: cannot write the report to `{out}`: {error.strerror or error}", err=True)
        ctx.exit(EXIT_USAGE)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(str(result.page))


def _lags(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        lags = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        raise click.BadParameter(f"`{value}`: give whole numbers of steps, separated by commas: 0,5,10,25") from None
    if not lags or lags[0] < 0:
        raise click.BadParameter(f"`{value}`: give one or more lags >= 0, like 0,5,10,25")
    return lags


@main.command(
    epilog="""\b
Example:
  lagdsl study bench/grow.grow --stage final --lags 0,5,10,25 --seeds 3

Exit codes: 0 ok, 1 schedule errors or a diverged run, 2 usage or data problems, 130 after Ctrl-C
(the seeds finished so far are kept)."""
)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--stage", required=True, help="The stage whose probed growth to study.")
@click.option(
    "--lags",
    default="0,5,10,25,50",
    show_default=True,
    callback=_lags,
    help="Steps after growth at which to record the loss (the schedule's own lag is added).",
)
@click.option(
    "--horizon",
    type=click.Choice(["stage", "end"]),
    default="stage",
    show_default=True,
    help="Train candidates to the end of the stage, or of the schedule (the rest applied unchanged).",
)
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat with N seeds.")
@click.option("--seed", type=int, help="The first seed [the schedule's].")
@click.option("--device", callback=_device, help="Override the schedule's device: auto, cpu, cuda or cuda:N.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder [study-<schedule>].")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.pass_context
def study(
    ctx: click.Context,
    file: Path,
    stage: str,
    lags: tuple[int, ...],
    horizon: str,
    seeds: int,
    seed: int | None,
    device: str | None,
    output: Path | None,
    quiet: bool,
) -> None:
    """How well does the loss k steps after growth predict the final loss? Trains every candidate of
    STAGE's probe from the same snapshot to the horizon; writes study.json and two PNGs."""
    from lagdsl.analysis import figures
    from lagdsl.analysis.study import StudyError, StudyOptions, run_study
    from lagdsl.artifacts import dump_json

    schedule, _ = _load_valid(file, ctx)
    out = output or Path(f"study-{schedule.name}")
    options = StudyOptions(stage=stage, lags=lags, horizon=horizon, seeds=seeds, seed=seed, device=device)

    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    saved: list[Study] = []  # the newest study.json written

    def save(result: Study) -> None:  # after every seed, atomically
        partial = out / "study.json.partial"
        partial.write_text(dump_json(result), encoding="utf-8")
        partial.replace(out / "study.json")
        saved[:] = [result]

    interrupted = False
    try:
        out.mkdir(parents=True, exist_ok=True)
        try:
            result = run_study(schedule, options, out, say, save)
        except KeyboardInterrupt:
            if not saved:
                click.echo("interrupted before the first seed finished: nothing written", err=True)
                ctx.exit(130)
            interrupted, result = True, saved[0]
        figures.study_statistics(result, out / "study_statistics.png")
        figures.study_curves(result, out / "study_curves.png")
    except StudyError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(error.code)
    except OSError as error:
        click.echo(f"error: cannot write to `{out}`: {error.strerror or error}", err=True)
        ctx.exit(EXIT_USAGE)
    _print_study(result)
    click.echo(str(out / "study.json"))
    if interrupted:
        done, asked = result.seeds, result.seeds_asked
        rest = [s for s in asked if s not in done]
        click.echo(
            f"interrupted: study.json and the pictures hold seeds {', '.join(map(str, done))} (complete: false); "
            f"the seed in progress is lost. For the rest: --seed {rest[0]} --seeds {len(rest)} -o another folder",
            err=True,
        )
        ctx.exit(130)


def _print_study(result: Study) -> None:
    from rich.console import Console
    from rich.table import Table

    from lagdsl.analysis.stats import Spread

    def show(d: SpreadInfo, digits: int = 3) -> str:
        if not d.n or d.mean is None:
            return "n/a"
        return Spread(d.mean, d.std or 0.0, d.min or d.mean, d.max or d.mean, d.n).show(digits)

    summary = result.summary
    seeds = len(result.seeds)
    change = result.change
    title = (
        f"{result.schedule}: growth of `{result.stage}` ({change.dim} {change.before} -> "
        f"{change.after}), {len(result.candidates)} candidates, {seeds} seed{'s' if seeds > 1 else ''}, "
        f"horizon {result.horizon} ({result.horizon_steps} steps)"
    )
    table = Table(title=title, title_justify="left")
    for column in (
        "lag",
        "rho (val)",
        "tau (val)",
        "regret (val)",
        "rho (score)",
        "regret (score)",
        "rho (train)",
        "regret (train)",
        "pick within 1% (val)",
    ):
        table.add_column(column, justify="right")
    for val, score, train in zip(summary.val, summary.score, summary.train, strict=True):
        chosen = " (schedule)" if val.lag == result.chosen_lag else ""
        table.add_row(
            f"{val.lag}{chosen}",
            show(val.spearman),
            show(val.kendall),
            show(val.regret, 4),
            show(score.spearman),
            show(score.regret, 4),
            show(train.spearman),
            show(train.regret, 4),
            val.picks_within_1pct,
        )
    rule = summary.rule
    console = Console(stderr=True, width=140)
    console.print(table)
    console.print(
        f"the schedule's rule ({result.rule} after {result.chosen_lag} steps): regret {show(rule.regret, 4)} "
        f"nats, within 1% of the best final val loss in {rule.picks_within_1pct} seeds"
    )
