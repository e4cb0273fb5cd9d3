"""`lagdsl report`: one self-contained HTML page (pictures embedded) that shows what a run did.

The page holds the run's status and summary numbers, train and val loss against step and against
FLOPs with the stages marked, one fan-out picture per probe with the winner highlighted, the
selection table, the plan graph, and with `--compare` other runs overlaid on a FLOPs axis with the
FLOPs each needed to reach the others' final val loss. The PNGs are written beside the page.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lagdsl.analysis import figures, file_name
from lagdsl.analysis.runlog import RunLog, read_run
from lagdsl.artifacts import Dims, Segment
from lagdsl.plan.render import si


@dataclass
class Report:
    page: Path
    pictures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def flops_to_reach(log: RunLog, target: float) -> float | None:
    """Training FLOPs at which `log`'s val curve first comes down to `target` (interpolated)."""
    step = log.step_reaching(target)
    return None if step is None else log.flops_at(step)


@dataclass(frozen=True)
class Reach:
    """How many FLOPs `run` needed to reach `target`'s final val loss (None: it never did), and
    that as a share of `target`'s own FLOPs."""

    run: RunLog
    target: RunLog
    target_loss: float
    flops: float | None
    ratio: float | None


def reach_table(logs: list[RunLog]) -> list[Reach]:
    """For each ordered pair of runs, the FLOPs the first needs to reach the second's final val loss."""
    rows = []
    for a in logs:
        for b in logs:
            target = b.final_val_loss
            if a is b or target is None:
                continue
            flops = flops_to_reach(a, target)
            ratio = None if flops is None or not b.total_flops else flops / b.total_flops
            rows.append(Reach(a, b, target, flops, ratio))
    return rows


def build_report(run_dir: Path, out: Path, compare: Sequence[Path] = ()) -> Report:
    log = read_run(run_dir)
    others = [read_run(path) for path in compare]
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out / "report.html")
    sections: list[str] = []

    def picture(path: Path, alt: str) -> str:
        report.pictures.append(path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'

    # status and summary
    status_class = "ok" if log.finished else "warn"
    sections.append(f'<p class="{status_class}"><b>Status:</b> {_e(log.detail)}</p>')
    sections.append(_summary_table(log))

    # curves
    if log.steps:
        sections.append("<h2>Loss</h2>")
        sections.append(picture(figures.loss_curves(log, out / "loss_steps.png", "step"), "loss against step"))
        sections.append(picture(figures.loss_curves(log, out / "loss_flops.png", "flops"), "loss against FLOPs"))
    else:
        report.notes.append("the run logged no training step yet")
        sections.append("<p>No training step logged yet.</p>")

    # growth and probes
    if log.grows or log.selects:
        sections.append("<h2>Growth</h2>")
        sections.append(_growth_table(log))
    if log.selects:
        sections.append("<h2>Probes</h2>")
        sections.append(_selection_table(log))
        for select in log.selects:
            name = f"probe-{file_name(select.stage)}-g{select.growth + 1}.png"
            sections.append(picture(figures.probe_fanout(log, select, out / name), f"probe at {select.stage}"))
    load = figures.expert_load(log, out / "expert_load.png")
    if load is not None:
        sections.append("<h2>Expert load</h2>")
        sections.append(
            "<p>Each block's share of the (token, slot) assignments per expert at the last evaluation, over "
            "1/E: 1 is balanced, near 0 an expert the router no longer uses.</p>"
        )
        sections.append(picture(load, "expert load per block"))
    if log.parts:
        sections.append("<h2>Freezing</h2>")
        sections.append(_parts_table(log))
    segments = _segments(log)
    if len(segments) > 1:
        sections.append("<h2>Segments</h2>")
        sections.append(_segments_table(segments))
    pending = {(p.stage, p.growth) for p in log.probes} - {(s.stage, s.growth) for s in log.selects}
    for stage, growth in sorted(pending, key=str):
        tried = [p.candidate for p in log.probes if (p.stage, p.growth) == (stage, growth)]
        note = f"the probe at `{stage}` did not finish (tried: {', '.join(tried)}); the run stopped inside it"
        report.notes.append(note)
        sections.append(f'<p class="warn">{_e(note)}.</p>')

    # the plan
    plan_picture = _plan_picture(run_dir, out / "plan.png", report)
    if plan_picture is not None:
        sections.append("<h2>Plan</h2>")
        sections.append(picture(plan_picture, "plan graph"))
        svg = plan_picture.with_suffix(".svg").read_text(encoding="utf-8")
        svg = svg[svg.index("<svg") :]  # inline: without the XML prologue
        sections.append(
            "<details><summary>The plan at full size, every node (scroll sideways)</summary>"
            f'<div class="scroll">{svg}</div></details>'
        )

    # comparison
    if others:
        logs = [log, *others]
        sections.append("<h2>Comparison</h2>")
        for other in others:
            if not other.finished:
                sections.append(f'<p class="warn">{_e(str(other.path))}: {_e(other.detail)}</p>')
        sections.append(picture(figures.compare_runs(logs, out / "compare.png"), "val loss against FLOPs"))
        sections.append(_reach_html(logs))

    title = f"lagdsl report: {log.name} ({log.path.name})"
    report.page.write_text(_page(title, "\n".join(sections)), encoding="utf-8")
    return report


def _plan_picture(run_dir: Path, path: Path, report: Report) -> Path | None:
    from lagdsl.lang import check_text
    from lagdsl.plan import build_plan
    from lagdsl.plan.draw import draw

    source = run_dir / "schedule.grow"
    if not source.exists():
        report.notes.append("no `schedule.grow` in the run directory: no plan picture")
        return None
    from lagdsl.artifacts.run import run_base

    checked = check_text(source.read_text(encoding="utf-8"), str(source), run_base(run_dir))  # paths as first resolved
    if checked.schedule is None:
        report.notes.append("the run's `schedule.grow` no longer validates: no plan picture")
        return None
    plan = build_plan(checked.schedule)
    draw(plan, path, "png")  # the overview: one box per stage, rows that wrap
    draw(plan, path.with_suffix(".svg"), "svg", detail=True)  # every node, inlined, scrollable
    return path


def _summary_table(log: RunLog) -> str:
    s = log.summary
    meta = log.meta
    rows: list[tuple[str, str]] = [
        ("schedule", log.name),
        ("run directory", str(log.path)),
        ("seed", str(meta.seed) if meta else "?"),
        ("device", f"{meta.resolved_device} ({meta.precision})" if meta else "? (?)"),
        ("data", meta.data if meta else "?"),
        ("mainline steps", f"{log.last_step:,}"),
    ]
    pretrained = meta is not None and meta.pretrained is not None
    base = next((e.val_loss for e in log.evals if e.step == 0), None) if pretrained else None
    if base is not None:  # the number an up-scaler wants first: where the checkpoint stood
        rows.append(("the pretrained model's val loss, before growth", _num(base)))
    if s is not None:
        saving = 1 - s.flops / s.scratch_flops if s.scratch_flops else None
        shape = s.final_shape
        # a pretrained run's saving leaves out what the checkpoint cost: a sunk cost, said so
        counted = ", the checkpoint's own pretraining not counted" if pretrained else ""
        rows += [
            ("final train loss", _num(s.final_train_loss)),
            ("final val loss", _num(s.final_val_loss)),
            ("final shape", f"depth {shape.depth}, width {shape.width}, {si(s.params)} params"),
            (
                "training FLOPs",
                f"{si(s.flops, 'FLOPs')} ({si(s.mainline_flops, 'FLOPs')} mainline + "
                f"{si(s.probe_flops, 'FLOPs')} probes)",
            ),
            (
                "final shape from scratch, same steps",
                si(s.scratch_flops)
                + "FLOPs"
                + (f" (growth saved {saving:.1%}{counted})" if saving is not None else ""),
            ),
            ("wall time", f"{s.wall_seconds:,.1f} s ({s.tokens_per_s} tokens/s)"),
        ]
    else:
        rows += [
            ("latest val loss", _num(log.final_val_loss)),
            ("training FLOPs so far", f"{si(log.total_flops, 'FLOPs')}"),
        ]
    if log.selects:
        winners = ", ".join(f"{w.stage}: {w.winner}" for w in log.selects)
        rows.append(("winners", winners))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _growth_table(log: RunLog) -> str:
    head = "<tr><th>stage</th><th>step</th><th>operator</th><th>grows</th><th>params after</th></tr>"
    rows: list[tuple[int, str]] = []
    for g in log.grows:
        rows.append((g.step, _growth_row(g.stage, g.step, g.operator, _change(g.dim, g.before, g.after), g.params)))
    for s in log.selects:
        if s.dim is not None and s.before is not None and s.after is not None:
            change = _change(s.dim, s.before, s.after)
        else:  # a run from before `select` events carried the shapes: the stage's
            stage = next((st for st in log.stages if st.stage == s.stage), None)
            shape = (stage.after or Dims(depth=stage.depth, width=stage.width)) if stage else None
            change = f"to depth {shape.depth}, width {shape.width}" if shape else ""
        rows.append((s.step, _growth_row(s.stage, s.step, f"{s.winner} (chosen by the probe)", change, s.params)))
    rows.sort(key=lambda row: row[0])
    body = "".join(row for _, row in rows)
    return f"<table>{head}{body}</table>"


def _parts_table(log: RunLog) -> str:
    """From which step each stage froze what (and scaled the LR of what)."""
    head = "<tr><th>stage</th><th>from step</th><th>frozen</th><th>frozen params</th><th>LR scales</th></tr>"
    rows = []
    for p in log.parts:
        frozen = ", ".join(p.freeze) or "nothing"
        share = f"{si(p.frozen_params)} of {si(p.params)} ({p.frozen_params / p.params:.0%})" if p.params else ""
        scales = ", ".join(f"{k}={v:g}" for k, v in p.lr_scale.items()) or ""
        rows.append(
            f"<tr><td>{_e(p.stage)}</td><td>{p.step}</td><td>{_e(frozen)}</td><td>{share}</td><td>{_e(scales)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _segments(log: RunLog) -> list[Segment]:
    """The processes that trained the run: the summary's, else `run.json`'s (the run goes on)."""
    if log.summary is not None and log.summary.segments:
        return list(log.summary.segments)
    return list(log.meta.segments) if log.meta is not None else []


def _segments_table(segments: list[Segment]) -> str:
    """Each process that trained the run (a resumed run has several), and the wall time each kept."""
    head = "<tr><th>segment</th><th>started</th><th>ranks</th><th>steps</th><th>wall time</th></tr>"
    rows = []
    for number, segment in enumerate(segments, 1):
        last = "…" if segment.last_step is None else str(segment.last_step)
        wall = "" if segment.wall_seconds is None else f"{segment.wall_seconds:,.1f} s"
        rows.append(
            f"<tr><td>{number}</td><td>{_e(segment.started or '')}</td><td>{segment.ranks}</td>"
            f"<td>{segment.first_step} → {last}</td><td>{wall}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _change(dim: str, before: Dims, after: Dims) -> str:
    return f"{dim} {getattr(before, dim)} → {getattr(after, dim)}"


def _growth_row(stage: str, step: int, operator: str, change: str, params: int | None) -> str:
    shown = si(params) if params is not None else ""
    return f"<tr><td>{_e(stage)}</td><td>{step}</td><td>{_e(operator)}</td><td>{_e(change)}</td><td>{shown}</td></tr>"


def _selection_table(log: RunLog) -> str:
    """Every candidate of every probe with its score, the winner marked; the settings of each probe
    (its rule and what it keeps) once, in the caption, not on every row."""
    head = "<tr><th>stage</th><th>step</th><th>candidate</th><th>score</th><th>chosen</th></tr>"
    rows = []
    settings = []
    for s in log.selects:
        settings.append(f"{_e(s.stage)} (step {s.step}): select {_e(s.rule)}, keep {_e(s.keep)}")
        ranked = sorted(s.scores.items(), key=lambda item: (item[1] is None, item[1] or 0.0))
        for label, score in ranked:
            won = label == s.winner
            shown = f"{score:.4f}" if score is not None else "diverged"
            rows.append(
                f"<tr{' class=winner' if won else ''}><td>{_e(s.stage)}</td><td>{s.step}</td>"
                f"<td>{_e(label)}</td><td>{shown}</td><td>{'winner' if won else ''}</td></tr>"
            )
    caption = f"<caption>{'; '.join(settings)}</caption>"
    return f"<table>{caption}{head}{''.join(rows)}</table>"


def _reach_html(logs: list[RunLog]) -> str:
    head = (
        "<tr><th>run</th><th>final val loss</th><th>training FLOPs</th><th>to reach the final val loss of</th>"
        "<th>it needed</th><th>of that run's FLOPs</th></tr>"
    )
    rows = []
    for row in reach_table(logs):
        a, b = row.run, row.target
        needed = "not reached" if row.flops is None else f"{si(row.flops, 'FLOPs')}"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        rows.append(
            f"<tr><td>{_e(_label(a))}</td><td>{_num(a.final_val_loss)}</td><td>{si(a.total_flops, 'FLOPs')}</td>"
            f"<td>{_e(_label(b))} ({_num(row.target_loss)})</td><td>{needed}</td><td>{ratio}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _label(log: RunLog) -> str:
    return f"{log.name} ({log.path.name})"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _e(value: object) -> str:
    return html.escape(str(value))


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1000px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
table.kv th { background: #f6f6f6; font-weight: 600; }
tr.winner td { background: #fde8e8; font-weight: 600; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
.scroll { overflow-x: auto; border: 1px solid #ddd; }
.scroll svg { max-width: none; height: auto; }
.ok { color: #1a7f37; } .warn { color: #b35900; }
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{_e(title)}</h1>\n{body}\n</body></html>\n"
    )
