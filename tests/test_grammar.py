"""The grammar and the parser: conflict-free, every rule handled, spans, values."""

from __future__ import annotations

import dataclasses

import pytest
from lark import Lark

from lagdsl.lang import syntax as ast
from lagdsl.lang.builder import INLINED_RULES, Builder
from lagdsl.lang.parser import build_parser, grammar_path, parse
from lagdsl.lang.source import Source, Span
from tests.conftest import SCHEDULES


def test_grammar_has_no_conflicts_in_strict_mode() -> None:
    # strict=True fails on any shift/reduce or reduce/reduce conflict and on colliding terminals
    parser = build_parser(strict=True)
    assert isinstance(parser, Lark)


def test_every_rule_has_a_handler() -> None:
    parser = build_parser()
    rules = {rule.origin.name for rule in parser.rules}
    rules = {str(r) for r in rules if not str(r).startswith("_")}
    unhandled = {r for r in rules if not hasattr(Builder, r)} - INLINED_RULES
    assert unhandled == set()
    # and the allow-list holds only real rules
    assert rules >= INLINED_RULES


def test_grammar_file_is_the_one_in_the_source_tree_here() -> None:
    assert grammar_path().name == "grow.lark"
    assert grammar_path().is_file()


def _parse(text: str) -> ast.Module:
    module, diagnostics = parse(Source("t.grow", text))
    assert diagnostics == []
    assert module is not None
    return module


def test_formatting_does_not_change_the_tree() -> None:
    compact = "model gpt(context=8,width=8,heads=2,depth=1) stage a{grow depth by 1 with copy_top train 5 steps}"
    spread = """
        model gpt( context = 8 , width = 8 ,
                   heads = 2 , depth = 1 , )     # trailing comma, comments
        stage a {
            grow depth by 1 with copy_top
            train 5 steps
        }
    """
    assert _parse(compact) == _parse(spread)


def test_keywords_are_reserved_only_where_expected() -> None:
    module = _parse("stage train { train 5 steps }\npool probe = [stage, train]")
    stage, pool = module.statements
    assert stage.name.value == "train"
    assert pool.name.value == "probe"
    assert [item.value for item in pool.items.items] == ["stage", "train"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1000", 1000),
        ("1_000", 1000),
        ("0.1", 0.1),
        ("3e-4", 3e-4),
        ("20k", 20_000),
        ("20M", 20_000_000),
        ("2B", 2_000_000_000),
        ("0.5k", 500),
        ("-2", -2),
    ],
)
def test_numbers(text: str, value: float) -> None:
    (setting,) = _parse(f"total {text} tokens").statements
    number = setting.value.amount
    assert number.value == value
    assert type(number.value) is type(value)


def test_durations_and_units() -> None:
    module = _parse("total 20M tokens\nlog every 1 step\nstage a { train 40% }")
    total, log, stage = module.statements
    assert (total.value.amount.value, total.value.unit) == (20_000_000, "tokens")
    assert (log.value.amount.value, log.value.unit) == (1, "steps")
    assert (stage.items[0].duration.amount.value, stage.items[0].duration.unit) == (40, "%")


def test_strings_tuples_lists_and_calls() -> None:
    module = _parse(r'data text("a \"b\" \\ c\n", val=0.1)' + "\noptimizer adamw(lr=1, betas=(0.9, 0.95))")
    data, optimizer = module.statements
    glob, val = data.value.args
    assert glob.name is None and glob.value.value == 'a "b" \\ c\n'
    assert val.name.value == "val" and val.value.value == 0.1
    betas = optimizer.value.args[1].value
    assert isinstance(betas, ast.Tuple) and [b.value for b in betas.items] == [0.9, 0.95]


def test_batch_accumulate_and_options() -> None:
    batch, evaluation = _parse("batch 32 accumulate 4\neval every 200 steps (batches=20)").statements
    assert batch.value.value == 32
    assert [(a.name.value, a.value.value) for a in batch.extra] == [("accumulate", 4)]
    assert [(a.name.value, a.value.value) for a in evaluation.extra] == [("batches", 20)]


def _walk(node: object):
    if isinstance(node, tuple):
        for item in node:
            yield from _walk(item)
    elif dataclasses.is_dataclass(node) and not isinstance(node, Span):
        yield node
        for f in dataclasses.fields(node):
            yield from _walk(getattr(node, f.name))


@pytest.mark.parametrize("path", SCHEDULES, ids=[p.name for p in SCHEDULES])
def test_every_node_has_a_span_inside_the_file(path) -> None:
    source = Source(path.name, path.read_text())
    module = _parse(source.text)
    nodes = list(_walk(module))
    assert len(nodes) > 20
    lines = source.text.splitlines()
    for node in nodes:
        span = node.span
        assert 1 <= span.line <= span.end_line <= len(lines), node
        assert span.column >= 1
        if span.line == span.end_line:
            assert span.column <= span.end_column <= len(lines[span.line - 1]) + 1, node


def test_name_spans_cover_exactly_the_name() -> None:
    source = Source("t.grow", "pool   depth_ops = [copy_top]")
    (pool,) = _parse(source.text).statements
    assert pool.name.span == Span(1, 8, 1, 17)
    assert source.text[pool.name.span.column - 1 : pool.name.span.end_column - 1] == "depth_ops"
