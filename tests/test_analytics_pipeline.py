"""``analyze``: frame shape, definitions of each column, the in-sample summary
against statsmodels, inputs, errors, health verdicts, import hygiene."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose
from statsmodels.tsa.stattools import adfuller, coint

from quantlab.analytics import (FRAME_COLUMNS, analyze, bars_needed, relationship_health,
                                rolling_corr, rolling_zscore, shortfall)
from quantlab.errors import ConfigError, InsufficientData
from tests.pairs import cointegrated_pair, independent_walks

SUMMARY_KEYS = {"hedge_ratio", "intercept", "r2", "static_fit_in_sample", "adf_stat",
                "adf_pvalue", "coint_pvalue", "half_life_bars", "n_bars", "method", "window"}


@pytest.fixture(scope="module")
def aligned():
    n = 2000
    y, x = cointegrated_pair(n, seed=41, vol=2e-3)
    index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="open_time")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"y_close": y, "y_volume": rng.uniform(1, 5, n),
                          "y_trade_count": rng.integers(10, 100, n),
                          "x_close": x, "x_volume": rng.uniform(1, 5, n),
                          "x_trade_count": rng.integers(10, 100, n)}, index=index)
    frame.attrs.update(y_symbol="ETHUSDT", x_symbol="BTCUSDT")
    return frame


@pytest.fixture(scope="module")
def result(aligned):
    return analyze(aligned, window=60)


def test_frame_shape_and_columns(aligned, result):
    f = result.frame
    assert len(f) == len(aligned) and f.index.equals(aligned.index)
    assert list(f.columns[:len(FRAME_COLUMNS)]) == list(FRAME_COLUMNS)
    for c in ("y_volume", "x_trades", "y_trade_rate", "health_coint_pvalue", "beta_drift",
              "verdict"):
        assert c in f.columns
    assert_allclose(f["y_trade_rate"], aligned["y_trade_count"] / 60.0)
    assert result["zscore"] is not None                         # indexable by column


def test_column_definitions(result):
    f = result.frame
    assert_allclose(f["spread"], f["y"] - f["beta"] * f["x"] - f["alpha"], rtol=1e-9,
                    atol=1e-9, equal_nan=True)
    s = f["spread"]
    assert_allclose(f["spread_mean"], s.rolling(60).mean(), rtol=1e-9, equal_nan=True)
    assert_allclose(f["spread_std"], s.rolling(60).std(), rtol=1e-8, equal_nan=True)
    assert_allclose(f["zscore"], (s - s.rolling(60).mean()) / s.rolling(60).std(), rtol=1e-7,
                    atol=1e-9, equal_nan=True)
    ry, rx = np.log(f["y"]).diff(), np.log(f["x"]).diff()
    assert_allclose(f["corr"], ry.rolling(60).corr(rx), rtol=1e-8, atol=1e-12, equal_nan=True)
    vol = ry.rolling(60).std() * math.sqrt(365 * 1440)           # 1-minute bars, 365 days
    assert_allclose(f["y_vol"], vol, rtol=1e-8, equal_nan=True)
    need = bars_needed(60)
    for col in ("beta", "zscore", "corr", "half_life"):
        first = int(np.flatnonzero(f[col].notna().to_numpy())[0])
        assert first == need[col] - 1, col                       # NaN until enough bars, then values


def test_summary_matches_statsmodels_on_the_static_spread(result, aligned):
    s = result.summary()
    assert SUMMARY_KEYS <= set(s)
    assert s["static_fit_in_sample"] is True and s["method"] == "rolling-ols"
    assert (s["y_symbol"], s["x_symbol"]) == ("ETHUSDT", "BTCUSDT")
    y, x = aligned["y_close"].to_numpy(), aligned["x_close"].to_numpy()
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert s["hedge_ratio"] == pytest.approx(ols.params[1], rel=1e-9)
    assert s["intercept"] == pytest.approx(ols.params[0], rel=1e-7)
    assert s["r2"] == pytest.approx(ols.rsquared, rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = adfuller(ols.resid, result_object=True)           # statsmodels' defaults
    assert s["adf_stat"] == pytest.approx(ref.statistic, rel=1e-8)
    assert s["adf_pvalue"] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    assert s["adf_lags"] == ref.lags
    assert s["coint_pvalue"] == pytest.approx(coint(y, x)[1], rel=1e-6, abs=1e-300)
    lag, ds = ols.resid[:-1], np.diff(ols.resid)
    b = np.polyfit(lag, ds, 1)[0]
    assert s["half_life_bars"] == pytest.approx(-math.log(2) / math.log(1 + b), rel=1e-8)
    assert s["n_bars"] == 2000 and s["bar_seconds"] == 60.0
    json.dumps(s)                                                # plain types only
    assert "<table>" in result._repr_html_()


def test_verdicts_cointegrated_vs_independent():
    y, x = cointegrated_pair(4000, seed=3, vol=2e-3)
    assert analyze(y, x, window=40).summary()["verdict"] == "cointegrated"
    yi, xi = independent_walks(4000, seed=3)
    s = analyze(yi, xi, window=40).summary()
    assert s["verdict"] in ("decoupling", "weakening")
    h = relationship_health(yi, xi, window=800, every=40, beta_window=40)
    assert (h.frame["verdict"] != "cointegrated").mean() > 0.8
    assert h.latest["verdict"] in ("decoupling", "weakening")


def test_health_pvalue_is_statsmodels_coint_with_fixed_lag():
    y, x = cointegrated_pair(1200, seed=8, vol=2e-3)
    h = relationship_health(y, x, window=500, every=100, beta_window=30, lags=1)
    row = h.frame.iloc[3]
    r = int(row["bar"])
    ref = coint(y[r - 499:r + 1], x[r - 499:r + 1], maxlag=1, autolag=None)
    assert row["coint_stat"] == pytest.approx(ref[0], rel=1e-9)
    assert row["coint_pvalue"] == pytest.approx(ref[1], rel=1e-7)


def test_inputs_arrays_series_and_frames_agree(aligned):
    y, x = aligned["y_close"], aligned["x_close"]
    a = analyze(y.to_numpy(), x.to_numpy(), window=60, health=False).frame
    b = analyze(y, x, window=60, health=False).frame
    c = analyze(aligned[["y_close", "x_close"]], window=60, health=False).frame
    assert isinstance(a.index, pd.RangeIndex) and b.index.equals(aligned.index)
    for col in ("beta", "zscore", "corr"):
        assert_allclose(a[col], c[col], equal_nan=True, rtol=0)
        assert_allclose(b[col], c[col], equal_nan=True, rtol=0)


@pytest.mark.parametrize("hedge", ["ols", "huber", "theil-sen", "kalman"])
def test_every_hedge_gives_causal_columns_with_the_identity(aligned, hedge):
    f = analyze(aligned.iloc[:1500], window=60, hedge=hedge, health=False,
                kalman_warmup=300).frame
    ok = f["spread"].notna()
    assert ok.sum() > 1000
    assert_allclose(f["spread"][ok], (f["y"] - f["beta"] * f["x"] - f["alpha"])[ok],
                    rtol=1e-9, atol=1e-9)
    assert_allclose(f["zscore"][ok], ((f["spread"] - f["spread_mean"]) / f["spread_std"])[ok],
                    rtol=1e-9, atol=1e-12)
    if hedge == "kalman":
        assert "kalman_beta" in f.columns and (f["spread_mean"][ok] == 0).all()


def test_insufficient_data_is_one_line():
    with pytest.raises(InsufficientData) as err:
        analyze(np.arange(1.0, 13.0), np.arange(2.0, 14.0), window=60)
    assert str(err.value) == "analyze(window=60, hedge='rolling-ols') needs at least 60 bars, got 12"
    assert shortfall(12, bars_needed(60))[0] == "beta needs 60 bars, have 12"


def test_bad_arguments_are_config_errors(aligned):
    with pytest.raises(ConfigError, match="y_close and x_close"):
        analyze(aligned[["y_volume"]], window=10)
    with pytest.raises(ConfigError, match="hedge"):
        analyze(aligned, window=10, hedge="lasso")
    with pytest.raises(ConfigError, match="window"):
        analyze(aligned, window=2)


def test_nan_rows_stay_nan_not_zero():
    y, x = cointegrated_pair(800, seed=5)
    x = x.copy()
    x[400] = np.nan
    f = analyze(y, x, window=30, health=False).frame
    assert np.isnan(f["beta"].iloc[400:430]).all() and np.isfinite(f["beta"].iloc[430])
    assert np.isnan(f["zscore"].iloc[400:459]).all()
    z, _, _ = rolling_zscore(f["spread"].to_numpy(), 30)
    assert_allclose(f["zscore"], z, equal_nan=True)
    ry, rx = np.r_[np.nan, np.diff(np.log(y))], np.r_[np.nan, np.diff(np.log(x))]
    assert_allclose(f["corr"], rolling_corr(ry, rx, 30), equal_nan=True)
    assert np.isnan(f["corr"].iloc[400:431]).all()             # returns at 400 and 401 are NaN


def test_import_does_not_pull_ui_or_network_libraries():
    code = ("import sys, quantlab.analytics; "
            "bad = [m for m in ('websockets', 'bokeh', 'ipywidgets', 'jupyter_bokeh') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
