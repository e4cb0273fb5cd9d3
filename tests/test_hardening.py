"""Run directories, checkpoints and signals under damage: no file state or signal makes a run crash,
lie, or lose a checkpoint it already wrote. (The language front's hostile inputs: test_fuzz.py.)"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lagdsl.cli import main
from lagdsl.runtime.state import checkpoint as ckpt
from tests import forked
from tests.test_run import _wait_for, comparable, events, project, run, schedule  # noqa: F401  (fixture)


@pytest.fixture
def whole(project: Path) -> Path:  # noqa: F811
    """The tiny schedule run to the end without interruption: what every resumed run must equal."""
    out = project / "whole"
    assert run(str(schedule(project)), "--out", str(out)).exit_code == 0
    return out


@pytest.fixture
def stopped(project: Path) -> Path:  # noqa: F811
    """The same run stopped by `--max-steps 18`: checkpoints at steps 12 and 18."""
    out = project / "stopped"
    result = run(str(schedule(project)), "--out", str(out), "--max-steps", "18")
    assert result.exit_code == 0, result.output
    assert [ckpt.load(p)["step"] for p in ckpt.list_checkpoints(out / "checkpoints")] == [12, 18]
    return out


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random bytes inside":
        middle = len(data) // 3
        data[middle : middle + 4096] = os.urandom(4096)
        path.write_bytes(bytes(data))
    else:  # a flipped bit
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated", "empty", "random bytes inside", "flipped bit"])
def test_a_damaged_checkpoint_is_named_and_passed_over(whole: Path, stopped: Path, how: str) -> None:
    newest = ckpt.list_checkpoints(stopped / "checkpoints")[-1]
    _damage(newest, how)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load(newest)
    resumed = run("--resume", str(stopped))
    assert resumed.exit_code == 0, resumed.output
    assert f"note: checkpoint `{newest}` is damaged" in resumed.stderr and "an older one is used" in resumed.stderr
    assert "Traceback" not in resumed.output
    assert comparable(stopped) == comparable(whole)  # resumed from step 12, to the very same events
    for path in ckpt.list_checkpoints(stopped / "checkpoints"):  # what it wrote since is intact
        if path != newest:
            ckpt.load(path)


def test_pruning_never_deletes_the_checkpoint_just_written(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        ckpt.write_atomic({"step": step}, ckpt.checkpoint_path(folder, step, 1))
    newest = ckpt.checkpoint_path(folder, 5, 1)  # sorts first by name, as a resumed run's may
    ckpt.write_atomic({"step": 5}, newest)
    (folder / ".step-000000040-000001.pt.tmp").write_bytes(b"cut by a crash")
    ckpt.prune(folder, 1, newest=newest)
    assert newest.exists() and ckpt.load(newest) == {"step": 5}
    assert not list(folder.glob(".*.tmp"))


def test_a_checkpoint_is_what_torch_load_reads_and_carries_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    ckpt.write_atomic({"w": torch.arange(4.0)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4.0))  # plain torch reads it
    assert path.read_bytes()[-80:].startswith(b"\nlagdsl-sha256 ")
    ckpt.verify(path)


@pytest.mark.slow
def test_resuming_a_finished_run_changes_nothing(whole: Path) -> None:
    before = {p: p.read_bytes() for p in whole.rglob("*") if p.is_file()}
    result = run("--resume", str(whole))
    assert result.exit_code == 0, result.output
    assert f"`{whole}` is finished (30 steps): nothing to resume" in result.stderr
    assert {p: p.read_bytes() for p in whole.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_max_steps_at_or_below_the_step_reached_does_nothing(stopped: Path) -> None:
    before = (stopped / "metrics.jsonl").read_bytes()
    result = run("--resume", str(stopped), "--max-steps", "15")
    assert result.exit_code == 0, result.output
    assert "is at step 18 already (`--max-steps 15`): nothing to do" in result.stderr
    assert (stopped / "metrics.jsonl").read_bytes() == before


@pytest.mark.slow
def test_a_stopped_run_keeps_the_evaluation_of_its_last_step_and_writes_no_final_model(
    project: Path,  # noqa: F811
) -> None:
    out = project / "at-eval"
    result = run(str(schedule(project)), "--out", str(out), "--max-steps", "20")  # eval every 10 steps
    assert result.exit_code == 0, result.output
    assert [e["step"] for e in events(out, "eval")] == [10, 20]
    summary = (out / "summary.json").read_text()
    assert '"finished": false' in summary and not (out / "final").exists()
    assert f'"final_val_loss": {events(out, "eval")[-1]["val_loss"]}' in summary  # the evaluation logged


@pytest.mark.slow
@pytest.mark.parametrize("raised", ["OSError", "RuntimeError"])
def test_a_full_disk_while_checkpointing_loses_nothing(
    project: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    raised: str,
) -> None:
    """A full disk halfway through a checkpoint: as an `OSError`, or as torch's writer reports a
    short write on a real full file system, `RuntimeError: ... unexpected pos` (once an internal
    error): one line, the earlier checkpoint intact."""
    real_save = torch.save
    calls = []

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint meets a full disk halfway
            f.write(b"x" * 100)  # type: ignore[attr-defined]
            if raised == "RuntimeError":
                raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 100")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = project / "full"
    result = run(str(schedule(project)), "--out", str(out))
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    full = "No space left on device" if raised == "OSError" else "unexpected pos 64 vs 100): is the disk full?"
    assert full in message and "the last good checkpoint is `" in message
    (kept,) = ckpt.list_checkpoints(out / "checkpoints")  # the first, intact
    assert ckpt.load(kept)["step"] == 12
    assert not list((out / "checkpoints").glob(".*"))  # no temporary file left
    assert [e["path"] for e in events(out, "checkpoint")] == [str(kept.relative_to(out))]  # no event for the lost one


def test_a_run_directory_that_cannot_be_made_is_one_line_and_exit_2(project: Path) -> None:  # noqa: F811
    blocker = project / "a-file"
    blocker.write_text("not a folder")
    result = run(str(schedule(project)), "--out", str(blocker / "run"))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: cannot create the run directory") and result.stderr.count("\n") == 1


def test_a_missing_event_log_is_reported_not_restarted(stopped: Path) -> None:
    (stopped / "metrics.jsonl").unlink()
    result = run("--resume", str(stopped))
    assert result.exit_code == 2 and "has no `metrics.jsonl`" in result.stderr


@pytest.mark.slow
def test_a_torn_event_log_is_repaired_on_resume_and_says_so(whole: Path, stopped: Path) -> None:
    with (stopped / "metrics.jsonl").open("ab") as log:
        log.write(b'{"event":"step","step":19,"stage":"tw\xff\xfe')  # a crash mid-line, bytes not UTF-8
    result = run("--resume", str(stopped))
    assert result.exit_code == 0, result.output
    assert "metrics.jsonl`: cut to the" in result.stderr
    assert comparable(stopped) == comparable(whole)


def test_ctrl_c_while_starting_is_exit_130_not_aborted(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import lagdsl.runtime.run.start as run_module

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "open_data", interrupted)
    result = run(str(schedule(project)), "--out", str(project / "x"))
    assert result.exit_code == 130 and "Aborted" not in result.output and "interrupted" in result.stderr


@pytest.mark.slow
def test_sigterm_checkpoints_exits_143_and_resumes_to_the_same_run(project: Path, whole: Path) -> None:  # noqa: F811
    out = project / "terminated"
    process = forked.start(["run", str(schedule(project)), "--out", str(out), "--quiet"])
    _wait_for(out / "metrics.jsonl", lambda text: '"event":"eval"' in text)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 143, err
    assert "interrupted (SIGTERM): checkpoint written to" in err and f"lagdsl run --resume {out}" in err
    assert run("--resume", str(out)).exit_code == 0
    assert comparable(out) == comparable(whole)


def test_the_damaged_checkpoint_fixture_copies_stay_separate(tmp_path: Path) -> None:
    """`_damage` changes the file it is given, and only that one."""
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    ckpt.write_atomic({"x": torch.ones(1000)}, a)
    shutil.copy(a, b)
    _damage(a, "flipped bit")
    ckpt.verify(b)
    with pytest.raises(ckpt.CheckpointError, match="checksum does not match"):
        ckpt.verify(a)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bitwise_identical(project: Path, whole: Path) -> None:  # noqa: F811
    """Killed at seeded random moments (by how many lines the log has), a run resumes, possibly
    several times, to exactly the events of the run never interrupted."""
    import random

    rng = random.Random(7)
    total_lines = len((whole / "metrics.jsonl").read_text().splitlines())
    out = project / "chaos"
    command = ["run", str(schedule(project)), "--out", str(out), "--quiet"]
    resume = ["run", "--resume", str(out), "--quiet"]
    for kill_at in sorted(rng.sample(range(2, total_lines - 2), min(20, total_lines - 4))):
        process = forked.start(resume if out.exists() else command)
        with contextlib.suppress(AssertionError):  # past that point before we looked: kill it wherever it is
            _wait_for(out / "metrics.jsonl", lambda text, n=kill_at: text.count("\n") >= n, timeout=60)
        process.send_signal(signal.SIGKILL)
        process.wait()
    resumed = run("--resume", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert comparable(out) == comparable(whole)


@pytest.mark.slow
def test_a_checkpoint_write_cut_by_a_crash_is_harmless(whole: Path, stopped: Path) -> None:
    """What a kill inside the checkpoint writer leaves (a temporary file, half written) is ignored
    by resume and removed by the next checkpoint."""
    newest = ckpt.list_checkpoints(stopped / "checkpoints")[-1]
    stale = newest.with_name(f".{ckpt.checkpoint_path(stopped / 'checkpoints', 30, 99).name}.tmp")
    stale.write_bytes(newest.read_bytes()[:5000])
    result = run("--resume", str(stopped))
    assert result.exit_code == 0, result.output
    assert comparable(stopped) == comparable(whole)
    assert not stale.exists()


@pytest.mark.slow
@pytest.mark.parametrize("after", ["the next step", "nothing"])
def test_a_kill_between_a_checkpoint_and_its_event_neither_repeats_nor_loses_a_step(
    project: Path,  # noqa: F811
    whole: Path,
    after: str,
) -> None:
    """Killed after the checkpoint file is written and before its event line. `the next step`: a
    later attempt resumed from that checkpoint and wrote the following step where the event would
    have been, then was killed too: that line must go, not stay beside the step trained again.
    `nothing`: every step line the log has belongs to the checkpoint, and none may be cut with the
    missing event (a resume once dropped the step line before it: a step missing from the log)."""
    out = project / f"window-{after.split()[-1]}"
    shutil.copytree(whole, out)
    for path in ckpt.list_checkpoints(out / "checkpoints"):
        if ckpt.load(path)["step"] != 12:
            path.unlink()
    (checkpoint,) = ckpt.list_checkpoints(out / "checkpoints")
    keep = int(ckpt.load(checkpoint)["metrics_lines"])
    lines = (whole / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert '"event":"step"' in lines[keep - 2] and '"event":"checkpoint"' in lines[keep - 1]
    (out / "metrics.jsonl").write_text("".join(lines[: keep - 1]) + (lines[keep] if after == "the next step" else ""))
    (out / "summary.json").unlink()
    shutil.rmtree(out / "final")
    assert run("--resume", str(out)).exit_code == 0
    assert comparable(out) == comparable(whole)


def test_a_run_directory_another_process_holds_is_refused_and_left_alone(stopped: Path) -> None:
    """A second `run --resume` of a run in progress: one line naming the holder, exit 2, and not a
    byte of the run changed (today's failure: two resumes both ran, 48 duplicate steps)."""
    from lagdsl.runtime.run import lock

    before = {p: p.read_bytes() for p in stopped.rglob("*") if p.is_file()}
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(run=str(stopped))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run("--resume", str(stopped))
        assert result.exit_code == 2
        assert result.stderr.strip() == (
            f"error: `{stopped}` is in use by process {holder.pid} on {socket.gethostname()} (since "
            + json.loads((stopped / lock.LOCK_FILE).read_text())["started"]
            + "): wait for it to end, or stop it"
        )
        assert {p: p.read_bytes() for p in stopped.rglob("*") if p.is_file() and p.name != "lock"} == {
            p: b for p, b in before.items() if p.name != "lock"
        }
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is taken over, with a note, and the run goes on
    result = run("--resume", str(stopped))
    assert result.exit_code == 0, result.output
    assert f"was left locked by process {holder.pid}" in result.stderr and "taken over" in result.stderr
    assert (stopped / lock.LOCK_FILE).read_text() == ""  # given back at the end


@pytest.mark.parametrize("planted", ["symbolic link", "pipe"])
def test_a_link_or_a_pipe_planted_as_the_lock_is_refused_and_its_target_untouched(
    stopped: Path, tmp_path: Path, planted: str
) -> None:
    """`RUN/lock` opened with `O_NOFOLLOW`: a link's target was once truncated and written over by
    `run --resume`; a FIFO there was an internal error. Now one line each, exit 2, nothing touched."""
    from lagdsl.runtime.run import lock

    path = stopped / lock.LOCK_FILE
    path.unlink(missing_ok=True)
    target = tmp_path / "precious.txt"
    target.write_text("a user's file\n")
    if planted == "symbolic link":
        path.symlink_to(target)
        message = f"error: `{path}` is a symbolic link, which lagdsl does not follow: remove it"
    else:
        os.mkfifo(path)
        message = f"error: `{path}` is not a regular file (a pipe, a device, ...): remove it"
    result = run("--resume", str(stopped))
    assert result.exit_code == 2 and result.stderr.strip() == message, result.output
    assert target.read_text() == "a user's file\n"


HOLD = """
import sys
from pathlib import Path
from lagdsl.runtime.run import lock
lock.take(Path({run!r}))
print("held", flush=True)
__import__("time").sleep(600)
"""


def test_without_flock_the_holder_the_lock_file_names_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system without `flock`: a holder still running keeps the directory; one that is
    gone does not."""
    import errno as errnos
    import fcntl

    from lagdsl.runtime.run import lock

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errnos.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        host = socket.gethostname()
        (tmp_path / lock.LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": host, "started": "then"}))
        with pytest.raises(lock.LockError, match="this file system has no file locks"):
            lock.take(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    notes: list[str] = []
    lock.take(tmp_path, notes.append)
    lock.release(tmp_path)
    assert notes and "no longer running" in notes[0]


DIVERGING = """
schedule diverging
seed 3
model gpt(context=16, width=16, heads=2, depth=1)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3)
stage base {{ train 4 steps }}
stage two {{
  grow depth to 2 {{ candidates [{candidates}] probe 3 steps {select} }}
  train 6 steps
}}
"""


@pytest.mark.parametrize("select", ["", "select lowest val_loss"])
def test_a_diverging_candidate_is_dropped_and_named_not_fatal(project: Path, select: str) -> None:  # noqa: F811
    """`copy_top(noise=1e30)` listed first: its loss is not finite, so it is dropped (named in the
    select event and on the console) and can never win, even where a NaN score once did."""
    path = project / "diverging.grow"
    path.write_text(DIVERGING.format(candidates="copy_top(noise=1e30), copy_top", select=select))
    out = project / f"diverging{len(select)}"
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (selected,) = events(out, "select")
    assert selected["winner"] == "copy_top" and selected["diverged"] == ["copy_top(noise=1e30)"]
    assert selected["scores"]["copy_top(noise=1e30)"] is None and selected["scores"]["copy_top"] > 0
    assert "copy_top(noise=1e30) diverged (dropped)" in result.stderr
    (dropped, _) = events(out, "probe")
    assert dropped["score"] is None and "not finite" not in dropped["diverged"] and "nan" in dropped["diverged"]


def test_when_every_candidate_diverges_the_run_stops_naming_them_without_a_resume(project: Path) -> None:  # noqa: F811
    path = project / "all_diverge.grow"
    path.write_text(DIVERGING.format(candidates="copy_top(noise=1e30), interleave(noise=1e30)", select=""))
    result = run(str(path), "--out", str(project / "all_diverge"))
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: every candidate of the probe in stage `two` diverged (`copy_top(noise=1e30)`:")
    assert "--resume" not in result.stderr and "lower the LR" in message
    assert events(project / "all_diverge", "stopped")


def test_a_sharded_checkpoint_saved_again_at_its_step_is_never_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM right after a periodic checkpoint saves the same step again: the old folder once was
    deleted before the new one was in place. Now it goes aside first, and a crash between the two
    renames leaves it where the next look finds it."""
    from lagdsl.runtime.distributed import world as dist
    from lagdsl.runtime.state import dcp

    def state(value: float) -> dict[str, object]:
        return {"model": {"w": torch.full((3,), value)}, "optimizer": {"state": {}, "param_groups": []}, "step": 12}

    path = ckpt.checkpoint_path(tmp_path, 12, 3, sharded=True)
    dcp.save(state(1.0), path, dist.ONE)
    renames = []
    real = os.replace

    def crash_on_the_second(src: object, dst: object) -> None:
        renames.append((src, dst))
        if len(renames) == 2:
            raise KeyboardInterrupt  # killed between setting the old folder aside and renaming the new one
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        dcp.save(state(2.0), path, dist.ONE)
    monkeypatch.setattr(os, "replace", real)
    assert not path.exists()  # set aside, the new one not yet in place
    assert ckpt.list_checkpoints(tmp_path) == [path]  # put back
    assert torch.equal(ckpt.load(path)["model"]["w"], torch.full((3,), 1.0))
    dcp.save(state(3.0), path, dist.ONE)  # and saved again normally: replaced, nothing left aside
    assert torch.equal(ckpt.load(path)["model"]["w"], torch.full((3,), 3.0))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]

    # its temporary folders have names no one can foresee: a link planted under the name they once
    # had (`.NAME.tmp`) is neither written through nor removed
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (tmp_path / f".{path.name}.tmp").symlink_to(elsewhere, target_is_directory=True)
    dcp.save(state(4.0), path, dist.ONE)
    assert torch.equal(ckpt.load(path)["model"]["w"], torch.full((3,), 4.0))
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, f".{path.name}.tmp"])


def test_a_resumed_run_keeps_every_segment_and_sums_their_wall_time(stopped: Path) -> None:
    """Each process that trained a run is a segment (ranks, first and last step, wall time): run.json
    lists them as each starts, the summary whole with its wall time their sum, the report shows them."""
    info = json.loads((stopped / "run.json").read_text())
    assert [(s["ranks"], s["first_step"], s.get("last_step")) for s in info["segments"]] == [(1, 0, None)]
    first = json.loads((stopped / "summary.json").read_text())
    assert [(s["first_step"], s["last_step"]) for s in first["segments"]] == [(0, 18)]
    assert run("--resume", str(stopped), "--max-steps", "30").exit_code == 0
    info = json.loads((stopped / "run.json").read_text())
    assert [(s["first_step"], s.get("last_step")) for s in info["segments"]] == [(0, 18), (18, None)]
    assert run("--resume", str(stopped)).exit_code == 0
    summary = json.loads((stopped / "summary.json").read_text())
    steps = summary["steps"]
    assert [(s["ranks"], s["first_step"], s["last_step"]) for s in summary["segments"]] == [
        (1, 0, 18), (1, 18, 30), (1, 30, steps)
    ]  # fmt: skip
    walls = [s["wall_seconds"] for s in summary["segments"]]
    assert all(w > 0 for w in walls) and summary["wall_seconds"] == pytest.approx(sum(walls), abs=1e-6)
    result = CliRunner().invoke(main, ["report", str(stopped), "-o", str(stopped.parent / "report")])
    assert result.exit_code == 0, result.output
    html = (stopped.parent / "report" / "report.html").read_text()
    assert "<h2>Segments</h2>" in html and "<td>18 → 30</td>" in html
