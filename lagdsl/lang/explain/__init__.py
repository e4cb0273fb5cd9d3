"""`lagdsl explain CODE`: one page per diagnostic code, in the manner of `rustc --explain`.

Each page is a Markdown file beside this module (`E0201.md`): what the code means, an example
that gets it (the first `grow` code block) and the example fixed (the second). The suite runs both
through the checker, so a page cannot drift from what the checker says.
"""

from __future__ import annotations

import re
from importlib import resources

from lagdsl.lang.diagnostics import CODES

_BLOCK = re.compile(r"```grow\n(.*?)```", re.S)


class UnknownCode(LookupError):
    """Not a diagnostic code."""


def normalize(code: str) -> str:
    """`e201`, `E0201` and `0201` all name E0201; `w301` names W0301."""
    match = re.fullmatch(r"([EeWw]?)0*([0-9]{1,4})", code.strip())
    if not match:
        raise UnknownCode(code)
    letter = (match.group(1) or "E").upper()
    candidate = f"{letter}{int(match.group(2)):04d}"
    if candidate not in CODES:
        raise UnknownCode(code)
    return candidate


def page(code: str) -> str:
    """The page of `code` (any spelling `normalize` accepts), as Markdown."""
    name = normalize(code)
    return (resources.files(__name__) / f"{name}.md").read_text(encoding="utf-8")


def examples(code: str) -> tuple[str, str]:
    """The page's wrong example and its fix."""
    blocks = _BLOCK.findall(page(code))
    if len(blocks) != 2:
        raise ValueError(f"the page of {code} has {len(blocks)} `grow` examples, not 2")
    return blocks[0], blocks[1]
