"""Pair scanner: figures against statsmodels, train/test separation, the
multiple-testing adjustment, selection on noise and on planted pairs."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from quantlab.errors import ConfigError
from quantlab.scan import (EVALUATION_COLUMNS, FORMATION_COLUMNS, PairBars, ScanSettings,
                           ScanWindows, adjust_and_select, evaluation_figures, formation_figures,
                           lead_lag)
from quantlab.scan.run import Progress, plan_chunks, scan
from quantlab.scan.source import write_universe
from quantlab.scan.synthetic import synthetic_universe

TF = 60_000


def _windows(u, n_form: int, n_eval: int) -> ScanWindows:
    s0 = u.start_ms
    return ScanWindows(formation=(s0, s0 + n_form * TF),
                       evaluation=(s0 + n_form * TF, s0 + (n_form + n_eval) * TF))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    u = synthetic_universe(16, 3000, n_planted=3, seed=7, illiquid=(5,))
    d = tmp_path_factory.mktemp("archive")
    write_universe(d, u.bars)
    return u, d


def _pair(u, a: str, b: str, lo: int, hi: int) -> PairBars:
    y, x = u.bars[a].iloc[lo:hi], u.bars[b].iloc[lo:hi]
    return PairBars(y["open"].to_numpy(), y["close"].to_numpy(), x["open"].to_numpy(),
                    x["close"].to_numpy(), y["quote_volume"].to_numpy(),
                    x["quote_volume"].to_numpy(), 60.0)


# --- windows and settings -----------------------------------------------------------------
def test_windows_are_validated_apart():
    w = ScanWindows(formation="2024-01-01/2024-01-21", evaluation=("2024-01-21", "2024-01-31"))
    assert w.formation[1] == w.evaluation[0]
    with pytest.raises(ConfigError, match="evaluation: expected a window that starts at or after"):
        ScanWindows(formation="2024-01-01/2024-01-21", evaluation="2024-01-20/2024-01-31")
    with pytest.raises(ConfigError, match="formation: expected an end after the start"):
        ScanWindows(formation="2024-01-21/2024-01-01", evaluation="2024-02-01/2024-02-02")
    with pytest.raises(ConfigError, match="START/END"):
        ScanWindows(formation="2024-01-01", evaluation="2024-02-01/2024-02-02")
    with pytest.raises(ConfigError, match="exit_z"):
        ScanSettings(entry_z=1.0, exit_z=1.5)
    with pytest.raises(ConfigError, match="q"):
        ScanSettings(q=0.0)


# --- figures against statsmodels ------------------------------------------------------------
def test_formation_figures_match_statsmodels(planted):
    from statsmodels.tsa.stattools import coint
    from statsmodels.tsa.vector_ar.vecm import coint_johansen

    u, _ = planted
    a, b = u.planted[0]
    bars = _pair(u, a, b, 0, 2000)
    fig, params = formation_figures(bars, ScanSettings(eg_lags=1))
    y, x = bars.y_close, bars.x_close
    for (lhs, rhs), tag in (((y, x), "yx"), ((x, y), "xy")):
        stat, p, crit = coint(lhs, rhs, trend="c", maxlag=1, autolag=None)
        np.testing.assert_allclose(fig[f"coint_stat_{tag}"], stat, rtol=1e-9)
        np.testing.assert_allclose(fig[f"coint_pvalue_{tag}"], p, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(fig["coint_crit_5"], crit[1], rtol=1e-12)
    jo = coint_johansen(np.column_stack([y, x]), 0, 1)
    np.testing.assert_allclose(fig["johansen_trace"], jo.trace_stat[0], rtol=1e-12)
    np.testing.assert_allclose(fig["johansen_trace_crit_5"], jo.trace_stat_crit_vals[0, 1])
    beta, alpha = np.polyfit(x, y, 1)
    np.testing.assert_allclose([params.hedge_ratio, params.intercept], [beta, alpha], rtol=1e-8)
    spread = y - beta * x - alpha
    ds, lag = np.diff(spread), spread[:-1]
    slope = np.polyfit(lag, ds, 1)[0]
    np.testing.assert_allclose(fig["half_life_bars"], -np.log(2) / np.log(1 + slope), rtol=1e-8)
    np.testing.assert_allclose(fig["ssd"], np.sum((y / y[0] - x / x[0]) ** 2), rtol=1e-12)
    ry, rx = np.diff(np.log(y)), np.diff(np.log(x))
    np.testing.assert_allclose(fig["corr_returns"], np.corrcoef(ry, rx)[0, 1], rtol=1e-12)
    dev = spread - spread.mean()
    assert fig["n_crossings"] == int(np.sum(np.sign(dev[1:]) != np.sign(dev[:-1])))
    assert fig["liquidity_quote"] == min(np.median(bars.y_quote_volume),
                                         np.median(bars.x_quote_volume))
    assert fig["half_life_bars"] < 20 and fig["coint_pvalue"] < 1e-6 and fig["n_trades"] > 5


@pytest.mark.filterwarnings("ignore:adfuller currently returns:FutureWarning")
def test_evaluation_uses_the_frozen_parameters(planted):
    from statsmodels.tsa.stattools import adfuller

    u, _ = planted
    a, b = u.planted[1]
    settings = ScanSettings()
    _, params = formation_figures(_pair(u, a, b, 0, 2000), settings)
    ev_bars = _pair(u, a, b, 2000, 3000)
    ev = evaluation_figures(params, ev_bars, settings)
    assert set(ev) == set(EVALUATION_COLUMNS)
    spread = ev_bars.y_close - params.hedge_ratio * ev_bars.x_close - params.intercept
    p = adfuller(spread, maxlag=1, autolag=None, regression="c")[1]
    np.testing.assert_allclose(ev["eval_adf_pvalue"], p, rtol=1e-9, atol=1e-300)
    z = (spread - params.spread_mean) / params.spread_std
    np.testing.assert_allclose(ev["eval_spread_mean_z"], z.mean(), rtol=1e-12)
    # the same backtest engine on the frozen z gives the same figures
    from quantlab.backtest import backtest

    bt = backtest({"y_open": ev_bars.y_open, "y_close": ev_bars.y_close, "x_open": ev_bars.x_open,
                   "x_close": ev_bars.x_close, "beta": np.full(z.size, params.hedge_ratio),
                   "zscore": z}, entry=2.0, exit=0.0, sizing="gross_notional", bar_seconds=60)
    assert ev["eval_n_trades"] == bt.stats.n_trades > 0
    np.testing.assert_allclose(ev["eval_total_return"], bt.stats.total_return, rtol=1e-12)


# --- multiple testing -------------------------------------------------------------------------
def test_adjustment_covers_every_pair_and_ordering():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    n = 40
    t = pd.DataFrame({"y": [f"A{i}" for i in range(n)], "x": "B",
                      "coint_pvalue_yx": rng.uniform(size=n) ** 3,
                      "coint_pvalue_xy": rng.uniform(size=n) ** 3,
                      "illiquid": False, "error": "", "half_life_bars": 10.0})
    t.loc[3, "coint_pvalue_xy"] = np.nan  # a test that did not run is not counted
    out = adjust_and_select(t, ScanSettings(q=0.1))
    raw = np.r_[t["coint_pvalue_yx"], t["coint_pvalue_xy"]]
    ok = np.isfinite(raw)
    assert out.attrs["n_tests"] == ok.sum() == 2 * n - 1
    for m, method in (("bh", "fdr_bh"), ("by", "fdr_by")):
        ref = np.full(raw.size, np.nan)
        ref[ok] = multipletests(raw[ok], method=method)[1]
        np.testing.assert_array_equal(out[f"coint_pvalue_yx_{m}_adj"], ref[:n])
        np.testing.assert_array_equal(out[f"coint_pvalue_xy_{m}_adj"], ref[n:])
        np.testing.assert_array_equal(out[f"coint_pvalue_{m}_adj"].drop(index=3),
                                      np.fmax(ref[:n], ref[n:])[np.arange(n) != 3])
    assert np.isnan(out.loc[3, "coint_pvalue_by_adj"]) and not out.loc[3, "selected"]
    expect = (out["coint_pvalue_by_adj"] <= 0.1).to_numpy()
    np.testing.assert_array_equal(out["selected"].to_numpy(), expect)
    both = out["coint_pvalue_by_adj"].notna()
    assert (out.loc[both, "coint_pvalue_bh_adj"] <= out.loc[both, "coint_pvalue_by_adj"]).all()
    t.loc[0, "illiquid"] = True
    t.loc[0, ["coint_pvalue_yx", "coint_pvalue_xy"]] = 1e-12
    assert not adjust_and_select(t, ScanSettings(q=0.1)).loc[0, "selected"]


def test_noise_universe_selects_nothing(tmp_path):
    u = synthetic_universe(20, 2500, n_planted=0, seed=11)
    write_universe(tmp_path, u.bars)
    res = scan(u.symbols, archive=tmp_path, windows=_windows(u, 1800, 700), workers=1)
    t = res.table
    assert len(t) == 190 and res.summary()["tests"] == 380
    assert t["selected"].sum() <= 1
    assert (t["coint_pvalue_bh_adj"] <= 0.05).sum() <= 2
    # the raw p-values are spread out as under the null: some small ones exist
    assert (t["coint_pvalue_yx"] < 0.05).sum() >= 2


def test_planted_pairs_are_found_and_illiquid_excluded(planted, tmp_path):
    u, d = planted
    settings = ScanSettings(min_notional=1_000.0)
    res = scan(u.symbols, archive=d, windows=_windows(u, 2000, 1000), settings=settings,
               workers=1)
    t = res.table.set_index(["y", "x"])
    sel = set(res.selected.set_index(["y", "x"]).index)
    planted_liquid = {p for p in u.planted if "S005USDT" not in p}
    assert planted_liquid <= sel
    assert len(sel - planted_liquid) <= 1
    # S004/S005 is planted but S005 trades 1,000 times less than the others
    assert t.loc[("S004USDT", "S005USDT"), "illiquid"]
    assert t.loc[("S004USDT", "S005USDT"), "coint_pvalue_by_adj"] < 1e-6
    assert ("S004USDT", "S005USDT") not in sel
    assert t["illiquid"].sum() == 15  # every pair with S005
    # out of sample the planted spreads still revert
    assert (t.loc[sorted(planted_liquid), "eval_adf_pvalue"] < 0.01).all()


def _perturbed(u, start_ms: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(99)
    out = {}
    for sym, frame in u.bars.items():
        f = frame.copy()
        late = f.index >= pd.Timestamp(start_ms, unit="ms", tz="UTC")
        k = int(late.sum())
        scale = np.exp(np.cumsum(rng.normal(scale=5e-3, size=k)))
        for c in ("open", "high", "low", "close", "vwap"):
            f.loc[late, c] = f.loc[late, c].to_numpy() * scale
        f.loc[late, "quote_volume"] = f.loc[late, "quote_volume"].to_numpy() * 0.01
        out[sym] = f
    return out


def test_evaluation_bars_cannot_influence_selection(planted, tmp_path):
    u, d = planted
    w = _windows(u, 2000, 1000)
    write_universe(tmp_path, _perturbed(u, w.evaluation[0]))
    settings = ScanSettings(min_notional=1_000.0)
    a = scan(u.symbols, archive=d, windows=w, settings=settings, workers=1).table
    b = scan(u.symbols, archive=tmp_path, windows=w, settings=settings, workers=1).table
    keep = ["y", "x", *FORMATION_COLUMNS, *[c for c in a if c.endswith("_adj")], "selected"]
    pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=True)
    assert a["selected"].any()
    # ...while the evaluation figures did see the change
    assert not np.allclose(a["eval_total_return"].fillna(0), b["eval_total_return"].fillna(0))


def test_too_few_bars_is_an_error_row_not_a_crash(planted):
    u, d = planted
    s0 = u.start_ms
    w = ScanWindows(formation=(s0, s0 + 50 * TF), evaluation=(s0 + 50 * TF, s0 + 3000 * TF))
    res = scan(["S000USDT", "S001USDT"], archive=d, windows=w, workers=1)
    row = res.table.iloc[0]
    assert row["error"].startswith("formation: formation window (aligned bars) needs at least 200")
    assert not row["selected"] and np.isnan(row["coint_pvalue"])


# --- lead-lag --------------------------------------------------------------------------------
@pytest.mark.parametrize("lag", [4, -2])
def test_lead_lag_finds_a_planted_lag(lag):
    rng = np.random.default_rng(5)
    n = 4000
    common = rng.normal(scale=1e-3, size=n + 10)
    rx = common[10:]
    ry = 0.8 * np.roll(common, lag)[10:] + rng.normal(scale=5e-4, size=n)
    x, y = 100 * np.exp(np.cumsum(rx)), 30 * np.exp(np.cumsum(ry))
    res = lead_lag(y, x, max_lag=8)
    assert res.best_lag == lag
    assert res.leader == ("x" if lag > 0 else "y")
    ref = pd.Series(np.diff(np.log(y))).corr(pd.Series(np.diff(np.log(x))).shift(lag))
    np.testing.assert_allclose(res.best_corr, ref, rtol=1e-10)
    assert res.corr[res.lags == 0][0] < 0.2


# --- chunks and progress ------------------------------------------------------------------------
def test_chunks_cover_every_pair_once():
    syms = [f"S{i:02d}" for i in range(23)]
    chunks = plan_chunks(syms, pairs_per_task=30)
    pairs = [p for c in chunks for p in c]
    assert len(pairs) == len(set(pairs)) == 23 * 22 // 2
    assert all(a < b for a, b in pairs)
    assert max(len(c) for c in chunks) <= 30 and len(chunks) > 5


class _FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_in_logs():
    now = [0.0]
    tty = _FakeTTY()
    bar = Progress(100, stream=tty, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 1.0
        bar.update(25)
    bar.close()
    text = tty.getvalue()
    assert text.startswith("\rscan: 25/100 pairs (25%) 25.0 pairs/s ETA 3 s")
    assert "100/100 pairs (100%)" in text and text.endswith("\n")
    log = io.StringIO()
    bar = Progress(100, stream=log, every_s=10.0, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 3.0
        bar.update(10)
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 4 and lines[-1].startswith("scan: 100/100 pairs")
    assert "\r" not in log.getvalue()


def test_pure_scan_modules_import_no_ui_dask_or_sockets():
    import subprocess
    import sys

    probe = ("import sys; import quantlab.scan, quantlab.scan.core, quantlab.scan.leadlag, "
             "quantlab.scan.synthetic; print(sorted(m for m in ('bokeh', 'ipywidgets', "
             "'distributed', 'dask', 'websockets', 'sqlite3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scan_tests_are_recorded_in_the_ledger_by_the_client(planted, tmp_path):
    from quantlab.ledger import Ledger

    u, d = planted
    w = _windows(u, 2000, 1000)
    syms = u.symbols[:6]
    path = tmp_path / "ledger.sqlite"
    res = scan(syms, archive=d, windows=w, workers=1, ledger=path)
    assert res.ledger == {"ledger": str(path), "trials": 30, "new": 30}
    with Ledger(path) as led:
        frame = led.frame()
        assert len(frame) == 30 and set(frame["kind"]) == {"scan"}
        assert frame["sharpe"].isna().all()  # test trials: they count in m, not in N
        t = res.table.set_index(["y", "x"])
        a, b = u.planted[0]
        rec = frame[(frame["y"] == a) & (frame["x"] == b)].iloc[0]
        assert rec["pvalue"] == t.loc[(a, b), "coint_pvalue_yx"]
        rev = frame[(frame["y"] == b) & (frame["x"] == a)].iloc[0]
        assert rev["pvalue"] == t.loc[(a, b), "coint_pvalue_xy"]
        assert rec["start_ms"] == w.formation[0] and rec["end_ms"] == w.formation[1]
        assert led.latest(f"{a}/{b}", kind="scan") is not None
    # the same scan on the same bars counts nothing new
    again = scan(syms, archive=d, windows=w, workers=1, ledger=path)
    assert again.ledger["new"] == 0 and again.ledger["trials"] == 30
    pd.testing.assert_frame_equal(again.table, res.table)


def test_scan_table_deflates_each_formation_sharpe_by_the_scan():
    """``dsr``: every pair's formation backtest deflated by the number of pairs
    with a Sharpe in the scan and their Sharpe variance (Bailey and Lopez de Prado)."""
    from quantlab.analytics import deflated_sharpe_ratio
    from quantlab.scan.core import deflated_sharpes

    rng = np.random.default_rng(7)
    n = 30
    t = pd.DataFrame({"sharpe_per_bar": rng.normal(0, 0.01, n), "pnl_skew": rng.normal(0, 0.3, n),
                      "pnl_kurtosis": 3 + rng.uniform(0, 2, n), "pnl_n_obs": 5000.0})
    t.loc[4, "sharpe_per_bar"] = np.nan  # never traded: no trial Sharpe
    t.loc[7, "sharpe_per_bar"] = 0.08   # one strong pair
    dsr = deflated_sharpes(t)
    ok = t["sharpe_per_bar"].notna()
    var = float(np.var(t.loc[ok, "sharpe_per_bar"], ddof=1))
    ref = deflated_sharpe_ratio(0.08, n_obs=5000, n_trials=int(ok.sum()), sharpe_variance=var,
                                skew=t.loc[7, "pnl_skew"], kurtosis=t.loc[7, "pnl_kurtosis"]).dsr
    assert dsr[7] == pytest.approx(ref, rel=1e-12) and np.isnan(dsr[4])
    assert np.nanargmax(dsr) == 7 and np.all((dsr[ok] >= 0) & (dsr[ok] <= 1))
