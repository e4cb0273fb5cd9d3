"""The README's promises: its set-up and test commands are what CI runs; its code table is complete."""

from __future__ import annotations

import re

from lagdsl.lang.diagnostics import CODES
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def _setup_block() -> list[str]:
    section = README.split("## Set up and test", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "the README's set-up section has no command block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_them_in_order() -> None:
    install, test = _setup_block()
    ci_lines = [line.strip() for line in CI.splitlines()]
    assert install in ci_lines and test in ci_lines
    assert ci_lines.index(install) < ci_lines.index(test)
    assert "pytest" in test


def test_ci_builds_a_fresh_virtual_environment_first() -> None:
    ci_lines = [line.strip() for line in CI.splitlines() if line.strip() and not line.startswith("#")]
    venv = next(i for i, line in enumerate(ci_lines) if "-m venv" in line)
    install = ci_lines.index(_setup_block()[0])
    assert venv < install
    assert "set -euo pipefail" in CI


def test_every_diagnostic_code_is_documented() -> None:
    documented = set(re.findall(r"^\| ([EW]\d{4}) \|", README, re.M))
    assert documented == set(CODES)


def test_torch_is_pinned_in_the_install_command() -> None:
    # an unpinned torch can pull a multi-gigabyte CUDA build into a CPU-only environment
    assert '"torch==' in _setup_block()[0]
