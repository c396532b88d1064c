"""Bars: vectorised vs pandas reference, vs the incremental builder, 1s->1m
aggregation, empty/forming/late policies, pair alignment, and real Binance
trades from ../shared/data when present."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from quantlab.bars import (
    MAX_BARS, Bar, IncrementalBars, aggregate_bars, align_pair, bars_to_frame, market_mask,
    parse_timeframe, resample_ticks, resample_trades,
)
from quantlab.errors import ConfigError
from quantlab.schema import BAR_COLUMNS, BAR_DTYPES, BAR_INDEX

SUMS = ("volume", "quote_volume", "taker_buy_volume", "vwap")
EXACT = ("open", "high", "low", "close", "trade_count", "is_empty", "is_forming")


# --- helpers -------------------------------------------------------------------
def assert_bar_shape(bars: pd.DataFrame) -> None:
    assert tuple(bars.columns) == BAR_COLUMNS
    assert bars.index.name == BAR_INDEX
    assert isinstance(bars.index, pd.DatetimeIndex) and str(bars.index.tz) == "UTC"
    for col, dtype in BAR_DTYPES.items():
        assert bars[col].dtype == np.dtype(dtype), (col, bars[col].dtype)
    if len(bars) > 1:
        steps = np.diff(bars.index.as_unit("ms").asi8)
        assert (steps == steps[0]).all(), "bars must be on a regular grid, no missing bar"


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame, rtol: float = 1e-12) -> None:
    """Same index, exact OHLC/count/flags (NaN == NaN), sums to ``rtol``."""
    assert_array_equal(got.index.as_unit("ms").asi8, want.index.as_unit("ms").asi8)
    for col in EXACT:
        if col in want.columns:
            assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    for col in SUMS:
        assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=rtol, atol=0,
                        err_msg=col)


def random_ticks(seed: int, n: int = 5_000, span_ms: int = 400_000, hole: tuple | None = None):
    """Ticks with many equal timestamps, unique shuffled ids, quiet stretches.

    Returns arrays sorted by (time, id) and the same trades in a random order.
    """
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, span_ms // 7, n)) * 7 + 1_723_161_240_000  # ties: ~6 per ms
    if hole is not None:
        t = t[(t - t[0] < hole[0]) | (t - t[0] >= hole[1])]
        n = t.size
    ids = rng.permutation(n).astype(np.int64) + 10_000
    order = np.lexsort((ids, t))
    t, ids = t[order], ids[order]
    price = np.round(60_000 + np.cumsum(rng.normal(0, 2, n)), 2)
    qty = np.round(rng.exponential(0.05, n), 5) + 1e-5
    m = rng.random(n) < 0.5
    shuffle = rng.permutation(n)
    return (t, price, qty, m, ids), tuple(a[shuffle] for a in (t, price, qty, m, ids))


def pandas_reference(t, price, qty, m, ids, timeframe_ms: int) -> pd.DataFrame:
    """Bars by ``DataFrame.resample`` with an explicit (time, id) order for first/last."""
    df = pd.DataFrame({"t": t, "id": ids, "p": price, "q": qty, "m": m})
    df = df.sort_values(["t", "id"], kind="stable").reset_index(drop=True)
    df["pq"] = df["p"] * df["q"]
    df["buy"] = np.where(df["m"], 0.0, df["q"])
    df.index = pd.to_datetime(df["t"], unit="ms", utc=True)
    r = df.resample(pd.Timedelta(milliseconds=timeframe_ms), origin="epoch", closed="left",
                    label="left")
    out = r.agg(open=("p", "first"), high=("p", "max"), low=("p", "min"), close=("p", "last"),
                volume=("q", "sum"), quote_volume=("pq", "sum"), trade_count=("p", "size"),
                taker_buy_volume=("buy", "sum"))
    empty = out["trade_count"] == 0
    close = out["close"].ffill()
    for col in ("open", "high", "low", "close"):
        out[col] = out[col].where(~empty, close)
    out["vwap"] = (out["quote_volume"] / out["volume"]).where(~empty, close)
    out["is_empty"] = empty
    out["is_forming"] = False
    return out


def run_incremental(ticks, timeframe: str, flush_ms: int | None = None) -> pd.DataFrame:
    live = IncrementalBars(timeframe)
    closed = live.add_many(*ticks)
    if flush_ms is not None:
        closed += live.flush(flush_ms)
    return bars_to_frame(closed)


# --- parse_timeframe ---------------------------------------------------------------
@pytest.mark.parametrize("tf,ms", [
    ("250ms", 250), ("1s", 1_000), ("30S", 30_000), ("1m", 60_000), ("1min", 60_000),
    ("5min", 300_000), ("1T", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000),
    ("1H", 3_600_000), ("4h", 14_400_000), ("1d", 86_400_000), ("min", 60_000), (" 2s ", 2_000),
    (1500, 1500),
])
def test_parse_timeframe_accepts_binance_and_pandas_styles(tf, ms):
    assert parse_timeframe(tf) == ms


@pytest.mark.parametrize("junk", ["1x", "0m", "-5s", "1M", "1MS", "1w", "1.5s", "", "m1", 0, -3,
                                  1.5, True, None])
def test_parse_timeframe_rejects_junk_naming_the_field(junk):
    with pytest.raises(ConfigError) as info:
        parse_timeframe(junk)
    assert info.value.field == "timeframe"
    assert "'1m'" in str(info.value) and "ms" in info.value.expected


# --- resample_ticks vs pandas --------------------------------------------------------
@pytest.mark.parametrize("timeframe", ["250ms", "1s", "7s", "1m"])
@pytest.mark.parametrize("seed", [1, 2])
def test_resample_ticks_matches_pandas_reference_on_shuffled_ties(seed, timeframe):
    ordered, shuffled = random_ticks(seed, hole=(100_000, 230_000))
    got = resample_ticks(*shuffled, timeframe=timeframe)
    assert_bar_shape(got)
    want = pandas_reference(*ordered, parse_timeframe(timeframe))
    assert_bars_equal(got, want)
    assert got["is_empty"].any(), "the quiet minute must give explicit empty bars"
    # The sorted fast path (no sort) gives the same bars.
    assert_bars_equal(resample_ticks(*ordered, timeframe=timeframe), got, rtol=0)


def test_ties_of_equal_time_are_broken_by_trade_id():
    t = [5_000, 5_000, 5_000]
    price = [3.0, 1.0, 2.0]
    ids = [30, 10, 20]
    bars = resample_ticks(t, price, [1.0] * 3, [True] * 3, ids, timeframe="1s")
    assert (bars["open"].iloc[0], bars["close"].iloc[0]) == (1.0, 3.0)
    # Without ids, ties keep input order.
    bars = resample_ticks(t, price, [1.0] * 3, [True] * 3, timeframe="1s")
    assert (bars["open"].iloc[0], bars["close"].iloc[0]) == (3.0, 2.0)


def test_every_sort_path_gives_the_reference_bars():
    ordered, shuffled = random_ticks(11, n=3_000, span_ms=100_000)
    want = pandas_reference(*ordered, 1_000)
    t, p, q, m, ids = shuffled
    # ids spanning almost all of int64: the combined key would overflow -> lexsort.
    huge = ids * (2 ** 40)
    assert_bars_equal(resample_ticks(t, p, q, m, huge, timeframe="1s"), want)
    # Time sorted, ids out of order inside ties only (negated): ties reverse.
    neg = -ordered[4]
    got = resample_ticks(*ordered[:4], neg, timeframe="1s")
    assert_bars_equal(got, pandas_reference(*ordered[:4], neg, 1_000))
    assert not np.array_equal(got["open"].to_numpy(), want["open"].to_numpy())
    # No ids: a stable sort by time keeps the input order of ties.
    no_ids = resample_ticks(t, p, q, m, timeframe="1s")
    stable = np.argsort(t, kind="stable")
    want_no_ids = pandas_reference(t[stable], p[stable], q[stable], m[stable],
                                   np.arange(t.size), 1_000)
    assert_bars_equal(no_ids, want_no_ids)


def test_empty_bars_are_explicit_rows_carrying_the_previous_close():
    t = [0, 400, 3_100, 3_900]
    bars = resample_ticks(t, [10.0, 11.0, 9.0, 8.0], [1.0, 3.0, 1.0, 1.0],
                          [False, True, False, False], timeframe="1s")
    assert_bar_shape(bars)
    assert bars["is_empty"].tolist() == [False, True, True, False]
    empty = bars.iloc[1:3]
    for col in ("open", "high", "low", "close", "vwap"):
        assert (empty[col] == 11.0).all(), col
    assert (empty[["volume", "quote_volume", "taker_buy_volume"]] == 0).all().all()
    assert (empty["trade_count"] == 0).all()
    first = bars.iloc[0]
    assert first["vwap"] == pytest.approx((10 * 1 + 11 * 3) / 4, rel=1e-15)
    assert first["taker_buy_volume"] == 1.0 and first["high"] == 11.0 and first["low"] == 10.0


def test_window_pads_leading_and_trailing_empties_and_equals_a_slice():
    ordered, _ = random_ticks(3, n=2_000, span_ms=120_000)
    t0 = int(ordered[0][0]) // 1_000 * 1_000
    full = resample_ticks(*ordered, timeframe="1s")
    # A window inside the data: the same rows as slicing the full result; the
    # leading bar is seeded from the last trade before the window when empty.
    start, end = t0 + 30_000, t0 + 90_000
    win = resample_ticks(*ordered, timeframe="1s", start_ms=start, end_ms=end)
    assert len(win) == 60
    sliced = full.loc[pd.Timestamp(start, unit="ms", tz="UTC"):
                      pd.Timestamp(end - 1, unit="ms", tz="UTC")]
    assert_bars_equal(win, sliced, rtol=0)
    # Before the first trade: leading empties with NaN prices; after the last:
    # trailing empties carrying the last close.
    wide = resample_ticks(*ordered, timeframe="1s", start_ms=t0 - 5_000,
                          end_ms=(int(ordered[0][-1]) // 1_000 + 4) * 1_000)
    lead, trail = wide.iloc[:5], wide.iloc[-3:]
    assert lead["is_empty"].all() and lead["close"].isna().all() and lead["vwap"].isna().all()
    assert trail["is_empty"].all()
    assert (trail["close"] == ordered[1][-1]).all()
    assert_bars_equal(wide.iloc[5:-3], full, rtol=0)


def test_unaligned_window_covers_whole_bars_and_drops_trades_outside():
    t = [500, 1_500, 2_500, 3_500]
    bars = resample_ticks(t, [1.0, 2.0, 3.0, 4.0], [1.0] * 4, [True] * 4, timeframe="1s",
                          start_ms=1_200, end_ms=2_001)
    assert bars.index.as_unit("ms").asi8.tolist() == [1_000, 2_000]
    assert bars["close"].tolist() == [2.0, 3.0] and bars["trade_count"].tolist() == [1, 1]
    with pytest.raises(ConfigError) as info:
        resample_ticks(t, [1.0] * 4, [1.0] * 4, [True] * 4, start_ms=5, end_ms=4)
    assert info.value.field == "end_ms"


def test_no_trades_with_window_gives_nan_empties_and_without_gives_no_rows():
    bars = resample_ticks([], [], [], [], timeframe="1m", start_ms=0, end_ms=180_000)
    assert_bar_shape(bars)
    assert len(bars) == 3 and bars["is_empty"].all() and bars["close"].isna().all()
    none = resample_ticks([], [], [], [], timeframe="1m")
    assert_bar_shape(none)
    assert len(none) == 0


def test_forming_flag_follows_now_ms():
    t = [1_000, 61_000, 65_000]
    args = (t, [1.0, 2.0, 3.0], [1.0] * 3, [True] * 3)
    assert not resample_ticks(*args).is_forming.any()  # batch: nothing forming
    live = resample_ticks(*args, now_ms=90_000)
    assert live["is_forming"].tolist() == [False, True]
    assert resample_ticks(*args, now_ms=120_000)["is_forming"].tolist() == [False, False]
    padded = resample_ticks(*args, now_ms=90_000, end_ms=240_000)
    assert padded["is_forming"].tolist() == [False, True, True, True]  # still to come
    assert padded["is_empty"].tolist() == [False, False, True, True]


def test_stray_timestamp_is_refused_instead_of_allocating_billions_of_bars():
    with pytest.raises(ConfigError) as info:
        resample_ticks([0, 1_723_161_240_000], [1.0, 1.0], [1.0, 1.0], [True, True],
                       timeframe="1s")
    assert str(MAX_BARS) in str(info.value)


def test_bars_are_causal_truncated_input_gives_the_same_closed_bars():
    ordered, _ = random_ticks(4, n=3_000, span_ms=300_000)
    full = resample_ticks(*ordered, timeframe="1s")
    cut = int(ordered[0][1500]) // 1_000 * 1_000
    head = tuple(a[ordered[0] < cut] for a in ordered)
    part = resample_ticks(*head, timeframe="1s", end_ms=cut)
    assert_bars_equal(part, full.iloc[:len(part)], rtol=0)


def test_mismatched_lengths_are_a_config_error():
    with pytest.raises(ConfigError) as info:
        resample_ticks([1, 2], [1.0], [1.0, 1.0], [True, True])
    assert info.value.field == "price"


# --- resample_trades -------------------------------------------------------------
def futures_ticks() -> pd.DataFrame:
    return pd.DataFrame({
        "market": "usdm", "symbol": "BTCUSDT", "kind": "trade",
        "trade_id": np.arange(1, 7, dtype=np.int64),
        "time_ms": np.array([100, 200, 300, 400, 500, 600], dtype=np.int64),
        "price": [100.0, 50.0, 0.0, 101.0, 200.0, 102.0],
        "qty": [1.0, 9.0, 0.0, 2.0, 5.0, -1.0],
        "is_buyer_maker": [False, True, True, True, False, False],
        "trade_type": pd.Series(["MARKET", "INSURANCE_FUND", "NA", "MARKET", "ADL", "MARKET"],
                                dtype=object),
    })


def test_resample_trades_excludes_non_market_futures_prints():
    ticks = futures_ticks()
    assert market_mask(ticks).tolist() == [True, False, False, True, False, False]
    bars = resample_trades(ticks, "1s")
    assert_bar_shape(bars)
    row = bars.iloc[0]
    assert (row["open"], row["high"], row["low"], row["close"]) == (100.0, 101.0, 100.0, 101.0)
    assert row["trade_count"] == 2 and row["volume"] == 3.0 and row["taker_buy_volume"] == 1.0
    raw = resample_trades(ticks, "1s", market_only=False)
    assert raw["trade_count"].iloc[0] == 6 and raw["high"].iloc[0] == 200.0


def test_resample_trades_refuses_mixed_symbols():
    ticks = pd.concat([futures_ticks(), futures_ticks().assign(symbol="ETHUSDT")])
    with pytest.raises(ConfigError, match="symbol"):
        resample_trades(ticks, "1s")


# --- aggregate_bars -----------------------------------------------------------------
@pytest.mark.parametrize("omit_empty", [False, True])
def test_one_second_bars_aggregate_to_the_direct_one_minute_bars(omit_empty):
    ordered, shuffled = random_ticks(5, n=8_000, span_ms=600_000, hole=(150_000, 290_000))
    fine = resample_ticks(*shuffled, timeframe="1s")
    if omit_empty:  # the store may keep only seconds with trades
        fine = fine[~fine["is_empty"]]
    direct = resample_ticks(*shuffled, timeframe="1m")
    coarse = aggregate_bars(fine, "1m")
    assert_bar_shape(coarse)
    assert direct["is_empty"].any()
    assert_bars_equal(coarse, direct)
    assert_bars_equal(aggregate_bars(fine, "5m"), resample_ticks(*ordered, timeframe="5m"))


def test_aggregate_window_seeds_and_pads_like_resample_ticks():
    ordered, _ = random_ticks(6, n=3_000, span_ms=600_000, hole=(100_000, 400_000))
    t0 = int(ordered[0][0]) // 60_000 * 60_000
    start, end = t0 + 120_000, t0 + 900_000  # starts inside the hole, ends after the data
    fine = resample_ticks(*ordered, timeframe="1s")
    direct = resample_ticks(*ordered, timeframe="1m", start_ms=start, end_ms=end)
    assert direct["is_empty"].iloc[0] and not np.isnan(direct["close"].iloc[0])
    assert_bars_equal(aggregate_bars(fine, "1m", start_ms=start, end_ms=end), direct)
    # Fine bars that were themselves windowed (seeded leading empties) carry the seed.
    fine_win = resample_ticks(*ordered, timeframe="1s", start_ms=start, end_ms=end)
    assert_bars_equal(aggregate_bars(fine_win, "1m", start_ms=start, end_ms=end), direct)


def test_aggregate_propagates_forming_and_now_ms():
    t = [1_000, 61_000, 62_500]
    fine = resample_ticks(t, [1.0, 2.0, 3.0], [1.0] * 3, [True] * 3, timeframe="1s",
                          now_ms=62_900)
    assert fine["is_forming"].tolist()[-1] and fine["is_forming"].sum() == 1
    coarse = aggregate_bars(fine, "1m")
    assert coarse["is_forming"].tolist() == [False, True]
    assert aggregate_bars(fine.assign(is_forming=False), "1m")["is_forming"].tolist() == \
        [False, False]
    assert aggregate_bars(fine.assign(is_forming=False), "1m",
                          now_ms=62_900)["is_forming"].tolist() == [False, True]


def test_aggregate_rejects_non_multiples_duplicates_and_bad_frames():
    ordered, _ = random_ticks(7, n=500, span_ms=300_000)
    minute = resample_ticks(*ordered, timeframe="1m")
    with pytest.raises(ConfigError) as info:
        aggregate_bars(minute, "90s")
    assert info.value.field == "timeframe" and "60000 ms grid" in str(info.value)
    with pytest.raises(ConfigError):
        aggregate_bars(minute, "1s")  # finer than the source
    with pytest.raises(ConfigError, match="source_timeframe"):
        aggregate_bars(minute, "90s", source_timeframe="1m")
    with pytest.raises(ConfigError, match="duplicate"):
        aggregate_bars(pd.concat([minute, minute.iloc[:1]]), "5m")
    with pytest.raises(ConfigError, match="tz-aware"):
        aggregate_bars(minute.tz_localize(None), "5m")
    with pytest.raises(ConfigError, match="missing columns"):
        aggregate_bars(minute.drop(columns="high"), "5m")
    # Unsorted input is fine.
    assert_bars_equal(aggregate_bars(minute.iloc[::-1], "5m"), aggregate_bars(minute, "5m"),
                      rtol=0)


# --- IncrementalBars ----------------------------------------------------------------
@pytest.mark.parametrize("timeframe", ["1s", "1m"])
def test_incremental_equals_vectorised_on_the_same_trades(timeframe):
    ordered, _ = random_ticks(8, n=6_000, span_ms=500_000, hole=(200_000, 330_000))
    tf = parse_timeframe(timeframe)
    end = (int(ordered[0][-1]) // tf + 1) * tf
    got = run_incremental(ordered, timeframe, flush_ms=end)
    assert_bar_shape(got)
    want = resample_ticks(*ordered, timeframe=timeframe)
    assert got["is_empty"].any()
    assert_bars_equal(got, want)


def test_incremental_is_order_free_within_the_forming_bar():
    ordered, _ = random_ticks(9, n=4_000, span_ms=200_000)
    t = ordered[0]
    rng = np.random.default_rng(0)
    # Shuffle inside each 1 s bar only: arrival order differs, bars must not.
    order = np.lexsort((rng.random(t.size), t // 1_000))
    scrambled = tuple(a[order] for a in ordered)
    assert not np.array_equal(scrambled[4], ordered[4])
    live = IncrementalBars("1s")
    closed = live.add_many(*scrambled)
    assert live.late_trades == 0 and live.trades == t.size
    want = resample_ticks(*scrambled, timeframe="1s", now_ms=int(t[-1]))
    got = bars_to_frame(closed + [live.forming])
    assert_bars_equal(got, want)
    assert got["is_forming"].tolist()[-1] and got["is_forming"].sum() == 1


def test_incremental_late_trade_is_counted_and_ignored():
    live = IncrementalBars("1s")
    assert live.add(1_100, 10.0, 1.0, False, 1) == []
    closed = live.add(2_100, 11.0, 1.0, False, 2)
    assert [b.open_ms for b in closed] == [1_000]
    assert live.add(1_900, 99.0, 5.0, False, 3) == []  # belongs to the emitted bar
    assert live.late_trades == 1 and live.trades == 2
    assert live.forming.high == 11.0 and live.forming.trade_count == 1
    # flush closes by time; a trade for the flushed bar is late too.
    assert [b.open_ms for b in live.flush(3_000)] == [2_000]
    assert live.forming is None
    live.add(2_999, 1.0, 1.0, True, 4)
    assert live.late_trades == 2


def test_incremental_emits_explicit_empty_bars_on_time_jumps_and_flush():
    live = IncrementalBars("1s", grace_ms=200)
    live.add(500, 10.0, 2.0, True, 1)
    jumped = live.add(3_100, 12.0, 1.0, True, 2)
    assert [(b.open_ms, b.is_empty, b.close) for b in jumped] == [
        (0, False, 10.0), (1_000, True, 10.0), (2_000, True, 10.0)]
    assert all(isinstance(b, Bar) and not b.is_forming for b in jumped)
    assert live.flush(4_100) == []  # within grace: 3 s bar not closed yet
    flushed = live.flush(6_250)
    assert [(b.open_ms, b.is_empty, b.close) for b in flushed] == [
        (3_000, False, 12.0), (4_000, True, 12.0), (5_000, True, 12.0)]
    assert live.flush(6_300) == []
    nxt = live.add(8_000, 13.0, 1.0, False, 3)
    assert [(b.open_ms, b.is_empty) for b in nxt] == [(6_000, True), (7_000, True)]
    assert IncrementalBars("1s").flush(10_000) == []  # nothing before the first trade


def test_incremental_ties_follow_trade_id_not_arrival():
    live = IncrementalBars("1s")
    live.add_many([5_000, 5_000, 5_000], [3.0, 1.0, 2.0], [1.0] * 3, [True] * 3, [30, 10, 20])
    assert (live.forming.open, live.forming.close) == (1.0, 3.0)


# --- align_pair -----------------------------------------------------------------------
def legs_with_different_holes():
    """y trades every second of 0..9 s except 3; x trades at 0, 1, 5 and 9 s
    with larger prices; x empty rows omitted, y's kept explicit."""
    ty = np.array([s * 1_000 + 100 for s in range(10) if s != 3])
    y = resample_ticks(ty, ty / 1_000.0, np.ones(ty.size), np.zeros(ty.size, bool),
                       timeframe="1s")
    tx = np.array([0, 1_000, 5_000, 9_000]) + 300
    x = resample_ticks(tx, 100.0 + tx / 1_000.0, np.ones(4), np.ones(4, bool), timeframe="1s")
    return y, x[~x["is_empty"]]


def test_align_pair_carries_within_the_limit_and_leaves_gaps_beyond():
    y, x = legs_with_different_holes()
    pair = align_pair(y, x, max_carry_bars=2)
    assert len(pair) == 10
    assert pair.index.as_unit("ms").asi8.tolist() == [s * 1_000 for s in range(10)]
    assert pair["x_carried"].tolist() == [False, False, True, True, False, False, True, True,
                                          False, False]
    gaps = pair["x_close"].isna().tolist()
    assert gaps == [False, False, False, False, True, False, False, False, True, False]
    assert (pair.loc[pair["x_carried"], "x_volume"] == 0).all()
    assert pair["x_close"].iloc[2] == pair["x_close"].iloc[1] == 101.3
    # y's explicit empty bar at 3 s is carried from 2 s.
    assert pair["y_carried"].tolist()[3] and pair["y_close"].iloc[3] == 2.1
    assert pair["y_is_empty"].tolist()[3] and not pair["y_is_empty"].iloc[4]
    # Never positional: x's 4th row (9 s) lands on 9 s, not on y's 4th row.
    assert pair["x_close"].iloc[9] == 109.3 and pair["x_close"].iloc[3] == 101.3
    assert pair["x_trade_count"].sum() == 4 and pair["y_trade_count"].sum() == 9
    expected = [f"{leg}_{c}" for leg in "yx" for c in (
        "open", "high", "low", "close", "volume", "quote_volume", "trade_count", "vwap",
        "taker_buy_volume", "is_empty", "carried")] + ["is_forming"]
    assert list(pair.columns) == expected
    assert pair["y_trade_count"].dtype == np.int64 and pair["x_carried"].dtype == bool


def test_align_pair_carry_zero_and_drop_gaps():
    y, x = legs_with_different_holes()
    none = align_pair(y, x, max_carry_bars=0)
    assert not none["x_carried"].any() and none["x_close"].isna().sum() == 6
    dropped = align_pair(y, x, max_carry_bars=1, drop_gaps=True)
    assert dropped.index.as_unit("ms").asi8.tolist() == [0, 1_000, 2_000, 5_000, 6_000, 9_000]
    assert not dropped[["y_close", "x_close"]].isna().any().any()
    with pytest.raises(ConfigError) as info:
        align_pair(y, x, max_carry_bars=-1)
    assert info.value.field == "max_carry_bars"


def test_align_pair_outer_union_leading_gap_and_forming():
    y = resample_ticks([0, 1_000, 2_000], [1.0, 2.0, 3.0], [1.0] * 3, [True] * 3,
                       timeframe="1s")
    x = resample_ticks([1_500, 3_200], [10.0, 11.0], [1.0] * 2, [True] * 2, timeframe="1s",
                       now_ms=3_500)
    pair = align_pair(y, x, max_carry_bars=5)
    assert pair.index.as_unit("ms").asi8.tolist() == [0, 1_000, 2_000, 3_000]
    assert np.isnan(pair["x_close"].iloc[0]) and not pair["x_carried"].iloc[0]  # nothing to carry
    assert pair["y_carried"].tolist() == [False, False, False, True]
    assert pair["is_forming"].tolist() == [False, False, False, True]
    swapped = align_pair(x, y, max_carry_bars=5)
    assert_array_equal(swapped["y_close"].to_numpy(), pair["x_close"].to_numpy())


def test_align_pair_checks_the_grid():
    y = resample_ticks([0, 60_000], [1.0, 2.0], [1.0] * 2, [True] * 2, timeframe="1m")
    x = resample_ticks([30_000], [1.0], [1.0], [True], timeframe="1s")
    with pytest.raises(ConfigError) as info:
        align_pair(y, x, timeframe="1m")
    assert info.value.field == "timeframe"


# --- real Binance trades (../shared/data) -------------------------------------------
SPOT_COLUMNS = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]


def read_trades(path: Path) -> pd.DataFrame:
    if "-spot-" in path.name:
        return pd.read_csv(path, header=None, names=SPOT_COLUMNS)
    return pd.read_csv(path)


def trade_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "trades-2024-08-08").glob("*.csv"))
    if not files:
        pytest.skip(f"no trade files in {shared_data / 'trades-2024-08-08'}")
    return files


def test_real_trades_match_pandas_reference_incremental_and_aggregation(shared_data):
    for path in trade_files(shared_data):
        df = read_trades(path)
        ticks = (df["time"].to_numpy(), df["price"].to_numpy(), df["qty"].to_numpy(),
                 df["is_buyer_maker"].to_numpy(), df["id"].to_numpy())
        for timeframe in ("1s", "1m"):
            got = resample_ticks(*ticks, timeframe=timeframe)
            assert_bar_shape(got)
            assert_bars_equal(got, pandas_reference(*ticks, parse_timeframe(timeframe)))
            assert got["trade_count"].sum() == len(df), path.name
            assert_allclose(got["quote_volume"].sum(), df["quote_qty"].sum(), rtol=1e-9)
        fine = resample_ticks(*ticks, timeframe="1s")
        assert_bars_equal(aggregate_bars(fine[~fine["is_empty"]], "1m"),
                          resample_ticks(*ticks, timeframe="1m"))
        tf = 60_000
        live = run_incremental(ticks, "1m", flush_ms=(int(ticks[0][-1]) // tf + 1) * tf)
        assert_bars_equal(live, resample_ticks(*ticks, timeframe="1m"))


def test_real_btc_eth_pair_aligns_on_time(shared_data):
    files = {p.name.split("-")[0] + "-" + p.name.split("-")[2]: p
             for p in trade_files(shared_data)}
    if not {"BTCUSDT-spot", "ETHUSDT-spot"} <= files.keys():
        pytest.skip("spot BTCUSDT/ETHUSDT trade files not found")
    legs = []
    for name in ("BTCUSDT-spot", "ETHUSDT-spot"):
        df = read_trades(files[name])
        bars = resample_ticks(df["time"], df["price"], df["qty"], df["is_buyer_maker"],
                              df["id"], timeframe="1s")
        legs.append(bars[~bars["is_empty"]])
    pair = align_pair(*legs, max_carry_bars=3)
    start = min(legs[0].index[0], legs[1].index[0])
    stop = max(legs[0].index[-1], legs[1].index[-1])
    assert len(pair) == (stop - start) // pd.Timedelta(seconds=1) + 1
    for leg, bars in zip("yx", legs):
        joined = pair.loc[bars.index]
        assert_array_equal(joined[f"{leg}_close"].to_numpy(), bars["close"].to_numpy())
        assert not joined[f"{leg}_carried"].any()
    assert pair["y_carried"].any() or pair["x_carried"].any()
