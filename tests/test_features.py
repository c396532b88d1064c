"""Feature table: causality by truncation, labels kept apart, indicators against
pandas references, hedge ratios against statsmodels, the CLI (files and archive)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from quantlab import features as qf
from quantlab.analytics import analyze
from quantlab.bars import align_pair
from quantlab.cli import main
from quantlab.errors import ConfigError

D0 = 1_640_995_200_000  # 2022-01-01 UTC


def _pair(n: int = 3000, seed: int = 3) -> pd.DataFrame:
    """Aligned 1m bars of a seeded cointegrated pair with volumes and taker flow,
    crossing a UTC midnight (for the daily VWAP)."""
    rng = np.random.default_rng(seed)
    x = 40_000.0 * np.exp(np.cumsum(rng.normal(0, 8e-4, n)))
    s = np.zeros(n)
    for t in range(1, n):
        s[t] = 0.95 * s[t - 1] + rng.normal(0, 4.0)
    y = 150.0 + 0.07 * x + s
    start = D0 + DAY_HALF
    t = start + 60_000 * np.arange(n)
    legs = []
    for close in (y, x):
        vol = rng.uniform(0.5, 20.0, n)
        frame = pd.DataFrame({
            "open": np.r_[close[0], close[:-1]], "high": close * 1.0004, "low": close * 0.9996,
            "close": close, "volume": vol, "quote_volume": vol * close * (1 + rng.normal(0, 1e-4, n)),
            "trade_count": rng.integers(1, 80, n), "vwap": close,
            "taker_buy_volume": vol * rng.uniform(0.2, 0.8, n),
            "is_empty": np.zeros(n, bool), "is_forming": np.zeros(n, bool)},
            index=pd.DatetimeIndex(pd.to_datetime(t, unit="ms", utc=True), name="open_time"))
        legs.append(frame)
    return align_pair(legs[0], legs[1], timeframe="1m", drop_gaps=True)


DAY_HALF = 43_200_000


@pytest.fixture(scope="module")
def pair() -> pd.DataFrame:
    return _pair()


@pytest.fixture(scope="module")
def table(pair: pd.DataFrame) -> pd.DataFrame:
    return qf.feature_table(pair, window=60, labels=True)


# --- causality ----------------------------------------------------------------------------------
@pytest.mark.parametrize("hedge", ["rolling-ols", "kalman"])
def test_every_feature_is_causal_by_truncation(pair: pd.DataFrame, hedge: str) -> None:
    full = qf.feature_table(pair, window=60, hedge=hedge)
    assert not qf.label_columns(full)  # labels are excluded unless asked
    # (the Kalman hedge itself needs its 500-bar warm-up: analyze refuses fewer bars)
    for cut in (80, 450, 1100, 2200, len(pair) - 1) if hedge != "kalman" else (500, 1300, len(pair) - 1):
        short = qf.feature_table(pair.iloc[:cut], window=60, hedge=hedge)
        assert list(short.columns) == list(full.columns)
        for col in full.columns:
            np.testing.assert_array_equal(short[col].to_numpy(), full[col].to_numpy()[:cut],
                                          err_msg=f"{col} at cut {cut} is not causal")
    # the table is not trivially NaN: past the warm-ups every column has values
    tail = full.iloc[700:]
    assert not [c for c in tail.columns if tail[c].isna().all()]


def test_labels_look_ahead_and_are_kept_apart(pair: pd.DataFrame, table: pd.DataFrame) -> None:
    labels = qf.label_columns(table)
    assert labels and all(c.startswith("label_") for c in labels)
    assert set(qf.feature_columns(table)).isdisjoint(labels)
    plain = qf.feature_table(pair, window=60)
    pd.testing.assert_frame_equal(table[qf.feature_columns(table)], plain)  # labels change nothing else
    y = pair["y_close"].to_numpy()
    h = 5
    lab = table[f"label_y_fwd_ret_{h}"].to_numpy()
    np.testing.assert_allclose(lab[:-h], np.log(y[h:] / y[:-h]), rtol=1e-12, atol=1e-14)
    assert np.isnan(lab[-h:]).all()
    # a label is what the future says: cutting the data changes it (so it can never be a feature)
    cut = qf.feature_table(pair.iloc[:1000], window=60, labels=True)
    assert np.isnan(cut[f"label_y_fwd_ret_{h}"].iloc[999]) and np.isfinite(lab[999])
    beta = table["beta"].to_numpy()
    x = pair["x_close"].to_numpy()
    chg = table[f"label_spread_fwd_chg_{h}"].to_numpy()
    t = 1500
    assert chg[t] == pytest.approx((y[t + h] - y[t]) - beta[t] * (x[t + h] - x[t]), rel=1e-12)


# --- reuse of analytics; hedge ratios against statsmodels ---------------------------------------
def test_pair_state_is_analyze_and_hedges_match_statsmodels(pair: pd.DataFrame, table: pd.DataFrame) -> None:
    ref = analyze(pair, window=60, with_kalman=True, health=False).frame
    for a, b in (("zscore", "zscore"), ("spread", "spread"), ("corr", "corr"), ("half_life", "half_life"),
                 ("beta_rolling", "beta"), ("beta_kalman", "kalman_beta"), ("y_vol", "y_vol"),
                 ("y_logret_1", "y_ret"), ("x_trade_rate", "x_trade_rate")):
        np.testing.assert_array_equal(table[a].to_numpy(), ref[b].to_numpy(), err_msg=a)
    y, x = pair["y_close"].to_numpy(), pair["x_close"].to_numpy()
    for t in (59, 800, 2999):
        fit = sm.OLS(y[: t + 1], sm.add_constant(x[: t + 1])).fit()
        assert table["beta_static_expanding"].iloc[t] == pytest.approx(fit.params[1], rel=1e-8)
        win = sm.OLS(y[t - 59: t + 1], sm.add_constant(x[t - 59: t + 1])).fit()
        assert table["beta_rolling"].iloc[t] == pytest.approx(win.params[1], rel=1e-7)
    assert np.isnan(table["beta_static_expanding"].iloc[58])


# --- indicators against pandas references ------------------------------------------------------
def test_indicators_match_pandas(pair: pd.DataFrame, table: pd.DataFrame) -> None:
    c = pair["y_close"]
    np.testing.assert_allclose(table["y_sma_20"], c.rolling(20).mean(), rtol=1e-10)
    np.testing.assert_allclose(table["y_ema_12"], c.ewm(span=12, adjust=False).mean(), rtol=1e-12)
    np.testing.assert_allclose(table["y_ema_26"], c.ewm(span=26, adjust=False).mean(), rtol=1e-12)
    mid, sd = c.rolling(20).mean(), c.rolling(20).std(ddof=0)  # Bollinger: population std
    np.testing.assert_allclose(table["y_bb_upper_20"], mid + 2 * sd, rtol=1e-9)
    np.testing.assert_allclose(table["y_bb_lower_20"], mid - 2 * sd, rtol=1e-9)
    pctb = (c - (mid - 2 * sd)) / (4 * sd)
    np.testing.assert_allclose(table["y_bb_pctb_20"], pctb, rtol=1e-6, atol=1e-9)
    qv, v = pair["x_quote_volume"], pair["x_volume"]
    np.testing.assert_allclose(table["x_vwap_60"], qv.rolling(60).sum() / v.rolling(60).sum(), rtol=1e-9)
    day = pair.index.floor("D")
    ref_day = qv.groupby(day).cumsum() / v.groupby(day).cumsum()
    np.testing.assert_allclose(table["x_vwap_day"], ref_day, rtol=1e-12)
    assert table["x_vwap_day"].iloc[719] != table["x_vwap_day"].iloc[720]  # reset at 00:00 UTC
    # Wilder RSI: seed = mean of the first n changes, then ewm(alpha=1/n, adjust=False)
    n = 14
    d = c.diff()
    gain, loss = d.clip(lower=0), (-d).clip(lower=0)

    def wilder(s: pd.Series) -> pd.Series:
        seed = s.iloc[1:n + 1].mean()
        seq = pd.concat([pd.Series([seed]), s.iloc[n + 1:].reset_index(drop=True)])
        out = seq.ewm(alpha=1 / n, adjust=False).mean().to_numpy()
        return pd.Series(np.r_[np.full(n, np.nan), out], index=s.index)

    g, lo = wilder(gain), wilder(loss)
    np.testing.assert_allclose(table["y_rsi_14"], 100 * g / (g + lo), rtol=1e-10)
    assert np.isnan(table["y_rsi_14"].iloc[:n]).all() and np.isfinite(table["y_rsi_14"].iloc[n])
    r = table["y_rsi_14"].dropna()
    assert ((r >= 0) & (r <= 100)).all()
    buy = pair["y_taker_buy_volume"] / pair["y_volume"]
    np.testing.assert_allclose(table["y_taker_buy_share"], buy, rtol=1e-15)
    y = pair["y_close"].to_numpy()
    np.testing.assert_allclose(table["y_logret_15"].to_numpy()[15:], np.log(y[15:] / y[:-15]), rtol=1e-10,
                               atol=1e-14)


def test_indicator_edges_and_bad_settings() -> None:
    assert np.isnan(qf.rsi([1.0, 1.0, 1.0, 1.0], 2)[2:]).all()  # no movement: undefined, not 50
    assert qf.rsi([1.0, 2.0, 3.0, 4.0], 2)[2:].tolist() == [100.0, 100.0]
    assert qf.ema([], 5).size == 0
    with pytest.raises(ConfigError, match="horizons"):
        qf.FeatureSettings(horizons=(0,))
    with pytest.raises(ConfigError, match="bb_k"):
        qf.FeatureSettings(bb_k=-1)


# --- CLI ------------------------------------------------------------------------------------------
def _kline_files(folder: Path, n: int = 1440) -> list[Path]:
    pair = _pair(n, seed=11)
    out = []
    for sym, leg in (("ETHUSDT", "y"), ("BTCUSDT", "x")):
        t = pair.index.as_unit("ms").asi8
        rows = ["open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                "taker_buy_volume,taker_buy_quote_volume,ignore"]
        for i in range(n):
            c = pair[f"{leg}_close"].iloc[i]
            v = pair[f"{leg}_volume"].iloc[i]
            rows.append(f"{t[i]},{pair[f'{leg}_open'].iloc[i]:.2f},{c * 1.0005:.2f},{c * 0.9995:.2f},"
                        f"{c:.2f},{v:.4f},{t[i] + 59_999},{v * c:.4f},{int(pair[f'{leg}_trade_count'].iloc[i])},"
                        f"{v / 2:.4f},{v * c / 2:.4f},0")
        path = folder / f"{sym}-1m-2022-01-01.csv.gz"
        path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
        out.append(path)
    return out


def test_cli_features_from_files_and_archive(tmp_path: Path, capsys) -> None:
    files = _kline_files(tmp_path)
    out = tmp_path / "f.parquet"
    base = ["--y", "ETHUSDT", "--x", "BTCUSDT", "--window", "30"]
    assert main(["features", "--files", *map(str, files), *base, "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert "zscore" in frame.columns and "y_rsi_14" in frame.columns
    assert not [c for c in frame.columns if c.startswith("label_")]
    assert "features" in capsys.readouterr().out
    arch = tmp_path / "arch"
    assert main(["archive", "--files", *map(str, files), "--out", str(arch)]) == 0
    csv = tmp_path / "f.csv"
    assert main(["features", "--archive", str(arch), *base, "--labels", "--label-horizons", "5,10",
                 "--horizons", "1,3", "--out", str(csv)]) == 0
    back = pd.read_csv(csv, comment="#")
    assert {"label_y_fwd_ret_5", "label_spread_fwd_chg_10", "y_logret_3"} <= set(back.columns)
    assert "label_y_fwd_ret_1" not in back.columns
    np.testing.assert_allclose(back["zscore"].to_numpy(), frame["zscore"].to_numpy(), rtol=1e-9,
                               equal_nan=True)
    from quantlab.export import read_metadata

    meta = read_metadata(csv)
    assert "label_y_fwd_ret_5" in str(meta) and "archive" in str(meta)


def test_cli_features_bad_input_exits_2(tmp_path: Path, capsys) -> None:
    files = _kline_files(tmp_path, n=200)
    with pytest.raises(SystemExit) as exc:
        main(["features", "--files", *map(str, files), "--y", "ETHUSDT", "--x", "BTCUSDT", "--window", "30",
              "--horizons", "0,5", "--out", str(tmp_path / "f.csv")])
    assert exc.value.code == 2
    assert "horizons" in capsys.readouterr().err
    rc = main(["features", "--files", *map(str, files), "--y", "ETHUSDT", "--x", "BTCUSDT", "--window", "30",
               "--bb-k", "0", "--out", str(tmp_path / "f.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "bb_k" in err and len(err.splitlines()) == 1


# --- real data ------------------------------------------------------------------------------------
def test_real_day_of_btc_eth_minutes(shared_data: Path) -> None:
    folder = shared_data / "klines-um-1m-BTCUSDT-ETHUSDT-2022-2023"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    from quantlab.pairs import load_pair_bars

    files = [folder / f"{s}-1m-2022-11-0{d}.csv.gz" for s in ("BTCUSDT", "ETHUSDT") for d in (8, 9)]
    pair = load_pair_bars(y="ETHUSDT", x="BTCUSDT", files=files)
    full = qf.feature_table(pair, window=120)
    for cut in (700, 1500, 2500):  # FTX week: causal on real data too
        short = qf.feature_table(pair.iloc[:cut], window=120)
        pd.testing.assert_frame_equal(short, full.iloc[:cut], check_exact=True, check_freq=False)
    rsi = full["y_rsi_14"].dropna()
    assert rsi.between(0, 100).all() and rsi.std() > 5
    assert full["corr"].iloc[-1] > 0.5  # ETH and BTC move together


def test_features_and_archive_import_no_ui_threads_or_handlers() -> None:
    import subprocess
    import sys

    probe = ("import logging, sys, threading\nn = threading.active_count()\n"
             "import quantlab.features, quantlab.archive\n"
             "heavy = sorted(m for m in ('bokeh', 'ipywidgets', 'jupyter_bokeh', 'websockets', 'tornado')"
             " if m in sys.modules)\n"
             "print(heavy, threading.active_count() - n, len(logging.getLogger().handlers))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] 0 0"
