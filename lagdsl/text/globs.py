"""Globs of data files, as `text(...)`, `jsonl(...)`, `parquet(...)` and `tokens(...)` read them
(no torch: `lagdsl validate` asks whether a glob matches a file)."""

from __future__ import annotations

import fnmatch
import glob as globbing
import os
from pathlib import Path


def matching(pattern: str, first: bool = False) -> list[Path]:
    """The files `pattern` matches, sorted, each file once however many links lead to it. `**`
    descends into folders without following links to folders, so a link loop (`a -> ..`) can
    neither hang the walk nor read a file twice (`glob` follows them, round and round). `first`:
    stop at the first file found (`lagdsl validate` asks only whether there is one). A pattern
    that names an existing file as it is written is that file, though it reads as a glob (`[a].txt`;
    `glob.escape`'s `[[]a].txt` works too)."""
    if globbing.has_magic(pattern) and os.path.isfile(pattern):
        return [Path(pattern)]
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if globbing.has_magic(part)), len(parts))
    root, rest = Path(*parts[:fixed]) if fixed else Path("."), parts[fixed:]
    if "**" not in rest:
        found = [Path(p) for p in globbing.glob(pattern)]
    else:
        found = []
        for folder, dirs, names in os.walk(root, followlinks=False):
            dirs.sort()
            relative = Path(folder).relative_to(root).parts
            found += [Path(folder) / name for name in names if _match(rest, (*relative, name))]
            if first and any(path.is_file() for path in found):
                break
    seen: set[str] = set()
    files = []
    for path in sorted(found):
        real = os.path.realpath(path)
        if path.is_file() and real not in seen:
            seen.add(real)
            files.append(path)
    return files


def _match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether the path `parts` matches the glob `pattern` parts (`**`: any number of folders; a
    name starting with a dot only where the pattern's part does, as `glob` has it)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        deeper = bool(parts) and not parts[0].startswith(".") and _match(pattern, parts[1:])
        return deeper or _match(pattern[1:], parts)
    if not parts or (parts[0].startswith(".") and not pattern[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])
