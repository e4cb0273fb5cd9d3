"""Checkpoints: written atomically (temporary file, fsync, rename), loaded with `weights_only=True`.

A checkpoint holds what a resumed run needs to continue exactly: the model's shape and weights,
the optimizer's state, the program counter, the mainline step, the FLOP counters, how many lines
of `metrics.jsonl` were written (a resumed run cuts anything after that), and the schedule's hash.
Nothing else needs saving: every random draw is seeded from (seed, step, purpose).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

PREFIX = "step-"


def write_atomic(payload: dict[str, object], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as stream:
        torch.save(payload, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def checkpoint_path(folder: Path, step: int, pc: int) -> Path:
    return folder / f"{PREFIX}{step:09d}-{pc:06d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{PREFIX}*.pt"))


def prune(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (never the one just written)."""
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
