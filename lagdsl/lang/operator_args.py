"""The arguments of the built-in growth operators, as pydantic models: each field's type, default,
range and help in one place, which the checker, `lagdsl ops` and the operators read. A plugin
declares its own as a subclass of `OperatorArgs`. No torch here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lagdsl.lang.schedule import MixtureSpec


class OperatorArgs(BaseModel):
    """An operator's arguments: a plugin declares its own as a subclass, with `Annotated` fields
    (type, default, range and help in one place; `lagdsl ops` and the checker read them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NoArgs(OperatorArgs):
    """No arguments."""


class LayersArgs(OperatorArgs):
    """The layers of the grown model, as ranges of the current ones."""

    ranges: Annotated[
        tuple[tuple[int, int], ...],
        Field(
            description="half-open ranges of the current layers, in order, such as `[[0, 24], [8, 32]]` "
            "(SOLAR: 32 -> 48 layers); their lengths add up to the new depth"
        ),
    ]


class CopyArgs(OperatorArgs):
    """The arguments of operators that copy weights."""

    noise: Annotated[
        float,
        Field(ge=0.0, description="`noise` is a multiple of each copied tensor's standard deviation, such as `0.01`"),
    ] = 0.0


class CloneArgs(OperatorArgs):
    """The arguments of HyperCloning."""

    noise: Annotated[
        float,
        Field(
            ge=0.0,
            description="`noise` is a multiple of each weight's standard deviation, added so that it sums to zero "
            "over the copies the weight reads (the function stays; the copies stop being equal), such as `0.1`; "
            "with `0` the copies stay equal through training",
        ),
    ] = 0.1


class MixtureArgs(OperatorArgs):
    """The settings of the mixture an experts operator builds."""

    top_k: Annotated[int, Field(ge=1, description="`top_k` is how many experts each token uses, such as `2`")] = 2
    renormalize: Annotated[
        bool,
        Field(
            description="`renormalize=on` divides a token's top-k weights by their sum (Mixtral; Qwen's "
            "`norm_topk_prob`), `off` keeps the softmax's values (Qwen2-MoE's and Qwen3-MoE's default)"
        ),
    ] = True
    balance: Annotated[
        float, Field(ge=0.0, description="`balance` is the load-balancing loss's coefficient, such as `0.01`")
    ] = 0.01
    z_loss: Annotated[
        float, Field(ge=0.0, description="`z_loss` is the router z-loss's coefficient, such as `0.001`")
    ] = 0.001


class UpcycleArgs(MixtureArgs):
    """How a dense MLP becomes a mixture of experts."""

    granularity: Annotated[
        int,
        Field(
            ge=1,
            description="`granularity=G` cuts each copy of the MLP into G experts of 1/G its hidden size, such as `2`",
        ),
    ] = 1
    router: Annotated[
        Literal["random", "zero"],
        Field(description="`router=random` draws the router from N(0, 0.02), `router=zero` starts it at zero"),
    ] = "random"
    noise: Annotated[
        float,
        Field(ge=0.0, description="`noise` is a multiple of each expert weight's standard deviation, such as `0.01`"),
    ] = 0.0
    drop: Annotated[
        float,
        Field(
            ge=0.0,
            le=1.0,
            description="`drop` is the share of each expert's hidden units drawn again (Drop-Upcycling), such as `0.5`",
        ),
    ] = 0.0
    every: Annotated[
        int,
        Field(
            ge=1,
            description="`every=2` turns every second layer's MLP into a mixture (layers 1, 3, ...: Qwen-MoE's "
            "`decoder_sparse_step`), the others stay dense",
        ),
    ] = 1

    def mixture(self, experts: int, hidden: int, depth: int) -> MixtureSpec | str:
        """The mixture of `experts` experts these arguments make of the dense MLPs of `hidden` units
        of a model of `depth` layers, or why they cannot: what the checker sizes and the operator
        builds."""
        granularity, top_k = self.granularity, self.top_k
        if self.every > depth:
            return f"with `every={self.every}` none of the {depth} layers becomes a mixture"
        if experts % granularity:
            return f"with `granularity={granularity}` the experts are a multiple of {granularity}, not {experts}"
        if hidden % granularity:
            return f"the MLP's hidden size {hidden} does not cut into {granularity} equal experts"
        if top_k % granularity:
            return f"with `granularity={granularity}` a token uses whole copies: `top_k` a multiple of {granularity}"
        if top_k > experts:
            return f"`top_k={top_k}` is more than the {experts} experts"
        return MixtureSpec(
            experts=experts, top_k=top_k, hidden=hidden // granularity, renormalize=self.renormalize,
            balance=self.balance, z_loss=self.z_loss, dense=tuple(i for i in range(depth) if (i + 1) % self.every),
        )  # fmt: skip

    def preserves(self) -> Literal["yes", "no", "approx"]:
        """Whether upcycling with these arguments keeps the function (see `lagdsl.ops.experts`)."""
        if self.noise or self.drop:
            return "no"
        return "yes" if self.renormalize or self.router == "zero" else "approx"


class DuplicateArgs(OperatorArgs):
    """How a mixture's experts are copied."""

    noise: Annotated[
        float,
        Field(ge=0.0, description="`noise` is a multiple of each expert weight's standard deviation, such as `0.01`"),
    ] = 0.0
