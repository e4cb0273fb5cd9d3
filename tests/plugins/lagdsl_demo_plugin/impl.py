"""The demo plugin's operator: its layer plan, carried out by lagdsl's `grow_depth`."""

from lagdsl.ops.depth import grow_depth
from lagdsl_demo_plugin import repeat_top_layers


def repeat_top(model, optimizer, spec, generator):
    d = model.config.depth
    plan = repeat_top_layers(d, spec.target - d)
    return grow_depth(model, optimizer, plan, generator, noise=float(spec.args.get("noise", 0.0)))
