"""Damaged checkpoints: a generator of broken Hugging Face folders, and what lagdsl does with each.

A good tiny Llama folder (written by `lagdsl export`: `config.json`, `model.safetensors`, the
tokenizer) is copied and damaged in one or two random ways: its config (a key deleted, given a
wrong type, a negative, zero, huge or fractional number, null, a list, nested deep; another
architecture; the sizes made inconsistent), its weights (the file truncated, bytes of the header
or data flipped, the header's length absurd, the header replaced, a tensor renamed, its dtype or
shape changed, the file gone), an index (garbage, no `weight_map`, a file that is not there, a
tensor placed in a file that lacks it) or its tokenizer (garbage, truncated, gone, a SentencePiece
model instead). Each folder is then read as `lagdsl run` reads it: the checker on a schedule that
names it (`validate`), and where that passes, the weights' headers checked and the model loaded.
A diagnostic, a `HubError` or a `FamilyError` is a clear refusal; anything else is an internal
error, which `bench/fuzz.py --checkpoints N` counts (target 0) and the hypothesis test in
`tests/test_damaged.py` looks for.
"""

from __future__ import annotations

import json
import random
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

SCHEDULE = """
model pretrained("{folder}", context=16)
data text("{corpus}/*.txt")
batch 2
optimizer adamw(lr=1e-4)
stage base {{ train 2 steps }}
stage grow {{ grow depth by 1 with copy_top  train 2 steps }}
"""

CONFIG_KEYS = [
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size", "max_position_embeddings", "head_dim", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
    "architectures", "model_type", "rope_scaling", "rope_parameters", "hidden_act", "attention_bias", "mlp_bias",
]  # fmt: skip
ODD_VALUES: list[object] = [
    None, "7", -3, 0, 1, 2**62, 10**30, 0.5, 1e308, float("inf"), True, [], [1, 2], {}, {"rope_type": "yarn"},
    {"rope_type": "llama3"}, "silu", "gelu", ["GemmaForCausalLM"], [None], 3.0,
]  # fmt: skip


def base_folder(root: Path) -> tuple[Path, Path]:
    """A good tiny Llama folder (and a corpus for the schedule), written once under `root`."""
    import torch

    from lagdsl.model.export import export_model
    from lagdsl.model.gpt import GPT, GPTConfig
    from lagdsl.text.tokenizer import byte_level_json

    folder, corpus = root / "base", root / "corpus"
    if not (folder / "config.json").is_file():
        config = GPTConfig(vocab=256, context=32, width=16, heads=2, depth=2, kv_heads=1, tie=False)
        model = GPT(config)
        model.init_weights(torch.Generator().manual_seed(0))
        export_model(model.state_dict(), config, byte_level_json(), folder)
        corpus.mkdir(parents=True, exist_ok=True)
        (corpus / "a.txt").write_text("def main():\n    return 1\n" * 200)
    return folder, corpus


def _config(folder: Path, rng: random.Random) -> str:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    key = rng.choice(CONFIG_KEYS)
    how = rng.randrange(4)
    if how == 0:
        config.pop(key, None)
        said = f"config: `{key}` deleted"
    elif how == 1:
        config[key] = rng.choice(ODD_VALUES)
        said = f"config: `{key}` = {config[key]!r}"
    elif how == 2:  # the sizes made inconsistent with each other (and the weights)
        config[key] = config.get(key, 1) * rng.choice([2, 3]) if isinstance(config.get(key), int) else 5
        said = f"config: `{key}` changed to {config[key]!r}"
    else:  # nested deep
        value: object = 1
        for _ in range(rng.choice([50, 5000])):
            value = [value]
        config[key] = value
        said = f"config: `{key}` nested deep"
    text = json.dumps(config, allow_nan=True) if how != 3 else _deep_json(config, key)
    path.write_text(text if rng.random() > 0.05 else text[: rng.randrange(len(text))])
    return said


def _deep_json(config: dict, key: str) -> str:
    """JSON with `key` nested deeper than the json module writes (written by hand)."""
    depth = 0
    value = config[key]
    while isinstance(value, list):
        depth, value = depth + 1, value[0] if value else 0
    rest = {k: v for k, v in config.items() if k != key}
    return json.dumps(rest)[:-1] + f', "{key}": ' + "[" * depth + "1" + "]" * depth + "}"


def _weights(folder: Path, rng: random.Random) -> str:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    length = int.from_bytes(data[:8], "little")
    how = rng.randrange(8)
    if how == 0:
        cut = rng.randrange(len(data))
        path.write_bytes(bytes(data[:cut]))
        return f"weights: truncated at byte {cut}"
    if how == 1:
        for _ in range(rng.randint(1, 8)):
            data[8 + rng.randrange(length)] = rng.randrange(256)
        path.write_bytes(bytes(data))
        return "weights: header bytes flipped"
    if how == 2:
        data[:8] = rng.choice([0, 1, 2**63, len(data), length + 1]).to_bytes(8, "little")
        path.write_bytes(bytes(data))
        return "weights: header length wrong"
    if how == 3:
        garbage = rng.choice([b"[]", b"null", b'{"a": 1}', b"\xff\xfe", b"{" * 40]).ljust(length, b" ")
        path.write_bytes(bytes(data[:8]) + garbage[:length] + bytes(data[8 + length :]))
        return "weights: header replaced"
    header = json.loads(bytes(data[8 : 8 + length]))
    names = [n for n in header if n != "__metadata__"]
    name = rng.choice(names)
    if how == 4:
        header[name + ".x"] = header.pop(name)
        said = f"weights: `{name}` renamed"
    elif how == 5:
        header[name]["dtype"] = rng.choice(["F64", "I32", "BOOL", "Q4", "F8_E4M3", "U8"])
        said = f"weights: `{name}` dtype changed"
    elif how == 6:
        header[name]["shape"] = rng.choice([[], [1], [0, 4], [-1, 2], [3.5], list(reversed(header[name]["shape"]))])
        said = f"weights: `{name}` shape changed"
    else:
        path.unlink()
        return "weights: file removed"
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(data[8 + length :]))
    return said


def _index(folder: Path, rng: random.Random) -> str:
    path = folder / "model.safetensors.index.json"
    weights = folder / "model.safetensors"
    names = _names(weights)
    how = rng.randrange(5)
    if how == 0:
        path.write_text(rng.choice(["", "[]", "{", "null", '{"weight_map": 3}', '{"weight_map": {"a": 1}}']))
        return "index: garbage"
    if how == 1:
        path.write_text(json.dumps({"metadata": {}}))
        return "index: no weight_map"
    mapping = dict.fromkeys(names, "model.safetensors")
    if how == 2 and mapping:
        mapping[rng.choice(names)] = "model-00002-of-00002.safetensors"
        said = "index: a file that is not there"
    elif how == 3 and mapping:
        mapping.pop(rng.choice(names))
        said = "index: a tensor left out"
    else:
        mapping["model.layers.9.mlp.up_proj.weight"] = "model.safetensors"
        said = "index: a tensor the file lacks"
    path.write_text(json.dumps({"weight_map": mapping}))
    return said


def _names(weights: Path) -> list[str]:
    try:
        data = weights.read_bytes()
        length = int.from_bytes(data[:8], "little")
        return [n for n in json.loads(data[8 : 8 + length]) if n != "__metadata__"]
    except (OSError, ValueError):
        return []


def _tokenizer(folder: Path, rng: random.Random) -> str:
    path = folder / "tokenizer.json"
    how = rng.randrange(4)
    if how == 0:
        path.write_text(rng.choice(["", "{}", "[", '{"model": null}', "not json"]))
        return "tokenizer: garbage"
    if how == 1:
        text = path.read_text()
        path.write_text(text[: rng.randrange(len(text))])
        return "tokenizer: truncated"
    if how == 2:
        path.unlink()
        return "tokenizer: removed"
    path.unlink()
    (folder / "tokenizer.model").write_bytes(b"\x0a\x05hello")
    return "tokenizer: a SentencePiece model alone"


DAMAGES: list[Callable[[Path, random.Random], str]] = [_config, _weights, _index, _tokenizer]


def damaged(base: Path, out: Path, rng: random.Random) -> str:
    """A copy of `base` at `out`, damaged in one or two ways; what was done."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    done = []
    for _ in range(rng.choice([1, 1, 2])):
        damage = rng.choice(DAMAGES)
        try:
            done.append(damage(out, rng))
        except (OSError, ValueError, IndexError, KeyError, TypeError, AttributeError, RecursionError):
            done.append(f"{damage.__name__.strip('_')}: already too damaged to damage so")
    return "; ".join(done)


def read_as_run_does(folder: Path, corpus: Path) -> str | None:
    """The folder checked and, where it validates, its weights checked and loaded, as `lagdsl run`
    does: None for a success or a clear refusal, else the internal error's traceback."""
    from lagdsl.families import FamilyError, family_named
    from lagdsl.lang import check_text
    from lagdsl.model.config import GPTConfig
    from lagdsl.model.hub import HubError, check_weights, load_pretrained

    try:
        result = check_text(SCHEDULE.format(folder=folder, corpus=corpus), str(folder.parent / "damaged.grow"))
        schedule = result.schedule
        if schedule is None or schedule.model.pretrained is None:
            return None  # refused with diagnostics
        family = family_named(schedule.model.pretrained.family)
        config = GPTConfig.from_schedule(schedule)
        check_weights(folder, family, config)
        load_pretrained(folder, family, config)
    except (HubError, FamilyError):
        return None
    except Exception:  # an internal error: what the fuzzer counts
        return traceback.format_exc()
    return None
