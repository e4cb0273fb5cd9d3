"""Hugging Face checkpoints in and out: a family's folder read into the model, and the model
written back as a folder of the same family (`lagdsl.families` says how each family names things).

In: the model is built on the meta device, its memory allocated once (`to_empty`), and every
tensor is read from the safetensors files (one file, or the shards an index names) straight into
the rows of the parameter it belongs to, one tensor at a time, with `readinto` at the offset the
file's header gives: no second copy of the model, and no mapped file pages counted against the
process either (a tensor stored in another dtype passes through a buffer of its own size). Out:
each parameter is split back into the family's tensors, contiguous, in the export's dtype.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from lagdsl.families import INDEX_FILE, WEIGHTS_FILE, Arch, Family
from lagdsl.lang.schedule import MixtureSpec
from lagdsl.model.config import GPTConfig, Mixture
from lagdsl.model.gpt import GPT

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
        moe=Mixture(**arch.moe.model_dump()) if arch.moe is not None else None, mlp=arch.mlp, style=arch.style,
    )  # fmt: skip


def arch_of(config: GPTConfig) -> Arch:
    """The architecture of a model config, as a family's adapter reads and writes it."""
    return Arch(
        vocab=config.vocab, context=config.context, width=config.width, depth=config.depth,
        heads=config.heads, kv_heads=config.key_value_heads, head_dim=config.head_size, hidden=config.hidden,
        tie=config.tie, rope_theta=config.rope_theta, rope_scaling=config.rope_scaling, qkv_bias=config.qkv_bias,
        qk_norm=config.qk_norm, norm_eps=config.norm_eps,
        moe=MixtureSpec(**asdict(config.moe)) if config.moe is not None else None, mlp=config.mlp,
        style=config.style,
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
        except RecursionError:
            raise HubError(f"`{index}` is not a safetensors index: it is nested too deep") from None
    single = folder / WEIGHTS_FILE
    if single.is_file():
        return dict.fromkeys(_header(single)[0], single)
    raise HubError(
        f"`{folder}` has no `{WEIGHTS_FILE}` or `{INDEX_FILE}` (lagdsl reads safetensors, never pickles: "
        "save the model with `save_pretrained(..., safe_serialization=True)`)"
    )


def family_files(folder: Path, family: Family) -> tuple[dict[str, Path], dict[str, str]]:
    """`weight_files` keyed by the family's names, and the name each is stored under where they
    differ: a checkpoint saved from the family's base model (GPT-2's on the Hub: `wte.weight`, not
    `transformer.wte.weight`) names its tensors without the base model's prefix, which transformers
    adds as it loads them."""
    files = weight_files(folder)
    prefix = family.base_prefix
    if any(name.startswith(prefix) for name in files):
        return files, {}
    return {prefix + name: path for name, path in files.items()}, {prefix + name: name for name in files}


def load_pretrained(folder: Path, family: Family, config: GPTConfig, dtype: torch.dtype = torch.float32) -> GPT:
    """The model of the checkpoint in `folder` (whose architecture `config` describes, at any
    context up to the checkpoint's), on the CPU in `dtype`."""
    model = GPT.empty(config, "cpu", dtype)  # every tensor is read below
    read_weights(folder, family, config, {name: Rows(param, 0) for name, param in model.named_parameters()})
    return model


@dataclass(frozen=True)
class Rows:
    """Where a parameter's values go: `tensor` holds its rows `first`, `first + 1`, ... (the whole
    parameter from row 0, or a rank's shard of a sharded one)."""

    tensor: torch.Tensor
    first: int


def read_weights(folder: Path, family: Family, config: GPTConfig, targets: Mapping[str, Rows]) -> None:
    """Every parameter of a model of shape `config` read from the checkpoint in `folder` into its
    `targets` rows, each family tensor's part of them straight from the file (one tensor at a
    time; a rank's shard reads its rows alone)."""
    arch = arch_of(config)
    files, stored = family_files(folder, family)
    fused = is_fused(files, family)
    expected = _expected(config, family, fused)
    with _Reader(files, stored) as reader, torch.no_grad():
        for ours, theirs in family.tensor_map(arch, parameter_names(config), fused).items():
            target = targets[ours]
            for name in theirs:
                if reader.shape(name) != expected[name]:
                    raise HubError(
                        f"tensor `{name}` in `{files[name].name}` is {list(reader.shape(name))}, but the model "
                        f"`config.json` describes has it {list(expected[name])}"
                    )
            transform = family.transform(ours)
            if transform is not None:  # stored in another layout: read whole, then its rows taken
                parts = [torch.empty(expected[name], dtype=target.tensor.dtype) for name in theirs]
                for name, part in zip(theirs, parts, strict=True):
                    reader.read_into(name, part)
                whole = transform.inward(torch.cat(parts) if len(parts) > 1 else parts[0], arch)
                target.tensor.copy_(whole[target.first : target.first + target.tensor.shape[0]])
                continue
            if target.tensor.dim() == 3 and len(theirs) > 1:  # a mixture's experts, named apart: as rows
                target = Rows(target.tensor.reshape(-1, target.tensor.shape[-1]), target.first * target.tensor.shape[1])
            first, last = target.first, target.first + target.tensor.shape[0]  # the rows this target holds
            row = 0
            for name in theirs:
                shape = reader.shape(name)
                low, high = max(row, first), min(row + shape[0], last)
                if low < high:
                    reader.read_into(name, target.tensor[low - first : high - first], low - row)
                row += shape[0]
        if arch.tie and HEAD in files:
            _check_tied_head(reader, files[HEAD], targets["embed.weight"], expected[family.tensors["embed.weight"][0]])


@cache
def parameter_names(config: GPTConfig) -> frozenset[str]:
    """The names of the parameters of a model of `config` (a tied head's too), from a model on the
    meta device, built once per config (a read and an export ask several times)."""
    with torch.device("meta"):
        return frozenset(GPT(config).state_dict())


def is_fused(files: Mapping[str, Path], family: Family) -> bool:
    """Whether a mixture-of-experts checkpoint holds its experts fused (transformers 5's in-memory
    names) rather than named apart (transformers 4's, and what `save_pretrained` writes)."""
    return family.experts is not None and "model.layers.0.mlp.experts.gate_up_proj" in files


def _expected(config: GPTConfig, family: Family, fused: bool = False) -> dict[str, tuple[int, ...]]:
    """Each of the family's tensors' shape in the model `config.json` describes: checked one by one,
    not by the rows a stack of them adds up to (q 80 / k 16 / v 32 rows summing to 128 passed)."""
    with torch.device("meta"):
        skeleton = GPT(config)
    return {name: tuple(part.shape) for name, part in family_parts(skeleton.state_dict(), config, family, fused)}


def check_weights(folder: Path, family: Family, config: GPTConfig) -> None:
    """The checkpoint in `folder` can be read as a model of shape `config`: every tensor it needs
    present in a whole file (the headers validated: names, shapes, offsets, sizes) in a dtype lagdsl
    reads, checked from the headers alone, no weight read (a run checks this before it writes)."""
    files, stored = family_files(folder, family)
    with _Reader(files, stored) as reader:
        for name, want in _expected(config, family, is_fused(files, family)).items():
            path, (code, shape, _, _) = reader._entry(name)
            if shape != want:
                raise HubError(
                    f"tensor `{name}` in `{path.name}` is {list(shape)}, but the model `config.json` describes "
                    f"has it {list(want)}"
                )
            if code not in SAFETENSORS_DTYPES:
                raise HubError(f"tensor `{name}` in `{path}` is {code}: lagdsl reads {', '.join(SAFETENSORS_DTYPES)}")


#: the output head's name in every family lagdsl reads
HEAD = "lm_head.weight"


def _check_tied_head(reader: _Reader, path: Path, embed: Rows, shape: tuple[int, ...]) -> None:
    """A checkpoint whose config ties the head to the embedding but whose file also holds a head:
    the same values (some tools save both) are the tied model; other values are refused, since
    transformers 4 ties them (dropping the head) and transformers 5 keeps the head, two models."""
    if reader.shape(HEAD) != shape:
        raise HubError(f"tensor `{HEAD}` in `{path.name}` is {list(reader.shape(HEAD))}, the embedding {list(shape)}")
    head = torch.empty_like(embed.tensor)
    reader.read_into(HEAD, head, embed.first)
    if not torch.equal(head, embed.tensor):
        raise HubError(
            f"`tie_word_embeddings` is true in `config.json`, but `{path.name}` holds a `{HEAD}` that differs "
            "from the embedding (transformers 4 ties them, 5 keeps the head): set `tie_word_embeddings` to "
            f"false to keep the head, or remove `{HEAD}` from the file to tie"
        )


#: safetensors' dtype codes that a checkpoint's floating-point tensors use
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
#: (dtype code, shape, start, end) of each tensor; the data's offset in the file
Entries = dict[str, tuple[str, tuple[int, ...], int, int]]


#: bytes per element of every dtype the safetensors format names
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"the tensor `{twice}` is named twice")
    return dict(pairs)


def _header(path: Path) -> tuple[Entries, int]:
    """A safetensors file's table of tensors (the format: a little-endian u64 length, that many
    bytes of JSON, then the data) and where its data begins, validated as the safetensors library
    validates it: no name twice, every dtype known, each tensor's bytes its shape's, the tensors'
    bytes back to back from the data's start to the file's end (no overlap, no gap, no byte outside)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= min(100_000_000, size - 8):
                raise ValueError(f"a header of {length} bytes in a file of {size}")
            table = json.loads(handle.read(length), object_pairs_hook=_unique_keys)
        if not isinstance(table, dict):
            raise ValueError("the header is not a JSON object")
        entries: Entries = {}
        for name, entry in table.items():
            if name == "__metadata__":
                continue
            code, shape = str(entry["dtype"]), entry["shape"]
            start, end = entry["data_offsets"]
            if code not in DTYPE_SIZES:
                raise ValueError(f"tensor `{name}` has the unknown dtype `{code}`")
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in [*shape, start, end]):
                raise ValueError(f"tensor `{name}` has a shape or offsets that are not counts")
            if end - start != math.prod(shape) * DTYPE_SIZES[code]:
                raise ValueError(f"tensor `{name}` has {end - start} bytes for {shape} {code}")
            entries[name] = (code, tuple(shape), start, end)
        at = 0
        for name, (_, _, start, end) in sorted(entries.items(), key=lambda item: (item[1][2], item[1][3])):
            if start != at:
                raise ValueError(f"tensor `{name}` starts at byte {start} of the data, not {at} (overlap or gap)")
            at = end
        held = size - 8 - length
        if at > held:
            raise ValueError(f"the file is truncated: its tensors take {at} bytes, it holds {held} after the header")
        if at < held:
            raise ValueError(f"it holds {held} bytes after the header, its tensors take {at}")
        return entries, 8 + length
    except RecursionError:
        raise HubError(f"`{path}` cannot be read as safetensors: its header is nested too deep") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise HubError(f"`{path}` cannot be read as safetensors: {error}") from None


class _Reader:
    """Tensors by name from safetensors files, each file's header read once, each tensor read
    from disk into the place it belongs (`read_into`)."""

    def __init__(self, files: Mapping[str, Path], stored: Mapping[str, str] | None = None) -> None:
        self.files = files
        self.stored = stored or {}  # a tensor's name in its file, where it is not the name asked
        self.stack = ExitStack()
        self.opened: dict[Path, tuple[Any, Entries, int]] = {}

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.opened.clear()
        self.stack.close()

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name)[1][1]

    def _entry(self, name: str) -> tuple[Path, tuple[str, tuple[int, ...], int, int]]:
        path = self.files.get(name)
        if path is None:
            folder = next(iter(self.files.values())).parent if self.files else "the folder"
            raise HubError(f"the checkpoint in `{folder}` has no tensor `{name}`")
        if path not in self.opened:
            entries, base = _header(path)
            self.opened[path] = (self.stack.enter_context(path.open("rb")), entries, base)
        entries = self.opened[path][1]
        key = self.stored.get(name, name)
        if key not in entries:
            raise HubError(f"`{path}` has no tensor `{key}`, which the index places there")
        return path, entries[key]

    def read_into(self, name: str, target: torch.Tensor, first: int = 0) -> None:
        """Rows `first`, ... of tensor `name` into `target` (contiguous, of their shape), converted
        to `target`'s dtype."""
        path, (code, shape, start, end) = self._entry(name)
        dtype = SAFETENSORS_DTYPES.get(code)
        if dtype is None:
            raise HubError(f"tensor `{name}` in `{path}` is {code}: lagdsl reads {', '.join(SAFETENSORS_DTYPES)}")
        if end - start != math.prod(shape) * dtype.itemsize:
            raise HubError(f"tensor `{name}` in `{path}` has {end - start} bytes for {shape} {code}: damaged")
        handle, _, base = self.opened[path]
        buffer = target if target.dtype == dtype else torch.empty(target.shape, dtype=dtype)
        view = buffer.reshape(-1).view(torch.uint8).numpy().data
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        handle.seek(base + start + first * row_bytes)
        if handle.readinto(view) != len(view):
            raise HubError(f"`{path}` ends inside tensor `{name}`: the file is truncated")
        if buffer is not target:
            target.copy_(buffer)


def family_tensors(
    state: Mapping[str, torch.Tensor], config: GPTConfig, family: Family, dtype: torch.dtype
) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's tensors under the family's names, contiguous, in `dtype`, on the CPU, one at a
    time (each of `state`'s tensors read once, in turn). A tied output head is left out (as
    `transformers` saves tied models); a mixture's experts are named apart, as transformers saves
    them, with the zero-size shared expert of a family that always has one."""
    for name, part in family_parts(state, config, family, complete=True):
        yield name, part.detach().to("cpu", dtype).contiguous()


def family_parts(
    state: Mapping[str, torch.Tensor], config: GPTConfig, family: Family, fused: bool = False, complete: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """`family_tensors` as they are (views of `state`'s tensors, on their device: a state on the
    meta device gives the family's names and shapes alone); a mixture's experts fused (`fused`) or
    named apart; `complete`: with the tensors a family needs that the model has none of."""
    arch = arch_of(config)
    size = config.head_size
    splits = {
        "attn.qkv": [config.heads * size, config.key_value_heads * size, config.key_value_heads * size],
        "shared.gate_up": [config.moe.shared] * 2 if config.moe is not None else [],
        "mlp.gate_up": [config.hidden, config.hidden],
    }
    for ours, theirs in family.tensor_map(arch, parameter_names(config), fused).items():
        if ours not in state:
            raise HubError(f"the saved model has no tensor `{ours}`: not a model of this version")
        tensor = state[ours]
        transform = family.transform(ours)
        if transform is not None:
            tensor = transform.outward(tensor, arch)
        parts = [tensor]
        if tensor.dim() == 3 and len(theirs) > 1:  # a mixture's experts, each apart (gate and up split)
            parts = [p for expert in tensor for p in (expert.chunk(2) if ours.endswith("gate_up") else (expert,))]
        elif len(theirs) > 1:
            key = next(k for k in splits if f".{k}." in ours)
            parts = list(tensor.split(splits[key]))
        yield from zip(theirs, parts, strict=True)
        del tensor, parts  # a lazy state's tensor goes before the next is read
    if complete:
        for name, shape in family.absent_shared(arch):
            yield name, torch.zeros(shape, device=state["embed.weight"].device)


def family_config(config: GPTConfig, family: Family, source: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """The family's `config.json` for `config`, rewritten from the `source` checkpoint's."""
    return family.config(source, arch_of(config), TORCH_NAMES[dtype])
