"""Process settings read from the environment: positive numbers, each with its variable and a dataclass default."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def positive_numbers_from_env(cls: Any, names: Mapping[str, str], env: Mapping[str, str]) -> dict[str, Any]:
    """The fields of dataclass `cls` that `env` sets (`names`: field → variable), parsed as the field's int or
    float. An empty variable keeps the default. Raises ValueError naming the variable on a bad value."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = names.get(f.name)
        raw = env.get(name) if name else None
        if name is None or raw is None or raw.strip() == "":
            continue
        kind = int if f.type in ("int", int) else float
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r}: expected a positive {kind.__name__}") from None
        if value <= 0:
            raise ValueError(f"{name}={raw!r}: expected a positive {kind.__name__}")
        values[f.name] = value
    return values
