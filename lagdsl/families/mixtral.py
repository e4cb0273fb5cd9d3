"""Mixtral (`MixtralForCausalLM`): Mistral's attention, a mixture of experts in every layer whose
top-k weights are always renormalized, each expert `w1` (gate), `w3` (up), `w2` (down) of
`intermediate_size` in transformers 4's names, no shared expert. A dense Llama or Mistral upcycled
exports as this. `router_jitter_noise` is training noise transformers adds to the router's input;
lagdsl trains without it and computes what transformers computes in evaluation."""

from __future__ import annotations

from lagdsl.families.base import Experts, Family, slides_everywhere

EXPERTS = Experts(
    experts_key="num_local_experts", hidden_key="intermediate_size", prefix="block_sparse_moe",
    names=("w1", "w3", "w2"), renormalize_key=None,
)  # fmt: skip


FAMILY = Family(
    name="mixtral",
    architecture="MixtralForCausalLM",
    model_type="mixtral",
    read_extra=slides_everywhere,
    experts=EXPERTS,
    default_theta=1_000_000.0,
)
