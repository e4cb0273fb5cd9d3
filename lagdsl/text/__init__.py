"""Text to tokens and back: tokenizers (`tokenizer`) and tokenized corpora with their cache
(`encode`). Imports no torch: `lagdsl validate` reads a tokenizer's size, `lagdsl tokenize` runs
without a model."""
