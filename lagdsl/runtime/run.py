"""A run: the run directory, the engine, checkpoints, resume, interruption and the summary.

runs/<schedule>-<timestamp>/
  schedule.grow   the schedule's source        run.json      hash, seed, device, data fingerprint
  plan.json       the plan (lagdsl.plan/1)      metrics.jsonl the events
  checkpoints/    step-<step>-<pc>.pt           final/        model.pt + config.json
  summary.json    what the run achieved
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from lagdsl import __version__
from lagdsl.artifacts import (
    ArtifactError,
    CheckpointEvent,
    RunInfo,
    ShapeInfo,
    StoppedEvent,
    Summary,
    dump_json,
    read_json,
)
from lagdsl.lang import check_text
from lagdsl.lang.schedule import Schedule
from lagdsl.plan import build_plan
from lagdsl.plan.render import to_json
from lagdsl.runtime import checkpoint as ckpt
from lagdsl.runtime.data import Batches, Corpus, DataError, load_corpus
from lagdsl.runtime.engine import Device, Engine, NonFiniteLoss, OnStep
from lagdsl.runtime.metrics import Metrics
from lagdsl.runtime.program import Instruction, lower


class RunError(Exception):
    """A run that cannot start or go on; `code` is the exit code (1: the schedule or the
    numbers, 2: input, data, device); the message is one line for the user."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Interrupted(Exception):
    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__("interrupted")
        self.checkpoint = checkpoint


@dataclass
class RunOptions:
    out: Path | None = None
    device: str | None = None
    seed: int | None = None
    max_steps: int | None = None
    quiet: bool = False
    resume: Path | None = None


@dataclass
class RunResult:
    run_dir: Path
    summary: Summary
    finished: bool


def schedule_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apply_overrides(schedule: Schedule, seed: int | None, device: str | None) -> Schedule:
    update: dict[str, object] = {}
    if seed is not None:
        update["seed"] = seed
    if device is not None:
        update["device"] = device
    return schedule.model_copy(update=update) if update else schedule


def open_device(schedule: Schedule) -> Device:
    """The schedule's device, checked to exist here; TF32 matrix products on CUDA."""
    try:
        device = Device.resolve(schedule.device, schedule.precision)
    except (RuntimeError, KeyError) as error:
        raise RunError(f"device `{schedule.device}` is not available here: {error}") from None
    if device.device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"device `{schedule.device}` is not available here: no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def open_data(schedule: Schedule, base: Path, device: Device) -> tuple[Corpus, Batches]:
    """The schedule's corpus (relative paths from `base`) and its batches, checked against the model."""
    try:
        corpus = load_corpus(schedule.data, base)
        batches = Batches(corpus, schedule.batch, schedule.model.context, schedule.seed, device.device)
    except DataError as error:
        raise RunError(f"data: {error}") from None
    if corpus.vocab > schedule.model.vocab:
        raise RunError(f"data: the data has token ids up to {corpus.vocab - 1}, beyond `vocab={schedule.model.vocab}`")
    return corpus, batches


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
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = options.out or Path("runs") / f"{schedule.name}-{stamp}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"`{run_dir}` already holds a run: choose another `--out`, or `--resume {run_dir}`")
    device = open_device(schedule)
    corpus, batches = open_data(schedule, base, device)
    plan = build_plan(schedule)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "schedule.grow").write_text(source_text, encoding="utf-8")
    (run_dir / "plan.json").write_text(to_json(plan), encoding="utf-8")
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
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    (run_dir / "run.json").write_text(dump_json(info), encoding="utf-8")
    engine = _engine(schedule, lower(plan), batches, device, run_dir, 0, progress, options.max_steps)
    engine.initialize()
    return engine, run_dir


def resume_run(
    schedule: Schedule, source_text: str, options: RunOptions, progress: OnStep | None = None
) -> tuple[Engine, Path]:
    """An engine in the state of `options.resume`'s newest checkpoint (at the start, if it has
    none), after checking that the schedule and the data are the ones the run was started with."""
    run_dir = options.resume
    assert run_dir is not None
    meta = _read_info(run_dir)
    if meta.schedule_hash != schedule_hash(source_text):
        raise RunError(
            f"`{run_dir}` was run with a different schedule (its hash differs): resume it with its own "
            f"`{run_dir / 'schedule.grow'}`, or start a new run"
        )
    schedule = apply_overrides(schedule, meta.seed, meta.device)
    device = open_device(schedule)
    corpus, batches = open_data(schedule, Path(meta.base), device)
    if meta.data_fingerprint != corpus.fingerprint:
        raise RunError(f"data: the data differs from what `{run_dir}` was trained on (its fingerprint changed)")
    found = ckpt.list_checkpoints(run_dir / "checkpoints")
    saved = ckpt.load(found[-1]) if found else None
    lines = int(saved["metrics_lines"]) if saved else 0
    engine = _engine(
        schedule, lower(build_plan(schedule)), batches, device, run_dir, lines, progress, options.max_steps
    )
    if saved is not None:
        engine.load(saved)
    else:
        engine.initialize()
    return engine, run_dir


def _engine(
    schedule: Schedule,
    program: tuple[Instruction, ...],
    batches: Batches,
    device: Device,
    run_dir: Path,
    metrics_lines: int,
    progress: OnStep | None,
    max_steps: int | None,
) -> Engine:
    metrics = Metrics(run_dir / "metrics.jsonl", keep_lines=metrics_lines)

    def on_checkpoint(engine: Engine, step: int) -> None:
        write_checkpoint(engine, run_dir, schedule)

    return Engine(schedule, program, batches, device, metrics, on_checkpoint, progress, max_steps)


def write_checkpoint(engine: Engine, run_dir: Path, schedule: Schedule) -> Path:
    """The engine's state, atomically, under `checkpoints/`; older ones beyond `keep` pruned."""
    folder = run_dir / "checkpoints"
    step = engine.step
    path = ckpt.checkpoint_path(folder, step, engine.pc)
    engine.metrics.write(CheckpointEvent(step=step, path=str(path.relative_to(run_dir))))
    state = engine.checkpoint_state()  # outside a probe: with the checkpoint event itself
    ckpt.write_atomic(state, path)
    ckpt.prune(folder, schedule.checkpoint.keep)
    return path


def execute(engine: Engine, run_dir: Path) -> RunResult:
    """Run to the end (or `--max-steps`); Ctrl-C checkpoints and raises `Interrupted`."""
    schedule = engine.schedule

    def on_interrupt(signum: int, frame: object) -> None:
        engine.interrupted = True  # the engine stops at the next step boundary

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if in_main_thread else None
    try:
        finished = engine.run()
    except KeyboardInterrupt:
        path = write_checkpoint(engine, run_dir, schedule)
        engine.metrics.close()
        raise Interrupted(path) from None
    except NonFiniteLoss as error:
        engine.metrics.write(StoppedEvent(step=error.step, stage=error.stage, reason=str(error)))
        engine.metrics.close()
        found = ckpt.list_checkpoints(run_dir / "checkpoints")
        where = f"; the last good checkpoint is `{found[-1]}`" if found else "; no checkpoint was written before it"
        raise RunError(f"{error}{where}", code=1) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if not finished:  # stopped by --max-steps: a checkpoint, so that --resume goes on from here
        write_checkpoint(engine, run_dir, schedule)
    summary = finish(engine, run_dir, finished)
    engine.metrics.close()
    return RunResult(run_dir, summary, finished)


def finish(engine: Engine, run_dir: Path, finished: bool) -> Summary:
    schedule, state = engine.schedule, engine.state
    final = run_dir / "final"
    final.mkdir(exist_ok=True)
    config = state.model.config
    ckpt.write_atomic({"model": state.model.state_dict()}, final / "model.pt")
    config_json = {k: getattr(config, k) for k in config.__dataclass_fields__}
    (final / "config.json").write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")
    if state.last_eval is not None and state.last_eval[0] == state.step:
        val = state.last_eval[1]  # the schedule's own evaluation at the last step
    else:
        val = engine.evaluate(state.model)
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
        scratch_flops=engine.cost.step_flops(schedule.final_shape, state.step),
        final_shape=ShapeInfo(depth=config.depth, width=config.width, heads=config.heads),
        params=state.model.num_params(),
        wall_seconds=round(elapsed, 3),
        tokens_per_s=round(tokens / elapsed, 1) if elapsed > 0 else None,
        winners=dict(state.winners),
    )
    (run_dir / "summary.json").write_text(dump_json(summary), encoding="utf-8")
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
    result = check_text(text, str(path))
    if result.schedule is None:
        raise RunError(f"the schedule in `{run_dir}` no longer validates", code=1)
    return result.schedule, text
