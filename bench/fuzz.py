"""Soak: the checker and the plan builder against many hostile and mutated inputs.

Two generators, half the inputs each. Mutations: a shipped schedule with tokens deleted,
duplicated, swapped or replaced; one with hostile pieces inserted (deep nesting, numbers beyond
every limit, digit runs glued to letters, a byte-order mark, absurd counts); random text from the
language's alphabet; random Unicode; or 100 KB of repeated junk. Signatures
(`from_signatures`): schedules written from the grammar's statements and the catalogue's
signatures, every setting, call and operator with a random subset of its arguments (none too:
`lr cosine`), values in and out of range, degenerate structures (empty stages, pools and blocks,
`repeat 2 { }`), freezing and LR scales. Each input is checked, and planned when it validates.
Counts the inputs that raise (target 0), the slowest one (target <= 1 s) and the peak memory.

Writes `bench/fuzz.json` and prints markdown; `--update-docs` puts it in docs/benchmarks.md between
the `bench:fuzz` markers. `--checkpoints N` soaks N damaged checkpoint folders instead
(`bench/damaged.py`: broken configs, weights, indexes and tokenizers, each read as `lagdsl run`
reads it) and writes `bench/fuzz_checkpoints.json` (`bench:fuzz_checkpoints`).

    python bench/fuzz.py [--inputs 100000] [--seed 0] [--update-docs]
    python bench/fuzz.py --checkpoints 10000 [--update-docs]
"""

from __future__ import annotations

import argparse
import io
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

from common import cores, publish  # noqa: E402

from lagdsl.lang import check_source  # noqa: E402
from lagdsl.lang.catalogue import (  # noqa: E402
    BUILTIN_OPERATORS,
    DATA,
    KEEP_MODES,
    LR_SCHEDULES,
    MODELS,
    OPTIMIZERS,
    PRECISIONS,
    SELECT_METRICS,
)
from lagdsl.lang.params import Param, Signature  # noqa: E402
from lagdsl.lang.schedule import PARTS  # noqa: E402
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


# ------------------------------------------------------------------------------ from the signatures

#: values by parameter kind: mostly ordinary, some at or past the edges
VALUES: dict[str, list[str]] = {
    "int": ["0", "1", "2", "3", "4", "8", "16", "32", "64", "256", "-1", "1000000000", "1.5"],
    "float": ["0.0", "0.001", "0.1", "0.5", "1.0", "3e-4", "-1.0", "1e30", "0.95", "nan_like"],
    "bool": ["true", "false", "1"],
    "str": ['"corpus/*.txt"', '"x"', '""', '"models/none"', "bare"],
    "files": ['"train.bin"', '["a.bin", "b.bin"]', '["shards/*.bin"]', "[]", "[1]", '"none/*.bin"'],
    "duration": ["0 steps", "1 step", "2 steps", "10 steps", "64 tokens", "10%", "100%", "1000000 steps"],
    "pair": ["(0.9, 0.95)", "(0.9)", "(1, 2, 3)", "(-1, 2)"],
    "ranges": ["[[0, 1], [0, 2]]", "[[0, 2]]", "[]", "[[2, 1]]", "[[0, 100]]", "[0, 1]"],
}
DURATIONS = ["1 step", "2 steps", "5 steps", "10 steps", "20 steps", "64 tokens", "10%", "50%", "0 steps"]


def _value(rng: random.Random, param: Param) -> str:
    if param.auto and rng.random() < 0.2:
        return "auto"
    if param.kind == "choice":
        return rng.choice([*param.choices, "nope"])
    if param.kind in ("int", "float") and rng.random() < 0.5:  # inside the declared range
        low = param.ge if param.ge is not None else (param.gt if param.gt is not None else 0)
        high = param.le if param.le is not None else (param.lt if param.lt is not None else low + 100)
        number = rng.uniform(float(low), float(min(high, low + 1000)))
        return str(int(number) or 1) if param.kind == "int" else f"{number:.4g}"
    return rng.choice(VALUES[param.kind])


def _call(rng: random.Random, sig: Signature, *, bare_ok: bool = True) -> str:
    """`sig`'s name, bare or called with a random subset of its parameters (the required ones
    usually among them, by position where it may be)."""
    chosen = [p for p in sig.params if rng.random() < (0.9 if p.required else 0.35)]
    if not chosen and bare_ok and rng.random() < 0.6:
        return sig.name
    args = []
    for p in chosen:
        value = _value(rng, p)
        by_position = p.name in sig.positional and not args and rng.random() < 0.7
        args.append(value if by_position else f"{p.name}={value}")
    return f"{sig.name}({', '.join(args)})"


def _operator(rng: random.Random, dim: str, names: list[str]) -> str:
    if names and rng.random() < 0.2:
        return rng.choice(names)
    entries = [e for e in BUILTIN_OPERATORS if e.dim == dim or rng.random() < 0.05]
    return _call(rng, rng.choice(entries or list(BUILTIN_OPERATORS)).signature)


def _part(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"layers({rng.randint(-1, 4)}, {rng.randint(0, 9)})"
    return rng.choice([*PARTS, "olde", "blocks"])


def _stage(rng: random.Random, name: str, ops: list[str], pools: list[str]) -> str:
    items = []
    for _ in range(rng.choice([0, 1, 1, 1, 2])):
        dim = rng.choice(["depth", "width", "depth", "height"])
        head = (
            f"grow {dim} {rng.choice(['to', 'by'])} {rng.choice(['1', '2', '3', '4', '6', '8', '16', '32', '64', '0'])}"
        )
        if rng.random() < 0.5:
            items.append(f"{head} with {_operator(rng, dim, ops)}")
            continue
        block = []
        if rng.random() < 0.9:
            if pools and rng.random() < 0.3:
                block.append(f"candidates {rng.choice(pools)}")
            else:
                block.append(f"candidates [{', '.join(_operator(rng, dim, ops) for _ in range(rng.randint(0, 3)))}]")
        if rng.random() < 0.9:
            block.append(f"probe {rng.choice(DURATIONS)}")
        if rng.random() < 0.4:
            window = f" over last {rng.choice(DURATIONS)}" if rng.random() < 0.4 else ""
            block.append(f"select lowest {rng.choice([*SELECT_METRICS, 'accuracy'])}{window}")
        if rng.random() < 0.3:
            block.append(f"keep {rng.choice([*KEEP_MODES, 'best'])}")
        items.append(f"{head} {{ {' '.join(block)} }}")
    if rng.random() < 0.2:
        items.append(f"rewarm {rng.choice(DURATIONS)}")
    if rng.random() < 0.1:
        items.append("reset optimizer")
    if rng.random() < 0.2:
        scales = [
            f"{rng.choice([*PARTS, 'x'])}={rng.choice(['0', '0.1', '1', '2', '-1'])}"
            for _ in range(1 + rng.randint(0, 2))
        ]
        items.append("lr_scale " + " ".join(scales))
    if rng.random() < 0.95:
        freeze = ""
        if rng.random() < 0.25:

            def target() -> str:
                if rng.random() < 0.5:
                    return _part(rng)
                return "[" + ", ".join(_part(rng) for _ in range(rng.randint(0, 3))) + "]"

            parts = [f"freeze {target()}" for _ in range(rng.randint(0, 2))]
            freeze = " { " + " ".join(parts) + " }"
        items.append(f"train {rng.choice(DURATIONS)}{freeze}")
    return f"stage {name} {{ {' '.join(items)} }}"


def _sane(rng: random.Random) -> str:
    """A schedule that usually validates: a small `gpt`, every call and operator with a random
    subset of its optional arguments at ordinary values (none at all too: `lr cosine`)."""

    def call(sig: Signature, fixed: dict[str, str]) -> str:
        args = dict(fixed)
        for p in sig.params:
            if p.name not in args and not p.required and rng.random() < 0.3 and p.kind in ("float", "duration", "bool"):
                args[p.name] = {
                    "float": "0.0" if p.name in ("noise", "min", "dropout") else "0.1",
                    "duration": rng.choice(["1 step", "2 steps"]),
                    "bool": "true",
                }[p.kind]
        return sig.name if not args else f"{sig.name}({', '.join(f'{k}={v}' for k, v in args.items())})"

    width, depth = rng.choice([(16, 1), (32, 2), (24, 3)])
    lr = rng.choice(list(LR_SCHEDULES.values()))
    heads = width // 8
    lines = [
        "schedule sane",
        f"model gpt(context=16, width={width}, heads={heads}, depth={depth})",
        f"batch {rng.choice([2, 4])}",
        f"optimizer {call(rng.choice(list(OPTIMIZERS.values())), {'lr': '0.001'})}",
        f"lr {call(lr, {'decay': '2 steps'} if lr.name == 'wsd' else {})}",
    ]
    if rng.random() < 0.3:
        lines.append(f"eval every {rng.choice(['5 steps', '10 steps'])} (batches={rng.choice([1, 2])})")
    stages = [f"stage base {{ train {rng.choice([5, 10])} steps }}"]
    for i in range(rng.randint(0, 3)):
        dim = rng.choice(["depth", "width"])
        entries = [e for e in BUILTIN_OPERATORS if e.dim == dim and e.name not in ("layers", "llama_pro")]
        grow_by = "by 1" if dim == "depth" else f"by {8 * rng.randint(1, 2)}"
        if dim == "width":
            entries = [e for e in entries if e.name != "hyperclone"]
        ops = [call(e.signature, {}) for e in rng.sample(entries, rng.randint(1, min(3, len(entries))))]
        if len(ops) == 1 or rng.random() < 0.3:
            grow = f"grow {dim} {grow_by} with {ops[0]}"
        else:
            k = rng.choice([0, 5])
            rules = ["", "select lowest loss", "select lowest val_loss"] + (
                ["select lowest loss over last 2 steps"] if k else []
            )
            grow = f"grow {dim} {grow_by} {{ candidates [{', '.join(ops)}] probe {k} steps {rng.choice(rules)} }}"
        scale = "lr_scale old=0.5" if dim == "width" else "lr_scale new=2"
        extra = rng.choice(["", "rewarm 2 steps", "reset optimizer", scale])
        freeze = " { freeze new }" if dim == "depth" and rng.random() < 0.2 else ""
        stages.append(f"stage g{i} {{ {grow} {extra} train 10 steps{freeze} }}")
    return "\n".join(lines + stages) + "\n"


def from_signatures(rng: random.Random) -> str:
    """A schedule written from the grammar's statements and the catalogue's signatures."""
    if rng.random() < 0.4:
        return _sane(rng)
    lines = [f"schedule s{rng.randint(0, 9)}"] if rng.random() < 0.8 else []
    if rng.random() < 0.95:
        lines.append(f"model {_call(rng, rng.choice(list(MODELS.values())), bare_ok=False)}")
    if rng.random() < 0.5:
        lines.append(f"data {_call(rng, rng.choice(list(DATA.values())))}")
    if rng.random() < 0.9:
        lines.append(f"batch {rng.choice(['1', '2', '4', '0', '3'])}" + (" accumulate 2" if rng.random() < 0.2 else ""))
    if rng.random() < 0.9:
        lines.append(f"optimizer {_call(rng, rng.choice(list(OPTIMIZERS.values())))}")
    if rng.random() < 0.7:
        lines.append(f"lr {_call(rng, rng.choice(list(LR_SCHEDULES.values())))}")
    optional = {
        "seed": ["0", "7", "-1"],
        "device": ["auto", "cpu", '"cuda:1"', "tpu"],
        "precision": [*PRECISIONS, "fp8"],
        "compile": ["on", "off", "maybe"],
        "parallel": ["ddp", "fsdp", "tp"],
        "probes": ["sequential", "parallel"],
        "total": ["40 steps", "1000 tokens", "10%"],
        "eval": ["every 5 steps", "every 5 steps (batches=2)", "every 0 steps", "every 10% (batches=1)"],
        "checkpoint": ["every 10 steps", "every 10 steps (keep=2)", "every 3 steps (keep=0)"],
        "log": ["every 1 step", "every 5 steps"],
    }
    for key, values in optional.items():
        if rng.random() < 0.15:
            lines.append(f"{key} {rng.choice(values)}")
    ops: list[str] = []
    pools: list[str] = []
    for i in range(rng.choice([0, 0, 1, 2])):
        name = f"op{i}"
        lines.append(f"operator {name} = {_operator(rng, rng.choice(['depth', 'width']), [])}")
        ops.append(name)
    for i in range(rng.choice([0, 0, 1])):
        name = f"pool{i}"
        lines.append(f"pool {name} = [{', '.join(_operator(rng, 'depth', ops) for _ in range(rng.randint(0, 3)))}]")
        pools.append(name)
    stages = [_stage(rng, f"s{i}", ops, pools) for i in range(rng.choice([0, 1, 2, 2, 3, 4]))]
    if rng.random() < 0.15:  # a repeat: of stages, or empty
        body = " ".join(_stage(rng, f"r{i}", ops, pools) for i in range(rng.choice([0, 1, 2])))
        stages.insert(rng.randint(0, len(stages)), f"repeat {rng.choice(['0', '1', '2', '3'])} {{ {body} }}")
    if rng.random() < 0.05:  # nothing but degenerate blocks: no stage anywhere
        stages = [rng.choice(["repeat 2 { }", "repeat 1 { }\nrepeat 3 { }", "repeat 2 { repeat 2 { } }"])]
    if rng.random() < 0.3:  # settings may stand in any order
        settings = lines[1:]
        rng.shuffle(settings)
        lines[1:] = settings
    return "\n".join(lines + stages) + "\n"


def mutated(rng: random.Random) -> str:
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


GENERATORS = {"mutations": mutated, "signatures": from_signatures}


def generate(rng: random.Random, generators: tuple[str, ...] = ("mutations", "signatures")) -> str:
    return GENERATORS[rng.choice(generators)](rng)


def soak(inputs: int, seed: int, generators: tuple[str, ...] = tuple(GENERATORS)) -> dict[str, object]:
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
        text = generate(rng, generators)
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
        "generators": list(generators),
        "targets": {"crashes": 0, "slowest_s": 1.0},
    }


def table(r: dict[str, object]) -> str:
    met = r["crashes"] == 0 and float(r["slowest_s"]) <= 1.0  # type: ignore[arg-type]
    return "\n".join(
        [
            f"Measured on {r['machine']} with Python {r['python']} (`python bench/fuzz.py --inputs {r['inputs']}`).",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| inputs checked ({' and '.join(r['generators'])}; seed {r['seed']}) | {r['inputs']:,} "
            f"({r['valid']:,} valid, planned too) | |",
            f"| inputs that raised | **{r['crashes']}** | 0 |",
            f"| slowest input | **{float(r['slowest_s']):.2f} s** | <= 1 s |",  # type: ignore[arg-type]
            f"| peak memory of the process | {float(r['peak_memory_mb']):.0f} MB | |",  # type: ignore[arg-type]
            f"| all inputs | {float(r['total_s']):.0f} s | |",  # type: ignore[arg-type]
            "",
            f"Targets: **{'met' if met else 'not met'}**.",
        ]
    )


def soak_checkpoints(count: int, seed: int) -> dict[str, object]:
    """`count` damaged checkpoint folders (`bench/damaged.py`), each read as `lagdsl run` reads it:
    how many gave an internal error (target 0), by kind of damage."""
    import collections
    import tempfile

    import damaged

    rng = random.Random(seed)
    kinds: collections.Counter[str] = collections.Counter()
    failures: list[dict[str, str]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        base, corpus = damaged.base_folder(Path(folder))
        for _ in range(count):
            what = damaged.damaged(base, Path(folder) / "case", rng)
            kinds[what.split(":")[0]] += 1
            error = damaged.read_as_run_does(Path(folder) / "case", corpus)
            if error is not None:
                failures.append({"damage": what, "error": error.strip().splitlines()[-1]})
    return {
        "machine": platform.machine(), "python": platform.python_version(), "folders": count, "seed": seed,
        "kinds": dict(sorted(kinds.items())), "internal_errors": len(failures), "failures": failures[:20],
        "total_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def checkpoints_table(r: dict[str, object]) -> str:
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in r["kinds"].items())  # type: ignore[attr-defined]
    return "\n".join([
        f"Measured on {r['machine']} with Python {r['python']} (`python bench/fuzz.py --checkpoints {r['folders']}`): "
        f"damaged checkpoint folders (by the first damage: {kinds}), each validated and, where it passed, its "
        "weights checked and loaded as `lagdsl run` does.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| folders (seed {r['seed']}) | {r['folders']:,} | |",
        f"| internal errors | **{r['internal_errors']}** | 0 |",
        f"| all folders | {float(r['total_s']):.0f} s | |",  # type: ignore[arg-type]
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generator", choices=[*GENERATORS, "both"], default="both")
    parser.add_argument("--checkpoints", type=int, help="soak N damaged checkpoint folders instead (bench/damaged.py)")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    if args.checkpoints:
        found = soak_checkpoints(args.checkpoints, args.seed)
        publish("fuzz_checkpoints", found, checkpoints_table(found), args.update_docs)
        sys.exit(1 if found["internal_errors"] else 0)
    generators = tuple(GENERATORS) if args.generator == "both" else (args.generator,)
    results = soak(args.inputs, args.seed, generators)
    publish("fuzz", results, table(results), args.update_docs)
    sys.exit(1 if results["crashes"] else 0)


if __name__ == "__main__":
    main()
