"""The plan graph: structure, invariants, the cost model, and its renderings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pydot
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lagdsl
from lagdsl.cli import main
from lagdsl.lang.arch import mlp_hidden, param_count
from lagdsl.lang.lr import lr_at
from lagdsl.plan import KINDS, build_plan, check_invariants
from lagdsl.plan.build import PlanNode
from lagdsl.plan.render import to_dot, to_json, to_mermaid
from tests.conftest import GOLDEN, ROOT, SCHEDULES

HEADER = """
model gpt(vocab=256, context=16, width=32, heads=4, depth=1)
batch 4
optimizer adamw(lr=1e-2)
"""


def plan_of(text: str):
    result = lagdsl.check_text(HEADER + text, "t.grow")
    assert result.ok, result.diagnostics
    return build_plan(result.schedule)


# ------------------------------------------------------------------------------ structure


@pytest.mark.parametrize("path", SCHEDULES, ids=[p.name for p in SCHEDULES])
def test_examples_satisfy_the_invariants(path: Path) -> None:
    plan = build_plan(lagdsl.load(path).schedule)
    assert check_invariants(plan) == []
    assert {n.kind for n in plan.nodes()} <= set(KINDS)


def test_a_probe_block_is_a_fork_joined_by_a_select() -> None:
    plan = plan_of(
        "stage base { train 100 steps }\n"
        "stage grow { grow depth by 1 { candidates [copy_top, midas, random] probe 10 steps } train 100 steps }"
    )
    graph = plan.graph
    grows = ["grow/grow/copy_top", "grow/grow/midas", "grow/grow/random"]
    assert {next(iter(graph.predecessors(g))) for g in grows} == {"base/train"}  # one snapshot
    for g in grows:
        probe = g.replace("/grow/", "/probe/")
        assert list(graph.successors(g)) == [probe]
        assert list(graph.successors(probe)) == ["grow/select"]
    assert sorted(graph.predecessors("grow/select")) == sorted(g.replace("/grow/", "/probe/") for g in grows)
    assert list(graph.successors("grow/select")) == ["grow/train"]
    select = plan.node("grow/select")
    assert (select.candidates, select.keep, select.mainline_steps) == (3, "winner", 10)
    assert select.select == "lowest loss over last 2 steps"
    # under keep winner the winner's probe steps are the stage's first steps
    train = plan.node("grow/train")
    assert (train.start_step, train.steps) == (110, 90)
    probe = plan.node("grow/probe/midas")
    assert (probe.start_step, probe.steps, probe.before.depth, probe.after.depth) == (100, 10, 2, 2)
    grow = plan.node("grow/grow/midas")
    assert (grow.before.depth, grow.after.depth, grow.operator) == (1, 2, "midas")


def test_keep_rewind_trains_the_whole_stage_after_the_probe() -> None:
    plan = plan_of(
        "stage base { train 100 steps }\n"
        "stage grow { grow depth by 1 { candidates [copy_top, midas] probe 30 steps keep rewind } train 50 steps }"
    )
    assert plan.node("grow/select").mainline_steps == 0
    assert (plan.node("grow/train").start_step, plan.node("grow/train").steps) == (100, 50)
    assert check_invariants(plan) == []


def test_evals_and_checkpoints_stand_where_the_schedule_puts_them() -> None:
    plan = plan_of(
        "eval every 40 steps (batches=3)\ncheckpoint every 100 steps (keep=2)\n"
        "stage base { train 100 steps }\n"
        "stage grow { grow depth by 1 { candidates [copy_top, midas] probe 25 steps } train 50 steps }"
    )
    order = list(nx.topological_sort(plan.graph))
    mainline = [n for n in order if plan.node(n).kind not in ("grow", "probe")]
    assert mainline == [
        "init",
        "base/train", "base/eval@40",
        "base/train@40", "base/eval@80",
        "base/train@80", "base/checkpoint@100",
        "grow/select", "grow/eval@120",  # step 120 falls inside the probe window: after the select
        "grow/train", "grow/eval@150", "grow/checkpoint@150",  # the end of the run
        "end",
    ]  # fmt: skip
    assert plan.node("base/eval@40").batches == 3
    assert [plan.node(n).steps for n in ("base/train", "base/train@40", "base/train@80", "grow/train")] == [
        40, 40, 20, 25,
    ]  # fmt: skip
    assert check_invariants(plan) == []


def test_several_growths_in_one_stage_are_numbered() -> None:
    plan = plan_of(
        "stage base { train 100 steps }\n"
        "stage grow { grow depth by 1 with copy_top grow width to 64 { candidates [net2net, zero] probe 10 steps }"
        " train 100 steps }"
    )
    assert "grow/g1/grow" in plan.graph and "grow/g2/select" in plan.graph
    assert plan.node("grow/g2/grow/zero").before.width == 32
    assert plan.node("grow/g2/probe/zero").after.heads == 8
    assert check_invariants(plan) == []


def test_invariant_checker_catches_broken_plans() -> None:
    def fresh():
        return plan_of("stage a { train 10 steps } stage b { grow depth by 1 with copy_top train 10 steps }")

    assert check_invariants(fresh()) == []
    plan = fresh()
    plan.graph.remove_edge("b/grow", "b/train")
    assert any("sources" in p or "sinks" in p for p in check_invariants(plan))
    plan = fresh()
    plan.graph.add_edge("b/train", "a/train")
    assert check_invariants(plan) == ["the plan has a cycle"]
    plan = fresh()
    plan.graph.add_edge("a/train", "b/train")  # a path that skips the growth: shape jumps
    assert any("shape jumps" in p for p in check_invariants(plan))
    plan = fresh()
    plan.graph.add_node("detour", payload=plan.node("a/train"))
    plan.graph.add_edge("init", "detour")
    plan.graph.add_edge("detour", "b/grow")
    assert any("`a/train` is not on every path" in p for p in check_invariants(plan))
    assert any("mainline steps add up to 30" in p for p in check_invariants(plan))


# ------------------------------------------------------------------------------ generated schedules


@st.composite
def schedules(draw: st.DrawFn) -> str:
    lines = [HEADER]
    if draw(st.booleans()):
        lines.append(f"eval every {draw(st.integers(1, 120))} steps")
    if draw(st.booleans()):
        lines.append(f"checkpoint every {draw(st.integers(1, 150))} steps")
    lines.append(f"stage s0 {{ train {draw(st.integers(1, 60))} steps }}")
    for i in range(1, draw(st.integers(1, 6))):
        body = []
        for _ in range(draw(st.integers(0, 2))):
            dim = draw(st.sampled_from(["depth", "width"]))
            ops = ["copy_top", "random", "identity"] if dim == "depth" else ["net2net", "zero", "random"]
            amount = "by 1" if dim == "depth" else "by 8"
            if draw(st.booleans()):
                body.append(f"grow {dim} {amount} with {draw(st.sampled_from(ops))}")
            else:
                k = draw(st.integers(0, 8))
                keep = draw(st.sampled_from(["", "keep winner", "keep rewind"]))
                select = draw(st.sampled_from(["", "select lowest val_loss", "select lowest loss"]))
                body.append(f"grow {dim} {amount} {{ candidates [{', '.join(ops)}] probe {k} steps {select} {keep} }}")
        train = draw(st.integers(20, 80))
        lines.append(f"stage s{i} {{ {' '.join(body)} train {train} steps }}")
    return "\n".join(lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_generated_schedules_satisfy_the_invariants(text: str) -> None:
    result = lagdsl.check_text(text, "g.grow")
    assert result.ok, [d.message for d in result.errors]
    plan = build_plan(result.schedule)
    assert check_invariants(plan) == []
    totals = plan.totals
    assert totals.training_flops == totals.mainline_flops + totals.probe_overhead_flops
    assert sum(row.steps for row in plan.stages) == totals.mainline_steps == result.schedule.total_steps


# ------------------------------------------------------------------------------ cost model


def test_parameter_counts_by_hand() -> None:
    # width 8: SwiGLU hidden = 8 * ceil(64 / 24) = 24
    assert mlp_hidden(8, "swiglu") == 24 and mlp_hidden(768, "swiglu") == 2048 and mlp_hidden(8, "gelu") == 32
    count = param_count(vocab=256, width=8, depth=2, mlp="swiglu")
    per_block = 2 * 8 + 4 * 8 * 8 + 3 * 8 * 24
    assert count.per_block == per_block == 848
    assert count.non_embedding == 2 * 848 + 8
    assert count.total == 256 * 8 + 2 * 848 + 8
    gelu = param_count(vocab=256, width=8, depth=2, mlp="gelu")
    assert gelu.per_block == 2 * 8 + 4 * 64 + 2 * 8 * 32


def test_flops_probe_overhead_and_saving_by_hand() -> None:
    plan = plan_of(
        "stage base { train 100 steps }\n"
        "stage grow { grow depth by 1 { candidates [copy_top, midas, random] probe 10 steps } train 100 steps }"
    )
    tokens_per_step = 4 * 16

    def per_token(depth: int) -> int:  # 6 N + 6 L T w
        return 6 * param_count(vocab=256, width=32, depth=depth, mlp="swiglu").non_embedding + 6 * depth * 16 * 32

    base, grown = per_token(1), per_token(2)
    assert plan.node("base/train").flops == 100 * tokens_per_step * base
    totals = plan.totals
    assert totals.mainline_flops == 100 * tokens_per_step * base + 100 * tokens_per_step * grown
    assert totals.probe_overhead_flops == (3 - 1) * 10 * tokens_per_step * grown  # the losers only
    assert totals.scratch_flops == 200 * tokens_per_step * grown
    assert totals.saving == pytest.approx(1 - totals.training_flops / totals.scratch_flops)
    rows = {row.name: row for row in plan.stages}
    assert rows["grow"].probe_overhead == totals.probe_overhead_flops
    assert rows["grow"].cumulative_share == pytest.approx(1.0)
    assert rows["base"].cumulative_share == pytest.approx(rows["base"].flops / totals.training_flops)


def test_keep_rewind_counts_the_winner_as_overhead() -> None:
    plan = plan_of(
        "stage base { train 100 steps }\n"
        "stage grow { grow depth by 1 { candidates [copy_top, midas] probe 10 steps keep rewind } train 100 steps }"
    )
    grown = 6 * param_count(vocab=256, width=32, depth=2, mlp="swiglu").non_embedding + 6 * 2 * 16 * 32
    assert plan.totals.probe_overhead_flops == 2 * 10 * 4 * 16 * grown


def test_memory_grows_with_the_model_and_probes_hold_three_states_or_two_when_rewinding() -> None:
    plan = plan_of(
        "stage base { train 100 steps }\n"
        "stage fixed { grow depth by 1 with copy_top train 100 steps }\n"
        "stage probed { grow depth by 1 { candidates [copy_top, midas] probe 10 steps } train 100 steps }"
    )
    base, fixed, probed = plan.stages
    params = base.shape.params
    assert base.memory.weights == 4 * params and base.memory.optimizer == 8 * params
    assert base.peak_memory == base.memory.total < fixed.memory.total
    assert fixed.peak_memory == fixed.memory.total
    # snapshot (before growth) + best (after) + the training candidate
    assert probed.peak_memory == probed.memory.total + fixed.memory.state + probed.memory.state
    # `keep rewind` grows the winner again: no best candidate is held beside the snapshot
    rewound = plan_of(
        "stage base { train 100 steps }\n"
        "stage fixed { grow depth by 1 with copy_top train 100 steps }\n"
        "stage probed { grow depth by 1 { candidates [copy_top, midas] probe 10 steps keep rewind } train 100 steps }"
    ).stages[2]
    assert rewound.peak_memory == probed.memory.total + fixed.memory.state


def test_lr_on_nodes_follows_the_schedule() -> None:
    plan = plan_of(
        "lr cosine(warmup=10 steps, min=1e-3)\n"
        "stage base { train 100 steps }\n"
        "stage grow { grow depth by 1 { candidates [copy_top, midas] probe 10 steps } rewarm 20 steps train 100 steps }"
    )
    s = plan.schedule
    base = plan.node("base/train")
    assert base.lr_first == pytest.approx(1e-3)  # warmup: step 0 of 10
    assert base.lr_last == pytest.approx(lr_at(99, s.lr, 1e-2, 200))
    probe = plan.node("grow/probe/midas")
    assert probe.lr_first == pytest.approx(lr_at(100, s.lr, 1e-2, 200) / 20)  # rewarm's first step
    assert probe.lr_last == pytest.approx(lr_at(109, s.lr, 1e-2, 200) * 10 / 20)
    assert plan.node("grow/train").lr_last == pytest.approx(1e-3)  # cosine reaches min at the last step


# ------------------------------------------------------------------------------ renderings


def test_json_is_node_link_data_with_payloads_and_totals() -> None:
    plan = build_plan(lagdsl.load(ROOT / "schedules" / "stack_lag.grow").schedule)
    data = json.loads(to_json(plan))
    assert data["schema"] == "lagdsl.plan/1"
    graph = nx.node_link_graph(data, edges="edges")
    assert set(graph.nodes) == set(plan.graph.nodes) and set(graph.edges) == set(plan.graph.edges)
    node = graph.nodes["grow_1/probe/midas"]
    assert node["kind"] == "probe" and node["steps"] == 25 and node["operator"] == "midas"
    assert node["after"]["depth"] == 4 and node["after"]["params"] == plan.node("grow_1/probe/midas").after.params
    assert data["nodes"][0]["id"] == "init" and data["nodes"][-1]["id"] == "end"
    assert set(data["totals"]) >= {
        "mainline_flops",
        "probe_overhead_flops",
        "training_flops",
        "scratch_flops",
        "saving",
    }
    assert [row["name"] for row in data["stages"]] == ["base", "grow_1", "grow_2", "grow_3"]
    assert set(data["nodes"][0]) == {"id", *PlanNode.__dataclass_fields__}


def test_dot_parses_back_with_every_node_and_edge() -> None:
    plan = build_plan(lagdsl.load(ROOT / "schedules" / "width_lag.grow").schedule)
    (graph,) = pydot.graph_from_dot_data(to_dot(plan))
    names = {n.get_name().strip('"') for n in graph.get_nodes()} - {"node", "edge", "graph"}
    assert names == set(plan.graph.nodes)
    edges = {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in graph.get_edges()}
    assert edges == set(plan.graph.edges)


def test_mermaid_has_every_node_and_edge() -> None:
    plan = build_plan(lagdsl.load(ROOT / "schedules" / "stack_lag.grow").schedule)
    lines = to_mermaid(plan).splitlines()
    assert lines[0] == "flowchart LR"
    assert sum(" --> " in line for line in lines) == plan.graph.number_of_edges()
    assert sum(line.strip().startswith("n") and '["' in line for line in lines) == len(plan.graph)


def _picture(tmp_path: Path, schedule: Path, fmt: str, *extra: str) -> bytes:
    out = tmp_path / f"plan.{fmt}"
    result = CliRunner().invoke(main, ["plan", str(schedule), "--format", fmt, "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _svg_texts(data: bytes) -> tuple[list[str], list[float]]:
    """The SVG's texts (kept as text) and their font sizes."""
    import re

    svg = data.decode()
    texts = [re.sub(r"<[^>]+>", "", t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S)]
    sizes = [float(size) for size in re.findall(r"font(?:-size)?:\s*(?:[a-z]+\s+)*([\d.]+)px", svg)]
    return texts, sizes


@pytest.mark.slow
def test_the_plan_picture_is_an_overview_that_fits_a_screen(tmp_path: Path) -> None:
    """`stack_lag`'s picture was once 8,250 x 695 pixels in one row, evaluations and checkpoints
    splitting each stage into several boxes: now one box per stage, rows that wrap, 10 pt text."""
    schedule = ROOT / "schedules" / "stack_lag.grow"
    width, height = _png_size(_picture(tmp_path, schedule, "png"))
    assert width <= 2.5 * height and width <= 2000
    texts, sizes = _svg_texts(_picture(tmp_path, schedule, "svg"))
    joined = "\n".join(texts)
    for stage in ("base", "grow_1", "grow_2", "grow_3"):
        assert stage in texts, stage
    assert "depth 8, width 128" in joined and "3 evals, 2 checkpoints" in joined and "interleave" in joined
    assert sizes and min(sizes) >= 10
    # fifty stages, each with a probe: rows wrap and keep the proportions
    many = "model gpt(context=16, width=16, heads=2, depth=1)\nbatch 4\noptimizer adamw(lr=1e-3)\n"
    many += "stage base { train 10 steps }\nrepeat 49 {\n  stage s {\n    grow depth by 1 {\n"
    many += "      candidates [copy_top, random]\n      probe 5 steps\n    }\n    train 10 steps\n  }\n}\n"
    (tmp_path / "many.grow").write_text(many)
    width, height = _png_size(_picture(tmp_path, tmp_path / "many.grow", "png"))
    assert width <= 2.5 * height and height <= 2.5 * width
    texts, _ = _svg_texts(_picture(tmp_path, tmp_path / "many.grow", "svg"))
    assert {"base", *(f"s_{i}" for i in range(1, 50))} <= set(texts)


@pytest.mark.slow
def test_the_detailed_picture_draws_every_node(tmp_path: Path) -> None:
    texts, _ = _svg_texts(_picture(tmp_path, ROOT / "schedules" / "stack_lag.grow", "svg", "--detail"))
    joined = "\n".join(texts)
    assert "grow_1 select" in joined and "eval" in joined and "checkpoint" in joined


# ------------------------------------------------------------------------------ command line


def test_plan_table_shows_stages_totals_and_saving() -> None:
    result = CliRunner().invoke(main, ["plan", str(ROOT / "schedules" / "stack_lag.grow")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for word in ("base", "grow_1", "grow_3", "probe overhead", "final shape from scratch", "saves 28.1%"):
        assert word in out


def test_plan_of_an_invalid_schedule_shows_the_diagnostics() -> None:
    result = CliRunner().invoke(main, ["plan", str(GOLDEN / "e0201_unknown_operator.grow")])
    assert result.exit_code == 1
    assert "error[E0201]" in result.stderr and result.stdout == ""
    missing = CliRunner().invoke(main, ["plan", "no-such.grow"])
    assert missing.exit_code == 2 and missing.stderr == "error: cannot read `no-such.grow`: No such file or directory\n"


def test_plan_writes_text_formats_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(main, ["plan", str(SCHEDULES[0]), "--format", "json", "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())["schema"] == "lagdsl.plan/1"


def test_plan_never_imports_torch() -> None:
    code = f"""
import sys
from click.testing import CliRunner
from lagdsl.cli import main
for fmt in ("table", "json", "dot", "mermaid"):
    result = CliRunner().invoke(main, ["plan", {str(ROOT / "schedules" / "stack_lag.grow")!r}, "--format", fmt])
    assert result.exit_code == 0, result.output
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def _ranked(parallel: str, ranks: int, growth: str = "grow depth to 2 with copy_top"):
    from lagdsl.lang import check_text

    text = (
        HEADER.replace("batch 4", "batch 8")
        + f"parallel {parallel}\n"
        + ("stage a { train 10 steps }\nstage b { " + growth + "  train 10 steps }\n")
    )
    schedule = check_text(text, "ranked.grow").schedule
    assert schedule is not None
    return build_plan(schedule, ranks)


def test_memory_per_rank_shares_the_batch_and_under_fsdp_the_model() -> None:
    one = _ranked("ddp", 1)
    assert _ranked("fsdp", 1).totals.peak_memory == one.totals.peak_memory  # one rank: nothing to shard
    ddp, fsdp = _ranked("ddp", 8), _ranked("fsdp", 8)
    for single, replicated, sharded in zip(one.stages, ddp.stages, fsdp.stages, strict=True):
        assert replicated.memory.activations * 8 == single.memory.activations  # a share of the batch
        assert replicated.memory.optimizer == single.memory.optimizer  # DDP: the whole state
        assert sharded.memory.optimizer * 8 == single.memory.optimizer  # FSDP: an eighth
        assert sharded.memory.total < replicated.memory.total
    # each phase's peak: a depth growth under FSDP grows each rank's shards, taking the old ones
    # over, so it holds the grown state's share and one new block whole (fp32); a width growth the
    # old and the grown model's share, a fresh block whole and, a tensor at a time, the old one
    # gathered and the moved one
    first, grown = fsdp.stages
    assert set(first.phases) == {"start", "train", "checkpoint"}
    assert set(grown.phases) == {"train", "growth", "checkpoint", "final"}
    assert grown.peak_memory == max(grown.phases.values())
    block = 4 * grown.shape.non_embedding // 2
    assert grown.phases["growth"] == grown.memory.state + block
    assert grown.phases["growth"] < first.memory.state + grown.memory.state  # the old state is not held beside it
    narrow, wide = _ranked("fsdp", 8, "grow width to 48 with net2net").stages
    largest = 4 * max(256 * 48, 2 * mlp_hidden(48, "swiglu") * 48)  # the embedding or gate_up, fp32
    block = 4 * wide.shape.non_embedding  # one layer
    assert wide.phases["growth"] == narrow.memory.state + wide.memory.state + block + 2 * largest
    whole = _ranked("ddp", 1, "grow width to 48 with net2net").stages
    assert wide.phases["growth"] < whole[0].memory.state + whole[1].memory.state  # never the whole state
    assert json.loads(to_json(fsdp))["totals"]["ranks"] == 8


def test_plan_shows_memory_per_rank(tmp_path: Path) -> None:
    path = tmp_path / "p.grow"
    path.write_text(HEADER + "parallel fsdp\nstage a { train 10 steps }\n")
    result = CliRunner().invoke(main, ["plan", str(path), "--ranks", "4"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "mem/rank" in result.stdout and "per rank (4 ranks, parallel fsdp)" in result.stdout
    assert re.search(r"by phase +start [\d.]+ \w+ · train [\d.]+ \w+ · checkpoint", result.stdout), result.stdout


def test_nothing_evaluated_is_zero_flops_with_a_space(tmp_path: Path) -> None:
    """The table once printed `0FLOPs` where a schedule evaluates nothing."""
    (tmp_path / "quiet.grow").write_text(
        "model gpt(context=16, width=16, heads=2, depth=1)\nbatch 4\noptimizer adamw(lr=1e-3)\n\n"
        "stage base {\n  train 10 steps\n}\n"
    )
    result = CliRunner().invoke(main, ["plan", str(tmp_path / "quiet.grow")], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    evaluation = next(line for line in result.stdout.splitlines() if "evaluation" in line)
    assert "0 FLOPs" in evaluation and "0FLOPs" not in result.stdout


@pytest.mark.parametrize("path", SCHEDULES, ids=[p.name for p in SCHEDULES])
def test_the_json_writer_writes_what_the_encoder_writes_of_node_link_data(path: Path) -> None:
    """`to_json` writes node by node for speed; the text is what `json.dumps` gives of networkx's
    node-link data with the payloads' fields (the way it was written before)."""
    from dataclasses import fields as fields_of

    from lagdsl.plan.render import SCHEMA, _stage_json, _totals_json

    plan = build_plan(lagdsl.load(path).schedule)
    order = {node: i for i, node in enumerate(nx.topological_sort(plan.graph))}
    data = nx.node_link_data(plan.graph, edges="edges")
    nodes = []
    for item in sorted(data["nodes"], key=lambda n: order[n["id"]]):
        payload = item["payload"]
        record = {"id": item["id"]}
        for field in fields_of(PlanNode):
            if field.name != "id":
                value = getattr(payload, field.name)
                record[field.name] = (
                    {f.name: getattr(value, f.name) for f in fields_of(value)}
                    if hasattr(value, "__dataclass_fields__")
                    else value
                )
        nodes.append(record)
    schedule = plan.schedule
    reference = {
        "schema": SCHEMA,
        "schedule": {"name": schedule.name, "file": schedule.file, "total_steps": schedule.total_steps,
                     "tokens_per_step": schedule.tokens_per_step},
        "directed": data["directed"], "multigraph": data["multigraph"], "graph": data["graph"], "nodes": nodes,
        "edges": data["edges"], "stages": [_stage_json(row) for row in plan.stages],
        "totals": _totals_json(plan.totals),
    }  # fmt: skip
    assert to_json(plan) == json.dumps(reference, ensure_ascii=False, separators=(",", ":")) + "\n"


def test_a_picture_of_a_long_plan_draws_its_ends_and_says_what_it_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan of 10,000 stages took 52 s to draw every box (and `--detail` 99 s for 10,000
    evaluations): the overview draws its first and last units and a note of how many lie between,
    the detail its first nodes and says so in its title (here with small caps, the same code)."""
    from lagdsl.plan import draw

    monkeypatch.setattr(draw, "MAX_UNITS", 6)
    monkeypatch.setattr(draw, "MAX_NODES", 12)
    many = "model gpt(context=16, width=16, heads=2, depth=1)\nbatch 4\noptimizer adamw(lr=1e-3)\n"
    many += "eval every 10 steps (batches=1)\n" + "".join(f"stage s{i} {{ train 10 steps }}\n" for i in range(20))
    (tmp_path / "long.grow").write_text(many)
    texts, _ = _svg_texts(_picture(tmp_path, tmp_path / "long.grow", "svg"))
    assert {"s0", "s1", "s2", "s17", "s18", "s19"} <= set(texts) and "s3" not in texts and "s16" not in texts
    assert any("... 14 more" in text for text in texts)
    detail, _ = _svg_texts(_picture(tmp_path, tmp_path / "long.grow", "svg", "--detail"))
    assert any("its first 12 of 43 nodes" in text for text in detail)  # init, 20 x (train, eval), checkpoint, end
