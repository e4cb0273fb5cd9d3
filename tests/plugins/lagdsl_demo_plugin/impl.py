"""The demo plugin's operator, written as a layer plan for lagdsl's `grow_depth`."""

from lagdsl.ops.depth import Layer, grow_depth, keep


def repeat_top(model, optimizer, spec, generator):
    d = model.config.depth
    plan = keep(d) + [Layer(d - 1, copy=True)] * (spec.target - d)
    return grow_depth(model, optimizer, plan, generator, noise=float(spec.args.get("noise", 0.0)))
