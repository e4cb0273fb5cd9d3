"""A trained model out of lagdsl: a Hugging Face `LlamaForCausalLM` folder.

The `gpt` family with `mlp=swiglu` is LLaMA exactly (pre-norm RMSNorm, rotary embeddings on each
head's halves with base 10,000, SwiGLU, no biases, tied embeddings), so the export renames and
splits tensors and nothing else: `qkv` becomes `q_proj`, `k_proj`, `v_proj`, and `gate_up` becomes
`gate_proj`, `up_proj`. The folder holds `config.json`, `generation_config.json`,
`model.safetensors` (never a pickle) and the tokenizer (`tokenizer.json` with its
`tokenizer_config.json`); `transformers` is needed to load it, not to write it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lagdsl.model.gpt import GPTConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_TORCH_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
ROPE_THETA = 10_000.0  # `rotary_tables`' base


class ExportError(Exception):
    """A model that cannot be exported; the message is one line for the user."""


def llama_config(config: GPTConfig, dtype: torch.dtype, tokens: Mapping[str, int | None]) -> dict[str, Any]:
    """`config.json` for `LlamaForCausalLM` with `config`'s sizes. `tokens`: the special token ids
    (`bos_token_id`, `eos_token_id`, `pad_token_id`; None where the tokenizer has none)."""
    if config.mlp != "swiglu":
        raise ExportError(
            f"a model with `mlp={config.mlp}` has no LLaMA equivalent (LLaMA's MLP is SwiGLU): "
            "only `mlp=swiglu` models export to Hugging Face"
        )
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab,
        "hidden_size": config.width,
        "intermediate_size": config.hidden,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.heads,
        "num_key_value_heads": config.heads,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": config.context,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": ROPE_THETA,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": True,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": _TORCH_NAMES[dtype],
        "dtype": _TORCH_NAMES[dtype],
        **tokens,
    }


def llama_weights(state: Mapping[str, torch.Tensor], config: GPTConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's tensors under `LlamaForCausalLM`'s names, contiguous, in `dtype`. The output
    projection is tied to the embedding, so (as `transformers` saves tied models) it is left out."""
    width, hidden = config.width, config.hidden

    def get(name: str) -> torch.Tensor:
        try:
            return state[name]
        except KeyError:
            raise ExportError(f"the saved model has no tensor `{name}`: not a `gpt` model of this version") from None

    out = {"model.embed_tokens.weight": get("embed.weight"), "model.norm.weight": get("norm.weight")}
    for i in range(config.depth):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = get(ours + "attn.qkv.weight").split(width)
        gate, up = get(ours + "mlp.gate_up.weight").split(hidden)
        out.update({
            theirs + "input_layernorm.weight": get(ours + "norm1.weight"),
            theirs + "self_attn.q_proj.weight": q,
            theirs + "self_attn.k_proj.weight": k,
            theirs + "self_attn.v_proj.weight": v,
            theirs + "self_attn.o_proj.weight": get(ours + "attn.o.weight"),
            theirs + "post_attention_layernorm.weight": get(ours + "norm2.weight"),
            theirs + "mlp.gate_proj.weight": gate,
            theirs + "mlp.up_proj.weight": up,
            theirs + "mlp.down_proj.weight": get(ours + "mlp.down.weight"),
        })  # fmt: skip
    return {name: tensor.detach().to("cpu", dtype).contiguous() for name, tensor in out.items()}


def export_model(
    state: Mapping[str, torch.Tensor],
    config: GPTConfig,
    tokenizer_json: str,
    out: Path,
    dtype: str = "fp32",
    special: Mapping[str, int | None] | None = None,
) -> list[Path]:
    """Write the Hugging Face folder `out`; the files written. `tokenizer_json`: the text of the
    run's `tokenizer.json`; `special`: its special token ids (see `lagdsl.tokenizer.special_ids`)."""
    from safetensors.torch import save_file

    torch_dtype = DTYPES[dtype]
    tokens = dict(special or {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None})
    config_json = llama_config(config, torch_dtype, tokens)
    weights = llama_weights(state, config, torch_dtype)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": config_json,
        "generation_config.json": {k: v for k, v in tokens.items() if v is not None},
        "tokenizer_config.json": _tokenizer_config(tokenizer_json, tokens, config.context),
    }
    written = []
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        written.append(out / name)
    (out / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return [*written, out / "tokenizer.json", out / "model.safetensors"]


def _tokenizer_config(tokenizer_json: str, tokens: Mapping[str, int | None], context: int) -> dict[str, Any]:
    """`tokenizer_config.json`: a fast tokenizer read from `tokenizer.json`, its special tokens named."""
    added = {t["id"]: t["content"] for t in json.loads(tokenizer_json).get("added_tokens", [])}
    names = {"bos_token_id": "bos_token", "eos_token_id": "eos_token", "pad_token_id": "pad_token"}
    special = {names[k]: added[v] for k, v in tokens.items() if v is not None and v in added}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context,
        "clean_up_tokenization_spaces": False,
        **special,
    }
