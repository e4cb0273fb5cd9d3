"""What a family's blocks differ by, beyond their sizes: litgpt's `Config` knobs, one frozen value.

A model is a stack of the same block; the families people grow differ in a short list of choices,
each a field here, read by the one model (`lagdsl.model.gpt`) without asking which family it is:

- `norm`: RMSNorm (`rms`: Llama, Qwen, Gemma, OLMo 2, Phi-3) or LayerNorm with a bias (`layer`:
  GPT-2, GPT-NeoX); `norm_offset`: each RMSNorm's gain is `1 + weight` (Gemma's), the weight held
  as the checkpoint holds it (so a kept layer is its tensors bit for bit), and the operators that
  set or scale gains do so to `1 + weight`.
- `pre_norm` / `post_norm`: a norm before each sublayer (Llama), after it before the residual add
  (OLMo 2 alone), or both (Gemma 2 and 3's "sandwich").
- `parallel`: attention and MLP read the same input and both add to the stream (GPT-NeoX).
- `qk_norm_whole`: the q/k RMSNorm is over the whole projection (OLMo 2), not each head (Qwen3,
  Gemma 3); whether there is one at all is the model's `qk_norm`.
- `rotary`: the share of each head that rotates (partial rotary: GPT-NeoX, Phi); the rest passes;
  0 with learned positions (GPT-2).
- `positions`: rows of a learned absolute position table added to the embedding (GPT-2); 0: none.
- `o_bias`, `mlp_bias`: biases on the attention's output projection and on the MLP's projections
  (GPT-2, GPT-NeoX; q/k/v biases are the model's `qkv_bias`).
- `embed_scale`: the embedding times sqrt(width), rounded to the weights' dtype (Gemma).
- `attn_softcap`, `final_softcap`: `c tanh(x / c)` of the attention scores and of the logits (Gemma 2).
- `attn_scale`: attention scores times `attn_scale ** -0.5` (Gemma's `query_pre_attn_scalar`);
  None: the head size's.
- `window`, `local`, `local_theta`: the layers (`local`, from 0) that attend to the last `window`
  positions only, and their rotary base (Gemma 3's `rope_local_base_freq`; None: the model's).

The default is the `gpt` model from scratch and every Llama-shaped family: pre-norm RMSNorm, whole
rotary, no biases beyond q/k/v, no scales or caps, full attention. No torch here: the checker reads
a checkpoint's style from its `config.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from lagdsl.lang import layers
from lagdsl.lang.layers import Layer


@dataclass(frozen=True)
class Style:
    norm: Literal["rms", "layer"] = "rms"
    norm_offset: bool = False
    pre_norm: bool = True
    post_norm: bool = False
    parallel: bool = False
    qk_norm_whole: bool = False
    rotary: float = 1.0
    positions: int = 0
    o_bias: bool = False
    mlp_bias: bool = False
    embed_scale: bool = False
    attn_softcap: float | None = None
    final_softcap: float | None = None
    attn_scale: float | None = None
    window: int | None = None
    local: tuple[int, ...] = ()
    local_theta: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "local", tuple(sorted(set(self.local))))  # (a list, read back from JSON)
        if not (self.pre_norm or self.post_norm):
            raise ValueError("a block needs a norm before or after its sublayers")
        if self.parallel and self.post_norm:
            raise ValueError("a parallel block has no norm after its sublayers")
        if not 0.0 <= self.rotary <= 1.0 or (self.rotary == 0.0 and not self.positions):
            raise ValueError(f"the rotary share {self.rotary} is not in (0, 1] (0: learned positions alone)")
        if self.local and self.window is None:
            raise ValueError("local layers need a window")

    def rotary_size(self, head_size: int) -> int:
        """How many of a head's dimensions rotate (transformers' `int(head_dim * factor)`)."""
        return int(head_size * self.rotary)

    def slides(self, i: int) -> bool:
        """Whether layer `i` attends within the window."""
        return i in self.local

    def restacked(self, plan: list[Layer]) -> Style:
        """The style of a model a depth growth's layer plan builds: each layer attends as its source
        (a copy as the layer it copies, a fresh one as the layer below it: `layers.carried`)."""
        if not self.local:
            return self
        return replace(self, local=layers.carried(plan, self.local))

    def inexact_width(self, operator: str, qk_norm: bool) -> str | None:
        """Why a width operator that keeps a Llama's function keeps this model's only approximately
        (None: it keeps it). HyperCloning copies every unit whole, so every norm sees the same mean
        and the same mean square: it keeps every style's."""
        if operator == "hyperclone":
            return None
        if self.norm == "layer":
            return "LayerNorm subtracts the mean over the width, and the new units change that mean"
        if qk_norm and self.qk_norm_whole:
            return "the q/k norm over the whole projection averages over the heads, and the new heads change that"
        return None

    @property
    def norm_params(self) -> int:
        """Parameters per norm, per unit of width: a gain, and a bias for LayerNorm."""
        return 2 if self.norm == "layer" else 1

    @property
    def block_norms(self) -> int:
        """Norms per block: one before each of the two sublayers, one after each, or both."""
        return 2 * (int(self.pre_norm) + int(self.post_norm))


DEFAULT = Style()
