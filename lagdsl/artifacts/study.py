"""`study.json`: the lag-correlation study of one growth."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from lagdsl.artifacts.base import STUDY_SCHEMA, Artifact


class SpreadInfo(Artifact):
    """A statistic over seeds: mean, sample standard deviation, extremes, count (None: no value)."""

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    n: int


class LagStats(Artifact):
    """For one seed and lag: how the losses at the lag rank the candidates against their final
    val losses (Spearman, Kendall), which one they pick, and its regret."""

    lag: int
    spearman: float | None
    kendall: float | None
    pick: int | None
    regret: float | None
    relative_regret: float | None


class StudyCandidate(Artifact):
    label: str
    operator: str
    train: list[float | None]  # the training loss at each lag
    val: list[float | None]  # the val loss at each lag
    final_val: float
    final_train: float | None
    curve: list[float]  # every training loss from the growth to the horizon


class RulePick(Artifact):
    pick: str
    regret: float
    relative_regret: float


class StudyRun(Artifact):
    seed: int
    candidates: list[StudyCandidate]
    stats: dict[str, list[LagStats]]  # per metric: val, score, train
    rule: RulePick
    best: str


class IntervalInfo(Artifact):
    """A 95% bootstrap interval of a mean over seeds (seeds and candidates resampled)."""

    low: float | None
    high: float | None


class PairedInfo(Artifact):
    """Rho at this lag minus rho at lag 0, seed by seed: the mean, its 95% bootstrap interval, and
    the one-sided p-value of an exact sign-flip test (small: rho is larger at this lag)."""

    mean: float | None
    low: float | None
    high: float | None
    p_value: float | None
    n: int


class LagSummary(Artifact):
    lag: int
    spearman: SpreadInfo
    kendall: SpreadInfo
    regret: SpreadInfo
    relative_regret: SpreadInfo
    picks_within_1pct: str
    #: the val metric's evidence (absent in studies written before it, and for the other metrics)
    spearman_ci: IntervalInfo | None = None
    regret_ci: IntervalInfo | None = None
    above_lag0: PairedInfo | None = None


class RuleSummary(Artifact):
    regret: SpreadInfo
    relative_regret: SpreadInfo
    picks_within_1pct: str


class StudySummary(Artifact):
    val: list[LagSummary]
    score: list[LagSummary] = Field(default_factory=list)  # absent in studies before the probe score
    train: list[LagSummary]
    rule: RuleSummary


class Change(Artifact):
    dim: str
    before: int
    after: int


class Study(Artifact):
    """`study.json`: the lag-correlation study of one growth."""

    schema_: Literal["lagdsl.study/1"] = Field(STUDY_SCHEMA, alias="schema")
    complete: bool = True  # False while seeds are still to run
    schedule: str
    file: str
    stage: str
    growth: int
    change: Change
    candidates: list[str]
    lags: list[int]
    chosen_lag: int
    rule: str
    horizon: Literal["stage", "end"]
    start_step: int
    horizon_steps: int
    eval_batches: int
    device: str
    seeds: list[int]
    seeds_asked: list[int] = Field(default_factory=list)
    runs: list[StudyRun]
    summary: StudySummary

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
