"""A pause of Python's cycle collector around work that allocates many small acyclic objects.

Parsing a schedule, building its plan and encoding the plan as JSON create tens of thousands of
objects that never form cycles; the collector's passes over them cost a fifth to a half of the
time on large schedules (bench/validate.py, bench/plan.py). Reference counting still frees them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
