"""Entry points over a pair: load it from the store or from files, run the
analytics or the backtest, write the outputs. Used by the CLI and by notebooks
(a papermill report in another process calls :func:`load_pair_bars` on the same
SQLite file the ingester writes, then the same pure analytics).

This module does I/O (reads the store and files, writes outputs); the
statistics live in the pure modules it calls.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, InsufficientData, UnknownSymbol

logger = logging.getLogger(__name__)


def parse_time_ms(value: str | None, field: str) -> int | None:
    """ISO-8601 (UTC when no offset) or epoch ms -> ms since epoch; None stays None.

    >>> parse_time_ms("2022-01-01", "start")
    1640995200000
    >>> parse_time_ms("2022-01-01T00:01:00+00:00", "start")
    1640995260000
    """
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(field, value, "an ISO-8601 time such as 2023-03-01 or 2023-03-01T12:00Z") from exc
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.tz_convert("UTC").value // 1_000_000)


def _leg_bars_from_loaded(loaded: Any, timeframe: str, start_ms: int | None,
                          end_ms: int | None) -> pd.DataFrame:
    from quantlab import bars

    if loaded.is_bars:
        frame = loaded.frame
        if start_ms is not None:
            frame = frame[frame.index >= pd.Timestamp(start_ms, unit="ms", tz="UTC")]
        if end_ms is not None:
            frame = frame[frame.index < pd.Timestamp(end_ms, unit="ms", tz="UTC")]
        if len(frame) >= 2:
            step = int((frame.index[1:] - frame.index[:-1]).min() / pd.Timedelta(milliseconds=1))
            if bars.parse_timeframe(timeframe) < step:
                raise ConfigError("timeframe", timeframe,
                                  f"at least the files' bar size ({step // 1000} s): bars cannot be split")
        return bars.aggregate_bars(frame, timeframe, start_ms=start_ms, end_ms=end_ms)
    return bars.resample_trades(loaded.frame, timeframe, start_ms=start_ms, end_ms=end_ms)


def load_pair_bars(*, y: str, x: str, timeframe: str = "1m", db: str | Path | None = None,
                   files: Sequence[str | Path] | None = None,
                   archive: str | Path | None = None, market: str | None = None,
                   start: str | int | None = None, end: str | int | None = None,
                   max_carry_bars: int = 5) -> pd.DataFrame:
    """Bars of two symbols aligned on time, from a tick store, files or a Parquet archive.

    Parameters
    ----------
    y, x : symbols of the dependent and independent legs.
    timeframe : bar size (``"1s"``, ``"1m"``, ``"5m"`` ...).
    db : SQLite file written by ``quantlab ingest`` / ``quantlab import``.
    files : any files :func:`quantlab.files.load_files` reads (trades, aggTrades,
        klines, OHLC CSV, NDJSON, captures), for both legs.
    archive : folder written by ``quantlab archive``; only the day partitions
        in ``[start, end)`` are read (:func:`quantlab.archive.read_bars`;
        larger timeframes aggregated from the archived 1 m or 1 s bars).
        Exactly one of ``db``, ``files``, ``archive``.
    market : ``"spot"`` or ``"usdm"``, when the store or files hold both.
    start, end : ISO-8601 UTC or epoch ms; ``[start, end)``.
    max_carry_bars : a leg that did not trade keeps its last close this many
        bars; beyond that the row is a gap and is dropped.

    Returns
    -------
    DataFrame
        :func:`quantlab.bars.align_pair` output without gap rows, indexed by
        ``open_time`` (UTC); ``attrs`` say where it came from.
    """
    from quantlab import bars

    if sum(v is not None for v in (db, files, archive)) != 1:
        raise ConfigError("source", {"db": db, "files": files, "archive": archive},
                          "exactly one of db=, files= or archive=")
    y, x = y.upper(), x.upper()
    if y == x:
        raise ConfigError("x", x, "a symbol different from y")
    start_ms, end_ms = parse_time_ms(start, "start"), parse_time_ms(end, "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ConfigError("end", end, f"a time after start ({start})")
    bars.parse_timeframe(timeframe)
    if db is not None:
        from quantlab.store import TickStore

        if not Path(db).exists():
            raise ConfigError("db", str(db), "an existing SQLite file written by quantlab ingest/import")
        with TickStore(db, read_only=True) as store:
            legs = [store.bars(s, timeframe, market=market, start_ms=start_ms, end_ms=end_ms)
                    for s in (y, x)]
        origin = {"db": str(db)}
    elif archive is not None:
        from quantlab.archive import read_bars

        # align_pair re-creates empty bars itself: skip them at the archived timeframe.
        legs = [read_bars(archive, s, timeframe, market=market, start_ms=start_ms, end_ms=end_ms,
                          explicit_empty=False) for s in (y, x)]
        origin = {"archive": str(archive)}
    else:
        from quantlab.files import load_files

        loaded = load_files(list(files), market=market, start_ms=start_ms, end_ms=end_ms)
        for s in (y, x):
            if s not in loaded:
                raise UnknownSymbol(s, sorted(loaded))
        legs = [_leg_bars_from_loaded(loaded[s], timeframe, start_ms, end_ms) for s in (y, x)]
        origin = {"files": [str(f) for f in files]}
    for s, leg in zip((y, x), legs):
        if not (~leg["is_empty"]).any():
            raise InsufficientData(f"{s} in the selected range", 1, 0)
    aligned = bars.align_pair(legs[0], legs[1], max_carry_bars=max_carry_bars, timeframe=timeframe,
                              drop_gaps=True)
    aligned.attrs.update(y=y, x=x, timeframe=timeframe, market=market, **origin)
    return aligned


# --- outputs, and the data source of a parsed command line --------------------------
def clean_json(value: Any) -> Any:
    """Recursively replace NaN/inf by None and numpy scalars by Python ones."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as strict JSON (no NaN) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean_json(payload), indent=2, default=str) + "\n")
    return path


def source_kwargs(args: Any) -> dict:
    """``db=``, ``files=``, ``archive=`` from parsed CLI arguments (the group
    ``quantlab.cli._add_data_source`` adds; exactly one is set)."""
    return {"db": getattr(args, "db", None), "files": getattr(args, "files", None),
            "archive": getattr(args, "archive", None)}


def source_metadata(args: Any) -> dict:
    """The source of a CLI run for output metadata: ``{"db": ...}``,
    ``{"files": [...]}`` or ``{"archive": ...}``."""
    kw = source_kwargs(args)
    if kw["files"] is not None:
        return {"files": [str(f) for f in kw["files"]]}
    return {k: str(v) for k, v in kw.items() if v is not None}


def run_analysis(aligned: pd.DataFrame, *, window: int, hedge: str = "rolling-ols",
                 log_prices: bool = False, **options: Any):
    """:func:`quantlab.analytics.analyze` on an aligned pair from :func:`load_pair_bars`,
    with the symbols taken from the frame's ``attrs``."""
    from quantlab.analytics import analyze

    symbols = (aligned.attrs.get("y"), aligned.attrs.get("x")) if "y" in aligned.attrs else None
    return analyze(aligned, window=window, hedge=hedge, log_prices=log_prices, symbols=symbols,
                   **options)


