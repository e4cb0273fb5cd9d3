"""Real tokenizers: `text(..., tokenizer=)`, `jsonl(...)`, the token cache, `lagdsl tokenize`."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tokenizers import Tokenizer

from lagdsl.cli import main
from lagdsl.lang import load
from lagdsl.runtime.state.trained import open_trained
from lagdsl.text import encode, reading
from tests.conftest import train_tokenizer, write_corpus

SCHEDULE = """
schedule tok
seed 0
model gpt(context=32, width=32, heads=4, depth=1{vocab})
data {data}
batch 8
optimizer adamw(lr=3e-3)
stage base {{ train 8 steps }}
stage deeper {{ grow depth by 1 with copy_top  train 8 steps }}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    corpus = write_corpus(tmp_path)
    (corpus / "b.txt").write_text("def hello(name):\n    return f'hello {name}'\n" * 200)
    train_tokenizer(tmp_path / "tokenizer.json", sorted(corpus.glob("*.txt")))
    lines = [json.dumps({"id": i, "body": f"document {i}: " + "lorem ipsum dolor " * (i % 7 + 1)}) for i in range(400)]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "part1.jsonl").write_text("\n".join(lines[:200]) + "\n")
    (tmp_path / "docs" / "part2.jsonl").write_text("\n".join(lines[200:]) + "\n")
    return tmp_path


def write(project: Path, data: str, vocab: str = ", vocab=auto", name: str = "tok.grow") -> Path:
    path = project / name
    path.write_text(SCHEDULE.format(data=data, vocab=vocab))
    return path


def tokenize(project: Path, *inputs: Path, out: Path, options: tuple[str, ...] = ("--quiet",)):
    """`lagdsl tokenize INPUTS --tokenizer tokenizer.json -o OUT` on the project's tokenizer."""
    command = ["tokenize", *map(str, inputs), "--tokenizer", str(project / "tokenizer.json"), "-o", str(out)]
    return CliRunner().invoke(main, [*command, *options])


def run(path: Path, out: Path):
    return CliRunner().invoke(main, ["run", "--quiet", str(path), "--out", str(out)])


def test_a_text_corpus_trains_with_the_tokenizer_and_its_vocabulary(project: Path) -> None:
    path = write(project, 'text("corpus/*.txt", tokenizer="tokenizer.json")')
    checked = load(path)
    assert checked.ok, checked.diagnostics
    assert checked.schedule is not None and checked.schedule.model.vocab == 320  # vocab=auto: the tokenizer's
    result = run(path, project / "run")
    assert result.exit_code == 0, result.output
    info = json.loads((project / "run" / "run.json").read_text())
    assert info["tokenizer"] == "tokenizer.json" and "tokenizer tokenizer.json" in info["data"]
    assert (project / "run" / "tokenizer.json").read_text() == (project / "tokenizer.json").read_text()
    summary = json.loads((project / "run" / "summary.json").read_text())
    assert summary["final_val_loss"] < np.log(320)  # it learned something about these tokens


def test_the_tokens_are_the_tokenizers_with_documents_ended(project: Path) -> None:
    tokenizer = Tokenizer.from_file(str(project / "tokenizer.json"))
    files = sorted((project / "corpus").glob("*.txt"))
    encoded = encode.encode_corpus(files, tokenizer, progress=False)
    eos = tokenizer.token_to_id("<|endoftext|>")
    expected = []
    for path in files:
        expected += [*tokenizer.encode(path.read_text(), add_special_tokens=False).ids, eos]
    assert encoded.tokens.tolist() == expected
    assert encoded.documents == 2 and not encoded.cached


def test_a_large_file_is_tokenized_in_pieces_and_ended_once(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "PIECE", 1000)  # pieces of about 1 KB: a.txt is about 60 of them
    tokenizer = Tokenizer.from_file(str(project / "tokenizer.json"))
    files = sorted((project / "corpus").glob("*.txt"))
    encoded = encode.encode_corpus(files, tokenizer, progress=False)
    eos = tokenizer.token_to_id("<|endoftext|>")
    tokens = encoded.tokens.tolist()
    assert encoded.documents == 2 and tokens.count(eos) == 2 and tokens[-1] == eos
    # cut at line ends, the pieces' tokens differ from the whole file's only around the cuts
    whole = tokenizer.encode(files[0].read_text(), add_special_tokens=False).ids
    assert abs(tokens.index(eos) - len(whole)) < len(whole) * 0.02
    assert tokenizer.decode(tokens[: tokens.index(eos)]) == files[0].read_text()


def test_the_cache_is_used_the_second_time_and_refreshed_after_an_edit(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(project, 'text("corpus/*.txt", tokenizer="tokenizer.json")')
    assert run(path, project / "first").exit_code == 0
    calls = []
    original = encode.write_tokens
    monkeypatch.setattr(encode, "write_tokens", lambda *a, **k: calls.append(a) or original(*a, **k))
    assert run(path, project / "second").exit_code == 0
    assert calls == []  # nothing tokenized: the cache held it
    first, second = (json.loads((project / r / "run.json").read_text()) for r in ("first", "second"))
    assert first["data_fingerprint"] == second["data_fingerprint"]
    # the resume of a run reads the cache too (and finds the same data)
    result = CliRunner().invoke(main, ["run", "--quiet", "--resume", str(project / "second")])
    assert result.exit_code == 0, result.output
    assert calls == []
    # an edited file is tokenized again, and the run records other data
    with (project / "corpus" / "b.txt").open("a") as stream:
        stream.write("one more line\n")
    assert run(path, project / "third").exit_code == 0
    assert len(calls) == 1
    third = json.loads((project / "third" / "run.json").read_text())
    assert third["data_fingerprint"] != first["data_fingerprint"]


def test_jsonl_documents_train_with_and_without_a_tokenizer(project: Path) -> None:
    tokenized = write(project, 'jsonl("docs/*.jsonl", field="body", tokenizer="tokenizer.json")', name="a.grow")
    result = run(tokenized, project / "a")
    assert result.exit_code == 0, result.output
    assert "800 documents" not in result.output
    info = json.loads((project / "a" / "run.json").read_text())
    assert "400 documents" in info["data"]
    as_bytes = write(project, 'jsonl("docs/*.jsonl", field="body")', name="b.grow")
    assert load(as_bytes).schedule.model.vocab == 256  # type: ignore[union-attr]
    assert run(as_bytes, project / "b").exit_code == 0


def test_a_jsonl_line_without_the_field_is_one_line_and_exit_2(project: Path) -> None:
    with (project / "docs" / "part2.jsonl").open("a") as stream:
        stream.write('{"id": 400, "text": "no body here"}\n')
    result = run(write(project, 'jsonl("docs/*.jsonl", field="body", tokenizer="tokenizer.json")'), project / "r")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: data: {project / 'docs' / 'part2.jsonl'}:201: no field `body` (its fields: `id`, `text`): "
        "set `field=` to the text's"
    )
    assert not (project / "r").exists()


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_a_tokenizer_that_cannot_be_read_is_a_diagnostic(project: Path, problem: str) -> None:
    if problem == "corrupt":
        (project / "tokenizer.json").write_text('{"model": "not really"')
    else:
        (project / "tokenizer.json").unlink()
    path = write(project, 'text("corpus/*.txt", tokenizer="tokenizer.json")')
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert "E0308" in result.output and f"{path}:5:" in result.output and "Traceback" not in result.output
    reason = "does not exist" if problem == "missing" else "is not a tokenizer file"
    assert reason in result.output


def test_a_vocab_smaller_than_the_tokenizer_is_an_error(project: Path) -> None:
    path = write(project, 'text("corpus/*.txt", tokenizer="tokenizer.json")', vocab=", vocab=300")
    checked = load(path)
    assert [d.code for d in checked.errors] == ["E0302"]
    assert "smaller than the tokenizer's 320 tokens" in checked.errors[0].message
    # and the rest of the file is checked in the same round: a growth that does not grow too
    path.write_text(path.read_text().replace("grow depth by 1", "grow depth to 1"))
    assert [d.code for d in load(path).errors] == ["E0302", "E0401"]


def test_lagdsl_tokenize_writes_the_files_tokens_reads(project: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["tokenize", *map(str, sorted((project / "corpus").glob("*.txt"))), "--tokenizer",
         str(project / "tokenizer.json"), "-o", str(project / "tok"), "--val", "0.1", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('data tokens("')
    meta = json.loads((project / "tok" / "meta.json").read_text())
    train = np.fromfile(project / "tok" / "train.bin", dtype=np.uint16)
    val = np.fromfile(project / "tok" / "val.bin", dtype=np.uint16)
    assert len(train) == meta["train"] and len(val) == meta["val"] and meta["val"] > 0
    cached = encode.encode_corpus(
        sorted((project / "corpus").glob("*.txt")), Tokenizer.from_file(str(project / "tokenizer.json")), progress=False
    )
    assert np.concatenate([train, val]).tolist() == cached.tokens.tolist()
    data = 'tokens("tok/train.bin", val="tok/val.bin", tokenizer="tok/tokenizer.json")'
    path = write(project, data)
    assert load(path).schedule.model.vocab == 320  # type: ignore[union-attr]
    run_result = run(path, project / "run")
    assert run_result.exit_code == 0, run_result.output
    assert json.loads((project / "run" / "run.json").read_text())["tokenizer"] == "tokenizer.json"

    # a second run into the same folder that fails leaves the first one's files whole
    before = {p.name: p.read_bytes() for p in (project / "tok").iterdir()}
    again = tokenize(project, project / "corpus" / "missing.txt", out=project / "tok")
    assert again.exit_code == 2
    assert {p.name: p.read_bytes() for p in (project / "tok").iterdir()} == before
    # and never into a run directory
    first = sorted((project / "corpus").glob("*.txt"))[0]
    inside = tokenize(project, first, out=project / "run" / "tok")
    assert inside.exit_code == 2 and "is inside the run directory" in inside.stderr
    assert not (project / "run" / "tok").exists()
    # nor under a file
    (project / "a-file").write_text("")
    under = tokenize(project, first, out=project / "a-file" / "tok")
    assert under.exit_code == 2
    assert (
        under.stderr.strip()
        == f"error: `{project / 'a-file' / 'tok'}` cannot be made: `{project / 'a-file'}` is a file, not a folder"
    )


def test_lagdsl_tokenize_reports_a_bad_line(project: Path) -> None:
    (project / "docs" / "part1.jsonl").write_text('{"text": "fine"}\nnot json\n')
    result = CliRunner().invoke(
        main,
        ["tokenize", str(project / "docs" / "part1.jsonl"), "--tokenizer", str(project / "tokenizer.json"),
         "-o", str(project / "tok"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {project / 'docs' / 'part1.jsonl'}:2: not a JSON object")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": ' + "[" * 200_000 + "]" * 200_000 + "}", "values nested too deeply to read (each line: one object)"),
        ('{"text": "a\\ud800b"}', "field `text` holds a lone surrogate (\\ud800, character 2), which is not text"),
    ],
    ids=["nested-200k", "lone-surrogate"],
)
def test_lagdsl_tokenize_names_a_line_json_allows_and_text_does_not(project: Path, line: str, message: str) -> None:
    (project / "docs" / "odd.jsonl").write_text('{"text": "fine"}\n' + line + "\n")
    result = CliRunner().invoke(
        main,
        ["tokenize", str(project / "docs" / "odd.jsonl"), "--tokenizer", str(project / "tokenizer.json"),
         "-o", str(project / "tok"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {project / 'docs' / 'odd.jsonl'}:2: {message}"


def test_a_tokenizer_run_exports_and_samples_with_its_tokenizer(project: Path) -> None:
    transformers = pytest.importorskip("transformers")
    assert run(write(project, 'text("corpus/*.txt", tokenizer="tokenizer.json")'), project / "run").exit_code == 0
    assert CliRunner().invoke(main, ["export", str(project / "run"), "-o", str(project / "hf")]).exit_code == 0
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(project / "hf")
    text = "def hello(name):\n    return name"
    assert hf_tokenizer.decode(hf_tokenizer(text).input_ids) == text
    ids = hf_tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == Tokenizer.from_file(str(project / "tokenizer.json")).encode(text).ids
    hf = transformers.AutoModelForCausalLM.from_pretrained(project / "hf")
    with torch.no_grad():
        assert torch.allclose(open_trained(project / "run").model()(ids)[0], hf(ids).logits, atol=1e-5, rtol=0)
    assert hf_tokenizer.eos_token == "<|endoftext|>"
    config = json.loads((project / "hf" / "config.json").read_text())
    assert config["vocab_size"] == 320 and config["eos_token_id"] == hf_tokenizer.eos_token_id
    result = CliRunner().invoke(
        main, ["sample", str(project / "run"), "--prompt", "def ", "--max-new-tokens", "12", "--temperature", "0"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("def ") and len(result.stdout) > len("def \n")
    (project / "latin1.txt").write_bytes("café".encode("latin-1"))  # not UTF-8: this tokenizer reads text
    refused = CliRunner().invoke(main, ["sample", str(project / "run"), "--prompt-file", str(project / "latin1.txt")])
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"error: `{project / 'latin1.txt'}` is not UTF-8 text (byte 3), and this run's tokenizer reads text: "
        "convert the prompt to UTF-8\n"
    )


def test_validate_with_a_tokenizer_and_tokenize_never_import_torch(project: Path) -> None:
    import subprocess
    import sys

    path = write(project, 'text("corpus/*.txt", tokenizer="tokenizer.json")')
    code = f"""
import sys
from click.testing import CliRunner
from lagdsl.cli import main
for args in (["validate", {str(path)!r}],
             ["tokenize", {str(project / "corpus" / "a.txt")!r}, "--tokenizer", {str(project / "tokenizer.json")!r},
              "-o", {str(project / "tok")!r}, "--quiet"]):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_text_that_is_not_utf8_is_one_line(project: Path) -> None:
    (project / "corpus" / "c.txt").write_bytes(b"caf\xe9, in Latin-1\n")
    result = run(write(project, 'text("corpus/*.txt", tokenizer="tokenizer.json")'), project / "r")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: data: `{project / 'corpus' / 'c.txt'}` is not UTF-8 text (byte 3): convert it to UTF-8\n"
    )


def test_processes_that_need_one_corpus_at_once_tokenize_it_once(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ranks of a machine start together: one tokenizes under the entry's lock, the other waits
    and reads its tokens (a lock per open file, so two threads stand in for two processes)."""
    monkeypatch.setenv("LAGDSL_CACHE", str(project / "cache"))
    tokenizer = Tokenizer.from_file(str(project / "tokenizer.json"))
    files = sorted((project / "corpus").glob("*.txt"))
    calls = []
    original = encode.write_tokens

    def slow(*args, **kwargs):  # long enough that the other arrives while it works
        calls.append(1)
        time.sleep(0.5)
        return original(*args, **kwargs)

    monkeypatch.setattr(encode, "write_tokens", slow)
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: encode.encode_corpus(files, tokenizer, progress=False), range(2)))
    assert len(calls) == 1 and sorted(e.cached for e in both) == [False, True]
    assert both[0].tokens.tolist() == both[1].tokens.tolist()


def test_a_file_system_without_file_locks_still_tokenizes_and_caches(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some NFS and Lustre mounts refuse `flock` (ENOLCK): the cache does without the lock (each
    process tokenizes into its own temporary folder, the first rename wins), never a traceback."""
    import errno
    import fcntl

    monkeypatch.setenv("LAGDSL_CACHE", str(project / "cache"))

    def no_locks(fd: object, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    tokenizer = Tokenizer.from_file(str(project / "tokenizer.json"))
    files = sorted((project / "corpus").glob("*.txt"))
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: encode.encode_corpus(files, tokenizer, progress=False), range(2)))
    assert both[0].tokens.tolist() == both[1].tokens.tolist() != []
    assert encode.encode_corpus(files, tokenizer, progress=False).cached
    assert [p.name for p in (project / "cache" / "tokens").iterdir() if p.name.endswith(".tmp")] == []


def test_a_damaged_cache_entry_is_tokenized_again(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAGDSL_CACHE", str(project / "cache"))
    tokenizer = Tokenizer.from_file(str(project / "tokenizer.json"))
    files = sorted((project / "corpus").glob("*.txt"))
    expected = encode.encode_corpus(files, tokenizer, progress=False).tokens.tolist()
    (entry,) = (project / "cache" / "tokens").glob("*/tokens.bin")
    with entry.open("r+b") as stream:  # cut short, as a full disk or a crash of another tool would
        stream.truncate(entry.stat().st_size // 2)
    again = encode.encode_corpus(files, tokenizer, progress=False)
    assert not again.cached and again.tokens.tolist() == expected
    assert encode.encode_corpus(files, tokenizer, progress=False).cached


def test_a_file_edited_in_place_with_its_mtime_put_back_is_tokenized_again(project: Path) -> None:
    """`touch -r`, `rsync -t` and `cp -p` put the modification time back: the same size and mtime
    once served the old tokens from the cache (and a resume took them for the data it began with)."""
    file = project / "corpus" / "edited.txt"
    file.write_text("alpha beta gamma\n" * 50)
    tokenizer = Tokenizer.from_file(str(project / "tokenizer.json"))
    first = encode.encode_corpus([file], tokenizer, progress=False)
    assert encode.encode_corpus([file], tokenizer, progress=False).cached  # unchanged: from the cache
    stat = file.stat()
    file.write_text("gamma alpha beta\n" * 50)  # the same size
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what `touch -r` does
    assert file.stat().st_size == stat.st_size and file.stat().st_mtime_ns == stat.st_mtime_ns
    again = encode.encode_corpus([file], tokenizer, progress=False)
    assert not again.cached and again.fingerprint != first.fingerprint
    assert again.tokens.tolist() != first.tokens.tolist()


def test_a_glob_through_link_loops_ends_and_reads_each_file_once(tmp_path: Path) -> None:
    """Two links back up the tree once hung `text("loop/**/*.txt")`; one read a file 41 times."""
    from lagdsl.lang.schedule import TextData
    from lagdsl.runtime.data.corpus import load_corpus, matching

    loop = tmp_path / "loop"
    (loop / "sub").mkdir(parents=True)
    (loop / "a.txt").write_text("alpha\n")
    (loop / "sub" / "b.txt").write_text("beta\n")
    (loop / ".hidden.txt").write_text("hidden\n")  # `*` skips it, as glob does
    (loop / "sub" / "up").symlink_to("..")
    (loop / "back").symlink_to("..")
    (loop / "alias.txt").symlink_to(loop / "a.txt")  # another name for a file already read
    assert [p.relative_to(tmp_path).as_posix() for p in matching(str(loop / "**" / "*.txt"))] == [
        "loop/a.txt",
        "loop/sub/b.txt",
    ]
    corpus = load_corpus(TextData(glob="loop/**/*.txt", val=0.5), tmp_path, progress=False)
    assert len(corpus.train) + len(corpus.val) == len("alpha\n") + len("beta\n") + 1  # one separator between


def test_a_tokenizer_with_gaps_in_its_ids_gets_a_vocabulary_its_largest_id_fits(project: Path) -> None:
    """`vocab=auto` once took the count of tokens, and an id past it was an IndexError at run time."""
    spec = json.loads((project / "tokenizer.json").read_text())
    spec["added_tokens"][0]["id"] = 900  # the end-of-text token, far past the 320 others
    spec["model"]["vocab"][spec["added_tokens"][0]["content"]] = 900
    (project / "sparse.json").write_text(json.dumps(spec))
    path = write(project, 'text("corpus/*.txt", tokenizer="sparse.json")')
    checked = load(path)
    assert checked.schedule is not None and checked.schedule.model.vocab == 901
    result = run(path, project / "sparse-run")
    assert result.exit_code == 0, result.output


def test_a_token_file_edited_past_its_first_mebibyte_has_another_fingerprint(tmp_path: Path) -> None:
    """`tokens(...)` once hashed only the first 2^20 tokens: an edit further on was the same data to
    a resume. Now its first and last MiB and 1,024 blocks between are hashed, with its length."""
    from lagdsl.lang.schedule import TokensData
    from lagdsl.runtime.data.corpus import load_corpus

    tokens = np.random.default_rng(0).integers(0, 256, size=3_000_000, dtype=np.uint16)
    tokens.tofile(tmp_path / "train.bin")
    tokens[:100_000].tofile(tmp_path / "val.bin")
    spec = TokensData(train="train.bin", val="val.bin")
    first = load_corpus(spec, tmp_path, progress=False)
    tokens[-10] += 1  # near the end, far past the first 2^20 tokens
    tokens.tofile(tmp_path / "train.bin")
    second = load_corpus(spec, tmp_path, progress=False)
    assert second.fingerprint != first.fingerprint
    assert first.earlier == second.earlier  # what earlier versions computed: blind to that edit


def test_the_first_run_on_a_corpus_says_what_tokenizing_does(project: Path) -> None:
    """It once tokenized in silence: a line names the files, their size and the token that ends each
    document; another gives the counts and the rate (plain lines: a log file keeps them)."""
    path = write(project, 'text("corpus/*.txt", tokenizer="tokenizer.json")')
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(project / "loud"), "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    size = sum(p.stat().st_size for p in (project / "corpus").glob("*.txt")) / 1e6
    assert (
        f"tokenizing 2 files ({size:,.1f} MB) once into the token cache; each document ends with "
        "`<|endoftext|>` (id 0)" in lines
    )
    done = next(line for line in lines if line.startswith("tokenized "))
    tokens = len(
        encode.encode_corpus(
            sorted((project / "corpus").glob("*.txt")),
            Tokenizer.from_file(str(project / "tokenizer.json")),
            progress=False,
        ).tokens
    )
    assert done.startswith(f"tokenized 2 documents, {tokens:,} tokens in ") and done.endswith(" tokens/s)")
    again = CliRunner().invoke(main, ["run", str(path), "--out", str(project / "again"), "--max-steps", "1"])
    assert "tokenizing" not in again.stderr  # from the cache: nothing to say
