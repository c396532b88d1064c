"""Adapter between the UI and :mod:`quantlab.analytics` (the one implementation
of every statistic). The UI never computes a statistic itself; this module
only maps names and shapes.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["make_state", "adf_table", "relationship_health"]


def make_state(spec: Any, hedge: str) -> Any:
    """A live pair state (``update(t, y, x)``, ``peek(y, x)``) for ``spec``
    with hedge method ``hedge`` (a key of :data:`quantlab.ui.pipeline.HEDGES`)."""
    from quantlab.analytics import LivePairState

    return LivePairState(window=spec.window, hedge=hedge)


def adf_table(y: np.ndarray, x: np.ndarray, spread: np.ndarray) -> list[tuple[str, Any]]:
    """Results of the ADF test on the spread and the Engle-Granger
    cointegration test on the prices, as ``(title, result)`` pairs; the
    result objects render themselves (``_repr_html_``)."""
    from quantlab import analytics

    out = []
    s = spread[np.isfinite(spread)]
    out.append(("ADF on the spread", analytics.adf(s)))
    ok = np.isfinite(y) & np.isfinite(x)
    out.append(("Engle-Granger cointegration", analytics.coint(y[ok], x[ok])))
    return out


def relationship_health(corr: float, coint_p: float, half_life: float, window: int) -> tuple[str, str]:
    """A one-word verdict and its reason from correlation, cointegration
    p-value and half-life (bars). NaN inputs give ``("unknown", why)``."""
    if any(isinstance(v, float) and math.isnan(v) for v in (corr, coint_p)):
        return "unknown", "not enough bars yet"
    reasons = []
    if coint_p < 0.05:
        reasons.append(f"cointegrated (p={coint_p:.3f})")
    else:
        reasons.append(f"no cointegration evidence (p={coint_p:.3f})")
    reasons.append(f"corr {corr:.2f}")
    if half_life is not None and math.isfinite(half_life) and half_life > 0:
        reasons.append(f"half-life {half_life:.1f} bars")
    if coint_p < 0.05 and corr > 0.5 and math.isfinite(half_life) and 0 < half_life < window:
        return "healthy", ", ".join(reasons)
    if coint_p > 0.2 or corr < 0.2:
        return "broken", ", ".join(reasons)
    return "weak", ", ".join(reasons)
