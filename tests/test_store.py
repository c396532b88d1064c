"""The tick store: real SQLite files in tmp_path, a writer thread with readers in
another thread and another process, and a writer killed with SIGKILL.

Bars are checked against a pandas reference computed from the stored ticks
(groupby second, open/close by (time_ms, trade_id)), whatever order and how
many times the trades were written.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

from quantlab import store as store_mod
from quantlab.binance import Trade, parse_message
from quantlab.errors import ConfigError, UnknownSymbol
from quantlab.schema import BAR_COLUMNS, BAR_DTYPES, TICK_COLUMNS, trades_to_frame
from quantlab.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    AmbiguousSymbol,
    SchemaVersionError,
    StoreError,
    TickStore,
    WriteResult,
)
from tests.conftest import ROOT

T0 = 1_722_000_000_000  # ms, a whole second


# --- helpers ---------------------------------------------------------------------
def make_trades(ids, *, market="usdm", symbol="BTCUSDT", kind="trade", t0=T0, per_ms=0.25,
                seed=0, trade_type="MARKET"):
    """Trades with ids ``ids``; time grows with id (``per_ms`` trades per ms)."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(list(ids), dtype=np.int64)
    price = 60_000 + np.round(rng.standard_normal(ids.size).cumsum(), 2)
    qty = np.round(rng.random(ids.size) * 0.5 + 0.001, 3)
    maker = rng.random(ids.size) < 0.5
    tt = trade_type if market == "usdm" and kind == "trade" else None
    return [Trade(market, symbol, kind, int(i), float(p), float(q), int(t0 + i / per_ms),
                  int(t0 + i / per_ms) + 7, bool(m), 0, tt,
                  int(i) * 3 if kind == "aggTrade" else None,
                  int(i) * 3 + 2 if kind == "aggTrade" else None)
            for i, p, q, m in zip(ids.tolist(), price.tolist(), qty.tolist(), maker.tolist())]


def reference_bars(ticks: pd.DataFrame) -> pd.DataFrame:
    """1 s bars by pandas groupby from a tick frame: market prints only, open and
    close by (time_ms, trade_id)."""
    ok = (ticks["price"] > 0) & (ticks["qty"] > 0) & (
        ticks["trade_type"].isna() | (ticks["trade_type"] == "MARKET"))
    df = ticks[ok].sort_values(["time_ms", "trade_id"]).copy()
    df["open_ms"] = df["time_ms"] // 1000 * 1000
    df["pq"] = df["price"] * df["qty"]
    df["buy_q"] = df["qty"].where(~df["is_buyer_maker"], 0.0)
    g = df.groupby("open_ms")
    ref = pd.DataFrame({
        "open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
        "close": g["price"].last(), "volume": g["qty"].sum(), "quote_volume": g["pq"].sum(),
        "trade_count": g.size().astype(np.int64), "taker_buy_volume": g["buy_q"].sum(),
    })
    ref["vwap"] = ref["quote_volume"] / ref["volume"]
    ref.index = pd.to_datetime(ref.index, unit="ms", utc=True).rename("open_time")
    return ref


def assert_bars_match(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(got.index) == list(ref.index)
    for col in ("open", "high", "low", "close", "volume", "quote_volume", "vwap",
                "taker_buy_volume"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-12,
                                   atol=1e-9, err_msg=col)
    np.testing.assert_array_equal(got["trade_count"].to_numpy(), ref["trade_count"].to_numpy())


def raw_count(path, sql="SELECT count(*) FROM ticks", params=()):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, params).fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "ticks.db")


# --- schema and opening ------------------------------------------------------------
def test_new_store_is_wal_versioned_and_documented(db):
    with TickStore(db) as st:
        assert st.schema_version == SCHEMA_VERSION
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"ticks", "bars_1s", "gaps", "instruments", "meta"} <= tables
    uniq = [r for r in con.execute("PRAGMA index_list(ticks)") if r[2]]  # unique indexes
    cols = [[c[2] for c in con.execute(f"PRAGMA index_info({r[1]})")] for r in uniq]
    assert ["market", "symbol", "kind", "trade_id"] in cols
    con.close()
    # The schema in the module docstring (copied to the README) is the one created.
    norm = lambda s: re.sub(r"\s+", " ", s).strip()  # noqa: E731
    doc = norm(store_mod.__doc__)
    for ddl in store_mod._SCHEMA_V1:
        assert norm(ddl) in doc, ddl.splitlines()[0]


def test_reads_search_primary_keys_never_scan(db):
    with TickStore(db) as st:
        con = st._conn()
        for sql in (store_mod.SQL_TICKS, store_mod.SQL_BARS_1S):
            plan = " ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + sql,
                                                       ("usdm", "BTCUSDT", "trade", 0, 1)))
            assert "SEARCH" in plan and "PRIMARY KEY" in plan and "SCAN" not in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # already in order: no sort


def test_future_schema_version_is_refused_clearly(db):
    TickStore(db).close()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    for read_only in (False, True):
        with pytest.raises(SchemaVersionError, match=r"newer quantlab") as info:
            TickStore(db, read_only=read_only)
        assert (info.value.found, info.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)


def test_migration_hook_upgrades_in_one_transaction(db, monkeypatch):
    with TickStore(db) as st:
        st.write_trades(make_trades(range(10)))
    calls = []

    def to_v2(con):
        calls.append(con.execute("PRAGMA user_version").fetchone()[0])
        con.execute("ALTER TABLE gaps ADD COLUMN source TEXT")

    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 2)
    with pytest.raises(SchemaVersionError, match="read-write once"):
        TickStore(db, read_only=True)  # a reader never upgrades
    monkeypatch.setattr(store_mod, "_MIGRATIONS", {1: to_v2})
    with TickStore(db) as st:
        assert st.schema_version == 2 and st.count() == 10
    assert calls == [1]
    assert "source" in [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(gaps)")]

    def broken(con):
        con.execute("ALTER TABLE gaps ADD COLUMN half_done TEXT")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(store_mod, "_MIGRATIONS", {2: broken})
    with pytest.raises(RuntimeError, match="migration bug"):
        TickStore(db)
    con = sqlite3.connect(db)  # rolled back: still version 2, no half-done column
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "half_done" not in [r[1] for r in con.execute("PRAGMA table_info(gaps)")]


def test_foreign_or_missing_files_are_refused(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a quantlab tick store"):
        TickStore(other)
    with pytest.raises(StoreError, match="no such file"):
        TickStore(tmp_path / "missing.db", read_only=True)
    with pytest.raises(StoreError, match="directory"):
        TickStore(tmp_path / "no" / "dir.db")


def test_read_only_and_closed_stores_refuse_writes(db):
    with TickStore(db) as st:
        st.write_trades(make_trades(range(5)))
    ro = TickStore(db, read_only=True)
    assert ro.count() == 5
    with pytest.raises(StoreError, match="read_only"):
        ro.write_trades(make_trades(range(5, 10)))
    with pytest.raises(StoreError, match="read_only"):
        ro.record_gap("usdm", "BTCUSDT", "trade", 1, 2, reason="test")
    ro.close()
    ro.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        ro.count()
    assert raw_count(db) == 5


# --- writes: uniqueness and counts ---------------------------------------------------
def test_overlapping_writes_store_each_trade_once(db):
    with TickStore(db) as st:
        r1 = st.write_trades(make_trades(range(0, 1000)))
        r2 = st.write_trades(make_trades(range(500, 1500)))  # overlap after a reconnect
        shuffled = make_trades(range(0, 1600))
        np.random.default_rng(1).shuffle(shuffled)
        r3 = st.write_trades(shuffled)  # full re-import, any order
        r4 = st.write_trades(make_trades([1600, 1601, 1600, 1601, 1602]))  # repeats in a batch
        assert r1 == WriteResult(1000, 0, r1.bars_touched, 0)
        assert (r2.inserted, r2.duplicates) == (500, 500)
        assert (r3.inserted, r3.duplicates) == (100, 1500)
        assert (r4.inserted, r4.duplicates) == (3, 2)
        assert (r1 + r2 + r3 + r4).inserted == 1603
        assert st.count() == 1603 == raw_count(db)
        np.testing.assert_array_equal(st.trade_ids("usdm", "BTCUSDT", "trade"), np.arange(1603))
        np.testing.assert_array_equal(st.trade_ids("usdm", "BTCUSDT", "trade", 10, 12),
                                      [10, 11, 12])
        assert st.last_trade_id("usdm", "BTCUSDT", "trade") == 1602
        assert st.last_trade_id("spot", "BTCUSDT", "trade") is None
        # Duplicates never double count in bars.
        bars = st.bars_1s("BTCUSDT")
        assert int(bars["trade_count"].sum()) == 1603
        assert_bars_match(bars, reference_bars(st.ticks("BTCUSDT")))
        # Sparse ids (the IN-list path of the duplicate check) are found too.
        sparse = make_trades([5, 700, 1_000_000, 5_000_000])
        assert (st.write_trades(sparse).inserted, st.count()) == (2, 1605)
        assert st.write_trades(sparse).duplicates == 4


def test_registry_matches_the_ticks_table(db):
    with TickStore(db) as st:
        st.write_trades(make_trades(range(300)) + make_trades(range(50), market="spot"))
        st.write_trades(make_trades(range(250, 400)))
        inst = st.instruments()
        assert list(inst.columns[:6]) == ["market", "symbol", "kind", "n_ticks", "first_ms",
                                          "last_ms"]
        assert st.symbols().equals(inst)
        con = sqlite3.connect(db)
        for row in inst.itertuples():
            n, lo, hi, last = con.execute(
                "SELECT count(*), min(time_ms), max(time_ms), max(trade_id) FROM ticks "
                "WHERE market=? AND symbol=? AND kind=?", (row.market, row.symbol, row.kind)
            ).fetchone()
            assert (row.n_ticks, row.first_ms, row.last_ms, row.last_trade_id) == (n, lo, hi, last)
        assert st.count() == 450 and st.count("BTCUSDT", market="spot") == 50
        first_ms = int(inst.loc[inst["market"] == "usdm", "first_ms"].iloc[0])
        assert st.count(market="usdm", start_ms=first_ms, end_ms=first_ms + 1000) == 250


def test_frame_and_trade_inputs_round_trip(db):
    trades = make_trades(range(200), kind="trade") + make_trades(range(100), kind="aggTrade")
    with TickStore(db) as st:
        st.write_trades(trades[:150])
        st.write_trades(trades_to_frame(trades[100:]))  # a tick frame, overlapping
        for kind in ("trade", "aggTrade"):
            got = st.ticks("BTCUSDT", kind=kind)
            want = trades_to_frame([t for t in trades if t.kind == kind])
            want = want.sort_values(["time_ms", "trade_id"], ignore_index=True)
            assert list(got.columns) == list(TICK_COLUMNS)
            assert {c: str(got[c].dtype) for c in got} == {c: str(want[c].dtype) for c in want}
            pd.testing.assert_frame_equal(got, want)
        assert st.ticks("BTCUSDT", kind="aggTrade")["first_trade_id"].notna().all()
        assert st.ticks("BTCUSDT", kind="trade")["first_trade_id"].isna().all()
        # Half-open windows: start_ms <= time_ms < end_ms.
        t = st.ticks("BTCUSDT", kind="trade")["time_ms"]
        lo, hi = int(t.iloc[10]), int(t.iloc[20])
        win = st.ticks("BTCUSDT", kind="trade", start_ms=lo, end_ms=hi)
        assert len(win) == int(((t >= lo) & (t < hi)).sum()) and win["time_ms"].max() < hi
        assert len(st.ticks("BTCUSDT", kind="trade", start_ms=hi, end_ms=hi)) == 0
        with pytest.raises(ConfigError, match="end_ms"):
            st.ticks("BTCUSDT", kind="trade", start_ms=hi, end_ms=lo)


def test_invalid_batches_write_nothing(db):
    good = make_trades(range(10))
    micro = [Trade("spot", "BTCUSDT", "trade", 1, 1.0, 1.0, 1_722_000_000_000_000, 0, True)]
    with TickStore(db) as st:
        with pytest.raises(ConfigError, match="microseconds"):
            st.write_trades(good + micro)
        with pytest.raises(ConfigError, match="market"):
            st.write_trades([Trade("coinm", "BTCUSDT", "trade", 1, 1.0, 1.0, T0, 0, True)])
        with pytest.raises(ConfigError, match="symbol"):
            st.write_trades([Trade("spot", "btcusdt", "trade", 1, 1.0, 1.0, T0, 0, True)])
        with pytest.raises(ConfigError, match="finite"):
            st.write_trades([Trade("spot", "BTCUSDT", "trade", 1, float("nan"), 1.0, T0, 0, True)])
        with pytest.raises(ConfigError, match="columns"):
            st.write_trades(pd.DataFrame({"trade_id": [1]}))
        assert st.write_trades([]) == WriteResult(0, 0, 0, 0)
        assert st.count() == 0 and raw_count(db) == 0


# --- bars ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bars_equal_pandas_reference_in_any_arrival_order(db, seed):
    rng = np.random.default_rng(seed)
    n = 3000
    trades = []
    for market, symbol in (("usdm", "BTCUSDT"), ("spot", "ETHUSDT")):
        ids = np.arange(10_000, 10_000 + n)
        # Many equal timestamps (a few ms per second) so ties are broken by trade id.
        t = T0 + np.sort(rng.integers(0, 20, n)) * 1000 + rng.integers(0, 3, n)
        t.sort()
        px = np.round(100 + rng.standard_normal(n).cumsum(), 2)
        qty = np.round(rng.random(n), 3) + 0.001
        maker = rng.random(n) < 0.4
        tt = (rng.choice(["MARKET"] * 8 + ["INSURANCE_FUND", "ADL"], n) if market == "usdm"
              else [None] * n)
        trades += [Trade(market, symbol, "trade", int(i), float(p), float(q), int(tm), 0, bool(m),
                         0, None if x is None else str(x))
                   for i, tm, p, q, m, x in zip(ids, t, px, qty, maker, tt)]
    arrival = list(trades)
    rng.shuffle(arrival)
    arrival += list(rng.choice(np.array(trades, dtype=object), 500))  # duplicates
    with TickStore(db) as st:
        for chunk in np.array_split(np.arange(len(arrival)), 7):
            st.write_trades([arrival[i] for i in chunk])
        assert st.count() == 2 * n
        for market, symbol in (("usdm", "BTCUSDT"), ("spot", "ETHUSDT")):
            ticks = st.ticks(symbol, market=market)
            got = st.bars_1s(symbol, market=market)
            assert_bars_match(got, reference_bars(ticks))
            assert {c: got[c].dtype for c in BAR_COLUMNS} == {c: np.dtype(BAR_DTYPES[c])
                                                              for c in BAR_COLUMNS}
            assert not got["is_empty"].any() and not got["is_forming"].any()


def test_late_trades_correct_their_bar(db):
    def tr(i, t_ms, price, qty=1.0, maker=False):
        return Trade("spot", "BTCUSDT", "trade", i, price, qty, T0 + t_ms, 0, maker)

    with TickStore(db) as st:
        st.write_trades([tr(10, 100, 50.0), tr(11, 500, 52.0), tr(12, 900, 51.0),
                         tr(20, 1100, 60.0)])
        st.write_trades([tr(30, 2100, 70.0)])  # the seconds before are "written"
        before = st.bars_1s("BTCUSDT").iloc[0]
        assert (before.open, before.high, before.low, before.close, before.trade_count) == \
            (50.0, 52.0, 50.0, 51.0, 3)
        # Backfill: an earlier trade, a tie on the close time with a larger id,
        # a tie on the open time with a smaller id, a new high and a new low.
        r = st.write_trades([tr(9, 100, 49.0, 2.0, maker=True), tr(13, 900, 53.5),
                             tr(5, 400, 40.0), tr(11, 500, 52.0)])
        assert (r.inserted, r.duplicates, r.bars_touched) == (3, 1, 1)
        bar = st.bars_1s("BTCUSDT").iloc[0]
        # Open: (100, 9) < (100, 10); close: (900, 13) > (900, 12).
        assert (bar.open, bar.high, bar.low, bar.close) == (49.0, 53.5, 40.0, 53.5)
        assert (bar.volume, bar.trade_count, bar.taker_buy_volume) == (7.0, 6, 5.0)
        assert bar.vwap == pytest.approx((49 * 2 + 50 + 52 + 51 + 53.5 + 40) / 7.0)
        assert_bars_match(st.bars_1s("BTCUSDT"), reference_bars(st.ticks("BTCUSDT")))


def test_non_market_prints_are_stored_but_never_in_bars(db):
    def fut(i, price, qty, x):
        return Trade("usdm", "ETHUSDT", "trade", i, price, qty, T0 + i * 100, 0, False, 0, x)

    trades = [fut(1, 3000.0, 1.0, "MARKET"), fut(2, 2500.0, 9.0, "INSURANCE_FUND"),
              fut(3, 3500.0, 9.0, "ADL"), fut(4, 0.0, 0.0, "NA"), fut(5, 3001.0, 2.0, "MARKET"),
              # a second with nothing but non-market prints has no bar at all
              fut(20, 0.0, 0.0, "NA"), fut(21, 9999.0, 1.0, "ADL"),
              Trade("spot", "ETHUSDT", "trade", 7, 0.0, 1.0, T0, 0, False),   # zero price
              Trade("spot", "ETHUSDT", "trade", 8, 3000.0, 0.0, T0, 0, False),  # zero qty
              Trade("spot", "ETHUSDT", "trade", 9, 3000.5, 0.1, T0, 0, False)]
    with TickStore(db) as st:
        st.write_trades(trades)
        assert st.count() == 10
        assert sorted(st.ticks("ETHUSDT", market="usdm")["trade_type"]) == sorted(
            ["MARKET", "INSURANCE_FUND", "ADL", "NA", "MARKET", "NA", "ADL"])
        usdm = st.bars_1s("ETHUSDT", market="usdm")
        assert len(usdm) == 1
        assert (usdm.iloc[0].high, usdm.iloc[0].low, usdm.iloc[0].volume,
                usdm.iloc[0].trade_count) == (3001.0, 3000.0, 3.0, 2)
        spot = st.bars_1s("ETHUSDT", market="spot")
        assert (len(spot), spot.iloc[0].open, spot.iloc[0].trade_count) == (1, 3000.5, 1)


# --- symbols, gaps, retention ------------------------------------------------------------
def test_ambiguous_symbol_lists_the_choices(db):
    with TickStore(db) as st:
        st.write_trades(make_trades(range(5), market="spot") + make_trades(range(5))
                        + make_trades(range(5), kind="aggTrade"))
        with pytest.raises(AmbiguousSymbol) as info:
            st.ticks("BTCUSDT")
        assert info.value.choices == [("spot", "trade"), ("usdm", "aggTrade"), ("usdm", "trade")]
        assert "market='spot' kind='trade'" in str(info.value) and "pass market=" in str(info.value)
        with pytest.raises(AmbiguousSymbol):
            st.bars_1s("btcusdt", market="usdm")
        assert len(st.ticks("btcusdt", market="spot")) == 5
        assert len(st.bars_1s("BTCUSDT", market="usdm", kind="aggTrade")) >= 1
        with pytest.raises(UnknownSymbol, match="ETHUSDT.*available: BTCUSDT"):
            st.ticks("ETHUSDT")


def test_gaps_round_trip(db):
    with TickStore(db) as st:
        g1 = st.record_gap("usdm", "BTCUSDT", "trade", 100, 199, reason="reconnect",
                           detected_ms=T0, before_ms=T0 - 5, after_ms=T0 + 5)
        g2 = st.record_gap("spot", "ETHUSDT", "aggTrade", 7, 7, reason="id_jump", note="x")
        assert g2 > g1
        st.update_gap(g1, status="partial", filled_count=90, unfilled_count=6, hole_count=4,
                      note="REST had 90")
        gaps = st.gaps()
        assert list(gaps.columns) == list(store_mod._GAP_COLUMNS)
        row = gaps.set_index("gap_id").loc[g1]
        assert (row.market, row.symbol, row.kind, row.first_missing_id, row.last_missing_id,
                row.reason, row.status, row.filled_count, row.unfilled_count, row.hole_count,
                row.before_ms, row.after_ms, row.note) == (
            "usdm", "BTCUSDT", "trade", 100, 199, "reconnect", "partial", 90, 6, 4, T0 - 5,
            T0 + 5, "REST had 90")
        assert row.detected_ms == T0 and row.resolved_ms > T0
        assert st.gaps(status="open")["gap_id"].tolist() == [g2]
        assert st.gaps("ETHUSDT")["gap_id"].tolist() == [g2]
        assert pd.isna(st.gaps(status="open")["resolved_ms"].iloc[0])
        st.update_gap(g2, status="filled", filled_count=1, resolved_ms=T0 + 1)
        assert st.gaps(status=["filled", "partial"])["gap_id"].tolist() == [g1, g2]
        with pytest.raises(ConfigError, match="status"):
            st.update_gap(g1, status="done")
        with pytest.raises(StoreError, match="no gap"):
            st.update_gap(9999, status="filled")
        with pytest.raises(ConfigError, match="last_missing_id"):
            st.record_gap("usdm", "BTCUSDT", "trade", 10, 9, reason="x")
    with TickStore(db, read_only=True) as ro:  # survives reopening
        assert len(ro.gaps()) == 2


def test_retention_deletes_old_ticks_keeps_bars_and_refuses_expired(db):
    trades = make_trades(range(1000), per_ms=0.01)  # 10 trades/s over 100 s
    end_ms = T0 + 100_000
    with TickStore(db) as st:
        st.write_trades(trades)
        bars_before = st.bars_1s("BTCUSDT")
        r = st.apply_retention(keep_ticks_s=30, now_ms=end_ms)
        assert (r.ticks_deleted, r.bars_deleted, r.ticks_before_ms) == (700, 0, end_ms - 30_000)
        assert st.count() == 300 == raw_count(db)
        assert int(st.ticks("BTCUSDT")["time_ms"].min()) >= end_ms - 30_000
        inst = st.instruments().iloc[0]
        assert (inst.n_ticks, inst.first_ms, inst.last_trade_id) == (300, end_ms - 30_000, 999)
        pd.testing.assert_frame_equal(st.bars_1s("BTCUSDT"), bars_before)  # bars kept
        # A re-import of old trades cannot be checked against deleted ticks: refused,
        # so the kept bars are not counted twice; new ones still go in.
        r = st.write_trades(trades[:10] + trades[990:] + make_trades([1000], per_ms=0.01))
        assert (r.inserted, r.duplicates, r.expired) == (1, 10, 10)
        assert st.bars_1s("BTCUSDT")["trade_count"].sum() == 1001
        # Bars too, when asked; never fewer bars than ticks are kept.
        with pytest.raises(ConfigError, match="keep_bars_s"):
            st.apply_retention(keep_ticks_s=30, keep_bars_s=10)
        r = st.apply_retention(keep_ticks_s=30, keep_bars_s=50, now_ms=end_ms)
        assert r.bars_deleted == 50 and r.ticks_deleted == 0
        assert st.bars_1s("BTCUSDT").index.min() == pd.Timestamp(end_ms - 50_000, unit="ms",
                                                                  tz="UTC")


def test_store_retention_setting_applies_itself(db):
    with TickStore(db, keep_ticks_s=10, retention_interval_s=0) as st:
        # now_ms defaults to the newest trade (capped at the wall clock), so
        # old data being replayed is not wiped as it is written.
        st.write_trades(make_trades(range(100), per_ms=0.002))  # 2 trades/s over 50 s
        assert st.count() == 21  # the last 10 s (and the trade on the horizon)
        assert st.bars_1s("BTCUSDT")["trade_count"].sum() == 100
    with pytest.raises(ConfigError, match="keep_ticks_s"):
        TickStore(db, read_only=True, keep_ticks_s=10)


# --- concurrency and crashes -------------------------------------------------------
READER = r"""
import json, sys, time
from quantlab.store import TickStore
path, target = sys.argv[1], int(sys.argv[2])
st = TickStore(path, read_only=True)
print("ready", flush=True)
last, reads, deadline = -1, 0, time.monotonic() + 60
while time.monotonic() < deadline:
    n = st.count()
    # Bars as a notebook reads them (the symbol exists once a batch is in).
    bars = st.bars_1s("BTCUSDT", market="usdm", kind="trade") if n else ()
    reads += 1
    if n != last:
        print(json.dumps({"n": n, "bars": len(bars)}), flush=True)
        last = n
    if n >= target:
        break
print(json.dumps({"reads": reads}), flush=True)
"""


def test_writer_thread_with_reader_process_and_thread(db):
    batch, nbatch = 3_000, 20
    batches = [make_trades(range(i * batch, (i + 1) * batch), seed=i, per_ms=5)
               for i in range(nbatch)]
    TickStore(db).close()  # create, so read-only readers can open it
    reader = subprocess.Popen([sys.executable, "-c", READER, db, str(batch * nbatch)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        errors, thread_reads, done = [], [], threading.Event()

        def write():
            try:
                with TickStore(db) as w:
                    for trades in batches:
                        w.write_trades(trades)
            except Exception as exc:  # surfaced below
                errors.append(exc)
            finally:
                done.set()

        def read_in_thread():
            try:
                with TickStore(db, read_only=True) as r:
                    while not done.is_set():
                        n = r.count()
                        bars = r.bars_1s("BTCUSDT") if n else None
                        thread_reads.append((n, 0 if bars is None else len(bars)))
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write), threading.Thread(target=read_in_thread)]
        for th in threads:
            th.start()
        out, err = reader.communicate(timeout=120)
        for th in threads:
            th.join(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert not errors, errors
    assert reader.returncode == 0 and "locked" not in err, err
    lines = [json.loads(line) for line in out.splitlines()]
    counts = [d["n"] for d in lines if "n" in d]
    assert counts == sorted(counts) and counts[-1] == batch * nbatch
    # Each write is one transaction: a reader sees whole batches only.
    assert all(c % batch == 0 for c in counts)
    assert len([c for c in counts if 0 < c < batch * nbatch]) >= 3, counts  # read while writing
    nbars = [d["bars"] for d in lines if "bars" in d]
    assert nbars == sorted(nbars) and nbars[-1] > 0  # the bars grew with the ticks
    seen = [n for n, _ in thread_reads]
    assert seen == sorted(seen) and all(n % batch == 0 for n in seen)
    assert len(set(seen)) >= 3, sorted(set(seen))


def test_two_writers_queue_instead_of_failing(db):
    TickStore(db).close()
    errors = []

    def write(market):
        try:
            with TickStore(db) as w:
                for i in range(10):
                    w.write_trades(make_trades(range(i * 2000, (i + 1) * 2000), market=market))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(m,)) for m in ("spot", "usdm")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    with TickStore(db, read_only=True) as st:
        assert st.count(market="spot") == st.count(market="usdm") == 20_000


def test_one_instance_shared_between_threads_is_serialised(db):
    with TickStore(db) as st:
        errors = []

        def work(k):
            try:
                for i in range(20):
                    lo = (k * 20 + i) * 100
                    st.write_trades(make_trades(range(lo, lo + 100)))
                    st.count()
                    st.bars_1s("BTCUSDT")
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not errors, errors
        assert st.count() == 6000 == int(st.bars_1s("BTCUSDT")["trade_count"].sum())


WRITER = r"""
import sys
from quantlab.binance import Trade
from quantlab.store import TickStore
st, batch, i = TickStore(sys.argv[1]), int(sys.argv[2]), 0
while True:
    st.write_trades([Trade("spot", "BTCUSDT", "trade", i * batch + j, 100.0 + j % 7, 0.5,
                           1_722_000_000_000 + (i * batch + j) // 4, 0, bool(j & 1))
                     for j in range(batch)])
    i += 1
    print(i, flush=True)
"""


def test_kill_9_of_a_writer_leaves_a_readable_store(db):
    batch = 3_000
    writer = subprocess.Popen([sys.executable, "-c", WRITER, db, str(batch)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        committed = 12
        for line in writer.stdout:  # the writer prints after each commit
            if int(line) >= committed:
                break
        else:
            pytest.fail(f"writer exited early: {writer.stderr.read()}")
        os.kill(writer.pid, signal.SIGKILL)  # most likely inside a transaction
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == -signal.SIGKILL
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    for read_only in (True, False):
        with TickStore(db, read_only=read_only) as st:
            n = st.count()
            assert n >= committed * batch and n % batch == 0  # whole batches only
            assert n == raw_count(db)
            np.testing.assert_array_equal(st.trade_ids("spot", "BTCUSDT", "trade"), np.arange(n))
            assert int(st.bars_1s("BTCUSDT")["trade_count"].sum()) == n
    with TickStore(db) as st:  # and it takes writes again
        assert st.write_trades(make_trades(range(n, n + 10), market="spot")).inserted == 10


# --- real data ----------------------------------------------------------------------------
def _capture_trades(path, market):
    out = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            recv_ns, _, raw = line.partition(" ")
            if '"e":"trade"' not in raw:
                continue
            msg = parse_message(raw, market, recv_ms=int(recv_ns) // 1_000_000)
            if isinstance(msg, Trade):
                out.append(msg)
    return out


def test_real_capture_bars_and_overlap(db, shared_data):
    cap = shared_data / "ws-capture-2024-08-08"
    usdm = _capture_trades(cap / "usdm_btcusdt_20240808.gz", "usdm")
    spot = _capture_trades(cap / "spot_btcusdt_20240808.gz", "spot")
    assert len(usdm) > 10_000 and len(spot) > 1_000
    with TickStore(db) as st:
        # Overlapping windows, as after reconnects; then everything again.
        for lo in range(0, len(usdm), 4_000):
            st.write_trades(usdm[max(0, lo - 500):lo + 4_000])
        st.write_trades(spot)
        assert st.write_trades(usdm).inserted == 0
        assert st.count(market="usdm") == len({t.trade_id for t in usdm})
        with pytest.raises(AmbiguousSymbol):
            st.bars_1s("BTCUSDT")
        for market in ("usdm", "spot"):
            got = st.bars_1s("BTCUSDT", market=market)
            assert_bars_match(got, reference_bars(st.ticks("BTCUSDT", market=market)))


# --- bars of any timeframe (quantlab.bars) ------------------------------------------------
def test_bars_aggregate_stored_seconds_like_resampling_ticks(db):
    qbars = pytest.importorskip("quantlab.bars")
    rng = np.random.default_rng(7)
    n = 4000
    t = np.sort(T0 + rng.integers(0, 600_000, n))  # 10 minutes, with quiet stretches
    t = np.where((t > T0 + 200_000) & (t < T0 + 330_000), T0 + 200_000, t)
    trades = [Trade("spot", "ETHUSDT", "trade", i, float(p), float(q), int(tm), 0, bool(m))
              for i, (tm, p, q, m) in enumerate(zip(t, np.round(3000 + rng.standard_normal(n)
                                                                .cumsum(), 2),
                                                     np.round(rng.random(n), 3) + 0.001,
                                                     rng.random(n) < 0.5))]
    with TickStore(db) as st:
        st.write_trades(trades)
        ticks = st.ticks("ETHUSDT")
        for tf in ("1s", "1m", "5m"):
            got = st.bars("ETHUSDT", tf)
            want = qbars.resample_trades(ticks, tf)
            pd.testing.assert_index_equal(got.index, want.index)
            for col in BAR_COLUMNS:
                np.testing.assert_allclose(got[col].to_numpy(dtype=float),
                                           want[col].to_numpy(dtype=float), rtol=1e-12,
                                           err_msg=f"{tf} {col}")
        # A window starting in the quiet stretch: leading empty bars carry the
        # last close before the window (read from the store), as for ticks.
        start, end = T0 + 240_000, T0 + 420_000
        got = st.bars("ETHUSDT", "1m", start_ms=start, end_ms=end, now_ms=T0 + 390_000)
        want = qbars.resample_trades(ticks, "1m", start_ms=start, end_ms=end, now_ms=T0 + 390_000)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
        assert got["is_empty"].iloc[0] and got["close"].iloc[0] == ticks.loc[
            ticks["time_ms"] < T0 + 240_000, "price"].iloc[-1]
        assert got["is_forming"].tolist() == [False, False, True]
        with pytest.raises(ConfigError, match="timeframe"):
            st.bars("ETHUSDT", "250ms")


def test_mixed_batch_stores_every_column_exactly(db):
    """One batch of several instruments in any order, nullable columns constant
    or mixed per instrument, sizes that need 100-, 10- and 1-row statements:
    every value comes back as written, with its SQL type."""
    import dataclasses

    rng = np.random.default_rng(9)
    fut = make_trades(range(5000, 5311), seed=3)
    fut = [dataclasses.replace(t, trade_type="ADL" if i % 7 == 0 else
                               "ODD'TYPE" if i % 11 == 0 else None if i % 13 == 0 else "MARKET")
           for i, t in enumerate(fut)]
    odd = [dataclasses.replace(t, trade_type="X'); DROP TABLE ticks; --")
           for t in make_trades(range(9000, 9013), market="spot", seed=4)]
    trades = (make_trades(range(237), market="spot", symbol="ETHUSDT", seed=1)
              + make_trades(range(1000, 1123), kind="aggTrade", seed=2)
              + make_trades(range(50), symbol="SOLUSDT", seed=5) + fut + odd)
    shuffled = [trades[i] for i in rng.permutation(len(trades))]
    with TickStore(db) as st:
        res = st.write_trades(shuffled)
        assert (res.inserted, res.duplicates) == (len(trades), 0)
        assert st.write_trades(shuffled[:500]).duplicates == 500
        streams = {(t.market, t.symbol, t.kind) for t in trades}
        for market, symbol, kind in streams:
            got = st.ticks(symbol, market=market, kind=kind)
            want = trades_to_frame([t for t in trades if (t.market, t.symbol, t.kind)
                                    == (market, symbol, kind)])
            want = want.sort_values(["time_ms", "trade_id"], ignore_index=True)
            want["trade_type"] = pd.Series([v if isinstance(v, str) else None
                                            for v in want["trade_type"]], dtype=object)
            pd.testing.assert_frame_equal(got, want)
            ref = reference_bars(got)
            assert_bars_match(st.bars_1s(symbol, market=market, kind=kind), ref)
    types = raw_count(db, "SELECT group_concat(DISTINCT typeof(trade_id) || typeof(time_ms) || "
                          "typeof(recv_ms) || typeof(price) || typeof(qty) || "
                          "typeof(is_buyer_maker)) FROM ticks")
    assert types == "integerintegerintegerrealrealinteger"
    assert raw_count(db, "SELECT count(*) FROM ticks WHERE trade_type = 'ODD''TYPE'") == 311 // 11 - 311 // 77
