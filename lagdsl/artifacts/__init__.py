"""What a run writes, as pydantic models: the one definition that writers and readers share.

- `metrics.jsonl`: one `Event` a line, a union discriminated by `event` (`stage`, `step`, `grow`,
  `probe`, `select`, `eval`, `checkpoint`, `end`, `stopped`). An event of a kind this version does
  not know is read as an `OtherEvent` and kept, so a newer run's log still reads.
- `run.json`: `RunInfo`, written when the run starts.
- `summary.json`: `Summary`, written when it ends (or stops at `--max-steps`).
- `study.json`: `Study`, written by `lagdsl study` after every seed.
- `plan.json`: `PlanFile`, the plan graph with its costs (`lagdsl plan --format json` prints it).

Every file carries its `schema` (`lagdsl.run/1`, ...); `metrics.jsonl`'s is named in `run.json`
(`events`), so that its lines stay one small object each. Fields this version does not know are
kept (`extra="allow"`), so reading and writing back a newer file loses nothing. A file that does not
fit its model raises `ArtifactError`, one line that names the file (and line) and the problem.
`lagdsl schema run|events|summary|study|plan` prints each model's JSON Schema. No torch here.
"""

from __future__ import annotations

from typing import Any

from lagdsl.artifacts.base import (
    EVENTS_SCHEMA,
    RUN_SCHEMA,
    STUDY_SCHEMA,
    SUMMARY_SCHEMA,
    TIMING_FIELDS,
    Artifact,
    ArtifactError,
    Dims,
    ShapeInfo,
    dump_json,
    read_json,
)
from lagdsl.artifacts.events import (
    EVENT,
    CheckpointEvent,
    EndEvent,
    EvalEvent,
    Event,
    GrowEvent,
    OtherEvent,
    PartsEvent,
    ProbeEvent,
    SelectEvent,
    StageEvent,
    StepEvent,
    StoppedEvent,
    event_line,
    read_events,
)
from lagdsl.artifacts.plan import (
    PLAN_SCHEMA,
    PlanEdge,
    PlanFile,
    PlanMemory,
    PlanNodeInfo,
    PlanSchedule,
    PlanShape,
    PlanStage,
    PlanTotals,
)
from lagdsl.artifacts.run import PretrainedSource, RunInfo, Segment, Summary
from lagdsl.artifacts.study import (
    Change,
    IntervalInfo,
    LagStats,
    LagSummary,
    PairedInfo,
    RulePick,
    RuleSummary,
    SpreadInfo,
    Study,
    StudyCandidate,
    StudyRun,
    StudySummary,
)

__all__ = [
    "EVENT",
    "EVENTS_SCHEMA",
    "PLAN_SCHEMA",
    "RUN_SCHEMA",
    "STUDY_SCHEMA",
    "SUMMARY_SCHEMA",
    "TIMING_FIELDS",
    "Artifact",
    "ArtifactError",
    "Change",
    "CheckpointEvent",
    "Dims",
    "EndEvent",
    "EvalEvent",
    "Event",
    "GrowEvent",
    "IntervalInfo",
    "LagStats",
    "LagSummary",
    "OtherEvent",
    "PairedInfo",
    "PartsEvent",
    "PlanEdge",
    "PlanFile",
    "PlanMemory",
    "PlanNodeInfo",
    "PlanSchedule",
    "PlanShape",
    "PlanStage",
    "PlanTotals",
    "PretrainedSource",
    "ProbeEvent",
    "RulePick",
    "RuleSummary",
    "RunInfo",
    "Segment",
    "SelectEvent",
    "ShapeInfo",
    "SpreadInfo",
    "StageEvent",
    "StepEvent",
    "StoppedEvent",
    "Study",
    "StudyCandidate",
    "StudyRun",
    "StudySummary",
    "Summary",
    "dump_json",
    "event_line",
    "json_schemas",
    "read_events",
    "read_json",
]


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each artefact, by the name `lagdsl schema` takes."""
    return {
        "run": RunInfo.model_json_schema(by_alias=True),
        "events": EVENT.json_schema(),
        "summary": Summary.model_json_schema(by_alias=True),
        "study": Study.model_json_schema(by_alias=True),
        "plan": PlanFile.model_json_schema(by_alias=True),
    }
