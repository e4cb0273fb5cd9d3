"""The training state and the engine in-process, on a tiny model: fast enough for `-m "not slow"`.

What a user relies on: a checkpoint (the state dict) taken anywhere, a probe included, resumes to
the very losses of the run that was never stopped; a snapshot does not change as training goes on;
a fork trains like the state it was forked from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lagdsl.lang import check_text
from lagdsl.lang.schedule import Schedule
from lagdsl.plan import build_plan
from lagdsl.runtime.data.batches import Batches
from lagdsl.runtime.data.corpus import Corpus
from lagdsl.runtime.records.metrics import Metrics, read, without_timing
from lagdsl.runtime.state.train_state import Device, Recipe, TrainState, fork, restore, snapshot
from lagdsl.runtime.training import program as P
from lagdsl.runtime.training.engine import Engine

TINY = """
schedule tiny
seed 5
model gpt(context=8, width=8, heads=2, depth=1)
batch 2
optimizer adamw(lr=1e-2)
lr cosine(warmup=2 steps, min=1e-3)
eval every 4 steps (batches=1)
stage base { train 4 steps }
stage two { grow depth to 2 with copy_top  train 3 steps }
stage four {
  grow depth to 4 { candidates [copy_top, interleave, identity] probe 2 steps }
  train 4 steps
}
stage wide { grow width to 12 with net2net  train 2 steps }
"""


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    checked = check_text(TINY, "tiny.grow")
    assert checked.schedule is not None, checked.diagnostics
    return checked.schedule


CPU = Device(torch.device("cpu"), None)


def make_engine(
    schedule: Schedule, corpus: Corpus, folder: Path, name: str, keep_lines: int = 0, **hooks: object
) -> Engine:
    batches = Batches(corpus, schedule.batch, schedule.model.context, schedule.seed, CPU.device)
    program = P.lower(build_plan(schedule))
    metrics = Metrics(folder / f"{name}.jsonl", keep_lines=keep_lines)
    on_checkpoint = hooks.pop("on_checkpoint", lambda engine, step: None)
    return Engine(schedule, program, batches, CPU, metrics, on_checkpoint, **hooks)  # type: ignore[arg-type]


def losses(path: Path) -> list[tuple[str, object]]:
    """Every event that is not about time, in order: what a resumed run must reproduce."""
    return [(r["event"], r) for r in without_timing(read(path))]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    mine, theirs = a.state_dict(), b.state_dict()
    assert list(mine) == list(theirs)
    for name, tensor in mine.items():
        assert torch.equal(tensor, theirs[name]), name


def train_one(engine: Engine, state: TrainState, step: int) -> float:
    return engine.train_step(state, engine.schedule.stages[0], step)[0]


def test_the_program_probes_grows_and_ends(schedule: Schedule, corpus: Corpus, tmp_path: Path) -> None:
    engine = make_engine(schedule, corpus, tmp_path, "whole")
    engine.initialize()
    assert engine.run()
    engine.metrics.close()
    state = engine.state
    assert (state.model.config.depth, state.model.config.width) == (4, 12)
    assert state.step == schedule.total_steps == 13
    assert state.pc == len(engine.program)
    assert set(state.winners) == {"four"} and state.winners["four"] in {"copy_top", "interleave", "identity"}
    events = [kind for kind, _ in losses(tmp_path / "whole.jsonl")]
    assert events.count("probe") == 3 and events.count("select") == 1 and events.count("grow") == 2
    assert events.count("step") == 13 and events[-1] == "end"
    # probe FLOPs: the two losing candidates' 2 steps each; the winner's steps are mainline steps
    assert state.probe_flops == engine.cost.step_flops(schedule.stages[2].after, 2 * 2)
    assert state.flops == state.mainline_flops + state.probe_flops


@pytest.mark.parametrize("where", ["training", "probe"])
def test_a_state_dict_taken_anywhere_resumes_to_the_same_losses(
    schedule: Schedule, corpus: Corpus, tmp_path: Path, where: str
) -> None:
    whole = make_engine(schedule, corpus, tmp_path, "whole")
    whole.initialize()
    whole.run()
    whole.metrics.close()

    taken: list[dict[str, object]] = []

    def take(engine: Engine, stage: str, step: int, loss: float) -> None:
        inside = engine.in_probe and engine.probing == "interleave"
        if engine.in_probe:  # what a progress bar shows: the candidate and the probe's length
            assert engine.probing is not None and engine.probe_steps == 2
        if not taken and (inside if where == "probe" else step == 5):
            taken.append(engine.checkpoint_state())
            raise KeyboardInterrupt  # what Ctrl-C does between steps

    first = make_engine(schedule, corpus, tmp_path, "first", on_step=take)
    first.initialize()
    with pytest.raises(KeyboardInterrupt):
        first.run()
    first.metrics.close()
    (saved,) = taken
    if where == "probe":  # the state before the probe, to probe again
        assert saved["step"] == schedule.stages[2].start_step
        assert isinstance(first.program[int(saved["pc"])], P.Probe)

    # a new process would load the checkpoint from disk: go through torch.save like it does
    path = tmp_path / "state.pt"
    torch.save(saved, path)
    loaded = torch.load(path, weights_only=True)
    (tmp_path / "second.jsonl").write_bytes((tmp_path / "first.jsonl").read_bytes())
    second = make_engine(schedule, corpus, tmp_path, "second", keep_lines=int(loaded["metrics_lines"]))
    second.load(loaded)
    assert second.run()
    second.metrics.close()

    assert losses(tmp_path / "second.jsonl") == losses(tmp_path / "whole.jsonl")
    assert second.state.winners == whole.state.winners
    assert second.state.flops == whole.state.flops
    assert_same_weights(whole.state.model, second.state.model)


def test_state_dict_round_trip_rebuilds_the_grown_shape(schedule: Schedule, corpus: Corpus, tmp_path: Path) -> None:
    engine = make_engine(schedule, corpus, tmp_path, "run")
    engine.initialize()
    engine.run(until=next(i for i, ins in enumerate(engine.program) if isinstance(ins, P.Probe)))
    state = engine.state
    assert state.model.config.depth == 2  # grown once already
    copy = TrainState.from_state_dict(engine.recipe, state.state_dict())
    assert copy.model.config == state.model.config
    assert (copy.step, copy.pc, copy.mainline_flops, copy.last_eval) == (
        state.step,
        state.pc,
        state.mainline_flops,
        state.last_eval,
    )
    assert_same_weights(state.model, copy.model)
    moments = [s["exp_avg"] for s in state.optimizer.state.values()]
    copied = [s["exp_avg"] for s in copy.optimizer.state.values()]
    assert len(moments) == len(copied) == len(list(state.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(moments, copied, strict=True))


def test_a_snapshot_does_not_change_as_training_goes_on(schedule: Schedule, corpus: Corpus, tmp_path: Path) -> None:
    engine = make_engine(schedule, corpus, tmp_path, "run")
    engine.initialize()
    state = engine.state
    train_one(engine, state, 0)
    saved = snapshot(state)
    frozen = {k: v.clone() for k, v in saved["model"].items()}
    moments = [s["exp_avg"].clone() for s in saved["optimizer"]["state"].values()]
    for step in (1, 2):
        train_one(engine, state, step)
    assert all(torch.equal(saved["model"][k], v) for k, v in frozen.items())
    assert all(torch.equal(s["exp_avg"], m) for s, m in zip(saved["optimizer"]["state"].values(), moments, strict=True))
    # and a state restored from it trains without touching it either
    restored = restore(engine.recipe, saved)
    train_one(engine, restored, 1)
    assert all(torch.equal(saved["model"][k], v) for k, v in frozen.items())


def test_a_fork_trains_like_its_original(schedule: Schedule, corpus: Corpus, tmp_path: Path) -> None:
    engine = make_engine(schedule, corpus, tmp_path, "run")
    engine.initialize()
    state = engine.state
    train_one(engine, state, 0)
    twin = fork(state)
    assert twin.model is not state.model and twin.recipe is state.recipe
    assert [train_one(engine, twin, s) for s in (1, 2)] == [train_one(engine, state, s) for s in (1, 2)]
    assert_same_weights(state.model, twin.model)


def test_the_engine_has_no_state_inside_a_probe(schedule: Schedule, corpus: Corpus, tmp_path: Path) -> None:
    """Memory: inside a probe only the snapshot, the current candidate and the best are held."""
    seen: list[tuple[bool, int]] = []

    def look(engine: Engine, stage: str, step: int, loss: float) -> None:
        if engine.in_probe:
            with pytest.raises(RuntimeError, match="inside a probe"):
                _ = engine.state
            seen.append((engine.in_probe, engine.step))

    engine = make_engine(schedule, corpus, tmp_path, "run", on_step=look)
    engine.initialize()
    engine.run()
    probe_start = schedule.stages[2].start_step
    assert seen == [(True, probe_start)] * 6  # 3 candidates x 2 steps, the mainline step held still


def test_recipe_builds_the_schedules_first_shape(schedule: Schedule) -> None:
    state = Recipe(schedule, CPU).initial()
    config = state.model.config
    assert (config.depth, config.width, config.heads, config.context) == (1, 8, 2, 8)
    assert state.scaler is None and (state.step, state.pc, state.flops) == (0, 0, 0)
    assert isinstance(state.optimizer, torch.optim.AdamW)
    fp16 = Recipe(schedule, Device(torch.device("cpu"), torch.float16)).initial()
    assert isinstance(fp16.scaler, torch.amp.GradScaler)
