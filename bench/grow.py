"""Benchmark: growing a model against copying it, and our model's speed against a reference.

1. Growing a 12-layer, width-768 `gpt` to 24 layers with `copy_top`, Adam state included, against
   one `copy.deepcopy` of that model's state dict (target: ratio <= 2). Both run in this process,
   interleaved, medians of `--runs`.
2. Forward + backward tokens per second of our `gpt` (RMSNorm, rotary, SwiGLU, tied embeddings)
   against a plain nanoGPT-style model written below (LayerNorm, learned positions, GELU MLP,
   tied embeddings, no biases) of the same parameter count, at a few sizes (target: ratio >= 1);
   ours also with its hand-written passes switched off (`lagdsl.model.kernels.use_fused(False)`),
   and at the small sizes both models under `torch.compile` (which needs a C++ compiler on a CPU).

Writes `bench/grow.json` and prints markdown; `--update-docs` puts it in docs/benchmarks.md between the
`bench:grow` markers.

    python bench/grow.py [--runs 5] [--update-docs]
"""

from __future__ import annotations

import argparse
import copy
import functools
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

from common import publish  # noqa: E402

from lagdsl.model import GPT, GPTConfig  # noqa: E402
from lagdsl.model.kernels import use_fused  # noqa: E402
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


def step(model: nn.Module, idx: torch.Tensor, *, fused: bool = True) -> None:
    """One forward and backward pass (gradients accumulate; their size does not change the time)."""
    with use_fused(fused):
        out = model(idx, idx)
        (out[1] if isinstance(out, tuple) else out).backward()


def speed(sizes: list[tuple[int, int, int]], steps: int, compile_up_to: int) -> list[dict[str, object]]:
    """Forward + backward tokens/s of ours (with its fused passes, and with plain PyTorch ops
    only) and of the reference, at batch 8 x 128 tokens; up to width `compile_up_to` also both
    under `torch.compile`. The models alternate step by step and each figure is the median of
    `steps` timed steps: this machine's speed drifts by several percent over seconds, and
    alternation puts them all under the same drift."""
    batch, context, vocab = 8, 128, 256
    idx = torch.randint(0, vocab, (batch, context), generator=torch.Generator().manual_seed(0))
    rows = []
    for width, heads, depth in sizes:
        config = GPTConfig(vocab, context, width, heads, depth)
        ours = GPT(config)
        ours.init_weights(torch.Generator().manual_seed(0))
        ref = matched_reference(config)

        runs = {
            "ours": functools.partial(step, ours, fused=True),
            "ours_plain": functools.partial(step, ours, fused=False),
            "reference": functools.partial(step, ref),
        }
        if width <= compile_up_to:
            runs["ours_compiled"] = functools.partial(step, torch.compile(ours))
            runs["reference_compiled"] = functools.partial(step, torch.compile(ref))
        times: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(steps + 2):
            for name, run in runs.items():
                start = time.perf_counter()
                run(idx)
                if round_ >= 2:  # two rounds warm up
                    times[name].append(time.perf_counter() - start)
        tps = {name: batch * context / statistics.median(t) for name, t in times.items()}
        rows.append(
            {
                "width": width, "heads": heads, "depth": depth, "params": ours.num_params(),
                "reference_params": sum(p.numel() for p in ref.parameters()),
                "ours_tokens_per_s": tps["ours"], "ours_plain_tokens_per_s": tps["ours_plain"],
                "reference_tokens_per_s": tps["reference"], "ratio": tps["ours"] / tps["reference"],
                "ratio_plain": tps["ours_plain"] / tps["reference"], "steps": steps,
                "ratio_compiled": (
                    tps["ours_compiled"] / tps["reference_compiled"] if "ours_compiled" in tps else None
                ),
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
        f"Measured on {results['machine']}, torch {results['torch']} (`python bench/grow.py`).",
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
        "| model (width, heads, depth) | params (ours / reference) | ours, tokens/s | ours with plain ops, tokens/s "
        "| reference, tokens/s | ratio (target >= 1) | ratio with plain ops | ratio, both compiled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["speed"]:
        compiled = f"{row['ratio_compiled']:.2f}" if row.get("ratio_compiled") is not None else "not measured"
        lines.append(
            f"| {row['width']}, {row['heads']}, {row['depth']} | {row['params']:,} / {row['reference_params']:,} "
            f"| {row['ours_tokens_per_s']:,.0f} | {row['ours_plain_tokens_per_s']:,.0f} "
            f"| {row['reference_tokens_per_s']:,.0f} | **{row['ratio']:.2f}** | {row['ratio_plain']:.2f} | {compiled} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="timed steps of each model per size")
    parser.add_argument(
        "--compile-up-to", type=int, default=256, help="also time both models compiled up to this width (0: never)"
    )
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "growth": growth(args.runs),
        "speed": speed([(128, 4, 4), (256, 8, 4), (384, 6, 6), (512, 8, 6)], args.steps, args.compile_up_to),
    }
    publish("grow", results, table(results), args.update_docs)


if __name__ == "__main__":
    main()
