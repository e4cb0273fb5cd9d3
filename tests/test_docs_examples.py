"""Every `.grow` example in the README and the docs is in `lagdsl fmt`'s layout, and every whole
schedule among them validates without a diagnostic: a user copying one gets a file the project's
own formatter and checker accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lagdsl.lang import check_text
from lagdsl.lang.fmt import format_text

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"```grow\n(.*?)```", text, re.S):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


EXAMPLES = examples()


def test_the_docs_hold_grow_examples() -> None:
    assert len(EXAMPLES) >= 6 and any(where.startswith("README.md") for where, _ in EXAMPLES)


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_each_example_is_in_fmts_layout_and_a_whole_one_validates(where: str, text: str) -> None:
    assert format_text(text) == text, f"{where} is not in `lagdsl fmt`'s layout"
    whole = all(re.search(rf"^{word} ", text, re.M) for word in ("model", "batch", "optimizer"))
    if whole and "pretrained(" not in text:  # a pretrained example names a folder that is not here
        diagnostics = check_text(text, where).diagnostics
        assert [d.code for d in diagnostics] == [], [d.message for d in diagnostics]
