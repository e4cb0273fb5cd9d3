"""Hugging Face checkpoints in and out: a family's folder read into the model, and the model
written back as a folder of the same family (`lagdsl.families` says how each family names things).

In: the model is built on the meta device, its memory allocated once (`to_empty`), and every
tensor is read from the memory-mapped safetensors files (one file, or the shards an index names)
straight into the rows of the parameter it belongs to, one tensor at a time: the process never
holds a second copy of the model. Out: each parameter is split back into the family's tensors,
contiguous, in the export's dtype.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from lagdsl.families import INDEX_FILE, WEIGHTS_FILE, Arch, Family
from lagdsl.model.gpt import GPT, GPTConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TORCH_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class HubError(Exception):
    """A checkpoint that cannot be read or written; the message is one line for the user."""


def config_of(arch: Arch, *, context: int | None = None) -> GPTConfig:
    """The model config of a checkpoint's architecture (at `context`, default the checkpoint's)."""
    return GPTConfig(
        vocab=arch.vocab, context=context or arch.context, width=arch.width, heads=arch.heads, depth=arch.depth,
        norm_eps=arch.norm_eps, kv_heads=arch.kv_heads, head_dim=arch.head_dim, ffn=arch.hidden, tie=arch.tie,
        rope_theta=arch.rope_theta, rope_scaling=arch.rope_scaling, qkv_bias=arch.qkv_bias, qk_norm=arch.qk_norm,
    )  # fmt: skip


def arch_of(config: GPTConfig) -> Arch:
    """The architecture of a model config, as a family's adapter reads and writes it."""
    if config.mlp != "swiglu":
        raise HubError(
            f"a model with `mlp={config.mlp}` has no LLaMA equivalent (LLaMA's MLP is SwiGLU): "
            "only `mlp=swiglu` models export to Hugging Face"
        )
    return Arch(
        vocab=config.vocab, context=config.context, width=config.width, depth=config.depth,
        heads=config.heads, kv_heads=config.key_value_heads, head_dim=config.head_size, hidden=config.hidden,
        tie=config.tie, rope_theta=config.rope_theta, rope_scaling=config.rope_scaling, qkv_bias=config.qkv_bias,
        qk_norm=config.qk_norm, norm_eps=config.norm_eps,
    )  # fmt: skip


def weight_files(folder: Path) -> dict[str, Path]:
    """Each tensor's file: from `model.safetensors.index.json`, else every tensor of `model.safetensors`."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return {name: folder / file for name, file in weight_map.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise HubError(f"`{index}` is not a safetensors index: {error}") from None
    single = folder / WEIGHTS_FILE
    if single.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(single), framework="pt") as handle:
                return dict.fromkeys(handle.keys(), single)
        except Exception as error:  # safetensors raises its own error types
            raise HubError(f"`{single}` is not a safetensors file: {error}") from None
    raise HubError(
        f"`{folder}` has no `{WEIGHTS_FILE}` or `{INDEX_FILE}` (lagdsl reads safetensors, never pickles: "
        "save the model with `save_pretrained(..., safe_serialization=True)`)"
    )


def load_pretrained(folder: Path, family: Family, config: GPTConfig, dtype: torch.dtype = torch.float32) -> GPT:
    """The model of the checkpoint in `folder` (whose architecture `config` describes, at any
    context up to the checkpoint's), on the CPU in `dtype`."""
    arch = arch_of(config)
    with torch.device("meta"):
        model = GPT(config)
    model.to_empty(device="cpu")  # memory, uninitialized: every tensor is read below
    if config.tie:  # `to_empty` gives each module a tensor of its own: tie them again
        model.lm_head.weight = model.embed.weight
    model.to(dtype)
    model.init_buffers()
    files = weight_files(folder)
    params = dict(model.named_parameters())
    with _Reader(files) as read, torch.no_grad():
        for ours, theirs in family.tensor_map(arch).items():
            target = params[ours]
            row = 0
            for name in theirs:
                tensor = read(name)
                rows = tensor.shape[0]
                if row + rows > target.shape[0] or tuple(tensor.shape[1:]) != tuple(target.shape[1:]):
                    raise HubError(
                        f"tensor `{name}` in `{files[name].name}` is {tuple(tensor.shape)}, "
                        f"which does not fit `{ours}` {tuple(target.shape)} of the model `config.json` describes"
                    )
                target[row : row + rows].copy_(tensor)
                row += rows
            if row != target.shape[0]:
                raise HubError(f"the tensors {', '.join(theirs)} have {row} rows, `{ours}` needs {target.shape[0]}")
    return model


class _Reader:
    """Tensors by name from safetensors files, each file opened once (memory-mapped)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = files
        self.stack = ExitStack()
        self.handles: dict[Path, Any] = {}

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handles.clear()
        self.stack.close()

    def __call__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        path = self.files.get(name)
        if path is None:
            folder = next(iter(self.files.values())).parent if self.files else "the folder"
            raise HubError(f"the checkpoint in `{folder}` has no tensor `{name}`")
        if path not in self.handles:
            try:
                self.handles[path] = self.stack.enter_context(safe_open(str(path), framework="pt"))
            except Exception as error:  # a missing shard, a damaged header
                raise HubError(f"`{path}` cannot be read as safetensors: {error}") from None
        try:
            return self.handles[path].get_tensor(name)
        except Exception as error:
            raise HubError(f"tensor `{name}` cannot be read from `{path}`: {error}") from None


def family_tensors(
    state: Mapping[str, torch.Tensor], config: GPTConfig, family: Family, dtype: torch.dtype
) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's tensors under the family's names, contiguous, in `dtype`, one at a time. A tied
    output head is left out (as `transformers` saves tied models)."""
    arch = arch_of(config)
    size = config.head_size
    splits = {
        "attn.qkv": [config.heads * size, config.key_value_heads * size, config.key_value_heads * size],
        "mlp.gate_up": [config.hidden, config.hidden],
    }
    for ours, theirs in family.tensor_map(arch).items():
        if ours not in state:
            raise HubError(f"the saved model has no tensor `{ours}`: not a model of this version")
        tensor = state[ours]
        parts = [tensor]
        if len(theirs) > 1:
            key = next(k for k in splits if f".{k}." in ours)
            parts = list(tensor.split(splits[key]))
        for name, part in zip(theirs, parts, strict=True):
            yield name, part.detach().to("cpu", dtype).contiguous()


def family_config(config: GPTConfig, family: Family, source: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """The family's `config.json` for `config`, rewritten from the `source` checkpoint's."""
    return family.config(source, arch_of(config), TORCH_NAMES[dtype])
