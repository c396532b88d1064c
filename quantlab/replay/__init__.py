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

Layout: ``faults`` (:class:`Faults`, :class:`ReplayStats`), ``protocol`` (control
messages, stream paths, WebSocket frames; pure), ``recordings`` (captures and trade
files -> batches), ``sources`` (:class:`SyntheticSource`, :class:`RecordedSource`,
:func:`make_source`), ``rest`` (the tape and the REST API), ``streaming`` (per-stream
frames, klines, clients), ``server`` (:class:`ReplayServer`), ``cli`` (:func:`run_cli`).

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

from quantlab.schema import now_ms as _now_ms  # noqa: F401 (one clock, see tests/test_rules.py)
from quantlab.replay.faults import Faults, ReplayStats
from quantlab.replay.protocol import handle_control, MAX_INCOMING_PER_S, MAX_STREAMS, parse_ws_path
from quantlab.replay.recordings import Extras, load_capture, load_capture_markets, load_trade_files
from quantlab.replay.sources import (
    Emission,
    make_source,
    make_sources,
    RecordedSource,
    SyntheticSource,
)
from quantlab.replay.streaming import is_loopback_host, warn_if_exposed
from quantlab.replay.server import ReplayServer
from quantlab.replay.cli import run_cli

__all__ = [
    "Emission",
    "Extras",
    "Faults",
    "MAX_INCOMING_PER_S",
    "MAX_STREAMS",
    "RecordedSource",
    "ReplayServer",
    "ReplayStats",
    "SyntheticSource",
    "handle_control",
    "is_loopback_host",
    "load_capture",
    "load_capture_markets",
    "load_trade_files",
    "make_source",
    "make_sources",
    "parse_ws_path",
    "run_cli",
    "warn_if_exposed",
]
