"""What a GPU needs from the engine, checked on a CPU: no read of the loss per step (each read
makes the host wait for the device), a non-finite loss still named at its step, and the old model
freed after a growth."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from lagdsl.lang import check_text
from lagdsl.lang.schedule import Schedule
from lagdsl.runtime.data.corpus import Corpus
from lagdsl.runtime.training import program as P
from lagdsl.runtime.training.losses import NonFiniteLoss
from tests.test_state import make_engine

SCHEDULE = """
schedule reads
seed 1
model gpt(context=8, width=8, heads=2, depth=1)
batch 2
optimizer adamw(lr=1e-2)
log every {every} steps
stage base {{ train 30 steps }}
stage two {{ grow depth to 2 with copy_top  grow width to 12 with net2net  train 10 steps }}
"""


def schedule(every: int, replace: tuple[str, str] = ("", "")) -> Schedule:
    checked = check_text(SCHEDULE.format(every=every).replace(*replace), "reads.grow")
    assert checked.schedule is not None, checked.diagnostics
    return checked.schedule


@contextmanager
def counted_reads() -> Iterator[list[str]]:
    """Every tensor read to a Python value (`item`, `tolist`, `float`, `bool`) that lagdsl's own code
    makes: on a GPU each one waits for the device."""
    reads: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__float__", "__bool__")}

    def counting(name: str):  # type: ignore[no-untyped-def]
        original = originals[name]

        def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("lagdsl."):
                reads.append(f"{caller}.{name}")
            return original(self, *args, **kwargs)

        return read

    try:
        for name in originals:
            setattr(torch.Tensor, name, counting(name))
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def train_reads(every: int, corpus: Corpus, tmp_path: Path) -> tuple[list[str], list[dict]]:
    engine = make_engine(schedule(every), corpus, tmp_path, f"every{every}")
    engine.initialize()
    with counted_reads() as reads:
        engine.train(0, 0, 30)  # the first stage's 30 steps
    engine.metrics.close()
    from lagdsl.runtime.records.metrics import read

    return reads, read(tmp_path / f"every{every}.jsonl")


def test_the_loss_is_read_at_log_steps_not_every_step(corpus: Corpus, tmp_path: Path) -> None:
    reads, events = train_reads(10, corpus, tmp_path)
    assert [e["step"] for e in events if e["event"] == "step"] == [0, 10, 20]
    assert len(reads) <= 4, reads  # one read per log step (and one at the end of the stretch)
    every_step, _ = train_reads(1, corpus, tmp_path)
    assert len(every_step) >= 30  # the same code reads every step when every step is logged


def test_the_logged_losses_do_not_depend_on_when_they_are_read(corpus: Corpus, tmp_path: Path) -> None:
    _, sparse = train_reads(10, corpus, tmp_path)
    _, dense = train_reads(1, corpus, tmp_path)
    by_step = {e["step"]: e["loss"] for e in dense if e["event"] == "step"}
    assert all(e["loss"] == by_step[e["step"]] for e in sparse if e["event"] == "step")


def test_a_non_finite_loss_between_log_steps_is_named_at_its_step(corpus: Corpus, tmp_path: Path) -> None:
    engine = make_engine(schedule(10), corpus, tmp_path, "nan")
    engine.initialize()
    original = engine.train_step

    def poisoned(state, stage, step, team=None):  # type: ignore[no-untyped-def]
        loss, lr = original(state, stage, step, team)
        return (loss * float("nan") if step == 13 else loss), lr

    engine.train_step = poisoned  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLoss) as raised:
        engine.train(0, 0, 30)
    assert raised.value.step == 13 and raised.value.stage == "base"
    assert engine.state.last_loss is not None  # the steps before it were read and logged


def test_the_old_model_is_freed_after_a_growth(corpus: Corpus, tmp_path: Path) -> None:
    engine = make_engine(schedule(10), corpus, tmp_path, "free")
    engine.initialize()
    grow_pc = next(i for i, ins in enumerate(engine.program) if isinstance(ins, P.Grow))
    engine.run(until=grow_pc)  # trained the first stage: its model was wrapped for training
    old = weakref.ref(engine.state.model)
    old_params = [weakref.ref(p) for p in engine.state.model.parameters()]
    engine.run(until=grow_pc + 2)  # both growths
    gc.collect()
    assert old() is None, gc.get_referrers(old())
    kept = {id(p) for p in engine.state.model.parameters()}  # depth growth moves the old blocks over
    assert all(p() is None or id(p()) in kept for p in old_params)
    engine.metrics.close()
