"""Whatever the text, checking it gives diagnostics (with spans inside the file), never a traceback;
whatever validates, plans. `bench/fuzz.py` runs the same generators far longer and times them."""

from __future__ import annotations

import io
import itertools
import os
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import HOSTILE, from_signatures  # the soak's pieces and generator: shared with the suite
from lagdsl.lang import check_source
from lagdsl.lang.catalogue import BUILTIN_OPERATORS, DATA, LR_SCHEDULES, OPTIMIZERS
from lagdsl.lang.diagnostics import CODES, render_text, to_json_object
from lagdsl.lang.source import Source
from lagdsl.plan import build_plan
from lagdsl.plan.render import print_table, to_json
from tests.conftest import SCHEDULES

EXAMPLES = [p.read_text() for p in SCHEDULES]
_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|[A-Za-z0-9_.%]+|.', re.S)
ALPHABET = st.sampled_from([*list('abcdeglmnoprstwxyz_0123456789 \n\t{}()[]=,.%#"\\-+@;kMB'), "stage", "grow"])


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def assert_only_diagnostics(text: str) -> None:
    source = Source("fuzz.grow", text)
    result = check_source(source)  # must not raise
    lines = text.split("\n")  # as the parser counts lines
    for diagnostic in result.diagnostics:
        assert diagnostic.code in CODES
        span = diagnostic.span
        assert 1 <= span.line <= span.end_line <= len(lines), (diagnostic, text)
        assert 1 <= span.column <= len(lines[span.line - 1]) + 1, (diagnostic, text)
        if span.end_line == span.line:
            assert span.column < span.end_column <= len(lines[span.line - 1]) + 2, (diagnostic, text)
        rendered = render_text(diagnostic, source)
        assert rendered.startswith(f"{diagnostic.severity}[{diagnostic.code}]")
        assert to_json_object(diagnostic, source)["line"] == span.line
    if result.schedule is None:
        assert result.errors, text
    else:
        assert not result.errors
        plan = build_plan(result.schedule)  # a valid schedule always plans, and renders
        to_json(plan)
        print_table(plan, io.StringIO())


# FUZZ_EXAMPLES=5000 runs a longer search than CI does
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(st.lists(ALPHABET, max_size=80).map("".join))
def test_random_text(text: str) -> None:
    assert_only_diagnostics(text)


@FUZZ
@given(st.text(max_size=200))
def test_random_unicode(text: str) -> None:
    assert_only_diagnostics(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    parts = tokens(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(parts) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "replace"]))
        if action == "delete":
            del parts[i]
        elif action == "duplicate":
            parts.insert(i, parts[i])
        elif action == "swap":
            j = draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
        else:
            parts[i] = draw(st.sampled_from(["0", "-1", "1.5", "x", "}", "{", "(", '"', "%", "steps", "by", "to"]))
    return "".join(parts)


@FUZZ
@given(mutated())
def test_mutated_examples(text: str) -> None:
    assert_only_diagnostics(text)


def test_the_mutator_does_produce_invalid_schedules() -> None:
    # guards the property tests above against a mutator that only yields valid text
    text = "".join(tokens(EXAMPLES[0])).replace("{", "", 1)
    assert check_source(Source("x.grow", text)).errors


@st.composite
def hostile(draw: st.DrawFn) -> str:
    parts = tokens(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(parts)))
        parts.insert(i, draw(st.sampled_from(HOSTILE)))
    return "".join(parts)


@FUZZ
@given(hostile())
def test_hostile_examples(text: str) -> None:
    assert_only_diagnostics(text)


def test_each_hostile_piece_alone_and_in_a_schedule_gives_diagnostics() -> None:
    base = EXAMPLES[0]
    for piece in HOSTILE:
        assert_only_diagnostics(piece)
        assert_only_diagnostics(base.replace("train", f"{piece} train", 1))
        assert_only_diagnostics(base + "\n" + piece + "\n")


def test_each_hostile_piece_as_a_value_with_and_without_a_syntax_error_elsewhere() -> None:
    """A repaired parse is checked too: a hostile value on a line no syntax error touches reaches the
    checker (deep nesting must stop at the parser, not recurse in the checker)."""
    base = EXAMPLES[0]
    assert re.search(r"depth=\d+", base)
    for piece in [*HOSTILE, "(" * 5000 + "1" + ")" * 5000]:
        found = re.search(r"depth=\d+", base)
        assert found is not None
        valued = base[: found.start()] + f"depth={piece}" + base[found.end() :]
        assert_only_diagnostics(valued)
        assert_only_diagnostics(valued + "\nstage oops { train 5 epochs }\n")


def test_a_byte_order_mark_is_ignored() -> None:
    plain = check_source(Source("a.grow", EXAMPLES[0]))
    marked = check_source(Source("a.grow", "\ufeff" + EXAMPLES[0]))
    assert plain.ok and marked.ok and marked.schedule == plain.schedule


@FUZZ
@given(st.randoms(use_true_random=False))
def test_schedules_written_from_the_grammar_and_the_signatures(rng) -> None:
    assert_only_diagnostics(from_signatures(rng))


def test_the_signature_generator_writes_valid_schedules_too() -> None:
    """Guards the property test above against a generator that only yields errors."""
    rng = random.Random(0)
    results = [check_source(Source("s.grow", from_signatures(rng))) for _ in range(200)]
    assert sum(r.schedule is not None for r in results) > 30 and sum(r.schedule is None for r in results) > 30


BASE = """
schedule every
model gpt(context=16, width=16, heads=2, depth=1)
batch 2
optimizer adamw(lr=0.001)
{setting}
stage base {{ train 10 steps }}
stage more {{ grow depth by 1 with copy_top  train 10 steps }}
"""
#: a value each kind of optional argument takes in the test below (in range for every signature)
ORDINARY = {"float": "0.0", "bool": "true", "duration": "2 steps", "int": "1", "pair": "(0.9, 0.95)"}


@pytest.mark.parametrize(
    ("key", "name"),
    [("lr", n) for n in LR_SCHEDULES] + [("optimizer", n) for n in OPTIMIZERS] + [("data", n) for n in DATA],
)
def test_every_call_with_every_subset_of_its_optional_arguments(key: str, name: str) -> None:
    """Bare (`lr cosine`) and with each subset of its optional arguments: a schedule, or
    diagnostics; never an internal error. The learning-rate schedules validate in every form."""
    sig = {"lr": LR_SCHEDULES, "optimizer": OPTIMIZERS, "data": DATA}[key][name]
    required = {p.name: ("2 steps" if p.kind == "duration" else '"corpus/*.txt"') for p in sig.params if p.required}
    optional = [p for p in sig.params if not p.required and p.kind in ORDINARY]
    for size in range(len(optional) + 1):
        for subset in itertools.combinations(optional, size):
            args = {**required, **{p.name: ORDINARY[p.kind] for p in subset}}
            call = name if not args else f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})"
            text = BASE.format(setting=f"{key} {call}")
            assert_only_diagnostics(text)
            if key == "lr":
                assert check_source(Source("every.grow", text)).schedule is not None, call


def test_every_operator_with_every_subset_of_its_arguments() -> None:
    for entry in BUILTIN_OPERATORS:
        params = [p for p in entry.params if p.kind in ORDINARY]
        for size in range(len(params) + 1):
            for subset in itertools.combinations(params, size):
                args = ", ".join(f"{p.name}={ORDINARY[p.kind]}" for p in subset)
                op = f"{entry.name}({args})" if subset else entry.name
                grow = f"grow {entry.dim} by {1 if entry.dim == 'depth' else 16} with {op}"
                assert_only_diagnostics(BASE.format(setting="").replace("grow depth by 1 with copy_top", grow))


@pytest.mark.parametrize(
    "text",
    [
        "repeat 2 { }",
        "pool p = []\nstage a { grow depth by 1 { candidates p probe 2 steps } train 4 steps }",
        "stage a { }",
        "stage a { grow depth by 1 { } train 4 steps }",
        "stage a { train 4 steps { } }",
        "stage a { lr_scale old=1 train 4 steps { freeze [] } }",
        "repeat 0 { stage a { train 4 steps } }",
        "repeat 2 { repeat 2 { stage a { train 4 steps } } }",
        "repeat 2 { }\nrepeat 3 { }",
        "stage a { train 4 steps }\nrepeat 2 { }",
    ],
)
@pytest.mark.parametrize("settings", ["optimizer adamw", "optimizer adamw(lr=1e-3)"], ids=["error-elsewhere", "valid"])
def test_degenerate_structures_give_diagnostics_or_a_schedule(text: str, settings: str) -> None:
    """Each degenerate body, beside an error elsewhere and alone (`repeat 2 { }` with every setting
    valid was an assertion in the assembler: an internal error)."""
    assert_only_diagnostics(f"model gpt(context=16, width=16, heads=2, depth=1)\nbatch 2\n{settings}\n" + text)
