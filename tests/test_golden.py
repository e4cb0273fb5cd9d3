"""Golden files pin the exact output of `lagdsl validate` (text and JSON) for invalid schedules.

Each `tests/golden/NAME.grow` has `NAME.txt` (what a person sees, then the exit code) and
`NAME.json`. Rewrite them with `UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py` and read the
diff before committing it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from lagdsl.cli import main
from lagdsl.lang.diagnostics import CODES
from tests.conftest import GOLDEN, UPDATE_GOLDEN

CASES = sorted(GOLDEN.glob("*.grow"))


def _check(path: Path, actual: str) -> None:
    if UPDATE_GOLDEN:
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path.name} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_text_output(case: Path, in_golden_dir: Path) -> None:
    result = CliRunner().invoke(main, ["validate", case.name])
    _check(case.with_suffix(".txt"), result.output + f"[exit {result.exit_code}]\n")


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_json_output(case: Path, in_golden_dir: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--format", "json", case.name])
    assert result.exit_code in (0, 1)
    payload = json.loads(result.stdout)
    for item in payload:
        assert set(item) == {
            "code", "severity", "message", "file", "line", "column", "end_line", "end_column", "help"
        }  # fmt: skip
    _check(case.with_suffix(".json"), result.stdout)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30


def test_every_code_is_pinned_by_a_golden_file() -> None:
    hit: set[str] = set()
    for case in CASES:
        expected = case.with_suffix(".json")
        if expected.exists():
            hit |= {item["code"] for item in json.loads(expected.read_text())}
    assert set(CODES) - hit == set()


def test_each_case_is_named_after_a_code_it_raises() -> None:
    for case in CASES:
        code = re.match(r"([ew]\d{4})_", case.stem)
        assert code, f"{case.name} should start with the code it shows"
        codes = {item["code"] for item in json.loads(case.with_suffix(".json").read_text())}
        assert code.group(1).upper() in codes, case.name
