r"""Lead-lag cross-correlation of a pair's returns. Pure: numpy only.

For lags :math:`k = -L .. L` (bars):

.. math::

    \rho(k) = \mathrm{corr}(r^y_t,\ r^x_{t-k})

over the bars where both are defined, with :math:`r` the one-bar log returns.
A peak at :math:`k > 0` means ``x`` moves first and ``y`` follows ``k`` bars
later (x leads); :math:`k < 0` means y leads; :math:`k = 0` neither. Uses
every bar given (a whole-sample statistic, not causal per bar).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from quantlab.errors import ConfigError, InsufficientData

__all__ = ["LeadLagResult", "lead_lag"]


@dataclasses.dataclass(frozen=True)
class LeadLagResult:
    """Cross-correlations of returns by lag.

    Attributes
    ----------
    lags : int array, bars, ``-max_lag .. max_lag``.
    corr : correlation :math:`\\rho(k)` at each lag.
    best_lag : lag of the largest :math:`|\\rho|` (bars; > 0: x leads).
    best_corr : :math:`\\rho` there.
    leader : ``"x"``, ``"y"`` or None (best lag 0).
    nobs : returns used at lag 0.
    """

    lags: np.ndarray
    corr: np.ndarray
    best_lag: int
    best_corr: float
    leader: str | None
    nobs: int

    def summary(self) -> dict:
        return {"best_lag": self.best_lag, "best_corr": self.best_corr, "leader": self.leader,
                "nobs": self.nobs}


def lead_lag(y, x, *, max_lag: int = 20, log_returns: bool = True) -> LeadLagResult:
    """Which leg leads, at which lag (bars).

    Parameters
    ----------
    y, x : array_like
        Prices of the two legs, aligned on time (one value per bar).
    max_lag : int
        Largest lag tried either way, bars (>= 1).
    log_returns : bool
        Correlate one-bar log returns (default); False: simple differences.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(1).normal(scale=1e-3, size=5001)
    >>> x = 100 * np.exp(np.cumsum(r))
    >>> y = 50 * np.exp(np.cumsum(np.r_[np.zeros(3), r[:-3]]))   # y follows x 3 bars later
    >>> res = lead_lag(y, x, max_lag=10)
    >>> res.best_lag, res.leader, round(res.best_corr, 3)
    (3, 'x', 1.0)
    """
    if isinstance(max_lag, bool) or not isinstance(max_lag, (int, np.integer)) or max_lag < 1:
        raise ConfigError("max_lag", max_lag, "an integer number of bars >= 1")
    ya, xa = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    if ya.shape != xa.shape or ya.ndim != 1:
        raise ConfigError("x", f"shape {xa.shape}", f"a 1-D array shaped like y {ya.shape}")
    if log_returns:
        with np.errstate(invalid="ignore", divide="ignore"):
            ry, rx = np.diff(np.log(ya)), np.diff(np.log(xa))
    else:
        ry, rx = np.diff(ya), np.diff(xa)
    n = ry.size
    if n < 2 * max_lag + 10:
        raise InsufficientData(f"lead-lag (max_lag={max_lag})", 2 * max_lag + 11, n + 1)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(lags.size, np.nan)
    for i, k in enumerate(lags):
        a, b = (ry[k:], rx[:n - k]) if k >= 0 else (ry[:n + k], rx[-k:])
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        if a.size > 2:
            da, db = a - a.mean(), b - b.mean()
            den = math.sqrt(float(da @ da) * float(db @ db))
            corr[i] = float(da @ db) / den if den > 0 else np.nan
    if not np.isfinite(corr).any():
        raise ConfigError("y", "constant prices", "legs whose prices move")
    best = int(np.nanargmax(np.abs(corr)))
    k = int(lags[best])
    return LeadLagResult(lags=lags, corr=corr, best_lag=k, best_corr=float(corr[best]),
                         leader="x" if k > 0 else "y" if k < 0 else None,
                         nobs=int(np.count_nonzero(np.isfinite(ry) & np.isfinite(rx))))
