"""A mixture of experts in place of a block's MLP (`lagdsl.model.config.Mixture`).

The router is a linear map without bias (`router`, E x w). Each token's router probabilities are
the softmax over all E experts in float32; the k largest are its experts, their probabilities its
weights (divided by their sum where the mixture renormalizes). This is how Mixtral, Qwen2-MoE and
Qwen3-MoE route, so an imported checkpoint computes what transformers computes.

The experts are held stacked, one tensor per projection, as transformers 5 holds them: `gate_up`
(E x 2h x w: each expert's gate rows, then its up rows) and `down` (E x w x h). Growth, sharding
and export move whole tensors.

Dispatch is dropless and deterministic: every (token, slot) pair is sorted by its expert (a stable
sort), the experts' products are one grouped matrix product over the sorted rows
(`torch._grouped_mm`, which this torch has on CPU and CUDA; else one product per expert), and the
rows go back to their tokens by the inverse permutation, weighted and summed over the k slots in a
fixed order: no atomic adds, so the same inputs give the same bits.

Each forward pass leaves its router statistics (`Routing`) on the module for the model to collect:
the load-balancing loss of the Switch Transformer (E x sum_i f_i P_i, where f_i is the share of the
(token, slot) assignments that went to expert i and P_i the mean router probability of expert i: 1
when perfectly balanced; over each sequence, then averaged), the router z-loss of ST-MoE (the mean
of the squared log-sum-exp of the router logits) and the tokens each expert received.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lagdsl.model.config import GPTConfig, Mixture
from lagdsl.model.kernels import swiglu


@dataclass
class Routing:
    """One forward pass's router statistics: the auxiliary losses (scalars in the autograd graph,
    float32) and the (token, slot) assignments per expert (E counts, float32, no gradient)."""

    balance: torch.Tensor
    z_loss: torch.Tensor
    counts: torch.Tensor


class SwiGLU(nn.Module):
    """A dense SwiGLU MLP (the shared expert of a mixture): `gate_up` 2h x w, `down` w x h."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(swiglu(self.gate_up(x)))


class MoE(nn.Module):
    """Routed SwiGLU experts (and, where the mixture has one, a gated shared expert)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        mixture = config.moe
        assert mixture is not None
        self.mixture: Mixture = mixture
        width, experts, hidden = config.width, mixture.experts, mixture.hidden
        self.router = nn.Linear(width, experts, bias=False)
        self.gate_up = nn.Parameter(torch.empty(experts, 2 * hidden, width))
        self.down = nn.Parameter(torch.empty(experts, width, hidden))
        if mixture.shared:
            self.shared = SwiGLU(width, mixture.shared)
            self.shared_gate = nn.Linear(width, 1, bias=False)
        #: the statistics of the last forward pass (None before the first)
        self.routing: Routing | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = self.router(flat)
        weights, chosen, routing = route(logits, self.mixture, rows=flat.shape[0] // shape[-2] if x.dim() > 2 else 1)
        self.routing = routing
        out = experts_forward(flat, self.gate_up, self.down, weights.to(flat.dtype), chosen)
        if self.mixture.shared:
            out = out + torch.sigmoid(self.shared_gate(flat)) * self.shared(flat)
        return out.reshape(shape)


def route(logits: torch.Tensor, mixture: Mixture, rows: int = 1) -> tuple[torch.Tensor, torch.Tensor, Routing]:
    """Each token's top-k weights (float32) and experts from its router logits (tokens x E, the
    tokens of `rows` sequences of equal length, in order), and the routing's statistics.

    The load-balancing loss is the Switch Transformer's, E x sum_i f_i P_i, taken over each
    sequence and averaged over the sequences (DeepSeek's sequence-wise form): a mean over rows, like
    the language-model loss, so that N ranks or micro-batches, each computing it on its rows,
    compute what one process does on the whole batch."""
    experts = mixture.experts
    probs = torch.softmax(logits.float(), dim=-1)
    weights, chosen = torch.topk(probs, mixture.top_k, dim=-1)
    if mixture.renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    with torch.no_grad():
        per_row = chosen.reshape(rows, -1)
        assigned = torch.zeros(rows, experts, device=logits.device).scatter_add_(
            1, per_row, torch.ones(per_row.shape, device=logits.device)
        )
    share = assigned / per_row.shape[1]  # f_i of each row
    balance = experts * (share * probs.reshape(rows, -1, experts).mean(dim=1)).sum(dim=-1).mean()
    z_loss = torch.logsumexp(logits.float(), dim=-1).square().mean()
    return weights, chosen, Routing(balance, z_loss, assigned.sum(dim=0))


def load_shares(counts: torch.Tensor) -> list[list[float]]:
    """Each block's share of its (token, slot) assignments per expert, from counts (blocks x E)."""
    return (counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)).tolist()


def experts_forward(
    x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor
) -> torch.Tensor:
    """sum over each row's k slots of weight x expert(x), the experts SwiGLU MLPs given stacked
    (`gate_up` E x 2h x w, `down` E x w x h); rows x w in, rows x w out."""
    rows, k = chosen.shape
    slots = chosen.reshape(-1)
    order = torch.argsort(slots, stable=True)  # (token, slot) pairs grouped by expert, in token order
    counts = torch.bincount(slots, minlength=gate_up.shape[0])
    sorted_x = x[order // k]
    hidden = swiglu(grouped_linear(sorted_x, gate_up, counts))
    sorted_y = grouped_linear(hidden, down, counts)
    y = sorted_y[torch.argsort(order)].reshape(rows, k, -1)  # back to (token, slot)
    return (y * weights.unsqueeze(-1)).sum(dim=1)


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Rows of `x` grouped by expert (`counts[e]` rows for expert e, in order) times each group's
    expert's `weight[e]` (E x out x in) transposed, as `F.linear` does: rows x out. Under autocast
    both in the autocast dtype, as `F.linear` would take them."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        dtype = torch.get_autocast_dtype(kind)
        x, weight = x.to(dtype), weight.to(dtype)
    if grouped_mm_supports(x, weight):
        offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
        return torch._grouped_mm(x, weight.transpose(-2, -1), offs=offsets)
    return loop_linear(x, weight, counts)


def loop_linear(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """`grouped_linear` as one product per expert: every expert's, an empty one's too, so that every
    expert's weights are in the autograd graph (a data-parallel wrapper expects a gradient for each)."""
    parts = torch.split(x, counts.tolist())
    return torch.cat([F.linear(part, weight[e]) for e, part in enumerate(parts)])


def grouped_mm_supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `torch._grouped_mm` takes these operands: rows of both sides 16-byte multiples; on a
    CPU in float32 or bfloat16, on CUDA in bfloat16 on a GPU of compute capability 9 or more."""
    if not hasattr(torch, "_grouped_mm") or x.dtype != weight.dtype:
        return False
    size = x.element_size()
    if (weight.shape[-1] * size) % 16 or (weight.shape[-2] * size) % 16:
        return False
    if x.device.type == "cpu":
        return x.dtype in (torch.float32, torch.bfloat16)
    if x.device.type != "cuda" or x.dtype != torch.bfloat16:
        return False
    return torch.cuda.get_device_capability(x.device)[0] >= 9
