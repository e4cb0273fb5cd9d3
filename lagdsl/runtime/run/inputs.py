"""What a run opens before it trains: the schedule with the command line's overrides, the device
and the data; `RunError` when one of them cannot be used."""

from __future__ import annotations

from pathlib import Path

import torch

from lagdsl.lang.schedule import Schedule
from lagdsl.runtime.data.batches import Batches, Shard
from lagdsl.runtime.data.corpus import Corpus, DataError, load_corpus
from lagdsl.runtime.distributed import world as dist
from lagdsl.runtime.training.engine import Device


class RunError(Exception):
    """A run that cannot start or go on; `code` is the exit code (1: the schedule or the
    numbers, 2: input, data, device); the message is one line for the user."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def apply_overrides(schedule: Schedule, seed: int | None, device: str | None) -> Schedule:
    update: dict[str, object] = {}
    if seed is not None:
        update["seed"] = seed
    if device is not None:
        update["device"] = device
    return schedule.model_copy(update=update) if update else schedule


def open_device(schedule: Schedule, world: dist.World = dist.ONE) -> Device:
    """The schedule's device, checked to exist here (under several ranks, a CUDA device is the
    rank's local one); TF32 matrix products on CUDA."""
    try:
        device = Device.resolve(schedule.device, schedule.precision)
    except (RuntimeError, KeyError) as error:
        raise RunError(f"device `{schedule.device}` is not available here: {error}") from None
    if device.device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"device `{schedule.device}` is not available here: no CUDA device")
        if world.distributed:
            if world.local_rank >= torch.cuda.device_count():
                raise RunError(
                    f"local rank {world.local_rank} has no GPU of its own ({torch.cuda.device_count()} here): "
                    "start at most one rank per GPU (`torchrun --nproc_per_node`)"
                )
            device = Device(torch.device("cuda", world.local_rank), device.dtype)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def open_data(
    schedule: Schedule, base: Path, device: Device, world: dist.World = dist.ONE, progress: bool = True
) -> tuple[Corpus, Batches]:
    """The schedule's corpus (relative paths from `base`) and its batches (this rank's share of
    each global batch), checked against the model. Under several ranks, the first rank of a machine
    to tokenize a corpus does it; the others wait for it and read the cache (`lagdsl.text.encode`)."""
    contexts = sorted({stage.after.context for stage in schedule.stages})
    uneven = [c for c in contexts if schedule.rows(c) % world.size]
    if uneven:
        rows = schedule.rows(uneven[0])
        what = (
            f"`batch {rows}`" if schedule.batch_tokens is None
            else f"`batch {schedule.batch_tokens} tokens` ({rows} rows at context {uneven[0]})"
        )  # fmt: skip
        raise RunError(
            f"{what} is the global batch, and {world.size} ranks cannot share it equally: "
            f"make `batch` a multiple of {world.size} rows, or start a number of ranks that divides {rows}"
        )
    try:
        corpus = load_corpus(schedule.data, base, progress and world.main)
        shard = Shard(world.rank, world.size)
        longest = schedule.final_shape.context  # (a context only grows)
        batches = Batches(
            corpus, schedule.batch, schedule.model.context, schedule.seed, device.device, shard, longest,
            schedule.batch_tokens,
        )  # fmt: skip
    except DataError as error:
        raise RunError(f"data: {error}") from None
    if corpus.vocab > schedule.model.vocab:
        raise RunError(f"data: the data has token ids up to {corpus.vocab - 1}, beyond `vocab={schedule.model.vocab}`")
    return corpus, batches
