"""Importing a pretrained checkpoint, and the up-scaling operators, against their baselines.

1. Import: a sharded Llama checkpoint of about 125M parameters (random weights, saved by
   `transformers`) read by lagdsl (`lagdsl.model.hub.load_pretrained`: meta device, memory-mapped
   safetensors, one tensor at a time) against `AutoModelForCausalLM.from_pretrained` of the same
   folder, each in a fresh process, alternating, `--repeats` times: wall time of the load and of
   reading every weight once (a loader that maps the files lazily pays for the reading there), and
   the process's peak RSS above what it held once its libraries were imported. Target <= 1.0x on both.
2. Operators: each up-scaling operator on the imported model (12 -> 18 layers, width x 2) against
   one copy of as many bytes as the grown model holds (`torch.Tensor.copy_`), median of repeats.

Writes `bench/pretrained.json` and prints markdown; `--update-docs` puts it in docs/benchmarks.md
between the `bench:pretrained` markers.

    python bench/pretrained.py [--repeats 3] [--update-docs]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cores, update_docs  # noqa: E402

CONFIG = dict(
    vocab_size=32_000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
    num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False,
)  # fmt: skip

#: what each fresh process runs: import its libraries, note the RSS, load, report
LOADERS = {
    "lagdsl": """
import torch
from lagdsl.families import family_of, read_config
from lagdsl.model.hub import config_of, load_pretrained
{probe}
family = family_of(read_config(FOLDER)); arch = family.arch(read_config(FOLDER))
model = load_pretrained(FOLDER, family, config_of(arch))
""",
    "transformers": """
import torch, transformers
from transformers import AutoModelForCausalLM
{probe}
model = AutoModelForCausalLM.from_pretrained(FOLDER, dtype=torch.float32)
""",
}
#: the peak is this process's own high-water mark (`VmHWM`, reset once the libraries are in), not
#: `ru_maxrss`, which Linux carries over from the parent through fork and exec
PROBE = """
import time
def status_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the high-water mark to the current RSS
BASE = status_kib("VmRSS"); START = time.perf_counter()
"""
REPORT = """
with torch.no_grad():  # every weight read once, as a first forward pass reads them (a lazy load pays here)
    total = sum(float(p.float().sum()) for p in model.parameters())
SECONDS = time.perf_counter() - START
n = sum(p.numel() for p in model.parameters())
print(json.dumps({"seconds": SECONDS, "peak_mib": (status_kib("VmHWM") - BASE) / 1024, "params": n}))
"""


def load_once(kind: str, folder: Path) -> dict[str, float]:
    code = f"import json\nfrom pathlib import Path\nFOLDER = Path({str(folder)!r})\n"
    code += LOADERS[kind].format(probe=PROBE) + REPORT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def operators(folder: Path, repeats: int) -> list[dict[str, object]]:
    import torch

    from lagdsl.families import family_of, read_config
    from lagdsl.model.hub import config_of, load_pretrained
    from lagdsl.ops.core import GrowthSpec, grow

    family = family_of(read_config(folder))
    config = config_of(family.arch(read_config(folder)))
    cases = [
        ("layers([[0, 9], [3, 12]])", GrowthSpec("layers", "depth", 18, {"ranges": ((0, 9), (3, 12))})),
        ("llama_pro", GrowthSpec("llama_pro", "depth", 18)),
        ("copy_top", GrowthSpec("copy_top", "depth", 18)),
        ("hyperclone(noise=0)", GrowthSpec("hyperclone", "width", 1536, {"noise": 0.0})),
        ("hyperclone (width x 2, noise 0.1)", GrowthSpec("hyperclone", "width", 1536, {"noise": 0.1})),
    ]
    rows = []
    for label, spec in cases:
        grown_times, copy_times, nbytes = [], [], 0
        for _ in range(repeats):
            model = load_pretrained(folder, family, config)
            started = time.perf_counter()
            grown = grow(model, None, spec, torch.Generator().manual_seed(0)).model
            grown_times.append(time.perf_counter() - started)
            nbytes = sum(p.numel() * p.element_size() for p in grown.parameters())
            del model, grown
            source, target = torch.ones(nbytes // 4), torch.empty(nbytes // 4)
            started = time.perf_counter()
            target.copy_(source)
            copy_times.append(time.perf_counter() - started)
            del source, target
        op, copy = statistics.median(grown_times), statistics.median(copy_times)
        rows.append({"operator": label, "seconds": op, "copy_seconds": copy, "grown_mib": nbytes / 2**20,
                     "ratio": op / copy})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llama-125m"
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**CONFIG))
        model.save_pretrained(folder, max_shard_size="100MB")
        params = sum(p.numel() for p in model.parameters())
        del model
        shards = len(list(folder.glob("*.safetensors")))
        runs: dict[str, list[dict[str, float]]] = {"lagdsl": [], "transformers": []}
        for _ in range(args.repeats):
            for kind in ("lagdsl", "transformers"):
                runs[kind].append(load_once(kind, folder))
        ops = operators(folder, args.repeats)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "peak_mib")} for k, v in runs.items()}
    result = {
        "machine": f"{platform.machine()}, {cores()} cores, torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        "params": params,
        "shards": shards,
        "repeats": args.repeats,
        "import": med,
        "time_ratio": med["lagdsl"]["seconds"] / med["transformers"]["seconds"],
        "memory_ratio": med["lagdsl"]["peak_mib"] / med["transformers"]["peak_mib"],
        "runs": runs,
        "operators": ops,
    }
    (ROOT / "bench" / "pretrained.json").write_text(json.dumps(result, indent=2) + "\n")
    table = [
        f"A Llama checkpoint of {params / 1e6:.0f}M parameters in {shards} safetensors shards, fp32, median of "
        f"{args.repeats} fresh processes each ({result['machine']}):",
        "",
        "| import | wall time (s) | peak RSS above the libraries (MiB) |",
        "|---|---:|---:|",
        *(f"| {k} | {v['seconds']:.2f} | {v['peak_mib']:.0f} |" for k, v in med.items()),
        f"| **lagdsl / transformers** | **{result['time_ratio']:.2f}x** | **{result['memory_ratio']:.2f}x** |",
        "",
        "| operator (12 -> 18 layers, or width x 2) | seconds | a copy of the grown model's bytes (s) | ratio |",
        "|---|---:|---:|---:|",
        *(f"| `{r['operator']}` | {r['seconds']:.2f} | {r['copy_seconds']:.3f} | {r['ratio']:.2f}x |" for r in ops),
    ]
    text = "\n".join(table)
    print(text)
    if args.update_docs:
        update_docs("pretrained", text)


if __name__ == "__main__":
    main()
