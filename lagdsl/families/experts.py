"""How the mixture-of-experts families hold their experts: config keys (`Experts`, `mixture`,
`mixture_keys`) and tensor names (`mixture_tensors`). No torch here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lagdsl.families.values import FamilyError, config_int
from lagdsl.lang.schedule import MAX_EXPERTS, MAX_WIDTH, MixtureSpec


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


def mixture(config: Mapping[str, Any], experts: Experts, depth: int) -> MixtureSpec:
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


def mixture_keys(experts: Experts, moe: MixtureSpec) -> dict[str, Any]:
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


def mixture_tensors(experts: Experts, moe: MixtureSpec, fused: bool) -> dict[str, tuple[str, ...]]:
    """lagdsl's names -> the family's of a mixture block's MLP (`{i}` for the block)."""
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
