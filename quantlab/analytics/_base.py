"""Plumbing shared by :mod:`quantlab.analytics`: the result base class, input
coercion and argument checks. Pure (numpy/pandas only)."""
from __future__ import annotations

import dataclasses
import html
import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, InsufficientData

#: Hedge-ratio methods, canonical spelling: the one every user-facing place shows
#: (CLI, notebooks, UI, reports; tests/test_packaging.py checks it). ``_`` and ``-``
#: are interchangeable on input (``rolling_ols`` is read as ``rolling-ols``).
HEDGE_METHODS = ("rolling-ols", "ols", "huber", "theil-sen", "kalman")
_HEDGE_ALIASES = {"rolling": "rolling-ols", "theilsen": "theil-sen", "theil": "theil-sen",
                  "rlm": "huber", "static": "ols"}

#: Relative variance below which a window is treated as constant (beta, z and
#: corr are NaN rather than a division by a rounding residue). Shared by the batch
#: and the live path so that both make the same call.
TINY_REL_VAR = 1e-20


def normalise_hedge(hedge: object) -> str:
    """Canonical hedge-method name: ``"rolling_ols"`` -> ``"rolling-ols"``.

    >>> normalise_hedge("Theil_Sen")
    'theil-sen'
    """
    if not isinstance(hedge, str):
        raise ConfigError("hedge", hedge, "one of " + ", ".join(HEDGE_METHODS))
    key = hedge.strip().lower().replace("_", "-").replace(" ", "-")
    key = _HEDGE_ALIASES.get(key, key)
    if key not in HEDGE_METHODS:
        raise ConfigError("hedge", hedge, "one of " + ", ".join(HEDGE_METHODS)
                          + " ('_' or '-' both accepted)")
    return key


def check_int(field: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` or :class:`ConfigError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral,)) or value < minimum:
        raise ConfigError(field, value, f"an integer >= {minimum}")
    return int(value)


def check_positive(field: str, value: object, *, upper: float | None = None) -> float:
    """``value`` as a finite float > 0 (and < ``upper``) or :class:`ConfigError`."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(field, value, "a number > 0") from None
    if not (math.isfinite(v) and v > 0 and (upper is None or v < upper)):
        raise ConfigError(field, value, "a number > 0" + (f" and < {upper}" if upper else ""))
    return v


def as_float_array(values: Any, name: str) -> np.ndarray:
    """1-D float64 copy-free view of ``values`` (array, Series, list)."""
    if isinstance(values, pd.DataFrame):
        raise ConfigError(name, "a DataFrame", "one column of numbers (array or Series)")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(name, type(values).__name__, "numbers") from exc
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 0 or 1 in arr.shape else arr
    if arr.ndim != 1:
        raise ConfigError(name, f"shape {arr.shape}", "a 1-D sequence of numbers")
    return arr


def as_pair(y: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long float arrays."""
    ya, xa = as_float_array(y, "y"), as_float_array(x, "x")
    if ya.size != xa.size:
        raise ConfigError("x", f"{xa.size} values", f"{ya.size} values, as many as y")
    return ya, xa


def finite_pair(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows where both legs are finite (for whole-sample statistics)."""
    ok = np.isfinite(y) & np.isfinite(x)
    if ok.all():
        return y, x
    return y[ok], x[ok]


def to_log(values: np.ndarray, name: str) -> np.ndarray:
    """Natural log of prices; non-positive prices are a :class:`ConfigError`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        bad = values <= 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(name, f"{values[i]!r} at row {i}", "prices > 0 for log_prices=True")
    with np.errstate(invalid="ignore"):
        return np.log(values)


def require(what: str, required: int, got: int) -> None:
    """Raise :class:`InsufficientData` when ``got < required``."""
    if got < required:
        raise InsufficientData(what, int(required), int(got))


def plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, tuples/arrays -> lists, for ``summary()``."""
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        if len(value) > 8:
            return f"[{len(value)} values]"
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


class Result:
    """Base of the frozen result dataclasses.

    Every result shares one vocabulary where it applies: ``stat``, ``pvalue``,
    ``critical_values`` (keyed ``"1%"``, ``"5%"``, ``"10%"``), ``nobs``,
    ``lags``. Array-valued fields are declared with ``metadata={"array": True}``
    and left out of :meth:`summary`.
    """

    _title = "Result"

    def summary(self) -> dict:
        """Scalar fields as a plain dict (JSON-friendly numbers; ``inf`` kept)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.metadata.get("array"):
                continue
            out[f.name] = plain(getattr(self, f.name))
        return out

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(_fmt(v))}</td></tr>"
                       for k, v in self.summary().items())
        return (f"<table><caption style='text-align:left'><b>{html.escape(self._title)}"
                f"</b></caption>{rows}</table>")


def crit_dict(values: Any, keys: tuple[str, ...] = ("1%", "5%", "10%")) -> dict[str, float]:
    """Critical values in the shared ``{"1%": .., "5%": .., "10%": ..}`` shape."""
    vals = [float(v) for v in np.asarray(values, dtype=float).ravel()]
    return dict(zip(keys, vals))
