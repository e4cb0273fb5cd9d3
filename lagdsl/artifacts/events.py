"""`metrics.jsonl`: one event a line, a union discriminated by `event`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, ValidationError

from lagdsl.artifacts.base import Artifact, ArtifactError, Dims, describe


class StageEvent(Artifact):
    """A stage begins: the model's shape now, and after the stage's growths."""

    event: Literal["stage"] = "stage"
    stage: str
    index: int
    step: int
    depth: int
    width: int
    after: Dims | None = None  # absent in runs written before it was logged


class PartsEvent(Artifact):
    """What the mainline freezes and the LR scales, from `step` on (written when a stage sets them)."""

    event: Literal["parts"] = "parts"
    stage: str
    step: int
    freeze: list[str]  # the parts as written: `old`, `embed`, `layers(0, 4)`
    frozen_params: int
    params: int
    lr_scale: dict[str, float] = Field(default_factory=dict)


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
    #: a mixture of experts' auxiliary losses at this step (means over its blocks), without coefficients
    balance: float | None = None
    z_loss: float | None = None


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
    score: float | None  # None: the candidate diverged
    diverged: str | None = None  # what diverged, where (`the loss became nan at step 23 ...`)


class SelectEvent(Artifact):
    """A probe's choice: every candidate's score and the winner."""

    event: Literal["select"] = "select"
    stage: str
    growth: int
    step: int
    rule: str
    keep: str
    scores: dict[str, float | None]  # None: that candidate diverged
    winner: str
    diverged: list[str] = Field(default_factory=list)  # the candidates dropped for a non-finite loss
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
    #: a mixture of experts' load: each block's share of the (token, slot) assignments per expert
    expert_load: list[list[float]] | None = None


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


_KINDS = ("stage", "parts", "step", "grow", "probe", "select", "eval", "checkpoint", "end", "stopped")


def _kind(value: Any) -> str:
    kind = value.get("event") if isinstance(value, dict) else getattr(value, "event", None)
    return kind if kind in _KINDS else "other"


Event = Annotated[
    Annotated[StageEvent, Tag("stage")]
    | Annotated[PartsEvent, Tag("parts")]
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
            raise ArtifactError(f"`{path}` line {number}: {describe(error, tagged=True)}") from None
    return events


def _is_cut(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return True
    return False
