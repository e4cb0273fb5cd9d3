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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import evidence_main  # noqa: E402
from upscaling import SIZES, analyse, markdown, run  # noqa: E402


def main() -> None:
    evidence_main("upscale_evidence", __doc__, SIZES, run, analyse, markdown)


if __name__ == "__main__":
    main()
