"""Streaming: one step of trades encoded per stream, kline streams built from the
tape, per-connection clients, route rules and the loopback check.
"""
from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from quantlab.schema import KINDS
from quantlab.synthetic import AggBatch, Instruments, TradeBatch, encode_agg_trades, encode_trades
from quantlab.replay.faults import Faults, ReplayStats
from quantlab.replay.protocol import _ws_text_frames
from quantlab.replay.rest import (
    _KlineFormat,
    _RestApi,
    _Tape,
    _close_time,
    _kline_groups,
    _open_times,
)
from quantlab.replay.sources import RecordedSource

logger = logging.getLogger(__name__)


# =============================================================================
# Streaming
# =============================================================================
class _Step:
    """One emission: a batch of trades, the aggregates they complete, and the messages
    of other streams due with them (klines folded from these trades; recorded
    ``bookTicker``/``depth``).

    Frames are encoded lazily, once per (stream, wrapping), and shared by every
    connection that subscribes to that stream.
    """

    __slots__ = ("batch", "aggs", "_skip", "_encoded", "_cache", "extra")

    def __init__(self, batch: TradeBatch, aggs: AggBatch | None, skip: tuple[int, int, int] | None,
                 encoded: Callable[[int, str, bool], tuple[list[bytes], np.ndarray] | None] | None = None,
                 extra: Mapping[tuple[int, str], tuple[list[bytes], np.ndarray]] | None = None):
        self.batch, self.aggs, self._skip, self._encoded = batch, aggs, skip, encoded
        self.extra = extra or {}
        self._cache: dict[tuple, tuple[list[bytes], np.ndarray]] = {}

    def frames(self, key: tuple[int, str], combined: bool) -> tuple[list[bytes], np.ndarray]:
        """(WebSocket frames, emission positions) of stream ``key`` = (symbol index, kind)."""
        cached = self._cache.get((key, combined))
        if cached is not None:
            return cached
        s, kind = key
        if kind not in KINDS:
            payloads, pos = self.extra.get(key, ([], np.zeros(0)))
            if combined and payloads:
                name = f"{self.batch.instruments.symbols[s].lower()}@{kind}".encode()
                head = b'{"stream":"' + name + b'","data":'
                payloads = [head + p + b"}" for p in payloads]
            result = (_ws_text_frames(payloads), pos)
            self._cache[(key, combined)] = result
            return result
        ready = self._encoded(s, kind, combined) if self._encoded is not None else None
        if ready is not None:
            frames, rows = ready
            if self._skip is not None and (self._skip[2] < 0 or self._skip[2] == s):
                ids = self.batch.trade_id[rows]
                keep = np.flatnonzero((ids < self._skip[0]) | (ids > self._skip[1]))
                frames, rows = [frames[i] for i in keep.tolist()], rows[keep]
            self._cache[(key, combined)] = (frames, rows.astype(np.float64))
            return self._cache[(key, combined)]
        if kind == "trade":
            rows = np.flatnonzero(self.batch.sym == s)
            ids = self.batch.trade_id[rows]
        elif self.aggs is not None:
            rows = np.flatnonzero(self.aggs.sym == s)
            ids = self.aggs.agg_id[rows]
        else:
            rows = ids = np.zeros(0, np.int64)
        if self._skip is not None and rows.size:
            lo, hi, sym = self._skip
            if sym < 0 or sym == s:
                rows = rows[(ids < lo) | (ids > hi)]
        if kind == "trade":
            payloads = encode_trades(self.batch, rows, combined=combined)
            pos = rows.astype(np.float64)
        else:
            payloads = encode_agg_trades(self.aggs, rows, combined=combined) if rows.size else []
            pos = self.aggs.last_row[rows] + 0.5 if rows.size else np.zeros(0)  # after its last fill
        result = (_ws_text_frames(payloads), pos)
        self._cache[(key, combined)] = result
        return result


# Kline push periods (ms): spot 2000 (1000 for 1s klines), USD-M 250 (Binance docs,
# "Kline/Candlestick Streams", "Update Speed").
_KLINE_PUSH_MS = {"spot": 2000, "usdm": 250}
_KLINE_TEMPLATE = ('{"e":"kline","E":%d,"s":"%s","k":{"t":%d,"T":%d,"s":"%s","i":"%s","f":%d,"L":%d,'
                   '"o":"%s","c":"%s","h":"%s","l":"%s","v":"%s","n":%d,"x":%s,"q":"%s","V":"%s","Q":"%s",'
                   '"B":"0"}}')


class _KlineStream:
    """The open kline of one ``<symbol>@kline_<interval>`` stream, folded from the tape.

    Payload (Binance spot and USD-M docs, "Kline/Candlestick Streams"; same keys, same
    order)::

        {"e":"kline","E":1723161255343,"s":"BTCUSDT","k":{"t":1723161240000,
         "T":1723161299999,"s":"BTCUSDT","i":"1m","f":3735683259,"L":3735683301,
         "o":"61837.63000000","c":"61840.01000000","h":"61841.00000000",
         "l":"61830.00000000","v":"1.20000000","n":43,"x":false,"q":"74206....",
         "V":"0.70000000","Q":"43287....","B":"0"}}

    Numbers as in REST ``klines`` (one aggregation, :func:`_kline_groups`). The clock is
    the tape's trade time: an open-kline update (``"x":false``) goes out with a step
    whose last trade is at least one push period after the previous update, or that
    opens a kline; the closing message (``"x":true``, the kline's final values) goes out
    with the first trade of the next kline, since a replay knows a kline is complete
    only then. Intervals without trades send nothing. ``E`` is the event time of the
    trade that triggered the message.
    """

    def __init__(self, market: str, symbol: str, interval: str, pdp: int, qdp: int):
        self.interval = interval
        self.symbol = symbol
        self.fmt = _KlineFormat(market, pdp, qdp)
        self.push_ms = 1000 if interval == "1s" else _KLINE_PUSH_MS[market]
        self.bar: list | None = None  # [t, o, h, l, c, v, q, n, V, Q, f, L]
        self.last_push: int | None = None

    def seed(self, t: np.ndarray, ids: np.ndarray, price: np.ndarray, qty: np.ndarray, maker: np.ndarray) -> None:
        """Start from the tape's trades (kline rows of this symbol): the running kline."""
        if t.size == 0:
            return
        last_open = int(_open_times(t[-1:], self.interval)[0])
        lo = int(np.argmax(np.maximum.accumulate(t) >= last_open))
        g = _kline_groups(t[lo:], ids[lo:], price[lo:], qty[lo:], maker[lo:], self.interval)
        self.bar = self._group(g, len(g["n"]) - 1)

    @staticmethod
    def _group(g: Mapping[str, Any], i: int) -> list:
        return [int(g["t"][i])] + [g[k][i] for k in ("o", "h", "l", "c", "v", "q", "n", "V", "Q", "f", "L")]

    def update(self, t: np.ndarray, ids: np.ndarray, price: np.ndarray, qty: np.ndarray, maker: np.ndarray,
               event: np.ndarray, pos: np.ndarray) -> tuple[list[bytes], np.ndarray]:
        """Fold one step's trades (kline rows of this symbol, in order); return the
        messages due (``data`` payloads) and their positions among the step's rows."""
        g = _kline_groups(t, ids, price, qty, maker, self.interval)
        out: list[bytes] = []
        where: list[float] = []
        opened = False
        for i in range(len(g["n"])):
            grp = self._group(g, i)
            bar = self.bar
            if bar is not None and grp[0] <= bar[0]:  # the running kline (or a late trade time)
                bar[2], bar[3], bar[4], bar[11] = max(bar[2], grp[2]), min(bar[3], grp[3]), grp[4], grp[11]
                for j in (5, 6, 7, 8, 9):
                    bar[j] += grp[j]
                continue
            first = int(g["start"][i])
            if bar is not None:
                out.append(self._payload(int(event[first]), True))
                where.append(float(pos[first]) - 0.25)
            self.bar = grp
            opened = True
        last = t.size - 1
        if opened or self.last_push is None or int(t[last]) - self.last_push >= self.push_ms:
            out.append(self._payload(int(event[last]), False))
            where.append(float(pos[last]) + 0.75)
            self.last_push = int(t[last])
        return out, np.asarray(where, np.float64)

    def _payload(self, event_ms: int, closed: bool) -> bytes:
        t, o, h, lo, c, v, q, n, tv, tq, f, last = self.bar
        fmt, sym = self.fmt, self.symbol
        return (_KLINE_TEMPLATE % (
            event_ms, sym, t, _close_time(t, self.interval), sym, self.interval, f, last, fmt.price(o),
            fmt.price(c), fmt.price(h), fmt.price(lo), fmt.qty(v), n, "true" if closed else "false",
            fmt.quote(q), fmt.qty(tv), fmt.quote(tq))).encode()


class _Client:
    """Server-side state of one WebSocket connection."""

    def __init__(self, ws: Any, market: "_Market", route: str, combined: bool, streams: list[str],
                 queue_size: int, faults: Faults, incoming_limit: float | None):
        self.ws = ws
        self.market = market
        self.route = route
        self.combined = combined
        self.subscriptions = list(dict.fromkeys(streams))
        self.keys: list[tuple[int, str]] = []
        self.queue: asyncio.Queue[_Step] = asyncio.Queue(queue_size)
        self.sent = 0
        self.stalled_until = 0.0
        self.stall_pending = faults.stall_after_messages is not None
        self.shutdown_pending = faults.shutdown_after_messages is not None
        self.next_garbage = faults.garbage_every_messages
        self.garbage_kind = 0
        self.incoming_limit = incoming_limit
        self.incoming: collections.deque[float] = collections.deque()
        self.tasks: list[asyncio.Task] = []

    def frames_for(self, step: _Step) -> list[bytes]:
        parts = [p for p in (step.frames(k, self.combined) for k in self.keys) if p[0]]
        if not parts:
            return []
        if len(parts) == 1:
            return parts[0][0]
        frames = [f for p in parts for f in p[0]]
        order = np.argsort(np.concatenate([p[1] for p in parts]), kind="stable")
        return [frames[i] for i in order.tolist()]


def _route_serves(market: str, route: str, kind: str, usdm_trade_routes: Sequence[str]) -> bool:
    """Whether a stream of ``kind`` flows on ``route`` (BINANCE.md "Endpoints"; USD-M
    since 2026-04-23: ``@aggTrade`` and klines on ``/market``, ``@bookTicker`` and
    depth on ``/public``, ``@trade`` on the configured routes)."""
    if market == "spot":
        return True
    if route == "":  # the old unrouted USD-M URL: accepts, acknowledges, sends nothing
        return False
    if kind == "aggTrade" or kind.startswith("kline_"):
        return route == "/market"
    if kind == "trade":
        return route in usdm_trade_routes
    return route == "/public"


_SERVED = "@trade, @aggTrade, @kline_<interval>, and @bookTicker/@depth from captures that hold them"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.0/8``, ``::1``, ``localhost``).

    >>> is_loopback_host("127.0.0.1"), is_loopback_host("0.0.0.0"), is_loopback_host("::1")
    (True, False, True)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str) -> bool:
    """Log a warning if ``host`` is not loopback; return whether it warned."""
    if is_loopback_host(host):
        return False
    logger.warning("replay server bound to %s: reachable from other machines, with no authentication; "
                   "it is meant for loopback (--host 127.0.0.1)", host)
    return True


class _Market:
    """One market's half of a server: source, tape, REST API, connections, klines."""

    def __init__(self, source: Any, faults: Faults, stats: ReplayStats, tape_limit: int, live_clock: bool):
        self.source = source
        self.instruments: Instruments = source.instruments
        self.name = self.instruments.market
        self.tape = _Tape(self.instruments, tape_limit)
        self.rest = _RestApi(self.tape, source.specs, faults, stats)
        self.streams: set[tuple[int, str]] = source.streams()
        self.clients: set[_Client] = set()
        self.klines: dict[tuple[int, str], _KlineStream] = {}
        # A recording's clock starts at the first subscription (the first client gets
        # the whole tape) unless live_clock; a synthetic market is always live.
        self.waits_for_subscription = isinstance(source, RecordedSource) and not live_clock
        self.has_clients: asyncio.Event | None = None
        self.subscribed: asyncio.Event | None = None
        skip, sym = faults.skip_ids, faults.skip_symbol
        s = -1 if sym is None else self.instruments.index(sym)
        # (first id, last id, symbol index or -1 for every symbol)
        self.skip = None if skip is None or (sym is not None and s < 0) else (skip[0], skip[1], s)
