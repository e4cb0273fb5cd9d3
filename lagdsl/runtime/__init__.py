"""The runtime: a checked schedule's plan lowered to a program and trained (imports torch; the
front, `lagdsl.lang` and `lagdsl.plan`, does not).

Its packages, from the bottom up; a package imports only those below it (a test checks it, and
that no two files import each other, type-only imports included):

- `data`: the corpus (`corpus`: read, tokenized, cached, split) and its deterministic batches
  (`batches`: windows of (seed, step), a rank's share of the global batch).
- `distributed`: several ranks (`world`: the process group, collectives, teams of ranks; `moves`:
  a sharded state moved shard by shard, never gathered).
- `records`: what a run writes as it goes (`metrics`: the event log; `segments`: its sittings;
  `trackers`: TensorBoard and Weights & Biases).
- `state`: the training state and its files (`train_state`: `Recipe`, `TrainState`, snapshots;
  `seeds`; `checkpoint`: one-file checkpoints; `dcp`: sharded checkpoint folders; `trained`: a
  finished run's model, tokenizer and source opened again).
- `training`: the program and the engine that interprets it (`program`: the plan lowered to
  instructions; `engine`; `probes`; `growing`: a growth carried out on the state; `parts`: frozen
  parts and LR scales; `losses`; `evaluation`; `sync`: how a step shares gradients under each
  parallelism; `agreement`: what the ranks agree on at each step).
- `run`: a run's lifetime (`start`: a run started or resumed; `execution`: the program driven to
  its end, stop or failure, checkpoints written; `inputs`: data and device opened; `lock`: the run
  directory held; `progress`: the terminal display).
"""
