"""Shell completion: `.grow` files, run directories, a schedule's stage names; the documented
start-up lines print a completion script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import BashComplete

from lagdsl.cli import main
from tests.conftest import SCHEDULES


def complete(args: list[str], incomplete: str) -> list[str]:
    return [
        item.value for item in BashComplete(main, {}, "lagdsl", "_LAGDSL_COMPLETE").get_completions(args, incomplete)
    ]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stack_lag.grow").write_text((SCHEDULES[0].parent / "stack_lag.grow").read_text())
    (tmp_path / "notes.txt").write_text("not a schedule")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "wide.grow").write_text("schedule wide\n")
    for run in ("runs/quick-1", "runs/quick-2"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "run.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_schedule_arguments_complete_grow_files_and_folders(workspace: Path) -> None:
    assert complete(["validate"], "") == ["configs/", "empty/", "runs/", "stack_lag.grow"]
    assert complete(["run"], "configs/") == ["configs/wide.grow"]
    assert complete(["fmt", "--check"], "st") == ["stack_lag.grow"]
    assert complete(["plan"], f"{workspace}/con") == [f"{workspace}/configs/"]  # an absolute path stays one


def test_run_directories_complete_for_resume_and_report(workspace: Path) -> None:
    assert complete(["run", "--resume"], "") == ["runs/"]  # `empty` holds no run
    assert complete(["run", "--resume"], "runs/") == ["runs/quick-1", "runs/quick-2"]
    assert complete(["report"], "runs/quick-") == ["runs/quick-1", "runs/quick-2"]
    assert complete(["sample"], "runs/quick-2") == ["runs/quick-2"]


def test_study_stage_completes_the_schedules_stages(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMP_WORDS", "lagdsl study stack_lag.grow --stage ")
    assert complete(["study", "stack_lag.grow", "--stage"], "") == ["base", "grow_1", "grow_2", "grow_3"]
    assert complete(["study", "stack_lag.grow", "--stage"], "grow_") == ["grow_1", "grow_2", "grow_3"]


@pytest.mark.parametrize(
    ("shell", "marker"), [("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --no-files --command lagdsl")]
)
def test_the_documented_lines_print_a_completion_script(shell: str, marker: str) -> None:
    script = Path(sys.executable).parent / "lagdsl"
    if not script.exists():
        pytest.skip("no console script beside this Python")
    env = {**os.environ, "_LAGDSL_COMPLETE": f"{shell}_source"}
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and marker in result.stdout
