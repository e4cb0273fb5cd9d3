"""Pass helper: the positions after `grow context`. A context probe's candidates give different
positions (the method is what the probe chooses), so the checker follows every positions the
model can have after each growth, and each later context operator must apply to all of them; the
shape records the first candidate's (the cost of a context does not depend on its method)."""

from __future__ import annotations

from lagdsl.families import family_named
from lagdsl.lang.check.draft import Draft, GrowDraft
from lagdsl.lang.schedule import ModelSpec, Positions, Shape


def lengthened(
    draft: Draft, grow: GrowDraft, shape: Shape, context: int, options: list[tuple[Positions, str | None]]
) -> tuple[Shape, list[tuple[Positions, str | None]]] | None:
    """The shape after `grow context to context` and the positions the model may have then, each
    with the label of the candidate that gave it (None: one operator); None where no candidate can
    grow it (reported)."""
    model = draft.settings.model
    assert model is not None
    head_size = model.style.rotary_size(model.head_dim or shape.head_size)
    refs = [grow.op] if grow.op is not None else list(grow.candidates or [])
    after: list[tuple[Positions, str | None]] = []
    for ref in refs:
        entry = ref.entries.get("context")
        if entry is None or entry.positions is None:
            continue  # `_check_operators` says so
        for before, origin in options:
            grown = entry.positions(before, context, ref.args, head_size)
            if not isinstance(grown, str):
                grown = _held(model, before, grown)
            if isinstance(grown, str):
                after_what = f", after the earlier probe's candidate `{origin}`" if origin is not None else ""
                draft.report(
                    "E0403", f"`{ref.label}` cannot grow context {before.context} -> {context}{after_what}", ref.span,
                    grown, "choose another method, or grow the context with this one earlier",
                )  # fmt: skip
                grow.ok = False
                break
            if all(grown != known for known, _ in after):
                after.append((grown, ref.label if grow.op is None else origin))
    if not after:
        return None
    return shape.model_copy(update={"positions": after[0][0]}), after


def _held(model: ModelSpec, before: Positions, grown: Positions) -> Positions | str:
    """`grown`, or why the model cannot hold it: a learned position table (GPT-2) has the rows it
    has, and a family reads the RoPE types its transformers class knows (Phi-3: LongRoPE)."""
    rows = model.style.positions
    if rows and grown.context > rows:
        return f"the model's positions are a learned table of {rows} rows (`n_positions`), which lagdsl does not extend"
    if rows and (grown.theta, grown.rope) != (before.theta, before.rope):
        return "a model with learned positions has no rotary ones to change: only `keep` applies"
    if model.pretrained is not None:
        family = family_named(model.pretrained.family)
        kind = grown.rope.kind if grown.rope is not None else "default"
        if family.rope_types is not None and kind not in family.rope_types:
            known = ", ".join(f"`{t}`" for t in family.rope_types)
            return f"`{family.architecture}` reads RoPE types {known}: this method makes `{kind}`, which it cannot hold"
    return grown
