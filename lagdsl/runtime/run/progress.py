"""Progress on stderr: a rich bar on a terminal, plain periodic lines otherwise, nothing with --quiet.

Probes show too: the bar names the candidate and its step, and plain output gives each candidate
a few lines, so a long probe is never silent. The rate counts every step trained, the probes' too,
and the time left is the steps left (the mainline's, and the probes' that will not continue) at
the measured time of a step; evaluations and checkpoints are in that time as they come."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import torch

from lagdsl.artifacts import Artifact, EvalEvent, GrowEvent, SelectEvent
from lagdsl.lang.schedule import Schedule
from lagdsl.runtime.training.engine import Engine

READ_EVERY = 0.5  # seconds between reads of the loss for the bar


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def probes_of(schedule: Schedule) -> list[tuple[int, int, int, bool]]:
    """Each probed growth's start step, candidates, steps, and whether the winner's steps are the
    mainline's (`keep winner`)."""
    return [
        (stage.start_step, len(growth.probe.candidates), growth.probe.steps, growth.probe.keep == "winner")
        for stage in schedule.stages
        for growth in stage.growths
        if growth.probe is not None
    ]


class Progress:
    def __init__(
        self, total: int, *, quiet: bool = False, stream: TextIO | None = None, schedule: Schedule | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.total = max(total, 1)
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.every = max(1, self.total // 20)
        self.started = time.perf_counter()
        self.first_step: int | None = None
        self.probes = probes_of(schedule) if schedule is not None else []
        self.candidates: list[str] = []  # those of the probe in progress seen so far
        self.trained = 0  # steps trained in this process, probes' included
        self.step_time = 0.0  # the wall time of those steps, from one callback to the next
        self.last_call: float | None = None
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
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step, self.started = step, now
        elif self.last_call is not None:
            self.trained += 1
            self.step_time += now - self.last_call
        self.last_call = now
        done = engine.step if engine.probing else max(engine.step, step + 1)  # probe steps are not progress
        if engine.probing is None:
            self.candidates.clear()
        elif not self.candidates or self.candidates[-1] != engine.probing:
            self.candidates.append(engine.probing)
        elapsed = now - self.started
        within = step - engine.step + 1  # the probe's step
        if engine.probing:
            printing = self.bar is None and (within % max(1, engine.probe_steps // 4) == 0 or within == 1)
        else:
            printing = self.bar is None and (done % self.every == 0 or done == self.total)
        if printing or (self.bar is not None and now - self.read_at >= READ_EVERY):
            self.loss, self.read_at = float(loss), now  # reading waits for the device: not every step
        rate = self.trained * engine.schedule.tokens_per_step / elapsed if elapsed > 0 and self.trained else 0.0
        probe = f" probing {engine.probing} ({within}/{engine.probe_steps})" if engine.probing else ""
        what = f"{stage}{probe}"
        info = (f"loss {self.loss:.3f}" if self.loss is not None else "") + (
            f"  {rate / 1000:.1f}k tok/s" if self.trained else ""
        )
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done, description=what, info=info)
            return
        if printing:
            eta = f", eta {_duration(self.left(engine, done, within))}" if self.trained else ""
            print(f"step {done}/{self.total} {what}: {info}{eta}", file=self.stream, flush=True)

    def left(self, engine: Engine, done: int, within: int) -> float:
        """Seconds left: the mainline's steps and the probes' to come (less the winner's steps, which
        the mainline's count), at the measured time of a step."""
        steps = self.total - done
        for start, candidates, length, winner in self.probes:
            if engine.probing and start == done:  # the probe in progress: this candidate's rest, the others'
                rest = (candidates - len(self.candidates)) * length + max(0, length - within)
            elif start > done or (start == done and not engine.probing):
                rest = candidates * length
            else:
                continue
            steps += max(0, rest - (length if winner else 0))
        return steps * self.step_time / self.trained

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
