"""Loss-free live trade ingestion from Binance into the tick store.

The :class:`Ingester` keeps one combined-stream WebSocket connection per market
open in a daemon thread that owns a private asyncio loop, hands every trade to a
writer thread through a bounded queue, and fills whatever the stream missed
(reconnects, id jumps, overflow) from REST by trade id. A notebook drives it
through a synchronous face; nothing touches the kernel's event loop::

    ing = Ingester(IngestSettings(symbols=("BTCUSDT", "ETHUSDT"), db_path="data/live.db"))
    ing.start()     # returns at once; raises if the store cannot be opened
    ing.status      # IngestStatus(state='live', error=None, ...)
    ing.stats       # IngestStats(trades_stored=..., lag_ms_p50=..., ...)
    sub = ing.subscribe(maxlen=50_000)
    sub.drain()     # the trades stored since the last drain, for a live monitor
    ing.stop()      # flushes everything received, then returns the final stats

The CLI (``quantlab ingest``) and child processes use :func:`run_for`.

Design (facts and section names from ``shared/BINANCE.md``)
-----------------------------------------------------------
* **The socket loop parses and hands off, nothing else.** websockets hands each
  frame to a handler (:func:`_tap_connection_class`) that parses it
  (:func:`fast_parse_trade`, orjson), checks its id and appends it to a
  ``deque``. Storage runs on a writer thread that owns the only
  :class:`~quantlab.store.TickStore` and commits batches (size
  ``batch_max_trades``, age ``batch_max_delay_s`` <= 0.25 s). A slow disk never
  delays the pong Binance wants within 60 s of its ping ("Connection rules").
* **Every id is accounted for.** Per stream the loop keeps the last id it
  accepted, seeded from the store at start. An id that jumps, the first id
  after a reconnect (compared with the last stored), ids refused by a full
  queue: each opens a *gap*. The writer records it in the store's gaps table
  in order with the trades (so a ``kill -9`` never leaves an unrecorded hole),
  the backfiller fills it from REST by ``fromId`` through the same writer
  ("Connection rules": Binance does not replay missed messages), and gaps
  still ``open`` when a process dies are resumed by the next start.
* **USD-M raw ``@trade`` holes are reconciled, not chased** ("Messages"): the
  aggTrades of the gap's time range tell, through their ``f..l`` ranges, which
  missing raw ids were market fills (:func:`reconcile_raw_futures`); a
  single-fill aggregate is stored as that raw trade, ids no aggregate covers
  are holes, and fills inside multi-fill aggregates are counted unfillable.
* **Reconnect forever** with the capped, jittered exponential backoff of
  :class:`BackoffPolicy`, reset after a stable period; stop only on errors
  retrying cannot fix (HTTP 451). A first-message deadline and a staleness
  watchdog per stream force a reconnect ("What a robust ingester does" 2).
  Connections are rotated after ``max_connection_age_s`` (before Binance's
  24 h close) and on ``serverShutdown``: the new connection opens first, its
  trades are held until the old one has delivered every id before them, then
  the old one is closed, so the handover has neither gap nor duplicate (3).
* **Overflow is never silent**: a trade that finds the queue full
  (``queue_max``) is counted in ``stats.dropped``, flagged in
  ``status.overflow`` and its id range becomes an ``overflow`` gap, backfilled
  like any other. Before that, while the writer is behind, the loop pauses
  reading the socket for a millisecond at a time (the writer needs the GIL
  back after every SQLite step).
* **REST is paced** by a :class:`TokenBucket` over Binance's request weights
  (``rest_weight_share`` of the per-minute budget), honours ``Retry-After`` on
  429, backs off at least ``ban_s`` on 418 and stops on 451 ("Endpoints").
  Requests run in short-lived daemon threads (urllib), never on the loop.

Guarantees and limits
---------------------
* Every trade id published on the configured streams from the first trade
  received until :meth:`Ingester.stop` is stored exactly once, or recorded in
  the gaps table: still ``open`` (resumed by the next start), ``unfillable``
  (REST no longer has it, e.g. USD-M aggTrades older than ~48 h, or a futures
  fill inside a multi-fill aggregate), or a USD-M hole (``hole_count``).
* Trades before the first one received (before the first start) are not
  fetched: this is a live recorder, not an archive loader.
* USD-M non-market prints (``INSURANCE_FUND``, ``ADL``, ``NA``) missed during
  a disconnect cannot be recovered (Binance's REST omits them); they are
  counted as holes and never belong in bars anyway.
* A stream that is silent for ``stale_after_s`` is reconnected; raise it for
  illiquid symbols. Ids missed just before such a silence are found (and
  filled) when the next trade of that stream arrives.
* ``kill -9`` loses what was queued but not committed (at most
  ``batch_max_delay_s`` of trades plus the queue); the next start finds those
  ids as a gap after the last stored id and backfills them.

Layout (issue 14): where each concern lives
------------------------------------------
* :mod:`~quantlab.ingest.core` -- **where a gap is decided**: the pure id
  accounting (:class:`~quantlab.ingest.core.IdLedger`: last id per stream,
  gaps, overflow ranges, rotation hand-over, what is owed to REST; USD-M hole
  reconciliation). No I/O; events in, decisions out.
* :mod:`~quantlab.ingest.frames` -- the socket loop's hot path per frame.
* :mod:`~quantlab.ingest.tap` -- the websockets socket-buffer fast path,
  fenced (verified versions only; ``QUANTLAB_WS_FAST_PATH=0`` or
  ``IngestSettings(ws_fast_path=False)`` forces websockets' ``recv()``).
* :mod:`~quantlab.ingest.supervisor` -- connections: reconnect, watchdog, rotation.
* :mod:`~quantlab.ingest.rest` -- REST backfill, HTTP, pacing.
* :mod:`~quantlab.ingest.writer` -- the writer thread, :class:`Subscription`.
* :mod:`~quantlab.ingest.policy` -- :class:`BackoffPolicy`, :class:`TokenBucket` (their
  errors live in :mod:`quantlab.errors`).
* :mod:`~quantlab.ingest.settings` -- :class:`IngestSettings`, :class:`IngestStatus`,
  :class:`IngestStats`.
* :mod:`~quantlab.ingest.ingester` -- the threaded :class:`Ingester`: orchestration only.
* :mod:`~quantlab.ingest.cli` -- :func:`run_for` (and :func:`run_cli`, the old path of the
  ``quantlab ingest`` handler, now :mod:`quantlab.commands.ingest`).
"""
from __future__ import annotations

from quantlab.binance import fast_parse_trade
from quantlab.ingest.core import (
    Gap as _Gap, IdLedger, Reconciliation, _Last, reconcile_raw_futures,
)
from quantlab.ingest.ingester import Ingester
from quantlab.ingest.cli import _print_status, run_cli, run_for
from quantlab.errors import IngestStopTimeout, RestError
from quantlab.ingest.policy import BackoffPolicy, TokenBucket
from quantlab.ingest.rest import (
    REST_MAX_BODY_BYTES, _http_get_json, _run_in_daemon_thread,
)
from quantlab.ingest.settings import STATES, IngestSettings, IngestStats, IngestStatus
from quantlab.ingest.tap import _frame_size, _tap_connection_class, fast_path_problem, use_fast_path
from quantlab.ingest.writer import Subscription

__all__ = [
    "BackoffPolicy", "IngestSettings", "IngestStatus", "IngestStats", "Ingester",
    "IngestStopTimeout", "RestError", "Subscription", "TokenBucket", "Reconciliation",
    "reconcile_raw_futures", "fast_parse_trade", "run_for", "run_cli", "STATES", "IdLedger",
]
