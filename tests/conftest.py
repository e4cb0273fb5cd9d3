"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = sorted((ROOT / "schedules").glob("*.grow"))
GOLDEN = ROOT / "tests" / "golden"

#: Set UPDATE_GOLDEN=1 to rewrite the golden files from the current output (then review the diff).
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.fixture
def in_golden_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from tests/golden, so file names in rendered output are short and stable."""
    monkeypatch.chdir(GOLDEN)
    return GOLDEN
