"""A mixture of experts end to end: a dense model trained, upcycled by a probe, grown deeper, its
experts duplicated and the whole grown wider, on one process and on several ranks (DDP, FSDP2), stopped and resumed on
another number of ranks: the same events as one process's, every figure within 1e-5."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lagdsl.runtime.records.metrics import read
from lagdsl.runtime.state.trained import open_trained
from tests.conftest import write_corpus
from tests.test_distributed import assert_close, launch, records, single

SCHEDULE = """
schedule moe
seed 5
{parallel}
model gpt(context=16, width=16, heads=2, depth=1)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3)
lr cosine(warmup=4 steps, min=3e-4)
eval every 6 steps (batches=2)
checkpoint every 7 steps (keep=4)
stage base {{ train 10 steps }}
stage mixture {{
  grow experts to 4 {{
    candidates [upcycle(top_k=2), upcycle(top_k=2, drop=0.5), upcycle(top_k=2, router=zero, noise=0.3)]
    probe 3 steps
  }}
  train 8 steps
}}
stage deeper {{ grow depth to 2 with copy_top  train 4 steps }}
stage more {{ grow experts to 8 with duplicate(noise=0.01)  train 4 steps }}
stage wider {{ grow width to 24 with net2net  train 3 steps }}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("moe")
    write_corpus(root)
    (root / "one.grow").write_text(SCHEDULE.format(parallel=""))
    (root / "fsdp.grow").write_text(SCHEDULE.format(parallel="parallel fsdp"))
    return root


@pytest.fixture(scope="module")
def one_process(project: Path) -> Path:
    single(project, "one.grow", "--out", "one")
    return project / "one"


@pytest.mark.slow
def test_a_mixture_logs_its_auxiliary_losses_and_its_expert_load(one_process: Path) -> None:
    events = read(one_process / "metrics.jsonl")
    steps = [e for e in events if e["event"] == "step"]
    assert all("balance" not in e for e in steps if e["step"] < 10)  # dense: none
    mixed = [e for e in steps if e["step"] >= 13 and not e.get("from_probe")]
    assert mixed and all(e["balance"] >= 1.0 - 1e-6 and e["z_loss"] > 0 for e in mixed)  # E sum f P >= 1
    select = next(e for e in events if e["event"] == "select")
    assert select["dim"] == "experts" and select["after"]["experts"] == 4 and len(select["scores"]) == 3
    evals = [e for e in events if e["event"] == "eval"]
    assert "expert_load" not in evals[0]  # step 6: dense
    last = evals[-1]["expert_load"]
    assert len(last) == 2 and all(len(layer) == 8 for layer in last)  # 2 blocks, 8 experts after duplicating
    assert all(abs(sum(layer) - 1.0) < 1e-6 for layer in last)
    grows = [e for e in events if e["event"] == "grow"]
    assert [g["after"].get("experts") for g in grows] == [4, 8, 8]
    from lagdsl.analysis.report import build_report
    from tests.conftest import assert_png

    report = build_report(one_process, one_process / "report")
    assert "<h2>Expert load</h2>" in report.page.read_text()
    assert_png(one_process / "report" / "expert_load.png")
    summary = json.loads((one_process / "summary.json").read_text())
    assert summary["final_shape"] == {"depth": 2, "width": 24, "experts": 8, "heads": 3}
    final = open_trained(one_process).state
    assert final["blocks.1.mlp.gate_up"].shape == (8, 2 * 72, 24)  # each expert the dense MLP's 48 units, x 1.5


@pytest.mark.slow
def test_a_mixture_stopped_then_resumed_gives_the_uninterrupted_events(project: Path, one_process: Path) -> None:
    single(project, "one.grow", "--out", "part", "--max-steps", "15")
    single(project, "--resume", "part")
    assert records(project / "part") == records(one_process)


@pytest.mark.slow
def test_ddp_trains_a_mixture_as_one_process_does(project: Path, one_process: Path) -> None:
    result = launch(project, "one.grow", "--out", "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_close(records(project / "ddp"), records(one_process))


@pytest.mark.slow
def test_fsdp_upcycles_by_a_probe_stops_and_resumes_on_one_and_on_four_ranks(project: Path, one_process: Path) -> None:
    result = launch(project, "fsdp.grow", "--out", "fsdp", "--max-steps", "12", ungathered=True)  # after the probe
    assert result.returncode == 0, result.stderr[-3000:]
    for ranks, name in ((1, "fsdp-on-1"), (4, "fsdp-on-4")):
        shutil.copytree(project / "fsdp", project / name)
        if ranks == 1:
            single(project, "--resume", name)
        else:
            result = launch(project, "--resume", name, ranks=ranks, ungathered=True)
            assert result.returncode == 0, result.stderr[-3000:]
        assert_close(records(project / name), records(one_process))


@pytest.mark.slow
def test_a_mixture_from_scratch_exports_as_mixtral(project: Path, one_process: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import torch
    from click.testing import CliRunner

    from lagdsl.cli import main

    result = CliRunner().invoke(main, ["export", str(one_process), "-o", str(project / "hf")])
    assert result.exit_code == 0, result.output
    config = json.loads((project / "hf" / "config.json").read_text())
    assert config["architectures"] == ["MixtralForCausalLM"] and config["num_local_experts"] == 8
    assert config["intermediate_size"] == 72 and config["num_experts_per_tok"] == 4  # 2, duplicated
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        project / "hf", dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    trained = open_trained(one_process).model()
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids).logits, trained(ids)[0], atol=1e-5, rtol=0)
