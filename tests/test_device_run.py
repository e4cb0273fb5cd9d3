"""The prepared GPU evidence script (`bench/device_run.py`) must run when a GPU comes: checked here
on a CPU at toy size."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

FROZEN = "llama_pro (old frozen)"


@pytest.mark.slow
def test_device_run_script_runs_every_part_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "device_run.py"), "--device", "cpu", "--small", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 7 and "FAIL" not in result.stdout
    data = json.loads(out.read_text())
    throughput = data["throughput"]
    assert throughput["lagdsl_tokens_per_s"] > 0 and throughput["hand_written_tokens_per_s"] > 0
    assert throughput["ratio"] > 0 and throughput["lagdsl_mfu"] is None  # no known peak for a CPU
    growth = data["growth"]
    assert growth["grown"]["steps"] == growth["scratch"]["steps"] and growth["flops_ratio"] < 1
    study = data["study"]
    assert len(study["candidates"]) == 5 and study["lags"][0] == 0
    assert len(study["spearman_val"]) == len(study["lags"])
    # 4: a base pretrained, exported and imported; the recipes studied, scratch and the frozen heal
    upscaling = data["upscaling"]
    assert set(upscaling["names"].values()) == {"SOLAR-style", "Yi-style", "LLaMA Pro", "copy_top", FROZEN}
    assert upscaling["recipes"]["solar"] == "layers([[0, 3], [1, 4]])"  # 4 -> 6: two copies, a layer cut at the seam
    assert all(math.isfinite(f["mean"]) and len(f["seeds"]) == 2 for f in upscaling["final_val"].values())
    assert [row["lag"] for row in upscaling["study"]] == [0, 2, 5]
    assert all(row["sunk"]["flops"] < row["included"]["flops"] for row in upscaling["scratch"]["budgets"].values())
    assert {"base", "llama_pro", "llama_pro_frozen"} <= upscaling["freeze"].keys()
    assert "**Verdict.**" in upscaling["tables"]
    # 6: a dense base upcycled by four recipes, granular apart, the dense model on at equal FLOPs
    upcycling = data["upcycling"]
    assert set(upcycling["names"].values()) == {"copies", "copies, zero router", "copies with noise", "Drop-Upcycling"}
    assert all(math.isfinite(f["mean"]) and len(f["seeds"]) == 2 for f in upcycling["final_val"].values())
    assert math.isfinite(upcycling["granular"]["mean"]) and upcycling["dense"]["steps"] > upcycling["horizon_steps"]
    assert all(abs(sum(layer) - 1) < 1e-6 for layer in upcycling["expert_load"])
    # 7: a base grown longer by six methods, against training long from the start
    grown = data["context"]
    assert set(grown["names"].values()) == {"keep", "a 10x base", "position interpolation", "NTK-aware", "YaRN",
                                            "Llama 3.1"}  # fmt: skip
    assert all(math.isfinite(f["mean"]) and len(f["seeds"]) == 2 for f in grown["final_val"].values())
    assert math.isfinite(grown["scratch"]["mean"]) and grown["size"]["long"] == 4 * grown["size"]["context"]
    # 5: a plain growth's run and a probe's (device memory is measured on CUDA alone), with the plan's
    memory = data["memory"]
    assert set(memory["runs"]) == {"plain", "probe"} and memory["plan"]["plain"]["probe"] == 0
    assert memory["plan"]["probe"]["probe"] > memory["plan"]["plain"]["train"]


def test_the_up_scaling_recipes_at_32_layers_are_the_published_ones() -> None:
    """SOLAR 10.7B: two copies of Mistral's 32 layers, 8 cut at the seam (48); Yi-9B: Yi-6B's
    layers 12-27 repeated once (48); and the benchmark's interpolation on a val curve."""
    sys.path.insert(0, str(ROOT / "bench"))
    import upscaling

    assert upscaling.recipe("solar", 32) == "layers([[0, 24], [8, 32]])"
    assert upscaling.recipe("yi", 32) == "layers([[0, 28], [12, 28], [28, 32]])"
    curve = {"flops": [0.0, 10.0, 20.0], "val": [3.0, 2.0, 1.5]}
    assert upscaling.at_flops(curve, 15.0) == 1.75 and upscaling.at_flops(curve, 25.0) is None
    assert upscaling.flops_to_reach(curve, 2.5) == 5.0 and upscaling.flops_to_reach(curve, 1.0) is None


def test_a_phase_peak_takes_in_the_peaks_of_the_phases_nested_in_it() -> None:
    """The benchmarks' phase peaks (`bench/common.NestedPeaks`, over VmHWM or CUDA's allocator): a
    nested phase resets the measure, so what the outer phase reached before it must be kept."""
    sys.path.insert(0, str(ROOT / "bench"))
    from common import NestedPeaks

    level, peak = [0], [0]  # what is held now, and the peak since the last reset

    def hold(nbytes: int) -> None:
        level[0] = nbytes
        peak[0] = max(peak[0], nbytes)

    def reset() -> None:
        peak[0] = level[0]

    phases = NestedPeaks(lambda: peak[0], reset)
    phases.enter()
    hold(5), hold(2)
    phases.enter()  # a nested phase: its reset forgets the 5
    hold(3)
    inner = phases.leave()
    hold(4)
    assert (inner, phases.leave()) == (3, 5)
    phases.enter()
    hold(9)
    phases.enter()
    hold(1)
    assert (phases.leave(), phases.leave()) == (9, 9)  # what was held when it began counts too
    assert not phases.open
