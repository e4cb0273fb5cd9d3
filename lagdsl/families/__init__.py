"""Hugging Face model families: how a checkpoint folder's `config.json` and tensor names map onto
lagdsl's one model, and back. No torch here: the checker reads configs through these adapters.

A family is an adapter in a module of its own in this package (`llama.py`, `qwen2.py`, ...), each
defining `FAMILY`, a `Family` (mergekit's architecture files and litgpt's weight maps are the
model: a family is data and a few small functions, not a subclass of the model). Modules are
found by listing the package, so a new family is a new file and its test, nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from lagdsl.families.base import (
    CONFIG_FILE,
    INDEX_FILE,
    WEIGHTS_FILE,
    Arch,
    Family,
    FamilyError,
    read_config,
)
from lagdsl.lang.schedule import MixtureSpec

__all__ = [
    "CONFIG_FILE",
    "INDEX_FILE",
    "WEIGHTS_FILE",
    "Arch",
    "Family",
    "FamilyError",
    "families",
    "family_named",
    "family_of",
    "mixture_family",
    "read_config",
]


@cache
def families() -> tuple[Family, ...]:
    """Every family this version supports, in the order of their modules' names."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, Family):
            found.append(family)
    return tuple(found)


def family_named(name: str) -> Family:
    """The family whose adapter is called `name` (`llama`, `qwen2`, ...)."""
    for family in families():
        if family.name == name:
            return family
    raise FamilyError(f"no model family `{name}` in this version of lagdsl")


def mixture_family(family: Family, moe: MixtureSpec) -> Family:
    """The family a model grown from one of `family` goes out as once it is the mixture `moe`: the
    same, or a dense family's mixture-of-experts sibling (Qwen3 -> Qwen3-MoE, Qwen2 -> Qwen2-MoE,
    Llama and Mistral -> Mixtral); FamilyError (one line) where that family cannot hold `moe`."""
    if family.experts is None:
        if family.moe_sibling is None:
            raise FamilyError(f"`{family.architecture}` has no mixture-of-experts sibling to hold a mixture")
        family = family_named(family.moe_sibling)
    experts = family.experts
    assert experts is not None
    if moe.dense and not experts.sparse_layers:
        raise FamilyError(f"`{family.architecture}` has a mixture in every layer, and this model has dense ones")
    if moe.shared and not experts.shared:
        raise FamilyError(f"`{family.architecture}` has no shared expert, and this mixture has one")
    if not moe.renormalize and experts.renormalize_key is None:
        raise FamilyError(
            f"`{family.architecture}` always renormalizes the top-k weights, and this mixture does not "
            "(`renormalize=off`)"
        )
    return family


def family_of(config: dict[str, object]) -> Family:
    """The family of a `config.json`, by its `architectures` entry (else its `model_type`)."""
    names = config.get("architectures")
    architectures = [a for a in names if isinstance(a, str)] if isinstance(names, list) else []
    for family in families():
        if any(a == family.architecture for a in architectures):
            return family
    if not architectures:
        for family in families():
            if config.get("model_type") == family.model_type:
                return family
    found = ", ".join(f"`{a}`" for a in architectures) or f"model type `{config.get('model_type')}`"
    supported = ", ".join(f"`{f.architecture}`" for f in families())
    raise FamilyError(f"{found} is not a model family lagdsl can grow: it reads {supported}", "architectures")
