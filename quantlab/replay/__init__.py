"""``quantlab replay``: a Binance-protocol WebSocket + REST server on loopback.

The offline stand-in for Binance used by the demo, the tests and the benchmarks. One
process, real sockets, one port: ``ws://127.0.0.1:P`` serves the streams and
``http://127.0.0.1:P`` the REST endpoints (plain HTTP GETs are answered from
websockets' ``process_request`` hook, which may return a complete HTTP response
instead of upgrading; websockets 17 closes the TCP connection after it).

What it serves (shapes from BINANCE.md and Binance's spot/futures docs):

* Streams ``/ws/<stream>``, ``/stream?streams=a/b`` and the same under ``/market`` and
  ``/public`` (USD-M routes: ``@aggTrade`` and klines on ``/market``, ``@bookTicker``
  and depth on ``/public``, ``@trade`` on the routes of ``usdm_trade_routes``; the
  unrouted USD-M URL acknowledges and stays silent, as Binance's old URL does since
  2026-04-23; a spot server accepts the prefixes and ignores them). One server may
  serve both markets from one port (a spot and a USD-M source, each with its own
  tape): spot on the unrouted paths and ``/api/v3``, USD-M on ``/market``, ``/public``
  and ``/fapi/v1``. Stream kinds: ``@trade``, ``@aggTrade``, ``@kline_<interval>``
  (built from the tape, Binance's payload, :class:`_KlineStream`), and the
  ``@bookTicker``/``@depth...`` messages of captures that hold them (exact bytes).
  Live ``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``,
  ``SET_PROPERTY``/``GET_PROPERTY`` (``combined``) with Binance's replies and error
  codes; a stream the server cannot feed is refused with an error (never acknowledged
  and left silent), while an unknown or upper-case symbol is acknowledged and then
  silent, as on Binance. Binance's limits: 1024 streams per connection, 5 (USD-M: 10)
  incoming messages per second. The server pings every ``ping_interval_s``.
* REST ``/api/v3/{aggTrades,historicalTrades,trades,klines,exchangeInfo,ping,time}``
  on spot, ``/fapi/v1/...`` on USD-M, served from the same trades as the streams.
* Recordings start their clock at the first subscription (the first client gets the
  whole tape; ``live_clock`` keeps the live-like start with the server), and with
  ``rebase_time`` play as if recorded now.
* Faults on demand (:class:`Faults`): abrupt drops, stalls, garbage frames, id gaps,
  429 with ``Retry-After``, ``serverShutdown`` notices, 1001 closes.

Every trade is generated once and broadcast to every subscribed connection; the
generator runs independently of clients, so a dropped or stalled client simply misses
trades, as on Binance (it must backfill from REST). Generated trades are kept in a
bounded in-memory tape per symbol for REST and for tests (:meth:`ReplayServer.produced_ids`).

Threads and asyncio live here only: :meth:`ReplayServer.start` runs a private event loop
in a daemon thread; :meth:`ReplayServer.serve` is the same server as a coroutine for a
process that owns its loop (:func:`run_cli`).

Examples
--------
>>> import json, urllib.request
>>> with ReplayServer(SyntheticSource(rate=200.0, prefill=50)) as srv:
...     url = srv.rest_url + "/api/v3/historicalTrades?symbol=BTCUSDT&limit=3"
...     rows = json.load(urllib.request.urlopen(url))
>>> len(rows), sorted(rows[0])
(3, ['id', 'isBestMatch', 'isBuyerMaker', 'price', 'qty', 'quoteQty', 'time'])
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import email.utils
import http
import ipaddress
import json
import logging
import math
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import orjson
import pandas as pd
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.protocol import State

from quantlab import binance
from quantlab.config import require_choice, settings_from_dict
from quantlab.errors import ConfigError, DataFileError
from quantlab.files import capture_market, capture_trade, iter_capture, load_trades
from quantlab.schema import KINDS, MARKETS, TICK_COLUMNS, TICK_DTYPES
from quantlab.schema import now_ms as _now_ms
from quantlab.synthetic import (
    KNOWN_SYMBOLS, MARKET, SPOT_DECIMALS, TRADE_TYPES, AggBatch, Instruments, SymbolSpec, SyntheticMarket,
    TradeBatch, aggregate_trades, default_spec, empty_trade_batch, encode_agg_trades, encode_trades,
    format_decimal,
)

logger = logging.getLogger(__name__)
# websockets logs every connection (and every REST answer) at INFO; the CLI quiets this.
_ws_logger = logging.getLogger(__name__ + ".ws")

# A stalled or slow reader makes the socket's write buffer grow: stop writing above
# this many bytes and resume when it has drained (bytes).
_WRITE_HIGH_WATER = 1 << 20
# Steps (batches of trades) waiting per connection before a paced server gives up on
# a reader that cannot keep up and drops it, as Binance drops slow consumers.
_PACED_QUEUE = 10_000
# In as-fast-as-possible mode the slowest reader sets the pace (back-pressure).
_ASAP_QUEUE = 4
# Simulated trades/s driving the price dynamics when the synthetic source runs as
# fast as possible (its timestamps then come from the wall clock).
_ASAP_SIM_RATE = 1000.0


class Emission(NamedTuple):
    """What a source's ``poll(now_ms)`` returns.

    Attributes
    ----------
    batch : trades due now (``None`` or empty when none).
    aggs : the aggregates those trades complete (``None`` when none).
    wait_s : seconds until the next trade is due (0: poll again at once); ``None``
        once the source is exhausted.
    encoded : optional ``(symbol index, kind, combined) -> (frames, rows) | None`` giving
        WebSocket frames the source encoded ahead of time for this batch (``rows`` are
        their row positions in ``batch``); ``None`` means "encode them now".
    extras : other recorded streams due now: ``(symbol index, kind) -> (data payloads,
        positions among the rows of batch)`` (``bookTicker``, ``depth``), or ``None``.
    """

    batch: TradeBatch | None
    aggs: AggBatch | None
    wait_s: float | None
    encoded: Callable[[int, str, bool], tuple[list[bytes], np.ndarray] | None] | None = None
    extras: dict[tuple[int, str], tuple[list[bytes], np.ndarray]] | None = None


# =============================================================================
# Faults
# =============================================================================
@dataclass(frozen=True, kw_only=True)
class Faults:
    """Misbehaviour to inject. Message counts are per connection (every new connection
    starts again from 0) and count trade/aggTrade frames only.

    Parameters
    ----------
    drop_after_messages : after this many messages, abort the TCP connection without a
        close frame (the client sees 1006), as during Binance maintenance.
    stall_after_messages, stall_s : after this many messages, send nothing for
        ``stall_s`` seconds while the connection stays open (pings still flow); trades
        of that time are missed, then streaming resumes. Once per connection.
    garbage_every_messages : after every this many messages, send one garbage frame,
        cycling through non-JSON text, a binary frame and an unknown event.
    skip_ids : ``(first, last)`` inclusive: trade ids ``t`` (``@trade``) and aggregate
        ids ``a`` (``@aggTrade``) in this range are never sent on any stream, but REST
        serves them (a gap the client must backfill).
    skip_symbol : limit ``skip_ids`` to this symbol (default: every symbol).
    rest_429_count, retry_after_s : answer the first ``rest_429_count`` REST requests
        with HTTP 429 and ``Retry-After: retry_after_s`` (seconds), then normally.
    shutdown_after_messages, shutdown_grace_s : after this many messages send the
        ``serverShutdown`` event, then close with 1001 ``shutdown_grace_s`` seconds later.
    lifetime_s : close every connection with 1001 after this many seconds (Binance: 24 h).
    max_incoming_per_s : close with 1008 a connection that sends more text messages per
        second than this. Default: the server's limit (``ReplayServer(max_incoming_per_s=)``,
        Binance's 5 spot, 10 futures unless changed).
    """

    drop_after_messages: int | None = None
    stall_after_messages: int | None = None
    stall_s: float = 5.0
    garbage_every_messages: int | None = None
    skip_ids: tuple[int, int] | None = None
    skip_symbol: str | None = None
    rest_429_count: int = 0
    retry_after_s: int = 1
    shutdown_after_messages: int | None = None
    shutdown_grace_s: float = 1.0
    lifetime_s: float | None = None
    max_incoming_per_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("drop_after_messages", "stall_after_messages", "garbage_every_messages",
                     "shutdown_after_messages"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(name, value, "a message count >= 1 or None")
        for name in ("stall_s", "shutdown_grace_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(name, getattr(self, name), "seconds >= 0")
        for name in ("lifetime_s", "max_incoming_per_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(name, value, "a number > 0 or None")
        if not isinstance(self.rest_429_count, int) or self.rest_429_count < 0:
            raise ConfigError("rest_429_count", self.rest_429_count, "an integer >= 0")
        if not isinstance(self.retry_after_s, int) or self.retry_after_s < 0:
            raise ConfigError("retry_after_s", self.retry_after_s, "whole seconds >= 0")
        if self.skip_ids is not None:
            try:
                lo, hi = (int(v) for v in self.skip_ids)
            except (TypeError, ValueError):
                raise ConfigError("skip_ids", self.skip_ids, "(first_id, last_id)") from None
            if lo > hi:
                raise ConfigError("skip_ids", self.skip_ids, "first_id <= last_id")
            object.__setattr__(self, "skip_ids", (lo, hi))
        if self.skip_symbol is not None:
            object.__setattr__(self, "skip_symbol", str(self.skip_symbol).upper())

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Faults":
        """Build from a mapping; unknown keys are rejected with the list of valid ones."""
        return settings_from_dict(cls, values)

    @classmethod
    def from_strings(cls, items: Iterable[str]) -> "Faults":
        """Build from ``key=value`` strings (CLI), e.g. ``["drop_after_messages=100",
        "skip_ids=5,9"]``.

        >>> Faults.from_strings(["stall_after_messages=10", "stall_s=0.5"]).stall_s
        0.5
        """
        values: dict[str, Any] = {}
        for item in items:
            key, sep, text = item.partition("=")
            if not sep:
                raise ConfigError("fault", item, "key=value")
            key = key.strip()
            text = text.strip()
            if key == "skip_ids":
                values[key] = tuple(int(v) for v in text.split(","))
            elif key == "skip_symbol":
                values[key] = text
            elif key in ("stall_s", "shutdown_grace_s", "lifetime_s", "max_incoming_per_s"):
                values[key] = None if text.lower() == "none" else float(text)
            else:
                values[key] = None if text.lower() == "none" else int(text)
        return cls.from_dict(values)


# =============================================================================
# Counters
# =============================================================================
@dataclass
class ReplayStats:
    """Counters of one server (a snapshot when read through :attr:`ReplayServer.stats`).

    Attributes
    ----------
    connections_accepted, connections_open : WebSocket connections (REST not included).
    messages_sent : trade/aggTrade frames written, all connections.
    bytes_sent : bytes of those frames, WebSocket headers included.
    control_replies : replies to SUBSCRIBE & co (errors included).
    rest_requests : REST requests answered (429s included); rest_throttled : 429s sent.
    trades_produced, agg_trades_produced : rows generated (every symbol).
    dropped_by_fault : connections aborted by ``drop_after_messages``.
    slow_clients_dropped : connections aborted because they did not read fast enough.
    garbage_sent, shutdown_notices, lifetime_closes, rate_limit_closes : fault events.
    source_exhausted : a recorded source has sent its last trade.
    """

    connections_accepted: int = 0
    connections_open: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    control_replies: int = 0
    rest_requests: int = 0
    rest_throttled: int = 0
    trades_produced: int = 0
    agg_trades_produced: int = 0
    dropped_by_fault: int = 0
    slow_clients_dropped: int = 0
    garbage_sent: int = 0
    shutdown_notices: int = 0
    lifetime_closes: int = 0
    rate_limit_closes: int = 0
    source_exhausted: bool = False


# =============================================================================
# Control messages (pure)
# =============================================================================
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
# Stream names Binance accepts (case-insensitive symbol: upper case is acknowledged and
# then silent). Anything else is "Invalid request: invalid stream".
_STREAM_RE = re.compile(
    r"^(?:[A-Za-z0-9]+@(?:trade|aggTrade|bookTicker|miniTicker|ticker|avgPrice"
    r"|ticker_(?:1h|4h|1d)|depth(?:5|10|20)?(?:@(?:0|100|250|500|1000)ms)?"
    r"|kline_(?:1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)|markPrice(?:@1s)?)"
    r"|![A-Za-z]+(?:_(?:1h|4h|1d))?@arr(?:@1s)?)$")


# "A single connection can listen to a maximum of 1024 streams" (spot and USD-M docs,
# "WebSocket Limits"). Binance documents no reply for a SUBSCRIBE beyond it; this server
# answers with its "Invalid request" error shape (code 2), before examining any name.
MAX_STREAMS = 1024
# Incoming messages per second and connection (same section): spot 5, USD-M 10; a
# connection beyond it is closed with 1008 "Too many requests", as Binance does.
MAX_INCOMING_PER_S = {"spot": 5.0, "usdm": 10.0}


def _too_many_streams(limit: int) -> str:
    return f"Invalid request: too many streams (a connection listens to at most {limit})"


def _error(code: int, msg: str, request_id: object) -> dict:
    return {"error": {"code": code, "msg": msg}, "id": request_id}


def _valid_id(value: object) -> bool:
    # Binance spot docs, "Live Subscribing/Unsubscribing": a 64-bit signed integer, an
    # alphanumeric string of at most 36 characters, or null.
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -2 ** 63 <= value < 2 ** 63
    return isinstance(value, str) and len(value) <= 36 and value.isalnum()


def handle_control(raw: str | bytes, subscriptions: Sequence[str], combined: bool, *,
                   max_streams: int = MAX_STREAMS, unserved: Callable[[str], str | None] | None = None
                   ) -> tuple[dict, list[str], bool]:
    """Answer one client text frame as Binance's stream servers do.

    Replies (binance-spot-api-docs, web-socket-streams.md, "Error Messages"):
    ``{"result":null,"id":1}`` for SUBSCRIBE/UNSUBSCRIBE/SET_PROPERTY, a list for
    LIST_SUBSCRIPTIONS, ``{"error":{"code":2,"msg":"Invalid request: ..."},"id":1}`` for
    an invalid stream, method, id or property name, code 3 for invalid JSON, code 1
    for a non-boolean ``combined`` value and code 0 for an unknown property.

    Parameters
    ----------
    raw : the frame's text.
    subscriptions : current stream names, in subscription order.
    combined : whether payloads are wrapped (``/stream``) or raw (``/ws``).
    max_streams : streams one connection may hold (Binance: 1024, "WebSocket Limits"); a
        SUBSCRIBE that would exceed it is refused whole, before its names are examined.
    unserved : ``stream -> reason or None``; a SUBSCRIBE naming a valid stream that the
        server cannot feed is refused whole with that reason (code 2), never acknowledged
        and then left silent.

    Cost is linear in the number of streams named and held.

    Returns
    -------
    (reply, subscriptions, combined) : the JSON object to send and the new state.

    Examples
    --------
    >>> handle_control('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}', [], True)
    ({'result': None, 'id': 1}, ['btcusdt@trade'], True)
    >>> handle_control('{"method":"SUBSCRIBE","params":["btcusdt@nope"],"id":2}', [], True)[0]
    {'error': {'code': 2, 'msg': 'Invalid request: invalid stream'}, 'id': 2}
    """
    subs = list(subscriptions)
    try:
        req = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}", None), subs, combined
    if not isinstance(req, dict):
        return _error(2, "Invalid request: expected a JSON object", None), subs, combined
    request_id = req.get("id")
    if "method" not in req:
        return _error(2, "Invalid request: missing field `method`", request_id if _valid_id(request_id) else None), \
            subs, combined
    method = req["method"]
    if method not in _METHODS:
        variants = ", ".join(f"`{m}`" for m in _METHODS)
        return _error(2, f"Invalid request: unknown variant `{method}`, expected one of {variants}",
                      request_id if _valid_id(request_id) else None), subs, combined
    if "id" not in req or not _valid_id(request_id):
        return _error(2, "Invalid request: request ID must be an unsigned integer", None), subs, combined
    params = req.get("params")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if isinstance(params, list) and method == "SUBSCRIBE" and len(params) > max_streams:
            return _error(2, _too_many_streams(max_streams), request_id), subs, combined
        if not isinstance(params, list) or not params or \
                not all(isinstance(p, str) and _STREAM_RE.match(p) for p in params):
            return _error(2, "Invalid request: invalid stream", request_id), subs, combined
        held = set(subs)
        if method == "SUBSCRIBE":
            new = [p for p in dict.fromkeys(params) if p not in held]
            if len(subs) + len(new) > max_streams:
                return _error(2, _too_many_streams(max_streams), request_id), subs, combined
            if unserved is not None:
                for p in new:
                    reason = unserved(p)
                    if reason is not None:
                        return _error(2, f"Invalid request: {reason}", request_id), subs, combined
            subs.extend(new)
        else:
            gone = set(params)
            subs = [s for s in subs if s not in gone]
        return {"result": None, "id": request_id}, subs, combined
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": subs, "id": request_id}, subs, combined
    if not isinstance(params, list) or not params or not isinstance(params[0], str):
        return _error(2, "Invalid request: property name must be a string", request_id), subs, combined
    if params[0] != "combined":
        return _error(0, "Unknown property", request_id), subs, combined
    if method == "GET_PROPERTY":
        return {"result": combined, "id": request_id}, subs, combined
    if len(params) != 2 or not isinstance(params[1], bool):
        return _error(1, "Invalid value type: expected Boolean", request_id), subs, combined
    return {"result": None, "id": request_id}, subs, params[1]


def parse_ws_path(path: str) -> tuple[str, bool, list[str]] | None:
    """``(route, combined, streams)`` of a stream URL path, or ``None`` if not one.

    >>> parse_ws_path("/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade")
    ('/market', True, ['btcusdt@aggTrade', 'ethusdt@aggTrade'])
    >>> parse_ws_path("/ws/btcusdt@trade")
    ('', False, ['btcusdt@trade'])
    """
    parts = urlsplit(path)
    p = parts.path.rstrip("/") or "/"
    route = ""
    for candidate in binance.USDM_ROUTES:
        if p == candidate or p.startswith(candidate + "/"):
            route, p = candidate, p[len(candidate):] or "/"
            break
    if p == "/ws":
        return route, False, []
    if p.startswith("/ws/"):
        return route, False, [unquote(s) for s in p[4:].split("/") if s]
    if p == "/stream":
        query = dict(parse_qsl(parts.query))
        return route, True, [s for s in query.get("streams", "").split("/") if s]
    return None


def _ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, unmasked WebSocket frame (RFC 6455 section 5.2; servers never mask).

    Data frames are framed here, once per trade, and written straight to the transport
    of every subscriber: websockets' ``send()`` costs ~50 us per message on this
    machine (about 20k messages/s), joined pre-framed bytes cost almost nothing. Control
    frames (ping, close) and replies still go through websockets, on the same loop, so
    frames never interleave.
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


# Headers of final text frames by payload length: every trade frame is shorter than this,
# and a table lookup is ~6x cheaper than building the header (throughput matters here).
_TEXT_HEADERS = [_ws_frame(b"\0" * n)[:-n or None] for n in range(4096)]


def _ws_text_frames(payloads: list[bytes]) -> list[bytes]:
    """:func:`_ws_frame` of many text payloads."""
    heads = _TEXT_HEADERS
    if payloads and max(map(len, payloads)) < len(heads):
        return [heads[len(p)] + p for p in payloads]
    return [_ws_frame(p) for p in payloads]


# =============================================================================
# The tape: everything produced, per symbol, for REST and tests
# =============================================================================
class _Columns:
    """Append-only numpy columns keeping at most ``max_rows`` newest rows.

    Appends write past the current end and trims allocate new arrays, so a slice taken
    earlier never changes under its reader.
    """

    def __init__(self, dtypes: Mapping[str, Any], max_rows: int):
        self.max_rows = max_rows
        self._dtypes = dict(dtypes)
        self._n = 0
        self._cols = {k: np.empty(1024, dt) for k, dt in self._dtypes.items()}

    def __len__(self) -> int:
        return self._n

    def append(self, cols: Mapping[str, np.ndarray]) -> None:
        k = len(next(iter(cols.values())))
        if k == 0:
            return
        if k > self.max_rows:
            cols = {c: v[-self.max_rows:] for c, v in cols.items()}
            k = self.max_rows
        keep = self._n
        if keep + k > self.max_rows:  # trim to 3/4 so that trims are rare
            keep = max(0, min(keep, self.max_rows * 3 // 4 - k))
        cap = len(next(iter(self._cols.values())))
        if keep != self._n or keep + k > cap:
            new_cap = max(keep + k, min(self.max_rows, 2 * (keep + k)))
            new = {c: np.empty(new_cap, self._dtypes[c]) for c in self._cols}
            for c, arr in new.items():
                arr[:keep] = self._cols[c][self._n - keep:self._n]
            self._cols, self._n = new, keep
        for c, v in cols.items():
            self._cols[c][self._n:self._n + k] = v
        self._n += k

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name][:self._n]


_TRADE_DTYPES = {"id": np.int64, "price": np.int64, "qty": np.int64, "time": np.int64,
                 "event": np.int64, "m": bool, "ttype": np.int8}
_AGG_DTYPES = {"id": np.int64, "price": np.int64, "qty": np.int64, "first": np.int64, "last": np.int64,
               "time": np.int64, "event": np.int64, "m": bool}


class _Tape:
    """Trades and aggregates produced so far, per symbol index (thread-safe)."""

    def __init__(self, instruments: Instruments, max_rows: int):
        self.instruments = instruments
        self.lock = threading.Lock()
        self.trades = [_Columns(_TRADE_DTYPES, max_rows) for _ in instruments.symbols]
        self.aggs = [_Columns(_AGG_DTYPES, max_rows) for _ in instruments.symbols]

    def record(self, batch: TradeBatch, aggs: AggBatch | None) -> None:
        with self.lock:
            for s in np.unique(batch.sym).tolist():
                r = batch.sym == s
                self.trades[s].append({"id": batch.trade_id[r], "price": batch.price[r], "qty": batch.qty[r],
                                       "time": batch.time_ms[r], "event": batch.event_ms[r],
                                       "m": batch.is_buyer_maker[r], "ttype": batch.trade_type[r]})
            if aggs is not None:
                for s in np.unique(aggs.sym).tolist():
                    r = aggs.sym == s
                    self.aggs[s].append({"id": aggs.agg_id[r], "price": aggs.price[r], "qty": aggs.qty[r],
                                         "first": aggs.first_id[r], "last": aggs.last_id[r],
                                         "time": aggs.time_ms[r], "event": aggs.event_ms[r],
                                         "m": aggs.is_buyer_maker[r]})


# =============================================================================
# Sources
# =============================================================================
class SyntheticSource:
    """Source (a): :class:`~quantlab.synthetic.SyntheticMarket`, live.

    Parameters
    ----------
    symbols : two or more symbols (the first is the random-walk leg).
    market : ``"spot"`` or ``"usdm"``.
    rate : trades per second over all symbols; ``0`` or ``None`` means as fast as
        possible (then the price dynamics run on a nominal 1000 trades/s clock and
        every batch is stamped with the wall clock; trades are generated only while at
        least one WebSocket connection is open).
    seed : generator seed.
    prefill : trades already in the tape (REST) when the server starts, with
        timestamps in the past; streaming continues with the next ids.
    batch_size : trades per step in as-fast-as-possible mode.
    **model : further :class:`~quantlab.synthetic.SyntheticMarket` parameters
        (``beta``, ``spread_std``, ``non_market_fraction``, ``hole_fraction``, ...).
    """

    def __init__(self, symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"), *, market: str = "spot",
                 rate: float | None = 50.0, seed: int = 0, prefill: int = 0, batch_size: int = 2000,
                 **model: Any):
        if rate is not None and not rate >= 0:
            raise ConfigError("rate", rate, "trades per second >= 0 (0 = as fast as possible)")
        if prefill < 0:
            raise ConfigError("prefill", prefill, "a number of trades >= 0")
        if batch_size < 1:
            raise ConfigError("batch_size", batch_size, "a number of trades >= 1")
        self.paced = bool(rate)
        self.gen = SyntheticMarket(symbols, market=market, seed=seed,
                                   rate=float(rate) if rate else _ASAP_SIM_RATE, **model)
        self.instruments = self.gen.instruments
        self.specs = self.gen.specs
        self.prefill = int(prefill)
        self.batch_size = int(batch_size)

    def start(self, now_ms: int) -> tuple[TradeBatch, AggBatch] | None:
        """Set the clock origin; return the pre-filled history, if any."""
        if not self.prefill:
            self.gen.start_ms = now_ms
            return None
        # Back-date the history so that it ends before now (5 sigma of the Poisson
        # duration), then move the clock on to now: no future timestamps in the tape.
        span_s = (self.prefill + 5 * math.sqrt(self.prefill)) / self.gen.rate + 1.0
        self.gen.start_ms = now_ms - int(span_s * 1000)
        batch = self.gen.generate(self.prefill)
        aggs = self.gen.aggregate(batch)
        self.gen.advance_clock_to(now_ms)
        return batch, aggs

    def begin(self, now_ms: int) -> None:
        """A synthetic market is live: its clock runs from :meth:`start`, subscribed or not."""

    def streams(self) -> set[tuple[int, str]]:
        """No recorded ``bookTicker``/``depth`` streams."""
        return set()

    def poll(self, now_ms: int) -> Emission:
        """Trades due by ``now_ms``, their aggregates, and seconds until the next is due."""
        if not self.paced:
            batch = self.gen.generate(self.batch_size, stamp_ms=now_ms)
            return Emission(batch, self.gen.aggregate(batch), 0.0)
        batch = self.gen.generate_until(now_ms, event_ms=now_ms)
        aggs = self.gen.aggregate(batch) if len(batch) else None
        wait_s = (self.gen.next_time_ms - now_ms) / 1000.0
        return Emission(batch, aggs, min(0.25, max(0.0005, wait_s)))


class RecordedSource:
    """Sources (b) and (c): recorded trades replayed on their own schedule.

    Build it with :meth:`from_capture` or :meth:`from_trade_files`.

    Parameters
    ----------
    batch : every trade, in replay order.
    schedule_ns : when each trade was seen (ns, non-decreasing): the capture's local
        receive time, or the trade time for archive files.
    speed : replay speed factor (2 = twice as fast); ``0`` = as fast as possible.
    prefill : leading trades put in the tape (REST) before streaming starts.
    rebase_time : shift ``T`` and ``E`` so that the tape plays as if recorded now: the
        prefilled history ends when the server starts, and every streamed trade carries
        about the wall time at which it is sent (the first one the time the clock
        starts, see :meth:`begin`); default: the recorded times.
    specs : per-symbol :class:`~quantlab.synthetic.SymbolSpec` for exchangeInfo.
    batch_size : trades per step in as-fast-as-possible mode.
    extras : recorded ``bookTicker``/``depth`` messages to replay on their own
        schedule alongside the trades (:func:`load_capture` with ``extras=True``).
    preencode : frame every ``@trade`` message for combined streams now, so that
        streaming them is only slicing and joining bytes (benchmarks: the server then
        costs almost no CPU per message). Takes about 4 s per million trades and
        ~200 bytes per trade; other streams are still encoded as they are sent.
        Incompatible with ``rebase_time`` (the frames carry the times).
    """

    def __init__(self, batch: TradeBatch, schedule_ns: np.ndarray, *, speed: float = 1.0,
                 prefill: int = 0, rebase_time: bool = False, specs: Sequence[SymbolSpec] | None = None,
                 batch_size: int = 2000, preencode: bool = False, extras: Extras | None = None):
        if not speed >= 0:
            raise ConfigError("speed", speed, "a factor >= 0 (0 = as fast as possible)")
        if len(batch) == 0:
            raise ConfigError("source", "no trades", "at least one trade to replay")
        if not 0 <= prefill <= len(batch):
            raise ConfigError("prefill", prefill, f"0..{len(batch)} trades")
        self.instruments = batch.instruments
        self.specs = tuple(specs) if specs else tuple(
            _recorded_spec(s, batch.instruments) for s in batch.instruments.symbols)
        self.paced = bool(speed)
        self.speed = float(speed)
        self.prefill = int(prefill)
        self.rebase_time = bool(rebase_time)
        self.batch_size = int(batch_size)
        self._all = batch
        self._sched = np.asarray(schedule_ns, dtype=np.int64)
        first_agg = [default_spec(s, batch.market).first_agg_id for s in batch.instruments.symbols]
        self._aggs, _ = aggregate_trades(batch, first_agg)  # once: agg ids do not depend on pacing
        self._cursor = 0
        self._origin_wall_ms = 0
        self._origin_ns = 0
        self._start_ms: int | None = None
        self._begun = False
        self._shift = 0  # ms added to recorded times (rebase_time)
        self.extras = extras if extras is not None and len(extras.ns) else None
        self._xcursor = 0
        if preencode and rebase_time:
            raise ConfigError("preencode", preencode, "False when rebase_time is True")
        # (symbol index) -> (rows of that symbol in the whole batch, their combined @trade frames)
        self._preencoded: dict[int, tuple[np.ndarray, list[bytes]]] = {}
        if preencode:
            for s in range(len(self.instruments.symbols)):
                rows = np.flatnonzero(batch.sym == s)
                self._preencoded[s] = (rows, _ws_text_frames(encode_trades(batch, rows, combined=True)))

    def __len__(self) -> int:
        return len(self._all)

    def _encoded_between(self, a: int, b: int) -> Callable[[int, str, bool], tuple[list[bytes], np.ndarray] | None]:
        """Lookup of the pre-encoded frames of rows ``a..b-1`` (see :class:`Emission`)."""
        def lookup(s: int, kind: str, combined: bool) -> tuple[list[bytes], np.ndarray] | None:
            if kind != "trade" or not combined or s not in self._preencoded:
                return None
            rows, frames = self._preencoded[s]
            lo, hi = np.searchsorted(rows, [a, b])
            return frames[lo:hi], rows[lo:hi] - a
        return lookup

    def _slice(self, a: int, b: int) -> tuple[TradeBatch, AggBatch]:
        lo, hi = np.searchsorted(self._aggs.last_row, [a, b])
        aggs = self._aggs.take(slice(int(lo), int(hi)))
        aggs = dataclasses.replace(aggs, last_row=aggs.last_row - a)
        return self._all.take(slice(a, b)), aggs

    def streams(self) -> set[tuple[int, str]]:
        """``(symbol index, kind)`` of the recorded non-trade streams this source replays."""
        return self.extras.streams() if self.extras is not None else set()

    def _shift_times(self, shift: int, from_row: int) -> None:
        if not shift:
            return
        t, e = self._all.time_ms.copy(), self._all.event_ms.copy()  # new arrays: the tape keeps its own
        t[from_row:] += shift
        e[from_row:] += shift
        self._all = dataclasses.replace(self._all, time_ms=t, event_ms=e)
        later = self._aggs.last_row >= from_row
        self._aggs = dataclasses.replace(self._aggs, time_ms=self._aggs.time_ms + np.where(later, shift, 0),
                                         event_ms=self._aggs.event_ms + np.where(later, shift, 0))
        self._shift += shift

    def start(self, now_ms: int) -> tuple[TradeBatch, AggBatch] | None:
        """Server start: return the prefilled history (with ``rebase_time``, shifted to
        end at ``now_ms``). The schedule starts at :meth:`begin`."""
        n = len(self._all)
        self._start_ms = now_ms
        if self.rebase_time:
            self._shift_times(now_ms - int(self._all.time_ms[min(self.prefill, n - 1)]), 0)
        self._cursor = self.prefill
        return self._slice(0, self.prefill) if self.prefill else None

    def begin(self, now_ms: int) -> None:
        """Start the clock: trade ``prefill`` is due now, the others at their recorded
        offsets divided by ``speed``. The server calls it at the first subscription (so
        the first client gets the whole tape) or, live-like, when it starts. With
        ``rebase_time`` the trades not yet sent move on by the wait since :meth:`start`
        (a quiet spell between the history and the stream, as on a live market)."""
        n = len(self._all)
        if self._begun:
            return
        self._begun = True
        if self._start_ms is None:
            self.start(now_ms)
        if self.rebase_time:
            self._shift_times(now_ms - self._start_ms, self._cursor)
        self._origin_wall_ms = now_ms
        self._origin_ns = int(self._sched[min(self.prefill, n - 1)])
        if self.extras is not None:
            if not self.prefill:  # the whole recording, from its first message
                self._origin_ns = min(self._origin_ns, int(self.extras.ns[0]))
            # with a prefill, messages recorded before the first streamed trade are history
            self._xcursor = int(np.searchsorted(self.extras.ns, self._origin_ns, side="left"))

    def _extras_until(self, a: int, b: int, limit_ns: int | None) -> dict[tuple[int, str], tuple[list[bytes], np.ndarray]] | None:
        """Extra messages due up to ``limit_ns`` (``None``: all left), keyed by stream, with
        their positions among the trade rows ``a..b-1`` of the same emission."""
        x = self.extras
        if x is None or self._xcursor >= len(x.ns):
            return None
        lo = self._xcursor
        hi = len(x.ns) if limit_ns is None else int(np.searchsorted(x.ns, limit_ns, side="right"))
        if hi <= lo:
            return None
        self._xcursor = hi
        pos = np.searchsorted(self._sched[a:b], x.ns[lo:hi], side="right") - 0.5
        out: dict[tuple[int, str], tuple[list[bytes], list[float]]] = {}
        shift = self._shift
        for i in range(lo, hi):
            key = (int(x.sym[i]), x.kind[i])
            data = x.data[i] if not shift else _shift_payload(x.data[i], shift)
            frames, where = out.setdefault(key, ([], []))
            frames.append(data)
            where.append(float(pos[i - lo]))
        return {k: (f, np.asarray(w)) for k, (f, w) in out.items()}

    def poll(self, now_ms: int) -> Emission:
        n = len(self._all)
        a = self._cursor
        if a >= n:
            extras = self._extras_until(a, a, None)
            return Emission(None, None, None, extras=extras)
        if not self.paced:
            b = min(n, a + self.batch_size)
            wait_s = 0.0
            limit_ns = None if b >= n else int(self._sched[b]) - 1
        else:
            elapsed_ns = (now_ms - self._origin_wall_ms) * 1_000_000 * self.speed
            limit_ns = self._origin_ns + int(elapsed_ns)
            b = int(np.searchsorted(self._sched, limit_ns, side="right"))
            b = max(a, b)
            if b >= n:
                wait_s = 0.0
            else:
                due_ms = self._origin_wall_ms + (self._sched[b] - self._origin_ns) / 1e6 / self.speed
                if self.extras is not None and self._xcursor < len(self.extras.ns):
                    due_ms = min(due_ms, self._origin_wall_ms
                                 + (self.extras.ns[self._xcursor] - self._origin_ns) / 1e6 / self.speed)
                wait_s = min(0.25, max(0.0005, (due_ms - now_ms) / 1000.0))
        self._cursor = b
        extras = self._extras_until(a, b, limit_ns)
        if b == a:
            return Emission(None, None, wait_s, extras=extras)
        batch, aggs = self._slice(a, b)
        return Emission(batch, aggs, wait_s, self._encoded_between(a, b) if self._preencoded else None, extras)

    # --- constructors ------------------------------------------------------------
    @classmethod
    def from_capture(cls, paths: Sequence[str | Path], *, symbols: Sequence[str] | None = None,
                     market: str | None = None, **kwargs: Any) -> "RecordedSource":
        """Replay the ``@trade``, ``@bookTicker`` and ``@depth...`` messages of WebSocket captures.

        The files hold ``<local_receive_time_ns> <json>`` lines (gzip), mixed streams
        (``data/README.md``): ``@trade`` lines become the tape, ``bookTicker``/``depth``
        lines are replayed as recorded (exact bytes; times shifted with ``rebase_time``)
        on the streams of the same names, the REST depth snapshot is ignored. ``market``
        picks the spot or the USD-M messages of captures that hold both. Several files (days, symbols) are merged by
        receive time and de-duplicated by id. Trades are re-encoded from exact integers
        in the decimals the capture used, so the frames are byte-identical to the
        recorded payloads. Paced by the recorded receive times divided by ``speed``.
        """
        batch, sched, extras = load_capture(paths, symbols=symbols, market=market, extras=True)
        return cls(batch, sched, extras=extras, **kwargs)

    @classmethod
    def from_trade_files(cls, paths: Sequence[str | Path], *, symbols: Sequence[str] | None = None,
                         market: str | None = None, keep_market: str | None = None,
                         **kwargs: Any) -> "RecordedSource":
        """Replay data.binance.vision ``trades`` files, read by :func:`quantlab.files.load_trades`,
        paced by trade time ``T`` divided by ``speed`` (``E = T``)."""
        batch = load_trade_files(paths, symbols=symbols, market=market, keep_market=keep_market)
        return cls(batch, batch.time_ms * 1_000_000, **kwargs)

    @classmethod
    def from_synthetic(cls, n: int, *, symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"), market: str = "spot",
                       seed: int = 0, rate: float = 1000.0, start_ms: int | None = None,
                       model: Mapping[str, Any] | None = None, **kwargs: Any) -> "RecordedSource":
        """``n`` synthetic trades generated now and replayed like a recording.

        The benchmark source: ``RecordedSource.from_synthetic(1_000_000, speed=0,
        preencode=True)`` streams pre-encoded frames as fast as the client reads.
        Trade times are simulated at ``rate`` trades/s from ``start_ms`` (default: now
        minus the simulated span, so the last trade is about now); ``speed`` replays
        them at ``speed`` times that pace (0 = as fast as possible).
        """
        gen = SyntheticMarket(symbols, market=market, seed=seed, rate=rate, **dict(model or {}))
        if start_ms is None:
            start_ms = _now_ms() - int(n / rate * 1000)
        gen.start_ms = int(start_ms)
        batch = gen.generate(n)
        return cls(batch, batch.time_ms * 1_000_000, specs=gen.specs, **kwargs)


def _recorded_spec(symbol: str, inst: Instruments) -> SymbolSpec:
    """exchangeInfo values of a recorded symbol: known tick/step if they fit its decimals."""
    i = inst.index(symbol)
    pdp, qdp = inst.price_dp[i], inst.qty_dp[i]
    spec = default_spec(symbol, inst.market)
    tick, step = spec.tick, spec.step
    if round(tick * 10 ** pdp, 6) % 1 or tick * 10 ** pdp < 1:
        tick = 10.0 ** -pdp
    if round(step * 10 ** qdp, 6) % 1 or step * 10 ** qdp < 1:
        step = 10.0 ** -qdp
    return dataclasses.replace(spec, tick=tick, step=step, price_dp=pdp, qty_dp=qdp)


def _shift_payload(data: bytes, shift_ms: int) -> bytes:
    """A recorded payload with its event and transaction times (``E``, ``T``) moved by
    ``shift_ms`` (rebased replays); every other byte of meaning kept (key order too)."""
    obj = orjson.loads(data)
    for key in ("E", "T"):
        if isinstance(obj.get(key), int):
            obj[key] += shift_ms
    return orjson.dumps(obj)


def _decimals(text: str) -> int:
    dot = text.find(".")
    return 0 if dot < 0 else len(text) - dot - 1


def _units(text: str, dp: int) -> int:
    """Exact integer of a decimal string in units of ``10**-dp`` (``"61.50", 3 -> 61500``)."""
    whole, _, frac = text.partition(".")
    if len(frac) > dp:
        raise ValueError(f"{text!r} has more than {dp} decimals")
    return int(whole + frac.ljust(dp, "0"))


class Extras(NamedTuple):
    """Recorded messages of streams other than trades (``bookTicker``, ``depth...``),
    replayed as recorded: ``data`` payloads, exact bytes.

    Attributes
    ----------
    ns : receive time of each message (ns, non-decreasing).
    sym : symbol index of each (into the source's :class:`~quantlab.synthetic.Instruments`).
    kind : stream kind after the ``@`` (``"bookTicker"``, ``"depth@100ms"``).
    data : the ``data`` payload of each message (bytes).
    """

    ns: np.ndarray
    sym: np.ndarray
    kind: list[str]
    data: list[bytes]

    def streams(self) -> set[tuple[int, str]]:
        """``(symbol index, kind)`` of every stream held."""
        return set(zip(self.sym.tolist(), self.kind))


def _extra_market(data: str) -> str:
    # Futures bookTicker carries "e":"bookTicker" (spot's has no event type) and futures
    # depth updates carry "pu" (previous final update id); spot has neither.
    return "usdm" if '"e":"bookTicker"' in data or '"pu":' in data else "spot"


def _read_captures(paths: Sequence[str | Path], want: set[str] | None) -> tuple[dict[str, list[tuple]],
                                                                              dict[str, list[tuple]]]:
    """Trade rows and extra-stream rows of captures, by market (``"spot"``/``"usdm"``)."""
    rows: dict[str, list[tuple]] = {"spot": [], "usdm": []}
    extras: dict[str, list[tuple]] = {"spot": [], "usdm": []}
    for path in paths:
        for ns, raw in iter_capture(path):
            if '"e":"trade"' not in raw:  # depth/bookTicker lines are most of a capture
                if not raw.startswith('{"stream":"'):
                    continue  # a REST depth snapshot
                end = raw.find('"', 11)
                stream = raw[11:end]
                head = f'{{"stream":"{stream}","data":'
                if not raw.startswith(head) or not raw.endswith("}"):
                    continue
                name, _, kind = stream.partition("@")
                if not (kind == "bookTicker" or kind.startswith("depth")):
                    continue
                sym = name.upper()
                if want is not None and sym not in want:
                    continue
                data = raw[len(head):-1]
                extras[_extra_market(data)].append((ns, sym, kind, data.encode()))
                continue
            try:
                data = capture_trade(raw)
            except ValueError:  # orjson.JSONDecodeError
                continue  # a cut last line; io.iter_capture reports truncation itself
            if data is None or data.get("e") != "trade":
                continue
            sym = str(data["s"]).upper()
            if want is not None and sym not in want:
                continue
            m = capture_market(data)
            rows[m].append((ns, sym, int(data["t"]), str(data["p"]), str(data["q"]), int(data["T"]),
                            int(data.get("E", data["T"])), bool(data["m"]), data.get("X", "MARKET")))
    return rows, extras


def load_capture(paths: Sequence[str | Path] | str | Path, *, symbols: Sequence[str] | None = None,
                 market: str | None = None, extras: bool = False):
    """``@trade`` messages of captures -> (batch in receive order, receive times in ns).

    Market from the payloads (:func:`quantlab.files.capture_market`: spot carries ``M``); mixing is an error unless
    ``market`` picks one. Decimals per symbol from the strings (spot 8, e.g. futures
    BTCUSDT 2 and 3). With ``extras=True`` the result has a third item, the
    :class:`Extras` (``bookTicker`` and ``depth`` messages) of the same market.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    by_market = load_capture_markets(paths, symbols=symbols)
    if market is None:
        if len(by_market) > 1:
            raise DataFileError(", ".join(str(p) for p in paths),
                                "mixes spot and USD-M trades; replay one market per source "
                                "(`quantlab replay --market both` serves each from its own tape)")
        market = next(iter(by_market))
    require_choice("market", market, MARKETS)
    if market not in by_market:
        raise DataFileError(", ".join(str(p) for p in paths), f"no {market} @trade messages"
                            + (f" for {sorted(s.upper() for s in symbols)}" if symbols else ""))
    batch, sched, x = by_market[market]
    return (batch, sched, x) if extras else (batch, sched)


def load_capture_markets(paths: Sequence[str | Path], *, symbols: Sequence[str] | None = None
                         ) -> dict[str, tuple[TradeBatch, np.ndarray, Extras]]:
    """Every market of the captures, read once: ``{"spot"|"usdm": (batch, receive ns,
    extras)}`` for the markets that have ``@trade`` messages; at least one or
    :class:`~quantlab.errors.DataFileError`."""
    want = {s.upper() for s in symbols} if symbols else None
    rows, extra_rows = _read_captures(paths, want)
    out = {}
    for m in MARKETS:
        if rows[m]:
            batch, sched = _capture_batch(rows[m], m)
            out[m] = (batch, sched, _capture_extras(extra_rows[m], batch.instruments))
    if not out:
        raise DataFileError(", ".join(str(p) for p in paths), "no @trade messages"
                            + (f" for {sorted(want)}" if want else ""))
    return out


def _capture_extras(rows: list[tuple], inst: Instruments) -> Extras:
    keep = [r for r in rows if inst.index(r[1]) >= 0]  # streams of symbols that trade here
    keep.sort(key=lambda r: r[0])
    return Extras(np.array([r[0] for r in keep], np.int64),
                  np.array([inst.index(r[1]) for r in keep], np.int16),
                  [r[2] for r in keep], [r[3] for r in keep])


def _capture_batch(rows: list[tuple], market: str) -> tuple[TradeBatch, np.ndarray]:
    rows.sort(key=lambda r: r[0])  # stable: merge files by receive time
    names = list(dict.fromkeys(r[1] for r in rows))
    pdp = {s: 0 for s in names}
    qdp = {s: 0 for s in names}
    for r in rows:
        pdp[r[1]] = max(pdp[r[1]], _decimals(r[3]))
        qdp[r[1]] = max(qdp[r[1]], _decimals(r[4]))
    inst = Instruments(market, tuple(names), tuple(pdp[s] for s in names), tuple(qdp[s] for s in names))
    seen: set[tuple[str, int]] = set()
    keep = []
    for r in rows:  # overlapping files repeat messages: keep the first
        key = (r[1], r[2])
        if key not in seen:
            seen.add(key)
            keep.append(r)
    index = {s: i for i, s in enumerate(names)}
    ttype_code = {t: i for i, t in enumerate(TRADE_TYPES)}
    batch = TradeBatch(
        inst,
        np.array([index[r[1]] for r in keep], np.int16),
        np.array([r[2] for r in keep], np.int64),
        np.array([_units(r[3], pdp[r[1]]) for r in keep], np.int64),
        np.array([_units(r[4], qdp[r[1]]) for r in keep], np.int64),
        np.array([r[5] for r in keep], np.int64),
        np.array([r[6] for r in keep], np.int64),
        np.array([r[7] for r in keep], bool),
        np.array([ttype_code.get(r[8], MARKET) for r in keep], np.int8),
    )
    return batch, np.array([r[0] for r in keep], np.int64)


def _fit_decimals(values: np.ndarray, max_dp: int = 8) -> int:
    """Fewest decimals (<= max_dp) that spell every float of ``values`` exactly."""
    for dp in range(max_dp + 1):
        scaled = values * 10.0 ** dp
        if np.all(np.abs(scaled - np.rint(scaled)) < 1e-6):
            return dp
    return max_dp


def load_trade_files(paths: Sequence[str | Path] | str | Path, *, symbols: Sequence[str] | None = None,
                     market: str | None = None, keep_market: str | None = None) -> TradeBatch:
    """data.binance.vision ``trades`` files -> one batch sorted by time then id.

    Read with :func:`quantlab.files.load_trades`; prices/quantities are turned back into
    exact integers: spot with 8 decimals; futures with the contract's decimals for the
    symbols :func:`~quantlab.synthetic.default_spec` knows (BTCUSDT ``"61800.30"``,
    ``"0.006"``: the archive's floats lost the trailing zeros), else the fewest decimals
    that spell every value. ``keep_market`` keeps the trades of that market only (files
    of both markets for ``--market both``).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [load_trades(p, market=market) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    if keep_market is not None:
        frame = frame[frame["market"] == keep_market]
        if frame.empty:
            raise DataFileError(", ".join(str(p) for p in paths), f"no {keep_market} trades")
    if frame.empty:
        raise DataFileError(", ".join(str(p) for p in paths), "no trades")
    if set(frame["kind"]) != {"trade"}:
        raise DataFileError(", ".join(str(p) for p in paths),
                            "holds aggTrades; replay needs raw trades files (`trades`, not `aggTrades`)")
    markets = set(frame["market"])
    if len(markets) != 1:
        raise DataFileError(", ".join(str(p) for p in paths), f"mixes markets {sorted(markets)}")
    mkt = markets.pop()
    if symbols:
        frame = frame[frame["symbol"].isin({s.upper() for s in symbols})]
        if frame.empty:
            raise DataFileError(", ".join(str(p) for p in paths), f"no trades of {list(symbols)}")
    frame = frame.drop_duplicates(["symbol", "trade_id"]).sort_values(["time_ms", "trade_id"], kind="stable")
    names = list(dict.fromkeys(frame["symbol"]))
    sym = frame["symbol"].map({s: i for i, s in enumerate(names)}).to_numpy(np.int16)
    price = frame["price"].to_numpy(np.float64)
    qty = frame["qty"].to_numpy(np.float64)
    pdp, qdp = [], []
    for i in range(len(names)):
        mask = sym == i
        if mkt == "spot":
            pdp.append(SPOT_DECIMALS)
            qdp.append(SPOT_DECIMALS)
            continue
        known = default_spec(names[i], "usdm") if names[i] in KNOWN_SYMBOLS else None
        pdp.append(max(_fit_decimals(price[mask]), known.price_dp if known else 0))
        qdp.append(max(_fit_decimals(qty[mask]), known.qty_dp if known else 0))
    scale_p = 10.0 ** np.asarray(pdp)[sym]
    scale_q = 10.0 ** np.asarray(qdp)[sym]
    ttypes = frame["trade_type"].to_numpy(object)
    code = {t: i for i, t in enumerate(TRADE_TYPES)}
    t = frame["time_ms"].to_numpy(np.int64)
    return TradeBatch(
        Instruments(mkt, tuple(names), tuple(pdp), tuple(qdp)), sym,
        frame["trade_id"].to_numpy(np.int64), np.rint(price * scale_p).astype(np.int64),
        np.rint(qty * scale_q).astype(np.int64), t, t.copy(),
        frame["is_buyer_maker"].to_numpy(bool),
        np.array([code.get(x, MARKET) if x is not None else MARKET for x in ttypes], np.int8),
    )


def make_source(kind: str = "synthetic", paths: Sequence[str | Path] = (), *,
                symbols: Sequence[str] | None = None, market: str = "spot", rate: float | None = 50.0,
                speed: float = 1.0, seed: int = 0, prefill: int = 0, rebase_time: bool = False):
    """A source by name: ``"synthetic"``, ``"capture"`` or ``"trades"``.

    For recorded sources the market comes from the data and ``market`` is ignored (the
    CLI always passes its default, which must not contradict a USD-M file).
    """
    require_choice("source_kind", kind, ("synthetic", "capture", "trades"))
    if kind == "synthetic":
        return SyntheticSource(tuple(symbols or ("BTCUSDT", "ETHUSDT")), market=market, rate=rate,
                               seed=seed, prefill=prefill)
    if not paths:
        raise ConfigError("paths", paths, f"at least one {kind} file")
    if kind == "capture":
        return RecordedSource.from_capture(paths, symbols=symbols, speed=speed, prefill=prefill,
                                           rebase_time=rebase_time)
    return RecordedSource.from_trade_files(paths, symbols=symbols, market=None, speed=speed,
                                           prefill=prefill, rebase_time=rebase_time)


_MARKET_NAMES = {"spot": "spot", "usdm": "USD-M"}


def make_sources(kind: str = "synthetic", paths: Sequence[str | Path] = (), *,
                 symbols: Sequence[str] | None = None, market: str = "spot", rate: float | None = 50.0,
                 speed: float = 1.0, seed: int = 0, prefill: int = 0, rebase_time: bool = False) -> list:
    """The sources of one server: ``[make_source(...)]``, or for ``market="both"`` a
    spot and a USD-M source (synthetic: the same symbols, seeds ``seed`` and
    ``seed + 1``; recorded: the spot and the USD-M trades of the files, both required).
    """
    require_choice("market", market, ("spot", "usdm", "both"))
    if market != "both":
        return [make_source(kind, paths, symbols=symbols, market=market, rate=rate, speed=speed, seed=seed,
                            prefill=prefill, rebase_time=rebase_time)]
    require_choice("source_kind", kind, ("synthetic", "capture", "trades"))
    if kind == "synthetic":
        syms = tuple(symbols or ("BTCUSDT", "ETHUSDT"))
        return [SyntheticSource(syms, market="spot", rate=rate, seed=seed, prefill=prefill),
                SyntheticSource(syms, market="usdm", rate=rate, seed=seed + 1, prefill=prefill)]
    if not paths:
        raise ConfigError("paths", paths, f"at least one {kind} file")
    options = dict(speed=speed, prefill=prefill, rebase_time=rebase_time)
    if kind == "capture":
        by_market = load_capture_markets(paths, symbols=symbols)
        missing = [m for m in MARKETS if m not in by_market]
        if missing:
            raise DataFileError(", ".join(str(p) for p in paths),
                                f"holds no {' or '.join(_MARKET_NAMES[m] for m in missing)} trades; --market both "
                                "needs captures of both markets (or pick --market " + next(iter(by_market)) + ")")
        return [RecordedSource(b, sched, extras=x, **options) for b, sched, x in
                (by_market["spot"], by_market["usdm"])]
    return [RecordedSource.from_trade_files(paths, symbols=symbols, keep_market=m, **options)
            for m in MARKETS]


# =============================================================================
# REST
# =============================================================================
class _ApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


# (default, max) limit per market and endpoint (Binance spot and USD-M docs; futures
# historicalTrades: default 100, max 500). Larger limits are clamped to the max.
_LIMITS = {
    "spot": {"aggTrades": (500, 1000), "historicalTrades": (500, 1000), "trades": (500, 1000), "klines": (500, 1000)},
    "usdm": {"aggTrades": (500, 1000), "historicalTrades": (100, 500), "trades": (500, 1000), "klines": (500, 1500)},
}
_MINUTE_MS = 60_000
_INTERVALS_MS = {
    "1s": 1000, "1m": _MINUTE_MS, "3m": 3 * _MINUTE_MS, "5m": 5 * _MINUTE_MS, "15m": 15 * _MINUTE_MS,
    "30m": 30 * _MINUTE_MS, "1h": 60 * _MINUTE_MS, "2h": 120 * _MINUTE_MS, "4h": 240 * _MINUTE_MS,
    "6h": 360 * _MINUTE_MS, "8h": 480 * _MINUTE_MS, "12h": 720 * _MINUTE_MS, "1d": 1440 * _MINUTE_MS,
    "3d": 3 * 1440 * _MINUTE_MS, "1w": 7 * 1440 * _MINUTE_MS, "1M": -1,
}
_WEEK_OFFSET_MS = 4 * 1440 * _MINUTE_MS  # weekly klines open on Mondays; 1970-01-01 was a Thursday
_AGG_WINDOW_MS = 3_600_000  # USD-M aggTrades: startTime..endTime may span at most 1 hour
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not re.fullmatch(r"-?[0-9]{1,20}", text):
        raise _ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(text)


def _exact_product_sum(price: np.ndarray, qty: np.ndarray, starts: np.ndarray) -> list[int]:
    """Exact sums of ``price * qty`` per group (Python ints: int64 would overflow)."""
    if price.size == 0:
        return []
    prod = price.astype(object) * qty.astype(object)
    return np.add.reduceat(prod, starts).tolist()


def _round_units(value: int, from_dp: int, to_dp: int) -> int:
    """Round ``value`` (units of 10**-from_dp) to units of 10**-to_dp, half up."""
    if to_dp >= from_dp:
        return value * 10 ** (to_dp - from_dp)
    div = 10 ** (from_dp - to_dp)
    return (value + div // 2) // div


class _RestApi:
    """Binance's market-data REST endpoints over the tape. Runs on the server's loop."""

    def __init__(self, tape: _Tape, specs: Sequence[SymbolSpec], faults: Faults, stats: ReplayStats):
        self.tape = tape
        self.inst = tape.instruments
        self.market = self.inst.market
        self.prefix = "/api/v3" if self.market == "spot" else "/fapi/v1"
        self.specs = {s.symbol: s for s in specs}
        self.stats = stats
        self.faults = faults
        self._throttle_left = faults.rest_429_count
        self._weight_minute = 0
        self._weight_used = 0

    # --- dispatch --------------------------------------------------------------
    def handle(self, target: str, headers: Mapping[str, str]) -> tuple[int, bytes, list[tuple[str, str]]]:
        """``(HTTP status, JSON body, extra headers)`` for a GET of ``target``."""
        self.stats.rest_requests += 1
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if not path.startswith(self.prefix + "/"):
            return 404, orjson.dumps({"code": -1, "msg": f"Unknown path {path}; this server is {self.market}, "
                                                          f"its REST lives under {self.prefix}"}), []
        endpoint = path[len(self.prefix) + 1:]
        handler = {
            "ping": self._ping, "time": self._time, "exchangeInfo": self._exchange_info,
            "aggTrades": self._agg_trades, "historicalTrades": self._historical_trades,
            "trades": self._recent_trades, "klines": self._klines,
        }.get(endpoint)
        if handler is None:
            return 404, orjson.dumps({"code": -1, "msg": f"Unknown endpoint {path}"}), []
        if self._throttle_left > 0:
            # Fault: one (or N) 429 with Retry-After, as Binance answers an IP over its
            # weight budget (BINANCE.md "Endpoints"; errors.md -1003).
            self._throttle_left -= 1
            self.stats.rest_throttled += 1
            body = {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is "
                                          f"{binance.REST_WEIGHT_BUDGET_PER_MIN[self.market]} requests per minute. "
                                          "Please use the websocket for live updates to avoid polling the API."}
            return 429, orjson.dumps(body), [("Retry-After", str(self.faults.retry_after_s))]
        weight_header = self._count_weight(endpoint)
        try:
            if endpoint == "historicalTrades" and self.market == "usdm" and "X-MBX-APIKEY" not in headers:
                # fapi historicalTrades is MARKET_DATA: it wants an API key (any value here).
                raise _ApiError(-2014, "API-key format invalid.", 401)
            result = handler(params)
        except _ApiError as exc:
            return exc.status, orjson.dumps({"code": exc.code, "msg": exc.msg}), [weight_header]
        return 200, orjson.dumps(result), [weight_header]

    def _count_weight(self, endpoint: str) -> tuple[str, str]:
        minute = _now_ms() // _MINUTE_MS
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        self._weight_used += binance.REST_WEIGHTS[self.market].get(endpoint, 1)
        return "X-MBX-USED-WEIGHT-1M", str(self._weight_used)

    def _symbol(self, params: Mapping[str, str]) -> int:
        sym = params.get("symbol")
        if not sym:
            raise _ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not re.fullmatch(r"[A-Z0-9-_.]{1,20}", sym):
            raise _ApiError(-1100, "Illegal characters found in parameter 'symbol'; legal range is "
                                   "'^[A-Z0-9-_.]{1,20}$'.")
        i = self.inst.index(sym)
        if i < 0:
            raise _ApiError(-1121, "Invalid symbol.")
        return i

    def _limit(self, params: Mapping[str, str], endpoint: str) -> int:
        default, maximum = _LIMITS[self.market][endpoint]
        value = _int_param(params, "limit")
        return default if value is None else max(1, min(maximum, value))

    # --- endpoints ---------------------------------------------------------------
    def _ping(self, params: Mapping[str, str]) -> dict:
        return {}

    def _time(self, params: Mapping[str, str]) -> dict:
        return {"serverTime": _now_ms()}

    def _exchange_info(self, params: Mapping[str, str]) -> dict:
        wanted = list(self.inst.symbols)
        if params.get("symbol"):
            wanted = [self.inst.symbols[self._symbol(params)]]
        elif params.get("symbols"):
            try:
                asked = orjson.loads(params["symbols"])
            except orjson.JSONDecodeError:
                raise _ApiError(-1100, "Illegal characters found in parameter 'symbols'.") from None
            if not isinstance(asked, list) or any(self.inst.index(str(s)) < 0 for s in asked):
                raise _ApiError(-1121, "Invalid symbol.")
            wanted = [str(s) for s in asked]
        budget = binance.REST_WEIGHT_BUDGET_PER_MIN[self.market]
        info: dict[str, Any] = {"timezone": "UTC", "serverTime": _now_ms()}
        if self.market == "usdm":
            info["futuresType"] = "U_MARGINED"
        info["rateLimits"] = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                               "limit": budget}]
        info["exchangeFilters"] = []
        info["symbols"] = [self._symbol_info(s) for s in wanted]
        return info

    def _symbol_info(self, symbol: str) -> dict:
        spec = self.specs[symbol]
        base = next((symbol[:-len(q)] for q in _QUOTES if symbol.endswith(q) and len(symbol) > len(q)), symbol[:-4])
        quote = symbol[len(base):]
        pdp, qdp = spec.price_dp, spec.qty_dp
        filters = [
            {"filterType": "PRICE_FILTER", "minPrice": format_decimal(spec.tick_units, pdp),
             "maxPrice": format_decimal(1_000_000 * 10 ** pdp, pdp), "tickSize": format_decimal(spec.tick_units, pdp)},
            {"filterType": "LOT_SIZE", "minQty": format_decimal(spec.step_units, qdp),
             "maxQty": format_decimal(9000 * 10 ** qdp, qdp), "stepSize": format_decimal(spec.step_units, qdp)},
        ]
        if self.market == "spot":
            return {"symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
                    "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True, "filters": filters,
                    "permissions": [], "permissionSets": [["SPOT"]]}
        return {"symbol": symbol, "pair": symbol, "contractType": "PERPETUAL", "status": "TRADING",
                "baseAsset": base, "quoteAsset": quote, "marginAsset": quote, "pricePrecision": pdp,
                "quantityPrecision": qdp, "baseAssetPrecision": 8, "quotePrecision": 8, "filters": filters}

    def _trade_rows(self, s: int, rows: np.ndarray, cols: _Columns) -> list[dict]:
        pdp, qdp = self.inst.price_dp[s], self.inst.qty_dp[s]
        ids, price, qty = cols["id"][rows].tolist(), cols["price"][rows].tolist(), cols["qty"][rows].tolist()
        t, m = cols["time"][rows].tolist(), cols["m"][rows].tolist()
        out = []
        for i in range(len(ids)):
            quote = price[i] * qty[i]  # exact, units of 10**-(pdp + qdp)
            if self.market == "spot":
                quote_s = format_decimal(_round_units(quote, pdp + qdp, SPOT_DECIMALS), SPOT_DECIMALS)
                out.append({"id": ids[i], "price": format_decimal(price[i], pdp), "qty": format_decimal(qty[i], qdp),
                            "quoteQty": quote_s, "time": t[i], "isBuyerMaker": m[i], "isBestMatch": True})
            else:  # futures spell quoteQty without trailing zeros (as in their trade archives)
                quote_s = format_decimal(quote, pdp + qdp)
                quote_s = quote_s.rstrip("0").rstrip(".") if "." in quote_s else quote_s
                out.append({"id": ids[i], "price": format_decimal(price[i], pdp), "qty": format_decimal(qty[i], qdp),
                            "quoteQty": quote_s, "time": t[i], "isBuyerMaker": m[i]})
        return out

    def _market_rows(self, cols: _Columns, lo: int, limit: int, *, latest: bool) -> np.ndarray:
        """Rows from ``lo`` on (or the latest) holding market fills only: futures REST
        trades leave out insurance-fund, ADL and NA prints (USD-M docs, "Recent Trades List")."""
        if self.market == "spot":
            n = len(cols)
            return np.arange(max(lo, n - limit), n) if latest else np.arange(lo, min(n, lo + limit))
        ok = lo + np.flatnonzero(cols["ttype"][lo:] == MARKET)
        return ok[-limit:] if latest else ok[:limit]

    def _historical_trades(self, params: Mapping[str, str]) -> list[dict]:
        s = self._symbol(params)
        limit = self._limit(params, "historicalTrades")
        from_id = _int_param(params, "fromId")
        with self.tape.lock:
            cols = self.tape.trades[s]
            if from_id is None:  # "Default gets most recent trades"
                rows = self._market_rows(cols, 0, limit, latest=True)
            else:
                lo = int(np.searchsorted(cols["id"], from_id))
                rows = self._market_rows(cols, lo, limit, latest=False)
            return self._trade_rows(s, rows, cols)

    def _recent_trades(self, params: Mapping[str, str]) -> list[dict]:
        s = self._symbol(params)
        limit = self._limit(params, "trades")
        with self.tape.lock:
            cols = self.tape.trades[s]
            return self._trade_rows(s, self._market_rows(cols, 0, limit, latest=True), cols)

    def _agg_trades(self, params: Mapping[str, str]) -> list[dict]:
        s = self._symbol(params)
        limit = self._limit(params, "aggTrades")
        from_id = _int_param(params, "fromId")
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        if self.market == "usdm" and start is not None and end is not None and end - start > _AGG_WINDOW_MS:
            # USD-M refuses windows longer than one hour; exactly one hour is fine (ccxt's
            # fetch_trades(since=...) and python-binance's aggregate_trade_iter send that).
            # Spot has no limit since Binance's 2022-12-05 change.
            raise _ApiError(-1127, "More than 1 hours between startTime and endTime.")
        pdp, qdp = self.inst.price_dp[s], self.inst.qty_dp[s]
        with self.tape.lock:
            cols = self.tape.aggs[s]
            ids, t = cols["id"], cols["time"]
            lo, hi = 0, len(cols)
            if from_id is not None:
                lo = max(lo, int(np.searchsorted(ids, from_id)))
            if start is not None:
                lo = max(lo, int(np.searchsorted(t, start, side="left")))
            if end is not None:
                hi = min(hi, int(np.searchsorted(t, end, side="right")))
            if from_id is None and start is None:  # latest (up to endTime, if given)
                rows = np.arange(max(lo, hi - limit), hi)
            else:
                rows = np.arange(lo, max(lo, min(hi, lo + limit)))
            a, price, qty = cols["id"][rows].tolist(), cols["price"][rows].tolist(), cols["qty"][rows].tolist()
            f, l_, tt, m = (cols["first"][rows].tolist(), cols["last"][rows].tolist(), t[rows].tolist(),
                            cols["m"][rows].tolist())
        out = []
        for i in range(len(a)):
            row = {"a": a[i], "p": format_decimal(price[i], pdp), "q": format_decimal(qty[i], qdp),
                   "f": f[i], "l": l_[i], "T": tt[i], "m": m[i]}
            if self.market == "spot":
                row["M"] = True
            out.append(row)
        return out

    def _klines(self, params: Mapping[str, str]) -> list[list]:
        s = self._symbol(params)
        interval = params.get("interval")
        if not interval:
            raise _ApiError(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        iv = _INTERVALS_MS.get(interval)
        if iv is None or (interval == "1s" and self.market == "usdm"):
            raise _ApiError(-1120, "Invalid interval.")
        limit = self._limit(params, "klines")
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        with self.tape.lock:
            cols = self.tape.trades[s]
            ok = _kline_rows(cols["ttype"], cols["price"], cols["qty"])
            t, ids = cols["time"][ok], cols["id"][ok]
            price, qty, maker = cols["price"][ok], cols["qty"][ok], cols["m"][ok]
        if t.size == 0:
            return []
        g = _kline_groups(t, ids, price, qty, maker, interval)
        keys = g["t"]
        bars = {ot: tuple(g[k][i] for k in ("o", "h", "l", "c", "v", "q", "n", "V", "Q"))
                for i, ot in enumerate(keys.tolist())}
        fmt = _KlineFormat(self.market, self.inst.price_dp[s], self.inst.qty_dp[s])
        # Every interval from the first trade to the last is a row; an empty one is flat
        # at the previous close with zero volume, as Binance's klines are.
        all_opens = _interval_range(int(keys[0]), int(keys[-1]), interval)
        if start is not None:
            all_opens = all_opens[all_opens >= start]
        if end is not None:
            all_opens = all_opens[all_opens <= end]
        all_opens = all_opens[:limit] if start is not None else all_opens[-limit:]
        out = []
        prev_close = None
        first = int(all_opens[0]) if all_opens.size else None
        if first is not None:  # the close before the window seeds a leading empty bar
            before = keys[keys < first]
            if before.size:
                prev_close = bars[int(before[-1])][3]
        for ot in all_opens.tolist():
            bar = bars.get(ot)
            if bar is None:
                c = prev_close if prev_close is not None else 0
                bar = (c, c, c, c, 0, 0, 0, 0, 0)
            o, h, lo, c, v, q, n, tv, tq = bar
            prev_close = c
            out.append([ot, fmt.price(o), fmt.price(h), fmt.price(lo), fmt.price(c), fmt.qty(v),
                        _close_time(ot, interval), fmt.quote(q), n, fmt.qty(tv), fmt.quote(tq), "0"])
        return out


def _kline_rows(ttype: np.ndarray, price: np.ndarray, qty: np.ndarray) -> np.ndarray:
    """Rows that count in klines: market fills with a positive price and quantity
    (futures klines leave out insurance-fund, ADL and NA prints, BINANCE.md "Messages")."""
    return np.flatnonzero((ttype == MARKET) & (price > 0) & (qty > 0))


def _kline_groups(t: np.ndarray, ids: np.ndarray, price: np.ndarray, qty: np.ndarray, maker: np.ndarray,
                  interval: str) -> dict[str, Any]:
    """One kline per interval holding trades: the one aggregation used by REST
    ``klines`` and by the ``@kline_<interval>`` streams.

    Parameters
    ----------
    t, ids : trade times (ms, UTC) and trade ids, in trade order.
    price, qty : exact integers (units of ``10**-price_dp`` and ``10**-qty_dp``).
    maker : ``m`` (buyer is maker: the taker sold).
    interval : a Binance kline interval (``1s`` .. ``1M``).

    Returns
    -------
    dict of lists (and ``t``, an int64 array of open times, ms): ``o, h, l, c``
    prices; ``v`` volume and ``V`` taker-buy volume (qty units); ``q`` quote volume and
    ``Q`` taker-buy quote volume, exact :math:`\\sum p_i q_i` in units of
    ``10**-(price_dp + qty_dp)``; ``n`` trade count; ``f``, ``L`` first and last trade id;
    ``start`` the row of each bar's first trade.
    Bars are keyed by the open time of each trade's interval; a trade time earlier than
    its predecessor's stays in the running bar (ids order the tape).
    """
    opens = np.maximum.accumulate(_open_times(t, interval))
    starts = np.flatnonzero(np.r_[True, opens[1:] != opens[:-1]])
    ends = np.append(starts[1:], t.size) - 1
    buy_qty = np.where(maker, 0, qty)  # m false: the buyer was the taker
    return {
        "t": opens[starts], "o": price[starts].tolist(), "h": np.maximum.reduceat(price, starts).tolist(),
        "l": np.minimum.reduceat(price, starts).tolist(), "c": price[ends].tolist(),
        "v": np.add.reduceat(qty, starts).tolist(), "q": _exact_product_sum(price, qty, starts),
        "n": (ends - starts + 1).tolist(), "V": np.add.reduceat(buy_qty, starts).tolist(),
        "Q": _exact_product_sum(price, buy_qty, starts), "f": ids[starts].tolist(), "L": ids[ends].tolist(),
        "start": starts,
    }


class _KlineFormat:
    """Binance's spelling of kline numbers: prices and volumes in the symbol's decimals,
    quote volumes in 8 decimals on spot and ``min(8, price_dp + qty_dp)`` on USD-M."""

    def __init__(self, market: str, pdp: int, qdp: int):
        self.pdp, self.qdp = pdp, qdp
        self.qvol_dp = SPOT_DECIMALS if market == "spot" else min(8, pdp + qdp)

    def price(self, units: int) -> str:
        return format_decimal(units, self.pdp)

    def qty(self, units: int) -> str:
        return format_decimal(units, self.qdp)

    def quote(self, exact: int) -> str:
        return format_decimal(_round_units(exact, self.pdp + self.qdp, self.qvol_dp), self.qvol_dp)


def _open_times(t: np.ndarray, interval: str) -> np.ndarray:
    """Open time (ms) of the kline holding each trade time ``t`` (ms, UTC)."""
    if interval == "1M":
        months = t.astype("datetime64[ms]").astype("datetime64[M]")
        return months.astype("datetime64[ms]").astype(np.int64)
    iv = _INTERVALS_MS[interval]
    offset = _WEEK_OFFSET_MS if interval == "1w" else 0
    return t - (t - offset) % iv


def _interval_range(first: int, last: int, interval: str) -> np.ndarray:
    if interval == "1M":
        months = np.arange(np.datetime64(first, "ms").astype("datetime64[M]"),
                           np.datetime64(last, "ms").astype("datetime64[M]") + 1)
        return months.astype("datetime64[ms]").astype(np.int64)
    return np.arange(first, last + 1, _INTERVALS_MS[interval], dtype=np.int64)


def _close_time(open_ms: int, interval: str) -> int:
    if interval == "1M":
        nxt = (np.datetime64(open_ms, "ms").astype("datetime64[M]") + 1).astype("datetime64[ms]")
        return int(nxt.astype(np.int64)) - 1
    return open_ms + _INTERVALS_MS[interval] - 1


def _http_response(status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()) -> Response:
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Type", "application/json;charset=UTF-8"), ("Content-Length", str(len(body))),
                       *extra])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


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


# =============================================================================
# CLI
# =============================================================================
def run_cli(args: argparse.Namespace | None = None, *, source_kind: str | None = None,
            paths: Sequence[str] = (), symbols: Sequence[str] | None = None, rate: float | None = 50.0,
            speed: float = 1.0, port: int = 0, market: str = "spot", faults: Faults | Mapping | None = None,
            seed: int = 0, host: str = "127.0.0.1", prefill: int = 0, rebase_time: bool = False,
            live_clock: bool = False) -> int:
    """``quantlab replay``: serve until SIGINT/SIGTERM; exit status 0.

    Prints exactly one JSON object as the first stdout line, flushed, once listening::

        {"ws": "ws://127.0.0.1:PORT", "rest": "http://127.0.0.1:PORT"}

    Parameters
    ----------
    args : the ``argparse`` namespace of :mod:`quantlab.cli` (attributes ``synthetic``,
        ``capture`` / ``trades`` (lists of files), ``symbols``, ``market``, ``rate``,
        ``speed``, ``seed``, ``host``, ``port`` and optionally ``faults`` (``key=value``
        strings), ``prefill``, ``rebase_time``, ``live_clock``); when given it overrides
        the keywords.
    source_kind : ``"synthetic"`` (default), ``"capture"`` or ``"trades"``; paths : files.
    symbols, rate, speed, port, market, seed, host, prefill, rebase_time : see
        :func:`make_sources` (``market="both"``: spot and USD-M on one port) and
        :class:`ReplayServer`.
    live_clock : start a recording's clock at server start, not at the first subscription.
    faults : :class:`Faults`, a mapping of its fields, or ``None``.

    Returns
    -------
    int
        0 after a signal; configuration and data errors propagate as
        :class:`~quantlab.errors.QuantlabError` (the CLI maps them to 2); 1 if the port
        cannot be bound.
    """
    if args is not None:
        if getattr(args, "capture", None):
            source_kind, paths = "capture", args.capture
        elif getattr(args, "trades", None):
            source_kind, paths = "trades", args.trades
        else:
            source_kind = "synthetic"
        symbols = getattr(args, "symbols", symbols)
        rate = getattr(args, "rate", rate)
        speed = getattr(args, "speed", speed)
        port = getattr(args, "port", port)
        market = getattr(args, "market", market) or market
        seed = getattr(args, "seed", seed)
        host = getattr(args, "host", host)
        prefill = getattr(args, "prefill", prefill) or 0
        rebase_time = bool(getattr(args, "rebase_time", rebase_time))
        live_clock = bool(getattr(args, "live_clock", live_clock))
        faults = getattr(args, "faults", faults)
    if isinstance(faults, Mapping):
        faults = Faults.from_dict(faults)
    elif isinstance(faults, (list, tuple)):
        faults = Faults.from_strings(faults)
    sources = make_sources(source_kind or "synthetic", paths, symbols=symbols, market=market, rate=rate,
                           speed=speed, seed=seed, prefill=prefill, rebase_time=rebase_time)
    server = ReplayServer(sources, host=host, port=port, faults=faults, live_clock=live_clock)
    if not logger.isEnabledFor(logging.DEBUG):
        _ws_logger.setLevel(logging.WARNING)  # one INFO line per REST call is noise

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # main thread only: this is the CLI path
            loop.add_signal_handler(sig, stop.set)

        def ready() -> None:
            print(json.dumps({"ws": server.ws_url, "rest": server.rest_url}), flush=True)

        serving = asyncio.create_task(server.serve(ready=ready))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            stopped.cancel()
            serving.result()  # re-raises a bind error
            return 0
        serving.cancel()
        try:
            await serving
        except asyncio.CancelledError:
            pass
        logger.info("replay server stopped: %s", server.stats)
        return 0

    try:
        return asyncio.run(main())
    except OSError as exc:
        print(f"quantlab replay: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
