"""Adapter between the UI and :mod:`quantlab.analytics`, the one implementation
of every statistic. The UI never computes a statistic itself: this module only
picks functions, maps names and shapes, and words the results.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["make_state", "tests_now", "health_now", "leg_summary", "readiness_lines",
           "NAMES"]

#: Output names of the analytics -> words shown to the user.
NAMES = {"zscore": "z-score", "corr": "correlation", "half_life": "half-life",
         "beta": "hedge ratio", "spread": "spread"}


def make_state(spec: Any, hedge: str, **options: Any) -> Any:
    """A :class:`quantlab.analytics.LivePairState` for ``spec`` with hedge
    method ``hedge`` (a key of :data:`quantlab.ui.pipeline.HEDGES`; ``_`` and
    ``-`` are both accepted). Health is evaluated separately on a slow cadence
    (:func:`health_now`), so the state keeps no health buffer."""
    from quantlab.analytics import LivePairState

    return LivePairState(window=spec.window, hedge=hedge, health_window=None, **options)


def readiness_lines(state: Any, fallback_have: int, window: int) -> list[str]:
    """"z-score needs 119 bars, have 12" style lines from the state's own
    requirements (never a guess); a fake state without ``shortfall`` gets the
    window rule."""
    shortfall = getattr(state, "shortfall", None)
    if callable(shortfall):
        lines = []
        for line in shortfall():
            name, _, rest = line.partition(" needs ")
            lines.append(f"{NAMES.get(name, name)} needs {rest}")
        return lines
    if fallback_have < window:
        return [f"z-score needs {window} bars, have {fallback_have}"]
    return []


def tests_now(y: np.ndarray, x: np.ndarray, spread: np.ndarray) -> list[tuple[str, Any]]:
    """ADF on the spread and Engle-Granger (y on x) on the closes, as
    ``(title, result)``; results render themselves (``_repr_html_``) and carry
    ``stat``, ``pvalue``, ``critical_values``, ``nobs``, ``lags``."""
    from quantlab import analytics

    s = spread[np.isfinite(spread)]
    ok = np.isfinite(y) & np.isfinite(x)
    return [("ADF on the spread", analytics.adf(s)),
            ("Engle-Granger cointegration (y on x)", analytics.engle_granger(y[ok], x[ok]))]


def health_now(y: np.ndarray, x: np.ndarray, window: int) -> dict:
    """Relationship health (:func:`quantlab.analytics.health_at`) on the
    retained bars: EG p-value, half-life, beta drift, ``verdict`` and
    ``reason``. The evaluation window is ``min(20 * window, bars - window)``."""
    from quantlab.analytics import health_at

    n = int(np.count_nonzero(np.isfinite(y) & np.isfinite(x)))
    h = min(20 * window, n - window)
    if h < 20:
        return {"verdict": "insufficient data",
                "reason": f"needs {20 + window} bars, have {n}",
                "coint_pvalue": math.nan, "half_life": math.nan, "beta_drift": math.nan}
    ok = np.isfinite(y) & np.isfinite(x)
    return health_at(y[ok], x[ok], window=h, beta_window=window)


def leg_summary(close: np.ndarray, window: int, bar_seconds: float) -> dict:
    """Last price, last-bar and window log returns, volatility per bar and
    annualised, from :func:`quantlab.analytics.leg_stats` over the last
    ``window`` returns. NaN when there are not enough bars."""
    from quantlab.analytics import leg_stats, log_returns

    close = np.asarray(close, dtype=float)
    out = {"last": float(close[-1]) if close.size else math.nan, "ret_bar": math.nan,
           "ret_window": math.nan, "vol_bar": math.nan, "vol_annual": math.nan}
    if close.size >= 2:
        r = log_returns(close[-2:])
        out["ret_bar"] = float(r[-1])
    if close.size >= window + 1:
        st = leg_stats(close[-(window + 1):], bar_seconds=bar_seconds)
        out["ret_window"] = st.total_log_return
        out["vol_bar"] = st.vol_per_bar
        out["vol_annual"] = st.vol_annualised if st.vol_annualised is not None else math.nan
    return out
