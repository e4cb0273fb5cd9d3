"""`run.json` and `summary.json`: what a run was started with, and what it achieved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from lagdsl.artifacts.base import EVENTS_SCHEMA, RUN_SCHEMA, SUMMARY_SCHEMA, Artifact, ShapeInfo


class PretrainedSource(Artifact):
    """The checkpoint a run began from: where, which family, and its fingerprint
    (`lagdsl.families.base.fingerprint`), so that a resume notices a changed source."""

    folder: str
    family: str
    architecture: str
    fingerprint: str


class Segment(Artifact):
    """One process's part of a run: how many ranks, its first and last mainline step, its wall
    seconds (those the run kept: up to its last checkpoint when it was stopped), when it started."""

    ranks: int
    first_step: int
    last_step: int | None = None  # None: in progress (in `run.json`)
    wall_seconds: float | None = None
    started: str | None = None

    model_config = ConfigDict(extra="allow", frozen=True)


class RunInfo(Artifact):
    """`run.json`: what a run was started with."""

    schema_: Literal["lagdsl.run/1"] = Field(RUN_SCHEMA, alias="schema")
    events: str = EVENTS_SCHEMA  # the schema of this run's `metrics.jsonl`
    lagdsl: str
    schedule: str
    schedule_hash: str
    seed: int
    device: str
    resolved_device: str
    precision: str
    base: str  # where the schedule's relative data paths start
    data: str
    data_fingerprint: str
    created: str
    ranks: int = 1  # how many ranks started it (a resume may use another number)
    #: how text becomes tokens: `bytes`, `tokenizer.json` (the run directory's copy) or `ids` (token
    #: ids whose tokenizer the schedule does not name); None in files written before it was recorded
    tokenizer: str | None = None
    #: the pretrained checkpoint it began from (its config and tokenizer copied to `source/`); None: from scratch
    pretrained: PretrainedSource | None = None
    #: each process that has trained the run, the one in progress last (`lagdsl.runtime.records.segments`)
    segments: list[Segment] = Field(default_factory=list)

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class Summary(Artifact):
    """`summary.json`: what a run achieved."""

    schema_: Literal["lagdsl.summary/1"] = Field(SUMMARY_SCHEMA, alias="schema")
    schedule: str
    finished: bool  # False: stopped by `--max-steps`
    steps: int
    final_train_loss: float | None
    final_val_loss: float
    tokens: int
    mainline_flops: int
    probe_flops: int
    flops: int
    scratch_flops: int  # the final shape trained from scratch for the same mainline steps
    final_shape: ShapeInfo
    params: int
    wall_seconds: float
    tokens_per_s: float | None
    winners: dict[str, str]
    #: wall seconds of the last process by phase: train, probes, growth (inside probes too), wrap,
    #: checkpoints, evaluation
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    #: each process that trained the run (its wall seconds sum to `wall_seconds`)
    segments: list[Segment] = Field(default_factory=list)

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


def run_base(run_dir: Path) -> Path | None:
    """Where a run's schedule resolved its relative paths (`run.json`'s `base`: the folder the
    schedule was first in), so that `RUN/schedule.grow` checked again finds its data, tokenizer and
    pretrained folder; None where `run.json` cannot say."""
    try:
        return Path(json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["base"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
