"""The families beyond Llama's shape: GPT-2, GPT-NeoX (Pythia), OLMo 2, Phi-3, Gemma 2 and Gemma 3;
and Mistral's and Mixtral's sliding windows, shorter than the context.

Each is a tiny random model made here with transformers' own class, every tensor random (biases
and norm gains too). Each imports with transformers' logits at a context longer than its sliding
window, exports back with every key and tensor in place, generates transformers' greedy text,
keeps its function under the function-preserving operators (where the catalogue and the checker
say it does), and is read by the checker from `config.json` alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lagdsl.cli import main
from lagdsl.families import FamilyError, family_of, read_config
from lagdsl.model.export import export_pretrained
from lagdsl.model.hub import config_of, load_pretrained
from tests.conftest import save_checkpoint, write_corpus

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 256  # the byte-level tokenizer's: every id generated decodes
LLAMA_SIZES = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip
NEOX_SIZES = {k: v for k, v in LLAMA_SIZES.items() if k != "num_key_value_heads"}
GEMMA = dict(LLAMA_SIZES, head_dim=16, sliding_window=12, query_pre_attn_scalar=20)

#: each family with its quirks on; the windows (12) shorter than the 40 positions compared
FAMILIES: dict[str, tuple[str, dict[str, object]]] = {
    "gpt2": ("GPT2Config", dict(vocab_size=VOCAB, n_embd=64, n_layer=4, n_head=4, n_positions=64)),
    "gpt_neox": ("GPTNeoXConfig", dict(NEOX_SIZES, rotary_pct=0.25)),  # Pythia: parallel, a quarter rotated
    "gpt_neox_sequential": (
        "GPTNeoXConfig",
        dict(NEOX_SIZES, use_parallel_residual=False, rotary_pct=0.5, hidden_act="gelu_new", attention_bias=False),
    ),
    "olmo2": ("Olmo2Config", dict(LLAMA_SIZES, attention_bias=True)),
    "phi3": (
        "Phi3Config",
        dict(
            LLAMA_SIZES, original_max_position_embeddings=16, sliding_window=12, pad_token_id=0,
            partial_rotary_factor=0.75,  # Phi-4-mini's: 12 of each head's 16 dimensions rotate
            rope_scaling={"rope_type": "longrope", "short_factor": [1.0 + i / 10 for i in range(6)],
                          "long_factor": [2.0 + i for i in range(6)]},
        ),
    ),
    "gemma2": ("Gemma2Config", dict(GEMMA, attn_logit_softcapping=5.0, final_logit_softcapping=6.0)),
    "mistral": ("MistralConfig", dict(LLAMA_SIZES, sliding_window=12)),  # every layer slides
    "mixtral": ("MixtralConfig", dict(LLAMA_SIZES, sliding_window=12, num_local_experts=4, num_experts_per_tok=2)),
    "gemma3": (
        "Gemma3TextConfig",
        dict(
            GEMMA, sliding_window_pattern=3,
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        ),
    ),
}  # fmt: skip
ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "gpt_neox_sequential": "GPTNeoXForCausalLM",
    "olmo2": "Olmo2ForCausalLM", "phi3": "Phi3ForCausalLM", "gemma2": "Gemma2ForCausalLM",
    "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}  # fmt: skip
IDS = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))


def make_checkpoint(folder: Path, kind: str, *, shard: bool = False, seed: int = 0, **overrides: object) -> Path:
    name, values = FAMILIES[kind]
    return save_checkpoint(folder, getattr(transformers, name)(**{**values, **overrides}), shard=shard, seed=seed)


def hf_model(folder: Path) -> tuple[torch.nn.Module, dict]:
    """transformers' model of `folder`, computing attention as written (`eager`: the softcaps too)."""
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True, attn_implementation="eager"
    )
    return model.eval(), info


def hf_logits(folder: Path, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(folder)[0](ids).logits


def ours(folder: Path):  # type: ignore[no-untyped-def]
    family = family_of(read_config(folder))
    return family, load_pretrained(folder, family, config_of(family.arch(read_config(folder)))).eval()


@pytest.mark.parametrize(
    ("kind", "shard"), [(kind, False) for kind in FAMILIES] + [("gpt_neox", True), ("gemma3", True)]
)
def test_each_family_imports_with_transformers_logits_and_exports_back(kind: str, shard: bool, tmp_path: Path) -> None:
    source = make_checkpoint(tmp_path / "source", kind, shard=shard)
    expected = hf_logits(source)
    reference, _ = hf_model(source)
    family, model = ours(source)
    assert family.architecture == ARCHITECTURES[kind] == type(reference).__name__
    assert family.arch(read_config(source)).params == reference.num_parameters() == model.num_params()
    with torch.no_grad():
        torch.testing.assert_close(model(IDS)[0], expected, atol=1e-5, rtol=0)

    out = tmp_path / "out"
    export_pretrained(model.state_dict(), model.config, family, read_config(source), source, out)
    reloaded, info = hf_model(out)
    assert type(reloaded).__name__ == family.architecture
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(hf_logits(out), expected, atol=1e-5, rtol=0)
    written, before = read_config(out), read_config(source)
    assert {k: v for k, v in written.items() if k not in ("dtype", "torch_dtype")} == {
        k: v for k, v in before.items() if k not in ("dtype", "torch_dtype")
    }  # nothing grew, so every key is kept as it was
    assert (out / "tokenizer.json").read_text() == (source / "tokenizer.json").read_text()


def test_a_window_shorter_than_the_context_is_computed_not_refused(tmp_path: Path) -> None:
    """Gemma 2's sliding layers see the last 12 positions: at 40 positions they differ from full
    attention, and lagdsl computes what transformers computes (above); here the window matters."""
    _, model = ours(make_checkpoint(tmp_path / "source", "gemma2"))
    assert model.config.style.local == (0, 2) and model.config.style.window == 12
    with torch.no_grad():
        windowed = model(IDS)[0]
        for i in (0, 2):
            model.block(i).attn.window = None
        assert (model(IDS)[0] - windowed).abs().max() > 1e-3


def _config(kind: str, **changes: object) -> dict[str, object]:
    """The `config.json` transformers writes for `kind`, with `changes`."""
    name, values = FAMILIES[kind]
    return {**getattr(transformers, name)(**values).to_dict(), "architectures": [ARCHITECTURES[kind]], **changes}


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "`scale_attn_by_inverse_layer_idx: true` is not supported"),
        ("gpt_neox", {"hidden_act": "relu"}, "`hidden_act` `relu` is not supported for this family"),
        ("gpt2", {"activation_function": "silu"}, "`activation_function` `silu` is not supported for this family"),
        ("gemma3", {"use_bidirectional_attention": True}, "`use_bidirectional_attention: true` is not supported"),
        ("gemma2", {"layer_types": ["sliding_attention"]}, "`layer_types` must list `sliding_attention` or"),
        ("phi3", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "RoPE type `dynamic` is not Phi-3's"),
        (
            "gpt_neox",
            {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 1.5}},
            "`rope_parameters` must be a share of the head in (0, 1]",
        ),
        ("olmo2", {"partial_rotary_factor": 0.5}, "`partial_rotary_factor` other than 1 is not supported"),
        ("gemma2", {"attention_bias": "yes"}, "`attention_bias` must be true or false"),
    ],
)
def test_a_variant_lagdsl_does_not_compute_is_one_line_naming_its_key(kind: str, changes: dict, message: str) -> None:
    config = _config(kind, **changes)
    with pytest.raises(FamilyError) as error:
        family_of(config).arch(config)
    assert str(error.value).startswith(message), str(error.value)


SCHEDULE = """
schedule heal
seed 3
model pretrained("source", context=32)
data text("corpus/*.txt")
batch 2
optimizer adamw(lr=1e-3)
stage heal {{ train 2 steps }}
{extra}
"""


def _tokenizer(folder: Path):  # type: ignore[no-untyped-def]
    """The export's `tokenizer.json` as it is (a family's own tokenizer class would add its BOS)."""
    return transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))


def _run(root: Path, kind: str, extra: str = "", **overrides: object) -> Path:
    make_checkpoint(root / "source", kind, **overrides)
    write_corpus(root)
    (root / "heal.grow").write_text(SCHEDULE.format(extra=extra), encoding="utf-8")
    run_dir = root / "run"
    result = CliRunner().invoke(main, ["run", "--quiet", str(root / "heal.grow"), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_a_run_exports_its_family_and_lagdsl_sample_is_transformers_greedy_text(kind: str, tmp_path: Path) -> None:
    run_dir = _run(tmp_path, kind)
    exported = CliRunner().invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "hf")])
    assert exported.exit_code == 0, exported.output
    assert read_config(tmp_path / "hf")["architectures"] == [ARCHITECTURES[kind]]
    model, _ = hf_model(tmp_path / "hf")
    tokenizer = _tokenizer(tmp_path / "hf")
    prompt = "def main("
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    theirs = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    greedy = ["--prompt", prompt, "--temperature", "0", "--max-new-tokens", "16", "--no-prompt"]
    sampled = CliRunner().invoke(main, ["sample", str(run_dir), *greedy])
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout == tokenizer.decode(theirs) + "\n"


# ------------------------------------------------------------------------------ operators

DEPTH = [("llama_pro", 6, {}), ("identity", 5, {}), ("layers", 6, {"ranges": ((0, 3), (1, 4))})]


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_function_preserving_depth_operators_keep_each_familys_logits_here_and_in_transformers(
    kind: str, tmp_path: Path
) -> None:
    """LLaMA Pro and `identity` zero what writes into the residual stream (biases too; a parallel
    block both branches; under post-norms a zero stays zero); a layer list's kept layers are the
    source's tensors bit for bit. The export is computed by transformers as lagdsl computes it,
    each copied layer attending as its source (Gemma's `layer_types`)."""
    from safetensors.torch import load_file

    from lagdsl.ops.core import GrowthSpec, grow

    source = make_checkpoint(tmp_path / "source", kind)
    family, model = ours(source)
    with torch.no_grad():
        before = model(IDS)[0]
    for operator, target, args in DEPTH:
        _, model = ours(source)
        grown = grow(model, None, GrowthSpec(operator, "depth", target, args), torch.Generator().manual_seed(0))
        grown_model = grown.model.eval()
        out = tmp_path / operator
        export_pretrained(grown_model.state_dict(), grown_model.config, family, read_config(source), source, out)
        if operator == "layers":  # the listed layers, tensor for tensor
            old, new = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
            layer = next(k for k in old if ".0." in k).split(".0.")[0]
            for position, was in enumerate([0, 1, 2, 1, 2, 3]):
                for name in [k for k in old if k.startswith(f"{layer}.{was}.")]:
                    assert torch.equal(new[name.replace(f"{layer}.{was}.", f"{layer}.{position}.")], old[name])
            continue
        with torch.no_grad():
            torch.testing.assert_close(grown_model(IDS)[0], before, atol=1e-5, rtol=0, msg=operator)
        torch.testing.assert_close(hf_logits(out), before, atol=1e-5, rtol=0, msg=operator)
        types = read_config(out).get("layer_types")
        if kind.startswith("gemma"):  # each layer's attention is its source's, a fresh one the one below
            source_types = read_config(source)["layer_types"]
            sources = {"llama_pro": [0, 1, 1, 2, 3, 3], "identity": [0, 1, 2, 3, 3]}[operator]
            assert types == [source_types[s] for s in sources]


WIDTH = [("net2net", 96), ("zero", 96), ("hyperclone", 128)]


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_width_operators_keep_each_familys_logits_where_the_checker_says_they_do(kind: str, tmp_path: Path) -> None:
    """Where RMSNorm is the only norm over the stream, `net2net` and `zero` keep the logits
    (Gemma's embedding scale compensated); with LayerNorm (GPT-2, GPT-NeoX) or OLMo 2's q/k norm
    over the projection they change them, and the checker says so (W0402) naming the family;
    `hyperclone` keeps every family's."""
    from lagdsl.lang import check_text
    from lagdsl.ops.core import GrowthSpec, grow

    source = make_checkpoint(tmp_path / "source", kind)
    write_corpus(tmp_path)

    def imported():  # type: ignore[no-untyped-def]
        family, model = ours(source)
        if kind == "olmo2":  # unequal heads and sharp attention, as trained ones have: copying a head then
            with torch.no_grad():  # changes the projection's mean square, and that the scores
                for i in range(4):
                    model.block(i).attn.qkv.weight[:16] *= 4
                    model.block(i).attn.q_norm.weight.mul_(8)
        return family, model

    family, model = imported()
    with torch.no_grad():
        before = model(IDS)[0]
    approximate = set()
    for operator, target in WIDTH:
        _, model = imported()
        grown = grow(model, None, GrowthSpec(operator, "width", target), torch.Generator().manual_seed(0)).model.eval()
        with torch.no_grad():
            change = (grown(IDS)[0] - before).abs().max().item()
        inexact = model.config.style.inexact_width(operator, model.config.qk_norm)
        schedule = SCHEDULE.format(
            extra=f"stage wider {{\n  grow width to {target} with {operator}\n  train 2 steps\n}}"
        )
        checked = check_text(schedule, str(tmp_path / "wider.grow"))
        warned = [d for d in checked.diagnostics if d.code == "W0402"]
        assert not checked.errors, [d.message for d in checked.errors]
        if inexact is None:
            assert change < 1e-5, (operator, change)
            assert not warned
            out = tmp_path / operator
            export_pretrained(grown.state_dict(), grown.config, family, read_config(source), source, out)
            assert read_config(out)[family.key("hidden_size")] == target
            torch.testing.assert_close(hf_logits(out), before, atol=1e-5, rtol=0)
        else:
            approximate.add(operator)
            assert change > 1e-4, (operator, change)  # (float rounding: below 1e-5)
            assert [d.message for d in warned] == [
                f"`{operator}` keeps the function of a `{family.architecture}` only approximately"
            ]
    assert approximate == (
        {"net2net", "zero"} if kind in ("gpt2", "gpt_neox", "gpt_neox_sequential", "olmo2") else set()
    )


# ------------------------------------------------------------------------------ context


def test_upcycling_a_family_without_a_mixture_of_experts_form_is_refused_naming_it(tmp_path: Path) -> None:
    from lagdsl.lang import check_text

    for kind, label in (("gemma2", "the model's MLPs are GEGLU"), ("olmo2", "has no mixture-of-experts sibling")):
        root = tmp_path / kind
        make_checkpoint(root / "source", kind)
        write_corpus(root)
        text = SCHEDULE.format(extra="stage moe {\n  grow experts to 4 with upcycle\n  train 2 steps\n}")
        errors = check_text(text, str(root / "moe.grow")).errors
        assert [d.code for d in errors] == ["E0406"], [d.message for d in errors]
        assert label in errors[0].label, errors[0].label
        assert ARCHITECTURES[kind] in f"{errors[0].label} {errors[0].help}"


def test_context_growth_follows_what_each_family_can_hold(tmp_path: Path) -> None:
    """GPT-2's learned table has its rows (`keep` within them, nothing beyond); Phi-3 reads only
    LongRoPE and the default type (a base change is one, position interpolation is not)."""
    from lagdsl.lang import check_text

    cases = [
        ("gpt2", "grow context to 64 with keep", None),
        ("gpt2", "grow context to 128 with keep", "a learned table of 64 rows"),
        ("gpt2", "grow context to 64 with pi", "only `keep` applies"),
        ("phi3", "grow context to 64 with keep", None),
        ("phi3", "grow context to 64 with pi", "positions follow the sequence's length"),
        ("phi3_plain", "grow context to 64 with theta(base=50000)", None),
        ("phi3_plain", "grow context to 64 with pi", "`Phi3ForCausalLM` reads RoPE types `default`, `longrope`"),
    ]
    for i, (kind, growth, refusal) in enumerate(cases):
        root = tmp_path / str(i)
        make_checkpoint(
            root / "source", kind.removesuffix("_plain"), **({"rope_scaling": None} if "_plain" in kind else {})
        )
        write_corpus(root)
        text = SCHEDULE.format(extra=f"stage long {{\n  {growth}\n  train 2 steps\n}}")
        checked = check_text(text, str(root / "long.grow"))
        errors = [d for d in checked.errors if d.code == "E0403"]
        if refusal is None:
            assert not checked.errors, [d.message for d in checked.errors]
        else:
            assert errors and refusal in errors[0].label, [(d.message, d.label) for d in checked.errors]


def test_a_gemma3_grown_longer_exports_its_rope_per_layer_type_and_transformers_agrees(tmp_path: Path) -> None:
    """YaRN on the full-attention layers; the sliding layers keep their base. transformers 5 reads
    the exported `rope_parameters` per layer type and computes lagdsl's logits at 100 positions."""
    default = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}  # fmt: skip
    growth = "stage long {\n  grow context to 128 with yarn\n  train 2 steps\n}"
    run_dir = _run(tmp_path, "gemma3", extra=growth, rope_parameters=default)
    exported = CliRunner().invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "hf")])
    assert exported.exit_code == 0, exported.output
    config = read_config(tmp_path / "hf")
    assert config["rope_parameters"]["sliding_attention"] == {"rope_type": "default", "rope_theta": 10_000.0}
    assert config["rope_parameters"]["full_attention"]["rope_type"] == "yarn"
    assert config["max_position_embeddings"] == 128
    from lagdsl.runtime.state.trained import open_trained

    trained = open_trained(run_dir).model()
    ids = torch.randint(0, VOCAB, (1, 100), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(tmp_path / "hf", ids), trained(ids)[0], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ the checker


def test_validate_and_plan_of_each_family_import_no_torch_and_count_transformers_parameters(tmp_path: Path) -> None:
    paths, counts = [], []
    for kind in FAMILIES:
        root = tmp_path / kind
        source = make_checkpoint(root / "source", kind)
        counts.append(hf_model(source)[0].num_parameters())
        (source / "model.safetensors").write_bytes(b"not read")  # a clean validate proves no weight is read
        write_corpus(root)
        (root / "heal.grow").write_text(SCHEDULE.format(extra=""), encoding="utf-8")
        paths.append(str(root / "heal.grow"))
    code = f"""
import sys, json
from click.testing import CliRunner
from lagdsl.cli import main
params = []
for path in {paths!r}:
    result = CliRunner().invoke(main, ["validate", path])
    assert result.exit_code == 0, result.output
    plan = CliRunner().invoke(main, ["plan", path, "--format", "json"])
    assert plan.exit_code == 0, plan.output
    params.append(json.loads(plan.stdout)["nodes"][0]["after"]["params"])
print(json.dumps(["torch" in sys.modules, params]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    torch_imported, params = json.loads(result.stdout)
    assert not torch_imported
    assert params == counts


# ------------------------------------------------------------------------------ several ranks

SHARDED = """
schedule sharded
seed 3
model pretrained("source", context=32)
data text("corpus/*.txt")
batch 4
optimizer adamw(lr=1e-3)
{parallel}
stage heal {{ train 2 steps }}
stage grow {{
  {growth}
  train 2 steps
}}
"""


@pytest.mark.parametrize(
    ("kind", "growth"),
    [
        ("gpt_neox", "grow depth by 1 {\n    candidates [copy_top, identity]\n    probe 2 steps\n  }"),
        ("gpt2", "grow width to 128 with hyperclone"),
        ("gemma2", "grow width to 96 with net2net"),
    ],
)
def test_under_fsdp_each_rank_reads_its_rows_through_the_familys_layout_and_trains_as_one_process(
    kind: str, growth: str, tmp_path: Path
) -> None:
    """GPT-NeoX's q/k/v per head and GPT-2's transposed weights, read into 2 FSDP ranks' rows; a
    probe among depth operators, a width growth of learned positions, LayerNorm biases and Gemma's
    post-norms, offset gains and embedding scale, grown tensor by tensor without gathering: one
    process's losses and final weights."""
    from lagdsl.runtime.state.trained import open_trained
    from tests.test_distributed import assert_close, launch, records

    make_checkpoint(tmp_path / "source", kind)
    write_corpus(tmp_path)
    for name, parallel in (("one", ""), ("two", "parallel fsdp")):
        (tmp_path / f"{name}.grow").write_text(SHARDED.format(parallel=parallel, growth=growth), encoding="utf-8")
    result = CliRunner().invoke(main, ["run", "--quiet", str(tmp_path / "one.grow"), "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    sharded = launch(tmp_path, "two.grow", "--out", "two", ungathered=True)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert_close(records(tmp_path / "one"), records(tmp_path / "two"))
    one = open_trained(tmp_path / "one").model().state_dict()
    two = open_trained(tmp_path / "two").model().state_dict()
    for name, tensor in one.items():  # (AdamW's first steps divide tiny gradients by their size: 1e-5)
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ end to end

UPSCALE = """
schedule solar
seed 1
model pretrained("source", context=32)
data text("corpus/*.txt")
batch 2
optimizer adamw(lr=1e-3)
pool recipes = [layers([[0, 3], [1, 4]]), llama_pro, identity]
stage upscale {
  grow depth to 6 {
    candidates recipes
    probe 2 steps
  }
  train 4 steps {
    freeze old
  }
}
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gemma2", "gpt_neox"])
def test_a_gemma2_and_a_pythia_are_upscaled_by_probe_healed_frozen_and_exported(kind: str, tmp_path: Path) -> None:
    """SOLAR-style up-scaling as for a Llama: a probe among a layer list, LLaMA Pro and identity
    layers, the winner healed with the old blocks frozen, exported as the same family, computed by
    transformers as lagdsl computes it, and its greedy text lagdsl's."""
    from safetensors.torch import load_file

    from lagdsl.runtime.state.trained import open_trained

    source = make_checkpoint(tmp_path / "source", kind)
    write_corpus(tmp_path)
    (tmp_path / "solar.grow").write_text(UPSCALE)
    runner = CliRunner()
    run_dir = tmp_path / "run"
    result = runner.invoke(main, ["run", "--quiet", str(tmp_path / "solar.grow"), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    winner = json.loads((run_dir / "summary.json").read_text())["winners"]["upscale"]
    assert winner in {"layers([[0, 3], [1, 4]])", "llama_pro", "identity"}
    exported = runner.invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "hf")])
    assert exported.exit_code == 0, exported.output
    config = read_config(tmp_path / "hf")
    assert config["architectures"] == [ARCHITECTURES[kind]]
    assert config[family_of(config).key("num_hidden_layers")] == 6
    embed = next(k for k in load_file(source / "model.safetensors") if "embed" in k)
    assert torch.equal(
        load_file(tmp_path / "hf" / "model.safetensors")[embed], load_file(source / "model.safetensors")[embed]
    )
    trained = open_trained(run_dir).model()
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(tmp_path / "hf", IDS[:, :32]), trained(IDS[:, :32])[0], atol=1e-5, rtol=0)
    model, _ = hf_model(tmp_path / "hf")
    tokenizer = _tokenizer(tmp_path / "hf")
    ids = tokenizer("def main(", return_tensors="pt").input_ids
    theirs = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    greedy = ["--temperature", "0", "--max-new-tokens", "12", "--no-prompt"]
    sampled = runner.invoke(main, ["sample", str(run_dir), "--prompt", "def main(", *greedy])
    assert sampled.exit_code == 0, sampled.output
    assert sampled.stdout == tokenizer.decode(theirs) + "\n"


def test_the_plan_counts_a_sliding_layer_attending_to_its_window(tmp_path: Path) -> None:
    """FLOPs per token are 6 N + 6 w sum over layers of the positions a query meets: T, or the
    window (12) in Gemma 2's sliding half."""
    from lagdsl.lang import check_text
    from lagdsl.plan.cost import CostModel

    make_checkpoint(tmp_path / "source", "gemma2")
    write_corpus(tmp_path)
    schedule = check_text(SCHEDULE.format(extra=""), str(tmp_path / "heal.grow")).schedule
    assert schedule is not None
    cost = CostModel(schedule)
    shape = schedule.model.shape
    active = cost.shape_cost(shape).active
    assert cost.flops_per_token(shape) == 6 * active + 6 * (2 * 32 + 2 * 12) * (4 * 16)


def test_freezing_the_embedding_of_a_gpt2_freezes_its_learned_positions_too(tmp_path: Path) -> None:
    from lagdsl.lang.schedule import Part
    from lagdsl.runtime.training.parts import names_of

    _, model = ours(make_checkpoint(tmp_path / "source", "gpt2"))
    assert names_of(Part(kind="embed"), model, frozenset()) == {"embed.weight", "pos.weight"}


def test_a_gpt2_saved_as_its_base_model_is_read_as_transformers_reads_it(tmp_path: Path) -> None:
    """GPT-2 on the Hub stores its tensors as `GPT2Model` names them (`wte.weight`, `h.0.attn.bias`
    buffers, no `transformer.` prefix, no head): transformers adds the prefix and ties the head, and
    so does lagdsl, from the same folder."""
    from safetensors.torch import load_file, save_file

    source = make_checkpoint(tmp_path / "source", "gpt2")
    weights = load_file(source / "model.safetensors")
    base = {k.removeprefix("transformer."): v for k, v in weights.items() if k.startswith("transformer.")}
    base["h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()  # the old causal-mask buffers, ignored
    save_file(base, source / "model.safetensors", metadata={"format": "pt"})
    family, model = ours(source)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS)[0], hf_logits(source), atol=1e-5, rtol=0)
    out = tmp_path / "out"  # written back with the full model's names, which transformers reads too
    export_pretrained(model.state_dict(), model.config, family, read_config(source), source, out)
    assert "transformer.wte.weight" in load_file(out / "model.safetensors")
    torch.testing.assert_close(hf_logits(out), hf_logits(source), atol=1e-5, rtol=0)
