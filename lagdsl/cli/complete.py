"""Shell completion beyond click's own: `.grow` files, run directories, a schedule's stage names.

Enable it with one line in the shell's start-up file (see docs/cli.md):

    eval "$(_LAGDSL_COMPLETE=bash_source lagdsl)"     # ~/.bashrc
    eval "$(_LAGDSL_COMPLETE=zsh_source lagdsl)"      # ~/.zshrc
    _LAGDSL_COMPLETE=fish_source lagdsl | source      # ~/.config/fish/completions/lagdsl.fish

Completion runs on every Tab, so these read names from the disk and never import torch.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click
from click.shell_completion import CompletionItem

#: How many folders deep run directories are looked for under the current one.
_RUN_DEPTH = 2


def _listing(incomplete: str) -> tuple[str, str, list[os.DirEntry[str]]]:
    """What `incomplete` has typed up to its last `/` (the folder, as typed), the start of the name
    after it, and that folder's entries."""
    folder, slash, start = incomplete.rpartition("/")
    try:
        entries = sorted(os.scandir(folder or ("/" if slash else ".")), key=lambda e: e.name)
    except OSError:
        entries = []
    return folder + slash, start, entries


def grow_files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """`.grow` files, and folders to look in."""
    folder, start, entries = _listing(incomplete)
    items = []
    for entry in entries:
        if not entry.name.startswith(start) or (entry.name.startswith(".") and not start.startswith(".")):
            continue
        if entry.is_dir():
            items.append(CompletionItem(folder + entry.name + "/", type="plain"))
        elif entry.name.endswith(".grow"):
            items.append(CompletionItem(folder + entry.name))
    return items


def _is_run(path: Path) -> bool:
    return (path / "run.json").is_file()


def run_dirs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Run directories (folders with a `run.json`) under the current folder, a couple deep, and
    folders on the way to one."""
    folder, start, entries = _listing(incomplete)
    items = []
    for entry in entries:
        if not entry.is_dir() or not entry.name.startswith(start) or entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if _is_run(path):
            items.append(CompletionItem(folder + entry.name, help="run directory"))
        elif _holds_runs(path, _RUN_DEPTH):
            items.append(CompletionItem(folder + entry.name + "/", type="plain"))
    return items


def _holds_runs(path: Path, depth: int) -> bool:
    if depth == 0:
        return False
    try:
        children = [Path(e.path) for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return False
    return any(_is_run(c) or _holds_runs(c, depth - 1) for c in children)


def stage_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The stages of the schedule named earlier on the command line (as `repeat` names its copies)."""
    file = ctx.params.get("file")
    if file is None:  # click leaves it unparsed while `--stage` waits for its value: the words typed
        typed = shlex.split(os.environ.get("COMP_WORDS", ""), posix=True) if "COMP_WORDS" in os.environ else []
        file = next((word for word in typed if word.endswith(".grow")), None)
    if file is None:
        return []
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    from lagdsl.lang import check_text

    checked = check_text(text, str(file))
    if checked.schedule is not None:
        names = [stage.name for stage in checked.schedule.stages]
    else:  # a schedule with errors: the names as written
        from lagdsl.lang.navigate import definitions

        names = [name for name, (kind, _) in definitions(text).items() if kind == "stage"]
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]
