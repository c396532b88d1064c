"""What a write is and what a read returns, apart from SQLite: the result types,
the columnar :class:`_Batch` built from trades or a tick frame, its validation,
the per-second bar rows of a batch, and argument checks shared by the store.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from quantlab.config import require_positive
from quantlab.errors import ConfigError
from quantlab.files import SYMBOL_RE
from quantlab.schema import (
    BAR_COLUMNS,
    BAR_DTYPES,
    KINDS,
    MARKETS,
    TICK_COLUMNS,
    empty_bars,
    market_print_mask,
    ms_to_utc_index,
)
from quantlab.store.sql import _INT64_MAX, _INT64_MIN, _MAX_TIME_MS


# --- results --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one :meth:`TickStore.write_trades` call did.

    Attributes
    ----------
    inserted : trades newly stored.
    duplicates : trades already stored, or repeated within the batch (not stored again).
    bars_touched : 1 s bars created or updated (market prints only).
    expired : trades older than the retention horizon, refused (see *Retention*).
    """

    inserted: int
    duplicates: int
    bars_touched: int
    expired: int = 0

    def __add__(self, other: "WriteResult") -> "WriteResult":
        if not isinstance(other, WriteResult):
            return NotImplemented
        return WriteResult(self.inserted + other.inserted, self.duplicates + other.duplicates,
                           self.bars_touched + other.bars_touched, self.expired + other.expired)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What :meth:`TickStore.apply_retention` deleted.

    Attributes
    ----------
    ticks_deleted, bars_deleted : rows removed.
    ticks_before_ms : ticks with ``time_ms`` below this were deleted (ms, UTC).
    bars_before_ms : bars with ``open_ms`` below this were deleted; None when bars were kept.
    """

    ticks_deleted: int
    bars_deleted: int
    ticks_before_ms: int | None
    bars_before_ms: int | None


# --- helpers --------------------------------------------------------------------
def _opt_int(field: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(field, value, "an int or None")
    return int(value)


def _window(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """``[start_ms, end_ms)`` as SQL bounds; None means unbounded."""
    lo = _opt_int("start_ms", start_ms)
    hi = _opt_int("end_ms", end_ms)
    lo = _INT64_MIN if lo is None else lo
    hi = _INT64_MAX if hi is None else hi
    if hi < lo:
        raise ConfigError("end_ms", end_ms, f"a time >= start_ms={start_ms}")
    return lo, hi


def _nullable_int(values: Sequence) -> pd.arrays.IntegerArray:
    """Int64 (nullable) array from Python ints and Nones."""
    mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    data = np.fromiter((0 if v is None else v for v in values), dtype=np.int64, count=len(values))
    return pd.arrays.IntegerArray(data, mask)


def _objects(values: Sequence) -> pd.Series:
    """An ``object`` column (pandas 3 would infer its ``str`` dtype; the
    schema's string columns are ``object``)."""
    return pd.Series(np.array(values, dtype=object), dtype=object, copy=False)


def _as_str_list(values: Iterable) -> list:
    return [None if v is None else str(v) for v in values]


@dataclass
class _Batch:
    """A write batch as columns: instruments factorised to ``code`` (index in
    ``keys``), numeric columns as numpy arrays, nullable ones as lists."""

    keys: list[tuple[str, str, str]]
    code: np.ndarray
    trade_id: np.ndarray
    time_ms: np.ndarray
    recv_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    is_buyer_maker: np.ndarray
    trade_type: Sequence
    first_trade_id: Sequence
    last_trade_id: Sequence

    @property
    def n(self) -> int:
        return int(self.trade_id.size)

    def market_print(self) -> np.ndarray:
        """Rows that belong in bars; the rule of
        :func:`quantlab.schema.is_market_print` (BINANCE.md, *Messages*)."""
        return market_print_mask(self.price, self.qty, self.trade_type)


def _factorise(markets: Sequence, symbols: Sequence, kinds: Sequence) -> tuple[list, np.ndarray]:
    n = len(markets)
    if n and markets.count(markets[0]) == n and kinds.count(kinds[0]) == n:
        if symbols.count(symbols[0]) == n:  # one instrument: the usual batch
            return [(markets[0], symbols[0], kinds[0])], np.zeros(n, dtype=np.int64)
        # One stream of several symbols (the ingester's batches): code by symbol.
        try:
            by_symbol = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
        except TypeError:  # unhashable: refused by _validate below
            by_symbol = None
        if by_symbol is not None:
            code = np.fromiter(map(by_symbol.__getitem__, symbols), dtype=np.int64, count=n)
            return [(markets[0], s, kinds[0]) for s in by_symbol], code
    index: dict[tuple, int] = {}
    code = np.fromiter((index.setdefault(k, len(index)) for k in zip(markets, symbols, kinds)),
                       dtype=np.int64, count=n)
    return list(index), code


def _batch_from_trades(trades: Sequence) -> _Batch:
    n = len(trades)
    try:
        # One C-level pass per attribute (operator.attrgetter + fromiter) is
        # faster than building row tuples and transposing them (zip(*rows)).
        def obj(name: str) -> list:
            return list(map(operator.attrgetter(name), trades))

        def num(name: str, dtype: type) -> np.ndarray:
            return np.fromiter(map(operator.attrgetter(name), trades), dtype=dtype, count=n)

        keys, code = _factorise(obj("market"), obj("symbol"), obj("kind"))
        return _Batch(keys, code, num("trade_id", np.int64), num("time_ms", np.int64),
                      num("recv_ms", np.int64), num("price", np.float64), num("qty", np.float64),
                      num("is_buyer_maker", bool), obj("trade_type"), obj("first_trade_id"),
                      obj("last_trade_id"))
    except AttributeError as exc:
        raise ConfigError("trades", type(trades[0]).__name__,
                          "a sequence of quantlab.binance.Trade or a tick DataFrame") from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError("trades", f"a field of invalid type ({exc})",
                          "int ids and times, float price and qty") from exc


def _batch_from_frame(frame: pd.DataFrame) -> _Batch:
    required = ("market", "symbol", "kind", "trade_id", "time_ms", "price", "qty",
                "is_buyer_maker")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ConfigError("trades", f"a frame without columns {missing}",
                          f"a tick frame of quantlab.schema (columns {', '.join(TICK_COLUMNS)})")
    n = len(frame)

    def nullable(name: str) -> list:
        if name not in frame.columns:
            return [None] * n
        return frame[name].to_numpy(dtype=object, na_value=None).tolist()

    keys, code = _factorise(_as_str_list(frame["market"].tolist()),
                            _as_str_list(frame["symbol"].tolist()),
                            _as_str_list(frame["kind"].tolist()))
    try:
        recv = (frame["recv_ms"].to_numpy(dtype=np.int64) if "recv_ms" in frame.columns
                else np.zeros(n, dtype=np.int64))
        return _Batch(keys, code,
                      frame["trade_id"].to_numpy(dtype=np.int64),
                      frame["time_ms"].to_numpy(dtype=np.int64), recv,
                      frame["price"].to_numpy(dtype=np.float64),
                      frame["qty"].to_numpy(dtype=np.float64),
                      frame["is_buyer_maker"].to_numpy(dtype=bool),
                      _as_str_list(nullable("trade_type")),
                      [None if v is None else int(v) for v in nullable("first_trade_id")],
                      [None if v is None else int(v) for v in nullable("last_trade_id")])
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError("trades", f"a column of invalid type or with missing values ({exc})",
                          "int ids and times, float price and qty, bool is_buyer_maker") from exc


def _validate(batch: _Batch) -> None:
    for market, symbol, kind in batch.keys:
        if market not in MARKETS:
            raise ConfigError("market", market, "one of 'spot', 'usdm'")
        if kind not in KINDS:
            raise ConfigError("kind", kind, "one of 'trade', 'aggTrade'")
        if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
            # ASCII only: 'ВТСUSDT' (Cyrillic look-alikes) passes str.isupper/isalnum.
            raise ConfigError("symbol", symbol, "an upper-case Binance symbol of ASCII letters and "
                                                "digits such as 'BTCUSDT'")
    t = batch.time_ms
    if t.size and (int(t.min()) < 0 or int(t.max()) >= _MAX_TIME_MS):
        bad = int(t.max()) if int(t.max()) >= _MAX_TIME_MS else int(t.min())
        raise ConfigError("time_ms", bad, "milliseconds since the epoch in [0, 1e13); a value "
                                          "near 1.7e15 is microseconds: divide by 1000")
    if not (np.isfinite(batch.price).all() and np.isfinite(batch.qty).all()):
        raise ConfigError("price/qty", "NaN or infinite values", "finite numbers")


def _bar_rows(keys: list, code: np.ndarray, t: np.ndarray, ids: np.ndarray, p: np.ndarray,
              q: np.ndarray, bm: np.ndarray) -> list[tuple]:
    """Per (instrument, second) aggregates of market prints, as UPSERT rows.

    Trades are sorted by (instrument, time_ms, trade_id), so the first row of a
    group is the open and the last the close (ties broken by trade id).
    """
    order = np.lexsort((ids, t, code))
    c, t, ids, p, q, bm = code[order], t[order], ids[order], p[order], q[order], bm[order]
    sec = t // 1000 * 1000
    n = t.size
    brk = np.empty(n, dtype=bool)
    brk[0] = True
    brk[1:] = (c[1:] != c[:-1]) | (sec[1:] != sec[:-1])
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], n) - 1
    pq = p * q
    taker_buy = ~bm
    cols = (
        sec[starts], p[starts], np.maximum.reduceat(p, starts), np.minimum.reduceat(p, starts),
        p[ends], np.add.reduceat(q, starts), np.add.reduceat(pq, starts), ends - starts + 1,
        np.add.reduceat(np.where(taker_buy, q, 0.0), starts),
        np.add.reduceat(np.where(taker_buy, pq, 0.0), starts),
        t[starts], ids[starts], t[ends], ids[ends],
    )
    group_keys = [keys[k] for k in c[starts].tolist()]
    return [(*k, *rest) for k, rest in zip(group_keys, zip(*(a.tolist() for a in cols)))]


def _readonly_hint(exc: BaseException) -> str:
    if "readonly" not in str(exc):
        return ""
    return ("; the file or its directory is read-only: reading still works (read_only=True, "
            "quantlab analyze --db), writing needs a writable directory for the -wal/-shm files")


# --- module helpers -------------------------------------------------------------
def _check_retention(keep_ticks_s: float | None, keep_bars_s: float | None) -> None:
    if keep_ticks_s is not None:
        require_positive("keep_ticks_s", keep_ticks_s)
    if keep_bars_s is not None:
        require_positive("keep_bars_s", keep_bars_s)
        if keep_ticks_s is None or keep_bars_s < keep_ticks_s:
            # Bars derive from ticks: a bar deleted while its ticks remain
            # would come back partial from a late trade.
            raise ConfigError("keep_bars_s", keep_bars_s,
                              f"None or a number >= keep_ticks_s={keep_ticks_s}")


def _check_instrument(market: str, symbol: str, kind: str) -> tuple[str, str, str]:
    if market not in MARKETS:
        raise ConfigError("market", market, "one of 'spot', 'usdm'")
    if kind not in KINDS:
        raise ConfigError("kind", kind, "one of 'trade', 'aggTrade'")
    if not isinstance(symbol, str) or not symbol.isalnum():
        raise ConfigError("symbol", symbol, "a Binance symbol such as 'BTCUSDT'")
    return market, symbol.upper(), kind


def _filters(symbol: str | None, market: str | None, kind: str | None) -> tuple[list, list]:
    where, params = [], []
    if symbol is not None:
        where.append("symbol = ?")
        params.append(str(symbol).upper())
    if market is not None:
        if market not in MARKETS:
            raise ConfigError("market", market, "one of 'spot', 'usdm'")
        where.append("market = ?")
        params.append(market)
    if kind is not None:
        if kind not in KINDS:
            raise ConfigError("kind", kind, "one of 'trade', 'aggTrade'")
        where.append("kind = ?")
        params.append(kind)
    return where, params


def _describe(symbol: str, market: str | None, kind: str | None) -> str:
    extra = [f"{k}={v!r}" for k, v in (("market", market), ("kind", kind)) if v is not None]
    return symbol.upper() + (f" ({', '.join(extra)})" if extra else "")


def _bars_frame(rows: np.ndarray, now_ms: int | None) -> pd.DataFrame:
    """Bar frame from rows of :data:`SQL_BARS_1S` (a ``_BAR_ROW`` array)."""
    if not rows.size:
        return empty_bars()
    col = lambda name: np.ascontiguousarray(rows[name])  # noqa: E731
    open_ms, volume, quote, close = col("open_ms"), col("volume"), col("quote_volume"), col("close")
    # Stored bars hold market prints only, so volume > 0; the guard keeps the
    # schema's rule (vwap = close without volume) should one ever not.
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = np.where(volume > 0, quote / np.where(volume > 0, volume, 1.0), close)
    n = open_ms.size
    data = {
        "open": col("open"), "high": col("high"), "low": col("low"), "close": close,
        "volume": volume, "quote_volume": quote, "trade_count": col("trade_count"), "vwap": vwap,
        "taker_buy_volume": col("taker_buy_volume"), "is_empty": np.zeros(n, dtype=bool),
        "is_forming": (open_ms + 1000 > now_ms) if now_ms is not None else np.zeros(n, dtype=bool),
    }
    return pd.DataFrame({k: np.asarray(data[k], dtype=BAR_DTYPES[k]) for k in BAR_COLUMNS},
                        index=ms_to_utc_index(open_ms))
