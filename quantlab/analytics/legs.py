r"""Per-leg price statistics: log returns, realised volatility, volume, trade intensity.

Annualisation uses 365 days (crypto trades every day):

.. math:: N_{year} = \frac{365 \times 86400}{\Delta}, \qquad
          \sigma_{annual} = \sigma_{bar} \sqrt{N_{year}}

with :math:`\Delta` the bar length in seconds and :math:`\sigma_{bar}` the
standard deviation (ddof 1) of one-bar log returns.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from quantlab.analytics._base import Result, as_float_array, check_positive
from quantlab.analytics.rolling import log_returns, rolling_mean_std

__all__ = ["LegStats", "leg_stats", "realised_vol", "bars_per_year", "infer_bar_seconds",
           "SECONDS_PER_YEAR"]

SECONDS_PER_YEAR = 365 * 86400


def bars_per_year(bar_seconds: float) -> float:
    """Bars in a 365-day year: ``365 * 86400 / bar_seconds``.

    >>> bars_per_year(60)
    525600.0
    """
    return SECONDS_PER_YEAR / check_positive("bar_seconds", bar_seconds)


def infer_bar_seconds(index) -> float | None:
    """Bar length in seconds from a DatetimeIndex (median spacing), else None."""
    if isinstance(index, pd.DatetimeIndex) and len(index) > 1:
        diffs = np.diff(index.asi8)
        diffs = diffs[diffs > 0]
        if diffs.size:
            unit = {"ns": 1e9, "us": 1e6, "ms": 1e3, "s": 1.0}.get(index.unit, 1e9)
            return float(np.median(diffs)) / unit
    return None


def realised_vol(close, window: int, *, bar_seconds: float | None = None) -> np.ndarray:
    r"""Rolling realised volatility of log returns over the trailing ``window``
    returns (bars :math:`t-w \ldots t`, causal).

    Annualised (365 days) when ``bar_seconds`` is given, else per bar (a
    fraction: 0.001 = 0.1 % per bar).
    """
    r = log_returns(close)
    _, sd = rolling_mean_std(r, window)
    if bar_seconds is None:
        return sd
    return sd * math.sqrt(bars_per_year(bar_seconds))


@dataclasses.dataclass(frozen=True)
class LegStats(Result):
    """Whole-sample statistics of one leg.

    Attributes
    ----------
    nobs : bars. bar_seconds : bar length (s), None if unknown.
    first, last : first and last finite close. total_log_return : ln(last/first).
    mean_log_return : per bar. vol_per_bar : std (ddof 1) of one-bar log returns.
    vol_annualised : vol_per_bar * sqrt(365 days of bars); None without bar_seconds.
    volume_total, volume_per_bar : base units (None without volume).
    trades_total, trades_per_bar, trades_per_second : from the trade count
        (None without it; per second needs bar_seconds).
    """

    symbol: str | None
    nobs: int
    bar_seconds: float | None
    first: float
    last: float
    total_log_return: float
    mean_log_return: float
    vol_per_bar: float
    vol_annualised: float | None
    volume_total: float | None
    volume_per_bar: float | None
    trades_total: float | None
    trades_per_bar: float | None
    trades_per_second: float | None
    _title = "Leg statistics"


def leg_stats(close, *, volume=None, trade_count=None, bar_seconds: float | None = None,
              symbol: str | None = None) -> LegStats:
    """Statistics of one leg over all its bars (in-sample summary).

    Examples
    --------
    >>> s = leg_stats([100.0, 101.0, 100.5, 102.0], trade_count=[10, 20, 30, 40], bar_seconds=60)
    >>> s.trades_per_bar, round(s.trades_per_second, 3)
    (25.0, 0.417)
    """
    c = as_float_array(close, "close")
    fin = c[np.isfinite(c)]
    r = log_returns(c)
    r = r[np.isfinite(r)]
    vol = float(np.std(r, ddof=1)) if r.size > 1 else math.nan
    first = float(fin[0]) if fin.size else math.nan
    last = float(fin[-1]) if fin.size else math.nan
    vann = vol * math.sqrt(bars_per_year(bar_seconds)) if bar_seconds else None
    vol_tot = vol_bar = tr_tot = tr_bar = tr_sec = None
    if volume is not None:
        v = as_float_array(volume, "volume")
        vol_tot = float(np.nansum(v))
        vol_bar = vol_tot / max(c.size, 1)
    if trade_count is not None:
        k = as_float_array(trade_count, "trade_count")
        tr_tot = float(np.nansum(k))
        tr_bar = tr_tot / max(c.size, 1)
        tr_sec = tr_bar / bar_seconds if bar_seconds else None
    return LegStats(symbol=symbol, nobs=int(c.size), bar_seconds=bar_seconds, first=first,
                    last=last, total_log_return=math.log(last / first) if first > 0 else math.nan,
                    mean_log_return=float(r.mean()) if r.size else math.nan, vol_per_bar=vol,
                    vol_annualised=vann, volume_total=vol_tot, volume_per_bar=vol_bar,
                    trades_total=tr_tot, trades_per_bar=tr_bar, trades_per_second=tr_sec)
