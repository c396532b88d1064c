"""Public entry points: :func:`load_trades`, :func:`load_file`,
:func:`load_file_bytes`, :func:`load_files` and the file-name helpers.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from typing import Sequence

import pandas as pd

from quantlab.errors import ConfigError, DataFileError
from quantlab.files.capture import _capture_ticks
from quantlab.files.klines import _expand, _ohlc_bars, load_klines
from quantlab.files.sniff import (
    _Sniff,
    _check_market_arg,
    _name_info,
    _need_symbol,
    _resolve_market,
    _sniff,
)
from quantlab.files.source import BAR_FORMATS, LoadedFile, PathLike, _Source, _as_source
from quantlab.files.tables import _finish_ticks, check_symbol
from quantlab.files.trades import _load_archive_ticks, _ndjson_ticks, _number_ndjson

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------
def load_trades(path: PathLike, *, symbol: str | None = None, market: str | None = None) -> pd.DataFrame:
    """A file of trades -> tick frame (:data:`quantlab.schema.TICK_COLUMNS`).

    Accepts data.binance.vision ``trades`` and ``aggTrades`` (``.zip``/``.csv.gz``/``.csv``,
    spot or USD-M, with or without header), collector NDJSON and WebSocket captures.

    Parameters
    ----------
    path : the file.
    symbol : upper-case symbol. Default: from the file name (``BTCUSDT-trades-2024-08-08.zip``,
        ``BTCUSDT-trades-um-...csv``, ``spot_btcusdt_...gz``) or the data.binance.vision
        folder layout. For NDJSON and captures, which name their symbols, ``symbol``
        keeps only that symbol.
    market : ``"spot"`` or ``"usdm"``. For archives the column layout decides (spot files
        carry ``is_best_match``) and a contradicting ``market`` is an error; otherwise
        the name (``-um-``, ``-spot-``, ``spot_``, ``usdm_``, ``futures/um``) is used.

    Returns
    -------
    DataFrame
        Tick frame sorted by ``time_ms`` (ms, UTC) then ``trade_id``, de-duplicated on
        ``(market, symbol, kind, trade_id)``. ``recv_ms`` is 0 except for captures.

    Notes
    -----
    * Times in µs (spot archives from 2025-01-01) are converted to ms by magnitude.
    * aggTrades rows ``p=0,q=0,f=-1,l=-1`` are dropped; ``trade_type`` is ``None`` on
      aggTrades, as on the live path.
    * **USD-M trade archives have no ``X`` column.** We assume every row with price > 0
      and quantity > 0 is a ``MARKET`` print and mark rows with price or quantity <= 0
      ``"NA"`` (the shape of futures ``NA`` prints), so the bar builder excludes them.
      If the archive ever holds insurance-fund or ADL fills with positive price, they
      cannot be told apart and are marked ``MARKET``. Spot ``trade_type`` is ``None``.
    * NDJSON: see :func:`load_file` (synthetic ids, ``is_buyer_maker`` false).

    Raises
    ------
    DataFileError
        Unrecognised or malformed file (file, line, column), a file of bars, or a symbol
        that cannot be inferred ("pass symbol=").
    """
    src = _as_source(path)
    sniff = _sniff(src)
    if sniff.format in BAR_FORMATS:
        raise DataFileError(src.name, f"is a {sniff.format} file (bars), not trades; use load_klines() or load_file()")
    return _load_ticks(src, sniff, symbol, market)[0]


def _load_ticks(src: _Source, sniff: _Sniff, symbol: str | None,
                market: str | None) -> tuple[pd.DataFrame, str | None, str | None, str | None]:
    """(frame, symbol, market, note about rows with price or quantity <= 0)."""
    if sniff.format in ("trades", "aggTrades"):
        return _load_archive_ticks(src, sniff, symbol, market)
    if sniff.format == "capture":
        frame, mkt, note = _capture_ticks(src, market, symbol, with_note=True)
    else:
        frame, mkt, note = _ndjson_ticks(src, market, symbol)
    syms = sorted(set(frame["symbol"]))
    return frame, (syms[0] if len(syms) == 1 else None), mkt, note


def _load(src: _Source, symbol: str | None, market: str | None) -> LoadedFile:
    if symbol is not None and check_symbol(symbol.upper() if isinstance(symbol, str) else symbol) is not None:
        raise ConfigError("symbol", symbol, "ASCII upper-case letters and digits such as 'BTCUSDT'")
    sniff = _sniff(src)
    # Bars carry no symbol column, so a bar file whose name says nothing loads with
    # symbol None (the caller knows which leg it is); tick frames need one.
    if sniff.format == "klines":
        named_symbol, named_market = _name_info(src)
        sym = (symbol or named_symbol)
        frame = load_klines(src, symbol=sym)
        mkt = _resolve_market(src, sniff.market, market, named_market, "klines")
    elif sniff.format == "ohlc":
        named_symbol, named_market = _name_info(src)
        sym = symbol or named_symbol
        frame = _ohlc_bars(src, sniff)
        mkt = _check_market_arg(market) or named_market
    else:
        frame, sym, mkt, note = _load_ticks(src, sniff, symbol, market)
        syms = tuple(sorted(set(frame["symbol"])))
        return LoadedFile(sniff.format, sym, mkt, frame, False, syms, (src.name,),
                          notes=(note,) if note else ())
    sym = sym.upper() if sym else None
    return LoadedFile(sniff.format, sym, mkt, frame, True, (sym,) if sym else (), (src.name,))


def load_file(path: PathLike, *, symbol: str | None = None, market: str | None = None) -> LoadedFile:
    """Load any supported file, detecting its format from the content.

    Parameters
    ----------
    path : the file (``.zip``, gzip or plain).
    symbol, market : as in :func:`load_trades`. Tick files need a symbol (from the name,
        the content for NDJSON and captures, or ``symbol=``); bar files (klines, OHLC) whose
        name says nothing load with ``symbol=None``, since bars carry no symbol column.

    Returns
    -------
    LoadedFile
        ``format`` (trades/aggTrades/klines/ohlc/ndjson/capture), ``symbol``, ``market``,
        ``frame`` (ticks, or bars when ``is_bars``), ``symbols``, ``sources``.

    Notes
    -----
    Collector NDJSON (``{"symbol","ts","price","size"}`` per line; ``ts`` ISO-8601, a
    naive time is UTC; ``price`` quote per unit, ``size`` base units, as numbers or
    strings) has no trade ids and no side. ``trade_id`` is synthesised as 0, 1, 2 ...
    per symbol in time order (ties kept in file order), so the same file always gets the
    same ids; they are not Binance ids. ``is_buyer_maker`` is unknown and set to
    ``False`` (every trade looks like a taker buy: taker-flow statistics are meaningless
    on this data). ``market`` must be passed or named by the file.

    A user OHLC CSV (``timestamp,open,high,low,close[,volume]``, a header naming these
    columns or none; ``timestamp`` ISO-8601 or epoch s/ms, UTC; extra columns ignored)
    is validated: every value a finite number, prices > 0, volume >= 0,
    ``high >= max(open, close)``, ``low <= min(open, close)``, timestamps strictly
    increasing. Its bars have ``trade_count`` 0 (unknown), ``taker_buy_volume`` NaN
    (unknown), ``vwap`` = ``close`` and ``quote_volume`` = ``close * volume``
    (approximations), ``is_empty`` true only where a given volume is 0.

    Raises
    ------
    DataFileError
        With file, 1-based line and column where they apply, e.g.
        ``"prices.csv, line 14, column 'close': 'abc' is not a number; ..."``.
    """
    return _load(_as_source(path), symbol, market)


def load_file_bytes(name: str, data: bytes, *, symbol: str | None = None,
                    market: str | None = None) -> LoadedFile:
    """:func:`load_file` for bytes in memory (an upload widget's file).

    ``name`` is the uploaded file's name: it is used for symbol/market inference and
    in error messages. Compression is detected from the bytes, not the name.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataFileError(name, f"expected the file's bytes, got {type(data).__name__}")
    return _load(_Source(name, data=bytes(data)), symbol, market)


_DATED_NAME = re.compile(r"(?<!\d)(\d{4})-(\d{2})(?:-(\d{2}))?(?!\d)")


def dated_name_overlaps(name: str, start_ms: int | None, end_ms: int | None) -> bool:
    """False when a data.binance.vision file name dates the file entirely outside
    ``[start_ms, end_ms)`` (daily ``...-2023-03-01.csv.gz``, monthly
    ``...-2023-03.zip``); True otherwise, including undated names.

    >>> dated_name_overlaps("BTCUSDT-1m-2023-03-01.csv.gz", 1677715200000, None)  # from 2023-03-02
    False
    >>> dated_name_overlaps("BTCUSDT-1m-2023-03.csv.gz", 1677715200000, None)
    True
    """
    m = _DATED_NAME.search(name)
    if m is None or (start_ms is None and end_ms is None):
        return True
    year, month, day = int(m.group(1)), int(m.group(2)), m.group(3)
    try:
        first = pd.Timestamp(year=year, month=month, day=int(day) if day else 1, tz="UTC")
    except ValueError:
        return True
    last = first + (pd.Timedelta(days=1) if day else pd.DateOffset(months=1))
    lo, hi = first.value // 1_000_000, last.value // 1_000_000
    return not ((end_ms is not None and lo >= end_ms) or (start_ms is not None and hi <= start_ms))


def load_files(paths: PathLike | Sequence[PathLike], *, market: str | None = None,
               start_ms: int | None = None, end_ms: int | None = None) -> dict[str, LoadedFile]:
    """Load many files (or folders) and merge them per symbol.

    Kline files are grouped per symbol and read in one pass (fast path of
    :func:`load_klines`). Other files go through :func:`load_file`; multi-symbol files
    (NDJSON, captures) are split by symbol.

    Parameters
    ----------
    paths : files and/or folders (a folder contributes its ``.csv``, ``.gz``, ``.zip``,
        ``.ndjson``, ``.jsonl``, ``.json``, ``.txt`` files).
    market : keep only this market's ticks (files of the other market are skipped, with an
        INFO log). Also used as the market of NDJSON files.
    start_ms, end_ms : skip files whose data.binance.vision name dates them entirely outside
        ``[start_ms, end_ms)`` (ms UTC); rows are not filtered here.

    Returns
    -------
    dict[str, LoadedFile]
        Keyed by symbol, in sorted order. Ticks of one symbol are concatenated, sorted by
        time then id and de-duplicated on ``(market, symbol, kind, trade_id)``; NDJSON ticks
        are renumbered after concatenation (their ids are synthetic) instead. Bars of one
        symbol are concatenated, sorted, and identical duplicates dropped.

    Raises
    ------
    DataFileError
        A symbol has both bars and ticks, ticks of both markets (pass ``market=``), both
        raw trades and aggTrades (they describe the same fills twice), NDJSON mixed with
        Binance ticks, or conflicting duplicate bars.
    """
    market = _check_market_arg(market)
    sources = _expand(paths)
    if start_ms is not None or end_ms is not None:
        # Two years of daily files load in seconds; a one-week request should not pay for them.
        sources = [src for src in sources if dated_name_overlaps(src.name, start_ms, end_ms)]
        if not sources:
            raise ConfigError("paths", [str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)],
                              "files covering the requested time range")
    kline_groups: dict[str, list[_Source]] = {}
    kline_markets: dict[str, set] = {}
    parts: dict[str, list[LoadedFile]] = {}
    for src in sources:
        sniff = _sniff(src)
        if sniff.format == "klines":
            sym, named_market = _name_info(src)
            if sym is None:
                raise _need_symbol(src, "klines")
            kline_groups.setdefault(sym, []).append(src)
            kline_markets.setdefault(sym, set()).add(named_market or sniff.market)
            continue
        loaded = _load(src, None, market if sniff.format == "ndjson" else None)
        if not loaded.is_bars and market is not None and loaded.market != market:
            logger.info("%s: skipped (%s, not %s)", src.name, loaded.market, market)
            continue
        if loaded.is_bars and loaded.symbol is None:
            raise _need_symbol(src, loaded.format)  # cannot group it: rename the file
        if loaded.is_bars or len(loaded.symbols) <= 1:
            if loaded.symbol is not None:  # None: a tick file with no rows
                parts.setdefault(loaded.symbol, []).append(loaded)
            continue
        for sym, sub in loaded.frame.groupby("symbol", sort=True):
            parts.setdefault(sym, []).append(LoadedFile(loaded.format, sym, loaded.market,
                                                        sub.reset_index(drop=True), False, (sym,), loaded.sources,
                                                        loaded.notes))
    for sym, group in kline_groups.items():
        frame = load_klines(group, symbol=sym)
        # Headerless files cannot tell their market; files with a header are USD-M.
        mkts = kline_markets[sym] - {None}
        mkt = mkts.pop() if len(mkts) == 1 else None
        parts.setdefault(sym, []).append(LoadedFile("klines", sym, mkt, frame, True, (sym,),
                                                    tuple(s.name for s in group)))
    return {sym: _merge(sym, parts[sym]) for sym in sorted(parts)}


def _merge(sym: str, items: list[LoadedFile]) -> LoadedFile:
    sources = tuple(s for it in items for s in it.sources)
    fmt = "+".join(sorted({it.format for it in items}))
    notes = tuple(n for it in items for n in it.notes)
    if len(items) == 1:
        return LoadedFile(items[0].format, sym, items[0].market, items[0].frame, items[0].is_bars, (sym,), sources,
                          notes)
    if len({it.is_bars for it in items}) > 1:
        raise DataFileError(sources[0], f"{sym} has both bars and trades among the files given "
                                        f"({fmt}); load bars and ticks separately")
    if items[0].is_bars:
        frame = pd.concat([it.frame for it in items]).sort_index(kind="stable")
        # Same rules as load_klines: identical bars (open_time included) kept once,
        # different bars at one open_time rejected.
        frame = frame[~frame.reset_index().duplicated(keep="first").to_numpy()]
        if frame.index.has_duplicates:
            when = frame.index[frame.index.duplicated()][0].isoformat()
            raise DataFileError(sources[0], f"{sym}: two different bars for open_time {when}; remove one "
                                            "of the overlapping files", column="open_time")
        mkts = {it.market for it in items} - {None}
        return LoadedFile(fmt, sym, mkts.pop() if len(mkts) == 1 else None, frame, True, (sym,), sources)
    mkts = {it.market for it in items}
    if len(mkts) > 1:
        raise DataFileError(sources[0], f"{sym} has ticks of both markets ({', '.join(sorted(map(str, mkts)))}); "
                                        "pass market='spot' or market='usdm'")
    ndjson = [it.format == "ndjson" for it in items]
    if any(ndjson) and not all(ndjson):
        raise DataFileError(sources[0], f"{sym}: collector NDJSON (synthetic trade ids) cannot be merged with "
                                        "Binance trade files; load them separately")
    kinds = set().union(*(set(it.frame["kind"]) for it in items))
    if len(kinds) > 1:
        raise DataFileError(sources[0], f"{sym} has both raw trades and aggTrades; they describe the same fills "
                                        "twice, load one kind")
    frame = pd.concat([it.frame for it in items], ignore_index=True)
    frame = _number_ndjson(frame) if all(ndjson) else _finish_ticks(frame)
    return LoadedFile(fmt, sym, mkts.pop(), frame, False, (sym,), sources, notes)
