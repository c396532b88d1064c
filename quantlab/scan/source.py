"""Where a scan's bars come from: the Parquet archive, read **by path**.

Workers call :func:`window_arrays` with the archive folder's path (a string
that pickles in a few bytes); they never open the SQLite store and never
receive a DataFrame. A ``--db`` or ``--files`` source is first materialised
into an archive folder with :mod:`quantlab.archive` (:func:`materialise`),
then scanned like any archive. Does I/O (reads Parquet, writes archives).
"""
from __future__ import annotations

import collections
import dataclasses
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError

__all__ = ["SymbolWindow", "window_arrays", "pair_window", "archive_symbols", "materialise",
           "write_universe"]


@dataclasses.dataclass(frozen=True)
class SymbolWindow:
    """One symbol's bars on the full grid of a window ``[start_ms, end_ms)``:
    one value per bar, NaN prices before the symbol's first trade (empty bars
    carry the previous close, as :func:`quantlab.archive.read_bars` returns
    them; their quote volume is 0)."""

    open: np.ndarray
    close: np.ndarray
    quote_volume: np.ndarray
    bar_seconds: float
    first_open_ms: int = 0

    @property
    def open_ms(self) -> np.ndarray:
        """Open time of every grid bar, ms UTC."""
        step = int(round(self.bar_seconds * 1000))
        return self.first_open_ms + step * np.arange(self.close.size, dtype=np.int64)


#: Per-process cache budget of :func:`window_arrays` (MB); env ``QUANTLAB_SCAN_CACHE_MB``.
CACHE_MB = float(os.environ.get("QUANTLAB_SCAN_CACHE_MB", "1024"))
_cache: "collections.OrderedDict[tuple, SymbolWindow]" = collections.OrderedDict()
_cache_bytes = 0
_cache_lock = threading.Lock()


def window_arrays(archive: str, symbol: str, timeframe: str, market: str | None,
                  start_ms: int, end_ms: int, *, token: str = "") -> SymbolWindow:
    """Bars of ``symbol`` over ``[start_ms, end_ms)`` from the archive at path
    ``archive``, as arrays on the window's grid (read-only).

    Cached per process under ``token`` (one scan's id: a worker reads each
    symbol's window once per scan, however many of its pairs land on that
    worker; a later scan reads again, so an archive that grew is seen), least
    recently used first out beyond :data:`CACHE_MB`. ``token=""`` does not cache.
    """
    global _cache_bytes
    key = (token, archive, symbol, timeframe, market, int(start_ms), int(end_ms))
    if token:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit
    win = _read_window(archive, symbol, timeframe, market, int(start_ms), int(end_ms))
    if token:
        size = 3 * win.close.nbytes
        with _cache_lock:
            if key not in _cache:
                _cache[key] = win
                _cache_bytes += size
            while _cache_bytes > CACHE_MB * 2**20 and len(_cache) > 1:
                _, old = _cache.popitem(last=False)
                _cache_bytes -= 3 * old.close.nbytes
    return win


def _read_window(archive: str, symbol: str, timeframe: str, market: str | None,
                 start_ms: int, end_ms: int) -> SymbolWindow:
    from quantlab.archive import read_bars
    from quantlab.bars import parse_timeframe

    tf = parse_timeframe(timeframe)
    frame = read_bars(archive, symbol, timeframe, market=market, start_ms=start_ms, end_ms=end_ms)
    lo = start_ms // tf * tf
    n = -(-end_ms // tf) - lo // tf
    pos = (np.asarray(frame.index.as_unit("ms").asi8, dtype=np.int64) - lo) // tf
    keep = (pos >= 0) & (pos < n)
    pos = pos[keep]
    out = {}
    for col in ("open", "close", "quote_volume"):
        full = np.full(n, np.nan if col != "quote_volume" else 0.0)
        full[pos] = frame[col].to_numpy(dtype=np.float64)[keep]
        full.setflags(write=False)
        out[col] = full
    return SymbolWindow(out["open"], out["close"], out["quote_volume"], tf / 1000.0, lo)


def pair_window(y: SymbolWindow, x: SymbolWindow):
    """:class:`quantlab.scan.core.PairBars` of the bars where both legs have a
    finite, positive price."""
    from quantlab.scan.core import PairBars

    with np.errstate(invalid="ignore"):
        ok = (np.isfinite(y.close) & np.isfinite(x.close) & np.isfinite(y.open)
              & np.isfinite(x.open) & (y.close > 0) & (x.close > 0) & (y.open > 0) & (x.open > 0))
    if ok.all():
        return PairBars(y.open, y.close, x.open, x.close, y.quote_volume, x.quote_volume,
                        y.bar_seconds, y.open_ms)
    return PairBars(y.open[ok], y.close[ok], x.open[ok], x.close[ok], y.quote_volume[ok],
                    x.quote_volume[ok], y.bar_seconds, y.open_ms[ok])


def archive_symbols(archive: str | os.PathLike, *, timeframe: str | None = None,
                    market: str | None = None) -> list[str]:
    """Symbols with bars in the archive (:func:`quantlab.archive.list_symbols`)."""
    from quantlab.archive import list_symbols

    return list_symbols(archive, timeframe=timeframe, market=market)


def _archive_timeframe(timeframe: str) -> str:
    """The bar dataset to materialise: the scan's timeframe when it is a whole
    number of seconds dividing a day, else 1 s."""
    from quantlab.bars import parse_timeframe

    tf = parse_timeframe(timeframe)
    return timeframe if tf % 1000 == 0 and 86_400_000 % tf == 0 else "1s"


def materialise(out: str | os.PathLike, *, db: str | os.PathLike | None = None,
                files: Sequence[str | os.PathLike] | None = None,
                symbols: Sequence[str] | None = None, timeframe: str = "1m",
                market: str | None = None) -> Path:
    """Write the bars a scan needs from a tick store or files into the archive
    folder ``out`` (incremental: a second call adds only what is missing) and
    return its path. Uses :func:`quantlab.archive.archive_store` /
    :func:`quantlab.archive.archive_files`."""
    from quantlab import archive

    if (db is None) == (files is None):
        raise ConfigError("source", {"db": db, "files": files}, "exactly one of db= or files=")
    out = Path(out)
    if db is not None:
        archive.archive_store(db, out, timeframes=(_archive_timeframe(timeframe),),
                              symbols=symbols, market=market)
    else:
        archive.archive_files(list(files), out, market=market)
    return out


def write_universe(out: str | os.PathLike, bars: dict[str, pd.DataFrame], *,
                   timeframe: str = "1m", market: str = "spot") -> Path:
    """Write bar frames (symbol -> :mod:`quantlab.schema` frame, e.g. from
    :func:`quantlab.scan.synthetic.synthetic_universe`) into an archive folder
    (:func:`quantlab.archive.write_bars`: one complete Parquet file per
    ``market/symbol/date``; traded bars only). For tests, benchmarks and demos."""
    from quantlab.archive import write_bars

    for symbol, frame in bars.items():
        write_bars(out, symbol, frame, timeframe=timeframe, market=market,
                   meta={"source": "quantlab.scan.synthetic", "synthetic": "1"})
    return Path(out)
