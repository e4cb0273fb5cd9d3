"""Pass helper: the positions after `grow context`. A context probe's candidates give different
positions (the method is what the probe chooses), so the checker follows every positions the
model can have after each growth, and each later context operator must apply to all of them; the
shape records the first candidate's (the cost of a context does not depend on its method)."""

from __future__ import annotations

from lagdsl.lang.check.draft import Draft, GrowDraft
from lagdsl.lang.schedule import Positions, Shape


def lengthened(
    draft: Draft, grow: GrowDraft, shape: Shape, context: int, options: list[Positions]
) -> tuple[Shape, list[Positions]] | None:
    """The shape after `grow context to context` and the positions the model may have then; None
    where no candidate can grow it (reported)."""
    model = draft.settings.model
    assert model is not None
    head_size = model.head_dim or shape.head_size
    refs = [grow.op] if grow.op is not None else list(grow.candidates or [])
    after: list[Positions] = []
    for ref in refs:
        entry = ref.entries.get("context")
        if entry is None or entry.positions is None:
            continue  # `_check_operators` says so
        for before in options:
            grown = entry.positions(before, context, ref.args, head_size)
            if isinstance(grown, str):
                draft.report(
                    "E0403", f"`{ref.label}` cannot grow context {before.context} -> {context}", ref.span, grown,
                    "choose another method, or grow the context with this one earlier",
                )  # fmt: skip
                grow.ok = False
                break
            if grown not in after:
                after.append(grown)
    if not after:
        return None
    return shape.model_copy(update={"positions": after[0]}), after
