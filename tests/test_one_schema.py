"""The schedule's pydantic models are the one source of every parameter's default, range and help:
change one there, in the source, and the checker, the signatures in messages, `lagdsl ops` and the
built schedule all follow. The test edits a copy of the package and runs it in a fresh interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json
from click.testing import CliRunner
from lagdsl.cli import main
from lagdsl.lang import check_text

text = '''
model gpt(context=8, width=8, heads=2, depth=1)
batch 2
optimizer adamw(lr=1e-3)
stage base { train 4 steps }
stage two { grow depth to 2 with copy_top  train 4 steps }
'''
checked = check_text(text, "x.grow")
ops = json.loads(CliRunner().invoke(main, ["ops", "--format", "json"]).stdout)
missing = check_text(text.replace("adamw(lr=1e-3)", "adamw()"), "x.grow")
low = check_text(text.replace("adamw(lr=1e-3)", "adamw(lr=1e-3, weight_decay=0.001)"), "x.grow")
print(json.dumps({
    "weight_decay": checked.schedule.optimizer.weight_decay,
    "noise": checked.schedule.stages[1].growths[0].op.args["noise"],
    "ops": {e["name"]: e["params"] for e in ops if e["dim"] == "depth"}["copy_top"],
    "missing": [d.help for d in missing.diagnostics],
    "low": [(d.code, d.message, d.help) for d in low.diagnostics],
}))
"""


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path.name} once"
    path.write_text(text.replace(old, new))


def probe(package: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(package)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=package,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_default_range_or_help_changed_in_the_model_shows_everywhere(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "lagdsl", tmp_path / "lagdsl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "grammars", tmp_path / "grammars")
    before = probe(tmp_path)
    assert before["weight_decay"] == 0.1 and before["noise"] == 0.0
    assert before["low"] == []

    schedule = tmp_path / "lagdsl" / "lang" / "schedule.py"
    edit(
        schedule,
        "weight_decay: Annotated[float, Field(ge=0.0)] = 0.1",
        'weight_decay: Annotated[float, Field(ge=0.01, description="such as `0.05`")] = 0.05',
    )
    copy_noise = "copied tensor's standard deviation, such as `0.01`\"),\n    ] = 0.0\n"
    edit(tmp_path / "lagdsl" / "lang" / "operator_args.py", copy_noise, copy_noise.replace("0.0\n", "0.5\n"))
    after = probe(tmp_path)
    assert after["weight_decay"] == 0.05  # the built schedule
    assert after["noise"] == 0.5  # an operator's arguments
    assert after["ops"] == [{"name": "noise", "type": "float", "default": 0.5}]  # `lagdsl ops`
    assert after["missing"] == ["write it as adamw(lr, betas=(0.9, 0.95), weight_decay=0.05, eps=1e-08, clip=1.0)"]
    assert after["low"] == [
        ["E0302", "`weight_decay` of `adamw` must be at least 0.01, found `0.001`", "such as `0.05`"]
    ]
