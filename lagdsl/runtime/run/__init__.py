"""A run's lifetime: a run directory started or resumed (`start`), the program driven to its end,
a stop or a failure with checkpoints written (`execution`), data and device opened (`inputs`),
the directory held against a second process (`lock`), and the terminal display (`progress`).

The top of the runtime: imports any package below it; the CLI and the lag study
(`lagdsl.analysis.study`) import it."""
