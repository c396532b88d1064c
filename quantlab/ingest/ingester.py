"""The threaded :class:`Ingester`: orchestration only.

It owns the threads and the shared state, and wires the parts together:

* :mod:`quantlab.ingest.core` -- :class:`~quantlab.ingest.core.IdLedger`, the
  pure id accounting (every gap is decided there);
* :mod:`quantlab.ingest.frames` -- the hot path, frame in, trade handed off;
* :mod:`quantlab.ingest.supervisor` -- connect, watchdog, rotation;
* :mod:`quantlab.ingest.tap` -- the websockets socket-buffer fast path (fenced);
* :mod:`quantlab.ingest.rest` -- REST backfill and pacing;
* :mod:`quantlab.ingest.writer` -- the writer thread and subscribers.

The parts are mixins over this one object (their methods use the state set up
in :meth:`Ingester.__init__`); none of them decides an id.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import dataclasses
import logging
import math
import random
import threading
import time
import weakref
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

from quantlab.errors import IngestStopTimeout, QuantlabError
from quantlab.ingest.core import IdLedger
from quantlab.ingest.frames import _FramePart
from quantlab.ingest.policy import TokenBucket
from quantlab.ingest.rest import _BackfillPart
from quantlab.ingest.settings import IngestSettings, IngestStats, IngestStatus
from quantlab.ingest.supervisor import _TICK_S, _Conn, _SupervisorPart
from quantlab.ingest.tap import use_fast_path
from quantlab.ingest.writer import Subscription, _Command, _WriterPart
from quantlab.schema import now_ms as _now_ms

logger = logging.getLogger("quantlab.ingest")

_RATE_WINDOW_S = 5.0

_live_ingesters: "weakref.WeakSet[Ingester]" = weakref.WeakSet()
_atexit_registered = False


def _stop_all_at_exit() -> None:  # pragma: no cover - exercised at interpreter exit
    for ing in list(_live_ingesters):
        try:
            ing.stop(timeout=10.0)
        except Exception:
            logger.exception("could not stop %r at exit", ing)


class Ingester(_SupervisorPart, _FramePart, _BackfillPart, _WriterPart):
    """Stores a market's live trades loss-free; see :mod:`quantlab.ingest`.

    Parameters
    ----------
    settings : :class:`IngestSettings`; or give its fields as keywords
        (``Ingester(symbols=("BTCUSDT",), db_path="x.db")``); keywords given
        with ``settings`` override its fields.
    store_factory : ``callable(path) -> store`` opening the writer's store;
        defaults to :class:`quantlab.store.TickStore`. For tests.

    Methods
    -------
    start() : open the store, start the threads; returns self.
    stop(timeout) : close, flush, return the final :class:`IngestStats`.
    wait(timeout) : block until stopped (by :meth:`stop` or a fatal error).
    subscribe(maxlen) : a :class:`Subscription` to stored trades.
    status, stats : frozen snapshots (:class:`IngestStatus`, :class:`IngestStats`).
    status_history() : recent state changes, for display and tests.

    Notes
    -----
    Threads: one daemon thread runs a private asyncio loop (the WebSocket,
    watchdog, rotation and backfill coordination); one daemon writer thread
    owns the only :class:`~quantlab.store.TickStore` of this ingester; REST
    requests run in short-lived daemon threads. Nothing touches the caller's
    event loop, the loop policy or signal handlers, so it works unchanged
    inside Jupyter (no ``nest_asyncio``). An ingester runs once: create a new
    one to start again (it resumes from the store). On a normal interpreter
    exit, running ingesters are stopped (and flushed) by an ``atexit`` hook.

    Parts: every id decision is the :class:`~quantlab.ingest.core.IdLedger`'s
    (``self._core``); the methods of the loop's connections, frames and
    backfill and of the writer thread come from the mixins of
    :mod:`~quantlab.ingest.supervisor`, :mod:`~quantlab.ingest.frames`,
    :mod:`~quantlab.ingest.rest` and :mod:`~quantlab.ingest.writer`. Frames
    leave websockets through :mod:`~quantlab.ingest.tap` unless
    ``ws_fast_path=False`` or ``QUANTLAB_WS_FAST_PATH=0`` (``stats.ws_path``).

    Examples
    --------
    >>> ing = Ingester(symbols=("BTCUSDT", "ETHUSDT"), db_path="data/live.db")
    >>> ing.status.state
    'stopped'
    """

    def __init__(self, settings: IngestSettings | None = None, *,
                 store_factory: Callable[[str], Any] | None = None, **kwargs: Any):
        if settings is None:
            settings = IngestSettings(**kwargs)
        elif kwargs:
            settings = dataclasses.replace(settings, **kwargs)
        self.settings = settings
        self._endpoints = settings.endpoints
        self._url = settings.stream_url
        self._host = urlsplit(self._url).hostname or self._url
        self._store_factory = store_factory
        self._market = settings.market
        self._kind = settings.stream
        self._rng = random.Random()

        self._thread: threading.Thread | None = None
        # Set when the ingester thread has finished (everything flushed). Waited
        # on instead of Thread.join: on Python 3.11 a join interrupted by a
        # signal handler's exception (Ctrl-C) marks the thread stopped while it
        # still runs (bpo-45274), so a later join would return too early.
        self._done = threading.Event()
        self._writer_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._writer_exit = False
        self._started = False
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._status_lock = threading.Lock()
        self._status = IngestStatus("stopped", _now_ms(), url=self._url)
        self._history: collections.deque[tuple[int, str, str | None]] = collections.deque(maxlen=256)

        # hand-off to the writer
        self._live: collections.deque = collections.deque()
        self._cmds: collections.deque[_Command] = collections.deque()
        self._writer_busy = False  # the writer is inside store.write_trades
        self._markers_put = 0  # gap markers appended to _live (loop thread)
        self._markers_done = 0  # gap markers processed (writer thread)
        self._subs: list[Subscription] = []
        self._subs_lock = threading.Lock()

        # loop-thread state. The id accounting (last id per stream, gaps, drops,
        # what REST owes) is the pure IdLedger; the hot path reads core.last.
        self._core = IdLedger(settings.symbols)
        self._ws_fast = False  # decided in _main (quantlab.ingest.tap.use_fast_path)
        self._ws_path = ""  # "tap" or "plain" once a connection was opened
        self._primary: _Conn | None = None
        self._open_conns: set[_Conn] = set()
        self._conn_serial = 0
        self._bg_tasks: set[asyncio.Task] = set()
        self._gap_wake: asyncio.Event | None = None
        self._kick: asyncio.Event | None = None
        self._bucket: TokenBucket | None = None
        self._resume: list = []  # open gaps found in the store at start

        # counters (each written by one thread, read by any)
        self._n_msgs = 0
        self._n_trades = 0
        self._n_dup_store = 0
        self._n_stored = 0
        self._n_backfilled = 0
        self._n_unfillable = 0
        self._n_holes = 0
        self._n_dropped = 0  # trades the writer could not store at stop (writer thread)
        self._n_rejected = 0
        self._n_garbage = 0
        self._n_reconnects = 0
        self._n_rotations = 0
        self._lags: collections.deque[int] = collections.deque(maxlen=4096)
        self._rate_samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=512)
        self._last_trade_ms = 0
        self._write_error: str | None = None

    # ------------------------------------------------------------------ public
    def start(self, timeout: float = 30.0) -> "Ingester":
        """Open the store and start ingesting in the background; returns self.

        Waits (at most ``timeout`` s) until the writer has opened the store,
        so a bad path raises here, not silently in a thread. Connecting
        happens in the background: watch :attr:`status`.
        """
        global _atexit_registered
        if self._started:
            raise QuantlabError("this Ingester was already started; create a new one to restart")
        self._started = True
        self._set_state("connecting")
        self._thread = threading.Thread(target=self._thread_main, name="quantlab-ingest",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise IngestStopTimeout(timeout, 0)
        if self._init_error is not None:
            self._done.wait(timeout)
            raise self._init_error
        _live_ingesters.add(self)
        if not _atexit_registered:  # flush on a normal interpreter exit without stop()
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True
        return self

    def stop(self, timeout: float | None = 30.0) -> IngestStats:
        """Close the connection, store every trade received, and stop.

        Blocks until the writer has committed everything that was received
        (and recorded the gaps of anything it had to drop). Gaps being filled
        stay open in the store and are resumed by the next start.

        Returns the final :class:`IngestStats`. Raises
        :class:`IngestStopTimeout` when ``timeout`` seconds pass first (the
        ingester keeps flushing; call ``stop()`` again to wait more).
        """
        thread = self._thread
        if thread is None:
            return self.stats
        self._stopping = True
        loop, ev = self._loop, self._stop_event
        if loop is not None and ev is not None:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop already finished
                pass
        if not self._done.wait(timeout):
            raise IngestStopTimeout(timeout or 0.0, len(self._live))
        _live_ingesters.discard(self)
        return self.stats

    def __enter__(self) -> "Ingester":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the ingester thread runs."""
        return self._thread is not None and not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the ingester has stopped (after :meth:`stop`, or by itself
        on a fatal error) or ``timeout`` seconds pass; True once stopped."""
        if self._thread is None:
            return True
        return self._done.wait(timeout)

    @property
    def status(self) -> IngestStatus:
        """Current :class:`IngestStatus` (a frozen snapshot)."""
        with self._status_lock:
            st = self._status
        return dataclasses.replace(st, overflow=self._core.overflow,
                                   pending_gaps=self._core.pending)

    def status_history(self) -> list[tuple[int, str, str | None]]:
        """Recent state changes as ``(ms since epoch, state, error)``, oldest first."""
        with self._status_lock:
            return list(self._history)

    @property
    def stats(self) -> IngestStats:
        """Current :class:`IngestStats` (a frozen snapshot)."""
        lags = np.fromiter(list(self._lags), dtype=np.float64)
        p50, p99 = (np.percentile(lags, [50, 99]) if lags.size else (math.nan, math.nan))
        last_ms = self._last_trade_ms
        return IngestStats(
            messages=self._n_msgs,
            trades_received=self._n_trades,
            trades_stored=self._n_stored,
            duplicates=self._core.duplicates + self._n_dup_store,
            trades_per_s=self._rate(),
            lag_ms_p50=float(p50),
            lag_ms_p99=float(p99),
            reconnects=self._n_reconnects,
            rotations=self._n_rotations,
            gaps_found=self._core.gaps_found,
            trades_backfilled=self._n_backfilled,
            unfillable=self._n_unfillable,
            holes=self._n_holes,
            dropped=self._core.dropped + self._n_dropped,
            rejected=self._n_rejected,
            garbage=self._n_garbage,
            queue_depth=len(self._live),
            last_trade_age_s=(_now_ms() - last_ms) / 1000.0 if last_ms else math.nan,
            last_ids=self._core.last_ids(),
            ws_path=self._ws_path,
        )

    def subscribe(self, maxlen: int | None = None) -> Subscription:
        """A new :class:`Subscription` receiving every trade stored from now on.

        ``maxlen`` (default ``settings.subscriber_maxlen``) bounds its ring;
        a consumer that does not :meth:`~Subscription.drain` in time loses the
        oldest trades, counted in :attr:`Subscription.missed`, and never slows
        the ingester.
        """
        sub = Subscription(maxlen or self.settings.subscriber_maxlen, owner=self)
        with self._subs_lock:
            self._subs = self._subs + [sub]  # copy-on-write: the writer iterates without a lock
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            self._subs = [s for s in self._subs if s is not sub]

    def __repr__(self) -> str:
        s = self.settings
        return (f"Ingester({s.market} {s.stream} {','.join(s.symbols)} -> {s.db_path}: "
                f"{self.status})")

    # ------------------------------------------------------------------ status
    def _set_state(self, state: str, error: str | None = None, *, fatal: bool = False) -> None:
        now = _now_ms()
        with self._status_lock:
            old = self._status
            if error is not None:
                err, err_ms = error, now
            else:
                err, err_ms = old.error, old.error_ms
            since = old.since_ms if old.state == state else now
            self._status = IngestStatus(state, since, err, err_ms, False, fatal or old.fatal, 0,
                                        self._url)
            if old.state != state or error is not None:
                self._history.append((now, state, error))
        if error is not None:
            logger.warning("%s: %s", state, error)
        elif old.state != state:
            logger.info("ingester %s", state)

    def _set_error(self, error: str) -> None:
        with self._status_lock:
            st = self._status
        self._set_state(st.state, error)

    def _rate(self) -> float:
        samples = list(self._rate_samples)
        if not samples:
            return 0.0
        now = time.monotonic()
        total = self._n_stored
        base_t, base_n = samples[0]
        for t, n in samples:
            if t <= now - _RATE_WINDOW_S:
                base_t, base_n = t, n
            else:
                break
        dt = now - base_t
        return (total - base_n) / dt if dt > 0 else 0.0

    # ------------------------------------------------------------------ threads
    def _thread_main(self) -> None:
        writer_done = threading.Event()
        writer_ready = threading.Event()

        def writer() -> None:
            try:
                self._writer_main(writer_ready)
            finally:
                writer_done.set()

        self._writer_thread = threading.Thread(target=writer, name="quantlab-ingest-writer",
                                               daemon=True)
        self._writer_thread.start()
        writer_ready.wait()
        try:
            if self._init_error is not None:
                self._set_state("stopped", f"cannot open store {self.settings.db_path}: "
                                           f"{self._init_error}", fatal=True)
                return
            self._ready.set()
            try:
                asyncio.run(self._main())
            except BaseException as exc:  # a bug: report it in status rather than vanish
                logger.exception("ingester loop crashed")
                self._set_state("stopped", f"internal error: {exc!r}", fatal=True)
            finally:
                self._writer_exit = True
                writer_done.wait()
                self._set_state("stopped", None)
        finally:
            self._ready.set()
            self._done.set()

    # ------------------------------------------------------------------ writer
    # ------------------------------------------------------------------ loop
    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._gap_wake = asyncio.Event()
        self._kick = asyncio.Event()
        self._bucket = TokenBucket.for_market(self._market, self.settings.rest_weight_share,
                                              time.monotonic())
        self._ws_fast = use_fast_path(self.settings.ws_fast_path)
        if self._stopping:
            self._stop_event.set()
        for gap in self._resume:
            self._enqueue_gap(gap)
        self._resume = []
        backfill = asyncio.create_task(self._backfill_worker(), name="quantlab-backfill")
        conns = asyncio.create_task(self._connection_manager(), name="quantlab-connections")
        stop_wait = asyncio.create_task(self._stop_event.wait())
        await asyncio.wait({conns, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        # The connection manager notices the stop within one tick and closes its
        # connections; cancel it if it is stuck in a handshake.
        done, _ = await asyncio.wait({conns}, timeout=2 * _TICK_S)
        for task in (conns, backfill, stop_wait):
            task.cancel()
        for task in (conns, backfill):
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                logger.exception("task %s failed", task.get_name())
        for c in list(self._open_conns):
            self._close_later(c)
        if self._bg_tasks:  # closing handshakes, bounded by close_timeout_s
            await asyncio.wait(set(self._bg_tasks), timeout=self.settings.close_timeout_s + 0.5)
        self._flush_drop_ranges()

