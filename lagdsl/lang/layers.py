"""The built-in depth operators as layer plans. No torch here.

A layer plan lists, for each position of the grown stack, the old layer it is (kept: the same
module), a copy of an old layer, or a fresh layer. The runtime carries a plan out
(`lagdsl.ops.depth.grow_depth`); the checker compares candidates' plans, since two operators
that build the same plan without noise build the same model, and probing both trains it twice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    """One position of a grown stack: `source` is an old layer's index, or None for a fresh one."""

    source: int | None
    copy: bool = False  # a copy of `source` (the original stays where it was)


def keep(d: int) -> list[Layer]:
    return [Layer(i) for i in range(d)]


def copies(sources: list[int]) -> list[Layer]:
    return [Layer(i, copy=True) for i in sources]


def fresh(b: int) -> list[Layer]:
    return [Layer(None)] * b


def copy_top(d: int, b: int) -> list[Layer]:
    """Copies of the top b layers, placed on top (gradual stacking)."""
    return keep(d) + copies(list(range(d - b, d)))


def copy_bottom(d: int, b: int) -> list[Layer]:
    """Copies of the bottom b layers, placed on top."""
    return keep(d) + copies(list(range(b)))


def midas(d: int, b: int) -> list[Layer]:
    """A copy of the middle block of b layers (starting at layer (d - b) // 2), right after it."""
    start = (d - b) // 2
    return keep(start + b) + copies(list(range(start, start + b))) + [Layer(i) for i in range(start + b, d)]


def stack(d: int, b: int) -> list[Layer]:
    """The whole stack repeated on top, in order (b a multiple of d)."""
    return keep(d) + copies(list(range(d)) * (b // d))


def interleave_sources(d: int, b: int) -> list[int]:
    """b evenly spaced layers of d: the centre of each of b equal spans (b = d: every layer)."""
    return [int((j + 0.5) * d / b) for j in range(b)]


def interleave(d: int, b: int) -> list[Layer]:
    """A copy of each of b evenly spaced layers, right after its source."""
    chosen = set(interleave_sources(d, b))
    plan: list[Layer] = []
    for i in range(d):
        plan.append(Layer(i))
        if i in chosen:
            plan.append(Layer(i, copy=True))
    return plan


def on_top(d: int, b: int) -> list[Layer]:
    """b fresh layers on top (`random`, and `identity` with its residual projections at zero)."""
    return keep(d) + fresh(b)


def describe(plan: list[Layer]) -> str:
    """The plan in a few words, for messages: "layers 0, 1, copy of 0, copy of 1"."""
    words = []
    for layer in plan:
        if layer.source is None:
            words.append("fresh")
        elif layer.copy:
            words.append(f"copy of {layer.source}")
        else:
            words.append(str(layer.source))
    return "layers " + ", ".join(words)
