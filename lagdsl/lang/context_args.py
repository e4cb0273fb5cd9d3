"""Context operators: how the rotary positions change when the context grows from c to c' (the
factor f = c' / c). The checker and the runtime compute the grown model's positions with the same
function (`grown_positions`); no torch here.

- `keep`: the positions unchanged, longer sequences only (sequence-length warmup);
- `theta(base=B)`: the base set to B (Code Llama's and Qwen2's adjusted base frequency);
- `pi`: every frequency divided by f (position interpolation, arXiv 2306.15595; `rope_type: linear`);
- `ntk`: the base multiplied by f^(d / (d - 2)) (NTK-aware scaling; d the head size);
- `yarn(factor, beta_fast, beta_slow)`: YaRN (arXiv 2309.00071): low frequencies divided by f, high
  ones kept, a ramp between, cos and sin times 0.1 ln f + 1 (`rope_type: yarn`);
- `llama3(low_freq_factor, high_freq_factor)`: Llama 3.1's: long wavelengths divided by f, short
  ones kept, a smooth blend between (`rope_type: llama3`).

A method applied again compounds: `pi` twice divides by both factors, `yarn` and `llama3` multiply
their factor and keep the context the frequencies were first trained at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Literal

from pydantic import Field

from lagdsl.lang.operator_args import NoArgs, OperatorArgs
from lagdsl.lang.rope import Rope, yarn_mscale
from lagdsl.lang.schedule import AUTO, Positions


class ThetaArgs(OperatorArgs):
    """The new rotary base."""

    base: Annotated[float, Field(gt=0.0, description="`base` is the new rotary base, such as `500000`")]


class YarnArgs(OperatorArgs):
    """YaRN's parameters."""

    factor: Annotated[
        float,
        Field(gt=1.0, description="`factor` is the scaling factor, such as `4` (`auto`: new context / old)"),
        AUTO,
    ] = 0.0
    beta_fast: Annotated[
        float, Field(gt=0.0, description="`beta_fast`: rotations in the old context from which a frequency is kept")
    ] = 32.0
    beta_slow: Annotated[
        float, Field(gt=0.0, description="`beta_slow`: rotations below which a frequency is divided by the factor")
    ] = 1.0


class Llama3Args(OperatorArgs):
    """Llama 3.1's parameters."""

    low_freq_factor: Annotated[
        float, Field(gt=0.0, description="`low_freq_factor`: wavelengths beyond old context / this are scaled")
    ] = 1.0
    high_freq_factor: Annotated[
        float, Field(gt=0.0, description="`high_freq_factor`: wavelengths below old context / this are kept")
    ] = 4.0


#: (name, keeps the function at the old lengths, description): the catalogue's entries
OPERATORS: tuple[tuple[str, Literal["yes", "no"], str], ...] = (
    ("keep", "yes", "the same positions, longer sequences (sequence-length warmup)"),
    ("theta", "no", "a new rotary base (Code Llama's, Qwen2's adjusted base frequency)"),
    ("pi", "no", "every rotary frequency divided by new context / old (position interpolation)"),
    ("ntk", "no", "the rotary base raised by the factor^(d / (d - 2)) (NTK-aware scaling)"),
    ("yarn", "no", "YaRN: low frequencies divided by the factor, high ones kept, and an attention temperature"),
    ("llama3", "no", "Llama 3.1's scaling: long wavelengths divided by the factor, short ones kept"),
)
ARGS: dict[str, type[OperatorArgs]] = {
    "keep": NoArgs, "theta": ThetaArgs, "pi": NoArgs, "ntk": NoArgs, "yarn": YarnArgs, "llama3": Llama3Args,
}  # fmt: skip


def grown_positions(
    method: str, args: dict[str, object], before: Positions, context: int, head_size: int
) -> Positions | str:
    """The positions after `method` grows the context of a model with `before` to `context`, or why
    it cannot (a method that does not compose with the model's)."""
    rope, theta, factor = before.rope, before.theta, context / before.context
    if method == "keep":
        return before.model_copy(update={"context": context})
    kind = rope.kind if rope is not None else "default"
    if kind in ("dynamic", "longrope"):
        return f"the model's `{kind}` positions follow the sequence's length: grow its context with `keep`"
    if method == "theta":
        parsed = ThetaArgs.model_validate(args)
        return Positions(context=context, theta=parsed.base, rope=rope)
    if method == "ntk":
        if rope is not None:
            return f"NTK-aware scaling changes the base of unscaled positions, and the model's are `{kind}`"
        return Positions(context=context, theta=theta * factor ** (head_size / (head_size - 2)), rope=None)
    if method == "pi":
        if kind not in ("default", "linear"):
            return f"position interpolation divides unscaled or linear positions, and the model's are `{kind}`"
        earlier = rope.factor if rope is not None else 1.0
        return Positions(context=context, theta=theta, rope=Rope("linear", earlier * factor))
    if kind not in ("default", method):
        return f"`{method}` scales unscaled positions or its own, and the model's are `{kind}`"
    original = rope.original if rope is not None else before.context
    earlier = rope.factor if rope is not None else 1.0
    if method == "yarn":
        yarn = YarnArgs.model_validate({k: v for k, v in args.items() if v != "auto"})
        total = earlier * (yarn.factor if yarn.factor else factor)
        scaled = Rope(
            "yarn", total, original, beta_fast=yarn.beta_fast, beta_slow=yarn.beta_slow,
            truncate=rope.truncate if rope is not None else True, attention_factor=yarn_mscale(total),
        )  # fmt: skip
        return Positions(context=context, theta=theta, rope=scaled)
    llama = Llama3Args.model_validate(args)
    if llama.low_freq_factor >= llama.high_freq_factor:
        return "`low_freq_factor` must be smaller than `high_freq_factor`"
    scaled = Rope("llama3", earlier * factor, original, llama.low_freq_factor, llama.high_freq_factor)
    return Positions(context=context, theta=theta, rope=scaled)


def positions_plan(method: str) -> Callable[[Positions, int, Mapping[str, object], int], Positions | str]:
    """The catalogue's `positions` of the context operator `method`."""

    def plan(before: Positions, context: int, args: Mapping[str, object], head_size: int) -> Positions | str:
        return grown_positions(method, dict(args), before, context, head_size)

    return plan
