"""The `gpt` model family (torch)."""

from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT

__all__ = ["GPT", "GPTConfig"]
