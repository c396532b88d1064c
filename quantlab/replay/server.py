"""The :class:`ReplayServer`: a private asyncio loop in a daemon thread (or
:meth:`ReplayServer.serve` as a coroutine), websockets serving streams and REST on
one port, broadcasting every generated trade and firing faults.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import numpy as np
import orjson
import pandas as pd
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from quantlab import binance
from quantlab.config import require_choice
from quantlab.errors import ConfigError
from quantlab.schema import KINDS, TICK_COLUMNS, TICK_DTYPES
from quantlab.schema import now_ms as _now_ms
from quantlab.synthetic import TRADE_TYPES, AggBatch, TradeBatch, empty_trade_batch
from quantlab.replay.faults import Faults, ReplayStats
from quantlab.replay.protocol import (
    MAX_INCOMING_PER_S,
    MAX_STREAMS,
    _STREAM_RE,
    _too_many_streams,
    _ws_frame,
    handle_control,
    parse_ws_path,
)
from quantlab.replay.rest import _AGG_DTYPES, _TRADE_DTYPES, _http_response, _kline_rows
from quantlab.replay.sources import SyntheticSource
from quantlab.replay.streaming import (
    _Client,
    _KlineStream,
    _Market,
    _SERVED,
    _Step,
    _route_serves,
    warn_if_exposed,
)

logger = logging.getLogger(__name__)
# websockets logs every connection (and every REST answer) at INFO; the CLI quiets this.
_ws_logger = logging.getLogger("quantlab.replay.ws")


# A stalled or slow reader makes the socket's write buffer grow: stop writing above
# this many bytes and resume when it has drained (bytes).
_WRITE_HIGH_WATER = 1 << 20
# Steps (batches of trades) waiting per connection before a paced server gives up on
# a reader that cannot keep up and drops it, as Binance drops slow consumers.
_PACED_QUEUE = 10_000
# In as-fast-as-possible mode the slowest reader sets the pace (back-pressure).
_ASAP_QUEUE = 4
# =============================================================================
# The server
# =============================================================================
class ReplayServer:
    """Binance-protocol WebSocket + REST server on one loopback port.

    Parameters
    ----------
    source : :class:`SyntheticSource` (default, 50 trades/s) or :class:`RecordedSource`;
        or a list of two, one spot and one USD-M (``market == "both"``): spot on
        ``/api/v3``, ``/ws``, ``/stream``; USD-M on ``/fapi/v1``, ``/market/...``,
        ``/public/...``, each market with its own tape.
    host, port : where to listen; port 0 picks a free port (see :attr:`port`). A host
        other than loopback is logged as a warning (no authentication here).
    faults : what to break (:class:`Faults`); default nothing.
    ping_interval_s, ping_timeout_s : server keepalive pings (Binance spot: every 20 s,
        60 s to answer; futures: 3 min / 10 min). ``None`` disables.
    usdm_trade_routes : USD-M routes on which ``@trade`` flows (disputed, BINANCE.md);
        ``@aggTrade`` flows on ``/market``.
    tape_limit : rows kept per symbol and kind for REST (oldest dropped first).
    close_timeout_s : how long a closing handshake may take, seconds.
    live_clock : start a recording's clock when the server starts (live-like: a client
        that subscribes late misses the first trades); default: at the first
        subscription to one of its streams, so the first client gets the whole tape.
    max_streams : streams per connection (Binance: 1024).
    max_incoming_per_s : text messages per second a connection may send before it is
        closed with 1008 ``Too many requests``; ``"binance"`` (default): 5 on spot, 10 on
        USD-M; ``None``: no limit. ``Faults.max_incoming_per_s``, when set, wins.

    Use it as a context manager (a daemon thread runs the event loop), or ``await
    server.serve()`` in a process that owns its event loop.
    """

    def __init__(self, source: Any = None, *, host: str = "127.0.0.1",
                 port: int = 0, faults: Faults | None = None, ping_interval_s: float | None = 20.0,
                 ping_timeout_s: float | None = 60.0, usdm_trade_routes: Sequence[str] = binance.USDM_ROUTES,
                 tape_limit: int = 1_000_000, close_timeout_s: float = 2.0, live_clock: bool = False,
                 max_streams: int = MAX_STREAMS, max_incoming_per_s: float | str | None = "binance"):
        sources = list(source) if isinstance(source, (list, tuple)) else [
            source if source is not None else SyntheticSource()]
        names = [s.instruments.market for s in sources]
        if not 1 <= len(sources) <= 2 or len(set(names)) != len(names):
            raise ConfigError("source", names, "one source, or one spot and one USD-M source")
        self.faults = faults if faults is not None else Faults()
        if not isinstance(self.faults, Faults):
            raise ConfigError("faults", faults, "a Faults value")
        for r in usdm_trade_routes:
            require_choice("usdm_trade_routes", r, binance.USDM_ROUTES)
        if tape_limit < 1000:
            raise ConfigError("tape_limit", tape_limit, "at least 1000 rows")
        if not isinstance(max_streams, int) or max_streams < 1:
            raise ConfigError("max_streams", max_streams, "a number of streams >= 1")
        if not (max_incoming_per_s is None or max_incoming_per_s == "binance"
                or (isinstance(max_incoming_per_s, (int, float)) and max_incoming_per_s > 0)):
            raise ConfigError("max_incoming_per_s", max_incoming_per_s, "messages/s > 0, 'binance' or None")
        self.host = host
        self._port = int(port)
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.close_timeout_s = close_timeout_s
        self.usdm_trade_routes = tuple(usdm_trade_routes)
        self.max_streams = max_streams
        self.max_incoming_per_s = max_incoming_per_s
        self._stats = ReplayStats()
        self._markets = {m.name: m for m in (
            _Market(src, self.faults, self._stats, tape_limit, live_clock) for src in sources)}
        if self.faults.skip_symbol is not None and all(m.skip is None for m in self._markets.values()):
            raise ConfigError("skip_symbol", self.faults.skip_symbol, "one of " + ", ".join(
                sorted({s for m in self._markets.values() for s in m.instruments.symbols})))
        first = self._markets[names[0]]
        self.source = first.source
        self.instruments = first.instruments
        self.market = names[0] if len(names) == 1 else "both"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None

    # --- addresses -------------------------------------------------------------
    @property
    def port(self) -> int:
        """The TCP port (known once listening)."""
        return self._port

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT``: base of ``/ws/<stream>`` and ``/stream?streams=``."""
        return f"ws://{self.host}:{self._port}"

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT``: base of ``/api/v3/...`` and/or ``/fapi/v1/...``."""
        return f"http://{self.host}:{self._port}"

    @property
    def markets(self) -> tuple[str, ...]:
        """The markets served (``("spot",)``, ``("usdm",)`` or ``("spot", "usdm")``)."""
        return tuple(self._markets)

    @property
    def stats(self) -> ReplayStats:
        """A snapshot of the counters (every market)."""
        return dataclasses.replace(self._stats)

    # --- what was produced ----------------------------------------------------------
    def _market(self, market: str | None) -> _Market:
        if market is None:
            if len(self._markets) > 1:
                raise ConfigError("market", market, "'spot' or 'usdm' (this server serves both)")
            return next(iter(self._markets.values()))
        if market not in self._markets:
            raise ConfigError("market", market, "one of " + ", ".join(self._markets))
        return self._markets[market]

    def produced_ids(self, symbol: str, kind: str = "trade", market: str | None = None) -> np.ndarray:
        """Sorted int64 ids of every ``kind`` (``"trade"`` or ``"aggTrade"``) row generated
        for ``symbol`` and still in the tape, including ids a fault kept off the stream.
        ``market`` is required on a server of both markets."""
        m = self._market(market)
        s = self._symbol_index(m, symbol)
        require_choice("kind", kind, KINDS)
        with m.tape.lock:
            cols = (m.tape.trades if kind == "trade" else m.tape.aggs)[s]
            return cols["id"].copy()

    def produced(self, symbol: str, kind: str = "trade", market: str | None = None) -> pd.DataFrame:
        """The tape of ``symbol`` as a tick frame (:data:`quantlab.schema.TICK_COLUMNS`)."""
        m = self._market(market)
        s = self._symbol_index(m, symbol)
        require_choice("kind", kind, KINDS)
        inst = m.instruments
        pdp, qdp = 10.0 ** inst.price_dp[s], 10.0 ** inst.qty_dp[s]
        with m.tape.lock:
            cols = (m.tape.trades if kind == "trade" else m.tape.aggs)[s]
            c = {k: cols[k].copy() for k in (_TRADE_DTYPES if kind == "trade" else _AGG_DTYPES)}
        n = c["id"].size
        if kind == "trade" and m.name == "usdm":
            ttype = np.asarray(TRADE_TYPES, dtype=object)[c["ttype"]]
        else:
            ttype = np.full(n, None, dtype=object)
        frame = pd.DataFrame({
            "market": np.full(n, m.name, dtype=object), "symbol": np.full(n, symbol.upper(), dtype=object),
            "kind": np.full(n, kind, dtype=object), "trade_id": c["id"], "time_ms": c["time"],
            "recv_ms": np.zeros(n, np.int64), "price": c["price"] / pdp, "qty": c["qty"] / qdp,
            "is_buyer_maker": c["m"], "trade_type": ttype,
            "first_trade_id": pd.array(c["first"] if kind == "aggTrade" else [pd.NA] * n, dtype="Int64"),
            "last_trade_id": pd.array(c["last"] if kind == "aggTrade" else [pd.NA] * n, dtype="Int64"),
        })
        return frame[list(TICK_COLUMNS)].astype(TICK_DTYPES)

    @staticmethod
    def _symbol_index(m: _Market, symbol: str) -> int:
        s = m.instruments.index(symbol.upper())
        if s < 0:
            raise ConfigError("symbol", symbol, "one of " + ", ".join(m.instruments.symbols))
        return s

    # --- thread face -------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> "ReplayServer":
        """Run the server on a private event loop in a daemon thread; return once listening."""
        if self._thread is not None:
            raise RuntimeError("ReplayServer already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            async def run() -> None:
                self._main_task = asyncio.current_task()
                try:
                    await self.serve(ready=ready.set)
                except asyncio.CancelledError:
                    pass

            try:
                asyncio.run(run())
            except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=main, name="quantlab-replay", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"replay server did not start listening within {timeout_s} s")
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close every connection (1001), stop listening and end the thread."""
        thread, loop, task = self._thread, self._loop, self._main_task
        if thread is None:
            return
        if loop is not None and task is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # loop already closed
                pass
        thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- asyncio face ----------------------------------------------------------------
    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until cancelled. ``ready()`` is called once listening (then
        :attr:`ws_url` and :attr:`rest_url` are valid)."""
        self._loop = asyncio.get_running_loop()
        for m in self._markets.values():
            m.has_clients, m.subscribed = asyncio.Event(), asyncio.Event()
        async with ws_serve(self._handle, self.host, self._port, process_request=self._process_request,
                            # No permessage-deflate: it costs CPU per message and per client,
                            # and frames are pre-framed once for every client.
                            compression=None,
                            ping_interval=self.ping_interval_s, ping_timeout=self.ping_timeout_s,
                            close_timeout=self.close_timeout_s, logger=_ws_logger) as server:
            self._port = server.sockets[0].getsockname()[1]
            warn_if_exposed(self.host)
            now = _now_ms()
            for m in self._markets.values():
                history = m.source.start(now)
                if history is not None:
                    self._record(m, *history)
                if not m.waits_for_subscription:
                    m.source.begin(now)
            producers = [asyncio.create_task(self._produce(m), name=f"replay-producer-{m.name}")
                         for m in self._markets.values()]
            logger.info("replay server listening on %s (%s)", self.ws_url, "; ".join(
                f"{m.name}: {', '.join(m.instruments.symbols)}" for m in self._markets.values()))
            if ready is not None:
                ready()
            try:
                await asyncio.Future()  # until cancelled
            finally:
                for p in producers:
                    p.cancel()
                for m in self._markets.values():
                    for c in list(m.clients):
                        for t in c.tasks:
                            t.cancel()

    def _record(self, m: _Market, batch: TradeBatch, aggs: AggBatch | None) -> None:
        m.tape.record(batch, aggs)
        self._stats.trades_produced += len(batch)
        self._stats.agg_trades_produced += 0 if aggs is None else len(aggs)

    async def _produce(self, m: _Market) -> None:
        """Generate (or read) one market's trades on the source's schedule and hand every
        step to every connection of that market. Runs whether or not anyone listens
        (Binance does not wait for a client), except before a recording's first
        subscription and in as-fast-as-possible mode, which has no clock to keep."""
        src = m.source
        try:
            if m.waits_for_subscription:
                await m.subscribed.wait()
                src.begin(_now_ms())
                logger.info("%s replay clock started at the first subscription", m.name)
            while True:
                if not src.paced and not m.clients:
                    m.has_clients.clear()
                    await m.has_clients.wait()
                batch, aggs, wait_s, encoded, extras = src.poll(_now_ms())
                has_trades = batch is not None and len(batch) > 0
                if has_trades:
                    self._record(m, batch, aggs)
                if has_trades or extras:
                    if not has_trades:
                        batch, aggs = empty_trade_batch(m.instruments), None
                    extra = dict(extras or {})
                    if has_trades and m.klines:
                        extra.update(self._kline_messages(m, batch))
                    step = _Step(batch, aggs, m.skip, encoded, extra)
                    for c in list(m.clients):
                        if not c.queue.full():
                            c.queue.put_nowait(step)
                        elif src.paced:
                            # A reader this far behind would only fall further back.
                            logger.warning("dropping a client that does not keep up (%d steps queued)",
                                           c.queue.qsize())
                            self._stats.slow_clients_dropped += 1
                            m.clients.discard(c)
                            c.ws.transport.abort()
                        else:
                            await c.queue.put(step)  # as fast as the slowest reader
                if wait_s is None:
                    self._stats.source_exhausted = True
                    logger.info("%s replay source exhausted after %d trades", m.name, self._stats.trades_produced)
                    return
                await asyncio.sleep(wait_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug; keep serving REST and say why
            logger.exception("replay producer failed")

    @staticmethod
    def _kline_messages(m: _Market, batch: TradeBatch) -> dict[tuple[int, str], tuple[list[bytes], np.ndarray]]:
        """Messages of every kline stream of ``m`` due with ``batch``."""
        ok = _kline_rows(batch.trade_type, batch.price, batch.qty)
        sym = batch.sym[ok]
        out = {}
        for (s, kind), k in m.klines.items():
            r = ok[sym == s]
            if r.size:
                msgs = k.update(batch.time_ms[r], batch.trade_id[r], batch.price[r], batch.qty[r],
                                batch.is_buyer_maker[r], batch.event_ms[r], r.astype(np.float64))
                if msgs[0]:
                    out[(s, kind)] = msgs
        return out

    def _kline_stream(self, m: _Market, s: int, interval: str) -> None:
        """Create the kline stream of (symbol ``s``, ``interval``), seeded from the tape."""
        key = (s, "kline_" + interval)
        if key in m.klines:
            return
        inst = m.instruments
        k = _KlineStream(m.name, inst.symbols[s], interval, inst.price_dp[s], inst.qty_dp[s])
        with m.tape.lock:
            cols = m.tape.trades[s]
            ok = _kline_rows(cols["ttype"], cols["price"], cols["qty"])
            k.seed(cols["time"][ok], cols["id"][ok], cols["price"][ok], cols["qty"][ok], cols["m"][ok])
        m.klines[key] = k

    # --- routing ----------------------------------------------------------------------
    def _market_for_route(self, route: str) -> _Market:
        """Spot serves the unrouted paths, USD-M ``/market`` and ``/public`` (both
        markets); a one-market server serves every path."""
        if len(self._markets) == 1:
            return next(iter(self._markets.values()))
        return self._markets["spot" if route == "" else "usdm"]

    def _unserved(self, m: _Market, stream: str) -> str | None:
        """Why a valid stream name cannot be fed from ``m``'s data, or ``None``."""
        name, _, kind = stream.partition("@")
        if kind in KINDS:
            return None
        if kind.startswith("kline_"):
            if kind == "kline_1s" and m.name == "usdm":
                return f"{stream}: USD-M has no 1s klines"
            return None
        if not name.startswith("!") and (kind == "bookTicker" or kind.startswith("depth")):
            s = m.instruments.index(name.upper())
            if s < 0 or name != name.lower() or (s, kind) in m.streams:
                return None  # an unknown or upper-case symbol: acknowledged and silent, as on Binance
            held = sorted(f"{m.instruments.symbols[i].lower()}@{k}" for i, k in m.streams)
            return (f"{stream} is not in this replay's data (bookTicker and depth streams come from "
                    f"captures that hold them; held here: {', '.join(held) or 'none'})")
        return f"{stream} is not served by quantlab replay (it serves {_SERVED})"

    # --- HTTP -------------------------------------------------------------------------
    def _process_request(self, connection: Any, request: Any):
        """websockets hook: WebSocket upgrades pass through (404 on an unknown path, 400
        for too many or unservable streams in the URL); any other GET is a REST call
        answered here."""
        upgrade = request.headers.get("Upgrade", "")
        if upgrade.lower() == "websocket":
            parsed = parse_ws_path(request.path)
            if parsed is None:
                return _http_response(404, orjson.dumps({"code": -1, "msg": f"no stream at {request.path}"}))
            route, _, streams = parsed
            if len(streams) > self.max_streams:
                return _http_response(400, orjson.dumps({"code": 2, "msg": _too_many_streams(self.max_streams)}))
            m = self._market_for_route(route)
            for stream in streams:
                reason = self._unserved(m, stream) if _STREAM_RE.match(stream) else None
                if reason is not None:
                    return _http_response(400, orjson.dumps({"code": 2, "msg": f"Invalid request: {reason}"}))
            return None
        parts = urlsplit(request.path)
        for m in self._markets.values():
            if parts.path.startswith(m.rest.prefix + "/"):
                return _http_response(*m.rest.handle(request.path, request.headers))
        if len(self._markets) == 1:
            return _http_response(*next(iter(self._markets.values())).rest.handle(request.path, request.headers))
        self._stats.rest_requests += 1
        return _http_response(404, orjson.dumps({"code": -1, "msg": f"Unknown path {parts.path}; REST lives "
                                                                     "under /api/v3 (spot) and /fapi/v1 (USD-M)"}))

    # --- one WebSocket connection ---------------------------------------------------------
    def _incoming_limit(self, m: _Market) -> float | None:
        if self.faults.max_incoming_per_s is not None:
            return self.faults.max_incoming_per_s
        if self.max_incoming_per_s == "binance":
            return MAX_INCOMING_PER_S[m.name]
        return self.max_incoming_per_s

    async def _handle(self, ws: Any) -> None:
        route, combined, streams = parse_ws_path(ws.request.path)  # validated in _process_request
        m = self._market_for_route(route)
        c = _Client(ws, m, route, combined, [s for s in streams if _STREAM_RE.match(s)],
                    _PACED_QUEUE if m.source.paced else _ASAP_QUEUE, self.faults, self._incoming_limit(m))
        m.clients.add(c)
        self._resolve(c)
        self._stats.connections_accepted += 1
        self._stats.connections_open += 1
        m.has_clients.set()
        c.tasks.append(asyncio.create_task(self._pump(c)))
        if self.faults.lifetime_s is not None:
            c.tasks.append(asyncio.create_task(
                self._close_later(c, self.faults.lifetime_s, 1001, "connection lifetime reached", "lifetime_closes")))
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    continue  # a binary frame carries no control request: ignore it
                if self._over_incoming_limit(c):
                    self._stats.rate_limit_closes += 1
                    await ws.close(1008, "Too many requests")
                    break
                reply, c.subscriptions, c.combined = handle_control(
                    message, c.subscriptions, c.combined, max_streams=self.max_streams,
                    unserved=lambda stream: self._unserved(m, stream))
                self._resolve(c)
                self._stats.control_replies += 1
                await ws.send(orjson.dumps(reply).decode())
        except ConnectionClosed:
            pass
        finally:
            m.clients.discard(c)
            self._stats.connections_open -= 1
            for t in c.tasks:
                t.cancel()

    def _resolve(self, c: _Client) -> None:
        """Map subscriptions to the streams that really flow (symbol index, kind); the
        first one that flows starts a waiting recording's clock."""
        m = c.market
        keys = []
        for stream in c.subscriptions:
            name, _, kind = stream.partition("@")
            if name != name.lower():
                continue  # upper case is acknowledged and silent (BINANCE.md)
            s = m.instruments.index(name.upper())
            if s < 0 or not _route_serves(m.name, c.route, kind, self.usdm_trade_routes):
                continue
            if kind in KINDS or (s, kind) in m.streams:
                keys.append((s, kind))
            elif kind.startswith("kline_") and self._unserved(m, stream) is None:
                self._kline_stream(m, s, kind[len("kline_"):])
                keys.append((s, kind))
        c.keys = list(dict.fromkeys(keys))
        if c.keys and m.subscribed is not None:
            m.subscribed.set()

    def _over_incoming_limit(self, c: _Client) -> bool:
        limit = c.incoming_limit
        if limit is None:
            return False
        now = time.monotonic()
        c.incoming.append(now)
        while c.incoming and c.incoming[0] < now - 1.0:
            c.incoming.popleft()
        return len(c.incoming) > limit

    async def _pump(self, c: _Client) -> None:
        """Send every step's frames of this client's streams, applying the faults."""
        try:
            while True:
                step = await c.queue.get()
                if not c.keys:
                    continue
                frames = c.frames_for(step)
                if frames and not await self._deliver(c, frames):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug; drop this client, keep the server
            logger.exception("replay pump failed")
            c.ws.transport.abort()

    async def _deliver(self, c: _Client, frames: list[bytes]) -> bool:
        """Write ``frames`` (pre-framed) to the socket; False once the connection is gone."""
        transport = c.ws.transport
        i, n = 0, len(frames)
        while i < n:
            if c.ws.protocol.state is not State.OPEN or transport.is_closing():
                return False
            if c.stalled_until:
                if time.monotonic() < c.stalled_until:
                    return True  # stalled: these trades are simply missed
                c.stalled_until = 0.0
            take = min(n - i, self._messages_until_fault(c))
            blob = b"".join(frames[i:i + take])
            transport.write(blob)
            i += take
            c.sent += take
            self._stats.messages_sent += take
            self._stats.bytes_sent += len(blob)
            if not self._fire_faults(c):
                return False
            while transport.get_write_buffer_size() > _WRITE_HIGH_WATER and not transport.is_closing():
                await asyncio.sleep(0.002)  # the reader is behind: wait for the kernel to take more
        return True

    def _messages_until_fault(self, c: _Client) -> int:
        f = self.faults
        due = [x for x in (
            f.drop_after_messages,
            f.stall_after_messages if c.stall_pending else None,
            f.shutdown_after_messages if c.shutdown_pending else None,
            c.next_garbage,
        ) if x is not None and x > c.sent]
        return min(due) - c.sent if due else 1 << 62

    def _fire_faults(self, c: _Client) -> bool:
        """Apply the faults due after ``c.sent`` messages; False if the connection is gone."""
        f, ws = self.faults, c.ws
        if c.next_garbage is not None and c.sent >= c.next_garbage:
            ws.transport.write(self._garbage(c))
            c.next_garbage += f.garbage_every_messages
            self._stats.garbage_sent += 1
        if c.shutdown_pending and c.sent >= f.shutdown_after_messages:
            c.shutdown_pending = False
            event = b'{"e":"serverShutdown","E":%d}' % _now_ms()
            payload = b'{"stream":"!serverShutdown","data":' + event + b"}" if c.combined else event
            ws.transport.write(_ws_frame(payload))
            self._stats.shutdown_notices += 1
            c.tasks.append(asyncio.create_task(
                self._close_later(c, f.shutdown_grace_s, 1001, "server shutdown", None)))
        if c.stall_pending and c.sent >= f.stall_after_messages:
            c.stall_pending = False
            c.stalled_until = time.monotonic() + f.stall_s
        if f.drop_after_messages is not None and c.sent >= f.drop_after_messages:
            # No close frame: the client's library reports 1006 (abnormal closure).
            self._stats.dropped_by_fault += 1
            ws.transport.abort()
            return False
        return True

    def _garbage(self, c: _Client) -> bytes:
        kind = c.garbage_kind % 3
        c.garbage_kind += 1
        if kind == 0:
            return _ws_frame(b"<html>502 Bad Gateway</html> this is not JSON")
        if kind == 1:
            return _ws_frame(b"\x00\x01garbage\xff\xfe", opcode=0x2)
        event = b'{"e":"quantlabUnknownEvent","E":%d,"s":"X"}' % _now_ms()
        stream = (c.subscriptions[0] if c.subscriptions else "unknown@stream").encode()
        return _ws_frame(b'{"stream":"' + stream + b'","data":' + event + b"}" if c.combined else event)

    async def _close_later(self, c: _Client, delay_s: float, code: int, reason: str, counter: str | None) -> None:
        await asyncio.sleep(delay_s)
        if counter is not None:
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        await c.ws.close(code, reason)
