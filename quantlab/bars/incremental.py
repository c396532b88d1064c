"""The live bar builder: :class:`IncrementalBars` folds one trade at a time into
:class:`Bar` tuples (the same bars as the batch builders, late trades counted
and ignored), and :func:`bars_to_frame` turns them into a bar frame. Pure.
"""
from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from quantlab.bars.timeframes import _empty_frame, parse_timeframe
from quantlab.errors import ConfigError
from quantlab.schema import BAR_COLUMNS, BAR_DTYPES, ms_to_utc_index


# --- live: one trade at a time ---------------------------------------------------
class Bar(NamedTuple):
    """One bar from :class:`IncrementalBars`; the fields of a row of the bar frame
    plus ``open_ms`` (the bar's open, ms since the epoch UTC)."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trade_count: int
    vwap: float
    taker_buy_volume: float
    is_empty: bool
    is_forming: bool


def bars_to_frame(bars: Iterable[Bar]) -> pd.DataFrame:
    """Bar frame of :mod:`quantlab.schema` from :class:`Bar` values.

    >>> live = IncrementalBars("1s")
    >>> closed = live.add_many([100, 2_300], [5.0, 6.0], [1.0, 1.0], [True, False])
    >>> bars_to_frame(closed)[["close", "is_empty"]]  # doctest: +NORMALIZE_WHITESPACE
                                    close  is_empty
    open_time
    1970-01-01 00:00:00+00:00         5.0     False
    1970-01-01 00:00:01+00:00         5.0      True
    """
    rows = list(bars)
    if not rows:
        return _empty_frame()
    arr = list(zip(*rows))
    open_ms = np.asarray(arr[0], dtype=np.int64)
    data = {name: np.asarray(arr[i + 1], dtype=BAR_DTYPES[name])
            for i, name in enumerate(Bar._fields[1:])}
    return pd.DataFrame({k: data[k] for k in BAR_COLUMNS}, index=ms_to_utc_index(open_ms))


class IncrementalBars:
    """Live bar builder: O(1) per trade, same bars as :func:`resample_ticks`.

    Parameters
    ----------
    timeframe : str or int
        See :func:`parse_timeframe`.
    grace_ms : int
        :meth:`flush` closes a bar only once ``now_ms - grace_ms`` has passed its
        close, leaving time for trades still in flight (exchange time lags the
        local clock by the feed latency). 0 by default.

    Attributes
    ----------
    timeframe_ms : int
    late_trades : int
        Trades ignored because their bar had already been emitted (see the
        module's *Late trades* policy; the batch path includes them).
    trades : int
        Trades accepted.

    Notes
    -----
    Bars start at the bar of the first trade (no leading empty bars). When a
    trade opens a bar several bars after the previous one, the empty bars in
    between are emitted as explicit rows carrying the last close; that costs
    one row per skipped bar. Trade ids are not de-duplicated here: the
    ingester de-duplicates by id. One writer: not thread-safe.

    Examples
    --------
    >>> live = IncrementalBars("1m")
    >>> live.add(1_000, 10.0, 1.0, False, trade_id=1)
    []
    >>> live.add(2_000, 11.0, 3.0, True, trade_id=2)
    []
    >>> live.forming.close, live.forming.vwap, live.forming.is_forming
    (11.0, 10.75, True)
    >>> [b.open_ms for b in live.add(185_000, 12.0, 1.0, True, trade_id=3)]
    [0, 60000, 120000]
    >>> live.add(30_000, 9.0, 1.0, True, trade_id=0), live.late_trades
    ([], 1)
    >>> [(b.open_ms, b.close) for b in live.flush(now_ms=240_000)]
    [(180000, 12.0)]
    """

    __slots__ = ("timeframe_ms", "grace_ms", "late_trades", "trades", "_bin", "_done", "_o",
                 "_h", "_l", "_c", "_v", "_qv", "_n", "_buy", "_ft", "_fid", "_lt", "_lid")

    def __init__(self, timeframe: str | int = "1s", *, grace_ms: int = 0):
        self.timeframe_ms = parse_timeframe(timeframe)
        if isinstance(grace_ms, bool) or not isinstance(grace_ms, (int, np.integer)) or grace_ms < 0:
            raise ConfigError("grace_ms", grace_ms, "an int of milliseconds >= 0")
        self.grace_ms = int(grace_ms)
        self.late_trades = 0
        self.trades = 0
        self._bin: int | None = None   # bar number (open_ms // timeframe_ms) of the forming bar
        self._done: int | None = None  # last bar number emitted
        self._c = math.nan             # last close, carried into empty bars

    def _current(self, forming: bool) -> Bar:
        v = self._v
        vwap = self._qv / v if v > 0 else self._c
        return Bar(self._bin * self.timeframe_ms, self._o, self._h, self._l, self._c, v,
                   self._qv, self._n, vwap, self._buy, False, forming)

    def _empty(self, k: int) -> Bar:
        c = self._c
        return Bar(k * self.timeframe_ms, c, c, c, c, 0.0, 0.0, 0, c, 0.0, True, False)

    @property
    def forming(self) -> Bar | None:
        """The bar receiving trades (``is_forming`` true), or None."""
        return None if self._bin is None else self._current(True)

    def add(self, time_ms: int, price: float, qty: float, is_buyer_maker: bool,
            trade_id: int | None = None) -> list[Bar]:
        """Add one trade; return the bars it closed (oldest first, often none).

        Parameters
        ----------
        time_ms : int
            Exchange trade time ``T``, ms since the epoch (UTC).
        price : float
            Quote currency per base unit.
        qty : float
            Base units.
        is_buyer_maker : bool
            Binance ``m`` (true: the taker sold).
        trade_id : int, optional
            Orders trades of equal ``time_ms`` for open/close.

        Returns
        -------
        list of Bar
            Closed bars, including explicit empty bars skipped over.
        """
        b = time_ms // self.timeframe_ms
        if b == self._bin:
            # Same bar: any arrival order gives the (time, id)-ordered open/close.
            if price > self._h:
                self._h = price
            if price < self._l:
                self._l = price
            self._v += qty
            self._qv += price * qty
            self._n += 1
            if not is_buyer_maker:
                self._buy += qty
            lt = self._lt
            if time_ms > lt or (time_ms == lt and (trade_id is None or self._lid is None
                                                   or trade_id >= self._lid)):
                self._c, self._lt, self._lid = price, time_ms, trade_id
            ft = self._ft
            if time_ms < ft or (time_ms == ft and trade_id is not None and self._fid is not None
                                and trade_id < self._fid):
                self._o, self._ft, self._fid = price, time_ms, trade_id
            self.trades += 1
            return []
        if (self._bin is not None and b < self._bin) or (self._done is not None and b <= self._done):
            self.late_trades += 1
            return []
        out: list[Bar] = []
        if self._bin is not None:
            out.append(self._current(False))
            self._done = self._bin
        if self._done is not None:
            for k in range(self._done + 1, b):
                out.append(self._empty(k))
        self._bin = b
        self._o = self._h = self._l = self._c = price
        self._v = qty
        self._qv = price * qty
        self._n = 1
        self._buy = 0.0 if is_buyer_maker else qty
        self._ft = self._lt = time_ms
        self._fid = self._lid = trade_id
        self.trades += 1
        return out

    def add_many(self, time_ms: Sequence[int] | np.ndarray, price: Sequence[float] | np.ndarray,
                 qty: Sequence[float] | np.ndarray, is_buyer_maker: Sequence[bool] | np.ndarray,
                 trade_id: Sequence[int] | np.ndarray | None = None) -> list[Bar]:
        """:meth:`add` for each trade, in the given order; the closed bars, oldest first."""
        ts = np.asarray(time_ms, dtype=np.int64).tolist()
        ps = np.asarray(price, dtype=np.float64).tolist()
        qs = np.asarray(qty, dtype=np.float64).tolist()
        ms = np.asarray(is_buyer_maker, dtype=bool).tolist()
        ids = [None] * len(ts) if trade_id is None else np.asarray(trade_id, dtype=np.int64).tolist()
        if not (len(ts) == len(ps) == len(qs) == len(ms) == len(ids)):
            raise ConfigError("add_many", "arrays of different lengths", "one value per trade")
        out: list[Bar] = []
        add = self.add
        for t, p, q, m, i in zip(ts, ps, qs, ms, ids):
            closed = add(t, p, q, m, i)
            if closed:
                out.extend(closed)
        return out

    def flush(self, now_ms: int) -> list[Bar]:
        """Close the bars whose time has passed; return them, oldest first.

        A bar is closed once ``now_ms - grace_ms >= open_ms + timeframe_ms``.
        Empty bars between the last emitted bar and the bar containing
        ``now_ms - grace_ms`` are emitted too (only after a first trade).
        Afterwards :attr:`forming` is None until the next trade.
        """
        limit_bin = (int(now_ms) - self.grace_ms) // self.timeframe_ms  # still open
        out: list[Bar] = []
        if self._bin is not None and self._bin < limit_bin:
            out.append(self._current(False))
            self._done = self._bin
            self._bin = None
        if self._bin is None and self._done is not None:
            for k in range(self._done + 1, limit_bin):
                out.append(self._empty(k))
            if limit_bin - 1 > self._done:
                self._done = limit_bin - 1
        return out


