"""A trained model out of lagdsl: a Hugging Face folder of its family.

A model lagdsl began from scratch is LLaMA exactly (pre-norm RMSNorm, rotary embeddings on each
head's halves, SwiGLU), so it goes out as `LlamaForCausalLM`; a model grown from a pretrained
checkpoint goes out as the checkpoint's own family, its `config.json` rewritten where the growth
changed it and kept elsewhere (`lagdsl.families`). The export renames and splits tensors and
nothing else: `qkv` becomes `q_proj`, `k_proj`, `v_proj` (and their biases), `gate_up` becomes
`gate_proj`, `up_proj`. The folder holds `config.json`, `generation_config.json`,
`model.safetensors` (never a pickle) and the tokenizer; `transformers` is needed to load it, not
to write it.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from lagdsl.families import Family, FamilyError, family_named, mixture_family
from lagdsl.families.rope import rope_keys
from lagdsl.model.config import GPTConfig
from lagdsl.model.hub import DTYPES, TORCH_NAMES, HubError, arch_of, family_config, family_parts, family_tensors


class ExportError(Exception):
    """A model that cannot be exported; the message is one line for the user."""


#: The source folder's files that travel with an export of a model grown from it (besides weights
#: and config): its tokenizer, as it came.
SOURCE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
#: the file by which an export records itself in the folder it writes: a folder with it (and only
#: an export's files) is an earlier export, which `export` replaces; any other folder of weights,
#: a Hugging Face checkpoint's above all, it replaces only under `--force`
EXPORT_RECORD = "lagdsl-export.json"
#: every file an export writes
EXPORT_FILES = frozenset({"config.json", "model.safetensors", EXPORT_RECORD, *SOURCE_FILES})


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an earlier export and nothing else (the record says it is one)."""
    files = list(folder.iterdir())
    return (folder / EXPORT_RECORD).is_file() and all(p.is_file() and p.name in EXPORT_FILES for p in files)


def record_export(folder: Path, run_dir: Path, source: str) -> None:
    """The export's record in `folder`: which run and model it was written from, by which lagdsl."""
    from lagdsl import __version__

    record = {"lagdsl": __version__, "run": str(run_dir.resolve()), "model": source}
    (folder / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def llama_config(config: GPTConfig, dtype: torch.dtype, tokens: Mapping[str, int | None]) -> dict[str, Any]:
    """`config.json` for `LlamaForCausalLM` with `config`'s sizes: the source every export of a
    model from scratch is rewritten from. `tokens`: the special token ids (`bos_token_id`,
    `eos_token_id`, `pad_token_id`; None where the tokenizer has none)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab,
        "hidden_size": config.width,
        "intermediate_size": config.hidden,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.heads,
        "num_key_value_heads": config.key_value_heads,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": config.context,
        "rms_norm_eps": config.norm_eps,
        **rope_keys(config.rope_theta, config.rope_scaling),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": config.tie,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": TORCH_NAMES[dtype],
        "dtype": TORCH_NAMES[dtype],
        **tokens,
    }


def export_model(
    state: Mapping[str, torch.Tensor],
    config: GPTConfig,
    tokenizer_json: str,
    out: Path,
    dtype: str = "fp32",
    special: Mapping[str, int | None] | None = None,
) -> list[Path]:
    """Write the Hugging Face `LlamaForCausalLM` folder `out` of a model from scratch; the files
    written. `tokenizer_json`: the text of the run's `tokenizer.json`; `special`: its special token
    ids (see `lagdsl.text.tokenizer.special_ids`)."""
    torch_dtype = DTYPES[dtype]
    tokens = dict(special or {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None})
    source = llama_config(config, torch_dtype, tokens)
    written = _write_model(state, config, family_named("llama"), source, out, torch_dtype)
    files = {
        "generation_config.json": {k: v for k, v in tokens.items() if v is not None},
        "tokenizer_config.json": _tokenizer_config(tokenizer_json, tokens, config.context),
    }
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        written.append(out / name)
    (out / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    return [*written, out / "tokenizer.json"]


def export_pretrained(
    state: Mapping[str, torch.Tensor],
    config: GPTConfig,
    family: Family,
    source_config: Mapping[str, Any],
    source_files: Path | None,
    out: Path,
    dtype: str = "fp32",
) -> list[Path]:
    """Write the folder `out` of a model grown from a checkpoint of `family` whose `config.json`
    was `source_config`: the same family, every config key the growth changed rewritten, the
    source's tokenizer files (from `source_files`, the run's copy of them) beside it."""
    written = _write_model(state, config, family, source_config, out, DTYPES[dtype])
    if source_files is not None:
        for name in SOURCE_FILES:
            if (source_files / name).is_file():
                shutil.copyfile(source_files / name, out / name)
                written.append(out / name)
    return written


def exported_family(config: GPTConfig, family: Family) -> Family:
    """The family a model of `config` grown from one of `family` goes out as: the same, or where a
    dense model became a mixture of experts its mixture-of-experts sibling (Qwen3 -> Qwen3-MoE,
    Qwen2 -> Qwen2-MoE, Llama and Mistral -> Mixtral); ExportError where that family cannot hold
    the mixture."""
    if config.mlp not in family.mlps:
        name = family.mlps[0]
        raise ExportError(
            f"a model with `mlp={config.mlp}` has no {family.architecture} equivalent (its MLP is {name}): "
            f"only `mlp={name}` models export to it"
        )
    if config.style.norm != family.style.norm:
        raise ExportError(f"a model with `norm={config.style.norm}` has no {family.architecture} equivalent")
    if config.moe is None:
        if family.experts is not None:
            raise ExportError(f"a dense model has no `{family.architecture}` form")
        return family
    try:
        return mixture_family(family, arch_of(config).moe)  # type: ignore[arg-type]
    except FamilyError as error:
        raise ExportError(str(error)) from None


def _write_model(
    state: Mapping[str, torch.Tensor],
    config: GPTConfig,
    family: Family,
    source: Mapping[str, Any],
    out: Path,
    dtype: torch.dtype,
) -> list[Path]:
    family = exported_family(config, family)
    try:
        config_json = family_config(config, family, source, dtype)
        shapes = {name: torch.empty(_shape_of(state, name), device="meta") for name in state}
        layout = [(name, tuple(part.shape)) for name, part in family_parts(shapes, config, family, complete=True)]
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")
        write_safetensors(out / "model.safetensors", layout, family_tensors(state, config, family, dtype), dtype)
    except (HubError, FamilyError) as error:
        raise ExportError(str(error)) from None
    return [out / "config.json", out / "model.safetensors"]


def _shape_of(state: Mapping[str, torch.Tensor], name: str) -> tuple[int, ...]:
    """A tensor's shape, without reading it where `state` can tell (a mapping with `shape(name)`,
    as a sharded final model's `lagdsl.runtime.state.dcp.Tensors` has)."""
    shape = getattr(state, "shape", None)
    return tuple(shape(name)) if callable(shape) else tuple(state[name].shape)


#: safetensors' code of each dtype an export writes
CODES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors(
    path: Path, layout: list[tuple[str, tuple[int, ...]]], tensors: Iterable[tuple[str, torch.Tensor]],
    dtype: torch.dtype,
) -> None:  # fmt: skip
    """A safetensors file written a tensor at a time: the header from `layout` (each tensor's name
    and shape, in the order `tensors` gives them, all of `dtype`), then each tensor's bytes as it
    comes, so the writer holds one tensor, not the model (the `safetensors` library takes them all
    at once). The header is padded with spaces to 8 bytes, as the format asks."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in layout:
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    expected = iter(layout)
    with path.open("wb") as stream:
        stream.write(len(text).to_bytes(8, "little"))
        stream.write(text)
        for name, tensor in tensors:
            if (name, tuple(tensor.shape)) != next(expected, None) or tensor.dtype != dtype:
                raise HubError(f"tensor `{name}` {tuple(tensor.shape)} is not where the header places it")
            stream.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
        if next(expected, None) is not None:
            raise HubError("fewer tensors than the header lists")


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
