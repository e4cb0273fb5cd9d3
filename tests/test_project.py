"""The README's and the docs' promises: the set-up and test commands are what CI runs; the code table
is complete; every page the README links to exists; the README stays short."""

from __future__ import annotations

import re

from lagdsl.lang.diagnostics import CODES
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
LANGUAGE = (ROOT / "docs" / "language.md").read_text()
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
    documented = set(re.findall(r"^\| ([EW]\d{4}) \|", LANGUAGE, re.M))
    assert documented == set(CODES)


def test_every_documentation_link_leads_to_a_page() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert len(links) >= 5
    for link in links:
        assert (ROOT / link).is_file(), link
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([a-z-]+\.md)", page.read_text()):
            assert (ROOT / "docs" / target).is_file(), f"{page.name} links to {target}"


def test_the_readme_is_a_five_minute_read() -> None:
    assert len(README.split()) < 1200, "the reference belongs in docs/"


def test_the_benchmark_scripts_write_into_the_benchmarks_page() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    markers = set()
    for script in (ROOT / "bench").glob("*.py"):
        markers |= set(re.findall(r'(?:update_docs|publish|evidence_main)\(\s*"(\w+)"', script.read_text()))
    assert {"fsdp_memory", "upscale_evidence", "lag_evidence"} <= markers  # the pattern finds them
    for marker in markers:
        assert f"<!-- bench:{marker} -->" in page and f"<!-- /bench:{marker} -->" in page, marker


def test_torch_is_pinned_in_the_install_command() -> None:
    # an unpinned torch can pull a multi-gigabyte CUDA build into a CPU-only environment
    assert '"torch==' in _setup_block()[0]


def test_the_setup_names_the_lighter_install_and_the_cpu_build_of_pytorch() -> None:
    """A user who will not develop lagdsl needs neither its development tools nor a CUDA download."""
    section = README.split("## Set up and test", 1)[1].split("\n## ", 1)[0]
    assert "`pip install -e .`" in section
    assert "--index-url https://download.pytorch.org/whl/cpu" in section
