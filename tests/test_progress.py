"""Progress lines: probes are never silent, the rate counts every step trained, and the time left
counts the probes' steps to come at the measured time of a step."""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

import lagdsl
from lagdsl.runtime.run import progress as progress_module
from lagdsl.runtime.run.progress import Progress

SCHEDULE = """
model gpt(context=16, width=16, heads=2, depth=1)
batch 4
optimizer adamw(lr=1e-3)
stage base { train 40 steps }
stage grow {
  grow depth to 2 { candidates [copy_top, identity, random] probe 8 steps }
  train 40 steps
}
"""


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every step takes a second
        return self.now


def test_a_probe_prints_its_candidates_and_the_eta_counts_the_probes_to_come(monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = lagdsl.check_text(SCHEDULE, "t.grow").schedule
    assert schedule is not None
    monkeypatch.setattr(progress_module.time, "perf_counter", Clock())
    out = io.StringIO()
    bar = Progress(schedule.total_steps, stream=out, schedule=schedule)
    engine = SimpleNamespace(step=0, probing=None, probe_steps=0, schedule=schedule)
    loss = torch.tensor(2.0)
    for step in range(40):
        engine.step = step
        bar(engine, "base", step, loss)  # type: ignore[arg-type]
    engine.step = 40
    for label in ("copy_top", "identity", "random"):
        engine.probing, engine.probe_steps = label, 8
        for step in range(40, 48):
            bar(engine, "grow", step, loss)  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    probing = [line for line in lines if "probing" in line]
    assert {line.split("probing ")[1].split(" ")[0] for line in probing} == {"copy_top", "identity", "random"}
    assert all(len([line for line in probing if label in line]) >= 3 for label in ("copy_top", "identity", "random"))
    # before the probe: 40 mainline steps and the 2 x 8 probe steps that do not continue, a second each
    before = next(line for line in lines if line.startswith("step 36/80"))
    assert before.endswith("eta 1m00s")  # 44 + 16 steps
    # at the last candidate's first step: the stage's 40 (the winner's 8 among them, as many as its 7 left)
    last = next(line for line in lines if "probing random (1/8)" in line)
    assert last.endswith("eta 0m40s"), last
    assert "0.1k tok/s" in probing[-1]  # 64 tokens a step, a step a second, the probes' steps counted
