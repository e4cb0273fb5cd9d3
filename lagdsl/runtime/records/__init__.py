"""What a run writes as it goes: the event log `metrics.jsonl` (`metrics`), the sittings of a
run resumed across processes (`segments`), and the external trackers that mirror the events
(`trackers`: TensorBoard, Weights & Biases).

Imports `lagdsl.artifacts` (the schemas of what is written) and nothing else of the runtime."""
