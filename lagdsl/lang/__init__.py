"""The language front: `.grow` text to a validated `Schedule`. Imports no torch.

result = load("schedules/stack_lag.grow")
if result.ok:
    schedule = result.schedule
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lagdsl._gc import collector_paused
from lagdsl.lang.check import LOCAL_PASSES, check
from lagdsl.lang.diagnostics import Diagnostic, sort_diagnostics
from lagdsl.lang.parser import parse
from lagdsl.lang.schedule import Schedule
from lagdsl.lang.source import Source, Span

__all__ = ["Checked", "Diagnostic", "Schedule", "Source", "Span", "check_source", "check_text", "load"]


@dataclass
class Checked:
    """A checked source: the schedule when it is valid, and every diagnostic."""

    source: Source
    schedule: Schedule | None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def ok(self) -> bool:
        return self.schedule is not None


def check_source(source: Source, base: Path | None = None) -> Checked:
    """Parse and check; never raises for a mistake in the text. A leading byte-order mark (some
    editors write one) is not part of the text. `base`: where the schedule's relative data paths
    start (default: the folder of the file that `source` names)."""
    if source.text.startswith("\ufeff"):
        source = Source(source.name, source.text[1:])
    with collector_paused():
        module, diagnostics = parse(source)
        if module is None:
            return Checked(source, None, sort_diagnostics(diagnostics))
        if diagnostics:  # a repaired parse: only the checks the repair cannot mislead
            _, local = check(module, source, passes=LOCAL_PASSES, base=base)
            return Checked(source, None, sort_diagnostics([*diagnostics, *after_repair(local, diagnostics, source)]))
        schedule, more = check(module, source, base=base)
    return Checked(source, schedule, sort_diagnostics([*diagnostics, *more]))


#: Errors that concern one statement alone: a repair elsewhere (a statement skipped, a placeholder)
#: cannot cause them. Not kept: a missing setting or statement, an unknown name (its definition may
#: be the broken statement), shapes and budgets (they relate stages: their passes do not even run),
#: warnings.
LOCAL_CODES = frozenset(
    {"E0102", "E0104", "E0106", "E0108", "E0204", "E0205", "E0207", "E0208", "E0209", "E0211",
     "E0301", "E0302", "E0303", "E0305", "E0307", "E0308"}
)  # fmt: skip


def after_repair(checked: list[Diagnostic], syntax: list[Diagnostic], source: Source) -> list[Diagnostic]:
    """The checker's findings on a repaired parse that stand on their own: statement-local errors
    on lines that no syntax error touches (nor the next line, where a repair's placeholder sits)."""
    lines = source.text.splitlines()
    touched: set[int] = set()
    for error in syntax:
        touched.update(range(error.span.line, error.span.end_line + 1))
        following = error.span.end_line + 1  # the next line with a token
        while following <= len(lines) and not lines[following - 1].split("#", 1)[0].strip():
            following += 1
        touched.add(following)
    return [
        d for d in checked
        if d.code in LOCAL_CODES and not touched.intersection(range(d.span.line, d.span.end_line + 1))
    ]  # fmt: skip


def check_text(text: str, name: str = "<text>", base: Path | None = None) -> Checked:
    return check_source(Source(name, text), base)


def load(path: str | Path) -> Checked:
    """Read and check a `.grow` file. Raises OSError or UnicodeDecodeError when it cannot be read."""
    path = Path(path)
    return check_source(Source(str(path), path.read_text(encoding="utf-8")))
