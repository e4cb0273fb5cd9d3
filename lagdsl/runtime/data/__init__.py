"""Training data: the corpus (`corpus`) and its deterministic batches (`batches`).

Imports the front (`lagdsl.lang`) and `lagdsl.text`; nothing else of the runtime."""
