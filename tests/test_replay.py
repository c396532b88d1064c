"""quantlab.replay: the Binance-protocol server, over real loopback sockets.

Clients are plain ``websockets`` and ``urllib``; servers listen on port 0. Waits are on
conditions with deadlines (``wait_until``, ``asyncio.timeout``), never bare sleeps.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from quantlab.binance import ControlReply, ErrorReply, NotTrade, ServerShutdown, Trade, parse_message
from quantlab.errors import ConfigError
from quantlab.files import iter_capture
from quantlab.replay import (
    Faults, RecordedSource, ReplayServer, SyntheticSource, handle_control, parse_ws_path,
)
from quantlab.synthetic import default_spec
from tests.util import wait_until

ROOT = Path(__file__).resolve().parent.parent
SPOT_TRADE_KEYS = {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
USDM_TRADE_KEYS = {"e", "E", "T", "s", "t", "p", "q", "X", "m"}
SPOT_AGG_KEYS = {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}
USDM_AGG_KEYS = SPOT_AGG_KEYS - {"M"}
BTC_SPOT_FIRST = default_spec("BTCUSDT", "spot").first_trade_id


def ws_connect(url: str):
    """A plain websockets client that never stops reading the socket.

    websockets pauses reading once ``max_queue`` frames wait for ``recv()``; a test that
    stops reading mid-stream and then closes would never see the server's close frame
    behind the paused data and would wait its full close timeout.
    """
    return connect(url, max_queue=None)


def run(coro, timeout: float = 20.0):
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


async def collect(ws, n: int) -> list:
    return [await ws.recv() for _ in range(n)]


async def reply_to(ws, request: dict) -> dict:
    """Send a control request; return its reply (trade frames before it are skipped)."""
    await ws.send(json.dumps(request))
    while True:
        msg = json.loads(await ws.recv())
        if "id" in msg and ("result" in msg or "error" in msg):
            return msg


def http_get(url: str, headers: dict | None = None) -> tuple[int, dict, object]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def trades_of(msgs: list, market: str) -> list[Trade]:
    out = [parse_message(m, market, recv_ms=0) for m in msgs]
    return [t for t in out if isinstance(t, Trade)]


# =============================================================================
# Shapes
# =============================================================================
def test_combined_streams_have_binance_shapes_and_match_rest():
    with ReplayServer(SyntheticSource(rate=400.0, seed=1)) as srv:
        async def client():
            url = srv.ws_url + "/stream?streams=btcusdt@trade/btcusdt@aggTrade/ethusdt@trade"
            async with ws_connect(url) as ws:
                return await collect(ws, 80)
        msgs = run(client())
        rest_trades = http_get(srv.rest_url + f"/api/v3/historicalTrades?symbol=BTCUSDT&limit=1000")[2]
        rest_aggs = http_get(srv.rest_url + f"/api/v3/aggTrades?symbol=BTCUSDT&limit=1000")[2]
    streams = {json.loads(m)["stream"] for m in msgs}
    assert streams == {"btcusdt@trade", "btcusdt@aggTrade", "ethusdt@trade"}
    by_id = {r["id"]: r for r in rest_trades}
    agg_by_id = {r["a"]: r for r in rest_aggs}
    for m in msgs:
        obj = json.loads(m)
        data = obj["data"]
        t = parse_message(m, "spot", recv_ms=0)
        assert isinstance(t, Trade) and obj["stream"] == t.symbol.lower() + "@" + t.kind
        if t.kind == "trade":
            assert set(data) == SPOT_TRADE_KEYS
            if t.symbol == "BTCUSDT":  # the same trade on REST, field by field
                r = by_id[t.trade_id]
                assert (r["price"], r["qty"], r["time"], r["isBuyerMaker"]) == (data["p"], data["q"], data["T"], data["m"])
                assert set(r) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
        else:
            assert set(data) == SPOT_AGG_KEYS
            r = agg_by_id[t.trade_id]
            assert r == {k: data[k] for k in ("a", "p", "q", "f", "l", "T", "m", "M")}
    # Aggregates published on the stream cover exactly the BTC raw ids received around them.
    btc = [t for t in trades_of(msgs, "spot") if t.symbol == "BTCUSDT"]
    raw_ids = {t.trade_id for t in btc if t.kind == "trade"}
    aggs = [t for t in btc if t.kind == "aggTrade"]
    assert aggs and all(set(range(a.first_trade_id, a.last_trade_id + 1)) <= raw_ids for a in aggs[1:-1])


def test_usdm_routes_payloads_and_the_silent_unrouted_url():
    src = SyntheticSource(market="usdm", rate=400.0, seed=2, non_market_fraction=0.05)
    with ReplayServer(src, usdm_trade_routes=("/public",)) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/market/stream?streams=btcusdt@aggTrade/btcusdt@trade") as ws:
                market = await collect(ws, 30)
            async with ws_connect(srv.ws_url + "/public/ws/btcusdt@trade") as ws:
                public = await collect(ws, 60)
            async with ws_connect(srv.ws_url + "/stream?streams=btcusdt@aggTrade") as ws:
                ack = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 7})
                produced, sent = srv.stats.trades_produced, srv.stats.messages_sent
                await asyncio.to_thread(wait_until, lambda: srv.stats.trades_produced > produced + 100,
                                        5.0, message="more trades")
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await ws.recv()
                silent = srv.stats.messages_sent == sent
            return market, public, ack, silent
        market, public, ack, silent = run(client())
    # /market carries aggTrades only, since @trade was routed to /public.
    assert {json.loads(m)["stream"] for m in market} == {"btcusdt@aggTrade"}
    assert all(set(json.loads(m)["data"]) == USDM_AGG_KEYS for m in market)
    # /public/ws: raw (unwrapped) futures trades with X, market and non-market prints.
    datas = [json.loads(m) for m in public]
    assert all(set(d) == USDM_TRADE_KEYS for d in datas)
    assert {d["X"] for d in datas} <= {"MARKET", "INSURANCE_FUND", "ADL", "NA"}
    parsed = trades_of(public, "usdm")
    assert all(t.trade_type == d["X"] for t, d in zip(parsed, datas))
    # The unrouted URL acknowledges and then sends nothing (BINANCE.md "Endpoints").
    assert ack == {"result": None, "id": 7} and silent


def test_raw_ws_path_and_combined_property():
    with ReplayServer(SyntheticSource(rate=400.0)) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/ws/ethusdt@trade") as ws:
                raw = await ws.recv()
                get = await reply_to(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 1})
                put = await reply_to(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 2})
                wrapped = await ws.recv()
                bad = await reply_to(ws, {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 3})
                unknown = await reply_to(ws, {"method": "GET_PROPERTY", "params": ["colour"], "id": 4})
                return raw, get, put, wrapped, bad, unknown
        raw, get, put, wrapped, bad, unknown = run(client())
    assert set(json.loads(raw)) == SPOT_TRADE_KEYS
    assert get == {"result": False, "id": 1} and put == {"result": None, "id": 2}
    assert json.loads(wrapped)["stream"] == "ethusdt@trade"
    assert bad == {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 3}
    assert unknown == {"error": {"code": 0, "msg": "Unknown property"}, "id": 4}


# =============================================================================
# Control messages
# =============================================================================
def test_subscribe_unsubscribe_list_and_errors_over_the_socket():
    # Seven requests in well under a second: beyond Binance's 5/s, so no limit here.
    with ReplayServer(SyntheticSource(rate=400.0), max_incoming_per_s=None) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/stream") as ws:
                sub = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 1})
                first = await collect(ws, 20)
                listed = await reply_to(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
                unsub = await reply_to(ws, {"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": "x3"})
                after = await collect(ws, 20)
                invalid = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 4})
                await ws.send("{not json")
                bad_json = json.loads(await _next_reply(ws))
                method = await reply_to(ws, {"method": "SUBSCRIBEZ", "params": [], "id": 5})
                bad_id = await reply_to(ws, {"method": "LIST_SUBSCRIPTIONS", "id": [1]})
                return sub, first, listed, unsub, after, invalid, bad_json, method, bad_id
        sub, first, listed, unsub, after, invalid, bad_json, method, bad_id = run(client())
    assert sub == {"result": None, "id": 1}
    assert {json.loads(m)["stream"] for m in first} == {"btcusdt@trade", "ethusdt@trade"}
    assert listed == {"result": ["btcusdt@trade", "ethusdt@trade"], "id": 2}
    assert unsub == {"result": None, "id": "x3"}
    assert {json.loads(m)["stream"] for m in after} == {"btcusdt@trade"}
    assert invalid == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 4}
    assert bad_json["error"]["code"] == 3 and bad_json["error"]["msg"].startswith("Invalid JSON")
    assert bad_json["id"] is None
    assert method["error"]["code"] == 2 and "unknown variant `SUBSCRIBEZ`" in method["error"]["msg"]
    assert bad_id == {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
                      "id": None}
    assert isinstance(parse_message(json.dumps(invalid), "spot"), ErrorReply)
    assert isinstance(parse_message(json.dumps(listed), "spot"), ControlReply)


async def _next_reply(ws) -> str:
    while True:
        msg = await ws.recv()
        if '"error"' in msg or '"result"' in msg:
            return msg


def test_handle_control_is_pure_and_keeps_order():
    reply, subs, combined = handle_control(
        '{"method":"SUBSCRIBE","params":["ethusdt@trade","btcusdt@aggTrade","ethusdt@trade"],"id":9}',
        ["btcusdt@aggTrade"], True)
    assert reply == {"result": None, "id": 9} and subs == ["btcusdt@aggTrade", "ethusdt@trade"] and combined
    assert handle_control('{"method":"LIST_SUBSCRIPTIONS","id":null}', subs, True)[0] == {"result": subs, "id": None}
    assert handle_control('{"params":[],"id":1}', [], True)[0]["error"] == {
        "code": 2, "msg": "Invalid request: missing field `method`"}
    assert handle_control('[1,2]', [], True)[0]["error"]["code"] == 2
    assert handle_control('{"method":"SUBSCRIBE","params":"btcusdt@trade","id":1}', [], True)[0]["error"]["code"] == 2
    # Upper case and unknown symbols are valid stream names: acknowledged (then silent).
    assert handle_control('{"method":"SUBSCRIBE","params":["BTCUSDT@trade","xyzusdt@depth@100ms"],"id":1}',
                          [], True)[0] == {"result": None, "id": 1}
    assert parse_ws_path("/public/stream?streams=btcusdt%40trade") == ("/public", True, ["btcusdt@trade"])
    assert parse_ws_path("/api/v3/ping") is None


def test_unknown_and_upper_case_symbols_are_acknowledged_then_silent():
    with ReplayServer(SyntheticSource(rate=400.0)) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/ws") as ws:
                ack = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["xyzusdt@trade", "BTCUSDT@trade"], "id": 1})
                produced = srv.stats.trades_produced
                await asyncio.to_thread(wait_until, lambda: srv.stats.trades_produced > produced + 100,
                                        5.0, message="more trades")
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await ws.recv()
                return ack
        ack = run(client())
        assert ack == {"result": None, "id": 1}
        assert srv.stats.messages_sent == 0 and srv.stats.trades_produced > 100


def _raw_ws_handshake(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exact(2), "big")
    elif n == 127:
        n = int.from_bytes(exact(8), "big")
    return b0 & 0x0F, exact(n)


def test_server_pings_are_on_the_wire():
    with ReplayServer(SyntheticSource(rate=50.0), ping_interval_s=0.2, ping_timeout_s=5.0) as srv:
        sock = _raw_ws_handshake(srv.port, "/ws")  # no subscription: only control frames come
        try:
            opcode, _ = _read_frame(sock)
        finally:
            sock.close()
    assert opcode == 0x9  # PING (RFC 6455 section 5.5.2)


def test_every_client_gets_every_trade_which_is_generated_once():
    with ReplayServer(SyntheticSource(rate=600.0, seed=5)) as srv:
        async def client():
            url = srv.ws_url + "/stream?streams=btcusdt@trade"
            async with ws_connect(url) as a, ws_connect(url) as b:
                ma = await collect(a, 150)
                mb = await collect(b, 150)
            return ma, mb
        ma, mb = run(client())
        produced = srv.produced_ids("BTCUSDT")
        stats = srv.stats
    ids_a = [t.trade_id for t in trades_of(ma, "spot")]
    ids_b = [t.trade_id for t in trades_of(mb, "spot")]
    assert np.all(np.diff(ids_a) == 1) and np.all(np.diff(ids_b) == 1)
    common = sorted(set(ids_a) & set(ids_b))
    assert len(common) > 100  # both saw the same trades, each one frame
    frames_a = dict(zip(ids_a, ma))
    assert all(frames_a[i] == dict(zip(ids_b, mb))[i] for i in common)
    assert np.all(np.diff(produced) == 1) and produced[0] == BTC_SPOT_FIRST
    assert stats.trades_produced == produced.size + srv.produced_ids("ETHUSDT").size


def test_prefilled_history_is_on_rest_and_the_stream_continues_after_it():
    t_start = int(time.time() * 1000)
    with ReplayServer(SyntheticSource(rate=200.0, prefill=2000, seed=3)) as srv:
        history = srv.produced_ids("BTCUSDT")
        rows = http_get(srv.rest_url + f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={BTC_SPOT_FIRST}&limit=1000")[2]

        async def client():
            async with ws_connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
                return await ws.recv()
        first_live = parse_message(run(client()), "spot", recv_ms=0)
    assert history.size > 800 and history[0] == BTC_SPOT_FIRST
    assert [r["id"] for r in rows] == list(range(BTC_SPOT_FIRST, BTC_SPOT_FIRST + len(rows)))
    assert all(r["time"] <= t_start + 50 for r in rows)  # history is in the past
    assert first_live.trade_id > history[-1]
    assert first_live.time_ms >= max(r["time"] for r in rows)


# =============================================================================
# REST
# =============================================================================
def test_rest_pagination_time_windows_limits_and_errors():
    src = SyntheticSource(rate=300.0, prefill=6000, seed=8)
    with ReplayServer(src) as srv:
        base = srv.rest_url + "/api/v3"
        # fromId pages of historicalTrades walk the tape without gap or overlap.
        ids: list[int] = []
        next_id = BTC_SPOT_FIRST
        for _ in range(3):
            page = http_get(f"{base}/historicalTrades?symbol=BTCUSDT&fromId={next_id}&limit=700")[2]
            assert len(page) == 700
            ids += [r["id"] for r in page]
            next_id = page[-1]["id"] + 1
        assert ids == list(range(BTC_SPOT_FIRST, BTC_SPOT_FIRST + 2100))
        assert len(http_get(f"{base}/historicalTrades?symbol=BTCUSDT")[2]) == 500     # default limit
        assert len(http_get(f"{base}/historicalTrades?symbol=BTCUSDT&limit=5000")[2]) == 1000  # max
        aggs = http_get(f"{base}/aggTrades?symbol=ETHUSDT&limit=1000")[2]
        assert len(aggs) == 1000 and [a["a"] for a in aggs] == list(range(aggs[0]["a"], aggs[0]["a"] + 1000))
        page = http_get(f"{base}/aggTrades?symbol=ETHUSDT&fromId={aggs[10]['a']}&limit=5")[2]
        assert page == aggs[10:15]
        # startTime/endTime: inclusive bounds on T, in id order, at most limit rows.
        t0, t1 = aggs[100]["T"], aggs[300]["T"]
        window = http_get(f"{base}/aggTrades?symbol=ETHUSDT&startTime={t0}&endTime={t1}&limit=1000")[2]
        assert window == [a for a in aggs if t0 <= a["T"] <= t1]
        only_end = http_get(f"{base}/aggTrades?symbol=ETHUSDT&endTime={t1}&limit=3")[2]
        assert only_end == [a for a in aggs if a["T"] <= t1][-3:]
        # Spot: no window limit since 2022-12-05 (exactly one hour is what ccxt sends).
        status, _, hour = http_get(f"{base}/aggTrades?symbol=ETHUSDT&startTime={t0}&endTime={t0 + 3_600_000}")
        assert status == 200 and hour[0] == [a for a in aggs if a["T"] >= t0][0]
        status, _, day = http_get(f"{base}/aggTrades?symbol=ETHUSDT&startTime={t0}&endTime={t0 + 86_400_000}")
        assert status == 200 and day == hour
        status, _, err = http_get(f"{base}/aggTrades?symbol=DOGEUSDT")
        assert (status, err) == (400, {"code": -1121, "msg": "Invalid symbol."})
        status, _, err = http_get(f"{base}/aggTrades")
        assert (status, err["code"]) == (400, -1102)
        status, _, err = http_get(f"{base}/historicalTrades?symbol=btcusdt")
        assert (status, err["code"]) == (400, -1100)
        status, _, err = http_get(f"{base}/historicalTrades?symbol=BTCUSDT&fromId=abc")
        assert (status, err["code"]) == (400, -1100) and "fromId" in err["msg"]
        assert http_get(f"{base}/ping")[2] == {} and abs(http_get(f"{base}/time")[2]["serverTime"] - time.time() * 1000) < 5000
        status, headers, _ = http_get(f"{base}/exchangeInfo")
        info = http_get(f"{base}/exchangeInfo?symbol=ETHUSDT")[2]
        assert int(headers["X-MBX-USED-WEIGHT-1M"]) > 0
        assert [s["symbol"] for s in info["symbols"]] == ["ETHUSDT"]
        assert {f["filterType"]: f for f in info["symbols"][0]["filters"]}["PRICE_FILTER"]["tickSize"] == "0.01000000"
        assert http_get(srv.rest_url + "/fapi/v1/aggTrades?symbol=BTCUSDT")[0] == 404


def test_rest_klines_are_built_from_the_same_trades():
    with ReplayServer(SyntheticSource(rate=400.0, prefill=8000, seed=4)) as srv:
        klines = http_get(srv.rest_url + "/api/v3/klines?symbol=BTCUSDT&interval=1s&limit=1000")[2]
        frame = srv.produced("BTCUSDT")
        status, _, err = http_get(srv.rest_url + "/api/v3/klines?symbol=BTCUSDT&interval=7m")
    assert (status, err) == (400, {"code": -1120, "msg": "Invalid interval."})
    assert len(klines) > 10 and all(len(k) == 12 and k[11] == "0" for k in klines)
    opens = [k[0] for k in klines]
    assert opens == list(range(opens[0], opens[0] + 1000 * len(opens), 1000))  # no missing second
    for k in klines[:-1]:  # the last bar may still be forming
        bar = frame[(frame.time_ms >= k[0]) & (frame.time_ms <= k[6])]
        assert k[6] == k[0] + 999 and k[8] == len(bar)
        if len(bar):
            assert float(k[1]) == bar.price.iloc[0] and float(k[4]) == bar.price.iloc[-1]
            assert float(k[2]) == bar.price.max() and float(k[3]) == bar.price.min()
            assert float(k[5]) == pytest.approx(bar.qty.sum(), abs=1e-8)
            assert float(k[7]) == pytest.approx((bar.price * bar.qty).sum(), rel=1e-12)
            assert float(k[9]) == pytest.approx(bar.qty[~bar.is_buyer_maker].sum(), abs=1e-8)
        else:
            assert k[1] == k[2] == k[3] == k[4] and k[5] == "0.00000000"


def test_usdm_rest_shapes_key_and_market_only_trades():
    src = SyntheticSource(market="usdm", rate=300.0, prefill=5000, seed=6, non_market_fraction=0.05,
                          hole_fraction=0.02)
    with ReplayServer(src) as srv:
        base = srv.rest_url + "/fapi/v1"
        status, _, err = http_get(f"{base}/historicalTrades?symbol=BTCUSDT&limit=500")
        with_key = http_get(f"{base}/historicalTrades?symbol=BTCUSDT&limit=500", {"X-MBX-APIKEY": "test"})[2]
        aggs = http_get(f"{base}/aggTrades?symbol=BTCUSDT&limit=1000")[2]
        produced = srv.produced("BTCUSDT")
        info = http_get(f"{base}/exchangeInfo")[2]
    assert (status, err) == (401, {"code": -2014, "msg": "API-key format invalid."})  # fapi wants a key
    assert len(with_key) == 500 and set(with_key[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker"}
    kinds = dict(zip(produced.trade_id, produced.trade_type))
    assert {kinds[r["id"]] for r in with_key} == {"MARKET"}  # no insurance-fund/ADL/NA rows
    assert set(produced.trade_type) == {"MARKET", "INSURANCE_FUND", "ADL", "NA"}
    ids = produced.trade_id.to_numpy()
    assert np.any(np.diff(ids) > 1)  # holes
    assert set(aggs[0]) == {"a", "p", "q", "f", "l", "T", "m"}
    market_ids = set(produced.trade_id[produced.trade_type == "MARKET"])
    assert all(set(range(a["f"], a["l"] + 1)) <= market_ids for a in aggs)
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert (btc["pricePrecision"], btc["quantityPrecision"], btc["contractType"]) == (2, 3, "PERPETUAL")


# =============================================================================
# Faults
# =============================================================================
def test_fault_drop_without_close_frame_on_every_connection():
    with ReplayServer(SyntheticSource(rate=600.0), faults=Faults(drop_after_messages=25)) as srv:
        async def one_connection():
            got = []
            async with ws_connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
                with pytest.raises(ConnectionClosedError) as info:
                    while True:
                        got.append(await ws.recv())
            return got, info.value
        first, exc1 = run(one_connection())
        second, exc2 = run(one_connection())
        assert srv.stats.dropped_by_fault == 2
    assert len(first) == 25 and len(second) == 25
    for exc in (exc1, exc2):
        assert exc.rcvd is None  # no close frame: 1006, abnormal closure
        assert "1006" in str(exc) or "no close frame" in str(exc)


def test_fault_stall_sends_nothing_for_a_while_and_trades_are_missed():
    with ReplayServer(SyntheticSource(rate=600.0), faults=Faults(stall_after_messages=10, stall_s=0.6)) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
                before = await collect(ws, 10)
                t0 = time.monotonic()
                produced = srv.stats.trades_produced
                nxt = await ws.recv()
                gap = time.monotonic() - t0
                return before, nxt, gap, srv.stats.trades_produced - produced
        before, nxt, gap, produced_meanwhile = run(client())
    ids = [t.trade_id for t in trades_of(before + [nxt], "spot")]
    assert np.all(np.diff(ids[:10]) == 1)
    assert gap >= 0.5 and produced_meanwhile > 100
    assert ids[10] - ids[9] > 50  # what was produced during the stall was never sent


def test_fault_garbage_frames():
    with ReplayServer(SyntheticSource(rate=600.0), faults=Faults(garbage_every_messages=5)) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/stream?streams=btcusdt@trade") as ws:
                return await collect(ws, 18)
        msgs = run(client())
    kinds = []
    for m in msgs:
        if isinstance(m, bytes):
            kinds.append("binary")
            continue
        parsed = parse_message(m, "spot")
        kinds.append("trade" if isinstance(parsed, Trade) else parsed.reason)
    assert kinds == ["trade"] * 5 + ["not JSON"] + ["trade"] * 5 + ["binary"] + ["trade"] * 5 + [
        "event 'quantlabUnknownEvent' is not a trade"]
    assert isinstance(parse_message(msgs[5], "spot"), NotTrade)


def test_fault_skipped_ids_are_missing_on_the_stream_but_served_by_rest():
    lo, hi = BTC_SPOT_FIRST + 400, BTC_SPOT_FIRST + 419
    faults = Faults(skip_ids=(lo, hi), skip_symbol="BTCUSDT")
    with ReplayServer(SyntheticSource(rate=800.0, seed=2), faults=faults) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
                ids = []
                while not ids or ids[-1] < hi + 30:
                    ids.append(parse_message(await ws.recv(), "spot", recv_ms=0).trade_id)
                return ids
        ids = run(client())
        rest = http_get(srv.rest_url + f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={lo}&limit=20")[2]
        produced = srv.produced_ids("BTCUSDT")
    assert ids[0] < lo, "the client connected too late to see the gap"
    assert not set(range(lo, hi + 1)) & set(ids)
    gaps = [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]
    assert gaps == [(lo - 1, hi + 1)]
    assert [r["id"] for r in rest] == list(range(lo, hi + 1))
    assert set(range(lo, hi + 1)) <= set(produced.tolist())


def test_fault_429_once_with_retry_after_then_200():
    with ReplayServer(SyntheticSource(rate=100.0, prefill=100), faults=Faults(rest_429_count=1, retry_after_s=2)) as srv:
        first = http_get(srv.rest_url + "/api/v3/aggTrades?symbol=BTCUSDT&limit=5")
        second = http_get(srv.rest_url + "/api/v3/aggTrades?symbol=BTCUSDT&limit=5")
        assert srv.stats.rest_throttled == 1
    status, headers, body = first
    assert status == 429 and headers["Retry-After"] == "2" and body["code"] == -1003
    assert second[0] == 200 and len(second[2]) == 5


def test_fault_server_shutdown_notice_then_1001():
    with ReplayServer(SyntheticSource(rate=400.0),
                      faults=Faults(shutdown_after_messages=5, shutdown_grace_s=0.2)) as srv:
        async def client():
            msgs = []
            async with ws_connect(srv.ws_url + "/stream?streams=btcusdt@trade/ethusdt@trade") as ws:
                with pytest.raises(ConnectionClosedOK) as info:
                    while True:
                        msgs.append(await ws.recv())
            return msgs, info.value
        msgs, exc = run(client())
    parsed = [parse_message(m, "spot") for m in msgs]
    assert all(isinstance(p, Trade) for p in parsed[:5])
    assert isinstance(parsed[5], ServerShutdown) and parsed[5].event_ms > 0
    assert json.loads(msgs[5])["stream"] == "!serverShutdown"
    assert exc.rcvd.code == 1001


def test_fault_connection_lifetime_closes_with_1001():
    with ReplayServer(SyntheticSource(rate=100.0), faults=Faults(lifetime_s=0.4)) as srv:
        async def client():
            t0 = time.monotonic()
            async with ws_connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
                with pytest.raises(ConnectionClosedOK) as info:
                    while True:
                        await ws.recv()
            return time.monotonic() - t0, info.value
        age, exc = run(client())
        assert srv.stats.lifetime_closes == 1
    assert exc.rcvd.code == 1001 and age >= 0.35


def test_fault_incoming_message_limit_closes_with_1008():
    with ReplayServer(SyntheticSource(rate=50.0), faults=Faults(max_incoming_per_s=2)) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/ws") as ws:
                with pytest.raises(ConnectionClosedError) as info:
                    for i in range(10):
                        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                        await ws.recv()
            return info.value
        exc = run(client())
    assert exc.rcvd.code == 1008


def test_faults_are_validated():
    with pytest.raises(ConfigError):
        Faults(drop_after_messages=0)
    with pytest.raises(ConfigError):
        Faults(skip_ids=(5, 1))
    with pytest.raises(ConfigError, match="one of"):
        Faults.from_dict({"drop_after": 3})
    f = Faults.from_strings(["skip_ids=5,9", "retry_after_s=3", "lifetime_s=0.5", "rest_429_count=2"])
    assert (f.skip_ids, f.retry_after_s, f.lifetime_s, f.rest_429_count) == ((5, 9), 3, 0.5, 2)


# =============================================================================
# Recorded data
# =============================================================================
def _capture_trade_lines(paths: list[Path]) -> list[tuple[int, str]]:
    lines = [(ns, raw) for p in paths for ns, raw in iter_capture(p) if '"e":"trade"' in raw]
    return sorted(lines, key=lambda x: x[0])


def test_real_capture_is_served_byte_for_byte(shared_data):
    cap = shared_data / "ws-capture-2024-08-08"
    paths = [cap / "spot_btcusdt_20240808.gz", cap / "spot_ethusdt_20240808.gz"]
    expected = [raw for _, raw in _capture_trade_lines(paths)][:3000]
    src = RecordedSource.from_capture(paths, speed=0)  # as fast as possible
    with ReplayServer(src) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/stream?streams=btcusdt@trade/ethusdt@trade") as ws:
                return await collect(ws, 3000)
        got = run(client())
        rest = http_get(srv.rest_url + "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=3735683259&limit=3")[2]
    assert got == expected  # Binance's exact text, in the recorded order
    for sym, first in (("BTCUSDT", 3_735_683_259), ("ETHUSDT", 1_520_538_925)):
        ids = [t.trade_id for t in trades_of(got, "spot") if t.symbol == sym]
        assert ids[0] == first and ids == list(range(first, first + len(ids)))  # contiguous (data README)
    # REST rows agree with the data.binance.vision file of the same trades (quoteQty included).
    csv = (shared_data / "trades-2024-08-08" / "BTCUSDT-trades-spot-2024-08-08T2354_2024-08-09T0005.csv")
    head = [line.split(",") for line in csv.read_text().splitlines()[:3]]
    assert [[str(r["id"]), r["price"], r["qty"], r["quoteQty"], str(r["time"])] for r in rest] == [h[:5] for h in head]


def test_real_usdm_capture_and_trade_file_agree(shared_data):
    cap = shared_data / "ws-capture-2024-08-08" / "usdm_btcusdt_20240808.gz"
    expected = [raw for _, raw in _capture_trade_lines([cap])][:400]
    csv = shared_data / "trades-2024-08-08" / "BTCUSDT-trades-um-2024-08-08T2354_2024-08-09T0000.csv"

    async def client(url):
        async with ws_connect(url) as ws:
            return await collect(ws, 400)
    with ReplayServer(RecordedSource.from_capture([cap], speed=0)) as srv:
        from_capture = run(client(srv.ws_url + "/market/stream?streams=btcusdt@trade"))
    with ReplayServer(RecordedSource.from_trade_files([csv], speed=0)) as srv:
        from_file = run(client(srv.ws_url + "/market/stream?streams=btcusdt@trade"))
    assert from_capture == expected
    cap_data = [json.loads(m)["data"] for m in from_capture]
    file_data = [json.loads(m)["data"] for m in from_file]
    # Same trades, same spelling ("61800.30", "0.006"); the archive has no E, so E = T there.
    keys = ("s", "t", "p", "q", "T", "X", "m")
    assert [[d[k] for k in keys] for d in file_data] == [[d[k] for k in keys] for d in cap_data]


def test_paced_capture_follows_recorded_time(shared_data):
    cap = shared_data / "ws-capture-2024-08-08" / "spot_btcusdt_20240808.gz"
    lines = _capture_trade_lines([cap])
    ns_of = {json.loads(raw)["data"]["t"]: ns for ns, raw in lines}
    prefill = 200
    # A speed at which the 80 trades after the prefill take about 0.5 s of wall time.
    speed = (lines[prefill + 80][0] - lines[prefill][0]) / 0.5e9
    with ReplayServer(RecordedSource.from_capture([cap], speed=speed, prefill=prefill)) as srv:
        async def client():
            seen = []
            async with ws_connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
                for _ in range(60):
                    seen.append((json.loads(await ws.recv())["t"], time.monotonic()))
            return seen
        seen = run(client())
        assert srv.produced_ids("BTCUSDT")[0] == 3_735_683_259  # the prefilled history
    (id0, w0), (id1, w1) = seen[0], seen[-1]
    recorded_s = (ns_of[id1] - ns_of[id0]) / 1e9 / speed
    assert recorded_s > 0.15
    assert w1 - w0 == pytest.approx(recorded_s, abs=0.1 + 0.3 * recorded_s)  # paced by recorded time


# =============================================================================
# Server life cycle and CLI
# =============================================================================
def test_as_fast_as_possible_applies_back_pressure_without_loss():
    with ReplayServer(SyntheticSource(rate=0)) as srv:
        async def client():
            async with ws_connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
                t0 = time.monotonic()
                msgs = await collect(ws, 20_000)
                return msgs, time.monotonic() - t0
        msgs, elapsed = run(client())
    ids = [json.loads(m)["t"] for m in msgs]
    assert ids == list(range(ids[0], ids[0] + 20_000))
    assert 20_000 / elapsed > 2_000  # floor for a loaded machine; a quiet one does > 50k/s


def test_preencoded_recording_sends_the_same_bytes_and_still_skips():
    def source(preencode: bool) -> RecordedSource:
        return RecordedSource.from_synthetic(4000, seed=1, start_ms=1_723_161_600_000, speed=0, preencode=preencode)

    async def client(srv):
        async with ws_connect(srv.ws_url + "/stream?streams=btcusdt@trade/ethusdt@trade") as ws:
            return await collect(ws, 1500)
    with ReplayServer(source(False)) as srv:
        lazy = run(client(srv))
    first = next(t.trade_id for t in trades_of(lazy, "spot") if t.symbol == "BTCUSDT")
    with ReplayServer(source(True)) as srv:
        eager = run(client(srv))
    skip = (BTC_SPOT_FIRST + 10, BTC_SPOT_FIRST + 19)
    with ReplayServer(source(True), faults=Faults(skip_ids=skip)) as srv:
        skipped = run(client(srv))
    assert eager == lazy and first == BTC_SPOT_FIRST
    btc_ids = [t.trade_id for t in trades_of(skipped, "spot") if t.symbol == "BTCUSDT"]
    assert not set(range(skip[0], skip[1] + 1)) & set(btc_ids) and skip[0] - 1 in btc_ids
    eth_skipped = [m for m in skipped if '"s":"ETHUSDT"' in m]
    eth_lazy = [m for m in lazy if '"s":"ETHUSDT"' in m]
    n = min(len(eth_skipped), len(eth_lazy))
    assert n > 500 and eth_skipped[:n] == eth_lazy[:n]  # other symbols untouched


def test_stop_closes_clients_with_1001():
    srv = ReplayServer(SyntheticSource(rate=100.0)).start()

    async def client():
        async with ws_connect(srv.ws_url + "/ws/btcusdt@trade") as ws:
            await ws.recv()
            await asyncio.to_thread(srv.stop)
            with pytest.raises(ConnectionClosedOK) as info:
                while True:
                    await ws.recv()
            return info.value
    exc = run(client())
    assert exc.rcvd.code == 1001
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def test_unknown_websocket_path_is_404():
    with ReplayServer(SyntheticSource(rate=10.0)) as srv:
        from websockets.exceptions import InvalidStatus

        async def client():
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(srv.ws_url + "/nowhere"):
                    pass
            return info.value.response.status_code
        assert run(client()) == 404


def test_run_cli_prints_the_urls_first_and_exits_0_on_sigterm():
    args = ("argparse.Namespace(synthetic=True, capture=None, trades=None, symbols=None, market='spot', "
            "rate=100.0, speed=1.0, seed=0, host='127.0.0.1', port=0)")
    code = f"import argparse, sys; from quantlab.replay import run_cli; sys.exit(run_cli({args}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        urls = json.loads(proc.stdout.readline())
        assert set(urls) == {"ws", "rest"} and urls["ws"].startswith("ws://127.0.0.1:")
        assert http_get(urls["rest"] + "/api/v3/ping")[2] == {}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
