"""A run directory read back: its events, summary and status, for the report and the benchmarks.

A run directory may be finished, stopped early (`--max-steps`), stopped by a non-finite loss, or
unfinished (interrupted, killed, or still running); all of them can be read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lagdsl.analysis.curves import first_reach, interpolate


class RunDirError(Exception):
    """The path is not a run directory, or its files cannot be read."""


@dataclass
class RunLog:
    path: Path
    name: str
    meta: dict[str, object]
    summary: dict[str, object] | None
    events: list[dict[str, object]]
    status: str  # finished | stopped early | stopped | unfinished
    detail: str
    steps: list[dict[str, object]] = field(default_factory=list)  # mainline step events, by step
    evals: list[dict[str, object]] = field(default_factory=list)
    stages: list[dict[str, object]] = field(default_factory=list)
    grows: list[dict[str, object]] = field(default_factory=list)
    probes: list[dict[str, object]] = field(default_factory=list)
    selects: list[dict[str, object]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def last_step(self) -> int:
        """Mainline steps done, as far as the log shows."""
        if self.summary is not None:
            return int(self.summary["steps"])
        return int(self.steps[-1]["step"]) + 1 if self.steps else 0

    def _at(self, step: float, key: str) -> float:
        """`key` (a counter logged with every step event) after `step` mainline steps."""
        xs = [0.0] + [float(e["step"]) + 1 for e in self.steps]
        ys = [0.0] + [float(e[key]) for e in self.steps]
        return interpolate(xs, ys, step)

    def flops_at(self, step: float) -> float:
        """Training FLOPs (probes included) spent when `step` mainline steps were done."""
        return self._at(step, "flops")

    def seconds_at(self, step: float) -> float:
        return self._at(step, "elapsed")

    @property
    def total_flops(self) -> float:
        if self.summary is not None:
            return float(self.summary["flops"])
        return float(self.steps[-1]["flops"]) if self.steps else 0.0

    def val_curve(self) -> tuple[list[int], list[float]]:
        """(steps, val losses) of the evaluations, in step order."""
        return [int(e["step"]) for e in self.evals], [float(e["val_loss"]) for e in self.evals]

    def step_reaching(self, target: float) -> float | None:
        """The mainline step (interpolated between evaluations) at which the val loss first comes
        down to `target`, or None if it never does."""
        steps, losses = self.val_curve()
        return first_reach([float(s) for s in steps], losses, target)

    @property
    def final_val_loss(self) -> float | None:
        if self.summary is not None and self.summary.get("final_val_loss") is not None:
            return float(self.summary["final_val_loss"])
        return float(self.evals[-1]["val_loss"]) if self.evals else None


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RunDirError(f"`{path}` cannot be read: {error}") from None


def read_run(path: Path) -> RunLog:
    """Read a run directory written by `lagdsl run`."""
    if not path.is_dir():
        raise RunDirError(f"`{path}` is not a directory: give the run directory that `lagdsl run` wrote")
    metrics = path / "metrics.jsonl"
    if not metrics.exists():
        raise RunDirError(f"`{path}` is not a run directory: it has no `metrics.jsonl`")
    meta = _read_json(path / "run.json") or {}
    summary = _read_json(path / "summary.json")
    events: list[dict[str, object]] = []
    lines = metrics.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # a run killed while writing leaves a partial last line
                break
            raise RunDirError(f"`{metrics}` line {number} is not JSON: the file is damaged") from None
    by_step: dict[int, dict[str, object]] = {}
    log = RunLog(path, str(meta.get("schedule", path.name)), meta, summary, events, "unfinished", "")
    for event in events:
        kind = event.get("event")
        if kind == "step":
            by_step[int(event["step"])] = event
        elif kind == "eval":
            log.evals.append(event)
        elif kind == "stage":
            log.stages.append(event)
        elif kind == "grow":
            log.grows.append(event)
        elif kind == "probe":
            log.probes.append(event)
        elif kind == "select":
            log.selects.append(event)
    log.steps = [by_step[s] for s in sorted(by_step)]
    log.evals.sort(key=lambda e: int(e["step"]))
    stopped = [e for e in events if e.get("event") == "stopped"]
    if stopped:
        log.status, log.detail = "stopped", f"stopped at step {stopped[-1]['step']}: {stopped[-1]['reason']}"
    elif summary is not None and summary.get("finished"):
        log.status, log.detail = "finished", f"finished: {summary['steps']} steps"
    elif summary is not None:
        log.status, log.detail = "stopped early", f"stopped early at step {summary['steps']} (`--max-steps`)"
    else:
        log.detail = (
            f"unfinished: the log ends at step {log.last_step} (interrupted, killed, or still running); "
            "`lagdsl run --resume` goes on from its last checkpoint"
        )
    return log
