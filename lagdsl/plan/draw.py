"""The plan as a picture (SVG or PNG), drawn with matplotlib: no graphviz binary needed.

Left to right, one column per step of the plan (a topological generation of the graph); the
mainline runs along the middle, and each landscape-aware growth fans its candidates out above and
below it before they join at the select node. Nodes are coloured by kind.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from lagdsl.plan.build import Plan
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


def draw(plan: Plan, path: Path, fmt: str) -> None:
    """Write the picture to `path` as `svg` or `png`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

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
    ax.text(left + margin, top - 0.35, title, fontsize=10, ha="left", va="top")
    handles = [
        Line2D([], [], marker="s", linestyle="", markersize=9, markerfacecolor=c, markeredgecolor="#444444", label=k)
        for k, c in COLOURS.items()
        if k != "end"
    ]
    ax.legend(handles=handles, loc="lower left", ncol=len(handles), frameon=False, fontsize=8, borderaxespad=0.2)
    fig.savefig(path, format=fmt, dpi=110)
