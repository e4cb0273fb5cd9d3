"""The cost model: parameters, training FLOPs and memory of a `gpt` model at a given shape.

FLOPs. Training one token costs `6 N + 6 L T w` floating-point operations (Kaplan et al. 2020,
"Scaling Laws for Neural Language Models", table 1): `N` non-embedding parameters (two FLOPs per
parameter forward, four backward; of a mixture of experts, those a token uses: the router, its
top-k experts and the shared expert), plus the attention scores and their use, `L` layers over a
context of `T` tokens at width `w`. Like Kaplan's count it leaves out the embedding lookup and the
tied output projection. A forward pass alone costs a third of that.

Memory (bytes, an estimate for planning on a GPU). fp32 master weights (4 per parameter) and
gradients (4); AdamW moments (8) or SGD momentum (4, none without momentum); half of each for a
pretrained model held in bf16 or fp16 (`dtype=`), whose moments are held so too, and for AdamW a
compensation of 2 bytes a weight beside them (its writes Kahan-compensated, so it learns as fp32); activations kept for
the backward pass at the schedule's precision (2 bytes for bf16/fp16/auto, 4 for fp32): per layer
and token `10 w + 4 h` elements for SwiGLU (`10 w + 2 h` for GELU, `h` the MLP width; of a
mixture of experts, the hidden units of a token's top-k experts and shared expert) with fused
attention (no T x T scores kept), plus the fp32 logits and their gradient (`2 x 4 V` bytes per
token). Under `activations recompute` a layer keeps only its input (`w` per token) and one layer's
activations are recomputed at a time, for a forward pass of the blocks more per step (a third of
the training FLOPs, counted in `step_flops`). `auto` precision is taken as bf16, as on a GPU.

Per rank (`ranks` > 1, under torchrun): each rank keeps the activations of its share of the batch.
Under `parallel ddp` it holds the whole weights, gradients and optimizer state; under `parallel
fsdp` a 1/N share of each, plus the parameters FSDP gathers while it computes (the root's and two
blocks' at a time, at the training precision) and their whole gradients before they are reduced.
`phases` gives each phase's peak (a step, a growth, a probe, a checkpoint, the start and the final
model) from what the runtime holds in it: under `fsdp` a depth growth holds the grown model's
share and one block whole, a width growth the grown model's share and one tensor whole at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from lagdsl.lang.arch import ParamCount, mlp_hidden, param_count
from lagdsl.lang.schedule import Growth, Schedule, Shape, Stage

#: what a sharded model's own objects take at its start beside the tensors (FSDP's and DTensors'
#: bookkeeping), measured at a few MiB by bench/fsdp_memory.py
FSDP_OBJECTS = 4 << 20


@dataclass(frozen=True, slots=True)
class ShapeCost:
    """A shape with its parameter counts: what every plan node records before and after."""

    depth: int
    width: int
    heads: int
    params: int
    non_embedding: int
    #: the non-embedding parameters one token uses (a mixture of experts: its top-k experts)
    active: int
    experts: int = 1  # routed experts per block (1: a dense MLP)
    context: int = 0

    def grown_dim(self, before: ShapeCost) -> str:
        """Which dimension grew from `before` to this shape."""
        for dim in ("depth", "width", "context"):
            if getattr(before, dim) != getattr(self, dim):
                return dim
        return "experts"


@dataclass(frozen=True, slots=True)
class Memory:
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def state(self) -> int:
        """What a snapshot holds: weights and optimizer state."""
        return self.weights + self.optimizer


class CostModel:
    """Per-shape costs for one schedule, computed once per shape."""

    def __init__(self, schedule: Schedule, ranks: int = 1) -> None:
        self.schedule, self.ranks = schedule, ranks
        self.sharded = ranks > 1 and schedule.parallel == "fsdp"
        self.recompute = schedule.activations == "recompute"
        model = schedule.model
        self.vocab, self.mlp = model.vocab, model.mlp
        #: bytes a weight, its gradient and each of its moments take as the run holds them
        self.held = 2 if model.pretrained is not None and model.pretrained.dtype in ("bf16", "fp16") else 4
        self.shape_cost = cache(self._shape_cost)
        self.flops_per_token = cache(self._flops_per_token)
        self.memory = cache(self._memory)

    def count(self, shape: Shape, depth: int | None = None, active: bool = False) -> ParamCount:
        """The parameters at `shape` (at `depth` layers, default the shape's), with the model's
        key/value heads, head size, MLP size, untied head, biases and q/k norms (a pretrained one's);
        `active`: those one token uses (a mixture's router, top-k and shared experts)."""
        model = self.schedule.model
        return param_count(
            vocab=self.vocab, width=shape.width, depth=shape.depth if depth is None else depth, mlp=self.mlp,
            heads=shape.heads, kv_heads=shape.kv_heads, head_dim=model.head_dim, hidden=shape.hidden,
            tie=model.tie, qkv_bias=model.qkv_bias, qk_norm=model.qk_norm, moe=shape.moe, active=active,
            style=model.style,
        )  # fmt: skip

    def _shape_cost(self, shape: Shape) -> ShapeCost:
        count, active = self.count(shape), self.count(shape, active=True)
        return ShapeCost(
            shape.depth, shape.width, shape.heads, count.total, count.non_embedding, active.non_embedding,
            shape.experts, self.context(shape),
        )  # fmt: skip

    def _attention_width(self, shape: Shape) -> int:
        """The width of the attention's queries (`heads x head size`: the width, unless a head size is given)."""
        head_dim = self.schedule.model.head_dim
        return shape.heads * head_dim if head_dim is not None else shape.width

    def _flops_per_token(self, shape: Shape) -> int:
        """Training FLOPs per token: 6 N + 6 L T w (N: the active non-embedding parameters, w: the
        queries' width), a layer that slides attending to its window where that is shorter than T."""
        return 6 * self.shape_cost(shape).active + 6 * self._attended(shape) * self._attention_width(shape)

    def _attended(self, shape: Shape) -> int:
        """The positions a token's queries meet, summed over the layers: T each, or the window in
        the share of layers that slide (the model's first depth's share: Gemma 3's five in six)."""
        context, style = self.context(shape), self.schedule.model.style
        if style.window is None or style.window >= context or not style.local:
            return shape.depth * context
        sliding = round(shape.depth * len(style.local) / self.schedule.model.shape.depth)
        return (shape.depth - sliding) * context + sliding * style.window

    def context(self, shape: Shape) -> int:
        """The context of a model of `shape`: its positions', or (a shape built without them) the model's first."""
        return shape.positions.context if shape.positions is not None else self.schedule.model.context

    def tokens(self, shape: Shape) -> int:
        """Tokens per step of a model of `shape`: rows x accumulate x its context (`batch N tokens`: N x accumulate)."""
        return self.schedule.rows(self.context(shape)) * self.schedule.accumulate * self.context(shape)

    def step_flops(self, shape: Shape, steps: int, frozen: int = 0) -> int:
        """Training FLOPs of `steps` steps at `shape`; `frozen` non-embedding parameters compute no
        weight gradient (2 of their 6 FLOPs per token); under `activations recompute` the blocks'
        forward pass runs twice (a third more)."""
        per_token = self.flops_per_token(shape)
        recomputed = per_token // 3 if self.recompute else 0
        return steps * self.tokens(shape) * (per_token + recomputed - 2 * frozen)

    def frozen_params(self, stage: Stage) -> int:
        """The non-embedding parameters `stage` freezes, as the plan estimates them: `old` is the
        layers the stage began with (every one after width growth), `new` the layers it added,
        `layers(a, b)` b - a layers (overlaps counted once where they are the same kind)."""
        if not stage.freeze:
            return 0
        before, after = stage.before, stage.after
        count = self.count(after)
        kinds = {part.kind for part in stage.freeze}
        widened = after.width != before.width
        blocks: set[int] = set()
        if "old" in kinds:
            blocks |= set(range(after.depth if widened else before.depth))
        if "new" in kinds and not widened:
            blocks |= set(range(before.depth, after.depth))
        for part in stage.freeze:
            if part.kind == "layers":
                blocks |= set(range(part.start, part.end))
        return sum(count.block(i) for i in blocks if i < after.depth)

    def forward_flops(self, shape: Shape, batches: int) -> int:
        """Forward passes over `batches` micro-batches (evaluation, probe-0 selection)."""
        return (
            batches * self.schedule.rows(self.context(shape)) * self.context(shape) * self.flops_per_token(shape) // 3
        )

    def scoring_batches(self, growth: Growth) -> int:
        """The batches a probe's selection reads per candidate: `val_loss`, the eval batches; the loss
        right after growth (`probe 0 steps`), one; the training loss, none (the probe's own steps)."""
        probe = growth.probe
        assert probe is not None
        if probe.select.metric == "val_loss":
            return self.schedule.eval_batches
        return 1 if probe.steps == 0 else 0

    def scoring_flops(self, growth: Growth) -> int:
        """The forward passes that score one candidate of a probe (the run counts them as the plan does)."""
        return self.forward_flops(growth.after, self.scoring_batches(growth))

    def _memory(self, shape: Shape) -> Memory:
        schedule = self.schedule
        params = self.shape_cost(shape).params
        optimizer = schedule.optimizer
        held = self.held
        if optimizer.name == "adamw":  # weights held in bf16: a compensation beside each (KahanAdamW)
            moments = (2 * held + (held if held == 2 else 0)) * params
        else:
            moments = held * params if optimizer.momentum > 0 else 0
        element = 4 if schedule.precision == "fp32" else 2
        hidden = shape.hidden if shape.hidden is not None else mlp_hidden(shape.width, self.mlp)
        per_layer = [10 * shape.width + (4 if self.mlp == "swiglu" else 2) * hidden] * shape.depth
        if shape.moe is not None:  # a token's top-k experts' and the shared expert's hidden units
            mixed = 10 * shape.width + 4 * (shape.moe.top_k * shape.moe.hidden + shape.moe.shared)
            per_layer = [per_layer[i] if i in shape.moe.dense else mixed for i in range(shape.depth)]
        tokens = -(-schedule.rows(self.context(shape)) // self.ranks) * self.context(
            shape
        )  # this rank's share of the batch
        # kept for the backward pass: every layer's activations, or (recompute) every layer's input
        # and one layer's activations at a time, recomputed
        layers = shape.width * shape.depth + max(per_layer) if self.recompute else sum(per_layer)
        activations = tokens * (layers * element + 2 * shape.width * element + 8 * self.vocab)
        if not self.sharded:
            return Memory(weights=held * params, gradients=held * params, optimizer=moments, activations=activations)
        cost = self.shape_cost(shape)
        unsharded = params - cost.non_embedding + 2 * cost.non_embedding // shape.depth  # root and two blocks
        share = self._share
        # the parameters FSDP gathers while it computes (at the training precision), and their
        # whole gradients before they are reduced and scattered (in fp32)
        return Memory(
            weights=share(held * params) + unsharded * element, gradients=share(held * params) + 4 * unsharded,
            optimizer=share(moments), activations=activations,
        )  # fmt: skip

    def _share(self, nbytes: int) -> int:
        return -(-nbytes // self.ranks)

    def phases(
        self, before: Shape, after: Shape, *, probed: bool, width: bool, first: bool, last: bool, best: bool = True
    ) -> dict[str, int]:
        """The peak per rank of each phase of a stage that grows `before` to `after` (bytes), as the
        runtime holds them: `start` (the first stage: the model built; under `fsdp` each rank's
        shares and one tensor or block whole, drawn or read before the rank keeps its rows); `train` (a
        step: weights, gradients, optimizer state, activations); a `growth` (the old state and
        what the growth adds, `growth_extra`; inside a probe beside the snapshot and, where the
        probe keeps it (`best`: `keep winner`), the best candidate so far); `probe` (snapshot,
        best, and a candidate training); `checkpoint`
        (weights and optimizer state: gradients are freed after each step); `final` (the last
        stage's state, written as it is held, under `fsdp` each rank's shards, beside the last
        evaluation's forward pass, for which FSDP gathers the root's parameters and up to three
        blocks': the one computing, the next one prefetched and the last one not yet freed)."""
        memory, cost = self.memory(after), self.shape_cost(after)
        phases: dict[str, int] = {}
        block = cost.non_embedding // after.depth
        gathered = memory.weights - self._share(self.held * cost.params)  # what FSDP gathers to compute (fsdp)
        if first:
            # under fsdp the largest tensor or block drawn whole, as much again for what it is built
            # in and cut from, and the sharded model's own objects (measured: bench/fsdp_memory.py)
            whole = self.held * max(self.vocab * after.width, block)
            sharded = self._share(self.held * cost.params) + 2 * whole + FSDP_OBJECTS
            phases["start"] = sharded if self.sharded else self.held * cost.params
        phases["train"] = memory.total
        if before != after:
            old = self.memory(before).state
            growth = old + self.growth_extra(before, after, width)
            held = old + (memory.state if best else 0)  # the snapshot, and the best candidate so far
            phases["growth"] = growth + (held if probed else 0)
            if probed:
                phases["probe"] = max(phases["growth"], held + memory.total)
        phases["checkpoint"] = memory.state
        if last:
            third = block * (4 if self.schedule.precision == "fp32" else 2)  # a third block, gathered
            phases["final"] = memory.state + (gathered + third if self.sharded else 0)
        return phases

    def growth_extra(self, before: Shape, after: Shape, width: bool = False) -> int:
        """What a growth from `before` to `after` holds beside the old state, per rank. One process
        and DDP: a depth growth keeps the old layers (the same tensors) and adds the copies' and
        new layers' weights and moments; a width growth builds every tensor anew. `fsdp` with
        several ranks: a depth growth grows each rank's shards, taking the old ones over where a
        parameter is kept (their weights and moments), so it adds the copies' and new layers' share
        and one block whole (fp32: a fresh block every rank draws before it keeps its rows, or a
        copy's noise); a width growth
        holds the grown model's share of the weights and optimizer state, a fresh block whole (the
        grown model's initial values, drawn a block at a time) and, one tensor at a time, the old
        tensor gathered whole and the moved one (the largest: the embedding or a block's widest
        matrix, fp32)."""
        new, old = self.memory(after).state, self.memory(before).state
        if not self.sharded:
            return new if width else max(0, new - old)
        cost = self.shape_cost(after)
        if width:
            hidden = after.hidden if after.hidden is not None else mlp_hidden(after.width, self.mlp)
            widest = (2 if self.mlp == "swiglu" else 1) * hidden * after.width
            largest = 4 * max(self.vocab * after.width, widest)
            return new + 4 * cost.non_embedding // after.depth + 2 * largest
        return max(0, new - old) + 4 * cost.non_embedding // after.depth
