"""The training program and the engine that interprets it: the plan lowered to a flat tuple of
instructions (`program`), the engine (`engine`: train, evaluate, grow, probe), the probes
(`probes`, over the engine's narrow `Host` protocol), a growth carried out on the state
(`growing`), frozen parts and LR scales (`parts`), losses read without stalls (`losses`),
validation (`evaluation`), how a step shares gradients under each parallelism (`sync`) and what
the ranks agree on at each step (`agreement`).

Imports `runtime.state`, `runtime.records`, `runtime.distributed` and `runtime.data`; never
`runtime.run`."""
