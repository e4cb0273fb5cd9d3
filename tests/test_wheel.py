"""The grammar ships inside the wheel: an installed copy validates with its own grammar file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_installed_wheel_validates_with_its_packaged_grammar(tmp_path: Path) -> None:
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("lagdsl-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert (target / "lagdsl" / "grammars" / "grow.lark").is_file()
    assert (target / "lagdsl" / "lang" / "explain" / "E0201.md").is_file()  # `lagdsl explain` pages
    assert (target / "lagdsl" / "templates" / "stack.grow").is_file()  # `lagdsl init` templates

    schedule = tmp_path / "copy.grow"
    schedule.write_text((ROOT / "schedules" / "stack_lag.grow").read_text())
    code = (
        "import sys, lagdsl\n"
        "from lagdsl.lang.parser import grammar_path\n"
        "from lagdsl.cli import main\n"
        "print(lagdsl.__file__)\n"
        "print(grammar_path())\n"
        "main(['validate', sys.argv[1]])\n"
    )
    # run outside the source tree, with the installed copy first on the path
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(schedule)], capture_output=True, text=True, cwd=tmp_path, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    module_file, grammar_file, summary = result.stdout.splitlines()
    assert Path(module_file).is_relative_to(target)
    assert Path(grammar_file) == target / "lagdsl" / "grammars" / "grow.lark"
    assert summary.endswith("ok: 4 stages, depth 2 -> 8, width 128, 2400 steps")
