"""Several processes: the ranks `torchrun` starts, and what they must agree on.

`lagdsl run` under `torchrun --nproc_per_node N -m lagdsl run x.grow` finds `RANK`, `WORLD_SIZE`
and `LOCAL_RANK` in its environment, joins the process group (Gloo for CPU tensors, NCCL for CUDA
ones: one group serves both) and leaves it on every way out (`session`). Without those variables
nothing here does anything: a `World` of one rank, no collectives. Under torchrun with one rank the
run takes the distributed path all the same (DDP or FSDP around the model, DCP checkpoints), so
that one GPU checks what N use.

What ranks share, and how:

- the data: `batch B` is the global batch; rank r reads rows [r B/N, (r+1) B/N) of the very batch
  one process would read (`Batches` draws the global batch's windows and keeps its share);
- the gradients: DDP averages them, which is the gradient of the global mean loss since every
  rank's share is the same size;
- the numbers every rank reports or decides on (the loss, a validation loss, a probe's score, a
  stop request): all-reduced, so every rank takes the same branch;
- what only rank 0 does (the run directory, `metrics.jsonl`, the progress display, the summary):
  rank 0 does it and tells the others the outcome (`on_main`), errors included, so that no rank is
  left waiting in a collective for a rank that gave up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar, cast

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from lagdsl.runtime.data.batches import Shard

T = TypeVar("T")


def collective_timeout() -> timedelta:
    """How long a collective waits for a rank that does not arrive (a dead or hung rank) before every
    other rank fails with an error; torchrun's agent then stops the rest (`LAGDSL_COLLECTIVE_TIMEOUT`,
    seconds, read when the group is made: a process forked after lagdsl was imported sees its own)."""
    return timedelta(seconds=int(os.environ.get("LAGDSL_COLLECTIVE_TIMEOUT", "600")))


def exit_wait() -> timedelta:
    """How long a rank that is done waits for the others before it destroys its process group
    (`session`; `LAGDSL_EXIT_WAIT`, seconds)."""
    return timedelta(seconds=int(os.environ.get("LAGDSL_EXIT_WAIT", "10")))


class DistError(Exception):
    """Ranks that cannot work together (a bad environment, ranks that diverged); one line."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: one rank of it too runs with DDP or FSDP

    @property
    def distributed(self) -> bool:
        """Under torchrun (even as its one rank: the same code path as N ranks), or N > 1."""
        return self.launched or self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> World:
        """The world torchrun describes in the environment (one rank when it does not)."""
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env:
            return World()
        try:
            size, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise DistError(
                "RANK, WORLD_SIZE and LOCAL_RANK must be integers: start several ranks with "
                "`torchrun --nproc_per_node N -m lagdsl run FILE`"
            ) from None
        if not (size >= 1 and 0 <= rank < size and local >= 0):
            raise DistError(f"RANK={rank} is not a rank of WORLD_SIZE={size}: start the ranks with `torchrun`")
        return World(rank, size, local, launched=True)


#: One process, no torchrun.
ONE = World()


def backend() -> str:
    """Gloo for CPU tensors, and NCCL for CUDA ones where CUDA is present."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


@contextmanager
def session(world: World) -> Iterator[World]:
    """The process group of `world` (none for one rank), destroyed on every way out.

    Before a rank destroys its group, the ranks meet in the rendezvous store (not in a collective,
    which would leave the same race one level down): a rank that tore its connections down while a
    peer's last collective was still in flight could abort that peer. On a normal end every rank
    arrives; after an error that every rank shares (the usual case: a bad schedule, a failed check)
    they arrive at once; a rank that failed alone waits `exit_wait()` for the others, then leaves."""
    if not world.distributed:
        yield world
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    timeout = collective_timeout()
    store, _, _ = next(dist.rendezvous("env://", world.rank, world.size, timeout=timeout))
    store.set_timeout(timeout)
    dist.init_process_group(backend(), store=store, rank=world.rank, world_size=world.size, timeout=timeout)
    try:
        yield world
    finally:
        meet(dist.PrefixStore("lagdsl/exit", store), world)
        dist.destroy_process_group()


def meet(store: dist.Store, world: World, timeout: timedelta | None = None) -> bool:
    """Wait until every rank of `world` has called `meet` on `store` (once per process), or
    `timeout` (`exit_wait()`) has passed, or the store is gone; True when all arrived."""
    try:
        if store.add("arrived", 1) == world.size:  # the last to arrive lets everyone go
            store.set("all", "1")
        store.wait(["all"], timeout or exit_wait())
    except (RuntimeError, dist.DistError):  # a timeout, or the launcher's store has gone
        return False
    return True


def leave(code: int) -> NoReturn:
    """End this rank's process with `code` once its work is done and its process group destroyed,
    without the interpreter's finalization. Gloo's worker threads may still be releasing the
    tensors of a finished collective when Python finalizes; a thread that then needs the GIL is
    stopped by the interpreter, and the C++ runtime aborts the whole process ("terminate called
    without an active exception", SIGABRT), so that a finished rank reports a crash. Every file of
    the run is closed by now; only the standard streams need flushing."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(values: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """`values` summed over the ranks of `group` (the world by default), in place, and returned."""
    if active():
        dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any."""
    if not active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_sum(value).item() > 0)


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: T, src: int = 0) -> T:
    """Rank `src`'s `value` on every rank (any picklable object)."""
    if not active():
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=src)
    return cast(T, box[0])


@dataclass(frozen=True)
class _Slot:
    """Where a tensor was in a structure `broadcast_tensors` sends: its shape and dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def broadcast_tensors(value: T | None, src: int) -> T:
    """Rank `src`'s `value` (nested dicts and lists of CPU tensors and plain data: a state dict) on
    every rank, on the CPU: its structure is pickled with each tensor's shape and dtype in its
    place, and each tensor is then sent by itself (through the rank's GPU under NCCL), so no rank
    holds a pickled copy of the whole state."""
    if not active():
        assert value is not None
        return value
    cuda = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    tensors: list[torch.Tensor] = []

    def strip(item: object) -> object:
        if isinstance(item, torch.Tensor):
            tensors.append(item)
            return _Slot(tuple(item.shape), item.dtype)
        if isinstance(item, dict):
            return {k: strip(v) for k, v in item.items()}
        if isinstance(item, list):
            return [strip(v) for v in item]
        return item

    mine = dist.get_rank() == src
    skeleton = broadcast(strip(value) if mine else None, src=src)
    sent = iter(tensors)

    def fill(item: object) -> object:
        if isinstance(item, _Slot):
            buffer = next(sent).to(device) if mine else torch.empty(item.shape, dtype=item.dtype, device=device)
            dist.broadcast(buffer, src=src)
            return buffer.cpu() if not mine else buffer.to("cpu", copy=True)
        if isinstance(item, dict):
            return {k: fill(v) for k, v in item.items()}
        if isinstance(item, list):
            return [fill(v) for v in item]
        return item

    return cast(T, fill(skeleton))


def gather(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def on_main(world: World, action: Callable[[], T], errors: tuple[type[BaseException], ...]) -> T:
    """`action()` run on rank 0 alone, its result given to every rank. One of `errors` raised on
    rank 0 is raised on every rank, so that all of them stop together with rank 0's message."""
    if not world.distributed:
        return action()
    outcome: tuple[bool, Any] = (True, None)
    if world.main:
        try:
            outcome = (True, action())
        except errors as error:
            outcome = (False, error)
    ok, value = broadcast(outcome)
    if not ok:
        raise value
    return cast(T, value)


def fingerprint(model: torch.nn.Module) -> torch.Tensor:
    """A few numbers that differ when two models differ in shape or (almost surely) in values:
    per parameter its element count, its sum and its first element, in float64."""
    rows = []
    for _, param in sorted(model.state_dict().items()):
        flat = param.detach().reshape(-1).double()
        first = flat[0] if flat.numel() else flat.new_zeros(())
        rows.append(torch.stack([flat.new_tensor(float(flat.numel())), flat.sum(), first]))
    return torch.stack(rows).reshape(-1)


def check_same(model: torch.nn.Module, what: str, team: Team | None = None) -> None:
    """Fail loudly unless every rank (of `team`, when given) holds the same model (after a growth:
    the same operator drew the same new weights everywhere). Four all-reduces of a few numbers."""
    if not active() or (team is not None and team.group is None):
        return
    group = team.group if team is not None else None
    mine = fingerprint(model)
    sizes = torch.tensor([float(mine.numel())], dtype=torch.float64, device=mine.device)
    low, high = sizes.clone(), sizes.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    same = bool(low.item() == high.item())
    if same:
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
        dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
        same = bool(torch.allclose(low, high, rtol=1e-9, atol=0.0))
    if not same:
        raise DistError(
            f"the ranks hold different models after {what}: they diverged (a different lagdsl, "
            "PyTorch or schedule on some rank?); the run stops"
        )


@dataclass(frozen=True)
class Team:
    """Ranks that train one model by themselves (a parallel probe's group), on the whole global
    batch: this rank reads `shards` of it, each weighted `weight` in the mean (1 / the number of
    shares), and the team sums gradients and losses over its ranks (`group`; None: a team of one)."""

    group: dist.ProcessGroup | None
    shards: tuple[Shard, ...]
    weight: float

    def loss(self, local: torch.Tensor) -> float:
        """The team's mean from this rank's weighted part."""
        if self.group is not None:
            dist.all_reduce(local, op=dist.ReduceOp.SUM, group=self.group)
        return float(local.item())

    def sum_gradients(self, model: torch.nn.Module) -> None:
        """Every rank's weighted gradients summed over the team (one all-reduce): the gradient of the
        mean loss over the global batch, as DDP's average is on the mainline."""
        if self.group is None:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        for grad, summed in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            grad.copy_(summed)


class Teams:
    """The parallel probes' teams of one run: process groups are made by every rank, for every team
    of more than one rank, in the same order (as `new_group` requires), once per layout."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.groups: dict[tuple[tuple[int, ...], ...], list[dist.ProcessGroup | None]] = {}

    def of(self, members: list[list[int]]) -> tuple[int, Team]:
        """This rank's team among `members` (each team's ranks): its index and its `Team`."""
        world = self.world
        layout = tuple(tuple(m) for m in members)
        if layout not in self.groups:
            self.groups[layout] = [dist.new_group(list(m)) if len(m) > 1 else None for m in layout]
        index = next(i for i, m in enumerate(layout) if world.rank in m)
        mine = layout[index]
        position = mine.index(world.rank)
        own = tuple(Shard(s, world.size) for s in range(world.size) if s % len(mine) == position)
        return index, Team(self.groups[layout][index], own, 1.0 / world.size)


def shares(team: Team | None) -> tuple[tuple[Shard | None, ...], float]:
    """The shares of each global batch this rank reads (None: its own), and each one's weight in the
    mean: a parallel probe's `team`'s, or the rank's own share at weight 1."""
    return (team.shards, team.weight) if team is not None else ((None,), 1.0)
