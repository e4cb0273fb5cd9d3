"""A `config.json`'s values, each checked as it is read: a `FamilyError` (one line, naming the key)
where it is not one lagdsl can use. No torch here."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


class FamilyError(Exception):
    """A checkpoint lagdsl cannot read; the message is one line for the user, `key` the config key
    it is about (None: the folder or file)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def config_int(config: Mapping[str, Any], key: str, default: int | object | None = ...) -> Any:
    """A positive integer (`default` where the key is missing; None allowed where the default is None)."""
    value = config.get(key, default)
    if value is ...:
        raise FamilyError(f"`{key}` is missing", key)
    if value is None and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FamilyError(f"`{key}` must be a positive integer, found `{json.dumps(value)}`", key)
    return value


def config_float(config: Mapping[str, Any], key: str, default: float | None = None, within: str | None = None) -> float:
    """A positive, finite number (`default` where the key is missing); `within`: the object that
    holds it (`rope_parameters`), which the message and the error's key name."""
    value = config.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < math.inf:
        where = f"`{key}` in `{within}`" if within else f"`{key}`"
        raise FamilyError(f"{where} must be a positive number, found `{json.dumps(value)[:40]}`", within or key)
    return float(value)
