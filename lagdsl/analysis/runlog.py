"""A run directory read back: its events, summary and status, for the report and the benchmarks.

A run directory may be finished, stopped early (`--max-steps`), stopped by a non-finite loss, or
unfinished (interrupted, killed, or still running); all of them can be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lagdsl.analysis.curves import first_reach, interpolate
from lagdsl.artifacts import (
    ArtifactError,
    EvalEvent,
    Event,
    GrowEvent,
    PartsEvent,
    ProbeEvent,
    RunInfo,
    SelectEvent,
    StageEvent,
    StepEvent,
    StoppedEvent,
    Summary,
    read_events,
    read_json,
)


class RunDirError(Exception):
    """The path is not a run directory, or its files cannot be read."""


@dataclass
class RunLog:
    path: Path
    name: str
    meta: RunInfo | None  # None: the run directory has no `run.json`
    summary: Summary | None  # None: the run has not ended
    events: list[Event]
    status: str  # finished | stopped early | stopped | unfinished
    detail: str
    steps: list[StepEvent] = field(default_factory=list)  # mainline step events, by step
    evals: list[EvalEvent] = field(default_factory=list)
    stages: list[StageEvent] = field(default_factory=list)
    grows: list[GrowEvent] = field(default_factory=list)
    probes: list[ProbeEvent] = field(default_factory=list)
    selects: list[SelectEvent] = field(default_factory=list)
    parts: list[PartsEvent] = field(default_factory=list)  # what was frozen (and LR-scaled) from when

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def last_step(self) -> int:
        """Mainline steps done, as far as the log shows."""
        if self.summary is not None:
            return self.summary.steps
        return self.steps[-1].step + 1 if self.steps else 0

    def _at(self, step: float, key: str) -> float:
        """`key` (a counter logged with every step event) after `step` mainline steps."""
        xs = [0.0] + [float(e.step) + 1 for e in self.steps]
        ys = [0.0] + [float(getattr(e, key)) for e in self.steps]
        return interpolate(xs, ys, step)

    def flops_at(self, step: float) -> float:
        """Training FLOPs (probes included) spent when `step` mainline steps were done."""
        return self._at(step, "flops")

    def seconds_at(self, step: float) -> float:
        return self._at(step, "elapsed")

    @property
    def total_flops(self) -> float:
        if self.summary is not None:
            return float(self.summary.flops)
        return float(self.steps[-1].flops) if self.steps else 0.0

    def val_curve(self) -> tuple[list[int], list[float]]:
        """(steps, val losses) of the evaluations, in step order."""
        return [e.step for e in self.evals], [e.val_loss for e in self.evals]

    def step_reaching(self, target: float) -> float | None:
        """The mainline step (interpolated between evaluations) at which the val loss first comes
        down to `target`, or None if it never does."""
        steps, losses = self.val_curve()
        return first_reach([float(s) for s in steps], losses, target)

    @property
    def final_val_loss(self) -> float | None:
        if self.summary is not None:
            return self.summary.final_val_loss
        return self.evals[-1].val_loss if self.evals else None


def read_run(path: Path) -> RunLog:
    """Read a run directory written by `lagdsl run`."""
    if not path.is_dir():
        raise RunDirError(f"`{path}` is not a directory: give the run directory that `lagdsl run` wrote")
    metrics = path / "metrics.jsonl"
    if not metrics.exists():
        raise RunDirError(f"`{path}` is not a run directory: it has no `metrics.jsonl`")
    try:
        meta = read_json(path / "run.json", RunInfo) if (path / "run.json").exists() else None
        summary = read_json(path / "summary.json", Summary) if (path / "summary.json").exists() else None
        events = read_events(metrics)
    except ArtifactError as error:
        raise RunDirError(f"{error}: the run directory is damaged") from None  # one line, file and line named
    by_step: dict[int, StepEvent] = {}
    log = RunLog(path, meta.schedule if meta else path.name, meta, summary, events, "unfinished", "")
    stopped: list[StoppedEvent] = []
    for event in events:
        match event:
            case StepEvent():
                by_step[event.step] = event
            case EvalEvent():
                log.evals.append(event)
            case StageEvent():
                log.stages.append(event)
            case GrowEvent():
                log.grows.append(event)
            case ProbeEvent():
                log.probes.append(event)
            case SelectEvent():
                log.selects.append(event)
            case PartsEvent():
                log.parts.append(event)
            case StoppedEvent():
                stopped.append(event)
    log.steps = [by_step[s] for s in sorted(by_step)]
    log.evals.sort(key=lambda e: e.step)
    if stopped:
        log.status, log.detail = "stopped", f"stopped at step {stopped[-1].step}: {stopped[-1].reason}"
    elif summary is not None and summary.finished:
        log.status, log.detail = "finished", f"finished: {summary.steps} steps"
    elif summary is not None:
        log.status, log.detail = "stopped early", f"stopped early at step {summary.steps} (`--max-steps`)"
    else:
        log.detail = (
            f"unfinished: the log ends at step {log.last_step} (interrupted, killed, or still running); "
            "`lagdsl run --resume` goes on from its last checkpoint"
        )
    return log
