"""A tiny lagdsl plugin, as another package would write one: a torch-free catalogue entry here,
the implementation in `impl` (imported only when the operator runs)."""

from lagdsl.lang.catalogue import OperatorInfo
from lagdsl.lang.params import Param

OPERATORS = [
    OperatorInfo(
        name="repeat_top",
        dim="depth",
        params=(Param("noise", "float", 0.0, ge=0.0),),
        preserves="no",
        description="the top layer copied b times, placed on top",
        impl="lagdsl_demo_plugin.impl:repeat_top",
    )
]
