"""The ingester's connection supervisor (loop thread): connect, watch, rotate.

One primary connection per ingester; :meth:`_SupervisorPart._connection_manager`
reconnects forever with :class:`~quantlab.ingest.policy.BackoffPolicy`;
:meth:`_SupervisorPart._serve` runs the watchdog (first-message deadline,
staleness per stream) and the rotation (a secondary connection whose trades
are held until :func:`~quantlab.ingest.core.handover_ready`, then replayed
through the ledger). Which frame path a connection uses is
:mod:`quantlab.ingest.tap`'s business; what each trade means is
:mod:`quantlab.ingest.core`'s.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from quantlab import binance
from quantlab.binance import Trade
from quantlab.ingest.core import handover_ready
from quantlab.ingest.policy import _describe, _fmt_s
from quantlab.ingest.tap import _tap_connection_class

logger = logging.getLogger("quantlab.ingest")

_TICK_S = 0.1  # supervisor period: watchdog, rotation, handover checks


class _Conn:
    """One WebSocket connection and its bookkeeping (loop thread only)."""

    __slots__ = ("ws", "serial", "opened", "primary", "buffer", "task", "start_ids",
                 "shutdown_notice", "messages", "active", "paused", "pause_start",
                 "no_pause_until", "announced", "__weakref__")

    def __init__(self, serial: int, primary: bool):
        self.ws: Any = None
        self.serial = serial
        self.opened = time.monotonic()
        self.primary = primary
        self.buffer: list[Trade] = []  # a secondary's trades, held until handover
        self.task: asyncio.Task | None = None
        self.start_ids: dict[str, int | None] = {}
        self.shutdown_notice = False
        self.messages = 0
        self.active = True  # False once closing: late frames are ignored
        self.paused = False  # reading paused while the writer catches up
        self.pause_start = 0.0  # loop time the current pause began
        self.no_pause_until = 0.0  # after a pause timed out: no new pause before this
        self.announced = False  # "live" was announced for this connection


def _task_exc(task: asyncio.Task) -> BaseException | None:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()



class _SupervisorPart:
    """The connection methods of :class:`~quantlab.ingest.Ingester` (loop
    thread; its state lives on the ingester)."""

    def _connect(self, c: _Conn) -> Any:
        """``websockets.asyncio.client.connect`` for connection ``c`` (awaitable)."""
        from websockets.asyncio.client import connect

        s = self.settings
        extra: dict[str, Any] = {}
        if self._ws_fast:  # frames straight from the socket buffer (quantlab.ingest.tap)
            tap = _tap_connection_class()

            def create_connection(*args: Any, **kwargs: Any) -> Any:
                conn = tap(*args, **kwargs)
                conn.on_frame = self._frame_handler(c, conn)
                return conn

            extra["create_connection"] = create_connection
        self._ws_path = "tap" if self._ws_fast else "plain"
        # compression=None: permessage-deflate costs ~40% and Binance does not
        # need it (BROWSER.md). Pings are answered by websockets as long as this
        # loop is never blocked (BINANCE.md "Connection rules").
        return connect(self._url, compression=None, open_timeout=s.open_timeout_s,
                       ping_interval=s.ping_interval_s, ping_timeout=s.ping_timeout_s,
                       close_timeout=s.close_timeout_s, max_queue=s.ws_max_queue,
                       max_size=2 ** 20, user_agent_header="quantlab-ingest",
                       **extra)

    def _new_conn(self, primary: bool) -> _Conn:
        self._conn_serial += 1
        c = _Conn(self._conn_serial, primary)
        c.start_ids = self._core.connection_opened()
        self._open_conns.add(c)
        return c

    async def _connection_manager(self) -> None:
        policy = self.settings.backoff
        attempt = 0
        ever_connected = False
        while not self._stopping:
            self._set_state("connecting" if not ever_connected else "reconnecting")
            c = self._new_conn(primary=True)
            try:
                c.ws = await self._connect(c)
            except Exception as exc:
                self._open_conns.discard(c)
                if not policy.should_retry(exc):
                    self._fatal(f"cannot connect to {self._host}: {_describe(exc)}")
                    return
                delay = max(policy.next_delay(attempt, self._rng), policy.min_delay(exc))
                attempt += 1
                self._set_state("connecting" if not ever_connected else "reconnecting",
                                f"cannot reach {self._host}: {_describe(exc)}; retrying in "
                                f"{_fmt_s(delay)}")
                await self._sleep(delay)
                continue
            if ever_connected:
                self._n_reconnects += 1
            ever_connected = True
            end, opened = await self._serve(c)
            if self._stopping:
                return
            attempt = policy.attempt_after(attempt, time.monotonic() - opened)
            if isinstance(end, BaseException) and not policy.should_retry(end):
                self._fatal(f"connection to {self._host} failed: {_describe(end)}")
                return
            delay = policy.next_delay(attempt, self._rng)
            if isinstance(end, BaseException):
                delay = max(delay, policy.min_delay(end))
            attempt += 1
            text = end if isinstance(end, str) else f"connection lost: {_describe(end)}"
            state = "stale" if isinstance(end, str) and end.startswith("no trade") else "reconnecting"
            self._set_state(state, f"{text}; reconnecting in {_fmt_s(delay)}")
            await self._sleep(delay)

    def _fatal(self, text: str) -> None:
        self._set_state("stopped", f"{text}; stopping (retrying cannot fix this)", fatal=True)
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` s unless stop() is called first."""
        assert self._stop_event is not None
        try:
            await asyncio.wait_for(self._stop_event.wait(), delay)
        except TimeoutError:
            pass

    def _close_later(self, c: _Conn) -> None:
        """Close ``c`` in the background; never wait on a stalled peer here."""
        c.active = False
        if c.task is not None and not c.task.done():
            c.task.cancel()
        self._open_conns.discard(c)
        ws = c.ws
        if ws is None:
            return

        async def close() -> None:
            try:
                await ws.close()
            except Exception:
                pass

        task = asyncio.create_task(close())
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)

    async def _serve(self, c: _Conn) -> tuple[BaseException | str | None, float]:
        """Read primary ``c`` (and rotate it) until it is lost.

        Returns why the last primary ended (an exception, or a text for a
        watchdog decision) and when that connection was opened (monotonic s).
        """
        s = self.settings
        assert self._stop_event is not None
        self._primary = c
        c.task = asyncio.create_task(self._reader(c))
        sec: _Conn | None = None
        next_rotation_try = 0.0
        progress: dict[str, tuple[int | None, float]] = {
            sym: (c.start_ids.get(sym), c.opened) for sym in s.symbols}
        stop_wait = asyncio.create_task(self._stop_event.wait())
        assert self._kick is not None
        kick_wait = asyncio.create_task(self._kick.wait())
        try:
            while True:
                waits = {stop_wait, c.task, kick_wait}
                if sec is not None:
                    waits.add(sec.task)
                await asyncio.wait(waits, timeout=_TICK_S, return_when=asyncio.FIRST_COMPLETED)
                if kick_wait.done():  # serverShutdown: act now, not at the next tick
                    self._kick.clear()
                    kick_wait = asyncio.create_task(self._kick.wait())
                if self._stopping:
                    self._close_later(c)
                    if sec is not None:
                        self._close_later(sec)
                    return None, c.opened
                now = time.monotonic()

                # -- secondary (rotation) lost before the handover: keep the old one
                if sec is not None and sec.task.done():
                    self._set_error(f"rotation: new connection lost before handover: "
                                    f"{_describe(_task_exc(sec.task))}; keeping the old one")
                    self._close_later(sec)
                    sec = None
                    next_rotation_try = now + s.backoff.next_delay(1, self._rng)

                # -- primary lost: promote a live secondary at once, else give up
                if c.task.done():
                    end = _task_exc(c.task)
                    if sec is not None and not sec.task.done():
                        # The new connection (open or still opening) takes over
                        # at once; ids between the two become a gap.
                        self._close_later(c)
                        self._promote(c, sec)
                        c, sec = sec, None
                        progress = {sym: (getattr(self._core.last[sym], "trade_id", None), now)
                                    for sym in s.symbols}
                        continue
                    if sec is not None:
                        self._close_later(sec)
                    self._close_later(c)
                    return end, c.opened

                # -- handover when the old connection caught up with the new one
                if sec is not None:
                    if (self._handover_ready(sec) or now - sec.opened >= s.first_message_timeout_s
                            or len(sec.buffer) >= s.queue_max):
                        if not sec.buffer and sec.messages == 0 and \
                                now - sec.opened >= s.first_message_timeout_s:
                            self._set_error("rotation: new connection sent nothing within "
                                            f"{_fmt_s(s.first_message_timeout_s)}; keeping the old one")
                            self._close_later(sec)
                            sec = None
                            next_rotation_try = now + s.first_message_timeout_s
                        else:
                            old = c
                            self._promote(old, sec)
                            self._close_later(old)
                            c, sec = sec, None
                            progress = {sym: (getattr(self._core.last[sym], "trade_id", None), now)
                                        for sym in s.symbols}
                            continue

                # -- watchdog: first-message deadline and staleness per stream
                for sym in s.symbols:
                    cur = getattr(self._core.last[sym], "trade_id", None)
                    last_id, since = progress[sym]
                    if cur != last_id:
                        progress[sym] = (cur, now)
                        continue
                    stream = binance.stream_name(sym, self._kind)
                    if cur == c.start_ids.get(sym):
                        if now - c.opened >= s.first_message_timeout_s:
                            self._close_later(c)
                            if sec is not None:
                                self._close_later(sec)
                            return (f"no trade on {stream} within {_fmt_s(s.first_message_timeout_s)}"
                                    " of connecting (unknown symbol or wrong route?)"), c.opened
                    elif now - since >= s.stale_after_s:
                        self._close_later(c)
                        if sec is not None:
                            self._close_later(sec)
                        return (f"no trade on {stream} for {_fmt_s(now - since)} "
                                f"(stale_after_s={s.stale_after_s:g})"), c.opened

                # -- rotation: before Binance's 24 h close, or on serverShutdown
                if sec is None and now >= next_rotation_try and (
                        c.shutdown_notice or now - c.opened >= s.max_connection_age_s):
                    sec = self._open_secondary()
        finally:
            stop_wait.cancel()
            kick_wait.cancel()

    def _open_secondary(self) -> _Conn:
        sec = self._new_conn(primary=False)

        async def open_and_read() -> None:
            sec.ws = await self._connect(sec)
            sec.opened = time.monotonic()
            await self._reader(sec)

        # One task both connects and reads, so the supervisor watches one task.
        sec.task = asyncio.create_task(open_and_read())
        return sec

    def _handover_ready(self, sec: _Conn) -> bool:
        """See :func:`quantlab.ingest.core.handover_ready`."""
        return handover_ready(self._core.last, sec.buffer, opened=sec.ws is not None)

    def _promote(self, old: _Conn, sec: _Conn) -> None:
        """Make ``sec`` the primary: replay its held trades through the normal
        path (ids the old connection already delivered are skipped; a jump
        between the two opens a gap), then let its reader run free."""
        old.primary = False
        buffered, sec.buffer = sec.buffer, []
        for t in buffered:
            self._accept(t, "handover")
        sec.primary = True
        self._primary = sec
        self._n_rotations += 1
        if sec.ws is None:
            self._set_state("reconnecting")
        logger.info("rotated to connection #%d (%d trades held during the overlap)",
                    sec.serial, len(buffered))
