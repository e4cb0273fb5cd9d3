"""Hand-written forward and backward passes for the model's elementwise parts, for eager mode.

In eager PyTorch every elementwise op is a kernel that reads and writes whole activations, and
autograd adds more: slicing q and k out of the fused `qkv` projection, rotating them and
concatenating the halves costs a zero-filled gradient per slice, a `cat` in each direction and
several products. On a CPU these passes, not the matrix products, are what separates a LLaMA-style
block from a GPT-2 one. The functions below compute the same values with a fraction of the memory
traffic:

- `rotary_qkv`: q and k rotated and v, from the fused projection, written straight into the
  (batch, heads, time, head) layout attention reads; the backward pass writes the whole `qkv`
  gradient into one buffer (no zero fills, no `cat`).
- `rms_norm`: RMSNorm from one norm reduction; the backward is the closed form.
- `swiglu`: silu(gate) * up from the fused `gate_up` projection; the backward writes both halves
  of the gradient into one buffer.

Each has a plain composition of PyTorch ops (`*_reference`) that computes the same function; the
model uses the plain one under `torch.compile` (the compiler fuses plain ops itself and need not
trace these) and where these are not written for the case (RMSNorm outside float32 on a CPU).
Tests check values and gradients of both against each other and with `gradcheck`.
`use_fused(False)` switches the fused ones off, to compare.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

_FUSED = True


@contextmanager
def use_fused(enabled: bool) -> Iterator[None]:
    """Within the block, use (or not) the fused passes; for tests and benchmarks."""
    global _FUSED
    before, _FUSED = _FUSED, enabled
    try:
        yield
    finally:
        _FUSED = before


def _fused() -> bool:
    return _FUSED and not torch.compiler.is_compiling()


# ------------------------------------------------------------------------------ rotary


def rotary_qkv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k and v, each (B, H, T, D), from `qkv` (B, T, 3, H, D); q and k rotated by position:
    each head's first half x1 and second half x2 become (x1 cos - x2 sin, x2 cos + x1 sin).
    `cos` and `sin` are (context, D / 2) tables."""
    if _fused():
        return _RotaryQKV.apply(qkv, cos, sin)
    return rotary_qkv_reference(qkv, cos, sin)


def rotary_qkv_reference(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v = qkv.unbind(2)
    return rotate(q, cos, sin).transpose(1, 2), rotate(k, cos, sin).transpose(1, 2), v.transpose(1, 2)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = _tables(cos, sin, x.shape[1], x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def _tables(cos: torch.Tensor, sin: torch.Tensor, time: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The tables for `time` positions, shaped (T, 1, D / 2) to broadcast over (B, T, H, D / 2)."""
    return cos[:time, None].to(dtype), sin[:time, None].to(dtype)


class _RotaryQKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cos, sin):
        batch, time, _, heads, size = qkv.shape
        half = size // 2
        cos, sin = _tables(cos, sin, time, qkv.dtype)
        # q and k rotated, stored (B, 2, H, T, D): attention reads each as a contiguous tensor
        out = qkv.new_empty((batch, 2, heads, time, size)).permute(0, 3, 1, 2, 4)
        x1, x2 = qkv[:, :, :2, :, :half], qkv[:, :, :2, :, half:]
        y1, y2 = out[..., :half], out[..., half:]
        cos2, sin2 = cos.unsqueeze(1), sin.unsqueeze(1)  # (T, 1, 1, D / 2): over q and k at once
        torch.mul(x1, cos2, out=y1)
        y1.addcmul_(x2, sin2, value=-1)
        torch.mul(x2, cos2, out=y2)
        y2.addcmul_(x1, sin2)
        ctx.save_for_backward(cos, sin)
        ctx.qkv_shape = qkv.shape
        return out[:, :, 0].transpose(1, 2), out[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_q, grad_k, grad_v):
        cos, sin = ctx.saved_tensors
        shape = ctx.qkv_shape
        half = shape[-1] // 2
        grad = torch.empty(shape, dtype=cos.dtype, device=cos.device)
        for i, g in enumerate((grad_q, grad_k)):
            out = grad[:, :, i]
            if g is None:
                out.zero_()
                continue
            g = g.transpose(1, 2)
            g1, g2 = g[..., :half], g[..., half:]
            o1, o2 = out[..., :half], out[..., half:]
            # the transpose of the rotation: (g1 cos + g2 sin, g2 cos - g1 sin)
            torch.mul(g1, cos, out=o1)
            o1.addcmul_(g2, sin)
            torch.mul(g2, cos, out=o2)
            o2.addcmul_(g1, sin, value=-1)
        if grad_v is None:
            grad[:, :, 2].zero_()
        else:
            grad[:, :, 2].copy_(grad_v.transpose(1, 2))
        return grad, None, None


# ------------------------------------------------------------------------------ RMSNorm


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension."""
    if _fused() and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.device.type == "cpu":
        return _RMSNorm.apply(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        size = x.shape[-1]
        rstd = torch.linalg.vector_norm(x, 2, -1, keepdim=True).square_().div_(size).add_(eps).rsqrt_()
        normed = x * rstd
        ctx.save_for_backward(normed, rstd, weight)
        return normed * weight

    @staticmethod
    def backward(ctx, grad):
        normed, rstd, weight = ctx.saved_tensors
        size = normed.shape[-1]
        grad_weight = None
        # g x_hat, by rows: its column sums are the weight's gradient, and its product with the
        # weight gives each row's sum of g w x_hat, which the input's gradient needs
        g_normed = (grad * normed).reshape(-1, size)
        grad_weight = g_normed.sum(0) if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d/dx of (x * rstd) * w: rstd * (g w - x_hat * mean(g w x_hat))
            mean = (g_normed @ weight).div_(size).view(rstd.shape)
            grad_x = (grad * weight).addcmul_(normed, mean, value=-1).mul_(rstd)
        return grad_x, grad_weight, None


# ------------------------------------------------------------------------------ SwiGLU


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, where `gate_up` holds gate and up side by side in its last dimension."""
    if _fused():
        return _SwiGLU.apply(gate_up)
    return swiglu_reference(gate_up)


def swiglu_reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up):
        gate, up = gate_up.chunk(2, dim=-1)
        activated = F.silu(gate)
        ctx.save_for_backward(gate_up, activated)
        return activated * up

    @staticmethod
    def backward(ctx, grad):
        gate_up, activated = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        out = torch.empty_like(gate_up)
        grad_gate, grad_up = out.chunk(2, dim=-1)
        torch.mul(grad, activated, out=grad_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=grad_gate)
        return out
