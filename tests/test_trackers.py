"""`lagdsl run --tensorboard` and `--wandb`: the run's numbers where users watch runs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lagdsl.cli import main
from lagdsl.runtime.records import trackers
from lagdsl.runtime.records.metrics import read
from tests.conftest import child_processes, write_corpus

pytest.importorskip("tensorboard")

SCHEDULE = """
schedule tracked
seed 2
model gpt(context=16, width=16, heads=2, depth=1)
data text("corpus/*.txt")
batch 4
optimizer adamw(lr=3e-3)
eval every 6 steps (batches=2)
checkpoint every 6 steps
stage base { train 6 steps }
stage deeper {
  grow depth to 2 { candidates [copy_top, identity] probe 3 steps }
  train 6 steps
}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_corpus(tmp_path)
    (tmp_path / "tracked.grow").write_text(SCHEDULE)
    return tmp_path


def run(project: Path, *args: str):
    return CliRunner().invoke(main, ["run", "--quiet", str(project / "tracked.grow"), *args])


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def texts(log_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    found = []
    for tag in events.Tags()["tensors"]:
        for event in events.Tensors(tag):
            found += [v.decode() for v in event.tensor_proto.string_val]
    return found


def test_tensorboard_holds_the_runs_scalars_on_the_mainline_step_axis(project: Path) -> None:
    result = run(project, "--out", str(project / "run"), "--tensorboard", str(project / "tb"))
    assert result.exit_code == 0, result.output
    logged = scalars(project / "tb")
    steps = [r for r in read(project / "run" / "metrics.jsonl") if r["event"] == "step"]
    assert [s for s, _ in logged["train/loss"]] == [r["step"] for r in steps] == list(range(12))
    by_step = {r["step"]: r for r in steps}
    for step, loss in logged["train/loss"]:
        assert loss == pytest.approx(by_step[step]["loss"], rel=1e-6)
    for step, lr in logged["train/lr"]:
        assert lr == pytest.approx(by_step[step]["lr"], rel=1e-6)
    assert [s for s, _ in logged["train/flops"]] == list(range(12))
    assert "train/tokens_per_s" in logged and all(v > 0 for _, v in logged["train/tokens_per_s"])
    evals = [r for r in read(project / "run" / "metrics.jsonl") if r["event"] == "eval"]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in logged["val/loss"]] == [
        (e["step"], e["val_loss"]) for e in evals
    ]
    assert logged["model/depth"][0] == (0, 1.0) and logged["model/depth"][-1][1] == 2.0
    assert logged["model/params"][-1][1] > logged["model/params"][0][1]
    probes = {tag for tag in logged if tag.startswith("probe/")}
    assert probes == {"probe/deeper.0/copy_top", "probe/deeper.0/identity"}
    probe = next(r for r in read(project / "run" / "metrics.jsonl") if r["event"] == "probe")
    assert [s for s, _ in logged[f"probe/deeper.0/{probe['candidate']}"]] == probe["steps"] == [6, 7, 8]
    notes = texts(project / "tb")
    assert any("probe chose" in note for note in notes)


def test_a_resumed_run_logs_each_step_once(project: Path) -> None:
    first = run(project, "--out", str(project / "run"), "--tensorboard", str(project / "tb"), "--max-steps", "8")
    assert first.exit_code == 0, first.output
    result = CliRunner().invoke(
        main, ["run", "--quiet", "--resume", str(project / "run"), "--tensorboard", str(project / "tb")]
    )
    assert result.exit_code == 0, result.output
    assert [s for s, _ in scalars(project / "tb")["train/loss"]] == list(range(12))


def test_a_missing_extra_is_one_line_naming_the_install(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trackers, "_importable", lambda name: False)
    for option, extra in (("--tensorboard", "tensorboard"), ("--wandb", "wandb")):
        result = run(project, "--out", str(project / "run"), option, "x")
        assert result.exit_code == 2
        assert result.stderr == f"error: {option} needs the `{extra}` package: pip install 'lagdsl[{extra}]'\n"
    assert not (project / "run").exists()


def children() -> list[str]:
    """The names of this process's child processes."""
    names = []
    for entry in child_processes(os.getpid()):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            names.append((entry / "comm").read_text().strip())
    return names


def test_wandb_offline_records_the_run(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(project / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(project / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(project / "wandb-data"))
    result = run(project, "--out", str(project / "run"), "--wandb", "lagdsl-test")
    assert result.exit_code == 0, result.output
    # W&B's service process has written everything and ended: its record is whole when the run
    # returns, also for a torchrun rank, which leaves without the hooks that would wait for it
    assert "wandb-core" not in children()
    runs = list((project / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = list(runs[0].glob("*.wandb"))
    assert len(records) == 1
    data = records[0].read_bytes()  # W&B's record log: protobuf, whose strings are stored as they are
    assert data.count(b"train/loss") >= 12 and data.count(b"val/loss") >= 2  # every step, both evaluations
    assert b"probe chose" in data
