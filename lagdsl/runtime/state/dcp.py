"""Checkpoints of several ranks: a folder that `torch.distributed.checkpoint` (DCP) writes.

    checkpoints/step-000000100-000012.dcp/
      .metadata, __0_0.distcp, ...   DCP's files: the model's and the optimizer's tensors
      state.json                     everything else of the `TrainState` (shape, program counter,
                                     step, counters, winners, optimizer groups, loss scaler), and
                                     the layout of the optimizer's state, so a loader can make room
      manifest.json                  the SHA-256 of every other file, written last

Every rank writes its part into a hidden temporary folder; once all have finished, rank 0 writes
`state.json` and `manifest.json` and renames the folder into place. A folder without a manifest, or
whose files do not match it, is incomplete or damaged, and a resume passes over it, as it passes over
a damaged `.pt` file.

What a loader gets is the same state dict a `.pt` checkpoint holds (`TrainState.state_dict()`),
whatever the number of ranks that wrote it: DCP reads the saved tensors into the loader's own
layout, whole tensors on the CPU, or under `parallel fsdp` each rank's own shards of them (so no
rank of a sharded run ever reads the whole model). So a checkpoint of 2 ranks resumes on 1, 3 or 4,
and one process's `.pt` file resumes under torchrun.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from lagdsl.runtime.distributed import world as dist
from lagdsl.runtime.state.train_state import StateDict

SUFFIX = ".dcp"
MANIFEST = "manifest.json"
STATE = "state.json"
_TENSORS = ("model", "optimizer")


class ShardedError(Exception):
    """A sharded checkpoint that cannot be used; a few words why."""


def _cause(error: BaseException) -> BaseException:
    """What failed inside DCP: its `CheckpointException` (a `BaseException`, which passes an
    `except Exception`, and whose text is every rank's traceback) unwrapped to the first rank's
    error, an `OSError` such as a full disk's where it was one."""
    from torch.distributed.checkpoint.api import CheckpointException

    if not isinstance(error, CheckpointException) or not error.failures:
        return error
    rank, failure = min(error.failures.items())
    cause = failure[0]  # (the exception, its stack)
    if isinstance(cause, OSError):
        return cause
    return OSError(f"rank {rank} could not write its part: {type(cause).__name__}: {str(cause).splitlines()[0]}")


def save(state: StateDict, path: Path, world: dist.World) -> None:
    """`state` (a `TrainState` state dict, the same on every rank) written to the folder `path`
    by all ranks together; it appears complete or not at all. Collective: every rank calls it."""
    tensors, rest = _split(state)
    error: BaseException | None = None
    temporary = path  # until rank 0 has made the folder
    try:
        # a new folder of a name no one can foresee (mkdtemp), made by rank 0 and named to the others;
        # what a crashed save of this checkpoint left is removed first (the run's lock is ours)
        temporary = Path(dist.on_main(world, lambda: _fresh_folder(path), (OSError,)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DCP's notes on single-process use and overwriting
            dcp.save(tensors, checkpoint_id=str(temporary), no_dist=not dist.active())
    except BaseException as caught:  # an OSError on any rank reaches every rank through DCP
        error = _cause(caught)
    failed = dist.any_rank(error is not None, torch.device("cpu"))
    if failed:
        if world.main and temporary != path:
            shutil.rmtree(temporary, ignore_errors=True)
        if error is not None:
            raise error
        raise OSError("another rank could not write its part of the checkpoint")

    def finish() -> None:
        try:
            (temporary / STATE).write_text(json.dumps(rest, sort_keys=True) + "\n", encoding="utf-8")
            digests = {file.name: _sha256(file) for file in sorted(temporary.iterdir())}
            _write_synced(temporary / MANIFEST, json.dumps(digests, indent=1, sort_keys=True) + "\n")
            if path.exists():  # the same step saved again (SIGTERM right after a periodic checkpoint):
                # the old folder goes aside first and is deleted only once the new one is in place
                aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, aside)  # onto the empty folder mkdtemp made
                os.replace(temporary, path)
                _fsync_dir(path.parent)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(temporary, path)
            _fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    dist.on_main(world, finish, (OSError,))


def _fresh_folder(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    for left in path.parent.glob(f".{path.name}.*"):
        if left.suffix in (".tmp", ".old") and left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def verify(path: Path) -> None:
    """Raise `ShardedError` unless every file of the folder matches its manifest."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardedError("no manifest: its writing did not finish") from None
    except (OSError, ValueError) as error:
        raise ShardedError(f"its manifest cannot be read: {error}") from None
    if not isinstance(manifest, dict) or STATE not in manifest:
        raise ShardedError("its manifest is not lagdsl's")
    present = {file.name for file in path.iterdir()} - {MANIFEST}
    if present != set(manifest):
        missing = sorted(set(manifest) - present)
        raise ShardedError(f"files missing: {', '.join(missing)}" if missing else "files it does not list")
    for name, digest in manifest.items():
        try:
            if _sha256(path / name) != digest:
                raise ShardedError(f"`{name}` does not match its checksum: the checkpoint is damaged")
        except OSError as error:
            raise ShardedError(f"`{name}` cannot be read: {error.strerror or error}") from None


#: Room for one saved tensor of a shape and dtype, for DCP to read into: a whole tensor on the CPU,
#: or (a sharded run's resume: `lagdsl.runtime.distributed.moves.room`) this rank's shard of it, a DTensor.
Room = Callable[[list[int], torch.dtype], torch.Tensor]


def load(path: Path, room: Room | None = None) -> StateDict:
    """The state dict the folder holds (`ShardedError` when damaged): whole tensors on the CPU,
    or with `room` each rank's shards. Collective under several ranks: every rank calls it."""
    verify(path)
    try:
        rest = json.loads((path / STATE).read_text(encoding="utf-8"))
        template = _template(rest, room or _whole)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.load(template, checkpoint_id=str(path), no_dist=not dist.active())
    except ShardedError:
        raise
    except Exception as error:  # a folder that passed its checksums but not DCP: say so, never crash
        raise ShardedError(f"cannot be loaded: {error}") from None
    return _join(template, rest)


class Tensors(Mapping[str, torch.Tensor]):
    """The model's tensors of a verified folder (`model`), read one at a time as they are asked
    for, whole, on the CPU, and kept by no one here: what reads a sharded final model to write it
    elsewhere (`lagdsl export`) holds one tensor at a time, never the model."""

    def __init__(self, path: Path) -> None:
        verify(path)
        try:
            rest = json.loads((path / STATE).read_text(encoding="utf-8"))
            self.layout: dict[str, tuple[list[int], str]] = {
                k: (list(s), d) for k, (s, d) in rest["model_layout"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ShardedError(f"its state cannot be read: {error}") from None
        self.path = path

    def shape(self, name: str) -> tuple[int, ...]:
        """Tensor `name`'s shape, read from the folder's layout (not from the tensor)."""
        return tuple(self.layout[name][0])

    def __getitem__(self, name: str) -> torch.Tensor:
        shape, dtype = self.layout[name]
        room = {"model": {name: torch.empty(shape, dtype=getattr(torch, dtype))}}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dcp.load(room, checkpoint_id=str(self.path), no_dist=True)
        except Exception as error:  # passed its checksums but not DCP: say so, never crash
            raise ShardedError(f"cannot be loaded: {error}") from None
        return room["model"][name]

    def __contains__(self, name: object) -> bool:  # without reading it (Mapping's would)
        return name in self.layout

    def __iter__(self) -> Iterator[str]:
        return iter(self.layout)

    def __len__(self) -> int:
        return len(self.layout)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- a state dict as DCP's tensors plus JSON, and back


def _split(state: StateDict) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state's tensors (DCP's part: string keys only) and everything else (JSON's part, with the
    layout of the optimizer's per-parameter state)."""
    optimizer = state["optimizer"]
    opt_tensors: dict[str, dict[str, torch.Tensor]] = {}
    opt_values: dict[str, dict[str, Any]] = {}
    layout: dict[str, dict[str, tuple[list[int], str]]] = {}
    for index, entry in optimizer["state"].items():
        key = str(index)
        opt_tensors[key], opt_values[key], layout[key] = {}, {}, {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                opt_tensors[key][name] = value.detach().cpu()
                layout[key][name] = (list(value.shape), str(value.dtype).removeprefix("torch."))
            else:
                opt_values[key][name] = value
    model = {name: tensor.detach().cpu() for name, tensor in state["model"].items()}
    rest = {k: v for k, v in state.items() if k not in _TENSORS}
    rest["param_groups"] = optimizer["param_groups"]
    rest["optimizer_values"] = opt_values
    rest["optimizer_layout"] = layout
    rest["model_layout"] = {n: (list(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in model.items()}
    return {"model": model, "optimizer": opt_tensors}, rest


def _whole(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype)


def _template(rest: dict[str, Any], room: Room) -> dict[str, Any]:
    """Room for the tensors `rest` describes, for DCP to read into."""

    def empty(shape: list[int], dtype: str) -> torch.Tensor:
        return room(shape, getattr(torch, dtype))

    model = {name: empty(*spec) for name, spec in rest["model_layout"].items()}
    optimizer = {
        key: {name: empty(*spec) for name, spec in entry.items()} for key, entry in rest["optimizer_layout"].items()
    }
    return {"model": model, "optimizer": optimizer}


def _join(tensors: dict[str, Any], rest: dict[str, Any]) -> StateDict:
    state = {
        k: v
        for k, v in rest.items()
        if k not in ("param_groups", "optimizer_values", "optimizer_layout", "model_layout")
    }
    entries: dict[int, dict[str, Any]] = {}
    for key, values in tensors["optimizer"].items():
        entries[int(key)] = {**values, **rest["optimizer_values"].get(key, {})}
    state["model"] = tensors["model"]
    state["optimizer"] = {"state": entries, "param_groups": rest["param_groups"]}
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def _fsync_dir(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
