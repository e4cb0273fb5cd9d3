"""The checker: a syntax tree in, a `Schedule` (or every diagnostic) out.

It is a tuple of passes, one concern each, run in order over one `Draft` (`draft.py` says which
pass fills which field), the way sqlglot lists its optimizer rules. A pass appends diagnostics and
never raises for a user's mistake; a value it could not resolve stays None, and later passes skip
what depends on it, so one mistake gives one diagnostic. Once every pass ran without an error,
`assemble` builds the `Schedule`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lagdsl.lang import syntax as ast
from lagdsl.lang.catalogue import Catalogue, default_catalogue
from lagdsl.lang.check.assemble import assemble
from lagdsl.lang.check.budgets import check_budgets
from lagdsl.lang.check.collect import collect
from lagdsl.lang.check.draft import Draft
from lagdsl.lang.check.names import resolve_names
from lagdsl.lang.check.parts import check_parts
from lagdsl.lang.check.settings import check_settings
from lagdsl.lang.check.shapes import check_shapes
from lagdsl.lang.diagnostics import Diagnostic, sort_diagnostics
from lagdsl.lang.schedule import Schedule
from lagdsl.lang.source import Source

__all__ = ["LOCAL_PASSES", "PASSES", "Draft", "check"]

Pass = Callable[[Draft], Draft]

PASSES: tuple[Pass, ...] = (collect, check_settings, resolve_names, check_shapes, check_parts, check_budgets)

#: The passes that look at one statement at a time: what runs on a tree a syntax error repaired
#: (the later passes relate statements to each other, which a skipped statement would mislead).
LOCAL_PASSES: tuple[Pass, ...] = (collect, check_settings)


def check(
    module: ast.Module,
    source: Source,
    catalogue: Catalogue | None = None,
    passes: tuple[Pass, ...] = PASSES,
    base: Path | None = None,
) -> tuple[Schedule | None, list[Diagnostic]]:
    """Run the passes (every one by default); the `Schedule` when all ran without an error, and all
    diagnostics sorted. `base`: where relative data paths start (default: the source's folder)."""
    draft = Draft(source, module, catalogue or default_catalogue(), base)
    for check_pass in passes:
        draft = check_pass(draft)
    diagnostics = sort_diagnostics(draft.diagnostics)
    if draft.failed or passes != PASSES:
        return None, diagnostics
    return assemble(draft), diagnostics
