"""Metrics where users look: TensorBoard and Weights & Biases, fed from the run's events.

A tracker listens to `metrics.jsonl` as it is written (rank 0 only) and logs the same numbers:
`train/loss`, `train/lr`, `train/tokens`, `train/flops`, `train/tokens_per_s`, `model/params`,
`val/loss`, and at each growth `model/depth` and `model/width`, with a text note of the growth or
the probe's choice; every probe candidate's losses go to `probe/<stage>.<growth>/<candidate>`. The
step axis is the mainline step, so curves line up across growths and resumes (a resumed run's
TensorBoard log drops what came after its checkpoint; W&B resumes the same run).

Both are optional extras; `require` says which `pip install` is missing before a run starts.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from lagdsl.artifacts import Artifact, EvalEvent, GrowEvent, ProbeEvent, SelectEvent, StepEvent


class TrackerError(Exception):
    """A tracker that cannot be used; the message is one line for the user."""


class Sink(Protocol):
    """Where numbers go: a scalar or a text at a mainline step."""

    def scalar(self, name: str, value: float, step: int) -> None: ...
    def text(self, name: str, value: str, step: int) -> None: ...
    def close(self) -> None: ...


def require(tensorboard: bool, wandb: bool) -> None:
    """`TrackerError` naming the `pip install` for an extra that is asked for and missing."""
    missing = []
    if tensorboard and not _importable("tensorboard"):
        missing.append(("--tensorboard", "tensorboard"))
    if wandb and not _importable("wandb"):
        missing.append(("--wandb", "wandb"))
    if missing:
        option, extra = missing[0]
        raise TrackerError(f"{option} needs the `{extra}` package: pip install 'lagdsl[{extra}]'")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class TensorBoard:
    def __init__(self, log_dir: Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        try:  # a resumed run: events at or after its checkpoint's step are dropped, then written again
            self.writer = SummaryWriter(str(log_dir), purge_step=resume_step)
        except OSError as error:
            raise TrackerError(f"cannot write TensorBoard logs into `{log_dir}`: {error.strerror or error}") from None

    def scalar(self, name: str, value: float, step: int) -> None:
        self.writer.add_scalar(name, value, step)

    def text(self, name: str, value: str, step: int) -> None:
        self.writer.add_text(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A W&B run named after the run directory (resumed with it); `WANDB_MODE=offline` works with
    no network (`wandb sync` uploads later)."""

    def __init__(self, project: str, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        created = str(config.get("created", ""))
        run_id = hashlib.sha256(f"{run_dir.resolve()}\0{created}".encode()).hexdigest()[:16]
        try:
            self.run = wandb.init(
                project=project, name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir), config=config
            )
        except Exception as error:  # wandb's own errors (no login, no network): one line
            raise TrackerError(f"W&B could not start: {str(error).splitlines()[0] if str(error) else error}") from None
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def scalar(self, name: str, value: float, step: int) -> None:
        self.run.log({name: value, "step": step})

    def text(self, name: str, value: str, step: int) -> None:
        self.run.log({name: value, "step": step})

    def close(self) -> None:
        """Finish the run and wait until W&B's service process has written all of it: `finish()`
        only asks the service to close the run's record file, and the `atexit` hook that would
        otherwise wait never runs for a torchrun rank (`dist.leave` ends it with `os._exit`)."""
        import wandb

        self.run.finish()
        with contextlib.suppress(SystemExit):  # the service's own failure, reported by it; files stay
            wandb.teardown()


class Tracker:
    """Turns events into sinks' scalars and texts; `model()` is the model's (depth, width, params)
    now, logged at the first step (of a run, or of its resume)."""

    what = "the experiment tracker"  # how a failure of its names it

    def __init__(self, sinks: list[Sink], model: Callable[[], tuple[int, int, int]]) -> None:
        self.sinks, self.model = sinks, model
        self._last: tuple[int, float] | None = None  # tokens and elapsed of the previous step event

    def _scalar(self, name: str, value: float, step: int) -> None:
        for sink in self.sinks:
            sink.scalar(name, value, step)

    def _text(self, name: str, value: str, step: int) -> None:
        for sink in self.sinks:
            sink.text(name, value, step)

    def __call__(self, event: Artifact) -> None:
        if isinstance(event, StepEvent):
            self._step(event)
        elif isinstance(event, EvalEvent):
            self._scalar("val/loss", event.val_loss, event.step)
        elif isinstance(event, GrowEvent):
            self._grown(event.step, event.after.depth, event.after.width, event.params)
            self._text(
                "growth",
                f"{event.stage}: `{event.operator}` grew {event.dim} {event.before.depth}x{event.before.width} -> "
                f"{event.after.depth}x{event.after.width} ({event.params:,} parameters)",
                event.step,
            )
        elif isinstance(event, ProbeEvent):
            for step, loss in zip(event.steps, event.losses, strict=False):
                self._scalar(f"probe/{event.stage}.{event.growth}/{event.candidate}", loss, step)
        elif isinstance(event, SelectEvent):
            if event.after is not None and event.params is not None:
                self._grown(event.step, event.after.depth, event.after.width, event.params)
            scores = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} diverged" for k, v in event.scores.items())
            self._text("growth", f"{event.stage}: probe chose `{event.winner}` ({event.rule}: {scores})", event.step)

    def _step(self, event: StepEvent) -> None:
        step = event.step
        self._scalar("train/loss", event.loss, step)
        self._scalar("train/lr", event.lr, step)
        self._scalar("train/tokens", event.tokens, step)
        self._scalar("train/flops", event.flops, step)
        if self._last is not None and event.elapsed > self._last[1] and event.tokens > self._last[0]:
            self._scalar("train/tokens_per_s", (event.tokens - self._last[0]) / (event.elapsed - self._last[1]), step)
        if self._last is None:
            self._grown(step, *self.model())
        self._last = (event.tokens, event.elapsed)

    def _grown(self, step: int, depth: int, width: int, params: int) -> None:
        self._scalar("model/depth", depth, step)
        self._scalar("model/width", width, step)
        self._scalar("model/params", params, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_trackers(
    run_dir: Path, tensorboard: Path | None, wandb: str | None, resumed_at: int | None, engine: Any
) -> Tracker | None:
    """The tracker of `lagdsl run --tensorboard/--wandb` for `engine`'s run (None when neither is
    asked for). `resumed_at`: the step a resumed run goes on from."""
    if tensorboard is None and wandb is None:
        return None
    import json

    sinks: list[Sink] = []
    if tensorboard is not None:
        sinks.append(TensorBoard(tensorboard, None if resumed_at is None else resumed_at + 1))
    if wandb is not None:
        try:
            config = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        sinks.append(WandB(wandb, run_dir, config))

    def model() -> tuple[int, int, int]:
        config = engine.state.model.config
        return config.depth, config.width, engine.state.model.num_params()

    return Tracker(sinks, model)
