"""What every artefact shares: the base model, schema versions, errors, reading and writing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, ValidationError, model_serializer

EVENTS_SCHEMA: Final = "lagdsl.events/1"
RUN_SCHEMA: Final = "lagdsl.run/1"
SUMMARY_SCHEMA: Final = "lagdsl.summary/1"
STUDY_SCHEMA: Final = "lagdsl.study/1"

#: Fields that measure time: they differ between two runs of one schedule; nothing else does.
TIMING_FIELDS = frozenset({"elapsed", "tokens_per_s", "wall_seconds", "created", "phase_seconds"})


class ArtifactError(Exception):
    """A run artefact that cannot be read: the message names the file, the line, and the problem."""


class Artifact(BaseModel):
    """A run artefact: unknown (newer) fields are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class _Mixture(Protocol):
    @property
    def experts(self) -> int: ...


class _Shaped(Protocol):
    @property
    def depth(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def moe(self) -> _Mixture | None: ...
    @property
    def context(self) -> int: ...


class Dims(Artifact):
    """A shape as events write it (`experts` only where the model is a mixture of experts,
    `context` only where the event is about it: a context growth, a grown context's final shape)."""

    depth: int
    width: int
    experts: int | None = None
    context: int | None = None

    @model_serializer(mode="wrap")
    def _without_dense_experts(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A dense model's shape is written as it always was: no `experts` key."""
        data: dict[str, Any] = handler(self)
        for key in ("experts", "context"):
            if data.get(key, 0) is None:
                del data[key]
        return data

    @classmethod
    def of(cls, shape: _Shaped, context: bool = False) -> Dims:
        """A model's shape (a schedule's `Shape` or a model's config) as events write it; with
        `context`, its context too."""
        moe = shape.moe
        extra: dict[str, int] = {"experts": moe.experts} if moe is not None else {}
        if context:
            extra["context"] = shape.context
        return cls(depth=shape.depth, width=shape.width, **extra)


class ShapeInfo(Dims):
    heads: int


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
        raise ArtifactError(f"`{path}`: {describe(error)}") from None


def dump_json(artifact: BaseModel) -> str:
    """An artefact as the indented JSON it is written in, `schema` first."""
    data = artifact.model_dump(mode="json", by_alias=True)
    return json.dumps(data, indent=2) + "\n"


def describe(error: ValidationError, *, tagged: bool = False) -> str:
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
