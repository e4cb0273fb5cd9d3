"""Probes: every candidate of a growth grown from one snapshot, trained k steps on the mainline's
batches with the mainline's LRs, scored by the selection rule; the best continues (`keep winner`)
or is grown again from the snapshot (`keep rewind`).

Sequential (one process, or `probes sequential`): the candidates one after the other, each on all
ranks. Memory holds the snapshot, the current candidate and, under `keep winner`, the best so far
(under `keep rewind` the winner is grown again, so no candidate outlives its probe). On an
accelerator the snapshot and the best are copies in host memory (`parks`): the device holds one
candidate at a time.

Parallel (`probes parallel` under torchrun): in rounds, the ranks split into teams, one per
candidate (`min(ranks, candidates left)` teams of contiguous ranks, as even as they can be), so
that no rank idles: 3 candidates on 2 ranks are two teams of one rank, then one team of both. A
team trains its candidate on exactly the global batches the sequential probe uses: its ranks read
all N shares of each batch between them (a rank of a smaller team reads several, one after the
other, as gradient accumulation does, so its memory is the mainline's) and sum their weighted
gradients. Scores therefore equal the sequential probe's up to reduction order, and so does the
choice. After each round the scores are gathered; under `keep winner` the winner's training state is
broadcast from its team's first rank to every rank, tensor by tensor.

What it saves: the compute of a probe is the same either way (m candidates x k steps x the global
batch); a team of fewer ranks exchanges gradients among fewer ranks, or none, so the probe saves
the all-reduce of every step and what a rank loses to data parallelism (small per-rank batches on a
GPU, latency). Every team trains its candidate for the same k steps, so each step's requests (a stop
signal, rank 0's failed log) are agreed on by all ranks as on the mainline: a signal during a
parallel probe stops every rank at the same probe step, and the checkpoint holds the state before
the probe, which a resumed run probes again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from lagdsl.artifacts import Dims, ProbeEvent, SelectEvent
from lagdsl.lang.schedule import Growth, OperatorSpec, Schedule, SelectRule, Stage
from lagdsl.runtime.distributed import world as dist
from lagdsl.runtime.state.train_state import StateDict, TrainState, snapshot
from lagdsl.runtime.training import program as P
from lagdsl.runtime.training.losses import NonFiniteLoss, ProbeDiverged, read

if TYPE_CHECKING:
    from lagdsl.artifacts import Artifact
    from lagdsl.model.gpt import GPT


class Host(Protocol):
    """What a probe asks of the engine that runs it (`lagdsl.runtime.training.engine.Engine`): to snapshot
    and restore the mainline, grow, train a step, score, log, and hand the winner back. A probe
    reads and writes nothing else of the engine."""

    @property
    def schedule(self) -> Schedule: ...

    @property
    def world(self) -> dist.World: ...

    def begin_probe(self) -> StateDict:
        """The mainline's snapshot, which the engine holds (and checkpoints) until `end_probe`."""
        ...

    def restore(self, saved: StateDict) -> TrainState:
        """A live state in a snapshot's state."""
        ...

    def grown(
        self, state: TrainState, stage: Stage, growth: Growth, op: OperatorSpec, index: int,
        team: dist.Team | None = None,
    ) -> TrainState: ...  # fmt: skip

    def train_step(
        self, state: TrainState, stage: Stage, step: int, team: dist.Team | None = None
    ) -> tuple[torch.Tensor, float]: ...

    def evaluate(
        self, model: GPT, batches: int | None = None, team: dist.Team | None = None,
        positions: tuple[int, int] | None = None,
    ) -> float: ...  # fmt: skip

    def first_batch_loss(self, model: GPT, step: int, team: dist.Team | None) -> float:
        """The loss on mainline step `step`'s first batch, without training (a `probe 0 steps` score)."""
        ...

    def show_candidate(self, label: str | None, steps: int = 0) -> None:
        """The candidate in training and the probe's length (None: the probe is over), for progress displays."""
        ...

    def stepped(self, stage: Stage, step: int, loss: torch.Tensor) -> None:
        """A probe step done, for the engine's step hook."""
        ...

    def write(self, event: Artifact) -> None:
        """An event into the run's log."""
        ...

    def team(self, members: list[list[int]]) -> tuple[int, dist.Team]:
        """This rank's team among `members` (each team's ranks), and its index."""
        ...

    def end_probe(
        self, ins: P.Probe, stage: Stage, growth: Growth, winner: TrainState, label: str, losses: list[float] | None
    ) -> None: ...


@dataclass
class Result:
    """A candidate's probe: what the events record, and (where this rank trained it) its state."""

    label: str
    losses: list[float]
    lrs: list[float]
    score: float  # inf for a candidate that diverged
    params: int
    rank: int = 0  # the first rank of the team that trained it (where a winner's state is sent from)
    diverged: str | None = None  # what diverged, where

    @property
    def shown_score(self) -> float | None:
        return None if self.diverged is not None else self.score


#: a probe's best candidate so far, as it is kept: live, parked in host memory, or not at all
Kept = TrainState | StateDict | None


def run(engine: Host, ins: P.Probe) -> None:
    """The probe at `ins`, in parallel where the schedule asks and there are ranks to share."""
    stage, growth = P.stage_of(engine.schedule, ins)
    assert growth.probe is not None
    candidates = growth.probe.candidates
    saved = engine.begin_probe()
    if engine.schedule.probes == "parallel" and engine.world.distributed and len(candidates) > 1:
        results, best = _parallel(engine, ins, stage, growth, saved)
    else:
        results, best = _sequential(engine, ins, stage, growth, saved)
    _select(engine, ins, stage, growth, saved, results, best)


def _train(
    engine: Host, ins: P.Probe, stage: Stage, growth: Growth, op: OperatorSpec, saved: StateDict,
    team: dist.Team | None, show: bool,
) -> tuple[Result, TrainState]:  # fmt: skip
    """One candidate grown from the snapshot and trained k steps (by `team`, or by every rank)."""
    probe = growth.probe
    assert probe is not None
    start = ins.start
    engine.show_candidate(op.label, probe.steps)
    state = engine.grown(engine.restore(saved), stage, growth, op, ins.growth, team)
    pending: list[torch.Tensor] = []
    lrs = []
    params = state.model.num_params()
    try:
        for step in range(start, start + probe.steps):
            loss, lr = engine.train_step(state, stage, step, team)
            pending.append(loss)
            lrs.append(lr)
            if show:
                engine.stepped(stage, step, loss)
        losses = read(pending, stage.name, start)  # one transfer for the candidate's k steps
        score = _score(engine, state.model, probe.select, losses, start, team)
        if not math.isfinite(score):
            raise NonFiniteLoss(stage.name, start + probe.steps, score, what=f"its score became {score}")
    except NonFiniteLoss as error:  # dropped, not fatal: the other candidates go on
        # (a team's ranks all read the same reduced loss, so they all come here together)
        return Result(op.label, [], lrs, math.inf, params, engine.world.rank, diverged=str(error)), state
    return Result(op.label, losses, lrs, score, params, engine.world.rank), state


def _sequential(
    engine: Host, ins: P.Probe, stage: Stage, growth: Growth, saved: StateDict
) -> tuple[list[Result], tuple[Result, Kept]]:
    assert growth.probe is not None
    results: list[Result] = []
    best: tuple[Result, Kept] | None = None
    for op in growth.probe.candidates:
        result, state = _train(engine, ins, stage, growth, op, saved, None, True)
        results.append(result)
        _write_probe(engine, ins, stage, op, result)
        if best is None or result.score < best[0].score:  # ties go to the candidate listed first
            best = (result, _kept(growth, state))
        del state
    assert best is not None
    return results, best


def _kept(growth: Growth, state: TrainState) -> Kept:
    """What a probe keeps of its best candidate so far: under `keep winner`, where it goes on, its
    state (parked in host memory where it trains on an accelerator, so that the device holds one
    candidate at a time); nothing under `keep rewind`, where the winner is grown again."""
    assert growth.probe is not None
    if growth.probe.keep != "winner":
        return None
    return snapshot(state) if parks(state) else state


def parks(state: TrainState) -> bool:
    """Whether a probe keeps its best candidate in host memory rather than live: where it trains
    on an accelerator (the probe's snapshot is in host memory already). On a CPU the host is the
    device, and parking would only copy."""
    return state.recipe.device.device.type != "cpu"


def teams(ranks: int, candidates: int) -> list[list[int]]:
    """The ranks of each team: `min(ranks, candidates)` contiguous blocks, as even as they can be."""
    count = min(ranks, candidates)
    return [[r for r in range(ranks) if r * count // ranks == team] for team in range(count)]


def _parallel(
    engine: Host, ins: P.Probe, stage: Stage, growth: Growth, saved: StateDict
) -> tuple[list[Result], tuple[Result, Kept] | None]:
    """Round by round, each team trains its candidate; every rank then learns every score. Returns
    the results in candidate order and this rank's own best candidate (None if it trained none)."""
    assert growth.probe is not None
    candidates = growth.probe.candidates
    ranks = engine.world.size
    results: list[Result | None] = [None] * len(candidates)
    best: tuple[Result, Kept] | None = None
    first = 0
    while first < len(candidates):
        members = teams(ranks, len(candidates) - first)
        index, team = engine.team(members)
        leader = engine.world.rank == members[index][0]
        own, state = _train(engine, ins, stage, growth, candidates[first + index], saved, team, engine.world.main)
        if best is None or own.score < best[0].score:
            best = (own, _kept(growth, state))
        del state
        for rank, result in enumerate(dist.gather(own if leader else None)):
            if result is not None:  # from the first rank of a team: that team's candidate
                results[first + next(i for i, m in enumerate(members) if m[0] == rank)] = result
        first += len(members)
    done = [r for r in results if r is not None]
    assert len(done) == len(candidates)
    for op, result in zip(candidates, done, strict=True):
        _write_probe(engine, ins, stage, op, result)
    return done, best


def _write_probe(engine: Host, ins: P.Probe, stage: Stage, op: OperatorSpec, result: Result) -> None:
    steps = list(range(ins.start, ins.start + len(result.losses)))
    engine.write(
        ProbeEvent(stage=stage.name, growth=ins.growth, candidate=op.label, operator=op.name, args=dict(op.args),
                   steps=steps, losses=result.losses, lrs=result.lrs, score=result.shown_score,
                   diverged=result.diverged)
    )  # fmt: skip


def _select(
    engine: Host, ins: P.Probe, stage: Stage, growth: Growth, saved: StateDict, results: list[Result],
    best: tuple[Result, Kept] | None,
) -> None:  # fmt: skip
    """The winner (the lowest score, the first listed on a tie) continues or is grown again."""
    probe = growth.probe
    assert probe is not None
    engine.show_candidate(None)
    finite = [r for r in results if r.diverged is None and math.isfinite(r.score)]
    if not finite:  # resuming would diverge the same way: say what to change instead
        named = "; ".join(f"`{r.label}`: {r.diverged}" for r in results)
        raise ProbeDiverged(
            stage.name, ins.start,
            f"every candidate of the probe in stage `{stage.name}` diverged ({named}): lower the LR, or drop or "
            "change those operators, and start again",
        )  # fmt: skip
    winner_result = finite[0]
    for result in finite[1:]:  # the lowest score; a tie goes to the candidate listed first
        if result.score < winner_result.score:
            winner_result = result
    label, lengthens = winner_result.label, growth.dim == "context"
    engine.write(
        SelectEvent(stage=stage.name, growth=ins.growth, step=ins.start, rule=probe.select.text,
                    keep=probe.keep, scores={r.label: r.shown_score for r in results}, winner=label,
                    diverged=[r.label for r in results if r.diverged is not None], dim=growth.dim,
                    before=Dims.of(growth.before, lengthens), after=Dims.of(growth.after, lengthens),
                    params=winner_result.params)
    )  # fmt: skip
    if probe.keep == "winner":
        kept = best[1] if best is not None and best[0].label == label else None
        del best
        if engine.schedule.probes == "parallel" and engine.world.distributed and len(results) > 1:
            source = winner_result.rank
            mine = snapshot(kept) if isinstance(kept, TrainState) else kept
            del kept
            kept = engine.restore(dist.broadcast_tensors(mine, source))  # the same on every rank, bit for bit
        assert kept is not None
        winner = kept if isinstance(kept, TrainState) else engine.restore(kept)  # counters still the snapshot's
    else:
        del best
        op = next(op for op in probe.candidates if op.label == label)
        winner = engine.grown(engine.restore(saved), stage, growth, op, ins.growth)
    engine.end_probe(ins, stage, growth, winner, label, winner_result.losses if probe.keep == "winner" else None)


def _score(
    engine: Host, model: GPT, rule: SelectRule, losses: list[float], start: int, team: dist.Team | None
) -> float:
    """A candidate's score by the selection rule (lower is better)."""
    if rule.metric == "val_loss":
        return engine.evaluate(model, team=team, positions=rule.positions)
    if not losses:  # probe 0 steps: the loss right after growth, on the stage's first batch
        return engine.first_batch_loss(model, start, team)
    assert rule.window is not None
    return sum(losses[-rule.window :]) / rule.window
