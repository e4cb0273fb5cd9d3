"""Corpora larger than memory: streamed reading, byte corpora memory-mapped from the token cache,
token files in shards read as one, and Parquet files."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from lagdsl.cli import main
from lagdsl.lang.schedule import JsonlData, ParquetData, TextData, TokensData
from lagdsl.runtime.data.batches import Batches
from lagdsl.runtime.data.corpus import DataError, Joined, load_corpus
from lagdsl.text import encode, reading
from tests.conftest import train_tokenizer, write_corpus


def whole_file_pieces(text: str, piece: int) -> list[str]:
    """How a text file was cut when it was read whole: at the first line end at or past `piece`
    characters from the piece's start (the rest whole where no line ends)."""
    start, out = 0, []
    while len(text) - start > piece:
        cut = text.find("\n", start + piece) + 1 or len(text)
        out.append(text[start:cut])
        start = cut
    if start < len(text) or not text:
        out.append(text[start:])
    return out


@given(
    text=st.text(st.sampled_from(["a", "b", "\n", "é", "€", "\N{GRINNING FACE}", " "]), max_size=400),
    piece=st.integers(1, 40),
    block=st.integers(1, 9),
)
def test_a_text_file_read_in_blocks_is_cut_as_when_it_was_read_whole(
    tmp_path_factory: pytest.TempPathFactory, text: str, piece: int, block: int
) -> None:
    """Blocks of a few bytes split characters of two, three and four bytes: the pieces, their ends
    and the fingerprint are those of the whole file."""
    path = tmp_path_factory.mktemp("blocks") / "a.txt"
    path.write_bytes(text.encode())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reading, "PIECE", piece)
        patch.setattr(reading, "READ_BYTES", block)
        digest = hashlib.sha256()
        got = list(reading.pieces([path], None, digest))
    expected = whole_file_pieces(text, piece)
    assert [p for p, _ in got] == expected
    assert [last for _, last in got] == [False] * (len(expected) - 1) + [True]
    assert digest.hexdigest() == hashlib.sha256(b"a.txt\0" + text.encode()).hexdigest()


def test_a_byte_that_is_not_utf8_is_named_by_its_place_in_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(reading, "READ_BYTES", 5)
    path = tmp_path / "c.txt"
    path.write_bytes("ééééé".encode() + b"\xff" + b"tail")  # the bad byte in the third block
    with pytest.raises(encode.EncodeError, match=r"is not UTF-8 text \(byte 10\)"):
        list(reading.pieces([path], None))


def test_byte_corpora_are_memory_mapped_and_keep_their_fingerprint(tmp_path: Path) -> None:
    """A byte corpus is written once to the token cache and memory-mapped (once joined in memory on
    every rank); its tokens and fingerprint are what they were, so earlier runs still resume."""
    corpus = write_corpus(tmp_path)
    (corpus / "b.txt").write_bytes(b"caf\xe9 in Latin-1: bytes take any bytes\n")
    files = sorted(corpus.glob("*.txt"))
    loaded = load_corpus(TextData(glob="corpus/*.txt", val=0.1), tmp_path, progress=False)
    assert isinstance(loaded.train, np.memmap) and isinstance(loaded.val, np.memmap)
    joined = b"\n".join(p.read_bytes() for p in files)
    assert np.concatenate([loaded.train, loaded.val]).tobytes() == joined
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    assert loaded.fingerprint == digest.hexdigest()
    # JSON Lines as bytes: the documents joined with a newline, fingerprinted as before
    (tmp_path / "d.jsonl").write_text('{"text": "one"}\n\n{"text": "two \\u00e9"}\n')
    lines = load_corpus(JsonlData(glob="d.jsonl", val=0.2), tmp_path, progress=False)
    assert np.concatenate([lines.train, lines.val]).tobytes() == "one\ntwo é".encode()
    expected = hashlib.sha256(b"jsonl\0text\0" + b"d.jsonl\0" + (tmp_path / "d.jsonl").read_bytes())
    assert lines.fingerprint == expected.hexdigest()


def test_reading_a_corpus_holds_a_block_not_the_file(tmp_path: Path, monkeypatch) -> None:
    """The Python memory a first read of an 8 MB corpus takes is a few blocks, not the corpus (a
    file was once read whole, and byte corpora joined in memory)."""
    monkeypatch.setattr(reading, "READ_BYTES", 256 << 10)
    line = b"x = [1, 2, 3]  # a line of source\n"
    (tmp_path / "big.txt").write_bytes(line * (8_000_000 // len(line)))
    documents = [json.dumps({"text": "word " * 200}) for _ in range(8_000_000 // 1000)]
    (tmp_path / "big.jsonl").write_text("\n".join(documents) + "\n")
    for spec in (TextData(glob="big.txt"), JsonlData(glob="big.jsonl")):
        tracemalloc.start()
        try:
            loaded = load_corpus(spec, tmp_path, progress=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(loaded.train) > 7_000_000
        assert peak < 2_000_000, f"{spec.kind}: {peak:,} bytes at the peak"


def test_token_shards_read_as_one_array_give_the_batches_of_the_joined_file(tmp_path: Path) -> None:
    """`tokens([...])` and `tokens("glob")` read shards in order as one array, without joining
    them: every window (those across a shard's end too) and the held-out tail are the joined file's."""
    rng = np.random.default_rng(0)
    shards = [rng.integers(0, 300, size=n, dtype=np.uint16) for n in (1000, 37, 2500)]
    (tmp_path / "shards").mkdir()
    for i, shard in enumerate(shards):
        shard.tofile(tmp_path / "shards" / f"train-{i:02d}.bin")
    np.concatenate(shards).tofile(tmp_path / "joined.bin")
    names = tuple(f"shards/train-{i:02d}.bin" for i in range(3))
    one = load_corpus(TokensData(train="joined.bin"), tmp_path, progress=False)
    for spec in (TokensData(train=names), TokensData(train="shards/train-*.bin")):
        many = load_corpus(spec, tmp_path, progress=False)
        assert isinstance(many.train, Joined) and len(many.train.parts) == 3
        assert (len(many.train), len(many.val), many.vocab) == (len(one.train), len(one.val), one.vocab)
        a = Batches(one, batch=16, context=64, seed=3, device=torch.device("cpu"))
        b = Batches(many, batch=16, context=64, seed=3, device=torch.device("cpu"))
        for step in range(20):
            assert all(torch.equal(x, y) for x, y in zip(a.train(step), b.train(step), strict=True))
        assert all(torch.equal(x, y) for x, y in zip(a.val(0), b.val(0), strict=True))
    shards[1][5] += 1  # an edit in the middle shard is other data
    shards[1].tofile(tmp_path / "shards" / "train-01.bin")
    assert load_corpus(TokensData(train=names), tmp_path, progress=False).fingerprint != many.fingerprint
    with pytest.raises(DataError, match=r"no token files match `none/\*.bin`"):
        load_corpus(TokensData(train="none/*.bin"), tmp_path, progress=False)


def test_token_shards_train_from_a_schedule(tmp_path: Path) -> None:
    for i in range(2):
        np.random.default_rng(i).integers(0, 200, size=3000, dtype=np.uint16).tofile(tmp_path / f"t{i}.bin")
    (tmp_path / "s.grow").write_text(
        "schedule s\nmodel gpt(context=16, width=16, heads=2, depth=1, vocab=256)\n"
        'data tokens(["t0.bin", "t1.bin"], val=["t1.bin"])\nbatch 4\noptimizer adamw(lr=1e-3)\n'
        "stage base {\n  train 4 steps\n}\n"
    )
    result = CliRunner().invoke(main, ["run", "--quiet", str(tmp_path / "s.grow"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (
        "6,000 train, 3,000 validation (2 train files)" in json.loads((tmp_path / "r" / "run.json").read_text())["data"]
    )


# -- Parquet

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def write_parquet(path: Path, texts: list[str | None], rows_per_group: int = 16, column: str = "text") -> None:
    table = pa.table({"id": list(range(len(texts))), column: texts})
    pq.write_table(table, path, row_group_size=rows_per_group)


def test_parquet_rows_are_documents_as_jsonl_lines_are(tmp_path: Path) -> None:
    texts = [f"document {i}: " + "lorem ipsum é " * (i % 5 + 1) for i in range(100)]
    (tmp_path / "p").mkdir()
    write_parquet(tmp_path / "p" / "part-0.parquet", texts[:60])
    write_parquet(tmp_path / "p" / "part-1.parquet", texts[60:])
    (tmp_path / "j").mkdir()
    for name, part in (("part-0.jsonl", texts[:60]), ("part-1.jsonl", texts[60:])):
        (tmp_path / "j" / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    as_bytes = load_corpus(ParquetData(glob="p/*.parquet"), tmp_path, progress=False)
    from_lines = load_corpus(JsonlData(glob="j/*.jsonl"), tmp_path, progress=False)
    assert np.concatenate([as_bytes.train, as_bytes.val]).tobytes() == "\n".join(texts).encode()
    assert as_bytes.vocab == 256 and as_bytes.fingerprint != from_lines.fingerprint
    write_corpus(tmp_path)
    tokenizer = train_tokenizer(tmp_path / "tokenizer.json", [tmp_path / "corpus" / "a.txt"])
    spec = {"val": 0.1, "tokenizer": str(tokenizer)}
    tokens = load_corpus(ParquetData(glob="p/*.parquet", **spec), tmp_path, progress=False)
    lines = load_corpus(JsonlData(glob="j/*.jsonl", **spec), tmp_path, progress=False)
    assert np.array_equal(np.asarray(tokens.train), np.asarray(lines.train))
    assert "100 documents" in tokens.description


def test_parquet_that_cannot_be_read_is_one_line(tmp_path: Path, monkeypatch) -> None:
    write_parquet(tmp_path / "a.parquet", ["one", None, "three"])
    with pytest.raises(DataError, match=r"a.parquet`: row 2's `text` is null: fill or drop it"):
        load_corpus(ParquetData(glob="a.parquet"), tmp_path, progress=False)
    with pytest.raises(DataError, match=r"has no column `body` \(its columns: `id`, `text`\): set `column=`"):
        load_corpus(ParquetData(glob="a.parquet", column="body"), tmp_path, progress=False)
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"b.parquet` is not a Parquet file"):
        load_corpus(ParquetData(glob="b.parquet"), tmp_path, progress=False)
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"column `text` holds int64, not text"):
        load_corpus(ParquetData(glob="c.parquet"), tmp_path, progress=False)
    import builtins

    real = builtins.__import__

    def without_pyarrow(name: str, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    write_parquet(tmp_path / "d.parquet", ["fine"])
    monkeypatch.setattr(builtins, "__import__", without_pyarrow)
    with pytest.raises(DataError, match=r"needs pyarrow: pip install 'lagdsl\[parquet\]'"):
        load_corpus(ParquetData(glob="d.parquet"), tmp_path, progress=False)


def test_a_parquet_schedule_validates_without_pyarrow_or_torch_and_trains(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", ["def f(x):\n    return x\n" * 40] * 30)
    (tmp_path / "p.grow").write_text(
        "schedule p\nmodel gpt(context=16, width=16, heads=2, depth=1)\n"
        'data parquet("*.parquet", column="text", val=0.2)\nbatch 4\noptimizer adamw(lr=1e-3)\n'
        "stage base {\n  train 4 steps\n}\n"
    )
    import subprocess
    import sys

    check = (
        "import sys\nfrom click.testing import CliRunner\nfrom lagdsl.cli import main\n"
        "result = CliRunner().invoke(main, ['validate', sys.argv[1]])\nassert result.exit_code == 0, result.output\n"
        "print('torch' in sys.modules, 'pyarrow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", check, str(tmp_path / "p.grow")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"
    result = CliRunner().invoke(main, ["run", "--quiet", str(tmp_path / "p.grow"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "run.json").read_text())["data"].startswith('parquet("*.parquet")')


def test_tokenize_reads_parquet(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    tokenizer = train_tokenizer(tmp_path / "tokenizer.json", [tmp_path / "corpus" / "a.txt"])
    write_parquet(tmp_path / "a.parquet", ["import os\n", "print(1)\n"] * 50, column="body")
    result = CliRunner().invoke(
        main,
        ["tokenize", str(tmp_path / "a.parquet"), "--field", "body", "--tokenizer", str(tokenizer),
         "-o", str(tmp_path / "tok"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert meta["documents"] == 100
    expected = Tokenizer.from_file(str(tokenizer)).encode("import os\n", add_special_tokens=False).ids
    assert np.fromfile(tmp_path / "tok" / "train.bin", dtype=np.uint16)[: len(expected)].tolist() == expected


def test_the_standard_library_with_a_tokenizer_reads_each_file_in_its_declared_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data stdlib(tokenizer=...)` (and a pretrained model's default corpus) failed on a Python
    whose standard library holds test files in Latin-1 or KOI8-R ("not UTF-8 text: convert it",
    which a user cannot do to the interpreter's files). Each file is read in the encoding its PEP 263
    line declares; a file that cannot be read so (a test of a bad declaration) is left out, counted."""
    from lagdsl.lang.schedule import StdlibData
    from lagdsl.runtime.data import corpus

    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "a_plain.py").write_text('"""Plain UTF-8: café."""\n' * 200, encoding="utf-8")
    (folder / "b_latin.py").write_bytes('# -*- coding: iso-8859-1 -*-\nname = "Gérard"\n'.encode("iso-8859-1") * 200)
    (folder / "c_bad.py").write_bytes(b"# coding: no-such-codec\nx = 1\n")
    (folder / "d_liar.py").write_bytes(b"x = '\xff\xfe'\n")  # no declaration, so UTF-8: it is not
    files = sorted(folder.glob("*.py"))
    train_tokenizer(tmp_path / "tok.json", [files[0]])
    monkeypatch.setattr(corpus, "stdlib_files", lambda: files)
    loaded = load_corpus(StdlibData(tokenizer="tok.json", val=0.1), tmp_path, progress=False)
    assert "(2 files left out: not text in the encoding declared)" in loaded.description
    text = Tokenizer.from_file(str(tmp_path / "tok.json")).decode(np.concatenate([loaded.train, loaded.val]).tolist())
    assert "Gérard" in text and "café" in text
    assert reading.readable_sources(files) == (files[:2], files[2:])
    # as bytes, every file is read as it is, as before
    assert "left out" not in load_corpus(StdlibData(val=0.1), tmp_path, progress=False).description


def test_a_dictionary_encoded_text_column_is_read_as_text(tmp_path: Path) -> None:
    """Parquet writers dictionary-encode repetitive text columns (pandas categoricals, `pyarrow`'s
    `dictionary_encode`); such a column was refused as "not text"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"label {i % 3}: é" for i in range(50)]
    column = pa.array(texts).dictionary_encode()
    pq.write_table(pa.table({"text": column}), tmp_path / "d.parquet")
    assert pa.types.is_dictionary(pq.ParquetFile(tmp_path / "d.parquet").schema_arrow.field("text").type)
    corpus = load_corpus(ParquetData(glob="d.parquet"), tmp_path, progress=False)
    assert np.concatenate([corpus.train, corpus.val]).tobytes() == "\n".join(texts).encode()


def test_a_file_whose_name_reads_as_a_glob_is_named_by_its_path(tmp_path: Path) -> None:
    """`text("[a].txt")` matched only `a.txt` (a character class), so the file could not be named:
    a path that names an existing file is that file; `glob.escape`'s `[[]a].txt` names it too."""
    (tmp_path / "[a].txt").write_text("the bracketed file\n" * 50)
    (tmp_path / "a.txt").write_text("the other file\n" * 50)
    for written in ("[a].txt", "[[]a].txt"):
        corpus = load_corpus(TextData(glob=written, val=0.1), tmp_path, progress=False)
        assert b"bracketed" in np.concatenate([corpus.train, corpus.val]).tobytes() and "1 files" in corpus.description
    other = load_corpus(TextData(glob="?.txt", val=0.1), tmp_path, progress=False)  # still a glob
    assert b"other" in np.asarray(other.train).tobytes()
