"""Soak: the checker and the plan builder against many hostile and mutated inputs.

Every input is one of: a shipped schedule with tokens deleted, duplicated, swapped or replaced; one
with hostile pieces inserted (deep nesting, numbers beyond every limit, digit runs glued to
letters, a byte-order mark, absurd counts); random text from the language's alphabet; random
Unicode; or 100 KB of repeated junk. Each is checked, and planned when it validates. Counts the
inputs that raise (target 0), the slowest one (target <= 2 s) and the process's peak memory.

Writes `bench/fuzz.json` and prints markdown; `--update-docs` puts it in docs/benchmarks.md between
the `bench:fuzz` markers.

    python bench/fuzz.py [--inputs 100000] [--seed 0] [--update-docs]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import re
import resource
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, update_docs  # noqa: E402

from lagdsl.lang import check_source  # noqa: E402
from lagdsl.lang.source import Source  # noqa: E402
from lagdsl.plan import build_plan  # noqa: E402
from lagdsl.plan.render import print_table, to_json  # noqa: E402

EXAMPLES = [p.read_text() for p in sorted((ROOT / "schedules").glob("*.grow"))]
TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|[A-Za-z0-9_.%]+|.', re.S)
ALPHABET = [*'abcdeglmnoprstwxyz_0123456789 \n\t{}()[]=,.%#"\\-+@;kMB', "stage", "grow", "train"]
REPLACEMENTS = ["0", "-1", "1.5", "x", "}", "{", "(", '"', "%", "steps", "by", "to", "1e9", "with"]
#: What an adversary writes: deep nesting, numbers beyond every limit, digit runs glued to letters
#: (once quadratic to reject), a byte-order mark, absurd counts and intervals. tests/test_fuzz.py
#: inserts the same pieces.
HOSTILE = [
    "(" * 300 + "1" + ")" * 300,
    "[" * 300 + "a" + "]" * 300,
    "9" * 5000,
    "1" * 16000 + "x",
    "1e400",
    "-1e309",
    "1" + "0" * 400,
    "\ufeff",
    "repeat 100000000 {",
    "eval every 1 step",
    "train 1000000000000 steps",
    "depth=100000000",
    "width=6, heads=2",
    "1_000_",
    '"\\q"',
]


def generate(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:  # a shipped schedule, mutated
        parts = TOKEN.findall(rng.choice(EXAMPLES))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(parts))
            action = rng.choice(["delete", "duplicate", "swap", "replace"])
            if action == "delete":
                del parts[i]
            elif action == "duplicate":
                parts.insert(i, parts[i])
            elif action == "swap":
                j = rng.randrange(len(parts))
                parts[i], parts[j] = parts[j], parts[i]
            else:
                parts[i] = rng.choice(REPLACEMENTS)
        return "".join(parts)
    if kind < 0.75:  # a shipped schedule with hostile pieces in it
        parts = TOKEN.findall(rng.choice(EXAMPLES))
        for _ in range(rng.randint(1, 3)):
            parts.insert(rng.randint(0, len(parts)), rng.choice(HOSTILE))
        return "".join(parts)
    if kind < 0.9:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 200)))
    if kind < 0.99:
        return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 200)))
    piece = rng.choice(["stage { ( [ ", "1 ", "x", "((", "9", "grow depth by ", "#\n", '"'])
    return piece * (100_000 // len(piece))


def soak(inputs: int, seed: int) -> dict[str, object]:
    for text in EXAMPLES:  # first uses import and build what later inputs reuse: not timed
        checked = check_source(Source("warm.grow", text))
        if checked.schedule is not None:
            print_table(build_plan(checked.schedule), io.StringIO())
    rng = random.Random(seed)
    crashes: list[dict[str, str]] = []
    slowest = (0.0, "")
    valid = 0
    started = time.perf_counter()
    for _ in range(inputs):
        text = generate(rng)
        t0 = time.perf_counter()
        try:
            result = check_source(Source("fuzz.grow", text))
            if result.schedule is not None:
                valid += 1
                plan = build_plan(result.schedule)
                to_json(plan)
                print_table(plan, io.StringIO())
        except Exception:
            crashes.append({"input": text[:300], "error": traceback.format_exc(limit=3)[-600:]})
        seconds = time.perf_counter() - t0
        if seconds > slowest[0]:
            slowest = (seconds, text)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {
        "machine": f"{platform.machine()}, {cores()} cores",
        "python": platform.python_version(),
        "inputs": inputs,
        "seed": seed,
        "valid": valid,
        "crashes": len(crashes),
        "crash_examples": crashes[:5],
        "slowest_s": slowest[0],
        "slowest_input": slowest[1][:120] + (f"... ({len(slowest[1]):,} characters)" if len(slowest[1]) > 120 else ""),
        "total_s": time.perf_counter() - started,
        "peak_memory_mb": peak_mb,
        "targets": {"crashes": 0, "slowest_s": 2.0},
    }


def table(r: dict[str, object]) -> str:
    met = r["crashes"] == 0 and float(r["slowest_s"]) <= 2.0  # type: ignore[arg-type]
    return "\n".join(
        [
            f"Measured on {r['machine']} with Python {r['python']} (`python bench/fuzz.py --inputs {r['inputs']}`).",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| inputs checked (mutated, hostile, random; seed {r['seed']}) | {r['inputs']:,} "
            f"({r['valid']:,} valid, planned too) | |",
            f"| inputs that raised | **{r['crashes']}** | 0 |",
            f"| slowest input | **{float(r['slowest_s']):.2f} s** | <= 2 s |",  # type: ignore[arg-type]
            f"| peak memory of the process | {float(r['peak_memory_mb']):.0f} MB | |",  # type: ignore[arg-type]
            f"| all inputs | {float(r['total_s']):.0f} s | |",  # type: ignore[arg-type]
            "",
            f"Targets: **{'met' if met else 'not met'}**.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    results = soak(args.inputs, args.seed)
    (ROOT / "bench" / "fuzz.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    print(text)
    if args.update_docs:
        update_docs("fuzz", text)
    sys.exit(1 if results["crashes"] else 0)


if __name__ == "__main__":
    main()
