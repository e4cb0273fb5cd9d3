"""`plan.json`: the plan graph with its costs."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import ConfigDict, Field

from lagdsl.artifacts.base import Artifact

# `lagdsl.plan.render.to_json` writes it by hand (fast on large plans); a test checks every plan it
# writes against these models, so the two cannot drift apart.

PLAN_SCHEMA: Final = "lagdsl.plan/1"


class PlanShape(Artifact):
    depth: int
    width: int
    heads: int
    params: int
    non_embedding: int
    #: the non-embedding parameters a token uses (a mixture's router, top-k and shared experts)
    active: int | None = None  # absent in plans written before mixtures of experts
    experts: int = 1  # routed experts per block (1: a dense MLP)
    context: int | None = None  # absent in plans written before context growth


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
    #: the peak (bytes, per rank) of each phase: start, train, growth, probe, checkpoint, final
    phases: dict[str, int] = Field(default_factory=dict)


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
    ranks: int = 1  # the memory figures are per rank, for this many ranks
    phases: dict[str, int] | None = None  # each phase's peak over the stages


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
