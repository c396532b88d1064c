"""Settings helpers shared by every module. A leaf: imports nothing from quantlab
but :mod:`quantlab.errors`.

Settings are frozen, keyword-only dataclasses validated in ``__post_init__``;
durations are seconds with ``_s`` in the name. :func:`settings_from_dict`
builds one from a plain mapping and rejects unknown keys with the list of
valid ones.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from quantlab.errors import ConfigError

# The markets and stream kinds of the whole package: the one list (schema, binance,
# store, replay, synthetic, archive, reports and the CLI choices read these). Here,
# in a stdlib-only leaf, so the CLI parser can use them without importing pandas.
MARKETS = ("spot", "usdm")
KINDS = ("trade", "aggTrade")
#: how the UI names each market (keys: exactly :data:`MARKETS`)
MARKET_LABELS = {"spot": "Spot", "usdm": "USD-M futures"}
assert tuple(MARKET_LABELS) == MARKETS

T = TypeVar("T")


def settings_from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
    """Build the settings dataclass ``cls`` from ``values``.

    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True, kw_only=True)
    ... class S:
    ...     window: int = 60
    >>> settings_from_dict(S, {"window": 30})
    S(window=30)
    >>> settings_from_dict(S, {"windw": 30})
    Traceback (most recent call last):
    ...
    quantlab.errors.ConfigError: windw: expected one of: window, got 30
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(key, value, "one of: " + ", ".join(names))
    return cls(**values)


def require_positive(field: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` > 0 (or >= 0)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ConfigError(field, value, "a number >= 0" if allow_zero else "a number > 0")


def require_choice(field: str, value: object, choices: tuple) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(field, value, "one of " + ", ".join(repr(c) for c in choices))
