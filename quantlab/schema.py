"""The two table shapes every module agrees on. A leaf (numpy/pandas only).

Ticks
    One row per trade, as stored in the ``ticks`` table and returned by the
    loaders in :mod:`quantlab.io` and by :meth:`quantlab.store.TickStore.ticks`.

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

from typing import Iterable

import numpy as np
import pandas as pd

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
