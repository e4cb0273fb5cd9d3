"""The engine: interprets a program, training a `GPT` that grows as the schedule says.

Determinism. Batches are pure functions of (seed, step, rank, micro-step); new weights, noise and
unit choices draw from generators seeded by (seed, stage, growth, purpose); dropout is seeded by
(seed, step) before each step. So on CPU the same schedule gives the same losses, bit for bit, and
a run resumed from a checkpoint gives the losses of the run that was never interrupted.

Probes. At a landscape-aware growth the engine snapshots the model and optimizer (copies on the
CPU), and for each candidate restores the snapshot, grows, and trains k steps on the mainline's
batches with the mainline's LR values, then scores it by the selection rule. Under `keep winner`
the winner continues and its probe steps are the stage's first mainline steps: the best candidate
so far is kept, so memory holds the snapshot, the current candidate and the best (on a GPU the
snapshot and the best in host memory, the candidate alone on the device). Under `keep
rewind` the winner is grown again from the snapshot (the same generator gives the same weights) and
the stage trains from its first step: no candidate outlives its probe.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from lagdsl.artifacts import Artifact, Dims, EndEvent, GrowEvent, StageEvent, StepEvent
from lagdsl.lang.lr import lr_at, rewarm_factor
from lagdsl.lang.schedule import Growth, OperatorSpec, Schedule, Shape, Stage
from lagdsl.model.dropout import row_keys
from lagdsl.model.gpt import GPT
from lagdsl.plan.cost import CostModel
from lagdsl.runtime.data.batches import Batches
from lagdsl.runtime.distributed import world as dist
from lagdsl.runtime.records.metrics import Metrics
from lagdsl.runtime.records.segments import Segments
from lagdsl.runtime.state.seeds import generator, seed_for
from lagdsl.runtime.state.train_state import Device, Recipe, StateDict, TrainState, make_optimizer, restore, snapshot
from lagdsl.runtime.training import growing, parts, probes, sync
from lagdsl.runtime.training import program as P
from lagdsl.runtime.training.agreement import Agreement
from lagdsl.runtime.training.evaluation import Evaluator, Within
from lagdsl.runtime.training.losses import NonFiniteLoss, Pending, add_aux, aux_fields, step_values

__all__ = ["Device", "Engine", "NonFiniteLoss", "generator", "make_optimizer", "seed_for"]


#: The phases whose wall time `Engine.phase_seconds` adds up.
PHASES = ("train", "probes", "growth", "wrap", "checkpoints", "evaluation")

#: Called after every training step, probes' included: (engine, stage name, step, loss). The loss
#: is still on the device: reading it (`float(loss)`) waits for the device, so a hook reads it only
#: when it needs the value (`lagdsl.runtime.training.losses`).
OnStep = Callable[["Engine", str, int, torch.Tensor], None]


@dataclass(frozen=True)
class _ProbeStart:
    """The state before a probe in progress: what a checkpoint taken inside it saves."""

    saved: StateDict
    metrics_lines: int
    clock: float  # perf_counter() when the probe began


class Engine:
    """Interprets a program from the training state's `pc`, reading and writing only that state.

    `state` is the mainline `TrainState`; inside a probe the engine holds only the snapshot and the
    candidates' states, and `state` is not available (a checkpoint then saves the snapshot).
    """

    def __init__(
        self,
        schedule: Schedule,
        program: tuple[P.Instruction, ...],
        batches: Batches,
        device: Device,
        metrics: Metrics,
        on_checkpoint: Callable[[Engine, int], None],
        on_step: OnStep | None = None,
        max_steps: int | None = None,
        world: dist.World = dist.ONE,
    ) -> None:
        self.schedule, self.program, self.batches, self.dev = schedule, program, batches, device
        self.metrics, self.on_checkpoint, self.on_step = metrics, on_checkpoint, on_step
        self.max_steps, self.world = max_steps, world
        self.recipe = Recipe(schedule, device, world)
        self.cost = CostModel(schedule)
        self.eval_batches = schedule.eval_batches
        self._state: TrainState | None = None
        self._probe: _ProbeStart | None = None
        self.probing: str | None = None  # the candidate being probed, for progress displays
        self.probe_steps = 0  # the length of the probe in progress
        self.interrupted = False  # set by a signal handler; honoured between steps
        self.terminated = False  # the signal was SIGTERM (a scheduler's), not SIGINT
        self.agreed = Agreement()  # under several ranks: the stop request and signal all ranks agreed on
        #: what a step calls for the model trained last, and how it shares (`lagdsl.runtime.training.sync`)
        self.wrappers = sync.Wrappers(schedule, self.recipe, world, self._reduce_step)
        self.evaluator = Evaluator(batches, device.device, self.autocast, world, schedule.eval_batches)
        self.pending = Pending()  # mainline losses not read yet
        self.last_aux: tuple[int, torch.Tensor] | None = None  # a mixture's aux losses at the newest step
        self._frozen_count: tuple[object, int] = (None, 0)  # (model and frozen set, their frozen parameters)
        #: a growing stage that unfroze what the stage before froze: its parts event waits for the
        #: growth (at the same step), so the log never shows the stage's list with nothing frozen
        self._parts_pending = False
        #: the processes that trained the run, this one last (a resume replaces it: `lagdsl.runtime.records.segments`)
        self.segments = Segments([], world.size)
        self.teams = dist.Teams(world)  # parallel probes' teams and their process groups
        self.step_seconds = 0.0  # wall time inside training steps (mainline and probe), this process
        #: wall seconds of this process by phase: train (mainline steps), probes (their steps,
        #: growths and scoring), growth (every growth, a probe's candidates' too: the operator,
        #: and under fsdp the gathering and sharding), wrap (building the DDP or compile wrapper
        #: of a new model), checkpoints, evaluation
        self._seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    @property
    def phase_seconds(self) -> dict[str, float]:
        return {**self._seconds, "wrap": self.wrappers.seconds}

    # -- state

    @property
    def state(self) -> TrainState:
        if self._state is None:
            raise RuntimeError("the engine has no training state: inside a probe, or before `initialize`")
        return self._state

    @state.setter
    def state(self, state: TrainState) -> None:
        self._state = state

    def initialize(self) -> None:  # the state at the start of the program
        self._state = self.recipe.initial()

    def load(self, saved: StateDict) -> None:
        """The state of a checkpoint."""
        self._state = TrainState.from_state_dict(self.recipe, saved)

    @property
    def in_probe(self) -> bool:
        return self._probe is not None

    @property
    def step(self) -> int:
        """The next mainline step (inside a probe: the probe's first step)."""
        if self._probe is not None:
            return int(self._probe.saved["step"])
        return self.state.step

    @property
    def stage_name(self) -> str:
        """The stage of the instruction at `pc` (the last stage at the end)."""
        program = self.program[: self.pc + 1]
        index = next((ins.stage for ins in reversed(program) if not isinstance(ins, P.End)), 0)
        return self.schedule.stages[index].name

    @property
    def pc(self) -> int:
        """The next instruction (inside a probe: the probe itself)."""
        if self._probe is not None:
            return int(self._probe.saved["pc"])
        return self.state.pc

    def checkpoint_state(self) -> StateDict:
        """What a checkpoint taken now holds. Inside a probe, that is the state before the probe
        (the snapshot), with the program counter at the probe: a resumed run probes again."""
        if self._probe is not None:
            saved = dict(self._probe.saved)
            saved["elapsed"] = self._probe_elapsed()
            saved["metrics_lines"] = self._probe.metrics_lines
            return saved
        self._read_losses()  # the steps trained so far logged, so that the log and the state agree
        self.state.metrics_lines = self.metrics.lines
        return self.state.state_dict(shards=True)  # a sharded model: each rank's shards, gathered by none

    def elapsed(self) -> float:
        return self._probe_elapsed() if self._probe is not None else self.state.elapsed()

    def _probe_elapsed(self) -> float:
        assert self._probe is not None
        return float(self._probe.saved["elapsed"]) + time.perf_counter() - self._probe.clock

    # -- the loop

    def run(self, until: int | None = None) -> bool:
        """Interpret the program from `pc` up to instruction `until` (default: the end); False when
        `max_steps` stopped it early."""
        end = len(self.program) if until is None else until
        try:
            while self.state.pc < end:
                if self.stopping:
                    raise KeyboardInterrupt
                instruction = self.program[self.state.pc]
                # `--max-steps`: stop before anything that trains; an evaluation or checkpoint of the
                # step reached still happens
                reached = self.max_steps is not None and self.state.step >= self.max_steps
                if reached and not isinstance(instruction, P.Eval | P.Checkpoint):
                    return False
                match instruction:
                    case P.StageStart() as ins:
                        self._stage_start(ins)
                    case P.Train() as ins:
                        with self._timed("train"):
                            self.train(ins.stage, ins.start, ins.steps)
                    case P.Grow() as ins:
                        self._grow(ins)
                    case P.Probe() as ins:
                        with self._timed("probes"):
                            self._run_probe(ins)
                    case P.Eval() as ins:
                        with self._timed("evaluation"):
                            self._eval(ins)
                    case P.Checkpoint() as ins:
                        with self._timed("checkpoints"):
                            self._checkpoint(ins)
                    case P.End() as ins:
                        self.metrics.write(EndEvent(step=ins.step, flops=self.state.flops))
                self.state.pc += 1
        except _Stop:
            return False
        return True

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[phase] += time.perf_counter() - started

    def _stage_start(self, ins: P.StageStart) -> None:
        stage = self.schedule.stages[ins.stage]
        shape, after = self.state.model.config, stage.after
        self.metrics.write(
            StageEvent(stage=ins.name, index=ins.stage, step=ins.step, depth=shape.depth, width=shape.width,
                       after=Dims.of(after, after.context != self.schedule.model.context))
        )  # fmt: skip
        # a stage that grows resolves its parts after its growth; until then everything trains
        resolved = parts.resolve(stage if not stage.growths else None, self.state.model, frozenset())
        if self.state.set_parts(frozenset(), *resolved):
            self.wrappers.clear()  # a wrapper (DDP) knows which parameters train
            if stage.growths:
                self._parts_pending = True
            else:
                self.metrics.write(parts.event(stage, self.state))  # what is frozen from here on

    def train(self, stage_index: int, start: int, steps: int) -> None:
        """Train the mainline on mainline steps `start`, ..., `start + steps - 1` of stage
        `stage_index`, logging each step; a resumed state may start inside the range."""
        state = self.state
        stage = self.schedule.stages[stage_index]
        try:
            for step in range(max(start, state.step), start + steps):
                if self.max_steps is not None and step >= self.max_steps:
                    raise _Stop
                loss, lr = self.train_step(state, stage, step)
                state.step = step + 1
                state.mainline_flops += self.step_flops(state, stage.after, 1)
                self.pending.add(stage, step, loss, lr)
                if self.on_step is not None:
                    self.on_step(self, stage.name, step, loss)
                if self._logs(step):
                    self._read_losses()
        finally:  # whatever comes next (a growth, a checkpoint, an interruption) sees them read
            self._read_losses()

    def _logs(self, step: int) -> bool:
        return step % self.schedule.log_every == 0 or step == self.schedule.total_steps - 1

    def _read_losses(self) -> None:
        """Read the pending steps' losses (one transfer), check them, and log them."""
        for stage, step, loss, lr in self.pending.take():
            self._log_step(stage, step, loss, lr)

    def _log_step(self, stage: Stage, step: int, loss: float, lr: float, probe: bool = False) -> None:
        state = self.state
        state.last_loss = loss
        if self._logs(step):
            tokens = self.schedule.tokens_at(step + 1)
            event = StepEvent(
                step=step, stage=stage.name, loss=loss, lr=lr, tokens=tokens, flops=state.flops,
                elapsed=round(state.elapsed(), 3), **({"from_probe": True} if probe else {}),
                **aux_fields(self.last_aux, step, probe),
            )  # fmt: skip
            self.metrics.write(event)

    def autocast(self) -> AbstractContextManager[object]:
        """Autocast to the run's precision (sharded models have FSDP's mixed precision instead)."""
        return self.dev.autocast() if self.recipe.autocast_dtype is not None else nullcontext()

    @property
    def stopping(self) -> bool:
        """Whether to stop at this step boundary. One process: as soon as a signal came. Several
        ranks: once the ranks agreed on it (each step all-reduces the requests), so that all of them
        stop at the same boundary and write one checkpoint together."""
        return self.agreed.stop if self.world.distributed else self.interrupted

    def lr(self, stage: Stage, step: int) -> float:
        s = self.schedule
        return lr_at(step, s.lr, s.optimizer.lr, s.total_steps) * rewarm_factor(step, stage.start_step, stage.rewarm)

    def train_step(
        self, state: TrainState, stage: Stage, step: int, team: dist.Team | None = None
    ) -> tuple[torch.Tensor, float]:
        """One optimizer step of `state` on mainline step `step`'s batches; the mean loss (on the
        device, not read: see `lagdsl.runtime.training.losses`) and the LR. With a `team` (the ranks of a
        parallel probe's group), the team's ranks alone train `state`, on the same global batch."""
        if self.stopping:
            raise KeyboardInterrupt
        started = time.perf_counter()
        schedule = self.schedule
        model, optimizer, scaler = state.model, state.optimizer, state.scaler
        lr = self.lr(stage, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        torch.manual_seed(seed_for(schedule.seed, "dropout", step))
        total = torch.zeros((), device=self.dev.device)
        aux_total: torch.Tensor | None = None  # a mixture's auxiliary losses, for the log
        model.train()
        forward, shared = self.wrappers.of(model, team)
        for micro in range(schedule.accumulate):
            with shared.accumulating(last=micro == schedule.accumulate - 1):
                for shard in shared.shares:
                    inputs, targets = self.batches.train(step, micro, shard, model.config.context)
                    keys = None
                    if model.config.dropout > 0:  # masks by global row: N ranks drop what one process does
                        first = self.batches.first_row(shard, model.config.context)
                        keys = row_keys(schedule.seed, step, micro, first, len(inputs), inputs.device)
                    with self.autocast():
                        _, loss = forward(inputs, targets, keys)
                    assert loss is not None  # given targets, the model returns the loss
                    aux = model.aux_loss()  # a mixture's auxiliary losses train it (the log keeps them apart)
                    scaled = shared.scaled(loss + aux if aux is not None else loss, schedule.accumulate)
                    (scaler.scale(scaled) if scaler else scaled).backward()
                    total += loss.detach().float() * shared.weight
                    aux_total = add_aux(aux_total, model, shared.weight / schedule.accumulate)
        shared.gradients(model)
        clip = schedule.optimizer.clip
        if scaler:
            scaler.unscale_(optimizer)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value, aux_total = step_values(shared.loss, total / schedule.accumulate, aux_total, team)
        self.last_aux = (step, aux_total) if aux_total is not None else None
        self.step_seconds += time.perf_counter() - started
        return value, lr

    def step_flops(self, state: TrainState, shape: Shape, steps: int) -> int:
        """Training FLOPs of `steps` steps of `state`: its frozen parameters compute no weight gradient
        (counted once per model and frozen set, not every step)."""
        key = (id(state.model), state.frozen)
        if self._frozen_count[0] != key:
            self._frozen_count = (key, parts.frozen_matmul_params(state.model, state.frozen) if state.frozen else 0)
        return self.cost.step_flops(shape, steps, self._frozen_count[1])

    def _reduce_step(self, loss: torch.Tensor) -> torch.Tensor:
        """This step's loss as every rank reports it (the mean over the ranks' equal shares), with
        the ranks' requests agreed on in the same all-reduce (`lagdsl.runtime.training.agreement`)."""
        if not self.world.distributed:
            return loss
        return self.agreed.reduce(loss, self.world.size, self.interrupted, self.terminated, self.metrics.failure)

    def evaluate(self, model: GPT, batches: int | None = None, team: dist.Team | None = None,
                 positions: Within = None) -> float:  # fmt: skip
        """The validation loss (`Evaluator.evaluate`; `batches` default: `eval`'s), each rank its share."""
        return self.evaluator.evaluate(model, batches, team, positions)

    def _eval(self, ins: P.Eval) -> None:
        val_loss = self.evaluate(self.state.model)
        self.state.last_eval = (ins.step, val_loss)
        stage = self.schedule.stages[ins.stage]
        self.metrics.write(self.evaluator.event(ins.step, stage.name, val_loss))

    def _checkpoint(self, ins: P.Checkpoint) -> None:
        self.state.pc += 1  # resume after this instruction
        try:
            self.on_checkpoint(self, ins.step)
        finally:
            self.state.pc -= 1

    # -- growth

    def grown(
        self,
        state: TrainState,
        stage: Stage,
        growth: Growth,
        op: OperatorSpec,
        index: int,
        team: dist.Team | None = None,
    ) -> TrainState:
        """`state` grown by `op` (the `index`-th growth of `stage`); `state`'s model and optimizer
        are spent. New weights draw from a generator of (seed, stage, growth, operator). Checked to
        be the same on every rank (of `team`: a parallel probe's)."""
        self.wrappers.clear()  # the wrapper of the model trained last (a probe's candidate) would keep it alive
        with self._timed("growth"):
            grown = growing.grown(self.recipe, state, stage, growth, op, index, team)
            del state
            _collect()
            return grown

    def _grow(self, ins: P.Grow) -> None:
        stage, growth = P.stage_of(self.schedule, ins)
        assert growth.op is not None
        before = self.state.model.config
        self.state = self.grown(self.state, stage, growth, growth.op, ins.growth)
        _collect()
        model, context = self.state.model, growth.dim == "context"
        self.metrics.write(
            GrowEvent(stage=stage.name, step=self.state.step, operator=growth.op.label, dim=growth.dim,
                      before=Dims.of(before, context), after=Dims.of(model.config, context), params=model.num_params())
        )  # fmt: skip
        self._log_parts(stage)

    def _log_parts(self, stage: Stage) -> None:
        """After a growth: what the stage freezes and scales from here on, where it does (or where
        its start unfroze what the stage before froze)."""
        if stage.freeze or stage.lr_scale or self._parts_pending:
            self.metrics.write(parts.event(stage, self.state))
        self._parts_pending = False

    # -- what a probe asks of the engine (`lagdsl.runtime.training.probes.Host`)

    def _run_probe(self, ins: P.Probe) -> None:
        probes.run(self, ins)

    def restore(self, saved: StateDict) -> TrainState:
        self.wrappers.clear()  # the wrapper of the model trained last (a probe's candidate) would keep it alive
        return restore(self.recipe, saved)

    def first_batch_loss(self, model: GPT, step: int, team: dist.Team | None) -> float:
        return self.evaluator.first_batch_loss(model, step, team)

    def show_candidate(self, label: str | None, steps: int = 0) -> None:
        self.probing, self.probe_steps = label, steps

    def stepped(self, stage: Stage, step: int, loss: torch.Tensor) -> None:
        if self.on_step is not None:
            self.on_step(self, stage.name, step, loss)

    def write(self, event: Artifact) -> None:
        self.metrics.write(event)

    def team(self, members: list[list[int]]) -> tuple[int, dist.Team]:
        return self.teams.of(members)

    def begin_probe(self) -> StateDict:
        """The snapshot a probe starts from; until `end_probe` the engine holds no live mainline
        state (memory: the snapshot, the current candidate, the best), and a checkpoint saves this."""
        saved = snapshot(self.state)
        self._probe = _ProbeStart(saved, self.metrics.lines, time.perf_counter())
        self._state = None  # the mainline model lives on in the snapshot alone
        self.wrappers.clear()
        return saved

    def end_probe(
        self, ins: P.Probe, stage: Stage, growth: Growth, winner: TrainState, label: str, losses: list[float] | None
    ) -> None:
        """The winner becomes the mainline; with its probe `losses` (`keep winner`) its probe steps
        are the stage's first mainline steps, and are logged as such."""
        probe = growth.probe
        assert probe is not None
        k, start = probe.steps, ins.start
        winner.winners[stage.growth_key(ins.growth)] = label
        per_candidate = self.step_flops(winner, growth.after, k) + self.cost.scoring_flops(growth)
        winner.probe_flops += per_candidate * len(probe.candidates)  # trained, and scored as the plan counts it
        winner.resume_clock(self._probe_elapsed())
        self._state, self._probe = winner, None
        self.wrappers.clear()  # it may hold the last candidate trained (a loser), and its memory
        _collect()
        self._log_parts(stage)
        if losses is not None:
            step_flops = self.step_flops(winner, growth.after, 1)
            for offset, loss in enumerate(losses):  # the winner's probe steps are mainline steps
                winner.probe_flops -= step_flops
                winner.mainline_flops += step_flops
                self._log_step(stage, start + offset, loss, self.lr(stage, start + offset), probe=True)
                if self.on_step is not None:
                    self.on_step(self, stage.name, start + offset, torch.tensor(loss))
            winner.step = start + k


def _collect() -> None:
    """Free a spent model now: FSDP's and DDP's state and their modules refer to each other, so a model
    a growth or probe left waits for the cycle collector, maybe past the next build (a share per growth)."""
    gc.collect()


class _Stop(Exception):
    """`--max-steps` reached inside a train segment."""
