"""Load a report's bars and say exactly what was used (I/O: reads the store,
files or archive, and installed package metadata).

:func:`load_report_data` calls :func:`quantlab.pairs.load_pair_bars`, the loader
the CLI and notebooks use, and returns the provenance the report's header
shows: symbols, market, source, range, bars, missing bars and how they were
handled, the store's recorded feed gaps in range, and package versions.
"""
from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import numpy as np
import pandas as pd

from quantlab.reports.parameters import ReportParameters, lookback_seconds

__all__ = ["load_report_data", "package_versions"]

_PACKAGES = ("quantlab", "numpy", "pandas", "scipy", "statsmodels", "bokeh", "papermill",
             "nbconvert")


def package_versions() -> dict[str, str]:
    """Python and the installed versions of the packages a report depends on."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _closed_bars(aligned: pd.DataFrame) -> pd.DataFrame:
    # The still-forming last bar is not final: research outputs use closed bars only.
    if "is_forming" in aligned and len(aligned) and bool(aligned["is_forming"].iloc[-1]):
        return aligned.iloc[:-1]
    return aligned


def _store_gaps(db: str, symbols: tuple[str, str], market: str | None,
                first_ms: int, last_ms: int) -> list[dict]:
    from quantlab.store import TickStore

    rows: list[dict] = []
    with TickStore(db, read_only=True) as store:
        for sym in symbols:
            g = store.gaps(sym, market=market)
            for rec in g.to_dict("records"):
                before, after = rec.get("before_ms"), rec.get("after_ms")
                lo = before if before is not pd.NA and before is not None else None
                hi = after if after is not pd.NA and after is not None else None
                if (hi is not None and hi < first_ms) or (lo is not None and lo > last_ms):
                    continue
                rows.append({k: (None if v is pd.NA else v) for k, v in rec.items()
                             if k in ("symbol", "first_missing_id", "last_missing_id", "reason",
                                      "status", "filled_count", "unfilled_count", "before_ms",
                                      "after_ms")})
    return rows


def load_report_data(params: ReportParameters) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The aligned, closed bars of the pair and their provenance.

    ``lookback`` keeps the last ``lookback`` before ``end`` (or before the last
    bar) of what the source holds.
    """
    from quantlab import bars as bars_mod
    from quantlab.pairs import load_pair_bars

    aligned = load_pair_bars(y=params.symbol_y, x=params.symbol_x, timeframe=params.timeframe,
                             market=params.market, start=params.start, end=params.end,
                             max_carry_bars=params.max_carry_bars, **params.source())
    aligned = _closed_bars(aligned)
    if params.lookback is not None and len(aligned):
        first = aligned.index[-1] - pd.Timedelta(seconds=lookback_seconds(params.lookback))
        aligned = aligned[aligned.index > first]
    step_ms = bars_mod.parse_timeframe(params.timeframe)
    t_ms = aligned.index.as_unit("ms").asi8
    n = len(aligned)
    grid = int((t_ms[-1] - t_ms[0]) // step_ms + 1) if n else 0
    holes = np.diff(t_ms) > step_ms if n > 1 else np.zeros(0, bool)
    carried = {leg: int(aligned[f"{leg}_carried"].sum()) if f"{leg}_carried" in aligned else 0
               for leg in ("y", "x")}
    prov: dict[str, Any] = {
        "pair": params.pair, "symbol_y": params.symbol_y, "symbol_x": params.symbol_x,
        "market": params.market or aligned.attrs.get("market") or "as stored",
        "timeframe": params.timeframe, "source": params.source(),
        "requested": {"start": params.start, "end": params.end, "lookback": params.lookback},
        "first_bar": aligned.index[0].isoformat() if n else None,
        "last_bar": aligned.index[-1].isoformat() if n else None,
        "n_bars": n, "grid_bars": grid, "missing_bars": grid - n,
        "holes": int(holes.sum()), "carried_bars": carried,
        "gap_policy": (f"a leg with no trade in a bar keeps its last close for up to "
                       f"{params.max_carry_bars} bars (carried); longer silences are gaps and their "
                       f"bars are left out (lines join across them; rolling windows count bars)"),
        "store_gaps": [], "versions": package_versions(),
    }
    if params.db_path and n:
        prov["store_gaps"] = _store_gaps(params.db_path, (params.symbol_y, params.symbol_x),
                                         params.market, int(t_ms[0]), int(t_ms[-1]))
    return aligned, prov
