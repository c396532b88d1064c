"""The ingester's hot path (loop thread): a frame in, a trade handed off.

Per data frame: one orjson parse (:func:`quantlab.binance.fast_parse_trade`),
one look at :attr:`IdLedger.last <quantlab.ingest.core.IdLedger.last>` and a
``deque.append`` for the writer, about 3 us. Only the one case that decides
nothing (the next id of a stream, room in the writer queue, no drop range
open) is handled inline; every other trade goes to
:meth:`IdLedger.trade_received <quantlab.ingest.core.IdLedger.trade_received>`,
which decides gaps, duplicates and drops, and whose gap markers are queued
ahead of the trade. Frames arrive either from the socket-buffer tap
(:mod:`quantlab.ingest.tap`) or from websockets' ``recv()`` (the plain path,
:meth:`_FramePart._reader`); both call the same handler.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from quantlab.binance import (
    ErrorReply, NotTrade, ServerShutdown, Trade, fast_parse_trade, parse_message,
)
from quantlab.ingest.core import FOREIGN, OVERFLOW, STORE

logger = logging.getLogger("quantlab.ingest")

_YIELD_S = 0.001  # pause of socket reading while the writer is behind (see _frame_handler)
_MAX_PAUSE_S = 0.25  # longest pause; a writer still behind then is stuck, not busy


class _FramePart:
    """The per-frame methods of :class:`~quantlab.ingest.Ingester` (loop
    thread; its state lives on the ingester)."""

    def _on_other(self, c: Any, msg: Any) -> None:
        cls = msg.__class__
        if cls is ServerShutdown:
            # "open a new connection at once" (BINANCE.md "Messages"): wake the
            # supervisor, which opens it and hands over without a gap.
            if c.primary:
                c.shutdown_notice = True
                if self._kick is not None:
                    self._kick.set()
                self._set_error(f"server shutdown notice on connection #{c.serial}; "
                                "opening a new connection")
        elif cls is NotTrade:
            self._n_garbage += 1
            if self._n_garbage <= 10 or self._n_garbage % 1000 == 0:
                logger.warning("ignored frame #%d: %s: %.100r", self._n_garbage, msg.reason, msg.raw)
        elif cls is ErrorReply:
            self._set_error(f"stream error {msg.code}: {msg.msg}")
        elif cls is Trade:  # a trade of another symbol or kind than subscribed
            self._n_garbage += 1
        # ControlReply: acknowledgements carry nothing to act on.

    async def _reader(self, c: Any) -> None:
        """Wait for connection ``c`` to end and raise why (``ConnectionClosed``).

        On the fast path frames are not read here: the tap connection hands
        each one to the handler of :meth:`_frame_handler` as websockets parses
        it. On the plain path this reads them with ``recv()`` and pauses while
        the writer is behind (as the tap pauses the transport).
        """
        ws = c.ws
        if getattr(ws, "on_frame", None) is not None:
            await ws.wait_closed()
            raise ws.close_exc
        handler = self._frame_handler(c, ws, pausable=False)
        recv = ws.recv
        dq = self._live
        pause_at = min(self.settings.queue_max // 2, self.settings.batch_max_trades)
        loop = asyncio.get_running_loop()
        no_pause_until = 0.0
        while True:
            handler(await recv(decode=False))
            if len(dq) > pause_at and self._writer_busy and loop.time() >= no_pause_until:
                start = loop.time()
                while len(dq) >= pause_at and c.active:
                    if loop.time() - start >= _MAX_PAUSE_S:
                        no_pause_until = loop.time() + 1.0  # stuck writer: overflow visibly
                        break
                    await asyncio.sleep(_YIELD_S)

    def _frame_handler(self, c: Any, conn: Any, pausable: bool = True) -> Callable[[bytes], None]:
        """The hot path for connection ``c``: parse, account for the id, hand off.

        Called for every complete data frame, in order (by websockets'
        ``data_received`` on the fast path). It never blocks, so websockets
        answers Binance's pings promptly (BINANCE.md "Connection rules");
        locals are bound once per connection for speed. ``pausable``: it may
        pause the transport while the writer is behind (fast path only; the
        plain path pauses in :meth:`_reader`).
        """
        market = self._market
        core = self._core
        hwm = core.last
        drop_open = core.drop_open
        received = core.trade_received
        dq = self._live
        append = dq.append
        qmax = self.settings.queue_max
        fast = fast_parse_trade
        time_ns = time.time_ns
        monotonic = time.monotonic
        pause_at = min(qmax // 2, self.settings.batch_max_trades)
        loop = asyncio.get_running_loop()

        def resume() -> None:
            if not c.active:
                return
            now = loop.time()
            if len(dq) >= pause_at:  # the writer has not taken the waiting batch yet
                if now - c.pause_start < _MAX_PAUSE_S:
                    loop.call_later(_YIELD_S, resume)
                    return
                # The writer is stuck (disk stall), not just busy: read on and
                # let the bounded queue overflow visibly rather than go stale.
                c.no_pause_until = now + 1.0
            c.paused = False
            try:
                conn.transport.resume_reading()
            except Exception:  # transport already closed
                pass

        def on_frame(data: bytes) -> None:
            if not c.active:  # a connection being closed: its frames are not ours any more
                return
            self._n_msgs += 1
            recv_ms = time_ns() // 1_000_000  # quantlab.schema.now_ms(), inlined (hot path)
            msg = fast(data, market, recv_ms)
            if msg is None:
                msg = parse_message(data, market, recv_ms)
                if msg.__class__ is not Trade:
                    c.messages += 1
                    self._on_other(c, msg)
                    return
            self._n_trades += 1
            if not c.primary:
                c.messages += 1
                c.buffer.append(msg)
                return
            if not c.announced:
                c.announced = True
                self._set_state("live")
            last = hwm.get(msg.symbol)
            depth = len(dq)
            if (last is not None and msg.trade_id == last.trade_id + 1 and depth < qmax
                    and not drop_open):
                # nothing to decide: the next id, room in the queue, no drop range
                hwm[msg.symbol] = msg
                append(msg)
            else:
                verdict = received(msg, qmax - depth, c.start_ids, None, monotonic())
                if core.new_gaps:
                    self._queue_gaps()
                if verdict != STORE:
                    if verdict == FOREIGN:
                        self._on_other(c, msg)
                    elif verdict == OVERFLOW:
                        self._overflow_began()
                    return
                depth = len(dq)
                append(msg)
            if pausable and depth >= pause_at and self._writer_busy and not c.paused \
                    and loop.time() >= c.no_pause_until:
                # A full batch waits while the writer is still committing
                # the previous one. The writer needs the GIL back after
                # every SQLite step, and a thread busy parsing holds it for
                # a whole switch interval (5 ms) each time: stop reading
                # the socket until the writer takes the waiting batch
                # (frames wait in the kernel; the loop stays free). Capped
                # at _MAX_PAUSE_S, so a stuck disk shows as overflow.
                c.paused = True
                c.pause_start = loop.time()
                conn.transport.pause_reading()
                loop.call_later(_YIELD_S, resume)

        def guarded(data: bytes) -> None:
            try:
                on_frame(data)
            except Exception:  # a bug must not kill websockets' data_received
                logger.exception("frame handler failed on %.200r", data)

        return guarded

    def _accept(self, msg: Trade, reason: str) -> None:
        """A held trade of a rotation, replayed at handover through the ledger."""
        core = self._core
        verdict = core.trade_received(msg, self.settings.queue_max - len(self._live), None,
                                      reason, time.monotonic())
        if core.new_gaps:
            self._queue_gaps()
        if verdict == STORE:
            self._live.append(msg)
        elif verdict == FOREIGN:
            self._n_garbage += 1
        elif verdict == OVERFLOW:
            self._overflow_began()

    def _queue_gaps(self) -> None:
        """Queue the ledger's new gaps as markers, in order with the trades:
        the writer records each before it stores the trade that revealed it
        (crash-safe), then hands it to the backfiller."""
        for gap in self._core.take_gaps():
            logger.info("gap %s %s ids %d..%d (%d) [%s]", self._kind, gap.symbol, gap.first_id,
                        gap.last_id, gap.size, gap.reason)
            self._markers_put += 1
            self._live.append(gap)  # markers bypass queue_max: at most one per drop range / jump

    def _overflow_began(self) -> None:
        self._set_error(f"writer queue full ({self.settings.queue_max:,} trades): "
                        "dropping trades; their ids are recorded as gaps and backfilled")

    def _flush_drop_ranges(self) -> None:
        """At stop: open drop ranges become overflow gaps."""
        self._core.connection_closed(final=True, now=time.monotonic())
        if self._core.new_gaps:
            self._queue_gaps()
