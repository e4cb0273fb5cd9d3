"""The `gpt` family's sizes, as the model is built: the one place both the cost model and the
torch model read them from, so the plan's parameter counts are the model's (a test checks).

A `gpt` model of width w, depth d, vocabulary V is:

- a token embedding V x w, tied to the output head (counted once);
- per block: two RMSNorm gains (2w); attention projections q, k, v, o without biases (4 w^2);
  an MLP without biases: SwiGLU has three w x h matrices, GELU two;
- a final RMSNorm gain (w). Rotary position embeddings have no parameters.

The MLP's hidden size h is 4w for GELU and 8w/3 rounded up to a multiple of 8 for SwiGLU (the
same parameter count as GELU's 4w, as in LLaMA).
"""

from __future__ import annotations

from dataclasses import dataclass

MLP_MULTIPLE = 8


def mlp_hidden(width: int, mlp: str) -> int:
    """The MLP's hidden size for a model of this width."""
    if mlp == "gelu":
        return 4 * width
    return -(-8 * width // (3 * MLP_MULTIPLE)) * MLP_MULTIPLE


@dataclass(frozen=True, slots=True)
class ParamCount:
    embedding: int
    per_block: int
    depth: int
    final_norm: int

    @property
    def non_embedding(self) -> int:
        return self.per_block * self.depth + self.final_norm

    @property
    def total(self) -> int:
        return self.embedding + self.non_embedding


def param_count(*, vocab: int, width: int, depth: int, mlp: str) -> ParamCount:
    """Exact trainable parameter counts of a `gpt` model (embeddings tied)."""
    hidden = mlp_hidden(width, mlp)
    matrices = 3 if mlp == "swiglu" else 2
    per_block = 2 * width + 4 * width * width + matrices * width * hidden
    return ParamCount(embedding=vocab * width, per_block=per_block, depth=depth, final_norm=width)
