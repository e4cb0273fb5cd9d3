"""lagdsl: a declarative language for growing Transformers during pretraining, and its compiler.

The front of the pipeline imports no torch, so validating a schedule starts fast:

    import lagdsl
    result = lagdsl.load("schedules/stack_lag.grow")   # -> Checked(schedule, diagnostics)
"""

from __future__ import annotations

from lagdsl.lang import Checked, check_source, check_text, load

__all__ = ["Checked", "__version__", "check_source", "check_text", "load"]
__version__ = "0.1.0"
