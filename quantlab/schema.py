"""The two table shapes every module agrees on. A leaf (numpy/pandas only).

Ticks
    One row per trade, as stored in the ``ticks`` table and returned by the
    loaders in :mod:`quantlab.files` and by :meth:`quantlab.store.TickStore.ticks`.

    ============== ========= ==================================================
    column         dtype     meaning
    ============== ========= ==================================================
    market         str       ``spot`` or ``usdm``
    symbol         str       upper case, e.g. ``BTCUSDT``
    kind           str       ``trade`` (raw trade id) or ``aggTrade`` (agg id)
    trade_id       int64     ``t`` or ``a``
    time_ms        int64     exchange trade time, ms since epoch UTC
    recv_ms        int64     local receive time, ms; 0 when unknown (files)
    price          float64   quote per unit
    qty            float64   base units
    is_buyer_maker bool      ``m``: true means the taker sold
    trade_type     object    futures ``X`` (``MARKET``, ``NA``, ...); None on spot
    first_trade_id Int64     aggTrades: first raw id ``f``; <NA> otherwise
    last_trade_id  Int64     aggTrades: last raw id ``l``; <NA> otherwise
    ============== ========= ==================================================

Bars
    A DataFrame indexed by ``open_time`` (tz-aware UTC DatetimeIndex, the bar's
    open, built from exchange time) with the columns of :data:`BAR_COLUMNS`.
    Empty bars (no trade) are explicit rows: ``is_empty`` true, OHLC and VWAP
    equal to the previous close, volumes and count 0. ``is_forming`` marks the
    last bar while it can still receive trades.
"""
from __future__ import annotations

import time
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from quantlab.config import KINDS, MARKETS  # noqa: F401  (the one list, defined in config; re-exported)

# Futures ``X`` of a trade that belongs in bars; spot trades have no ``X`` (None).
MARKET_PRINT = "MARKET"


def now_ms() -> int:
    """Wall-clock time in ms since the epoch (UTC): the clock of ``recv_ms``."""
    return time.time_ns() // 1_000_000


def is_market_print(price: float, qty: float, trade_type: str | None) -> bool:
    """Whether one trade belongs in bars (BINANCE.md, *Messages*): a real market
    fill, i.e. futures ``X`` of ``MARKET`` or absent (spot), with price > 0 and
    qty > 0. ``INSURANCE_FUND``, ``ADL`` and ``NA`` prints (and the archive rows
    with ``p=0, q=0``) are kept in the store but not in bars. NaN compares False,
    so it is excluded too. :func:`market_print_mask` is the same rule on columns.

    >>> is_market_print(1.0, 2.0, None), is_market_print(1.0, 2.0, "ADL"), is_market_print(0.0, 0.0, "NA")
    (True, False, False)
    """
    return (trade_type is None or trade_type == MARKET_PRINT) and price > 0 and qty > 0


def market_print_mask(price: np.ndarray, qty: np.ndarray,
                      trade_type: Sequence | pd.Series | None = None) -> np.ndarray:
    """:func:`is_market_print` on columns: a bool array, True where the row
    belongs in bars. ``trade_type`` is a list or Series of ``X`` values (None or
    NaN on spot), or None when the rows have no such column (all kept).

    >>> market_print_mask(np.array([1.0, 2.0, 0.0, 3.0]), np.array([1.0, 1.0, 0.0, 1.0]),
    ...                   ["MARKET", "ADL", "NA", None]).tolist()
    [True, False, False, True]
    """
    ok = (np.asarray(price, dtype=np.float64) > 0) & (np.asarray(qty, dtype=np.float64) > 0)
    if trade_type is None:
        return ok
    if isinstance(trade_type, pd.Series):
        return ok & (trade_type.isna() | (trade_type == MARKET_PRINT)).to_numpy(dtype=bool)
    tt = trade_type if isinstance(trade_type, list) else list(trade_type)
    if tt.count(None) + tt.count(MARKET_PRINT) == len(tt):  # the usual batch: no scan in Python
        return ok
    return ok & np.fromiter((t is None or t == MARKET_PRINT for t in tt), dtype=bool, count=len(tt))

TICK_COLUMNS = (
    "market", "symbol", "kind", "trade_id", "time_ms", "recv_ms", "price", "qty",
    "is_buyer_maker", "trade_type", "first_trade_id", "last_trade_id",
)
TICK_DTYPES = {
    "market": object, "symbol": object, "kind": object, "trade_id": np.int64,
    "time_ms": np.int64, "recv_ms": np.int64, "price": np.float64, "qty": np.float64,
    "is_buyer_maker": bool, "trade_type": object, "first_trade_id": "Int64",
    "last_trade_id": "Int64",
}

BAR_COLUMNS = (
    "open", "high", "low", "close", "volume", "quote_volume", "trade_count", "vwap",
    "taker_buy_volume", "is_empty", "is_forming",
)
BAR_DTYPES = {
    "open": np.float64, "high": np.float64, "low": np.float64, "close": np.float64,
    "volume": np.float64, "quote_volume": np.float64, "trade_count": np.int64,
    "vwap": np.float64, "taker_buy_volume": np.float64, "is_empty": bool, "is_forming": bool,
}
BAR_INDEX = "open_time"


def empty_ticks() -> pd.DataFrame:
    """A tick frame with no rows and the right dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=TICK_DTYPES[c]) for c in TICK_COLUMNS})


def trades_to_frame(trades: Iterable) -> pd.DataFrame:
    """Tick frame from :class:`quantlab.binance.Trade` values."""
    rows = [(t.market, t.symbol, t.kind, t.trade_id, t.time_ms, t.recv_ms, t.price, t.qty,
             t.is_buyer_maker, t.trade_type, t.first_trade_id, t.last_trade_id) for t in trades]
    if not rows:
        return empty_ticks()
    frame = pd.DataFrame.from_records(rows, columns=list(TICK_COLUMNS))
    return frame.astype(TICK_DTYPES)


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows, the right dtypes and a UTC ``open_time`` index."""
    index = ms_to_utc_index(np.empty(0, dtype=np.int64))
    return pd.DataFrame({c: pd.Series(dtype=BAR_DTYPES[c]) for c in BAR_COLUMNS}, index=index)


def ms_to_utc_index(ms: np.ndarray) -> pd.DatetimeIndex:
    """Milliseconds since epoch -> tz-aware UTC ``open_time`` index."""
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True),
                            name=BAR_INDEX)
