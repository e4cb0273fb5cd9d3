"""Importing a pretrained checkpoint, and the up-scaling operators, against their baselines.

1. Import: a sharded Llama checkpoint of about 125M parameters (random weights, saved by
   `transformers`) read by lagdsl (`lagdsl.model.hub.load_pretrained`: meta device, memory-mapped
   safetensors, one tensor at a time) against `AutoModelForCausalLM.from_pretrained` of the same
   folder, each in a fresh process, alternating, `--repeats` times: wall time of the load and of
   reading every weight once (a loader that maps the files lazily pays for the reading there), and
   the process's peak RSS above what it held once its libraries were imported. Target <= 1.0x on both.
2. Operators: each up-scaling operator on the imported model (12 -> 18 layers, width x 2) against
   one copy of as many bytes as the grown model holds (`torch.Tensor.copy_`), median of repeats.
3. Families: a checkpoint of each family that is not Llama-shaped (Gemma 2 and 3, Phi-3, OLMo 2,
   GPT-NeoX, GPT-2; about 20M parameters each, random weights) imported as in 1 (target <= 1.0x),
   and one training step (forward, cross-entropy, backward, AdamW) of lagdsl's model against
   transformers' own on the same weights and batch (4 x 256 tokens), median of 5 after 2 warm-up
   steps, in this process (target: transformers' time / lagdsl's >= 1.0x).

Writes `bench/pretrained.json` and prints markdown; `--update-docs` puts it in docs/benchmarks.md
between the `bench:pretrained` markers.

    python bench/pretrained.py [--repeats 3] [--update-docs] [--only families]
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
from typing import Any

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


SMALL = dict(vocab_size=8192, hidden_size=384, intermediate_size=1024, num_hidden_layers=6, max_position_embeddings=512)
LLAMA_LIKE = dict(SMALL, num_attention_heads=6, num_key_value_heads=2)
NEOX_LIKE = dict(SMALL, num_attention_heads=6)
#: each family's config class and sizes (windows shorter than the step's 256 positions)
FAMILIES = {
    "gemma2": ("Gemma2Config", dict(LLAMA_LIKE, head_dim=64, sliding_window=128, query_pre_attn_scalar=64)),
    "gemma3": ("Gemma3TextConfig", dict(LLAMA_LIKE, head_dim=64, sliding_window=128, query_pre_attn_scalar=64)),
    "phi3": ("Phi3Config", dict(LLAMA_LIKE, partial_rotary_factor=0.75, pad_token_id=0)),
    "olmo2": ("Olmo2Config", LLAMA_LIKE),
    "gpt_neox": ("GPTNeoXConfig", NEOX_LIKE),
    "gpt2": ("GPT2Config", dict(vocab_size=8192, n_embd=384, n_layer=6, n_head=6, n_positions=512)),
}


def family_rows(root: Path, repeats: int) -> list[dict[str, object]]:
    """Import and one training step of each family, against transformers."""
    import torch
    import transformers

    rows = []
    for name, (config_class, values) in FAMILIES.items():
        folder = root / name
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, config_class)(**values))
        model.save_pretrained(folder)
        params = sum(p.numel() for p in model.parameters())
        del model
        runs: dict[str, list[dict[str, float]]] = {"lagdsl": [], "transformers": []}
        for _ in range(repeats):
            for kind in ("lagdsl", "transformers"):
                runs[kind].append(load_once(kind, folder))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "peak_mib")} for k, v in runs.items()}
        steps = step_times(folder)
        rows.append({
            "family": name, "params": params, "import": med,
            "time_ratio": med["lagdsl"]["seconds"] / med["transformers"]["seconds"],
            "memory_ratio": med["lagdsl"]["peak_mib"] / med["transformers"]["peak_mib"],
            "step": steps, "step_ratio": steps["transformers"] / steps["lagdsl"],
        })  # fmt: skip
    return rows


def step_times(folder: Path, steps: int = 5, warmup: int = 2) -> dict[str, float]:
    """Median seconds of a training step of each model on the same weights and batch."""
    import torch
    import torch.nn.functional as F
    import transformers

    from lagdsl.families import family_of, read_config
    from lagdsl.model.hub import config_of, load_pretrained

    family = family_of(read_config(folder))
    ours = load_pretrained(folder, family, config_of(family.arch(read_config(folder)))).train()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).train()
    ids = torch.randint(0, 8192, (4, 257), generator=torch.Generator().manual_seed(0))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def logits(model: torch.nn.Module) -> torch.Tensor:
        return model(inputs)[0] if model is ours else model(inputs).logits

    out = {}
    for kind, model in (("lagdsl", ours), ("transformers", theirs)):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = []
        for i in range(warmup + steps):
            started = time.perf_counter()
            loss = F.cross_entropy(logits(model).float().flatten(0, 1), targets.flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= warmup:
                times.append(time.perf_counter() - started)
        out[kind] = statistics.median(times)
    return out


def family_table(rows: list[dict[str, object]]) -> list[str]:
    lines = [
        "| family (about 20M parameters) | import time | import peak RSS | training step: lagdsl (s) | "
        "transformers (s) | transformers / lagdsl |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        step = r["step"]
        assert isinstance(step, dict)
        lines.append(
            f"| `{r['family']}` | {r['time_ratio']:.2f}x | {r['memory_ratio']:.2f}x | {step['lagdsl']:.3f} | "
            f"{step['transformers']:.3f} | {r['step_ratio']:.2f}x |"
        )
    return lines


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
    parser.add_argument("--only", choices=["families"], help="measure the families alone (the rest kept from the JSON)")
    args = parser.parse_args()
    import torch
    import transformers

    torch.set_num_threads(cores())
    if args.only == "families":
        result = json.loads((ROOT / "bench" / "pretrained.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            result["families"] = family_rows(Path(tmp), args.repeats)
        return publish(result, args.update_docs)
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
        families = family_rows(Path(tmp), args.repeats)
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
        "families": families,
    }
    publish(result, args.update_docs)


def publish(result: dict[str, Any], docs: bool) -> None:
    """The JSON beside the script, the markdown printed (and put in docs/benchmarks.md)."""
    (ROOT / "bench" / "pretrained.json").write_text(json.dumps(result, indent=2) + "\n")
    params, shards, med, ops = result["params"], result["shards"], result["import"], result["operators"]
    table = [
        f"A Llama checkpoint of {params / 1e6:.0f}M parameters in {shards} safetensors shards, fp32, median of "
        f"{result['repeats']} fresh processes each ({result['machine']}):",
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
    if result.get("families"):
        table += ["", "Each other family: import (lagdsl / transformers, as above) and one training step:", ""]
        table += family_table(result["families"])
    text = "\n".join(table)
    print(text)
    if docs:
        update_docs("pretrained", text)


if __name__ == "__main__":
    main()
