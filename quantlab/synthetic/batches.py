"""Trades as columns: :class:`TradeBatch` (raw trades), :class:`AggBatch`
(aggregate trades), their tick frames, concatenation, and
:func:`aggregate_trades` (runs of fills -> Binance's ``@aggTrade``). Pure:
numpy and pandas only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError
from quantlab.schema import TICK_COLUMNS, TICK_DTYPES
from quantlab.synthetic.specs import MARKET, TRADE_TYPES, Instruments

# =============================================================================
# Batches
# =============================================================================
class _Columns:
    """What trade and aggregate batches share: symbol names and prices and
    quantities as floats from their integer (tick/step) encoding."""

    instruments: "Instruments"
    sym: np.ndarray
    price: np.ndarray
    qty: np.ndarray

    @property
    def market(self) -> str:
        return self.instruments.market

    def symbol_names(self) -> np.ndarray:
        """Symbol of every row (object array of str)."""
        return np.asarray(self.instruments.symbols, dtype=object)[self.sym]

    def price_float(self) -> np.ndarray:
        """Prices as float64, quote per base unit."""
        return self.price / _pow10(self.instruments.price_dp)[self.sym]

    def qty_float(self) -> np.ndarray:
        """Quantities as float64, base units."""
        return self.qty / _pow10(self.instruments.qty_dp)[self.sym]


@dataclass(frozen=True, eq=False)
class TradeBatch(_Columns):
    """Raw trades as columns (numpy arrays of equal length), in emission order.

    Attributes
    ----------
    instruments : symbols and wire decimals.
    sym : int16, index into ``instruments.symbols``.
    trade_id : int64, raw trade id ``t``.
    price : int64, price in units of ``10**-price_dp[sym]`` (0 for ``NA`` prints).
    qty : int64, quantity in units of ``10**-qty_dp[sym]`` (0 for ``NA`` prints).
    time_ms : int64, exchange trade time ``T``, ms since epoch UTC.
    event_ms : int64, event time ``E``, ms (>= ``time_ms``).
    is_buyer_maker : bool, ``m``; true means the taker sold.
    trade_type : int8, index into :data:`TRADE_TYPES` (always ``MARKET`` on spot).
    """

    instruments: Instruments
    sym: np.ndarray
    trade_id: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    time_ms: np.ndarray
    event_ms: np.ndarray
    is_buyer_maker: np.ndarray
    trade_type: np.ndarray

    def __len__(self) -> int:
        return int(self.trade_id.shape[0])

    def take(self, rows: np.ndarray | slice) -> "TradeBatch":
        """The rows ``rows`` (index array or slice) as a new batch."""
        return TradeBatch(self.instruments, *(getattr(self, c)[rows] for c in _TRADE_COLS))

    def to_frame(self) -> pd.DataFrame:
        """Tick frame (:data:`quantlab.schema.TICK_COLUMNS`); ``recv_ms`` 0,
        ``trade_type`` the futures ``X`` (``None`` on spot)."""
        n = len(self)
        if self.market == "usdm":
            ttype = np.asarray(TRADE_TYPES, dtype=object)[self.trade_type]
        else:
            ttype = np.full(n, None, dtype=object)
        cols = {
            "market": np.full(n, self.market, dtype=object), "symbol": self.symbol_names(),
            "kind": np.full(n, "trade", dtype=object), "trade_id": self.trade_id,
            "time_ms": self.time_ms, "recv_ms": np.zeros(n, np.int64), "price": self.price_float(),
            "qty": self.qty_float(), "is_buyer_maker": self.is_buyer_maker, "trade_type": ttype,
            "first_trade_id": pd.array([pd.NA] * n, dtype="Int64"),
            "last_trade_id": pd.array([pd.NA] * n, dtype="Int64"),
        }
        return pd.DataFrame({c: cols[c] for c in TICK_COLUMNS}).astype(TICK_DTYPES)


_TRADE_COLS = ("sym", "trade_id", "price", "qty", "time_ms", "event_ms", "is_buyer_maker", "trade_type")


@dataclass(frozen=True, eq=False)
class AggBatch(_Columns):
    """Aggregate trades as columns, in emission order.

    Attributes
    ----------
    instruments : symbols and wire decimals (those of the source batch).
    sym : int16 symbol index.
    agg_id : int64, aggregate id ``a`` (contiguous per symbol).
    price, qty : int64 wire units, as in :class:`TradeBatch`; ``qty`` is the sum of the fills.
    first_id, last_id : int64, raw trade ids ``f`` and ``l`` of the first and last fill.
    time_ms : int64, ``T`` of the fills (ms); event_ms : ``E`` of the last fill (ms).
    is_buyer_maker : bool ``m``.
    last_row : int64, row of the source batch holding the last fill: the aggregate is
        published right after that trade.
    """

    instruments: Instruments
    sym: np.ndarray
    agg_id: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    first_id: np.ndarray
    last_id: np.ndarray
    time_ms: np.ndarray
    event_ms: np.ndarray
    is_buyer_maker: np.ndarray
    last_row: np.ndarray

    def __len__(self) -> int:
        return int(self.agg_id.shape[0])

    def take(self, rows: np.ndarray | slice) -> "AggBatch":
        """The rows ``rows`` (index array or slice) as a new batch."""
        return AggBatch(self.instruments, *(getattr(self, c)[rows] for c in _AGG_COLS))

    def to_frame(self) -> pd.DataFrame:
        """Tick frame of ``kind="aggTrade"`` rows (``trade_type`` None)."""
        n = len(self)
        cols = {
            "market": np.full(n, self.market, dtype=object), "symbol": self.symbol_names(),
            "kind": np.full(n, "aggTrade", dtype=object), "trade_id": self.agg_id,
            "time_ms": self.time_ms, "recv_ms": np.zeros(n, np.int64), "price": self.price_float(),
            "qty": self.qty_float(), "is_buyer_maker": self.is_buyer_maker,
            "trade_type": np.full(n, None, dtype=object),
            "first_trade_id": pd.array(self.first_id, dtype="Int64"),
            "last_trade_id": pd.array(self.last_id, dtype="Int64"),
        }
        return pd.DataFrame({c: cols[c] for c in TICK_COLUMNS}).astype(TICK_DTYPES)


_AGG_COLS = ("sym", "agg_id", "price", "qty", "first_id", "last_id", "time_ms", "event_ms",
             "is_buyer_maker", "last_row")


def _pow10(dps: Sequence[int]) -> np.ndarray:
    return 10.0 ** np.asarray(dps, dtype=np.float64)


def empty_trade_batch(instruments: Instruments) -> TradeBatch:
    """A batch with no rows."""
    i64 = np.zeros(0, np.int64)
    return TradeBatch(instruments, np.zeros(0, np.int16), i64, i64, i64, i64, i64,
                      np.zeros(0, bool), np.zeros(0, np.int8))


def concat_trade_batches(batches: Sequence[TradeBatch]) -> TradeBatch:
    """Rows of ``batches`` one after the other (same instruments)."""
    if not batches:
        raise ConfigError("batches", batches, "at least one batch")
    return TradeBatch(batches[0].instruments,
                      *(np.concatenate([getattr(b, c) for b in batches]) for c in _TRADE_COLS))


# =============================================================================
# Aggregation
# =============================================================================
def aggregate_trades(batch: TradeBatch, next_agg_id: Sequence[int]) -> tuple[AggBatch, list[int]]:
    """Aggregate trades of ``batch``, as Binance's ``@aggTrade`` and ``aggTrades`` do.

    A run of raw trades of one symbol becomes one aggregate when the trades are
    consecutive in the batch (other symbols' rows in between do not matter), have
    contiguous ids (``t == previous t + 1``), the same price, the same side ``m`` and the
    same exchange time ``T`` (ms): the fills of one taker order at one price (Binance
    spot docs, "Compressed/Aggregate trades list"). Only market fills take part:
    futures ``INSURANCE_FUND``/``ADL``/``NA`` prints and any price or quantity <= 0 are
    excluded (BINANCE.md "Messages"), and because runs need contiguous ids, the
    ``f..l`` range of an aggregate never spans a hole or a non-market print.
    Runs never span two batches.

    Parameters
    ----------
    batch : raw trades.
    next_agg_id : next aggregate id per symbol index.

    Returns
    -------
    (AggBatch, list[int])
        The aggregates, ordered by the row of their last fill, and the updated
        ``next_agg_id``.
    """
    inst = batch.instruments
    next_ids = list(next_agg_id)
    usable = (batch.trade_type == MARKET) & (batch.price > 0) & (batch.qty > 0)
    parts = []
    for s in np.unique(batch.sym[usable]).tolist():
        rows = np.flatnonzero(usable & (batch.sym == s))
        ids, price = batch.trade_id[rows], batch.price[rows]
        m, t = batch.is_buyer_maker[rows], batch.time_ms[rows]
        new_run = np.ones(rows.size, dtype=bool)
        new_run[1:] = ((ids[1:] != ids[:-1] + 1) | (price[1:] != price[:-1])
                       | (m[1:] != m[:-1]) | (t[1:] != t[:-1]))
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], rows.size) - 1
        k = starts.size
        parts.append((
            np.full(k, s, np.int16), next_ids[s] + np.arange(k, dtype=np.int64), price[starts],
            np.add.reduceat(batch.qty[rows], starts), ids[starts], ids[ends], t[starts],
            batch.event_ms[rows[ends]], m[starts], rows[ends].astype(np.int64),
        ))
        next_ids[s] += k
    if not parts:
        i64 = np.zeros(0, np.int64)
        return AggBatch(inst, np.zeros(0, np.int16), i64, i64, i64, i64, i64, i64, i64,
                        np.zeros(0, bool), i64), next_ids
    cols = [np.concatenate(c) for c in zip(*parts)]
    order = np.argsort(cols[-1], kind="stable")  # publish after the last fill
    return AggBatch(inst, *(c[order] for c in cols)), next_ids
