"""A pretrained checkpoint's folder read by the checker: its `config.json` through its family's
adapter, its weights' presence (no weight is opened) and lagdsl's limits on its sizes. Torch-free."""

from __future__ import annotations

from pathlib import Path

from lagdsl.families import INDEX_FILE, WEIGHTS_FILE, Arch, Family, FamilyError, family_of, read_config
from lagdsl.families.base import TOKENIZER_FILE
from lagdsl.lang.check.draft import Draft
from lagdsl.lang.schedule import MAX_DEPTH, MAX_HEADS, MAX_VOCAB, MAX_WIDTH
from lagdsl.lang.source import Span

_PRETRAINED_HELP = (
    "give the folder of a Hugging Face checkpoint (`config.json` and safetensors) of a Llama, Mistral, "
    "Qwen2 or Qwen3 model"
)


def read_checkpoint(draft: Draft, folder: Path, span: Span) -> tuple[Family, Arch] | None:
    """The family and architecture of the checkpoint in `folder`; None, with the diagnostic
    reported at `span`, where it cannot be used (E0309) or is beyond lagdsl's limits (E0302)."""

    def problem(message: str, label: str, help: str) -> None:
        draft.report("E0309", message, span, label, help)

    try:
        config = read_config(folder)
        family = family_of(config)
        arch = family.arch(config)
    except FamilyError as error:
        problem(str(error), "cannot use this checkpoint", _PRETRAINED_HELP)
        return None
    if not (folder / WEIGHTS_FILE).is_file() and not (folder / INDEX_FILE).is_file():
        problem(
            f"`{folder}` has no `{WEIGHTS_FILE}` or `{INDEX_FILE}`",
            "no weights",
            "lagdsl reads safetensors, never pickles: save the model with `save_pretrained(folder)`",
        )
        return None
    limits = (  # the config keys the schedule's model takes, and lagdsl's limits for them
        ("num_hidden_layers", arch.depth, MAX_DEPTH),
        ("hidden_size", arch.width, MAX_WIDTH),
        ("num_attention_heads", arch.heads, MAX_HEADS),
        ("num_key_value_heads", arch.kv_heads, MAX_HEADS),
        ("head_dim", arch.head_dim, MAX_WIDTH),
        ("intermediate_size", arch.hidden, MAX_WIDTH * 16),
        ("vocab_size", arch.vocab, MAX_VOCAB),
    )
    for key, value, limit in limits:
        if value > limit:
            draft.report(
                "E0302",
                f"`{key}` {value:,} in `{folder / 'config.json'}` is beyond lagdsl's limit of {limit:,}",
                span,
                "a checkpoint larger than lagdsl grows",
                "lagdsl's limits are listed in docs/language.md (Limits)",
            )
            return None
    return family, arch


def no_tokenizer(draft: Draft, folder: Path, span: Span) -> None:
    """A checkpoint folder without `tokenizer.json` while the data names no tokenizer: the data would
    be read as bytes, ids the model never learnt (a SentencePiece-only folder, as many Llama and
    Mistral fine-tunes ship, has `tokenizer.model` alone)."""
    sentencepiece = (
        " (it has `tokenizer.model`, a SentencePiece model)" if (folder / "tokenizer.model").is_file() else ""
    )
    draft.report(
        "E0309",
        f"`{folder}` has no `{TOKENIZER_FILE}`{sentencepiece}: the data would be read as bytes, not as the "
        "model's tokens",
        span,
        "no tokenizer for the data",
        "write one with `AutoTokenizer.from_pretrained(folder).save_pretrained(folder)` (transformers), or name "
        'the model\'s tokenizer in the data: `tokenizer="..."`',
    )
