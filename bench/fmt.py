"""The language tools' speed: `lagdsl fmt` against `lagdsl validate`, and the language server's
diagnostics after a one-character edit.

1. `lagdsl fmt` of the generated 1,000-stage LAG schedule (bench/validate.py's), whole process,
   against `lagdsl validate` of the same file, runs interleaved: the median of each, and their
   ratio (target <= 1.3x). Each fmt run rewrites a fresh copy of the unformatted text.
2. `lagdsl lsp`: a 500-line schedule is opened, then 20 one-character edits are sent (a digit of a
   `train` duration changed); the time from sending each change to receiving its diagnostics
   (median, target <= 100 ms).

Writes bench/fmt.json; with --update-docs, the table in docs/benchmarks.md (`bench:fmt`).

    python bench/fmt.py [--runs 9] [--edits 20] [--update-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, cores, publish, wall
from bench.validate import generated


def process_times(runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        original = Path(tmp) / "generated-1000.txt"
        original.write_text(generated(1000))
        target = Path(tmp) / "generated-1000.grow"
        validate = [sys.executable, "-m", "lagdsl", "validate", str(target)]
        fmt = [sys.executable, "-m", "lagdsl", "fmt", str(target)]
        shutil.copy(original, target)
        wall(validate)  # warm the file cache and lark's parser cache
        fmt_times, validate_times = [], []
        for _ in range(runs):
            shutil.copy(original, target)
            validate_times.append(wall(validate))
            fmt_times.append(wall(fmt))
        assert target.read_text() != original.read_text(), "fmt changed nothing: the benchmark measures no work"
    fmt_s, validate_s = statistics.median(fmt_times), statistics.median(validate_times)
    return {
        "runs": runs,
        "lines": generated(1000).count("\n"),
        "fmt_median_s": fmt_s,
        "validate_median_s": validate_s,
        "ratio": fmt_s / validate_s,
        "target_ratio": 1.3,
    }


def schedule_of_lines(lines: int) -> str:
    """A valid LAG schedule of about `lines` lines."""
    stages = 1
    while generated(stages + 1).count("\n") <= lines:
        stages += 1
    return generated(stages)


def lsp_latency(edits: int) -> dict[str, object]:
    from lsprotocol import types as lsp
    from pygls.lsp.client import LanguageClient

    text = schedule_of_lines(500)
    line = text.split("\n").index("  train 100 steps", 20)  # a stage's `train`, in the middle of the file

    async def main() -> list[float]:
        client = LanguageClient("bench", "v1")
        arrived = asyncio.Event()
        counts: list[int] = []

        @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
            counts.append(len(params.diagnostics))
            arrived.set()

        await client.start_io(sys.executable, "-m", "lagdsl", "lsp")
        await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
        client.initialized(lsp.InitializedParams())
        uri = (ROOT / "bench" / "latency.grow").as_uri()
        client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(uri=uri, language_id="grow", version=1, text=text))
        )
        await asyncio.wait_for(arrived.wait(), 60)
        times = []
        lines = text.split("\n")
        for version in range(2, edits + 2):
            lines[line] = f"  train 10{version % 10} steps"  # one character changed
            arrived.clear()
            start = time.perf_counter()
            client.text_document_did_change(
                lsp.DidChangeTextDocumentParams(
                    text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    content_changes=[lsp.TextDocumentContentChangeWholeDocument(text="\n".join(lines))],
                )
            )
            await asyncio.wait_for(arrived.wait(), 60)
            times.append(time.perf_counter() - start)
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
        return times

    times = asyncio.run(main())
    return {
        "lines": text.count("\n"),
        "edits": edits,
        "median_ms": 1000 * statistics.median(times),
        "max_ms": 1000 * max(times),
        "target_median_ms": 100,
    }


def table(results: dict[str, Any]) -> str:
    p, s = results["process"], results["lsp"]
    return "\n".join(
        [
            f"Measured on {results['machine']} with Python {results['python']} (`python bench/fmt.py`).",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| `lagdsl fmt` of the generated 1,000-stage schedule ({p['lines']} lines), whole process "
            f"(median of {p['runs']}) | {p['fmt_median_s'] * 1000:.0f} ms | |",
            f"| `lagdsl validate` of the same file | {p['validate_median_s'] * 1000:.0f} ms | |",
            f"| fmt / validate | {p['ratio']:.2f}x | <= {p['target_ratio']}x |",
            f"| `lagdsl lsp` diagnostics after a one-character edit, {s['lines']}-line schedule "
            f"(median of {s['edits']}; max {s['max_ms']:.0f} ms) | {s['median_ms']:.0f} ms | "
            f"<= {s['target_median_ms']} ms |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    results = {
        "machine": f"{platform.machine()}, {cores()} cores",
        "python": platform.python_version(),
        "process": process_times(args.runs),
        "lsp": lsp_latency(args.edits),
    }
    publish("fmt", results, table(results), args.update_docs)


if __name__ == "__main__":
    main()
