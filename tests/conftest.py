"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = sorted((ROOT / "schedules").glob("*.grow"))
GOLDEN = ROOT / "tests" / "golden"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n N`) the workers share the cores: each computes with its share of them
    (and so do the processes it starts), set before torch is first imported, so that N workers never
    run more threads than there are cores (oversubscribed OpenMP threads run many times slower)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(workers)))


#: Set UPDATE_GOLDEN=1 to rewrite the golden files from the current output (then review the diff).
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"

# Hypothesis: in CI the same examples every run (a stable suite time, no flaky first sightings) and
# no example database; elsewhere random examples, remembered outside the source tree.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lagdsl" / "hypothesis"
set_hypothesis_home_dir(str(_CACHE))  # its own caches (unicode tables) too: not `.hypothesis/` in the tree
settings.register_profile("dev", database=DirectoryBasedExampleDatabase(str(_CACHE / "examples")))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def write_corpus(root: Path) -> Path:
    """A small text corpus at `root/corpus/a.txt` (Python source: about 60 KB), for `text("corpus/*.txt")`."""
    import json

    import torch

    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(Path(torch.__file__).read_text()[:40_000] + Path(json.__file__).read_text())
    return corpus


def assert_png(path: Path, *, min_width: int = 200, min_height: int = 150) -> tuple[int, int]:
    """`path` is a PNG picture of at least that size (read from its header); its size."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= min_width and height >= min_height, f"{path.name} is only {width}x{height}"
    return width, height


@pytest.fixture
def in_golden_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from tests/golden, so file names in rendered output are short and stable."""
    monkeypatch.chdir(GOLDEN)
    return GOLDEN


@pytest.fixture(autouse=True)
def token_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tokenized corpora cache into a folder of the test session's, not the user's cache."""
    folder = tmp_path_factory.getbasetemp() / "token-cache"
    monkeypatch.setenv("LAGDSL_CACHE", str(folder))
    return folder


def save_checkpoint(folder: Path, config: object, *, shard: bool = False, seed: int = 0) -> Path:
    """A tiny random checkpoint of a transformers `config`, saved by transformers (as 100 KB shards
    with `shard`), with a byte-level tokenizer; every tensor random (biases and norm gains too), so
    nothing hides."""
    import torch
    import transformers

    from lagdsl.text.tokenizer import byte_level_json

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    model.save_pretrained(folder, max_shard_size="100KB" if shard else "10GB")
    (folder / "tokenizer.json").write_text(byte_level_json(), encoding="utf-8")
    return folder


def train_tokenizer(path: Path, files: list[Path], vocab: int = 320) -> Path:
    """A small byte-level BPE tokenizer trained on `files`, with an end-of-text token, saved to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(f) for f in files], trainer)
    tokenizer.save(str(path))
    return path


def child_processes(pid: int) -> list[Path]:
    """The /proc folders of the processes whose parent is `pid` (Linux; the test skips elsewhere)."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(entry)
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    return found


@pytest.fixture(scope="module")
def corpus():  # type: ignore[no-untyped-def]
    """4,000 random bytes as a corpus (the last 400 for validation): what in-process engine tests train on."""
    import hashlib

    import numpy as np

    from lagdsl.runtime.data.corpus import Corpus

    text = np.random.default_rng(0).integers(0, 256, size=4_000, dtype=np.uint8)
    return Corpus(text[:3_600], text[3_600:], 256, hashlib.sha256(text.tobytes()).hexdigest(), "random bytes")
