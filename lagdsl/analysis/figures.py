"""The pictures of the report and the study, drawn off-screen to PNG with matplotlib's object API
(a `Figure` on an Agg canvas): importing or calling this never touches pyplot's global state, so
it never switches a notebook's backend or leaks figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lagdsl.analysis.runlog import RunLog
from lagdsl.artifacts import LagSummary, SelectEvent, StageEvent, Study

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WINNER = "#d62728"
#: the candidates that lost a probe: muted, and told apart by colour, dashes and marker
LOSER_STYLES = [
    ("#7f7f7f", "-", "o"),
    ("#1f77b4", "--", "s"),
    ("#8c564b", ":", "^"),
    ("#9467bd", "-.", "v"),
    ("#17becf", "--", "D"),
]
TRAIN = "#1f77b4"
VAL = "#ff7f0e"
STAGE = "#bbbbbb"


def _figure(width: float, height: float, constrained: bool = False) -> Figure:
    """A figure; `constrained`: laid out by matplotlib's constrained layout, which makes room for
    an axis of its own above the plot too (`tight_layout` leaves its labels outside the picture)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    return path


def loss_curves(log: RunLog, path: Path, axis: str) -> Path:
    """Train and val loss against mainline step or FLOPs, stage boundaries marked and named."""
    return _save(loss_figure(log, axis), path)


def loss_figure(log: RunLog, axis: str) -> Figure:
    """`loss_curves`' figure: the stages are named on an axis above the plot, not over the curves."""
    fig = _figure(9, 4.6, constrained=True)
    ax = fig.subplots()
    x_of = (lambda step: float(step)) if axis == "step" else log.flops_at
    xs: list[float] = []
    ys: list[float] = []
    for previous, event in zip([None, *log.steps], log.steps, strict=False):
        if axis == "flops" and previous is not None and event.from_probe and not previous.from_probe:
            xs.append(math.nan)  # the probes' FLOPs come in here: no line across them
            ys.append(math.nan)
        xs.append(float(event.flops) if axis == "flops" else float(event.step))
        ys.append(event.loss)
    ax.plot(xs, ys, color=TRAIN, linewidth=0.8, alpha=0.8, label="train loss")
    val_steps, val = log.val_curve()
    if val:
        ax.plot(
            [x_of(s) for s in val_steps], val, color=VAL, marker="o", markersize=3.5, linewidth=1.6, label="val loss"
        )
    for stage in log.stages[1:]:
        ax.axvline(x_of(stage.step), color=STAGE, linestyle="--", linewidth=0.9)
    # the stages named above the plot, on an axis of their own: never over the curves
    names = ax.secondary_xaxis("top")
    names.set_xticks(
        [x_of(stage.step) for stage in log.stages],
        [f"{stage.stage} ({_shape(stage)})" for stage in log.stages],
        rotation=30, ha="left", fontsize=7.5, color="#444444",
    )  # fmt: skip
    names.tick_params(length=3, pad=1)
    ax.set_xlabel("mainline step" if axis == "step" else "training FLOPs (probes included)")
    if axis == "flops":
        _flops_axis(ax)
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"{log.name}: loss against {'step' if axis == 'step' else 'FLOPs'}", fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def _shape(stage: StageEvent) -> str:
    after = stage.after or stage
    context = getattr(after, "context", None)  # where the context grew: the stage's
    return f"depth {after.depth}, width {after.width}" + (f", context {context:,}" if context else "")


def probe_fanout(log: RunLog, select: SelectEvent, path: Path) -> Path:
    """Each candidate's probe losses from the shared snapshot, the winner highlighted, with the
    mainline's losses just before the growth for context."""
    stage, growth = select.stage, select.growth
    probes = [p for p in log.probes if p.stage == stage and p.growth == growth]
    fig = _figure(7, 3.8)
    ax = fig.subplots()
    start = select.step
    k = max((len(p.steps) for p in probes), default=0)
    before = [e for e in log.steps if start - max(3 * k, 10) <= e.step < start]
    if before:
        ax.plot(
            [e.step for e in before],
            [e.loss for e in before],
            color="#333333",
            linewidth=1.0,
            label="before growth",
        )
    others = iter(LOSER_STYLES * (1 + len(probes) // len(LOSER_STYLES)))
    for p in probes:
        won = p.candidate == select.winner
        colour, dashes, marker = (WINNER, "-", ".") if won else next(others)
        ax.plot(
            p.steps,
            p.losses,
            color=colour,
            linestyle=dashes,
            linewidth=2.2 if won else 1.0,
            alpha=1.0 if won else 0.8,
            marker=marker if len(p.steps) <= 30 else None,
            markersize=6 if won else 3.5,
            label=f"{p.candidate} (winner)" if won else p.candidate,
            zorder=3 if won else 2,
        )
    ax.set_xlabel("mainline step (every candidate trains on the same batches)")
    ax.set_ylabel("training loss")
    ax.set_title(f"probe at `{stage}` (growth {growth + 1}): {select.rule}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def expert_load(log: RunLog, path: Path) -> Path | None:
    """The last evaluation's expert load of a mixture of experts as a heat map: a row per mixture
    block (a dense one has none), a column per expert, each cell its share of the block's (token,
    slot) assignments over 1/E (1: balanced); None when the run evaluated no mixture."""
    last = next((e for e in reversed(log.evals) if e.expert_load), None)
    if last is None or last.expert_load is None:
        return None
    load = last.expert_load
    experts = len(load[0])
    fig = _figure(min(3 + 0.35 * experts, 14), min(1.6 + 0.35 * len(load), 10), constrained=True)
    ax = fig.subplots()
    relative = [[share * experts for share in row] for row in load]
    image = ax.imshow(relative, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(2.0, max(map(max, relative))))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("expert")
    ax.set_ylabel("mixture block")
    ax.set_title(f"expert load at step {last.step} (share x {experts}; 1 = balanced)")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def compare_runs(logs: list[RunLog], path: Path) -> Path:
    """Val loss against FLOPs for several runs."""
    fig = _figure(9, 4.2)
    ax = fig.subplots()
    for log in logs:
        steps, val = log.val_curve()
        ax.plot([log.flops_at(s) for s in steps], val, marker="o", markersize=3, label=f"{log.name} ({log.path.name})")
        final = log.final_val_loss
        if final is not None:
            ax.axhline(final, linewidth=0.6, linestyle=":", color=ax.lines[-1].get_color())
    ax.set_xlabel("training FLOPs (probes included)")
    _flops_axis(ax)
    ax.set_ylabel("val loss")
    ax.set_title("val loss against FLOPs (dotted: each run's final val loss)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def study_statistics(study: Study, path: Path) -> Path:
    """Rank correlation with the final val loss, and regret, against the lag (mean ± std over seeds)."""
    fig = _figure(10, 3.9)
    left, right = fig.subplots(1, 2)
    summary = study.summary
    span = max(study.lags) or 1
    metrics = (("val", "-", "val loss at lag"), ("score", "-.", "probe score"), ("train", "--", "train loss at lag"))
    for m, (metric, style, name) in enumerate(metrics):
        rows: list[LagSummary] = getattr(summary, metric)
        for n, (key, colour) in enumerate((("spearman", "#1f77b4"), ("kendall", "#2ca02c"))):
            shift = (2 * m + n - 2.5) * 0.006 * span  # side by side where they coincide
            _spread_line(left, rows, key, shift, style, colour, f"{key} ({name})")
        shift = (m - 1) * 0.006 * span
        _spread_line(right, rows, "regret", shift, style, "#d62728", f"pick by {name}")
    chosen = study.chosen_lag
    for ax in (left, right):
        ax.axvline(chosen, color=STAGE, linestyle=":", linewidth=1)
        ax.set_xlabel(f"lag (steps after growth; dotted: the schedule's {chosen})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    left.set_ylabel("rank correlation with final val loss")
    left.set_ylim(-1.05, 1.05)
    right.set_ylabel("regret (nats): final loss of pick - best")
    seeds = len(study.seeds)
    fig.suptitle(
        f"{study.schedule}, growth of `{study.stage}`: {len(study.candidates)} candidates, "
        f"{seeds} seed{'s' if seeds > 1 else ''}, horizon {study.horizon} ({study.horizon_steps} steps)",
        fontsize=10,
    )
    return _save(fig, path)


def study_curves(study: Study, path: Path) -> Path:
    """Every candidate's training and val loss after growth, one panel per seed (three at most)."""
    import matplotlib

    runs = study.runs[:3]
    fig = _figure(5.2 * len(runs), 3.9)
    axes = fig.subplots(1, len(runs), squeeze=False)
    colours = matplotlib.colormaps["tab10"]
    lags = study.lags
    for ax, run in zip(axes[0], runs, strict=True):
        best = run.best
        for i, c in enumerate(run.candidates):
            colour = colours(i % 10)
            ax.plot(range(len(c.curve)), c.curve, color=colour, linewidth=0.6, alpha=0.45)
            points = [(lag, v) for lag, v in zip(lags, c.val, strict=True) if v is not None]
            points.append((study.horizon_steps, c.final_val))
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                color=colour,
                marker="o",
                markersize=3,
                linewidth=1.8 if c.label == best else 1.1,
                label=f"{c.label}{' (best at end)' if c.label == best else ''}",
            )
        ax.set_title(f"seed {run.seed}: schedule's rule picks {run.rule.pick}", fontsize=9)
        ax.set_xlabel("steps after growth")
        ax.set_ylabel("loss (lines: val at the lags; faint: train)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _spread_line(
    ax: Axes, rows: Sequence[LagSummary], key: str, shift: float, style: str, colour: str, label: str
) -> None:
    """Mean over seeds against lag, with the standard deviation as error bars."""
    ax.errorbar(
        [row.lag + shift for row in rows],
        [_nan(getattr(row, key).mean) for row in rows],
        yerr=[_nan(getattr(row, key).std) for row in rows],
        linestyle=style, marker="o", markersize=3.5, capsize=2, elinewidth=0.8, color=colour, label=label,
    )  # fmt: skip


def _flops_axis(ax: Axes) -> None:
    """FLOPs ticks in units (`120 GFLOPs`, `1.5 TFLOPs`), not an offset exponent."""
    from matplotlib.ticker import FuncFormatter

    from lagdsl.plan.render import si

    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{si(value, 'FLOPs')}" if value else "0"))


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
