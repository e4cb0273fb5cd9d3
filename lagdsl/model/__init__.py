"""The model (torch): one decoder-only Transformer for every family lagdsl reads, configured by
`GPTConfig` (`config`), built from the layers in `layers` (norms, attention, MLPs) and the rotary
tables in `positions`, assembled in `gpt`; Hugging Face folders in and out (`hub`, `export`), and
generation with a key/value cache (`generate`).

Imports `lagdsl.lang` (the sizes the plan computes too) and `lagdsl.families` (the adapters); never
the operators or the runtime, which build on it."""

from lagdsl.model.config import GPTConfig
from lagdsl.model.gpt import GPT

__all__ = ["GPT", "GPTConfig"]
