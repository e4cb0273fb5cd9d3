"""`lagdsl study`: candidates from one snapshot on the same batches, the lag statistics, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lagdsl.analysis.stats import argmin, kendall, spearman
from lagdsl.analysis.study import probe_score, recompute
from lagdsl.artifacts import Study, dump_json, read_json
from lagdsl.cli import main
from tests.conftest import assert_png

TINY = """
schedule tiny
seed 3
model gpt(context=16, width=16, heads=2, depth=1)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3)
lr cosine(warmup=4 steps, min=3e-4)
eval every 10 steps (batches=2)
stage base { train 10 steps }
stage two {
  grow depth to 2 { candidates [copy_top, identity, random] probe 5 steps }
  train 10 steps
}
stage fixed { grow depth to 4 with copy_top  train 4 steps }
stage eight {
  grow depth to 8 { candidates [copy_top, interleave, identity] probe 5 steps }
  train 10 steps
}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    (root / "corpus").mkdir()
    (root / "corpus" / "a.txt").write_text(Path(json.__file__).read_text() * 3)
    (root / "tiny.grow").write_text(TINY)
    return root


@pytest.fixture(scope="module")
def run_dir(project: Path) -> Path:
    out = project / "run"
    result = CliRunner().invoke(main, ["run", "--quiet", str(project / "tiny.grow"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def study(project: Path, *args: str):
    return CliRunner().invoke(main, ["study", str(project / "tiny.grow"), "--quiet", *args])


def events(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if r["event"] == kind]


@pytest.mark.slow
def test_candidates_train_as_the_probe_did_and_the_statistics_follow(project: Path, run_dir: Path) -> None:
    out = project / "st"
    result = study(project, "--stage", "eight", "--lags", "0,2,10", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert_png(out / "study_statistics.png", min_width=800)  # two panels side by side
    assert_png(out / "study_curves.png")
    data = json.loads((out / "study.json").read_text())
    assert data["lags"] == [0, 2, 5, 10]  # the schedule's own lag (5) is added
    assert data["chosen_lag"] == 5 and data["horizon_steps"] == 10 and data["start_step"] == 24
    (seed,) = data["runs"]
    candidates = {c["label"]: c for c in seed["candidates"]}
    assert list(candidates) == ["copy_top", "interleave", "identity"]

    # the same snapshot, batches and LRs as the run's own probe: its losses, bit for bit
    probes = {p["candidate"]: p["losses"] for p in events(run_dir, "probe") if p["stage"] == "eight"}
    for label, losses in probes.items():
        assert candidates[label]["curve"][:5] == losses
        assert candidates[label]["train"][:2] == [losses[0], losses[2]]  # lags 0 and 2
    # the run's winner went on to the end of the schedule exactly as the study trained it
    winner = events(run_dir, "select")[-1]["winner"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert candidates[winner]["final_val"] == summary["final_val_loss"]
    assert seed["rule"]["pick"] == winner

    # the probe score at the schedule's lag is what the run's select scored, candidate by candidate
    scores = events(run_dir, "select")[-1]["scores"]
    assert {label: probe_score(c["curve"], 5) for label, c in candidates.items()} == scores

    # statistics recomputed from the stored losses
    final = [c["final_val"] for c in seed["candidates"]]
    for metric in ("val", "score", "train"):
        for i, row in enumerate(seed["stats"][metric]):
            if metric == "score":
                at = [probe_score(c["curve"], data["lags"][i]) for c in seed["candidates"]]
            else:
                at = [c[metric][i] for c in seed["candidates"]]
            if None in at:
                assert row["spearman"] is None
                continue
            assert row["spearman"] == pytest.approx(spearman(at, final), nan_ok=True)
            assert row["kendall"] == pytest.approx(kendall(at, final), nan_ok=True)
            assert row["regret"] == final[argmin(at)] - min(final) >= 0
    # at the horizon the val loss is the final loss: a perfect predictor, no regret
    last = seed["stats"]["val"][-1]
    assert last["lag"] == 10 and last["regret"] == 0 and last["spearman"] == pytest.approx(1.0)
    assert seed["stats"]["train"][-1]["spearman"] is None  # no training step at the horizon itself
    assert "lag" in result.stderr and "rho (val)" in result.stderr and "rho (score)" in result.stderr
    # the stored statistics are what the stored losses give (a study can be analysed again)
    assert json.loads(dump_json(recompute(read_json(out / "study.json", Study)))) == data


@pytest.mark.slow
def test_horizon_end_applies_the_rest_of_the_schedule_and_seeds_repeat(project: Path) -> None:
    out = project / "end"
    result = study(project, "--stage", "two", "--lags", "0,1", "--horizon", "end", "--seeds", "2", "-o", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "study.json").read_text())
    assert data["seeds"] == [3, 4] and len(data["runs"]) == 2
    assert data["horizon_steps"] == 34 - 10
    for seed in data["runs"]:
        for c in seed["candidates"]:
            # every mainline step to the end, the later probe's winner steps included, the others not
            assert len(c["curve"]) == 24
        # each candidate's continuation runs the later probe as the schedule says
        log = (out / f"seed-{seed['seed']}" / f"{seed['candidates'][0]['label']}.jsonl").read_text()
        assert '"event":"select"' in log and '"stage":"eight"' in log
    row = data["summary"]["val"][0]
    assert row["lag"] == 0 and row["spearman"]["n"] <= 2 and row["picks_within_1pct"].endswith("/2")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stage", "nope"], "no stage `nope` (stages with a probe block: two, eight)"),
        (["--stage", "fixed"], "tiny.grow:15: stage `fixed` grows with a fixed operator"),
        (["--stage", "base"], "stage `base` does not grow"),
        (["--stage", "eight", "--lags", "0,50"], "lag 50 is beyond the horizon: stage `eight` trains 10 steps"),
        (["--stage", "eight", "--lags", "a,b"], "give whole numbers of steps"),
        (["--stage", "eight", "--lags", "-1"], "give one or more lags >= 0"),
    ],
)
def test_bad_requests_are_one_clear_line(project: Path, args: list[str], message: str) -> None:
    result = study(project, *args, "-o", str(project / "bad"))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_diverging_run_or_missing_data_is_one_line(project: Path) -> None:
    diverging = project / "nan.grow"
    diverging.write_text(TINY.replace("adamw(lr=3e-3)", "sgd(lr=1e30, momentum=0.9)"))
    result = CliRunner().invoke(
        main, ["study", str(diverging), "--quiet", "--stage", "eight", "--lags", "0,1", "-o", str(project / "n")]
    )
    assert result.exit_code == 1, result.output
    assert "the loss became" in result.stderr and "before the growth under study" in result.stderr
    assert result.stderr.count("\n") == 1

    missing = project / "missing.grow"
    missing.write_text(TINY.replace('text("corpus/*.txt", val=0.1)', 'text("nothing/*.txt")'))
    result = CliRunner().invoke(
        main, ["study", str(missing), "--quiet", "--stage", "eight", "--lags", "0,1", "-o", str(project / "m")]
    )
    assert result.exit_code == 2, result.output
    assert 'data: no files match `text("nothing/*.txt")`' in result.stderr


@pytest.mark.slow
def test_a_study_stopped_midway_keeps_the_seeds_it_finished(project: Path) -> None:
    from lagdsl.analysis.study import StudyOptions, run_study
    from lagdsl.lang import load

    saved: list[Study] = []

    def say(message: str) -> None:
        if message.startswith("seed 4:"):
            raise KeyboardInterrupt  # Ctrl-C as the second seed starts

    options = StudyOptions(stage="eight", lags=(0, 2), seeds=2)
    with pytest.raises(KeyboardInterrupt):
        run_study(load(project / "tiny.grow").schedule, options, project / "stopped", say, saved.append)
    (partial,) = saved
    assert partial.complete is False and partial.seeds == [3] and partial.seeds_asked == [3, 4]
    assert partial.summary.val[0].spearman.n <= 1

    result = CliRunner().invoke(main, ["study", str(project / "tiny.grow"), "--quiet", "--stage", "eight",
                                       "--lags", "0", "-o", str(project / "whole")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((project / "whole" / "study.json").read_text())["complete"] is True


@pytest.mark.slow
def test_ctrl_c_in_lagdsl_study_keeps_the_finished_seeds_and_says_so(project: Path, monkeypatch) -> None:
    from lagdsl.analysis import study as study_module

    real = study_module.run_study

    def stopped_at_seed_4(schedule, options, out, say, save):
        def say_then_stop(message: str) -> None:
            if message.startswith("seed 4:"):
                raise KeyboardInterrupt
            say(message)

        return real(schedule, options, out, say_then_stop, save)

    monkeypatch.setattr(study_module, "run_study", stopped_at_seed_4)
    out = project / "ctrl-c"
    args = ["study", str(project / "tiny.grow"), "--quiet", "--stage", "eight", "--lags", "0"]
    result = CliRunner().invoke(main, [*args, "--seeds", "3", "-o", str(out)])
    assert result.exit_code == 130, result.output
    assert "interrupted: study.json and the pictures hold seeds 3 (complete: false)" in result.stderr
    assert "--seed 4 --seeds 2" in result.stderr
    data = json.loads((out / "study.json").read_text())
    assert data["complete"] is False and data["seeds"] == [3]
    assert_png(out / "study_statistics.png", min_width=800)  # two panels side by side
    assert_png(out / "study_curves.png")
    # stopped before any seed finished: nothing to keep, and it says so
    monkeypatch.setattr(study_module, "run_study", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    result = CliRunner().invoke(main, [*args, "-o", str(project / "nothing")])
    assert result.exit_code == 130 and "nothing written" in result.stderr
    assert not (project / "nothing" / "study.json").exists()


def test_probe_score_is_what_the_default_rule_scores() -> None:
    curve = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.0, -1.0, -2.0, -3.0]
    assert probe_score(curve, 0) == 5.0  # right after growth
    assert probe_score(curve, 4) == 2.0  # window max(1, 4 // 5) = 1: the last probe step's loss
    assert probe_score(curve, 10) == (-1.0 + -2.0) / 2  # window 2
    assert probe_score(curve, 12) is None and probe_score([], 0) is None
