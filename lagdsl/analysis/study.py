"""The lag-correlation study: how well does the loss k steps after growth predict the final loss?

For one probed growth of a schedule, the study trains the schedule up to that growth, then trains
every candidate of the probe from the same snapshot, on the same batches with the same LRs (the
engine's mainline, exactly as a probe does), to a horizon: the end of the stage, or the end of the
schedule with the rest of it applied unchanged (later probes choose as they would). Along the way
it records each candidate's training loss at every lag (the loss of the batch at step `lag` after
growth, i.e. after `lag` updates; lag 0 is the loss right after growth) and its val loss at every
lag, and its val loss at the horizon.

Per lag it computes Spearman's rho and Kendall's tau-b between the loss at the lag and the final
val loss, and the regret of choosing by the loss at the lag: the final val loss of that pick minus
the best final val loss. With several seeds (each a different initialization and batch order), it
reports means and spreads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lagdsl.analysis import file_name
from lagdsl.analysis.stats import Spread, argmin, bootstrap_interval, kendall, paired_greater, regret, spearman
from lagdsl.artifacts import (
    IntervalInfo,
    LagStats,
    LagSummary,
    PairedInfo,
    RulePick,
    RuleSummary,
    SpreadInfo,
    Study,
    StudyCandidate,
    StudyRun,
    StudySummary,
)
from lagdsl.lang.schedule import Growth, Schedule, SelectRule, Stage

if TYPE_CHECKING:
    import torch

    from lagdsl.runtime.training.engine import Engine

#: the losses compared with the final val loss at each lag: val loss, the probe score (what the
#: default selection rule scores after a probe of that many steps), one batch's train loss
METRICS = ("val", "score", "train")


class StudyError(Exception):
    """A study that cannot run as asked; the message says what to do. `code` is the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StudyOptions:
    stage: str
    lags: tuple[int, ...]
    horizon: str = "stage"  # "stage" | "end"
    seeds: int = 1
    seed: int | None = None  # the first seed (default: the schedule's)
    device: str | None = None


@dataclass
class CandidateResult:
    label: str
    operator: str
    train: list[float | None]  # at each lag
    val: list[float | None]  # at each lag
    final_val: float = math.nan
    final_train: float | None = None
    curve: list[float] = field(default_factory=list)  # training loss at every step after growth

    def as_model(self) -> StudyCandidate:
        return StudyCandidate(
            label=self.label, operator=self.operator, train=self.train, val=self.val, final_val=self.final_val,
            final_train=self.final_train, curve=self.curve,
        )  # fmt: skip

    @staticmethod
    def of(model: StudyCandidate) -> CandidateResult:
        return CandidateResult(
            model.label, model.operator, list(model.train), list(model.val), model.final_val, model.final_train,
            list(model.curve),
        )  # fmt: skip


def locate(schedule: Schedule, name: str) -> tuple[Stage, int, Growth]:
    """The stage called `name` and its (first) probed growth."""
    probed = [s.name for s in schedule.stages if any(g.probe for g in s.growths)]
    hint = f"stages with a probe block: {', '.join(probed)}" if probed else "this schedule has no probe block"
    for stage in schedule.stages:
        if stage.name == name:
            for index, growth in enumerate(stage.growths):
                if growth.probe is not None:
                    return stage, index, growth
            how = "grows with a fixed operator" if stage.growths else "does not grow"
            raise StudyError(
                f"{schedule.file}:{stage.line}: stage `{name}` {how}; the study needs a growth with a probe "
                f"block (`candidates ... probe N steps`) to compare its candidates ({hint})"
            )
    raise StudyError(f"{schedule.file}: no stage `{name}` ({hint})")


def horizon_steps(stage: Stage, schedule: Schedule, horizon: str, start: int) -> int:
    """Training steps from the growth to the horizon."""
    end = stage.start_step + stage.train_steps if horizon == "stage" else schedule.total_steps
    return end - start


def pair_stats(lag: int, at_lag: list[float | None], final: list[float]) -> LagStats:
    """rho, tau, the pick and its regret for one lag; None where a candidate has no loss there."""
    values = [v for v in at_lag if v is not None]
    if len(values) < len(at_lag):
        return LagStats(lag=lag, spearman=None, kendall=None, pick=None, regret=None, relative_regret=None)
    pick = argmin(values)
    best = min(final)
    regret = final[pick] - best

    def clean(x: float) -> float | None:
        return None if math.isnan(x) else x

    return LagStats(
        lag=lag,
        spearman=clean(spearman(values, final)),
        kendall=clean(kendall(values, final)),
        pick=pick,
        regret=regret,
        relative_regret=regret / best,
    )


def probe_score(curve: list[float], lag: int) -> float | None:
    """What the default selection rule (a probe block without `select`) scores after a probe of
    `lag` steps: the mean training loss over the last max(1, lag // 5) probe steps; for a probe of
    0 steps, the loss right after growth. None where the curve is shorter than the lag."""
    if lag == 0:
        return curve[0] if curve else None
    if len(curve) < lag:
        return None
    window = SelectRule.default_window(lag)
    return sum(curve[lag - window : lag]) / window


def losses_at(candidate: CandidateResult, metric: str, lags: tuple[int, ...]) -> list[float | None]:
    if metric == "score":
        return [probe_score(candidate.curve, lag) for lag in lags]
    return list(getattr(candidate, metric))


def seed_stats(candidates: list[CandidateResult], lags: tuple[int, ...]) -> dict[str, list[LagStats]]:
    final = [c.final_val for c in candidates]
    stats = {}
    for metric in METRICS:
        at = [losses_at(c, metric, lags) for c in candidates]
        stats[metric] = [pair_stats(lag, [a[i] for a in at], final) for i, lag in enumerate(lags)]
    return stats


def recompute(study: Study) -> Study:
    """`study` (a `study.json`) with every statistic computed again from its stored losses, as
    this version computes them: a study written before a statistic was added gains it."""
    lags = tuple(study.lags)
    runs = [
        run.model_copy(update={"stats": seed_stats([CandidateResult.of(c) for c in run.candidates], lags)})
        for run in study.runs
    ]
    return study.model_copy(update={"runs": runs, "summary": summarize(runs, lags)})


def rule_pick(candidates: list[CandidateResult], growth: Growth, lags: tuple[int, ...]) -> int:
    """The candidate the schedule's own selection rule picks (as the engine scores it)."""
    probe = growth.probe
    assert probe is not None
    k, rule = probe.steps, probe.select
    if rule.metric == "val_loss":
        return argmin([_known(c.val[lags.index(k)]) for c in candidates])
    if k == 0:
        return argmin([c.curve[0] for c in candidates])
    window = rule.window or 1
    return argmin([sum(c.curve[k - window : k]) / window for c in candidates])


def summarize(runs: list[StudyRun], lags: tuple[int, ...]) -> StudySummary:
    """Means and spreads over seeds of every statistic, per metric and lag."""

    def spread(values: list[float | None]) -> SpreadInfo:
        return SpreadInfo.model_validate(Spread.of([math.nan if v is None else v for v in values]).as_dict())

    def within(regrets: list[float | None]) -> str:
        known = [r for r in regrets if r is not None]
        return f"{sum(1 for r in known if r <= 0.01)}/{len(known)}"

    tables: dict[str, list[LagSummary]] = {}
    for metric in METRICS:
        rows = []
        for i, lag in enumerate(lags):
            per_seed = [run.stats[metric][i] for run in runs]
            rows.append(
                LagSummary(
                    lag=lag,
                    spearman=spread([s.spearman for s in per_seed]),
                    kendall=spread([s.kendall for s in per_seed]),
                    regret=spread([s.regret for s in per_seed]),
                    relative_regret=spread([s.relative_regret for s in per_seed]),
                    picks_within_1pct=within([s.relative_regret for s in per_seed]),
                    **(_evidence(runs, lags, i) if metric == "val" else {}),
                )
            )
        tables[metric] = rows
    rules = [run.rule for run in runs]
    rule = RuleSummary(
        regret=spread([r.regret for r in rules]),
        relative_regret=spread([r.relative_regret for r in rules]),
        picks_within_1pct=within([r.relative_regret for r in rules]),
    )
    return StudySummary(val=tables["val"], score=tables["score"], train=tables["train"], rule=rule)


def _evidence(runs: list[StudyRun], lags: tuple[int, ...], i: int) -> dict[str, object]:
    """For the val loss at lag `lags[i]`: bootstrap intervals of rho and regret (over seeds and
    candidates), and the paired test of rho here against rho at lag 0 (when lag 0 is studied)."""
    pairs = []
    for run in runs:
        at_lag = [c.val[i] for c in run.candidates]
        if all(v is not None for v in at_lag):
            pairs.append(([_known(v) for v in at_lag], [c.final_val for c in run.candidates]))
    rho, regret_ = bootstrap_interval(pairs, spearman), bootstrap_interval(pairs, regret)
    evidence: dict[str, object] = {
        "spearman_ci": IntervalInfo(low=rho.low, high=rho.high),
        "regret_ci": IntervalInfo(low=regret_.low, high=regret_.high),
    }
    if 0 in lags and lags[i] != 0:
        zero = lags.index(0)
        test = paired_greater(
            [run.stats["val"][i].spearman for run in runs], [run.stats["val"][zero].spearman for run in runs]
        )
        evidence["above_lag0"] = PairedInfo(
            mean=test.mean, low=test.low, high=test.high, p_value=test.p_value, n=test.n
        )
    return evidence


def _known(value: float | None) -> float:
    assert value is not None, "a loss the study did not record"
    return value


def run_study(
    schedule: Schedule,
    options: StudyOptions,
    out: Path,
    say: Callable[[str], None] = lambda message: None,
    save: Callable[[Study], None] = lambda result: None,
) -> Study:
    """Run the study and return what `study.json` holds; per-seed event logs go under `out`.
    `save` receives the result so far after every seed (`complete` false until the last), so a
    study stopped in its third seed keeps the first two."""
    from lagdsl.runtime.run.inputs import RunError
    from lagdsl.runtime.training.engine import NonFiniteLoss

    try:
        return _run(schedule, options, out, say, save)
    except RunError as error:
        raise StudyError(str(error), error.code) from None
    except NonFiniteLoss as error:
        raise StudyError(f"{error}, before the growth under study; lower the LR or check the data", 1) from None


def _run(
    schedule: Schedule,
    options: StudyOptions,
    out: Path,
    say: Callable[[str], None],
    save: Callable[[Study], None],
) -> Study:
    from lagdsl.plan import build_plan
    from lagdsl.runtime.data.batches import Batches
    from lagdsl.runtime.records.metrics import Metrics
    from lagdsl.runtime.run.inputs import apply_overrides, open_data, open_device
    from lagdsl.runtime.state.train_state import restore, snapshot
    from lagdsl.runtime.training import program as P
    from lagdsl.runtime.training.engine import Engine, NonFiniteLoss

    stage, growth_index, growth = locate(schedule, options.stage)
    probe = growth.probe
    assert probe is not None
    lags = tuple(sorted(set(options.lags) | {probe.steps}))
    first_seed = schedule.seed if options.seed is None else options.seed
    seeds = [first_seed + i for i in range(options.seeds)]
    base = Path(schedule.file).resolve().parent
    device = open_device(apply_overrides(schedule, None, options.device))
    eval_batches = schedule.eval_batches
    corpus, _ = open_data(schedule, base, device)  # read once; each seed draws its own batches
    runs: list[StudyRun] = []
    start = horizon = 0
    for seed in seeds:
        sched = apply_overrides(schedule, seed, options.device)
        batches = Batches(
            corpus, sched.batch, sched.model.context, sched.seed, device.device,
            longest=sched.final_shape.context, tokens=sched.batch_tokens,
        )  # fmt: skip
        program = P.lower(build_plan(sched))
        probe_pc = next(
            i
            for i, ins in enumerate(program)
            if isinstance(ins, P.Probe) and ins.stage == stage.index and ins.growth == growth_index
        )
        ins = program[probe_pc]
        assert isinstance(ins, P.Probe)
        start = ins.start
        horizon = horizon_steps(stage, sched, options.horizon, start)
        beyond = [lag for lag in lags if lag > horizon]
        if beyond:
            raise StudyError(
                f"{schedule.file}:{stage.line}: lag {beyond[0]} is beyond the horizon: stage `{stage.name}` trains "
                f"{horizon} steps after its growth{' to the end of the schedule' if options.horizon == 'end' else ''}; "
                f"choose lags up to {horizon}" + (" or `--horizon end`" if options.horizon == "stage" else "")
            )
        if options.horizon == "stage":
            horizon_pc = next(
                (i for i in range(probe_pc + 1, len(program)) if isinstance(program[i], P.StageStart | P.End)),
                len(program),
            )
        else:
            horizon_pc = len(program)
        folder = out / f"seed-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        say(f"seed {seed}: training to the growth of `{stage.name}` (step {start})")
        engine = Engine(
            sched,
            program,
            batches,
            device,
            Metrics(folder / "prefix.jsonl", keep_lines=0),
            on_checkpoint=lambda engine, step: None,
        )
        engine.initialize()
        engine.run(until=probe_pc)
        engine.metrics.close()
        saved = snapshot(engine.state)  # pc at the probe, step at its first step
        candidates: list[CandidateResult] = []
        for number, op in enumerate(probe.candidates, 1):
            say(f"seed {seed}: candidate {op.label} ({number}/{len(probe.candidates)}), {horizon} steps")
            result = CandidateResult(op.label, op.name, [None] * len(lags), [None] * len(lags))
            state = engine.grown(restore(engine.recipe, saved), stage, growth, op, growth_index)
            state.pc = probe_pc + 1  # this candidate stands in for the probe
            engine.state = state
            engine.metrics = Metrics(folder / f"{file_name(op.label)}.jsonl", keep_lines=0)
            if 0 in lags:
                result.val[lags.index(0)] = engine.evaluate(state.model, eval_batches)

            engine.on_step = _Recorder(result, lags, start, eval_batches)
            try:
                if probe.keep == "winner" and probe.steps > 0:  # the probe's steps are the stage's first steps
                    engine.train(stage.index, start, probe.steps)
                engine.run(until=horizon_pc)
            except NonFiniteLoss as error:
                raise StudyError(
                    f"seed {seed}, candidate `{op.label}`: {error}; lower the LR or drop the candidate", 1
                ) from None
            engine.on_step = None
            engine.metrics.close()
            result.final_val = engine.evaluate(state.model, eval_batches)
            result.final_train = state.last_loss
            candidates.append(result)
            del state
        pick = rule_pick(candidates, growth, lags)
        best = min(c.final_val for c in candidates)
        rule_regret = candidates[pick].final_val - best
        runs.append(
            StudyRun(
                seed=seed,
                candidates=[c.as_model() for c in candidates],
                stats=seed_stats(candidates, lags),
                rule=RulePick(pick=candidates[pick].label, regret=rule_regret, relative_regret=rule_regret / best),
                best=candidates[argmin([c.final_val for c in candidates])].label,
            )
        )
        save(_result(schedule, options, stage, growth_index, growth, lags, start, horizon, eval_batches,
                     str(device.device), seeds, runs))  # fmt: skip
    return _result(schedule, options, stage, growth_index, growth, lags, start, horizon, eval_batches,
                   str(device.device), seeds, runs)  # fmt: skip


def _result(
    schedule: Schedule,
    options: StudyOptions,
    stage: Stage,
    growth_index: int,
    growth: Growth,
    lags: tuple[int, ...],
    start: int,
    horizon: int,
    eval_batches: int,
    device: str,
    seeds: list[int],
    runs: list[StudyRun],
) -> Study:
    """What `study.json` holds, for the seeds done so far."""
    probe = growth.probe
    assert probe is not None
    rule = probe.select.text
    return Study.model_validate({
        "complete": len(runs) == len(seeds),
        "schedule": schedule.name,
        "file": schedule.file,
        "stage": stage.name,
        "growth": growth_index,
        "change": {
            "dim": growth.dim,
            "before": getattr(growth.before, growth.dim),
            "after": getattr(growth.after, growth.dim),
        },
        "candidates": [op.label for op in probe.candidates],
        "lags": list(lags),
        "chosen_lag": probe.steps,
        "rule": rule,
        "horizon": options.horizon,
        "start_step": start,
        "horizon_steps": horizon,
        "eval_batches": eval_batches,
        "device": device,
        "seeds": [run.seed for run in runs],
        "seeds_asked": seeds,
        "runs": runs,
        "summary": summarize(runs, lags),
    })  # fmt: skip


class _Recorder:
    """The engine's per-step hook during a candidate's run: its losses at the lags and its curve."""

    def __init__(self, result: CandidateResult, lags: tuple[int, ...], start: int, eval_batches: int) -> None:
        self.result, self.lags, self.start, self.eval_batches = result, lags, start, eval_batches

    def __call__(self, engine: Engine, stage: str, step: int, value: torch.Tensor) -> None:
        if engine.probing is not None:  # a later probe's candidates
            return
        loss = float(value)  # every step's loss is needed: read it now
        after = step - self.start  # updates before this step's loss
        self.result.curve.append(loss)
        if after in self.lags:
            self.result.train[self.lags.index(after)] = loss
        if after + 1 in self.lags:  # after this step's update: val loss at lag after + 1
            val = engine.evaluate(engine.state.model, self.eval_batches)
            self.result.val[self.lags.index(after + 1)] = val
