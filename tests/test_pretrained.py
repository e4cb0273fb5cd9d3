"""Pretrained Hugging Face checkpoints: each family read into lagdsl's model with transformers'
logits, written back as the same family, and schedules that start from one (validated without
torch, run, resumed only from the same source, exported)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lagdsl.cli import main
from lagdsl.families import FamilyError, family_of, read_config
from lagdsl.model.export import export_pretrained
from lagdsl.model.hub import HubError, config_of, load_pretrained
from lagdsl.runtime.state.trained import open_trained
from tests.conftest import save_checkpoint, write_corpus

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent

#: a tiny model of each family with its quirks on: grouped-query attention everywhere, an untied
#: head and Llama 3 RoPE scaling (Llama), a tied one (SmolLM2-style Llama, Qwen2), a sliding window
#: longer than the context (Mistral), q/k/v biases (Qwen2), q/k norms and a head size that is not
#: width / heads (Qwen3)
COMMON = dict(
    vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
)  # fmt: skip
FAMILIES = {
    "llama": (
        "LlamaConfig",
        dict(
            tie_word_embeddings=False,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "llama_tied": ("LlamaConfig", dict(tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(sliding_window=4096, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=True, use_sliding_window=False)),
    "qwen3": ("Qwen3Config", dict(head_dim=32, tie_word_embeddings=False)),
}


def make_checkpoint(folder: Path, kind: str, *, shard: bool = False, seed: int = 0, **overrides: object) -> Path:
    """A tiny random checkpoint of `kind` (`tests.conftest.save_checkpoint`)."""
    name, extra = FAMILIES[kind]
    config = getattr(transformers, name)(**{**COMMON, **extra, **overrides})
    return save_checkpoint(folder, config, shard=shard, seed=seed)


def hf_logits(folder: Path, ids: torch.Tensor) -> tuple[torch.Tensor, object]:
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True
    )
    with torch.no_grad():
        return model.eval()(ids).logits, (model, info)


def ours(folder: Path):
    family = family_of(read_config(folder))
    arch = family.arch(read_config(folder))
    return family, load_pretrained(folder, family, config_of(arch)).eval()


@pytest.mark.parametrize("shard", [False, True], ids=["one-file", "sharded"])
@pytest.mark.parametrize("kind", list(FAMILIES))
def test_each_family_imports_with_transformers_logits_and_exports_back(kind: str, shard: bool, tmp_path: Path) -> None:
    source = make_checkpoint(tmp_path / "source", kind, shard=shard)
    if shard:
        assert (source / "model.safetensors.index.json").is_file()
    ids = torch.randint(0, COMMON["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))
    expected, (hf_model, _) = hf_logits(source, ids)
    family, model = ours(source)
    assert family.architecture == type(hf_model).__name__
    with torch.no_grad():
        got = model(ids)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    out = tmp_path / "out"
    export_pretrained(model.state_dict(), model.config, family, read_config(source), source, out)
    again, (reloaded, info) = hf_logits(out, ids)
    assert type(reloaded).__name__ == family.architecture
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=0)
    written, before = read_config(out), read_config(source)
    assert written["tie_word_embeddings"] == before["tie_word_embeddings"]
    assert {k: v for k, v in written.items() if k not in ("dtype", "torch_dtype")} == {
        k: v for k, v in before.items() if k not in ("dtype", "torch_dtype")
    }  # nothing grew, so every key is kept as it was
    assert (out / "tokenizer.json").read_text() == (source / "tokenizer.json").read_text()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"architectures": ["GemmaForCausalLM"], "model_type": "gemma"},
            "`GemmaForCausalLM` is not a model family lagdsl can grow: it reads `Gemma2ForCausalLM`, "
            "`Gemma3ForCausalLM`, `GPT2LMHeadModel`, `GPTNeoXForCausalLM`, `LlamaForCausalLM`, `MistralForCausalLM`, "
            "`MixtralForCausalLM`, `Olmo2ForCausalLM`, `Phi3ForCausalLM`, `Qwen2ForCausalLM`, `Qwen2MoeForCausalLM`, "
            "`Qwen3ForCausalLM`, `Qwen3MoeForCausalLM`",
        ),
        (
            {**COMMON, "architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "su", "factor": 4.0}},
            "RoPE type `su` is not supported: lagdsl reads `default`, `linear`, `dynamic`, `yarn`, `longrope`, "
            "`llama3`",
        ),
        (
            {**COMMON, "architectures": ["LlamaForCausalLM"], "num_key_value_heads": 3},
            "`num_attention_heads` 4 is not a multiple of `num_key_value_heads` 3",
        ),
        (
            {
                **COMMON,
                "architectures": ["LlamaForCausalLM"],
                "rope_scaling": {"rope_type": "llama3", "original_max_position_embeddings": 16, "factor": 8.0},
            },
            "RoPE type `llama3` needs `low_freq_factor`, `high_freq_factor` in `rope_scaling`",
        ),
    ],
    ids=["gemma", "unknown-rope", "kv-heads", "llama3-without-its-factors"],
)
def test_an_unsupported_checkpoint_is_one_line_naming_what(config: dict, message: str) -> None:
    with pytest.raises(FamilyError) as error:
        family_of(config).arch(config)
    assert str(error.value) == message


def test_transformers_refuses_a_llama3_rope_without_its_factors_as_lagdsl_does() -> None:
    """The refusal above is transformers' own: it does not invent the factors either."""
    rope = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 16}
    with pytest.raises(KeyError, match="low_freq_factor"):
        config = transformers.LlamaConfig(**{**COMMON, "rope_scaling": rope})
        transformers.AutoModelForCausalLM.from_config(config)


def test_hidden_act_swish_is_silu_as_in_transformers(tmp_path: Path) -> None:
    source = make_checkpoint(tmp_path / "source", "llama", hidden_act="swish")
    ids = torch.randint(0, COMMON["vocab_size"], (1, 20), generator=torch.Generator().manual_seed(1))
    expected, _ = hf_logits(source, ids)
    _, model = ours(source)
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], expected, atol=1e-5, rtol=0)


def _rewrite_weights(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    """The checkpoint's one safetensors file, its tensors changed by `change(tensors)` in place."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("tensors", "sizes"),
    [
        (("q_proj", "k_proj", "v_proj"), (80, 16, 32)),  # the config's 64 / 32 / 32: the same 128 rows
        (("gate_proj", "up_proj"), (80, 112)),  # the config's 96 / 96
    ],
    ids=["qkv", "gate-up"],
)
def test_tensors_whose_rows_add_up_but_do_not_match_the_config_are_refused(
    tmp_path: Path, tensors: tuple[str, ...], sizes: tuple[int, ...]
) -> None:
    """Stacked tensors once passed when only their rows' sum matched (a silently re-split model);
    transformers refuses such a checkpoint, and so does lagdsl, naming the tensor."""
    source = make_checkpoint(tmp_path / "source", "llama")
    prefix = "model.layers.1." + ("self_attn." if tensors[0] == "q_proj" else "mlp.")

    def resize(state: dict[str, torch.Tensor]) -> None:
        stacked = torch.cat([state[f"{prefix}{name}.weight"] for name in tensors])
        for name, part in zip(tensors, stacked.split(list(sizes)), strict=True):
            state[f"{prefix}{name}.weight"] = part.contiguous()

    _rewrite_weights(source, resize)
    with pytest.raises(HubError, match=rf"tensor `{prefix}{tensors[0]}.weight` in `model.safetensors` is \[80, "):
        ours(source)
    with pytest.raises(Exception, match=r"ignore_mismatched_sizes"):  # transformers refuses it too
        transformers.AutoModelForCausalLM.from_pretrained(source)


def test_a_tied_config_with_a_different_head_in_the_file_is_refused_and_an_equal_one_read(tmp_path: Path) -> None:
    """`tie_word_embeddings: true` beside a `lm_head.weight` of other values: lagdsl once tied and
    dropped the file's head (transformers 5 keeps it: logits 0.13 apart). Such a checkpoint is two
    models at once, and refused; a head equal to the embedding (some tools save both) is the tied
    model, with transformers' logits."""
    source = make_checkpoint(tmp_path / "source", "llama_tied")
    _rewrite_weights(source, lambda s: s.__setitem__("lm_head.weight", s["model.embed_tokens.weight"].clone()))
    ids = torch.randint(0, COMMON["vocab_size"], (1, 20), generator=torch.Generator().manual_seed(1))
    expected, _ = hf_logits(source, ids)
    _, model = ours(source)
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], expected, atol=1e-5, rtol=0)
    _rewrite_weights(source, lambda s: s["lm_head.weight"].add_(0.5))
    with pytest.raises(HubError, match=r"`tie_word_embeddings` is true in `config\.json`, but `model\.safetensors`"):
        ours(source)


# ------------------------------------------------------------------------------ schedules

SCHEDULE = """
schedule upscale
seed 3
model pretrained("source", context=32)
data text("corpus/*.txt")
batch 4
optimizer adamw(lr=1e-3)
stage heal {{ train 4 steps }}
stage grow {{
  grow depth by 1 {{
    candidates [copy_top, identity]
    probe 2 steps
  }}
  train 4 steps
}}
{extra}
"""


def write_schedule(root: Path, kind: str = "qwen2", extra: str = "", **overrides: object) -> Path:
    make_checkpoint(root / "source", kind, **overrides)
    write_corpus(root)
    path = root / "upscale.grow"
    path.write_text(SCHEDULE.format(extra=extra), encoding="utf-8")
    return path


def test_validate_and_plan_of_a_pretrained_schedule_import_no_torch_and_read_no_weight(tmp_path: Path) -> None:
    path = write_schedule(tmp_path)
    # the weights are garbage: reading them would fail, so a clean validate proves they were not read
    (tmp_path / "source" / "model.safetensors").write_bytes(b"not a safetensors file")
    code = f"""
import sys, json
from click.testing import CliRunner
from lagdsl.cli import main
result = CliRunner().invoke(main, ["validate", {str(path)!r}])
assert result.exit_code == 0, result.output
plan = CliRunner().invoke(main, ["plan", {str(path)!r}, "--format", "json"])
assert plan.exit_code == 0, plan.output
print(json.dumps(["torch" in sys.modules, "safetensors" in sys.modules, json.loads(plan.stdout)["nodes"][0]]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    torch_imported, safetensors_imported, first = json.loads(result.stdout)
    assert (torch_imported, safetensors_imported) == (False, False)
    assert first["after"]["depth"] == 3 and first["after"]["width"] == 64


def test_the_checker_knows_the_checkpoint_shape_and_size(tmp_path: Path) -> None:
    from lagdsl.lang import check_text

    path = write_schedule(tmp_path, "qwen3")
    result = check_text(path.read_text(), str(path))
    assert result.schedule is not None, [d.message for d in result.diagnostics]
    model = result.schedule.model
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "source")
    assert model.pretrained is not None and model.pretrained.params == hf.num_parameters()
    assert (model.shape.depth, model.shape.width, model.shape.heads, model.shape.kv_heads) == (3, 64, 4, 2)
    assert (model.head_dim, model.qk_norm, model.tie, model.context) == (32, True, False, 32)
    assert model.vocab == 300
    assert result.schedule.data.tokenizer == "source/tokenizer.json"  # the data is tokenized as the model was
    # the plan counts what the model holds, at the start and after the growth (GQA, head size, untied head)
    from lagdsl.plan import build_plan

    plan = build_plan(result.schedule)
    assert plan.node("init").after.params == hf.num_parameters()
    _, grown = ours(tmp_path / "source")
    from lagdsl.ops.core import GrowthSpec, grow

    deeper = grow(grown, None, GrowthSpec("copy_top", "depth", 4), torch.Generator()).model
    assert plan.totals.final.params == deeper.num_params()


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "`{root}/nowhere` is not a folder: a pretrained model is a Hugging Face checkpoint folder"),
        ("no-config", "`{root}/source` has no `config.json`: is it a Hugging Face checkpoint folder?"),
        ("gemma", "`GemmaForCausalLM` is not a model family lagdsl can grow"),
        ("window", "`layer_types` names sliding layers and `use_sliding_window` is off: no window to slide by"),
        ("no-weights", "`{root}/source` has no `model.safetensors` or `model.safetensors.index.json`"),
    ],
)
def test_a_bad_pretrained_folder_is_a_diagnostic_naming_the_file(setup: str, expected: str, tmp_path: Path) -> None:
    path = write_schedule(tmp_path, "qwen2")
    source = tmp_path / "source"
    if setup == "missing":
        path.write_text(path.read_text().replace('pretrained("source"', 'pretrained("nowhere"'))
    elif setup == "no-config":
        (source / "config.json").unlink()
    elif setup == "gemma":
        config = read_config(source)
        (source / "config.json").write_text(json.dumps({**config, "architectures": ["GemmaForCausalLM"]}))
    elif setup == "window":  # (a config transformers fails on: sliding layers, no window)
        config = read_config(source)
        types = ["sliding_attention", "full_attention", "full_attention"]
        (source / "config.json").write_text(json.dumps({**config, "use_sliding_window": False, "layer_types": types}))
    elif setup == "no-weights":
        (source / "model.safetensors").unlink()
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert expected.format(root=tmp_path) in result.output
    assert "upscale.grow:4:" in result.output  # the line of `model pretrained(...)`


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
@pytest.mark.parametrize(
    "windows",
    [
        {"max_window_layers": 1},  # no `layer_types`: the layers from 1 up slide
        {"max_window_layers": 28, "layer_types": ["full_attention", "sliding_attention", "full_attention"]},
    ],
    ids=["max_window_layers", "layer_types"],
)
def test_a_qwen_window_on_some_layers_is_computed_as_transformers_computes_it(
    kind: str, windows: dict, tmp_path: Path
) -> None:
    """transformers 5 attends over the window in the layers `layer_types` names (else those from
    `max_window_layers` up); lagdsl computes the same at 32 positions, 4 times the window, and the
    export keeps each layer's kind."""
    overrides = {"use_sliding_window": True, "sliding_window": 8, **windows}
    source = make_checkpoint(tmp_path / "source", kind, **overrides)
    ids = torch.randint(0, COMMON["vocab_size"], (1, 32), generator=torch.Generator().manual_seed(1))
    windowed, (hf_model, _) = hf_logits(source, ids)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "sliding_window": 64}))  # no shorter than the text
    whole, _ = hf_logits(source, ids)
    (source / "config.json").write_text(json.dumps(config))
    assert (windowed - whole).abs().max() > 1e-3  # transformers does slide here: a different model
    family, model = ours(source)
    assert model.config.style.local == tuple(
        i for i, t in enumerate(hf_model.config.layer_types) if t.startswith("sliding")
    )
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], windowed, atol=1e-5, rtol=0)
    out = tmp_path / "out"
    export_pretrained(model.state_dict(), model.config, family, read_config(source), source, out)
    torch.testing.assert_close(hf_logits(out, ids)[0], windowed, atol=1e-5, rtol=0)


def test_a_checkpoint_without_tokenizer_json_is_refused_rather_than_trained_on_bytes(tmp_path: Path) -> None:
    """A SentencePiece-only folder (`tokenizer.model`, no `tokenizer.json`): the data would be read
    as bytes, ids the model never learnt; refused at `validate`, saying how to write the file, and
    accepted once the data names a tokenizer."""
    path = write_schedule(tmp_path, "llama")
    source = tmp_path / "source"
    (source / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    (source / "tokenizer.model").write_bytes(b"a SentencePiece model")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert "has no `tokenizer.json`" in result.output and "tokenizer.model" in result.output
    assert "save_pretrained" in result.output and "upscale.grow:4:" in result.output
    path.write_text(
        path.read_text().replace('text("corpus/*.txt")', 'text("corpus/*.txt", tokenizer="tokenizer.json")')
    )
    assert CliRunner().invoke(main, ["validate", str(path)]).exit_code == 0


@pytest.mark.slow
def test_a_pretrained_run_evaluates_the_checkpoint_before_growth_and_the_report_says_so(tmp_path: Path) -> None:
    """The number an up-scaler wants first is where the checkpoint stood: a pretrained run with
    `eval` evaluates at step 0 (the plan has the node), the report shows it, and says that the
    saving against scratch leaves the checkpoint's own pretraining out."""
    from lagdsl.analysis.report import build_report

    path = write_schedule(tmp_path, "qwen2")
    path.write_text(path.read_text().replace("batch 4\n", "batch 4\neval every 4 steps (batches=2)\n"))
    plan = CliRunner().invoke(main, ["plan", str(path), "--format", "json"])
    assert plan.exit_code == 0, plan.output
    assert [n["id"] for n in json.loads(plan.stdout)["nodes"]][:3] == ["init", "heal/eval@0", "heal/train"]
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals[0]["step"] == 0 and evals[0]["stage"] == "heal"
    page = build_report(run_dir, tmp_path / "report").page.read_text()
    assert "val loss, before growth</th><td>" + f"{evals[0]['val_loss']:.4f}" in page
    assert "pretraining not counted" in page


@pytest.mark.slow
def test_the_run_counts_the_flops_the_plan_counts_for_a_pretrained_probe(tmp_path: Path) -> None:
    """A pretrained run whose probe selects on held-out loss, the old layers frozen: the run's
    mainline, probe and from-scratch FLOPs are the plan's (the probe's scoring passes were left out
    of the run's count, and its from-scratch figure took a `gpt` model's MLP for the checkpoint's)."""
    path = write_schedule(tmp_path, "qwen2")
    text = path.read_text().replace("batch 4\n", "batch 4\neval every 4 steps (batches=2)\n")
    text = text.replace("    probe 2 steps\n", "    probe 2 steps\n    select lowest val_loss\n")
    path.write_text(text.replace("  }\n  train 4 steps\n}", "  }\n  train 4 steps { freeze old }\n}"))
    plan = CliRunner().invoke(main, ["plan", str(path), "--format", "json"])
    assert plan.exit_code == 0, plan.output
    totals = json.loads(plan.stdout)["totals"]
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mainline_flops"] == totals["mainline_flops"]
    assert summary["probe_flops"] == totals["probe_overhead_flops"]
    assert summary["scratch_flops"] == totals["scratch_flops"]


@pytest.mark.slow
def test_a_schedule_from_a_checkpoint_runs_exports_the_same_family_and_generates_the_same_text(tmp_path: Path) -> None:
    path = write_schedule(tmp_path, "qwen2")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["pretrained"]["family"] == "qwen2" and (run_dir / "source" / "config.json").is_file()

    exported = CliRunner().invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "hf")])
    assert exported.exit_code == 0, exported.output
    config = read_config(tmp_path / "hf")
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["num_hidden_layers"] == 4
    assert config["tie_word_embeddings"] is True and config["layer_types"] == ["full_attention"] * 4
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    trained = open_trained(run_dir).model()
    text = torch.tensor([list((tmp_path / "corpus" / "a.txt").read_bytes()[1000:1032])])
    with torch.no_grad():  # the trained model, not the source: it grew (4 layers) and trained
        torch.testing.assert_close(model(text).logits, trained(text)[0], atol=1e-5, rtol=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    prompt = "def main("
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    theirs = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    sampled = CliRunner().invoke(
        main,
        ["sample", str(run_dir), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "12", "--no-prompt"],
    )
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout == tokenizer.decode(theirs) + "\n"


def test_a_resume_refuses_a_changed_source(tmp_path: Path) -> None:
    path = write_schedule(tmp_path, "llama")
    run_dir = tmp_path / "run"
    first = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(run_dir), "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    make_checkpoint(tmp_path / "source", "llama", num_hidden_layers=4)  # replaced by another model
    again = CliRunner().invoke(main, ["run", "--resume", str(run_dir)])
    assert again.exit_code == 2
    assert (
        again.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "differs from the one `" + str(run_dir) + "` began from (its config or weight files changed): "
            "restore it, or start a new run"
        )
    )


def test_a_run_whose_schedule_names_relative_paths_is_checked_from_where_it_began(tmp_path: Path) -> None:
    """`RUN/schedule.grow` names `pretrained("source")` relative to the schedule's first folder.
    Checked again from the run directory, it once failed to resolve: `export --checkpoint` took
    another run's model unchecked, the report had no plan picture, and a resume whose source had
    moved said only "no longer validates". Each checks it from where it began (`run.json`'s base)."""
    path = write_schedule(tmp_path, "llama")
    run_dir = tmp_path / "run"
    assert (
        CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(run_dir), "--max-steps", "2"]).exit_code
        == 0
    )
    other = tmp_path / "other.grow"  # another run: another vocabulary and width
    other.write_text(
        'model gpt(context=16, width=32, heads=2, depth=1)\ndata text("corpus/*.txt")\nbatch 4\n'
        "optimizer adamw(lr=1e-3)\nstage a { train 2 steps }\n"
    )
    assert CliRunner().invoke(main, ["run", "--quiet", str(other), "--out", str(tmp_path / "o")]).exit_code == 0
    foreign = CliRunner().invoke(
        main, ["export", str(run_dir), "--checkpoint", str(tmp_path / "o" / "final"), "-o", str(tmp_path / "hf")]
    )
    assert foreign.exit_code == 2 and "is not a checkpoint of" in foreign.stderr, foreign.output
    report = CliRunner().invoke(main, ["report", str(run_dir)])
    assert report.exit_code == 0 and "no longer validates" not in report.stderr, report.output
    (tmp_path / "source").rename(tmp_path / "moved")
    resumed = CliRunner().invoke(main, ["run", "--resume", str(run_dir)])
    assert resumed.exit_code == 1
    assert f"no longer validates: E0309 `{tmp_path / 'source'}` is not a folder" in resumed.stderr, resumed.output


def test_the_plan_counts_a_model_held_in_bf16_at_two_bytes_a_weight_moment_and_compensation(tmp_path: Path) -> None:
    from lagdsl.lang import check_text
    from lagdsl.plan import build_plan

    path = write_schedule(tmp_path, "llama")
    memory = {}
    for dtype in ("fp32", "bf16"):
        text = path.read_text().replace("context=32)", f"context=32, dtype={dtype})")
        schedule = check_text(text, str(path)).schedule
        assert schedule is not None
        memory[dtype] = build_plan(schedule, 1).stages[0].memory
    params = build_plan(schedule, 1).stages[0].shape.params
    assert (memory["fp32"].weights, memory["fp32"].optimizer) == (4 * params, 8 * params)
    assert (memory["bf16"].weights, memory["bf16"].optimizer) == (2 * params, 6 * params)  # m, v, compensation
    assert memory["bf16"].activations == memory["fp32"].activations


@pytest.mark.slow
def test_a_model_held_in_bf16_stays_bf16_through_a_probe_and_resumes_to_the_same_losses(tmp_path: Path) -> None:
    """`dtype=bf16`: the weights are held in bf16 from the checkpoint on. A probe's restore and a
    resume once rebuilt them in fp32, so a resumed run trained another model than the run never
    interrupted (its losses moved at the first step after the resume)."""
    path = write_schedule(tmp_path, "llama")
    text = path.read_text().replace("context=32)", "context=32, dtype=bf16)")
    path.write_text(text.replace("stage heal {", "checkpoint every 3 steps (keep=2)\nstage heal {"))
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(whole)]).exit_code == 0
    first = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(part), "--max-steps", "3"])
    assert first.exit_code == 0, first.output
    assert CliRunner().invoke(main, ["run", "--quiet", "--resume", str(part)]).exit_code == 0

    def steps(run_dir: Path) -> list[tuple[int, float]]:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [(e["step"], e["loss"]) for e in map(json.loads, lines) if e["event"] == "step"]

    assert len(steps(whole)) == 8 and steps(part) == steps(whole)
    final = open_trained(whole).state  # after the probe at step 4: still bf16
    assert {tensor.dtype for tensor in final.values()} == {torch.bfloat16}


# ------------------------------------------------------------------------------ up-scaling operators


@pytest.mark.parametrize(
    ("kind", "operator", "dim", "target"),
    [
        ("llama", "llama_pro", "depth", 6),
        ("qwen3", "llama_pro", "depth", 4),
        ("qwen2", "identity", "depth", 5),
        ("llama", "net2net", "width", 96),
        ("qwen3", "zero", "width", 128),
        ("qwen2", "net2net", "width", 128),
        ("llama", "hyperclone", "width", 128),
        ("qwen2", "hyperclone", "width", 192),  # tied: x3
        ("qwen3", "hyperclone", "width", 128),
    ],
)
def test_function_preserving_operators_keep_an_imported_models_logits(
    kind: str, operator: str, dim: str, target: int, tmp_path: Path
) -> None:
    from lagdsl.ops.core import GrowthSpec, grow

    _, model = ours(make_checkpoint(tmp_path / "source", kind))
    ids = torch.randint(0, COMMON["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids)[0]
    grown = grow(model, None, GrowthSpec(operator, dim, target), torch.Generator().manual_seed(0)).model.eval()
    assert getattr(grown.config, dim) == target
    if dim == "width":  # key/value heads grew in proportion to the query heads
        assert grown.config.heads // grown.config.key_value_heads == 2
    with torch.no_grad():
        torch.testing.assert_close(grown(ids)[0], before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["llama", "llama_tied"])
def test_hyperclone_tiles_every_weight_and_its_noise_keeps_the_function(kind: str, tmp_path: Path) -> None:
    """Without noise every weight is `W.repeat(n, n) / n` (a tied embedding, which the stream and
    the head share, over n); with noise the copies differ and the logits stay."""
    from lagdsl.ops.core import GrowthSpec, grow

    _, model = ours(make_checkpoint(tmp_path / "source", kind))
    old = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(0, COMMON["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids)[0]
    plain = grow(model, None, GrowthSpec("hyperclone", "width", 128, {"noise": 0.0}), torch.Generator()).model
    assert (plain.config.heads, plain.config.key_value_heads, plain.config.hidden) == (8, 4, 192)
    tied = kind == "llama_tied"
    w = old["blocks.0.mlp.down.weight"]
    assert torch.equal(plain.blocks["0"].mlp.down.weight, w.repeat(2, 2) / (4 if tied else 2))
    assert torch.equal(plain.embed.weight, old["embed.weight"].repeat(1, 2) / (2 if tied else 1))
    if not tied:
        assert torch.equal(plain.lm_head.weight, old["lm_head.weight"].repeat(1, 2) / 2)
    model = ours(make_checkpoint(tmp_path / "source", kind))[1]
    noisy = grow(model, None, GrowthSpec("hyperclone", "width", 128, {"noise": 0.1}), torch.Generator()).model.eval()
    q = noisy.blocks["0"].attn.qkv.weight
    assert not torch.equal(q[:, :64], q[:, 64:])  # the two copies of the stream are read differently
    with torch.no_grad():
        torch.testing.assert_close(noisy(ids)[0], before, atol=1e-5, rtol=0)


def test_layer_lists_give_the_listed_source_layers_tensor_for_tensor(tmp_path: Path) -> None:
    """SOLAR's recipe at toy size: 3 layers [0, 2) + [1, 3) -> 4, exported as the listed layers."""
    from lagdsl.ops.core import GrowthSpec, grow

    source = make_checkpoint(tmp_path / "source", "mistral")
    family, model = ours(source)
    spec = GrowthSpec("layers", "depth", 4, {"ranges": ((0, 2), (1, 3))})
    grown = grow(model, None, spec, torch.Generator()).model
    out = tmp_path / "out"
    export_pretrained(grown.state_dict(), grown.config, family, read_config(source), source, out)
    assert read_config(out)["num_hidden_layers"] == 4
    from safetensors.torch import load_file

    before, after = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    for new, old in enumerate([0, 1, 1, 2]):
        for name in [k for k in before if k.startswith(f"model.layers.{old}.")]:
            assert torch.equal(after[name.replace(f"layers.{old}.", f"layers.{new}.")], before[name]), name


def test_the_checker_checks_layer_ranges_against_the_model(tmp_path: Path) -> None:
    from lagdsl.lang import check_text

    path = write_schedule(tmp_path)
    text = path.read_text().replace("[copy_top, identity]", "[layers([[0, 2], [1, 4]]), llama_pro, layers([[0, 3]])]")
    text = text.replace("grow depth by 1", "grow depth by 2")
    messages = [d.message + " / " + d.label for d in check_text(text, str(path)).diagnostics]
    assert (
        "`layers([[0, 2], [1, 4]])` cannot grow depth 3 -> 5 / the range [1, 4] goes past the 3 layers the model has"
        in messages
    )
    assert (
        "`llama_pro` cannot grow depth 3 -> 5 / it adds one copy after every k-th of the 3 layers, "
        "so it adds a divisor of 3, not 2" in messages
    )
    assert (
        "`layers([[0, 3]])` cannot grow depth 3 -> 5 / its ranges hold 3 layers, and the growth asks for 5" in messages
    )


def test_the_checker_lets_hyperclone_only_multiply_the_width(tmp_path: Path) -> None:
    from lagdsl.lang import check_text

    stage = "stage wide { grow width to 96 { candidates [hyperclone, net2net] probe 5 steps } train 9 steps }"
    path = write_schedule(tmp_path, extra=stage)
    errors = [d for d in check_text(path.read_text(), str(path)).diagnostics if d.severity == "error"]
    assert [d.message + " / " + d.label for d in errors] == [
        "`hyperclone` cannot grow width 64 -> 96 / it multiplies the width by a whole number, "
        "and 96 is not a multiple of 64"
    ]
    fixed = path.read_text().replace("width to 96", "width to 128")
    assert not [d for d in check_text(fixed, str(path)).diagnostics if d.severity == "error"]


# ------------------------------------------------------------------------------ shipped recipes

RECIPES = sorted((ROOT / "schedules" / "pretrained").glob("*.grow"))
#: the depth of the checkpoint each shipped recipe names
RECIPE_DEPTHS = {
    "models/mistral-7b": ("mistral", 32),
    "models/llama-2-7b": ("llama", 32),
    "models/llama-3.2-1b": ("llama", 16),
    "models/qwen3-0.6b": ("qwen3", 28),
    "models/qwen2.5-0.5b": ("qwen2", 24),
    "models/gemma-2-2b": ("gemma2", 26),  # (a family of tests/test_families.py)
    "models/pythia-160m": ("gpt_neox", 12),
}
#: the recipes whose growth needs the checkpoint's width (other sizes kept tiny)
RECIPE_WIDTHS = {"models/pythia-160m": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 32}}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_the_shipped_recipes_validate_cleanly_on_a_checkpoint_of_their_shape(path: Path, tmp_path: Path) -> None:
    from lagdsl.lang import check_text

    text = path.read_text(encoding="utf-8")
    folder = re.search(r'pretrained\("([^"]+)"', text)[1]
    kind, depth = RECIPE_DEPTHS[folder]
    if kind in FAMILIES:
        make_checkpoint(tmp_path / folder, kind, num_hidden_layers=depth, max_position_embeddings=4096)
    else:
        from tests import test_families

        sizes = RECIPE_WIDTHS.get(folder, {})
        test_families.make_checkpoint(
            tmp_path / folder, kind, num_hidden_layers=depth, max_position_embeddings=4096, **sizes
        )
    data = re.search(r'data text\("([^"]+)"', text)
    if data is not None:  # the corpus the recipe names, so that validate finds it
        corpus = tmp_path / data[1].split("*")[0]
        corpus.mkdir(parents=True, exist_ok=True)
        (corpus / "a.txt").write_text("text\n")
    result = check_text(text, str(tmp_path / path.name))
    assert result.schedule is not None and not result.diagnostics, result.diagnostics
    assert CliRunner().invoke(main, ["fmt", "--check", str(path)]).exit_code == 0


UPSCALE = """
schedule upscale
seed 4
model pretrained("base", context=32)
data text("corpus/*.txt")
batch 4
optimizer adamw(lr=3e-3)
pool recipes = [layers([[0, 3], [1, 4]]), llama_pro, copy_top, random]
stage upscale {
  grow depth to 6 {
    candidates recipes
    probe 3 steps
  }
  train 8 steps {
    freeze old
  }
}
"""

BASE = """
schedule base
seed 1
model gpt(context=32, width=32, heads=2, depth=4)
data text("corpus/*.txt")
batch 4
optimizer adamw(lr=3e-3)
stage base { train 30 steps }
"""


@pytest.mark.slow
def test_a_base_lagdsl_pretrained_is_upscaled_by_probe_healed_frozen_and_exported(tmp_path: Path) -> None:
    """The whole pipeline: lagdsl pretrains and exports a base; a probe picks among a SOLAR-style
    layer list, LLaMA Pro, copy_top and random; the winner heals with the old blocks frozen; the
    export is the same family and `transformers` generates lagdsl's greedy text."""
    from safetensors.torch import load_file

    write_corpus(tmp_path)
    (tmp_path / "base.grow").write_text(BASE)
    runner = CliRunner()
    base_run = runner.invoke(main, ["run", "--quiet", str(tmp_path / "base.grow"), "--out", str(tmp_path / "r0")])
    assert base_run.exit_code == 0, base_run.output
    assert runner.invoke(main, ["export", str(tmp_path / "r0"), "-o", str(tmp_path / "base")]).exit_code == 0
    (tmp_path / "upscale.grow").write_text(UPSCALE)
    run_dir = tmp_path / "r1"
    result = runner.invoke(main, ["run", "--quiet", str(tmp_path / "upscale.grow"), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    winner = json.loads((run_dir / "summary.json").read_text())["winners"]["upscale"]
    assert winner in {"layers([[0, 3], [1, 4]])", "llama_pro", "copy_top", "random"}
    exported = runner.invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "hf")])
    assert exported.exit_code == 0, exported.output
    assert read_config(tmp_path / "hf")["architectures"] == ["LlamaForCausalLM"]
    assert read_config(tmp_path / "hf")["num_hidden_layers"] == 6

    base, grown = load_file(tmp_path / "base" / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert torch.equal(grown["model.embed_tokens.weight"], base["model.embed_tokens.weight"])  # frozen: old
    assert torch.equal(grown["model.norm.weight"], base["model.norm.weight"])
    layer = [k for k in base if k.startswith("model.layers.0.")]

    def holds_layer_0(i: int) -> bool:
        return all(torch.equal(grown[k.replace("layers.0.", f"layers.{i}.")], base[k]) for k in layer)

    assert any(holds_layer_0(i) for i in range(6))  # the base's first layer, unchanged, is in the grown model
    blocks = [k for k in grown if k.startswith("model.layers.")]
    assert any(not any(torch.equal(grown[k], t) for t in base.values()) for k in blocks)  # the new layers trained

    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = tokenizer("def main(", return_tensors="pt").input_ids
    theirs = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    greedy = ["--temperature", "0", "--max-new-tokens", "12", "--no-prompt"]
    sampled = runner.invoke(main, ["sample", str(run_dir), "--prompt", "def main(", *greedy])
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout == tokenizer.decode(theirs) + "\n"


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_a_damaged_weight_file_is_one_line_naming_it(damage: str, tmp_path: Path) -> None:
    from lagdsl.model.hub import HubError

    source = make_checkpoint(tmp_path / "source", "llama")
    weights = source / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100] if damage == "truncated" else b"\xff" * 8 + data[8:])
    with pytest.raises(HubError, match=r"model\.safetensors") as error:
        ours(source)
    assert "\n" not in str(error.value)
    assert ("truncated" in str(error.value)) == (damage == "truncated")


def _with_header(weights: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """`weights` with its safetensors header's JSON text replaced by `edit(header, names)`, the data kept."""
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    text = edit(header, [n for n in header if n != "__metadata__"]).encode()
    weights.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])


def _same_offsets(header: dict, names: list[str]) -> str:
    """The second tensor of a pair of one shape and dtype made to read the first one's bytes."""
    first = next(a for a in names for b in names if a != b and header[a]["shape"] == header[b]["shape"])
    second = next(b for b in names if b != first and header[b]["shape"] == header[first]["shape"])
    header[second]["data_offsets"] = header[first]["data_offsets"]
    return json.dumps(header)


def _named_twice(header: dict, names: list[str]) -> str:
    """A name given again with another tensor's bytes (plain JSON keeps the last: that layer would
    read another's weights)."""
    first = next(a for a in names for b in names if a != b and header[a]["shape"] == header[b]["shape"])
    other = next(b for b in names if b != first and header[b]["shape"] == header[first]["shape"])
    return json.dumps(header)[:-1] + f", {json.dumps(first)}: {json.dumps(header[other])}}}"


DAMAGED_HEADERS = {
    "two tensors at the same offsets": (_same_offsets, "starts at byte"),
    "a name given twice": (_named_twice, "is named twice"),
    "a negative offset": (
        lambda h, n: json.dumps({**h, n[0]: {**h[n[0]], "data_offsets": [-8, h[n[0]]["data_offsets"][1]]}}),
        "not counts",
    ),
    "an offset past the file": (
        lambda h, n: json.dumps({**h, n[0]: {**h[n[0]], "data_offsets": [2**62, 2**62 + 4]}}),
        "bytes for",
    ),
    "an unknown dtype": (lambda h, n: json.dumps({**h, n[0]: {**h[n[0]], "dtype": "F7"}}), "unknown dtype"),
    "a shape the bytes do not hold": (
        lambda h, n: json.dumps({**h, n[0]: {**h[n[0]], "shape": [*h[n[0]]["shape"], 2]}}),
        "bytes for",
    ),
    "nested 50,000 deep": (lambda h, n: "[" * 50_000 + "]" * 50_000, "nested too deep"),
}


@pytest.mark.parametrize("damage", list(DAMAGED_HEADERS))
def test_a_safetensors_header_is_validated_as_the_library_validates_it(damage: str, tmp_path: Path) -> None:
    """Headers the safetensors library refuses (tensors sharing bytes, a name twice, offsets out of
    the file, an unknown dtype, a shape its bytes do not hold) once loaded (one layer reading
    another's bytes) or raised an internal error (`seek` to a negative offset, a RecursionError):
    one line naming the file now, as the library refuses."""
    from safetensors import safe_open

    source = make_checkpoint(tmp_path / "source", "llama")
    weights = source / "model.safetensors"
    edit, says = DAMAGED_HEADERS[damage]
    _with_header(weights, edit)
    with pytest.raises(HubError, match=r"model\.safetensors` cannot be read as safetensors") as error:
        ours(source)
    assert says in str(error.value) and "\n" not in str(error.value)
    if damage != "nested 50,000 deep":  # the library itself refuses each of these
        with pytest.raises(Exception), safe_open(weights, "pt") as opened:  # noqa: B017
            for name in opened.keys():  # noqa: SIM118
                opened.get_tensor(name)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"num_hidden_layers": 2000}, "E0302]: `num_hidden_layers` 2,000 in "),
        ({"vocab_size": 10**9}, "E0302]: `vocab_size` 1,000,000,000 in "),
        ({"num_attention_heads": 4096, "num_key_value_heads": 4096, "hidden_size": 8192}, "`num_attention_heads` 4,"),
        ({"hidden_size": 2**20}, "E0302]: `hidden_size` 1,048,576 in "),
        ({"max_position_embeddings": 2**21}, "E0302]: `max_position_embeddings` 2,097,152 in "),
        ({"rope_scaling": "linear"}, 'E0309]: `rope_scaling` must be an object such as {"rope_type": "default"}'),
        ({"rope_scaling": [1, 2]}, "E0309]: `rope_scaling` must be an object"),
        ({"rope_parameters": "x"}, "E0309]: `rope_parameters` must be an object"),
    ],
    ids=["layers", "vocab", "heads", "width", "positions", "rope-string", "rope-list", "rope-parameters"],
)
def test_a_config_beyond_the_limits_or_of_the_wrong_shape_is_a_diagnostic(
    tmp_path: Path, overrides: dict, says: str
) -> None:
    """Such configs were internal errors of `validate` and `plan` (a ValidationError, a TypeError)."""
    config = {**COMMON, "architectures": ["LlamaForCausalLM"], "model_type": "llama", **overrides}
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "config.json").write_text(json.dumps(config))
    (tmp_path / "source" / "model.safetensors").write_bytes(b"")  # never opened by the checker
    (tmp_path / "s.grow").write_text(
        'model pretrained("source")\nbatch 4\noptimizer adamw(lr=1e-3)\nstage a { train 1 steps }\n'
    )
    for command in ("validate", "plan"):
        result = CliRunner().invoke(main, [command, str(tmp_path / "s.grow")])
        assert result.exit_code == 1 and says in result.output and "internal error" not in result.output, result.output


def test_weights_held_in_fp16_are_refused_naming_bf16(tmp_path: Path) -> None:
    """`dtype=fp16` trained NaN from step 1 at any LR (AdamW's eps underflows in fp16), and the
    probe's advice to lower the LR could not help: the checker refuses it, naming what trains."""
    path = write_schedule(tmp_path, "llama")
    path.write_text(path.read_text().replace('pretrained("source", context=32)', 'pretrained("source", dtype=fp16)'))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and "error[E0302]: `dtype=fp16` weights do not train" in result.output
    assert "use `dtype=bf16`" in result.output


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
def test_a_json_file_nested_too_deep_is_one_line_naming_it(name: str, tmp_path: Path) -> None:
    """A `config.json` or index nested 50,000 deep was a RecursionError, an internal error."""
    source = make_checkpoint(tmp_path / "source", "llama", shard=name != "config.json")
    (source / name).write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises((FamilyError, HubError), match=rf"`{re.escape(str(source / name))}` .*nested too deep"):
        ours(source)
    if name == "config.json":  # `validate` reads it too, without torch
        (tmp_path / "s.grow").write_text(SCHEDULE.format(extra=""))
        result = CliRunner().invoke(main, ["validate", str(tmp_path / "s.grow")])
        assert result.exit_code == 1 and "nested too deep" in result.output and "internal error" not in result.output


def test_an_export_never_replaces_the_source_and_a_foreign_checkpoint_only_under_force(tmp_path: Path) -> None:
    """`export RUN -o SRC` into the pretrained folder the run began from once exited 0 with the
    source's weights and config replaced (no run from it could resume): refused now, `--force` or
    not. A Hugging Face folder that no export wrote (its files are an export's names) needs
    `--force`; an export records itself (`lagdsl-export.json`), and is replaced without asking."""
    path = write_schedule(tmp_path, "llama")
    run = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(tmp_path / "run")])
    assert run.exit_code == 0, run.output
    source = tmp_path / "source"
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    for force in ([], ["--force"]):
        result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "-o", str(source), *force])
        assert result.exit_code == 2 and "is the pretrained folder" in result.stderr, result.output
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    other = make_checkpoint(tmp_path / "other", "llama", seed=1)
    refused = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "-o", str(other)])
    assert refused.exit_code == 2 and "holds files `lagdsl export` did not write" in refused.stderr
    assert CliRunner().invoke(main, ["export", str(tmp_path / "run"), "-o", str(other), "--force"]).exit_code == 0
    record = json.loads((other / "lagdsl-export.json").read_text())
    assert record["run"] == str((tmp_path / "run").resolve())
    again = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "-o", str(other)])
    assert again.exit_code == 0, again.output  # its own earlier export: replaced


@pytest.mark.parametrize("damage", ["a shard missing", "a file cut short", "a tensor missing", "a wrong dtype"])
def test_an_unreadable_source_stops_the_run_before_it_writes_anything(tmp_path: Path, damage: str) -> None:
    """A source that cannot be read once stopped `run` only after the run directory was made; then
    `run` said the directory held a run and `--resume` that the source had changed: a loop the user
    left only by deleting it. The weights' headers are checked first now: one line, exit 2, nothing
    written."""
    path = write_schedule(tmp_path, "llama", shard=True)
    index = tmp_path / "source" / "model.safetensors.index.json"
    shards = sorted((tmp_path / "source").glob("model-*.safetensors"))
    if damage == "a shard missing":
        shards[-1].unlink()
    elif damage == "a file cut short":
        shards[0].write_bytes(shards[0].read_bytes()[:-64])
    elif damage == "a tensor missing":
        weight_map = json.loads(index.read_text())
        del weight_map["weight_map"]["model.layers.1.mlp.up_proj.weight"]
        index.write_text(json.dumps(weight_map))
    else:
        _with_header(
            shards[0], lambda header, names: json.dumps({**header, names[0]: {**header[names[0]], "dtype": "I32"}})
        )
    result = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(tmp_path / "run")])
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error", "lagdsl:"))]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert errors[0].startswith("error: the pretrained model") and not (tmp_path / "run").exists()


def test_a_run_directory_whose_start_failed_before_its_first_step_is_reused_by_the_same_command(
    tmp_path: Path,
) -> None:
    """A start that fails after the directory is made (here a tied config beside a different head,
    refused as the weights are read) leaves a directory the same command takes again, once fixed."""
    path = write_schedule(tmp_path, "llama_tied")
    _rewrite_weights(tmp_path / "source", lambda s: s.__setitem__("lm_head.weight", s["model.embed_tokens.weight"] + 1))
    command = ["run", "--quiet", str(path), "--out", str(tmp_path / "run")]
    failed = CliRunner().invoke(main, command)
    assert failed.exit_code == 2 and "tie_word_embeddings" in failed.stderr and (tmp_path / "run" / "run.json").exists()
    (tmp_path / "run" / "notes.txt").write_text("mine")  # a file no start writes: the directory is not reused
    assert "already holds a run" in CliRunner().invoke(main, command).stderr
    (tmp_path / "run" / "notes.txt").unlink()
    _rewrite_weights(tmp_path / "source", lambda s: s.pop("lm_head.weight"))
    again = CliRunner().invoke(main, command)
    assert again.exit_code == 0, again.output
    assert "held a run that failed before its first step: started over" in again.stderr


def test_a_bf16_checkpoint_is_read_into_a_float32_model_exactly(tmp_path: Path) -> None:
    source = make_checkpoint(tmp_path / "source", "qwen3", torch_dtype="bfloat16")
    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    _, mine = ours(source)
    theirs = model.state_dict()["model.layers.0.mlp.down_proj.weight"]
    assert theirs.dtype == torch.bfloat16
    assert torch.equal(mine.blocks["0"].mlp.down.weight, theirs.float())


@pytest.mark.slow
def test_under_fsdp_each_rank_reads_its_own_rows_of_the_checkpoint_and_trains_as_one_process(tmp_path: Path) -> None:
    """A Llama checkpoint (untied, one key-value head, so the shards' rows cross from the query
    into the key and value tensors of the fused projection) imported on 2 FSDP ranks, each reading
    its own rows from the files, grown by a probe and healed without ever gathering the state
    (`tests/ungathered.py`): one process's losses and final weights."""
    from tests.test_distributed import assert_close, launch, records

    path = write_schedule(tmp_path, "llama", extra="parallel fsdp", num_key_value_heads=1)
    (tmp_path / "one.grow").write_text(path.read_text().replace("parallel fsdp", ""), encoding="utf-8")
    result = CliRunner().invoke(main, ["run", "--quiet", str(tmp_path / "one.grow"), "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    sharded = launch(tmp_path, "upscale.grow", "--out", "two", ungathered=True)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert_close(records(tmp_path / "one"), records(tmp_path / "two"))
    one = open_trained(tmp_path / "one").model().state_dict()
    two = open_trained(tmp_path / "two").model().state_dict()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-6)
