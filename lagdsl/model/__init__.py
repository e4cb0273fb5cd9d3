"""The `gpt` model family (torch)."""

from lagdsl.model.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
