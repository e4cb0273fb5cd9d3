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
