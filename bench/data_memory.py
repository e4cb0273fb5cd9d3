"""Benchmark: memory of reading a corpus larger than memory, streamed (now) against read whole (before).

A JSON Lines corpus is generated from the standard library's source (documents of 1-8 KB in a
seeded order, repeated until the size is reached; no download), at each of `--sizes` GB. For each:

- tokenizing it with a byte-level BPE of `--vocab` tokens into an empty token cache
  (`encode_corpus`, what a run's first start does), in a fresh process: peak RSS (VmHWM), RSS once
  the libraries are imported, MB/s;
- reading it as bytes (`jsonl(...)` without a tokenizer) in a fresh process: peak RSS, MB/s;
- starting a 2-rank run on it under torchrun (2 steps of a tiny model; the token cache warm from
  the step above; the byte corpus cold, so one rank writes it while the other waits): the peak RSS
  of the largest rank (`ru_maxrss` of the launcher's children).

Before: the same steps with the reading of the version before streaming (each file read whole,
lines split in memory, byte corpora joined in memory, batches of 16 MB as lists), copied here, at
`--baseline-size` GB, alternated with the streamed reading for the throughput ratio (target:
streamed >= 0.9x). Targets: peak RSS per process <= 1 GB, and flat between the smallest and the
largest size. Nothing else may run meanwhile (two cores).

    python bench/data_memory.py [--sizes 0.5,2] [--baseline-size 0.25] [--vocab 8192] [--update-docs]

About 35 minutes on two cores (tokenizing 2 GB takes 13 of them); several GB of disk under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, publish  # noqa: E402

GB = 1 << 30

#: run in a fresh process: the reading of the version before streaming, as it was
BEFORE = textwrap.dedent("""
    import hashlib, json
    import numpy as np
    from tokenizers import Tokenizer

    def pieces(files, field, piece=1 << 20):
        for path in files:
            content = path.read_bytes()
            hashlib.sha256(path.name.encode() + b"\\0" + content)
            if field is None:
                text = content.decode("utf-8")
                start = 0
                while len(text) - start > piece:
                    cut = text.find("\\n", start + piece) + 1 or len(text)
                    yield text[start:cut], False
                    start = cut
                yield text[start:], True
            else:
                for raw in content.split(b"\\n"):
                    if raw.strip():
                        yield json.loads(raw)[field], True

    def tokenize(files, tokenizer, field, stream):
        eos = tokenizer.token_to_id("<|endoftext|>")
        batch, ends, size = [], [], 0
        def write(batch, ends):
            ids = []
            for encoding, last in zip(tokenizer.encode_batch_fast(batch, add_special_tokens=False), ends):
                ids += encoding.ids
                if last:
                    ids.append(eos)
            stream.write(np.array(ids, dtype=np.uint16).tobytes())
        for text, last in pieces(files, field):
            batch.append(text); ends.append(last); size += len(text)
            if size >= 16 << 20:
                write(batch, ends); batch, ends, size = [], [], 0
        if batch:
            write(batch, ends)

    def as_bytes(files, field):
        return np.frombuffer("\\n".join(text for text, _ in pieces(files, field)).encode(), dtype=np.uint8)
""")

MEASURE = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    mode, way, corpus, tokenizer_file, out = sys.argv[1:6]
    import numpy as np
    from tokenizers import Tokenizer
    from lagdsl.lang.schedule import JsonlData
    from lagdsl.runtime.data.corpus import load_corpus
    from lagdsl.text import encode
    tokenizer = Tokenizer.from_file(tokenizer_file)
    imported = status("VmRSS")
    start = time.perf_counter()
    files = [Path(corpus)]
    if way == "before":
        exec(compile(open(sys.argv[6]).read(), "before", "exec"))
        if mode == "tokens":
            with open(out, "wb") as stream:
                tokenize(files, tokenizer, "text", stream)
        else:
            data = as_bytes(files, "text")
            int(data[-1])
    elif mode == "tokens":
        encode.encode_corpus(files, tokenizer, "text", progress=False)
    else:
        corpus = load_corpus(JsonlData(glob=corpus), Path("."), progress=False)
        int(corpus.val[-1])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak": status("VmHWM"), "imported": imported}))
""")

SCHEDULE = """schedule memory
seed 0
model gpt(vocab=auto, context=64, width=64, heads=4, depth=1)
data {data}
batch 4
optimizer adamw(lr=1e-3)
stage base {{
  train 2 steps
}}
"""


def generate(path: Path, size: int, seed: int = 0) -> None:
    """A JSON Lines corpus of `size` bytes: stdlib source cut into documents, in a seeded order."""
    from lagdsl.runtime.data.corpus import stdlib_files

    texts = []
    for file in stdlib_files():
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    rng = random.Random(seed)
    documents = []
    for text in texts:
        start = 0
        while start < len(text):
            length = rng.randint(1000, 8000)
            documents.append(json.dumps({"text": text[start : start + length]}) + "\n")
            start += length
    written = 0
    with open(path, "w", encoding="utf-8") as stream:
        while written < size:
            rng.shuffle(documents)
            for line in documents:
                stream.write(line)
                written += len(line)
                if written >= size:
                    break


def measure(mode: str, way: str, corpus: Path, tokenizer: Path, work: Path, cache: Path) -> dict[str, float]:
    (work / "before.py").write_text(BEFORE)
    env = {**os.environ, "LAGDSL_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", MEASURE, mode, way, str(corpus), str(tokenizer), str(work / "out.bin"),
               str(work / "before.py")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=work)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["mb_per_s"] = corpus.stat().st_size / 1e6 / result["seconds"]
    (work / "out.bin").unlink(missing_ok=True)
    return result


def two_ranks(corpus: Path, tokenizer: Path | None, work: Path, cache: Path) -> int:
    """The peak RSS of the largest process of a 2-rank run (2 steps) on the corpus, in bytes."""
    data = f'jsonl("{corpus}"' + (f', tokenizer="{tokenizer}")' if tokenizer else ")")
    schedule = work / "memory.grow"
    schedule.write_text(SCHEDULE.format(data=data))
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "lagdsl", "run", "--quiet", str(schedule), "--out", str(out)]  # fmt: skip
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"
    )
    env = {**os.environ, "LAGDSL_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe, *launcher], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the 2-rank run failed:\n{done.stderr[-3000:]}")
    return int(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.5,2", help="corpus sizes in GB, comma-separated")
    parser.add_argument("--baseline-size", type=float, default=0.25, help="GB, for the comparison with before")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--work", type=Path, help="a folder for the corpora (several GB) [a temporary one]")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    from tokenizing import train_tokenizer

    from lagdsl.runtime.data.corpus import stdlib_files

    work = Path(tempfile.mkdtemp(prefix="lagdsl-data-memory-", dir=args.work))
    try:
        tokenizer_file = work / "tokenizer.json"
        train_tokenizer(stdlib_files()[:300], args.vocab).save(str(tokenizer_file))
        result: dict[str, object] = {
            "machine": f"{platform.machine()}, {cores()} cores", "vocab": args.vocab, "sizes_gb": sizes,
            "baseline_gb": args.baseline_size, "streamed": {}, "before": {},
        }  # fmt: skip
        baseline = work / "baseline.jsonl"
        generate(baseline, int(args.baseline_size * GB))
        rounds: dict[str, list[dict[str, float]]] = {"streamed": [], "before": []}
        for index in range(2):  # alternated, each into an empty cache
            for way in ("before", "streamed"):
                cache = work / f"cache-{way}-{index}"
                rounds[way].append(measure("tokens", way, baseline, tokenizer_file, work, cache))
                shutil.rmtree(cache, ignore_errors=True)
                print(way, rounds[way][-1], flush=True)
        for way in ("before", "streamed"):
            cache = work / f"cache-bytes-{way}"
            bytes_read = measure("bytes", way, baseline, tokenizer_file, work, cache)
            shutil.rmtree(cache, ignore_errors=True)
            result[way] = {"tokens": rounds[way], "bytes": bytes_read}  # type: ignore[index]
        mean = {w: sum(r["mb_per_s"] for r in rounds[w]) / len(rounds[w]) for w in rounds}
        result["throughput_ratio"] = round(mean["streamed"] / mean["before"], 3)
        baseline.unlink()
        by_size = {}
        for size in sizes:
            corpus = work / f"corpus-{size}.jsonl"
            generate(corpus, int(size * GB))
            cache = work / f"cache-{size}"
            tokens = measure("tokens", "streamed", corpus, tokenizer_file, work, cache)
            print(size, "tokens", tokens, flush=True)
            bytes_read = measure("bytes", "streamed", corpus, tokenizer_file, work, work / f"cache-bytes-{size}")
            shutil.rmtree(work / f"cache-bytes-{size}", ignore_errors=True)
            ranks_tokens = two_ranks(corpus, tokenizer_file, work, cache)  # the cache warm
            ranks_bytes = two_ranks(corpus, None, work, cache)  # the byte corpus cold: one rank writes it
            print(size, "ranks", ranks_tokens, ranks_bytes, flush=True)
            by_size[str(size)] = {"tokens": tokens, "bytes": bytes_read, "two_ranks_tokens_peak": ranks_tokens,
                                  "two_ranks_bytes_peak": ranks_bytes}  # fmt: skip
            shutil.rmtree(cache, ignore_errors=True)
            corpus.unlink()
        result["by_size"] = by_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish("data_memory", result, render(result), args.update_docs)


def render(result: dict) -> str:  # type: ignore[type-arg]
    mib = 1 << 20
    before, streamed = result["before"], result["streamed"]

    def peak(rows: list[dict[str, float]]) -> str:
        return f"{max(r['peak'] for r in rows) / mib:,.0f}"

    def speed(rows: list[dict[str, float]]) -> str:
        values = [r["mb_per_s"] for r in rows]
        return f"{sum(values) / len(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    lines = [
        f"{result['machine']}; BPE of {result['vocab']:,} tokens; peak RSS of each process (VmHWM, MiB).",
        "",
        f"| {result['baseline_gb']} GB JSON Lines | tokenizing: peak | tokenizing: MB/s (2 runs) | as bytes: peak |",
        "|---|---|---|---|",
        f"| read whole (before) | {peak(before['tokens'])} | {speed(before['tokens'])} | "
        f"{before['bytes']['peak'] / mib:,.0f} |",
        f"| streamed (now) | {peak(streamed['tokens'])} | {speed(streamed['tokens'])} | "
        f"{streamed['bytes']['peak'] / mib:,.0f} |",
        "",
        f"Throughput, streamed against before: **{result['throughput_ratio']}x** (target >= 0.9x).",
        "",
        "| corpus | tokenizing: peak | as bytes: peak | 2 ranks, tokens: largest | 2 ranks, bytes: largest |",
        "|---|---|---|---|---|",
    ]
    for size, row in result["by_size"].items():
        lines.append(
            f"| {size} GB | {row['tokens']['peak'] / mib:,.0f} | {row['bytes']['peak'] / mib:,.0f} | "
            f"{row['two_ranks_tokens_peak'] / mib:,.0f} | {row['two_ranks_bytes_peak'] / mib:,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
