"""The plan as a picture (SVG or PNG), drawn with matplotlib: no graphviz binary needed.

Two pictures. The overview (the default): one box per stage (its name, shape, steps, and how many
evaluations and checkpoints it holds), and between stages each growth: one box for a fixed
operator, a fan of candidates joined by their selection rule for a probe. The boxes run left to
right in rows that wrap, so that the picture keeps a screen's proportions (no wider than 2.5 times
its height) whatever the number of stages, with text at 10 pt at 100%. The detail (`detail=True`):
every node of the plan graph, one column per step of the plan (a topological generation), each
landscape-aware growth fanning its candidates out above and below the mainline.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path

import networkx as nx

from lagdsl.plan.build import Plan, PlanNode
from lagdsl.plan.render import COLOURS, label

GAP = 0.35  # inches between neighbouring columns' boxes
ROW = 0.95  # inches between fanned-out candidates
BOX_H = 0.72  # inches
BOX_W = {"eval": 0.85, "checkpoint": 0.85}  # small markers; every other kind is WIDE
WIDE = 1.8


def box_width(kind: str) -> float:
    return BOX_W.get(kind, WIDE)


def layout(plan: Plan) -> dict[str, tuple[float, float]]:
    """Node centres in inches: x by topological generation, y fanned out around the mainline.

    A generation holds one mainline node, or the grow (or probe) nodes of one fork; candidates
    keep the order the schedule lists them in (the graph's insertion order), top to bottom. A
    column is as wide as its widest box, so evals and checkpoints take little room.
    """
    rank = {node_id: i for i, node_id in enumerate(plan.graph.nodes)}
    positions: dict[str, tuple[float, float]] = {}
    x = 0.0
    for generation in nx.topological_generations(plan.graph):
        ordered = sorted(generation, key=rank.__getitem__)
        width = max(box_width(plan.node(n).kind) for n in ordered)
        for i, node_id in enumerate(ordered):
            positions[node_id] = (x + width / 2, ((len(ordered) - 1) / 2 - i) * ROW)
        x += width + GAP
    return positions


def draw(plan: Plan, path: Path, fmt: str, detail: bool = False) -> None:
    """Write the picture to `path` as `svg` or `png`: the overview, or with `detail` every node."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in an SVG: searchable
        if detail:
            _draw_detail(plan, path, fmt)
        else:
            _draw_overview(plan, path, fmt)


# ------------------------------------------------------------------------------ the overview

FONT = 10  # points: readable at 100%
STAGE_W, STAGE_H = 2.0, 1.05  # inches
GROW_W, CANDIDATE_H = 2.1, 0.42
CHAR_W = 0.55 * FONT / 72  # inches: the mean width of a character at FONT points
SPACE = 0.45  # between units of a row
ROW_GAP = 0.7
MAX_ASPECT = 2.5


@dataclass
class _Unit:
    """One box (a stage, a fixed growth) or one fan (a probe's candidates) of the overview."""

    kind: str  # "stage", "grow" or "probe"
    width: float
    height: float
    lines: list[str]  # the box's text; a fan's title
    candidates: list[str] = field(default_factory=list)
    colour: str = ""


#: the most units (stages, growths) the overview draws: a longer plan shows its first and last ones
#: and says how many it left out between them, so that a plan of 10,000 stages draws in seconds
MAX_UNITS = 240
#: the most nodes the detailed picture draws (the first ones), saying how many it left out
MAX_NODES = 800


def overview_units(plan: Plan) -> list[_Unit]:
    """The overview's boxes and fans, in order (at most `MAX_UNITS`: see there)."""
    by_stage: dict[str | None, list[PlanNode]] = {}
    for node in plan.nodes():
        by_stage.setdefault(node.stage, []).append(node)
    units: list[_Unit] = []
    for row in plan.stages:
        mine = by_stage.get(row.name, [])
        growths = sorted({n.growth for n in mine if n.kind in ("grow", "probe", "select")})
        for growth in growths:
            grown = [n for n in mine if n.growth == growth]
            probes = [n for n in grown if n.kind == "probe"]
            first = next(n for n in grown if n.kind in ("grow", "probe"))
            dim = first.after.grown_dim(first.before)
            change = f"{dim} {getattr(first.before, dim)} → {getattr(first.after, dim)}"
            if probes:
                select = next((n for n in grown if n.kind == "select"), None)
                rule = f"probe {probes[0].steps} steps" + (f", {select.select}" if select and select.select else "")
                title = [change, *textwrap.wrap(rule, int((GROW_W - 0.1) / CHAR_W))]
                labels = [n.operator or "?" for n in probes]
                height = max(len(labels) * CANDIDATE_H + 0.25 + 0.2 * len(title), STAGE_H)
                units.append(_Unit("probe", GROW_W, height, title, labels, COLOURS["probe"]))
            else:
                units.append(_Unit("grow", GROW_W, STAGE_H * 0.8, [first.operator or "?", change], [], COLOURS["grow"]))
        evals = sum(1 for n in mine if n.kind == "eval")
        saves = sum(1 for n in mine if n.kind == "checkpoint")
        events = ", ".join(
            part for part in (f"{evals} eval{'s' * (evals != 1)}" if evals else "",
                              f"{saves} checkpoint{'s' * (saves != 1)}" if saves else "") if part
        )  # fmt: skip
        shape = f"depth {row.shape.depth}, width {row.shape.width}"
        lines = [row.name, shape, f"{row.steps:,} steps"] + ([events] if events else [])
        units.append(_Unit("stage", STAGE_W, STAGE_H, lines, [], COLOURS["train"]))
    if len(units) > MAX_UNITS:  # the first and the last ones, and a note of the ones between
        left_out = len(units) - MAX_UNITS
        note = _Unit("note", STAGE_W, STAGE_H, [f"... {left_out:,} more", "stages and growths", "(plan --format json)"])
        units = [*units[: MAX_UNITS // 2], note, *units[-MAX_UNITS // 2 :]]
    return units


def overview_rows(units: list[_Unit], least_width: float = 0.0) -> list[list[_Unit]]:
    """The units in rows: as few as keep the picture within `MAX_ASPECT`, each about as wide
    (`least_width`: the picture is at least this wide, for its title)."""
    total = sum(u.width for u in units) + SPACE * max(len(units) - 1, 0)
    widest = max((u.width for u in units), default=STAGE_W)
    best: list[list[_Unit]] = [units]
    for count in range(1, len(units) + 1):
        limit = max(total / count, widest)
        rows = _wrap(units, limit)
        while len(rows) > count:  # the narrowest rows that make `count` of them
            limit += 0.1
            rows = _wrap(units, limit)
        best = rows
        width, height = _size(rows, least_width)
        if width <= MAX_ASPECT * height:
            break
    return best


def _wrap(units: list[_Unit], limit: float) -> list[list[_Unit]]:
    rows: list[list[_Unit]] = [[]]
    used = 0.0
    for unit in units:
        needed = unit.width + (SPACE if rows[-1] else 0.0)
        if rows[-1] and used + needed > limit + 1e-9:
            rows.append([])
            used, needed = 0.0, unit.width
        rows[-1].append(unit)
        used += needed
    return rows


def _row_width(row: list[_Unit]) -> float:
    return sum(u.width for u in row) + SPACE * max(len(row) - 1, 0)


def _size(rows: list[list[_Unit]], least_width: float = 0.0) -> tuple[float, float]:
    """The picture's width and height in inches (margins, title and legend included)."""
    width = max(max(_row_width(row) for row in rows) + 1.2, least_width)
    height = sum(max(u.height for u in row) for row in rows) + ROW_GAP * (len(rows) - 1) + 1.9
    return width, height


def _title(plan: Plan) -> list[str]:
    totals = plan.totals
    verb = "saves" if totals.saving >= 0 else "costs"
    return [
        f"plan of {plan.schedule.name}: {len(plan.stages)} stage{'s' * (len(plan.stages) != 1)}, "
        f"{plan.schedule.total_steps:,} mainline steps",
        f"growth {verb} {abs(totals.saving):.1%} of the FLOPs of training the final shape from scratch",
    ]


def _draw_overview(plan: Plan, path: Path, fmt: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    title = _title(plan)
    least = max(len(line) for line in title) * CHAR_W * 1.1 + 1.2
    rows = overview_rows(overview_units(plan), least)
    width, height = _size(rows, least)
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")

    def box(x: float, y: float, w: float, h: float, colour: str, text: str) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                facecolor=colour, edgecolor="#444444", linewidth=0.8,
            )
        )  # fmt: skip
        ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=FONT, linespacing=1.2)

    def arrow(start: tuple[float, float], end: tuple[float, float]) -> None:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#555555", linewidth=1.0))

    top = height - 1.3  # below the title
    previous: tuple[float, float] | None = None  # where the last unit's arrow leaves (its right middle)
    for row in rows:
        row_height = max(u.height for u in row)
        middle = top - row_height / 2
        x = 0.6
        for unit in row:
            if previous is not None:
                if abs(previous[1] - middle) < 1e-9:
                    arrow(previous, (x, middle))
                else:  # from the end of the row above, down and back to this row's start
                    drop = top + ROW_GAP / 2  # the middle of the gap between the rows
                    ax.plot([previous[0], previous[0] + 0.15, previous[0] + 0.15, x - 0.25, x - 0.25],
                            [previous[1], previous[1], drop, drop, middle], color="#555555", linewidth=1.0)  # fmt: skip
                    arrow((x - 0.25, middle), (x, middle))
            if unit.kind == "probe":
                fan = FancyBboxPatch(
                    (x, middle - unit.height / 2), unit.width, unit.height, boxstyle="round,pad=0,rounding_size=0.1",
                    facecolor="#f7f7f7", edgecolor="#999999", linewidth=0.8, linestyle="--",
                )  # fmt: skip
                ax.add_patch(fan)
                ax.text(x + unit.width / 2, middle + unit.height / 2 - 0.08, "\n".join(unit.lines), ha="center",
                        va="top", fontsize=FONT, linespacing=1.15)  # fmt: skip
                first = middle + unit.height / 2 - 0.2 * len(unit.lines) - 0.2 - CANDIDATE_H / 2
                for i, name in enumerate(unit.candidates):
                    box(x + 0.1, first - i * CANDIDATE_H, unit.width - 0.2, CANDIDATE_H - 0.08, unit.colour, name)
            elif unit.kind == "note":
                ax.text(x + unit.width / 2, middle, "\n".join(unit.lines), ha="center", va="center", fontsize=FONT,
                        style="italic", color="#555555")  # fmt: skip
            else:
                box(x, middle, unit.width, unit.height, unit.colour, "\n".join(unit.lines))
            previous = (x + unit.width, middle)
            x += unit.width + SPACE
        top -= row_height + ROW_GAP

    ax.text(0.6, height - 0.3, "\n".join(title), fontsize=FONT + 1, ha="left", va="top", linespacing=1.3)
    handles = [
        Line2D(
            [],
            [],
            marker="s",
            linestyle="",
            markersize=10,
            markerfacecolor=COLOURS[k],
            markeredgecolor="#444444",
            label=name,
        )
        for k, name in (("train", "stage (trains)"), ("grow", "growth"), ("probe", "probe candidate"))
    ]
    ax.legend(handles=handles, loc="lower left", ncol=3, frameon=False, fontsize=FONT, borderaxespad=0.3)
    fig.savefig(path, format=fmt, dpi=100)


# ------------------------------------------------------------------------------ the detail


def _draw_detail(plan: Plan, path: Path, fmt: str) -> None:
    """Every node of the plan graph, one column per topological generation."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    whole = len(plan.graph)
    if whole > MAX_NODES:  # the first nodes, in the order the plan made them
        plan = replace(plan, graph=plan.graph.subgraph(list(plan.graph.nodes)[:MAX_NODES]).copy())
    positions = layout(plan)
    xs = [x for x, _ in positions.values()]
    ys = [y for _, y in positions.values()]
    margin = 0.6
    left, right = min(xs) - WIDE / 2 - margin, max(xs) + WIDE / 2 + margin
    bottom, top = min(ys) - BOX_H / 2 - margin - 0.3, max(ys) + BOX_H / 2 + margin + 0.3
    fig = Figure(figsize=(right - left, top - bottom))  # the object API: no pyplot state, no backend switch
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    ax.axis("off")

    for source, target in plan.graph.edges():
        (x0, y0), (x1, y1) = positions[source], positions[target]
        half0, half1 = box_width(plan.node(source).kind) / 2, box_width(plan.node(target).kind) / 2
        ax.add_patch(
            FancyArrowPatch(
                (x0 + half0, y0), (x1 - half1, y1), arrowstyle="-|>", mutation_scale=10,
                color="#555555", linewidth=0.9, shrinkA=0, shrinkB=1,
            )
        )  # fmt: skip
    for node_id, (x, y) in positions.items():
        node = plan.node(node_id)
        w = box_width(node.kind)
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - BOX_H / 2), w, BOX_H, boxstyle="round,pad=0,rounding_size=0.08",
                facecolor=COLOURS[node.kind], edgecolor="#444444", linewidth=0.8,
            )
        )  # fmt: skip
        text = f"{node.kind}\n@{node.start_step}" if node.kind in BOX_W else label(node)
        ax.text(x, y, text, ha="center", va="center", fontsize=7.5, linespacing=1.15)

    totals = plan.totals
    title = (
        f"plan of {plan.schedule.name}: {plan.schedule.total_steps:,} mainline steps, "
        f"growth saves {totals.saving:.1%} of the FLOPs of training the final shape from scratch"
    )
    if whole > len(plan.graph):
        title += f" (its first {len(plan.graph):,} of {whole:,} nodes; `plan --format json` has them all)"
    ax.text(left + margin, top - 0.35, title, fontsize=10, ha="left", va="top")
    handles = [
        Line2D([], [], marker="s", linestyle="", markersize=9, markerfacecolor=c, markeredgecolor="#444444", label=k)
        for k, c in COLOURS.items()
        if k != "end"
    ]
    ax.legend(handles=handles, loc="lower left", ncol=len(handles), frameon=False, fontsize=8, borderaxespad=0.2)
    fig.savefig(path, format=fmt, dpi=110)
