"""Every RoPE type transformers implements for these families, in and out: a tiny Llama made by
transformers with each `rope_type` (in transformers 5's `rope_parameters` and transformers 4's
`rope_scaling` spelling) imports with transformers' logits beyond the original context, and a model
given each method exports a config from which transformers computes lagdsl's logits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lagdsl.families import FamilyError, family_of, read_config
from lagdsl.lang.rope import Rope
from lagdsl.model.export import export_pretrained
from lagdsl.model.hub import config_of, load_pretrained
from tests.test_pretrained import COMMON, hf_logits, make_checkpoint

transformers = pytest.importorskip("transformers")

LONG = torch.randint(0, COMMON["vocab_size"], (2, 100), generator=torch.Generator().manual_seed(1))  # beyond 64
HEAD = COMMON["hidden_size"] // COMMON["num_attention_heads"]

METHODS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 3.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
    "yarn-betas-untruncated": {
        "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16, "beta_fast": 8.0,
        "beta_slow": 2.0, "truncate": False,
    },
    "yarn-mscale": {
        "rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32, "mscale": 0.7,
        "mscale_all_dim": 1.0,
    },
    "yarn-attention-factor": {
        "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32, "attention_factor": 1.3,
    },
    "longrope": {
        "rope_type": "longrope", "original_max_position_embeddings": 32,
        "short_factor": [1.0 + 0.1 * i for i in range(HEAD // 2)],
        "long_factor": [1.5 + 0.5 * i for i in range(HEAD // 2)],
    },
    "llama3": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
}  # fmt: skip


def ours_at(folder: Path, context: int = 128):  # type: ignore[no-untyped-def]
    config = read_config(folder)
    family = family_of(config)
    return family, load_pretrained(folder, family, config_of(family.arch(config), context=context)).eval()


def with_rope(folder: Path, method: dict[str, object], spelling: str, theta: float = 50_000.0) -> Path:
    """The checkpoint's config given `method` in transformers 5's spelling (`rope_parameters`, the
    base inside) or transformers 4's (`rope_scaling`, the base beside it)."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key in ("rope_parameters", "rope_scaling", "rope_theta"):
        config.pop(key, None)
    if spelling == "v5":
        config["rope_parameters"] = {**method, "rope_theta": theta}
    else:
        config["rope_scaling"], config["rope_theta"] = dict(method), theta
    path.write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("spelling", ["v5", "v4"])
@pytest.mark.parametrize("method", list(METHODS))
def test_each_rope_type_imports_with_transformers_logits_beyond_the_original_context(
    method: str, spelling: str, tmp_path: Path
) -> None:
    source = with_rope(make_checkpoint(tmp_path / "source", "llama"), METHODS[method], spelling)
    _, model = ours_at(source)
    kind = METHODS[method]["rope_type"]
    assert model.config.rope_scaling is not None and model.config.rope_scaling.kind == kind
    assert model.config.rope_theta == 50_000.0
    for ids in (LONG, LONG[:, :12]):  # beyond the original context, and within it (longrope's short factors)
        expected, _ = hf_logits(source, ids)  # a fresh transformers model each time (dynamic keeps state)
        with torch.no_grad():
            torch.testing.assert_close(model(ids)[0], expected, atol=1e-5, rtol=0)


def test_a_cached_generation_rotates_as_transformers_does_across_the_original_context(tmp_path: Path) -> None:
    """LongRoPE's factors switch when the sequence passes `original` positions: the tokens generated
    after that are rotated by the long ones, those cached before keep the short ones, as in
    transformers' cached generation."""
    from lagdsl.model.generate import Generator

    source = with_rope(make_checkpoint(tmp_path / "source", "llama"), METHODS["longrope"], "v5")
    _, model = ours_at(source, context=64)
    hf = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    prompt = LONG[:1, :28]
    theirs = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, 28:]
    mine = list(Generator(model).stream(prompt[0].tolist(), max_new_tokens=12))
    assert mine == theirs.tolist()


@pytest.mark.parametrize("method", ["default", *METHODS])
def test_a_model_given_each_method_exports_what_transformers_computes(method: str, tmp_path: Path) -> None:
    """What a context growth leaves: the same weights under another method, a longer context; the
    exported config carries both, in both spellings, and transformers computes lagdsl's logits."""
    source = make_checkpoint(tmp_path / "source", "llama")
    family, model = ours_at(source)
    params = METHODS.get(method, {"rope_type": "default"})
    config = json.loads(
        (with_rope(make_checkpoint(tmp_path / "other", "llama"), params, "v5") / "config.json").read_text()
    )
    theta, rope = 20_000.0, family.arch(config).rope_scaling
    grown = replace(model.config, rope_theta=theta, rope_scaling=rope, context=128)
    if rope is not None and rope.kind in ("yarn", "longrope", "llama3"):
        rope = replace(rope, original=64)  # the context it grew from
        grown = replace(grown, rope_scaling=rope)
    out = tmp_path / "out"
    export_pretrained(model.state_dict(), grown, family, read_config(source), source, out)
    written = read_config(out)
    assert written["rope_parameters"]["rope_type"] == params["rope_type"] and written["rope_theta"] == theta
    assert written["max_position_embeddings"] == (64 if method == "dynamic" else 128)
    _, back = ours_at(out)
    assert back.config.rope_scaling == rope and back.config.rope_theta == theta  # read back as it was written
    expected, _ = hf_logits(out, LONG)
    with torch.no_grad():
        torch.testing.assert_close(back(LONG)[0], expected, atol=1e-5, rtol=0)


def test_transformers_4_spelling_wins_where_a_config_has_both_as_in_transformers(tmp_path: Path) -> None:
    source = with_rope(make_checkpoint(tmp_path / "source", "llama"), METHODS["linear"], "v5")
    config = json.loads((source / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}  # transformers 5 reads this one
    (source / "config.json").write_text(json.dumps(config))
    _, model = ours_at(source)
    assert model.config.rope_scaling is not None and model.config.rope_scaling.kind == "dynamic"
    expected, _ = hf_logits(source, LONG)
    with torch.no_grad():
        torch.testing.assert_close(model(LONG)[0], expected, atol=1e-5, rtol=0)


def test_a_config_without_a_base_takes_the_familys_default_as_transformers_does(tmp_path: Path) -> None:
    """Mixtral's default base is 10^6, the others' 10^4."""
    from tests.test_moe_families import IDS, make_mixture

    source, _ = make_mixture(tmp_path / "source", "mixtral")
    config = json.loads((source / "config.json").read_text())
    config.pop("rope_theta", None)
    config.pop("rope_parameters", None)
    (source / "config.json").write_text(json.dumps(config))
    _, model = ours_at(source, context=64)
    assert model.config.rope_theta == 1_000_000.0
    expected, _ = hf_logits(source, IDS)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS)[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("rope", "message"),
    [
        ({"rope_type": "proportional", "factor": 2.0}, "RoPE type `proportional` is not supported"),
        ({"rope_type": "linear"}, "RoPE type `linear` needs `factor`"),
        ({"rope_type": "linear", "factor": -2}, "`factor` in `rope_parameters` must be a positive number"),
        ({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}, "`short_factor` must be a list of 8"),
        ({"full_attention": {"rope_type": "default"}}, "`rope_parameters` per layer type (`full_attention`)"),
        ({"rope_type": "yarn", "factor": 2.0, "truncate": "no"}, "`truncate` must be true or false"),
    ],
)
def test_a_rope_lagdsl_cannot_run_is_one_line_naming_it(rope: dict[str, object], message: str) -> None:
    config = {**COMMON, "architectures": ["LlamaForCausalLM"], "rope_parameters": rope}
    with pytest.raises(FamilyError) as error:
        family_of(config).arch(config)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_checkpoint_of_an_earlier_version_reads_its_llama3_scaling() -> None:
    """Earlier versions stored Llama 3's scaling as four numbers in a model's config."""
    from lagdsl.model.config import GPTConfig

    config = GPTConfig(vocab=8, context=8, width=8, heads=2, depth=1, rope_scaling=[8.0, 1.0, 4.0, 16])  # type: ignore[arg-type]
    assert config.rope_scaling == Rope("llama3", 8.0, 16, 1.0, 4.0)
    again = GPTConfig(**config.fields())
    assert again == config
