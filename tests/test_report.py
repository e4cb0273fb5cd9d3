"""`lagdsl report`: one self-contained page for a run, finished or not, and run comparisons."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lagdsl.analysis.report import reach_table
from lagdsl.analysis.runlog import RunDirError, read_run
from lagdsl.cli import main
from lagdsl.plan.render import si
from tests.conftest import assert_png

TINY = """
schedule tiny
seed {seed}
model gpt(context=16, width=16, heads=2, depth=1)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3)
lr cosine(warmup=4 steps, min=3e-4)
eval every 5 steps (batches=2)
checkpoint every 12 steps (keep=3)
stage base { train 10 steps }
stage two { grow depth to 2 with copy_top  train 10 steps }
stage four {
  grow depth to 4 { candidates [copy_top, interleave, identity] probe 5 steps }
  train 10 steps
}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished tiny run, one with another seed, and one stopped early by --max-steps."""
    root = tmp_path_factory.mktemp("report")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(Path(json.__file__).read_text() * 3)
    dirs = {}
    for name, seed, extra in (("a", 3, []), ("b", 4, []), ("early", 3, ["--max-steps", "12"])):
        path = root / f"tiny-{seed}.grow"
        path.write_text(TINY.replace("{seed}", str(seed)))
        out = root / name
        result = CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        dirs[name] = out
    return dirs


def report(*args: str):
    return CliRunner().invoke(main, ["report", *args])


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


@pytest.mark.slow
def test_report_is_one_self_contained_page_with_every_part(runs: dict[str, Path]) -> None:
    result = report(str(runs["a"]))
    assert result.exit_code == 0, result.output
    page_path = runs["a"] / "report" / "report.html"
    assert result.stdout.strip() == str(page_path)
    page = page_path.read_text()
    pictures = sorted(p.name for p in (runs["a"] / "report").glob("*.png"))
    assert pictures == ["loss_flops.png", "loss_steps.png", "plan.png", "probe-four-g1.png"]
    images = embedded_images(page)
    assert len(images) == len(pictures) and all(img.startswith(b"\x89PNG") for img in images)
    # opens offline: nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # inline SVG refers to itself by #id
    summary = json.loads((runs["a"] / "summary.json").read_text())
    assert "Status:</b> finished: 30 steps" in page
    assert f"{summary['final_val_loss']:.4f}" in page
    # the selection table: every candidate with its score, the winner marked
    select = next(json.loads(line) for line in (runs["a"] / "metrics.jsonl").open() if '"select"' in line)
    for label, score in select["scores"].items():
        assert f"<td>{label}</td><td>{score:.4f}</td>" in page
    assert re.search(rf"<tr class=winner><td>four</td><td>20</td><td>{select['winner']}</td>", page)
    assert "copy_top" in page and "depth 1 → 2" in page  # the fixed growth
    # the probed growth, with the winner's parameter count (the final model's: the last growth)
    probed = f"<td>{select['winner']} (chosen by the probe)</td><td>depth 2 → 4</td><td>{si(summary['params'])}</td>"
    assert probed in page
    # the plan at full size, inline (a long plan is unreadable squeezed into the page's width)
    assert "<summary>The plan at full size" in page and '<div class="scroll"><svg' in page
    assert "<th>chosen</th>" in page and "<th></th>" not in page  # every column named
    # the probe's settings once, in the caption (a `keep` column once said `winner` on every row)
    assert f"<caption>four (step 20): select {select['rule']}, keep winner</caption>" in page
    assert "<th>keep</th>" not in page and page.count("<td>winner</td>") == 1


@pytest.mark.slow
def test_the_stage_names_stand_above_the_loss_curves(runs: dict[str, Path]) -> None:
    """They were once written rotated across the plot, over the curves."""
    from lagdsl.analysis.figures import loss_figure
    from lagdsl.analysis.runlog import read_run

    log = read_run(runs["a"])
    for axis in ("step", "flops"):
        fig = loss_figure(log, axis)
        fig.draw_without_rendering()  # lays it out as saving does
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        plot = fig.axes[0].get_window_extent(renderer)
        texts = [*fig.axes[0].texts, *(t for child in fig.axes[0].child_axes for t in child.get_xticklabels())]
        labels = [t for t in texts if "depth" in t.get_text()]
        assert [t.get_text().split(" (")[0] for t in labels] == [s.stage for s in log.stages]
        for label in labels:
            box = label.get_window_extent(renderer)
            assert box.y0 >= plot.y1 - 1, f"{label.get_text()} is over the plot"
        assert fig.get_window_extent(renderer).contains(box.x0, box.y1)  # and inside the picture


@pytest.mark.slow
def test_report_reads_select_events_without_shapes(runs: dict[str, Path], tmp_path: Path) -> None:
    """Runs written before `select` events carried the growth's shapes still report."""
    old = tmp_path / "old"
    shutil.copytree(runs["a"], old)
    lines = []
    for line in (old / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "select":
            for key in ("dim", "before", "after", "params"):
                del record[key]
        lines.append(json.dumps(record))
    (old / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    result = report(str(old), "-o", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert "(chosen by the probe)</td><td>to depth 4, width 16</td><td></td>" in page


@pytest.mark.slow
def test_report_on_an_unfinished_or_crashed_run_says_so(runs: dict[str, Path], tmp_path: Path) -> None:
    result = report(str(runs["early"]), "-o", str(tmp_path / "early"))
    assert result.exit_code == 0, result.output
    assert "stopped early at step 12" in (tmp_path / "early" / "report.html").read_text()

    # a run killed inside the probe: no summary, the log ends among the candidates
    killed = tmp_path / "killed"
    shutil.copytree(runs["a"], killed)
    (killed / "summary.json").unlink()
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    first_probe = next(i for i, line in enumerate(lines) if '"event":"probe"' in line)
    (killed / "metrics.jsonl").write_text("\n".join(lines[: first_probe + 1]) + '\n{"event":"st')  # a torn line
    result = report(str(killed))
    assert result.exit_code == 0, result.output
    page = (killed / "report" / "report.html").read_text()
    assert "unfinished: the log ends at step 20" in page and "--resume" in page
    assert "the probe at `four` did not finish (tried: copy_top)" in page
    assert "did not finish" in result.stderr

    # stopped by a non-finite loss
    crashed = tmp_path / "crashed"
    shutil.copytree(runs["a"], crashed)
    (crashed / "summary.json").unlink()
    with (crashed / "metrics.jsonl").open("a") as stream:
        stream.write('{"event":"stopped","step":29,"stage":"four","reason":"the loss became nan at step 29"}\n')
    assert report(str(crashed)).exit_code == 0
    assert "stopped at step 29: the loss became nan" in (crashed / "report" / "report.html").read_text()


@pytest.mark.slow
def test_compare_overlays_runs_and_states_flops_to_reach(runs: dict[str, Path], tmp_path: Path) -> None:
    result = report(str(runs["a"]), "--compare", str(runs["b"]), "-o", str(tmp_path / "cmp"))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert_png(tmp_path / "cmp" / "compare.png")
    assert "to reach the final val loss of" in page
    a, b = read_run(runs["a"]), read_run(runs["b"])
    rows = reach_table([a, b])
    assert [(r.run.path, r.target.path) for r in rows] == [(a.path, b.path), (b.path, a.path)]
    for row in rows:
        if row.flops is not None:  # the FLOPs where the run's val curve crosses the other's final loss
            _steps, losses = row.run.val_curve()
            assert row.flops <= row.run.total_flops
            assert min(losses) <= row.target_loss
    # a run compared with itself reaches its own final val loss no later than its end
    (self_row,) = reach_table([a, read_run(runs["a"])])[:1]
    assert self_row.flops is not None and self_row.ratio is not None and self_row.ratio <= 1.0


def test_not_a_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = report(str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert "is not a directory" in result.stderr and "Traceback" not in result.output
    result = report(str(tmp_path))
    assert result.exit_code == 2 and "has no `metrics.jsonl`" in result.stderr
    step = '{"event":"step","step":0,"stage":"a","loss":5.5,"lr":0.001,"tokens":8,"flops":10,"elapsed":0.1}'
    end = '{"event":"end","step":1,"flops":10}'
    (tmp_path / "metrics.jsonl").write_text(f"{step}\nnot json\n{end}\n")
    with pytest.raises(RunDirError, match=r"metrics.jsonl` line 2: not JSON: the run directory is damaged$"):
        read_run(tmp_path)
    wrong = step.replace("5.5", '"low"')
    (tmp_path / "metrics.jsonl").write_text(f"{step}\n{wrong}\n{end}\n")
    with pytest.raises(RunDirError, match=r"line 2: a `step` event: `loss`: input should be a valid number"):
        read_run(tmp_path)
    # a kind of event this version does not know (a newer run's) is kept, not an error
    (tmp_path / "metrics.jsonl").write_text(f'{step}\n{{"event":"shard","step":0,"ranks":4}}\n{end}\n')
    log = read_run(tmp_path)
    assert [e.event for e in log.events] == ["step", "shard", "end"]
    assert log.events[1].model_dump() == {"event": "shard", "step": 0, "ranks": 4}
    (tmp_path / "run.json").write_text('{"schedule": 3}')
    with pytest.raises(RunDirError, match=r"run.json`: `lagdsl`: field required \(and \d+ more\)"):
        read_run(tmp_path)


@pytest.mark.slow
def test_report_imports_no_torch(runs: dict[str, Path], tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from lagdsl.analysis.report import build_report; "
        f"build_report(Path({str(runs['a'])!r}), Path({str(tmp_path / 'r')!r})); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
