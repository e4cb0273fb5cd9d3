"""Deterministic batches drawn from a corpus, and a rank's share of them.

The batch of mainline step t, micro-step m is a pure function of (seed, t, m) and the context:
random windows of the model's context drawn from a generator seeded with exactly those numbers (a
context growth lengthens the windows from its step on, so a resume cuts what the run cut).
Validation batches are fixed: eval batch i depends on (seed, i) and the context only, so every
evaluation at one context reads the same text. Under several ranks the batch
is the global one, and a rank reads a share of its rows (`Shard`): N ranks read, between them,
exactly the tokens one process reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lagdsl.runtime.data.corpus import Corpus, DataError, Tokens

VAL_SALT = 0x5EED_0FA1  # separates the validation stream from the training one


@dataclass(frozen=True)
class Shard:
    """Share `index` of `count` equal shares of a global batch's rows."""

    index: int = 0
    count: int = 1


WHOLE = Shard()


class Batches:
    """Deterministic batches of (inputs, targets), int64 tensors of shape (rows, context): the
    global batch's rows of `shard` (all of them by default)."""

    def __init__(
        self,
        corpus: Corpus,
        batch: int,
        context: int,
        seed: int,
        device: torch.device,
        shard: Shard = WHOLE,
        longest: int | None = None,
        tokens: int | None = None,
    ) -> None:
        corpus.check(max(context, longest or 0))  # every window the run will cut must fit
        if batch % shard.count:
            raise DataError(f"a batch of {batch} rows cannot be split into {shard.count} equal shares")
        self.corpus, self.batch, self.context, self.seed, self.device = corpus, batch, context, seed, device
        self.shard = shard
        self.tokens = tokens  # `batch N tokens`: N / context rows at each context

    def rows(self, context: int) -> int:
        """The global batch's rows at `context`."""
        return self.tokens // context if self.tokens is not None else self.batch

    def _windows(
        self, data: Tokens, rng: np.random.Generator, shard: Shard | None, context: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shard, context = shard or self.shard, context or self.context
        count = self.rows(context)
        starts = rng.integers(0, len(data) - context - 1, size=count)  # the global batch
        share = count // shard.count
        starts = starts[shard.index * share : (shard.index + 1) * share]
        rows = np.stack([np.asarray(data[s : s + context + 1], dtype=np.int64) for s in starts])
        tokens = torch.from_numpy(rows)
        if self.device.type == "cuda":
            tokens = tokens.pin_memory().to(self.device, non_blocking=True)
        return tokens[:, :-1], tokens[:, 1:]

    def first_row(self, shard: Shard | None = None, context: int | None = None) -> int:
        """The index in the global batch (at `context`) of the first row of this rank's share (or `shard`'s)."""
        shard = shard or self.shard
        return shard.index * (self.rows(context or self.context) // shard.count)

    def train(
        self, step: int, micro: int = 0, shard: Shard | None = None, context: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of mainline step `step`, micro-step `micro`: this rank's share, or `shard`'s;
        windows of `context` tokens (the model's now: a context growth lengthens them)."""
        # the 0 stands where a rank once was: it keeps every single-process run's batches as they were
        return self._windows(self.corpus.train, np.random.default_rng([self.seed, step, 0, micro]), shard, context)

    def val(
        self, index: int, shard: Shard | None = None, context: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation batch `index` (this rank's share, or `shard`'s) at `context`: the same text at
        every evaluation of one context."""
        rng = np.random.default_rng([self.seed, VAL_SALT, index])
        return self._windows(self.corpus.val, rng, shard, context)
