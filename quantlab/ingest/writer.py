"""The ingester's writer thread and its hand-off to subscribers.

The writer owns the only :class:`~quantlab.store.TickStore` of an ingester.
It takes trades and gap markers from the loop's ``deque`` in order, commits
them in batches (``batch_max_trades``, ``batch_max_delay_s``), records each
gap before the trade that revealed it (crash-safe), and runs the loop's
store commands (:class:`_Command`: id queries, backfilled pages, gap
updates) in FIFO order. After each commit it hands the batch to every
:class:`Subscription`. No id decisions here: those are in
:mod:`quantlab.ingest.core`.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from quantlab.binance import Trade
from quantlab.config import require_positive
from quantlab.errors import ConfigError, QuantlabError
from quantlab.ingest.core import Gap

if TYPE_CHECKING:
    from quantlab.ingest.ingester import Ingester

logger = logging.getLogger("quantlab.ingest")

_IDLE_POLL_S = 0.01  # writer poll period when idle: bounds the added latency to 10 ms


# =============================================================================
# Subscribers
# =============================================================================
class Subscription:
    """A bounded, thread-safe hand-off of stored trades to one consumer.

    The writer thread appends every batch *after* committing it, so a
    subscriber sees stored trades only (live ones in id order per symbol;
    backfilled ones late, when their gap is filled: order by ``time_ms`` and
    ``trade_id`` if you need time order). A consumer that falls behind never
    slows the ingester: the ring keeps the newest ``maxlen`` trades and
    :attr:`missed` counts the oldest ones it overwrote.

    Use :meth:`drain` from any thread, a few times per second.
    """

    def __init__(self, maxlen: int, owner: "Ingester | None" = None):
        require_positive("maxlen", maxlen)
        self.maxlen = int(maxlen)
        self._buf: collections.deque[Trade] = collections.deque(maxlen=self.maxlen)
        self._lock = threading.Lock()
        self._owner = weakref.ref(owner) if owner is not None else None
        self.missed = 0  #: trades overwritten before :meth:`drain` read them
        self.delivered = 0  #: trades handed out by :meth:`drain`
        self.closed = False

    def _push(self, trades: Sequence[Trade]) -> None:
        """Writer thread: append a stored batch (O(len) C-level extend)."""
        with self._lock:
            over = len(self._buf) + len(trades) - self.maxlen
            if over > 0:
                self.missed += over
            self._buf.extend(trades)

    def drain(self) -> list[Trade]:
        """Everything buffered since the last call, oldest first."""
        with self._lock:
            out = list(self._buf)
            self._buf.clear()
        self.delivered += len(out)
        return out

    def __len__(self) -> int:
        return len(self._buf)

    def close(self) -> None:
        """Stop receiving trades."""
        self.closed = True
        owner = self._owner() if self._owner else None
        if owner is not None:
            owner._unsubscribe(self)

    def __repr__(self) -> str:
        return f"Subscription(maxlen={self.maxlen}, buffered={len(self._buf)}, missed={self.missed})"



class _Command:
    """A call the writer thread runs with its store (gap records, id queries,
    backfilled trades), in FIFO order with other commands."""

    __slots__ = ("fn", "loop", "future")

    def __init__(self, fn: Callable[[Any], Any], loop: asyncio.AbstractEventLoop | None,
                 future: Any):
        self.fn = fn
        self.loop = loop
        self.future = future



class _WriterPart:
    """The writer-thread methods of :class:`~quantlab.ingest.Ingester` (its
    state lives on the ingester; see there)."""

    # ------------------------------------------------------------------ threads
    def _open_store(self) -> Any:
        if self._store_factory is not None:
            return self._store_factory(self.settings.db_path)
        from quantlab.store import TickStore

        Path(self.settings.db_path).parent.mkdir(parents=True, exist_ok=True)
        return TickStore(self.settings.db_path)


    # ------------------------------------------------------------------ writer
    def _writer_main(self, ready: threading.Event) -> None:
        try:
            store = self._open_store()
            self._init_from_store(store)
        except BaseException as exc:
            self._init_error = exc
            ready.set()
            return
        ready.set()
        cmds = self._cmds
        pending: list = []
        first_at = 0.0
        try:
            while True:
                try:
                    pending, first_at, done = self._writer_step(store, pending, first_at)
                except Exception as exc:  # a bug: report it, keep the batch, keep going
                    logger.exception("writer step failed")
                    self._set_error(f"writer error: {exc!r}")
                    time.sleep(0.1)
                    continue
                if done:
                    break
        finally:
            # Commands still queued at exit (e.g. a backfill page) are answered
            # with an error, so no coroutine waits forever.
            while cmds:
                c = cmds.popleft()
                self._deliver(c, None, QuantlabError("ingester stopped"))
            try:
                store.close()
            except Exception:
                logger.exception("closing the store failed")

    def _writer_step(self, store: Any, pending: list, first_at: float) -> tuple[list, float, bool]:
        """One pass of the writer: run commands, top up the batch, write it when
        full or ``batch_max_delay_s`` old, else nap. Returns the new batch state
        and whether the writer is done (stopping and everything written)."""
        s = self.settings
        dq, cmds = self._live, self._cmds
        popleft = dq.popleft
        batch_max, delay = s.batch_max_trades, s.batch_max_delay_s
        while cmds:
            self._run_command(store, cmds.popleft())
        n = len(dq)
        if n:
            take = min(n, batch_max - len(pending))
            if not pending:
                first_at = time.monotonic()
            pending += [popleft() for _ in range(take)]
        exiting = self._writer_exit
        if pending and (len(pending) >= batch_max or exiting
                        or time.monotonic() - first_at >= delay):
            self._write_items(store, pending)
            return [], 0.0, False
        if exiting and not dq and not cmds:
            return pending, first_at, True
        if not dq or pending:
            time.sleep(_IDLE_POLL_S if not pending else
                       min(_IDLE_POLL_S, max(0.0, first_at + delay - time.monotonic())))
        return pending, first_at, False

    def _init_from_store(self, store: Any) -> None:
        """Seed the last id per symbol and the open gaps to resume (writer thread)."""
        s = self.settings
        last_ms: dict[str, int | None] = {}
        try:
            inst = store.instruments()
            for row in inst.to_dict("records"):
                if row["market"] == s.market and row["kind"] == s.stream:
                    last_ms[row["symbol"]] = _opt_int(row.get("last_ms"))
        except Exception:  # only needed to bound USD-M reconciliation in time
            logger.exception("cannot read the instruments registry")
        for sym in s.symbols:
            last = store.last_trade_id(s.market, sym, s.stream)
            # Ids grow with time, so the stream's newest time is that of its last id.
            self._core.seed(sym, last, last_ms.get(sym))
        self._resume = self._open_gaps_from_store(store)

    def _open_gaps_from_store(self, store: Any) -> list[Gap]:
        """Gaps of our streams still ``open`` in the store (a previous run died or
        stopped before filling them): they are filled again first."""
        s = self.settings
        try:
            frame = store.gaps(market=s.market, kind=s.stream, status="open")
        except Exception:
            logger.exception("cannot read the gaps table; open gaps will not be resumed")
            return []
        out: list[Gap] = []
        for row in frame.to_dict("records"):
            if row["symbol"] not in s.symbols:
                continue
            out.append(Gap(row["symbol"], int(row["first_missing_id"]),
                            int(row["last_missing_id"]), "resume", _opt_int(row.get("before_ms")),
                            _opt_int(row.get("after_ms")), gap_id=int(row["gap_id"])))
        if out:
            logger.info("resuming %d open gap(s) from %s", len(out), s.db_path)
        return out

    def _write_items(self, store: Any, items: list) -> None:
        """Write a drained batch; split it at gap markers (rare), which are
        recorded in order with the trades around them."""
        if self._markers_put == self._markers_done:
            self._write_trades(store, items, live=True)
            return
        run: list[Trade] = []
        for item in items:
            if item.__class__ is Gap:
                if run:
                    self._write_trades(store, run, live=True)
                    run = []
                self._record_gap(store, item)
                self._markers_done += 1
            else:
                run.append(item)
        if run:
            self._write_trades(store, run, live=True)

    def _write_trades(self, store: Any, trades: list[Trade], *, live: bool) -> Any:
        """Store ``trades`` in one transaction (writer thread); never raises.

        A store error (disk full, lock held beyond the busy timeout) keeps the
        batch and retries with a growing pause, reported in the status: the
        queue bound turns a long outage into counted drops and gaps, never into
        silent loss or unbounded memory. A batch the store refuses as invalid
        (:class:`~quantlab.errors.ConfigError`) is retried trade by trade and
        the invalid ones are counted in ``stats.rejected``.
        """
        attempt = 0
        while True:
            try:
                self._writer_busy = True
                try:
                    result = store.write_trades(trades)
                finally:
                    self._writer_busy = False
                break
            except ConfigError as exc:
                if len(trades) == 1:
                    self._n_rejected += 1
                    self._set_error(f"store refused a trade: {exc}: {trades[0]}")
                    return None
                for t in trades:
                    self._write_trades(store, [t], live=live)
                return None
            except Exception as exc:
                attempt += 1
                text = f"cannot write to {self.settings.db_path}: {exc}; retrying"
                if self._write_error != text:
                    self._write_error = text
                    self._set_error(text)
                if self._writer_exit and attempt >= 5:
                    # Stopping and the store still fails: these ids stay
                    # missing; the next start sees them as a gap after the
                    # last stored id and backfills them.
                    self._n_dropped += len(trades)
                    self._set_error(f"{len(trades)} trades not stored at stop: {exc}; the next "
                                    "start backfills them")
                    return None
                time.sleep(min(2.0, 0.05 * 2 ** attempt))
        self._write_error = None
        inserted = int(getattr(result, "inserted", len(trades)))
        self._n_stored += inserted
        self._n_dup_store += int(getattr(result, "duplicates", len(trades) - inserted))
        self._rate_samples.append((time.monotonic(), self._n_stored))
        if live and trades:
            tail = trades[-64:]
            self._lags.extend(t.recv_ms - t.time_ms for t in tail)
            self._last_trade_ms = max(self._last_trade_ms, tail[-1].time_ms)
        for sub in self._subs:
            sub._push(trades)
        return result

    def _record_gap(self, store: Any, gap: Gap) -> None:
        s = self.settings
        try:
            gap.gap_id = int(store.record_gap(
                s.market, gap.symbol, s.stream, gap.first_id, gap.last_id, reason=gap.reason,
                before_ms=gap.before_ms, after_ms=gap.after_ms))
        except Exception:
            logger.exception("cannot record gap %s; it will still be backfilled", gap)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._enqueue_gap, gap)
            except RuntimeError:  # loop finished: the gap stays open in the store
                pass

    def _run_command(self, store: Any, cmd: _Command) -> None:
        try:
            result, exc = cmd.fn(store), None
        except BaseException as e:
            result, exc = None, e
        self._deliver(cmd, result, exc)

    @staticmethod
    def _deliver(cmd: _Command, result: Any, exc: BaseException | None) -> None:
        fut = cmd.future
        if cmd.loop is None:  # a concurrent.futures.Future
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            return

        def deliver() -> None:
            if not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)

        try:
            cmd.loop.call_soon_threadsafe(deliver)
        except RuntimeError:
            pass

    async def _writer_call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(store)`` on the writer thread; await its result."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._cmds.append(_Command(fn, loop, fut))
        return await fut



def _opt_int(v: object) -> int | None:
    try:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
