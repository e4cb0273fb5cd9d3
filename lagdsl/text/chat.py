"""What `lagdsl sample` needs of an instruct model's folder: the tokens that end its turn, and its
chat template. No torch here.

A Hugging Face checkpoint says where generation stops in `generation_config.json`
(`eos_token_id`: one id or a list, such as Qwen's `<|im_end|>` and `<|endoftext|>`) and names its
end-of-sequence token in `tokenizer_config.json` (`eos_token`); the chat template is
`chat_template.jinja` or `tokenizer_config.json`'s `chat_template` (a string, or a list of named
templates, `default` first). The template is rendered as transformers renders it: Jinja in a
sandbox, with `messages`, `add_generation_prompt` and the special tokens by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"


class ChatError(Exception):
    """A chat template that cannot be found or rendered; the message is one line for the user."""


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _ids(value: object) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


def end_ids(folder: Path | None, vocab: Mapping[str, int], eos: int | None) -> set[int]:
    """The ids that end generation: the tokenizer's end of sequence (`eos`), and where the model came
    from a Hugging Face folder (its copy in the run, `folder`), every `eos_token_id` of its
    `generation_config.json` and the token its `tokenizer_config.json` names `eos_token`."""
    ends = set() if eos is None else {eos}
    if folder is None:
        return ends
    ends.update(_ids(_json(folder / GENERATION_CONFIG).get("eos_token_id")))
    token = _token(_json(folder / TOKENIZER_CONFIG).get("eos_token"))
    if token is not None and token in vocab:
        ends.add(vocab[token])
    return ends


def _token(value: object) -> str | None:
    """A special token as `tokenizer_config.json` writes it: a string, or `{"content": ...}`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def template(folder: Path | None) -> str:
    """The chat template of the folder (`chat_template.jinja`, else `tokenizer_config.json`'s);
    ChatError naming where it looked when there is none."""
    if folder is not None:
        path = folder / TEMPLATE_FILE
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ChatError(f"`{path}` cannot be read: {error}") from None
        found = _json(folder / TOKENIZER_CONFIG).get("chat_template")
        if isinstance(found, list):  # named templates: the default one
            found = next((t.get("template") for t in found if isinstance(t, dict) and t.get("name") == "default"), None)
        if isinstance(found, str):
            return found
    where = f"`{folder / TEMPLATE_FILE}` or `{folder / TOKENIZER_CONFIG}`" if folder is not None else "the run"
    raise ChatError(f"this model has no chat template (looked in {where}): sample without --chat")


def render(text: str, messages: Iterable[Mapping[str, str]], folder: Path | None) -> str:
    """The chat template `text` rendered for `messages`, ready for the assistant's turn."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ChatError(f"the chat template refused the messages: {message}")

    config = _json(folder / TOKENIZER_CONFIG) if folder is not None else {}
    special = {key: _token(config.get(key)) for key in ("bos_token", "eos_token", "pad_token", "unk_token")}
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    environment.globals["raise_exception"] = raise_exception
    try:
        compiled = environment.from_string(text)
        return compiled.render(messages=list(messages), add_generation_prompt=True, **special)
    except TemplateError as error:
        raise ChatError(f"the chat template cannot be rendered: {error}") from None
