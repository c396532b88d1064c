"""The analytics on real Binance 1-minute bars (ETHUSDT on BTCUSDT, two weeks of
March 2023 around the SVB collapse) against statsmodels and pandas on the same
input. Skipped with a reason when ../shared/data is absent."""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose
from statsmodels.regression.rolling import RollingOLS
from statsmodels.tsa.stattools import adfuller, coint, kpss as sm_kpss
from statsmodels.tsa.vector_ar.vecm import coint_johansen

from quantlab.analytics import (LivePairState, adf, analyze, engle_granger_both, johansen, kpss,
                                rolling_ols)
from tests.pairs import real_pair


@functools.lru_cache(maxsize=1)
def _load(shared: Path) -> pd.DataFrame:
    return real_pair(shared, "2023-03-06", 14)        # read once per session


@pytest.fixture
def weeks(shared_data):
    frame = _load(shared_data)
    assert len(frame) == 14 * 1440 and frame[["y_close", "x_close"]].notna().all().all()
    return frame


@pytest.fixture
def two_days(weeks):
    return weeks.iloc[:2880]


def test_rolling_beta_against_statsmodels_and_exact(weeks):
    y, x = weeks["y_close"].to_numpy(), weeks["x_close"].to_numpy()
    r = rolling_ols(y, x, 120)
    ref = RollingOLS(y[:2000], sm.add_constant(x[:2000]), window=120).fit().params[:, 1]
    assert_allclose(r.beta[:2000], ref, rtol=1e-6, atol=1e-10, equal_nan=True)
    X = np.lib.stride_tricks.sliding_window_view(x, 120)
    Y = np.lib.stride_tricks.sliding_window_view(y, 120)
    dx, dy = X - X.mean(1, keepdims=True), Y - Y.mean(1, keepdims=True)
    assert_allclose(r.beta[119:], (dx * dy).sum(1) / (dx * dx).sum(1), rtol=1e-9, atol=1e-13)


def test_zscore_and_corr_against_pandas(weeks):
    f = analyze(weeks, window=120, health=False).frame
    s = f["spread"]
    z = (s - s.rolling(120).mean()) / s.rolling(120).std()
    assert_allclose(f["zscore"], z, rtol=1e-6, atol=1e-8, equal_nan=True)
    ry, rx = np.log(weeks["y_close"]).diff(), np.log(weeks["x_close"]).diff()
    assert_allclose(f["corr"], ry.rolling(120).corr(rx), rtol=1e-8, atol=1e-10, equal_nan=True)
    assert f["corr"].median() > 0.5                   # ETH and BTC minute returns co-move
    assert f.index.equals(weeks.index) and f["y_trades"].sum() == weeks["y_trade_count"].sum()


def test_summary_defaults_match_statsmodels(two_days):
    s = analyze(two_days, window=60).summary()
    y, x = two_days["y_close"].to_numpy(), two_days["x_close"].to_numpy()
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert (s["hedge_ratio"], s["r2"]) == (pytest.approx(ols.params[1], rel=1e-9),
                                            pytest.approx(ols.rsquared, rel=1e-9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = adfuller(ols.resid, result_object=True)
    assert (s["adf_stat"], s["adf_lags"]) == (pytest.approx(ref.statistic, rel=1e-8), ref.lags)
    assert s["adf_pvalue"] == pytest.approx(ref.pvalue, rel=1e-6)
    c = coint(y, x)
    assert (s["coint_stat"], s["coint_pvalue"]) == (pytest.approx(c[0], rel=1e-8),
                                                    pytest.approx(c[1], rel=1e-6))
    assert (s["y_symbol"], s["bar_seconds"]) == ("ETHUSDT", 60.0)
    assert s["verdict"] in ("cointegrated", "weakening", "decoupling")


def test_capped_tests_match_statsmodels_with_the_same_maxlag(weeks):
    y, x = weeks["y_close"].to_numpy(), weeks["x_close"].to_numpy()
    both = engle_granger_both(y, x, lag_cap=10)
    assert both.y_on_x.maxlag == 10 and both.y_on_x.lag_capped
    for res, (a, b) in ((both.y_on_x, (y, x)), (both.x_on_y, (x, y))):
        ref = coint(a, b, maxlag=10)
        assert res.stat == pytest.approx(ref[0], rel=1e-8)
    spread = y - both.y_on_x.beta * x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = adfuller(spread, maxlag=10, result_object=True)
    assert adf(spread, lag_cap=10).stat == pytest.approx(ref.statistic, rel=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k_ref = sm_kpss(spread, nlags="auto", result_object=True)
    assert kpss(spread).stat == pytest.approx(k_ref.statistic, rel=1e-10)


def test_johansen_matches_statsmodels(weeks):
    y, x = weeks["y_close"].to_numpy(), weeks["x_close"].to_numpy()
    r = johansen(y, x, k_ar_diff=1)
    ref = coint_johansen(np.column_stack([y, x]), 0, 1)
    assert r.trace_stat == pytest.approx(tuple(ref.lr1), rel=1e-9)
    assert r.max_eig_stat == pytest.approx(tuple(ref.lr2), rel=1e-9)


@pytest.mark.parametrize("hedge", ["rolling-ols", "kalman"])
def test_live_replay_of_real_bars_matches_batch(weeks, hedge):
    week = weeks.iloc[:4000]
    batch = analyze(week, window=120, hedge=hedge, health=False).frame
    st = LivePairState(120, hedge, health_window=None)
    rows = [st.update(t, y, x) for t, y, x in
            zip(week.index, week["y_close"].tolist(), week["x_close"].tolist())]
    live = pd.DataFrame(rows, index=week.index)
    for c in ("beta", "spread", "zscore", "corr", "half_life"):
        a, b = batch[c].to_numpy(), live[c].to_numpy()
        assert (np.isnan(a) == np.isnan(b)).all()
        ok = np.isfinite(a)
        assert_allclose(b[ok], a[ok], rtol=1e-7, atol=1e-9 * np.abs(a[ok]).max(), err_msg=c)
