"""A run directory belongs to one process: `run`, `run --resume` and `run --out` hold a lock on it.

The lock is an advisory `flock` on `RUN/lock`, whose text names the holder (pid, host, start time)
for the message a second process gets. The kernel drops a `flock` when its process dies, so a lock
file left by a killed run is taken over (with a note naming the process that left it). On a file
system without `flock` (some NFS and Lustre mounts) the holder the file names decides: a process
still running on this host, or one on another host, keeps the directory; an empty file or a
process that is gone does not.

Under torchrun rank 0 alone holds it, for all the ranks of its run. The lock file is opened without
following a symbolic link (one planted there would have its target truncated) and must be a
regular file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = "lock"

#: the locks this process holds, by run directory
_HELD: dict[Path, int] = {}

#: what `flock` raises where the file system has no such locks
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockError(Exception):
    """The run directory is another process's; the message is one line for the user."""


def take(run_dir: Path, say: Callable[[str], None] = lambda message: None) -> None:
    """Hold `run_dir` for this process (until `release`, or its end); `LockError` when another holds it."""
    path = run_dir / LOCK_FILE
    try:  # never through a link planted there, and never blocking on a pipe
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LockError(f"`{path}` is a symbolic link, which lagdsl does not follow: remove it") from None
        raise LockError(f"cannot lock `{run_dir}`: {error.strerror or error}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LockError(f"`{path}` is not a regular file (a pipe, a device, ...): remove it")
        previous = _holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockError(f"`{run_dir}` is in use by {_describe(previous)}: wait for it to end, or stop it") from None
        except OSError as error:
            if error.errno not in _NO_FLOCK:
                raise LockError(f"cannot lock `{run_dir}`: {error.strerror or error}") from None
            if previous is not None and _running(previous):
                raise LockError(
                    f"`{run_dir}` is in use by {_describe(previous)} (this file system has no file locks: "
                    f"if that process is gone, delete `{path}`)"
                ) from None
        if previous is not None and previous.get("pid") != os.getpid():
            say(f"`{run_dir}` was left locked by {_describe(previous)}, which is no longer running: taken over")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _HELD[run_dir.resolve()] = fd


def release(run_dir: Path) -> None:
    """Give `run_dir` back (its lock file emptied: free)."""
    fd = _HELD.pop(run_dir.resolve(), None)
    if fd is None:
        return
    with contextlib.suppress(OSError):  # a full or read-only disk: the lock goes with the descriptor
        os.ftruncate(fd, 0)
    os.close(fd)


def release_all() -> None:
    for run_dir in list(_HELD):
        release(run_dir)


def _holder(fd: int) -> dict[str, object] | None:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _running(holder: dict[str, object]) -> bool:
    """Whether the holder may still run: on another host it may; on this one, if its pid lives."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, object] | None) -> str:
    if holder is None:
        return "another process"
    return f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
