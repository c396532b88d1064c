"""quantlab.binance: endpoints and parsing, on frames built in Binance's exact
shape and on the real captures in ../shared/data when present."""
from __future__ import annotations

import gzip
import itertools
import json

import pytest

from quantlab import binance as bn
from quantlab.errors import ConfigError, NotATrade

SPOT_TRADE = {"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259,
              "p": "61837.63000000", "q": "0.02000000", "T": 1723161255342, "m": True, "M": True}
SPOT_AGG = {"e": "aggTrade", "E": 1723161255343, "s": "ETHUSDT", "a": 99, "p": "2650.10000000",
            "q": "1.50000000", "f": 1000, "l": 1002, "T": 1723161255340, "m": False, "M": True}
UM_TRADE = {"e": "trade", "E": 1723161255400, "T": 1723161255399, "s": "BTCUSDT", "t": 5000,
            "p": "63943.90", "q": "0.003", "X": "MARKET", "m": True}
UM_AGG = {"e": "aggTrade", "E": 1723161255400, "s": "BTCUSDT", "a": 77, "p": "63943.90",
          "q": "0.010", "f": 4990, "l": 5000, "T": 1723161255399, "m": False}


def test_default_endpoints_are_binance():
    spot = bn.Endpoints.for_market("spot", "trade")
    assert spot.stream_url(["BTCUSDT", "ETHUSDT"]) == \
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
    assert spot.rest_url("aggTrades", symbol="BTCUSDT", fromId=5, limit=1000) == \
        "https://api.binance.com/api/v3/aggTrades?symbol=BTCUSDT&fromId=5&limit=1000"
    data = bn.Endpoints.for_market("spot", "aggTrade", data_host=True)
    assert data.stream_url(["btcusdt"]).startswith("wss://data-stream.binance.vision/stream?")
    assert data.rest_base == "https://data-api.binance.vision"
    um = bn.Endpoints.for_market("usdm", "aggTrade")
    assert um.stream_url(["BTCUSDT"]) == "wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade"
    assert um.rest_url("aggTrades", symbol="BTCUSDT") == \
        "https://fapi.binance.com/fapi/v1/aggTrades?symbol=BTCUSDT"


def test_usdm_trade_route_is_a_setting_and_never_empty():
    assert bn.Endpoints.for_market("usdm", "trade").route == "/market"
    assert bn.Endpoints.for_market("usdm", "trade", usdm_trade_route="/public").stream_url(["X1"]) == \
        "wss://fstream.binance.com/public/stream?streams=x1@trade"
    with pytest.raises(ConfigError, match="usdm_trade_route"):
        bn.Endpoints.for_market("usdm", "trade", usdm_trade_route="")


def test_every_base_can_be_overridden():
    e = bn.Endpoints.for_market("usdm", "trade", ws_base="ws://127.0.0.1:5555/",
                                rest_base="http://127.0.0.1:5555")
    assert e.stream_url(["BTCUSDT"]) == "ws://127.0.0.1:5555/market/stream?streams=btcusdt@trade"
    assert e.rest_url("klines", symbol="BTCUSDT", interval="1m") == \
        "http://127.0.0.1:5555/fapi/v1/klines?symbol=BTCUSDT&interval=1m"
    assert bn.single_stream_url("ws://h:1", "btcusdt@trade") == "ws://h:1/ws/btcusdt@trade"


@pytest.mark.parametrize("bad", [("market", lambda: bn.Endpoints.for_market("coinm")),
                                 ("stream", lambda: bn.stream_name("BTCUSDT", "depth")),
                                 ("symbol", lambda: bn.stream_name("BTC/USDT")),
                                 ("streams", lambda: bn.combined_stream_url("ws://h", []))])
def test_bad_settings_name_the_field(bad):
    field, call = bad
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.field == field


def test_spot_trade_wrapped_and_raw():
    wrapped = json.dumps({"stream": "btcusdt@trade", "data": SPOT_TRADE})
    for raw in (wrapped, json.dumps(SPOT_TRADE), wrapped.encode()):
        t = bn.parse_message(raw, "spot", recv_ms=1723161254087)
        assert isinstance(t, bn.Trade)
        assert (t.market, t.symbol, t.kind, t.trade_id) == ("spot", "BTCUSDT", "trade", 3735683259)
        assert (t.price, t.qty, t.time_ms, t.event_ms, t.recv_ms) == \
            (61837.63, 0.02, 1723161255342, 1723161255343, 1723161254087)
        assert t.is_buyer_maker and t.taker_side == "sell" and t.trade_type is None
        assert t.is_market_print


def test_agg_trades_and_futures_fields():
    a = bn.parse_message(json.dumps({"stream": "ethusdt@aggTrade", "data": SPOT_AGG}), "spot", 1)
    assert (a.kind, a.trade_id, a.first_trade_id, a.last_trade_id, a.taker_side) == \
        ("aggTrade", 99, 1000, 1002, "buy")
    f = bn.parse_message(json.dumps(UM_TRADE), "usdm", 1)
    assert (f.market, f.trade_type, f.price, f.qty) == ("usdm", "MARKET", 63943.9, 0.003)
    fa = bn.parse_message(json.dumps(UM_AGG), "usdm", 1)
    assert (fa.kind, fa.trade_type, fa.first_trade_id) == ("aggTrade", None, 4990)


@pytest.mark.parametrize("x,price,qty", [("NA", "0", "0"), ("ADL", "70000.0", "0.5"),
                                         ("INSURANCE_FUND", "50000.0", "0.1")])
def test_non_market_futures_prints_parse_but_are_not_market(x, price, qty):
    t = bn.parse_message(json.dumps(dict(UM_TRADE, X=x, p=price, q=qty)), "usdm", 1)
    assert isinstance(t, bn.Trade) and t.trade_type == x
    assert not t.is_market_print


def test_control_error_and_shutdown_messages():
    assert bn.parse_message('{"result":null,"id":1}', "spot") == bn.ControlReply(id=1, result=None)
    assert bn.parse_message('{"result":["btcusdt@trade"],"id":3}', "spot").result == ["btcusdt@trade"]
    err = bn.parse_message('{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}', "spot")
    assert err == bn.ErrorReply(id=1, code=2, msg="Invalid request: invalid stream")
    sd = bn.parse_message('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1700000000000}}',
                          "spot")
    assert sd == bn.ServerShutdown(event_ms=1700000000000)


@pytest.mark.parametrize("raw,reason", [
    ("not json at all", "not JSON"),
    (b"\x00\xff\x10binary", "not JSON"),
    ("[1,2,3]", "not an object"),
    ('{"e":"bookTicker","u":1}', "not a trade"),
    ('{"stream":"btcusdt@depth","data":{"e":"depthUpdate"}}', "not a trade"),
    ('{"lastUpdateId":123,"bids":[],"asks":[]}', "depth snapshot"),
    ('{"e":"trade","s":"BTCUSDT"}', "missing"),
    ('{"e":"trade","E":1,"s":"BTCUSDT","t":"x","p":"1","q":"1","T":1,"m":true}', "invalid"),
    ('{"hello":"world"}', "unknown"),
    ("", "not JSON"),
])
def test_garbage_never_raises(raw, reason):
    msg = bn.parse_message(raw, "spot")
    assert isinstance(msg, bn.NotTrade)
    assert reason in msg.reason


def test_parse_trade_raises_quantlab_error():
    with pytest.raises(NotATrade, match="'p' missing"):
        bn.parse_trade({"e": "trade", "E": 1, "s": "X", "t": 1, "q": "1", "T": 1, "m": True}, "spot")


def test_rest_rows():
    agg = bn.parse_rest_agg_trade({"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781,
                                   "l": 27781, "T": 1498793709153, "m": True, "M": True},
                                  "spot", "bnbbtc", 5)
    assert (agg.symbol, agg.kind, agg.trade_id, agg.first_trade_id, agg.time_ms) == \
        ("BNBBTC", "aggTrade", 26129, 27781, 1498793709153)
    tr = bn.parse_rest_trade({"id": 28457, "price": "4.00000100", "qty": "12.00000000",
                              "quoteQty": "48.000012", "time": 1499865549590, "isBuyerMaker": True,
                              "isBestMatch": True}, "spot", "BNBBTC", 5)
    assert (tr.kind, tr.trade_id, tr.price, tr.is_buyer_maker) == ("trade", 28457, 4.000001, True)
    with pytest.raises(NotATrade):
        bn.parse_rest_trade({"id": 1}, "spot", "BNBBTC", 5)


def test_subscribe_requests():
    assert bn.subscribe_request(["btcusdt@trade"], 1) == \
        {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}
    assert bn.subscribe_request([], 4, "LIST_SUBSCRIPTIONS") == {"method": "LIST_SUBSCRIPTIONS", "id": 4}


@pytest.mark.parametrize("name,market", [("spot_btcusdt_20240808.gz", "spot"),
                                         ("usdm_ethusdt_20240808.gz", "usdm")])
def test_real_capture_parses(shared_data, name, market):
    """Every @trade line of a real capture parses into a Trade; price strings
    round-trip exactly through float (stored as REAL without loss)."""
    path = shared_data / "ws-capture-2024-08-08" / name
    trades = []
    with gzip.open(path, "rt") as fh:
        for line in itertools.islice(fh, 200_000):
            ns, raw = line.split(" ", 1)
            msg = bn.parse_message(raw, market, recv_ms=int(ns) // 1_000_000)
            if "@trade" in raw[:40]:
                assert isinstance(msg, bn.Trade), msg
                payload = json.loads(raw)["data"]
                assert float(payload["p"]) == msg.price
                assert repr(msg.price) == repr(float(payload["p"]))
                assert float(repr(msg.price)) == float(payload["p"].rstrip("0").rstrip("."))
                trades.append(msg)
            else:
                assert isinstance(msg, bn.NotTrade)
    assert len(trades) > 1000
    ids = [t.trade_id for t in trades]
    assert ids == sorted(ids) and ids[-1] - ids[0] + 1 == len(set(ids))  # contiguous (data README)
    if market == "usdm":
        assert {t.trade_type for t in trades} == {"MARKET"}
