"""Pass: budgets. Durations to steps; `%` against `total`; stages against `total`; probes against
their stage's `train`; the selection rule's window; the LR schedule and the intervals in steps."""

from __future__ import annotations

import math

from lagdsl.lang import syntax as ast
from lagdsl.lang.catalogue import SELECT_METRICS
from lagdsl.lang.check.draft import Draft, Every, GrowDraft
from lagdsl.lang.params import show
from lagdsl.lang.schedule import MAX_BATCH, MAX_EVENTS, MAX_STEPS, CheckpointSpec, EvalSpec, LRSpec, SelectRule, Shape
from lagdsl.lang.source import Span

#: Beyond any duration's limit in any unit: checked before converting, so no arithmetic overflows.
_MAX_AMOUNT = 10**30

#: Probes shorter than this (other than 0) get W0301.
SHORT_PROBE = 5


class _Steps:
    """Converts durations to steps for one schedule, reporting what cannot be converted."""

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        s = draft.settings
        self.sequences = s.batch * s.accumulate if s.batch is not None and s.accumulate is not None else None
        self.context = s.model.context if s.model is not None else None
        self.tokens = s.batch_tokens * s.accumulate if s.batch_tokens is not None and s.accumulate else None
        #: whether the context grows: a duration in tokens of the whole run then has no one step size
        self.growing = any(grow.dim == "context" for stage in draft.stages for grow in stage.grows)

    def __call__(
        self,
        duration: ast.Duration,
        what: str,
        *,
        minimum: int = 1,
        percent: bool = True,
        at: Shape | None = None,
        whole_run: bool = False,
    ) -> int | None:
        """`duration` in steps; a duration in tokens at the context of `at` (a stage's or a growth's
        shape; default the model's first), or (`whole_run`) refused where the context grows."""
        draft = self.draft
        context = at.context if at is not None and at.positions is not None else self.context
        tokens_per_step = self.sequences * context if self.sequences is not None and context is not None else None
        if self.tokens is not None:  # `batch N tokens`: the same at every context
            tokens_per_step = self.tokens
        if whole_run and self.growing and duration.unit == "tokens" and self.tokens is None:
            draft.report(
                "E0301",
                f"{what} in tokens has no one number of steps: the context grows",
                duration.span,
                "tokens per step change with the context",
                "write it in steps (each stage's `train` in tokens follows its own context)",
            )
            return None
        amount = duration.amount.value
        shown = show(duration)
        if not math.isfinite(amount) or amount > _MAX_AMOUNT:
            self._too_long(duration, what)
            return None
        if duration.unit == "%":
            if not percent:
                draft.report(
                    "E0301",
                    f"{what} cannot be a share of `total`, found `{shown}`",
                    duration.span,
                    "not a share",
                    "write it in `steps` or `tokens`",
                )
                return None
            if not draft.total_given:
                draft.report(
                    "E0501",
                    f"{what} is `{shown}` of a `total` that the schedule does not set",
                    duration.span,
                    "a share of nothing",
                    "add `total N steps` (or tokens), or write this in steps",
                )
                return None
            if not 0 <= amount <= 100:
                draft.report(
                    "E0302", f"{what} must be between 0% and 100%, found `{shown}`", duration.span, "out of range"
                )
                return None
            if draft.total is None:
                return None
            steps = math.floor(amount / 100 * draft.total + 0.5)
        elif duration.unit == "steps":
            if isinstance(amount, float) and not amount.is_integer():
                draft.report(
                    "E0301", f"{what} must be a whole number of steps, found `{shown}`", duration.span, "not whole"
                )
                return None
            steps = int(amount)
        else:
            if tokens_per_step is None:
                return None
            if isinstance(amount, int):
                steps = -(-amount // tokens_per_step)  # exact for integers of any size
            else:
                steps = math.ceil(amount / tokens_per_step)
            if steps * tokens_per_step != amount and amount > 0:
                draft.report(
                    "W0501",
                    f"`{shown}` is not a whole number of steps: rounded up to {steps}",
                    duration.span,
                    f"{tokens_per_step} tokens per step",
                    "tokens per step = batch x accumulate x context",
                )
        if steps < minimum:
            least = "at least 1 step" if minimum == 1 else f"at least {minimum} steps"
            draft.report("E0302", f"{what} must be {least}, found `{shown}`", duration.span, "out of range")
            return None
        if steps > MAX_STEPS:
            self._too_long(duration, what)
            return None
        return steps

    def _too_long(self, duration: ast.Duration, what: str) -> None:
        self.draft.report(
            "E0302",
            f"{what} must be at most {MAX_STEPS:,} steps, found `{show(duration)}`",
            duration.span,
            "out of range",
            f"a schedule trains at most {MAX_STEPS:,} mainline steps",
        )


def check_budgets(draft: Draft) -> Draft:
    """Every duration in steps, checked against `total` and against the stages."""
    total_setting = draft.setting_nodes.get("total")
    steps = _Steps(draft)
    if total_setting is not None:
        draft.total_given = True
        if isinstance(total_setting.value, ast.Duration):
            draft.total = steps(total_setting.value, "`total`", percent=False, whole_run=True)
    _stage_budgets(draft, steps)
    for stage in draft.stages:
        if stage.rewarm is not None:
            stage.rewarm_steps = steps(stage.rewarm.duration, "`rewarm`", at=stage.after) or 0
        used = 0
        for grow in stage.grows:
            if grow.probe is None:
                continue
            grow.probe_steps = steps(grow.probe.duration, "`probe`", minimum=0, at=grow.after)
            if grow.probe_steps is None:
                continue
            k = grow.probe_steps
            if 0 < k < SHORT_PROBE:
                draft.report(
                    "W0301",
                    f"a probe of {k} step{'s' if k > 1 else ''} is short",
                    grow.probe.duration.span,
                    f"shorter than {SHORT_PROBE} steps",
                    "the loss after a few more steps ranks operators better; try `probe 25 steps`",
                )
            grow.rule = _select_rule(draft, grow, steps)
            if grow.keep == "winner":
                used += k
                if stage.train_steps is not None and used > stage.train_steps:
                    draft.report(
                        "E0304",
                        f"the probe is longer than stage `{stage.name}`'s `train` of {stage.train_steps} steps",
                        grow.probe.duration.span,
                        "the winner's probe steps count toward the stage",
                        "shorten the probe, lengthen the `train`, or `keep rewind`",
                    )
    _setting_budgets(draft, steps)
    _rows_at_each_context(draft)
    return draft


def _rows_at_each_context(draft: Draft) -> None:
    """`batch N tokens`: N is a whole number of rows at every context the model grows to."""
    tokens, model = draft.settings.batch_tokens, draft.settings.model
    if tokens is None or model is None:
        return
    for stage in draft.stages:
        for grow in stage.grows:
            after = grow.after
            if grow.dim != "context" or after is None or after.positions is None:
                continue
            hint = "or grow to a context that divides it"
            if rows_of(draft, tokens, after.context, grow.node.amount.span, hint) is None:
                grow.ok = False


def rows_of(draft: Draft, tokens: int, context: int, span: Span, hint: str = "") -> int | None:
    """The rows of a `batch N tokens` step at `context`, or None where N is not a whole number of
    them (E0302 at `span`, `hint` after the fix)."""
    rows = tokens // context
    if rows * context == tokens and rows <= MAX_BATCH:
        return rows
    draft.report(
        "E0302", f"`batch {tokens:,} tokens` is not a whole number of rows of the context {context:,}", span,
        "rows = tokens / context", f"make the batch a multiple of {context:,} tokens" + (f", {hint}" if hint else ""),
    )  # fmt: skip
    return None


def _stage_budgets(draft: Draft, steps: _Steps) -> None:
    trains = [(stage, stage.train) for stage in draft.stages if stage.train is not None]
    if not trains:
        return
    for stage, train in trains:
        stage.train_steps = steps(train.duration, "`train`", at=stage.after)
    if any(s.train_steps is None for s, _ in trains) and draft.total is None:
        return
    written = sum(s.train_steps or 0 for s, _ in trains)
    if written > MAX_STEPS:
        last, last_train = trains[-1]
        draft.report(
            "E0302",
            f"the stages add up to {written:,} steps, more than the {MAX_STEPS:,} a schedule may train",
            last_train.span,
            "the total is too long",
            "train fewer steps, or fewer stages",
        )
        draft.total = None
        return
    if not draft.total_given:
        draft.total = written
        return
    total = draft.total
    if total is None or any(s.train_steps is None for s, _ in trains):
        return
    last, last_train = trains[-1]
    assert last.train_steps is not None
    shares = [train for _, train in trains if train.duration.unit == "%"]
    if last_train.duration.unit == "%":
        remainder = total - (written - last.train_steps)
        if remainder >= 1 and abs(remainder - last.train_steps) <= len(shares):
            last.train_steps = remainder  # the last share takes what rounding left over
            return
        if len(shares) == len(trains):
            detail = f"the shares add up to {sum(float(t.duration.amount.value) for t in shares):g}%"
        else:
            detail = f"the stages add up to {written} steps"
    else:
        if written == total:
            return
        detail = f"the stages add up to {written} steps"
    draft.report(
        "E0502",
        f"the stages do not sum to `total` ({total} steps): {detail}",
        draft.setting_nodes["total"].span,
        "the budget",
        "change the stages' `train`, or `total`, so that they agree",
    )


def _select_rule(draft: Draft, grow: GrowDraft, steps: _Steps) -> SelectRule | None:
    k = grow.probe_steps or 0
    select = grow.select
    metric = select.metric.value if select is not None else "loss"
    if metric not in SELECT_METRICS:
        return None  # the names pass reported it
    if select is not None and select.window is not None:
        if metric != "loss" or k == 0:
            why = (
                "a probe of 0 steps has no steps to average"
                if k == 0
                else "`val_loss` is measured once, after the probe"
            )
            draft.report(
                "E0305",
                f"`over last` does not apply here: {why}",
                select.window.span,
                "no window here",
                "write `select lowest loss over last N steps` with a probe of at least N steps"
                if k == 0
                else "write `select lowest val_loss`",
            )
            return None
        window = steps(select.window, "the selection window", percent=False, at=grow.after)
        if window is None:
            return None
        if window > k:
            draft.report(
                "E0302",
                f"the selection window of {window} steps is longer than the probe of {k}",
                select.window.span,
                "longer than the probe",
                f"use at most `over last {k} steps`",
            )
            return None
        return SelectRule(metric="loss", window=window)
    if select is not None and select.positions is not None:
        return _at_positions(draft, grow, select.positions, metric)
    if metric == "val_loss":
        return SelectRule(metric="val_loss", window=None)
    if k == 0:
        return SelectRule(metric="loss", window=None)  # the loss right after growth
    if select is not None:
        return SelectRule(metric="loss", window=1)  # `lowest loss`: the last probe step's loss
    return SelectRule(metric="loss", window=SelectRule.default_window(k))  # the default rule


def _at_positions(
    draft: Draft, grow: GrowDraft, positions: tuple[ast.Number, ast.Number | None], metric: str
) -> SelectRule | None:
    """`select lowest val_loss at positions A..B`: positions within the context after the growth."""
    first, last = positions
    span = Span.cover(first.span, (last or first).span)
    if metric != "val_loss":
        draft.report(
            "E0305", "`at positions` applies to `val_loss`", span, "the training loss is of whole sequences",
            "write `select lowest val_loss at positions A..`",
        )  # fmt: skip
        return None
    context = grow.after.context if grow.after is not None and grow.after.positions is not None else None
    start, end = first.value, last.value if last is not None else context
    if context is None or end is None:
        return None  # the shapes pass reported why the context is unknown
    whole = isinstance(start, int) and isinstance(end, int)
    if not whole or not 0 <= start < end <= context:
        draft.report(
            "E0302", f"positions {show(first)}..{show(last) if last else ''} are not within the context of {context}",
            span, "out of range", f"give whole positions A..B with 0 <= A < B <= {context}, such as `{context // 2}..`",
        )  # fmt: skip
        return None
    assert isinstance(start, int) and isinstance(end, int)
    return SelectRule(metric="val_loss", positions=(start, end))


def _setting_budgets(draft: Draft, steps: _Steps) -> None:
    settings = draft.settings
    if settings.lr is not None:
        _lr_budget(draft, steps)
    if settings.eval is not None:
        every = _every(settings.eval, "eval", steps)
        if every is not None and _few_enough(draft, settings.eval, every, "evaluations"):
            draft.eval = EvalSpec.model_validate({**settings.eval.options, "every": every})
    if settings.checkpoint is not None:
        every = _every(settings.checkpoint, "checkpoint", steps)
        if every is not None and _few_enough(draft, settings.checkpoint, every, "checkpoints"):
            draft.checkpoint = CheckpointSpec.model_validate({**settings.checkpoint.options, "every": every})
    if settings.log is not None:
        draft.log_every = _every(settings.log, "log", steps)


def _few_enough(draft: Draft, every: Every, interval: int, what: str) -> bool:
    """At most `MAX_EVENTS` evaluations (or checkpoints) in the run: each is a node of the plan."""
    if draft.total is None or draft.total // interval <= MAX_EVENTS:
        return True
    draft.report(
        "E0302",
        f"every {interval:,} steps gives {draft.total // interval:,} {what}, "
        f"more than the {MAX_EVENTS:,} a run may have",
        every.duration.span,
        "too often",
        f"choose an interval of at least {-(-draft.total // MAX_EVENTS):,} steps",
    )
    return False


def _every(every: Every, key: str, steps: _Steps) -> int | None:
    every.steps = steps(every.duration, f"`{key} every`", percent=False, whole_run=True)
    return every.steps


def _lr_budget(draft: Draft, steps: _Steps) -> None:
    call = draft.settings.lr
    assert call is not None
    args = dict(call.args)
    converted = {}
    for key in ("warmup", "decay"):
        if key in args:
            value = args.pop(key)
            if isinstance(value, ast.Duration):
                converted[key] = steps(value, f"`{key}`", minimum=0 if key == "warmup" else 1)
            else:  # not written: the signature's default, in steps already
                assert isinstance(value, int)
                converted[key] = value
    if any(v is None for v in converted.values()):
        return
    lr = LRSpec.model_validate({"kind": call.kind, **args, **converted})
    draft.lr = lr
    span = draft.setting_nodes["lr"].value.span
    if draft.total is not None and lr.warmup + lr.decay > draft.total:
        draft.report(
            "E0302",
            f"the LR warmup and decay ({lr.warmup + lr.decay} steps) are longer than the run ({draft.total})",
            span,
            "longer than `total`",
        )
    optimizer = draft.settings.optimizer
    if optimizer is not None and lr.min > optimizer.lr:
        draft.report(
            "E0302",
            f"the LR's `min` {lr.min:g} is above the optimizer's `lr` {optimizer.lr:g}",
            span,
            "min above the peak",
        )
