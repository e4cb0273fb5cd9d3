"""The trained model out of lagdsl: `lagdsl export` (Hugging Face), `lagdsl sample` (a KV cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lagdsl.cli import main
from lagdsl.model.config import GPTConfig
from lagdsl.model.generate import GREEDY, Generator, Sampling
from lagdsl.model.gpt import GPT
from lagdsl.runtime.state.trained import open_trained
from tests.conftest import train_tokenizer, write_corpus

transformers = pytest.importorskip("transformers")

GROWN = """
schedule grown
seed 1
model gpt(context=32, width=32, heads=4, depth=1{mlp})
data text("corpus/*.txt")
batch 8
optimizer adamw(lr=3e-3)
stage base {{ train 12 steps }}
stage bigger {{
  grow depth by 1 with copy_top
  grow width to 48 with net2net
  train 12 steps
}}
"""


def train(root: Path, mlp: str = "") -> Path:
    (root / "grown.grow").write_text(GROWN.format(mlp=mlp))
    result = CliRunner().invoke(main, ["run", "--quiet", str(root / "grown.grow"), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose model grew in depth (1 -> 2) and width (32 -> 48), on a text corpus."""
    root = tmp_path_factory.mktemp("grown")
    write_corpus(root)
    return train(root)


def export(run_dir: Path, out: Path, *args: str):
    return CliRunner().invoke(main, ["export", str(run_dir), "-o", str(out), *args])


def real_text(run_dir: Path, length: int) -> list[int]:
    text = (run_dir.parent / "corpus" / "a.txt").read_bytes()
    return list(text[5000 : 5000 + length])


def test_the_export_loads_in_transformers_with_equal_logits(grown: Path, tmp_path: Path) -> None:
    result = export(grown, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json",
        "generation_config.json",
        "lagdsl-export.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]  # fmt: skip (lagdsl-export.json: the export's record of itself)
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    config = hf.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 48, 6)
    assert config.tie_word_embeddings and config.vocab_size == 256
    ours = open_trained(grown).model()
    # the grown width scaled RMSNorm's epsilon: the export must carry the model's own
    assert config.rms_norm_eps == pytest.approx(ours.config.norm_eps) and ours.config.norm_eps != 1e-6
    random = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(0))
    real = torch.tensor([real_text(grown, 32)])
    with torch.no_grad():
        for idx in (random, real):
            assert torch.allclose(ours(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)


def test_greedy_generate_equals_lagdsl_sample(grown: Path, tmp_path: Path) -> None:
    assert export(grown, tmp_path / "hf").exit_code == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    prompt = "def main(args):\n    "
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert ids[0].tolist() == list(prompt.encode())  # byte data: token i is byte i
    out = hf.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.size(1) :]
    result = CliRunner().invoke(
        main,
        ["sample", str(grown), "--prompt", prompt, "--max-new-tokens", "20", "--temperature", "0", "--no-prompt"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == tokenizer.decode(out) + "\n"


def test_a_bf16_export_agrees_within_bf16_tolerance(grown: Path, tmp_path: Path) -> None:
    assert export(grown, tmp_path / "hf", "--dtype", "bf16").exit_code == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.bfloat16)
    assert hf.model.embed_tokens.weight.dtype == torch.bfloat16
    idx = torch.tensor([real_text(grown, 32)])
    with torch.no_grad():
        ours, theirs = open_trained(grown).model()(idx)[0], hf(idx).logits.float()
    assert (ours - theirs).abs().max() < 0.1 * ours.abs().max()
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() > 0.9


def test_the_exported_tokenizer_round_trips_text(grown: Path, tmp_path: Path) -> None:
    assert export(grown, tmp_path / "hf").exit_code == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ["plain ascii", "naïve café ✓ 日本語\n\ttabs", "\x00\x7f"]:
        assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_a_gelu_model_is_refused_in_one_line(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    run_dir = train(tmp_path, ", mlp=gelu")
    result = export(run_dir, tmp_path / "hf")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: a model with `mlp=gelu` has no LlamaForCausalLM equivalent (its MLP is swiglu): "
        "only `mlp=swiglu` models export to it"
    ]
    assert not (tmp_path / "hf").exists()


def test_export_and_sample_refuse_what_is_not_a_run(tmp_path: Path) -> None:
    for command in (["export", str(tmp_path)], ["sample", str(tmp_path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2
        assert "is not a run directory" in result.stderr and "Traceback" not in result.output


def test_export_of_a_checkpoint(grown: Path, tmp_path: Path) -> None:
    """`--checkpoint`: the model at that point (here the run's last checkpoint, the final model)."""
    newest = sorted((grown / "checkpoints").glob("step-*"))[-1]
    assert export(grown, tmp_path / "hf", "--checkpoint", str(newest)).exit_code == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    idx = torch.tensor([real_text(grown, 16)])
    with torch.no_grad():
        assert torch.allclose(open_trained(grown).model()(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)


# -- the KV cache


def no_cache_greedy(model: GPT, prompt: list[int], n: int) -> list[int]:
    """The plain loop: the whole window through `forward` for every token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            window = torch.tensor([ids[-model.config.context :]])
            ids.append(int(model(window)[0][0, -1].argmax()))
    return ids[len(prompt) :]


def random_model(seed: int = 0, context: int = 48) -> GPT:
    model = GPT(GPTConfig(vocab=64, context=context, width=32, heads=4, depth=3))
    model.init_weights(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # larger weights than at init: outputs that depend strongly on the input
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return model.eval()


def test_greedy_with_the_cache_equals_the_loop_without_it() -> None:
    model = random_model()
    prompt = [3, 14, 15, 9, 26, 5]
    cached = list(Generator(model).stream(prompt, 40, GREEDY))
    assert cached == no_cache_greedy(model, prompt, 40)
    assert len(set(cached)) > 3  # not one token over and over: the comparison says something


def test_cached_logits_equal_the_full_forward_in_chunks() -> None:
    """Prefill, then one token, then several at once (the masked path): each step's logits are the
    full forward's at that position."""
    model = random_model(1)
    idx = torch.randint(0, 64, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(idx)[0]
    generator = Generator(model)
    for start, end in ((0, 10), (10, 11), (11, 25), (25, 40)):
        logits = generator.prefill(idx[:, :end]) if start == 0 else generator.forward(idx[:, start:end])
        assert torch.allclose(logits, full[:, end - 1], atol=1e-5), (start, end)


def test_generation_past_the_context_slides_the_window() -> None:
    model = random_model(context=16)
    tokens = list(Generator(model).stream([1, 2, 3], 50, GREEDY))
    assert len(tokens) == 50 and all(0 <= t < 64 for t in tokens)


def test_sampling_is_deterministic_under_a_seed_and_follows_top_k() -> None:
    model = random_model()
    prompt = [1, 2, 3]

    def draw(seed: int, sampling: Sampling) -> list[int]:
        return list(Generator(model).stream(prompt, 30, sampling, torch.Generator().manual_seed(seed)))

    warm = Sampling(temperature=1.0)
    assert draw(0, warm) == draw(0, warm)
    assert draw(0, warm) != draw(1, warm)
    assert draw(5, Sampling(temperature=1.0, top_k=1)) == list(Generator(model).stream(prompt, 30, GREEDY))
    assert draw(5, Sampling(temperature=1.0, top_p=1e-6)) == list(Generator(model).stream(prompt, 30, GREEDY))


def test_sample_streams_several_samples_and_cuts_a_long_prompt(grown: Path) -> None:
    args = ["sample", str(grown), "--max-new-tokens", "10", "--seed", "3", "--num-samples", "2", "--no-prompt"]
    long_prompt = "x = 1\n" * 20  # 120 tokens, context 32
    first = CliRunner().invoke(main, [*args, "--prompt", long_prompt])
    assert first.exit_code == 0, first.output
    assert "note: the prompt is 120 tokens, longer than the context of 32: its first 88 are left out" in first.stderr
    assert first.stdout.count("-" * 40) == 1
    again = CliRunner().invoke(main, [*args, "--prompt", long_prompt])
    assert again.stdout == first.stdout


def test_sample_on_a_missing_gpu_is_one_line(grown: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(main, ["sample", str(grown), "--device", "cuda", "--prompt", "x"])
    assert result.exit_code == 2
    assert result.stderr == "error: device `cuda` is not available here: no CUDA device (use --device cpu)\n"


def test_a_run_of_token_ids_without_a_tokenizer_needs_one_to_export(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    rng.integers(0, 100, 4000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    schedule = GROWN.format(mlp=", vocab=256").replace('text("corpus/*.txt")', 'tokens("train.bin")')
    (tmp_path / "ids.grow").write_text(schedule)
    result = CliRunner().invoke(main, ["run", "--quiet", str(tmp_path / "ids.grow"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["tokenizer"] == "ids"
    refused = export(tmp_path / "run", tmp_path / "hf")
    assert refused.exit_code == 2 and "`--tokenizer tokenizer.json`" in refused.stderr
    from lagdsl.text.tokenizer import byte_level

    byte_level().save(str(tmp_path / "bytes.json"))  # 256 tokens: as many as the model's vocabulary
    assert export(tmp_path / "run", tmp_path / "hf", "--tokenizer", str(tmp_path / "bytes.json")).exit_code == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == 256
    write_corpus(tmp_path)
    bigger = train_tokenizer(tmp_path / "bigger.json", [tmp_path / "corpus" / "a.txt"], vocab=320)
    too_big = export(tmp_path / "run", tmp_path / "hf2", "--tokenizer", str(bigger))
    assert too_big.exit_code == 2
    assert too_big.stderr.startswith("error: the tokenizer has 320 tokens, more than the model's vocabulary of 256")


def test_an_export_into_the_run_directory_or_over_foreign_files_is_refused(grown: Path, tmp_path: Path) -> None:
    """`export RUN -o RUN/final` once overwrote the run's own `final/config.json`: refused now, as
    is a folder of other files (unless `--force`); an earlier export is replaced, atomically."""
    final = {p.name: p.read_bytes() for p in (grown / "final").iterdir()}
    result = export(grown, grown / "final")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: `{grown / 'final'}` is inside the run directory `{grown}`, whose files the run and its tools "
        "rely on: choose a folder outside it"
    )
    assert {p.name: p.read_bytes() for p in (grown / "final").iterdir()} == final
    assert CliRunner().invoke(main, ["sample", str(grown), "--max-new-tokens", "4"]).exit_code == 0

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = export(grown, mine)
    assert refused.exit_code == 2 and "holds files `lagdsl export` did not write" in refused.stderr
    assert (mine / "notes.txt").read_text() == "keep me"
    assert export(grown, mine, "--force").exit_code == 0
    assert not (mine / "notes.txt").exists() and (mine / "model.safetensors").is_file()
    before = (mine / "model.safetensors").stat().st_ino
    assert export(grown, mine).exit_code == 0  # an earlier export: replaced without asking
    assert (mine / "model.safetensors").stat().st_ino != before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing left beside it
    assert export(grown, grown / "hf").exit_code == 0  # the run's own default export folder is allowed


@pytest.mark.parametrize(("option", "value"), [("--temperature", "nan"), ("--temperature", "inf"), ("--top-p", "nan")])
def test_sample_refuses_a_number_that_is_not_finite(grown: Path, option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["sample", str(grown), option, value, "--max-new-tokens", "2"])
    assert result.exit_code == 2 and f"'{value}' is not a finite number" in result.output


def test_a_temperature_too_small_for_the_arithmetic_draws_as_greedy_does() -> None:
    """`--temperature 1e-45` once divided the logits into inf and nan (an internal error): now the
    draw is the limit of ever smaller temperatures, the likeliest token."""
    model = random_model()
    prompt = [1, 2, 3]
    greedy = list(Generator(model).stream(prompt, 30, GREEDY))
    for temperature in (1e-45, 1e-300, 5e-324):
        cold = Sampling(temperature=temperature)
        assert list(Generator(model).stream(prompt, 30, cold, torch.Generator().manual_seed(0))) == greedy


def test_sample_takes_a_tiny_temperature_and_refuses_a_seed_beyond_64_bits(grown: Path) -> None:
    args = ["sample", str(grown), "--prompt", "def", "--max-new-tokens", "4", "--no-prompt"]
    greedy = CliRunner().invoke(main, [*args, "--temperature", "0"])
    cold = CliRunner().invoke(main, [*args, "--temperature", "1e-45"])
    assert cold.exit_code == 0 and cold.stdout == greedy.stdout, cold.output
    huge = CliRunner().invoke(main, [*args, "--seed", str(10**23)])
    assert huge.exit_code == 2 and "--seed" in huge.output and "Traceback" not in huge.output


def test_sample_takes_the_final_folder_and_refuses_another_runs_checkpoint(grown: Path, tmp_path: Path) -> None:
    greedy = ["--prompt", "def", "--temperature", "0", "--max-new-tokens", "4", "--no-prompt"]
    plain = CliRunner().invoke(main, ["sample", str(grown), *greedy])
    for final in (grown / "final", grown / "final" / "model.pt"):  # once "a write that did not finish"
        result = CliRunner().invoke(main, ["sample", str(grown), "--checkpoint", str(final), *greedy])
        assert result.exit_code == 0, result.output
        assert result.stdout == plain.stdout
    from lagdsl.runtime.state import checkpoint as ckpt

    payload = ckpt.load(ckpt.list_checkpoints(grown / "checkpoints")[-1])
    other = tmp_path / "other.pt"
    ckpt.write_atomic({**payload, "config": {**payload["config"], "vocab": 300}}, other)
    result = CliRunner().invoke(main, ["sample", str(grown), "--checkpoint", str(other), *greedy])
    assert result.exit_code == 2
    assert f"`{other}` is not a checkpoint of `{grown}`: its model (vocabulary 300" in result.stderr


def test_a_prompt_file_that_is_not_utf8_is_bytes_to_a_byte_level_run(grown: Path, tmp_path: Path) -> None:
    """A byte-level model reads any bytes: a Latin-1 prompt is its bytes, echoed as they are."""
    raw = "def café(x):\n    return ".encode("latin-1")
    (tmp_path / "prompt.txt").write_bytes(raw)
    args = ["sample", str(grown), "--prompt-file", str(tmp_path / "prompt.txt"), "--temperature", "0"]
    result = CliRunner().invoke(main, [*args, "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(raw)
    from lagdsl.text.tokenizer import byte_level, stream

    expected = list(Generator(open_trained(grown).model()).stream(list(raw), 6, GREEDY))
    assert result.stdout_bytes[len(raw) :].decode() == "".join(stream(byte_level(), iter(expected))) + "\n"


def test_a_sharded_final_model_is_exported_one_tensor_at_a_time(tmp_path: Path) -> None:
    """A sharded run's final model (`final/model.dcp`, each rank's shards) is read for export one
    tensor at a time: never two read at once, each read once, and the file is the one the whole
    model gives."""
    import weakref

    from safetensors.torch import load_file

    from lagdsl.model.export import export_model
    from lagdsl.runtime.distributed.world import World
    from lagdsl.runtime.state import dcp

    config = GPTConfig(vocab=256, context=16, width=16, heads=2, depth=2, kv_heads=1, tie=False)
    model = GPT(config)
    model.init_weights(torch.Generator().manual_seed(0))
    whole = model.state_dict()
    state = {"config": {}, "model": whole, "optimizer": {"state": {}, "param_groups": []}}
    dcp.save(state, tmp_path / "model.dcp", World())
    tokenizer = json.dumps({"model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": []})

    alive: list[weakref.ref] = []
    reads: list[str] = []
    read = dcp.Tensors.__getitem__

    def counted(self: dcp.Tensors, name: str) -> torch.Tensor:
        assert sum(ref() is not None for ref in alive) <= 1, "two tensors of the model held at once"
        tensor = read(self, name)
        alive.append(weakref.ref(tensor))
        reads.append(name)
        return tensor

    lazy = dcp.Tensors(tmp_path / "model.dcp")
    try:
        dcp.Tensors.__getitem__ = counted  # type: ignore[method-assign]
        export_model(lazy, config, tokenizer, tmp_path / "streamed")
    finally:
        dcp.Tensors.__getitem__ = read  # type: ignore[method-assign]
    assert sorted(reads) == sorted(whole)  # each read once
    export_model(whole, config, tokenizer, tmp_path / "whole")
    streamed, expected = (
        load_file(tmp_path / "streamed" / "model.safetensors"),
        load_file(tmp_path / "whole" / "model.safetensors"),
    )
    assert streamed.keys() == expected.keys() and len(streamed) == 3 + 9 * config.depth  # Llama names
    for name, tensor in expected.items():
        assert torch.equal(streamed[name], tensor), name


def test_the_safetensors_writer_refuses_a_tensor_its_header_does_not_place(tmp_path: Path) -> None:
    from lagdsl.model.export import write_safetensors
    from lagdsl.model.hub import HubError

    with pytest.raises(HubError, match="not where the header places it"):
        write_safetensors(tmp_path / "x.safetensors", [("a", (2,))], [("a", torch.zeros(3))], torch.float32)


def test_sample_stops_at_the_models_end_tokens_and_renders_its_chat_template(grown: Path, tmp_path: Path) -> None:
    """An instruct model's folder (the run's copy of its source) names where a turn ends
    (`generation_config.json`'s `eos_token_id`, one id or a list) and how a chat is written (its
    chat template): `sample` stops at any of those ids and, with `--chat`, gives the prompt as a
    user's turn."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(grown, run_dir)
    args = ["sample", str(run_dir), "--temperature", "0", "--max-new-tokens", "12", "--no-prompt", "--prompt", "def "]
    free = CliRunner().invoke(main, args)
    assert free.exit_code == 0, free.output
    generated = free.stdout.rstrip("\n").encode()  # a byte-level run: a token is a byte
    assert len(generated) == 12
    source = run_dir / "source"
    source.mkdir()
    (source / "generation_config.json").write_text(json.dumps({"eos_token_id": [999, generated[4]]}))
    stopped = CliRunner().invoke(main, args)
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout.rstrip("\n").encode() == generated[: generated.index(generated[4]) + 1]
    no_template = CliRunner().invoke(main, [*args, "--chat"])
    assert no_template.exit_code == 2 and "has no chat template" in no_template.stderr
    (source / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": {"content": "</s>"},
        "chat_template": "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}",
    }))  # fmt: skip
    chat = CliRunner().invoke(main, [a for a in args if a != "--no-prompt"] + ["--chat", "--max-new-tokens", "1"])
    assert chat.exit_code == 0, chat.output
    assert chat.stdout.startswith("<user>def </s><assistant>")


def test_the_text_stream_ends_with_the_bytes_that_never_made_a_character() -> None:
    """A model can emit bytes that are not UTF-8 (a lead byte, then no continuation): the stream
    holds them while they may still complete, and gives them at the end as `decode` does, one
    U+FFFD per invalid run, so `sample` prints what transformers decodes."""
    from lagdsl.text.tokenizer import byte_level, stream

    tokenizer = byte_level()
    for ids in ([239, 141, 239, 141], [104, 105, 240, 165, 130, 209], [104, 195, 169, 239]):
        assert "".join(stream(tokenizer, iter(ids))) == tokenizer.decode(ids, skip_special_tokens=False)
    assert "".join(stream(tokenizer, iter([104, 105, 239, 141]))) == "hi\ufffd"
