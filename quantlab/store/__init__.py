"""The tick store: quantlab's one shared state, a SQLite file in WAL mode.

One writer (the ingester's writer thread, or ``quantlab import``) stores trades
while notebooks and report processes read them::

    with TickStore("data/live.db") as store:            # read-write, creates the file
        store.write_trades(trades)                       # WriteResult(inserted=..., ...)
    ro = TickStore("data/live.db", read_only=True)       # in any other thread or process
    ro.bars("BTCUSDT", "1m", start_ms=..., end_ms=...)   # bar frame of quantlab.schema

Layout: ``sql`` (the schema, migrations and every SQL statement), ``batch`` (result
types, the columnar write batch and its checks, no SQLite), ``core``
(:class:`TickStore`: open, schema check, lock and connection), and its mixins
``writes`` (writes, retention), ``gaps`` (gap and alert logs), ``reads``.
Errors live in :mod:`quantlab.errors` and are re-exported here.

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

from quantlab.errors import AmbiguousSymbol, SchemaVersionError, StoreError
from quantlab.schema import now_ms as _now_ms
from quantlab.store.sql import (
    APPLICATION_ID,
    GAP_STATUSES,
    SCHEMA_VERSION,
    SQL_BARS_1S,
    SQL_TICKS,
    _GAP_COLUMNS,
    _MIGRATIONS,
    _SCHEMA_V1,
)
from quantlab.store.batch import RetentionResult, WriteResult, _batch_from_trades
from quantlab.store.core import TickStore

__all__ = [
    "APPLICATION_ID", "GAP_STATUSES", "SCHEMA_VERSION", "AmbiguousSymbol", "RetentionResult",
    "SchemaVersionError", "StoreError", "TickStore", "WriteResult",
]
