"""A run's lifetime once its engine is ready: `execute` runs it to the end (or `--max-steps`),
turning SIGINT and SIGTERM into a checkpoint at a step boundary; `write_checkpoint` saves the
engine's state atomically; `finish` writes `final/` and `summary.json`. `lagdsl.runtime.run.start` opens
the run directory and builds the engine."""

from __future__ import annotations

import json
import math
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lagdsl.artifacts import CheckpointEvent, Dims, ShapeInfo, StoppedEvent, Summary, dump_json
from lagdsl.lang.schedule import MixtureSpec, Positions, Schedule, Shape
from lagdsl.model.config import GPTConfig
from lagdsl.runtime.distributed import world as dist
from lagdsl.runtime.records.metrics import LogFailed
from lagdsl.runtime.records.segments import Segments
from lagdsl.runtime.run.inputs import RunError
from lagdsl.runtime.state import checkpoint as ckpt
from lagdsl.runtime.state import dcp
from lagdsl.runtime.training.engine import Engine, NonFiniteLoss
from lagdsl.runtime.training.losses import ProbeDiverged


class Interrupted(Exception):
    """Stopped by a signal (SIGINT or SIGTERM) at a step boundary, with a checkpoint written."""

    def __init__(self, checkpoint: Path, run_dir: Path, signum: int) -> None:
        super().__init__("interrupted")
        self.checkpoint, self.run_dir, self.signum = checkpoint, run_dir, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them


@dataclass
class RunResult:
    run_dir: Path
    summary: Summary
    finished: bool


def write_checkpoint(engine: Engine, run_dir: Path, schedule: Schedule) -> Path:
    """The engine's state, atomically, under `checkpoints/`, then its event; older ones beyond
    `keep` pruned. A state whose weights are not finite is never written; a write that fails (a
    full disk) leaves no file, no event, and every earlier checkpoint as it was."""
    folder = run_dir / "checkpoints"
    step, world = engine.step, engine.world
    path = ckpt.checkpoint_path(folder, step, engine.pc, sharded=world.distributed)
    state = engine.checkpoint_state()
    state["segments"] = Segments.as_data(engine.segments.upto(int(state["step"]), float(state["elapsed"])))
    if not engine.in_probe:
        state["metrics_lines"] = engine.metrics.lines + 1  # the checkpoint event, written next
        state["checkpoint_event"] = str(path.relative_to(run_dir))  # (unless a kill comes first)
    finite = all(bool(torch.isfinite(_local(tensor)).all()) for tensor in state["model"].values())
    if world.distributed:  # each rank looked at its own shards (under FSDP): agreed on by all
        finite = not dist.any_rank(not finite, torch.device("cpu"))
    if not finite:
        raise NonFiniteLoss(engine.stage_name, step, math.nan, what="the weights became non-finite")
    try:
        if world.distributed:
            dcp.save(state, path, world)  # every rank its part; complete or absent
        else:
            ckpt.write_atomic(state, path)
    except OSError as error:
        raise RunError(f"cannot write checkpoint `{path}`: {reason(error)}; {last_checkpoint(run_dir)}") from None
    engine.metrics.write(CheckpointEvent(step=step, path=str(path.relative_to(run_dir))))
    if world.main:
        ckpt.prune(folder, schedule.checkpoint.keep, newest=path)
    return path


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's own shard (a plain tensor as it is)."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def last_checkpoint(run_dir: Path) -> str:
    """Where a resumed run would start, for messages: the newest intact checkpoint."""
    newest = ckpt.newest_intact(run_dir / "checkpoints")
    if newest is None:
        return "no checkpoint was written before it"
    return f"the last good checkpoint is `{newest}` (resume with `lagdsl run --resume {run_dir}`)"


def reason(error: OSError) -> str:
    return error.strerror or str(error)


def write_text(path: Path, text: str) -> None:
    """`text` to `path` atomically: a failure (a full disk, no permission) leaves no partial file."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    from lagdsl.artifacts.atomic import write_bytes

    try:
        write_bytes(path, data)
    except OSError as error:
        raise RunError(f"cannot write `{path}`: {reason(error)}") from None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_NO_OPTIMIZER: dict[str, object] = {"state": {}, "param_groups": []}  # the final model has none


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
            signum = signal.SIGTERM if signal.SIGTERM in received else received[0] if received else engine.agreed.signal
            raise Interrupted(path, run_dir, signum) from None
        if not finished:  # stopped by --max-steps: a checkpoint, so that --resume goes on from here
            write_checkpoint(engine, run_dir, schedule)
        summary = finish(engine, run_dir, finished)
    except LogFailed as error:  # rank 0's log or tracker failed: every rank stops with its message
        raise RunError(str(error)) from None
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
    segments = engine.segments.upto(state.step, state.elapsed())
    elapsed = sum(segment.wall_seconds or 0.0 for segment in segments)
    tokens = schedule.tokens_at(state.step)
    grew_context = config.context != schedule.model.context
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
        scratch_flops=engine.cost.step_flops(_shape(config), state.step),  # the shape reached, from scratch
        final_shape=ShapeInfo(**Dims.of(config, grew_context).model_dump(), heads=config.heads),
        params=state.model.num_params(),
        wall_seconds=round(elapsed, 3),
        tokens_per_s=round(tokens / elapsed, 1) if elapsed > 0 else None,
        winners=dict(state.winners),
        phase_seconds={k: round(v, 4) for k, v in engine.phase_seconds.items()},
        segments=segments,
    )

    final = run_dir / "final"
    config_json = config.fields()
    weights: dict[str, torch.Tensor] = {}
    if finished and state.recipe.sharded:  # each rank writes its own shards: gathered by none
        model = final / f"model{dcp.SUFFIX}"
        try:
            shares = {"config": config_json, "model": state.sharded_state()[0], "optimizer": _NO_OPTIMIZER}
            dcp.save(shares, model, engine.world)
        except OSError as error:
            raise RunError(f"cannot write `{model}`: {reason(error)}; {last_checkpoint(run_dir)}") from None
    elif finished:
        weights = state.model.state_dict()

    def write() -> None:
        if engine.metrics.failure is not None:  # rank 0's log failed after the last step: all stop
            raise RunError(engine.metrics.failure)
        if finished:
            try:
                final.mkdir(exist_ok=True)
                if weights:
                    ckpt.write_atomic({"model": weights}, final / "model.pt")
            except OSError as error:
                raise RunError(
                    f"cannot write `{final / 'model.pt'}`: {reason(error)}; {last_checkpoint(run_dir)}"
                ) from None
            write_text(final / "config.json", json.dumps(config_json, indent=2) + "\n")
        write_text(run_dir / "summary.json", dump_json(summary))

    dist.on_main(engine.world, write, (RunError,))  # rank 0 writes
    return summary


def _shape(config: GPTConfig) -> Shape:
    """A model's shape as the plan counts it: its key/value heads, MLP size and mixture too (the
    plan's figure for the same shape, where the depth and width alone gave a `gpt` model's)."""
    moe = MixtureSpec(**asdict(config.moe)) if config.moe is not None else None
    positions = Positions(context=config.context, theta=config.rope_theta, rope=config.rope_scaling)
    return Shape(
        depth=config.depth, width=config.width, heads=config.heads, kv_heads=config.kv_heads, hidden=config.ffn,
        moe=moe, positions=positions,
    )  # fmt: skip
