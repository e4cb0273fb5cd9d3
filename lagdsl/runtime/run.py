"""A run: the run directory, the engine, checkpoints, resume, interruption and the summary.

runs/<schedule>-<timestamp>/
  schedule.grow   the schedule's source        run.json      hash, seed, device, data fingerprint
  plan.json       the plan (lagdsl.plan/1)      metrics.jsonl the events
  checkpoints/    step-<step>-<pc>.pt           final/        model.pt + config.json
  summary.json    what the run achieved
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from lagdsl import __version__
from lagdsl.artifacts import (
    ArtifactError,
    CheckpointEvent,
    PretrainedSource,
    RunInfo,
    ShapeInfo,
    StoppedEvent,
    Summary,
    dump_json,
    read_json,
)
from lagdsl.lang import check_text
from lagdsl.lang.schedule import Schedule, Shape, TokensData
from lagdsl.plan import build_plan
from lagdsl.plan.render import to_json
from lagdsl.runtime import checkpoint as ckpt
from lagdsl.runtime import dist, lock, sharded
from lagdsl.runtime.data import Batches
from lagdsl.runtime.engine import Device, Engine, NonFiniteLoss, OnStep
from lagdsl.runtime.inputs import RunError, apply_overrides, open_data, open_device
from lagdsl.runtime.losses import ProbeDiverged
from lagdsl.runtime.metrics import Metrics
from lagdsl.runtime.program import End, Instruction, lower
from lagdsl.runtime.state import StateDict
from lagdsl.runtime.trained import SOURCE_DIR, TOKENIZER_FILE


class Interrupted(Exception):
    """Stopped by a signal (SIGINT or SIGTERM) at a step boundary, with a checkpoint written."""

    def __init__(self, checkpoint: Path, run_dir: Path, signum: int) -> None:
        super().__init__("interrupted")
        self.checkpoint, self.run_dir, self.signum = checkpoint, run_dir, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them


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


@dataclass
class RunResult:
    run_dir: Path
    summary: Summary
    finished: bool


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
        corpus, batches = open_data(schedule, base, device, world, not options.quiet)
        plan = build_plan(schedule)

    name = getattr(schedule.data, "tokenizer", None)
    tokenizer = (Path(name) if Path(name).is_absolute() else base / name) if name else None
    source = schedule.model.pretrained
    pretrained = _source_info(schedule)

    def create() -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_dir = options.out or Path("runs") / f"{schedule.name}-{stamp}"
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunError(f"`{run_dir}` already holds a run: choose another `--out`, or `--resume {run_dir}`")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"cannot create the run directory `{run_dir}`: {_reason(error)}") from None
        _lock(run_dir, options.say)
        with _unlocked_on_error(run_dir):
            _write_text(run_dir / "schedule.grow", source_text)
            _write_text(run_dir / "plan.json", to_json(plan))
            if tokenizer is not None:  # the run's own copy: exports and samples need no other file
                _write_text(run_dir / TOKENIZER_FILE, tokenizer.read_text(encoding="utf-8"))
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
            )
            _write_text(run_dir / "run.json", dump_json(info))
        return run_dir

    run_dir = dist.on_main(world, create, (RunError,))  # rank 0 names and writes it; all learn where
    with _unlocked_on_error(run_dir):
        engine = _engine(schedule, lower(plan), batches, device, run_dir, 0, progress, options.max_steps, world)
        _initialize(engine)
    return engine, run_dir


def _lock(run_dir: Path, say: Callable[[str], None]) -> None:
    """Hold the run directory for this process (`lagdsl.runtime.lock`), or a `RunError`."""
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


def _source_info(schedule: Schedule) -> PretrainedSource | None:
    """What `run.json` records of the pretrained checkpoint the schedule starts from."""
    source = schedule.model.pretrained
    if source is None:
        return None
    from lagdsl.families.base import fingerprint

    try:
        stamp = fingerprint(Path(source.folder))
    except OSError as error:
        raise RunError(f"the pretrained model `{source.folder}` cannot be read: {_reason(error)}") from None
    return PretrainedSource(
        folder=source.folder, family=source.family, architecture=source.architecture, fingerprint=stamp
    )


def _copy_source(folder: Path, into: Path) -> None:
    """The source checkpoint's config and tokenizer files (not its weights) into the run directory."""
    from lagdsl.model.export import SOURCE_FILES

    into.mkdir(exist_ok=True)
    for name in ("config.json", *SOURCE_FILES):
        if (folder / name).is_file():
            _write_bytes(into / name, (folder / name).read_bytes())


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
    saved = _newest_checkpoint(run_dir, options.say, world)
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
    else:
        _initialize(engine)
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


def _newest_checkpoint(run_dir: Path, say: Callable[[str], None], world: dist.World) -> StateDict | None:
    """The newest checkpoint that is intact; each damaged one passed over is named. Under several
    ranks, rank 0 chooses and every rank loads that one."""
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
            return ckpt.load(chosen)
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
            raise RunError(f"cannot write `{run_dir / 'metrics.jsonl'}`: {_reason(error)}") from None

    dist.on_main(world, open_metrics, (RunError,))
    metrics = opened[0] if world.main else Metrics.muted(metrics_lines)
    if not world.main:
        progress = None  # rank 0 shows the progress

    def on_checkpoint(engine: Engine, step: int) -> None:
        write_checkpoint(engine, run_dir, schedule)

    return Engine(schedule, program, batches, device, metrics, on_checkpoint, progress, max_steps, world)


def write_checkpoint(engine: Engine, run_dir: Path, schedule: Schedule) -> Path:
    """The engine's state, atomically, under `checkpoints/`, then its event; older ones beyond
    `keep` pruned. A state whose weights are not finite is never written; a write that fails (a
    full disk) leaves no file, no event, and every earlier checkpoint as it was."""
    folder = run_dir / "checkpoints"
    step, world = engine.step, engine.world
    path = ckpt.checkpoint_path(folder, step, engine.pc, sharded=world.distributed)
    state = engine.checkpoint_state()
    if not engine.in_probe:
        state["metrics_lines"] = engine.metrics.lines + 1  # the checkpoint event, written next
        state["checkpoint_event"] = str(path.relative_to(run_dir))  # (unless a kill comes first)
    if not all(bool(torch.isfinite(tensor).all()) for tensor in state["model"].values()):
        raise NonFiniteLoss(engine.stage_name, step, math.nan, what="the weights became non-finite")
    try:
        if world.distributed:
            sharded.save(state, path, world)  # every rank its part; complete or absent
        else:
            ckpt.write_atomic(state, path)
    except OSError as error:
        raise RunError(f"cannot write checkpoint `{path}`: {_reason(error)}; {last_checkpoint(run_dir)}") from None
    engine.metrics.write(CheckpointEvent(step=step, path=str(path.relative_to(run_dir))))
    if world.main:
        ckpt.prune(folder, schedule.checkpoint.keep, newest=path)
    return path


def last_checkpoint(run_dir: Path) -> str:
    """Where a resumed run would start, for messages: the newest intact checkpoint."""
    newest = ckpt.newest_intact(run_dir / "checkpoints")
    if newest is None:
        return "no checkpoint was written before it"
    return f"the last good checkpoint is `{newest}` (resume with `lagdsl run --resume {run_dir}`)"


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _write_text(path: Path, text: str) -> None:
    """`text` to `path` atomically: a failure (a full disk, no permission) leaves no partial file."""
    _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    from lagdsl.artifacts.atomic import write_bytes

    try:
        write_bytes(path, data)
    except OSError as error:
        raise RunError(f"cannot write `{path}`: {_reason(error)}") from None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def execute(engine: Engine, run_dir: Path) -> RunResult:
    """Run to the end (or `--max-steps`). SIGINT (Ctrl-C) and SIGTERM (what job schedulers send)
    stop it at the next step boundary with a checkpoint, raising `Interrupted`."""
    schedule = engine.schedule
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        engine.interrupted = True  # the engine stops at the next step boundary
        engine.terminated = engine.terminated or signum == signal.SIGTERM

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    try:
        try:
            finished = engine.run()
        except KeyboardInterrupt:
            path = write_checkpoint(engine, run_dir, schedule)
            # a rank that got no signal stops as the others agreed: SIGTERM to any rank is 143 on all
            signum = signal.SIGTERM if signal.SIGTERM in received else received[0] if received else engine.agreed_signal
            raise Interrupted(path, run_dir, signum) from None
        if not finished:  # stopped by --max-steps: a checkpoint, so that --resume goes on from here
            write_checkpoint(engine, run_dir, schedule)
        summary = finish(engine, run_dir, finished)
    except NonFiniteLoss as error:  # no checkpoint is written of a state that is not finite
        engine.metrics.write(StoppedEvent(step=error.step, stage=error.stage, reason=str(error)))
        if isinstance(error, ProbeDiverged):  # a resume would probe the same candidates again
            raise RunError(str(error), code=1) from None
        raise RunError(f"{error}; {last_checkpoint(run_dir)}", code=1) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        engine.metrics.close()
    return RunResult(run_dir, summary, finished)


def finish(engine: Engine, run_dir: Path, finished: bool) -> Summary:
    """The summary (and, for a finished run, `final/`: the model and its config)."""
    schedule, state = engine.schedule, engine.state
    config = state.model.config
    if state.last_eval is not None and state.last_eval[0] == state.step:
        val = state.last_eval[1]  # the schedule's own evaluation at the last step
    else:
        val = engine.evaluate(state.model)  # under several ranks: every rank evaluates its share
    elapsed = state.elapsed()
    tokens = state.step * schedule.tokens_per_step
    summary = Summary(
        schedule=schedule.name,
        finished=finished,
        steps=state.step,
        final_train_loss=state.last_loss,
        final_val_loss=val,
        tokens=tokens,
        mainline_flops=state.mainline_flops,
        probe_flops=state.probe_flops,
        flops=state.flops,
        scratch_flops=engine.cost.step_flops(  # the shape the run reached, from scratch, for its steps
            Shape(depth=config.depth, width=config.width, heads=config.heads), state.step
        ),
        final_shape=ShapeInfo(depth=config.depth, width=config.width, heads=config.heads),
        params=state.model.num_params(),
        wall_seconds=round(elapsed, 3),
        tokens_per_s=round(tokens / elapsed, 1) if elapsed > 0 else None,
        winners=dict(state.winners),
        phase_seconds={k: round(v, 4) for k, v in engine.phase_seconds.items()},
    )

    weights = state.whole_state()[0] if finished else {}  # gathered on every rank when sharded

    def write() -> None:
        if finished:
            final = run_dir / "final"
            try:
                final.mkdir(exist_ok=True)
                ckpt.write_atomic({"model": weights}, final / "model.pt")
            except OSError as error:
                raise RunError(
                    f"cannot write `{final / 'model.pt'}`: {_reason(error)}; {last_checkpoint(run_dir)}"
                ) from None
            config_json = {k: getattr(config, k) for k in config.__dataclass_fields__}
            _write_text(final / "config.json", json.dumps(config_json, indent=2) + "\n")
        _write_text(run_dir / "summary.json", dump_json(summary))

    dist.on_main(engine.world, write, (RunError,))  # rank 0 writes
    return summary


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
    base = None
    # relative data paths (a tokenizer's) start where the schedule first was; a damaged run.json is
    # the resume's own checks' to report
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        base = Path(json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["base"])
    result = check_text(text, str(path), base)
    if result.schedule is None:
        raise RunError(f"the schedule in `{run_dir}` no longer validates", code=1)
    return result.schedule, text
