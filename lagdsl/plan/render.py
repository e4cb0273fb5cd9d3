"""Text renderings of a plan: the table people read, and JSON, DOT and Mermaid for other tools."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any, TextIO

import networkx as nx

from lagdsl._gc import collector_paused
from lagdsl.plan.build import Plan, PlanNode, StageCost, Totals
from lagdsl.plan.cost import ShapeCost

#: The version of `plan.json`; `lagdsl.artifacts.PlanFile` is its model (a test checks they agree).
SCHEMA = "lagdsl.plan/1"

#: Fill colours by node kind, shared by every picture of the plan.
COLOURS = {
    "init": "#d9d9d9",
    "train": "#9ecae1",
    "grow": "#fdae6b",
    "probe": "#fee391",
    "select": "#a1d99b",
    "eval": "#bcbddc",
    "checkpoint": "#c7a98b",
    "end": "#d9d9d9",
}


# ------------------------------------------------------------------------------ numbers


def si(value: float, unit: str = "") -> str:
    """1.23 G, 456 M: three significant digits with an SI prefix."""
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def binary(nbytes: int) -> str:
    for factor, prefix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if nbytes >= factor:
            return f"{nbytes / factor:.3g} {prefix}"
    return f"{nbytes} B"


def label(node: PlanNode) -> str:
    """A node's label in a picture: its name, then what it does, on short lines."""
    after = node.after
    shape = f"depth {after.depth}, width {after.width}"
    if node.kind in ("init", "end"):
        return f"{node.kind}\n{shape}"
    stage = node.stage or ""
    if node.kind == "train":
        return f"{stage} train\n{node.steps} steps\n{shape}"
    if node.kind == "grow":
        dim = after.grown_dim(node.before)
        was, now = getattr(node.before, dim), getattr(after, dim)
        return f"{stage} grow\n{node.operator}\n{dim} {was} → {now}"
    if node.kind == "probe":
        return f"{stage} probe\n{node.operator}\n{node.steps} steps"
    if node.kind == "select":
        return f"{stage} select\n{node.select}\nkeep {node.keep}"
    return f"{stage}\n{node.kind} @{node.start_step}"


# ------------------------------------------------------------------------------ JSON


_SHAPE_FIELDS = [f.name for f in fields(ShapeCost)]
_NODE_FIELDS = [f.name for f in fields(PlanNode) if f.name != "id"]


def _shape(shape: ShapeCost) -> dict[str, int]:
    return {name: getattr(shape, name) for name in _SHAPE_FIELDS}


def node_json(node: PlanNode, shapes: dict[ShapeCost, dict[str, int]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in _NODE_FIELDS:
        value = getattr(node, name)
        if isinstance(value, ShapeCost):
            if value not in shapes:
                shapes[value] = _shape(value)
            value = shapes[value]
        out[name] = value
    return out


def _stage_json(row: StageCost) -> dict[str, object]:
    return {
        "name": row.name,
        "shape": _shape(row.shape),
        "steps": row.steps,
        "tokens": row.tokens,
        "flops": row.flops,
        "probe_overhead_flops": row.probe_overhead,
        "cumulative_share": row.cumulative_share,
        "memory": {
            "weights": row.memory.weights,
            "gradients": row.memory.gradients,
            "optimizer": row.memory.optimizer,
            "activations": row.memory.activations,
            "total": row.memory.total,
            "peak": row.peak_memory,
        },
        "phases": row.phases,
    }


def _totals_json(totals: Totals) -> dict[str, object]:
    out = {f.name: getattr(totals, f.name) for f in fields(Totals)}
    out["final"] = _shape(totals.final)
    return out


def to_json(plan: Plan) -> str:
    """networkx node-link data (nodes in topological order) with payloads, stages and totals.

    Compact (one line): `jq` or `python -m json.tool` indent it for reading. Indenting would take
    Python's pure-Python encoder, several times slower on large plans (bench/plan.py).
    """
    with collector_paused():
        return _to_json(plan)


def _to_json(plan: Plan) -> str:
    """What `json.dumps` of networkx's node-link data (nodes in topological order) gives, written
    a node at a time from its fields: a plan of 10,000 evaluations and as many checkpoints has
    30,000 nodes, and building a dict of each for the encoder took twice as long."""
    graph = plan.graph
    schedule = plan.schedule
    marker = "\0nodes\0"
    payload = {
        "schema": SCHEMA,
        "schedule": {
            "name": schedule.name,
            "file": schedule.file,
            "total_steps": schedule.total_steps,
            "tokens_per_step": schedule.tokens_per_step,
        },
        "directed": graph.is_directed(),
        "multigraph": graph.is_multigraph(),
        "graph": graph.graph,
        "nodes": marker,
        "edges": [{"source": u, "target": v} for u, v in graph.edges()],
        "stages": [_stage_json(row) for row in plan.stages],
        "totals": _totals_json(plan.totals),
    }
    text = _dumps(payload)
    shapes: dict[ShapeCost, str] = {}
    known: dict[tuple[object, ...], str] = {}
    nodes = ",".join(_node_text(graph.nodes[n]["payload"], shapes, known) for n in nx.topological_sort(graph))
    return text.replace(_dumps(marker), f"[{nodes}]", 1) + "\n"


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_string = json.encoder.encode_basestring  # what the encoder writes for a string (ensure_ascii=False)


def _value(value: object) -> str:
    """One field's JSON text, as the encoder writes it."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float) and math.isfinite(value):
        return float.__repr__(value)
    return _dumps(value)  # NaN, infinity: as the encoder spells them


#: the encoder's text of a value, by its type (floats and the rest: `_value`)
_BY_TYPE: dict[type, Callable[[Any], str]] = {
    int: int.__repr__, str: _string, type(None): lambda v: "null", bool: lambda v: "true" if v else "false",
}  # fmt: skip


_AFTER_START = _NODE_FIELDS[_NODE_FIELDS.index("start_step") + 1 :]
_REST = attrgetter(*_AFTER_START)


def _node_text(node: PlanNode, shapes: dict[ShapeCost, str], known: dict[tuple[object, ...], str]) -> str:
    """The node's JSON text. Its fields after `start_step` are the same for most nodes of a stage
    (its evaluations, its checkpoints), so their text is kept by value and written once."""
    rest = (node.kind, node.stage, *_REST(node))
    tail = known.get(rest)
    if tail is None:
        tail = known[rest] = _fields_text(_AFTER_START, rest[2:], shapes)
    head = f'{{"id":{_string(node.id)},"kind":{_string(node.kind)},"stage":{_value(node.stage)},'
    return f'{head}"start_step":{int.__repr__(node.start_step)},{tail}}}'


def _fields_text(names: list[str], values: tuple[object, ...], shapes: dict[ShapeCost, str]) -> str:
    parts = []
    for name, value in zip(names, values, strict=True):
        encode = _BY_TYPE.get(type(value))
        if encode is not None:
            text = encode(value)
        elif type(value) is ShapeCost:
            cached = shapes.get(value)
            if cached is None:
                cached = shapes[value] = _dumps(_shape(value))
            text = cached
        else:
            text = _value(value)
        parts.append(f'"{name}":{text}')
    return ",".join(parts)


# ------------------------------------------------------------------------------ DOT, Mermaid


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(plan: Plan) -> str:
    lines = [
        f"digraph {_dot_quote(plan.schedule.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
    ]
    for node_id in nx.topological_sort(plan.graph):
        node = plan.node(node_id)
        lines.append(
            f"  {_dot_quote(node_id)} [label={_dot_quote(label(node))}, fillcolor={_dot_quote(COLOURS[node.kind])}];"
        )
    for source, target in plan.graph.edges():
        lines.append(f"  {_dot_quote(source)} -> {_dot_quote(target)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def to_mermaid(plan: Plan) -> str:
    ids = {node_id: f"n{i}" for i, node_id in enumerate(nx.topological_sort(plan.graph))}
    lines = ["flowchart LR"]
    for node_id, short in ids.items():
        node = plan.node(node_id)
        lines.append(f'  {short}["{_mermaid_text(label(node))}"]:::{node.kind}')
    for source, target in plan.graph.edges():
        lines.append(f"  {ids[source]} --> {ids[target]}")
    for kind, colour in COLOURS.items():
        lines.append(f"  classDef {kind} fill:{colour},stroke:#555")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the table


def print_table(plan: Plan, file: TextIO) -> None:
    """One row per stage, then the totals and what growth saves against training from scratch."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    totals = plan.totals
    # light rules and short headers: ten columns fit an 80-column terminal without breaking a number
    table = Table(
        title=f"plan of `{plan.schedule.name}`", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        show_edge=False, collapse_padding=True,
    )  # fmt: skip
    table.add_column("stage", justify="left", no_wrap=True)
    per_rank = totals.ranks > 1
    memory = "mem/rank" if per_rank else "memory"
    grows_context = len({row.shape.context for row in plan.stages}) > 1  # a column only where it changes
    columns = ("depth", "width", *(("ctx",) if grows_context else ()), "params", "steps", "tokens", "FLOPs")
    for column in (*columns, "cum.", "probes", memory):
        table.add_column(column, justify="right", no_wrap=True)
    for row in plan.stages:
        context = (f"{row.shape.context:,}",) if grows_context else ()
        table.add_row(
            row.name, str(row.shape.depth), str(row.shape.width), *context, si(row.shape.params), f"{row.steps:,}",
            si(row.tokens), si(row.flops), f"{row.cumulative_share:.0%}",
            si(row.probe_overhead) if row.probe_overhead else "-", binary(row.peak_memory),
        )  # fmt: skip
    summary = Table.grid(padding=(0, 2))
    summary.add_column()
    summary.add_column(justify="right")
    summary.add_column()
    share = totals.probe_overhead_flops / totals.training_flops if totals.training_flops else 0.0
    summary.add_row("mainline training", f"{si(totals.mainline_flops, 'FLOPs')}", f"{totals.mainline_steps:,} steps")
    summary.add_row("probe overhead", f"{si(totals.probe_overhead_flops, 'FLOPs')}", f"{share:.1%} of training")
    summary.add_row("training in all", f"{si(totals.training_flops, 'FLOPs')}", "")
    final = totals.final
    summary.add_row(
        "final shape from scratch",
        f"{si(totals.scratch_flops, 'FLOPs')}",
        f"depth {final.depth}, width {final.width}, {si(final.params)} params, same steps",
    )
    verb = "saves" if totals.saving >= 0 else "costs"
    summary.add_row("growth", f"{verb} {abs(totals.saving):.1%}", "of the from-scratch FLOPs")
    summary.add_row("evaluation", f"{si(totals.eval_flops, 'FLOPs')}", "not counted above")
    if per_rank:
        how = f"{totals.ranks} ranks, parallel {plan.schedule.parallel}"
        summary.add_row("peak memory", binary(totals.peak_memory), f"per rank ({how}): an estimate, the model's")
        by_phase = " · ".join(f"{phase} {binary(value)}" for phase, value in (totals.phases or {}).items())
        summary.add_row("by phase", "", by_phase)
    else:
        summary.add_row("peak memory", binary(totals.peak_memory), "estimate: weights, grads, optimizer, activations")
    summary.add_row("", "", "not counted: the process itself (Python, torch), the data and tokenizer")
    console = Console(file=file)  # the terminal's width (80 columns when piped; COLUMNS overrides)
    console.print(table)
    console.print()
    console.print(summary)
