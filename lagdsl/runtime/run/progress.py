"""Progress on stderr: a rich bar on a terminal, plain periodic lines otherwise, nothing with --quiet."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import torch

from lagdsl.artifacts import Artifact, EvalEvent, GrowEvent, SelectEvent
from lagdsl.runtime.training.engine import Engine

READ_EVERY = 0.5  # seconds between reads of the loss for the bar


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    def __init__(self, total: int, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = max(total, 1)
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.every = max(1, self.total // 20)
        self.started = time.perf_counter()
        self.first_step: int | None = None
        self.loss: float | None = None  # the newest loss read, and when
        self.read_at = 0.0
        self.bar = None
        self.task = None
        if self.tty and not quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), console=Console(file=self.stream), transient=False,
            )  # fmt: skip
            self.task = self.bar.add_task("starting", total=self.total, info="")
            self.bar.start()

    def __call__(self, engine: Engine, stage: str, step: int, loss: torch.Tensor) -> None:
        if self.quiet:
            return
        if self.first_step is None:
            self.first_step, self.started = step, time.perf_counter()
        done = engine.step if engine.probing else max(engine.step, step + 1)  # probe steps are not progress
        now = time.perf_counter()
        elapsed = now - self.started
        printing = self.bar is None and engine.probing is None and (done % self.every == 0 or done == self.total)
        if printing or (self.bar is not None and now - self.read_at >= READ_EVERY):
            self.loss, self.read_at = float(loss), now  # reading waits for the device: not every step
        rate = (done - self.first_step) * engine.schedule.tokens_per_step / elapsed if elapsed > 0 else 0.0
        probe = f" probing {engine.probing} ({step - engine.step + 1}/{engine.probe_steps})" if engine.probing else ""
        what = f"{stage}{probe}"
        info = (f"loss {self.loss:.3f}" if self.loss is not None else "") + (
            f"  {rate / 1000:.1f}k tok/s" if done > self.first_step + 1 else ""
        )
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done, description=what, info=info)
            return
        if printing:
            left = (self.total - done) / max(done - self.first_step, 1) * elapsed
            print(f"step {done}/{self.total} {what}: {info}, eta {_duration(left)}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line that stays on screen: above the bar on a terminal, a plain line otherwise."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def event(self, event: Artifact) -> None:
        """What a person wants to see as it happens: evaluations, growths, probe choices."""
        match event:
            case EvalEvent():
                self.note(f"step {event.step} `{event.stage}`: val loss {event.val_loss:.4f}")
            case GrowEvent():
                change = f"{event.dim} {getattr(event.before, event.dim)} -> {getattr(event.after, event.dim)}"
                self.note(f"step {event.step} `{event.stage}`: grew {change} with {event.operator}")
            case SelectEvent():
                scores = ", ".join(
                    f"{label} {score:.4f}" if score is not None else f"{label} diverged (dropped)"
                    for label, score in event.scores.items()
                )
                self.note(f"step {event.step} `{event.stage}`: the probe chose {event.winner} ({event.rule}: {scores})")
            case _:
                pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
