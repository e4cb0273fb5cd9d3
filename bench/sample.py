"""Benchmark: generation speed of `lagdsl sample` (its KV-cache path) against `transformers`.

One model of each size, with random weights (speed does not depend on training), is exported with
`lagdsl export`'s code and loaded by `transformers.AutoModelForCausalLM`. Both then continue the
same prompt greedily for the same number of new tokens: lagdsl's `Generator.stream` (what `lagdsl
sample` runs) against `model.generate(do_sample=False)` (its own KV cache). Tokens per second,
model loading excluded; both sides alternate `--repeats` times and the figure is the median, with
min-max. The outputs are checked to be the same tokens. Target: >= 1.0x.

Writes `bench/sample.json`; `--update-docs` puts the table in docs/benchmarks.md.

    python bench/sample.py [--new-tokens 256] [--repeats 5] [--update-docs]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, update_docs  # noqa: E402

from lagdsl.model.export import export_model  # noqa: E402
from lagdsl.model.generate import Generator  # noqa: E402
from lagdsl.model.gpt import GPT, GPTConfig  # noqa: E402
from lagdsl.text.tokenizer import byte_level_json  # noqa: E402

SIZES = [  # (width, heads, depth): the quickstart's final size, and two larger
    (64, 4, 4),
    (256, 8, 6),
    (512, 8, 8),
]


def measure(width: int, heads: int, depth: int, new_tokens: int, repeats: int, prompt_len: int) -> dict:
    from transformers import AutoModelForCausalLM

    config = GPTConfig(vocab=256, context=1024, width=width, heads=heads, depth=depth)
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(0))
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        export_model(model.state_dict(), config, byte_level_json(), Path(folder))
        hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = list(Path(torch.__file__).read_bytes()[:prompt_len])
    ids = torch.tensor([prompt])

    def ours() -> tuple[float, list[int]]:
        start = time.perf_counter()
        out = list(Generator(model).stream(prompt, new_tokens))
        return time.perf_counter() - start, out

    def theirs() -> tuple[float, list[int]]:
        start = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(
                ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
            )
        return time.perf_counter() - start, out[0, len(prompt) :].tolist()

    ours(), theirs()  # warm up
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    outputs: dict[str, list[int]] = {}
    for _ in range(repeats):
        for name, side in (("ours", ours), ("theirs", theirs)):
            seconds, outputs[name] = side()
            times[name].append(seconds)
    same = outputs["ours"] == outputs["theirs"]
    rate = {k: new_tokens / statistics.median(v) for k, v in times.items()}
    return {
        "size": [width, heads, depth],
        "params": model.num_params(),
        "ours_tokens_per_s": round(rate["ours"], 1),
        "ours_range": [round(new_tokens / max(times["ours"]), 1), round(new_tokens / min(times["ours"]), 1)],
        "transformers_tokens_per_s": round(rate["theirs"], 1),
        "transformers_range": [
            round(new_tokens / max(times["theirs"]), 1), round(new_tokens / min(times["theirs"]), 1)
        ],
        "ratio": round(rate["ours"] / rate["theirs"], 3),
        "same_tokens": same,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=64, help="Prompt length in tokens.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(cores())
    import transformers

    rows = []
    for size in SIZES:
        row = measure(*size, args.new_tokens, args.repeats, args.prompt)
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "machine": f"{platform.machine()}, {cores()} cores",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "new_tokens": args.new_tokens,
        "prompt": args.prompt,
        "repeats": args.repeats,
        "rows": rows,
    }
    (ROOT / "bench" / "sample.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Measured on {result['machine']}, torch {result['torch']}, transformers {result['transformers']} "
        f"(`python bench/sample.py`): greedy, a {args.prompt}-token prompt, {args.new_tokens} new tokens, "
        f"median of {args.repeats} (min-max).",
        "",
        "| model (width, heads, depth) | params | `lagdsl sample` (KV cache), tokens/s | transformers `generate`, "
        "tokens/s | ratio (target >= 1.0) | same tokens |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lo, hi = row["ours_range"]
        tlo, thi = row["transformers_range"]
        lines.append(
            f"| {', '.join(map(str, row['size']))} | {row['params']:,} | {row['ours_tokens_per_s']:,.0f} "
            f"({lo:,.0f}-{hi:,.0f}) | {row['transformers_tokens_per_s']:,.0f} ({tlo:,.0f}-{thi:,.0f}) | "
            f"**{row['ratio']:.2f}x** | {'yes' if row['same_tokens'] else 'no'} |"
        )
    if args.update_docs:
        update_docs("sample", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
