"""Tokenizers: a Hugging Face `tokenizers` file given by the user, or bytes.

Byte data (`stdlib()`, `text(...)` without a tokenizer) has token i = byte i. `byte_level()` is that
tokenizer as a `tokenizers.Tokenizer` (a byte-level BPE with no merges), so that exports carry a
`tokenizer.json` that `transformers` loads, and sampling decodes bytes and tokens the same way.
Files are read locally; nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

BYTE_VOCAB = 256

#: Special tokens recognised by name, most common first: the end-of-text token separates
#: documents in a tokenized corpus and ends sampling; all three go into an export's config.
SPECIAL_NAMES: dict[str, tuple[str, ...]] = {
    "bos_token_id": ("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>", "[CLS]"),
    "eos_token_id": ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>", "[SEP]"),
    "pad_token_id": ("<pad>", "<|pad|>", "[PAD]"),
}


class TokenizerError(Exception):
    """A tokenizer file that cannot be used; the message is one line for the user."""


def _byte_to_char() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, which byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


@lru_cache(maxsize=1)
def _byte_level_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    chars = _byte_to_char()
    tokenizer = Tokenizer(models.BPE(vocab={chars[b]: b for b in range(BYTE_VOCAB)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer.to_str()


def byte_level() -> Tokenizer:
    """The tokenizer of byte data: token i is byte i, text round-trips."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_byte_level_json())


def byte_level_json() -> str:
    """`byte_level()` as the text of a `tokenizer.json`."""
    return _byte_level_json()


def is_byte_level(tokenizer: Tokenizer) -> bool:
    """Whether `tokenizer` is `byte_level()` (token i is byte i: any bytes are a text)."""
    return tokenizer.to_str() == byte_level().to_str()


def load(path: Path) -> Tokenizer:
    """The tokenizer in `path` (a `tokenizer.json` as `tokenizers` writes it)."""
    from tokenizers import Tokenizer

    if not path.is_file():
        problem = "does not exist" if not path.exists() else "is a folder, not a file"
        raise TokenizerError(f"tokenizer file `{path}` {problem}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises plain Exceptions for a file it cannot parse
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TokenizerError(
            f"`{path}` is not a tokenizer file ({reason}): give a `tokenizer.json` written by "
            "Hugging Face `tokenizers` (`Tokenizer.save`)"
        ) from None


def vocab_size(tokenizer: Tokenizer) -> int:
    """The size of an embedding that every id the tokenizer gives fits: its largest id + 1, added
    tokens included (more than its count of tokens where its ids leave gaps)."""
    ids = tokenizer.get_vocab(with_added_tokens=True).values()
    return max(int(tokenizer.get_vocab_size(with_added_tokens=True)), max(ids, default=-1) + 1)


def special_ids(tokenizer: Tokenizer) -> dict[str, int | None]:
    """`bos_token_id`, `eos_token_id`, `pad_token_id`: the ids of the tokenizer's special tokens of
    the common names (None where it has none)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return {key: next((vocab[n] for n in names if n in vocab), None) for key, names in SPECIAL_NAMES.items()}


def stream(tokenizer: Tokenizer, ids: Iterator[int]) -> Iterator[str]:
    """The text of `ids` piece by piece, as each token arrives: a piece is given once it decodes to
    whole characters (a byte of a character cut in two waits for the rest). Bytes that never make
    a character (a model's invalid UTF-8) come at the end, each maximal invalid run one U+FFFD, as
    `tokenizer.decode` gives them."""
    from tokenizers.decoders import DecodeStream

    decoder = DecodeStream(skip_special_tokens=False)
    waiting: list[int] = []  # the tokens since the last piece
    for token in ids:
        waiting.append(token)
        piece = decoder.step(tokenizer, token)
        if piece:
            waiting.clear()
            yield piece
    if waiting:
        yield tokenizer.decode(waiting, skip_special_tokens=False)
