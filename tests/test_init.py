"""`lagdsl init`: a commented starting schedule that validates, never written over a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lagdsl.cli import main
from lagdsl.cli.tools import TEMPLATES
from lagdsl.lang import load
from lagdsl.lang.fmt import format_text


@pytest.mark.parametrize("template", TEMPLATES)
def test_each_template_writes_a_schedule_that_validates_cleanly(
    template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["init", "--template", template])
    assert result.exit_code == 0, result.output
    path = tmp_path / f"{template.replace('-', '_')}.grow"
    checked = load(path)
    assert checked.schedule is not None and not checked.diagnostics, [d.message for d in checked.diagnostics]
    assert checked.schedule.name == path.stem
    text = path.read_text()
    assert text.count("#") >= 3 and format_text(text) == text  # commented, and in fmt's layout
    assert "NAME" not in text


def test_init_names_the_file_and_the_schedule_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(main, ["init", "my-run", "--template", "lag-study"])
    assert made.exit_code == 0 and "wrote my-run.grow" in made.stderr
    text = (tmp_path / "my-run.grow").read_text()
    assert "schedule my_run\n" in text and "lagdsl study my-run.grow --stage final" in text
    (tmp_path / "mine.grow").write_text("keep me\n")
    again = runner.invoke(main, ["init", "mine.grow"])
    assert again.exit_code == 2 and "`mine.grow` exists" in again.stderr
    assert (tmp_path / "mine.grow").read_text() == "keep me\n"
    missing = runner.invoke(main, ["init", str(tmp_path / "no" / "such" / "dir" / "x")])
    assert (
        missing.exit_code == 2 and f"the folder `{tmp_path / 'no' / 'such' / 'dir'}` does not exist" in missing.stderr
    )


def test_init_into_a_folder_writes_the_templates_file_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    runner = CliRunner()
    made = runner.invoke(main, ["init", "studies", "--template", "lag-study"])
    assert made.exit_code == 0 and "wrote studies/lag_study.grow" in made.stderr
    written = tmp_path / "studies" / "lag_study.grow"
    assert load(written).schedule is not None and "schedule lag_study\n" in written.read_text()
    again = runner.invoke(main, ["init", "studies/", "--template", "lag-study"])  # the same file: kept
    assert again.exit_code == 2 and "`studies/lag_study.grow` exists" in again.stderr
    absent = runner.invoke(main, ["init", "new/"])  # a folder that does not exist is not made
    assert absent.exit_code == 2 and "the folder `new` does not exist" in absent.stderr
