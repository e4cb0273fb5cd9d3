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

import json
import math
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError

EVENTS_SCHEMA: Final = "lagdsl.events/1"
RUN_SCHEMA: Final = "lagdsl.run/1"
SUMMARY_SCHEMA: Final = "lagdsl.summary/1"
STUDY_SCHEMA: Final = "lagdsl.study/1"

#: Fields that measure time: they differ between two runs of one schedule; nothing else does.
TIMING_FIELDS = frozenset({"elapsed", "tokens_per_s", "wall_seconds", "created"})


class ArtifactError(Exception):
    """A run artefact that cannot be read: the message names the file, the line, and the problem."""


class Artifact(BaseModel):
    """A run artefact: unknown (newer) fields are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Dims(Artifact):
    """A shape as events write it."""

    depth: int
    width: int


class ShapeInfo(Dims):
    heads: int


# ------------------------------------------------------------------------------ events


class StageEvent(Artifact):
    """A stage begins: the model's shape now, and after the stage's growths."""

    event: Literal["stage"] = "stage"
    stage: str
    index: int
    step: int
    depth: int
    width: int
    after: Dims | None = None  # absent in runs written before it was logged


class StepEvent(Artifact):
    """A mainline training step (every `log every` steps, and the last)."""

    event: Literal["step"] = "step"
    step: int
    stage: str
    loss: float
    lr: float
    tokens: int
    flops: int  # training FLOPs so far, probes included
    elapsed: float  # wall seconds so far, across resumes
    from_probe: bool = False  # the winner's probe step, logged after the probe


class GrowEvent(Artifact):
    """A growth by a fixed operator (`with OP`)."""

    event: Literal["grow"] = "grow"
    stage: str
    step: int
    operator: str
    dim: str
    before: Dims
    after: Dims
    params: int


class ProbeEvent(Artifact):
    """One candidate of a probe: its losses and LRs over the probe's steps, and its score."""

    event: Literal["probe"] = "probe"
    stage: str
    growth: int
    candidate: str
    operator: str
    args: dict[str, Any] = Field(default_factory=dict)
    steps: list[int]
    losses: list[float]
    lrs: list[float]
    score: float


class SelectEvent(Artifact):
    """A probe's choice: every candidate's score and the winner."""

    event: Literal["select"] = "select"
    stage: str
    growth: int
    step: int
    rule: str
    keep: str
    scores: dict[str, float]
    winner: str
    dim: str | None = None  # the growth and the winner's size; absent in older runs
    before: Dims | None = None
    after: Dims | None = None
    params: int | None = None


class EvalEvent(Artifact):
    event: Literal["eval"] = "eval"
    step: int
    stage: str
    val_loss: float
    batches: int


class CheckpointEvent(Artifact):
    event: Literal["checkpoint"] = "checkpoint"
    step: int
    path: str  # relative to the run directory


class EndEvent(Artifact):
    event: Literal["end"] = "end"
    step: int
    flops: int


class StoppedEvent(Artifact):
    """The run stopped on a non-finite loss."""

    event: Literal["stopped"] = "stopped"
    step: int
    stage: str
    reason: str


class OtherEvent(Artifact):
    """An event of a kind this version does not know (from a newer lagdsl): kept as it is."""

    event: str


_KINDS = ("stage", "step", "grow", "probe", "select", "eval", "checkpoint", "end", "stopped")


def _kind(value: Any) -> str:
    kind = value.get("event") if isinstance(value, dict) else getattr(value, "event", None)
    return kind if kind in _KINDS else "other"


Event = Annotated[
    Annotated[StageEvent, Tag("stage")]
    | Annotated[StepEvent, Tag("step")]
    | Annotated[GrowEvent, Tag("grow")]
    | Annotated[ProbeEvent, Tag("probe")]
    | Annotated[SelectEvent, Tag("select")]
    | Annotated[EvalEvent, Tag("eval")]
    | Annotated[CheckpointEvent, Tag("checkpoint")]
    | Annotated[EndEvent, Tag("end")]
    | Annotated[StoppedEvent, Tag("stopped")]
    | Annotated[OtherEvent, Tag("other")],
    Discriminator(_kind),
]
EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def event_line(event: Artifact) -> str:
    """One line of `metrics.jsonl`: `event` first, then the fields that were given (a default
    that was not given, such as `from_probe=False`, is left out), non-finite numbers as strings."""
    fields = event.model_dump(mode="python", exclude_unset=True, exclude={"event"})
    record = {"event": getattr(event, "event"), **{k: _finite(v) for k, v in fields.items()}}  # noqa: B009
    return json.dumps(record, separators=(",", ":"))


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf or nan; pydantic reads "inf" back as a float
    return value


def read_events(path: Path, *, partial_last_line: bool = True) -> list[Event]:
    """The events of a `metrics.jsonl`. A run killed while writing leaves a partial last line,
    which is dropped when `partial_last_line`; any other line that is not an event is an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ArtifactError(f"`{path}` cannot be read: {error.strerror or error}") from None
    events: list[Event] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(EVENT.validate_json(line))
        except ValidationError as error:
            if partial_last_line and number == len(lines) and _is_cut(line):
                break
            raise ArtifactError(f"`{path}` line {number}: {_problem(error, tagged=True)}") from None
    return events


def _is_cut(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return True
    return False


# ------------------------------------------------------------------------------ run.json, summary.json


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

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


# ------------------------------------------------------------------------------ study.json


class SpreadInfo(Artifact):
    """A statistic over seeds: mean, sample standard deviation, extremes, count (None: no value)."""

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    n: int


class LagStats(Artifact):
    """For one seed and lag: how the losses at the lag rank the candidates against their final
    val losses (Spearman, Kendall), which one they pick, and its regret."""

    lag: int
    spearman: float | None
    kendall: float | None
    pick: int | None
    regret: float | None
    relative_regret: float | None


class StudyCandidate(Artifact):
    label: str
    operator: str
    train: list[float | None]  # the training loss at each lag
    val: list[float | None]  # the val loss at each lag
    final_val: float
    final_train: float | None
    curve: list[float]  # every training loss from the growth to the horizon


class RulePick(Artifact):
    pick: str
    regret: float
    relative_regret: float


class StudyRun(Artifact):
    seed: int
    candidates: list[StudyCandidate]
    stats: dict[str, list[LagStats]]  # per metric: val, score, train
    rule: RulePick
    best: str


class LagSummary(Artifact):
    lag: int
    spearman: SpreadInfo
    kendall: SpreadInfo
    regret: SpreadInfo
    relative_regret: SpreadInfo
    picks_within_1pct: str


class RuleSummary(Artifact):
    regret: SpreadInfo
    relative_regret: SpreadInfo
    picks_within_1pct: str


class StudySummary(Artifact):
    val: list[LagSummary]
    score: list[LagSummary] = Field(default_factory=list)  # absent in studies before the probe score
    train: list[LagSummary]
    rule: RuleSummary


class Change(Artifact):
    dim: str
    before: int
    after: int


class Study(Artifact):
    """`study.json`: the lag-correlation study of one growth."""

    schema_: Literal["lagdsl.study/1"] = Field(STUDY_SCHEMA, alias="schema")
    complete: bool = True  # False while seeds are still to run
    schedule: str
    file: str
    stage: str
    growth: int
    change: Change
    candidates: list[str]
    lags: list[int]
    chosen_lag: int
    rule: str
    horizon: Literal["stage", "end"]
    start_step: int
    horizon_steps: int
    eval_batches: int
    device: str
    seeds: list[int]
    seeds_asked: list[int] = Field(default_factory=list)
    runs: list[StudyRun]
    summary: StudySummary

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


# ------------------------------------------------------------------------------ plan.json
# `lagdsl.plan.render.to_json` writes it by hand (fast on large plans); a test checks every plan it
# writes against these models, so the two cannot drift apart.

PLAN_SCHEMA: Final = "lagdsl.plan/1"


class PlanShape(Artifact):
    depth: int
    width: int
    heads: int
    params: int
    non_embedding: int


class PlanNodeInfo(Artifact):
    """One node of the plan graph; `start_step` is the mainline step at which it begins."""

    id: str
    kind: Literal["init", "train", "grow", "probe", "select", "eval", "checkpoint", "end"]
    stage: str | None
    start_step: int
    steps: int
    tokens: int
    flops: int
    before: PlanShape
    after: PlanShape
    lr_first: float | None
    lr_last: float | None
    mainline_steps: int  # steps of this node that advance the mainline
    operator: str | None  # grow, probe: the operator's label
    select: str | None  # select: the rule
    keep: str | None  # select: winner or rewind
    candidates: int  # select: how many candidates join here
    rewarm: int  # train: the stage's rewarm steps
    reset_optimizer: bool  # grow: the stage discards the optimizer state
    batches: int  # eval: held-out batches; probe: batches its selection evaluates
    growth: int  # grow, probe, select: which of the stage's growths (0-based); -1 otherwise


class PlanEdge(Artifact):
    source: str
    target: str


class PlanMemory(Artifact):
    """Estimated bytes: weights, gradients, optimizer state, activations, their total, the peak."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    total: int
    peak: int


class PlanStage(Artifact):
    name: str
    shape: PlanShape
    steps: int
    tokens: int
    flops: int
    probe_overhead_flops: int
    cumulative_share: float
    memory: PlanMemory


class PlanTotals(Artifact):
    mainline_steps: int
    mainline_tokens: int
    mainline_flops: int
    probe_overhead_flops: int
    eval_flops: int
    training_flops: int  # mainline + probe overhead
    scratch_flops: int  # the final shape trained from step 0 for the same mainline steps
    saving: float  # 1 - training / scratch
    final: PlanShape
    peak_memory: int


class PlanSchedule(Artifact):
    name: str
    file: str
    total_steps: int
    tokens_per_step: int


class PlanFile(Artifact):
    """`plan.json` (and `lagdsl plan --format json`): networkx node-link data, nodes in
    topological order, with each node's payload, the stages' costs and the totals."""

    schema_: Literal["lagdsl.plan/1"] = Field(PLAN_SCHEMA, alias="schema")
    schedule: PlanSchedule
    directed: bool
    multigraph: bool
    graph: dict[str, Any]
    nodes: list[PlanNodeInfo]
    edges: list[PlanEdge]
    stages: list[PlanStage]
    totals: PlanTotals

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


# ------------------------------------------------------------------------------ reading and writing

Model = TypeVar("Model", bound=BaseModel)


def read_json(path: Path, model: type[Model]) -> Model:
    """A JSON artefact read into its model; `ArtifactError` names the file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ArtifactError(f"`{path}` cannot be read: {error.strerror or error}") from None
    try:
        return model.model_validate_json(text)
    except ValidationError as error:
        raise ArtifactError(f"`{path}`: {_problem(error)}") from None


def dump_json(artifact: BaseModel) -> str:
    """An artefact as the indented JSON it is written in, `schema` first."""
    data = artifact.model_dump(mode="json", by_alias=True)
    return json.dumps(data, indent=2) + "\n"


def _problem(error: ValidationError, *, tagged: bool = False) -> str:
    """The first problem, in a few words: where (`field.sub`) and what. `tagged`: the location
    starts with the union's tag (an event's kind), which is said instead as "a `step` event"."""
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return "not JSON"
    loc = list(first["loc"])
    tag = str(loc.pop(0)) if tagged and loc else ""
    kind = f"{'an' if tag[:1] in 'aeiou' else 'a'} `{tag}` event: " if tag else ""
    where = ".".join(str(p) for p in loc)
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{kind}{f'`{where}`: ' if where else ''}{first['msg'].lower()}{more}"


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each artefact, by the name `lagdsl schema` takes."""
    return {
        "run": RunInfo.model_json_schema(by_alias=True),
        "events": EVENT.json_schema(),
        "summary": Summary.model_json_schema(by_alias=True),
        "study": Study.model_json_schema(by_alias=True),
        "plan": PlanFile.model_json_schema(by_alias=True),
    }
