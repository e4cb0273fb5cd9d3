"""The training state: the one object a checkpoint saves, a probe forks and a resume loads.

`TrainState` holds the model, the optimizer, the fp16 loss scaler, the mainline step, the program
counter, the FLOP counters and what the run has decided so far (probe winners, the newest
evaluation). It holds no random-generator state because there is none to hold: every draw (batches,
dropout, new weights, noise) is seeded from (seed, step, purpose), which is what makes a resumed
run bitwise equal to one never interrupted.

How the objects are built for a schedule on a device is the `Recipe`'s job, so that a state dict
can be loaded into a model of another shape (the checkpoint records the shape, the model is rebuilt
to it first). Three functions move states around, all through `state_dict()`:

- `snapshot(state)`: a copy of the state dict on the CPU, sharing no tensor with the live state;
- `restore(recipe, snapshot)`: a new live state in the snapshot's state;
- `fork(state)`: `restore(snapshot(state))`, an independent copy to train on.

Under `parallel fsdp` with several ranks the recipe shards the model (`fully_shard` on each block
and on the root, FSDP2) before it builds the optimizer, and the state moves as each rank's shards
(`lagdsl.runtime.distributed.moves`): the model starts sharded (initialized or read from a pretrained
checkpoint row by row), and snapshots, restores, freezing, depth growth and checkpoints hold DTensors
of the rank's own rows, in the same state-dict format, and so does the final model (`final/model.dcp`,
each rank writing its own). `whole_state` (gathered on every rank) is left to a plugin's operator
written as a plain function.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lagdsl.lang.schedule import Schedule
from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT, initial_values
from lagdsl.runtime.distributed import moves
from lagdsl.runtime.distributed.world import ONE, World
from lagdsl.runtime.state.optimizers import KahanAdamW
from lagdsl.runtime.state.seeds import generator

#: A state dict: what `TrainState.state_dict()` returns and checkpoints hold (tensors and plain data).
StateDict = dict[str, Any]


@dataclass(frozen=True)
class Device:
    """Where training runs, and the autocast dtype (None: fp32)."""

    device: torch.device
    dtype: torch.dtype | None

    @staticmethod
    def resolve(name: str, precision: str) -> Device:
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(name)
        if precision == "auto":
            bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
            return Device(device, torch.bfloat16 if bf16 else None)
        return Device(device, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision])

    def autocast(self) -> AbstractContextManager[object]:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def make_optimizer(
    schedule: Schedule, model: GPT, device: torch.device, scales: Mapping[str, float] | None = None
) -> torch.optim.Optimizer:
    """The schedule's optimizer over `model`'s trainable parameters, in decay and no-decay groups
    (a pair per LR scale), fused AdamW on CUDA; for weights held in bf16, AdamW with compensated
    writes (`lagdsl.runtime.state.optimizers`), which learns as fp32 does."""
    spec = schedule.optimizer
    groups = model.param_groups(spec.weight_decay, scales)
    if spec.name == "adamw" and model.embed.weight.dtype == torch.bfloat16:
        return KahanAdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
    if spec.name == "adamw":
        fused = {"fused": True} if device.type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps, **fused)
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)


@dataclass(frozen=True)
class Recipe:
    """How a schedule's model, optimizer and loss scaler are built on a device (and, under
    `parallel fsdp` with several ranks, sharded across them)."""

    schedule: Schedule
    device: Device
    world: World = ONE

    @property
    def sharded(self) -> bool:
        return self.world.distributed and self.schedule.parallel == "fsdp"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """What autocast runs in: none for sharded models, whose mixed precision is FSDP's."""
        return None if self.sharded else self.device.dtype

    def whole(self) -> Recipe:
        """The recipe of the whole, unsharded model (what a growth works on)."""
        return Recipe(self.schedule, self.device)

    def place(self, model: GPT) -> GPT:
        """`model` on the device, sharded where the recipe shards."""
        model = model.to(self.device.device)
        return self.shard(model) if self.sharded else model

    def shard(self, model: GPT) -> GPT:
        """`model` sharded (FSDP2: each block its own unit, the root the rest), where it is (the
        meta device too: `lagdsl.runtime.distributed.moves`)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=self.device.dtype, reduce_dtype=torch.float32)
        for block in model.blocks.values():
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model

    def model(self, config: GPTConfig) -> GPT:
        return self.place(GPT(config))

    def optimizer(self, model: GPT, scales: Mapping[str, float] | None = None) -> torch.optim.Optimizer:
        return make_optimizer(self.schedule, model, self.device.device, scales)

    def scaler(self, state: Mapping[str, Any] | None = None) -> torch.amp.GradScaler | None:
        """A loss scaler under fp16 (None otherwise), in `state` when one is given (a checkpoint of
        another precision, or from before scales were saved, leaves the defaults)."""
        if self.device.dtype != torch.float16:
            return None
        scaler = torch.amp.GradScaler(self.device.device.type)
        if state:
            scaler.load_state_dict(dict(state))
        return scaler

    def initial(self) -> TrainState:
        """The state at the start of the program: the schedule's first shape, freshly initialized
        from the seed, or read from the pretrained checkpoint it names."""
        config = GPTConfig.from_schedule(self.schedule)
        source = self.schedule.model.pretrained
        if source is not None:
            from lagdsl.families import family_named
            from lagdsl.model.hub import DTYPES, load_pretrained

            dtype = DTYPES.get(source.dtype, torch.float32)
            if self.sharded:  # each rank reads its rows of each tensor from the files
                model = moves.pretrained(self, Path(source.folder), family_named(source.family), config, dtype)
                return TrainState(self, model, self.optimizer(model), self.scaler())
            model = load_pretrained(Path(source.folder), family_named(source.family), config, dtype)
        elif self.sharded:  # each rank keeps its rows of each whole tensor one process draws
            model = moves.empty_model(self, config)
            moves.fill(model, initial_values(config, generator(self.schedule.seed, "init")))
            return TrainState(self, model, self.optimizer(model), self.scaler())
        else:
            model = GPT(config)
            model.init_weights(generator(self.schedule.seed, "init"))
        model = self.place(model)
        return TrainState(self, model, self.optimizer(model), self.scaler())


@dataclass(eq=False)
class TrainState:
    """Everything a resumed run needs to continue exactly. The engine reads and writes it; nothing
    else reaches inside the engine."""

    recipe: Recipe = field(repr=False)
    model: GPT
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None
    step: int = 0  # the next mainline step
    pc: int = 0  # the next instruction
    mainline_flops: int = 0
    probe_flops: int = 0
    winners: dict[str, str] = field(default_factory=dict)  # growth -> the probe's winner
    last_eval: tuple[int, float] | None = None  # (mainline step, val loss) of the newest evaluation
    last_loss: float | None = None  # the newest mainline training loss
    metrics_lines: int = 0  # lines of the run's `metrics.jsonl` that belong to this state
    #: parameters the current stage's growths made (`new`), frozen ones, LR scales (`lagdsl.runtime.training.parts`)
    fresh: frozenset[str] = frozenset()
    frozen: frozenset[str] = frozenset()
    scales: dict[str, float] = field(default_factory=dict)
    elapsed_before: float = 0.0  # wall seconds of training before this process took the state over
    _started: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def flops(self) -> int:
        return self.mainline_flops + self.probe_flops

    def elapsed(self) -> float:
        """Wall seconds of the run so far, across resumes."""
        return self.elapsed_before + time.perf_counter() - self._started

    def state_dict(self, shards: bool = False) -> StateDict:
        """The state as tensors and plain data; the model's shape first, so a loader rebuilds it.
        `shards` (a sharded model's checkpoint): each rank's own shards as DTensors, gathered by no
        rank; DCP writes them as they are and reads them back into whole tensors (or other shards)."""
        config = self.model.config
        model, optimizer = self.sharded_state() if shards and self.recipe.sharded else self.whole_state()
        return {
            "config": config.fields(),
            "model": model,
            "optimizer": optimizer,
            "scaler": dict(self.scaler.state_dict()) if self.scaler is not None else None,
            "pc": self.pc,
            "step": self.step,
            "metrics_lines": self.metrics_lines,
            "mainline_flops": self.mainline_flops,
            "probe_flops": self.probe_flops,
            "winners": dict(self.winners),
            "elapsed": self.elapsed(),
            "last_eval": list(self.last_eval) if self.last_eval else None,
            "last_loss": self.last_loss,
            "fresh": sorted(self.fresh),
            "frozen": sorted(self.frozen),
            "scales": dict(self.scales),
        }

    def sharded_state(self) -> tuple[StateDict, StateDict]:
        """A sharded model's and optimizer's state dicts as each rank holds them (DTensors of its
        shards; the optimizer's keyed by position, as `torch.optim` keys it): no collective."""
        return moves.resharded(self.model).state_dict(), self.optimizer.state_dict()

    def whole_state(self) -> tuple[StateDict, StateDict]:
        """The whole model's and optimizer's state dicts (gathered from the shards: a collective)."""
        if not self.recipe.sharded:
            return moves.resharded(self.model).state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        whole = StateDictOptions(full_state_dict=True)
        model = get_model_state_dict(self.model, options=whole)
        by_name = get_optimizer_state_dict(self.model, self.optimizer, options=whole)
        return model, _by_index(by_name, _names(self.model, self.optimizer))

    def set_parts(
        self, fresh: frozenset[str], frozen: frozenset[str], scales: Mapping[str, float], *, force: bool = False
    ) -> bool:
        """Freeze `frozen` (and only it) and scale the LR by `scales`; the optimizer is rebuilt
        around the trainable parameters, keeping the state of those that had one (a frozen one's
        is dropped). False when nothing changed (`force`: rebuild anyway, as after a growth,
        whose model has new parameters under the same names)."""
        self.fresh = fresh
        if not force and frozen == self.frozen and dict(scales) == self.scales:
            return False
        if self.recipe.sharded:  # rebuilt from each rank's shards (FSDP reads `requires_grad` once)
            model = moves.empty_model(self.recipe, self.model.config, frozen)
            moves.fill(model, moves.resharded(self.model).state_dict())
            self.optimizer = moves.moved_optimizer(self.recipe, model, scales, self.model, self.optimizer)
            self.model, self.frozen, self.scales = model, frozen, dict(scales)
            return True
        _require_grad(self.model, frozen)
        old = self.optimizer
        self.optimizer = self.recipe.optimizer(self.model, scales)
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                if old.state.get(param):
                    self.optimizer.state[param] = old.state[param]
        self.frozen, self.scales = frozen, dict(scales)
        return True

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take over `state`: the model is rebuilt to its shape, the optimizer around it."""
        self.model, self.optimizer, self.scaler = _build(self.recipe, state)
        self._load_scalars(state)

    @classmethod
    def from_state_dict(cls, recipe: Recipe, state: Mapping[str, Any]) -> TrainState:
        """A new live state in `state` (a checkpoint's or a snapshot's)."""
        new = cls(recipe, *_build(recipe, state))
        new._load_scalars(state)
        return new

    def _load_scalars(self, state: Mapping[str, Any]) -> None:
        self.fresh, self.frozen = frozenset(state.get("fresh", ())), frozenset(state.get("frozen", ()))
        self.scales = {str(k): float(v) for k, v in state.get("scales", {}).items()}
        self.pc, self.step = int(state["pc"]), int(state["step"])
        self.metrics_lines = int(state.get("metrics_lines", 0))
        self.mainline_flops, self.probe_flops = int(state["mainline_flops"]), int(state["probe_flops"])
        self.winners = dict(state["winners"])
        last = state.get("last_eval")
        self.last_eval = (int(last[0]), float(last[1])) if last else None
        loss = state.get("last_loss")
        self.last_loss = float(loss) if loss is not None else None
        self.resume_clock(float(state.get("elapsed", 0.0)))

    def resume_clock(self, elapsed: float) -> None:
        """Count the run's wall time on from `elapsed` seconds, starting now."""
        self.elapsed_before, self._started = elapsed, time.perf_counter()


def _build(recipe: Recipe, state: Mapping[str, Any]) -> tuple[GPT, torch.optim.Optimizer, torch.amp.GradScaler | None]:
    """The model (rebuilt to the state's shape), optimizer and scaler of a state dict."""
    config, frozen = GPTConfig(**state["config"]), frozenset(state.get("frozen", ()))
    # the weights' own dtype: a model read from a checkpoint as bf16 stays bf16 through a probe and a resume
    dtype = next(value.dtype for value in state["model"].values() if isinstance(value, torch.Tensor))
    if recipe.sharded:  # each rank's shards, written from the state's shards or cut from whole tensors
        model = moves.empty_model(recipe, config, frozen, dtype=dtype)
        moves.fill(model, state["model"])
    else:
        model = GPT.empty(config, dtype=dtype)
        model.load_state_dict(state["model"])
        _require_grad(model, frozen)
        model = recipe.place(model)
    optimizer = recipe.optimizer(model, state.get("scales"))
    optimizer.load_state_dict(_laid_out(state["optimizer"], optimizer) if recipe.sharded else state["optimizer"])
    return model, optimizer, recipe.scaler(state.get("scaler"))


def _laid_out(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> StateDict:
    """An optimizer state dict whose whole moments (a checkpoint read whole) are cut to this rank's
    shards of the sharded parameters they belong to; DTensor ones are kept as they are."""
    from lagdsl.ops.core import like

    params = [param for group in optimizer.param_groups for param in group["params"]]
    state = {}
    for index, entries in saved["state"].items():
        param = params[int(index)]
        state[index] = {
            key: like(value, param) if isinstance(value, torch.Tensor) and value.shape == param.shape else value
            for key, value in entries.items()
        }
    return {"state": state, "param_groups": saved["param_groups"]}


def _require_grad(model: GPT, frozen: frozenset[str]) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)


def _names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each of the optimizer's parameters, in the optimizer's order."""
    name_of = {id(param): name for name, param in model.named_parameters()}
    return [name_of[id(param)] for group in optimizer.param_groups for param in group["params"]]


def _by_index(by_name: Mapping[str, Any], names: list[str]) -> StateDict:
    """An optimizer state dict keyed by parameter names (the distributed helpers' form) in
    `torch.optim`'s own form, keyed by position."""
    index = {name: i for i, name in enumerate(names)}
    state = {index[name]: value for name, value in by_name["state"].items()}
    groups = [{**group, "params": [index[name] for name in group["params"]]} for group in by_name["param_groups"]]
    return {"state": state, "param_groups": groups}


def snapshot(state: TrainState) -> StateDict:
    """A copy of the state dict with every tensor copied to the CPU: it shares no memory with the
    live state, so training on after the snapshot leaves it as it was."""
    copy = _to_cpu(state.state_dict(shards=True))  # a sharded state's: each rank's own shards
    assert isinstance(copy, dict)
    return copy


def restore(recipe: Recipe, saved: Mapping[str, Any]) -> TrainState:
    """A live state in a snapshot's state, sharing no tensor with it (an optimizer's
    `load_state_dict` keeps the tensors it is given where device and dtype already fit, and
    training would then change the snapshot: so it is given copies)."""
    copied = dict(saved)
    copied["optimizer"] = _to_cpu(saved["optimizer"])
    return TrainState.from_state_dict(recipe, copied)


def fork(state: TrainState) -> TrainState:
    """An independent copy of a live state."""
    return restore(state.recipe, snapshot(state))


def _to_cpu(value: object) -> object:
    """A copy of a (nested) state dict with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value
