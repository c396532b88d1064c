"""The tick store: quantlab's one shared state, a SQLite file in WAL mode.

One writer (the ingester's writer thread, or ``quantlab import``) stores trades
while notebooks and report processes read them::

    with TickStore("data/live.db") as store:            # read-write, creates the file
        store.write_trades(trades)                       # WriteResult(inserted=..., ...)
    ro = TickStore("data/live.db", read_only=True)       # in any other thread or process
    ro.bars("BTCUSDT", "1m", start_ms=..., end_ms=...)   # bar frame of quantlab.schema

Guarantees
----------
* **A trade is stored once** however often it arrives (overlap after a
  reconnect, backfill, re-import): ``UNIQUE (market, symbol, kind, trade_id)``.
  :meth:`TickStore.write_trades` finds the already stored ids of a batch first
  and inserts only the new ones, so duplicates never reach the bars either.
* **1-second bars are maintained with the trades**, in the same transaction,
  so reading a day of bars reads 86,400 rows at most and never a day of ticks.
  Only market prints reach bars (BINANCE.md, *Messages*): futures
  ``trade_type`` other than ``MARKET`` (``INSURANCE_FUND``, ``ADL``, ``NA``)
  and any price or quantity <= 0 are kept in ``ticks`` but never in
  ``bars_1s``. Open and close are the first and last trade by
  ``(time_ms, trade_id)``; every bar keeps the key of its open and close trade,
  so a late trade (backfill, arriving after its second was written) merges
  into its bar exactly: a merge of two sets of trades is the max of the
  highs, min of the lows, sums of the volumes, and the open (close) of
  whichever set has the smaller (larger) key.
* **One transaction per** :meth:`~TickStore.write_trades` **call**: a reader
  sees a batch whole or not at all, and a writer killed with ``kill -9``
  leaves every committed batch readable (WAL, ``synchronous=NORMAL``: a power
  loss may lose the last commits, a process crash loses none).
* **Readers never block the writer, nor the writer readers** (WAL). Every
  connection waits ``busy_timeout_s`` for a lock instead of failing with
  "database is locked"; the writer takes the write lock at the start of the
  transaction (``BEGIN IMMEDIATE``) so two writers queue rather than deadlock.

Threads and processes
---------------------
Open one :class:`TickStore` per thread (and per process: never use one
across ``fork``). An instance may be handed to another thread: every call
holds an instance lock, so sharing one between threads is safe but
serialises them; give each concurrent reader its own instance.

Schema (version 1)
------------------
Plain columns, units in the names (``_ms``: milliseconds since the epoch,
UTC; prices in quote currency per base unit; ``qty``/``volume`` in base
units), so the file can be queried directly with SQL::

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,  -- created_ms, ticks_deleted_before_ms, bars_deleted_before_ms
        value
    ) WITHOUT ROWID;

    CREATE TABLE ticks (
        market         TEXT    NOT NULL,  -- 'spot' or 'usdm'
        symbol         TEXT    NOT NULL,  -- upper case, e.g. 'BTCUSDT'
        kind           TEXT    NOT NULL,  -- 'trade' (id is Binance t) or 'aggTrade' (id is a)
        trade_id       INTEGER NOT NULL,
        time_ms        INTEGER NOT NULL,  -- exchange trade time T
        recv_ms        INTEGER NOT NULL,  -- local receive time; 0 when unknown (files)
        price          REAL    NOT NULL,  -- quote currency per base unit
        qty            REAL    NOT NULL,  -- base units
        is_buyer_maker INTEGER NOT NULL,  -- Binance m: 1 means the taker sold
        trade_type     TEXT,              -- futures X: MARKET, INSURANCE_FUND, ADL, NA; else NULL
        first_trade_id INTEGER,           -- aggTrade f; NULL otherwise
        last_trade_id  INTEGER,           -- aggTrade l; NULL otherwise
        PRIMARY KEY (market, symbol, kind, time_ms, trade_id)
    ) WITHOUT ROWID;

    CREATE UNIQUE INDEX ticks_by_trade_id ON ticks (market, symbol, kind, trade_id);

    CREATE TABLE bars_1s (
        market                 TEXT    NOT NULL,
        symbol                 TEXT    NOT NULL,
        kind                   TEXT    NOT NULL,
        open_ms                INTEGER NOT NULL,  -- covers [open_ms, open_ms + 1000)
        open                   REAL    NOT NULL,  -- price of the first trade by (time_ms, trade_id)
        high                   REAL    NOT NULL,
        low                    REAL    NOT NULL,
        close                  REAL    NOT NULL,  -- price of the last trade by (time_ms, trade_id)
        volume                 REAL    NOT NULL,  -- sum(qty), base units
        quote_volume           REAL    NOT NULL,  -- sum(price * qty); vwap = quote_volume / volume
        trade_count            INTEGER NOT NULL,
        taker_buy_volume       REAL    NOT NULL,  -- sum(qty) where is_buyer_maker = 0
        taker_buy_quote_volume REAL    NOT NULL,  -- sum(price * qty) where is_buyer_maker = 0
        first_time_ms          INTEGER NOT NULL,  -- key of the open trade ...
        first_trade_id         INTEGER NOT NULL,
        last_time_ms           INTEGER NOT NULL,  -- ... and of the close (to merge late trades)
        last_trade_id          INTEGER NOT NULL,
        PRIMARY KEY (market, symbol, kind, open_ms)
    ) WITHOUT ROWID;

    CREATE TABLE instruments (
        market        TEXT    NOT NULL,
        symbol        TEXT    NOT NULL,
        kind          TEXT    NOT NULL,
        n_ticks       INTEGER NOT NULL,  -- rows in ticks now
        first_ms      INTEGER,           -- time_ms range of those rows; NULL when none are left
        last_ms       INTEGER,
        last_trade_id INTEGER NOT NULL,  -- largest trade_id ever stored (kept by retention)
        PRIMARY KEY (market, symbol, kind)
    ) WITHOUT ROWID;

    CREATE TABLE gaps (
        gap_id           INTEGER PRIMARY KEY AUTOINCREMENT,
        market           TEXT    NOT NULL,
        symbol           TEXT    NOT NULL,
        kind             TEXT    NOT NULL,
        first_missing_id INTEGER NOT NULL,  -- inclusive
        last_missing_id  INTEGER NOT NULL,  -- inclusive
        detected_ms      INTEGER NOT NULL,  -- local time the gap was seen
        reason           TEXT    NOT NULL,  -- e.g. 'reconnect', 'id_jump', 'overflow'
        status           TEXT    NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'filled', 'partial', 'unfillable')),
        filled_count     INTEGER NOT NULL DEFAULT 0,  -- missing ids since stored
        unfilled_count   INTEGER NOT NULL DEFAULT 0,  -- missing ids no source could give
        hole_count       INTEGER NOT NULL DEFAULT 0,  -- ids that were never market trades
        before_ms        INTEGER,  -- exchange time of the trade just before the gap, when known
        after_ms         INTEGER,  -- exchange time of the trade just after the gap, when known
        resolved_ms      INTEGER,  -- local time the status left 'open'
        note             TEXT,
        CHECK (first_missing_id <= last_missing_id)
    );

    CREATE INDEX gaps_by_instrument ON gaps (market, symbol, kind, status);

    CREATE TABLE alerts (
        alert_id    INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms     INTEGER NOT NULL,  -- bar/event time the rule fired at, ms UTC
        rule        TEXT    NOT NULL,  -- the rule's expression, e.g. 'zscore > 2'
        name        TEXT    NOT NULL,
        metric      TEXT    NOT NULL,  -- zscore, spread, corr, beta_drift, half_life, ...
        op          TEXT    NOT NULL,
        value       REAL    NOT NULL,  -- the metric's value when it fired
        threshold   REAL    NOT NULL,
        pair        TEXT    NOT NULL,  -- 'BTCUSDT/ETHUSDT'
        message     TEXT    NOT NULL,
        recorded_ms INTEGER NOT NULL   -- local time it was written
    );

    CREATE INDEX alerts_by_pair_time ON alerts (pair, time_ms);

``PRAGMA user_version`` holds the schema version and ``PRAGMA
application_id`` marks the file as a quantlab store (0x514C4142, "QLAB").
Opening a file written by a newer quantlab raises
:class:`SchemaVersionError`; an older one is upgraded in one transaction by
the functions in ``_MIGRATIONS`` (version ``v`` -> ``v + 1``) when opened
read-write.

Example queries::

    -- 1-minute VWAP from the 1 s bars
    SELECT open_ms / 60000 * 60000 AS minute_ms, sum(quote_volume) / sum(volume) AS vwap
    FROM bars_1s WHERE market = 'usdm' AND symbol = 'BTCUSDT' AND kind = 'trade'
    GROUP BY minute_ms ORDER BY minute_ms;

    -- prints excluded from bars
    SELECT trade_type, count(*) FROM ticks WHERE market = 'usdm' GROUP BY trade_type;

Retention
---------
:meth:`TickStore.apply_retention` deletes ticks (and, when asked, bars) older
than a horizon; a store opened with ``keep_ticks_s`` applies it itself after
writes, at most every ``retention_interval_s``. Deleted ticks cannot be
checked for duplicates any more, so afterwards trades older than the deleted
horizon are refused (counted in :attr:`WriteResult.expired`) instead of
being counted twice in the bars.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import operator
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from quantlab.config import require_positive
from quantlab.errors import AmbiguousSymbol, ConfigError, SchemaVersionError, StoreError, UnknownSymbol
from quantlab.files import SYMBOL_RE
from quantlab.schema import now_ms as _now_ms
from quantlab.schema import (
    BAR_COLUMNS,
    BAR_DTYPES,
    KINDS,
    MARKETS,
    TICK_COLUMNS,
    empty_bars,
    market_print_mask,
    empty_ticks,
    ms_to_utc_index,
)

logger = logging.getLogger(__name__)

__all__ = [
    "APPLICATION_ID", "GAP_STATUSES", "SCHEMA_VERSION", "AmbiguousSymbol", "RetentionResult",
    "SchemaVersionError", "StoreError", "TickStore", "WriteResult",
]

#: Version of the schema this module writes (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of a quantlab store: b"QLAB".
APPLICATION_ID = 0x514C4142
#: Values of ``gaps.status``.
GAP_STATUSES = ("open", "filled", "partial", "unfillable")

# Exchange times must be milliseconds: 1e13 ms is the year 2286, while a
# microsecond time of today (data.binance.vision spot files since 2025) is
# ~1.7e15. Refusing them here keeps a unit mix-up out of the shared file.
_MAX_TIME_MS = 10 ** 13

# Rows per INSERT statement. One multi-row VALUES statement per 100 trades
# makes sqlite3's executemany ~1.6x faster than one statement per row (the
# per-statement reset/bind/step overhead is paid 100x less often); writing
# market, symbol, kind and all-NULL columns as SQL literals instead of binding
# them halves the rest (see TickStore._insert_rows; benchmarks/store.py prints
# all three). 250 or 500 rows measured no better.
_ROWS_PER_INSERT = 100
_PAGE_SIZE = 16_384  # bytes; set when the file is created
# Ids of a batch are checked against the store with one range scan when they
# are dense (the usual live and backfill case), else with IN lists of this size.
_IN_CHUNK = 2_000

_SCHEMA_V1 = (
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,  -- created_ms, ticks_deleted_before_ms, bars_deleted_before_ms
        value
    ) WITHOUT ROWID""",
    """CREATE TABLE ticks (
        market         TEXT    NOT NULL,  -- 'spot' or 'usdm'
        symbol         TEXT    NOT NULL,  -- upper case, e.g. 'BTCUSDT'
        kind           TEXT    NOT NULL,  -- 'trade' (id is Binance t) or 'aggTrade' (id is a)
        trade_id       INTEGER NOT NULL,
        time_ms        INTEGER NOT NULL,  -- exchange trade time T
        recv_ms        INTEGER NOT NULL,  -- local receive time; 0 when unknown (files)
        price          REAL    NOT NULL,  -- quote currency per base unit
        qty            REAL    NOT NULL,  -- base units
        is_buyer_maker INTEGER NOT NULL,  -- Binance m: 1 means the taker sold
        trade_type     TEXT,              -- futures X: MARKET, INSURANCE_FUND, ADL, NA; else NULL
        first_trade_id INTEGER,           -- aggTrade f; NULL otherwise
        last_trade_id  INTEGER,           -- aggTrade l; NULL otherwise
        PRIMARY KEY (market, symbol, kind, time_ms, trade_id)
    ) WITHOUT ROWID""",
    """CREATE UNIQUE INDEX ticks_by_trade_id ON ticks (market, symbol, kind, trade_id)""",
    """CREATE TABLE bars_1s (
        market                 TEXT    NOT NULL,
        symbol                 TEXT    NOT NULL,
        kind                   TEXT    NOT NULL,
        open_ms                INTEGER NOT NULL,  -- covers [open_ms, open_ms + 1000)
        open                   REAL    NOT NULL,  -- price of the first trade by (time_ms, trade_id)
        high                   REAL    NOT NULL,
        low                    REAL    NOT NULL,
        close                  REAL    NOT NULL,  -- price of the last trade by (time_ms, trade_id)
        volume                 REAL    NOT NULL,  -- sum(qty), base units
        quote_volume           REAL    NOT NULL,  -- sum(price * qty); vwap = quote_volume / volume
        trade_count            INTEGER NOT NULL,
        taker_buy_volume       REAL    NOT NULL,  -- sum(qty) where is_buyer_maker = 0
        taker_buy_quote_volume REAL    NOT NULL,  -- sum(price * qty) where is_buyer_maker = 0
        first_time_ms          INTEGER NOT NULL,  -- key of the open trade ...
        first_trade_id         INTEGER NOT NULL,
        last_time_ms           INTEGER NOT NULL,  -- ... and of the close (to merge late trades)
        last_trade_id          INTEGER NOT NULL,
        PRIMARY KEY (market, symbol, kind, open_ms)
    ) WITHOUT ROWID""",
    """CREATE TABLE instruments (
        market        TEXT    NOT NULL,
        symbol        TEXT    NOT NULL,
        kind          TEXT    NOT NULL,
        n_ticks       INTEGER NOT NULL,  -- rows in ticks now
        first_ms      INTEGER,           -- time_ms range of those rows; NULL when none are left
        last_ms       INTEGER,
        last_trade_id INTEGER NOT NULL,  -- largest trade_id ever stored (kept by retention)
        PRIMARY KEY (market, symbol, kind)
    ) WITHOUT ROWID""",
    """CREATE TABLE gaps (
        gap_id           INTEGER PRIMARY KEY AUTOINCREMENT,
        market           TEXT    NOT NULL,
        symbol           TEXT    NOT NULL,
        kind             TEXT    NOT NULL,
        first_missing_id INTEGER NOT NULL,  -- inclusive
        last_missing_id  INTEGER NOT NULL,  -- inclusive
        detected_ms      INTEGER NOT NULL,  -- local time the gap was seen
        reason           TEXT    NOT NULL,  -- e.g. 'reconnect', 'id_jump', 'overflow'
        status           TEXT    NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'filled', 'partial', 'unfillable')),
        filled_count     INTEGER NOT NULL DEFAULT 0,  -- missing ids since stored
        unfilled_count   INTEGER NOT NULL DEFAULT 0,  -- missing ids no source could give
        hole_count       INTEGER NOT NULL DEFAULT 0,  -- ids that were never market trades
        before_ms        INTEGER,  -- exchange time of the trade just before the gap, when known
        after_ms         INTEGER,  -- exchange time of the trade just after the gap, when known
        resolved_ms      INTEGER,  -- local time the status left 'open'
        note             TEXT,
        CHECK (first_missing_id <= last_missing_id)
    )""",
    """CREATE INDEX gaps_by_instrument ON gaps (market, symbol, kind, status)""",
    """CREATE TABLE alerts (
        alert_id    INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms     INTEGER NOT NULL,  -- bar/event time the rule fired at, ms UTC
        rule        TEXT    NOT NULL,  -- the rule's expression, e.g. 'zscore > 2'
        name        TEXT    NOT NULL,
        metric      TEXT    NOT NULL,  -- zscore, spread, corr, beta_drift, half_life, ...
        op          TEXT    NOT NULL,
        value       REAL    NOT NULL,  -- the metric's value when it fired
        threshold   REAL    NOT NULL,
        pair        TEXT    NOT NULL,  -- 'BTCUSDT/ETHUSDT'
        message     TEXT    NOT NULL,
        recorded_ms INTEGER NOT NULL   -- local time it was written
    )""",
    """CREATE INDEX alerts_by_pair_time ON alerts (pair, time_ms)""",
)

# Schema upgrades: _MIGRATIONS[v](con) turns a version-v file into version v+1.
# Each runs inside the opening transaction, which then sets user_version, so an
# interrupted upgrade leaves the old version intact. Add an entry (and bump
# SCHEMA_VERSION) with every schema change; never edit _SCHEMA_V1.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}
# Tables every store of version >= 1 has (migrations add, never drop).
_V1_TABLES = tuple(st.split()[2] for st in _SCHEMA_V1 if st.lstrip().upper().startswith("CREATE TABLE"))

_TICK_VALUE_COLUMNS = tuple(TICK_COLUMNS[3:])
_NULLABLE_COLUMNS = ("trade_type", "first_trade_id", "last_trade_id")
# Constant values of a nullable column written as SQL literals (trade_type).
_LITERAL_STRINGS = frozenset({"MARKET", "INSURANCE_FUND", "ADL", "NA"})


def _constant_literal(values: Sequence) -> str | None:
    """SQL literal of a column whose values are all None (or all one known
    trade_type), else None (bind them)."""
    n = len(values)
    first = values[0]
    if first is None:
        return "NULL" if values.count(None) == n else None
    if first.__class__ is str and first in _LITERAL_STRINGS and values.count(first) == n:
        return f"'{first}'"
    return None


class _Constant:
    """A nullable column with one value for every row of a batch."""

    __slots__ = ("values", "literal")

    def __init__(self, values: Sequence, literal: str):
        self.values, self.literal = values, literal


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@functools.lru_cache(maxsize=256)
def _insert_sql(key: tuple, lits: tuple, rows: int) -> str:
    """``INSERT INTO ticks`` of ``rows`` rows of instrument ``key``; ``lits``
    holds per column of _TICK_VALUE_COLUMNS its SQL literal or None (bound).
    Bound column ``j`` of row ``r`` is parameter ``j * rows + r + 1``."""
    bound = [c for c, lit in zip(_TICK_VALUE_COLUMNS, lits) if lit is None]
    fixed = [(c, lit) for c, lit in zip(_TICK_VALUE_COLUMNS, lits) if lit is not None]
    head = ", ".join([_sql_string(v) for v in key] + [lit for _, lit in fixed])
    names = ", ".join([*TICK_COLUMNS[:3], *[c for c, _ in fixed], *bound])
    values = ", ".join(
        "(" + ", ".join([head] + [f"?{j * rows + r + 1}" for j in range(len(bound))]) + ")"
        for r in range(rows))
    return f"INSERT INTO ticks ({names}) VALUES {values}"

# Merge of a batch's per-second aggregates into stored bars. In an UPSERT's
# SET clause every column reference on the right means the row *before* the
# update, so the CASE tests see the stored open/close keys even after
# first_time_ms is assigned.
_UPSERT_BARS = """
INSERT INTO bars_1s (market, symbol, kind, open_ms, open, high, low, close, volume, quote_volume,
                     trade_count, taker_buy_volume, taker_buy_quote_volume,
                     first_time_ms, first_trade_id, last_time_ms, last_trade_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (market, symbol, kind, open_ms) DO UPDATE SET
    open = CASE WHEN (excluded.first_time_ms, excluded.first_trade_id)
                     < (first_time_ms, first_trade_id)
                THEN excluded.open ELSE open END,
    first_time_ms = CASE WHEN (excluded.first_time_ms, excluded.first_trade_id)
                     < (first_time_ms, first_trade_id)
                THEN excluded.first_time_ms ELSE first_time_ms END,
    first_trade_id = CASE WHEN (excluded.first_time_ms, excluded.first_trade_id)
                     < (first_time_ms, first_trade_id)
                THEN excluded.first_trade_id ELSE first_trade_id END,
    close = CASE WHEN (excluded.last_time_ms, excluded.last_trade_id)
                     > (last_time_ms, last_trade_id)
                THEN excluded.close ELSE close END,
    last_time_ms = CASE WHEN (excluded.last_time_ms, excluded.last_trade_id)
                     > (last_time_ms, last_trade_id)
                THEN excluded.last_time_ms ELSE last_time_ms END,
    last_trade_id = CASE WHEN (excluded.last_time_ms, excluded.last_trade_id)
                     > (last_time_ms, last_trade_id)
                THEN excluded.last_trade_id ELSE last_trade_id END,
    high = max(high, excluded.high),
    low = min(low, excluded.low),
    volume = volume + excluded.volume,
    quote_volume = quote_volume + excluded.quote_volume,
    trade_count = trade_count + excluded.trade_count,
    taker_buy_volume = taker_buy_volume + excluded.taker_buy_volume,
    taker_buy_quote_volume = taker_buy_quote_volume + excluded.taker_buy_quote_volume
"""

_UPSERT_INSTRUMENT = """
INSERT INTO instruments (market, symbol, kind, n_ticks, first_ms, last_ms, last_trade_id)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (market, symbol, kind) DO UPDATE SET
    n_ticks = n_ticks + excluded.n_ticks,
    first_ms = min(coalesce(first_ms, excluded.first_ms), excluded.first_ms),
    last_ms = max(coalesce(last_ms, excluded.last_ms), excluded.last_ms),
    last_trade_id = max(last_trade_id, excluded.last_trade_id)
"""

# Reads. Kept as constants so a test can EXPLAIN them: both are range
# searches on a primary key, never scans.
SQL_TICKS = """
SELECT trade_id, time_ms, recv_ms, price, qty, is_buyer_maker, trade_type,
       first_trade_id IS NULL, coalesce(first_trade_id, 0),
       last_trade_id IS NULL, coalesce(last_trade_id, 0)
FROM ticks
WHERE market = ? AND symbol = ? AND kind = ? AND time_ms >= ? AND time_ms < ?
ORDER BY time_ms, trade_id
"""
SQL_BARS_1S = """
SELECT open_ms, open, high, low, close, volume, quote_volume, trade_count, taker_buy_volume
FROM bars_1s
WHERE market = ? AND symbol = ? AND kind = ? AND open_ms >= ? AND open_ms < ?
ORDER BY open_ms
"""
_SQL_BAR_BEFORE = """
SELECT open_ms, open, high, low, close, volume, quote_volume, trade_count, taker_buy_volume
FROM bars_1s
WHERE market = ? AND symbol = ? AND kind = ? AND open_ms < ?
ORDER BY open_ms DESC LIMIT 1
"""
# Rows of SQL_TICKS and SQL_BARS_1S, read by np.fromiter straight from the
# cursor: no list of row tuples and no transposition, faster than fetchall()
# into numpy or pd.read_sql (benchmarks/store.py prints all three). NULLs come
# as flag + value pairs because a numeric field cannot hold None.
_TICK_ROW = np.dtype([
    ("trade_id", np.int64), ("time_ms", np.int64), ("recv_ms", np.int64), ("price", np.float64),
    ("qty", np.float64), ("is_buyer_maker", bool), ("trade_type", object),
    ("first_null", bool), ("first_trade_id", np.int64), ("last_null", bool),
    ("last_trade_id", np.int64),
])
_BAR_ROW = np.dtype([
    ("open_ms", np.int64), ("open", np.float64), ("high", np.float64), ("low", np.float64),
    ("close", np.float64), ("volume", np.float64), ("quote_volume", np.float64),
    ("trade_count", np.int64), ("taker_buy_volume", np.float64),
])
_GAP_COLUMNS = ("gap_id", "market", "symbol", "kind", "first_missing_id", "last_missing_id",
                "detected_ms", "reason", "status", "filled_count", "unfilled_count", "hole_count",
                "before_ms", "after_ms", "resolved_ms", "note")
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


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


# --- the store ------------------------------------------------------------------
class TickStore:
    """Trades, 1 s bars and gap records in one SQLite file (WAL mode).

    Parameters
    ----------
    path : str or Path
        The database file. Created with the current schema when it does not
        exist (read-write only); its directory must exist.
    read_only : bool
        Open with ``mode=ro``: every write raises :class:`StoreError`. Use it
        for notebooks and reports that only read.
    keep_ticks_s : float, optional
        Retention setting (seconds): :meth:`write_trades` applies
        :meth:`apply_retention` with it at most every ``retention_interval_s``.
        None (default) keeps everything.
    keep_bars_s : float, optional
        Retention of the 1 s bars (seconds, >= ``keep_ticks_s``); None keeps them.
    retention_interval_s : float
        Minimum time between automatic retention runs (s).
    busy_timeout_s : float
        How long a statement waits for a lock held by another connection
        before failing (s). Only writers wait in WAL mode: a second writer,
        or a checkpoint.

    Raises
    ------
    StoreError
        The file cannot be opened, is not a quantlab store, or is read-only
        and missing.
    SchemaVersionError
        The file was written by a newer quantlab (or, read-only, needs an upgrade).

    Notes
    -----
    Every call holds an instance lock, so an instance may be shared between
    threads (they then take turns); open one per thread for concurrency, and
    never use one after ``fork``. Times are ms since the epoch (UTC) and time
    windows are half-open: ``start_ms <= t < end_ms``.

    Examples
    --------
    >>> import os, tempfile
    >>> from quantlab.binance import Trade
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = TickStore(os.path.join(tmp.name, "ticks.db"))
    >>> t = Trade("spot", "BTCUSDT", "trade", 7, 61837.63, 0.02, 1_722_000_000_123, 0, True)
    >>> store.write_trades([t, t])          # the same trade twice: stored once
    WriteResult(inserted=1, duplicates=1, bars_touched=1, expired=0)
    >>> bars = store.bars_1s("BTCUSDT")
    >>> bars[["open", "volume", "trade_count"]]  # doctest: +NORMALIZE_WHITESPACE
                                   open  volume  trade_count
    open_time
    2024-07-26 13:20:00+00:00  61837.63    0.02            1
    >>> store.close(); tmp.cleanup()
    """

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False,
                 keep_ticks_s: float | None = None, keep_bars_s: float | None = None,
                 retention_interval_s: float = 60.0, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        self.read_only = bool(read_only)
        require_positive("busy_timeout_s", busy_timeout_s, allow_zero=True)
        require_positive("retention_interval_s", retention_interval_s, allow_zero=True)
        _check_retention(keep_ticks_s, keep_bars_s)
        if read_only and keep_ticks_s is not None:
            raise ConfigError("keep_ticks_s", keep_ticks_s, "None on a read-only store")
        self.keep_ticks_s = keep_ticks_s
        self.keep_bars_s = keep_bars_s
        self.retention_interval_s = float(retention_interval_s)
        self._last_retention = -math.inf
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._con: sqlite3.Connection | None = None
        self._con = self._open(float(busy_timeout_s))

    # ------------------------------------------------------------------ open
    def _open(self, busy_timeout_s: float) -> sqlite3.Connection:
        self._check_file()
        if not self.read_only:
            return self._connect(str(self.path), False, busy_timeout_s)
        target = self.path.resolve().as_uri() + "?mode=ro"
        try:
            return self._connect(target, True, busy_timeout_s)
        except StoreError as exc:
            # A WAL file read with mode=ro needs its -shm (and -wal) file, which SQLite
            # cannot create in a read-only directory (https://sqlite.org/wal.html#readonly).
            # With no -wal content there is nothing a snapshot could miss: read the main
            # file as immutable (no locks, no -shm). A non-empty -wal means a writer may
            # be active (or crashed): refuse rather than show stale data.
            cause = exc.__cause__
            code = getattr(cause, "sqlite_errorname", "")  # SQLITE_READONLY_CANTINIT, SQLITE_CANTOPEN
            if not isinstance(cause, sqlite3.OperationalError) or not (
                    code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))
                    or "readonly" in str(cause) or "unable to open" in str(cause)):
                raise
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError("cannot be read here: its directory is read-only and its -wal file "
                                 "holds changes not yet in the main file; open it once where the "
                                 "directory is writable (or copy the folder)", self.path) from None
            logger.info("%s: read-only directory, opened as immutable", self.path)
            return self._connect(target + "&immutable=1", True, busy_timeout_s)

    def _check_file(self) -> None:
        """The path must be a regular file (or absent, for a writer): decided with
        os.stat before SQLite opens it (a FIFO would block, a device never end)."""
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            if self.read_only:
                raise StoreError("no such file (a read-only store must exist; the writer "
                                 "creates it)", self.path) from None
            return
        except OSError as exc:
            raise StoreError(f"cannot open ({exc.strerror or exc})", self.path) from None
        if stat.S_ISDIR(mode):
            raise StoreError("is a folder; pass the tick store's file, e.g. data/live.db", self.path)
        if not stat.S_ISREG(mode):
            what = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
            raise StoreError(f"is {what}, not a SQLite file; pass a tick store written by quantlab "
                             "ingest/import, or a new file name", self.path)

    def _connect(self, target: str, uri: bool, busy_timeout_s: float) -> sqlite3.Connection:
        try:
            # isolation_level=None: no implicit transactions; writes open
            # BEGIN IMMEDIATE themselves and reads run in autocommit, so a
            # reader never holds a snapshot (and the WAL) longer than a query.
            con = sqlite3.connect(target, uri=uri, timeout=busy_timeout_s, isolation_level=None,
                                  check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open ({exc}); does the directory exist?", self.path) from exc
        try:
            con.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            con.execute("PRAGMA synchronous = NORMAL")  # WAL: durable against process crashes
            con.execute("PRAGMA temp_store = MEMORY")
            con.execute("PRAGMA cache_size = -32768")  # 32 MiB page cache per connection
            if not self.read_only:
                # After a big import the WAL is truncated back to 64 MiB once
                # checkpointed, instead of keeping its peak size on disk.
                con.execute("PRAGMA journal_size_limit = 67108864")
            self._check_schema(con)
        except sqlite3.DatabaseError as exc:
            con.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StoreError(f"not a SQLite tick store ({exc}); pass a store written by quantlab "
                                 "ingest/import, or a new file name", self.path) from exc
            raise StoreError(f"cannot open ({exc}){_readonly_hint(exc)}", self.path) from exc
        except BaseException:
            con.close()
            raise
        logger.debug("opened %s (%s)", self.path, "read-only" if self.read_only else "read-write")
        return con

    def _check_schema(self, con: sqlite3.Connection) -> None:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if app_id not in (0, APPLICATION_ID):
            raise StoreError(f"not a quantlab tick store (application_id {app_id:#x})", self.path)
        # Everything below reads only: a file that is not an intact quantlab store is
        # refused before anything (journal_mode = WAL included) is written to it.
        tables = {row[0] for row in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and tables:
            raise StoreError("not a quantlab tick store (it has tables but no quantlab schema "
                             f"version: {', '.join(sorted(tables)[:5])}); nothing was written to it: "
                             "pass a store written by quantlab ingest/import, or a new file name",
                             self.path)
        if version >= 1:
            missing = [t for t in _V1_TABLES if t not in tables]
            if missing and app_id != APPLICATION_ID and "ticks" not in tables:
                raise StoreError(f"not a quantlab tick store (user_version {version} but no ticks "
                                 "table); pass a store written by quantlab ingest/import",
                                 self.path)
            if missing:
                raise StoreError(f"damaged tick store: table {missing[0]!r} is missing (has "
                                 f"{', '.join(sorted(tables))}); restore the file from a backup, or "
                                 "re-import the data into a new store", self.path)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(self.path, version, SCHEMA_VERSION,
                                     "it was written by a newer quantlab; upgrade quantlab "
                                     "to read it")
        if self.read_only:
            if version == 0:
                raise StoreError("not a quantlab tick store, or not initialised yet (open it "
                                 "read-write once)", self.path)
            if version < SCHEMA_VERSION:
                raise SchemaVersionError(self.path, version, SCHEMA_VERSION,
                                         "open it read-write once to upgrade it")
            return
        if version == 0:
            # Only possible before the first write. 16 KiB pages: ~15-20% less
            # CPU per inserted trade than 4 KiB (fewer splits and WAL frames),
            # and longer sequential runs for range reads.
            con.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            # Persistent in the file; needs a moment without other connections.
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch to WAL mode (journal_mode={mode})", self.path)
        if version == SCHEMA_VERSION:
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have created
            # or upgraded the file since the check above.
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                n_tables = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if n_tables:
                    raise StoreError("not a quantlab tick store (it has tables but no quantlab "
                                     "schema version)", self.path)
                for statement in _SCHEMA_V1:
                    con.execute(statement)
                con.execute("INSERT INTO meta (key, value) VALUES ('created_ms', ?)", (_now_ms(),))
                con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                version = 1
                logger.info("created tick store %s (schema version %d)", self.path, version)
            while version < SCHEMA_VERSION:
                migrate = _MIGRATIONS.get(version)
                if migrate is None:
                    raise SchemaVersionError(self.path, version, SCHEMA_VERSION,
                                             f"no migration from version {version} is known")
                migrate(con)
                version += 1
                logger.info("upgraded tick store %s to schema version %d", self.path, version)
            con.execute(f"PRAGMA user_version = {version}")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:  # SQLite may have rolled back (disk full, I/O)
                con.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ plumbing
    def _conn(self) -> sqlite3.Connection:
        if self._con is None:
            raise StoreError("the store is closed", self.path)
        if os.getpid() != self._pid:
            raise StoreError("a TickStore cannot be used across fork(); open a new one in "
                             "this process", self.path)
        return self._con

    def _writable(self) -> sqlite3.Connection:
        con = self._conn()
        if self.read_only:
            raise StoreError("opened read_only=True; open TickStore(path) to write", self.path)
        return con

    def _fail(self, exc: sqlite3.Error, what: str) -> StoreError:
        hint = ""
        if "locked" in str(exc) or "busy" in str(exc):
            hint = " (another writer held the lock longer than busy_timeout_s)"
        return StoreError(f"{what} failed: {exc}{hint or _readonly_hint(exc)}", self.path)

    @property
    def schema_version(self) -> int:
        """``PRAGMA user_version`` of the file."""
        with self._lock:
            return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection; further calls raise :class:`StoreError`. Idempotent."""
        with self._lock:
            con, self._con = self._con, None
            if con is not None and os.getpid() == self._pid:
                con.close()

    def __enter__(self) -> "TickStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._con is None else ("read-only" if self.read_only else "read-write")
        return f"TickStore({str(self.path)!r}, {state})"

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
                con.execute("BEGIN IMMEDIATE")
                try:
                    result = self._write_batch(con, batch)
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:  # SQLite may have rolled back (disk full, I/O)
                        con.execute("ROLLBACK")
                    raise
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
                TickStore._insert_bound(con, key, tuple(lits), bound, hi - lo)

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
                con.execute("BEGIN IMMEDIATE")
                try:
                    result = self._retain(con, keep_ticks_s, keep_bars_s,
                                          _opt_int("now_ms", now_ms))
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:  # SQLite may have rolled back (disk full, I/O)
                        con.execute("ROLLBACK")
                    raise
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

    # ------------------------------------------------------------------ gaps
    def record_gap(self, market: str, symbol: str, kind: str, first_missing_id: int,
                   last_missing_id: int, *, reason: str, detected_ms: int | None = None,
                   before_ms: int | None = None, after_ms: int | None = None,
                   note: str | None = None) -> int:
        """Record missing trade ids ``first_missing_id..last_missing_id`` (inclusive).

        Parameters
        ----------
        market, symbol, kind : the stream (``"usdm"``, ``"BTCUSDT"``, ``"trade"``).
        first_missing_id, last_missing_id : int
            The missing id range, inclusive.
        reason : str
            Why the ids are missing, e.g. ``"reconnect"``, ``"id_jump"``, ``"overflow"``.
        detected_ms : int, optional
            Local time the gap was seen (ms, UTC); default now.
        before_ms, after_ms : int, optional
            Exchange times (ms) of the trades just before and after the gap, when known.
        note : str, optional

        Returns
        -------
        int
            ``gap_id``, for :meth:`update_gap`. The gap starts ``open``.
        """
        market, symbol, kind = _check_instrument(market, symbol, kind)
        first, last = _opt_int("first_missing_id", first_missing_id), _opt_int(
            "last_missing_id", last_missing_id)
        if first is None or last is None or last < first:
            raise ConfigError("last_missing_id", last_missing_id,
                              f"an int >= first_missing_id={first_missing_id}")
        if not isinstance(reason, str) or not reason:
            raise ConfigError("reason", reason, "a non-empty string")
        detected = _now_ms() if detected_ms is None else _opt_int("detected_ms", detected_ms)
        with self._lock:
            con = self._writable()
            try:
                cur = con.execute(
                    "INSERT INTO gaps (market, symbol, kind, first_missing_id, last_missing_id, "
                    "detected_ms, reason, before_ms, after_ms, note) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (market, symbol, kind, first, last, detected, reason,
                     _opt_int("before_ms", before_ms), _opt_int("after_ms", after_ms), note))
            except sqlite3.Error as exc:
                raise self._fail(exc, "recording a gap") from exc
            return int(cur.lastrowid)

    def update_gap(self, gap_id: int, *, status: str | None = None,
                   filled_count: int | None = None, unfilled_count: int | None = None,
                   hole_count: int | None = None, resolved_ms: int | None = None,
                   note: str | None = None) -> None:
        """Update a gap's status and counts; arguments left None are unchanged.

        Parameters
        ----------
        gap_id : int
            From :meth:`record_gap`.
        status : str, optional
            One of :data:`GAP_STATUSES`: ``open``, ``filled`` (every missing id
            stored or a hole), ``partial`` (some ids could not be had),
            ``unfillable`` (none could).
        filled_count, unfilled_count, hole_count : int, optional
            Missing ids stored since, ids no source could give, ids that never
            were market trades (futures raw ids of insurance-fund/ADL prints).
        resolved_ms : int, optional
            When the gap was resolved (ms, UTC). Default: now when ``status``
            leaves ``open``; cleared when it returns to ``open``.
        note : str, optional

        Raises
        ------
        StoreError
            No gap ``gap_id``.
        """
        if status is not None and status not in GAP_STATUSES:
            raise ConfigError("status", status, "one of " + ", ".join(GAP_STATUSES))
        sets: dict[str, object] = {}
        for name, value in (("filled_count", filled_count), ("unfilled_count", unfilled_count),
                            ("hole_count", hole_count)):
            v = _opt_int(name, value)
            if v is not None:
                if v < 0:
                    raise ConfigError(name, value, "an int >= 0")
                sets[name] = v
        if status is not None:
            sets["status"] = status
            if status == "open":
                sets["resolved_ms"] = None
            else:
                sets["resolved_ms"] = _now_ms() if resolved_ms is None else _opt_int(
                    "resolved_ms", resolved_ms)
        elif resolved_ms is not None:
            sets["resolved_ms"] = _opt_int("resolved_ms", resolved_ms)
        if note is not None:
            sets["note"] = str(note)
        with self._lock:
            con = self._writable()
            try:
                if sets:
                    cur = con.execute(
                        f"UPDATE gaps SET {', '.join(f'{k} = ?' for k in sets)} WHERE gap_id = ?",
                        (*sets.values(), int(gap_id)))
                    found = cur.rowcount
                else:
                    found = con.execute("SELECT count(*) FROM gaps WHERE gap_id = ?",
                                        (int(gap_id),)).fetchone()[0]
            except sqlite3.Error as exc:
                raise self._fail(exc, "updating a gap") from exc
        if not found:
            raise StoreError(f"no gap with gap_id={gap_id}", self.path)

    def gaps(self, symbol: str | None = None, *, market: str | None = None,
             kind: str | None = None, status: str | Iterable[str] | None = None) -> pd.DataFrame:
        """Recorded gaps, oldest first, filtered by the arguments given.

        Returns
        -------
        DataFrame
            One row per gap with the columns of the ``gaps`` table (see the
            module docstring); nullable times are ``Int64``.
        """
        where, params = _filters(symbol, market, kind)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for s in statuses:
                if s not in GAP_STATUSES:
                    raise ConfigError("status", s, "one of " + ", ".join(GAP_STATUSES))
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        sql = f"SELECT {', '.join(_GAP_COLUMNS)} FROM gaps"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn().execute(sql + " ORDER BY gap_id", params).fetchall()
        cols = list(zip(*rows)) if rows else [()] * len(_GAP_COLUMNS)
        data = {}
        for name, values in zip(_GAP_COLUMNS, cols):
            if name in ("before_ms", "after_ms", "resolved_ms"):
                data[name] = _nullable_int(values)
            elif name in ("market", "symbol", "kind", "reason", "status", "note"):
                data[name] = _objects(values)
            else:
                data[name] = np.array(values, dtype=np.int64)
        return pd.DataFrame(data)

    # ------------------------------------------------------------------ alerts
    def append_alerts(self, events: Iterable[Any]) -> int:
        """Persist alert events (:class:`quantlab.alerts.AlertEvent` or their
        ``to_dict()``) in the ``alerts`` table, one transaction; returns the
        number written. The log survives restarts: read it with :meth:`alerts`."""
        rows = []
        now = _now_ms()
        for ev in events:
            d = ev.to_dict() if hasattr(ev, "to_dict") else dict(ev)
            try:
                rows.append((int(d["time_ms"]), str(d["rule"]), str(d.get("name") or d["rule"]),
                             str(d["metric"]), str(d["op"]), float(d["value"]),
                             float(d["threshold"]), str(d["pair"]), str(d.get("message", "")), now))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError("event", d, "an AlertEvent or its to_dict() "
                                  "(time_ms, rule, metric, op, value, threshold, pair)") from exc
        if not rows:
            return 0
        with self._lock:
            con = self._conn()
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT INTO alerts (time_ms, rule, name, metric, op, value, threshold, "
                                "pair, message, recorded_ms) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return len(rows)

    def alert_sink(self) -> Callable[[Any], None]:
        """A sink for :class:`quantlab.alerts.AlertEngine` that persists each
        event here: ``AlertEngine(rules, pair, sinks=[store.alert_sink()])``.
        Use it from the thread that owns this store (the UI pump)."""
        return lambda event: self.append_alerts([event])

    def alerts(self, pair: str | None = None, *, since_ms: int | None = None,
               limit: int | None = None) -> pd.DataFrame:
        """The alert log, newest first: columns ``time`` (UTC), ``time_ms``,
        ``rule``, ``name``, ``metric``, ``op``, ``value``, ``threshold``,
        ``pair``, ``message``, ``recorded_ms`` and ``corrected`` (bool: an
        alert re-evaluated on bars corrected from the store, fired or
        withdrawn; marked by the message prefix ``[corrected]`` or
        ``[withdrawn]``, see :func:`quantlab.alerts.corrected_event`, so files
        of every schema version hold it)."""
        sql = ("SELECT time_ms, rule, name, metric, op, value, threshold, pair, message, recorded_ms "
               "FROM alerts")
        where, params = [], []
        if pair is not None:
            where.append("pair = ?")
            params.append(pair)
        if since_ms is not None:
            where.append("time_ms >= ?")
            params.append(int(since_ms))
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_ms DESC, alert_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._conn().execute(sql, params).fetchall()
        cols = ["time_ms", "rule", "name", "metric", "op", "value", "threshold", "pair", "message",
                "recorded_ms"]
        frame = pd.DataFrame.from_records(rows, columns=cols)
        frame = frame.astype({"time_ms": np.int64, "value": np.float64, "threshold": np.float64,
                              "recorded_ms": np.int64})
        frame.insert(0, "time", pd.to_datetime(frame["time_ms"], unit="ms", utc=True))
        frame["corrected"] = frame["message"].astype(str).str.startswith(
            ("[corrected] ", "[withdrawn] ")).astype(bool)
        return frame

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
