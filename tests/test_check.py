"""The checker's output: a fully resolved `Schedule` with shapes, steps and rules filled in."""

from __future__ import annotations

import pytest

import lagdsl
from lagdsl.lang.schedule import AdamW, Schedule, SelectRule, Shape, StdlibData
from tests.conftest import ROOT, SCHEDULES

HEADER = """
model gpt(context=64, width=64, heads=4, depth=2)
batch 8 accumulate 2
optimizer adamw(lr=1e-3)
"""


def valid(text: str) -> Schedule:
    result = lagdsl.check_text(HEADER + text, "t.grow")
    assert result.errors == [], result.errors
    assert result.schedule is not None
    return result.schedule


def codes(text: str) -> list[str]:
    return [d.code for d in lagdsl.check_text(HEADER + text, "t.grow").diagnostics]


#: what a new user meets first: the shipped schedules and `lagdsl init`'s templates
SHIPPED = [*SCHEDULES, *sorted((ROOT / "lagdsl" / "templates").glob("*.grow"))]


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_shipped_examples_are_valid_without_a_warning(path) -> None:
    """`stack_lag.grow` once probed three candidates that build the same model at 2 -> 4 (W0202)."""
    result = lagdsl.load(path)
    assert [d.code for d in result.diagnostics] == []
    assert result.schedule is not None


def _probe(candidates: str, growth: str = "by 2") -> str:
    grow = f"grow depth {growth} {{ candidates [{candidates}] probe 5 steps }}"
    return f"stage a {{ train 10 steps }}\nstage b {{ {grow} train 10 steps }}"


@pytest.mark.parametrize(
    ("candidates", "growth", "warned"),
    [
        ("copy_top, stack", "by 2", ["stack"]),  # 2 -> 4: both copy layers 0, 1 on top
        ("copy_top, copy_bottom, midas", "by 2", ["copy_bottom", "midas"]),
        ("copy_top, copy_bottom", "by 1", []),  # 2 -> 3: layer 1 against layer 0
        ("copy_top, interleave", "by 2", []),  # 0, 1, c0, c1 against 0, c0, 1, c1
        ("copy_top(noise=0.01), stack", "by 2", []),  # noise is drawn per candidate
        ("random, identity", "by 2", []),  # fresh layers are drawn per candidate
    ],
)
def test_candidates_that_build_the_same_model_are_named(candidates: str, growth: str, warned: list[str]) -> None:
    result = lagdsl.check_text(HEADER + _probe(candidates, growth), "t.grow")
    same = [d for d in result.diagnostics if d.code == "W0202"]
    assert [d.message.split("`")[3] for d in same] == warned
    for d in same:
        assert d.message.startswith("candidates `copy_top` and ") and d.span.line == 6
        assert "growing depth 2 -> 4, both build layers 0-1, copies of 0-1;" in (d.help or "")


def test_stack_lag_resolves_as_the_language_says() -> None:
    schedule = lagdsl.load(ROOT / "schedules" / "stack_lag.grow").schedule
    assert schedule.name == "stack_lag" and schedule.seed == 1337
    assert [s.name for s in schedule.stages] == ["base", "grow_1", "grow_2", "grow_3"]
    assert [s.start_step for s in schedule.stages] == [0, 600, 1200, 1800]
    assert schedule.total_steps == 2400
    assert [(s.before.depth, s.after.depth) for s in schedule.stages] == [(2, 2), (2, 4), (4, 6), (6, 8)]
    probe = schedule.stages[1].growths[0].probe
    assert [c.label for c in probe.candidates] == ["top", "interleave", "midas", "random", "identity"]
    assert [c.name for c in probe.candidates] == ["copy_top", "interleave", "midas", "random", "identity"]
    assert probe.candidates[0].args == {"noise": 0.01}
    assert [c.preserves for c in probe.candidates] == ["no", "no", "no", "no", "yes"]
    assert (probe.steps, probe.select, probe.keep) == (25, SelectRule(metric="loss", window=5), "winner")
    assert schedule.lr.kind == "cosine" and schedule.lr.warmup == 100 and schedule.lr.min == 2e-4
    assert schedule.optimizer == AdamW(lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    assert schedule.data == StdlibData(val=0.05)
    assert schedule.model.vocab == 256
    assert (schedule.eval.every, schedule.eval.batches) == (200, 20)
    assert (schedule.checkpoint.every, schedule.checkpoint.keep) == (500, 2)
    assert schedule.tokens_per_step == 32 * 128


def test_defaults_are_filled_in() -> None:
    schedule = valid("stage a { train 10 steps }")
    assert schedule.name == "t"  # the file's stem
    assert (schedule.seed, schedule.device, schedule.precision, schedule.compile) == (0, "auto", "auto", False)
    assert schedule.data == StdlibData()
    assert schedule.lr.kind == "constant" and schedule.lr.warmup == 0
    assert schedule.eval is None
    assert schedule.checkpoint.every is None
    assert schedule.log_every == 1
    assert schedule.model.vocab == 256 and schedule.model.mlp == "swiglu"


def test_default_select_window_is_a_fifth_of_the_probe() -> None:
    def rule(k: int) -> SelectRule:
        text = (
            "stage a { train 10 steps }\n"
            f"stage b {{ grow depth by 1 {{ candidates [copy_top, midas] probe {k} steps }} train 100 steps }}"
        )
        return valid(text).stages[1].growths[0].probe.select

    assert rule(25) == SelectRule(metric="loss", window=5)
    assert rule(7) == SelectRule(metric="loss", window=1)
    assert rule(0) == SelectRule(metric="loss", window=None)


def test_lowest_loss_is_the_last_probe_step() -> None:
    def rule(select: str) -> SelectRule:
        text = (
            "stage a { train 10 steps }\n"
            f"stage b {{ grow depth by 1 {{ candidates [copy_top, midas] probe 25 steps {select} }} train 100 steps }}"
        )
        return valid(text).stages[1].growths[0].probe.select

    assert rule("select lowest loss") == SelectRule(metric="loss", window=1)
    assert rule("select lowest loss over last 3 steps") == SelectRule(metric="loss", window=3)
    assert rule("select lowest val_loss") == SelectRule(metric="val_loss", window=None)
    assert rule("") == SelectRule(metric="loss", window=5)


def test_width_growth_keeps_the_head_size() -> None:
    schedule = lagdsl.load(ROOT / "schedules" / "width_lag.grow").schedule
    shapes = [s.after.model_copy(update={"positions": None}) for s in schedule.stages]  # (the context stays)
    assert shapes == [
        Shape(depth=4, width=64, heads=2),
        Shape(depth=4, width=128, heads=4),
        Shape(depth=4, width=256, heads=8),
    ]
    assert {s.head_size for s in shapes} == {32}


def test_percent_stages_sum_to_total_exactly() -> None:
    schedule = valid("total 1000 steps\nstage a { train 33.3% } stage b { train 33.3% } stage c { train 33.4% }")
    assert [s.train_steps for s in schedule.stages] == [333, 333, 334]
    schedule = lagdsl.load(ROOT / "schedules" / "width_lag.grow").schedule
    assert [s.train_steps for s in schedule.stages] == [600, 840, 960]
    assert schedule.lr.warmup == 120  # 5% of 2400
    assert sum(s.train_steps for s in schedule.stages) == schedule.total_steps == 2400


def test_tokens_convert_to_steps_rounding_up() -> None:
    # tokens per step = batch 8 x accumulate 2 x context 64 = 1024
    schedule = valid("total 2048 tokens\nstage a { train 2048 tokens }")
    assert schedule.total_steps == 2 and schedule.stages[0].train_steps == 2
    assert codes("stage a { train 2049 tokens }") == ["W0501"]
    assert valid("stage a { train 2049 tokens }").stages[0].train_steps == 3


def test_repeat_expands_in_order() -> None:
    schedule = valid(
        "stage base { train 10 steps }\n"
        "repeat 2 { stage a { grow depth by 1 with copy_top  train 10 steps } stage b { train 5 steps } }"
    )
    assert [s.name for s in schedule.stages] == ["base", "a_1", "b_1", "a_2", "b_2"]
    assert [s.after.depth for s in schedule.stages] == [2, 3, 3, 4, 4]


def test_stage_options() -> None:
    schedule = valid(
        "stage a { train 10 steps }\n"
        "stage b { grow depth by 2 with midas rewarm 5 steps reset optimizer train 10 steps }"
    )
    stage = schedule.stages[1]
    assert (stage.rewarm, stage.reset_optimizer) == (5, True)
    assert stage.growths[0].op.name == "midas" and stage.growths[0].probe is None


def test_keep_rewind_allows_a_probe_longer_than_train() -> None:
    text = (
        "stage a {{ train 10 steps }}\n"
        "stage b {{ grow depth by 1 {{ candidates [copy_top, midas] probe 50 steps {keep} }} train 20 steps }}"
    )
    assert valid(text.format(keep="keep rewind")).stages[1].growths[0].probe.keep == "rewind"
    assert "E0304" in codes(text.format(keep=""))


def test_errors_are_all_reported_and_sorted() -> None:
    result = lagdsl.check_text(
        "batch 0\nmodel gpt(context=8, width=10, heads=3, depth=1)\noptimizer sgd(lr=0)\nstage s { train 0 steps }", "t"
    )
    assert [(d.code, d.span.line) for d in result.diagnostics] == [
        ("E0302", 1),
        ("E0303", 2),
        ("E0302", 3),
        ("E0302", 4),
    ]
    assert result.schedule is None


def test_an_integer_bound_is_checked_and_shown_exactly() -> None:
    """`seed 2**63` once passed the checker (its bound was compared as a float, 2**63 - 1 rounding
    up to 2**63) and failed in the schedule's model: an internal error."""
    body = "\nmodel gpt(context=8, width=16, heads=2, depth=1)\nbatch 2\noptimizer adamw(lr=1e-3)\n"
    body += "stage s { train 1 steps }"
    assert lagdsl.check_text(f"seed {2**63 - 1}{body}", "t").schedule is not None
    result = lagdsl.check_text(f"seed {2**63}{body}", "t")
    assert [(d.code, d.message) for d in result.diagnostics] == [
        ("E0302", f"`seed` must be at least 0 and at most 9,223,372,036,854,775,807, found `{2**63}`")
    ]


def test_inline_candidate_labels_are_their_source_text() -> None:
    schedule = valid(
        "stage a { train 10 steps }\n"
        "stage b { grow depth by 1 { candidates [copy_top(noise=0.01), copy_top] probe 5 steps } train 10 steps }"
    )
    labels = [c.label for c in schedule.stages[1].growths[0].probe.candidates]
    assert labels == ["copy_top(noise=0.01)", "copy_top"]


def test_schedule_round_trips_through_json() -> None:
    schedule = lagdsl.load(ROOT / "schedules" / "width_lag.grow").schedule
    assert Schedule.model_validate_json(schedule.model_dump_json()) == schedule


def test_data_that_is_not_there_is_a_warning_naming_the_folder(tmp_path) -> None:
    """A glob that matches nothing once passed `validate` and failed only at `run`."""
    (tmp_path / "corpus" / "deep").mkdir(parents=True)
    (tmp_path / "corpus" / "deep" / "a.txt").write_text("text")
    (tmp_path / "t.bin").write_bytes(b"\0\0")

    def warned(data: str) -> list[str]:
        text = f"model gpt(context=16, width=16, heads=2, depth=1, vocab=256)\ndata {data}\nbatch 4\n"
        text += "optimizer adamw(lr=1e-3)\nstage a { train 2 steps }\n"
        found = lagdsl.check_text(text, str(tmp_path / "s.grow")).diagnostics
        return [d.message for d in found if d.code == "W0601"]

    assert warned('text("corpus/**/*.txt")') == []
    assert warned('tokens("t.bin")') == [] and warned('tokens(["t.bin", "t.bin"])') == []
    assert warned('jsonl("corpus/*.jsonl")') == [f"`corpus/*.jsonl` matches no file (looked in `{tmp_path}`)"]
    assert warned('tokens("t.bin", val="v.bin")') == [f"`v.bin` does not exist (looked in `{tmp_path}`)"]
    assert warned('tokens(["t.bin", "shards/*.bin"])') == [f"`shards/*.bin` matches no file (looked in `{tmp_path}`)"]
    assert warned('parquet("corpus")') == [f"`corpus` is not a file (looked in `{tmp_path}`)"]
