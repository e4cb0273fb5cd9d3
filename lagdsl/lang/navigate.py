"""What an editor asks of a `.grow` file at a position: the word there, what it means (hover),
what may be written there (completion), where a name is defined (go to definition).

Plain functions over text, with 0-based lines and columns as editors count them; they read
broken text too (a file being typed is rarely valid), so they scan the text rather than rely on
the parse. `lagdsl.lsp` serves them; nothing here imports torch or the language server library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal, get_args

from lagdsl.lang.catalogue import (
    DATA,
    DEVICES,
    DIMS,
    KEEP_MODES,
    LR_SCHEDULES,
    MODELS,
    OPTIMIZERS,
    PRECISIONS,
    SELECT_METRICS,
    Catalogue,
    default_catalogue,
)
from lagdsl.lang.fmt import COMMENT_OR_STRING
from lagdsl.lang.params import Signature
from lagdsl.lang.schedule import PARTS, Schedule

Kind = Literal["keyword", "setting", "operator", "pool", "stage", "function", "value"]

#: Every setting, with what it sets (LANGUAGE.md's words).
SETTINGS: dict[str, str] = {
    "schedule": "`schedule NAME`: the schedule's name (run directories and reports carry it).",
    "seed": "`seed N`: the seed of the weights, the data order and the probes (default 0).",
    "device": '`device auto | cpu | cuda | "cuda:N"`: where to train (default auto: CUDA when present).',
    "precision": "`precision auto | fp32 | bf16 | fp16`: the training precision (auto: bf16 where supported).",
    "compile": "`compile on | off`: torch.compile the model (again after each growth).",
    "parallel": "`parallel ddp | fsdp`: under torchrun, replicate the model on every rank or shard it.",
    "probes": "`probes sequential | parallel`: under torchrun, probe candidates one after another or side "
    "by side on groups of ranks.",
    "activations": "`activations keep | recompute`: keep each block's activations for the backward pass, or "
    "recompute them there (less memory, a third more forward compute in the blocks).",
    "model": "`model gpt(...)`: the model at step 0; stages grow it.",
    "data": "`data stdlib(...) | text(...) | jsonl(...) | tokens(...)`: the training data (default: the "
    "built-in corpus).",
    "batch": "`batch N [accumulate M]`: sequences per step (the global batch), in M micro-batches.",
    "optimizer": "`optimizer adamw(...) | sgd(...)`: the optimizer and its hyperparameters.",
    "lr": "`lr constant | cosine(...) | linear(...) | wsd(...)`: the learning-rate schedule over mainline steps.",
    "total": "`total N steps`: the length of the run; durations in `%` are shares of it.",
    "eval": "`eval every D [(batches=N)]`: how often to measure the validation loss, on how many batches.",
    "checkpoint": "`checkpoint every D [(keep=N)]`: how often to write a checkpoint, and how many to keep.",
    "log": "`log every D`: how often to write the training loss to metrics.jsonl.",
}

#: Every other keyword, with what it does.
KEYWORDS: dict[str, str] = {
    "operator": "`operator NAME = OP(...)`: a growth operator with its arguments, named for reuse.",
    "pool": "`pool NAME = [OP, ...]`: a list of candidate operators, named for reuse in `candidates`.",
    "stage": "`stage NAME { [grow ...] [rewarm D] [reset optimizer] [lr_scale ...] train D }`: one stretch "
    "of training, after an optional growth.",
    "repeat": "`repeat N { stage ... }`: the stages N times over, named NAME_1 .. NAME_N.",
    "grow": "`grow depth|width to|by N with OP` or `grow ... { candidates ... probe D ... }`: grow the "
    "model, with one operator or the best of several after a probe.",
    "train": "`train D`: how long the stage trains (steps, tokens or % of `total`).",
    "rewarm": "`rewarm D`: warm the learning rate up again over D after the stage's growth.",
    "reset": "`reset optimizer`: start the optimizer's state afresh after the stage's growth.",
    "lr_scale": "`lr_scale old=0.1 new=1`: the stage's learning rate multiplied for parts of the model "
    "(old, new, embed, head).",
    "freeze": "`train D { freeze old }`, `freeze [embed, head]`, `freeze layers(0, 24)`: parts of the model "
    "that do not change while the stage trains (old: what existed before the stage's growth).",
    "candidates": "`candidates POOL` or `candidates [OP, ...]`: the operators a probe tries.",
    "probe": "`probe D`: how long each candidate trains from the same snapshot on the same batches (the lag).",
    "select": "`select lowest loss|val_loss [over last D]`: how the probe picks its winner.",
    "keep": "`keep winner | rewind`: continue from the winner's probe, or restart it from the snapshot.",
    "every": "`every D`: how often (in `eval`, `checkpoint`, `log`).",
    "with": "`with OP`: the operator of a fixed growth.",
}
STAGE_WORDS = ("grow", "rewarm", "reset", "lr_scale", "train")
PROBE_WORDS = ("candidates", "probe", "select", "keep")
UNITS = ("steps", "tokens")

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCAN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[{}]')
_DEFINITION = re.compile(r"^[ \t]*(operator|pool|stage)[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.M)


@dataclass(frozen=True)
class Place:
    """A 0-based range in the text."""

    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class Completion:
    label: str
    kind: Kind
    detail: str = ""


@cache
def _catalogue() -> Catalogue:
    return default_catalogue()


def _offset(text: str, line: int, column: int) -> int:
    lines = text.split("\n")
    line = min(max(line, 0), len(lines) - 1)
    return sum(len(x) + 1 for x in lines[:line]) + min(max(column, 0), len(lines[line]))


def _place(text: str, start: int, end: int) -> Place:
    line = text.count("\n", 0, start)
    column = start - (text.rfind("\n", 0, start) + 1)
    return Place(line, column, line, column + (end - start))


def word_at(text: str, line: int, column: int) -> tuple[str, Place] | None:
    """The name under (or just before) the position."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    for match in _WORD.finditer(lines[line]):
        if match.start() <= column <= match.end():
            return match.group(0), Place(line, match.start(), line, match.end())
    return None


def definitions(text: str) -> dict[str, tuple[str, Place]]:
    """Named operators, pools and stages: name -> (kind, where its name is written)."""
    found: dict[str, tuple[str, Place]] = {}
    for match in _DEFINITION.finditer(_blank_comments(text)):
        found.setdefault(match.group(2), (match.group(1), _place(text, match.start(2), match.end(2))))
    return found


def definition(text: str, line: int, column: int) -> Place | None:
    """Where the operator, pool or stage named at the position is defined."""
    word = word_at(text, line, column)
    if word is None:
        return None
    found = definitions(text).get(word[0])
    return found[1] if found is not None else None


# ------------------------------------------------------------------------------ hover


def hover(text: str, line: int, column: int) -> tuple[str, Place] | None:
    """Markdown about the name at the position, and the range it covers."""
    word = word_at(text, line, column)
    if word is None:
        return None
    name, place = word
    defined = definitions(text).get(name)
    if defined is not None and defined[0] in ("operator", "pool"):
        kind, where = defined
        written = text.split("\n")[where.line].split("#", 1)[0].strip()
        about = f"```grow\n{written}\n```"
        base = re.search(r"=\s*([A-Za-z_][A-Za-z0-9_]*)", written) if kind == "operator" else None
        if base is not None and _operator_text(base.group(1)):
            about += "\n\n" + _operator_text(base.group(1))
        return about, place
    starts = _starts_line(text, place)  # a statement's keyword (`keep winner`), not an operator (`keep`)
    for found in (
        KEYWORDS.get(name) if starts else None,
        _operator_text(name),
        _signature_text(name),
        SETTINGS.get(name) if starts else None,
        KEYWORDS.get(name),
        SETTINGS.get(name),
    ):
        if found:
            return found, place
    return None


def _starts_line(text: str, place: Place) -> bool:
    return not text.split("\n")[place.line][: place.column].strip()


def _operator_text(name: str) -> str:
    entries = _catalogue().lookup(name)
    parts = []
    for entry in entries:
        params = ", ".join(p.signature_text() for p in entry.params) or "no parameters"
        parts.append(
            f"**{entry.name}**: grows {entry.dim}. {entry.description[0].upper()}{entry.description[1:]}.\n\n"
            f"Parameters: {params}. Preserves the function: {entry.preserves}."
        )
    return "\n\n".join(parts)


def _signatures() -> dict[str, tuple[str, Signature]]:
    groups = {"model": MODELS, "data": DATA, "optimizer": OPTIMIZERS, "lr": LR_SCHEDULES}
    return {name: (group, sig) for group, table in groups.items() for name, sig in table.items()}


def _signature_text(name: str) -> str:
    found = _signatures().get(name)
    if found is None:
        return ""
    group, signature = found
    params = ", ".join(p.signature_text() for p in signature.params) or "no parameters"
    description = f" {signature.description}." if signature.description else ""
    return f"**{name}** (`{group}`):{description}\n\nParameters: {params}."


# ------------------------------------------------------------------------------ completion


def completions(text: str, line: int, column: int) -> list[Completion]:
    """What may be written at the position, most specific first."""
    offset = _offset(text, line, column)
    before = text[:offset]
    current = before.split("\n")[-1]
    prefix = re.search(r"[A-Za-z0-9_]*$", current)
    typed = prefix.group(0) if prefix else ""
    head = current[: len(current) - len(typed)]
    words = _WORD.findall(_blank_comments(head))
    names = definitions(text)
    operators = [Completion(e.name, "operator", f"grows {e.dim}: {e.description}") for e in _catalogue()]
    operators += [Completion(n, "operator", "operator defined here") for n, (k, _) in names.items() if k == "operator"]
    pools = [Completion(n, "pool", "pool defined here") for n, (k, _) in names.items() if k == "pool"]

    def choices(values: tuple[str, ...] | list[str], kind: Kind = "value") -> list[Completion]:
        return [Completion(v, kind) for v in values]

    last = words[-1] if words else ""
    open_list = head.rfind("[") > head.rfind("]")
    if last == "with" or (open_list and words[:1] in (["candidates"], ["pool"])):
        found = operators
    elif last == "candidates":
        found = [*pools, Completion("[", "keyword", "a list of operators")]
    elif words[:1] == ["pool"] and "=" in head:
        found = operators
    elif last in ("model", "optimizer", "data", "lr") and len(words) == 1:
        table = {"model": MODELS, "optimizer": OPTIMIZERS, "data": DATA, "lr": LR_SCHEDULES}[last]
        found = [Completion(n, "function", s.description) for n, s in table.items()]
    elif last == "precision":
        found = choices(PRECISIONS)
    elif last == "device":
        found = choices([*DEVICES, '"cuda:1"'])
    elif last in ("compile",):
        found = choices(["on", "off"])
    elif last in ("parallel", "probes", "activations"):
        found = choices(get_args(Schedule.model_fields[last].annotation))
    elif last == "grow":
        found = choices(DIMS)
    elif last == "select":
        found = choices(["lowest"])
    elif last == "lowest":
        found = choices(SELECT_METRICS)
    elif last == "keep":
        found = choices(KEEP_MODES)
    elif last == "reset":
        found = choices(["optimizer"])
    elif last == "freeze" or (open_list and "freeze" in words):
        found = [*choices(list(PARTS)), Completion("layers(", "function", "half-open range of layers")]
    elif last in ("eval", "checkpoint", "log"):
        found = choices(["every"], "keyword")
    elif words and re.search(r"[0-9]\s*$", head):
        found = choices([*UNITS, "%"], "keyword")
    elif words:
        found = []
    else:
        found = _statements(before, names)
    return [c for c in found if c.label.startswith(typed)] or (found if not typed else [])


def _statements(before: str, names: dict[str, tuple[str, Place]]) -> list[Completion]:
    """The keywords that may start a statement where the cursor's block is."""
    block = _open_block(before)
    if block == "grow":
        return [Completion(w, "keyword", KEYWORDS[w]) for w in PROBE_WORDS]
    if block == "stage":
        return [Completion(w, "keyword", KEYWORDS[w]) for w in STAGE_WORDS]
    if block == "repeat":
        return [Completion("stage", "keyword", KEYWORDS["stage"])]
    if block == "train":
        return [Completion("freeze", "keyword", KEYWORDS["freeze"])]
    out = [Completion(k, "setting", v) for k, v in SETTINGS.items()]
    out += [Completion(k, "keyword", KEYWORDS[k]) for k in ("operator", "pool", "stage", "repeat")]
    out += [Completion(n, "stage", "a stage of this schedule") for n, (k, _) in names.items() if k == "stage"]
    return out


def _open_block(before: str) -> str | None:
    """The keyword (stage, repeat, grow, train) of the innermost block open at the end of `before`."""
    stack: list[str] = []
    last_keyword = ""
    for match in _SCAN.finditer(before):
        token = match.group(0)
        if token in ("stage", "repeat", "grow", "train"):
            last_keyword = token
        elif token == "{":
            stack.append(last_keyword)
        elif token == "}" and stack:
            stack.pop()
    return stack[-1] if stack else None


def _blank_comments(text: str) -> str:
    """`text` with its comments replaced by spaces (strings kept), so positions stay."""

    def blank(match: re.Match[str]) -> str:
        return match.group(0) if match.group(0)[0] == '"' else " " * len(match.group(0))

    return COMMENT_OR_STRING.sub(blank, text)
