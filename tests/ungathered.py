"""`lagdsl` under torchrun with every way of gathering a sharded training state whole made to fail:
`TrainState.whole_state` (the model and optimizer gathered on every rank) fails, and so does
`DTensor.full_tensor` while a tensor it gathered before is still alive: a width growth gathers one
tensor at a time and lets it go before the next, and nothing else gathers at all (the final model
too is written by each rank, its own shards). Imported by each rank before `lagdsl run`
(`tests/forked.py`'s prelude), or run as `torchrun tests/ungathered.py ARGS`."""

from __future__ import annotations

import sys
import weakref
from typing import NoReturn

import torch
from torch.distributed.tensor import DTensor

from lagdsl.cli import main
from lagdsl.runtime.state.train_state import TrainState

alive: set[int] = set()  # the tensors `full_tensor` gathered that are still alive, by a counter
gathered = 0
full_tensor = DTensor.full_tensor


def refuse(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("a sharded training state was gathered whole")


def one_at_a_time(self: DTensor, *args: object, **kwargs: object) -> torch.Tensor:
    global gathered
    if alive:
        raise AssertionError(f"a sharded training state was gathered whole: {len(alive) + 1} tensors at once")
    whole = full_tensor(self, *args, **kwargs)  # type: ignore[arg-type]
    gathered += 1
    alive.add(gathered)
    weakref.finalize(whole, alive.discard, gathered)
    return whole


TrainState.whole_state = refuse  # type: ignore[method-assign]
DTensor.full_tensor = one_at_a_time  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
