"""The `data` setting: the source, its tokenizer's size (read, never run), and its files looked
for (W0601 where `run` would find none)."""

from __future__ import annotations

from pathlib import Path

from lagdsl.lang import syntax as ast
from lagdsl.lang.catalogue import DATA
from lagdsl.lang.check.calls import argument, call_of
from lagdsl.lang.check.draft import Draft
from lagdsl.lang.schedule import JsonlData, ParquetData, StdlibData, TextData, TokensData

DATA_MODELS: dict[str, type[StdlibData | TextData | JsonlData | ParquetData | TokensData]] = {
    "stdlib": StdlibData,
    "text": TextData,
    "jsonl": JsonlData,
    "parquet": ParquetData,
    "tokens": TokensData,
}


def check_data(draft: Draft, setting: ast.Setting) -> None:
    call = call_of(draft, "data source", DATA, setting)
    if call is None:
        return
    data = DATA_MODELS[call[0]].model_validate(call[1])
    draft.settings.data = data
    name = getattr(data, "tokenizer", None)
    if name is not None:
        read_tokenizer(draft, setting, name)
    _look_for_files(draft, setting, data)


def _look_for_files(draft: Draft, setting: ast.Setting, data: object) -> None:
    """W0601 for a data glob that matches no file and a token file that is not there: `run` would
    stop on it, so `validate` says so first (the files are looked for, never read)."""
    from lagdsl.text.globs import matching

    if isinstance(data, (TextData, JsonlData, ParquetData)):
        wanted: list[tuple[str, str]] = [(data.glob, "glob")]
    elif isinstance(data, TokensData):
        wanted = []
        for key in ("train", "val"):
            names = getattr(data, key)
            for name in (names,) if isinstance(names, str) else names or ():
                wanted.append((name, key))
    else:
        return
    node = setting.value
    for name, key in wanted:
        path = Path(name) if Path(name).is_absolute() else draft.data_base / name
        pattern = any(c in name for c in "*?[")
        if matching(str(path), first=True) if pattern else path.is_file():
            continue
        arg = argument(node, key, positional=key in ("glob", "train"))
        what = "matches no file" if pattern else "is not a file" if path.exists() else "does not exist"
        draft.report(
            "W0601",
            f"`{name}` {what} (looked in `{path.parent if not pattern else draft.data_base}`)",
            arg.span if arg is not None else node.span,
            "no data here",
            "`lagdsl run` would stop here: give a path relative to the schedule's folder (or an absolute one)",
        )


def read_tokenizer(draft: Draft, setting: ast.Setting, name: str) -> None:
    """The size of the tokenizer `name` (relative to the schedule's folder) into the settings, or E0308."""
    from lagdsl.text.tokenizer import TokenizerError, load, vocab_size

    path = Path(name) if Path(name).is_absolute() else draft.data_base / name
    try:
        draft.settings.tokenizer_vocab = vocab_size(load(path))
    except TokenizerError as error:
        node = setting.value
        arg = argument(node, "tokenizer", positional=False)
        draft.report(
            "E0308",
            str(error),
            arg.span if arg is not None else node.span,
            "cannot read this tokenizer",
            "give the path of a `tokenizer.json` (relative to the schedule's folder) written by Hugging Face "
            "`tokenizers`",
        )
