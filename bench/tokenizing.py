"""Benchmark: tokenizing a corpus with lagdsl against calling `tokenizers` directly.

The corpus is the standard library's `.py` files in UTF-8 (about 30 MB, no download); the tokenizer is a
byte-level BPE of `--vocab` tokens trained on a part of it first. Three ways to the same tokens,
each from reading the files to having every token id:

- lagdsl: `lagdsl.text.encode.encode_corpus` into an empty cache (what the first run of a schedule
  with `tokenizer=` does: read, fingerprint, tokenize in parallel, write the memory-mapped file);
- `tokenizers` directly: read the files, `Tokenizer.encode_batch(texts)` (and `encode_batch_fast`,
  its variant without offsets), ids gathered into one array.

MB/s of source text, median of `--repeats` alternated runs (min-max); the ratio is against the
faster direct call. Target: >= 0.9x. Also the time to open the cached tokens a second time.
Writes `bench/tokenizing.json`; `--update-docs` puts the table in docs/benchmarks.md.

    python bench/tokenizing.py [--repeats 3] [--vocab 8192] [--update-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, update_docs  # noqa: E402

from lagdsl.runtime.data.corpus import stdlib_files  # noqa: E402
from lagdsl.text import encode  # noqa: E402


def train_tokenizer(files: list[Path], vocab: int):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tokenizer.train([str(f) for f in files], trainer)
    return tokenizer


def _utf8(path: Path) -> bool:
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    import tokenizers

    files = [p for p in stdlib_files() if _utf8(p)]  # a few test files are in other encodings on purpose
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    tokenizer = train_tokenizer(files[::10], args.vocab)

    def ours() -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["LAGDSL_CACHE"] = cache
            start = time.perf_counter()
            encoded = encode.encode_corpus(files, tokenizer, progress=False)
            seconds = time.perf_counter() - start
            count = len(encoded.tokens)
            start = time.perf_counter()
            again = encode.encode_corpus(files, tokenizer, progress=False)
            warm.append(time.perf_counter() - start)
            assert again.cached and len(again.tokens) == count
            del encoded, again
        return seconds, count

    def direct(method: str) -> tuple[float, int]:
        start = time.perf_counter()
        texts = [p.read_text(encoding="utf-8") for p in files]
        encodings = getattr(tokenizer, method)(texts, add_special_tokens=False)
        ids = np.concatenate([np.asarray(e.ids, dtype=np.uint16) for e in encodings])
        return time.perf_counter() - start, len(ids)

    sides = {
        "lagdsl": ours,
        "encode_batch": lambda: direct("encode_batch"),
        "encode_batch_fast": lambda: direct("encode_batch_fast"),
    }
    warm: list[float] = []
    times: dict[str, list[float]] = {k: [] for k in sides}
    counts: dict[str, int] = {}
    for side in sides.values():  # warm up (file cache, thread pool)
        side()
    for _ in range(args.repeats):
        for name, side in sides.items():
            seconds, counts[name] = side()
            times[name].append(seconds)
    rate = {k: megabytes / statistics.median(v) for k, v in times.items()}
    best_direct = max(rate["encode_batch"], rate["encode_batch_fast"])
    result = {
        "machine": f"{platform.machine()}, {cores()} cores",
        "tokenizers": tokenizers.__version__,
        "files": len(files),
        "megabytes": round(megabytes, 2),
        "vocab": args.vocab,
        "repeats": args.repeats,
        "mb_per_s": {k: round(v, 2) for k, v in rate.items()},
        "range_mb_per_s": {k: [round(megabytes / max(v), 2), round(megabytes / min(v), 2)] for k, v in times.items()},
        "tokens": counts,  # lagdsl's adds one end-of-text token per file
        "ratio": round(rate["lagdsl"] / best_direct, 3),
        "cached_open_s": round(statistics.median(warm), 4),
    }
    (ROOT / "bench" / "tokenizing.json").write_text(json.dumps(result, indent=2) + "\n")
    ranges = result["range_mb_per_s"]
    lines = [
        f"Measured on {result['machine']}, tokenizers {result['tokenizers']} (`python bench/tokenizing.py`): "
        f"{len(files):,} files, {megabytes:.1f} MB, a {args.vocab:,}-token BPE; median of {args.repeats} (min-max).",
        "",
        "| way | MB/s | tokens |",
        "|---|---|---|",
        *(
            f"| {label} | {rate[k]:.1f} ({ranges[k][0]:.1f}-{ranges[k][1]:.1f}) | {counts[k]:,} |"
            for k, label in (
                ("lagdsl", "lagdsl, first run (read, fingerprint, tokenize, write the cache)"),
                ("encode_batch", "`tokenizers` directly: `encode_batch`"),
                ("encode_batch_fast", "`tokenizers` directly: `encode_batch_fast`"),
            )
        ),
        f"| ratio, lagdsl to the faster direct call (target >= 0.9) | **{result['ratio']:.2f}x** | |",
        f"| opening the cached tokens the second time | {result['cached_open_s'] * 1000:.0f} ms | |",
    ]
    if args.update_docs:
        update_docs("tokenize", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
