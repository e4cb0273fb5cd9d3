"""The runtime: lowering a plan to a program, the engine that interprets it, its training state,
data, checkpoints, metrics and the run directory. Imports torch (the front does not)."""
