"""The command line: exit codes, output streams, formats, and a torch-free front."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lagdsl.cli import main
from tests.conftest import GOLDEN, ROOT, SCHEDULES


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_validate_prints_one_summary_line_per_valid_file() -> None:
    result = run("validate", *map(str, SCHEDULES))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(SCHEDULES)
    stack = next(line for line in lines if "stack_lag" in line)
    assert stack.endswith("stack_lag.grow: ok: 4 stages, depth 2 -> 8, width 128, 2400 steps")
    assert result.stderr == ""  # the shipped examples warn of nothing


def test_diagnostics_go_to_stderr_and_the_exit_code_is_1() -> None:
    result = run("validate", str(GOLDEN / "e0201_unknown_operator.grow"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error[E0201]: unknown operator `copy_tpo`" in result.stderr
    assert "= help: did you mean `copy_top`?" in result.stderr


def test_warnings_pass_unless_strict() -> None:
    path = str(GOLDEN / "w0301_short_probe.grow")
    relaxed = run("validate", path)
    assert relaxed.exit_code == 0
    assert "warning[W0301]" in relaxed.stderr and "(1 warning)" in relaxed.stdout
    strict = run("validate", "--strict", path)
    assert strict.exit_code == 1
    assert "1 warning (--strict)" in strict.stderr


def test_one_invalid_file_among_valid_ones_fails_the_run() -> None:
    result = run("validate", str(SCHEDULES[0]), str(GOLDEN / "e0102_duplicate_setting.grow"))
    assert result.exit_code == 1
    assert "ok:" in result.stdout and "E0102" in result.stderr


def test_a_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.grow"
    result = run("validate", str(missing), str(SCHEDULES[0]))
    assert result.exit_code == 2
    assert result.stderr == f"error: cannot read `{missing}`: No such file or directory\n"
    assert "ok:" in result.stdout  # the other file is still checked


def test_a_broken_installation_names_its_missing_grammar_not_the_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installation without `grammars/grow.lark` once said `cannot read` of the user's own,
    readable schedule."""
    from lagdsl.lang import parser

    missing = tmp_path / "grammars" / "grow.lark"
    monkeypatch.setattr(parser, "grammar_path", lambda: missing)
    parser.build_parser.cache_clear()
    try:
        result = run("validate", str(SCHEDULES[0]))
    finally:
        parser.build_parser.cache_clear()
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: lagdsl's grammar `{missing}` cannot be read (No such file or directory): the installation is "
        "incomplete; reinstall lagdsl (`pip install -e .` in a source tree)\n"
    )


def test_a_binary_file_is_an_io_problem(tmp_path: Path) -> None:
    path = tmp_path / "binary.grow"
    path.write_bytes(b"\xff\xfe\x00bad")
    result = run("validate", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot read `{path}`")


def test_usage_errors_exit_2() -> None:
    assert run("validate").exit_code == 2
    assert run("validate", "--format", "xml", str(SCHEDULES[0])).exit_code == 2


def test_json_format_lists_every_diagnostic_of_every_file() -> None:
    files = [GOLDEN / "e0102_duplicate_setting.grow", GOLDEN / "w0301_short_probe.grow", SCHEDULES[0]]
    result = run("validate", "--format", "json", *map(str, files))
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert [(d["code"], Path(d["file"]).name) for d in payload] == [
        ("E0102", "e0102_duplicate_setting.grow"),
        ("W0301", "w0301_short_probe.grow"),
    ]
    assert payload[0]["severity"] == "error" and payload[1]["severity"] == "warning"
    assert result.stderr == ""


def test_json_for_a_valid_file_is_an_empty_list() -> None:
    result = run("validate", "--format", "json", str(SCHEDULES[0]))
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


def test_ops_lists_the_catalogue() -> None:
    text = run("ops")
    assert text.exit_code == 0
    for name in ("copy_top", "copy_bottom", "midas", "stack", "interleave", "identity", "net2net", "zero"):
        assert name in text.stdout
    payload = json.loads(run("ops", "--format", "json").stdout)
    entries = {(e["name"], e["dim"]): e for e in payload}
    assert len(entries) == 21
    assert entries[("keep", "context")]["preserves_function"] == "yes"
    assert entries[("yarn", "context")]["params"][0] == {"name": "factor", "type": "float", "default": "auto"}
    assert entries[("upcycle", "experts")]["preserves_function"] == "yes"
    assert entries[("duplicate", "experts")]["preserves_function"] == "yes"
    assert entries[("identity", "depth")]["preserves_function"] == "yes"
    assert entries[("hyperclone", "width")]["preserves_function"] == "yes"
    assert entries[("hyperclone", "width")]["params"][0]["default"] == 0.1
    assert entries[("llama_pro", "depth")]["preserves_function"] == "yes"
    assert entries[("layers", "depth")]["params"][0]["name"] == "ranges"
    assert entries[("net2net", "width")]["preserves_function"] == "yes"
    assert entries[("random", "width")]["preserves_function"] == "no"
    assert entries[("copy_top", "depth")]["params"] == [{"name": "noise", "type": "float", "default": 0.0}]
    assert ("random", "width") in entries and ("random", "depth") in entries


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)


def test_validate_ops_and_the_language_tools_never_import_torch() -> None:
    code = f"""
import sys
from click.testing import CliRunner
from lagdsl.cli import main
for args in (["validate", *{[str(p) for p in SCHEDULES]!r}], ["validate", {str(GOLDEN / "e0001_unit_typo.grow")!r}],
             ["ops"], ["ops", "--format", "json"], ["fmt", "--check", *{[str(p) for p in SCHEDULES]!r}],
             ["explain", "E0201"]):
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 1), result.output
import lagdsl.lsp  # the language server's module (it runs the checker on every edit)
print("torch" in sys.modules)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_python_dash_m_and_the_console_script() -> None:
    module = subprocess.run(
        [sys.executable, "-m", "lagdsl", "validate", str(SCHEDULES[0])], capture_output=True, text=True, check=False
    )
    assert module.returncode == 0, module.stderr
    assert "ok:" in module.stdout
    script = Path(sys.executable).parent / "lagdsl"
    if script.exists():
        broken = subprocess.run(
            [str(script), "validate", str(GOLDEN / "e0201_unknown_operator.grow")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert broken.returncode == 1 and "E0201" in broken.stderr
        assert "Traceback" not in broken.stderr


def _validate_in_subprocess(env_cache: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "XDG_CACHE_HOME": env_cache}
    return subprocess.run(
        [sys.executable, "-m", "lagdsl", "validate", str(SCHEDULES[0])],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_parser_tables_are_cached_per_user_and_optional(tmp_path: Path) -> None:
    first = _validate_in_subprocess(str(tmp_path))
    assert first.returncode == 0, first.stderr
    cached = list((tmp_path / "lagdsl").glob("grow-*.lark-cache"))
    assert len(cached) == 1
    assert _validate_in_subprocess(str(tmp_path)).returncode == 0  # read back from the cache
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    unwritable = _validate_in_subprocess(str(blocked))
    assert unwritable.returncode == 0, unwritable.stderr
    assert "ok:" in unwritable.stdout


def test_an_unknown_device_is_one_line() -> None:
    result = CliRunner().invoke(main, ["run", "--device", "tpu", str(SCHEDULES[0])])
    assert result.exit_code == 2
    assert "`tpu` is not a device: use auto, cpu, cuda or cuda:N" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["validate", "run", "plan", "report", "study", "ops", "schema"])
def test_every_command_s_help_has_an_example_and_its_exit_codes(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "Exit code" in result.output and f"lagdsl {command}" in result.output


def test_plan_and_ops_fit_an_80_column_terminal() -> None:
    for args in (["plan", str(ROOT / "schedules" / "stack_lag.grow")], ["ops"]):
        result = CliRunner().invoke(main, args, env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, args
