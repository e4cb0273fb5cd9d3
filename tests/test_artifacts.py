"""Run artefacts: the models read what lagdsl writes, keep what a newer lagdsl adds, name the file
and line of what they cannot read, and publish their JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lagdsl.artifacts import (
    ArtifactError,
    OtherEvent,
    PlanFile,
    RunInfo,
    StepEvent,
    dump_json,
    event_line,
    read_events,
    read_json,
)
from lagdsl.cli import main
from lagdsl.lang import load
from lagdsl.plan import build_plan
from lagdsl.plan.render import to_json

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = sorted((ROOT / "schedules").glob("*.grow")) + sorted((ROOT / "bench").glob("*.grow"))

INFO = {
    "lagdsl": "0.1.0",
    "schedule": "tiny",
    "schedule_hash": "ab" * 32,
    "seed": 3,
    "device": "auto",
    "resolved_device": "cpu",
    "precision": "fp32",
    "base": "/somewhere",
    "data": "stdlib",
    "data_fingerprint": "cd" * 32,
    "created": "2026-11-29T12:00:00+00:00",
}


@pytest.mark.parametrize("path", SCHEDULES, ids=lambda p: p.name)
def test_every_plan_json_fits_the_published_model(path: Path) -> None:
    schedule = load(path).schedule
    assert schedule is not None
    text = to_json(build_plan(schedule))
    plan = PlanFile.model_validate_json(text)
    assert plan.schedule.total_steps == schedule.total_steps
    assert json.loads(dump_json(plan)) == json.loads(text)  # the model holds every field written


def test_a_run_json_from_before_schemas_reads_and_newer_fields_are_kept(tmp_path: Path) -> None:
    old = tmp_path / "run.json"
    old.write_text(json.dumps(INFO))  # no `schema`, no `events`: written by an older lagdsl
    info = read_json(old, RunInfo)
    assert info.schema_ == "lagdsl.run/1" and info.events == "lagdsl.events/1"
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**INFO, "schema": "lagdsl.run/1", "ranks": 8, "mesh": {"dp": 8}}))
    again = json.loads(dump_json(read_json(newer, RunInfo)))
    assert again["ranks"] == 8 and again["mesh"] == {"dp": 8}  # what this version does not know is kept
    assert next(iter(again)) == "schema"


def test_events_round_trip_unknown_kinds_included(tmp_path: Path) -> None:
    step = StepEvent(step=3, stage="base", loss=4.5, lr=1e-3, tokens=64, flops=100, elapsed=0.5)
    assert json.loads(event_line(step)) == {
        "event": "step", "step": 3, "stage": "base", "loss": 4.5, "lr": 1e-3, "tokens": 64, "flops": 100,
        "elapsed": 0.5,
    }  # fmt: skip  # from_probe=False is not written: only what was given
    probe_step = step.model_copy(update={"from_probe": True})
    path = tmp_path / "metrics.jsonl"
    future = '{"event":"shard","step":3,"ranks":4}'
    path.write_text(f"{event_line(step)}\n{future}\n{event_line(StepEvent(**{**step.model_dump(), 'step': 4}))}\n")
    events = read_events(path)
    assert isinstance(events[1], OtherEvent) and event_line(events[1]) == future
    assert [type(e) for e in events] == [StepEvent, OtherEvent, StepEvent]
    assert probe_step.from_probe and not events[0].from_probe


def test_a_non_finite_number_is_written_as_a_string_and_read_back() -> None:
    line = event_line(StepEvent(step=0, stage="a", loss=float("inf"), lr=0.1, tokens=1, flops=1, elapsed=0.0))
    assert '"loss":"inf"' in line  # JSON has no infinity
    (event,) = [StepEvent.model_validate_json(line)]
    assert event.loss == float("inf")


def test_damaged_files_name_the_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event":"end","step":1,"flops":0}\n{"event":"eval","step":2,"stage":"a","batches":1}\n')
    with pytest.raises(ArtifactError, match=r"metrics.jsonl` line 2: an `eval` event: `val_loss`: field required$"):
        read_events(path)
    path.write_text('{"event":"end","step":1,"flops":0}\n{"event":"end","st')  # killed while writing
    assert len(read_events(path)) == 1
    with pytest.raises(ArtifactError, match=r"line 2: not JSON$"):
        read_events(path, partial_last_line=False)
    info = tmp_path / "run.json"
    info.write_text(json.dumps({**INFO, "seed": "three"}))
    with pytest.raises(ArtifactError, match=r"run.json`: `seed`: input should be a valid integer"):
        read_json(info, RunInfo)


@pytest.mark.parametrize("name", ["run", "events", "summary", "study", "plan"])
def test_lagdsl_schema_prints_each_json_schema(name: str) -> None:
    result = CliRunner().invoke(main, ["schema", name])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    expected = {"run": "schedule_hash", "events": "from_probe", "summary": "scratch_flops", "study": "chosen_lag",
                "plan": "probe_overhead_flops"}  # fmt: skip
    assert expected[name] in text


def test_lagdsl_schema_of_an_unknown_artefact_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["schema", "metrics"])
    assert result.exit_code == 2 and "'metrics' is not one of" in result.output
