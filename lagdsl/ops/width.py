"""Width operators: grow a model from width w to w' (the language's width operators).

The head size stays, so heads grow with the width, and the MLP's hidden size follows the width
(`lagdsl.lang.arch.mlp_hidden`). Three kinds of units grow: residual dimensions (R), attention
channels, grouped by head (H), and MLP units (U). Each parameter's dimensions are one of these, and
each is read (an input), written (an output), or a norm gain:

    embed [vocab, R out]      qkv [3 x H out, R in]        o [R out, H in]
    norms [R gain]            gate_up [2 x U out, R in]    down [R out, U in]   (GELU: up [U out, R in])

A projection's bias grows with its output units; a LayerNorm's bias is the stream's (its copies
scaled as the stream's copies are); a norm after a sublayer (OLMo 2, Gemma) writes the stream, so
its gain scales as what writes does; learned positions write the stream as the embedding does;
Gemma's gains, held as `gain - 1`, move as the gains they are; and Gemma's embedding scale,
sqrt(width), which grows, is compensated by the embedding and the tied head's final norm
(`WidthMoves.factors`). LayerNorm (a mean over the width) and OLMo 2's q/k norm (over every head)
are kept only approximately by Net2Net and `zero`: `lagdsl.lang.style.Style.inexact_width`.

A mixture of experts' router [E, R in] reads the stream like the MLP; every expert's hidden units
(X) grow by one map (`gate_up` [E, 2 x X out, R in], `down` [E, R out, X in]), a shared expert's
(S) by its own.

An operator decides, for every new unit, which old unit it copies (or none), then `grow_width`
moves every parameter, and its optimizer state, by those choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch.optim import Optimizer

from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT
from lagdsl.ops.core import Carry, Grown, GrowthSpec, rebuild_optimizer

__all__ = ["hyperclone", "net2net", "random", "zero"]

#: Each parameter's dimensions by its name's last two parts: (the unit kinds laid end to end along
#: it, role) or None (the vocabulary, or a head's own dimension). Q: query channels, grouped by
#: head; K: key/value channels, grouped by key/value head; `qkv` lays out Q, K, K and `gate_up` U, U.
Axis = tuple[tuple[str, ...], str]
LAYOUT: dict[str, tuple[Axis | None, ...]] = {
    "embed.weight": (None, (("R",), "out")),
    "lm_head.weight": (None, (("R",), "in")),  # an untied output head
    "pos.weight": (None, (("R",), "out")),  # learned positions (GPT-2) write the stream as the embedding does
    "norm.weight": ((("R",), "gain"),),
    "norm1.weight": ((("R",), "gain"),),
    "norm2.weight": ((("R",), "gain"),),
    "norm.bias": ((("R",), "bias"),),  # LayerNorm's (GPT-2, GPT-NeoX)
    "norm1.bias": ((("R",), "bias"),),
    "norm2.bias": ((("R",), "bias"),),
    "post1.weight": ((("R",), "post"),),  # a norm of a sublayer's output (OLMo 2, Gemma)
    "post2.weight": ((("R",), "post"),),
    "qkv.weight": ((("Q", "K", "K"), "out"), (("R",), "in")),
    "qkv.bias": ((("Q", "K", "K"), "out"),),
    "q_norm.weight": (None,),  # per head (`_layout`: over the whole projection, OLMo 2's, by head)
    "k_norm.weight": (None,),
    "o.weight": ((("R",), "out"), (("Q",), "in")),
    "o.bias": ((("R",), "out"),),
    "gate_up.weight": ((("U", "U"), "out"), (("R",), "in")),
    "gate_up.bias": ((("U", "U"), "out"),),
    "up.weight": ((("U",), "out"), (("R",), "in")),
    "up.bias": ((("U",), "out"),),
    "down.weight": ((("R",), "out"), (("U",), "in")),
    "down.bias": ((("R",), "out"),),
    # a mixture of experts: the router and the shared expert's gate read the stream; every expert
    # grows its hidden units (X) alike; a shared expert's (S) are its own (`_layout`)
    "router.weight": (None, (("R",), "in")),
    "shared_gate.weight": (None, (("R",), "in")),
    "mlp.gate_up": (None, (("X", "X"), "out"), (("R",), "in")),
    "mlp.down": (None, (("R",), "out"), (("X",), "in")),
}


#: the RMSNorm gains, which a family with `norm_offset` (Gemma) holds as `gain - 1`
OFFSET_GAINS = frozenset(
    {"norm.weight", "norm1.weight", "norm2.weight", "post1.weight", "post2.weight", "q_norm.weight", "k_norm.weight"}
)


@dataclass(frozen=True)
class UnitMap:
    """For each new unit, the old unit it copies (-1: a new unit), and whether it is that old unit
    itself (not a copy); for each old unit, how many new units it became."""

    index: torch.Tensor
    count: torch.Tensor
    original: torch.Tensor

    @staticmethod
    def build(old: int, new: int, copied: torch.Tensor | None) -> UnitMap:
        extra = copied if copied is not None else torch.full((new - old,), -1, dtype=torch.long)
        return UnitMap.of(old, torch.cat([torch.arange(old), extra]))

    @staticmethod
    def of(old: int, index: torch.Tensor) -> UnitMap:
        """The map whose new units copy `index` (-1: new) of `old` units; the first `old` are originals."""
        count = torch.bincount(index[index >= 0], minlength=old)
        return UnitMap(index, count, torch.arange(index.numel()) < old)

    def channels(self, size: int) -> UnitMap:
        """The map of the channels of units of `size` channels each (heads)."""
        index = (self.index[:, None] * size + torch.arange(size)).where(self.index[:, None] >= 0, -1).flatten()
        return UnitMap(index, self.count.repeat_interleave(size), self.original.repeat_interleave(size))

    @staticmethod
    def concat(maps: list[UnitMap]) -> UnitMap:
        """The map of several dimensions laid end to end (q, k and v; gate and up)."""
        if len(maps) == 1:
            return maps[0]
        indices, offset = [], 0
        for unit in maps:
            indices.append(torch.where(unit.index >= 0, unit.index + offset, -1))
            offset += unit.count.numel()
        return UnitMap(torch.cat(indices), torch.cat([m.count for m in maps]), torch.cat([m.original for m in maps]))


def head_maps(old_heads: int, new_heads: int, groups: int, kv_copied: torch.Tensor | None) -> tuple[UnitMap, UnitMap]:
    """Query-head and key/value-head maps: key/value heads grow in proportion, each new one a copy
    of `kv_copied` (or new), and a new group's query heads copy the old group's, in order."""
    kv = UnitMap.build(old_heads // groups, new_heads // groups, kv_copied)
    group = kv.index.repeat_interleave(groups)
    within = torch.arange(new_heads) % groups
    return UnitMap.of(old_heads, torch.where(group >= 0, group * groups + within, -1)), kv


def _layout(name: str, whole_qk: bool = False) -> tuple[Axis | None, ...]:
    key = ".".join(name.split(".")[-2:])
    if whole_qk and key in ("q_norm.weight", "k_norm.weight"):  # a gain per channel of every head
        return (((("Q",) if key[0] == "q" else ("K",)), "norm"),)
    layout = LAYOUT[key]
    if ".shared." in name:  # a shared expert's hidden units are its own
        return tuple(None if a is None else (tuple("S" if k == "U" else k for k in a[0]), a[1]) for a in layout)
    return layout


@dataclass(frozen=True)
class WidthPlan:
    """A width growth to `width`: what `grow_width` does with it is documented there. The plan
    holds no random draws: the grown model's fresh values and each new unit's source are drawn
    from the growth's generator when it is carried out (`draw`)."""

    width: int
    copy_units: bool
    zero_outgoing: bool
    noise: float = 0.0
    cloning: bool = False

    @property
    def fresh(self) -> bool:
        """Whether new units start from freshly drawn values (every one copies under cloning)."""
        return not self.cloning

    def config(self, old: GPTConfig) -> GPTConfig:
        """The grown model's configuration: the width, and the norms' epsilon rescaled where the
        residual stream's mean square changes."""
        config = old.grown(width=self.width)
        n = self.width // old.width
        if self.cloning:
            if old.tie:  # the stream is the old one over n: its mean square over n^2
                config = replace(config, norm_eps=old.norm_eps / n**2)
        elif self.copy_units or self.zero_outgoing:  # its mean square changes by w / w'
            config = replace(config, norm_eps=old.norm_eps * old.width / self.width)
        return config

    def draw(self, old: GPTConfig, generator: torch.Generator) -> WidthMoves:
        """Each new unit's source, drawn from `generator` (after the fresh values, where any)."""
        config = self.config(old)
        preserving = self.copy_units or self.zero_outgoing

        def pick(before: int, after: int) -> torch.Tensor | None:
            if self.cloning:
                return torch.arange(before, after) % before
            if not self.copy_units:
                return None
            return torch.randint(0, before, (after - before,), generator=generator)

        groups = old.heads // old.key_value_heads
        heads, kv_heads = head_maps(old.heads, config.heads, groups, pick(old.key_value_heads, config.key_value_heads))
        maps = {
            "R": UnitMap.build(old.width, config.width, pick(old.width, config.width)),
            "Q": heads.channels(config.head_size),
            "K": kv_heads.channels(config.head_size),
            "U": UnitMap.build(old.hidden, config.hidden, pick(old.hidden, config.hidden)),
        }
        if old.moe is not None and config.moe is not None:  # every expert's units alike; the shared expert's
            maps["X"] = UnitMap.build(old.moe.hidden, config.moe.hidden, pick(old.moe.hidden, config.moe.hidden))
            if old.moe.shared:
                maps["S"] = UnitMap.build(old.moe.shared, config.moe.shared, pick(old.moe.shared, config.moe.shared))
        if self.cloning:  # residual copies written whole (a tied embedding: over n) and read over n
            post = old.width / config.width if old.tie else 1.0  # (a post-norm writes the stream)
            residual = _Residual(write=-1.0 if old.tie else 0.0, read=-1.0, gain=1.0, zero_sum=True, post=post)
        else:  # Net2Net's isometry, or fresh units
            gain = math.sqrt(old.width / config.width) if preserving else 1.0
            residual = _Residual(write=-0.5, read=-0.5, gain=gain, bias=-0.5, post=gain)
        factors: dict[str, float] = {}
        if old.style.embed_scale:  # Gemma's sqrt(width) grows with the width: the embedding compensates
            factors["embed.weight"] = math.sqrt(old.width / config.width)
            if old.tie:  # and so does the head it is, by the final norm's gain
                factors["norm.weight"] = math.sqrt(config.width / old.width)
        return WidthMoves(self, config, maps, residual, factors)


@dataclass(frozen=True)
class WidthMoves:
    """A width growth's plan with its draws: how each parameter (and its optimizer state) moves,
    one tensor at a time (`mover`), so a sharded model grows a tensor at a time."""

    plan: WidthPlan
    config: GPTConfig
    maps: dict[str, UnitMap]
    residual: _Residual
    factors: dict[str, float] = field(default_factory=dict)  # a scale of a whole parameter, by name

    def mover(self, name: str) -> _Mover:
        copying = self.plan.copy_units or self.plan.cloning
        style = self.config.style
        layout = _layout(name, style.qk_norm_whole)
        factor = self.factors.get(name, 1.0)
        gain = ".".join(name.split(".")[-2:]) in OFFSET_GAINS and style.norm_offset and style.norm == "rms"
        return _Mover(layout, self.maps, copying, self.plan.zero_outgoing, self.residual, factor, 1.0 if gain else 0.0)


class PlannedWidth:
    """A width operator given by its plan: `plan(config, spec)` for a model of that configuration
    (raising ValueError where the growth cannot be done). Called as an operator it grows a whole
    model (`grow_width`); a sharded one grows a tensor at a time (`lagdsl.runtime.distributed.moves`)."""

    def __init__(self, plan: Callable[[GPTConfig, GrowthSpec], WidthPlan], doc: str) -> None:
        self.plan, self.__doc__ = plan, doc

    def __call__(self, model: GPT, optimizer: Optimizer | None, spec: GrowthSpec, generator: torch.Generator) -> Grown:
        return grow_width(model, optimizer, self.plan(model.config, spec), generator)


def grow_width(
    model: GPT, optimizer: torch.optim.Optimizer | None, plan: WidthPlan, generator: torch.Generator
) -> Grown:
    """The model grown by `plan`, every parameter and its optimizer state moved.

    `copy_units` (Net2Net): each new unit copies a random old one (with grouped-query attention, a
    new key/value head copies a random old one and its group of query heads comes along). Weights
    reading a copied head or MLP unit are split among its copies. A residual dimension copied c
    times is scaled by 1/sqrt(c) in every copy, where it is written (embedding, output projections)
    and where it is read (q, k, v, MLP inputs, the output head): an isometry of the residual stream,
    so a tied embedding serves as both writer and reader and the stream's sum of squares is
    unchanged. With the norm gains scaled by sqrt(w / w') and the norms' epsilon by w / w', the
    function is unchanged to float rounding.

    Otherwise new units are fresh (initialized from `generator`); with `zero_outgoing` everything a
    new unit writes (into the residual stream or out of a new head or MLP unit) starts at zero,
    and the norms are rescaled as above, so the function is unchanged.

    `cloning` (HyperCloning, width x n): unit i of the new model copies unit i mod the old count,
    so every weight is its old matrix tiled, and what reads n copies is divided by n
    (`W.repeat(n, n) / n`). The residual stream's copies are exact, so the norm gains and epsilon
    stay. A tied embedding, which writes the stream and reads it as the output head, is divided by
    n instead, and with it everything written into the stream (the output projections, 1/n^2) and
    the norms' epsilon (1/n^2): the stream is the old one over n in each copy. `noise` then adds
    noise that sums to zero over the copies a weight reads (the paper's "noisy" cloning), which
    breaks the copies' symmetry and keeps the function.

    The generator is drawn in this order: the grown model's fresh values (`GPT.init_weights`),
    each new unit's source, then each parameter's noise in order.
    """
    config = plan.config(model.config)
    device, dtype = model.embed.weight.device, model.embed.weight.dtype
    if plan.fresh:
        grown = GPT(config)
        grown.init_weights(generator)
        grown.to(device=device, dtype=dtype)
    else:  # every unit copies an old one: nothing to initialize
        grown = GPT.empty(config, device, dtype)
    moves = plan.draw(model.config, generator)
    old_params = dict(model.named_parameters())
    mapping: dict[str, Carry | None] = {}
    with torch.no_grad():
        for name, param in grown.named_parameters():
            mover = moves.mover(name)
            param.copy_(mover.weights(old_params[name], param, plan.noise, generator))
            mapping[name] = Carry(name, transform=mover.state)
    return Grown(grown, rebuild_optimizer(optimizer, model, grown, mapping), mapping)


@dataclass(frozen=True)
class _Residual:
    """How copies of a residual dimension are scaled: a dimension copied c times is multiplied by
    c**write where it is written and c**read where it is read; the norm gains by `gain`, a
    LayerNorm's bias by c**bias (its output is the stream's copies, normalized), the gains of norms
    after a sublayer (which write the stream) by `post`. With `zero_sum`, copy noise sums to zero
    over the copies a weight reads."""

    write: float
    read: float
    gain: float
    zero_sum: bool = False
    bias: float = 0.0
    post: float = 1.0


class _Mover:
    """Moves one parameter's tensors (weights, then optimizer state) to the grown shape."""

    def __init__(
        self,
        layout: tuple[Axis | None, ...],
        maps: dict[str, UnitMap],
        copy_units: bool,
        zero_outgoing: bool,
        residual: _Residual,
        factor: float = 1.0,
        offset: float = 0.0,
    ) -> None:
        self.layout = layout
        self.factor = factor
        self.offset = offset  # the gain is the weight plus this (Gemma's RMSNorm): moved as the gain
        self.maps = maps
        self.copy_units = copy_units
        self.zero_outgoing = zero_outgoing
        self.residual = residual
        self.gain_scale = residual.gain

    def _axes(self, ndim: int) -> Iterator[tuple[int, str, str, UnitMap, list[int]]]:
        """For each growing dimension: its index, unit kind, role, map, and a shape that lays a
        per-unit vector along it."""
        for dim, axis in enumerate(self.layout):
            if axis is not None:
                kinds, role = axis
                unit = UnitMap.concat([self.maps[k] for k in kinds])
                kind = "R" if kinds == ("R",) else "H"  # the residual stream, or units inside a block
                yield dim, kind, role, unit, [-1 if d == dim else 1 for d in range(ndim)]

    def _gather(self, old: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Old values at the new positions, the scale of each, and which positions have an old value."""
        values = old
        scale = torch.full((), self.factor, dtype=torch.float32)
        known = torch.ones((), dtype=torch.bool)
        for dim, kind, role, unit, shape in self._axes(old.dim()):
            source = unit.index.clamp(min=0)
            values = values.index_select(dim, source.to(old.device))
            known = known & (unit.index >= 0).view(shape)
            if self.copy_units and kind == "R" and role in ("in", "out"):
                # a residual dimension copied c times: every copy, the original included, is scaled
                # where it is written and where it is read (Net2Net: 1/sqrt(c) each, an isometry)
                power = self.residual.write if role == "out" else self.residual.read
                scale = scale * unit.count[source].float().pow(power).view(shape)
            elif self.copy_units and role == "in":
                # a head's or MLP unit's output copied c times: what reads it is split among the copies
                scale = scale / unit.count[source].float().view(shape)
            elif self.copy_units and role == "bias":
                scale = scale * unit.count[source].float().pow(self.residual.bias).view(shape)
            if role == "gain":
                scale = scale * self.gain_scale
            elif role == "post":
                scale = scale * self.residual.post
        return values, scale.to(old.device), known.to(old.device)

    def weights(self, old: torch.Tensor, fresh: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
        if self.offset:  # moved as the gain it is, and held again as the weight
            return self._weights(old + self.offset, fresh + self.offset, noise, generator) - self.offset
        return self._weights(old, fresh, noise, generator)

    def _weights(
        self, old: torch.Tensor, fresh: torch.Tensor, noise: float, generator: torch.Generator
    ) -> torch.Tensor:
        values, scale, known = self._gather(old)
        moved = values.mul_(scale.to(values.dtype))  # `values` is a new tensor (index_select)
        if not bool(known.all()):
            moved = torch.where(known, moved, fresh)
        if self.copy_units and noise > 0 and self.residual.zero_sum:
            moved.add_(self._zero_sum_noise(moved, noise, generator))
        elif self.copy_units and noise > 0:
            copied = ~self._original(old)
            std = old.float().std().item() if old.numel() > 1 else 0.0
            jitter = torch.randn(moved.shape, generator=generator).to(moved.device, moved.dtype)
            moved = moved + jitter * (noise * std) * copied
        if not self.copy_units and self.zero_outgoing:
            moved = torch.where(self._writes_new(old), torch.zeros_like(moved), moved)
            if self.layout[0] is not None and self.layout[0][1] in ("gain", "post"):
                gain = self.gain_scale if self.layout[0][1] == "gain" else self.residual.post
                moved = torch.where(known, moved, torch.full_like(moved, gain))
        return moved

    def _zero_sum_noise(self, moved: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
        """Noise on a weight that reads copies, summing to zero over the copies of each unit it
        reads, so the sum it computes is unchanged (none on weights that read no copies)."""
        reads = [(dim, unit) for dim, _, role, unit, _ in self._axes(moved.dim()) if role == "in"]
        if not reads:
            return torch.zeros_like(moved)
        dim, unit = reads[0]
        std = moved.float().std().item() if moved.numel() > 1 else 0.0
        # drawn with the dimension it reads first, so the copies of a unit are whole slabs
        front = (moved.shape[dim], *(n for d, n in enumerate(moved.shape) if d != dim))
        along = torch.randn(front, generator=generator, dtype=torch.float32)
        source = unit.index.clamp(min=0)
        old = unit.count.numel()
        copies = int(unit.count[0]) if old else 0
        if bool((source == torch.arange(source.numel()) % old).all()) and bool((unit.count == copies).all()):
            # tiled: the copies of unit j are j, j + old, ...: subtract their mean
            tiles = along.view(copies, old, *front[1:])
            tiles -= tiles.mean(0, keepdim=True)
        else:  # subtract, at each position, the mean over the copies of the same source unit
            sums = torch.zeros((old, *front[1:])).index_add_(0, source, along)
            along = along - (sums / unit.count.clamp(min=1).float().view(-1, *[1] * (along.dim() - 1)))[source]
        balanced = along.movedim(0, dim)
        return balanced.mul_(noise * std).to(moved.device, moved.dtype)

    def state(self, old: torch.Tensor, power: int) -> torch.Tensor:
        values, scale, known = self._gather(old)
        return torch.where(known, values * scale.to(values.dtype) ** power, torch.zeros((), dtype=values.dtype))

    def _original(self, old: torch.Tensor) -> torch.Tensor:
        """Positions that are old units in every dimension (not copies)."""
        mask = torch.ones((), dtype=torch.bool)
        for _, _, _, unit, shape in self._axes(old.dim()):
            mask = mask & unit.original.view(shape)
        return mask.to(old.device)

    def _writes_new(self, old: torch.Tensor) -> torch.Tensor:
        """Positions that write a new residual dimension, or carry a new head's or unit's output."""
        mask = torch.zeros((), dtype=torch.bool)
        for _, kind, role, unit, shape in self._axes(old.dim()):
            if (kind == "R" and role == "out") or (kind == "H" and role == "in"):
                mask = mask | (unit.index < 0).view(shape)
        return mask.to(old.device)


def _width(config: GPTConfig, spec: GrowthSpec) -> int:
    if spec.target <= config.width:
        raise ValueError(f"width {spec.target} does not grow a model of width {config.width}")
    return spec.target


def _hyperclone(config: GPTConfig, spec: GrowthSpec) -> WidthPlan:
    width = _width(config, spec)
    if width % config.width:
        raise ValueError(f"HyperCloning multiplies the width: {width} is not a multiple of {config.width}")
    return WidthPlan(width, copy_units=False, zero_outgoing=False, noise=spec.number("noise", 0.1), cloning=True)


net2net = PlannedWidth(
    lambda config, spec: WidthPlan(
        _width(config, spec), copy_units=True, zero_outgoing=False, noise=spec.number("noise")
    ),
    "Copies of random existing units; what reads a copy is split among the copies (Net2Net).",
)
zero = PlannedWidth(
    lambda config, spec: WidthPlan(_width(config, spec), copy_units=False, zero_outgoing=True),
    "Fresh incoming weights, zero outgoing weights, new residual dimensions at zero.",
)
hyperclone = PlannedWidth(
    _hyperclone, "Width x n, every weight tiled n x n and divided by n (HyperCloning): the logits unchanged."
)
random = PlannedWidth(
    lambda config, spec: WidthPlan(_width(config, spec), copy_units=False, zero_outgoing=False),
    "Freshly initialized units.",
)
