"""Reads of the tick store: instruments, ids, counts, symbol resolution, ticks,
1 s bars and bars of any timeframe (range searches on primary keys).
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from quantlab.errors import AmbiguousSymbol, ConfigError, UnknownSymbol
from quantlab.schema import TICK_COLUMNS, empty_ticks
from quantlab.store.batch import (
    _bars_frame,
    _check_instrument,
    _describe,
    _filters,
    _nullable_int,
    _objects,
    _opt_int,
    _window,
)
from quantlab.store.sql import (
    SQL_BARS_1S,
    SQL_TICKS,
    _BAR_ROW,
    _INT64_MAX,
    _INT64_MIN,
    _SQL_BAR_BEFORE,
    _TICK_ROW,
)


class _Reads:
    """Reads of :class:`~quantlab.store.TickStore` (a mixin)."""

    # ------------------------------------------------------------------ reads
    def instruments(self) -> pd.DataFrame:
        """What the store holds: one row per (market, symbol, kind).

        Returns
        -------
        DataFrame
            ``market, symbol, kind, n_ticks, first_ms, last_ms, last_trade_id``:
            rows in ``ticks`` now, their ``time_ms`` range (ms, UTC; <NA> when
            retention removed them all) and the largest trade id ever stored.
            O(number of instruments): read from a registry kept with every write.
        """
        with self._lock:
            rows = self._conn().execute(
                "SELECT market, symbol, kind, n_ticks, first_ms, last_ms, last_trade_id "
                "FROM instruments ORDER BY market, symbol, kind").fetchall()
        cols = list(zip(*rows)) if rows else [()] * 7
        return pd.DataFrame({
            "market": _objects(cols[0]), "symbol": _objects(cols[1]),
            "kind": _objects(cols[2]), "n_ticks": np.array(cols[3], dtype=np.int64),
            "first_ms": _nullable_int(cols[4]), "last_ms": _nullable_int(cols[5]),
            "last_trade_id": np.array(cols[6], dtype=np.int64),
        })

    symbols = instruments

    def last_trade_id(self, market: str, symbol: str, kind: str) -> int | None:
        """Largest trade id ever stored for the stream, or None (kept by retention)."""
        market, symbol, kind = _check_instrument(market, symbol, kind)
        with self._lock:
            row = self._conn().execute(
                "SELECT last_trade_id FROM instruments "
                "WHERE market = ? AND symbol = ? AND kind = ?",
                (market, symbol, kind)).fetchone()
        return None if row is None else int(row[0])

    def trade_ids(self, market: str, symbol: str, kind: str, start_id: int | None = None,
                  end_id: int | None = None) -> np.ndarray:
        """Stored trade ids in ``[start_id, end_id]`` (inclusive), sorted, int64.

        For gap checks: ``np.setdiff1d(np.arange(a, b + 1), store.trade_ids(m, s, k, a, b))``
        are the ids still missing.
        """
        market, symbol, kind = _check_instrument(market, symbol, kind)
        lo = _opt_int("start_id", start_id)
        hi = _opt_int("end_id", end_id)
        with self._lock:
            cur = self._conn().execute(
                "SELECT trade_id FROM ticks WHERE market = ? AND symbol = ? AND kind = ? "
                "AND trade_id BETWEEN ? AND ? ORDER BY trade_id",
                (market, symbol, kind, _INT64_MIN if lo is None else lo,
                 _INT64_MAX if hi is None else hi))
            return np.fromiter(itertools.chain.from_iterable(cur), dtype=np.int64)

    def count(self, symbol: str | None = None, *, market: str | None = None,
              kind: str | None = None, start_ms: int | None = None,
              end_ms: int | None = None) -> int:
        """Number of stored ticks matching the filters (summed over matching streams).

        Without a time window this reads the registry (O(1) per instrument);
        with one it counts on the primary key.
        """
        where, params = _filters(symbol, market, kind)
        sql_where = (" WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            con = self._conn()
            if start_ms is None and end_ms is None:
                row = con.execute(f"SELECT coalesce(sum(n_ticks), 0) FROM instruments{sql_where}",
                                  params).fetchone()
                return int(row[0])
            lo, hi = _window(start_ms, end_ms)
            total = 0
            for key in con.execute(f"SELECT market, symbol, kind FROM instruments{sql_where}",
                                   params).fetchall():
                total += con.execute(
                    "SELECT count(*) FROM ticks WHERE market = ? AND symbol = ? AND kind = ? "
                    "AND time_ms >= ? AND time_ms < ?", (*key, lo, hi)).fetchone()[0]
            return int(total)

    def resolve(self, symbol: str, *, market: str | None = None,
                kind: str | None = None) -> tuple[str, str, str]:
        """The one stored ``(market, symbol, kind)`` matching the arguments.

        Raises
        ------
        UnknownSymbol
            Nothing stored matches; the message lists what is stored.
        AmbiguousSymbol
            Several streams match (same symbol on spot and usdm, or as trade
            and aggTrade); the message lists the choices.
        """
        if not isinstance(symbol, str) or not symbol:
            raise ConfigError("symbol", symbol, "a Binance symbol such as 'BTCUSDT'")
        where, params = _filters(symbol, market, kind)
        with self._lock:
            con = self._conn()
            rows = con.execute("SELECT market, symbol, kind FROM instruments WHERE "
                               + " AND ".join(where) + " ORDER BY market, kind", params).fetchall()
            if len(rows) == 1:
                return tuple(rows[0])  # type: ignore[return-value]
            if not rows:
                stored = con.execute("SELECT market, symbol, kind FROM instruments "
                                     "ORDER BY symbol, market, kind").fetchall()
                raise UnknownSymbol(_describe(symbol, market, kind),
                                    [f"{s} (market={m!r}, kind={k!r})" for m, s, k in stored])
        raise AmbiguousSymbol(symbol.upper(), [(m, k) for m, _, k in rows])

    def ticks(self, symbol: str, *, market: str | None = None, kind: str | None = None,
              start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
        """Stored trades of one stream, ordered by ``(time_ms, trade_id)``.

        Parameters
        ----------
        symbol : str
            E.g. ``"BTCUSDT"`` (case-insensitive).
        market, kind : str, optional
            Needed only when the symbol is stored for several streams
            (:class:`AmbiguousSymbol` otherwise).
        start_ms, end_ms : int, optional
            Exchange-time window ``start_ms <= time_ms < end_ms`` (ms, UTC).

        Returns
        -------
        DataFrame
            Tick frame of :mod:`quantlab.schema` (every row, market prints or not).
        """
        market, symbol, kind = self.resolve(symbol, market=market, kind=kind)
        lo, hi = _window(start_ms, end_ms)
        with self._lock:
            rows = np.fromiter(self._conn().execute(SQL_TICKS, (market, symbol, kind, lo, hi)),
                               dtype=_TICK_ROW)
        n = rows.size
        if not n:
            return empty_ticks()
        col = lambda name: np.ascontiguousarray(rows[name])  # noqa: E731
        data = {
            "market": _objects(np.full(n, market, dtype=object)),
            "symbol": _objects(np.full(n, symbol, dtype=object)),
            "kind": _objects(np.full(n, kind, dtype=object)),
            "trade_id": col("trade_id"), "time_ms": col("time_ms"), "recv_ms": col("recv_ms"),
            "price": col("price"), "qty": col("qty"), "is_buyer_maker": col("is_buyer_maker"),
            "trade_type": _objects(col("trade_type")),
            "first_trade_id": pd.arrays.IntegerArray(col("first_trade_id"), col("first_null")),
            "last_trade_id": pd.arrays.IntegerArray(col("last_trade_id"), col("last_null")),
        }
        return pd.DataFrame(data, columns=list(TICK_COLUMNS))

    def bars_1s(self, symbol: str, *, market: str | None = None, kind: str | None = None,
                start_ms: int | None = None, end_ms: int | None = None,
                now_ms: int | None = None) -> pd.DataFrame:
        """The stored (non-empty) 1 s bars of one stream.

        Parameters
        ----------
        symbol, market, kind : as in :meth:`ticks`.
        start_ms, end_ms : int, optional
            Bars with ``start_ms <= open_ms < end_ms`` (ms, UTC).
        now_ms : int, optional
            Marks ``is_forming`` the bars with ``open_ms + 1000 > now_ms``.
            None (default): none is forming, as in :mod:`quantlab.bars`.

        Returns
        -------
        DataFrame
            Bar frame of :mod:`quantlab.schema` (``is_empty`` all false: seconds
            without market prints have no row), ``vwap = quote_volume / volume``.
            ``attrs`` holds ``market``, ``symbol``, ``kind``, ``timeframe``.
        """
        market, symbol, kind = self.resolve(symbol, market=market, kind=kind)
        lo, hi = _window(start_ms, end_ms)
        now = _opt_int("now_ms", now_ms)
        with self._lock:
            rows = np.fromiter(self._conn().execute(SQL_BARS_1S, (market, symbol, kind, lo, hi)),
                               dtype=_BAR_ROW)
        frame = _bars_frame(rows, now)
        frame.attrs.update(market=market, symbol=symbol, kind=kind, timeframe="1s")
        return frame

    def bars(self, symbol: str, timeframe: str | int = "1m", *, market: str | None = None,
             kind: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
             now_ms: int | None = None) -> pd.DataFrame:
        """Bars of any timeframe (a multiple of 1 s), from the stored 1 s bars.

        Parameters
        ----------
        symbol, market, kind : as in :meth:`ticks`.
        timeframe : str or int
            ``"1s"``, ``"1m"``, ``"5m"``, ``"1h"`` ... or ms; see
            :func:`quantlab.bars.parse_timeframe`.
        start_ms, end_ms : int, optional
            Cover the bars overlapping ``[start_ms, end_ms)`` (ms, UTC), with
            explicit empty bars; see :func:`quantlab.bars.aggregate_bars`.
        now_ms : int, optional
            Marks the forming bar (``open_ms + timeframe > now_ms``).

        Returns
        -------
        DataFrame
            Bar frame of :mod:`quantlab.schema`, built by
            :func:`quantlab.bars.aggregate_bars` (empty bars explicit, carrying
            the previous close: the last stored bar before the window is read
            to seed them). Reads at most one 1 s bar per second of the window.
        """
        from quantlab.bars import aggregate_bars, parse_timeframe  # bars is pure; keep import light

        tf = parse_timeframe(timeframe)
        if tf % 1000:
            raise ConfigError("timeframe", timeframe, "a multiple of 1 s (the stored bars are 1 s)")
        market, symbol, kind = self.resolve(symbol, market=market, kind=kind)
        lo, hi = _window(start_ms, end_ms)
        now = _opt_int("now_ms", now_ms)
        # Whole target bars: aggregate_bars floors start_ms to the grid and
        # counts every trade of the bars it covers.
        lo_q = lo if start_ms is None else lo // tf * tf
        hi_q = hi if end_ms is None else -(-hi // tf) * tf
        with self._lock:
            con = self._conn()
            rows = np.fromiter(con.execute(SQL_BARS_1S, (market, symbol, kind, lo_q, hi_q)),
                               dtype=_BAR_ROW)
            if start_ms is not None:
                # Seed: leading empty bars carry the last close before the window.
                seed = np.fromiter(con.execute(_SQL_BAR_BEFORE, (market, symbol, kind, lo_q)),
                                   dtype=_BAR_ROW)
                rows = np.concatenate([seed, rows])
        fine = _bars_frame(rows, None)
        out = aggregate_bars(fine, tf, start_ms=start_ms, end_ms=end_ms, now_ms=now,
                             source_timeframe="1s")
        out.attrs.update(market=market, symbol=symbol, kind=kind, timeframe=timeframe)
        return out
