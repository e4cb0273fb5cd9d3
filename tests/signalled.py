"""`lagdsl` where rank 1 sends itself SIGTERM as it begins a parallel probe's step
`LAGDSL_TEST_SIGNAL_AT` (a scheduler's signal, at a step known in advance). Imported by each rank
before `lagdsl run` (`tests/forked.py`'s prelude), or run as `torchrun tests/signalled.py ARGS`."""

from __future__ import annotations

import os
import signal
import sys

from lagdsl.cli import main
from lagdsl.runtime.training.engine import Engine

train_step = Engine.train_step
AT = int(os.environ["LAGDSL_TEST_SIGNAL_AT"])
sent: list[int] = []


def signalled(self: Engine, state, stage, step, team=None):  # type: ignore[no-untyped-def]
    if team is not None and step == AT and os.environ.get("RANK") == "1" and not sent:
        sent.append(step)
        os.kill(os.getpid(), signal.SIGTERM)
    return train_step(self, state, stage, step, team)


Engine.train_step = signalled  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
