"""quantlab.synthetic: seeded cointegrated trades and their exact Binance wire text."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pandas as pd
import pytest

from quantlab.binance import Trade, parse_message
from quantlab.errors import ConfigError
from quantlab.schema import TICK_COLUMNS
from quantlab.synthetic import (
    ADL, INSURANCE_FUND, MARKET, NA, SymbolSpec, SyntheticMarket, TradeBatch, aggregate_trades,
    concat_trade_batches, default_spec, encode_agg_trades, encode_trades, format_decimal,
)

# Raw key sets of BINANCE.md "Messages".
SPOT_TRADE_KEYS = {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
USDM_TRADE_KEYS = {"e", "E", "T", "s", "t", "p", "q", "X", "m"}
SPOT_AGG_KEYS = {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"}
USDM_AGG_KEYS = SPOT_AGG_KEYS - {"M"}
COLUMNS = ("sym", "trade_id", "price", "qty", "time_ms", "event_ms", "is_buyer_maker", "trade_type")


def test_same_seed_same_trades_however_the_batches_are_cut():
    a = SyntheticMarket(seed=3).generate(5000)
    b = SyntheticMarket(seed=3).generate(5000)
    for col in COLUMNS:
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col), err_msg=col)
    other = SyntheticMarket(seed=4).generate(5000)
    assert not np.array_equal(a.price[:200], other.price[:200])
    # Cutting the same stream into smaller batches changes nothing but the cuts.
    m = SyntheticMarket(seed=3)
    pieces = concat_trade_batches([m.generate(700) for _ in range(8)])
    n = min(len(a), len(pieces))
    assert n >= 5000
    for col in COLUMNS:
        np.testing.assert_array_equal(getattr(a, col)[:n], getattr(pieces, col)[:n], err_msg=col)


def test_spot_ids_contiguous_prices_on_tick_quantities_on_step_and_rate():
    m = SyntheticMarket(("BTCUSDT", "ETHUSDT", "SOLUSDT"), seed=1, rate=100.0)
    b = m.generate(30_000)
    prices = b.price_float()
    for i, spec in enumerate(m.specs):
        rows = b.sym == i
        ids = b.trade_id[rows]
        assert ids[0] == spec.first_trade_id
        assert np.all(np.diff(ids) == 1), spec.symbol
        assert np.all(b.price[rows] % spec.tick_units == 0)
        assert np.all(b.qty[rows] % spec.step_units == 0) and np.all(b.qty[rows] > 0)
        assert 0.8 * spec.price < np.median(prices[rows]) < 1.25 * spec.price, spec.symbol
    assert default_spec("BTCUSDT").price == 60000.0 and default_spec("ETHUSDT").price == 3000.0
    assert np.all(np.diff(b.time_ms) >= 0)
    np.testing.assert_array_equal(b.event_ms, b.time_ms)
    span_s = (b.time_ms[-1] - b.time_ms[0]) / 1000
    assert span_s == pytest.approx(len(b) / 100.0, rel=0.05)  # Poisson arrivals at `rate`
    assert 0.45 < b.is_buyer_maker.mean() < 0.55
    # Fills of one taker order share side and ms: a good share of trades are multi-fill.
    same_ms = np.diff(b.time_ms) == 0
    assert 0.2 < same_ms.mean() < 0.5


def _last_price_every(frame: pd.DataFrame, symbol: str, seconds: int) -> pd.Series:
    f = frame[frame.symbol == symbol]
    return f.groupby(f.time_ms // (1000 * seconds)).price.last()


def test_cointegration_recovers_beta_alpha_and_mean_reversion():
    m = SyntheticMarket(("BTCUSDT", "ETHUSDT"), seed=11, rate=10.0, beta=0.8, x_vol_per_sqrt_s=6e-4,
                        spread_std=0.002, ou_kappa_per_s=1 / 30)
    frame = m.generate(60_000).to_frame()  # about 6000 simulated seconds
    # Last trade price every 5 s: x and y trade at different moments, and a finer grid
    # would measure that asynchrony (Epps effect) rather than the spread.
    px = pd.concat([_last_price_every(frame, "BTCUSDT", 5), _last_price_every(frame, "ETHUSDT", 5)],
                   axis=1, keys=["x", "y"]).ffill().dropna()
    lx, ly = np.log(px.x.to_numpy()), np.log(px.y.to_numpy())
    assert lx.std() > 5 * m.spread_std  # x wandered enough to identify beta
    beta_hat, alpha_hat = np.polyfit(lx, ly, 1)
    assert beta_hat == pytest.approx(m.beta[1], abs=0.03)
    assert alpha_hat == pytest.approx(m.alpha[1], abs=0.03 * abs(lx.mean()) + 0.01)
    resid = ly - alpha_hat - beta_hat * lx
    assert resid.std() == pytest.approx(m.spread_std, rel=0.25)
    phi = np.corrcoef(resid[:-1], resid[1:])[0, 1]  # AR(1) at 5 s: exp(-5 kappa)
    assert -np.log(phi) / 5 == pytest.approx(m.ou_kappa_per_s, rel=0.35)
    assert m.half_life_s == pytest.approx(np.log(2) * 30)
    assert m.ou_sigma_per_sqrt_s == pytest.approx(0.002 * np.sqrt(2 / 30))


def test_futures_non_market_prints_holes_and_aggregates_exclude_them():
    m = SyntheticMarket(("BTCUSDT", "ETHUSDT"), market="usdm", seed=5, non_market_fraction=0.02,
                        hole_fraction=0.01)
    b = m.generate(50_000)
    assert set(np.unique(b.trade_type).tolist()) == {MARKET, INSURANCE_FUND, ADL, NA}
    non_market = b.trade_type != MARKET
    assert 0.008 < non_market.mean() < 0.02  # 0.02 per order, 1.5 fills per order
    na = b.trade_type == NA
    assert np.all(b.price[na] == 0) and np.all(b.qty[na] == 0)
    prices = b.price_float()
    for i in range(2):
        rows = np.flatnonzero(b.sym == i)
        ids = b.trade_id[rows]
        assert np.all(np.diff(ids) >= 1)
        hole_share = ((ids[-1] - ids[0] + 1) - ids.size) / (ids[-1] - ids[0] + 1)
        assert 0.006 < hole_share < 0.015
        # Insurance-fund and ADL prints are far from the market (>= 2 % from the last fill).
        mkt = rows[b.trade_type[rows] == MARKET]
        far = rows[np.isin(b.trade_type[rows], [INSURANCE_FUND, ADL])]
        last_mkt = mkt[np.searchsorted(mkt, far) - 1]
        assert np.all(np.abs(prices[far] / prices[last_mkt] - 1) > 0.015)
    aggs = m.aggregate(b)
    market_ids = {(int(s), int(t)) for s, t in zip(b.sym[~non_market], b.trade_id[~non_market])}
    covered = [(int(s), t) for s, f, l in zip(aggs.sym, aggs.first_id, aggs.last_id) for t in range(f, l + 1)]
    # Every market fill is in exactly one aggregate; no hole or non-market print is.
    assert len(covered) == len(set(covered)) and set(covered) == market_ids
    for i in range(2):
        a = aggs.agg_id[aggs.sym == i]
        assert a[0] == m.specs[i].first_agg_id and np.all(np.diff(a) == 1)
    # Defaults: futures get prints and holes, spot neither.
    assert SyntheticMarket(market="usdm").hole_fraction > 0 and SyntheticMarket().hole_fraction == 0


def _reference_aggregates(b: TradeBatch) -> list[tuple]:
    """Straightforward loop over rows: the rule of aggregate_trades, written plainly."""
    open_run: dict[int, list] = {}
    done = []
    for r in range(len(b)):
        s, tid, p, q, t, mk = (int(b.sym[r]), int(b.trade_id[r]), int(b.price[r]), int(b.qty[r]),
                               int(b.time_ms[r]), bool(b.is_buyer_maker[r]))
        if b.trade_type[r] != MARKET or p <= 0 or q <= 0:
            continue
        run = open_run.get(s)
        if run and run[4] == tid - 1 and run[1] == p and run[5] == mk and run[6] == t:
            run[2] += q
            run[4] = tid
            run[7] = r
        else:
            if run:
                done.append(run)
            open_run[s] = [s, p, q, tid, tid, mk, t, r]
    done.extend(open_run.values())
    done.sort(key=lambda run: run[7])
    return [tuple(run[:7]) for run in done]


@pytest.mark.parametrize("market,stamp", [("spot", None), ("spot", 1_700_000_000_000), ("usdm", None)])
def test_aggregation_matches_a_plain_loop(market, stamp):
    m = SyntheticMarket(("BTCUSDT", "ETHUSDT"), market=market, seed=9, non_market_fraction=0.05 if market == "usdm" else 0,
                        hole_fraction=0.02 if market == "usdm" else 0)
    b = m.generate(4000, stamp_ms=stamp)
    aggs, nxt = aggregate_trades(b, [100, 200])
    got = list(zip(aggs.sym.tolist(), aggs.price.tolist(), aggs.qty.tolist(), aggs.first_id.tolist(),
                   aggs.last_id.tolist(), aggs.is_buyer_maker.tolist(), aggs.time_ms.tolist()))
    assert got == _reference_aggregates(b)
    assert len(aggs) < len(b)  # something was aggregated
    assert nxt == [100 + int((aggs.sym == 0).sum()), 200 + int((aggs.sym == 1).sum())]
    np.testing.assert_array_equal(b.trade_id[aggs.last_row], aggs.last_id)


def _check_trade(t: Trade, b: TradeBatch, r: int, market: str) -> None:
    assert t.market == market and t.kind == "trade"
    assert t.symbol == b.instruments.symbols[b.sym[r]]
    assert t.trade_id == b.trade_id[r]
    assert t.price == pytest.approx(b.price_float()[r], rel=1e-15)
    assert t.qty == pytest.approx(b.qty_float()[r], rel=1e-15)
    assert (t.time_ms, t.event_ms, t.is_buyer_maker) == (b.time_ms[r], b.event_ms[r], bool(b.is_buyer_maker[r]))


def test_spot_frames_have_binance_shape_and_parse_back():
    m = SyntheticMarket(("BTCUSDT", "ETHUSDT"), seed=2)
    b = m.generate(300)
    combined = encode_trades(b)
    raw = encode_trades(b, combined=False)
    for r, (c, w) in enumerate(zip(combined, raw)):
        obj = json.loads(c)
        assert set(obj) == {"stream", "data"} and obj["stream"] == b.instruments.symbols[b.sym[r]].lower() + "@trade"
        assert obj["data"] == json.loads(w) and set(obj["data"]) == SPOT_TRADE_KEYS
        assert re.fullmatch(r"\d+\.\d{8}", obj["data"]["p"]) and re.fullmatch(r"\d+\.\d{8}", obj["data"]["q"])
        _check_trade(parse_message(c, "spot", recv_ms=0), b, r, "spot")
    aggs = m.aggregate(b)
    for r, c in enumerate(encode_agg_trades(aggs)):
        obj = json.loads(c)
        assert obj["stream"].endswith("@aggTrade") and set(obj["data"]) == SPOT_AGG_KEYS
        t = parse_message(c, "spot", recv_ms=0)
        assert (t.kind, t.trade_id, t.first_trade_id, t.last_trade_id) == (
            "aggTrade", aggs.agg_id[r], aggs.first_id[r], aggs.last_id[r])
        assert t.qty == pytest.approx(aggs.qty_float()[r], rel=1e-15)


def test_futures_frames_spell_contract_precision_and_types():
    m = SyntheticMarket(("BTCUSDT", "ETHUSDT", "SOLUSDT"), market="usdm", seed=4, non_market_fraction=0.1)
    b = m.generate(2000)
    frames = encode_trades(b, combined=False)
    for r, f in enumerate(frames):
        d = json.loads(f)
        assert set(d) == USDM_TRADE_KEYS
        t = parse_message(f, "usdm", recv_ms=0)
        assert t.trade_type == ("MARKET", "INSURANCE_FUND", "ADL", "NA")[b.trade_type[r]]
        if b.trade_type[r] == NA:
            assert (d["p"], d["q"], t.is_market_print) == ("0", "0", False)
            continue
        _check_trade(t, b, r, "usdm")
        sym = d["s"]
        p_dp, q_dp = {"BTCUSDT": (2, 3), "ETHUSDT": (2, 3), "SOLUSDT": (2, 0)}[sym]
        assert re.fullmatch(r"\d+\.\d{%d}" % p_dp, d["p"]), d
        assert re.fullmatch(r"\d+" + (r"\.\d{%d}" % q_dp if q_dp else ""), d["q"]), d
        assert t.is_market_print == (d["X"] == "MARKET")
    btc = [json.loads(f) for f, s, x in zip(frames, b.sym, b.trade_type) if s == 0 and x == MARKET]
    assert btc and all(d["p"].endswith("0") for d in btc)  # BTCUSDT futures tick is 0.10
    for f in encode_agg_trades(m.aggregate(b)):
        assert set(json.loads(f)["data"]) == USDM_AGG_KEYS


def test_generate_until_stamp_and_clock_shift():
    m = SyntheticMarket(seed=2, rate=100.0, start_ms=1_000_000)
    b = m.generate_until(1_010_000, event_ms=1_010_000)
    assert np.all(b.time_ms <= 1_010_000) and np.all(b.event_ms == 1_010_000)
    assert len(b) == pytest.approx(1000, rel=0.15)
    assert m.next_time_ms > 1_010_000
    stamped = m.generate(10, stamp_ms=5)
    assert np.all(stamped.time_ms == 5) and np.all(stamped.event_ms == 5)
    m.advance_clock_to(2_000_000)
    assert m.next_time_ms >= 2_000_000
    later = m.generate_until(2_001_000)
    ids = np.concatenate([b.trade_id[b.sym == 0], stamped.trade_id[stamped.sym == 0], later.trade_id[later.sym == 0]])
    assert np.all(np.diff(ids) == 1)  # the clock jump leaves no id gap


def test_to_frame_has_the_tick_schema():
    b = SyntheticMarket(market="usdm", seed=1, non_market_fraction=0.1).generate(500)
    f = b.to_frame()
    assert tuple(f.columns) == TICK_COLUMNS and len(f) == len(b)
    assert f.trade_id.dtype == np.int64 and f.first_trade_id.isna().all()
    assert set(f.trade_type) <= {"MARKET", "INSURANCE_FUND", "ADL", "NA"}
    aggs = aggregate_trades(b, [0, 0])[0].to_frame()
    assert tuple(aggs.columns) == TICK_COLUMNS and (aggs.kind == "aggTrade").all()
    assert (aggs.first_trade_id <= aggs.last_trade_id).all()


@pytest.mark.parametrize("kwargs", [
    {"symbols": ("BTCUSDT",)}, {"rate": 0}, {"beta": [1.0, 2.0]}, {"hole_fraction": 0.01},
    {"non_market_fraction": 0.01}, {"weights": [1.0]}, {"ou_kappa_per_s": 0}, {"fills_per_order": 0.5},
    {"market": "coinm"},
])
def test_invalid_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        SyntheticMarket(**kwargs)


def test_specs_and_decimal_formatting():
    with pytest.raises(ConfigError, match="tick"):
        SymbolSpec(symbol="ABCUSDT", price=1.0, tick=0.001, step=1.0, price_dp=2, qty_dp=0, qty_median=1.0,
                   first_trade_id=1, first_agg_id=1)
    other = default_spec("FOOUSDT", "usdm")
    assert 1 <= other.price < 201 and other.price == default_spec("FOOUSDT", "usdm").price
    assert format_decimal(6183763000000, 8) == "61837.63000000"
    assert format_decimal(5, 3) == "0.005" and format_decimal(0, 2) == "0.00"


def test_generation_and_encoding_are_fast():
    # The ingest benchmark wants >= 100k frames/s from the server; this machine-independent
    # floor only catches an accidental slow path (a quiet core does 200k+).
    m = SyntheticMarket(seed=1)
    t0 = time.perf_counter()
    n = 0
    while n < 60_000:
        b = m.generate(2000, stamp_ms=1)
        m.aggregate(b)
        encode_trades(b)
        n += len(b)
    assert n / (time.perf_counter() - t0) > 20_000
