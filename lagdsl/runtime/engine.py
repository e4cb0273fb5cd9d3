"""The engine: interprets a program, training a `GPT` that grows as the schedule says.

Determinism. Batches are pure functions of (seed, step, rank, micro-step); new weights, noise and
unit choices draw from generators seeded by (seed, stage, growth, purpose); dropout is seeded by
(seed, step) before each step. So on CPU the same schedule gives the same losses, bit for bit, and
a run resumed from a checkpoint gives the losses of the run that was never interrupted.

Probes. At a landscape-aware growth the engine snapshots the model and optimizer (copies on the
CPU), and for each candidate restores the snapshot, grows, and trains k steps on the mainline's
batches with the mainline's LR values, then scores it by the selection rule. It keeps only the best
candidate so far, so memory holds the snapshot, the current candidate and the best. Under `keep
winner` the winner continues and its probe steps are the stage's first mainline steps; under
`keep rewind` the winner is grown again from the snapshot (the same generator gives the same
weights) and the stage trains from its first step.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from lagdsl.lang.lr import lr_at, rewarm_factor
from lagdsl.lang.schedule import Growth, OperatorSpec, Schedule, SelectRule, Shape, Stage
from lagdsl.model.gpt import GPT, GPTConfig
from lagdsl.ops import Grown, GrowthSpec, grow
from lagdsl.plan.cost import CostModel
from lagdsl.runtime import program as P
from lagdsl.runtime.data import Batches
from lagdsl.runtime.metrics import Metrics


class NonFiniteLoss(Exception):
    def __init__(self, stage: str, step: int, loss: float) -> None:
        super().__init__(f"the loss became {loss} at step {step} in stage `{stage}`")
        self.stage, self.step, self.loss = stage, step, loss


def seed_for(seed: int, *purpose: object) -> int:
    """A 63-bit seed for (seed, purpose...), the same on every machine and Python."""
    digest = hashlib.sha256(repr((seed, *purpose)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *purpose: object) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, *purpose))


@dataclass
class Device:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32

    @staticmethod
    def resolve(name: str, precision: str) -> Device:
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(name)
        if precision == "auto":
            bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
            return Device(device, torch.bfloat16 if bf16 else None)
        return Device(device, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision])

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def make_optimizer(schedule: Schedule, model: GPT, device: torch.device) -> torch.optim.Optimizer:
    spec = schedule.optimizer
    groups = model.param_groups(spec.weight_decay)
    if spec.name == "adamw":
        fused = {"fused": True} if device.type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps, **fused)
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)


@dataclass
class Candidate:
    label: str
    model: GPT
    optimizer: torch.optim.Optimizer
    losses: list[float]
    score: float
    scaler: dict[str, object] | None = None  # the loss scale's state after its probe (fp16)


class Engine:
    """Runs a program from `pc` with the model and optimizer it holds."""

    def __init__(
        self,
        schedule: Schedule,
        program: tuple[P.Instruction, ...],
        batches: Batches,
        device: Device,
        metrics: Metrics,
        on_checkpoint: Callable[[Engine, int], None],
        on_step: Callable[[Engine, str, int, float], None] | None = None,
        max_steps: int | None = None,
    ) -> None:
        self.schedule, self.program, self.batches, self.dev = schedule, program, batches, device
        self.metrics, self.on_checkpoint, self.on_step = metrics, on_checkpoint, on_step
        self.max_steps = max_steps
        self.cost = CostModel(schedule)
        self.scaler = torch.amp.GradScaler(device.device.type) if device.dtype == torch.float16 else None
        self.pc = 0
        self.step = 0
        self.mainline_flops = 0
        self.probe_flops = 0
        self.winners: dict[str, str] = {}
        self.last_eval: tuple[int, float] | None = None  # (mainline step, val loss) of the newest eval
        self.last_loss: float | None = None
        self.started = time.perf_counter()
        self.elapsed_before = 0.0  # wall time of the run before a resume
        self.model: GPT
        self.optimizer: torch.optim.Optimizer
        self.probing: str | None = None  # the candidate being probed, for progress displays
        self.interrupted = False  # set by a Ctrl-C handler; honoured between steps
        self._compiled: tuple[GPT, torch.nn.Module] | None = None
        self.step_seconds = 0.0  # wall time inside training steps (mainline and probe), this process
        # inside a probe: the snapshot, and the step, metrics lines and FLOP counters before it
        self._probe_start: tuple[dict[str, object], int, int, int, int] | None = None

    # -- state

    def initialize(self) -> None:
        config = GPTConfig.from_schedule(self.schedule)
        model = GPT(config)
        model.init_weights(generator(self.schedule.seed, "init"))
        self.model = model.to(self.dev.device)
        self.optimizer = make_optimizer(self.schedule, self.model, self.dev.device)

    @property
    def in_probe(self) -> bool:
        return self._probe_start is not None

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def state(self) -> dict[str, object]:
        """What a checkpoint taken now holds. Inside a probe, that is the state before the probe
        (the snapshot), with the program counter at the probe: a resumed run probes again."""
        if self._probe_start is not None:
            snapshot, step, lines, mainline_flops, probe_flops = self._probe_start
            config, model, optimizer = snapshot["config"], snapshot["model"], snapshot["optimizer"]
            scaler = snapshot["scaler"]
        else:
            config, model, optimizer = self.model.config, self.model.state_dict(), self.optimizer.state_dict()
            scaler = self.scaler_state()
            step, lines = self.step, self.metrics.lines
            mainline_flops, probe_flops = self.mainline_flops, self.probe_flops
        return {
            "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "model": model,
            "optimizer": optimizer,
            "scaler": scaler,
            "pc": self.pc,
            "step": step,
            "metrics_lines": lines,
            "mainline_flops": mainline_flops,
            "probe_flops": probe_flops,
            "winners": dict(self.winners),
            "elapsed": self.elapsed(),
            "last_eval": list(self.last_eval) if self.last_eval else None,
        }

    def load_state(self, state: dict[str, object]) -> None:
        config = GPTConfig(**state["config"])  # type: ignore[arg-type]
        model = GPT(config)
        model.load_state_dict(state["model"])  # type: ignore[arg-type]
        self.model = model.to(self.dev.device)
        self.optimizer = make_optimizer(self.schedule, self.model, self.dev.device)
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        self.load_scaler_state(state.get("scaler"))  # type: ignore[arg-type]
        self.pc, self.step = int(state["pc"]), int(state["step"])  # type: ignore[arg-type]
        self.mainline_flops, self.probe_flops = int(state["mainline_flops"]), int(state["probe_flops"])  # type: ignore[arg-type]
        self.winners = dict(state["winners"])  # type: ignore[arg-type]
        self.elapsed_before = float(state["elapsed"])  # type: ignore[arg-type]
        last = state["last_eval"]
        self.last_eval = (int(last[0]), float(last[1])) if last else None  # type: ignore[index]

    # -- the loop

    def run(self, until: int | None = None) -> bool:
        """Interpret the program from `pc` up to instruction `until` (default: the end); False when
        `max_steps` stopped it early."""
        end = len(self.program) if until is None else until
        try:
            while self.pc < end:
                if self.interrupted:
                    raise KeyboardInterrupt
                instruction = self.program[self.pc]
                if self.max_steps is not None and self.step >= self.max_steps:
                    return False
                getattr(self, f"_do_{type(instruction).__name__.lower()}")(instruction)
                self.pc += 1
        except _Stop:
            return False
        return True

    def _do_stagestart(self, ins: P.StageStart) -> None:
        shape, after = self.model.config, self.schedule.stages[ins.stage].after
        self.metrics.write(
            "stage", stage=ins.name, index=ins.stage, step=ins.step, depth=shape.depth, width=shape.width,
            after=_shape(after),
        )  # fmt: skip

    def _do_train(self, ins: P.Train) -> None:
        stage = self.schedule.stages[ins.stage]
        start = max(ins.start, self.step)  # a resumed run may start inside the segment
        for step in range(start, ins.start + ins.steps):
            if self.max_steps is not None and step >= self.max_steps:
                raise _Stop
            loss, lr = self.train_step(self.model, self.optimizer, stage, step)
            self.step = step + 1
            self.mainline_flops += self.cost.step_flops(stage.after, 1)
            self._log_step(stage, step, loss, lr)

    def train(self, stage: int, start: int, steps: int) -> None:
        """Train the mainline model on mainline steps `start`, ..., `start + steps - 1` of stage
        `stage` (an index), logging as the program's own training does."""
        self._do_train(P.Train(stage, start, steps))

    def _log_step(self, stage: Stage, step: int, loss: float, lr: float, probe: bool = False) -> None:
        self.last_loss = loss
        every = self.schedule.log_every
        if step % every == 0 or step == self.schedule.total_steps - 1:
            elapsed = self.elapsed()
            tokens = (step + 1) * self.schedule.tokens_per_step
            self.metrics.write(
                "step", step=step, stage=stage.name, loss=loss, lr=lr, tokens=tokens,
                flops=self.mainline_flops + self.probe_flops, elapsed=round(elapsed, 3),
                **({"from_probe": True} if probe else {}),
            )  # fmt: skip
        if self.on_step is not None:
            self.on_step(self, stage.name, step, loss)

    def lr(self, stage: Stage, step: int) -> float:
        s = self.schedule
        return lr_at(step, s.lr, s.optimizer.lr, s.total_steps) * rewarm_factor(step, stage.start_step, stage.rewarm)

    def train_step(self, model: GPT, optimizer: torch.optim.Optimizer, stage: Stage, step: int) -> tuple[float, float]:
        """One optimizer step on mainline step `step`'s batches; the mean loss and the LR used."""
        if self.interrupted:
            raise KeyboardInterrupt
        started = time.perf_counter()
        schedule = self.schedule
        lr = self.lr(stage, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(seed_for(schedule.seed, "dropout", step))
        total = torch.zeros((), device=self.dev.device)
        model.train()
        forward = self.compiled(model)
        for micro in range(schedule.accumulate):
            inputs, targets = self.batches.train(step, micro)
            with self.dev.autocast():
                _, loss = forward(inputs, targets)
            scaled = loss / schedule.accumulate
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach().float()
        clip = schedule.optimizer.clip
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = (total / schedule.accumulate).item()
        self.step_seconds += time.perf_counter() - started
        if not math.isfinite(value):
            raise NonFiniteLoss(stage.name, step, value)
        return value, lr

    def compiled(self, model: GPT) -> torch.nn.Module:
        """The model to call for training: itself, or under `compile on` its torch.compile wrapper,
        built once per model object, so a grown model (a new object) is compiled anew. Checkpoints
        and growth always use the plain module."""
        if not self.schedule.compile:
            return model
        if self._compiled is None or self._compiled[0] is not model:
            self._compiled = (model, torch.compile(model))
        return self._compiled[1]

    @torch.no_grad()
    def evaluate(self, model: GPT, batches: int) -> float:
        model.eval()
        total = 0.0
        for index in range(batches):
            inputs, targets = self.batches.val(index)
            with self.dev.autocast():
                _, loss = model(inputs, targets)
            total += loss.float().item()
        model.train()
        return total / batches

    def _do_eval(self, ins: P.Eval) -> None:
        batches = self.schedule.eval.batches if self.schedule.eval else 10
        val_loss = self.evaluate(self.model, batches)
        self.last_eval = (ins.step, val_loss)
        stage = self.schedule.stages[ins.stage]
        self.metrics.write("eval", step=ins.step, stage=stage.name, val_loss=val_loss, batches=batches)

    def _do_checkpoint(self, ins: P.Checkpoint) -> None:
        self.pc += 1  # resume after this instruction
        try:
            self.on_checkpoint(self, ins.step)
        finally:
            self.pc -= 1

    def _do_end(self, ins: P.End) -> None:
        self.metrics.write("end", step=ins.step, flops=self.mainline_flops + self.probe_flops)

    # -- growth

    def _spec(self, op: OperatorSpec, growth: Growth) -> GrowthSpec:
        return GrowthSpec(op.name, growth.dim, getattr(growth.after, growth.dim), op.args)

    def apply_growth(
        self,
        model: GPT,
        optimizer: torch.optim.Optimizer,
        stage: Stage,
        growth: Growth,
        op: OperatorSpec,
        index: int,
    ) -> Grown:
        gen = generator(self.schedule.seed, "grow", stage.name, index, op.label)
        return grow(model, optimizer, self._spec(op, growth), gen, reset_optimizer=stage.reset_optimizer)

    def _do_grow(self, ins: P.Grow) -> None:
        stage, growth = P.stage_of(self.schedule, ins)
        before = self.model.config
        grown = self.apply_growth(self.model, self.optimizer, stage, growth, growth.op, ins.growth)
        self.model, self.optimizer = grown.model, grown.optimizer
        self.metrics.write(
            "grow", stage=stage.name, step=self.step, operator=growth.op.label, dim=growth.dim,
            before=_shape(before), after=_shape(self.model.config), params=self.model.num_params(),
        )  # fmt: skip

    def snapshot(self) -> dict[str, object]:
        """The training state: model, optimizer and, under fp16, the loss scale."""
        return {
            "config": self.model.config,
            "model": {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "scaler": self.scaler_state(),
        }

    def restore(self, snapshot: dict[str, object]) -> tuple[GPT, torch.optim.Optimizer]:
        """A model and optimizer in the snapshot's state, sharing no tensor with it (an optimizer's
        `load_state_dict` keeps the tensors it is given where their device and dtype already fit,
        and training would then change the snapshot). The engine's loss scale (fp16) goes back to
        the snapshot's too: it is training state, and every candidate starts from the same."""
        model = GPT(snapshot["config"])  # type: ignore[arg-type]
        model.load_state_dict(snapshot["model"])  # type: ignore[arg-type]
        model = model.to(self.dev.device)
        optimizer = make_optimizer(self.schedule, model, self.dev.device)
        optimizer.load_state_dict(_to_cpu(snapshot["optimizer"]))  # type: ignore[arg-type]
        self.load_scaler_state(snapshot.get("scaler"))  # type: ignore[arg-type]
        return model, optimizer

    def scaler_state(self) -> dict[str, object] | None:
        return dict(self.scaler.state_dict()) if self.scaler is not None else None

    def load_scaler_state(self, state: dict[str, object] | None) -> None:
        """A fresh loss scaler in `state` (a checkpoint from before fp16 scales were saved, or from
        another precision, leaves the fresh scaler's defaults)."""
        if self.scaler is None:
            return
        self.scaler = torch.amp.GradScaler(self.dev.device.type)
        if state:
            self.scaler.load_state_dict(state)

    def _do_probe(self, ins: P.Probe) -> None:
        stage, growth = P.stage_of(self.schedule, ins)
        probe = growth.probe
        k, start, rule = probe.steps, ins.start, probe.select
        snapshot = self.snapshot()
        self._probe_start = (snapshot, self.step, self.metrics.lines, self.mainline_flops, self.probe_flops)
        del self.model, self.optimizer  # memory: the snapshot, the current candidate, the best
        best: Candidate | None = None
        scores: dict[str, float] = {}
        for op in probe.candidates:
            self.probing = op.label
            model, optimizer = self.restore(snapshot)
            grown = self.apply_growth(model, optimizer, stage, growth, op, ins.growth)
            model, optimizer = grown.model, grown.optimizer
            losses, lrs = [], []
            for step in range(start, start + k):
                loss, lr = self.train_step(model, optimizer, stage, step)
                losses.append(loss)
                lrs.append(lr)
                if self.on_step is not None:
                    self.on_step(self, stage.name, step, loss)
            self.probe_flops += self.cost.step_flops(growth.after, k)
            score = self._score(model, rule, losses, start)
            scores[op.label] = score
            self.metrics.write(
                "probe", stage=stage.name, growth=ins.growth, candidate=op.label, operator=op.name, args=dict(op.args),
                steps=list(range(start, start + k)), losses=losses, lrs=lrs, score=score,
            )  # fmt: skip
            if best is None or score < best.score:  # ties go to the candidate listed first
                best = Candidate(op.label, model, optimizer, losses, score, self.scaler_state())
            del model, optimizer, grown
        self.probing = None
        assert best is not None
        self.winners[stage.name if len(stage.growths) == 1 else f"{stage.name}/g{ins.growth + 1}"] = best.label
        window = f" over last {rule.window} steps" if rule.window and rule.window > 1 else ""
        self.metrics.write(
            "select", stage=stage.name, growth=ins.growth, step=start, rule=f"lowest {rule.metric}{window}",
            keep=probe.keep, scores=scores, winner=best.label, dim=growth.dim,
            before=_shape(growth.before), after=_shape(growth.after), params=best.model.num_params(),
        )  # fmt: skip
        if probe.keep == "winner":
            self.model, self.optimizer = best.model, best.optimizer
            self.load_scaler_state(best.scaler)
            step_flops = self.cost.step_flops(growth.after, 1)
            for offset, loss in enumerate(best.losses):  # the winner's probe steps are mainline steps
                self.probe_flops -= step_flops
                self.mainline_flops += step_flops
                self._log_step(stage, start + offset, loss, self.lr(stage, start + offset), probe=True)
            self.step = start + k
        else:
            winner = next(i for i, op in enumerate(probe.candidates) if op.label == best.label)
            del best
            model, optimizer = self.restore(snapshot)
            grown = self.apply_growth(model, optimizer, stage, growth, probe.candidates[winner], ins.growth)
            self.model, self.optimizer = grown.model, grown.optimizer
        self._probe_start = None

    def _score(self, model: GPT, rule: SelectRule, losses: list[float], start: int) -> float:
        if rule.metric == "val_loss":
            return self.evaluate(model, self.schedule.eval.batches if self.schedule.eval else 10)
        if not losses:  # probe 0 steps: the loss right after growth, on the stage's first batch
            with torch.no_grad(), self.dev.autocast():
                inputs, targets = self.batches.train(start, 0)
                model.eval()
                loss = model(inputs, targets)[1].float().item()
                model.train()
            return loss
        return sum(losses[-rule.window :]) / rule.window


class _Stop(Exception):
    """`--max-steps` reached inside a train segment."""


def _shape(shape: Shape | GPTConfig) -> dict[str, int]:
    """A shape as the metrics events write it."""
    return {"depth": shape.depth, "width": shape.width}


def _to_cpu(value: object) -> object:
    """A copy of a (nested) state dict with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value
