"""Historical and user files -> tick or bar frames (the shapes of :mod:`quantlab.schema`).

Formats understood (detected from the content's first line, not trusted to the extension):

==========  ===================================================================  =======
format      what                                                                 returns
==========  ===================================================================  =======
trades      data.binance.vision ``trades`` (spot 7 columns, USD-M 6 columns)     ticks
aggTrades   data.binance.vision ``aggTrades`` (spot 8 columns, USD-M 7 columns)  ticks
klines      data.binance.vision ``klines`` (12 columns, any interval)            bars
ohlc        a user CSV ``timestamp,open,high,low,close[,volume]``                bars
ndjson      the assignment collector's ``{"symbol","ts","price","size"}`` lines  ticks
capture     ``<local_receive_time_ns> <raw WebSocket JSON>`` lines (gzip)        ticks
==========  ===================================================================  =======

Archives may be ``.zip`` (one CSV inside, as data.binance.vision ships them), gzip
(``.csv.gz``, ``.gz``) or plain; compression is recognised by its magic bytes.

Facts used below come from ``shared/BINANCE.md``, section *Historical files*:

* Spot files have no header line; USD-M files have one from about mid-2022 (and the 212
  earliest ETHUSDT kline files of the shared data have none). The first line is sniffed.
* Spot files from 2025-01-01 carry times in microseconds, everything else milliseconds.
  The unit is decided **per value from its magnitude** (a value >= 1e14 is µs: 1e14 ms
  would be the year 5138, 1e14 µs is 1973-03-03), so a list mixing 2024 and 2025 files
  works. Times are returned in integer milliseconds (µs are floored).
* aggTrades archives contain placeholder rows ``p=0,q=0,f=-1,l=-1``; they are dropped.

Public API: :func:`iter_capture`, :func:`load_capture_trades`, :func:`load_trades`,
:func:`load_klines`, :func:`load_file`, :func:`load_file_bytes`, :func:`load_files`
and the :class:`LoadedFile` they return; :func:`capture_trade` and
:func:`capture_market`, the one parser of capture trade frames.

Layout (one concern per module; arrows point up this list only):
``source`` (formats, column layouts, limits, :class:`LoadedFile`, path/bytes sources
with zip/gzip), ``sniff`` (format from content, symbol/market from the name),
``tables`` (vectorised frame helpers, pyarrow CSV reading, the value checks),
``trades`` (data.binance.vision trades/aggTrades, collector NDJSON), ``capture``
(WebSocket captures), ``klines`` (klines, user OHLC), ``load`` (entry points).
This package was ``quantlab.io`` until issue 14; that name still works for one
release (a :class:`DeprecationWarning`).

Tick frames are sorted by ``time_ms`` then ``trade_id`` (STYLE.md: ties of equal time
broken by trade id) and de-duplicated on ``(market, symbol, kind, trade_id)``, keeping
the first. Bar frames are sorted by ``open_time``; identical duplicate bars are kept
once, conflicting ones are an error.

Every failure is a :class:`~quantlab.errors.QuantlabError`: a
:class:`~quantlab.errors.DataFileError` (also a ``ValueError``) naming the file and the
1-based line and column where that applies, a :class:`~quantlab.errors.ConfigError` for
a bad argument (``market='futures'``), or :class:`~quantlab.errors.UnknownSymbol` when a
requested symbol is not in the file. Third-party exceptions are chained with
``raise ... from exc``, never shown raw.

Examples
--------
>>> import io as _io, gzip as _gz
>>> line = (b'1723161254087896568 {"stream":"btcusdt@trade","data":{"e":"trade",'
...         b'"E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63","q":"0.02",'
...         b'"T":1723161255342,"m":true,"M":true}}\\n')
>>> f = load_file_bytes("spot_btcusdt_20240808.gz", _gz.compress(line))
>>> (f.format, f.symbol, f.market, f.is_bars, len(f.frame))
('capture', 'BTCUSDT', 'spot', False, 1)
>>> int(f.frame.recv_ms.iloc[0]), int(f.frame.time_ms.iloc[0])
(1723161254087, 1723161255342)
"""
from __future__ import annotations

from quantlab.files.source import (
    AGG_SPOT_COLUMNS,
    AGG_USDM_COLUMNS,
    BAR_FORMATS,
    check_regular_file,
    FORMATS,
    KLINE_COLUMNS,
    LoadedFile,
    OHLC_COLUMNS,
    PathLike,
    SYMBOL_RE,
    TICK_FORMATS,
    TRADES_SPOT_COLUMNS,
    TRADES_USDM_COLUMNS,
    _DATA_SUFFIXES,
)
from quantlab.files.tables import check_symbol
from quantlab.files.capture import capture_market, capture_trade, iter_capture, load_capture_trades
from quantlab.files.klines import load_klines
from quantlab.files.load import (
    dated_name_overlaps,
    load_file,
    load_file_bytes,
    load_files,
    load_trades,
)

__all__ = [
    "AGG_SPOT_COLUMNS",
    "AGG_USDM_COLUMNS",
    "BAR_FORMATS",
    "FORMATS",
    "KLINE_COLUMNS",
    "LoadedFile",
    "OHLC_COLUMNS",
    "PathLike",
    "SYMBOL_RE",
    "TICK_FORMATS",
    "TRADES_SPOT_COLUMNS",
    "TRADES_USDM_COLUMNS",
    "capture_market",
    "capture_trade",
    "check_regular_file",
    "check_symbol",
    "dated_name_overlaps",
    "iter_capture",
    "load_capture_trades",
    "load_file",
    "load_file_bytes",
    "load_files",
    "load_klines",
    "load_trades",
]
