"""A run: the run directory, a new one or one resumed, and the engine in its state (running it,
checkpoints and the summary: `lagdsl.runtime.run.execution`).

runs/<schedule>-<timestamp>/
  schedule.grow   the schedule's source        run.json      hash, seed, device, data fingerprint
  plan.json       the plan (lagdsl.plan/1)      metrics.jsonl the events
  checkpoints/    step-<step>-<pc>.pt           final/        model.pt + config.json
  summary.json    what the run achieved
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lagdsl import __version__
from lagdsl.artifacts import (
    ArtifactError,
    PretrainedSource,
    RunInfo,
    Segment,
    Summary,
    dump_json,
    read_json,
)
from lagdsl.artifacts.run import run_base
from lagdsl.lang import check_text
from lagdsl.lang.schedule import Schedule, TokensData
from lagdsl.plan import build_plan
from lagdsl.plan.render import to_json
from lagdsl.runtime.data.batches import Batches
from lagdsl.runtime.distributed import moves
from lagdsl.runtime.distributed import world as dist
from lagdsl.runtime.records.metrics import Metrics
from lagdsl.runtime.records.segments import Segments
from lagdsl.runtime.run import lock
from lagdsl.runtime.run.execution import (
    Interrupted,
    RunResult,
    execute,
    finish,
    reason,
    write_bytes,
    write_checkpoint,
    write_text,
)
from lagdsl.runtime.run.inputs import RunError, apply_overrides, open_data, open_device
from lagdsl.runtime.state import checkpoint as ckpt
from lagdsl.runtime.state.train_state import StateDict
from lagdsl.runtime.state.trained import SOURCE_DIR, TOKENIZER_FILE
from lagdsl.runtime.training.engine import Device, Engine, OnStep
from lagdsl.runtime.training.program import End, Instruction, lower

if TYPE_CHECKING:
    from lagdsl.runtime.state.dcp import Room


class NothingToDo(Exception):
    """A resumed run that is already where it was asked to go: nothing is run or written."""


@dataclass
class RunOptions:
    out: Path | None = None
    device: str | None = None
    seed: int | None = None
    max_steps: int | None = None
    quiet: bool = False
    resume: Path | None = None
    #: where notes for the user go (a damaged checkpoint passed over, a log repaired): one line each
    say: Callable[[str], None] = field(default=lambda message: None)
    #: the ranks this process trains with (under torchrun; one rank otherwise)
    world: dist.World = field(default_factory=dist.World)


def schedule_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def prepare(
    schedule: Schedule, source_text: str, options: RunOptions, progress: OnStep | None = None
) -> tuple[Engine, Path]:
    """An engine and its run directory: a new run, or with `options.resume` the run it names."""
    if options.resume is not None:
        return resume_run(schedule, source_text, options, progress)
    return new_run(schedule, source_text, options, progress)


def new_run(
    schedule: Schedule, source_text: str, options: RunOptions, progress: OnStep | None = None
) -> tuple[Engine, Path]:
    """A new run directory (its schedule, plan and `run.json` written) and an engine at the start."""
    schedule = apply_overrides(schedule, options.seed, options.device)
    base = Path(schedule.file).resolve().parent
    world = options.world
    with _together(world):  # every rank's own checks, agreed on before any rank writes
        device = open_device(schedule, world)
        _check_source(schedule)
        corpus, batches = open_data(schedule, base, device, world, not options.quiet)
        plan = build_plan(schedule)

    name = getattr(schedule.data, "tokenizer", None)
    tokenizer = (Path(name) if Path(name).is_absolute() else base / name) if name else None
    source = schedule.model.pretrained
    pretrained = _source_info(schedule)

    def create() -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_dir = options.out or Path("runs") / f"{schedule.name}-{stamp}"
        locked = False
        if run_dir.exists() and any(run_dir.iterdir()):
            if not _never_started(run_dir):
                raise RunError(f"`{run_dir}` already holds a run: choose another `--out`, or `--resume {run_dir}`")
            _lock(run_dir, options.say)  # a start that failed before its first step: this one starts over
            locked = True
            with _unlocked_on_error(run_dir):
                _clear_start(run_dir)
            options.say(f"`{run_dir}` held a run that failed before its first step: started over")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"cannot create the run directory `{run_dir}`: {reason(error)}") from None
        if not locked:
            _lock(run_dir, options.say)
        with _unlocked_on_error(run_dir):
            write_text(run_dir / "schedule.grow", source_text)
            write_text(run_dir / "plan.json", to_json(plan))
            if tokenizer is not None:  # the run's own copy: exports and samples need no other file
                write_text(run_dir / TOKENIZER_FILE, tokenizer.read_text(encoding="utf-8"))
            if source is not None:  # its config and tokenizer files, which the export writes back out
                _copy_source(Path(source.folder), run_dir / SOURCE_DIR)
            info = RunInfo(
                lagdsl=__version__,
                schedule=schedule.name,
                schedule_hash=schedule_hash(source_text),
                seed=schedule.seed,
                device=schedule.device,
                resolved_device=str(device.device),
                precision=str(device.dtype).replace("torch.", "") if device.dtype else "fp32",
                base=str(base),
                data=corpus.description,
                data_fingerprint=corpus.fingerprint,
                tokenizer=TOKENIZER_FILE if tokenizer else "ids" if isinstance(schedule.data, TokensData) else "bytes",
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                ranks=world.size,
                pretrained=pretrained,
                segments=[Segment(ranks=world.size, first_step=0, started=started)],
            )
            write_text(run_dir / "run.json", dump_json(info))
        return run_dir

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_dir = dist.on_main(world, create, (RunError,))  # rank 0 names and writes it; all learn where
    with _unlocked_on_error(run_dir):
        engine = _engine(schedule, lower(plan), batches, device, run_dir, 0, progress, options.max_steps, world)
        engine.segments = Segments([], world.size, started=started)
        _initialize(engine)
    return engine, run_dir


def _lock(run_dir: Path, say: Callable[[str], None]) -> None:
    """Hold the run directory for this process (`lagdsl.runtime.run.lock`), or a `RunError`."""
    try:
        lock.take(run_dir, say)
    except lock.LockError as error:
        raise RunError(str(error)) from None


@contextmanager
def _unlocked_on_error(run_dir: Path) -> Iterator[None]:
    """The run directory's lock given back if what follows fails (its process goes on)."""
    try:
        yield
    except BaseException:
        lock.release(run_dir)
        raise


#: what a start writes into its run directory before the first step (and nothing a step writes)
_START_FILES = {"schedule.grow", "plan.json", "run.json", TOKENIZER_FILE, SOURCE_DIR, lock.LOCK_FILE}


def _never_started(run_dir: Path) -> bool:
    """Whether `run_dir` holds only what a start writes before its first step (a start that failed
    then, say on a pretrained folder it could not read): no event, no checkpoint, no other file."""
    for entry in run_dir.iterdir():
        if entry.name == "metrics.jsonl":
            if entry.is_symlink() or not entry.is_file() or entry.stat().st_size:
                return False
        elif entry.name == "checkpoints":
            if entry.is_symlink() or not entry.is_dir() or any(entry.iterdir()):
                return False
        elif entry.name not in _START_FILES:
            return False
    return (run_dir / "run.json").is_file()


def _clear_start(run_dir: Path) -> None:
    """The files of a start that never reached its first step, removed (the lock, held, kept)."""
    import shutil

    for entry in run_dir.iterdir():
        if entry.name == lock.LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _check_source(schedule: Schedule) -> None:
    """A pretrained checkpoint the run can read, checked from its weights' headers before anything
    is written (a shard missing, a file cut short, a tensor missing or of the wrong shape or dtype)."""
    source = schedule.model.pretrained
    if source is None:
        return
    from lagdsl.families import FamilyError, family_named
    from lagdsl.model.config import GPTConfig
    from lagdsl.model.hub import HubError, check_weights

    try:
        check_weights(Path(source.folder), family_named(source.family), GPTConfig.from_schedule(schedule))
    except (HubError, FamilyError) as error:
        raise RunError(f"the pretrained model `{source.folder}` cannot be read: {error}") from None


def _source_info(schedule: Schedule) -> PretrainedSource | None:
    """What `run.json` records of the pretrained checkpoint the schedule starts from."""
    source = schedule.model.pretrained
    if source is None:
        return None
    from lagdsl.families.base import fingerprint

    try:
        stamp = fingerprint(Path(source.folder))
    except OSError as error:
        raise RunError(f"the pretrained model `{source.folder}` cannot be read: {reason(error)}") from None
    return PretrainedSource(
        folder=source.folder, family=source.family, architecture=source.architecture, fingerprint=stamp
    )


def _copy_source(folder: Path, into: Path) -> None:
    """The source checkpoint's config and tokenizer files (not its weights) into the run directory."""
    from lagdsl.model.export import SOURCE_FILES

    into.mkdir(exist_ok=True)
    for name in ("config.json", *SOURCE_FILES):
        if (folder / name).is_file():
            write_bytes(into / name, (folder / name).read_bytes())


def _initialize(engine: Engine) -> None:
    """The engine at the start; a pretrained checkpoint that cannot be read is a `RunError`."""
    from lagdsl.model.hub import HubError

    try:
        engine.initialize()
    except HubError as error:
        raise RunError(f"pretrained model: {error}") from None


def resume_run(
    schedule: Schedule, source_text: str, options: RunOptions, progress: OnStep | None = None
) -> tuple[Engine, Path]:
    """An engine in the state of `options.resume`'s newest checkpoint (at the start, if it has
    none), after checking that the schedule and the data are the ones the run was started with."""
    run_dir = options.resume
    assert run_dir is not None
    world = options.world
    if run_dir.is_dir():  # before anything is read or cut: a directory another process holds is left alone
        dist.on_main(world, lambda: _lock(run_dir, options.say), (RunError,))
    with _unlocked_on_error(run_dir):
        return _resume(run_dir, schedule, source_text, options, progress)


def _resume(
    run_dir: Path, schedule: Schedule, source_text: str, options: RunOptions, progress: OnStep | None
) -> tuple[Engine, Path]:
    world = options.world
    with _together(world):  # every rank's own checks, agreed on before any rank reads a checkpoint
        meta = _read_info(run_dir)
        if meta.schedule_hash != schedule_hash(source_text):
            raise RunError(
                f"`{run_dir}` was run with a different schedule (its hash differs): resume it with its own "
                f"`{run_dir / 'schedule.grow'}`, or start a new run"
            )
        schedule = apply_overrides(schedule, meta.seed, meta.device)
        device = open_device(schedule, world)
        corpus, batches = open_data(schedule, Path(meta.base), device, world, not options.quiet)
        if meta.data_fingerprint not in (corpus.fingerprint, *corpus.earlier):
            raise RunError(f"data: the data differs from what `{run_dir}` was trained on (its fingerprint changed)")
        source = _source_info(schedule)
        if meta.pretrained is not None and (source is None or source.fingerprint != meta.pretrained.fingerprint):
            raise RunError(
                f"the pretrained model `{meta.pretrained.folder}` differs from the one `{run_dir}` began from "
                "(its config or weight files changed): restore it, or start a new run"
            )
        if not (run_dir / "metrics.jsonl").exists():
            raise RunError(f"`{run_dir}` has no `metrics.jsonl`: its event log is lost, so it cannot be resumed")
    room = moves.room(device.device) if world.distributed and schedule.parallel == "fsdp" else None
    saved = _newest_checkpoint(run_dir, options.say, world, room)
    program = lower(build_plan(schedule))
    if saved is not None:
        step, pc = int(saved["step"]), int(saved["pc"])
        summary = run_dir / "summary.json"
        done = all(isinstance(ins, End) for ins in program[pc:])  # nothing but the end event is left
        if done and summary.exists() and _finished(summary):
            raise NothingToDo(f"`{run_dir}` is finished ({step} steps): nothing to resume")
        if options.max_steps is not None and step >= options.max_steps:
            raise NothingToDo(
                f"`{run_dir}` is at step {step} already (`--max-steps {options.max_steps}`): nothing to do"
            )
    lines = int(saved["metrics_lines"]) if saved else 0
    event = saved.get("checkpoint_event") if saved else None
    engine = _engine(schedule, program, batches, device, run_dir, lines, progress, options.max_steps, world, event)
    if engine.metrics.repaired:
        options.say(f"`{run_dir / 'metrics.jsonl'}`: {engine.metrics.repaired}")
    if saved is not None:
        engine.load(saved)
        engine.segments = Segments.resumed(saved, world.size, meta.ranks)
    else:
        _initialize(engine)
    # run.json lists the segments so far, this one without its end yet
    info = meta.model_copy(update={"segments": engine.segments.started_so_far()})
    dist.on_main(world, lambda: write_text(run_dir / "run.json", dump_json(info)), (RunError,))
    return engine, run_dir


def _finished(summary: Path) -> bool:
    try:
        return read_json(summary, Summary).finished
    except ArtifactError:
        return False  # a damaged summary is written again


@contextmanager
def _together(world: dist.World) -> Iterator[None]:
    """Run a block on every rank; when it fails on any rank with a `RunError`, every rank raises
    the first rank's (named when it is not rank 0's), so that no rank goes on alone."""
    failure: tuple[str, int] | None = None
    try:
        yield
    except RunError as error:
        if not world.distributed:
            raise
        failure = (str(error), error.code)
    if world.distributed:
        for rank, failed in enumerate(dist.gather(failure)):
            if failed is not None:
                message, code = failed
                raise RunError(message if rank == 0 else f"rank {rank}: {message}", code)


def _newest_checkpoint(
    run_dir: Path, say: Callable[[str], None], world: dist.World, room: Room | None = None
) -> StateDict | None:
    """The newest checkpoint that is intact; each damaged one passed over is named. Under several
    ranks, rank 0 chooses and every rank loads that one (into `room`: each rank's shards)."""
    if not world.distributed:
        for path, payload, reason in ckpt.intact_newest_first(run_dir / "checkpoints"):
            if payload is not None:
                return payload
            say(f"checkpoint `{path}` is damaged ({reason}): passed over, an older one is used")
        return None

    def choose() -> Path | None:
        for path in reversed(ckpt.list_checkpoints(run_dir / "checkpoints")):
            try:
                ckpt.verify(path)
            except ckpt.CheckpointError as error:
                say(f"checkpoint `{path}` is damaged ({error}): passed over, an older one is used")
                continue
            return path
        return None

    chosen = dist.on_main(world, choose, (RunError,))
    if chosen is None:
        return None
    with _together(world):
        try:
            return ckpt.load(chosen, room)
        except ckpt.CheckpointError as error:
            raise RunError(f"checkpoint `{chosen}` cannot be loaded: {error}") from None


def _engine(
    schedule: Schedule,
    program: tuple[Instruction, ...],
    batches: Batches,
    device: Device,
    run_dir: Path,
    metrics_lines: int,
    progress: OnStep | None,
    max_steps: int | None,
    world: dist.World = dist.ONE,
    checkpoint_event: str | None = None,
) -> Engine:
    """The engine; only rank 0 writes `metrics.jsonl` (the other ranks count its lines)."""

    opened: list[Metrics] = []

    def open_metrics() -> None:
        try:
            opened.append(Metrics(run_dir / "metrics.jsonl", keep_lines=metrics_lines, checkpoint=checkpoint_event))
        except OSError as error:
            raise RunError(f"cannot write `{run_dir / 'metrics.jsonl'}`: {reason(error)}") from None

    dist.on_main(world, open_metrics, (RunError,))
    metrics = opened[0] if world.main else Metrics.muted(metrics_lines)
    metrics.defer = world.distributed  # rank 0's failures reach every rank at the next step
    if not world.main:
        progress = None  # rank 0 shows the progress

    def on_checkpoint(engine: Engine, step: int) -> None:
        write_checkpoint(engine, run_dir, schedule)

    return Engine(schedule, program, batches, device, metrics, on_checkpoint, progress, max_steps, world)


def _read_info(run_dir: Path) -> RunInfo:
    path = run_dir / "run.json"
    if not path.exists():
        raise RunError(f"`{run_dir}` is not a run directory (it has no `run.json`)")
    try:
        return read_json(path, RunInfo)
    except ArtifactError as error:
        raise RunError(f"`{run_dir}` is not a run directory that can be resumed: {error}") from None


def load_for_resume(run_dir: Path) -> tuple[Schedule, str]:
    """The schedule a run directory holds, checked again."""
    path = run_dir / "schedule.grow"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise RunError(f"`{run_dir}` is not a run directory (it has no `schedule.grow`)") from None
    # relative paths (data, tokenizer, pretrained folder) start where the schedule first was; a
    # damaged run.json is the resume's own checks' to report
    result = check_text(text, str(path), run_base(run_dir))
    if result.schedule is None:
        first = next((d for d in result.diagnostics if d.is_error), None)
        why = f": {first.code} {first.message} (line {first.span.line})" if first is not None else ""
        raise RunError(f"the schedule in `{run_dir}` no longer validates{why}", code=1)
    return result.schedule, text


__all__ = [
    "Interrupted", "NothingToDo", "RunError", "RunOptions", "RunResult", "apply_overrides", "execute", "finish",
    "load_for_resume", "open_data", "open_device", "prepare", "schedule_hash", "write_checkpoint",
]  # fmt: skip
