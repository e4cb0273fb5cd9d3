"""A tiny lagdsl plugin, as another package would write one: a torch-free catalogue entry here,
with its layer plan (which the checker compares with other candidates'), and the implementation in
`impl` (imported only when the operator runs)."""

from lagdsl.lang.catalogue import CopyArgs, OperatorInfo
from lagdsl.lang.layers import Layer, keep


def repeat_top_layers(d: int, b: int) -> list[Layer]:
    """The top layer copied b times, placed on top."""
    return keep(d) + [Layer(d - 1, copy=True)] * b


OPERATORS = [
    OperatorInfo(
        name="repeat_top",
        dim="depth",
        args=CopyArgs,
        preserves="no",
        description="the top layer copied b times, placed on top",
        impl="lagdsl_demo_plugin.impl:repeat_top",
        layers=repeat_top_layers,
    )
]
