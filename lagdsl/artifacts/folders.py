"""Output folders that commands write whole (`export -o`, `tokenize -o`): never inside a run
directory, never over a folder the command did not write unless asked (`--force`), and replaced
atomically: the new folder is written beside the old one and renamed into place, so a failure
leaves the old folder as it was (and a half-written one never appears under the name)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class FolderError(Exception):
    """An output folder that may not be written; the message is one line for the user."""


def run_directory_above(path: Path) -> Path | None:
    """The run directory (a folder with `run.json`) that `path` is or lies in, if any."""
    for folder in [path, *path.parents]:
        if (folder / "run.json").is_file():
            return folder
    return None


@contextmanager
def replacing(
    out: Path, *, command: str, ours: Callable[[Path], bool], force: bool, allowed_in_run: Path | None = None
) -> Iterator[Path]:
    """A fresh temporary folder beside `out` to write into; renamed to `out` when the block ends
    without an error (the old `out`, if any, removed after). `ours(folder)`: whether a non-empty
    folder is what `command` writes (replaced without `force`). `allowed_in_run`: the one folder
    inside a run directory that may be written (the run's own default export)."""
    out = Path(os.path.abspath(out))
    run = run_directory_above(out)
    if run is not None and (allowed_in_run is None or out != Path(os.path.abspath(allowed_in_run))):
        raise FolderError(
            f"`{out}` is inside the run directory `{run}`, whose files the run and its tools rely on: "
            "choose a folder outside it"
        )
    if out.exists() and not out.is_dir():
        raise FolderError(f"`{out}` is a file, not a folder")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise FolderError(f"`{out}` cannot be made: `{above}` is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not ours(out) and not force:
        raise FolderError(
            f"`{out}` is not empty and holds files `lagdsl {command}` did not write: choose an empty or new "
            "folder, or `--force` to replace it"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".new", dir=out.parent))
        os.chmod(fresh, 0o777 & ~_umask())  # mkdtemp's 0700, as a folder made by mkdir would be
    except OSError as error:
        raise FolderError(f"cannot write `{out}`: {error.strerror or error}") from None
    try:
        yield fresh
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(fresh, out)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def only(names: Callable[[str], bool]) -> Callable[[Path], bool]:
    """`ours` for a command whose folders hold only files whose names `names` accepts."""
    return lambda folder: all(p.is_file() and names(p.name) for p in folder.iterdir())
