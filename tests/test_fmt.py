"""`lagdsl fmt`: one layout whatever the spacing, comments kept, meaning kept, idempotent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lagdsl.cli import main
from lagdsl.lang import Schedule, check_text
from lagdsl.lang.fmt import FormatError, format_text
from lagdsl.lang.parser import parse
from lagdsl.lang.source import Source
from tests.conftest import GOLDEN, ROOT, SCHEDULES
from tests.test_fuzz import mutated  # the fuzz suite's mutations of the shipped schedules

PARSEABLE = [p for p in sorted(GOLDEN.glob("*.grow")) if not parse(Source(p.name, p.read_text()))[1]]
OURS = [*SCHEDULES, *sorted((ROOT / "bench").glob("*.grow"))]


def test_a_messy_file_gets_the_one_layout() -> None:
    messy = """\
# header comment
schedule   demo
model gpt( context = 64,width=64 ,heads=4, depth=2 )     # the model
batch 16 accumulate   2   # two micro-batches
optimizer adamw(lr=3e-3,betas=( 0.9,0.95 ), )
device "cuda:0#not a comment"


lr cosine(warmup=5%,min=2e-4) total 1_000 steps
eval every 100 steps ( batches = 8 )
pool ops=[copy_top,midas ,
   identity]
stage base { train 20k tokens
}
stage g{grow depth by 2{candidates ops probe 10 step select lowest loss over last 3 steps}
  # before train
  train 96%   # the rest
}
"""
    assert (
        format_text(messy)
        == """\
# header comment
schedule demo
model gpt(context=64, width=64, heads=4, depth=2)  # the model
batch 16 accumulate 2                              # two micro-batches
optimizer adamw(lr=3e-3, betas=(0.9, 0.95))
device "cuda:0#not a comment"

lr cosine(warmup=5%, min=2e-4)
total 1_000 steps
eval every 100 steps (batches=8)
pool ops = [copy_top, midas, identity]
stage base {
  train 20k tokens
}
stage g {
  grow depth by 2 {
    candidates ops
    probe 10 step
    select lowest loss over last 3 steps
  }
  # before train
  train 96%  # the rest
}
"""
    )


def test_comments_inside_a_statement_go_above_it_and_long_lists_take_one_item_a_line() -> None:
    text = """\
schedule demo
stage s {
  grow depth to 6 {
    candidates [copy_top, copy_bottom, midas, interleave, # the plain ones
                copy_top(noise=0.01), copy_bottom(noise=0.01), midas(noise=0.01)]  # and noisy
    probe 10 steps
  }
  train 10 steps

  # the end
}
# trailing words
"""
    assert (
        format_text(text)
        == """\
schedule demo
stage s {
  grow depth to 6 {
    # the plain ones
    candidates [
      copy_top,
      copy_bottom,
      midas,
      interleave,
      copy_top(noise=0.01),
      copy_bottom(noise=0.01),
      midas(noise=0.01),
    ]  # and noisy
    probe 10 steps
  }
  train 10 steps

  # the end
}
# trailing words
"""
    )


@pytest.mark.parametrize("path", [*OURS, *PARSEABLE], ids=lambda p: p.name)
def test_formatting_is_idempotent_and_keeps_the_meaning_and_the_comments(path: Path) -> None:
    text = path.read_text()
    once = format_text(text, path.name)
    assert format_text(once, path.name) == once
    assert parse(Source("a", once))[0] == parse(Source("b", text))[0]  # the tree, spans aside
    before, after = check_text(text, str(path), base=path.parent), check_text(once, str(path), base=path.parent)
    assert _meaning(after.schedule) == _meaning(before.schedule)
    assert [(d.code, d.message) for d in after.diagnostics] == [(d.code, d.message) for d in before.diagnostics]
    assert sorted(re.findall(r"#[^\n]*", once)) == sorted(c.rstrip() for c in re.findall(r"#[^\n]*", text))


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.name)
def test_the_shipped_schedules_are_formatted(path: Path) -> None:
    assert format_text(path.read_text()) == path.read_text(), f"run `lagdsl fmt {path.relative_to(ROOT)}`"


def _meaning(schedule: Schedule | None) -> object:
    """The schedule without the source lines it records (a stage's line moves when text is laid out)."""

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "line"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return None if schedule is None else strip(schedule.model_dump(mode="json"))


def _without_comments(text: str) -> str:
    return re.sub(r'("(?:[^"\\\n]|\\.)*")|[ \t]*#[^\n]*', lambda m: m.group(1) or "", text)


SPACES = st.sampled_from([" ", "  ", "\t", " \n ", "\n", "\n  "])
GAPS = st.sampled_from(["", " ", "\t "])  # no newline: it could make a blank line


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SCHEDULES), st.data())
def test_the_layout_does_not_depend_on_how_the_text_was_spaced(path: Path, data: st.DataObject) -> None:
    plain = _without_comments(path.read_text())
    # every run of spaces becomes other spaces (a blank line stays a blank line), and spaces
    # appear or vanish around brackets, commas and `=`
    pieces = re.split(r"(\s+|[(){}\[\],=])", plain)
    out = []
    for piece in pieces:
        if not piece:
            continue
        if piece.isspace():
            out.append("\n\n" if "\n\n" in piece.replace(" ", "") else data.draw(SPACES))
        elif piece in "(){}[],=":
            out.append(data.draw(GAPS) + piece + data.draw(GAPS))
        else:
            out.append(piece)
    respaced = "".join(out)
    assert format_text(respaced) == format_text(plain)


def test_a_syntax_error_is_refused_and_the_file_left_alone(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as error:
        format_text("schedule x\nstage s { train 10 }\n")
    assert [d.code for d in error.value.diagnostics] == ["E0001"]
    broken = tmp_path / "broken.grow"
    broken.write_text("schedule   x\nstage s { train 10 }\n")
    result = CliRunner().invoke(main, ["fmt", str(broken)])
    assert result.exit_code == 1
    assert "error[E0001]" in result.stderr and f"{broken}: not formatted: fix the syntax errors first" in result.stderr
    assert broken.read_text() == "schedule   x\nstage s { train 10 }\n"


def test_fmt_rewrites_in_place_and_check_and_diff_write_nothing(tmp_path: Path) -> None:
    messy, tidy = tmp_path / "messy.grow", tmp_path / "tidy.grow"
    messy.write_text("schedule  m\nstage s {train 10 steps}\n")
    tidy.write_text("schedule t\nstage s {\n  train 10 steps\n}\n")
    runner = CliRunner()

    checked = runner.invoke(main, ["fmt", "--check", str(messy), str(tidy)])
    assert checked.exit_code == 1 and f"{messy}: would be reformatted" in checked.stderr
    assert str(tidy) not in checked.stderr.replace(f"{messy}", "")
    assert "1 file(s) would be reformatted, 1 already formatted" in checked.stderr

    diff = runner.invoke(main, ["fmt", "--diff", str(messy)])
    assert diff.exit_code == 0 and "-schedule  m" in diff.stdout and "+schedule m" in diff.stdout
    assert messy.read_text() == "schedule  m\nstage s {train 10 steps}\n"

    done = runner.invoke(main, ["fmt", str(messy), str(tidy)])
    assert done.exit_code == 0 and done.stderr.strip() == f"formatted {messy}"
    assert messy.read_text() == "schedule m\nstage s {\n  train 10 steps\n}\n"
    assert runner.invoke(main, ["fmt", "--check", str(messy), str(tidy)]).exit_code == 0


def test_fmt_keeps_a_files_line_ends_and_byte_order_mark(tmp_path: Path) -> None:
    """A Windows file stays CRLF (a formatted one is left alone), and a byte-order mark stays."""
    crlf, bom = tmp_path / "crlf.grow", tmp_path / "bom.grow"
    crlf.write_bytes(b"schedule  w\r\nstage s {train 10 steps}\r\n")
    bom.write_bytes("\ufeffschedule  b\nstage s {train 10 steps}\n".encode())
    runner = CliRunner()
    assert runner.invoke(main, ["fmt", str(crlf), str(bom)]).exit_code == 0
    assert crlf.read_bytes() == b"schedule w\r\nstage s {\r\n  train 10 steps\r\n}\r\n"
    assert bom.read_bytes() == "\ufeffschedule b\nstage s {\n  train 10 steps\n}\n".encode()
    checked = runner.invoke(main, ["fmt", "--check", str(crlf), str(bom)])
    assert checked.exit_code == 0, checked.stderr  # formatted: neither line ends nor the mark count as a change


def test_a_file_with_errors_other_than_syntax_is_formatted(tmp_path: Path) -> None:
    path = tmp_path / "unknown.grow"
    path.write_text("schedule u\npool ops = [copy_tpo,midas]\n")
    assert CliRunner().invoke(main, ["fmt", str(path)]).exit_code == 0
    assert path.read_text() == "schedule u\npool ops = [copy_tpo, midas]\n"


def test_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["fmt", str(tmp_path / "absent.grow")])
    assert result.exit_code == 2 and "cannot read" in result.stderr


def test_the_pre_commit_hooks_run_validate_and_fmt_check() -> None:
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "entry: lagdsl validate" in hooks and "entry: lagdsl fmt --check" in hooks
    assert hooks.count("files: \\.grow$") == 2


def test_a_layout_that_would_change_the_meaning_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from lagdsl.lang import fmt

    monkeypatch.setattr(fmt, "args", lambda items, source: "")  # a printer that loses arguments
    with pytest.raises(AssertionError, match="would change the meaning"):
        format_text("model gpt(context=64, width=64, heads=4, depth=2)\n")


def test_a_dash_formats_stdin_to_stdout() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["fmt", "-"], input="schedule  s\nstage a {train 1 steps}\n")
    assert result.exit_code == 0 and result.stdout == "schedule s\nstage a {\n  train 1 steps\n}\n"
    assert runner.invoke(main, ["fmt", "--check", "-"], input="schedule  s\n").exit_code == 1
    broken = runner.invoke(main, ["fmt", "-"], input="stage a { train 1 }\n")
    assert broken.exit_code == 1 and "<stdin>:1:" in broken.stderr and broken.stdout == ""


def test_stdin_keeps_a_crlf_documents_line_ends_and_refuses_what_is_not_utf8() -> None:
    """An editor on Windows pipes its CRLF buffer through `fmt -`: it gets CRLF back (not a
    whole-buffer change of line ends), and a formatted CRLF buffer passes --check."""
    runner = CliRunner()
    result = runner.invoke(main, ["fmt", "-"], input=b"\xef\xbb\xbfschedule  s\r\nstage a {train 1 steps}\r\n")
    assert result.exit_code == 0
    assert result.stdout_bytes == b"\xef\xbb\xbfschedule s\r\nstage a {\r\n  train 1 steps\r\n}\r\n"
    assert runner.invoke(main, ["fmt", "--check", "-"], input=result.stdout_bytes).exit_code == 0
    latin1 = runner.invoke(main, ["fmt", "-"], input="schedule s # caf\xe9\n".encode("latin-1"))
    assert latin1.exit_code == 2 and "cannot read stdin" in latin1.stderr and "UTF-8" in latin1.stderr


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(mutated())
@example("schedule s\neval every 200 steps ()\nstage a { train 1 steps }\n")  # found: `()` was dropped
def test_whatever_parses_formats_idempotently_to_the_same_tree(text: str) -> None:
    tree, problems = parse(Source("m.grow", text))
    if problems or tree is None:
        with pytest.raises(FormatError):
            format_text(text)
        return
    once = format_text(text)
    assert format_text(once) == once
    assert parse(Source("f.grow", once))[0] == tree


def test_fmt_never_follows_a_planted_link_and_formats_through_a_link(tmp_path: Path) -> None:
    """`fmt` once wrote `.NAME.fmt-tmp`, a predictable name it followed if it was a link: a link
    planted there made `fmt y.grow` overwrite another file. And a schedule that is a link is
    formatted in its target, the link kept."""
    from click.testing import CliRunner

    from lagdsl.cli import main

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    messy = (
        "schedule y\nmodel gpt(context=16, width=16, heads=2, depth=1)\nbatch 2\noptimizer adamw(lr=1e-3)\n"
        "stage a { train 4 steps }\n"
    )
    (tmp_path / "y.grow").write_text(messy)
    (tmp_path / ".y.grow.fmt-tmp").symlink_to(victim)
    assert CliRunner().invoke(main, ["fmt", str(tmp_path / "y.grow")]).exit_code == 0
    assert victim.read_text() == "precious"
    assert "  train 4 steps\n" in (tmp_path / "y.grow").read_text()

    real = tmp_path / "real.grow"
    real.write_text(messy)
    link = tmp_path / "link.grow"
    link.symlink_to(real)
    assert CliRunner().invoke(main, ["fmt", str(link)]).exit_code == 0
    assert link.is_symlink() and "  train 4 steps\n" in real.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".y.grow.fmt-tmp",
        "link.grow",
        "real.grow",
        "victim.txt",
        "y.grow",
    ]


def test_repeats_nested_hundreds_deep_are_a_diagnostic_not_a_recursion(tmp_path: Path) -> None:
    """350 nested `repeat`s (validate said E0208) crashed `fmt` with a RecursionError, an internal
    error (the language server's formatting too): past 16 levels they are E0005, and fmt refuses
    the file as it refuses any syntax error, leaving it alone."""
    head = "model gpt(context=16, width=16, heads=2, depth=1)\nbatch 4\noptimizer adamw(lr=1e-3)\n"
    text = head + "repeat 2 { " * 350 + "stage a { train 1 steps }" + " }" * 350 + "\n"
    path = tmp_path / "deep.grow"
    path.write_text(text)
    result = CliRunner().invoke(main, ["fmt", str(path)])
    assert result.exit_code == 1 and "internal error" not in result.output
    assert "error[E0005]: `repeat` blocks nested more than 16 deep" in result.output
    assert path.read_text() == text
    with pytest.raises(FormatError):
        format_text(text)
    sixteen = head + "repeat 2 { " * 16 + "stage a { train 1 steps }" + " }" * 16 + "\n"
    assert "E0005" not in CliRunner().invoke(main, ["validate", "-"], input=sixteen).output  # E0208 only


def test_the_unit_word_is_kept_after_a_long_run_of_letters() -> None:
    """The unit is read back from the line's end (`step` or `steps`, as written); it was found by
    a regex that took time quadratic in a run of letters before it (100,000: 48 s)."""
    name = "a" * 100_000
    head = "model gpt(context=16, width=16, heads=2, depth=1)\nbatch 4\noptimizer adamw(lr=1e-3)\n"
    text = f"{head}stage {name} {{ train 1 step }}\n"
    assert f"stage {name} {{\n  train 1 step\n}}" in format_text(text)


def test_a_comment_after_an_item_of_a_list_stays_with_that_item() -> None:
    text = """\
pool recipes = [
  copy_top,  # gradual stacking
  # the middle block
  midas,
  interleave,  # copies in between
]
"""
    assert format_text(text) == text  # as it was: each comment after its item, one item a line
    squeezed = text.replace("copy_top,  # gradual stacking", "copy_top, # gradual stacking")
    assert format_text(squeezed) == text
