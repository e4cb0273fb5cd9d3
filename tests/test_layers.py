"""Layer plans: runs and positions describe the same stacks, and built-in plans stay short."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lagdsl.lang import layers
from lagdsl.lang.catalogue import BUILTIN_OPERATORS
from lagdsl.lang.layers import Layer, describe, normalize, positions

PLANS = {e.name: e.layers for e in BUILTIN_OPERATORS if e.dim == "depth" and e.layers is not None}


def valid(name: str, d: int, b: int) -> bool:
    if name == "stack":
        return b % d == 0
    if name == "llama_pro":
        return d % b == 0
    return name in ("random", "identity") or b <= d


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(PLANS)), st.integers(1, 40), st.integers(1, 40))
def test_runs_and_positions_are_the_same_plan(name: str, d: int, b: int) -> None:
    if not valid(name, d, b):
        b = d
    plan = PLANS[name](d, b)
    every = positions(plan)
    assert len(every) == d + b and all(layer.count == 1 for layer in every)
    # every old layer is still there once, in order, and copies only copy old layers
    kept = [layer.source for layer in every if layer.source is not None and not layer.copy]
    assert kept == list(range(d))
    assert all(0 <= layer.source < d for layer in every if layer.copy)
    # the same stack whether written in runs or one position at a time
    assert normalize(every) == normalize(plan) == plan
    assert len(plan) <= 2 * b + 2  # O(b) runs, whatever the depth


def test_normal_forms_decide_equality() -> None:
    assert normalize([Layer(0), Layer(1), Layer(2, copy=True), Layer(3, copy=True)]) == [
        Layer(0, count=2),
        Layer(2, copy=True, count=2),
    ]
    assert normalize([Layer(None), Layer(None, count=2), Layer(0, count=0)]) == [Layer(None, count=3)]
    assert normalize([Layer(1), Layer(0)]) == [Layer(1), Layer(0)]  # not a continuation
    assert layers.copy_top(3, 3) == layers.stack(3, 3) != layers.interleave(3, 3)
    assert layers.midas(3, 1) == layers.interleave(3, 1)  # both copy layer 1 right after it


def test_describe() -> None:
    assert describe(layers.copy_top(2, 2)) == "layers 0-1, copies of 0-1"
    assert describe(layers.interleave(3, 1)) == "layers 0-1, a copy of 1, layer 2"
    assert describe(layers.on_top(1, 2)) == "layer 0, 2 fresh layers"
