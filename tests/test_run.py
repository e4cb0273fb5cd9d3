"""`lagdsl run`: end to end on a tiny schedule, probes, resume, interruption and bad input."""

from __future__ import annotations

import gc
import json
import re
import signal
import time
import weakref
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lagdsl.artifacts import PlanFile, RunInfo, Summary, event_line, read_events, read_json
from lagdsl.cli import main
from lagdsl.runtime.records.metrics import read, without_timing
from lagdsl.runtime.state import checkpoint as ckpt
from lagdsl.runtime.training import engine as engine_module
from lagdsl.runtime.training import probes
from tests import forked
from tests.conftest import write_corpus

TINY = """
schedule tiny
seed 3
model gpt(context=16, width=16, heads=2, depth=1)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3)
lr cosine(warmup=4 steps, min=3e-4)
eval every 10 steps (batches=2)
checkpoint every 12 steps (keep=3)
stage base {{ train 10 steps }}
stage two {{ grow depth to 2 with copy_top  train 10 steps }}
stage four {{
  grow depth to 4 {{ candidates [copy_top, interleave, identity] probe 5 steps {select} {keep} }}
  train 10 steps
}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_corpus(tmp_path)
    return tmp_path


def schedule(project: Path, select: str = "", keep: str = "", name: str = "tiny.grow", precision: str = "") -> Path:
    path = project / name
    text = TINY.format(select=select, keep=keep)
    if precision:  # fp16 on a CPU too: its loss scale is training state like the optimizer's
        text = text.replace("seed 3\n", f"seed 3\nprecision {precision}\n")
    path.write_text(text)
    return path


def overflow_at_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under fp16, start from a loss scale so high that the first steps overflow and are skipped
    while the scale backs off (as real fp16 runs do now and then), so the scale's state matters."""
    scaler = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device: scaler(device, init_scale=2.0**40))


def run(*args: str):
    return CliRunner().invoke(main, ["run", "--quiet", *args])


def events(run_dir: Path, kind: str | None = None) -> list[dict]:
    records = read(run_dir / "metrics.jsonl")
    return [r for r in records if kind is None or r["event"] == kind]


def comparable(run_dir: Path) -> list[dict]:
    return [r for r in without_timing(read(run_dir / "metrics.jsonl")) if r["event"] != "checkpoint"]


@pytest.mark.slow
def test_tiny_schedule_runs_through_every_instruction(project: Path) -> None:
    out = project / "run"
    result = run(str(schedule(project)), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert (out / "schedule.grow").read_text() == schedule(project).read_text()  # the source, as run
    final = torch.load(out / "final" / "model.pt", weights_only=True)["model"]
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["depth"] == 4 and sum(name.endswith("attn.qkv.weight") for name in final) == 4
    kinds = {r["event"] for r in events(out)}
    assert kinds == {"stage", "step", "grow", "probe", "select", "eval", "checkpoint", "end"}
    steps = [r["step"] for r in events(out, "step")]
    assert steps == list(range(30))  # every mainline step, the winner's probe steps included
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 30
    assert summary["final_shape"]["depth"] == 4 and summary["winners"]["four"] in ("copy_top", "interleave", "identity")
    assert summary["probe_flops"] > 0 and summary["flops"] < summary["scratch_flops"]
    phases = summary["phase_seconds"]  # where the wall time went: every phase this run has took some
    assert set(phases) == {"train", "probes", "growth", "wrap", "checkpoints", "evaluation"}
    # (`wrap` builds DDP or compile wrappers: a plain model has none, and microseconds round to 0)
    assert all(seconds > 0 for phase, seconds in phases.items() if phase != "wrap") and phases["wrap"] >= 0
    assert phases["train"] < summary["wall_seconds"]
    meta = json.loads((out / "run.json").read_text())
    assert len(meta["data_fingerprint"]) == 64
    # every file the run wrote is what its model says (the models users' tools get from `lagdsl schema`)
    assert meta["schema"] == "lagdsl.run/1" and meta["events"] == "lagdsl.events/1"
    assert summary["schema"] == "lagdsl.summary/1"
    assert read_json(out / "run.json", RunInfo).data_fingerprint == meta["data_fingerprint"]
    assert read_json(out / "summary.json", Summary).final_shape.depth == 4
    assert read_json(out / "plan.json", PlanFile).totals.mainline_steps == 30
    typed = read_events(out / "metrics.jsonl")
    assert [type(e).__name__ for e in typed] == [
        f"{r['event'].capitalize()}Event" for r in events(out)
    ]  # no event read as an unknown kind
    assert [json.loads(event_line(e)) for e in typed] == events(out)  # written back, the same lines
    # checkpoints: every 12 steps and at the end, the newest 3 kept, each loadable without pickle
    names = [p.name for p in ckpt.list_checkpoints(out / "checkpoints")]
    assert len(names) == 3 and names[-1].startswith("step-000000030")
    state = ckpt.load(ckpt.list_checkpoints(out / "checkpoints")[-1])
    assert state["step"] == 30 and state["config"]["depth"] == 4


@pytest.mark.slow
def test_runs_are_deterministic(project: Path) -> None:
    path = schedule(project)
    assert run(str(path), "--out", str(project / "a")).exit_code == 0
    assert run(str(path), "--out", str(project / "b")).exit_code == 0
    assert comparable(project / "a") == comparable(project / "b")
    assert run(str(path), "--out", str(project / "c"), "--seed", "4").exit_code == 0
    assert comparable(project / "a") != comparable(project / "c")


@pytest.mark.slow
def test_probes_are_fair_and_the_rule_picks_the_winner(project: Path) -> None:
    out = project / "run"
    assert run(str(schedule(project, select="select lowest loss over last 2 steps")), "--out", str(out)).exit_code == 0
    probes = events(out, "probe")
    assert [p["candidate"] for p in probes] == ["copy_top", "interleave", "identity"]
    assert len({tuple(p["steps"]) for p in probes}) == 1 and probes[0]["steps"] == [20, 21, 22, 23, 24]
    assert len({tuple(p["lrs"]) for p in probes}) == 1
    (select,) = events(out, "select")
    for p in probes:
        assert select["scores"][p["candidate"]] == pytest.approx(sum(p["losses"][-2:]) / 2)
    best = min(select["scores"].values())
    assert select["winner"] == next(c for c, s in select["scores"].items() if s == best)
    # keep winner: the winner's probe losses are the stage's first mainline steps
    winner = next(p for p in probes if p["candidate"] == select["winner"])
    steps = {r["step"]: r for r in events(out, "step")}
    assert [steps[s]["loss"] for s in range(20, 25)] == winner["losses"]
    assert all(steps[s].get("from_probe") for s in range(20, 25))
    assert not steps[25].get("from_probe")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["", "fp16"])
def test_every_candidate_starts_from_the_same_snapshot(project: Path, precision: str, monkeypatch) -> None:
    # a candidate's probe may not depend on where it stands in the list or on who trained before it
    # (under fp16, neither on the loss scale the candidates before it left behind)
    if precision:
        overflow_at_first(monkeypatch)
    forward = project / "forward.grow"
    forward.write_text(schedule(project, precision=precision).read_text())
    backward = project / "backward.grow"
    reordered = forward.read_text().replace("[copy_top, interleave, identity]", "[identity, interleave, copy_top]")
    backward.write_text(reordered)
    assert run(str(forward), "--out", str(project / "f")).exit_code == 0
    assert run(str(backward), "--out", str(project / "b")).exit_code == 0
    probes_f = {p["candidate"]: p["losses"] for p in events(project / "f", "probe")}
    probes_b = {p["candidate"]: p["losses"] for p in events(project / "b", "probe")}
    assert probes_f == probes_b


@pytest.mark.slow
def test_keep_rewind_trains_the_stage_from_its_first_batch(project: Path) -> None:
    out = project / "run"
    assert run(str(schedule(project, keep="keep rewind")), "--out", str(out)).exit_code == 0
    steps = [r for r in events(out, "step") if r["stage"] == "four"]
    assert [r["step"] for r in steps] == list(range(20, 30))
    assert not any(r.get("from_probe") for r in steps)
    winner = events(out, "select")[0]["winner"]
    probe = next(p for p in events(out, "probe") if p["candidate"] == winner)
    # the same batches and LR as the winner's probe, from the state right after growth
    assert steps[0]["loss"] == probe["losses"][0]


@pytest.mark.slow
def test_a_probe_holds_the_best_candidate_only_where_it_goes_on(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # memory: while a candidate trains, `keep winner` holds the best one so far beside it (it goes
    # on from its probe), live or (on an accelerator: parked) as a copy in host memory; `keep
    # rewind` holds no other candidate (the winner is grown again)
    models: list[weakref.ref] = []
    alive: list[int] = []
    grown, stepped = engine_module.Engine.grown, engine_module.Engine.stepped

    def grow(self, *args, **kwargs):
        state = grown(self, *args, **kwargs)
        if self.probing is not None:  # a candidate's growth
            models.append(weakref.ref(state.model))
        return state

    def step(self, stage, step, loss):
        gc.collect()
        alive.append(sum(ref() is not None for ref in models))
        return stepped(self, stage, step, loss)

    def held(keep: str, parked: bool) -> list[int]:
        """How many candidates are alive at each probe step of a run."""
        models.clear(), alive.clear()
        monkeypatch.setattr(probes, "parks", lambda state: parked)
        out = project / f"{keep}-{parked}".replace(" ", "-")
        assert run(str(schedule(project, keep=keep)), "--out", str(out)).exit_code == 0
        assert len(models) == 3 and len(alive) == 15  # three candidates, five probe steps each
        return list(alive)

    monkeypatch.setattr(engine_module.Engine, "grown", grow)
    monkeypatch.setattr(engine_module.Engine, "stepped", step)
    gc.collect()
    gc.freeze()  # what exists before the runs is never the garbage counted: each collection skips it
    try:
        assert held("keep winner", parked=False) == [1] * 5 + [2] * 10  # the first alone, then beside the best
        assert held("keep winner", parked=True) == [1] * 15
        assert held("keep rewind", parked=False) == [1] * 15
    finally:
        gc.unfreeze()
    # the winner goes on from its parked copy as it would have gone on live: the same run
    assert comparable(project / "keep-winner-True") == comparable(project / "keep-winner-False")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["", "fp16"])
def test_max_steps_then_resume_gives_the_uninterrupted_events(project: Path, precision: str, monkeypatch) -> None:
    if precision:  # the loss scale is saved and restored with the rest of the training state
        overflow_at_first(monkeypatch)
    path = schedule(project, precision=precision)
    assert run(str(path), "--out", str(project / "whole")).exit_code == 0
    part = project / "part"
    first = run(str(path), "--out", str(part), "--max-steps", "15")
    assert first.exit_code == 0, first.output
    assert not json.loads((part / "summary.json").read_text())["finished"]
    resumed = run("--resume", str(part))
    assert resumed.exit_code == 0, resumed.output
    assert comparable(part) == comparable(project / "whole")


def _wait_for(path: Path, predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and predicate(path.read_text()):
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting on {path}")


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["checkpoint", "probe"])
def test_sigkill_at_any_point_then_resume_is_bitwise_identical(project: Path, kill_after: str) -> None:
    path = schedule(project)
    assert run(str(path), "--out", str(project / "whole")).exit_code == 0
    out = project / "killed"
    process = forked.start(["run", str(path), "--out", str(out), "--quiet"])
    marker = '"event":"checkpoint"' if kill_after == "checkpoint" else '"event":"probe"'
    _wait_for(out / "metrics.jsonl", lambda text: marker in text)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run("--resume", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert comparable(out) == comparable(project / "whole")


@pytest.mark.slow
@pytest.mark.parametrize("during", ["training", "a probe"])
def test_ctrl_c_writes_a_checkpoint_and_exits_130(project: Path, during: str) -> None:
    path = schedule(project)
    out = project / "stopped"
    process = forked.start(["run", str(path), "--out", str(out), "--quiet"])
    marker = '"event":"eval"' if during == "training" else '"event":"probe"'  # the first candidate is done
    _wait_for(out / "metrics.jsonl", lambda text: marker in text)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert process.returncode == 130, err
    assert "checkpoint written" in err and "Traceback" not in err
    if during == "a probe" and '"event":"select"' not in (out / "metrics.jsonl").read_text():
        # stopped inside the probe: the checkpoint holds the state before it, to probe again
        assert ckpt.load(ckpt.list_checkpoints(out / "checkpoints")[-1])["step"] == 20
    assert run("--resume", str(out)).exit_code == 0
    assert run(str(path), "--out", str(project / "whole")).exit_code == 0
    assert comparable(out) == comparable(project / "whole")


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(project: Path) -> None:
    text = TINY.format(select="", keep="").replace("adamw(lr=3e-3)", "sgd(lr=1e30, momentum=0.9)")
    text = text.replace("checkpoint every 12 steps (keep=3)", "checkpoint every 1 step (keep=2)")
    path = project / "nan.grow"
    path.write_text(text)
    out = project / "nan"
    result = run(str(path), "--out", str(out))
    assert result.exit_code == 1, result.output
    message = result.stderr
    assert (message.startswith("error: the ") and "non-finite" in message) or "the loss became" in message
    assert "in stage `base`" in message and "the last good checkpoint is" in message
    named = Path(re.search(r"checkpoint is `([^`]+)`", message).group(1))
    kept = ckpt.list_checkpoints(out / "checkpoints")
    assert named == kept[-1] and f"lagdsl run --resume {out}" in message
    saved = ckpt.load(named)
    assert saved["step"] >= 1  # no state that is not finite is ever written as a checkpoint:
    assert all(torch.isfinite(tensor).all() for tensor in saved["model"].values())
    assert events(out, "stopped")


def test_data_errors_are_one_line_and_exit_2(project: Path) -> None:
    (project / "short").mkdir(exist_ok=True)
    (project / "short" / "s.txt").write_text("tiny")
    (project / "empty").mkdir(exist_ok=True)
    (project / "empty" / "e.txt").write_text("")
    (project / "odd.bin").write_bytes(b"\x01\x00" * 500 + b"\x01")  # uint16 tokens, one byte too many
    for data, message in (
        ('text("nothing/*.txt")', 'no files match `text("nothing/*.txt")`'),
        ('tokens("missing.bin")', "token file"),
        ('tokens("odd.bin")', "has 1,001 bytes, not a whole number of uint16 tokens"),
        ('text("short/*.txt")', "fewer than one window"),
        ('text("empty/*.txt")', "is empty"),
    ):
        path = project / "bad.grow"
        path.write_text(
            TINY.format(select="", keep="")
            .replace('text("corpus/*.txt", val=0.1)', data)
            .replace("model gpt(context=16", "model gpt(vocab=256, context=16")
        )
        result = run(str(path), "--out", str(project / "out-bad"))
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.slow
def test_pre_tokenized_data_in_nanogpt_format(project: Path) -> None:
    import numpy as np

    tokens = np.random.default_rng(0).integers(0, 300, size=5_000, dtype=np.uint16)
    tokens.tofile(project / "train.bin")
    tokens[:1_000].tofile(project / "val.bin")
    text = (
        TINY.format(select="", keep="")
        .replace('data text("corpus/*.txt", val=0.1)', 'data tokens("train.bin", val="val.bin", dtype=uint16)')
        .replace("model gpt(context=16", "model gpt(vocab=300, context=16")
    )
    path = project / "tokens.grow"
    path.write_text(text)
    out = project / "tokens"
    result = run(str(path), "--out", str(out), "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in events(out, "step")] == [0, 1, 2]
    assert json.loads((out / "run.json").read_text())["data"].startswith("tokens: 5,000 train, 1,000 validation")
    missing = run(str(path.with_name("t2.grow")), "--out", str(project / "t2"))
    assert missing.exit_code == 2  # no such schedule file
    path.with_name("t3.grow").write_text(text.replace("vocab=300", "vocab=256"))
    beyond = run(str(path.with_name("t3.grow")), "--out", str(project / "t3"))
    assert beyond.exit_code == 2 and "beyond `vocab=256`" in beyond.stderr


def test_dry_run_prints_the_program(project: Path) -> None:
    result = run(str(schedule(project)), "--dry-run")
    assert result.exit_code == 0
    assert "probe depth 2 -> 4: [copy_top, interleave, identity] for 5 steps from step 20" in result.stdout
    assert "grow depth 1 -> 2 with copy_top" in result.stdout


@pytest.mark.slow
def test_resume_refuses_another_schedule_and_a_used_directory(project: Path) -> None:
    path = schedule(project)
    out = project / "r"
    assert run(str(path), "--out", str(out), "--max-steps", "5").exit_code == 0
    other = project / "other.grow"
    other.write_text(path.read_text().replace("seed 3", "seed 4"))
    refused = run(str(other), "--resume", str(out))
    assert refused.exit_code == 2 and "different schedule" in refused.stderr
    again = run(str(path), "--out", str(out))
    assert again.exit_code == 2 and "already holds a run" in again.stderr


@pytest.mark.parametrize("seed", ["-5", str(2**63), str(10**23)])
def test_a_seed_the_schedule_could_not_hold_is_a_usage_error(project: Path, seed: str) -> None:
    """`run --seed -5` was an internal error, and `--seed 1e23` ran with a seed no schedule may
    hold: the command line takes the schedule's `seed` range."""
    for command in (["run", str(schedule(project))], ["study", str(schedule(project)), "--stage", "four"]):
        result = CliRunner().invoke(main, [*command, "--seed", seed])
        assert result.exit_code == 2 and "--seed" in result.output and "internal error" not in result.output


def test_run_needs_a_file_or_resume() -> None:
    assert run().exit_code == 2


def test_an_invalid_schedule_is_reported_not_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.grow"
    bad.write_text("model gpt(context=8)\n")
    result = run(str(bad))
    assert result.exit_code == 1 and "error[E0206]" in result.stderr


@pytest.mark.slow
def test_the_quickstart_trains_on_the_built_in_corpus(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "q"
    result = CliRunner().invoke(main, ["run", str(root / "schedules" / "quickstart.grow"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "final val loss" in result.stderr and "run directory" in result.stderr
    assert "step 25/500 base: loss" in result.stderr  # plain progress lines when stderr is no terminal
    # what happened stays on screen: evaluations, growths, the probe's choice
    assert "step 100 `base`: val loss " in result.stderr
    assert "step 150 `deeper`: grew depth 1 -> 2 with copy_top" in result.stderr
    assert "`deepest`: the probe chose " in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["final_shape"]["depth"] == 4
    assert summary["winners"]["deepest"] in ("copy_top", "interleave", "identity")  # the probe chose
    assert summary["final_val_loss"] < 2.6  # from about 5.5 (uniform over 256 bytes)
    assert "standard library" in json.loads((out / "run.json").read_text())["data"]


@pytest.mark.slow
def test_compile_on_trains_and_recompiles_after_growth(project: Path) -> None:
    text = (
        TINY.format(select="", keep="")
        .replace("schedule tiny", "schedule tiny\ncompile on")
        .replace("checkpoint every 12 steps (keep=3)", "")
    )
    text = text[: text.index("stage four")]  # one fixed growth: two compiled shapes
    path = project / "compiled.grow"
    path.write_text(text)
    out = project / "compiled"
    from torch._dynamo.utils import counters

    counters.clear()
    result = run(str(path), "--out", str(out))
    assert result.exit_code == 0, result.output
    # one graph per model shape: nothing recompiles per step (LR, step count) or per micro-batch
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    losses = [r["loss"] for r in events(out, "step")]
    assert len(losses) == 20 and losses[-1] < losses[0]
    saved = torch.load(out / "final" / "model.pt", weights_only=True)["model"]
    assert not any(key.startswith("_orig_mod") for key in saved)
    assert any(key.startswith("blocks.1.") for key in saved)
