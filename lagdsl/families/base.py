"""What every family adapter shares: the architecture a `config.json` describes (`Arch`), the
Llama-shaped reading and writing of configs, and the map between lagdsl's tensor names and a
family's. A family changes only what differs from Llama: a few flags, and hooks where its config
keys do."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lagdsl.lang.arch import param_count

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"


class FamilyError(Exception):
    """A checkpoint lagdsl cannot read; the message is one line for the user, `key` the config key
    it is about (None: the folder or file)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Arch:
    """A checkpoint's architecture in the model's terms (`lagdsl.model.config.GPTConfig`'s fields)."""

    vocab: int
    context: int
    width: int
    depth: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    tie: bool
    rope_theta: float
    rope_scaling: tuple[float, float, float, int] | None
    qkv_bias: bool
    qk_norm: bool
    norm_eps: float
    window: int | None = None  # a sliding window over the whole model, or None

    @property
    def params(self) -> int:
        return param_count(
            vocab=self.vocab, width=self.width, depth=self.depth, mlp="swiglu", heads=self.heads,
            kv_heads=self.kv_heads, head_dim=self.head_dim, hidden=self.hidden, tie=self.tie,
            qkv_bias=self.qkv_bias, qk_norm=self.qk_norm,
        ).total  # fmt: skip


def read_config(folder: Path) -> dict[str, Any]:
    """A checkpoint folder's `config.json`."""
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise FamilyError(f"`{folder}` is not a folder: a pretrained model is a Hugging Face checkpoint folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FamilyError(f"`{folder}` has no `{CONFIG_FILE}`: is it a Hugging Face checkpoint folder?") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise FamilyError(f"`{path}` cannot be read as JSON: {str(error).splitlines()[0]}") from None
    except RecursionError:
        raise FamilyError(f"`{path}` cannot be read as JSON: it is nested too deep") from None
    if not isinstance(config, dict):
        raise FamilyError(f"`{path}` is not a JSON object")
    return config


#: lagdsl's tensor name -> the family's names of the tensors it stacks (along the first dimension);
#: `{i}` is a layer. Entries whose flag is off (untied head, biases, q/k norms) are left out.
LLAMA_TENSORS: dict[str, tuple[str, ...]] = {
    "embed.weight": ("model.embed_tokens.weight",),
    "norm.weight": ("model.norm.weight",),
    "lm_head.weight": ("lm_head.weight",),
    "blocks.{i}.norm1.weight": ("model.layers.{i}.input_layernorm.weight",),
    "blocks.{i}.attn.qkv.weight": tuple(f"model.layers.{{i}}.self_attn.{x}_proj.weight" for x in "qkv"),
    "blocks.{i}.attn.qkv.bias": tuple(f"model.layers.{{i}}.self_attn.{x}_proj.bias" for x in "qkv"),
    "blocks.{i}.attn.q_norm.weight": ("model.layers.{i}.self_attn.q_norm.weight",),
    "blocks.{i}.attn.k_norm.weight": ("model.layers.{i}.self_attn.k_norm.weight",),
    "blocks.{i}.attn.o.weight": ("model.layers.{i}.self_attn.o_proj.weight",),
    "blocks.{i}.norm2.weight": ("model.layers.{i}.post_attention_layernorm.weight",),
    "blocks.{i}.mlp.gate_up.weight": ("model.layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.up_proj.weight"),
    "blocks.{i}.mlp.down.weight": ("model.layers.{i}.mlp.down_proj.weight",),
}

#: (config, arch) -> None: a family's own reading of its keys (raises FamilyError), or its rewrite
ConfigHook = Callable[[Mapping[str, Any], Arch], Arch]
RewriteHook = Callable[[dict[str, Any], Mapping[str, Any], Arch], None]


@dataclass(frozen=True)
class Family:
    """One Hugging Face decoder family as an adapter."""

    name: str  # how lagdsl names it: `llama`
    architecture: str  # the `architectures` entry it reads and writes: `LlamaForCausalLM`
    model_type: str
    qkv_bias: bool | None = None  # True/False: always; None: the config's `attention_bias`
    qk_norm: bool = False
    tie_default: bool = False  # `tie_word_embeddings` where the config leaves it out
    tensors: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: LLAMA_TENSORS)
    read_extra: ConfigHook | None = None  # the family's own keys (sliding windows, ...)
    rewrite_extra: RewriteHook | None = None  # its own keys on export (layer types, ...)

    # -- in

    def arch(self, config: Mapping[str, Any]) -> Arch:
        """The architecture `config` describes; FamilyError naming the key it cannot use."""
        width = _int(config, "hidden_size")
        heads = _int(config, "num_attention_heads")
        kv_heads = _int(config, "num_key_value_heads", heads)
        head_dim = _int(config, "head_dim", None) or (width // heads if width % heads == 0 else 0)
        if not head_dim:
            raise FamilyError(f"`hidden_size` {width} is not divisible by `num_attention_heads` {heads}", "hidden_size")
        if head_dim % 2:
            raise FamilyError(f"`head_dim` {head_dim} is odd: rotary positions rotate pairs", "head_dim")
        if heads % kv_heads:
            raise FamilyError(
                f"`num_attention_heads` {heads} is not a multiple of `num_key_value_heads` {kv_heads}",
                "num_key_value_heads",
            )
        act = config.get("hidden_act", "silu")
        if act not in ("silu", "swish"):  # transformers' `swish` is SiLU
            raise FamilyError(f"`hidden_act` `{act}` is not supported: lagdsl's MLP is SwiGLU (`silu`)", "hidden_act")
        if config.get("mlp_bias"):
            raise FamilyError("`mlp_bias: true` is not supported: lagdsl's MLP has no biases", "mlp_bias")
        bias = self.qkv_bias
        if bias is None:
            bias = bool(config.get("attention_bias", False))
            if bias:
                raise FamilyError(
                    "`attention_bias: true` is not supported for this family (it puts a bias on `o_proj`)",
                    "attention_bias",
                )
        theta, scaling = _rope(config)
        arch = Arch(
            vocab=_int(config, "vocab_size"),
            context=_int(config, "max_position_embeddings"),
            width=width,
            depth=_int(config, "num_hidden_layers"),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            hidden=_int(config, "intermediate_size"),
            tie=bool(config.get("tie_word_embeddings", self.tie_default)),
            rope_theta=theta,
            rope_scaling=scaling,
            qkv_bias=bias,
            qk_norm=self.qk_norm,
            norm_eps=_float(config, "rms_norm_eps", 1e-6),
        )
        return self.read_extra(config, arch) if self.read_extra else arch

    def tensor_map(self, arch: Arch) -> dict[str, tuple[str, ...]]:
        """lagdsl's tensor names -> the family's (layers written out) for a model of `arch`."""
        skip = {
            "lm_head.weight": arch.tie,
            "blocks.{i}.attn.qkv.bias": not arch.qkv_bias,
            "blocks.{i}.attn.q_norm.weight": not arch.qk_norm,
            "blocks.{i}.attn.k_norm.weight": not arch.qk_norm,
        }
        out: dict[str, tuple[str, ...]] = {}
        for ours, theirs in self.tensors.items():
            if skip.get(ours, False):
                continue
            if "{i}" not in ours:
                out[ours] = theirs
                continue
            for i in range(arch.depth):
                out[ours.format(i=i)] = tuple(t.format(i=i) for t in theirs)
        return out

    # -- out

    def config(self, source: Mapping[str, Any], arch: Arch, dtype: str) -> dict[str, Any]:
        """The `config.json` of a model of `arch` grown from one with `source`: every key the growth
        changed rewritten, every other key kept."""
        out = dict(source)
        old_depth = _int(source, "num_hidden_layers")
        out.update({
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "hidden_size": arch.width,
            "intermediate_size": arch.hidden,
            "num_hidden_layers": arch.depth,
            "num_attention_heads": arch.heads,
            "num_key_value_heads": arch.kv_heads,
            "rms_norm_eps": arch.norm_eps,
            "tie_word_embeddings": arch.tie,
        })  # fmt: skip
        if "head_dim" in source or arch.head_dim != arch.width // arch.heads:
            out["head_dim"] = arch.head_dim
        for key in ("torch_dtype", "dtype"):
            out[key] = dtype
        types = source.get("layer_types")
        if isinstance(types, list):
            # one kind of layer throughout is kept; a mix is made full attention throughout (lagdsl
            # attends over the whole context, so that is what the model has learned)
            kinds = set(types)
            kind = kinds.pop() if len(kinds) == 1 else "full_attention"
            out["layer_types"] = [kind] * arch.depth
        window_layers = source.get("max_window_layers")
        if isinstance(window_layers, int) and window_layers >= old_depth:
            out["max_window_layers"] = max(window_layers, arch.depth)  # "no layer slides" stays so
        if self.rewrite_extra:
            self.rewrite_extra(out, source, arch)
        return out


def with_window(arch: Arch, window: object, key: str) -> Arch:
    """`arch` with the sliding window a config gives under `key` (None or a positive integer)."""
    if window is None:
        return arch
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise FamilyError(f"`{key}` must be a positive integer or null, found `{window}`", key)
    return replace(arch, window=window)


def _int(config: Mapping[str, Any], key: str, default: int | object | None = ...) -> Any:
    value = config.get(key, default)
    if value is ...:
        raise FamilyError(f"`{key}` is missing", key)
    if value is None and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FamilyError(f"`{key}` must be a positive integer, found `{json.dumps(value)}`", key)
    return value


def _float(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise FamilyError(f"`{key}` must be a positive number, found `{json.dumps(value)}`", key)
    return float(value)


def _rope(config: Mapping[str, Any]) -> tuple[float, tuple[float, float, float, int] | None]:
    """The rotary base and Llama 3 scaling, from `rope_parameters` (transformers 5) or the older
    `rope_theta` and `rope_scaling`."""
    for key in ("rope_parameters", "rope_scaling"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise FamilyError(f"`{key}` must be an object such as {{\"rope_type\": \"default\"}}, found "
                              f"`{json.dumps(config[key])[:60]}`", key)  # fmt: skip
    params = config.get("rope_parameters")
    key = "rope_parameters"
    if not isinstance(params, dict):
        params = dict(config.get("rope_scaling") or {})
        key = "rope_scaling"
        if "rope_theta" in config:
            params.setdefault("rope_theta", config["rope_theta"])
    theta = _float(params, "rope_theta", 10_000.0)
    kind = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise FamilyError("`partial_rotary_factor` other than 1 is not supported", key)
    if kind == "default":
        return theta, None
    if kind == "llama3":
        original = _int(params, "original_max_position_embeddings")
        missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor") if k not in params]
        if missing:  # transformers refuses such a config: lagdsl invents no defaults for it
            raise FamilyError(f"RoPE type `llama3` needs {', '.join(f'`{k}`' for k in missing)} in `{key}`", key)
        scaling = (
            _float(params, "factor", 8.0),
            _float(params, "low_freq_factor", 1.0),
            _float(params, "high_freq_factor", 4.0),
            original,
        )
        if scaling[1] >= scaling[2]:
            raise FamilyError("`low_freq_factor` must be smaller than `high_freq_factor`", key)
        return theta, scaling
    raise FamilyError(f"RoPE type `{kind}` is not supported: lagdsl reads `default` and `llama3`", key)


def fingerprint(folder: Path) -> str:
    """A checkpoint folder's identity, cheap to compute: its config and index as bytes, and each
    weight file's name and size (SHA-256). A resume refuses a source whose fingerprint changed."""
    import hashlib

    digest = hashlib.sha256()
    for name in (CONFIG_FILE, INDEX_FILE):
        path = folder / name
        digest.update(f"{name}\0".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
    return digest.hexdigest()
