"""Freezing and LR scales through training, probes, growth, checkpoints and resume (in-process,
a tiny model): what a user heals with LLaMA Pro's recipe relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lagdsl.lang import check_text
from lagdsl.lang.arch import param_count
from lagdsl.lang.schedule import Schedule
from lagdsl.plan.cost import CostModel
from lagdsl.runtime.data.corpus import Corpus
from lagdsl.runtime.training import program as P
from lagdsl.runtime.training.engine import Engine
from tests.test_state import assert_same_weights, losses, make_engine

HEAL = """
schedule heal
seed 2
model gpt(context=8, width=8, heads=2, depth=2)
batch 2
optimizer adamw(lr=1e-2, weight_decay=0.1)
stage base { train 3 steps }
stage expand {
  grow depth to 4 {
    candidates [llama_pro, copy_top]
    probe 2 steps
  }
  lr_scale new=0.5
  train 5 steps { freeze [old, embed] }
}
stage all { train 3 steps }
"""


def checked(text: str) -> Schedule:
    result = check_text(text, "heal.grow")
    assert result.schedule is not None, result.diagnostics
    return result.schedule


def stage_start(engine: Engine, name: str) -> int:
    return next(pc for pc, ins in enumerate(engine.program) if isinstance(ins, P.StageStart) and ins.name == name)


def test_frozen_parameters_stay_bitwise_and_have_no_optimizer_state(corpus: Corpus, tmp_path: Path) -> None:
    schedule = checked(HEAL)
    engine = make_engine(schedule, corpus, tmp_path, "run")
    engine.initialize()
    engine.run(until=stage_start(engine, "expand"))
    before = {n: p.detach().clone() for n, p in engine.state.model.named_parameters()}
    engine.run(until=stage_start(engine, "all"))
    state = engine.state
    named = dict(state.model.named_parameters())
    # the old blocks (wherever the winner put them), the final norm and the embedding
    assert len(state.frozen) == len(before)
    for name in state.frozen:
        assert any(torch.equal(named[name], old) for old in before.values()), name
        assert not named[name].requires_grad and named[name] not in state.optimizer.state
    new = [n for n in named if n not in state.frozen]
    assert new and all(n.startswith("blocks.") for n in new)
    trained = [n for n in new if not any(torch.equal(named[n], old) for old in before.values())]
    assert trained  # the new blocks learned
    scaled = [g for g in state.optimizer.param_groups if g.get("lr_scale") == 0.5]
    assert {id(p) for g in scaled for p in g["params"]} == {id(named[n]) for n in new}
    assert all(g["lr"] == pytest.approx(0.5 * engine.lr(schedule.stages[1], 7)) for g in scaled)
    frozen_blocks = [n for n in state.frozen if n.startswith("blocks.")]
    # the FLOP count drops the frozen blocks' weight gradients
    assert engine.step_flops(state, schedule.stages[1].after, 1) < engine.cost.step_flops(schedule.stages[1].after, 1)
    assert frozen_blocks

    engine.run()  # the next stage freezes nothing: everything trains again
    named = dict(engine.state.model.named_parameters())
    assert not engine.state.frozen and all(p.requires_grad for p in named.values())
    assert not any(torch.equal(named["embed.weight"], old) for old in before.values())
    events = [r for kind, r in losses(tmp_path / "run.jsonl") if kind == "parts"]
    assert [(e["stage"], e["freeze"]) for e in events] == [("expand", ["old", "embed"]), ("all", [])]


def test_a_run_stopped_while_frozen_resumes_to_the_same_weights(corpus: Corpus, tmp_path: Path) -> None:
    schedule = checked(HEAL)
    whole = make_engine(schedule, corpus, tmp_path, "whole")
    whole.initialize()
    whole.run()
    whole.metrics.close()

    taken: list[dict[str, object]] = []

    def take(engine: Engine, stage: str, step: int, loss: float) -> None:
        if not taken and step == 6 and not engine.in_probe:
            taken.append(engine.checkpoint_state())
            raise KeyboardInterrupt

    first = make_engine(schedule, corpus, tmp_path, "first", on_step=take)
    first.initialize()
    with pytest.raises(KeyboardInterrupt):
        first.run()
    first.metrics.close()
    path = tmp_path / "state.pt"
    torch.save(taken[0], path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["frozen"] and loaded["scales"]
    (tmp_path / "second.jsonl").write_bytes((tmp_path / "first.jsonl").read_bytes())
    second = make_engine(schedule, corpus, tmp_path, "second", keep_lines=int(loaded["metrics_lines"]))
    second.load(loaded)
    assert second.state.frozen == frozenset(loaded["frozen"])
    assert second.run()
    second.metrics.close()
    assert losses(tmp_path / "second.jsonl") == losses(tmp_path / "whole.jsonl")
    assert_same_weights(whole.state.model, second.state.model)


def test_a_zero_lr_scale_holds_a_part_that_keeps_its_optimizer_state(corpus: Corpus, tmp_path: Path) -> None:
    text = HEAL.replace("lr_scale new=0.5", "lr_scale old=0")
    text = text.replace("train 5 steps { freeze [old, embed] }", "train 5 steps")
    schedule = checked(text)
    engine = make_engine(schedule, corpus, tmp_path, "run")
    engine.initialize()
    engine.run(until=stage_start(engine, "expand"))
    embedding = engine.state.model.embed.weight.detach().clone()
    engine.run(until=stage_start(engine, "all"))
    model, optimizer = engine.state.model, engine.state.optimizer
    assert torch.equal(model.embed.weight, embedding)  # lr 0: no step, no decay
    assert model.embed.weight in optimizer.state and not engine.state.frozen


def test_the_plan_counts_what_freezing_saves_and_the_report_shows_what_was_frozen_when(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lagdsl.cli import main
    from lagdsl.plan import build_plan

    frozen, whole = checked(HEAL), checked(HEAL.replace("train 5 steps { freeze [old, embed] }", "train 5 steps"))
    flops = [build_plan(s).totals.mainline_flops for s in (frozen, whole)]
    # the 2 old blocks of 4 skip their weight gradients for the 5 steps: 2 of 6 FLOPs per parameter
    blocks = CostModel(frozen).frozen_params(frozen.stages[1])
    assert blocks == 2 * param_count(vocab=256, width=8, depth=1, mlp="swiglu").per_block
    assert flops[1] - flops[0] == 5 * frozen.tokens_per_step * 2 * blocks

    path = tmp_path / "heal.grow"
    path.write_text(HEAL)
    runner = CliRunner()
    assert runner.invoke(main, ["run", "--quiet", str(path), "--out", str(tmp_path / "run")]).exit_code == 0
    result = runner.invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    section = page[page.index("<h2>Freezing</h2>") :]
    assert "<td>expand</td><td>3</td><td>old, embed</td>" in section and "new=0.5" in section
    assert "<td>all</td><td>8</td><td>nothing</td>" in section


def test_the_checker_names_every_part_it_cannot_use() -> None:
    text = HEAL.replace("lr_scale new=0.5", "lr_scale nw=2 old=-1").replace(
        "freeze [old, embed]", "freeze [olde, layers(3, 9), layers(1)]"
    )
    found = [(d.code, d.message, d.help) for d in check_text(text, "heal.grow").diagnostics if d.code[0] == "E"]
    assert ("E0104", "unknown part of the model `nw`", "did you mean `new`?") in found
    assert ("E0104", "unknown part of the model `olde`", "did you mean `old`?") in found
    assert ("E0302", "`lr_scale old=-1` is negative") in [f[:2] for f in found]
    assert ("E0302", "`layers(3, 9)` is not a range of the stage's layers") in [f[:2] for f in found]
    assert ("E0301", "expected `layers(a, b)` with two whole numbers, found `layers(1)`") in [f[:2] for f in found]
    assert len(found) == 5


def test_a_growing_stage_logs_its_parts_once_they_apply(tmp_path: Path) -> None:
    """A stage that grows freezes its parts after the growth; when the stage before had frozen
    something, its start once logged the stage's `freeze` list with 0 parameters frozen ("0 of 255 k"
    in the report) before the growth's event gave the true count. One event now, after the growth,
    and a growing stage that freezes nothing says so once it has unfrozen the one before's."""
    import json

    from click.testing import CliRunner

    from lagdsl.cli import main

    path = tmp_path / "s.grow"
    path.write_text(
        "model gpt(context=16, width=16, heads=2, depth=2)\nbatch 4\noptimizer adamw(lr=1e-3)\n"
        "stage base { train 4 steps }\n"
        "stage heal { grow depth to 4 { candidates [llama_pro, copy_top] probe 2 steps }\n"
        "  train 4 steps { freeze [old] } }\n"
        "stage fixed { grow depth to 6 with copy_top  train 4 steps { freeze [old] } }\n"
        "stage free { grow depth to 8 with copy_top  train 2 steps }\n"
    )
    result = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [(e["stage"], e["freeze"], e["frozen_params"] > 0) for e in events if e["event"] == "parts"]
    assert logged == [("heal", ["old"], True), ("fixed", ["old"], True), ("free", [], False)]
    for e in (e for e in events if e["event"] == "parts"):  # each after its stage's growth (or probe's choice)
        grown = next(g for g in events if g["event"] in ("grow", "select") and g["stage"] == e["stage"])
        assert events.index(e) > events.index(grown)
