"""The model's hand-written passes compute what the plain PyTorch compositions compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lagdsl.model import GPT, GPTConfig
from lagdsl.model.kernels import (
    _RMSNorm,
    rms_norm,
    rotary_qkv,
    rotary_qkv_reference,
    swiglu,
    swiglu_reference,
    use_fused,
)
from lagdsl.model.positions import rotary_tables


def _double(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.double().requires_grad_() for t in tensors]


def test_rotary_gradients_are_exact() -> None:
    cos, sin = (t.double() for t in rotary_tables(6, 8))
    qkv = torch.randn(2, 5, 3, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: rotary_qkv(x, cos, sin), (qkv,))


def test_rms_norm_gradients_are_exact() -> None:
    """The fused pass itself (the model takes it for float32 on a CPU), in float64."""
    x, w = _double(torch.randn(3, 4, 16), torch.rand(16) + 0.5)
    assert torch.autograd.gradcheck(lambda x, w: _RMSNorm.apply(x, w, 1e-6), (x, w))


def test_swiglu_gradients_are_exact() -> None:
    (gate_up,) = _double(torch.randn(3, 4, 12))
    assert torch.autograd.gradcheck(swiglu, (gate_up,))


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    time=st.integers(1, 9),
    heads=st.integers(1, 4),
    half=st.integers(1, 6),
    used=st.sampled_from(["qkv", "qk", "v", "q"]),
)
def test_rotary_matches_the_plain_composition(batch: int, time: int, heads: int, half: int, used: str) -> None:
    """Values and gradients, also when some of q, k, v do not reach the loss (no gradient)."""
    cos, sin = rotary_tables(12, 2 * half)
    qkv = torch.randn(batch, time, 3, heads, 2 * half, requires_grad=True)
    grads, outs = [], []
    for fused in (True, False):
        with use_fused(fused):
            q, k, v = rotary_qkv(qkv, cos, sin)
        outs.append((q, k, v))
        loss = sum((t * t.detach().sin()).sum() for name, t in zip("qkv", (q, k, v), strict=True) if name in used)
        grads.append(torch.autograd.grad(loss, qkv)[0])
    for a, b in zip(*outs, strict=True):
        assert a.shape == (batch, heads, time, 2 * half)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)
    # v passes through unrotated; at position 0 the rotation is the identity
    torch.testing.assert_close(outs[0][2], qkv[:, :, 2].transpose(1, 2))
    torch.testing.assert_close(outs[0][0][:, :, 0], qkv[:, 0, 0])


def test_rotary_rotates_each_pair_by_its_position_angle() -> None:
    """A unit vector in channel j of the first half at position t becomes (cos, sin) of t * f_j."""
    size, time = 8, 5
    cos, sin = rotary_tables(time, size)
    qkv = torch.zeros(1, time, 3, 1, size)
    qkv[:, :, 0, 0, 1] = 1.0
    q = rotary_qkv(qkv, cos, sin)[0][0, 0]
    freq = 1.0 / 10_000 ** (2 / size)
    angles = torch.arange(time) * freq
    torch.testing.assert_close(q[:, 1], angles.cos())
    torch.testing.assert_close(q[:, 1 + size // 2], angles.sin())
    assert q.norm(dim=-1).allclose(torch.ones(time))


@pytest.mark.parametrize("shape", [(7, 16), (2, 3, 32), (1, 1, 1)])
def test_rms_norm_matches_torch(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, requires_grad=True)
    w = (torch.rand(shape[-1]) + 0.5).requires_grad_()
    g = torch.randn(shape)
    results = []
    for fused in (True, False):
        with use_fused(fused):
            y = rms_norm(x, w, 1e-6)
        results.append((y, *torch.autograd.grad(y, (x, w), g)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][0], F.rms_norm(x, (shape[-1],), w, 1e-6))


def test_rms_norm_with_a_frozen_gain_or_input() -> None:
    x, w = torch.randn(4, 8, requires_grad=True), torch.rand(8) + 0.5
    (gx,) = torch.autograd.grad(rms_norm(x, w, 1e-6).sum(), (x,))
    (gx_ref,) = torch.autograd.grad(F.rms_norm(x, (8,), w, 1e-6).sum(), (x,))
    torch.testing.assert_close(gx, gx_ref)
    x, w = torch.randn(4, 8), (torch.rand(8) + 0.5).requires_grad_()
    (gw,) = torch.autograd.grad(rms_norm(x, w, 1e-6).sum(), (w,))
    (gw_ref,) = torch.autograd.grad(F.rms_norm(x, (8,), w, 1e-6).sum(), (w,))
    torch.testing.assert_close(gw, gw_ref)


def test_swiglu_matches_the_plain_composition() -> None:
    gate_up = torch.randn(2, 5, 12, requires_grad=True)
    g = torch.randn(2, 5, 6)
    y = swiglu(gate_up)
    (grad,) = torch.autograd.grad(y, gate_up, g)
    y_ref = swiglu_reference(gate_up)
    (grad_ref,) = torch.autograd.grad(y_ref, gate_up, g)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(grad, grad_ref)


@pytest.mark.parametrize("mlp", ["swiglu", "gelu"])
def test_the_model_trains_the_same_with_and_without_the_fused_passes(mlp: str) -> None:
    """Loss and every parameter's gradient agree to float32 rounding."""
    config = GPTConfig(vocab=64, context=16, width=32, heads=4, depth=3, mlp=mlp)
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(0))
    idx = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    results = []
    for fused in (True, False):
        with use_fused(fused):
            loss = model(idx, idx)[1]
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results.append((loss, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_rotary_reference_is_what_the_fused_path_replaces() -> None:
    """The plain composition is the half-split rotation written out (a guard on the guard)."""
    cos, sin = rotary_tables(4, 4)
    qkv = torch.randn(1, 4, 3, 1, 4)
    q = rotary_qkv_reference(qkv, cos, sin)[0][0, 0]
    x = qkv[0, :, 0, 0]
    expected = torch.cat((x[:, :2] * cos - x[:, 2:] * sin, x[:, 2:] * cos + x[:, :2] * sin), dim=-1)
    torch.testing.assert_close(q, expected)
