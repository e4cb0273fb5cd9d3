"""Seeds: every random draw of a run comes from a generator seeded by (seed, purpose...)."""

from __future__ import annotations

import hashlib

import torch


def seed_for(seed: int, *purpose: object) -> int:
    """A 63-bit seed for (seed, purpose...), the same on every machine and Python."""
    digest = hashlib.sha256(repr((seed, *purpose)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *purpose: object) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, *purpose))
