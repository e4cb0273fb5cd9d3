"""The segments of a run: each process that trained it, from its first step to its last.

A run stopped (SIGTERM, a crash, `--max-steps`) and resumed, perhaps on another number of ranks, is
several segments. Each checkpoint records the segments up to its own step (the one in progress cut
at that step: what a crash after it loses is redone by the next segment, and is not counted), so
a resume starts from the segments of the checkpoint it resumes from and adds its own. `run.json`
lists them as each process starts (the one in progress without its end), `summary.json` whole;
the summary's wall time is their sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lagdsl.artifacts.run import Segment


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Segments:
    """The earlier processes' segments and this one's start (its step and the run's wall seconds then)."""

    done: list[Segment]
    ranks: int
    first_step: int = 0
    elapsed_at_start: float = 0.0
    started: str = field(default_factory=_now)

    @classmethod
    def resumed(cls, saved: Mapping[str, Any], ranks: int, first_ranks: int) -> Segments:
        """The segments of the checkpoint `saved`, and this process's from its step on. A
        checkpoint written before segments were recorded stands for one segment of `first_ranks`."""
        step, elapsed = int(saved["step"]), float(saved.get("elapsed", 0.0))
        recorded = saved.get("segments")
        if recorded:
            done = [Segment.model_validate(item) for item in recorded]
        else:
            done = [Segment(ranks=first_ranks, first_step=0, last_step=step, wall_seconds=round(elapsed, 3))]
        return cls(done, ranks, step, elapsed)

    def upto(self, step: int, elapsed: float) -> list[Segment]:
        """Every segment, this process's ending at `step` with the run's wall seconds `elapsed`."""
        wall = max(elapsed - self.elapsed_at_start, 0.0)
        mine = Segment(ranks=self.ranks, first_step=self.first_step, last_step=step, wall_seconds=round(wall, 3),
                       started=self.started)  # fmt: skip
        return [*self.done, mine]

    def started_so_far(self) -> list[Segment]:
        """Every segment, this process's without its end (for `run.json`, as it starts)."""
        return [*self.done, Segment(ranks=self.ranks, first_step=self.first_step, started=self.started)]

    @staticmethod
    def as_data(segments: list[Segment]) -> list[dict[str, Any]]:
        return [segment.model_dump(exclude_none=True) for segment in segments]
