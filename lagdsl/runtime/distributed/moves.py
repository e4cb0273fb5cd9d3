"""A sharded training state moved without gathering it (`parallel fsdp` on several ranks).

Under FSDP2 every parameter is a DTensor cut along its first dimension across the ranks, and so
are the optimizer's moments. What moves such a state (a probe's snapshot and its restore, a change
of the frozen parts, a depth growth) moves each rank's own shards:

- the new model is built on the meta device and sharded there, so nothing is allocated yet;
- a kept parameter (the embedding, the final norm, an untied head, an old layer where it stays)
  takes over its source's shards, the same memory (FSDP adopts a DTensor given to
  `load_state_dict(assign=True)` as its sharded parameter); a copy is given memory for this
  rank's shard and filled from its source's local shard, with no communication; a new parameter
  from the whole tensor one process would draw: every rank draws the same (a generator of seed,
  stage, growth and operator), one block at a time, and keeps its own rows of it;
- the optimizer's state moves by parameter name: a kept parameter's moments are the same tensors,
  a copy's are copies of its source's shards, a new parameter starts with none.

So a depth growth allocates only what it adds: a rank's peak is its share of the grown state and
one block whole, never the model, and the old state is spent. N ranks grow what one process grows
(the noise of a noisy copy is scaled by the whole tensor's standard deviation, which the ranks
compute together). A restore from a snapshot, by contrast, fills a new model (`empty_model`,
`fill`), since the snapshot must stay as it was.

A width growth redistributes every unit of a tensor, so it moves one tensor at a time: each rank
gathers that tensor whole (an all-gather), moves it as one process does, keeps its rows of the
result and lets the whole go before the next (`grow_width`); its optimizer moments the same way.
A rank's extra memory is then one tensor, old and moved, never the model. A plugin's operator
that is neither a `PlannedDepth` nor a `PlannedWidth` goes through the whole state
(`lagdsl.runtime.training.growing`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from lagdsl.lang import layers
from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT, initial_values
from lagdsl.ops.core import Carry, add_noise_, like, moved_state
from lagdsl.ops.depth import DepthPlan, depth_mapping, fresh_block, residual_names
from lagdsl.ops.experts import ExpertsPlan
from lagdsl.ops.width import WidthPlan

if TYPE_CHECKING:
    from lagdsl.families import Family


class Builder(Protocol):
    """What a move needs of whoever builds the training state (`lagdsl.runtime.state.train_state.Recipe` is
    one): where the model lives, how it is sharded, and an optimizer over it. A protocol, so that
    the state, which moves its shards through this module, is above it and never imported here."""

    @property
    def device(self) -> Placement: ...

    def shard(self, model: GPT) -> GPT: ...

    def optimizer(self, model: GPT, scales: Mapping[str, float] | None = None) -> torch.optim.Optimizer: ...


class Placement(Protocol):
    """The device the ranks' shards live on (`lagdsl.runtime.state.train_state.Device` is one)."""

    @property
    def device(self) -> torch.device: ...


#: (mapping, the grown model's skeleton on the meta device) -> its frozen names and LR scales
Parts = Callable[[Mapping[str, Carry | None], GPT], tuple[frozenset[str], dict[str, float]]]


def empty_model(
    recipe: Builder, config: GPTConfig, frozen: frozenset[str] = frozenset(), dtype: torch.dtype | None = None
) -> GPT:
    """A sharded model of shape `config` (in `dtype`, default fp32) whose shards are allocated and
    not yet written (`fill` writes them), with `frozen` parameters not requiring gradients (set
    before FSDP sees them)."""
    with torch.device("meta"):
        model = GPT(config)
    if dtype is not None:
        model.to(dtype)
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    model = recipe.shard(model)
    model.to_empty(device=recipe.device.device)
    model.init_buffers()
    return model


def pretrained(recipe: Builder, folder: Path, family: Family, config: GPTConfig, dtype: torch.dtype) -> GPT:
    """A sharded model read from a Hugging Face checkpoint: each rank reads its own rows of each
    tensor from the files (`lagdsl.model.hub.read_weights`), so no rank holds the whole model."""
    from torch.distributed.tensor import DTensor

    from lagdsl.model.hub import Rows, read_weights

    model = empty_model(recipe, config, dtype=dtype)
    targets = {}
    for name, param in model.named_parameters():
        assert isinstance(param, DTensor)
        local = param.to_local()
        targets[name] = Rows(local, _first_row(param.shape[0], local.shape[0]))
    read_weights(folder, family, config, targets)
    return model


def _first_row(rows: int, local: int) -> int:
    """The first row this rank holds of a parameter of `rows` rows cut as FSDP cuts it (in
    `torch.chunk`'s equal pieces, the last ones shorter or empty), holding `local` of them."""
    import torch.distributed as torch_dist

    piece = -(-rows // torch_dist.get_world_size())
    first = min(torch_dist.get_rank() * piece, rows)
    assert local == max(0, min(piece, rows - first)), "FSDP cut a parameter other than in equal pieces"
    return first


def room(device: torch.device) -> Callable[[list[int], torch.dtype], torch.Tensor]:
    """Room for a sharded checkpoint's tensors as a sharded run holds them: this rank's rows of
    each (a DTensor cut along its first dimension over every rank, as FSDP cuts a parameter and
    its moments), a scalar whole. DCP reads each rank's rows alone into it."""
    import torch.distributed as torch_dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, empty

    mesh = init_device_mesh(device.type, (torch_dist.get_world_size(),))

    def make(shape: list[int], dtype: torch.dtype) -> torch.Tensor:
        if not shape:
            return torch.empty(shape, dtype=dtype)
        return empty(shape, dtype=dtype, device_mesh=mesh, placements=[Shard(0)])

    return make


def resharded(model: GPT) -> GPT:
    """`model` with every parameter in its sharded form (a DTensor): FSDP leaves the root's
    gathered after a forward pass without a backward one (an evaluation)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return model


@torch.no_grad()
def fill(model: GPT, values: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
    """Write every parameter of a sharded `model` from `values` (by name; pairs are taken one at a
    time, so a generator of them holds one whole tensor at a time): a DTensor laid out as the
    parameter is (its local shard is copied) or a whole tensor (this rank's rows of it)."""
    params = dict(model.named_parameters())  # a tied head is the embedding, named once
    written = set()
    for name, value in values.items() if isinstance(values, Mapping) else values:
        param = params.get(name)
        if param is not None:
            param.copy_(like(value.to(param.device, param.dtype), param))
            written.add(name)
    if missing := sorted(params.keys() - written):
        raise KeyError(f"no values for {', '.join(missing)}")


def moved_optimizer(
    recipe: Builder, model: GPT, scales: Mapping[str, float], old_model: GPT, old: torch.optim.Optimizer,
    mapping: Mapping[str, Carry | None] | None = None,
) -> torch.optim.Optimizer:  # fmt: skip
    """The schedule's optimizer over `model`'s trainable parameters with the state of `old` moved by
    name (`mapping`: as a growth moved the values; None: each parameter from its namesake, the
    same tensors, since `old` is spent); a parameter that had none, or is new, starts with none."""
    optimizer = recipe.optimizer(model, scales)
    old_params = dict(resharded(old_model).named_parameters())
    trainable = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, param in model.named_parameters():
        carry = Carry(name, shared=True) if mapping is None else mapping.get(name)
        if id(param) not in trainable or carry is None:
            continue
        state = old.state.get(old_params[carry.source])
        if state:
            optimizer.state[param] = moved_state(state, carry)
    return optimizer


def grow_depth(
    recipe: Builder,
    model: GPT,
    plan: DepthPlan,
    generator: torch.Generator,
    parts: Parts,
) -> tuple[GPT, dict[str, Carry | None], frozenset[str], dict[str, float]]:
    """A sharded `model` grown by `plan` as `lagdsl.ops.depth.grow_depth` grows a whole one, drawing
    the same values from `generator` in the same order. `parts(mapping, skeleton)` gives the frozen
    names and LR scales of the grown model (they are set before FSDP sees it). Returns the grown
    model (its optimizer is `moved_optimizer`'s to build), the mapping, and the parts.

    The grown model takes over the old one's shards where a parameter is kept (the embedding, the
    final norm, an untied head, each old layer where it stays): they are the same memory, as the
    mapping's shared moments are, so `model` is spent. Only copies and fresh layers are allocated,
    one tensor at a time, and a rank's peak is the grown model's share and one fresh block whole."""
    positions = layers.positions(plan.layers)
    config = model.config.restacked(positions)
    mapping = depth_mapping(config, positions, plan.zero_copies)
    old = dict(resharded(model).named_parameters())
    with torch.device("meta"):
        skeleton = GPT(config).to(old["embed.weight"].dtype)  # the dtype it had, as one process keeps it
    frozen, scales = parts(mapping, skeleton)
    for name, param in skeleton.named_parameters():
        param.requires_grad_(name not in frozen)
    skeleton = recipe.shard(skeleton)  # sharded on the meta device: nothing allocated yet
    assembly = _Assembly(skeleton, old, recipe.device.device)
    taken, room, values = assembly.take, assembly.room, assembly.values

    kept: set[int] = set()  # the old layers whose shards a position took over
    with torch.no_grad():
        for name in assembly.metas:  # the embedding, the final norm, an untied head
            if not name.startswith("blocks."):
                taken(name, name)
        for i, layer in enumerate(positions):
            prefix = f"blocks.{i}."
            names = [name for name, _ in skeleton.block(i).named_parameters()]
            zeroed = residual_names(skeleton.block(i)) if plan.zero_copies else set()
            if layer.source is None:  # drawn whole, as one process draws it; this rank keeps its rows
                block = fresh_block(config, generator, plan.zero_residual, i)
                for name, value in block.named_parameters():
                    target = room(prefix + name)
                    target.copy_(like(value.detach().to(target.device, target.dtype), target))
                del block
                continue
            if not layer.copy:
                assert layer.source not in kept, f"old layer {layer.source} kept twice: a second one is a copy"
                kept.add(layer.source)
                for name in names:
                    taken(prefix + name, f"blocks.{layer.source}.{name}")
                continue
            for name in names:  # a copy, in `grow_depth`'s order: noise draws from the generator
                target = room(prefix + name)
                target.copy_(old[f"blocks.{layer.source}.{name}"])
                add_noise_(target, plan.noise, generator)
            if plan.zero_copies:
                for name in zeroed:
                    values[prefix + name].zero_()
    return assembly.done(config), mapping, frozen, scales


def grow_experts(
    recipe: Builder,
    model: GPT,
    plan: ExpertsPlan,
    generator: torch.Generator,
    parts: Parts,
) -> tuple[GPT, dict[str, Carry | None], frozenset[str], dict[str, float]]:
    """A sharded `model` grown by an experts `plan` as `lagdsl.ops.experts.grow_experts` grows a
    whole one: everything but the MLPs takes over its old shards (as a depth growth's kept layers
    do); a block's MLP tensors are gathered whole, grown as one process grows them (the same draws,
    in block order) and cut to this rank's rows, one tensor at a time; the optimizer's moments move
    the same way (`moved_optimizer`). Returns what `grow_depth` returns."""
    config = plan.config
    old = dict(resharded(model).named_parameters())
    targets: dict[str, torch.Tensor] = {}

    def sharded(carry: Carry, name: str) -> Carry:
        move = carry.move
        return Carry(carry.source, transform=lambda moment, power: like(move(_whole(moment), power), targets[name]))

    mapping: dict[str, Carry | None] = {}
    mixtures = [i for i in range(config.depth) if config.mixed(i)]  # a dense block's MLP is kept
    for i in mixtures:
        for name, carry in plan.carries(i).items():
            mapping[name] = None if carry is None else sharded(carry, name)
    with torch.device("meta"):
        skeleton = GPT(config).to(old["embed.weight"].dtype)
    for name, _ in skeleton.named_parameters():
        mapping.setdefault(name, Carry(name, shared=True))
    frozen, scales = parts(mapping, skeleton)
    for name, param in skeleton.named_parameters():
        param.requires_grad_(name not in frozen)
    skeleton = recipe.shard(skeleton)
    assembly = _Assembly(skeleton, old, recipe.device.device)
    with torch.no_grad():
        for name, carry in mapping.items():
            if carry is not None and carry.shared and name in assembly.metas:  # (a tied head is the embedding)
                assembly.take(name, name)
        for i in mixtures:
            prefix = f"blocks.{i}.mlp."
            for name, value in plan.grow_block(i, partial(_gathered, old, prefix), generator):
                target = targets[prefix + name] = assembly.room(prefix + name)
                target.copy_(like(value.to(target.device, target.dtype), target))
                del value  # one tensor whole at a time
    return assembly.done(config), mapping, frozen, scales


class _Assembly:
    """The parameters of a sharded skeleton (on the meta device) as they are given: an old
    parameter's shards taken over (`take`), or room for this rank's rows of a new one (`room`);
    `done` hands them to FSDP."""

    def __init__(self, skeleton: GPT, old: Mapping[str, torch.Tensor], device: torch.device) -> None:
        self.skeleton, self.old, self.device = skeleton, old, device
        self.metas = dict(skeleton.named_parameters())
        self.values: dict[str, torch.nn.Parameter] = {}

    def take(self, name: str, source: str) -> None:
        """The old shards themselves."""
        from torch.distributed.tensor import DTensor

        meta, value = self.metas[name], self.old[source].detach()
        assert isinstance(value, DTensor) and isinstance(meta, DTensor)
        assert value.placements == meta.placements and value.shape == meta.shape and value.dtype == meta.dtype
        self.values[name] = torch.nn.Parameter(value, requires_grad=meta.requires_grad)

    def room(self, name: str) -> torch.nn.Parameter:
        """This rank's rows of a new parameter, not yet written."""
        from torch.distributed.tensor import DTensor

        meta = self.metas[name]
        assert isinstance(meta, DTensor)
        local = torch.empty(meta.to_local().shape, dtype=meta.dtype, device=self.device)
        value = DTensor.from_local(local, meta.device_mesh, meta.placements, run_check=False,
                                   shape=meta.shape, stride=meta.stride())  # fmt: skip
        self.values[name] = torch.nn.Parameter(value, requires_grad=meta.requires_grad)
        return self.values[name]

    def done(self, config: GPTConfig) -> GPT:
        if config.tie:  # the head is the embedding: one parameter under both names
            self.values["lm_head.weight"] = self.values["embed.weight"]
        self.skeleton.load_state_dict(self.values, assign=True)  # FSDP takes each value's shards as its own
        self.skeleton.init_buffers()
        return self.skeleton


def grow_width(
    recipe: Builder,
    model: GPT,
    plan: WidthPlan,
    generator: torch.Generator,
    parts: Parts,
) -> tuple[GPT, dict[str, Carry | None], frozenset[str], dict[str, float]]:
    """A sharded `model` grown by `plan` as `lagdsl.ops.width.grow_width` grows a whole one, one
    tensor at a time: each parameter gathered whole, moved, cut to this rank's rows and let go
    before the next, with the same draws from `generator` in the same order (the grown model's
    fresh values come from a copy of it, the draws after them from `generator` itself). The
    mapping's moves gather each optimizer moment the same way (`moved_optimizer`). Returns what
    `grow_depth` returns."""
    config = plan.config(model.config)
    fresh: Iterator[tuple[str, torch.Tensor]] | None = None
    if plan.fresh:
        stream = torch.Generator().set_state(generator.get_state())
        for _ in initial_values(config, generator):  # past the fresh values, as `GPT.init_weights` draws them
            pass
        fresh = initial_values(config, stream)  # the same values again, a block at a time
    moves = plan.draw(model.config, generator)
    targets: dict[str, torch.Tensor] = {}

    def carry(name: str) -> Carry:
        mover = moves.mover(name)
        return Carry(name, transform=lambda moment, power: like(mover.state(_whole(moment), power), targets[name]))

    with torch.device("meta"):
        skeleton = GPT(config)
    mapping: dict[str, Carry | None] = {name: carry(name) for name, _ in skeleton.named_parameters()}
    frozen, scales = parts(mapping, skeleton)
    grown = empty_model(
        recipe, config, frozen, dtype=model.embed.weight.dtype
    )  # the dtype it had, as one process keeps it
    old = dict(resharded(model).named_parameters())
    targets.update(grown.named_parameters())
    with torch.no_grad():
        for name, target in targets.items():  # in `grow_width`'s order: noise draws from the generator
            if fresh is not None:
                drawn, value = next(fresh)
                assert drawn == name, f"fresh values drawn for {drawn}, not {name}"
                value = value.to(target.device, target.dtype)
            else:  # every unit copies an old one
                value = torch.zeros((), device=target.device, dtype=target.dtype)
            whole = _whole(old[name])
            moved = moves.mover(name).weights(whole, value, plan.noise, generator)
            target.copy_(like(moved, target))
            del whole, moved, value  # one tensor whole at a time
    assert fresh is None or next(fresh, None) is None, "fresh values drawn for a parameter the model lacks"
    return grown, mapping, frozen, scales


def _gathered(tensors: Mapping[str, torch.Tensor], prefix: str, name: str) -> torch.Tensor:
    return _whole(tensors[prefix + name].detach())


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """One sharded tensor whole on every rank (an all-gather), or a tensor that is whole already."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
