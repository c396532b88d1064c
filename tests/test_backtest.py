"""Backtest: hand-computed cases, a naive per-bar reference, causality by
truncation, cost identities, statistics recomputed from the equity curve,
sweep, and real Binance bars when ../shared/data is present."""
from __future__ import annotations

import dataclasses
import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from quantlab.backtest import (EQUITY_COLUMNS, SUMMARY_KEYS, TRADE_COLUMNS, BacktestSettings,
                               backtest, default_zscore_for_window, rolling_beta_zscore, sweep)
from quantlab.errors import ConfigError, InsufficientData

MINUTE_BARS_PER_YEAR = 365 * 24 * 60


# --- fixtures -------------------------------------------------------------------------------
def hand_frame() -> pd.DataFrame:
    """10 one-minute bars, beta fixed at 2, a known z path."""
    idx = pd.date_range("2024-01-01", periods=10, freq="1min", tz="UTC", name="open_time")
    y_open = np.arange(100.0, 110.0)
    x_open = np.array([50, 50.5, 51, 50, 49, 49.5, 50, 51, 52, 52.5])
    x_close = x_open + 0.25
    x_close[-1] = 53.0
    return pd.DataFrame({
        "y_open": y_open, "y_close": y_open + 0.5, "x_open": x_open, "x_close": x_close,
        "beta": 2.0,
        "zscore": [np.nan, 0.5, 2.5, 1.5, 0.2, -0.1, -1.0, -2.6, -1.0, 0.3],
    }, index=idx)


def synthetic(n: int = 3000, seed: int = 7, window: int = 60, phi: float = 0.97) -> pd.DataFrame:
    """Seeded cointegrated pair with distinct opens and a causal rolling z."""
    rng = np.random.default_rng(seed)
    x = 100.0 * np.exp(np.cumsum(rng.normal(scale=1e-3, size=n)))
    u = np.zeros(n)
    eps = rng.normal(scale=0.3, size=n)
    for t in range(1, n):
        u[t] = phi * u[t - 1] + eps[t]
    y = 2.0 * x + 10.0 + u
    y_open = np.r_[y[0], y[:-1]] * (1 + rng.normal(scale=2e-4, size=n))
    x_open = np.r_[x[0], x[:-1]] * (1 + rng.normal(scale=2e-4, size=n))
    beta, z = rolling_beta_zscore(y, x, window)
    idx = pd.date_range("2023-03-01", periods=n, freq="1min", tz="UTC", name="open_time")
    return pd.DataFrame({"y_open": y_open, "y_close": y, "x_open": x_open, "x_close": x,
                         "beta": beta, "zscore": z}, index=idx)


@pytest.fixture(scope="module")
def synth() -> pd.DataFrame:
    return synthetic()


# --- a naive per-bar reference, written independently of the engine ------------------------
def naive(df: pd.DataFrame, *, entry, exit, stop=None, max_hold=None, fill="next_open",
          fee_bps=0.0, slippage_bps=0.0, rehedge_every=0):
    """Bar-by-bar state machine with cash accounting. Returns (trades, equity)
    with trades as (entry_bar, exit_bar, side, reason)."""
    yo, yc, xo, xc = (df[c].to_numpy() for c in ("y_open", "y_close", "x_open", "x_close"))
    beta, z = df["beta"].to_numpy(), df["zscore"].to_numpy()
    n = len(df)
    fee, slip = fee_bps / 1e4, slippage_bps / 1e4
    cash = qy = qx = 0.0
    side = 0
    entry_bar = None
    block = 0
    pending = None  # (target qy, target qx, kind, reason)
    trades, equity = [], []
    for t in range(n):
        if pending is not None:
            ty, tx_, kind, reason = pending
            py = yo[t] if fill == "next_open" else yc[t]
            px = xo[t] if fill == "next_open" else xc[t]
            for dq, ref, leg in ((ty - qy, py, "y"), (tx_ - qx, px, "x")):
                if dq == 0:
                    continue
                fp = ref * (1 + slip) if dq > 0 else ref * (1 - slip)
                cash -= dq * fp + fee * abs(dq) * fp
            qy, qx = ty, tx_
            if kind == "enter":
                entry_bar = t
            elif kind == "exit":
                trades.append((entry_bar, t, side, reason))
                block = side if reason != "exit" else 0
                side = 0
            pending = None
        equity.append(cash + qy * yc[t] + qx * xc[t])
        if t == n - 1:
            break
        zt = z[t]
        if side == 0:
            if block == -1 and zt <= entry:
                block = 0
            if block == 1 and zt >= -entry:
                block = 0
            if np.isfinite(beta[t]) and zt > entry and block != -1:
                side = -1
            elif np.isfinite(beta[t]) and zt < -entry and block != 1:
                side = 1
            if side:
                pending = (side * 1.0, -beta[t] * side, "enter", None)
            continue
        if entry_bar is None or pending is not None:
            continue
        held_after = t + 1 - entry_bar
        if side == -1:
            hit_stop = stop is not None and zt > stop
            hit_exit = zt <= exit
        else:
            hit_stop = stop is not None and zt < -stop
            hit_exit = zt >= -exit
        reason = ("stop" if hit_stop else "exit" if hit_exit else
                  "max_hold" if max_hold is not None and held_after >= max_hold else None)
        if reason:
            pending = (0.0, 0.0, "exit", reason)
        elif rehedge_every and held_after % rehedge_every == 0 and np.isfinite(beta[t]):
            pending = (qy, -beta[t] * qy, "rehedge", None)
    if side != 0 and entry_bar is not None and (not trades or trades[-1][0] != entry_bar):
        trades.append((entry_bar, n - 1, side, "end"))
    return trades, np.array(equity)


def engine_trades(res, df):
    pos = df.index.get_indexer
    tr = res.trades
    return list(zip(pos(tr["entry_time"]).tolist(), pos(tr["exit_time"]).tolist(),
                    np.where(tr["side"] == "long", 1, -1).tolist(),
                    tr["exit_reason"].astype(str).tolist()))


# --- hand-computed ----------------------------------------------------------------------------
def test_hand_computed_next_open_with_fees():
    res = backtest(hand_frame(), entry=2.0, exit=0.0, fee_bps=10.0)
    tr = res.trades
    assert list(tr.columns) == list(TRADE_COLUMNS)
    assert list(res.equity.columns) == list(EQUITY_COLUMNS)
    assert len(tr) == 2
    t0, t1 = tr.iloc[0], tr.iloc[1]
    # Trade 1: z=2.5 on bar 2 -> short, filled at bar 3's open (y 103, x 50);
    # z=-0.1 <= 0 on bar 5 -> exit at bar 6's open (y 106, x 50).
    assert t0["side"] == "short" and t0["exit_reason"] == "exit"
    assert t0["entry_time"] == hand_frame().index[3] and t0["exit_time"] == hand_frame().index[6]
    assert (t0["entry_z"], t0["exit_z"]) == (2.5, -0.1)
    assert (t0["entry_y"], t0["entry_x"], t0["exit_y"], t0["exit_x"]) == (103, 50, 106, 50)
    assert (t0["qty_y"], t0["qty_x"], t0["bars_held"]) == (-1.0, 2.0, 3)
    gross0 = -1 * (106 - 103) + 2 * (50 - 50)
    fees0 = 10e-4 * (103 + 2 * 50) + 10e-4 * (106 + 2 * 50)
    assert t0["gross_pnl"] == pytest.approx(gross0)
    assert t0["fees"] == pytest.approx(fees0)
    assert t0["net_pnl"] == pytest.approx(gross0 - fees0)
    # Trade 2: z=-2.6 on bar 7 -> long at bar 8's open (y 108, x 52); the exit
    # signal on the last bar (z=0.3) cannot be filled: open, marked at the close.
    assert t1["side"] == "long" and t1["exit_reason"] == "end"
    assert (t1["entry_y"], t1["entry_x"], t1["exit_y"], t1["exit_x"]) == (108, 52, 109.5, 53.0)
    gross1 = (109.5 - 108) - 2 * (53.0 - 52)
    fees1 = 10e-4 * (108 + 2 * 52)  # no exit fill, no exit fee
    assert t1["gross_pnl"] == pytest.approx(gross1)
    assert t1["net_pnl"] == pytest.approx(gross1 - fees1)
    assert t1["bars_held"] == 1
    eq = res.equity["equity"].to_numpy()
    assert eq[:3].tolist() == [0, 0, 0]
    # bar 3: -1 y from 103 to 103.5, +2 x from 50 to 50.25, minus the entry fee
    assert eq[3] == pytest.approx(-0.5 + 0.5 - 0.203)
    assert eq[4] == pytest.approx(eq[3] - 1 * (104.5 - 103.5) + 2 * (49.25 - 50.25))
    assert eq[-1] == pytest.approx(gross0 - fees0 + gross1 - fees1)
    s = res.summary()
    assert s["total_pnl"] == pytest.approx(gross0 + gross1 - fees0 - fees1)
    assert s["fees"] == pytest.approx(fees0 + fees1)
    assert (s["n_trades"], s["n_closed"], s["n_open"]) == (2, 1, 1)
    assert s["hit_rate"] == 0.0 and s["avg_bars_held"] == 3.0
    assert res.equity["side"].tolist() == [0, 0, 0, -1, -1, -1, 0, 0, 1, 1]
    assert s["capital"] == pytest.approx(108 + 2 * 52)  # largest gross entry notional
    assert s["break_even_fee_bps"] == pytest.approx(
        (gross0 + gross1) / (103 + 100 + 106 + 100 + 108 + 104) * 1e4)


def test_hand_computed_next_close_and_slippage():
    res = backtest(hand_frame(), entry=2.0, exit=0.0, fill="next_close")
    t0 = res.trades.iloc[0]
    assert (t0["entry_y"], t0["entry_x"], t0["exit_y"], t0["exit_x"]) == (103.5, 50.25, 106.5, 50.25)
    assert t0["gross_pnl"] == pytest.approx(-(106.5 - 103.5))
    # slippage: a short sells y at 103 (1 - 10 bp) and buys x at 50 (1 + 10 bp)
    res = backtest(hand_frame(), entry=2.0, exit=0.0, slippage_bps=10.0)
    t0 = res.trades.iloc[0]
    assert t0["entry_y"] == pytest.approx(103 * 0.999) and t0["entry_x"] == pytest.approx(50 * 1.001)
    assert t0["exit_y"] == pytest.approx(106 * 1.001) and t0["exit_x"] == pytest.approx(50 * 0.999)
    assert t0["gross_pnl"] == pytest.approx(-(106 * 1.001 - 103 * 0.999) + 2 * (50 * 0.999 - 50 * 1.001))
    assert t0["fees"] == 0


def test_fill_price_follows_setting_on_synthetic(synth):
    for fill, col in (("next_open", "_open"), ("next_close", "_close")):
        res = backtest(synth, entry=1.5, fill=fill)
        pos = synth.index.get_indexer(res.trades["entry_time"])
        assert_array_equal(res.trades["entry_y"], synth["y" + col].to_numpy()[pos])
        assert_array_equal(res.trades["entry_x"], synth["x" + col].to_numpy()[pos])
        sig = pos - 1  # signalled one bar earlier, on a z beyond the entry level
        assert (np.abs(synth["zscore"].to_numpy()[sig]) > 1.5).all()


def test_sizing_uses_signal_bar_close(synth):
    res = backtest(synth, entry=1.5, sizing="y_notional", size=1000.0)
    pos = synth.index.get_indexer(res.trades["entry_time"]) - 1
    assert_allclose(np.abs(res.trades["qty_y"]), 1000.0 / synth["y_close"].to_numpy()[pos])
    res = backtest(synth, entry=1.5, sizing="gross_notional", size=1000.0)
    b = res.trades["beta"].to_numpy()
    gross = synth["y_close"].to_numpy()[pos] + np.abs(b) * synth["x_close"].to_numpy()[pos]
    assert_allclose(np.abs(res.trades["qty_y"]), 1000.0 / gross)
    assert_allclose(res.trades["qty_x"], -b * res.trades["qty_y"])


# --- exits --------------------------------------------------------------------------------------
def frame_from_z(z, beta=1.0) -> pd.DataFrame:
    n = len(z)
    idx = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="open_time")
    p = 100.0 + np.arange(n)
    return pd.DataFrame({"y_open": p, "y_close": p + 0.5, "x_open": p / 2, "x_close": p / 2 + 0.1,
                         "beta": beta, "zscore": np.asarray(z, dtype=float)}, index=idx)


def test_stop_exit_and_rearm():
    z = [0, 2.5, 3.0, 4.5, 5.0, 3.0, 1.0, 2.2, 1.0, -0.5, 0, 0]
    res = backtest(frame_from_z(z), entry=2.0, exit=0.0, stop=4.0)
    tr = engine_trades(res, frame_from_z(z))
    # short filled at 2, stop signalled at 3 (4.5 > 4) -> out at 4; z stays above
    # entry (5, 3): no re-entry until it has been back to <= 2 (bar 6);
    # z=2.2 on bar 7 -> short at 8; z=-0.5 on bar 9 -> out at 10.
    assert tr == [(2, 4, -1, "stop"), (8, 10, -1, "exit")]
    # mirror image for longs
    zl = [-v for v in z]
    assert engine_trades(backtest(frame_from_z(zl), entry=2.0, stop=4.0), frame_from_z(zl)) == [
        (2, 4, 1, "stop"), (8, 10, 1, "exit")]


def test_exit_level_convention_is_symmetric():
    # exit=0.5: a short exits when z <= 0.5, a long when z >= -0.5
    z = [0, 2.5, 1.0, 0.5, 0, -2.5, -1.0, -0.5, 0, 0]
    res = backtest(frame_from_z(z), entry=2.0, exit=0.5)
    assert engine_trades(res, frame_from_z(z)) == [(2, 4, -1, "exit"), (6, 8, 1, "exit")]
    # exit=-0.5 waits for an overshoot
    z = [0, 2.5, 0.0, -0.4, -0.6, 0, 0]
    res = backtest(frame_from_z(z), entry=2.0, exit=-0.5)
    assert engine_trades(res, frame_from_z(z)) == [(2, 5, -1, "exit")]


def test_max_hold_exit():
    z = [0, 2.5] + [2.6] * 8 + [1.0, 2.5, 0.0, 0.0]
    df = frame_from_z(z)
    res = backtest(df, entry=2.0, max_hold_bars=3)
    # held exactly 3 bars; no re-entry while z stays above entry; z=1 re-arms
    assert engine_trades(res, df) == [(2, 5, -1, "max_hold"), (12, 13, -1, "exit")]
    assert res.trades["bars_held"].tolist() == [3, 1]


def test_half_life_exit_scalar_and_column():
    z = [0, 2.5] + [2.6] * 8 + [0.0] * 3
    df = frame_from_z(z)
    res = backtest(df, entry=2.0, half_life_mult=1.5, half_life_bars=2.0)  # ceil(3) bars
    assert engine_trades(res, df) == [(2, 5, -1, "half_life")]
    df["half_life"] = 4.0  # per-bar causal half-life, value at the signal bar is used
    res = backtest(df, entry=2.0, half_life_mult=0.5)
    assert engine_trades(res, df) == [(2, 4, -1, "half_life")]
    # the z exit wins a tie with a time stop on the same bar
    z = [0, 2.5, 2.5, 0.0, 0.0, 0.0]
    res = backtest(frame_from_z(z), entry=2.0, max_hold_bars=2)
    assert res.trades["exit_reason"].tolist() == ["exit"]
    with pytest.raises(ConfigError, match="half_life_bars"):
        backtest(frame_from_z(z), entry=2.0, half_life_mult=1.0)


def test_nan_z_never_enters_or_exits_and_last_bar_signal_not_filled():
    z = [np.nan, 2.5, np.nan, np.nan, -1.0, np.nan, 2.5]
    res = backtest(frame_from_z(z), entry=2.0)
    assert engine_trades(res, frame_from_z(z)) == [(2, 5, -1, "exit")]  # bar 6 signal dropped
    beta = np.array([np.nan, np.nan, 1, 1, 1, 1, 1.0])
    res = backtest(frame_from_z([0, 2.5, 0, 0, 0, 0, 0], beta=beta), entry=2.0)
    assert len(res.trades) == 0  # no hedge ratio at the signal: no entry


# --- equivalence with the naive reference --------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(entry=1.5, exit=0.0),
    dict(entry=1.0, exit=0.5, stop=2.5, max_hold=40, fee_bps=3.0, slippage_bps=2.0),
    dict(entry=2.0, exit=-0.3, stop=3.0, fill="next_close", fee_bps=1.0),
    dict(entry=1.2, exit=0.2, stop=2.2, max_hold=25, rehedge_every=1, fee_bps=2.0),
    dict(entry=1.2, exit=0.0, rehedge_every=7, slippage_bps=1.0),
])
def test_matches_naive_per_bar_loop(synth, kw):
    ref_trades, ref_equity = naive(synth, **kw)
    settings = {k: v for k, v in kw.items() if k != "max_hold"}
    if "max_hold" in kw:
        settings["max_hold_bars"] = kw["max_hold"]
    res = backtest(synth, **settings)
    assert len(ref_trades) > 10
    assert engine_trades(res, synth) == ref_trades
    assert_allclose(res.equity["equity"].to_numpy(), ref_equity, rtol=0, atol=1e-8)


# --- causality ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(entry=1.5), dict(entry=1.0, exit=0.3, stop=2.5,
                                                      max_hold_bars=30, rehedge_every=3,
                                                      fee_bps=2.0, slippage_bps=1.0)])
def test_causal_truncation(kw):
    full = synthetic(n=3000, seed=11)
    res_full = backtest(full, **kw)
    for cut in (700, 1501, 2999):
        part = synthetic(n=3000, seed=11).iloc[:cut].copy()
        # the z-score must be causal too: recompute it on the truncated closes
        part["beta"], part["zscore"] = rolling_beta_zscore(part["y_close"], part["x_close"], 60)
        res = backtest(part, **kw)
        last = part.index[-1]
        closed = res.trades[res.trades["exit_reason"] != "end"].reset_index(drop=True)
        before = res_full.trades[res_full.trades["exit_time"] <= last].reset_index(drop=True)
        assert len(closed) > 3
        pd.testing.assert_frame_equal(closed, before)
        assert_array_equal(res.equity["equity"].to_numpy(),
                           res_full.equity["equity"].to_numpy()[:cut])


@pytest.mark.parametrize("window", [7, 50, 2003])
def test_rolling_zscore_matches_pandas(window):
    df = synthetic(n=2003, seed=3)  # 2003 is not a multiple of the block size (window)
    y, x = df["y_close"], df["x_close"]
    beta, z = rolling_beta_zscore(y, x, window)
    b_ref = x.rolling(window).cov(y) / x.rolling(window).var()
    s = y - b_ref * x
    z_ref = (s - s.rolling(window).mean()) / s.rolling(window).std()
    assert_allclose(beta, b_ref, rtol=1e-7)  # both lose digits when x barely moves
    assert_allclose(z, z_ref, rtol=1e-7, atol=1e-7)
    assert np.isnan(beta[:window - 1]).all() and np.isfinite(beta[window - 1:]).all()
    first = min(2 * window - 2, len(z))
    assert np.isnan(z[:first]).all() and np.isfinite(z[first:]).all()


def test_rolling_zscore_is_prefix_stable():
    df = synthetic(n=2000, seed=3)
    y, x = df["y_close"], df["x_close"]
    beta, z = rolling_beta_zscore(y, x, 50)
    b2, z2 = rolling_beta_zscore(y[:1234], x[:1234], 50)
    assert_array_equal(z2, z[:1234])
    assert_array_equal(b2, beta[:1234])
    for cut in (97, 700, 1024, 1999):  # inside the first block, at and past its edge
        b3, z3 = rolling_beta_zscore(y[:cut], x[:cut], 50)
        assert_array_equal(z3, z[:cut])
        assert_array_equal(b3, beta[:cut])


def test_rolling_beta_zscore_is_the_analytics_one():
    """One implementation (issue 14): the backtest's default signal is
    quantlab.analytics' rolling OLS + rolling z-score; beta agrees with
    statsmodels' RollingOLS, z with a direct per-window computation."""
    from statsmodels.regression.rolling import RollingOLS
    import statsmodels.api as sm

    from quantlab.analytics.hedge import rolling_beta_zscore as analytics_fn
    from quantlab.analytics import rolling_ols, rolling_zscore

    assert rolling_beta_zscore is analytics_fn
    df = synthetic(n=1500, seed=4)
    y, x = df["y_close"].to_numpy(), df["x_close"].to_numpy()
    w = 90
    beta, z = rolling_beta_zscore(y, x, w)
    b_ols = rolling_ols(y, x, w).beta
    assert_array_equal(beta, b_ols)
    s = y - b_ols * x
    z_ref = np.full(y.size, np.nan)
    z_ref[w - 1:] = rolling_zscore(s[w - 1:], w)[0]
    assert_array_equal(z, z_ref)
    sm_beta = RollingOLS(y, sm.add_constant(x), window=w).fit().params[:, 1]
    # statsmodels' own rounding where x barely moves (as tests/test_analytics_hedge.py)
    assert_allclose(beta, sm_beta, rtol=1e-6, atol=1e-9)
    X = np.lib.stride_tricks.sliding_window_view(x, w)
    Y = np.lib.stride_tricks.sliding_window_view(y, w)
    dx, dy = X - X.mean(1, keepdims=True), Y - Y.mean(1, keepdims=True)
    assert_allclose(beta[w - 1:], (dx * dy).sum(1) / (dx * dx).sum(1), rtol=1e-9, atol=1e-12)
    for t in (2 * w - 2, 777, y.size - 1):  # z from the last w spreads, each with its own beta
        win = s[t - w + 1:t + 1]
        assert z[t] == pytest.approx((win[-1] - win.mean()) / win.std(ddof=1), rel=1e-9)
    assert np.isnan(z[:2 * w - 2]).all() and np.isfinite(z[2 * w - 2:]).all()
    # a window where x does not move has no hedge ratio and no z
    xf = x.copy()
    xf[500:500 + w] = xf[500]
    bf, zf = rolling_beta_zscore(y, xf, w)
    assert np.isnan(bf[500 + w - 1]) and np.isnan(zf[500 + w - 1:500 + 2 * w - 1]).all()
    assert np.isfinite(zf[500 + 3 * w]) and np.isfinite(zf[499])
    with pytest.raises(ConfigError, match="window"):
        rolling_beta_zscore(y, x, 1)
    short_b, short_z = rolling_beta_zscore(y[:10], x[:10], 50)
    assert np.isnan(short_b).all() and np.isnan(short_z).all()


def test_sweep_keeps_each_cells_per_bar_pnl():
    """sweep_overfit's per-bar PnL comes from the sweep's own simulation:
    equal to a separate backtest of the cell, bar for bar."""
    from quantlab.backtest import _sweep_cells

    df = synthetic(n=2500, seed=6)
    table, pnls, index = _sweep_cells(df, entries=[1.0, 2.0], exits=[0.0, 0.5], windows=[40, 90],
                                      zscore_for_window=None, settings=None,
                                      overrides={"fee_bps": 1.5, "stop": 3.0}, keep_pnl=True)
    assert len(pnls) == len(table) == 8 and index.equals(df.index[1:])
    for row, pnl in zip(table.itertuples(), pnls):
        one = df.copy()
        one["beta"], one["zscore"] = rolling_beta_zscore(df["y_close"], df["x_close"], row.window)
        ref = backtest(one, entry=row.entry, exit=row.exit, fee_bps=1.5, stop=3.0)
        assert_array_equal(pnl, ref.equity["pnl"].to_numpy()[1:])
        assert pnl.sum() == pytest.approx(row.total_pnl, rel=1e-9, abs=1e-9)


# --- costs ----------------------------------------------------------------------------------
def test_fees_reduce_pnl_by_exactly_fees_paid(synth):
    free = backtest(synth, entry=1.2, exit=0.2, stop=3.0)
    paid = backtest(synth, entry=1.2, exit=0.2, stop=3.0, fee_bps=7.5)
    pd.testing.assert_series_equal(free.trades["gross_pnl"], paid.trades["gross_pnl"])
    assert paid.stats.fees > 0
    assert free.stats.total_pnl - paid.stats.total_pnl == pytest.approx(paid.stats.fees, rel=1e-12)
    assert paid.stats.fees == pytest.approx(7.5e-4 * paid.stats.traded_notional, rel=1e-12)
    assert_allclose(paid.trades["net_pnl"], paid.trades["gross_pnl"] - paid.trades["fees"])
    assert paid.trades["net_pnl"].sum() == pytest.approx(paid.stats.total_pnl, rel=1e-9)
    assert paid.equity["fees"].sum() == pytest.approx(paid.stats.fees, rel=1e-12)


def test_break_even_fee_rerun_gives_zero(synth):
    res = backtest(synth, entry=1.5, exit=0.0, slippage_bps=0.5)
    be = res.stats.break_even_fee_bps
    assert be is not None and be != 0
    again = backtest(synth, entry=1.5, exit=0.0, slippage_bps=0.5, fee_bps=be)
    assert abs(again.stats.total_pnl) < 1e-9 * again.stats.traded_notional
    assert backtest(frame_from_z([0, 0, 0]), entry=2.0).stats.break_even_fee_bps is None


def test_rehedge_fees_are_rehedge_notional_times_bps():
    # beta moves from 2 to 2.5 and back to 2 inside the trade, so the exit
    # unwinds the same x quantity with or without re-hedging.
    z = [0, 2.5, 2.4, 2.3, 2.2, 2.1, 2.0, -0.1, 0.0, 0.0]
    beta = np.array([2, 2, 2, 2.5, 2.5, 2.0, 2.0, 2.0, 2, 2])
    df = frame_from_z(z, beta=beta)
    kw = dict(entry=2.0, exit=0.0, fee_bps=10.0)
    keep = backtest(df, **kw)
    hedged = backtest(df, rehedge_every=1, **kw)
    assert engine_trades(keep, df) == engine_trades(hedged, df) == [(2, 8, -1, "exit")]
    # signals on bar 3 (beta 2.5) and bar 5 (beta 2) -> x fills at bars 4 and 6:
    # 0.5 units each time, at the open of the fill bar
    x_open = df["x_open"].to_numpy()
    rehedge_notional = 0.5 * x_open[4] + 0.5 * x_open[6]
    assert hedged.trades["n_rehedges"].tolist() == [2]
    assert hedged.stats.n_rehedges == 2
    assert hedged.stats.fees - keep.stats.fees == pytest.approx(10e-4 * rehedge_notional, rel=1e-12)
    assert hedged.stats.traded_notional - keep.stats.traded_notional == pytest.approx(rehedge_notional)
    assert hedged.equity["qty_x"].tolist()[2:8] == [2.0, 2.0, 2.5, 2.5, 2.0, 2.0]
    # every K bars: only on bars e + K, e + 2K, ...
    every2 = backtest(df, rehedge_every=2, **kw)
    assert every2.equity["qty_x"].tolist()[2:8] == [2.0, 2.0, 2.5, 2.5, 2.0, 2.0]
    every3 = backtest(df, rehedge_every=3, **kw)
    # K=3: one re-hedge, filled on bar 5 with the beta of bar 4 (2.5)
    assert every3.equity["qty_x"].tolist()[2:8] == [2.0, 2.0, 2.0, 2.5, 2.5, 2.5]
    assert every3.trades["qty_x_exit"].tolist() == [2.5]


# --- statistics -----------------------------------------------------------------------------
def test_sharpe_sortino_drawdown_recomputed_from_equity(synth):
    res = backtest(synth, entry=1.2, exit=0.0, fee_bps=1.0)
    eq = res.equity["equity"]
    d = eq.diff().dropna()
    assert res.stats.bar_seconds == 60.0 and res.stats.bars_per_year == MINUTE_BARS_PER_YEAR
    sharpe = d.mean() / d.std() * math.sqrt(MINUTE_BARS_PER_YEAR)
    sortino = d.mean() / math.sqrt((d.clip(upper=0) ** 2).mean()) * math.sqrt(MINUTE_BARS_PER_YEAR)
    assert res.stats.sharpe == pytest.approx(sharpe, rel=1e-9)
    assert res.stats.sortino == pytest.approx(sortino, rel=1e-9)
    peak, mdd, run, longest = 0.0, 0.0, 0, 0
    for v in eq:
        peak = max(peak, v)
        mdd = max(mdd, peak - v)
        run = run + 1 if peak - v > 0 else 0
        longest = max(longest, run)
    assert res.stats.max_drawdown == pytest.approx(mdd, rel=1e-12)
    assert res.stats.max_drawdown_bars == longest > 0
    assert res.stats.max_drawdown_s == longest * 60.0
    assert res.equity["drawdown"].min() == pytest.approx(-mdd)
    cap = res.stats.capital
    assert res.stats.total_return == pytest.approx(eq.iloc[-1] / cap)
    assert res.stats.annual_return == pytest.approx(eq.iloc[-1] / cap * MINUTE_BARS_PER_YEAR / len(eq))
    assert res.stats.turnover == pytest.approx(res.stats.traded_notional / cap)
    closed = res.trades[res.trades["exit_reason"] != "end"]
    assert res.stats.hit_rate == pytest.approx((closed["net_pnl"] > 0).mean())
    assert res.stats.avg_holding_s == pytest.approx(closed["bars_held"].mean() * 60)
    assert res.stats.time_in_market == pytest.approx((res.equity["side"] != 0).mean())


def test_summary_is_json_ready_with_none_for_undefined(synth):
    s = backtest(synth, entry=1.5, capital=10_000.0).summary()
    assert tuple(s) == SUMMARY_KEYS
    assert {"total_pnl", "sharpe", "max_drawdown", "n_trades", "fees",
            "break_even_fee_bps"} <= set(s)
    assert s["capital"] == 10_000.0
    json.dumps(s, allow_nan=False)
    assert all(v is None or type(v) in (int, float) for v in s.values())
    flat = backtest(frame_from_z([0.0] * 5), entry=2.0).summary()
    json.dumps(flat, allow_nan=False)
    assert flat["n_trades"] == 0 and flat["sharpe"] is None and flat["total_return"] is None
    assert flat["hit_rate"] is None and flat["break_even_fee_bps"] is None
    empty = backtest(frame_from_z([0.0] * 5), entry=2.0).trades
    assert list(empty.columns) == list(TRADE_COLUMNS) and empty["gross_pnl"].dtype == np.float64
    assert "<table>" in backtest(synth, entry=1.5)._repr_html_()


# --- inputs and settings ----------------------------------------------------------------------
def test_arrays_input_and_errors():
    df = hand_frame()
    arrays = {c: df[c].to_numpy() for c in df.columns}
    res = backtest(arrays, entry=2.0, fee_bps=10.0, bar_seconds=60.0)
    assert res.stats.total_pnl == pytest.approx(backtest(df, entry=2.0, fee_bps=10.0).stats.total_pnl)
    assert res.trades["entry_time"].tolist() == [3, 8]
    with pytest.raises(ConfigError, match="zscore"):
        backtest(df.drop(columns="zscore"))
    bad = df.copy()
    bad.iloc[4, 0] = np.nan
    with pytest.raises(ConfigError, match=r"y_open.*row 4"):
        backtest(bad)
    with pytest.raises(ConfigError, match="entr"):
        backtest(df, entyr=2.0)
    with pytest.raises(InsufficientData):
        backtest(df.iloc[:1])
    with pytest.raises(ConfigError, match="stop"):
        BacktestSettings(entry=2.0, stop=1.5)
    with pytest.raises(ConfigError, match="rehedge_every"):
        BacktestSettings(rehedge_every=True)
    with pytest.raises(ConfigError, match="fill"):
        BacktestSettings(fill="next_vwap")
    s = BacktestSettings(entry=2.5)
    assert s.replace(exit=0.5) == BacktestSettings(entry=2.5, exit=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.entry = 3.0  # type: ignore[misc]


# --- sweep -------------------------------------------------------------------------------------
def test_sweep_rows_match_single_backtests():
    df = synthetic(n=3000, seed=5)
    table = sweep(df, entries=[1.0, 1.5, 2.0], exits=[0.0, 0.5, 1.5], windows=[40, 80],
                  fee_bps=1.0)
    # (1.0, 1.5) and (1.5, 1.5) are not valid rules (|exit| >= entry): skipped
    assert len(table) == 2 * (3 * 3 - 2)
    assert list(table.columns[:3]) == ["window", "entry", "exit"]
    row = table[(table["window"] == 80) & (table["entry"] == 1.5) & (table["exit"] == 0.5)].iloc[0]
    one = df.copy()
    one["beta"], one["zscore"] = rolling_beta_zscore(df["y_close"], df["x_close"], 80)
    expect = backtest(one, entry=1.5, exit=0.5, fee_bps=1.0).summary()
    for k, v in expect.items():
        assert row[k] == pytest.approx(v, nan_ok=True) if v is not None else pd.isna(row[k])
    # a custom z per window is called once per window
    calls = []

    def zfw(w):
        calls.append(w)
        return default_zscore_for_window(df)(w)

    t2 = sweep(df, entries=[1.5], exits=[0.0, 0.5], windows=[40, 80], zscore_for_window=zfw)
    assert calls == [40, 80] and len(t2) == 4
    # without windows: the data's own z
    t3 = sweep(one, entries=[1.5], exits=[0.5], fee_bps=1.0)
    assert t3["window"].isna().all() and t3["total_pnl"].iloc[0] == pytest.approx(expect["total_pnl"])
    with pytest.raises(ConfigError, match="exit"):
        sweep(df, entries=[1.0], exits=[2.0], windows=[40])


# --- real Binance bars ---------------------------------------------------------------------
def _klines(path) -> pd.DataFrame:
    with gzip.open(path, "rt") as fh:
        first = fh.readline()
    header = 0 if first.startswith("open_time") else None
    names = None if header == 0 else ["open_time", "open", "high", "low", "close", "volume",
                                      "close_time", "quote_volume", "count", "taker_buy_volume",
                                      "taker_buy_quote_volume", "ignore"]
    return pd.read_csv(path, header=header, names=names, usecols=["open_time", "open", "close"])


def test_real_btc_eth_bars(shared_data):
    folder = shared_data / "klines-um-1m-BTCUSDT-ETHUSDT-2022-2023"
    days = [f"2022-05-{d:02d}" for d in range(8, 13)]  # LUNA week
    legs = {}
    for sym in ("BTCUSDT", "ETHUSDT"):
        files = [folder / f"{sym}-1m-{d}.csv.gz" for d in days]
        if not all(f.exists() for f in files):
            pytest.skip(f"kline files for {sym} {days[0]}..{days[-1]} not in {folder}")
        legs[sym] = pd.concat([_klines(f) for f in files]).set_index("open_time")
    y, x = legs["BTCUSDT"], legs["ETHUSDT"]
    assert (y.index == x.index).all()
    idx = pd.DatetimeIndex(pd.to_datetime(y.index, unit="ms", utc=True), name="open_time")
    df = pd.DataFrame({"y_open": y["open"].to_numpy(), "y_close": y["close"].to_numpy(),
                       "x_open": x["open"].to_numpy(), "x_close": x["close"].to_numpy()}, index=idx)
    df["beta"], df["zscore"] = rolling_beta_zscore(df["y_close"], df["x_close"], 240)
    kw = dict(entry=2.0, exit=0.0, stop=4.0, fee_bps=4.0, sizing="gross_notional", size=10_000.0)
    res = backtest(df, **kw)
    assert res.stats.n_trades > 10
    assert res.trades["net_pnl"].sum() == pytest.approx(res.stats.total_pnl, rel=1e-9, abs=1e-6)
    assert_allclose(res.trades["traded_notional"].iloc[:-1], 20_000, rtol=0.05)  # in and out
    again = backtest(df, **{**kw, "fee_bps": res.stats.break_even_fee_bps})
    assert abs(again.stats.total_pnl) < 1e-9 * again.stats.traded_notional
    cut = 4000
    part = df.iloc[:cut].copy()
    part["beta"], part["zscore"] = rolling_beta_zscore(part["y_close"], part["x_close"], 240)
    tr = backtest(part, **kw).trades
    closed = tr[tr["exit_reason"] != "end"].reset_index(drop=True)
    before = res.trades[res.trades["exit_time"] <= part.index[-1]].reset_index(drop=True)
    pd.testing.assert_frame_equal(closed, before)
