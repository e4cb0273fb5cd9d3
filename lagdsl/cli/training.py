"""The commands that train or read what training wrote: run, report, study."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lagdsl.artifacts import IntervalInfo, SpreadInfo, Study, Summary
    from lagdsl.runtime.distributed.world import World

from lagdsl.cli import DATA_WARNINGS, EXIT_OK, EXIT_USAGE, SEED, _device, _load_valid, main
from lagdsl.cli.complete import grow_files, run_dirs, stage_names


@main.command(
    epilog="""\b
Examples:
  lagdsl run schedules/quickstart.grow
  lagdsl run my.grow --out runs/try1 --max-steps 500
  lagdsl run --resume runs/try1          (FILE is optional with --resume)
  torchrun --nproc_per_node 4 -m lagdsl run my.grow --out runs/big   (4 ranks: DDP or FSDP)
  lagdsl run my.grow --tensorboard tb/    (then: tensorboard --logdir tb/)
  WANDB_MODE=offline lagdsl run my.grow --wandb my-project

Exit codes: 0 ok (also: nothing left to resume), 1 schedule errors or a diverged run,
2 usage, data, device or disk problems, 130 after Ctrl-C, 143 after SIGTERM (a checkpoint is
written first; --resume goes on from it)."""
)
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path), shell_complete=grow_files)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="The run directory (default runs/NAME-TIME)."
)
@click.option("--device", callback=_device, help="Override the schedule's device: auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=SEED, help="Override the schedule's seed.")
@click.option("--max-steps", type=click.IntRange(min=0), help="Stop after this many mainline steps.")
@click.option("--dry-run", is_flag=True, help="Print the lowered program and exit.")
@click.option(
    "--resume",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    shell_complete=run_dirs,
    help="Continue a run.",
)
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option(
    "--tensorboard",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also log to TensorBoard, in this folder (needs lagdsl[tensorboard]).",
)
@click.option("--wandb", "wandb_project", metavar="PROJECT", help="Also log to this W&B project (needs lagdsl[wandb]).")
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
    tensorboard: Path | None,
    wandb_project: str | None,
) -> None:
    """Train: grow the model as the schedule says, probing where it asks; write a run directory.

    Under `torchrun --nproc_per_node N -m lagdsl run FILE` it trains on N ranks (see `parallel`)."""
    if file is None and resume is None:
        raise click.UsageError("give a schedule FILE, or --resume RUN_DIR")
    from lagdsl.runtime.distributed.world import DistError, World, any_rank, session
    from lagdsl.runtime.records import trackers

    try:
        trackers.require(tensorboard is not None, wandb_project is not None)
    except trackers.TrackerError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)

    try:
        world = World.from_env()
    except DistError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)
    # rank 0 speaks for all (the others exit with the same code, silently); a rank ends through
    # `leave` once its process group is gone (the exit code as click would give it)
    with _ends_as_rank(world), session(world):
        from lagdsl.runtime.run.progress import Progress
        from lagdsl.runtime.run.start import (
            Interrupted,
            NothingToDo,
            RunError,
            RunOptions,
            execute,
            load_for_resume,
            prepare,
        )

        def echo(message: str) -> None:
            if world.main:
                click.echo(message, err=True)

        def say(message: str) -> None:
            echo(f"note: {message}")

        quiet = quiet or not world.main
        try:
            if file is not None:
                schedule, source = _load_valid(file, ctx, quiet=not world.main, unsaid=DATA_WARNINGS)
            else:
                assert resume is not None
                schedule, source = load_for_resume(resume)
            if dry_run:
                from lagdsl.plan import build_plan
                from lagdsl.runtime.training.program import describe, lower

                if world.main:
                    click.echo(describe(lower(build_plan(schedule)), schedule), nl=False)
                return
            progress = Progress(schedule.total_steps, quiet=quiet, schedule=schedule)
            options = RunOptions(
                out=out, device=device, seed=seed, max_steps=max_steps, quiet=quiet, resume=resume, say=say, world=world
            )
            freeze_imports()
            engine, run_dir = prepare(schedule, source, options, progress)
            engine.metrics.listeners.append(progress.event)
            tracker, failure = None, ""
            if world.main:  # rank 0 logs, as it writes metrics.jsonl
                resumed_at = engine.step if resume is not None else None
                try:
                    tracker = trackers.open_trackers(run_dir, tensorboard, wandb_project, resumed_at, engine)
                except trackers.TrackerError as error:
                    failure = str(error)
            if any_rank(bool(failure), engine.dev.device):  # every rank stops with rank 0
                raise RunError(f"{failure}; then `lagdsl run --resume {run_dir}`")
            if tracker is not None:
                engine.metrics.listeners.append(tracker)
            if resume is not None:
                progress.note(
                    f"resuming `{run_dir}` at step {engine.step}"
                    + (f" on {world.size} ranks" if world.distributed else "")
                )
            try:
                result = execute(engine, run_dir)
            finally:
                progress.close()
                if tracker is not None:
                    tracker.close()
        except RunError as error:
            echo(f"error: {error}")
            ctx.exit(error.code)
        except DistError as error:  # ranks that diverged: every rank says so
            click.echo(f"error: {f'rank {world.rank}: ' if world.distributed else ''}{error}", err=True)
            ctx.exit(1)
        except NothingToDo as done:
            echo(str(done))
            ctx.exit(EXIT_OK)
        except Interrupted as stop:
            name = signal.Signals(stop.signum).name
            echo(
                f"interrupted ({name}): checkpoint written to `{stop.checkpoint}`; resume with "
                f"`lagdsl run --resume {stop.run_dir}`"
            )
            ctx.exit(stop.exit_code)
        except Exception as error:  # after every exception of the run's own, which are Exceptions too
            if not (world.distributed and _lost_a_rank(error)):
                raise
            # every surviving rank says it: rank 0 may be the one that is gone
            lost = f"rank {1 - world.rank}" if world.size == 2 else "another rank"
            where = out or resume
            again = f"`lagdsl run --resume {where}`" if where is not None else "`lagdsl run --resume RUN_DIR`"
            click.echo(
                f"error: rank {world.rank}: {lost} was lost (it stopped or was killed: "
                f"{str(error).splitlines()[0][:160]}); the run resumes from its last checkpoint with {again}, "
                "on any number of ranks",
                err=True,
            )
            ctx.exit(EXIT_USAGE)
        finally:
            from lagdsl.runtime.run import lock

            lock.release_all()  # the run directory is free for the next command (in this process too)
        if world.main:
            if not quiet:
                _print_summary(result.summary, result.run_dir)
            click.echo(str(result.run_dir))


def _lost_a_rank(error: BaseException) -> bool:
    """Whether `error` is a collective's failure because a peer rank went away (Gloo's closed or
    reset connection, NCCL's aborted communicator, a store that lost a client)."""
    import torch.distributed as torch_dist

    if isinstance(error, torch_dist.DistError):
        return True
    text = str(error)
    signs = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "communicator was aborted")
    return isinstance(error, RuntimeError) and any(sign in text for sign in signs)


@contextmanager
def _ends_as_rank(world: World) -> Iterator[None]:
    """Under torchrun, end the process with `dist.leave(code)` after the block (the code of the
    block's `ctx.exit`, 0 when it ends normally); an unexpected exception goes on to `main`'s handler."""
    from lagdsl.runtime.distributed.world import leave

    if not world.distributed:
        yield
        return
    code = EXIT_OK
    try:
        yield
    except click.exceptions.Exit as stop:
        code = stop.exit_code
    leave(code)


def _print_summary(summary: Summary, run_dir: Path) -> None:
    from lagdsl.plan.render import si

    state = "finished" if summary.finished else f"stopped after {summary.steps} steps (--max-steps)"
    train = f"{summary.final_train_loss:.4f}" if summary.final_train_loss is not None else "n/a"
    lines = [
        f"{summary.schedule}: {state} in {summary.wall_seconds:.0f} s",
        f"  final val loss   {summary.final_val_loss:.4f}   (train {train})",
        f"  FLOPs used       {si(summary.flops, 'FLOPs')} (probes {si(summary.probe_flops, 'FLOPs')})",
        f"  from scratch     {si(summary.scratch_flops, 'FLOPs')} for the final shape over the same steps",
    ]
    if summary.winners:
        lines.append("  winners          " + ", ".join(f"{k}: {v}" for k, v in summary.winners.items()))
    lines.append(f"  run directory    {run_dir}")
    click.echo("\n".join(lines), err=True)


@main.command(
    epilog="""\b
Examples:
  lagdsl report runs/quickstart-20261129-120000
  lagdsl report runs/grown --compare runs/scratch -o cmp/

Exit codes: 0 ok, 2 not a run directory or a damaged one."""
)
@click.argument("run_dir", type=click.Path(path_type=Path), shell_complete=run_dirs)
@click.option(
    "--compare",
    "compare",
    multiple=True,
    type=click.Path(path_type=Path),
    shell_complete=run_dirs,
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
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), shell_complete=grow_files)
@click.option("--stage", required=True, shell_complete=stage_names, help="The stage whose probed growth to study.")
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
@click.option("--seed", type=SEED, help="The first seed [the schedule's].")
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

    schedule, _ = _load_valid(file, ctx, unsaid=DATA_WARNINGS)
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
            freeze_imports()
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


def _interval(interval: IntervalInfo | None) -> str:
    if interval is None or interval.low is None or interval.high is None:
        return ""
    return f"[{interval.low:.2f}, {interval.high:.2f}]"


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
        "95% CI",
        "> lag 0: p",
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
            _interval(val.spearman_ci),
            f"{val.above_lag0.p_value:.3f}" if val.above_lag0 and val.above_lag0.p_value is not None else "",
            show(val.kendall),
            show(val.regret, 4),
            show(score.spearman),
            show(score.regret, 4),
            show(train.spearman),
            show(train.regret, 4),
            val.picks_within_1pct,
        )
    rule = summary.rule
    console = Console(stderr=True, width=180)
    console.print(table)
    console.print(
        f"the schedule's rule ({result.rule} after {result.chosen_lag} steps): regret {show(rule.regret, 4)} "
        f"nats, within 1% of the best final val loss in {rule.picks_within_1pct} seeds"
    )


def freeze_imports() -> None:
    """Move everything alive now (the imported modules, torch's among them: some 400,000 objects)
    out of the cycle collector's sight: they never become garbage, and the runtime collects after
    each growth and probe to free a spent model at once, which would otherwise scan them all (a
    quarter of a second each time). What the run makes is still collected."""
    import gc

    gc.collect()
    gc.freeze()
