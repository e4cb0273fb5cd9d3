"""The commands that take a trained model out of lagdsl: export, sample; and tokenize, which
prepares a corpus's tokens ahead of a run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lagdsl.cli import EXIT_USAGE, SEED, FiniteFloat, _device, main
from lagdsl.cli.complete import run_dirs

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from lagdsl.runtime.state.trained import Trained


def _open(ctx: click.Context, run_dir: Path, checkpoint: Path | None, tokenizer: Path | None) -> Trained:
    from lagdsl.runtime.state.trained import TrainedError, open_trained

    try:
        return open_trained(run_dir, checkpoint, tokenizer, say=lambda m: click.echo(f"note: {m}", err=True))
    except TrainedError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)


_RUN_DIR = click.argument(
    "run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), shell_complete=run_dirs
)
_CHECKPOINT = click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="A checkpoint of the run (checkpoints/step-...) instead of its final model.",
)
_TOKENIZER = click.option(
    "--tokenizer",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A tokenizer.json to use instead of the run's (needed for `tokens` data trained without one).",
)


@main.command(
    epilog="""\b
Examples:
  lagdsl export runs/quickstart-20261129-120000 -o hf/quickstart
  lagdsl export runs/big --checkpoint runs/big/checkpoints/step-000004000-000012.pt --dtype bf16

Then, in Python: transformers.AutoModelForCausalLM.from_pretrained("hf/quickstart")
(and AutoTokenizer). Exit codes: 0 ok, 2 not a run, a damaged model, or a model LLaMA cannot hold."""
)
@_RUN_DIR
@_CHECKPOINT
@_TOKENIZER
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder [RUN_DIR/hf].")
@click.option("--force", is_flag=True, help="Replace a non-empty folder that is not an earlier export.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.pass_context
def export(
    ctx: click.Context,
    run_dir: Path,
    checkpoint: Path | None,
    tokenizer: Path | None,
    output: Path | None,
    dtype: str,
    force: bool,
) -> None:
    """Write a run's model as a Hugging Face folder (safetensors, config, tokenizer): the family of
    the checkpoint it began from, or LlamaForCausalLM for a model from scratch."""
    from lagdsl.artifacts.folders import FolderError, replacing
    from lagdsl.model.export import ExportError, export_model, export_pretrained, is_export, record_export
    from lagdsl.runtime.state.trained import SOURCE_DIR, TrainedError, pretrained_folder, pretrained_source
    from lagdsl.text import tokenizer as tok

    trained = _open(ctx, run_dir, checkpoint, tokenizer)
    out = output or run_dir / "hf"
    try:
        source = pretrained_source(run_dir)
    except TrainedError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)
    encoder = _tokenizer_of(ctx, trained, run_dir) if source is None else None
    if encoder is not None and tok.vocab_size(encoder) > trained.config.vocab:
        click.echo(
            f"error: the tokenizer has {tok.vocab_size(encoder):,} tokens, more than the model's vocabulary "
            f"of {trained.config.vocab:,}: give the tokenizer the run trained with",
            err=True,
        )
        ctx.exit(EXIT_USAGE)
    began_from = pretrained_folder(run_dir)
    if began_from is not None and out.resolve() == began_from.resolve():
        click.echo(
            f"error: `{out}` is the pretrained folder `{run_dir}` began from: an export there would replace the "
            "weights this run (and every run from it) resumes from; choose another folder",
            err=True,
        )
        ctx.exit(EXIT_USAGE)
    try:
        with replacing(out, command="export", ours=is_export, force=force, allowed_in_run=run_dir / "hf") as folder:
            if source is not None:
                family, source_config = source
                files = export_pretrained(
                    trained.state, trained.config, family, source_config, run_dir / SOURCE_DIR, folder, dtype
                )
            else:
                assert encoder is not None
                special = tok.special_ids(encoder)
                files = export_model(trained.state, trained.config, encoder.to_str(), folder, dtype, special)
            record_export(folder, run_dir, str(trained.source))
    except FolderError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)
    except ExportError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)
    except OSError as error:
        click.echo(f"error: cannot write `{out}`: {error.strerror or error}", err=True)
        ctx.exit(EXIT_USAGE)
    config = trained.config
    kind = f"{source[0].architecture}, " if source is not None else ""
    click.echo(
        f"exported {trained.source} ({kind}{config.depth} layers, width {config.width}, {dtype}): "
        f"{len(files)} files in {out}",
        err=True,
    )
    click.echo(str(out))


def _tokenizer_of(ctx: click.Context, trained: Trained, run_dir: Path) -> Tokenizer:
    """The run's tokenizer, or one line and exit 2 for a run of token ids that names none."""
    if trained.tokenizer_json is None:
        click.echo(
            f"error: `{run_dir}` trained on token ids with no tokenizer: give the one that made them, "
            "`--tokenizer tokenizer.json`",
            err=True,
        )
        ctx.exit(EXIT_USAGE)
    from tokenizers import Tokenizer

    return Tokenizer.from_str(trained.tokenizer_json)


@main.command(
    epilog="""\b
Examples:
  lagdsl sample runs/quickstart-20261129-120000 --prompt "def main(" --max-new-tokens 200
  lagdsl sample runs/q --prompt-file prompt.txt --temperature 0.8 --top-k 50 --num-samples 3 --seed 1
  lagdsl sample runs/q --prompt "import os" --temperature 0     (greedy)

Generated text streams to stdout as it comes (after the prompt); notes go to stderr.
Exit codes: 0 ok, 2 not a run, a damaged model or bad options."""
)
@_RUN_DIR
@_CHECKPOINT
@_TOKENIZER
@click.option("--prompt", help="The text to continue [a newline].")
@click.option("--prompt-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Read it here.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--temperature", type=FiniteFloat(min=0), default=1.0, show_default=True, help="0: always the likeliest.")
@click.option("--top-k", type=click.IntRange(min=1), help="Draw among the K likeliest tokens.")
@click.option("--top-p", type=FiniteFloat(0, 1, min_open=True), help="Draw from the smallest set of mass P.")
@click.option(
    "--seed", type=SEED, default=0, show_default=True,
    help="The same seed gives the same text.",
)  # fmt: skip
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--device", callback=_device, help="auto, cpu, cuda or cuda:N [the run's device].")
@click.option("--no-prompt", "hide_prompt", is_flag=True, help="Print only the generated text.")
@click.option(
    "--chat", is_flag=True,
    help="Give the prompt as a user's turn in the model's chat template (an instruct checkpoint's).",
)  # fmt: skip
@click.pass_context
def sample(
    ctx: click.Context,
    run_dir: Path,
    checkpoint: Path | None,
    tokenizer: Path | None,
    prompt: str | None,
    prompt_file: Path | None,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int,
    num_samples: int,
    device: str | None,
    hide_prompt: bool,
    chat: bool,
) -> None:
    """Generate text from a run's model, streaming it (a key/value cache keeps each token cheap)."""
    if prompt is not None and prompt_file is not None:
        raise click.UsageError("give --prompt or --prompt-file, not both")
    raw: bytes | None = None  # a prompt file that is not UTF-8: bytes, for a byte-level run
    if prompt_file is not None:
        try:
            raw = prompt_file.read_bytes()
            prompt, raw = raw.decode("utf-8"), None
        except OSError as error:
            click.echo(f"error: cannot read `{prompt_file}`: {error.strerror or error}", err=True)
            ctx.exit(EXIT_USAGE)
        except UnicodeDecodeError as error:
            prompt = None
            bad = f"`{prompt_file}` is not UTF-8 text (byte {error.start})"
    text = prompt or "\n"
    from lagdsl.runtime.state.trained import SOURCE_DIR
    from lagdsl.text import chat as chats

    source = run_dir / SOURCE_DIR if (run_dir / SOURCE_DIR).is_dir() else None  # a pretrained model's files
    if chat:
        if raw is not None:
            click.echo(f"error: {bad}: a chat prompt is text", err=True)
            ctx.exit(EXIT_USAGE)
        try:
            text = chats.render(chats.template(source), [{"role": "user", "content": text}], source)
        except chats.ChatError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_USAGE)
    import torch

    from lagdsl.model.generate import Generator, Sampling
    from lagdsl.text import tokenizer as tok

    trained = _open(ctx, run_dir, checkpoint, tokenizer)
    encoder = _tokenizer_of(ctx, trained, run_dir)
    the_device = _sample_device(run_dir, device)
    if the_device.startswith("cuda") and not torch.cuda.is_available():
        click.echo(f"error: device `{the_device}` is not available here: no CUDA device (use --device cpu)", err=True)
        ctx.exit(EXIT_USAGE)
    if raw is not None and not tok.is_byte_level(encoder):
        click.echo(f"error: {bad}, and this run's tokenizer reads text: convert the prompt to UTF-8", err=True)
        ctx.exit(EXIT_USAGE)
    ids = list(raw) if raw is not None else encoder.encode(text, add_special_tokens=False).ids
    if not ids:
        raise click.UsageError("the prompt encodes to no tokens: give some text")
    if len(ids) > trained.config.context:
        click.echo(
            f"note: the prompt is {len(ids)} tokens, longer than the context of {trained.config.context}: "
            f"its first {len(ids) - trained.config.context} are left out",
            err=True,
        )
    # the model's end of turn too (an instruct model's `<|im_end|>`, from its generation config)
    stop = chats.end_ids(source, encoder.get_vocab(with_added_tokens=True), tok.special_ids(encoder)["eos_token_id"])
    generator = Generator(trained.model(the_device))
    draws = torch.Generator(device=the_device).manual_seed(seed)
    sampling = Sampling(temperature, top_k, top_p)
    for index in range(num_samples):
        if index:
            click.echo("\n" + "-" * 40)
        if not hide_prompt and raw is not None:
            sys.stdout.flush()
            sys.stdout.buffer.write(raw)  # the prompt's own bytes, as a byte-level run reads them
            sys.stdout.buffer.flush()
        elif not hide_prompt:
            click.echo(text, nl=False)
        tokens = generator.stream(ids, max_new_tokens, sampling, draws, stop)
        for piece in tok.stream(encoder, tokens):
            sys.stdout.write(piece)
            sys.stdout.flush()
        click.echo()


def _sample_device(run_dir: Path, device: str | None) -> str:
    """The device asked for, else the run's own (the CPU when the run's GPU is not here)."""
    import torch

    if device is None:
        try:
            device = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("resolved_device", "cpu")
        except (OSError, ValueError):
            device = "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            click.echo(f"note: the run trained on {device}, and there is no GPU here: sampling on the CPU", err=True)
            device = "cpu"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@main.command(
    epilog="""\b
Examples:
  lagdsl tokenize data/*.txt --tokenizer tokenizer.json -o data/tok
  lagdsl tokenize shards/*.jsonl --field text --tokenizer tokenizer.json -o data/tok --val 0.01

then, in the schedule: data tokens("data/tok/train.bin", val="data/tok/val.bin",
dtype=uint16, tokenizer="data/tok/tokenizer.json")   (the line is printed)
Exit codes: 0 ok, 2 unreadable input, a bad tokenizer or a line without the field."""
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tokenizer", "tokenizer_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder.")
@click.option("--field", help="JSON Lines, Parquet: the field (column) that holds each document's text [text].")
@click.option("--val", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.05, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--force", is_flag=True, help="Replace a non-empty folder that is not an earlier tokenize output.")
@click.pass_context
def tokenize(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    tokenizer_file: Path,
    output: Path,
    field: str | None,
    val: float,
    quiet: bool,
    force: bool,
) -> None:
    """Tokenize text, JSON Lines or Parquet files ahead of a run, into the files `tokens(...)` reads."""
    from lagdsl.text import encode
    from lagdsl.text import tokenizer as tok

    files = list(inputs)
    kinds: set[encode.Kind] = {
        "jsonl" if p.suffix == ".jsonl" else "parquet" if p.suffix == ".parquet" else "text" for p in files
    }
    if len(kinds) > 1:
        raise click.UsageError("give text files, .jsonl files or .parquet files, not several kinds in one corpus")
    (kind,) = kinds
    if kind != "text" and field is None:
        field = "text"
    if kind == "text" and field is not None:
        raise click.UsageError("--field is for .jsonl and .parquet files")
    from lagdsl.artifacts.folders import FolderError, only, replacing

    ours = only(lambda name: name in encode.TOKENIZE_FILES)
    try:
        tokenizer = tok.load(tokenizer_file)
        with replacing(output, command="tokenize", ours=ours, force=force) as folder:
            meta = encode.tokenize_to(files, tokenizer, field, folder, val, progress=not quiet, kind=kind)
    except (tok.TokenizerError, encode.EncodeError, FolderError) as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(EXIT_USAGE)
    click.echo(
        f"{meta['documents']:,} documents, {meta['tokens']:,} tokens ({meta['train']:,} train, {meta['val']:,} "
        f"validation) in {output}",
        err=True,
    )
    click.echo(
        f'data tokens("{output / "train.bin"}", val="{output / "val.bin"}", dtype={meta["dtype"]}, '
        f'tokenizer="{output / "tokenizer.json"}")'
    )
