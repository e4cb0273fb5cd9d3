"""Benchmark: growing a model against copying it, and our model's speed against a reference.

1. Growing a 12-layer, width-768 `gpt` to 24 layers with `copy_top`, Adam state included, against
   one `copy.deepcopy` of that model's state dict (target: ratio <= 2). Both run in this process,
   interleaved, medians of `--runs`.
2. Forward + backward tokens per second of our `gpt` (RMSNorm, rotary, SwiGLU, tied embeddings)
   against a plain nanoGPT-style model written below (LayerNorm, learned positions, GELU MLP,
   tied embeddings, no biases) of the same parameter count, at a few sizes (target: ratio >= 1).

Writes `bench/grow.json` and prints markdown; `--update-readme` puts it in the README between the
`bench:grow` markers.

    python bench/grow.py [--runs 5] [--update-readme]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import update_readme  # noqa: E402

from lagdsl.model import GPT, GPTConfig  # noqa: E402
from lagdsl.ops import GrowthSpec, grow  # noqa: E402

# ------------------------------------------------------------------------------ the reference


class RefBlock(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width, bias=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.ln2 = nn.LayerNorm(width, bias=False)
        self.fc = nn.Linear(width, hidden, bias=False)
        self.out = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Reference(nn.Module):
    """nanoGPT's model.py in miniature; `hidden` is chosen to match our parameter count."""

    def __init__(self, vocab: int, context: int, width: int, heads: int, depth: int, hidden: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(RefBlock(width, heads, hidden) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width, bias=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def matched_reference(config: GPTConfig) -> Reference:
    ours = GPT(config).num_params()
    # solve for the GELU hidden size that gives the same count (positions and norms included)
    fixed = config.vocab * config.width + config.context * config.width + config.width
    per_block = 4 * config.width**2 + 2 * config.width
    hidden = round(((ours - fixed) / config.depth - per_block) / (2 * config.width))
    return Reference(config.vocab, config.context, config.width, config.heads, config.depth, hidden)


def tokens_per_second(model: nn.Module, loss_of, batch: int, context: int, vocab: int, seconds: float) -> float:
    idx = torch.randint(0, vocab, (batch, context), generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # warm up
        loss_of(model, idx).backward()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loss_of(model, idx).backward()
        steps += 1
    return steps * batch * context / (time.perf_counter() - start)


def speed(sizes: list[tuple[int, int, int]], seconds: float) -> list[dict[str, object]]:
    rows = []
    for width, heads, depth in sizes:
        config = GPTConfig(256, 128, width, heads, depth)
        ours = GPT(config)
        ours.init_weights(torch.Generator().manual_seed(0))
        ref = matched_reference(config)
        batch = 8
        ours_tps, ref_tps = [], []
        for _ in range(3):  # interleaved
            ours_tps.append(tokens_per_second(ours, lambda m, i: m(i, i)[1], batch, 128, 256, seconds))
            ref_tps.append(tokens_per_second(ref, lambda m, i: m(i, i), batch, 128, 256, seconds))
        o, r = statistics.median(ours_tps), statistics.median(ref_tps)
        rows.append(
            {
                "width": width, "heads": heads, "depth": depth, "params": ours.num_params(),
                "reference_params": sum(p.numel() for p in ref.parameters()),
                "ours_tokens_per_s": o, "reference_tokens_per_s": r, "ratio": o / r,
            }
        )  # fmt: skip
    return rows


# ------------------------------------------------------------------------------ growth


def growth(runs: int) -> dict[str, object]:
    """Median times of growing 12 -> 24 layers, of one deepcopy of the state dict, and of one
    deepcopy of the state dict together with the optimizer's state (the bytes a copy_top growth
    of every layer must write: the copied weights and both Adam moments). Interleaved, after one
    untimed round that warms the allocator for all three."""
    config = GPTConfig(256, 1024, 768, 12, 12)
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4)
    for p in model.parameters():  # one step on zero gradients: every parameter gets Adam state
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    snapshot = copy.deepcopy((model.state_dict(), optimizer.state_dict()))

    def run_grow() -> float:
        start = time.perf_counter()
        grown = grow(model, optimizer, GrowthSpec("copy_top", "depth", 24), torch.Generator().manual_seed(0))
        took = time.perf_counter() - start
        assert grown.model.config.depth == 24 and len(grown.optimizer.state) == len(list(grown.model.parameters()))
        return took

    def run_copy(with_optimizer: bool) -> float:
        start = time.perf_counter()
        copied = copy.deepcopy((model.state_dict(), optimizer.state_dict()) if with_optimizer else model.state_dict())
        took = time.perf_counter() - start
        del copied
        return took

    times: dict[str, list[float]] = {"grow": [], "copy": [], "copy_with_optimizer": []}
    for round_ in range(runs + 1):
        grow_s, copy_s, both_s = run_grow(), run_copy(False), run_copy(True)
        model.load_state_dict(snapshot[0])
        optimizer.load_state_dict(snapshot[1])
        if round_:  # the first round warms up
            times["grow"].append(grow_s)
            times["copy"].append(copy_s)
            times["copy_with_optimizer"].append(both_s)
    g, c, b = (statistics.median(times[k]) for k in ("grow", "copy", "copy_with_optimizer"))
    return {
        "params": model.num_params(),
        "grow_s": g,
        "deepcopy_state_dict_s": c,
        "deepcopy_state_dict_and_optimizer_s": b,
        "ratio": g / c,
        "ratio_same_bytes": g / b,
        "target_ratio": 2.0,
        "runs": runs,
    }


def table(results: dict[str, object]) -> str:
    g = results["growth"]
    lines = [
        f"Measured on {results['machine']}, torch {results['torch']}, {results['threads']} threads "
        "(`python bench/grow.py`).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| grow 12 -> 24 layers, width 768, `copy_top` with Adam state (median of {g['runs']}) "
        f"| {g['grow_s'] * 1000:.0f} ms | |",
        f"| `copy.deepcopy` of the 12-layer model's state dict (median of {g['runs']}) "
        f"| {g['deepcopy_state_dict_s'] * 1000:.0f} ms | |",
        f"| ratio | **{g['ratio']:.2f}x** | <= {g['target_ratio']}x |",
        f"| `copy.deepcopy` of the state dict and the optimizer's state dict (the bytes the growth writes) "
        f"| {g['deepcopy_state_dict_and_optimizer_s'] * 1000:.0f} ms | |",
        f"| ratio to that | **{g['ratio_same_bytes']:.2f}x** | |",
        "",
        "| model (width, heads, depth) | params (ours / reference) | ours, tokens/s | reference, tokens/s "
        "| ratio (target >= 1) |",
        "|---|---|---|---|---|",
    ]
    for row in results["speed"]:
        lines.append(
            f"| {row['width']}, {row['heads']}, {row['depth']} | {row['params']:,} / {row['reference_params']:,} "
            f"| {row['ours_tokens_per_s']:,.0f} | {row['reference_tokens_per_s']:,.0f} | **{row['ratio']:.2f}** |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per speed measurement")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "growth": growth(args.runs),
        "speed": speed([(128, 4, 4), (256, 8, 4), (384, 6, 6)], args.seconds),
    }
    (ROOT / "bench" / "grow.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    print(text)
    if args.update_readme:
        update_readme("grow", text)


if __name__ == "__main__":
    main()
