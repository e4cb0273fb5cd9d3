"""`lagdsl` under torchrun with every way of gathering a sharded training state whole made to fail:
`TrainState.whole_state` (the model and optimizer gathered on every rank) and `DTensor.full_tensor`.
The final model (`TrainState.whole_model`, gathered to rank 0 alone for the exported weights) is the
one gathering allowed. Started by `tests/test_distributed.py` as `torchrun tests/ungathered.py ARGS`."""

from __future__ import annotations

import sys
from typing import NoReturn

from torch.distributed.tensor import DTensor

from lagdsl.cli import main
from lagdsl.runtime.state import TrainState


def refuse(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("a sharded training state was gathered whole")


TrainState.whole_state = refuse  # type: ignore[method-assign]
DTensor.full_tensor = refuse  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
