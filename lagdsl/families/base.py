"""What every family adapter shares: the architecture a `config.json` describes (`Arch`), the
Llama-shaped reading and writing of configs, and the map between lagdsl's tensor names and a
family's. A family changes only what differs from Llama: a few flags, and hooks where its config
keys do."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lagdsl.families.experts import Experts, mixture, mixture_keys, mixture_tensors
from lagdsl.families.rope import read_partial, read_rope, rope_keys
from lagdsl.families.values import FamilyError, config_float, config_int
from lagdsl.lang.arch import param_count
from lagdsl.lang.rope import Rope
from lagdsl.lang.schedule import MixtureSpec
from lagdsl.lang.style import DEFAULT, Style

__all__ = [
    "Arch",
    "Experts",
    "Family",
    "FamilyError",
    "Transform",
    "config_window",
    "fingerprint",
    "read_config",
    "rope_keys",
    "slides_everywhere",
    "sliding",
    "transposed",
]  # fmt: skip

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"


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
    rope_scaling: Rope | None
    qkv_bias: bool
    qk_norm: bool
    norm_eps: float
    moe: MixtureSpec | None = None  # a mixture of experts in place of the MLP (in every block but `moe.dense`)
    mlp: str = "swiglu"  # `lagdsl.lang.arch.MLPS`
    style: Style = DEFAULT  # norms, biases, positions, caps, windows (`lagdsl.lang.style`)

    @property
    def params(self) -> int:
        return param_count(
            vocab=self.vocab, width=self.width, depth=self.depth, mlp=self.mlp, heads=self.heads,
            kv_heads=self.kv_heads, head_dim=self.head_dim, hidden=self.hidden, tie=self.tie,
            qkv_bias=self.qkv_bias, qk_norm=self.qk_norm, moe=self.moe, style=self.style,
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

#: the layer of a lagdsl tensor name, as the family maps' templates write it
_LAYER = re.compile(r"^blocks\.\d+\.")


@dataclass(frozen=True)
class Transform:
    """How a family stores one of lagdsl's tensors other than as its rows in order: `inward`
    takes the family's tensor (its parts stacked along the first dimension) to lagdsl's, `outward`
    back (GPT-2's transposed `Conv1D` weights, GPT-NeoX's q, k and v interleaved per head). Each
    is (tensor, arch) -> tensor, torch's operations on the tensor alone (this module imports no
    torch)."""

    inward: Callable[[Any, Arch], Any]
    outward: Callable[[Any, Arch], Any]


def transposed() -> Transform:
    """A weight stored transposed (GPT-2's `Conv1D`: in x out)."""
    return Transform(lambda t, _: t.t(), lambda t, _: t.t())


LLAMA_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu"}  # (transformers' `swish` is SiLU)


@dataclass(frozen=True)
class Family:
    """One Hugging Face decoder family as an adapter: data, and hooks where its config keys differ.

    What a family's blocks are is its `style` (`lagdsl.lang.style`) and the hooks that read the
    rest of it from a config (`read_extra`); its config keys are Llama's unless `keys` renames them
    (GPT-2's `n_embd` for `hidden_size`; an empty name: the family has no such key); its tensors are
    Llama's unless `tensors` names them otherwise, and `transforms` says which are stored in another
    layout."""

    name: str  # how lagdsl names it: `llama`
    architecture: str  # the `architectures` entry it reads and writes: `LlamaForCausalLM`
    model_type: str
    qkv_bias: bool | None = None  # True/False: always; None: the config's `attention_bias` (refused if true)
    #: the config key that puts a bias on q, k, v and the output projection (OLMo 2, Gemma, GPT-NeoX:
    #: `attention_bias`), and its default; None: the family reads no such key
    bias_key: str | None = None
    bias_default: bool = False
    qk_norm: bool = False
    tie_default: bool = False  # `tie_word_embeddings` where the config leaves it out
    tensors: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: LLAMA_TENSORS)
    transforms: Mapping[str, Transform] = field(default_factory=dict)  # by lagdsl's name (`blocks.{i}...`)
    #: the config as the family's transformers class resolves it before reading (GPT-2's null `n_inner`)
    prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    read_extra: ConfigHook | None = None  # the family's own keys (sliding windows, ...)
    rewrite_extra: RewriteHook | None = None  # its own keys on export (layer types, ...)
    experts: Experts | None = None  # a mixture-of-experts family: how it holds its experts
    #: a dense family's mixture-of-experts sibling, which an upcycled model exports as
    moe_sibling: str | None = None
    default_theta: float = 10_000.0  # the rotary base where a config gives none (transformers' `default_theta`)
    style: Style = DEFAULT  # what every model of the family has (its config adds the rest: `read_extra`)
    keys: Mapping[str, str] = field(default_factory=dict)  # Llama's config key -> the family's ("": none)
    #: the activation a config names -> the MLP it makes (`lagdsl.lang.arch.MLPS`), and the default
    activations: Mapping[str, str] = field(default_factory=lambda: LLAMA_ACTIVATIONS)
    activation_default: str = "silu"
    eps_default: float = 1e-6  # the norms' epsilon where the config gives none
    #: the RoPE types its transformers class reads (None: every one); a model scaled otherwise cannot go out as it
    rope_types: tuple[str, ...] | None = None
    #: where a config's `rope_parameters` are per layer type (Gemma 3's): the type whose are the model's
    rope_layer: str | None = None
    #: whether the family rotates part of each head (`partial_rotary_factor`; `style.rotary` where none is given)
    partial_rotary: bool = False

    @property
    def base_prefix(self) -> str:
        """The base model's prefix of the family's tensor names (`model.`, `transformer.`)."""
        return self.tensors["embed.weight"][0].split(".")[0] + "."

    def key(self, name: str) -> str:
        """The family's name of Llama's config key `name` (empty: it has none)."""
        return self.keys.get(name, name)

    @property
    def mlps(self) -> tuple[str, ...]:
        """The MLPs the family holds."""
        return tuple(dict.fromkeys(self.activations.values()))

    # -- in

    def arch(self, config: Mapping[str, Any]) -> Arch:
        """The architecture `config` describes; FamilyError naming the key it cannot use."""
        key = self.key
        if self.prepare is not None:
            config = self.prepare(config)
        width = config_int(config, key("hidden_size"))
        heads = config_int(config, key("num_attention_heads"))
        kv_heads = config_int(config, key("num_key_value_heads"), heads) if key("num_key_value_heads") else heads
        head_dim = config_int(config, "head_dim", None) or (width // heads if width % heads == 0 else 0)
        if not head_dim:
            raise FamilyError(
                f"`{key('hidden_size')}` {width} is not divisible by `{key('num_attention_heads')}` {heads}",
                key("hidden_size"),
            )
        if heads % kv_heads:
            raise FamilyError(
                f"`num_attention_heads` {heads} is not a multiple of `num_key_value_heads` {kv_heads}",
                "num_key_value_heads",
            )
        act_key = key("hidden_act")
        act = config.get(act_key, self.activation_default)
        if act not in self.activations:
            known = ", ".join(f"`{a}`" for a in self.activations)
            raise FamilyError(f"`{act_key}` `{act}` is not supported for this family: lagdsl computes {known}", act_key)
        style = self.style
        if config.get("mlp_bias") and not style.mlp_bias:
            raise FamilyError("`mlp_bias: true` is not supported: lagdsl's MLP has no biases", "mlp_bias")
        bias = self.qkv_bias
        if self.bias_key is not None:
            bias = config.get(self.bias_key, self.bias_default)
            if not isinstance(bias, bool):
                raise FamilyError(f"`{self.bias_key}` must be true or false", self.bias_key)
            style = replace(style, o_bias=bias)
        elif bias is None:
            bias = bool(config.get("attention_bias", False))
            if bias:
                raise FamilyError(
                    "`attention_bias: true` is not supported for this family (it puts a bias on `o_proj`)",
                    "attention_bias",
                )
        if style.rotary:
            partial = read_partial(config, key("partial_rotary_factor"), self.style.rotary)
            if partial != 1.0 and not self.partial_rotary:
                raise FamilyError("`partial_rotary_factor` other than 1 is not supported for this family",
                                  "partial_rotary_factor")  # fmt: skip
            rotary = int(head_dim * partial)
            if rotary % 2 or not rotary:
                what = f"`head_dim` {head_dim} is odd" if rotary == head_dim else f"{rotary} rotary dimensions are odd"
                raise FamilyError(f"{what}: rotary positions rotate pairs", "head_dim")
            style = replace(style, rotary=partial)
            theta, scaling = read_rope(
                config, rotary, self.default_theta, theta_key=key("rope_theta"), layer_type=self.rope_layer
            )
        else:
            theta, scaling = self.default_theta, None
        arch = Arch(
            vocab=config_int(config, "vocab_size"),
            context=config_int(config, key("max_position_embeddings")),
            width=width,
            depth=config_int(config, key("num_hidden_layers")),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            hidden=config_int(config, key("intermediate_size")),
            tie=bool(config.get("tie_word_embeddings", self.tie_default)),
            rope_theta=theta,
            rope_scaling=scaling,
            qkv_bias=bias,
            qk_norm=self.qk_norm,
            norm_eps=config_float(config, key("rms_norm_eps"), self.eps_default),
            mlp=self.activations[act],
            style=style,
        )
        if self.experts is not None:
            arch = replace(arch, moe=mixture(config, self.experts, arch.depth))
        return self.read_extra(config, arch) if self.read_extra else arch

    def tensor_map(self, arch: Arch, present: Collection[str], fused: bool = False) -> dict[str, tuple[str, ...]]:
        """lagdsl's tensor names -> the family's (layers written out) for a model of `arch` whose
        parameters are `present` (what the model has none of is left out: biases, q/k norms, norms
        of another placement, a block's MLP of the other kind); a mixture's experts named apart, or
        (`fused`) in transformers 5's fused tensors; a tied head is the embedding."""
        tensors = dict(self.tensors)
        if arch.moe is not None:
            if self.experts is None:
                raise FamilyError(f"`{self.architecture}` has no mixture of experts", "architectures")
            tensors.update(mixture_tensors(self.experts, arch.moe, fused))
        out: dict[str, tuple[str, ...]] = {}
        for ours, theirs in tensors.items():
            if ours == "lm_head.weight" and arch.tie:
                continue
            for i in range(arch.depth) if "{i}" in ours else [0]:
                name = ours.format(i=i)
                if name in present:
                    out[name] = tuple(t.format(i=i) for t in theirs)
        return out

    def transform(self, name: str) -> Transform | None:
        """How the family stores lagdsl's tensor `name` (None: as its rows, in order)."""
        return self.transforms.get(_LAYER.sub("blocks.{i}.", name)) if self.transforms else None

    def absent_shared(self, arch: Arch) -> list[tuple[str, tuple[int, ...]]]:
        """The tensors of a shared expert of size 0 (name, shape) that a family which always has one
        (Qwen2-MoE) needs in a mixture without: they add nothing to its output."""
        if self.experts is None or not self.experts.shared or arch.moe is None or arch.moe.shared:
            return []
        out: list[tuple[str, tuple[int, ...]]] = []
        for i in sorted(set(range(arch.depth)) - set(arch.moe.dense)):
            shared = f"model.layers.{i}.mlp.shared_expert"
            out += [(f"{shared}.gate_proj.weight", (0, arch.width)), (f"{shared}.up_proj.weight", (0, arch.width))]
            out += [
                (f"{shared}.down_proj.weight", (arch.width, 0)),
                (f"model.layers.{i}.mlp.shared_expert_gate.weight", (1, arch.width)),
            ]
        return out

    # -- out

    def config(self, source: Mapping[str, Any], arch: Arch, dtype: str) -> dict[str, Any]:
        """The `config.json` of a model of `arch` grown from one with `source`: every key the growth
        changed rewritten, every other key kept."""
        out = dict(source)
        key = self.key
        old_depth = config_int(source, key("num_hidden_layers"))
        sizes = {
            "hidden_size": arch.width, "intermediate_size": arch.hidden, "num_hidden_layers": arch.depth,
            "num_attention_heads": arch.heads, "num_key_value_heads": arch.kv_heads, "rms_norm_eps": arch.norm_eps,
        }  # fmt: skip
        out.update({"architectures": [self.architecture], "model_type": self.model_type})
        out.update({key(k): v for k, v in sizes.items() if key(k)})
        out["tie_word_embeddings"] = arch.tie
        if source.get("head_dim") is not None or arch.head_dim != arch.width // arch.heads:
            out["head_dim"] = arch.head_dim  # (Mixtral's `null`, width / heads, stays as it was)
        for name in ("torch_dtype", "dtype"):
            out[name] = dtype
        types = source.get("layer_types")
        style = arch.style
        if style.window is not None and (isinstance(types, list) or len(style.local) < arch.depth):
            # each layer as it attends (a copy as its source); a family that slides every layer and
            # names no layer types (Phi-3) needs none
            out["layer_types"] = [
                "sliding_attention" if arch.style.slides(i) else "full_attention" for i in range(arch.depth)
            ]
        elif isinstance(types, list):
            # one kind of layer throughout is kept; a mix is made full attention throughout (lagdsl
            # attends over the whole context, so that is what the model has learned)
            kinds = set(types)
            kind = kinds.pop() if len(kinds) == 1 else "full_attention"
            out["layer_types"] = [kind] * arch.depth
        window_layers = source.get("max_window_layers")
        if isinstance(window_layers, int) and window_layers >= old_depth:
            out["max_window_layers"] = max(window_layers, arch.depth)  # "no layer slides" stays so
        if arch.style.rotary:
            self._rewrite_rope(out, source, arch)
        context_key = key("max_position_embeddings")
        if arch.rope_scaling is not None and arch.rope_scaling.kind == "dynamic":
            out[context_key] = arch.rope_scaling.original  # dynamic NTK's threshold
        elif arch.context > config_int(source, context_key):
            out[context_key] = arch.context
        if arch.moe is not None and self.experts is not None:
            out.update(mixture_keys(self.experts, arch.moe))
            aliases = [a for a in ("num_experts", "num_local_experts") if a in source]  # as the source spelled it
            if aliases and self.experts.experts_key not in source:  # (transformers 5 writes Qwen3-MoE's as the second)
                del out[self.experts.experts_key]
            for alias in aliases:
                out[alias] = arch.moe.experts
        if self.rewrite_extra:
            self.rewrite_extra(out, source, arch)
        return out

    def _rewrite_rope(self, out: dict[str, Any], source: Mapping[str, Any], arch: Arch) -> None:
        """The rotary keys, where the growth changed the method or the base: in both spellings."""
        rotary = arch.style.rotary_size(arch.head_dim)
        source = self.prepare(source) if self.prepare is not None else source
        kind = arch.rope_scaling.kind if arch.rope_scaling is not None else "default"
        if self.rope_types is not None and kind not in self.rope_types:
            known = ", ".join(f"`{t}`" for t in self.rope_types)
            raise FamilyError(f"`{self.architecture}` reads RoPE types {known}, and this model's is `{kind}`")
        try:
            theta_key = self.key("rope_theta")
            was = read_rope(source, rotary, self.default_theta, theta_key=theta_key, layer_type=self.rope_layer)
        except FamilyError:
            was = None
        if was != (arch.rope_theta, arch.rope_scaling):  # another method or base: written in both spellings
            keys = rope_keys(arch.rope_theta, arch.rope_scaling)
            if arch.style.rotary != 1.0:
                keys["rope_parameters"]["partial_rotary_factor"] = arch.style.rotary
            out.update(keys)


def config_window(config: Mapping[str, Any], switch: str | None = None) -> int | None:
    """A config's `sliding_window` (a positive integer, or null: none), where the key `switch`
    (Qwen's `use_sliding_window`) turns it on."""
    if switch is not None and not config.get(switch):
        return None
    return config_int(config, "sliding_window", None)


def sliding(arch: Arch, window: int | None) -> Arch:
    """`arch` whose every layer attends to the last `window` positions (None: none)."""
    if window is None:
        return arch
    return replace(arch, style=replace(arch.style, window=window, local=tuple(range(arch.depth))))


def slides_everywhere(config: Mapping[str, Any], arch: Arch) -> Arch:
    """A `read_extra` hook: the config's `sliding_window` on every layer (Mistral, Mixtral, Phi-3)."""
    return sliding(arch, config_window(config))


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
