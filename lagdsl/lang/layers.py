"""The built-in depth operators as layer plans. No torch here.

A layer plan lists the grown stack from bottom to top in runs: `Layer(source, copy, count)` is
`count` consecutive old layers from `source` up, either kept (the same modules) or copied, or
`count` fresh layers (`source` None). A run of one is one position, so a plan may as well list
every position on its own (as plugins may). The runtime carries a plan out
(`lagdsl.ops.depth.grow_depth`); the checker compares candidates' plans, since two operators
that build the same plan without noise build the same model, and probing both trains it twice.
Built-in plans have O(b) runs for b added layers, so comparing them costs nothing at any depth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    """`count` positions of a grown stack: old layers `source` .. `source + count - 1`, kept or
    copied (the originals stay where they were), or `count` fresh layers where `source` is None."""

    source: int | None
    copy: bool = False
    count: int = 1


def keep(d: int) -> list[Layer]:
    """The old layers 0 .. d - 1, kept in place."""
    return _runs(Layer(0, count=d))


def copies(sources: list[int]) -> list[Layer]:
    """Copies of the given old layers, in that order."""
    return normalize(Layer(i, copy=True) for i in sources)


def copy_top(d: int, b: int) -> list[Layer]:
    """Copies of the top b layers, placed on top (gradual stacking)."""
    return _runs(Layer(0, count=d), Layer(d - b, copy=True, count=b))


def copy_bottom(d: int, b: int) -> list[Layer]:
    """Copies of the bottom b layers, placed on top."""
    return _runs(Layer(0, count=d), Layer(0, copy=True, count=b))


def midas(d: int, b: int) -> list[Layer]:
    """A copy of the middle block of b layers (starting at layer (d - b) // 2), right after it."""
    start = (d - b) // 2
    return _runs(Layer(0, count=start + b), Layer(start, copy=True, count=b), Layer(start + b, count=d - start - b))


def stack(d: int, b: int) -> list[Layer]:
    """The whole stack repeated on top, in order (b a multiple of d)."""
    return _runs(Layer(0, count=d), *[Layer(0, copy=True, count=d)] * (b // d))


def slices(ranges: Iterable[tuple[int, int]]) -> list[Layer]:
    """The listed half-open ranges of the current layers, in order (mergekit's passthrough
    `slices`): each old layer's first appearance is the layer itself, later ones are copies, and a
    layer no range lists is dropped. SOLAR's 32 -> 48 is `[(0, 24), (8, 32)]`."""
    seen: set[int] = set()
    out = []
    for start, end in ranges:
        for i in range(start, end):
            out.append(Layer(i, copy=i in seen))
            seen.add(i)
    return normalize(out)


def llama_pro(d: int, b: int) -> list[Layer]:
    """After every (d / b)-th layer, a copy of it (LLaMA Pro's block expansion; b divides d). The
    runtime zeroes the copies' residual output projections, so each computes the identity."""
    every = d // b
    out = []
    for i in range(d):
        out.append(Layer(i))
        if (i + 1) % every == 0:
            out.append(Layer(i, copy=True))
    return normalize(out)


def interleave_sources(d: int, b: int) -> list[int]:
    """b evenly spaced layers of d: the centre of each of b equal spans (b = d: every layer)."""
    return [int((j + 0.5) * d / b) for j in range(b)]


def interleave(d: int, b: int) -> list[Layer]:
    """A copy of each of b evenly spaced layers, right after its source."""
    runs, kept = [], 0  # old layers below `kept` are placed
    for source in sorted(set(interleave_sources(d, b))):
        runs += [Layer(kept, count=source + 1 - kept), Layer(source, copy=True)]
        kept = source + 1
    return _runs(*runs, Layer(kept, count=d - kept))


def on_top(d: int, b: int) -> list[Layer]:
    """b fresh layers on top (`random`, and `identity` with its residual projections at zero)."""
    return _runs(Layer(0, count=d), Layer(None, count=b))


def positions(plan: Iterable[Layer]) -> list[Layer]:
    """The plan with one `Layer` per position of the grown stack."""
    out: list[Layer] = []
    for run in plan:
        if run.source is None:
            out += [Layer(None)] * run.count
        else:
            out += [Layer(run.source + i, run.copy) for i in range(run.count)]
    return out


def carried(plan: Iterable[Layer], marked: Iterable[int]) -> tuple[int, ...]:
    """The positions of the grown stack that are of the kind of the old layers `marked` (a
    mixture's dense layers): a kept or copied layer is of its source's kind, a fresh one of the
    kind of the layer below it (the lowest, of the layer above it)."""
    marked = set(marked)
    grown = positions(plan)
    kinds: list[bool | None] = [None if layer.source is None else layer.source in marked for layer in grown]
    for i in range(1, len(kinds)):  # a fresh layer: the kind below it
        if kinds[i] is None:
            kinds[i] = kinds[i - 1]
    for i in reversed(range(len(kinds) - 1)):  # fresh layers at the bottom: the kind above them
        if kinds[i] is None:
            kinds[i] = kinds[i + 1]
    return tuple(i for i, kind in enumerate(kinds) if kind)


def normalize(plan: Iterable[Layer]) -> list[Layer]:
    """The plan in its longest runs (empty runs dropped, neighbours that continue each other
    merged): two plans build the same stack exactly when their normal forms are equal."""
    out: list[Layer] = []
    for run in plan:
        if run.count <= 0:
            continue
        last = out[-1] if out else None
        if last is not None and last.copy == run.copy:
            fresh_pair = last.source is None and run.source is None
            continues = last.source is not None and run.source == last.source + last.count
            if fresh_pair or continues:
                out[-1] = Layer(last.source, last.copy, last.count + run.count)
                continue
        out.append(run)
    return out


def describe(plan: Iterable[Layer]) -> str:
    """The plan in a few words, for messages: "layers 0-1, copies of 0-1"."""
    words = []
    for run in normalize(plan):
        last = None if run.source is None else run.source + run.count - 1
        span = str(run.source) if run.count == 1 else f"{run.source}-{last}"
        if run.source is None:
            words.append("a fresh layer" if run.count == 1 else f"{run.count} fresh layers")
        elif run.copy:
            words.append(f"a copy of {span}" if run.count == 1 else f"copies of {span}")
        else:
            words.append(f"layer {span}" if run.count == 1 else f"layers {span}")
    return ", ".join(words)


def _runs(*runs: Layer) -> list[Layer]:
    return normalize(runs)
