"""Real Binance clients against ``quantlab replay`` (issue 13, part 1), and the stream
features they need, over real loopback sockets.

ccxt (sync REST and ccxt.pro WebSockets, installed from PyPI with the ``test`` extra) is
pointed at servers on 127.0.0.1 port 0: nothing leaves the machine. The plain
``websockets`` tests pin the payloads and the limits byte by byte.

ccxt tells a spot connection from a futures one by ``/stream`` in the URL (it is in
Binance's host name, ``stream.binance.com``), so the spot WebSocket base given to ccxt
carries it in a query the server ignores: ``ws://127.0.0.1:P/ws?ccxt=/stream``.
"""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from quantlab.cli import build_parser, main
from quantlab.files import iter_capture
from tests.conftest import ROOT
from quantlab.replay import RecordedSource, ReplayServer, SyntheticSource, make_sources, warn_if_exposed

ccxt = pytest.importorskip("ccxt", reason="ccxt is in the test extra: pip install -e '.[test]'")
import ccxt.pro  # noqa: E402  (after the skip)

KLINE_KEYS = ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]


def run(coro, timeout: float = 30.0):
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


def http_get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def reply_to(ws, request: dict) -> dict:
    await ws.send(json.dumps(request))
    while True:
        msg = json.loads(await ws.recv())
        if "id" in msg and ("result" in msg or "error" in msg):
            return msg


def local(exchange, srv: ReplayServer):
    """Point a ccxt binance client at ``srv`` (spot and USD-M REST and WebSockets)."""
    api = exchange.urls["api"]
    for key in ("public", "private", "v1"):
        api[key] = srv.rest_url + "/api/v3"
    for key in ("fapiPublic", "fapiPrivate", "fapiPublicV2", "fapiPublicV3", "fapiData"):
        api[key] = srv.rest_url + "/fapi/v1"
    if "ws" in api:
        api["ws"]["spot"] = srv.ws_url + "/ws?ccxt=/stream"
        api["ws"]["linear"] = srv.ws_url + "/ws"  # ccxt routes it to /market/ws or /public/ws
    exchange.options["fetchMarkets"] = {"types": ["spot", "linear"]}  # no inverse/option server here
    exchange.options["fetchCurrencies"] = False  # /sapi needs keys
    return exchange


def tape_aggs(srv: ReplayServer, market: str) -> dict[int, tuple]:
    frame = srv.produced("BTCUSDT", "aggTrade", market=market)
    return {int(r.trade_id): (int(r.time_ms), float(r.price), float(r.qty))
            for r in frame.itertuples()}


# =============================================================================
# ccxt
# =============================================================================
@pytest.mark.clients
def test_ccxt_rest_and_pro_against_market_both():
    with ReplayServer(make_sources("synthetic", market="both", rate=300.0, prefill=4000, seed=3)) as srv:
        ex = local(ccxt.binance({"enableRateLimit": False}), srv)
        markets = ex.load_markets()
        assert {"BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(markets)
        assert markets["BTC/USDT:USDT"]["linear"] and markets["BTC/USDT"]["spot"]
        # fetch_trades(since=...) asks aggTrades for exactly one hour: served on both markets.
        since = ex.milliseconds() - 8_000
        for symbol, market in (("BTC/USDT", "spot"), ("BTC/USDT:USDT", "usdm")):
            trades = ex.fetch_trades(symbol, since=since)
            tape = tape_aggs(srv, market)
            assert trades and all(t["timestamp"] >= since and t["symbol"] == symbol for t in trades)
            assert all(tape[int(t["id"])] == (t["timestamp"], t["price"], t["amount"]) for t in trades)
        # fetch_ohlcv: closed 1 s bars equal the tape's trades of that second.
        bars = ex.fetch_ohlcv("BTC/USDT", "1s", since=since)
        frame = srv.produced("BTCUSDT", market="spot")
        t0, o, h, lo, c, v = bars[1]
        sec = frame[(frame.time_ms >= t0) & (frame.time_ms < t0 + 1000)]
        assert (o, h, lo, c) == (sec.price.iloc[0], sec.price.max(), sec.price.min(), sec.price.iloc[-1])
        assert v == pytest.approx(sec.qty.sum(), rel=1e-12)
        assert ex.fetch_ohlcv("ETH/USDT:USDT", "1m")[-1][0] % 60_000 == 0

        async def pro():
            wx = local(ccxt.pro.binance({"enableRateLimit": False}), srv)
            try:
                await wx.load_markets()
                spot = await wx.watch_trades("BTC/USDT")
                fut = await wx.watch_trades("BTC/USDT:USDT")
                k_spot = await wx.watch_ohlcv("BTC/USDT", "1m")
                k_fut = await wx.watch_ohlcv("ETH/USDT:USDT", "1m")
                return spot, fut, k_spot, k_fut
            finally:
                await wx.close()
        spot, fut, k_spot, k_fut = run(pro())
        spot_ids = set(srv.produced_ids("BTCUSDT", market="spot").tolist())
        fut_ids = set(srv.produced_ids("BTCUSDT", market="usdm").tolist())
    assert spot[-1]["symbol"] == "BTC/USDT" and int(spot[-1]["id"]) in spot_ids
    assert fut[-1]["symbol"] == "BTC/USDT:USDT" and int(fut[-1]["id"]) in fut_ids
    for candles in (k_spot, k_fut):
        t, o, h, lo, c, v = candles[-1]
        assert t % 60_000 == 0 and lo <= min(o, c) <= max(o, c) <= h and v > 0


@pytest.mark.clients
def test_ccxt_against_a_rebased_real_capture(shared_data):
    cap = shared_data / "ws-capture-2024-08-08"
    prefill = 3000
    srcs = make_sources("capture", [cap / "spot_btcusdt_20240808.gz", cap / "usdm_btcusdt_20240808.gz"],
                        market="both", rebase_time=True, prefill=prefill, speed=1.0)
    first_streamed = 3_735_683_259 + prefill  # spot BTCUSDT (data README)
    with ReplayServer(srcs) as srv:
        ex = local(ccxt.binance({"enableRateLimit": False}), srv)
        ex.load_markets()
        now = ex.milliseconds()
        since = now - 10 * 60_000  # "the last ten minutes": a 2024 recording, played as if now
        spot = ex.fetch_trades("BTC/USDT", since=since)
        fut = ex.fetch_trades("BTC/USDT:USDT", since=since)
        bars = ex.fetch_ohlcv("BTC/USDT:USDT", "1m", since=since)

        async def pro():
            wx = local(ccxt.pro.binance({"enableRateLimit": False}), srv)
            try:
                await wx.load_markets()
                trades = await wx.watch_trades("BTC/USDT")
                received = wx.milliseconds()
                fut_trades = await wx.watch_trades("BTC/USDT:USDT")
                candles = await wx.watch_ohlcv("BTC/USDT:USDT", "1m")
                quotes = await wx.watch_bids_asks(["BTC/USDT"])  # the capture's bookTicker
                return trades, received, fut_trades, candles, quotes
            finally:
                await wx.close()
        trades, received, fut_trades, candles, quotes = run(pro())
    assert len(spot) == len(fut) == 500 and all(since <= t["timestamp"] <= now + 1000 for t in spot + fut)
    assert spot[0]["price"] > 50_000 and bars and all(since - 60_000 <= b[0] <= now for b in bars)
    # The clock started at the first subscription: the first client gets the first streamed trade.
    assert int(trades[0]["id"]) == first_streamed
    assert abs(trades[0]["timestamp"] - received) < 2000  # stamped about when it is sent
    assert fut_trades[0]["symbol"] == "BTC/USDT:USDT" and candles[-1][5] > 0
    assert quotes["BTC/USDT"]["bid"] < quotes["BTC/USDT"]["ask"]


# =============================================================================
# Kline streams
# =============================================================================
def test_kline_stream_payload_updates_and_close_match_rest():
    with ReplayServer(SyntheticSource(rate=400.0, seed=7)) as srv:
        async def client():
            async with connect(srv.ws_url + "/stream?streams=btcusdt@kline_1s", max_queue=None) as ws:
                msgs = []
                while sum(1 for m in msgs if m["data"]["k"]["x"]) < 2:
                    msgs.append(json.loads(await ws.recv()))
                return msgs
        msgs = run(client())
        closed = [m["data"] for m in msgs if m["data"]["k"]["x"]][-1]
        k = closed["k"]
        rest = http_get(srv.rest_url + f"/api/v3/klines?symbol=BTCUSDT&interval=1s&startTime={k['t']}&limit=1")[1][0]
        frame = srv.produced("BTCUSDT")
    assert {m["stream"] for m in msgs} == {"btcusdt@kline_1s"}
    for m in msgs:
        assert list(m["data"]) == ["e", "E", "s", "k"] and list(m["data"]["k"]) == KLINE_KEYS
        assert m["data"]["e"] == "kline" and m["data"]["k"]["i"] == "1s" and m["data"]["k"]["B"] == "0"
    # The closing message carries the kline's final values: the same strings as REST klines.
    assert [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"]] == rest[:11]
    ids = frame.trade_id[(frame.time_ms >= k["t"]) & (frame.time_ms <= k["T"])]
    assert (k["f"], k["L"], k["T"] - k["t"]) == (ids.min(), ids.max(), 999)
    # Open-bar updates of the same kline came before, with "x": false and growing counts.
    before = [m["data"]["k"] for m in msgs if m["data"]["k"]["t"] == k["t"] and not m["data"]["k"]["x"]]
    assert before and all(b["n"] <= k["n"] for b in before)
    assert closed["E"] >= k["T"]  # sent once the next kline's first trade shows this one is complete


def test_usdm_kline_routes_and_no_1s():
    src = SyntheticSource(market="usdm", rate=400.0, seed=2)
    with ReplayServer(src) as srv:
        async def client():
            async with connect(srv.ws_url + "/market/ws", max_queue=None) as ws:
                ack = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 1})
                first = json.loads(await ws.recv())
                no_1s = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@kline_1s"], "id": 2})
            return ack, first, no_1s
        ack, first, no_1s = run(client())
    assert ack == {"result": None, "id": 1}
    assert first["e"] == "kline" and first["s"] == "ETHUSDT" and list(first["k"]) == KLINE_KEYS
    assert first["k"]["x"] is False and first["k"]["T"] - first["k"]["t"] == 59_999
    assert no_1s["error"]["code"] == 2 and "1s" in no_1s["error"]["msg"]


# =============================================================================
# Other streams: recorded ones served, the rest refused
# =============================================================================
def test_unservable_streams_get_an_error_never_a_silent_ack():
    with ReplayServer(SyntheticSource(rate=100.0)) as srv:
        async def client():
            async with connect(srv.ws_url + "/ws", max_queue=None) as ws:
                ticker = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@ticker"],
                                             "id": 1})
                book = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 2})
                listed = await reply_to(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
            with pytest.raises(InvalidStatus) as info:
                async with connect(srv.ws_url + "/ws/btcusdt@miniTicker"):
                    pass
            return ticker, book, listed, info.value.response
        ticker, book, listed, refused = run(client())
    assert ticker["id"] == 1 and ticker["error"]["code"] == 2 and "btcusdt@ticker" in ticker["error"]["msg"]
    assert book["error"]["code"] == 2 and "captures that hold them" in book["error"]["msg"]
    assert listed == {"result": [], "id": 3}  # a refused SUBSCRIBE subscribes nothing
    assert refused.status_code == 400 and b"miniTicker" in refused.body


def test_recorded_book_ticker_and_depth_are_served_byte_for_byte(shared_data):
    path = shared_data / "ws-capture-2024-08-08" / "spot_btcusdt_20240808.gz"
    recorded: dict[str, list[str]] = {"btcusdt@bookTicker": [], "btcusdt@depth@100ms": []}
    for _, raw in iter_capture(path):
        for name, out in recorded.items():
            if raw.startswith(f'{{"stream":"{name}"') and len(out) < 200:
                out.append(raw)
    with ReplayServer(RecordedSource.from_capture([path], speed=0)) as srv:
        async def client():
            url = srv.ws_url + "/stream?streams=btcusdt@bookTicker/btcusdt@depth@100ms"
            async with connect(url, max_queue=None) as ws:
                got: dict[str, list[str]] = {name: [] for name in recorded}
                while min(map(len, got.values())) < 200:
                    msg = await ws.recv()
                    got[json.loads(msg)["stream"]].append(msg)
                nope = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 1})
                return got, nope
        got, nope = run(client())
    for name in recorded:
        assert got[name][:200] == recorded[name]  # Binance's exact text, in the recorded order
    assert nope["error"]["code"] == 2 and "btcusdt@depth@100ms" in nope["error"]["msg"]  # says what is held


# =============================================================================
# Clock, rebasing, REST windows
# =============================================================================
def test_recording_clock_starts_at_the_first_subscription_and_rebases_to_now(shared_data):
    path = shared_data / "ws-capture-2024-08-08" / "spot_btcusdt_20240808.gz"

    def source():
        return RecordedSource.from_capture([path], speed=20.0, prefill=100, rebase_time=True)
    with ReplayServer(source()) as waiting, ReplayServer(source(), live_clock=True) as live:
        started_ms = time.time() * 1000
        deadline = time.monotonic() + 10
        while live.stats.trades_produced < 100 + 200 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition with a deadline
        assert live.stats.trades_produced >= 300
        assert waiting.stats.trades_produced == 100  # only the prefilled history: no clock yet
        history = waiting.produced("BTCUSDT")

        async def first_trade(srv):
            async with connect(srv.ws_url + "/ws/btcusdt@trade", max_queue=None) as ws:
                msg = json.loads(await ws.recv())
                return msg, time.time() * 1000
        (first, received), (late, _) = run(first_trade(waiting)), run(first_trade(live))
    assert first["t"] == 3_735_683_259 + 100  # the whole tape after the history
    assert late["t"] > first["t"] + 100  # live-like: a late client misses trades
    # Rebased: the history ends by the start, the stream is stamped about when it is sent.
    assert history.time_ms.max() <= started_ms + 50 and history.time_ms.min() > started_ms - 3_600_000
    assert abs(first["T"] - received) < 1000


def test_aggtrades_windows_spot_unlimited_usdm_at_most_one_hour():
    spot = SyntheticSource(rate=300.0, prefill=3000, seed=1)
    usdm = SyntheticSource(market="usdm", rate=300.0, prefill=3000, seed=2)
    with ReplayServer([spot, usdm]) as srv:
        t0 = int(srv.produced("BTCUSDT", "aggTrade", market="usdm").time_ms.iloc[0])
        fapi = srv.rest_url + f"/fapi/v1/aggTrades?symbol=BTCUSDT&startTime={t0}"
        hour, longer = http_get(fapi + f"&endTime={t0 + 3_600_000}"), http_get(fapi + f"&endTime={t0 + 3_600_001}")
        day = http_get(srv.rest_url + f"/api/v3/aggTrades?symbol=BTCUSDT&startTime={t0}&endTime={t0 + 86_400_000}")
        nowhere = http_get(srv.rest_url + "/dapi/v1/ping")
    assert hour[0] == 200 and hour[1][0]["T"] >= t0 and "M" not in hour[1][0]
    assert longer == (400, {"code": -1127, "msg": "More than 1 hours between startTime and endTime."})
    assert day[0] == 200 and day[1][0]["M"] is True  # spot rows, from the spot tape
    assert nowhere[0] == 404 and "/fapi/v1" in nowhere[1]["msg"]


# =============================================================================
# Hardening
# =============================================================================
def test_subscribe_1024_streams_is_fast_and_the_caps_hold():
    with ReplayServer(SyntheticSource(rate=50.0)) as srv:
        names = [f"s{i}usdt@trade" for i in range(1024)]

        async def client():
            async with connect(srv.ws_url + "/ws", max_queue=None, max_size=None) as ws:
                t0 = time.monotonic()
                ack = await reply_to(ws, {"method": "SUBSCRIBE", "params": names, "id": 1})
                took = time.monotonic() - t0
                listed = await reply_to(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
                over = await reply_to(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 3})
            async with connect(srv.ws_url + "/ws", max_queue=None, max_size=None) as ws:
                huge = [f"x{i}usdt@aggTrade" for i in range(30_000)]  # a ~0.6 MB frame
                t0 = time.monotonic()
                refused = await reply_to(ws, {"method": "SUBSCRIBE", "params": huge, "id": 4})
                huge_took = time.monotonic() - t0
            return ack, took, listed, over, refused, huge_took
        ack, took, listed, over, refused, huge_took = run(client())
    assert ack == {"result": None, "id": 1} and listed["result"] == names
    assert took < 0.5 and huge_took < 0.5  # linear work; was quadratic (3.8 s for 0.6 MB)
    msg = "Invalid request: too many streams (a connection listens to at most 1024)"
    assert over == {"error": {"code": 2, "msg": msg}, "id": 3} and refused["error"]["msg"] == msg


def test_more_than_five_requests_a_second_close_with_1008():
    with ReplayServer(SyntheticSource(rate=50.0)) as srv:
        async def client():
            replies = []
            async with connect(srv.ws_url + "/ws", max_queue=None) as ws:
                for i in range(6):
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                with pytest.raises(ConnectionClosedError) as info:
                    while True:
                        replies.append(json.loads(await ws.recv()))
            return replies, info.value
        replies, exc = run(client())
    assert [r["id"] for r in replies] == [0, 1, 2, 3, 4]  # Binance spot: 5 messages per second
    assert exc.rcvd.code == 1008 and exc.rcvd.reason == "Too many requests"


def test_non_loopback_host_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="quantlab.replay"):
        warn_if_exposed("0.0.0.0")
        exposed = [r.getMessage() for r in caplog.records]
        caplog.clear()
        with ReplayServer(SyntheticSource(rate=10.0), host="127.0.0.2"):  # loopback: quiet
            pass
        quiet = [r.getMessage() for r in caplog.records if "reachable" in r.getMessage()]
    assert len(exposed) == 1 and "0.0.0.0" in exposed[0] and "reachable from other machines" in exposed[0]
    assert quiet == []


def test_cli_flags_for_both_markets_rebase_and_clock():
    args = build_parser().parse_args(["replay", "--market", "both", "--capture", "a.gz", "--rebase-time",
                                      "--live-clock", "--prefill", "10"])
    assert (args.market, args.rebase_time, args.live_clock, args.prefill, args.capture) == (
        "both", True, True, 10, ["a.gz"])
    defaults = build_parser().parse_args(["replay"])
    assert (defaults.market, defaults.rebase_time, defaults.live_clock) == ("spot", False, False)


def test_cli_market_both_serves_both_rest_apis_on_one_port():
    proc = subprocess.Popen([sys.executable, "-m", "quantlab", "replay", "--market", "both", "--rate", "100",
                             "--prefill", "200"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = json.loads(proc.stdout.readline())
        spot = http_get(urls["rest"] + "/api/v3/historicalTrades?symbol=BTCUSDT&limit=5")
        usdm = http_get(urls["rest"] + "/fapi/v1/trades?symbol=BTCUSDT&limit=5")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert spot[0] == usdm[0] == 200 and len(spot[1]) == len(usdm[1]) == 5
    assert "isBestMatch" in spot[1][0] and "isBestMatch" not in usdm[1][0]  # two markets, two tapes


def test_cli_market_both_needs_data_of_both_markets(shared_data, capsys):
    cap = shared_data / "ws-capture-2024-08-08" / "spot_btcusdt_20240808.gz"
    assert main(["replay", "--market", "both", "--capture", str(cap)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no USD-M trades" in err[0] and "--market spot" in err[0]
