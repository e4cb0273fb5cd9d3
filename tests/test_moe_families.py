"""Mixture-of-experts checkpoints in and out: Qwen3-MoE, Qwen2-MoE (a shared expert) and Mixtral
made by transformers' own classes, read with transformers' logits (in the per-expert layout that
transformers saves and in its fused in-memory one), exported back with no missing or unexpected
key; a dense Qwen3, Qwen2 and Llama upcycled and exported as their mixture-of-experts sibling, which
transformers loads and which computes what the dense model did."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lagdsl
from lagdsl.families import FamilyError, family_of, read_config
from lagdsl.model.export import export_pretrained
from lagdsl.model.hub import config_of, load_pretrained
from lagdsl.ops import GrowthSpec, grow
from lagdsl.text.tokenizer import byte_level_json
from tests.test_pretrained import COMMON, hf_logits, make_checkpoint

transformers = pytest.importorskip("transformers")

MIXTURES = {
    "qwen3_moe": (
        "Qwen3MoeConfig",
        dict(head_dim=32, moe_intermediate_size=40, num_experts=6, num_experts_per_tok=2, norm_topk_prob=True,
             tie_word_embeddings=False),
    ),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        dict(moe_intermediate_size=40, shared_expert_intermediate_size=56, num_experts=6, num_experts_per_tok=2,
             norm_topk_prob=False, tie_word_embeddings=True, use_sliding_window=False),
    ),
    "mixtral": ("MixtralConfig", dict(intermediate_size=40, num_local_experts=6, num_experts_per_tok=2)),
}  # fmt: skip
IDS = torch.randint(0, COMMON["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))


def make_mixture(folder: Path, kind: str, seed: int = 0, **overrides: object) -> tuple[Path, object]:
    name, extra = MIXTURES[kind]
    config = getattr(transformers, name)(**{**COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(byte_level_json(), encoding="utf-8")
    return folder, model


@pytest.mark.parametrize(
    ("kind", "local"),
    [("qwen2_moe", (0,)), ("qwen3_moe", (0, 1, 2))],  # (every other layer below `max_window_layers` 2; every one)
)
def test_a_mixtures_sliding_window_is_computed_as_transformers_computes_it(
    kind: str, local: tuple[int, ...], tmp_path: Path
) -> None:
    """transformers 5's rules: Qwen2-MoE slides layers 0, 2, ... below `max_window_layers`,
    Qwen3-MoE every layer; lagdsl computes the same at 40 positions, 5 times the window of 8."""
    windows = {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 2}
    source, _ = make_mixture(tmp_path / "source", kind, **windows)
    expected, _ = hf_logits(source, IDS)
    family, model = ours(source)
    assert model.config.style.local == local and model.config.style.window == 8
    with torch.no_grad():
        torch.testing.assert_close(model(IDS)[0], expected, atol=1e-5, rtol=0)
    out = tmp_path / "out"
    export_pretrained(model.state_dict(), model.config, family, read_config(source), source, out)
    torch.testing.assert_close(hf_logits(out, IDS)[0], expected, atol=1e-5, rtol=0)


def ours(folder: Path):  # type: ignore[no-untyped-def]
    family = family_of(read_config(folder))
    arch = family.arch(read_config(folder))
    return family, load_pretrained(folder, family, config_of(arch)).eval()


@pytest.mark.parametrize("kind", list(MIXTURES))
def test_each_mixture_imports_with_transformers_logits_and_exports_back(kind: str, tmp_path: Path) -> None:
    source, _ = make_mixture(tmp_path / "source", kind)
    expected, (hf_model, _) = hf_logits(source, IDS)
    family, model = ours(source)
    assert family.architecture == type(hf_model).__name__
    assert model.config.moe is not None and model.config.moe.experts == 6
    with torch.no_grad():
        torch.testing.assert_close(model(IDS)[0], expected, atol=1e-5, rtol=0)
    out = tmp_path / "out"
    export_pretrained(model.state_dict(), model.config, family, read_config(source), source, out)
    again, (reloaded, info) = hf_logits(out, IDS)
    assert type(reloaded).__name__ == family.architecture
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)
    written, before = read_config(out), read_config(source)
    assert {k: v for k, v in written.items() if k not in ("dtype", "torch_dtype", "output_router_logits")} == {
        k: v for k, v in before.items() if k not in ("dtype", "torch_dtype", "output_router_logits")
    }  # nothing grew: every key as it was


@pytest.mark.parametrize("kind", list(MIXTURES))
def test_a_checkpoint_with_fused_experts_imports_to_the_same_logits(kind: str, tmp_path: Path) -> None:
    """transformers 5 holds the experts fused (`mlp.experts.gate_up_proj`, E x 2h x w); a folder
    written in those names (as tools that save the in-memory state do) reads as the per-expert one."""
    source, model = make_mixture(tmp_path / "source", kind)
    fused = tmp_path / "fused"
    fused.mkdir()
    tied = model.config.tie_word_embeddings
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (k == "lm_head.weight" and tied)}
    assert "model.layers.0.mlp.experts.gate_up_proj" in state
    save_file(state, str(fused / "model.safetensors"), metadata={"format": "pt"})
    (fused / "config.json").write_text((source / "config.json").read_text())
    _, per_expert = ours(source)
    _, from_fused = ours(fused)
    with torch.no_grad():
        torch.testing.assert_close(from_fused(IDS)[0], per_expert(IDS)[0], atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kind", "sibling", "args"),
    [
        ("qwen3", "Qwen3MoeForCausalLM", {}),
        ("qwen3", "Qwen3MoeForCausalLM", {"granularity": 2, "top_k": 4}),
        ("qwen3", "Qwen3MoeForCausalLM", {"every": 2}),
        ("qwen2", "Qwen2MoeForCausalLM", {}),
        ("qwen2", "Qwen2MoeForCausalLM", {"every": 3, "renormalize": False, "router": "zero"}),
        ("llama_tied", "MixtralForCausalLM", {"granularity": 2, "top_k": 2}),
        ("mistral", "MixtralForCausalLM", {"router": "zero"}),
    ],
)
def test_a_dense_model_upcycled_exports_as_its_sibling_with_the_dense_logits(
    kind: str, sibling: str, args: dict[str, object], tmp_path: Path
) -> None:
    source = make_checkpoint(tmp_path / "source", kind)
    expected, _ = hf_logits(source, IDS)
    family, model = ours(source)
    spec = GrowthSpec("upcycle", "experts", 4, args)
    grown = grow(model, None, spec, torch.Generator().manual_seed(3)).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(grown(IDS)[0], expected, atol=1e-5, rtol=0)
    out = tmp_path / "out"
    export_pretrained(grown.state_dict(), grown.config, family, read_config(source), source, out)
    again, (reloaded, info) = hf_logits(out, IDS)
    assert type(reloaded).__name__ == sibling
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)
    written = read_config(out)
    moe = grown.config.moe
    assert moe is not None
    assert written["num_experts_per_tok"] == moe.top_k and written.get("router_aux_loss_coef") == moe.balance
    assert written["vocab_size"] == COMMON["vocab_size"] and written["max_position_embeddings"] == 64  # kept
    assert written.get("mlp_only_layers", []) == list(moe.dense)  # `every=N`: the others dense
    # and it reads back into lagdsl as the mixture it is
    _, back = ours(out)
    assert back.config.moe == replace(moe, z_loss=0.0)  # transformers trains with no z-loss
    with torch.no_grad():
        torch.testing.assert_close(back(IDS)[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"mlp_only_layers": [0, 1, 2]}, "mlp_only_layers"),
        ({"mlp_only_layers": "1"}, "mlp_only_layers"),
        ({"decoder_sparse_step": 4}, "decoder_sparse_step"),
        ({"decoder_sparse_step": 0}, "decoder_sparse_step"),
        ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
        ({"num_experts": 1, "num_experts_per_tok": 1}, "num_experts"),
    ],
)
def test_a_mixture_lagdsl_does_not_compute_is_refused_naming_the_key(overrides: dict, key: str) -> None:
    _, extra = MIXTURES["qwen3_moe"]
    config = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", **COMMON, **extra, **overrides}
    with pytest.raises(FamilyError) as error:
        family_of(config).arch(config)
    assert error.value.key == key and "\n" not in str(error.value)


def test_the_checker_refuses_an_upcycling_the_sibling_cannot_hold(tmp_path: Path) -> None:
    source = make_checkpoint(tmp_path / "source", "llama_tied")
    text = f"""
model pretrained("{source}")
batch 2
optimizer adamw(lr=1e-4)
stage base {{ train 2 steps }}
stage moe {{ grow experts to 4 with upcycle(renormalize=off) train 2 steps }}
"""
    result = lagdsl.check_text(text, str(tmp_path / "t.grow"))
    (problem,) = [d for d in result.diagnostics if d.code == "E0406"]
    assert "MixtralForCausalLM" in problem.label and "renormalize" in problem.label


def test_the_checker_reads_a_mixture_checkpoint_and_the_plan_counts_its_parameters(tmp_path: Path) -> None:
    source, model = make_mixture(tmp_path / "source", "qwen2_moe")
    text = f"""
model pretrained("{source}")
batch 2
optimizer adamw(lr=1e-4)
stage base {{ train 2 steps }}
stage more {{ grow experts to 12 with duplicate train 2 steps }}
"""
    result = lagdsl.check_text(text, str(tmp_path / "t.grow"))
    assert result.errors == [], result.errors
    schedule = result.schedule
    assert schedule is not None
    first = schedule.stages[0].after.moe
    assert first is not None and (first.experts, first.top_k, first.shared, first.renormalize) == (6, 2, 56, False)
    from lagdsl.plan.build import build_plan

    plan = build_plan(schedule)
    assert plan.stages[0].shape.params == sum(p.numel() for p in model.parameters())
    assert json.loads((source / "config.json").read_text())["num_experts"] == 6


# ------------------------------------------------------------------------------ end to end

UPCYCLE = """
schedule upcycle
seed 4
model pretrained("source", context=32)
data text("corpus/*.txt")
batch 4
optimizer adamw(lr=3e-3)
eval every 6 steps (batches=2)
stage base {{ train 4 steps }}
stage moe {{
  grow experts to 4 {{
    candidates [upcycle(top_k=2), upcycle(top_k=2, drop=0.5), upcycle(top_k=2, noise=0.05)]
    probe 2 steps
  }}
  train 4 steps
}}
{more}
"""


def _project(root: Path, kind: str, more: str = "", **overrides: object) -> Path:
    from tests.conftest import write_corpus

    if kind in MIXTURES:
        make_mixture(root / "source", kind, **overrides)
    else:
        make_checkpoint(root / "source", kind)
    write_corpus(root)
    path = root / "upcycle.grow"
    path.write_text(UPCYCLE.format(more=more), encoding="utf-8")
    return path


def test_validate_and_plan_of_an_upcycling_schedule_import_no_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    path = _project(tmp_path, "qwen3")
    (tmp_path / "source" / "model.safetensors").write_bytes(b"not read")
    code = f"""
import sys, json
from click.testing import CliRunner
from lagdsl.cli import main
for command in (["validate"], ["plan", "--format", "json"]):
    result = CliRunner().invoke(main, [*command, {str(path)!r}])
    assert result.exit_code == 0, result.output
print(json.dumps("torch" in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is False


@pytest.mark.slow
def test_a_dense_qwen3_upcycled_by_a_probe_trains_and_exports_as_qwen3_moe(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lagdsl.cli import main
    from lagdsl.runtime.state.trained import open_trained

    path = _project(tmp_path, "qwen3")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    exported = CliRunner().invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "hf")])
    assert exported.exit_code == 0, exported.output
    config = read_config(tmp_path / "hf")
    assert config["architectures"] == ["Qwen3MoeForCausalLM"] and config["num_experts"] == 4
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    trained = open_trained(run_dir).model()
    text = torch.tensor([list((tmp_path / "corpus" / "a.txt").read_bytes()[1000:1032])])
    with torch.no_grad():  # the trained mixture, not the source
        torch.testing.assert_close(model.eval()(text).logits, trained(text)[0], atol=1e-5, rtol=0)
    prompt = "def main("
    ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(prompt, return_tensors="pt").input_ids
    theirs = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    sampled = CliRunner().invoke(
        main, ["sample", str(run_dir), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "8", "--no-prompt"]
    )
    assert sampled.exit_code == 0, sampled.output
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert sampled.stdout == tokenizer.decode(theirs) + "\n"


@pytest.mark.slow
def test_a_qwen2_moe_read_sharded_by_fsdp_trains_as_one_process(tmp_path: Path) -> None:
    """Each rank reads its own experts' rows of the per-expert tensors (and the shared expert's, and
    the dense MLP of the layer `mlp_only_layers` leaves dense), duplicates the experts, grows deeper
    and trains: the events of one process within 1e-5."""
    from tests.test_distributed import assert_close, launch, records, single

    more = "stage more {{ grow experts to 24 with duplicate(noise=0.01) train 4 steps }}\n"
    more += "stage deeper {{ grow depth to 5 with interleave train 2 steps }}"
    path = _project(tmp_path, "qwen2_moe", more.replace("{{", "{").replace("}}", "}"), mlp_only_layers=[1])
    text = path.read_text().replace("stage moe {\n  grow experts to 4 {", "stage moe {\n  grow experts to 12 {")
    text = text.replace("candidates [upcycle(top_k=2), upcycle(top_k=2, drop=0.5), upcycle(top_k=2, noise=0.05)]",
                        "candidates [duplicate, duplicate(noise=2.0)]")  # fmt: skip
    (tmp_path / "one.grow").write_text(text)
    (tmp_path / "fsdp.grow").write_text(text.replace("seed 4\n", "seed 4\nparallel fsdp\n"))
    single(tmp_path, "one.grow", "--out", "one")
    result = launch(tmp_path, "fsdp.grow", "--out", "fsdp", ungathered=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_close(records(tmp_path / "fsdp"), records(tmp_path / "one"))
