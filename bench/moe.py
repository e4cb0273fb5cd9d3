"""Benchmark: what a mixture of experts' training step costs, both sides measured in one run.

1. lagdsl's mixture (E = 8 experts, top-2, width 512) against a dense lagdsl model of the same
   active FLOPs (its MLP as wide as a token's two experts together): training tokens per second
   of one optimizer step (forward, backward, AdamW), the mixture's auxiliary losses included. The
   ratio makes the dispatch's cost visible (sorting, gathering, the grouped product). Target: the
   mixture at >= 0.6x the dense model's tokens/s.
2. lagdsl's mixture against transformers' `Qwen3MoeForCausalLM` on the same weights (a tiny-vocab
   Qwen3-MoE made by transformers, read by lagdsl) and the same batch: one optimizer step each.
   transformers computes no auxiliary loss unless asked (`output_router_logits`), lagdsl does.
   Target: >= 1.0x.

Each side runs a warm-up step, then the sides alternate `--repeats` times; the figure is the
median tokens/s, with min-max. Writes `bench/moe.json`; `--update-docs` puts the table in
docs/benchmarks.md.

    python bench/moe.py [--repeats 5] [--update-docs]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, publish  # noqa: E402

from lagdsl.families import family_of, read_config  # noqa: E402
from lagdsl.lang.arch import mlp_hidden  # noqa: E402
from lagdsl.model.config import GPTConfig, Mixture  # noqa: E402
from lagdsl.model.gpt import GPT  # noqa: E402
from lagdsl.model.hub import config_of, load_pretrained  # noqa: E402

WIDTH, HEADS, DEPTH, CONTEXT, BATCH, VOCAB = 512, 8, 4, 256, 8, 256
EXPERTS, TOP_K = 8, 2


def lagdsl_step(model: GPT) -> Callable[[torch.Tensor], None]:
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-4)

    def step(ids: torch.Tensor) -> None:
        _, loss = model(ids, ids)
        aux = model.aux_loss()
        assert loss is not None
        (loss if aux is None else loss + aux).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def hf_step(model: torch.nn.Module) -> Callable[[torch.Tensor], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(ids: torch.Tensor) -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def race(sides: dict[str, Callable[[torch.Tensor], None]], repeats: int) -> dict[str, dict[str, float]]:
    """Tokens per second of each side's step, alternating, after a warm-up step each."""
    ids = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=torch.Generator().manual_seed(0))
    for step in sides.values():
        step(ids)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, step in sides.items():
            start = time.perf_counter()
            step(ids)
            times[name].append(time.perf_counter() - start)
    tokens = BATCH * CONTEXT
    return {
        name: {
            "tokens_per_s": tokens / statistics.median(values),
            "min": tokens / max(values),
            "max": tokens / min(values),
        }
        for name, values in times.items()
    }


def versus_dense(repeats: int) -> dict[str, object]:
    hidden = mlp_hidden(WIDTH, "swiglu")
    mixture = Mixture(experts=EXPERTS, top_k=TOP_K, hidden=hidden)
    moe = GPT(GPTConfig(vocab=VOCAB, context=CONTEXT, width=WIDTH, heads=HEADS, depth=DEPTH, moe=mixture))
    dense = GPT(GPTConfig(vocab=VOCAB, context=CONTEXT, width=WIDTH, heads=HEADS, depth=DEPTH, ffn=TOP_K * hidden))
    for model in (moe, dense):
        model.init_weights(torch.Generator().manual_seed(0))
    result = race({"moe": lagdsl_step(moe), "dense": lagdsl_step(dense)}, repeats)
    return {
        "moe": result["moe"], "dense": result["dense"],
        "ratio": result["moe"]["tokens_per_s"] / result["dense"]["tokens_per_s"],
        "moe_params": moe.num_params(), "dense_params": dense.num_params(),
    }  # fmt: skip


def versus_transformers(repeats: int) -> dict[str, object]:
    import transformers

    config = transformers.Qwen3MoeConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, num_attention_heads=HEADS, num_key_value_heads=HEADS,
        head_dim=WIDTH // HEADS, num_hidden_layers=DEPTH, moe_intermediate_size=mlp_hidden(WIDTH, "swiglu"),
        num_experts=EXPERTS, num_experts_per_tok=TOP_K, norm_topk_prob=True, max_position_embeddings=CONTEXT,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    theirs = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as folder:
        theirs.save_pretrained(folder)
        family = family_of(read_config(Path(folder)))
        ours = load_pretrained(Path(folder), family, config_of(family.arch(read_config(Path(folder)))))
    theirs.train()
    result = race({"lagdsl": lagdsl_step(ours), "transformers": hf_step(theirs)}, repeats)
    return {
        "lagdsl": result["lagdsl"], "transformers": result["transformers"],
        "ratio": result["lagdsl"]["tokens_per_s"] / result["transformers"]["tokens_per_s"],
        "transformers_version": transformers.__version__,
    }  # fmt: skip


def table(result: dict) -> str:
    dense, hf = result["versus_dense"], result["versus_transformers"]

    def row(name: str, side: dict[str, float]) -> str:
        return f"{side['tokens_per_s']:,.0f} ({side['min']:,.0f}-{side['max']:,.0f})"

    return "\n".join([
        f"One training step, E = {EXPERTS}, top-{TOP_K}, width {WIDTH}, {DEPTH} layers, {BATCH} x {CONTEXT} tokens, "
        f"CPU ({result['cores']} cores), median of {result['repeats']} (min-max), tokens/s:",
        "",
        "| comparison | lagdsl mixture | other side | ratio | target |",
        "|---|---|---|---|---|",
        f"| vs a dense model of the same active FLOPs | {row('moe', dense['moe'])} | "
        f"{row('dense', dense['dense'])} | {dense['ratio']:.2f}x | >= 0.6x |",
        f"| vs transformers `Qwen3MoeForCausalLM` ({hf['transformers_version']}), same weights | "
        f"{row('lagdsl', hf['lagdsl'])} | {row('transformers', hf['transformers'])} | {hf['ratio']:.2f}x | >= 1.0x |",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(cores())
    result = {
        "cores": cores(), "repeats": args.repeats, "torch": torch.__version__, "machine": platform.machine(),
        "versus_dense": versus_dense(args.repeats), "versus_transformers": versus_transformers(args.repeats),
    }  # fmt: skip
    publish("moe", result, table(result), args.update_docs)


if __name__ == "__main__":
    main()
