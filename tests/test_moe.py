"""Mixtures of experts: the routed block against a direct computation and against transformers'
MoE blocks, the auxiliary losses, and the experts operators (upcycling, duplication) with the
optimizer state they move."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagdsl.lang.arch import param_count
from lagdsl.lang.catalogue import BUILTIN_OPERATORS
from lagdsl.model import GPT, GPTConfig
from lagdsl.model.config import Mixture
from lagdsl.model.layers.moe import MoE, experts_forward, grouped_linear, grouped_mm_supports, loop_linear, route
from lagdsl.ops import GrowthError, GrowthSpec, check_training_state, grow

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEPTH_OPS = [e.name for e in BUILTIN_OPERATORS if e.dim == "depth"]


def dense(tie: bool = True, depth: int = 2, **extra: object) -> GPTConfig:
    return GPTConfig(vocab=61, context=16, width=32, heads=4, depth=depth, tie=tie, **extra)  # type: ignore[arg-type]


def mixed(experts: int = 4, top_k: int = 2, shared: int = 0, renormalize: bool = True) -> GPTConfig:
    return dense(moe=Mixture(experts=experts, top_k=top_k, hidden=24, shared=shared, renormalize=renormalize))


def trained(config: GPTConfig, steps: int = 2, seed: int = 0) -> tuple[GPT, torch.optim.Optimizer]:
    """A model and its AdamW after a few steps (its auxiliary losses too), so every parameter has moments."""
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2)
    data = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        step(model, optimizer, torch.randint(0, config.vocab, (4, config.context), generator=data))
    return model, optimizer


def step(model: GPT, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    """One optimizer step on `x`, a mixture's auxiliary losses trained too (as the engine does)."""
    _, loss = model(x, x)
    assert loss is not None
    aux = model.aux_loss()
    (loss if aux is None else loss + aux).backward()
    optimizer.step()
    optimizer.zero_grad()


def tokens(config: GPTConfig, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, config.vocab, (3, config.context), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ dispatch


def naive_experts(x, gate_up, down, weights, chosen):  # type: ignore[no-untyped-def]
    """Each token, each of its slots, its expert computed alone: the definition."""
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for slot in range(chosen.shape[1]):
            e = int(chosen[t, slot])
            gate, up = F.linear(x[t], gate_up[e]).chunk(2)
            out[t] = out[t] + weights[t, slot] * F.linear(F.silu(gate) * up, down[e])
    return out


@FAST
@given(
    rows=st.integers(1, 12),
    experts=st.integers(1, 6),
    data=st.data(),
)
def test_sorted_dispatch_equals_a_loop_over_tokens_forward_and_backward(rows, experts, data) -> None:
    k = data.draw(st.integers(1, experts))
    seed = data.draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    width, hidden = 8, data.draw(st.sampled_from([6, 8]))  # the loop, the grouped product (16-byte rows)
    x = torch.randn(rows, width, generator=gen, requires_grad=True)
    gate_up = torch.randn(experts, 2 * hidden, width, generator=gen, requires_grad=True)
    down = torch.randn(experts, width, hidden, generator=gen, requires_grad=True)
    # routings that leave experts without tokens: each token's k distinct experts from a few
    pool = data.draw(st.integers(k, experts))
    chosen = torch.stack([torch.randperm(pool, generator=gen)[:k] for _ in range(rows)])
    weights = torch.rand(rows, k, generator=gen)
    grad = torch.randn(rows, width, generator=gen)
    results = []
    for fn in (experts_forward, naive_experts):
        out = fn(x, gate_up, down, weights, chosen)
        x.grad = gate_up.grad = down.grad = None
        out.backward(grad)
        results.append((out.detach(), x.grad.clone(), gate_up.grad.clone(), down.grad.clone()))
    for mine, theirs in zip(*results, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_the_grouped_product_and_the_loop_agree_and_give_every_expert_a_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 8, generator=gen, requires_grad=True)
    weight = torch.randn(4, 12, 8, generator=gen, requires_grad=True)
    assert grouped_mm_supports(x, weight)  # rows of 16-byte multiples: `grouped_linear` takes the grouped path
    counts = torch.tensor([3, 0, 7, 0])  # two experts receive no row
    grouped = grouped_linear(x, weight, counts)
    grouped.backward(torch.ones_like(grouped))
    grads = weight.grad.clone()
    weight.grad = None
    looped = loop_linear(x, weight, counts)
    looped.backward(torch.ones_like(looped))
    torch.testing.assert_close(grouped, looped)
    torch.testing.assert_close(grads, weight.grad)
    assert weight.grad is not None and torch.equal(weight.grad[1], torch.zeros(12, 8))  # present, zero


def test_dispatch_is_deterministic_bit_for_bit() -> None:
    model, _ = trained(mixed(), steps=1)
    x = tokens(model.config)
    first, second = model(x)[0], model(x)[0]
    assert torch.equal(first, second)


# ------------------------------------------------------------------------------ routing and losses


def test_the_auxiliary_losses_match_a_direct_computation_on_a_hand_made_routing() -> None:
    mixture = Mixture(experts=4, top_k=2, hidden=8)
    # 2 sequences of 3 tokens
    logits = torch.tensor(
        [[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 0.0], [1.0, 1.5, 2.0, 0.5],
         [0.1, 0.0, -0.1, 4.0], [3.0, -1.0, 2.5, 0.0], [0.5, 0.2, 0.1, 0.0]],
        requires_grad=True,
    )  # fmt: skip
    weights, chosen, routing = route(logits, mixture, rows=2)
    probs = logits.detach().softmax(-1)
    expected_chosen = [[0, 1], [1, 2], [2, 1], [3, 0], [0, 2], [0, 1]]
    assert chosen.tolist() == expected_chosen
    torch.testing.assert_close(weights.sum(-1), torch.ones(6))  # renormalized
    balance = []
    for first in (0, 3):
        f = torch.zeros(4)
        for pair in expected_chosen[first : first + 3]:
            for e in pair:
                f[e] += 1 / 6  # 3 tokens x 2 slots
        balance.append(4 * float((f * probs[first : first + 3].mean(0)).sum()))
    assert routing.balance.item() == pytest.approx(sum(balance) / 2, rel=1e-6)
    z = sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits.tolist()) / 6
    assert routing.z_loss.item() == pytest.approx(z, rel=1e-6)
    assert routing.counts.tolist() == [4, 4, 3, 1]
    (routing.balance + routing.z_loss).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_without_renormalization_the_weights_are_the_softmax_values() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    weights, _, _ = route(logits, Mixture(experts=4, top_k=2, hidden=8, renormalize=False))
    torch.testing.assert_close(weights, logits.softmax(-1)[:, :2])


def test_the_auxiliary_losses_train_the_router_and_the_load_sums_to_one_per_block() -> None:
    model = GPT(mixed(shared=16))
    model.init_weights(torch.Generator().manual_seed(0))
    x = tokens(model.config)
    model(x, x)
    aux = model.aux_loss()
    assert aux is not None
    aux.backward()
    for i in range(model.config.depth):
        block = model.block(i).mlp
        assert isinstance(block, MoE)
        assert block.router.weight.grad is not None and block.router.weight.grad.abs().sum() > 0
    load = model.expert_load()
    assert len(load) == model.config.depth
    for shares in load:
        assert len(shares) == 4 and sum(shares) == pytest.approx(1.0)


def test_the_balance_loss_is_the_same_whether_the_batch_is_whole_or_split_in_rows() -> None:
    """Taken per sequence and averaged, the load-balancing loss of a batch is the mean of its
    halves' (what N ranks or micro-batches compute), as the language-model loss is."""
    model = GPT(mixed())
    model.init_weights(torch.Generator().manual_seed(0))
    x = torch.randint(0, 61, (4, 16), generator=torch.Generator().manual_seed(3))
    model(x)
    whole = model.aux_losses()
    model(x[:2])
    first = model.aux_losses()
    model(x[2:])
    second = model.aux_losses()
    assert whole is not None and first is not None and second is not None
    for w, a, b in zip(whole, first, second, strict=True):
        assert w.item() == pytest.approx((a.item() + b.item()) / 2, rel=1e-5)


def test_a_mixture_counts_its_parameters_as_the_plan_does() -> None:
    for config in (mixed(), mixed(shared=16), mixed(experts=8, top_k=1)):
        model = GPT(config)
        moe = config.moe
        assert moe is not None
        count = param_count(vocab=61, width=32, depth=2, mlp="swiglu", heads=4, moe=moe)
        assert count.total == model.num_params()
        active = param_count(vocab=61, width=32, depth=2, mlp="swiglu", heads=4, moe=moe, active=True)
        per_expert = 3 * 32 * 24
        assert count.total - active.total == 2 * (moe.experts - moe.top_k) * per_expert


@pytest.mark.parametrize("recompute", [False, True])
def test_recomputed_activations_give_the_same_gradients_through_the_router(recompute: bool) -> None:
    grads = []
    for on in (False, recompute):
        model = GPT(mixed())
        model.init_weights(torch.Generator().manual_seed(0))
        model.recompute = on
        x = tokens(model.config)
        _, loss = model(x, x)
        aux = model.aux_loss()
        assert loss is not None and aux is not None
        (loss + aux).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ against transformers


@pytest.mark.parametrize("family", ["qwen3_moe", "qwen2_moe", "mixtral"])
def test_the_block_computes_what_transformers_moe_block_computes(family: str) -> None:
    transformers = pytest.importorskip("transformers")
    common = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1}
    if family == "mixtral":
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as Block

        config = transformers.MixtralConfig(**common, intermediate_size=24, num_local_experts=6, num_experts_per_tok=2)
        mixture = Mixture(experts=6, top_k=2, hidden=24, renormalize=True)
    elif family == "qwen2_moe":
        from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock as Block

        config = transformers.Qwen2MoeConfig(
            **common, moe_intermediate_size=24, shared_expert_intermediate_size=40, num_experts=6,
            num_experts_per_tok=2, norm_topk_prob=False,
        )  # fmt: skip
        mixture = Mixture(experts=6, top_k=2, hidden=24, shared=40, renormalize=False)
    else:
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock as Block

        config = transformers.Qwen3MoeConfig(
            **common, moe_intermediate_size=24, num_experts=6, num_experts_per_tok=2, norm_topk_prob=True
        )
        mixture = Mixture(experts=6, top_k=2, hidden=24, renormalize=True)
    torch.manual_seed(0)
    theirs = Block(config)
    for param in theirs.parameters():
        torch.nn.init.normal_(param, 0.0, 0.3)
    mine = MoE(dense(moe=mixture))
    with torch.no_grad():
        mine.router.weight.copy_(theirs.gate.weight)
        mine.gate_up.copy_(theirs.experts.gate_up_proj)
        mine.down.copy_(theirs.experts.down_proj)
        if mixture.shared:
            shared = theirs.shared_expert
            mine.shared.gate_up.weight.copy_(torch.cat([shared.gate_proj.weight, shared.up_proj.weight]))
            mine.shared.down.weight.copy_(shared.down_proj.weight)
            mine.shared_gate.weight.copy_(theirs.shared_expert_gate.weight)
    theirs.eval()
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(x)
        expected = expected[0] if isinstance(expected, tuple) else expected
        torch.testing.assert_close(mine(x), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ upcycling


UPCYCLES_EXACT = [
    {},
    {"router": "zero"},
    {"granularity": 2, "top_k": 4},
    {"granularity": 4, "top_k": 4, "top_k_": None},
    {"renormalize": False, "router": "zero"},
]


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("args", UPCYCLES_EXACT, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "copies")
def test_upcycling_keeps_the_function_where_it_claims_to(args: dict[str, object], tie: bool) -> None:
    args = {k: v for k, v in args.items() if not k.endswith("_")}
    model, optimizer = trained(dense(tie=tie))
    x = tokens(model.config)
    with torch.no_grad():
        before = model(x)[0]
    result = grow(model, optimizer, GrowthSpec("upcycle", "experts", 8, args), torch.Generator().manual_seed(1))
    entry = next(e for e in BUILTIN_OPERATORS if e.name == "upcycle")
    assert entry.preserves_for(args) == "yes"
    with torch.no_grad():
        after = result.model(x)[0]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert result.model.config.moe is not None and result.model.config.moe.experts == 8
    check_training_state(result.model, result.optimizer)


@pytest.mark.parametrize(("args", "preserves"), [({"noise": 0.05}, "no"), ({"renormalize": False}, "approx")])
def test_upcycling_with_noise_or_without_renormalization_changes_the_function_as_the_catalogue_says(
    args: dict[str, object], preserves: str
) -> None:
    model, optimizer = trained(dense())
    x = tokens(model.config)
    with torch.no_grad():
        before = model(x)[0]
    result = grow(model, optimizer, GrowthSpec("upcycle", "experts", 8, args), torch.Generator().manual_seed(1))
    with torch.no_grad():
        change = (result.model(x)[0] - before).abs().max().item()
    assert change > 1e-4
    assert next(e for e in BUILTIN_OPERATORS if e.name == "upcycle").preserves_for(args) == preserves


def test_drop_upcycling_draws_the_share_of_each_experts_units_again_a_different_subset_each() -> None:
    model, optimizer = trained(dense())
    hidden = model.config.hidden
    gate_up = model.block(0).mlp.gate_up.weight.detach().clone()
    down = model.block(0).mlp.down.weight.detach().clone()
    spec = GrowthSpec("upcycle", "experts", 4, {"drop": 0.5})
    result = grow(model, optimizer, spec, torch.Generator().manual_seed(1))
    moe = result.model.block(0).mlp
    assert isinstance(moe, MoE)
    subsets = []
    for e in range(4):
        same_gate = (moe.gate_up[e, :hidden] == gate_up[:hidden]).all(dim=1)
        same_up = (moe.gate_up[e, hidden:] == gate_up[hidden:]).all(dim=1)
        same_down = (moe.down[e] == down).all(dim=0)
        assert torch.equal(same_gate, same_up) and torch.equal(same_gate, same_down)  # whole units
        assert int((~same_gate).sum()) == round(0.5 * hidden)
        subsets.append(frozenset(torch.nonzero(~same_gate).flatten().tolist()))
    assert len(set(subsets)) == 4
    # the redrawn units' moments start at zero; the kept units' are the dense MLP's
    state = result.optimizer.state[moe.gate_up]
    old_state = optimizer.state[model.block(0).mlp.gate_up.weight]
    redrawn = sorted(subsets[0])
    assert torch.count_nonzero(state["exp_avg"][0, redrawn]) == 0
    kept = sorted(set(range(hidden)) - subsets[0])
    torch.testing.assert_close(state["exp_avg"][0, kept], old_state["exp_avg"][kept])


def test_upcycling_moves_the_moments_with_the_slices_scaled_as_the_down_projection() -> None:
    model, optimizer = trained(dense())
    dense_down = model.block(1).mlp.down.weight
    old = optimizer.state[dense_down]
    result = grow(
        model, optimizer, GrowthSpec("upcycle", "experts", 4, {"granularity": 2, "top_k": 2}),
        torch.Generator().manual_seed(1),
    )  # fmt: skip
    moe = result.model.block(1).mlp
    assert isinstance(moe, MoE)
    state = result.optimizer.state[moe.down]
    half = model.config.hidden // 2
    for e in range(4):
        part = slice(0, half) if e % 2 == 0 else slice(half, None)
        torch.testing.assert_close(state["exp_avg"][e], old["exp_avg"][:, part] * 2)
        torch.testing.assert_close(state["exp_avg_sq"][e], old["exp_avg_sq"][:, part] * 4)
        torch.testing.assert_close(moe.down[e], dense_down[:, part] * 2)
    assert torch.equal(state["step"], old["step"])
    assert moe.router.weight not in result.optimizer.state  # a new router starts with no state
    attn = result.model.block(1).attn.o.weight
    assert attn is model.block(1).attn.o.weight and result.optimizer.state[attn]["exp_avg"] is not None


def test_the_virtual_group_router_gives_a_copys_slices_one_row() -> None:
    model, optimizer = trained(dense())
    result = grow(
        model, optimizer, GrowthSpec("upcycle", "experts", 8, {"granularity": 4, "top_k": 4}),
        torch.Generator().manual_seed(1),
    )  # fmt: skip
    router = result.model.block(0).mlp.router.weight
    for copy in range(2):
        rows = router[4 * copy : 4 * copy + 4]
        assert (rows == rows[0]).all()
    assert not torch.equal(router[0], router[4])


def test_duplicating_experts_keeps_the_function_and_multiplies_top_k() -> None:
    for renormalize in (True, False):
        model, optimizer = trained(mixed(renormalize=renormalize))
        x = tokens(model.config)
        with torch.no_grad():
            before = model(x)[0]
        result = grow(model, optimizer, GrowthSpec("duplicate", "experts", 8, {}), torch.Generator().manual_seed(1))
        moe = result.model.config.moe
        assert moe is not None and (moe.experts, moe.top_k) == (8, 4)
        with torch.no_grad():
            torch.testing.assert_close(result.model(x)[0], before, rtol=1e-5, atol=1e-5)
        new = result.model.block(0).mlp
        assert isinstance(new, MoE)
        old = model.block(0).mlp
        assert isinstance(old, MoE)  # expert 1's copies are experts 2 and 3, with its moments
        torch.testing.assert_close(
            result.optimizer.state[new.gate_up]["exp_avg"][3], optimizer.state[old.gate_up]["exp_avg"][1]
        )


def test_experts_operators_refuse_the_wrong_kind_of_model() -> None:
    model, optimizer = trained(mixed())
    with pytest.raises(GrowthError, match="dense SwiGLU"):
        grow(model, optimizer, GrowthSpec("upcycle", "experts", 8, {}), torch.Generator())
    model, optimizer = trained(dense())
    with pytest.raises(GrowthError, match="whole number"):
        grow(model, optimizer, GrowthSpec("duplicate", "experts", 8, {}), torch.Generator())


# ------------------------------------------------------------------------------ depth growth of a mixture


@pytest.mark.parametrize("op", DEPTH_OPS)
def test_every_depth_operator_grows_a_mixture(op: str) -> None:
    model, optimizer = trained(mixed(shared=16))
    x = tokens(model.config)
    with torch.no_grad():
        before = model(x)[0]
    args = {"ranges": ((0, 2), (1, 2))} if op == "layers" else {}
    spec = GrowthSpec(op, "depth", 3 if op != "stack" else 4, args)
    result = grow(model, optimizer, spec, torch.Generator().manual_seed(2))
    check_training_state(result.model, result.optimizer)
    grown = result.model
    for i in range(grown.config.depth):
        assert isinstance(grown.block(i).mlp, MoE)
    with torch.no_grad():
        after = grown(x)[0]
    if op in ("identity", "llama_pro"):  # zero residual outputs: every expert's and the shared expert's
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert result.optimizer is not None
    step(grown, result.optimizer, x)  # every parameter is in the optimizer and trains
    assert grown.aux_losses() is not None  # its auxiliary losses among what trained


# ------------------------------------------------------------------------------ the checker


def check(model: str, stages: str) -> tuple[list[str], object]:
    import lagdsl

    text = f"{model}\nbatch 4\noptimizer adamw(lr=1e-3)\nstage base {{ train 10 steps }}\n{stages}"
    result = lagdsl.check_text(text, "t.grow")
    return [d.code for d in result.diagnostics], result.schedule


GPT_MODEL = "model gpt(context=32, width=32, heads=4, depth=2)"


def test_the_checker_sizes_the_mixture_an_upcycling_builds() -> None:
    found, schedule = check(
        GPT_MODEL,
        "stage moe { grow experts to 8 with upcycle(granularity=2, top_k=4, renormalize=off) train 10 steps }",
    )
    assert found == []
    moe = schedule.stages[1].after.moe  # type: ignore[attr-defined]
    assert (moe.experts, moe.top_k, moe.hidden, moe.renormalize) == (8, 4, 44, False)  # 88 / 2
    growth = schedule.stages[1].growths[0]  # type: ignore[attr-defined]
    assert growth.dim == "experts" and growth.op.preserves == "approx"  # a random router, not renormalized


@pytest.mark.parametrize(
    ("model", "stages", "code"),
    [
        (GPT_MODEL, "stage m { grow experts to 8 { candidates [upcycle, upcycle(top_k=1)] probe 2 steps } "
         "train 10 steps }", "E0406"),
        ("model gpt(context=32, width=32, heads=4, depth=2, mlp=gelu)",
         "stage m { grow experts to 8 with upcycle train 10 steps }", "E0406"),
        (GPT_MODEL, "stage m { grow experts to 8 with upcycle(granularity=3, top_k=3) train 10 steps }", "E0403"),
        (GPT_MODEL, "stage m { grow experts to 8 with upcycle(granularity=2, top_k=3) train 10 steps }", "E0403"),
        (GPT_MODEL, "stage m { grow experts to 4 with upcycle(top_k=5) train 10 steps }", "E0403"),
        (GPT_MODEL, "stage m { grow experts to 8 with duplicate train 10 steps }", "E0403"),
        (GPT_MODEL, "stage m { grow experts to 4 with upcycle train 10 steps }\n"
         "stage n { grow experts to 8 with upcycle train 10 steps }", "E0403"),
        (GPT_MODEL, "stage m { grow experts to 4 with upcycle train 10 steps }\n"
         "stage n { grow experts to 6 with duplicate train 10 steps }", "E0403"),
        (GPT_MODEL, "stage m { grow experts to 1 with upcycle train 10 steps }", "E0401"),
        (GPT_MODEL, "stage m { grow experts to 2000 with upcycle train 10 steps }", "E0302"),
        (GPT_MODEL, "stage m { grow experts to 8 with copy_top train 10 steps }", "E0402"),
    ],
)  # fmt: skip
def test_the_checker_refuses_a_mixture_it_cannot_build(model: str, stages: str, code: str) -> None:
    found, _ = check(model, stages)
    assert code in found, found


def test_experts_then_depth_then_more_experts_validate_and_plan_counts_active_parameters() -> None:
    from lagdsl.plan.build import build_plan

    found, schedule = check(
        GPT_MODEL,
        "stage m { grow experts to 4 with upcycle train 10 steps }\n"
        "stage d { grow depth to 3 with copy_top train 10 steps }\n"
        "stage e { grow experts to 8 with duplicate train 10 steps }",
    )
    assert found == []
    plan = build_plan(schedule)  # type: ignore[arg-type]
    final = plan.totals.final
    moe = schedule.stages[-1].after.moe  # type: ignore[attr-defined]
    assert (moe.experts, moe.top_k) == (8, 4)
    model = GPT(GPTConfig.from_schedule(schedule, schedule.final_shape))  # type: ignore[arg-type]
    assert final.params == model.num_params()
    assert final.active < final.non_embedding and final.experts == 8


def test_a_gpt_model_can_start_as_a_mixture() -> None:
    found, schedule = check(
        "model gpt(context=32, width=32, heads=4, depth=2, experts=4, top_k=1)",
        "stage more { grow experts to 8 with duplicate train 10 steps }",
    )
    assert found == []
    first = schedule.stages[0].before.moe  # type: ignore[attr-defined]
    assert (first.experts, first.top_k, first.hidden, first.renormalize) == (4, 1, 88, True)
    config = GPTConfig.from_schedule(schedule)  # type: ignore[arg-type]
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(0))
    assert isinstance(model.block(0).mlp, MoE)
    from lagdsl.plan.build import build_plan

    assert build_plan(schedule).stages[0].shape.params == model.num_params()  # type: ignore[arg-type]
    for bad in ("experts=4, top_k=5", "experts=4, mlp=gelu"):
        found, _ = check(f"model gpt(context=32, width=32, heads=4, depth=2, {bad})", "")
        assert "E0303" in found, (bad, found)


WIDTH_OPS = [e.name for e in BUILTIN_OPERATORS if e.dim == "width"]


@pytest.mark.parametrize("op", WIDTH_OPS)
def test_every_width_operator_grows_a_mixture_and_its_shared_expert(op: str) -> None:
    model, optimizer = trained(mixed(shared=16))
    x = tokens(model.config)
    with torch.no_grad():
        before = model(x)[0]
    result = grow(model, optimizer, GrowthSpec(op, "width", 64, {}), torch.Generator().manual_seed(2))
    check_training_state(result.model, result.optimizer)
    grown = result.model
    moe = grown.config.moe
    assert moe is not None and (grown.config.width, moe.hidden, moe.shared, moe.experts) == (64, 48, 32, 4)
    block = grown.block(0).mlp
    assert isinstance(block, MoE) and block.gate_up.shape == (4, 96, 64) and block.router.weight.shape == (4, 64)
    with torch.no_grad():
        after = grown(x)[0]
    preserves = next(e for e in BUILTIN_OPERATORS if e.name == op and e.dim == "width").preserves
    if preserves == "yes":  # the router reads the stream as the experts do: the same routing, the same logits
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert result.optimizer is not None
    step(grown, result.optimizer, x)
    assert grown.aux_losses() is not None


def test_the_checker_sizes_a_mixture_grown_wider() -> None:
    found, schedule = check(
        GPT_MODEL,
        "stage m { grow experts to 4 with upcycle train 10 steps }\n"
        "stage w { grow width to 64 with net2net train 10 steps }",
    )
    assert found == []
    moe = schedule.stages[-1].after.moe  # type: ignore[attr-defined]
    assert (moe.experts, moe.hidden) == (4, 176)
    from lagdsl.plan.build import build_plan

    model = GPT(GPTConfig.from_schedule(schedule, schedule.final_shape))  # type: ignore[arg-type]
    assert build_plan(schedule).totals.final.params == model.num_params()  # type: ignore[arg-type]
