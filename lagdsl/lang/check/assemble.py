"""The last step: a clean draft becomes the `Schedule`. Settings left unset take the schedule's
own defaults (`lagdsl.lang.schedule`), so each default is declared once."""

from __future__ import annotations

from pathlib import PurePath

from lagdsl.lang.check.draft import Draft, GrowDraft, OperatorRef, StageDraft
from lagdsl.lang.schedule import Dim, Growth, OperatorSpec, ProbeSpec, Schedule, Stage


def assemble(draft: Draft) -> Schedule:
    """The `Schedule` of a draft that every pass checked without an error."""
    s = draft.settings
    assert s.model is not None and s.optimizer is not None and s.batch is not None and draft.total is not None
    stages = []
    step = 0
    for index, stage in enumerate(draft.stages):
        stages.append(_stage(stage, index, step))
        step += stages[-1].train_steps
    given = {
        "seed": s.seed,
        "device": s.device,
        "precision": s.precision,
        "compile": s.compile,
        "parallel": s.parallel,
        "probes": s.probes,
        "activations": s.activations,
        "data": s.data,
        "accumulate": s.accumulate,
        "batch_tokens": s.batch_tokens,
        "lr": draft.lr,
        "eval": draft.eval,
        "checkpoint": draft.checkpoint,
        "log_every": draft.log_every,
    }
    return Schedule.model_validate(
        {
            "name": s.name or PurePath(draft.source.name).stem or "schedule",
            "file": draft.source.name,
            "model": s.model,
            "batch": s.batch,
            "optimizer": s.optimizer,
            "total_steps": draft.total,
            "stages": tuple(stages),
            **{key: value for key, value in given.items() if value is not None},
        }
    )


def _stage(stage: StageDraft, index: int, start: int) -> Stage:
    assert stage.train_steps is not None and stage.before is not None and stage.after is not None
    return Stage(
        name=stage.name,
        index=index,
        start_step=start,
        train_steps=stage.train_steps,
        growths=tuple(_growth(grow) for grow in stage.grows),
        rewarm=stage.rewarm_steps,
        reset_optimizer=stage.reset is not None,
        freeze=tuple(dict.fromkeys(part for part, _ in stage.freeze)),
        lr_scale=tuple(stage.scales),
        before=stage.before,
        after=stage.after,
        line=stage.node.span.line,
    )


def _growth(grow: GrowDraft) -> Growth:
    dim = grow.dim
    assert dim is not None and grow.before is not None and grow.after is not None
    probe = None
    if grow.candidates is not None:
        assert grow.probe_steps is not None and grow.rule is not None
        probe = ProbeSpec(
            candidates=tuple(_operator(ref, dim) for ref in grow.candidates),
            steps=grow.probe_steps,
            select=grow.rule,
            keep="rewind" if grow.keep == "rewind" else "winner",  # collect accepts these two only
        )
    return Growth(
        dim=dim,
        before=grow.before,
        after=grow.after,
        op=_operator(grow.op, dim) if grow.op is not None else None,
        probe=probe,
        line=grow.node.span.line,
    )


def _operator(ref: OperatorRef, dim: Dim) -> OperatorSpec:
    entry = ref.entries[dim]  # `bind` checked the arguments against the entry's model and filled its defaults
    return OperatorSpec(
        name=ref.func, dim=dim, args=dict(ref.args), label=ref.label, preserves=entry.preserves_for(ref.args)
    )
