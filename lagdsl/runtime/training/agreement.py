"""What the ranks of a run agree on at every step, in the step's one all-reduce.

Beside the step's loss the all-reduce carries three flags: some rank was asked to stop, the request
was SIGTERM (a scheduler's), and rank 0's event log or tracker failed. So every rank stops at the
same step boundary, exits as the others do, and a failure that only rank 0 can see reaches all of
them within a step instead of leaving them in their next collective.
"""

from __future__ import annotations

import signal

import torch

from lagdsl.runtime.distributed import world as dist
from lagdsl.runtime.records.metrics import LogFailed


class Agreement:
    """The ranks' agreed stop request and its signal, updated by `reduce` each step."""

    def __init__(self) -> None:
        self.stop = False  # some rank was interrupted
        self.signal = signal.SIGINT  # SIGTERM when any rank got one, so that every rank exits as it does

    def reduce(
        self, loss: torch.Tensor, world_size: int, interrupted: bool, terminated: bool, failure: str | None
    ) -> torch.Tensor:
        """The mean of the ranks' `loss` (a scalar, or a vector of values reduced alike), with this
        rank's requests agreed on; `LogFailed` on every rank, with rank 0's message, when rank 0's log
        failed (`failure`)."""
        flags = loss.new_tensor([1.0 if flag else 0.0 for flag in (interrupted, terminated, failure is not None)])
        values = loss.reshape(-1)
        both = torch.cat([values, flags])
        dist.all_sum(both)
        stop, term, failures = both[values.numel() :].tolist()
        self.stop = self.stop or stop > 0
        if term > 0:
            self.signal = signal.SIGTERM
        if failures > 0:
            raise LogFailed(dist.broadcast(failure) or "rank 0's event log failed")
        return (both[: values.numel()] / world_size).reshape(loss.shape)
