"""Writes of the tick store: :meth:`TickStore.write_trades` (dedup against stored
ids, multi-row INSERTs, the 1 s bar UPSERT, all in one transaction) and retention.
"""
from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, StoreError
from quantlab.schema import now_ms as _now_ms
from quantlab.transaction import write_transaction
from quantlab.store.batch import (
    RetentionResult,
    WriteResult,
    _Batch,
    _bar_rows,
    _batch_from_frame,
    _batch_from_trades,
    _check_retention,
    _opt_int,
    _validate,
)
from quantlab.store.sql import (
    _Constant,
    _IN_CHUNK,
    _NULLABLE_COLUMNS,
    _ROWS_PER_INSERT,
    _TICK_VALUE_COLUMNS,
    _UPSERT_BARS,
    _UPSERT_INSTRUMENT,
    _constant_literal,
    _insert_sql,
)

logger = logging.getLogger(__name__)


class _Writes:
    """Writes and retention of :class:`~quantlab.store.TickStore` (a mixin: it uses the
    store's lock and connection)."""

    # ------------------------------------------------------------------ writes
    def write_trades(self, trades: Sequence | pd.DataFrame) -> WriteResult:
        """Store trades and update their 1 s bars, in one transaction.

        Parameters
        ----------
        trades : sequence of :class:`quantlab.binance.Trade`, or DataFrame
            A tick frame of :mod:`quantlab.schema` is accepted too (``recv_ms``,
            ``trade_type``, ``first_trade_id``, ``last_trade_id`` optional). Any
            order, any mix of instruments; repeated and already stored trades
            are skipped.

        Returns
        -------
        WriteResult
            ``inserted + duplicates + expired == len(trades)``.

        Raises
        ------
        ConfigError
            An invalid market, kind or symbol, a time not in milliseconds, a
            NaN price or quantity. Nothing is written.
        StoreError
            Read-only store, or SQLite failed (e.g. the write lock was held
            longer than ``busy_timeout_s``); the transaction is rolled back.

        Notes
        -----
        Per (instrument, second) of the new market prints the batch's open,
        high, low, close, volumes, count and the keys ``(time_ms, trade_id)``
        of its open and close trades are merged into ``bars_1s`` (see the
        module docstring), so bars equal a recomputation from the stored ticks
        whatever order trades arrive in, up to float rounding of the sums.
        Throughput: see ``benchmarks/store.py``.
        """
        if isinstance(trades, pd.DataFrame):
            batch = _batch_from_frame(trades)
        else:
            if not isinstance(trades, (list, tuple)):
                trades = list(trades)
            if not trades:
                return WriteResult(0, 0, 0, 0)
            batch = _batch_from_trades(trades)
        if batch.n == 0:
            return WriteResult(0, 0, 0, 0)
        _validate(batch)
        with self._lock:
            con = self._writable()
            try:
                with write_transaction(con):
                    result = self._write_batch(con, batch)
            except sqlite3.Error as exc:
                raise self._fail(exc, f"writing {batch.n} trades") from exc
            if result.expired:
                logger.warning("%d trades older than the retention horizon were not stored",
                               result.expired)
            if self.keep_ticks_s is not None and \
                    time.monotonic() - self._last_retention >= self.retention_interval_s:
                try:
                    self.apply_retention()
                except StoreError:
                    # The trades are committed; a failed clean-up must not make
                    # the caller retry them. The next interval tries again.
                    logger.exception("automatic retention failed")
        return result

    def _write_batch(self, con: sqlite3.Connection, b: _Batch) -> WriteResult:
        n = b.n
        keep = np.ones(n, dtype=bool)
        # 1. Repeats inside the batch: keep the first occurrence (lexsort is stable).
        order = np.lexsort((b.trade_id, b.code))
        c_s, id_s = b.code[order], b.trade_id[order]
        rep = (c_s[1:] == c_s[:-1]) & (id_s[1:] == id_s[:-1])
        keep[order[1:][rep]] = False
        # 2. Older than the retention horizon: their twins may have been deleted,
        #    so they cannot be checked for duplicates; refuse rather than double count.
        expired = 0
        row = con.execute("SELECT value FROM meta WHERE key = 'ticks_deleted_before_ms'").fetchone()
        if row is not None:
            old = keep & (b.time_ms < int(row[0]))
            expired = int(old.sum())
            keep &= ~old
        # 3. Already stored. Under BEGIN IMMEDIATE nobody else can insert until
        #    COMMIT, so the plain INSERT below cannot conflict.
        for c, (market, symbol, kind) in enumerate(b.keys):
            sel = keep & (b.code == c) if len(b.keys) > 1 else keep
            ids = b.trade_id[sel]
            if ids.size == 0:
                continue
            stored = self._stored_among(con, market, symbol, kind, ids)
            if stored.size:
                keep &= ~(np.isin(b.trade_id, stored) & (b.code == c))
        inserted = int(keep.sum())
        duplicates = n - inserted - expired
        if inserted == 0:
            return WriteResult(0, duplicates, 0, expired)

        idx = None if inserted == n else np.flatnonzero(keep)

        def pick(a: Any) -> Any:
            if idx is None:
                return a
            if isinstance(a, np.ndarray):
                return a[idx]
            return [a[i] for i in idx.tolist()]

        code, tid, tms = pick(b.code), pick(b.trade_id), pick(b.time_ms)
        price, qty, bm = pick(b.price), pick(b.qty), pick(b.is_buyer_maker)
        # TICK_COLUMNS[3:] order.
        columns = (tid, tms, pick(b.recv_ms), price, qty, bm, pick(b.trade_type),
                   pick(b.first_trade_id), pick(b.last_trade_id))
        self._insert_rows(con, b.keys, code, columns)

        # Bars: market prints among the inserted trades.
        mp = b.market_print()
        if idx is not None:
            mp = mp[idx]
        bars_touched = 0
        if mp.any():
            if mp.all():
                rows = _bar_rows(b.keys, code, tms, tid, price, qty, bm)
            else:
                rows = _bar_rows(b.keys, code[mp], tms[mp], tid[mp], price[mp], qty[mp], bm[mp])
            con.executemany(_UPSERT_BARS, rows)
            bars_touched = len(rows)

        # Registry of instruments (counts, ranges, last id) for O(1) summaries.
        reg = []
        for c, key in enumerate(b.keys):
            sel = code == c
            if len(b.keys) > 1 and not sel.any():
                continue
            t_c, id_c = (tms, tid) if len(b.keys) == 1 else (tms[sel], tid[sel])
            reg.append((*key, int(t_c.size), int(t_c.min()), int(t_c.max()), int(id_c.max())))
        con.executemany(_UPSERT_INSTRUMENT, reg)
        return WriteResult(inserted, duplicates, bars_touched, expired)

    @staticmethod
    def _stored_among(con: sqlite3.Connection, market: str, symbol: str, kind: str,
                      ids: np.ndarray) -> np.ndarray:
        """The ids of ``ids`` already in ``ticks`` (covering unique index)."""
        lo, hi = int(ids.min()), int(ids.max())
        if hi - lo < 4 * ids.size + 1_000:  # dense: one range scan
            cur = con.execute("SELECT trade_id FROM ticks WHERE market = ? AND symbol = ? "
                              "AND kind = ? AND trade_id BETWEEN ? AND ?",
                              (market, symbol, kind, lo, hi))
            return np.fromiter(itertools.chain.from_iterable(cur), dtype=np.int64)
        found = []
        uniq = np.unique(ids).tolist()
        for i in range(0, len(uniq), _IN_CHUNK):
            chunk = uniq[i:i + _IN_CHUNK]
            cur = con.execute("SELECT trade_id FROM ticks WHERE market = ? AND symbol = ? "
                              f"AND kind = ? AND trade_id IN ({','.join('?' * len(chunk))})",
                              (market, symbol, kind, *chunk))
            found.extend(itertools.chain.from_iterable(cur))
        return np.asarray(found, dtype=np.int64)

    @staticmethod
    def _insert_rows(con: sqlite3.Connection, keys: list, code: np.ndarray, columns: tuple) -> None:
        """INSERT the rows given as columns (``TICK_COLUMNS[3:]`` order: numpy
        arrays or lists), of instrument ``keys[code[i]]``.

        Per instrument, multi-row statements carry market, symbol and kind as
        SQL literals, and so do nullable columns that are NULL (or one known
        constant such as 'MARKET') for all its rows; only the rest is bound,
        column by column (numbered parameters), so no per-row tuples are built.
        Binding None (and bool) goes through sqlite3's adapter lookup; a string
        parameter is copied: literals make the INSERT ~2x cheaper (see
        benchmarks/store.py). Python values are built per chunk of rows, so a
        multi-million-row frame never exists as Python objects all at once.
        """
        n = code.size
        if len(keys) == 1:
            groups: list = [(keys[0], None)]
        else:
            order = np.argsort(code, kind="stable")
            bounds = np.searchsorted(code[order], np.arange(len(keys) + 1))
            groups = [(keys[c], order[bounds[c]:bounds[c + 1]]) for c in range(len(keys))
                      if bounds[c + 1] > bounds[c]]
            # Nullable columns constant over the whole batch (e.g. all None
            # on spot) need not be picked per instrument.
            columns = tuple(
                _Constant(c, lit) if name in _NULLABLE_COLUMNS and not isinstance(c, np.ndarray)
                and len(c) and (lit := _constant_literal(c)) is not None else c
                for name, c in zip(_TICK_VALUE_COLUMNS, columns))
        chunk = 500 * _ROWS_PER_INSERT
        for key, idx in groups:
            m = n if idx is None else idx.size
            if idx is None:
                cols = columns
            else:
                cols = tuple(c[idx] if isinstance(c, np.ndarray)
                             else c if c.__class__ is _Constant
                             else [c[i] for i in idx.tolist()] for c in columns)
            for lo in range(0, m, chunk):
                hi = min(m, lo + chunk)
                bound: list = []
                lits: list = []
                for name, c in zip(_TICK_VALUE_COLUMNS, cols):
                    if c.__class__ is _Constant:
                        lits.append(c.literal)
                        continue
                    part = c[lo:hi]
                    if isinstance(part, np.ndarray):
                        # bool -> int: sqlite3 binds exact ints directly
                        bound.append(part.astype(np.int64).tolist() if part.dtype == bool
                                     else part.tolist())
                        lits.append(None)
                        continue
                    lit = _constant_literal(part) if name in _NULLABLE_COLUMNS else None
                    if lit is None:
                        bound.append(list(part))
                    lits.append(lit)
                _Writes._insert_bound(con, key, tuple(lits), bound, hi - lo)

    @staticmethod
    def _insert_bound(con: sqlite3.Connection, key: tuple, lits: tuple, bound: list,
                      m: int) -> None:
        done = 0
        for size in (_ROWS_PER_INSERT, 10, 1):
            count = (m - done) // size
            if not count:
                continue
            sql = _insert_sql(key, lits, size)
            start = done
            con.executemany(sql, (list(itertools.chain.from_iterable(
                [c[s:s + size] for c in bound]))
                for s in range(start, start + count * size, size)))
            done += count * size

    # ------------------------------------------------------------------ retention
    def apply_retention(self, *, keep_ticks_s: float | None = None,
                        keep_bars_s: float | None = None,
                        now_ms: int | None = None) -> RetentionResult:
        """Delete ticks older than ``keep_ticks_s`` (and bars older than ``keep_bars_s``).

        Parameters
        ----------
        keep_ticks_s : float, optional
            Keep ticks with ``time_ms >= now_ms - keep_ticks_s * 1000`` (s).
            Defaults to the store's setting; one of the two is required.
        keep_bars_s : float, optional
            Likewise for 1 s bars by ``open_ms`` (s, >= ``keep_ticks_s``); None
            (and no store setting) keeps every bar.
        now_ms : int, optional
            Reference time (ms, UTC). Default: the newest stored trade time,
            capped at the wall clock, so a replay of old data is not wiped as
            it is written and a bogus future timestamp cannot wipe the rest.

        Returns
        -------
        RetentionResult

        Notes
        -----
        The deleted horizon is remembered: later trades older than it are
        refused by :meth:`write_trades` (``expired``), because their
        duplicates can no longer be detected. One transaction; a first run
        over months of ticks holds the write lock for a while.
        """
        keep_ticks_s = self.keep_ticks_s if keep_ticks_s is None else keep_ticks_s
        keep_bars_s = self.keep_bars_s if keep_bars_s is None else keep_bars_s
        if keep_ticks_s is None:
            raise ConfigError("keep_ticks_s", None,
                              "seconds of ticks to keep (here or on the store)")
        _check_retention(keep_ticks_s, keep_bars_s)
        with self._lock:
            con = self._writable()
            self._last_retention = time.monotonic()
            try:
                with write_transaction(con):
                    result = self._retain(con, keep_ticks_s, keep_bars_s,
                                          _opt_int("now_ms", now_ms))
            except sqlite3.Error as exc:
                raise self._fail(exc, "retention") from exc
        if result.ticks_deleted or result.bars_deleted:
            logger.info("retention deleted %d ticks before %s and %d bars before %s",
                        result.ticks_deleted, result.ticks_before_ms, result.bars_deleted,
                        result.bars_before_ms)
        return result

    def _retain(self, con: sqlite3.Connection, keep_ticks_s: float, keep_bars_s: float | None,
                now_ms: int | None) -> RetentionResult:
        if now_ms is None:
            newest = con.execute("SELECT max(last_ms) FROM instruments").fetchone()[0]
            if newest is None:
                return RetentionResult(0, 0, None, None)
            now_ms = min(int(newest), _now_ms())
        ticks_before = now_ms - int(round(keep_ticks_s * 1000))
        bars_before = None if keep_bars_s is None else now_ms - int(round(keep_bars_s * 1000))
        ticks_deleted = bars_deleted = 0
        keys = con.execute("SELECT market, symbol, kind FROM instruments").fetchall()
        for key in keys:
            # Per instrument, so each DELETE is a range on the primary key.
            n = con.execute("DELETE FROM ticks WHERE market = ? AND symbol = ? AND kind = ? "
                            "AND time_ms < ?", (*key, ticks_before)).rowcount
            if n:
                ticks_deleted += n
                first = con.execute("SELECT min(time_ms) FROM ticks WHERE market = ? AND "
                                    "symbol = ? AND kind = ?", key).fetchone()[0]
                last = con.execute("SELECT max(time_ms) FROM ticks WHERE market = ? AND "
                                   "symbol = ? AND kind = ?", key).fetchone()[0]
                con.execute("UPDATE instruments SET n_ticks = n_ticks - ?, first_ms = ?, "
                            "last_ms = ? WHERE market = ? AND symbol = ? AND kind = ?",
                            (n, first, last, *key))
            if bars_before is not None:
                bars_deleted += con.execute(
                    "DELETE FROM bars_1s WHERE market = ? AND symbol = ? AND kind = ? "
                    "AND open_ms < ?", (*key, bars_before)).rowcount
        con.execute("INSERT INTO meta (key, value) VALUES ('ticks_deleted_before_ms', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                    (ticks_before,))
        if bars_before is not None:
            con.execute("INSERT INTO meta (key, value) VALUES ('bars_deleted_before_ms', ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                        (bars_before,))
        return RetentionResult(ticks_deleted, bars_deleted, ticks_before, bars_before)
