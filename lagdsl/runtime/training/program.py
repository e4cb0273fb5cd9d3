"""Lowering: the plan graph becomes a program, an immutable tuple of instructions for the engine.

The engine interprets the program with a program counter; a checkpoint records the counter, so a
resumed run continues at the instruction where it stopped. The mainline of the plan (init, train
segments, fixed growths, evals, checkpoints, end) becomes one instruction each; a probe fork and its
select node become one `Probe`.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from lagdsl.lang.schedule import Growth, Schedule, Stage
from lagdsl.plan import Plan


@dataclass(frozen=True)
class StageStart:
    stage: int  # index into schedule.stages
    name: str
    step: int


@dataclass(frozen=True)
class Train:
    stage: int
    start: int  # mainline step of the first step
    steps: int


@dataclass(frozen=True)
class Grow:
    stage: int
    growth: int  # index into the stage's growths


@dataclass(frozen=True)
class Probe:
    stage: int
    growth: int
    start: int  # mainline step of the probe's first step


@dataclass(frozen=True)
class Eval:
    stage: int
    step: int


@dataclass(frozen=True)
class Checkpoint:
    stage: int
    step: int


@dataclass(frozen=True)
class End:
    step: int


Instruction = StageStart | Train | Grow | Probe | Eval | Checkpoint | End


def lower(plan: Plan) -> tuple[Instruction, ...]:
    """The plan's mainline, in order, as instructions."""
    schedule = plan.schedule
    index = {stage.name: i for i, stage in enumerate(schedule.stages)}
    graph = plan.graph
    program: list[Instruction] = []
    current: str | None = None
    node_id = "init"
    while True:
        successors = list(graph.successors(node_id))
        if not successors:
            break
        if _is_fork(plan, successors[0]):
            # a probe fork: every candidate's grow node joins at one select node
            select = _select_of(graph, successors[0])
            node = plan.node(select)
            assert node.stage is not None  # every node but init and end belongs to a stage
            current = _enter(program, current, node.stage, index, node.start_step)
            program.append(Probe(index[node.stage], node.growth, node.start_step))
            node_id = select
            continue
        node_id = successors[0]
        node = plan.node(node_id)
        if node.kind == "end":
            program.append(End(node.start_step))
            break
        assert node.stage is not None
        current = _enter(program, current, node.stage, index, node.start_step)
        stage = index[node.stage]
        if node.kind == "train":
            program.append(Train(stage, node.start_step, node.steps))
        elif node.kind == "grow":
            program.append(Grow(stage, node.growth))
        elif node.kind == "eval":
            program.append(Eval(stage, node.start_step))
        elif node.kind == "checkpoint":
            program.append(Checkpoint(stage, node.start_step))
    return tuple(program)


def _is_fork(plan: Plan, node_id: str) -> bool:
    """A candidate's grow node: a grow followed by a probe (a fixed growth is followed by mainline)."""
    if plan.node(node_id).kind != "grow":
        return False
    return any(plan.node(n).kind == "probe" for n in plan.graph.successors(node_id))


def _select_of(graph: nx.DiGraph[str], grow_id: str) -> str:
    (probe_id,) = graph.successors(grow_id)
    (select_id,) = graph.successors(probe_id)
    return str(select_id)


def _enter(
    program: list[Instruction], current: str | None, stage: str | None, index: dict[str, int], step: int
) -> str | None:
    if stage is not None and stage != current:
        program.append(StageStart(index[stage], stage, step))
        return stage
    return current


def stage_of(schedule: Schedule, instruction: Grow | Probe) -> tuple[Stage, Growth]:
    stage = schedule.stages[instruction.stage]
    return stage, stage.growths[instruction.growth]


def describe(program: tuple[Instruction, ...], schedule: Schedule) -> str:
    """The program as text, one instruction a line (`lagdsl run --dry-run`)."""
    lines = []
    for pc, ins in enumerate(program):
        if isinstance(ins, StageStart):
            text = f"stage {ins.name} (from step {ins.step})"
        elif isinstance(ins, Train):
            text = f"  train steps {ins.start}..{ins.start + ins.steps - 1}"
        elif isinstance(ins, Grow):
            _, growth = stage_of(schedule, ins)
            assert growth.op is not None
            text = f"  grow {_change(growth)} with {growth.op.label}"
        elif isinstance(ins, Probe):
            _, growth = stage_of(schedule, ins)
            probe = growth.probe
            assert probe is not None
            names = ", ".join(c.label for c in probe.candidates)
            text = (
                f"  probe {_change(growth)}: [{names}] for {probe.steps} steps from step {ins.start}, "
                f"select {probe.select.text}, keep {probe.keep}"
            )
        elif isinstance(ins, Eval):
            text = f"  eval after step {ins.step}"
        elif isinstance(ins, Checkpoint):
            text = f"  checkpoint after step {ins.step}"
        else:
            text = f"end after step {ins.step}"
        lines.append(f"{pc:4d}  {text}")
    return "\n".join(lines) + "\n"


def _change(growth: Growth) -> str:
    return f"{growth.dim} {getattr(growth.before, growth.dim)} -> {getattr(growth.after, growth.dim)}"
