"""Several ranks: the world torchrun describes and its collectives (`world`), and a sharded
training state moved without gathering it (`moves`: meta-device skeletons, adopted shards, one
tensor at a time for width growth).

Imports the model, the operators and `runtime.data` (a rank's share of a batch); never the
training state, which builds on it (`moves.Builder` is what a move needs of it)."""
