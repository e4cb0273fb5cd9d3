"""The data sources a schedule's `data` setting names (`stdlib`, `text`, `jsonl`, `parquet`,
`tokens`), as pydantic models: each field's type, default and help, which the checker, the
signatures in its messages and the runtime's corpus reader read. No torch here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_TOKENIZER = Annotated[
    str | None,
    Field(description='a Hugging Face `tokenizer.json`, such as `"tokenizer.json"` (default: bytes)'),
]
_VAL = Annotated[float, Field(gt=0.0, lt=1.0, description="`val` is the held-out share, such as `0.05`")]


class StdlibData(_Frozen):
    """The running Python's standard library source: as bytes, or as a tokenizer's tokens."""

    kind: Literal["stdlib"] = "stdlib"
    val: _VAL = 0.05
    tokenizer: _TOKENIZER = None


class TextData(_Frozen):
    """UTF-8 text files: as bytes, or as a tokenizer's tokens."""

    kind: Literal["text"] = "text"
    glob: Annotated[str, Field(description='the files, as a glob such as `"data/*.txt"`')]
    val: _VAL = 0.05
    tokenizer: _TOKENIZER = None


class JsonlData(_Frozen):
    """JSON Lines files, one document per line in a text field: as bytes, or as a tokenizer's tokens."""

    kind: Literal["jsonl"] = "jsonl"
    glob: Annotated[str, Field(description='the files, as a glob such as `"data/*.jsonl"`')]
    field: Annotated[str, Field(description='the field that holds each line\'s text, such as `"text"`')] = "text"
    val: _VAL = 0.05
    tokenizer: _TOKENIZER = None


class ParquetData(_Frozen):
    """Parquet files (as most Hub datasets ship), one document per row in a text column, read a row
    group at a time: as bytes, or as a tokenizer's tokens."""

    kind: Literal["parquet"] = "parquet"
    glob: Annotated[str, Field(description='the files, as a glob such as `"data/*.parquet"`')]
    column: Annotated[str, Field(description='the column that holds each row\'s text, such as `"text"`')] = "text"
    val: _VAL = 0.05
    tokenizer: _TOKENIZER = None


#: token files: a name or a glob, or a list of them, read in order as one array
TokenFiles = str | tuple[str, ...]


class TokensData(_Frozen):
    """Pre-tokenized memory-mapped arrays (nanoGPT's format): one file, or shards read as one."""

    kind: Literal["tokens"] = "tokens"
    train: Annotated[
        TokenFiles,
        Field(description='the training tokens, such as `"train.bin"`, `"shards/train-*.bin"` or `["a.bin", "b.bin"]`'),
    ]
    val: Annotated[TokenFiles | None, Field(description="the validation tokens, as `train` (default: its last 5%)")] = (
        None
    )
    dtype: Literal["uint16", "uint32"] = "uint16"
    #: the tokenizer that made the tokens: it fixes `vocab=auto`, and exports and samples use it
    tokenizer: _TOKENIZER = None


DataSpec = Annotated[StdlibData | TextData | JsonlData | ParquetData | TokensData, Field(discriminator="kind")]
