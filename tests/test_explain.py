"""`lagdsl explain CODE`: a page for every code, whose examples the checker agrees with."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from click.testing import CliRunner

from lagdsl.cli import main
from lagdsl.lang import check_text
from lagdsl.lang.diagnostics import CODES, Diagnostic, render_text
from lagdsl.lang.explain import examples, normalize, page
from lagdsl.lang.fmt import format_text
from lagdsl.lang.parser import parse
from lagdsl.lang.source import Source, Span
from tests.conftest import GOLDEN


def test_every_code_has_a_page_and_every_page_a_code() -> None:
    folder = resources.files("lagdsl.lang.explain")
    pages = {p.name.removesuffix(".md") for p in folder.iterdir() if p.name.endswith(".md")}
    assert pages == set(CODES)


@pytest.mark.parametrize("code", sorted(CODES))
def test_the_wrong_example_gets_the_code_and_the_fix_validates(code: str) -> None:
    assert page(code).startswith(f"# {code}: ")
    wrong, fixed = examples(code)
    got = check_text(wrong, f"{code}-wrong.grow")
    assert code in {d.code for d in got.diagnostics}, [d.code for d in got.diagnostics]
    mended = check_text(fixed, f"{code}-fixed.grow")
    assert mended.schedule is not None, [(d.code, d.message) for d in mended.errors]
    assert code not in {d.code for d in mended.diagnostics}
    assert format_text(fixed) == fixed  # written as `lagdsl fmt` writes (as is the wrong one, where it parses)
    if not parse(Source("wrong", wrong))[1]:
        assert format_text(wrong) == wrong


def test_every_help_line_names_its_explanation_once() -> None:
    for text_file in sorted(GOLDEN.glob("*.txt")):
        blocks = re.split(r"\n(?=(?:error|warning)\[)", text_file.read_text())
        for block in blocks:
            code = re.match(r"(?:error|warning)\[(\w+)\]", block)
            if code is None:
                continue
            helps = [line for line in block.splitlines() if "= help:" in line]
            assert len(helps) == 1, block
            assert helps[0].count("lagdsl explain") == 1 and f"`lagdsl explain {code.group(1)}`" in helps[0]


def test_a_diagnostic_without_help_still_points_to_its_page() -> None:
    bare = Diagnostic("E0105", "the schedule has no stages", Span(1, 1, 1, 9))
    text = render_text(bare, Source("x.grow", "schedule x\n"))
    assert text.endswith("  = help: `lagdsl explain E0105` says more\n")


def test_codes_are_read_in_any_spelling() -> None:
    assert normalize("e201") == normalize("E0201") == normalize("0201") == "E0201"
    assert normalize("w301") == "W0301"


def test_the_command_prints_the_page_or_refuses_an_unknown_code() -> None:
    runner = CliRunner()
    shown = runner.invoke(main, ["explain", "e0304"])
    assert shown.exit_code == 0 and shown.stdout == page("E0304")
    unknown = runner.invoke(main, ["explain", "E9999"])
    assert unknown.exit_code == 2 and "`E9999` is not a diagnostic code" in unknown.stderr
    listed = runner.invoke(main, ["explain", "--list"])
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == len(CODES)
    assert "W0501  warning" in listed.stdout
    assert runner.invoke(main, ["explain"]).exit_code == 2
