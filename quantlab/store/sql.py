"""The store's schema and SQL: version and application id, the DDL of version 1,
the migrations table, the INSERT/UPSERT statements the writer builds, and the
read statements with the row dtypes they are read into (the file format's one place).
"""
from __future__ import annotations

import functools
import sqlite3
from typing import Callable, Sequence

import numpy as np

from quantlab.schema import TICK_COLUMNS


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
