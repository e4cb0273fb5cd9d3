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

from lagdsl.families.rope import read_rope, rope_keys
from lagdsl.families.values import FamilyError, config_float, config_int
from lagdsl.lang.arch import param_count
from lagdsl.lang.rope import Rope
from lagdsl.lang.schedule import MAX_EXPERTS, MAX_WIDTH, MixtureSpec
from lagdsl.lang.style import DEFAULT, Style

__all__ = ["Arch", "Experts", "Family", "FamilyError", "fingerprint", "read_config", "rope_keys", "with_window"]

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
    window: int | None = None  # a sliding window over the whole model that lagdsl does not compute, or None
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


@dataclass(frozen=True)
class Experts:
    """How a family holds a mixture of experts: its config keys and tensor names. transformers 4
    (and every checkpoint on the Hub, and what transformers 5 saves) names each expert apart,
    `{prefix}.experts.{j}.{gate,up,down}`; transformers 5 holds them fused in memory,
    `mlp.experts.gate_up_proj` (E x 2h x w) and `mlp.experts.down_proj` (E x w x h), a layout some
    tools save too. Both are read; the per-expert one is written."""

    experts_key: str  # `num_experts` (Qwen) or `num_local_experts` (Mixtral)
    hidden_key: str  # each expert's hidden size: `moe_intermediate_size` or `intermediate_size`
    prefix: str  # the mixture's module in a layer, per expert: `mlp` or `block_sparse_moe`
    names: tuple[str, str, str]  # an expert's gate, up and down projections: `gate_proj`... or `w1`, `w3`, `w2`
    #: the config key of renormalized top-k weights (Qwen's `norm_topk_prob`, false by default);
    #: None: always renormalized (Mixtral)
    renormalize_key: str | None
    shared: bool = False  # a shared expert beside the routed ones, always there (Qwen2-MoE)
    #: which layers are mixtures is a config's choice (Qwen's `decoder_sparse_step`, `mlp_only_layers`)
    sparse_layers: bool = False


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
    experts: Experts | None = None  # a mixture-of-experts family: how it holds its experts
    #: a dense family's mixture-of-experts sibling, which an upcycled model exports as
    moe_sibling: str | None = None
    default_theta: float = 10_000.0  # the rotary base where a config gives none (transformers' `default_theta`)
    mlps: tuple[str, ...] = ("swiglu",)  # the MLPs it holds (`lagdsl.lang.arch.MLPS`)

    # -- in

    def arch(self, config: Mapping[str, Any]) -> Arch:
        """The architecture `config` describes; FamilyError naming the key it cannot use."""
        width = config_int(config, "hidden_size")
        heads = config_int(config, "num_attention_heads")
        kv_heads = config_int(config, "num_key_value_heads", heads)
        head_dim = config_int(config, "head_dim", None) or (width // heads if width % heads == 0 else 0)
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
        theta, scaling = read_rope(config, head_dim, self.default_theta)
        arch = Arch(
            vocab=config_int(config, "vocab_size"),
            context=config_int(config, "max_position_embeddings"),
            width=width,
            depth=config_int(config, "num_hidden_layers"),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            hidden=config_int(config, "intermediate_size"),
            tie=bool(config.get("tie_word_embeddings", self.tie_default)),
            rope_theta=theta,
            rope_scaling=scaling,
            qkv_bias=bias,
            qk_norm=self.qk_norm,
            norm_eps=config_float(config, "rms_norm_eps", 1e-6),
        )
        if self.experts is not None:
            arch = replace(arch, moe=_mixture(config, self.experts, arch.depth))
        return self.read_extra(config, arch) if self.read_extra else arch

    def tensor_map(self, arch: Arch, fused: bool = False) -> dict[str, tuple[str, ...]]:
        """lagdsl's tensor names -> the family's (layers written out) for a model of `arch`; a
        mixture's experts named apart, or (`fused`) in transformers 5's fused tensors."""
        tensors = dict(self.tensors)
        mixed: dict[str, tuple[str, ...]] = {}  # a mixture block's MLP (a dense block's is in `tensors`)
        if arch.moe is not None:
            mixed = self._mixture_tensors(arch.moe, fused)
        skip = {
            "lm_head.weight": arch.tie,
            "blocks.{i}.attn.qkv.bias": not arch.qkv_bias,
            "blocks.{i}.attn.q_norm.weight": not arch.qk_norm,
            "blocks.{i}.attn.k_norm.weight": not arch.qk_norm,
        }
        dense = set(arch.moe.dense) if arch.moe is not None else set()
        out: dict[str, tuple[str, ...]] = {}
        for ours, theirs in {**tensors, **mixed}.items():
            if skip.get(ours, False):
                continue
            if "{i}" not in ours:
                out[ours] = theirs
                continue
            for i in range(arch.depth):
                if ".mlp." in ours and (ours in mixed) != (arch.moe is not None and i not in dense):
                    continue  # block i's MLP is of the other kind
                out[ours.format(i=i)] = tuple(t.format(i=i) for t in theirs)
        return out

    def _mixture_tensors(self, moe: MixtureSpec, fused: bool) -> dict[str, tuple[str, ...]]:
        """lagdsl's names -> the family's of a mixture block's MLP (`{i}` for the block)."""
        experts = self.experts
        if experts is None:
            raise FamilyError(f"`{self.architecture}` has no mixture of experts", "architectures")
        tensors: dict[str, tuple[str, ...]] = {}
        layer = "model.layers.{i}"
        per = f"{layer}.{experts.prefix}"
        tensors["blocks.{i}.mlp.router.weight"] = (f"{layer}.mlp.gate.weight" if fused else f"{per}.gate.weight",)
        if fused:
            tensors["blocks.{i}.mlp.gate_up"] = (f"{layer}.mlp.experts.gate_up_proj",)
            tensors["blocks.{i}.mlp.down"] = (f"{layer}.mlp.experts.down_proj",)
        else:
            gate, up, down = experts.names
            each = [f"{per}.experts.{j}" for j in range(moe.experts)]
            tensors["blocks.{i}.mlp.gate_up"] = tuple(f"{e}.{n}.weight" for e in each for n in (gate, up))
            tensors["blocks.{i}.mlp.down"] = tuple(f"{e}.{down}.weight" for e in each)
        if moe.shared:
            shared = f"{layer}.mlp.shared_expert"
            tensors["blocks.{i}.mlp.shared.gate_up.weight"] = (f"{shared}.gate_proj.weight", f"{shared}.up_proj.weight")
            tensors["blocks.{i}.mlp.shared.down.weight"] = (f"{shared}.down_proj.weight",)
            tensors["blocks.{i}.mlp.shared_gate.weight"] = (f"{layer}.mlp.shared_expert_gate.weight",)
        return tensors

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
        old_depth = config_int(source, "num_hidden_layers")
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
        if source.get("head_dim") is not None or arch.head_dim != arch.width // arch.heads:
            out["head_dim"] = arch.head_dim  # (Mixtral's `null`, width / heads, stays as it was)
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
        try:
            was = read_rope(source, arch.head_dim, self.default_theta)
        except FamilyError:
            was = None
        if was != (arch.rope_theta, arch.rope_scaling):  # another method or base: written in both spellings
            out.update(rope_keys(arch.rope_theta, arch.rope_scaling))
        if arch.rope_scaling is not None and arch.rope_scaling.kind == "dynamic":
            out["max_position_embeddings"] = arch.rope_scaling.original  # dynamic NTK's threshold
        elif arch.context > config_int(source, "max_position_embeddings"):
            out["max_position_embeddings"] = arch.context
        if arch.moe is not None and self.experts is not None:
            out.update(_mixture_keys(self.experts, arch.moe))
            aliases = [a for a in ("num_experts", "num_local_experts") if a in source]  # as the source spelled it
            if aliases and self.experts.experts_key not in source:  # (transformers 5 writes Qwen3-MoE's as the second)
                del out[self.experts.experts_key]
            for alias in aliases:
                out[alias] = arch.moe.experts
        if self.rewrite_extra:
            self.rewrite_extra(out, source, arch)
        return out


def _mixture(config: Mapping[str, Any], experts: Experts, depth: int) -> MixtureSpec:
    """The mixture a mixture-of-experts family's `config.json` describes; FamilyError naming the key
    where it describes one lagdsl does not compute."""
    key = experts.experts_key
    if key not in config and "num_local_experts" in config:  # transformers 5 writes Qwen3-MoE's so
        key = "num_local_experts"
    count, top_k = config_int(config, key), config_int(config, "num_experts_per_tok")
    if top_k > count:
        raise FamilyError(f"`num_experts_per_tok` {top_k} is more than the {count} experts", "num_experts_per_tok")
    dense: list[int] = []
    if experts.sparse_layers:  # transformers: a mixture where (i + 1) % step == 0 and i is not listed
        step = config_int(config, "decoder_sparse_step", 1)
        listed = config.get("mlp_only_layers") or []
        if not isinstance(listed, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in listed):
            raise FamilyError(
                f"`mlp_only_layers` must be a list of layers, found `{json.dumps(listed)[:40]}`", "mlp_only_layers"
            )
        if step < 1:
            raise FamilyError(f"`decoder_sparse_step` {step} is not at least 1", "decoder_sparse_step")
        dense = [i for i in range(depth) if (i + 1) % step or i in listed]
        if len(dense) == depth:
            why = "mlp_only_layers" if listed else "decoder_sparse_step"
            raise FamilyError(f"`{why}` leaves every one of the {depth} layers dense: no mixture to compute", why)
    renormalize = True
    if experts.renormalize_key is not None:
        renormalize = config.get(experts.renormalize_key, False)
        if not isinstance(renormalize, bool):
            raise FamilyError(f"`{experts.renormalize_key}` must be true or false", experts.renormalize_key)
    shared = 0
    if experts.shared:
        shared = config.get("shared_expert_intermediate_size", 0)
        if not isinstance(shared, int) or isinstance(shared, bool) or shared < 0:
            raise FamilyError("`shared_expert_intermediate_size` must be a count", "shared_expert_intermediate_size")
    coef = config.get("router_aux_loss_coef", 0.001)
    if not isinstance(coef, int | float) or isinstance(coef, bool) or coef < 0:
        raise FamilyError("`router_aux_loss_coef` must be a number, at least 0", "router_aux_loss_coef")
    if count < 2 or count > MAX_EXPERTS:
        raise FamilyError(f"`{key}` {count:,} is not between 2 and lagdsl's limit of {MAX_EXPERTS:,}", key)
    hidden = config_int(config, experts.hidden_key)
    if hidden > MAX_WIDTH * 16 or shared > MAX_WIDTH * 16:
        raise FamilyError(f"`{experts.hidden_key}` {hidden:,} is beyond lagdsl's limit", experts.hidden_key)
    return MixtureSpec(
        experts=count, top_k=top_k, hidden=hidden, shared=shared, renormalize=renormalize, balance=float(coef),
        z_loss=0.0, dense=tuple(dense),
    )  # fmt: skip


def _mixture_keys(experts: Experts, moe: MixtureSpec) -> dict[str, Any]:
    """The config keys that say a family's mixture is `moe`."""
    keys: dict[str, Any] = {
        experts.experts_key: moe.experts, "num_experts_per_tok": moe.top_k, experts.hidden_key: moe.hidden,
        "router_aux_loss_coef": moe.balance, "output_router_logits": False,
    }  # fmt: skip
    if experts.renormalize_key is not None:
        keys[experts.renormalize_key] = moe.renormalize
    if experts.shared:
        keys["shared_expert_intermediate_size"] = moe.shared
    if experts.sparse_layers:
        keys["decoder_sparse_step"], keys["mlp_only_layers"] = 1, list(moe.dense)
    return keys


def with_window(arch: Arch, window: object, key: str) -> Arch:
    """`arch` with the sliding window a config gives under `key` (None or a positive integer)."""
    if window is None:
        return arch
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise FamilyError(f"`{key}` must be a positive integer or null, found `{window}`", key)
    return replace(arch, window=window)


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
