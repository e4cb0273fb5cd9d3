"""AdamW for weights held in bf16: the step is torch's AdamW's, and its compensated writes keep
the updates bf16 alone would drop."""

from __future__ import annotations

import torch

from lagdsl.runtime.state.optimizers import KahanAdamW


def _run(optimizer_class: type, dtype: torch.dtype, steps: int, lr: float) -> torch.Tensor:
    """The weights after `steps` steps from the same start (bf16 values) on the same gradients;
    with compensated writes, the weight plus its compensation (what the next step continues from)."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(64, 32).to(torch.bfloat16).to(dtype))
    optimizer = optimizer_class([weight], lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        weight.grad = torch.randn(weight.shape, generator=data).to(torch.bfloat16).to(dtype)
        optimizer.step()
    compensation = optimizer.state[weight].get("compensation") if steps else None
    return weight.detach().float() + (compensation.float() if compensation is not None else 0)


def test_the_step_is_torchs_adamw_in_fp32() -> None:
    mine, theirs = _run(KahanAdamW, torch.float32, 20, 1e-2), _run(torch.optim.AdamW, torch.float32, 20, 1e-2)
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_bf16_weights_follow_fp32_where_torchs_adamw_loses_the_small_updates() -> None:
    """At a healing LR (updates of about 5e-5, below bf16's resolution for weights near 1) torch's
    AdamW on bf16 weights barely moves them; the compensated writes keep pace with fp32."""
    reference = _run(torch.optim.AdamW, torch.float32, 200, 5e-5)
    start = _run(torch.optim.AdamW, torch.float32, 0, 5e-5)
    compensated = _run(KahanAdamW, torch.bfloat16, 200, 5e-5)
    plain = _run(torch.optim.AdamW, torch.bfloat16, 200, 5e-5)
    moved = (reference - start).abs().mean()
    assert (compensated - reference).abs().mean() < 0.05 * moved  # the way fp32 went (0.011 here), to rounding
    assert (plain - reference).abs().mean() > 0.5 * moved  # most of the way lost


def test_a_state_from_torchs_adamw_goes_on() -> None:
    """A checkpoint written before (torch's AdamW state, no compensation) resumes: it starts at zero."""
    weight = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    old = torch.optim.AdamW([weight], lr=1e-3)
    weight.grad = torch.ones_like(weight)
    old.step()
    new = KahanAdamW([weight], lr=1e-3)
    new.load_state_dict(old.state_dict())
    new.step()
    state = new.state[weight]
    assert state["compensation"].shape == weight.shape and state["compensation"].dtype == torch.bfloat16
    assert float(state["step"]) == 2  # the old step count goes on
