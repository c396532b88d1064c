"""A scan's tests in the trial ledger (:mod:`quantlab.ledger`).

Every pair x ordering the scan tested is one trial of kind ``scan``: a *test*
trial (its Engle-Granger p-value, no Sharpe), so it counts in the family's
:math:`m` for Benjamini-Yekutieli and never in the deflated Sharpe's
:math:`N`. Workers never write the ledger: they return each pair's formation
range and :func:`quantlab.ledger.bars_digest` with the figures, and the client
records the whole scan in one transaction (:meth:`Ledger.record_many`) after
the results are back. Recording the same scan again on the same bars counts
nothing new (identity = kind, ordering, market, timeframe, test params, data).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["formation_provenance", "scan_trials", "record_scan", "PROVENANCE_KEYS"]

#: Private per-row keys the workers add when the client asked for provenance.
PROVENANCE_KEYS = ("_data_hash", "_start_ms", "_end_ms")

_YX_STATS = ("hedge_ratio", "intercept", "spread_mean", "spread_std", "half_life_bars", "hurst",
             "n_crossings", "ssd", "corr_returns", "johansen_trace", "liquidity_quote",
             "illiquid", "n_trades", "total_return", "sharpe", "max_drawdown_return",
             "eval_n_bars", "eval_adf_pvalue", "eval_half_life_bars", "eval_total_return",
             "eval_sharpe")


def formation_provenance(bars: Any) -> dict[str, Any]:
    """Worker side: the formation bars' digest and range ``[first open, last
    open + one bar)`` (ms UTC) for a ledger trial."""
    from quantlab.ledger import bars_digest

    if bars.open_ms is None or len(bars) == 0:
        return {"_data_hash": "", "_start_ms": 0, "_end_ms": 0}
    index = pd.DatetimeIndex(pd.to_datetime(bars.open_ms, unit="ms", utc=True), name="open_time")
    frame = pd.DataFrame({"y_open": bars.y_open, "y_close": bars.y_close, "x_open": bars.x_open,
                          "x_close": bars.x_close}, index=index)
    step = int(round(bars.bar_seconds * 1000))
    return {"_data_hash": bars_digest(frame), "_start_ms": int(bars.open_ms[0]),
            "_end_ms": int(bars.open_ms[-1]) + step}


def _clean(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v


def scan_trials(table: pd.DataFrame, provenance: Sequence[dict], *, timeframe: str,
                market: str | None, settings: Any, source: str | None) -> list:
    """Two :class:`quantlab.ledger.Trial` per tested pair (``y~x`` and ``x~y``),
    in table order; pairs whose test did not run (an ``error`` on formation) are
    not trials."""
    from quantlab.ledger import Trial

    params = {"test": "engle-granger", "trend": "c", "eg_lags": int(settings.eg_lags),
              "autolag": None}
    out = []
    for row, prov in zip(table.to_dict("records"), provenance):
        if not prov.get("_data_hash"):
            continue
        common = {"coint_pvalue": _clean(row["coint_pvalue"]),
                  "coint_pvalue_bh_adj": _clean(row["coint_pvalue_bh_adj"]),
                  "coint_pvalue_by_adj": _clean(row["coint_pvalue_by_adj"]),
                  "coint_crit_5": _clean(row["coint_crit_5"]), "selected": bool(row["selected"])}
        for tag, (y, x) in (("yx", (row["y"], row["x"])), ("xy", (row["x"], row["y"]))):
            p = row[f"coint_pvalue_{tag}"]
            if not (isinstance(p, float) and math.isfinite(p)):
                continue
            stats = {"coint_stat": _clean(row[f"coint_stat_{tag}"]),
                     "coint_pvalue_ordering": float(p),
                     f"coint_pvalue_{tag}_by_adj": _clean(row[f"coint_pvalue_{tag}_by_adj"]),
                     **common}
            if tag == "yx":  # the hedge and spread figures are those of y on x
                stats.update({k: _clean(row[k]) for k in _YX_STATS})
            out.append(Trial(kind="scan", y=y, x=x, timeframe=timeframe,
                             start_ms=prov["_start_ms"], end_ms=prov["_end_ms"],
                             data_hash=prov["_data_hash"], params=params, market=market,
                             n_bars=int(row["n_bars"]), stats=stats, pvalue=float(p),
                             source=source))
    return out


def record_scan(ledger: Any, trials: list) -> dict[str, Any]:
    """Record the trials in ``ledger`` (a :class:`quantlab.ledger.Ledger` or a
    path) in one transaction; returns ``{"ledger", "trials", "new"}``."""
    from quantlab.ledger import Ledger

    if isinstance(ledger, Ledger):
        refs = ledger.record_many(trials)
        path = str(ledger.path) if hasattr(ledger, "path") else repr(ledger)
    else:
        with Ledger(Path(ledger)) as led:
            refs = led.record_many(trials)
        path = str(ledger)
    return {"ledger": path, "trials": len(refs), "new": sum(r.is_new for r in refs)}
