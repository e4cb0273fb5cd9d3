"""The training state and its files: how the model, optimizer and scaler are built and what a
checkpoint saves (`train_state`: `Device`, `Recipe`, `TrainState`, `snapshot`/`restore`/`fork`),
AdamW for weights held in bf16 (`optimizers`), the generators every draw is seeded from
(`seeds`), one-file checkpoints (`checkpoint`), the sharded checkpoint folders of
`torch.distributed.checkpoint` (`dcp`), and a finished run's model opened again (`trained`).

Imports the model, the families, the operators, `runtime.distributed` and `runtime.data`; never
the engine or the run."""
