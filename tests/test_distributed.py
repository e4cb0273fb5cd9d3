"""Several ranks: real processes (Gloo on the CPU, one thread a rank), started as torchrun starts
them but forked from a server that imported torch once (`tests/forked.py`); the tests of the
launcher itself (torchrun passing a signal on, stopping the ranks when one dies, two agents meeting
at a c10d rendezvous) start torchrun.

An N-rank run reads exactly the tokens a 1-rank run reads, so their losses agree up to the order
of floating-point reductions; parallel probes score as sequential ones do; a run of any number of
ranks resumes on any other; SIGTERM and a killed rank leave a run that resumes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from lagdsl.cli import main
from lagdsl.lang import check_text
from lagdsl.runtime.data.batches import Batches, Shard
from lagdsl.runtime.data.corpus import load_corpus
from lagdsl.runtime.distributed.world import DistError, World, meet
from lagdsl.runtime.records.metrics import read, without_timing
from lagdsl.runtime.run.start import RunError, open_data
from lagdsl.runtime.state import checkpoint as ckpt
from lagdsl.runtime.state.train_state import Device
from lagdsl.runtime.state.trained import open_trained
from lagdsl.runtime.training.probes import teams
from tests import forked
from tests.conftest import child_processes, train_tokenizer, write_corpus

SCHEDULE = """
schedule tiny
seed 3
{probes}
model gpt(context=16, width=16, heads=2, depth=1)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3)
lr cosine(warmup=4 steps, min=3e-4)
eval every 10 steps (batches=2)
checkpoint every 12 steps (keep=3)
stage base {{ train {base} steps }}
stage two {{ grow depth to 2 with copy_top  train 10 steps }}
stage wide {{ grow width to 24 with net2net  train 4 steps }}
stage four {{
  grow depth to 4 {{ candidates [copy_top, interleave, identity] probe 5 steps {keep} }}
  train 10 steps
}}
"""

TOLERANCE = 1e-5  # relative: the same sums, added in another order


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    write_corpus(root)
    for name, probes, keep, base in (
        ("seq.grow", "", "", 10),
        ("par.grow", "probes parallel", "", 10),
        ("rewind.grow", "probes parallel", "keep rewind", 10),
        ("rewind1.grow", "", "keep rewind", 10),
        ("long.grow", "", "", 400),
        ("fsdp.grow", "parallel fsdp", "", 10),
    ):
        (root / name).write_text(SCHEDULE.format(probes=probes, keep=keep, base=base))
    return root


def env() -> dict[str, str]:
    """One thread a rank; a rank that crashes prints every thread's Python stack."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}


def torchrun(project: Path, *args: str, ranks: int = 2) -> list[str]:
    """The command line that starts `lagdsl run ARGS` on `ranks` ranks under torchrun itself (for
    the tests of the launcher; the others start their ranks with `launch`)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    return [*launcher, "-m", "lagdsl", "run", "--quiet", *args]


def launch(
    project: Path, *args: str, ranks: int = 2, timeout: float = 240, extra_env: dict[str, str] | None = None,
    ungathered: bool = False, prelude: str | None = None, file_size_limit: int | None = None,
) -> forked.Finished:  # fmt: skip
    """`lagdsl run ARGS` on `ranks` ranks to its end (`ungathered`: failing wherever a sharded
    state would be gathered whole; `prelude`: a module imported first, e.g. one that patches)."""
    prelude = "tests.ungathered" if ungathered else prelude
    return forked.run_ranks(
        ranks, ["run", "--quiet", *args], cwd=project, env=extra_env, prelude=prelude, timeout=timeout,
        file_size_limit=file_size_limit,
    )  # fmt: skip


def single(project: Path, *args: str) -> None:
    cwd = os.getcwd()
    os.chdir(project)
    try:
        result = CliRunner().invoke(main, ["run", "--quiet", *args])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output


def records(run_dir: Path) -> list[dict]:
    return [r for r in without_timing(read(run_dir / "metrics.jsonl")) if r["event"] != "checkpoint"]


def assert_close(left: Sequence[dict], right: Sequence[dict], tolerance: float = TOLERANCE) -> None:
    """The same events, with every number equal within `tolerance` (relative)."""
    assert [r["event"] for r in left] == [r["event"] for r in right]
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys(), (a, b)
        for key in a:
            _close(a[key], b[key], tolerance, f"{a['event']} {key}")


def _close(a: object, b: object, tolerance: float, where: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), where
        assert abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-12), f"{where}: {a} vs {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], tolerance, f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for x, y in zip(a, b, strict=True):
            _close(x, y, tolerance, where)
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.fixture(scope="module")
def one_rank(project: Path) -> Path:
    single(project, "seq.grow", "--out", "one")
    return project / "one"


@pytest.fixture(scope="module")
def two_ranks(project: Path) -> Path:
    tensorboard = ["--tensorboard", "tb-two"] if importlib.util.find_spec("tensorboard") else []
    wandb = ["--wandb", "lagdsl-two"] if importlib.util.find_spec("wandb") else []
    offline = {f"WANDB_{k}": str(project / f"wandb-{k.lower()}") for k in ("CONFIG_DIR", "CACHE_DIR", "DATA_DIR")}
    offline |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = launch(project, "seq.grow", "--out", "two", *tensorboard, *wandb, extra_env=offline)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "two\n"  # rank 0's payload, flushed before the ranks leave; the others say nothing
    return project / "two"


# -- the world, the teams, the shares (no processes)


def test_the_world_comes_from_torchruns_environment() -> None:
    assert World.from_env({}) == World()
    assert World.from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(1, 4, 1, launched=True)
    assert not World().distributed and World(1, 4, 1).distributed and not World(1, 4, 1).main
    assert World.from_env({"RANK": "0", "WORLD_SIZE": "1"}).distributed  # torchrun's one rank: DDP all the same
    with pytest.raises(DistError, match="torchrun"):
        World.from_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(DistError, match="not a rank"):
        World.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_ranks_meet_before_they_leave_and_a_rank_left_alone_gives_up() -> None:
    """`session`'s exit: no rank destroys its group until all have arrived (or the wait is over)."""
    store, world = torch.distributed.HashStore(), World(0, 2, 0, launched=True)
    arrived: list[bool] = []
    first = threading.Thread(target=lambda: arrived.append(meet(store, world, timedelta(seconds=30))))
    first.start()
    first.join(0.5)
    assert first.is_alive()  # rank 0 waits for rank 1
    assert meet(store, World(1, 2, 1, launched=True), timedelta(seconds=30))
    first.join(30)
    assert arrived == [True]
    assert not meet(torch.distributed.HashStore(), world, timedelta(seconds=0.2))  # nobody comes: it leaves


@given(st.integers(1, 64), st.integers(1, 20))
def test_teams_cover_every_rank_once_and_are_even(ranks: int, candidates: int) -> None:
    layout = teams(ranks, candidates)
    assert len(layout) == min(ranks, candidates)
    assert sorted(r for team in layout for r in team) == list(range(ranks))
    sizes = [len(team) for team in layout]
    assert max(sizes) - min(sizes) <= 1 and all(team == list(range(team[0], team[-1] + 1)) for team in layout)


def test_ranks_read_exactly_the_global_batch(project: Path) -> None:
    schedule = check_text((project / "seq.grow").read_text(), str(project / "seq.grow")).schedule
    assert schedule is not None
    corpus = load_corpus(schedule.data, project)
    whole = Batches(corpus, 4, 16, 3, torch.device("cpu"))
    parts = [Batches(corpus, 4, 16, 3, torch.device("cpu"), Shard(r, 2)) for r in range(2)]
    for step in (0, 7):
        inputs, targets = whole.train(step, 0)
        assert torch.equal(torch.cat([p.train(step, 0)[0] for p in parts]), inputs)
        assert torch.equal(torch.cat([p.train(step, 0)[1] for p in parts]), targets)
    assert torch.equal(torch.cat([p.val(1)[0] for p in parts]), whole.val(1)[0])


def test_a_batch_that_does_not_split_among_the_ranks_stops_before_training(project: Path) -> None:
    schedule = check_text((project / "seq.grow").read_text(), "seq.grow").schedule
    assert schedule is not None
    device = Device(torch.device("cpu"), None)
    with pytest.raises(RunError, match="`batch 4` is the global batch, and 3 ranks cannot share it") as error:
        open_data(schedule, project, device, World(0, 3, 0))
    assert error.value.code == 2 and "multiple of 3" in str(error.value)
    open_data(schedule, project, device, World(1, 2, 1))  # 4 rows: 2 each


# -- real ranks


@pytest.mark.slow
def test_of_several_ranks_rank_0_speaks_and_every_rank_exits_with_the_code(project: Path) -> None:
    odd = project / "odd.grow"
    odd.write_text((project / "seq.grow").read_text().replace("batch 4", "batch 3"))
    result = launch(project, "odd.grow", "--out", "odd")
    assert result.stderr.count("`batch 3` is the global batch, and 2 ranks cannot share it") == 1
    assert result.returncodes == [2, 2] and not (project / "odd").exists(), result.stderr[-3000:]
    assert "SIGABRT" not in result.stderr, result.stderr[-3000:]  # no rank aborted on its way out
    bad = project / "bad.grow"
    bad.write_text((project / "seq.grow").read_text().replace("optimizer adamw", "optimiser adamw"))
    result = launch(project, "bad.grow")
    assert result.stderr.count("error[E0101]") == 1 and result.returncodes == [1, 1]


@pytest.mark.slow
def test_under_two_ranks_rank_0_alone_logs_to_tensorboard_and_every_event_arrives(
    project: Path, two_ranks: Path
) -> None:
    """One event file (rank 0's), holding every step of `metrics.jsonl`, though a rank ends
    without the interpreter's clean-up (`dist.leave`)."""
    pytest.importorskip("tensorboard")
    from tests.test_trackers import scalars

    assert len(list((project / "tb-two").rglob("events.out.tfevents.*"))) == 1
    steps = [r for r in read(two_ranks / "metrics.jsonl") if r["event"] == "step"]
    logged = scalars(project / "tb-two")["train/loss"]
    assert [s for s, _ in logged] == [r["step"] for r in steps] and len(steps) > 10
    assert [v for _, v in logged] == pytest.approx([r["loss"] for r in steps], rel=1e-6)


@pytest.mark.slow
def test_under_two_ranks_rank_0_alone_records_a_whole_wandb_run(two_ranks: Path) -> None:
    """One offline W&B run (rank 0's) whose record holds every step, though the rank leaves with
    `os._exit`, past the hook with which W&B would wait for its service to write."""
    pytest.importorskip("wandb")
    logs = list((two_ranks / "wandb").glob("offline-run-*/*.wandb"))
    assert len(logs) == 1
    data = logs[0].read_bytes()  # protobuf, whose strings are stored as they are
    steps = [r for r in read(two_ranks / "metrics.jsonl") if r["event"] == "step"]
    assert data.count(b"train/loss") >= len(steps) > 10 and b"probe chose" in data


@pytest.mark.slow
def test_two_ranks_tokenize_one_corpus_together_and_train_as_one(project: Path, tmp_path: Path) -> None:
    """Both ranks of a machine need the same tokens at the same moment: they end with one cache
    entry and train as one process. (That only one of them tokenizes, the lock's work, is shown in
    `test_tokenize.py`: here either way leaves one entry.)"""
    train_tokenizer(project / "tokenizer.json", sorted((project / "corpus").glob("*.txt")))
    text = (project / "seq.grow").read_text().replace('"corpus/*.txt"', '"corpus/*.txt", tokenizer="tokenizer.json"')
    (project / "tok.grow").write_text(text.replace("heads=2,", "heads=2, vocab=auto,"))
    cache = {"LAGDSL_CACHE": str(tmp_path / "cache")}
    result = launch(project, "tok.grow", "--out", "tok-two", extra_env=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    entries = [p.name for p in (tmp_path / "cache" / "tokens").iterdir() if not p.name.endswith(".lock")]
    assert len(entries) == 1 and not entries[0].startswith(".")  # one entry, no half-written leftovers
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAGDSL_CACHE", str(tmp_path / "cache"))
        single(project, "tok.grow", "--out", "tok-one")
    assert_close(records(project / "tok-two"), records(project / "tok-one"))


@pytest.mark.slow
def test_two_ranks_train_as_one_through_growths_and_a_probe(one_rank: Path, two_ranks: Path) -> None:
    one, two = records(one_rank), records(two_ranks)
    assert_close(one, two)
    assert [r["winner"] for r in one if r["event"] == "select"] == [r["winner"] for r in two if r["event"] == "select"]
    # rank 0 alone writes: one line per event, one summary, one final model
    assert len(read(two_ranks / "metrics.jsonl")) == len(read(one_rank / "metrics.jsonl"))
    assert json.loads((two_ranks / "run.json").read_text())["ranks"] == 2
    summary = json.loads((two_ranks / "summary.json").read_text())
    assert summary["finished"] and summary["final_shape"] == {"depth": 4, "width": 24, "heads": 3}
    final_one = torch.load(one_rank / "final" / "model.pt", weights_only=True)["model"]
    final_two = torch.load(two_ranks / "final" / "model.pt", weights_only=True)["model"]
    for name, tensor in final_one.items():
        torch.testing.assert_close(final_two[name], tensor, rtol=1e-4, atol=1e-5)
    # the checkpoints of several ranks are DCP folders, complete with a manifest
    folders = ckpt.list_checkpoints(two_ranks / "checkpoints")
    assert folders and all(p.suffix == ".dcp" and (p / "manifest.json").is_file() for p in folders)
    assert not list((two_ranks / "checkpoints").glob(".*"))  # no temporary folder left behind


@pytest.mark.slow
def test_two_nodes_meet_through_a_c10d_rendezvous_and_train_as_one_process(project: Path, one_rank: Path) -> None:
    """Two torchrun agents, `--nnodes 2` of one rank each, meeting at a c10d rendezvous on
    127.0.0.1 (as two machines would at their head node's address), through growths and a probe:
    one process's losses, and rank 0 (on the agent that became node 0) alone answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "two-nodes",
        "-m", "lagdsl", "run", "--quiet", "seq.grow", "--out", "nodes",
    ]  # fmt: skip
    agents = [
        subprocess.Popen(agent, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [agent.communicate(timeout=240) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], [err[-3000:] for _, err in outputs]
    assert sorted(out for out, _ in outputs) == ["", "nodes\n"]
    assert json.loads((project / "nodes" / "run.json").read_text())["ranks"] == 2
    assert_close(records(project / "nodes"), records(one_rank))


@pytest.mark.slow
def test_one_rank_under_torchrun_takes_the_distributed_path_and_trains_as_one_process(
    project: Path, one_rank: Path
) -> None:
    result = launch(project, "seq.grow", "--out", "solo", ranks=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_close(records(project / "solo"), records(one_rank), tolerance=1e-6)
    assert {p.suffix for p in ckpt.list_checkpoints(project / "solo" / "checkpoints")} == {".dcp"}


@pytest.mark.slow
def test_fsdp_trains_as_ddp_through_growths_and_resumes(project: Path, two_ranks: Path) -> None:
    """FSDP2 shards each block and the root; a depth growth grows the shards, a width growth
    grows them a tensor at a time. Stopped inside the width stage and resumed (each rank reading
    its own rows from DCP), it reaches DDP's losses, and its final model is each rank's shards."""
    result = launch(project, "fsdp.grow", "--out", "fsdp", "--max-steps", "22")
    assert result.returncode == 0, result.stderr[-3000:]
    result = launch(project, "--resume", "fsdp")
    assert result.returncode == 0, result.stderr[-3000:]
    fsdp, ddp = records(project / "fsdp"), records(two_ranks)
    assert {r["dim"] for r in fsdp if r["event"] == "grow"} == {"depth", "width"}
    assert_close(fsdp, ddp)
    final = open_trained(project / "fsdp").state  # what export and generate read
    assert final["embed.weight"].shape == (256, 24) and not any(".shard" in name for name in final)
    assert not (project / "fsdp" / "final" / "model.pt").exists()
    exported = CliRunner().invoke(main, ["export", str(project / "fsdp"), "-o", str(project / "fsdp-hf")])
    assert exported.exit_code == 0, exported.output
    assert (project / "fsdp-hf" / "model.safetensors").is_file()
    # each rank wrote its own shards (once every rank gathered the whole state, and DCP wrote each
    # tensor whole, in one piece; the final model was gathered to rank 0): the checkpoints hold the
    # block weights and their Adam moments, the final model the weights, in one piece per rank
    from torch.distributed.checkpoint import FileSystemReader

    for folder in [*ckpt.list_checkpoints(project / "fsdp" / "checkpoints"), project / "fsdp" / "final" / "model.dcp"]:
        saved = FileSystemReader(str(folder)).read_metadata().state_dict_metadata
        blocks = [key for key in saved if key.startswith("model.blocks.") and key.endswith("qkv.weight")]
        moments = [key for key in saved if key.startswith("optimizer.") and key.endswith("exp_avg")]
        assert blocks and (moments or folder.name == "model.dcp")  # the final model has no optimizer
        assert all(len(saved[key].chunks) == 2 for key in blocks + moments), folder.name


SHARDS = """
schedule shards
seed 3
{parallel}
activations recompute
model gpt(context=16, width=16, heads=2, kv_heads=1, depth=4)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3, weight_decay=0.1)
eval every 6 steps (batches=2)
checkpoint every 6 steps (keep=9)
stage base {{ train 6 steps }}
stage six {{
  grow depth to 6 {{
    candidates [copy_top(noise=0.05), copy_bottom, midas, interleave, random, identity, llama_pro]
    probe 2 steps
  }}
  lr_scale new=2
  train 6 steps {{ freeze [old, embed] }}
}}
stage twelve {{ grow depth to 12 with stack  train 4 steps }}
stage sixteen {{
  grow depth to 16 with layers([[0, 8], [4, 12]])
  train 4 steps
}}
stage wide {{
  grow width to 32 {{ candidates [net2net(noise=0.05), zero] probe 1 steps }}
  train 2 steps
}}
"""


@pytest.mark.slow
def test_fsdp_grows_every_depth_operator_shard_by_shard_and_resumes_on_four_ranks(project: Path) -> None:
    """Under `parallel fsdp` nothing is gathered whole (`tests/ungathered.py` fails the run if it
    is), with each block's activations recomputed in the backward pass: the model starts sharded,
    every depth operator (a probe of seven, with noise and a frozen heal; stack; a layer list)
    grows each rank's shards, width operators (a probe of two, grouped-query attention) grow a
    tensor at a time, the probes' snapshots and the checkpoints hold shards, and a run stopped on 2
    ranks resumes on 4, each reading its own rows. The losses, probe scores and evaluations are one
    process's. (`test_shards.py` compares every operator's growth with one process's; `hyperclone`
    is left out here: after it, DDP too drifts from one process by 1e-4 within three steps, Adam
    scaling up the rounding of gradients that nearly cancel between the clones.)"""
    (project / "shards-one.grow").write_text(SHARDS.format(parallel=""))
    (project / "shards.grow").write_text(SHARDS.format(parallel="parallel fsdp"))
    single(project, "shards-one.grow", "--out", "shards-one")
    result = launch(project, "shards.grow", "--out", "shards", "--max-steps", "9", ungathered=True)
    assert result.returncode == 0, result.stderr[-3000:]
    result = launch(project, "--resume", "shards", ranks=4, ungathered=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one, sharded = records(project / "shards-one"), records(project / "shards")
    assert_close(one, sharded)
    depth, width = [r for r in sharded if r["event"] == "select"]
    assert len(depth["scores"]) == 7 and len(width["scores"]) == 2
    assert all(math.isfinite(v) for v in [*depth["scores"].values(), *width["scores"].values()])
    assert [r["after"]["depth"] for r in sharded if r["event"] == "grow"] == [12, 16]
    final = open_trained(project / "shards").state
    assert final["embed.weight"].shape == (256, 32)
    expected = torch.load(project / "shards-one" / "final" / "model.pt", weights_only=True)["model"]
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():  # within a thirtieth of one Adam step (lr 3e-3): a wrong
        # shard would be off by the weights' size (0.02); the sums' order alone, scaled up by Adam on
        # the near-zero gradients of a width growth's new units, moves a few weights by 1e-5
        torch.testing.assert_close(final[name], tensor, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_tampered_launcher_fails_where_a_sharded_state_is_gathered(project: Path) -> None:
    """The check above can fail: a plugin's depth operator written as a plain function grows the
    whole state (gathered, grown as one process grows it, sharded again), and the launcher stops it."""
    text = (
        SHARDS.format(parallel="parallel fsdp").split("stage six")[0]
        + "stage six { grow depth to 6 with repeat_top  train 2 steps }\n"
    )
    (project / "plugin-fsdp.grow").write_text(text)
    plugins = str(Path(__file__).with_name("plugins"))
    result = launch(
        project, "plugin-fsdp.grow", "--out", "plugin-fsdp", ungathered=True, extra_env={"PYTHONPATH": plugins}
    )
    assert result.returncode != 0
    assert "a sharded training state was gathered whole" in result.stderr


@pytest.mark.slow
def test_fsdp_in_bf16_trains_through_its_mixed_precision_policy(project: Path, two_ranks: Path) -> None:
    """`precision bf16` under `parallel fsdp`: FSDP2 computes with bf16 copies of fp32 weights and
    reduces gradients in fp32, where one process autocasts; the two agree to bf16's precision."""
    for name, extra in (("bf16-fsdp", "parallel fsdp\n"), ("bf16-one", "")):
        text = (project / "seq.grow").read_text().replace("seed 3\n", f"seed 3\nprecision bf16\n{extra}")
        (project / f"{name}.grow").write_text(text)
    result = launch(project, "bf16-fsdp.grow", "--out", "bf16-fsdp")
    assert result.returncode == 0, result.stderr[-3000:]
    single(project, "bf16-one.grow", "--out", "bf16-one")
    sharded, one = records(project / "bf16-fsdp"), records(project / "bf16-one")
    losses = [r["loss"] for r in sharded if r["event"] == "step"]
    reference = [r["loss"] for r in one if r["event"] == "step"]
    assert len(losses) == len(reference) == 34
    assert max(abs(a - b) / b for a, b in zip(losses, reference, strict=True)) < 2e-2
    fp32 = [r["loss"] for r in records(two_ranks) if r["event"] == "step"]
    assert max(abs(a - b) / b for a, b in zip(losses, fp32, strict=True)) > 1e-4  # it did compute in bf16
    assert json.loads((project / "bf16-fsdp" / "run.json").read_text())["precision"] == "bfloat16"


@pytest.mark.slow
@pytest.mark.parametrize(("parallel", "sequential"), [("par.grow", "seq.grow"), ("rewind.grow", "rewind1.grow")])
def test_parallel_probes_score_as_sequential_ones(project: Path, parallel: str, sequential: str) -> None:
    name = parallel.removesuffix(".grow")
    result = launch(project, parallel, "--out", f"par-{name}")
    assert result.returncode == 0, result.stderr[-3000:]
    if not (project / f"seq-{name}").exists():
        single(project, sequential, "--out", f"seq-{name}")
    par, seq = records(project / f"par-{name}"), records(project / f"seq-{name}")
    probes = [(p["candidate"], p["score"]) for p in par if p["event"] == "probe"]
    expected = [(p["candidate"], p["score"]) for p in seq if p["event"] == "probe"]
    assert [c for c, _ in probes] == [c for c, _ in expected] == ["copy_top", "interleave", "identity"]
    for (_, a), (_, b) in zip(probes, expected, strict=True):
        assert abs(a - b) <= 1e-6 * abs(b)
    assert_close(par, seq)  # the same winner, and the same losses after it


@pytest.mark.slow
def test_a_run_resumes_on_another_number_of_ranks(project: Path, one_rank: Path, two_ranks: Path) -> None:
    # 2 ranks to step 15 (a DCP checkpoint), then 1 rank to the end
    result = launch(project, "seq.grow", "--out", "two-to-one", "--max-steps", "15")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ckpt.list_checkpoints(project / "two-to-one" / "checkpoints")[-1].suffix == ".dcp"
    single(project, "--resume", "two-to-one")
    assert_close(records(project / "two-to-one"), records(one_rank))
    # 1 rank to step 22 (a .pt file), then 2 ranks to the end
    single(project, "seq.grow", "--out", "one-to-two", "--max-steps", "22")
    result = launch(project, "--resume", "one-to-two")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_close(records(project / "one-to-two"), records(two_ranks))


@pytest.mark.slow
def test_a_damaged_sharded_checkpoint_is_passed_over(project: Path, one_rank: Path) -> None:
    result = launch(project, "seq.grow", "--out", "damaged", "--max-steps", "26")
    assert result.returncode == 0, result.stderr[-3000:]
    newest = ckpt.list_checkpoints(project / "damaged" / "checkpoints")[-1]
    shard = next(newest.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="checksum"):
        ckpt.verify(newest)
    result = launch(project, "--resume", "damaged")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checkpoint `{newest.relative_to(project)}` is damaged" in result.stderr
    assert_close(records(project / "damaged"), records(one_rank))


def _wait_for(path: Path, ready: str, process: subprocess.Popen[str] | forked.Started, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count(ready) >= 1:
            return
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError(f"`{ready}` never appeared in {path}")


def _children(pid: int) -> dict[int, dict[str, str]]:
    """The processes whose parent is `pid`, with their environments."""
    found = {}
    for entry in child_processes(pid):
        try:
            pairs = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # a process that ended meanwhile
            continue
        found[int(entry.name)] = dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)
    return found


@pytest.fixture(scope="module")
def long_two_ranks(project: Path) -> Path:
    """The long schedule on 2 ranks, uninterrupted, to step 120."""
    result = launch(project, "long.grow", "--out", "long", "--max-steps", "120")
    assert result.returncode == 0, result.stderr[-3000:]
    return project / "long"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
@pytest.mark.parametrize("target", ["ranks", "launcher", "rank 1"])
def test_sigterm_writes_one_checkpoint_and_the_run_resumes(project: Path, long_two_ranks: Path, target: str) -> None:
    """SIGTERM to every rank (what SLURM does), to torchrun (which passes it on to the ranks) or to
    one rank alone: the ranks agree on a step, write one checkpoint together and every one exits 143
    (a rank that got no signal once said SIGINT and exited 130); the run resumes to the very losses
    of the run never interrupted. (torchrun itself, signalled, exits 1.)"""
    name = f"term-{target.replace(' ', '')}"
    out = project / name
    args = ("long.grow", "--out", name, "--max-steps", "120")
    if target == "launcher":  # torchrun's agent passes the signal on to its ranks
        process = subprocess.Popen(
            torchrun(project, *args), cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            _wait_for(out / "metrics.jsonl", '"step":20,', process)
            assert len(_children(process.pid)) == 2
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode != 0
    else:
        ranks = forked.start_ranks(2, ["run", "--quiet", *args], cwd=project)
        try:
            _wait_for(out / "metrics.jsonl", '"step":20,', ranks)
            ranks.send_signal(signal.SIGTERM, rank=None if target == "ranks" else 1)
            finished = ranks.finished(timeout=60)
        finally:
            ranks.kill()
        err = finished.stderr
        assert finished.returncodes == [143, 143], err[-3000:]  # a rank that got no signal once said SIGINT: 130
    assert "interrupted (SIGTERM): checkpoint written to" in err and "SIGINT" not in err
    newest = ckpt.list_checkpoints(out / "checkpoints")[-1]
    assert newest.suffix == ".dcp" and ckpt.load(newest)["step"] > 20
    result = launch(project, "--resume", name, "--max-steps", "120")
    assert result.returncode == 0, result.stderr[-3000:]
    assert records(out) == records(long_two_ranks)


@pytest.mark.slow
def test_sigterm_during_a_parallel_probe_stops_every_rank_at_that_step_and_the_run_resumes(project: Path) -> None:
    """Rank 1 gets SIGTERM as its team begins probe step 3 (two of the three candidates trained side
    by side, a rank each): every rank stops at that step (the teams agree on stop requests in each
    step, as the mainline does), one checkpoint holds the state before the probe, every rank exits
    143, and the resumed run probes again to the losses of the run never interrupted."""
    if not (project / "par-par").exists():  # the uninterrupted run (also the test above's)
        whole = launch(project, "par.grow", "--out", "par-par")
        assert whole.returncode == 0, whole.stderr[-3000:]
    signal_at = {"LAGDSL_TEST_SIGNAL_AT": "26"}
    result = launch(project, "par.grow", "--out", "par-term", extra_env=signal_at, prelude="tests.signalled")
    assert result.returncodes == [143, 143], result.stderr[-3000:]  # not 130: no rank saw SIGINT
    assert "interrupted (SIGTERM): checkpoint written to" in result.stderr
    newest = ckpt.load(ckpt.list_checkpoints(project / "par-term" / "checkpoints")[-1])
    assert newest["step"] == 24  # the probe's first step: the state before it, to probe again
    assert not [r for r in records(project / "par-term") if r["event"] == "probe"]
    resumed = launch(project, "--resume", "par-term")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert records(project / "par-term") == records(project / "par-par")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
def test_a_killed_rank_stops_the_others_and_the_run_resumes_on_two_or_one(project: Path, long_two_ranks: Path) -> None:
    out = project / "killed"
    process = subprocess.Popen(
        torchrun(project, "long.grow", "--out", "killed", "--max-steps", "120"),
        cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(out / "metrics.jsonl", '"event":"checkpoint","step":36', process)
        victim = next(pid for pid, environ in _children(process.pid).items() if environ.get("RANK") == "1")
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        process.communicate(timeout=60)
        assert time.monotonic() - started < 60
    finally:
        process.kill()
    assert process.returncode != 0
    assert ckpt.newest_intact(out / "checkpoints") is not None
    shutil.copytree(out, project / "killed-one")
    result = launch(project, "--resume", "killed", "--max-steps", "120")
    assert result.returncode == 0, result.stderr[-3000:]
    assert records(out) == records(long_two_ranks)  # the same ranks: the very same numbers
    newest = ckpt.newest_intact(project / "killed-one" / "checkpoints")
    assert newest is not None
    resumed_at = int(ckpt.load(newest)["step"])  # where the copy resumes on one rank
    single(project, "--resume", "killed-one", "--max-steps", "120")
    assert_resumed_on_one_rank_is_within_drift(project, project / "killed-one", long_two_ranks, resumed_at)
    # the summary keeps both processes: 2 ranks up to the checkpoint, 1 from there
    segments = json.loads((project / "killed-one" / "summary.json").read_text())["segments"]
    assert [(s["ranks"], s["first_step"], s["last_step"]) for s in segments] == [
        (2, 0, resumed_at),
        (1, resumed_at, 120),
    ]


@pytest.mark.slow
def test_the_rank_left_when_the_other_is_killed_says_so_and_how_to_resume(project: Path, long_two_ranks: Path) -> None:
    """Without a launcher to stop it, the rank that survives a killed one met Gloo's "Connection
    closed by peer" in its next collective and printed an internal error ("a bug in lagdsl"). It
    says which rank was lost and how the run resumes; the resume reaches the uninterrupted events."""
    out = project / "lost"
    ranks = forked.start_ranks(2, ["run", "--quiet", "long.grow", "--out", "lost", "--max-steps", "120"], cwd=project)
    try:
        _wait_for(out / "metrics.jsonl", '"event":"checkpoint","step":36', ranks)
        ranks.send_signal(signal.SIGKILL, rank=1)
        finished = ranks.finished(timeout=120)
    finally:
        ranks.kill()
    assert finished.returncodes == [2, -signal.SIGKILL], finished.stderr[-3000:]
    assert "internal error" not in finished.stderr and "bug in lagdsl" not in finished.stderr
    assert "error: rank 0: rank 1 was lost (it stopped or was killed: " in finished.stderr
    assert "the run resumes from its last checkpoint with `lagdsl run --resume lost`" in finished.stderr
    result = launch(project, "--resume", "lost", "--max-steps", "120")
    assert result.returncode == 0, result.stderr[-3000:]
    assert records(out) == records(long_two_ranks)


def step_losses(run_dir: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in records(run_dir) if r["event"] == "step"}


def assert_resumed_on_one_rank_is_within_drift(project: Path, resumed: Path, two: Path, resumed_at: int) -> None:
    """A run of 2 ranks resumed on 1 is the 2-rank run up to reduction order: one process adds the
    ranks' gradients in another order, a difference of rounding that training then grows step by
    step, how fast depending on the machine's arithmetic (a fixed 1e-4 held on one x86 machine and
    not on another). So the bound is measured on the same machine: the same steps trained by one
    process from the start differ from the 2-rank run by `drift`; the resumed run, equal to the
    2-rank run until `resumed_at` and one process after it, has had fewer steps to drift, so it
    stays within `drift` (times 2 for the growth's own noise, and 1e-6 for steps where both agree)."""
    if not (project / "long-one").exists():
        single(project, "long.grow", "--out", "long-one", "--max-steps", "120")
    one, reference, mine = step_losses(project / "long-one"), step_losses(two), step_losses(resumed)
    assert sorted(mine) == sorted(reference)
    assert all(mine[s] == reference[s] for s in reference if s < resumed_at)  # before: the very same run

    def relative(a: float, b: float) -> float:
        return abs(a - b) / max(abs(a), abs(b))

    after = [s for s in reference if s >= resumed_at]
    drift = max(relative(one[s], reference[s]) for s in after)
    gap = max(relative(mine[s], reference[s]) for s in after)
    assert gap <= 2 * drift + 1e-6, (gap, drift)
    assert [r["event"] for r in records(resumed)] == [r["event"] for r in records(two)]


FROZEN = """
schedule frozen
seed 3
{parallel}
model gpt(context=16, width=16, heads=2, depth=2)
data text("corpus/*.txt", val=0.1)
batch 4
optimizer adamw(lr=3e-3, weight_decay=0.1)
checkpoint every 6 steps (keep=5)
stage base {{ train 6 steps }}
stage heal {{
  grow depth to 4 {{ candidates [llama_pro, copy_top] probe 2 steps }}
  lr_scale new=2
  train 6 steps {{ freeze [old, embed] }}
}}
stage all {{ train 4 steps }}
"""


def model_at(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    """The model of a run's checkpoint after `step` steps (one file, or a DCP folder)."""
    (path,) = [p for p in ckpt.list_checkpoints(run_dir / "checkpoints") if p.name.startswith(f"step-{step:09d}-")]
    return ckpt.load(path)["model"]


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_freezing_holds_on_two_ranks_and_through_a_resume(project: Path, parallel: str) -> None:
    """The old blocks and the embedding frozen while the new blocks heal, on two ranks (DDP, or
    FSDP2 stopped inside the frozen stretch and resumed): one process's losses, and the frozen
    embedding at the stretch's end as it was at its start."""
    if not (project / "frozen-one").exists():
        (project / "frozen-one.grow").write_text(FROZEN.format(parallel=""))
        single(project, "frozen-one.grow", "--out", "frozen-one")
    out = f"frozen-{parallel}"
    (project / f"{out}.grow").write_text(FROZEN.format(parallel=f"parallel {parallel}"))
    if parallel == "fsdp":
        result = launch(project, f"{out}.grow", "--out", out, "--max-steps", "9")
        assert result.returncode == 0, result.stderr[-3000:]
        result = launch(project, "--resume", out)
    else:
        result = launch(project, f"{out}.grow", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = records(project / "frozen-one"), records(project / out)
    assert_close(one, two)
    assert [(r["stage"], r["freeze"]) for r in two if r["event"] == "parts"] == [
        ("heal", ["old", "embed"]),
        ("all", []),
    ]
    for run in ("frozen-one", out):
        assert torch.equal(model_at(project / run, 6)["embed.weight"], model_at(project / run, 12)["embed.weight"])
        assert not torch.equal(model_at(project / run, 12)["embed.weight"], model_at(project / run, 16)["embed.weight"])


@pytest.mark.slow
def test_a_failure_of_rank_0s_event_log_stops_every_rank_with_its_message(tmp_path: Path) -> None:
    """Rank 0 alone writes `metrics.jsonl` (and feeds the trackers): when that fails (here a file
    size limit, as a full disk would), rank 0 once raised alone and the others waited in their next
    collective until the launcher killed them. Now the failure rides the step's all-reduce: every
    rank stops at the same step with exit code 2, and rank 0 says why."""
    np.random.default_rng(0).integers(0, 256, size=12_000, dtype=np.uint16).tofile(tmp_path / "t.bin")
    (tmp_path / "log.grow").write_text(
        "schedule log\nmodel gpt(vocab=256, context=16, width=16, heads=2, depth=1)\n"
        'data tokens("t.bin")\nbatch 4\noptimizer adamw(lr=1e-3)\nstage base {\n  train 600 steps\n}\n'
    )
    limit = 40_000  # bytes a file may hold: metrics.jsonl passes it at about step 200

    started = time.monotonic()
    done = launch(tmp_path, "log.grow", "--out", "run", file_size_limit=limit)
    assert done.returncode != 0
    assert time.monotonic() - started < 120  # not a collective's timeout
    message = f"error: cannot write `{Path('run') / 'metrics.jsonl'}`: File too large"
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "lagdsl:"))]
    assert lines == [message], done.stderr[-3000:]  # rank 0 speaks for all
    # no rank hit a closed connection in a collective: each stopped at the same step, with exit 2
    assert "Connection closed" not in done.stderr and done.returncodes == [2, 2], done.stderr[-3000:]


@pytest.mark.slow
def test_a_full_disk_under_fsdp_is_one_line_from_rank_0_and_the_run_resumes(project: Path, two_ranks: Path) -> None:
    """A file size limit (`ulimit -f`, as a full disk) met while the ranks write a sharded
    checkpoint: DCP's `CheckpointException` (a `BaseException`) once passed every handler and each
    rank printed a raw traceback. Now rank 0 says it in one line, every rank exits 2, the earlier
    checkpoint is intact, and the run resumes to the events of one never interrupted."""
    limit = 180_000  # bytes a file may hold: the step-12 shards (140 and 163 kB) fit, step 24's do not
    result = launch(project, "fsdp.grow", "--out", "fsdp-full", file_size_limit=limit)
    assert result.returncodes == [2, 2], result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "lagdsl:"))]
    assert len(errors) == 1 and "cannot write checkpoint" in errors[0] and "File too large" in errors[0], errors
    assert "Traceback" not in result.stderr
    kept = ckpt.list_checkpoints(project / "fsdp-full" / "checkpoints")
    assert [ckpt.load(p)["step"] for p in kept] == [12]
    assert ckpt.newest_intact(project / "fsdp-full" / "checkpoints") == kept[-1]
    resumed = launch(project, "--resume", "fsdp-full")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_close(records(project / "fsdp-full"), records(two_ranks))  # FSDP trains as DDP (the test above)


@pytest.mark.slow
def test_with_dropout_two_ranks_train_as_one(project: Path, one_rank: Path) -> None:
    """Dropout masks are drawn per global row (`lagdsl.model.dropout`): 2 ranks drop exactly the
    units one process drops, so their losses agree as without dropout (once each rank drew its own)."""
    text = SCHEDULE.format(probes="", keep="", base=10).replace("depth=1)", "depth=1, dropout=0.2)")
    text = text[: text.index("stage two")]  # the first stage is enough: 10 steps and 2 evaluations
    (project / "dropout.grow").write_text(text)
    single(project, "dropout.grow", "--out", "dropout-one")
    result = launch(project, "dropout.grow", "--out", "dropout-two")
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = records(project / "dropout-one"), records(project / "dropout-two")
    assert_close(one, two)
    without = [r["loss"] for r in records(one_rank) if r["event"] == "step"][:10]
    assert [r["loss"] for r in one if r["event"] == "step"] != without  # it does drop
