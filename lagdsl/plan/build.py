"""Build the plan: a `Schedule` becomes a networkx DAG of costed nodes.

Node ids are strings: `init`, `base/train`, `grow_1/grow/midas`, `grow_1/probe/midas`,
`grow_1/select`, `grow_1/train`, `grow_1/eval@800`, `grow_3/checkpoint@2400`, `end`. A stage with
several growths numbers them: `s/g1/grow/...`, `s/g2/select`. A train node that an eval or a
checkpoint splits continues as `STAGE/train@STEP`, STEP the mainline step where it resumes.

A landscape-aware growth is a fork: every candidate's `grow` node leaves the same node (the
snapshot is the state there), each continues to its `probe` node, and all join at the `select`
node. Under `keep winner` the winner's probe steps are mainline steps: the select node counts them
in `mainline_steps`, and the stage's train nodes train only the rest.

Evals and checkpoints stand after the mainline step they follow (every N steps, and at the end of
the run). One that falls inside a probe window stands right after the select node, since the
probes share those steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import networkx as nx

from lagdsl._gc import collector_paused
from lagdsl.lang.lr import lr_at, rewarm_factor
from lagdsl.lang.schedule import Growth, Schedule, Shape, Stage
from lagdsl.plan.cost import CostModel, Memory, ShapeCost

Kind = Literal["init", "train", "grow", "probe", "select", "eval", "checkpoint", "end"]
KINDS: tuple[Kind, ...] = ("init", "train", "grow", "probe", "select", "eval", "checkpoint", "end")


@dataclass(frozen=True, slots=True)
class PlanNode:
    """One node's payload. `start_step` is the mainline step at which the node begins."""

    id: str
    kind: Kind
    stage: str | None
    start_step: int
    steps: int
    tokens: int
    flops: int
    before: ShapeCost
    after: ShapeCost
    lr_first: float | None = None
    lr_last: float | None = None
    mainline_steps: int = 0  # steps of this node that advance the mainline
    operator: str | None = None  # grow, probe: the operator's label
    select: str | None = None  # select: the rule
    keep: str | None = None  # select: winner or rewind
    candidates: int = 0  # select: how many candidates join here
    rewarm: int = 0  # train: the stage's rewarm steps
    reset_optimizer: bool = False  # grow: the stage discards the optimizer state
    batches: int = 0  # eval: held-out batches; probe: batches its selection evaluates
    growth: int = -1  # grow, probe, select: which of the stage's growths (0-based)


@dataclass(frozen=True, slots=True)
class StageCost:
    """One row of the plan table."""

    name: str
    shape: ShapeCost
    steps: int
    tokens: int
    flops: int  # mainline training FLOPs of the stage
    probe_overhead: int  # FLOPs of the probes that do not continue (and selection passes)
    cumulative_share: float  # share of all training FLOPs spent by the end of this stage
    memory: Memory  # steady training at the stage's shape
    peak_memory: int  # the stage's peak: the largest of its phases
    phases: dict[str, int]  # the peak of each phase (`CostModel.phases`)


@dataclass(frozen=True, slots=True)
class Totals:
    mainline_steps: int
    mainline_tokens: int
    mainline_flops: int
    probe_overhead_flops: int
    eval_flops: int
    training_flops: int  # mainline + probe overhead
    scratch_flops: int  # the final shape trained from step 0 for the same mainline steps
    saving: float  # 1 - training / scratch
    final: ShapeCost
    peak_memory: int
    ranks: int = 1  # memory is per rank, for this many ranks
    phases: dict[str, int] | None = None  # each phase's peak over the stages


@dataclass(frozen=True)
class Plan:
    schedule: Schedule
    graph: nx.DiGraph[str]
    stages: tuple[StageCost, ...]
    totals: Totals

    def node(self, node_id: str) -> PlanNode:
        node: PlanNode = self.graph.nodes[node_id]["payload"]
        return node

    def nodes(self) -> list[PlanNode]:
        return [data["payload"] for _, data in self.graph.nodes(data=True)]


def _events(every: int | None, total: int) -> list[int]:
    steps = list(range(every, total + 1, every)) if every else []
    if not steps or steps[-1] != total:
        steps.append(total)
    return steps


class _Builder:
    def __init__(self, schedule: Schedule, ranks: int = 1) -> None:
        self.schedule = schedule
        self.cost = CostModel(schedule, ranks)
        # nodes and edges in the order they are made, put into the graph at once at the end (a plan
        # of 10,000 evaluations and as many checkpoints has 30,000 nodes: one call each was slow)
        self.nodes: list[tuple[str, dict[str, PlanNode]]] = []
        self.edges: list[tuple[str, str]] = []
        self.tail = "init"
        self._events_of: dict[str, tuple[ShapeCost, int, int]] = {}  # a stage's shape, eval FLOPs, eval tokens
        self._train_of: dict[str, tuple[ShapeCost, int]] = {}  # a stage's shape, training FLOPs per step
        total = schedule.total_steps
        evals = _events(schedule.eval.every, total) if schedule.eval else []
        if evals and schedule.model.pretrained is not None:  # the base as it came, before any growth
            evals.insert(0, 0)
        checkpoints = _events(schedule.checkpoint.every, total)
        events: list[tuple[int, int, Kind]] = [(s, 0, "eval") for s in evals] + [
            (s, 1, "checkpoint") for s in checkpoints
        ]
        self.events = sorted(events)
        self.next_event = 0

    # -- helpers

    def lr(self, stage: Stage, step: int) -> float:
        s = self.schedule
        base = lr_at(step, s.lr, s.optimizer.lr, s.total_steps)
        return base * rewarm_factor(step, stage.start_step, stage.rewarm)

    def add(self, node: PlanNode, after: str | None = None) -> str:
        self.nodes.append((node.id, {"payload": node}))
        self.edges.append((after if after is not None else self.tail, node.id))
        return node.id

    def append(self, node: PlanNode) -> None:
        self.tail = self.add(node)

    def train(self, stage: Stage, node_id: str, start: int, end: int) -> None:
        known = self._train_of.get(stage.name)
        if known is None:  # a stage's shape and FLOPs per step: the same for each of its segments
            per_step = self.cost.step_flops(stage.after, 1, self.cost.frozen_params(stage))
            known = self._train_of[stage.name] = (self.cost.shape_cost(stage.after), per_step)
        shape, per_step = known
        steps = end - start
        self.append(
            PlanNode(
                node_id, "train", stage.name, start, steps, steps * self.cost.tokens(stage.after), steps * per_step,
                shape, shape, self.lr(stage, start), self.lr(stage, end - 1), mainline_steps=steps,
                rewarm=stage.rewarm,
            )
        )  # fmt: skip

    def flush_events(self, stage: Stage, up_to: int, shape: Shape | None = None) -> None:
        """Eval and checkpoint nodes for every event at or before mainline step `up_to` (of a model
        of `shape`, default the stage's after its growths)."""
        key = stage.name if shape is None else f"{stage.name}/before"
        known = self._events_of.get(key)
        if known is None:
            batches, at = self.schedule.eval_batches, shape or stage.after
            known = self._events_of[key] = (
                self.cost.shape_cost(at),
                self.cost.forward_flops(at, batches),
                batches * self.schedule.rows(self.cost.context(at)) * self.cost.context(at),
            )
        cost, eval_flops, eval_tokens = known
        while self.next_event < len(self.events) and self.events[self.next_event][0] <= up_to:
            step, _, kind = self.events[self.next_event]
            self.next_event += 1
            evaluates = kind == "eval"
            batches = self.schedule.eval_batches if evaluates else 0
            flops, tokens = (eval_flops, eval_tokens) if evaluates else (0, 0)
            self.append(
                PlanNode(f"{stage.name}/{kind}@{step}", kind, stage.name, step, 0, tokens, flops, cost, cost,
                         batches=batches)
            )  # fmt: skip

    # -- the walk

    def build(self) -> nx.DiGraph[str]:
        s = self.schedule
        first = self.cost.shape_cost(s.model.shape)
        self.nodes.append(("init", {"payload": PlanNode("init", "init", None, 0, 0, 0, 0, first, first)}))
        self.flush_events(s.stages[0], -1 if s.model.pretrained is None else 0, s.model.shape)  # (a base's eval@0)
        for stage in s.stages:
            self.stage(stage)
        final = self.cost.shape_cost(s.final_shape)
        self.add(PlanNode("end", "end", None, s.total_steps, 0, 0, 0, final, final))
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(self.nodes)
        graph.add_edges_from(self.edges)
        return graph

    def stage(self, stage: Stage) -> None:
        carried = 0  # mainline steps the winners' probes took, under keep winner
        for j, growth in enumerate(stage.growths):
            prefix = stage.growth_key(j)
            before, after = self.cost.shape_cost(growth.before), self.cost.shape_cost(growth.after)
            reset = stage.reset_optimizer
            if growth.op is not None:
                self.append(
                    PlanNode(f"{prefix}/grow", "grow", stage.name, stage.start_step + carried, 0, 0, 0, before, after,
                             operator=growth.op.label, reset_optimizer=reset, growth=j)
                )  # fmt: skip
                continue
            carried += self.probe(stage, growth, j, prefix, before, after, stage.start_step + carried)
        start, end = stage.start_step + carried, stage.start_step + stage.train_steps
        self.flush_events(stage, start)  # events reached during the probes
        node_id = f"{stage.name}/train"
        while start < end:
            upcoming = self.events[self.next_event][0] if self.next_event < len(self.events) else end
            stop = min(max(upcoming, start + 1), end)
            self.train(stage, node_id, start, stop)
            self.flush_events(stage, stop)
            start, node_id = stop, f"{stage.name}/train@{stop}"

    def probe(
        self, stage: Stage, growth: Growth, index: int, prefix: str, before: ShapeCost, after: ShapeCost, start: int
    ) -> int:
        probe = growth.probe
        assert probe is not None
        k = probe.steps
        fork, select_id = self.tail, f"{prefix}/select"
        flops, batches = probe_cost(self.schedule, self.cost, growth, stage)
        lr_first = self.lr(stage, start) if k else None
        lr_last = self.lr(stage, start + k - 1) if k else None
        text = probe.select.text
        winner_steps = k if probe.keep == "winner" else 0
        self.nodes.append((select_id, {
            "payload": PlanNode(select_id, "select", stage.name, start, 0, 0, 0, after, after,
                                mainline_steps=winner_steps, select=text, keep=probe.keep,
                                candidates=len(probe.candidates), growth=index),
        }))  # fmt: skip
        for candidate in probe.candidates:
            label = candidate.label
            grow_id = self.add(
                PlanNode(f"{prefix}/grow/{label}", "grow", stage.name, start, 0, 0, 0, before, after,
                         operator=label, reset_optimizer=stage.reset_optimizer, growth=index),
                after=fork,
            )  # fmt: skip
            probe_id = self.add(
                PlanNode(f"{prefix}/probe/{label}", "probe", stage.name, start, k, k * self.cost.tokens(growth.after),
                         flops, after, after, lr_first, lr_last, operator=label, batches=batches, growth=index),
                after=grow_id,
            )  # fmt: skip
            self.edges.append((probe_id, select_id))
        self.tail = select_id
        return winner_steps


def probe_cost(schedule: Schedule, cost: CostModel, growth: Growth, stage: Stage | None = None) -> tuple[int, int]:
    """One candidate's probe: its training FLOPs plus the forward passes that score it, and how
    many batches those passes read (`val_loss`: the eval batches; `probe 0 steps`: one)."""
    probe = growth.probe
    assert probe is not None
    frozen = cost.frozen_params(stage) if stage is not None else 0
    return cost.step_flops(growth.after, probe.steps, frozen) + cost.scoring_flops(growth), cost.scoring_batches(growth)


def _stage_costs(schedule: Schedule, graph: nx.DiGraph[str], cost: CostModel) -> tuple[list[StageCost], Totals]:
    by_stage: dict[str, list[PlanNode]] = {}
    for _, data in graph.nodes(data=True):
        node = data["payload"]
        if node.stage is not None:
            by_stage.setdefault(node.stage, []).append(node)
    rows_raw = []
    mainline_flops = overhead_flops = eval_flops = 0
    for stage in schedule.stages:
        mainline = overhead = 0
        for node in by_stage.get(stage.name, []):
            if node.kind == "train":
                mainline += node.flops
            elif node.kind == "eval":
                eval_flops += node.flops
        for growth in stage.growths:
            if growth.probe is None:
                continue
            probe, m = growth.probe, len(growth.probe.candidates)
            per_candidate, _ = probe_cost(schedule, cost, growth, stage)
            steps_flops = cost.step_flops(growth.after, probe.steps, cost.frozen_params(stage))
            if probe.keep == "winner":
                mainline += steps_flops
                overhead += m * per_candidate - steps_flops
            else:
                overhead += m * per_candidate
        mainline_flops += mainline
        overhead_flops += overhead
        rows_raw.append((stage, mainline, overhead))
    training = mainline_flops + overhead_flops
    rows, running, peak = [], 0, 0
    peaks: dict[str, int] = {}
    for index, (stage, mainline, overhead) in enumerate(rows_raw):
        running += mainline + overhead
        memory = cost.memory(stage.after)
        phases = cost.phases(
            stage.before, stage.after, probed=any(g.probe is not None for g in stage.growths),
            width=any(g.dim != "depth" for g in stage.growths), first=index == 0, last=index == len(rows_raw) - 1,
            best=any(g.probe is not None and g.probe.keep == "winner" for g in stage.growths),
        )  # fmt: skip
        stage_peak = max(phases.values())
        peak = max(peak, stage_peak)
        for phase, value in phases.items():
            peaks[phase] = max(peaks.get(phase, 0), value)
        rows.append(
            StageCost(
                stage.name, cost.shape_cost(stage.after), stage.train_steps,
                stage.train_steps * cost.tokens(stage.after), mainline, overhead,
                running / training if training else 0.0, memory, stage_peak, phases,
            )
        )  # fmt: skip
    scratch = cost.step_flops(schedule.final_shape, schedule.total_steps)
    totals = Totals(
        mainline_steps=schedule.total_steps,
        mainline_tokens=schedule.tokens_at(schedule.total_steps),
        mainline_flops=mainline_flops,
        probe_overhead_flops=overhead_flops,
        eval_flops=eval_flops,
        training_flops=training,
        scratch_flops=scratch,
        saving=1.0 - training / scratch if scratch else 0.0,
        final=cost.shape_cost(schedule.final_shape),
        peak_memory=peak,
        ranks=cost.ranks,
        phases=peaks,
    )
    return rows, totals


def build_plan(schedule: Schedule, ranks: int = 1) -> Plan:
    """The plan graph of a valid schedule, with per-stage costs and totals (memory per rank, for
    `ranks` ranks)."""
    with collector_paused():
        builder = _Builder(schedule, ranks)
        graph = builder.build()
        rows, totals = _stage_costs(schedule, graph, builder.cost)
    return Plan(schedule, graph, tuple(rows), totals)
