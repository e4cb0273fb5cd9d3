"""The prepared CUDA check script must keep working until a GPU runs it: checked here on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_device_check_script_runs_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "checks.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "device_checks.py"), "--device", "cpu", "--small", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 6 and "FAIL" not in result.stdout
    checks = json.loads(out.read_text())
    assert checks, "the script wrote no results"
