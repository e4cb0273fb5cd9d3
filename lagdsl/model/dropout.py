"""Dropout whose masks are a function of the global row, not of each process's random stream.

Under N ranks each process trains a share of the global batch's rows; with `torch.dropout` each
would draw its masks from its own generator, so N ranks and one process (or 2 ranks and 4) would
drop different units of the same row, and a run resumed on another number of ranks would train
on other masks. Here every mask element is a hash of (the step's key, the row's global index, the
site in the model, the element's place): counter-based, like Philox, and in exact integer
arithmetic, so the same on every device and for every split of the batch. The engine gives the
model a key per row (`row_keys`); without one (a model called outside the engine) dropout is
PyTorch's own.
"""

from __future__ import annotations

import hashlib
import math

import torch

_M = 0xFFFFFFFF  # the hash works on 32-bit values held in int64 (every product stays below 2^63)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds) of each element."""
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M
    return x ^ (x >> 16)


def row_keys(seed: int, step: int, micro: int, first_row: int, rows: int, device: torch.device) -> torch.Tensor:
    """The key of each of `rows` rows from global row `first_row` of micro-step `micro` of `step`."""
    digest = hashlib.sha256(f"lagdsl-dropout/{seed}/{step}/{micro}".encode()).digest()
    key = int.from_bytes(digest[:4], "little")
    index = torch.arange(first_row, first_row + rows, dtype=torch.int64, device=device)
    return _mix((index * 0x2545F49 + key) & _M)


def dropout(x: torch.Tensor, p: float, keys: torch.Tensor, site: int) -> torch.Tensor:
    """`x` (rows first) with each element zeroed with probability `p` and the rest scaled by
    1 / (1 - p), the mask drawn from the rows' `keys` and the `site` (which dropout of the model)."""
    if p <= 0.0:
        return x
    rows = x.shape[0]
    per_row = math.prod(x.shape[1:])
    base = _mix((keys ^ ((site * 0x9E3779B) & _M)) & _M).view(rows, *([1] * (x.dim() - 1)))
    place = torch.arange(per_row, dtype=torch.int64, device=x.device).view(1, *x.shape[1:])
    draw = _mix(_mix((place + base) & _M) ^ _mix(base ^ 0x5BD1E995))
    keep = draw >= int(p * 2**32)
    return x * keep.to(x.dtype) / (1.0 - p)
