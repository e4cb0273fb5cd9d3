"""Pass: shapes. The model's shape through every growth, and what each operator can perform."""

from __future__ import annotations

from lagdsl.families import FamilyError, family_named, mixture_family
from lagdsl.lang import layers
from lagdsl.lang.arch import grown_heads, grown_mlp, mlp_hidden
from lagdsl.lang.check.context import lengthened
from lagdsl.lang.check.draft import Draft, GrowDraft, OperatorRef
from lagdsl.lang.params import Param, coerce, show
from lagdsl.lang.schedule import (
    MAX_CONTEXT,
    MAX_DEPTH,
    MAX_EXPERTS,
    MAX_HEADS,
    MAX_WIDTH,
    MixtureSpec,
    Positions,
    Shape,
    layer_list,
)


def check_shapes(draft: Draft) -> Draft:
    """Each stage's and growth's shape before and after; stops at the first growth it cannot size
    (later shapes are unknown: checking them would only repeat that error)."""
    model = draft.settings.model
    if model is None:
        return draft
    shape = model.shape
    assert shape.positions is not None
    # every positions the model may have here (a context probe's candidates'), with the candidate's label
    options: list[tuple[Positions, str | None]] = [(shape.positions, None)]
    for stage in draft.stages:
        stage.before = shape
        for grow in stage.grows:
            grow.before = shape
            if grow.dim == "context":
                grown = _longer(draft, grow, shape, options)
                after, options = grown if grown is not None else (None, options)
            else:
                after = _grown_shape(draft, grow, shape)
            if after is None:
                stage.after = None
                return draft
            grow.after = after
            _check_operators(draft, grow, shape, after)
            shape = after
        stage.after = shape
    return draft


def _longer(
    draft: Draft, grow: GrowDraft, shape: Shape, options: list[tuple[Positions, str | None]]
) -> tuple[Shape, list[tuple[Positions, str | None]]] | None:
    target = _target(draft, grow, shape)
    return None if target is None else lengthened(draft, grow, shape, target, options)


def _grown_shape(draft: Draft, grow: GrowDraft, shape: Shape) -> Shape | None:
    dim = grow.dim
    target = _target(draft, grow, shape)
    if target is None or dim is None:
        return None
    current = getattr(shape, dim)
    if dim == "experts":
        return _mixed_shape(draft, grow, shape, target)
    if dim == "depth":
        if target > 4 * current:
            _large_step(draft, grow, f"growing depth {current} -> {target} in one step is more than 4x")
        return _deepened(draft, grow, shape, target)
    return _widened(draft, grow, shape, target)


def _target(draft: Draft, grow: GrowDraft, shape: Shape) -> int | None:
    """The size `grow` asks for, where it is one the model can grow to (else reported)."""
    node, dim = grow.node, grow.dim
    if dim is None:
        return None
    amount, problem = coerce(Param(f"grow {node.mode}", "int"), node.amount, None)
    if problem:
        draft.diagnostics.append(problem)
        return None
    assert isinstance(amount, int)
    current = getattr(shape, dim)
    target = current + amount if node.mode == "by" else amount
    limits = {
        "depth": MAX_DEPTH, "width": min(MAX_WIDTH, MAX_HEADS * shape.head_size), "experts": MAX_EXPERTS,
        "context": MAX_CONTEXT,
    }  # fmt: skip
    if target > limits[dim]:
        draft.report(
            "E0302",
            f"`grow {dim} {node.mode} {show(node.amount)}` gives {dim} {target:,}, more than the {limits[dim]:,} "
            "allowed",
            node.amount.span,
            "out of range",
            f"a model has at most {MAX_DEPTH:,} layers, width {MAX_WIDTH:,}, {MAX_HEADS:,} heads, "
            f"{MAX_EXPERTS:,} experts and a context of {MAX_CONTEXT:,}",
        )
        return None
    if target <= current:
        say = f"by {amount}" if node.mode == "by" else f"to {amount}"
        draft.report(
            "E0401",
            f"`grow {dim} {say}` does not grow the model",
            node.amount.span,
            f"the {dim} is already {current} here",
            f"write `grow {dim} to N` with N above {current}, or `grow {dim} by N` with N at least 1",
        )
        return None
    return target


def _widened(draft: Draft, grow: GrowDraft, shape: Shape, target: int) -> Shape | None:
    node, current = grow.node, shape.width
    head = shape.head_size * shape.groups  # with grouped-query attention, whole groups of heads
    if target % head:
        lower, upper = target // head * head, (target // head + 1) * head
        options = [w for w in (lower, upper) if w > current]
        draft.report(
            "E0404",
            f"width {target} is not a multiple of the head size {head}"
            if shape.groups == 1
            else f"width {target} is not a multiple of {head}: {shape.groups} heads of width {shape.head_size}",
            node.amount.span,
            "the head size stays fixed as the model widens"
            if shape.groups == 1
            else "key/value heads grow in proportion to the query heads",
            f"try {' or '.join(f'`{w}`' for w in options)}" + (" (as a target with `to`)" if node.mode == "by" else ""),
        )
        return None
    if target > 2 * current:
        _large_step(draft, grow, f"growing width {current} -> {target} in one step is more than 2x")
    heads = target // shape.head_size
    kv_heads = grown_heads(shape.kv_heads, shape.width, target) if shape.kv_heads is not None else None
    hidden = grown_mlp(shape.hidden, shape.width, target) if shape.hidden is not None else None
    moe = shape.moe
    if moe is not None:  # every expert, and a shared one, in proportion (as the model grows them)
        shared = grown_mlp(moe.shared, shape.width, target) if moe.shared else 0
        moe = moe.model_copy(update={"hidden": grown_mlp(moe.hidden, shape.width, target), "shared": shared})
    return shape.model_copy(
        update={"width": target, "heads": heads, "kv_heads": kv_heads, "hidden": hidden, "moe": moe}
    )


def _deepened(draft: Draft, grow: GrowDraft, shape: Shape, depth: int) -> Shape:
    """The shape after `grow depth`: a mixture's dense layers where the operator's layer plan puts
    them (`layers.carried`: a copy is of its source's kind); a probe's candidates must put them in
    the same places (they are compared as ways to reach one model)."""
    deeper = shape.model_copy(update={"depth": depth})
    moe = shape.moe
    if moe is None or not moe.dense:
        return deeper
    refs = [grow.op] if grow.op is not None else list(grow.candidates or [])
    first: tuple[OperatorRef, tuple[int, ...]] | None = None
    for ref in refs:
        entry = ref.entries.get("depth")
        if entry is None or entry.cannot(shape, deeper, ref.args):
            continue  # `_check_operators` says so
        plan = entry.layer_plan(shape.depth, depth - shape.depth, ref.args)
        if plan is None:
            draft.report(
                "E0403", f"`{ref.label}` cannot grow the depth of a mixture with dense layers", ref.span,
                f"the mixture leaves {layer_list(moe.dense)} dense, and the operator has no layer plan to say which "
                "new layers are mixtures", "choose a built-in depth operator",
            )  # fmt: skip
            grow.ok = False
            continue
        dense = layers.carried(plan, moe.dense)
        if first is not None and first[1] != dense:
            draft.report(
                "E0406", f"candidates `{first[0].label}` and `{ref.label}` build different mixtures", ref.span,
                f"dense MLPs in {layer_list(dense)}, where `{first[0].label}` puts them in {layer_list(first[1])}",
                "a probe compares ways to one model: give it candidates that copy the same kinds of layers "
                "(a copy is of its source's kind, a fresh layer of the one below it)",
            )  # fmt: skip
            grow.ok = False
            continue
        first = first or (ref, dense)
    if first is None:
        return deeper
    return deeper.model_copy(update={"moe": moe.model_copy(update={"dense": first[1]})})


def _mixed_shape(draft: Draft, grow: GrowDraft, shape: Shape, experts: int) -> Shape | None:
    """The shape after `grow experts`: the mixture its operator builds; a probe's candidates must
    build the same one (they are compared as ways to reach one model)."""
    refs = [grow.op] if grow.op is not None else list(grow.candidates or [])
    model = draft.settings.model
    assert model is not None
    if model.mlp != "swiglu":
        fix = (
            f"a `{model.pretrained.architecture}` has no mixture-of-experts form: grow its depth or width instead"
            if model.pretrained is not None
            else "write `mlp=swiglu` in the model"
        )
        draft.report(
            "E0406", "a mixture of experts needs SwiGLU MLPs", grow.node.amount.span,
            f"the model's MLPs are {model.mlp.upper()}", fix,
        )  # fmt: skip
        return None
    sized = (
        shape if shape.hidden is not None else shape.model_copy(update={"hidden": mlp_hidden(shape.width, "swiglu")})
    )
    built: list[tuple[OperatorRef, MixtureSpec]] = []
    for ref in refs:
        entry = ref.entries.get("experts")
        if entry is None or entry.mixture is None:
            continue  # `_check_operators` says so
        mixture = entry.mixture(sized, experts, ref.args)
        if isinstance(mixture, str):
            draft.report(
                "E0403", f"`{ref.label}` cannot grow experts {shape.experts} -> {experts}", ref.span, mixture,
                "change its arguments, or the growth",
            )  # fmt: skip
            grow.ok = False
            continue
        first = built[0] if built else None
        if first is not None and first[1] != mixture:
            draft.report(
                "E0406",
                f"candidates `{first[0].label}` and `{ref.label}` build different mixtures",
                ref.span,
                f"{mixture}, where `{first[0].label}` builds {first[1]}",
                "a probe compares ways to one model: give every candidate the same `top_k`, `granularity` and "
                "mixture settings; compare mixtures of other shapes by a run each",
            )
            grow.ok = False
            continue
        if model.pretrained is not None and not built:
            try:  # the grown model goes out as the source's family, or its mixture-of-experts sibling
                mixture_family(family_named(model.pretrained.family), mixture)
            except FamilyError as error:
                draft.report(
                    "E0406", f"`{ref.label}` builds a mixture the checkpoint's family cannot hold", ref.span,
                    str(error), "change the operator's arguments",
                )  # fmt: skip
                grow.ok = False
                continue
        built.append((ref, mixture))
    if not built:  # the shape after is unknown: `_check_operators` will not run, so say it here
        for ref in refs:
            if "experts" not in ref.entries:
                _cannot_grow(draft, grow, ref, "experts")
        return None
    return shape.model_copy(update={"moe": built[0][1]})


def _large_step(draft: Draft, grow: GrowDraft, message: str) -> None:
    draft.report("W0401", message, grow.node.amount.span, "a large step", "split it over several stages")


def _check_operators(draft: Draft, grow: GrowDraft, before: Shape, after: Shape) -> None:
    dim = grow.dim
    assert dim is not None
    refs = [grow.op] if grow.op is not None else list(grow.candidates or [])
    for ref in refs:
        entry = ref.entries.get(dim)
        if entry is None:
            _cannot_grow(draft, grow, ref, dim)
            continue
        reason = entry.cannot(before, after, ref.args)
        if reason:
            draft.report(
                "E0403",
                f"`{ref.label}` cannot grow {dim} {getattr(before, dim)} -> {getattr(after, dim)}",
                ref.span,
                reason,
                "choose another operator, or change the growth",
            )
            grow.ok = False
        elif dim == "width" and entry.preserves_for(ref.args) != "no":
            _inexact_width(draft, ref)
    if grow.ok and grow.candidates is not None and dim == "depth":
        _check_same_models(draft, grow.candidates, before.depth, after.depth)


def _inexact_width(draft: Draft, ref: OperatorRef) -> None:
    """W0402 where a width operator keeps the function of Llama-shaped models and not this one's."""
    model = draft.settings.model
    assert model is not None
    why = model.style.inexact_width(ref.func, model.qk_norm)
    if why is not None:
        family = f"a `{model.pretrained.architecture}`" if model.pretrained is not None else "this model"
        draft.report(
            "W0402", f"`{ref.label}` keeps the function of {family} only approximately", ref.span, why,
            "`hyperclone` keeps it exactly (the width a multiple); else the probe measures what the change costs",
        )  # fmt: skip


def _cannot_grow(draft: Draft, grow: GrowDraft, ref: OperatorRef, dim: str) -> None:
    draft.report(
        "E0402", f"operator `{ref.func}` cannot grow {dim}", ref.span, f"grows {' and '.join(ref.entries)} only",
        f"`lagdsl ops` lists the operators that grow {dim}",
    )  # fmt: skip
    grow.ok = False


def _check_same_models(draft: Draft, candidates: list[OperatorRef], before: int, after: int) -> None:
    """Warn where two candidates build the same model: the same layer plan, every added layer a
    copy, no noise (fresh layers and noise are drawn from each candidate's own generator)."""
    first: dict[tuple[str, tuple[layers.Layer, ...]], OperatorRef] = {}
    for ref in candidates:
        entry = ref.entries.get("depth")
        noise = ref.args.get("noise", 0.0)
        if entry is None or (isinstance(noise, (float, int)) and noise != 0):
            continue
        built = entry.layer_plan(before, after - before, ref.args)
        if built is None:
            continue
        plan = layers.normalize(built)
        if any(run.source is None for run in plan):
            continue
        # a plan whose copies start zeroed (LLaMA Pro, preserving) is another model than the same plan copied
        same = first.setdefault((entry.preserves, tuple(plan)), ref)
        if same is ref:
            continue
        draft.report(
            "W0202",
            f"candidates `{same.label}` and `{ref.label}` build the same model here",
            ref.span,
            f"the same as `{same.label}`",
            f"growing depth {before} -> {after}, both build {layers.describe(plan)}; the probe would train "
            f"one model twice: drop one, or give one `noise`",
        )
