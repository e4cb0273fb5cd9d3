"""The prepared CUDA check script must keep working until a GPU runs it: checked here on a CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_device_check_script_runs_on_a_cpu() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "device_checks.py"), "--device", "cpu", "--small"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 4 and "FAIL" not in result.stdout
    (ROOT / "bench" / "device_checks-small.json").unlink(missing_ok=True)
