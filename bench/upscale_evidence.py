"""Benchmark: pretrained up-scaling on two cores, through the pipeline users run (lagdsl pretrains,
exports and imports a base; `lagdsl study` and `lagdsl run` do the rest). Which recipe ends best,
whether a short probe picks it better than the loss at growth, what up-scaling saves against
training the larger model from scratch, and what freezing the old blocks keeps or costs: the
measurements are described in `bench/upscaling.py`, the sizes in its `SIZES["cpu"]`.

Writes `bench/upscale_evidence.json`; `--update-docs` puts the tables and the verdict in
docs/benchmarks.md (`bench:upscale_evidence`). Nothing else may run meanwhile (two cores; about an
hour). The work folder (`bench/out/upscale_evidence`) keeps every run.

    python bench/upscale_evidence.py [--size cpu|toy] [--reuse] [--update-docs]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import publish  # noqa: E402
from upscaling import SIZES, analyse, markdown, run  # noqa: E402

OUT = ROOT / "bench" / "out" / "upscale_evidence"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["cpu", "toy"], default="cpu")
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="analyse the last measurement again")
    args = parser.parse_args()
    work = OUT / args.size
    if args.reuse:
        result = analyse(SIZES[args.size], work)
    else:
        shutil.rmtree(work, ignore_errors=True)
        result = run(SIZES[args.size], work, say=lambda line: print(line, flush=True))
    path = None if args.size == "cpu" else work / "upscale_evidence.json"  # a toy run leaves the figures alone
    publish("upscale_evidence", result, markdown(result), args.update_docs and args.size == "cpu", path)


if __name__ == "__main__":
    main()
