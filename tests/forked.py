"""`lagdsl` in processes forked from a server that has imported torch and lagdsl once.

A new interpreter pays about 4 s of CPU to import torch, lagdsl and what a run imports on its way
(DCP, FSDP, the optimizer's compiler hooks); a test that starts a run in a process of its own,
or several ranks of one, paid that for each. Here every such process is forked from one server
that imported it all once (multiprocessing's forkserver with a preload list; PyTorch's own
`MultiProcessTestCase` forks its ranks the same way), so a process starts in milliseconds:

- `start(args)`: one `lagdsl ARGS` process, as `python -m lagdsl ARGS` would be;
- `start_ranks(n, args)` / `run_ranks(n, args)`: n ranks of one run, as `torchrun --standalone
  --nproc_per_node n -m lagdsl ARGS` starts them: the same environment variables, and a TCP store
  (hosted here, as torchrun's agent hosts it) where they meet.

The server never runs an operator, so it holds no OpenMP thread pool that a fork would break; a
child takes its thread count from `OMP_NUM_THREADS` as an interpreter would. Each child gets the
environment, working directory and arguments given, writes its stdout and stderr to files read back
when it ends, runs the interpreter's exit hooks and exits with lagdsl's code (a child killed by a
signal: minus the signal's number, as `subprocess` reports it).

Tests of the launcher itself (torchrun's agent forwarding signals, its c10d rendezvous) start
torchrun; everything else here.
"""

from __future__ import annotations

import atexit
import faulthandler
import importlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: imported once by the server: what a run imports, so no child imports it again
PRELOAD = [
    "torch",
    "torch.distributed",
    "torch.distributed.checkpoint",
    "torch.distributed.fsdp",
    "torch.distributed.tensor",
    "torch._dynamo",
    "numpy",
    "lagdsl.cli",
    "lagdsl.cli.training",
    "lagdsl.cli.model",
    "lagdsl.plan",
    "lagdsl.runtime.run.start",
    "lagdsl.runtime.records.trackers",
    "lagdsl.analysis.report",
    "tests.forked",
]

_context: Any = None
_output: Path | None = None


def output() -> Path:
    """Where the children's output goes (a folder a start), made by the process that starts them
    and removed when it ends."""
    global _output
    if _output is None:
        _output = Path(tempfile.mkdtemp(prefix="lagdsl-forked-"))
        atexit.register(shutil.rmtree, _output, True)
    return _output


def context() -> Any:
    """The forkserver context, its preload list set (the server starts at the first process)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        _leave_main_alone()
    return _context


def _leave_main_alone() -> None:
    """A child needs nothing of this process's main module (pytest's, or a script read from stdin
    that no child could run again): multiprocessing's preparation data names none."""
    from multiprocessing import spawn

    if getattr(spawn.get_preparation_data, "leaves_main_alone", False):
        return
    prepared = spawn.get_preparation_data

    def without_main(name: str) -> dict[str, Any]:
        data = prepared(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    without_main.leaves_main_alone = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = without_main


def _child(
    args: Sequence[str], cwd: str, env: Mapping[str, str], out: str, err: str, prelude: str | None, size: int | None
) -> None:
    """The body of a forked child: become `lagdsl ARGS` in `cwd` with `env`, output to the files
    (`size`: the most bytes a file it writes may hold, as `ulimit -f` sets it)."""
    if size is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(file, fd)
        os.close(file)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    if env.get("PYTHONFAULTHANDLER"):
        faulthandler.enable(all_threads=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import torch

    threads = env.get("OMP_NUM_THREADS")
    torch.set_num_threads(int(threads) if threads else os.cpu_count() or 1)
    if prelude:
        importlib.import_module(prelude)  # e.g. `tests.ungathered`: patches applied on import
    from lagdsl.cli import main

    code: object = 0
    try:
        main(list(args), prog_name="lagdsl")
    except SystemExit as exit:
        code = exit.code
    finally:
        atexit._run_exitfuncs()  # what the interpreter would run at its exit (W&B, TensorBoard)
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


@dataclass
class Finished:
    """What `subprocess.run` returns, for a forked process or a group of ranks (`returncode`: the
    worst rank's, the first non-zero; `returncodes`: each rank's)."""

    args: list[str]
    returncode: int
    returncodes: list[int]
    stdout: str
    stderr: str


class Started:
    """Forked processes running `lagdsl ARGS` (one, or the ranks of a run): like `subprocess.Popen`
    for what the tests use of it (`pid`, `pids`, `poll`, `send_signal`, `wait`, `communicate`)."""

    def __init__(self, args: Sequence[str], processes: list[Any], folder: Path, store: Any = None) -> None:
        self.args, self.processes, self.folder, self.store = list(args), processes, folder, store
        self.returncode: int | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def pid(self) -> int:
        return self.processes[0].pid

    def poll(self) -> int | None:
        """None while any process runs; then the group's code."""
        if any(p.exitcode is None for p in self.processes):
            return None
        codes = [p.exitcode for p in self.processes]
        self.returncode = next((c for c in codes if c != 0), 0)
        return self.returncode

    def send_signal(self, signum: int, rank: int | None = None) -> None:
        """`signum` to every process (as torchrun passes a signal on to its ranks), or to one rank."""
        targets = self.processes if rank is None else [self.processes[rank]]
        for process in targets:
            if process.exitcode is None:
                os.kill(process.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        for process in self.processes:
            process.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self.poll() is None:
            self.kill()
            for process in self.processes:
                process.join()
            raise subprocess.TimeoutExpired(self.args, timeout or 0, self._read("out"), self._read("err"))
        return self.returncode  # type: ignore[return-value]

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self._read("out"), self._read("err")

    def finished(self, timeout: float | None = None) -> Finished:
        out, err = self.communicate(timeout)
        codes = [int(p.exitcode) for p in self.processes]
        shutil.rmtree(self.folder, ignore_errors=True)
        self.store = None  # the ranks are gone: let their store go
        return Finished(self.args, self.returncode or 0, codes, out, err)

    def _read(self, stream: str) -> str:
        """Rank 0's stream first, then the others' (as torchrun's output interleaves them)."""
        texts = []
        for i in range(len(self.processes)):
            path = self.folder / f"{i}.{stream}"
            texts.append(path.read_text(errors="replace") if path.exists() else "")
        return "".join(texts)


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}


def start(
    args: Sequence[str], *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
    prelude: str | None = None, file_size_limit: int | None = None,
) -> Started:  # fmt: skip
    """`lagdsl ARGS` in a forked process (`env` added to this process's environment; `prelude`: a
    module imported first; `file_size_limit`: as `ulimit -f`, in bytes)."""
    return _start(args, [_environment(env)], cwd, prelude, file_size_limit)


def start_ranks(
    ranks: int, args: Sequence[str], *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
    prelude: str | None = None, file_size_limit: int | None = None,
) -> Started:  # fmt: skip
    """`lagdsl ARGS` on `ranks` ranks, as torchrun starts them: one thread each, torchrun's variables,
    and a TCP store hosted by this process (a port the system chose: no race for a free one)."""
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, ranks, is_master=True, wait_for_workers=False)
    common = {
        **_environment(env), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "TORCHELASTIC_USE_AGENT_STORE": "True",
        "WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks), "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1",
        "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "0", "TORCHELASTIC_RUN_ID": "none",
    }  # fmt: skip
    for key in ("ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME"):
        common.pop(key, None)
    envs = [{**common, "RANK": str(r), "LOCAL_RANK": str(r)} for r in range(ranks)]
    return _start(args, envs, cwd, prelude, file_size_limit, store)


def run_ranks(ranks: int, args: Sequence[str], *, timeout: float = 240, **kwargs: Any) -> Finished:
    """`lagdsl ARGS` on `ranks` ranks, to their end."""
    return start_ranks(ranks, args, **kwargs).finished(timeout)


def _start(
    args: Sequence[str], envs: Iterable[dict[str, str]], cwd: Path | str | None, prelude: str | None,
    size: int | None = None, store: Any = None,
) -> Started:  # fmt: skip
    folder = Path(tempfile.mkdtemp(dir=output()))
    where = str(Path(cwd) if cwd is not None else Path.cwd())
    processes = []
    for i, env in enumerate(envs):
        files = (str(folder / f"{i}.out"), str(folder / f"{i}.err"))
        process = context().Process(target=_child, args=(list(args), where, env, *files, prelude, size))
        process.start()
        processes.append(process)
    return Started(args, processes, folder, store)
