"""Tests of the spread against statsmodels on the same input: ADF, Engle-Granger
(both directions), Johansen, KPSS; half-life against a direct OLS; Hurst."""
from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
from statsmodels.tsa.stattools import adfuller, coint, kpss as sm_kpss
from statsmodels.tsa.vector_ar.vecm import coint_johansen

from quantlab.analytics import (adf, coint as ql_coint, engle_granger, engle_granger_both,
                                half_life, hurst, johansen, kpss)
from quantlab.analytics import stattests
from quantlab.errors import ConfigError, InsufficientData
from tests.pairs import ar1, cointegrated_pair, independent_walks


@pytest.fixture(scope="module")
def spread():
    rng = np.random.default_rng(1)
    return ar1(2500, 0.97, 1.0, rng) + 0.001 * np.arange(2500)


def sm_adf(s, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return adfuller(s, result_object=True, **kw)


@pytest.mark.parametrize("regression", ["c", "n", "ct"])
@pytest.mark.parametrize("autolag", ["AIC", "BIC", "t-stat", None])
def test_adf_matches_statsmodels(spread, regression, autolag):
    ref = sm_adf(spread, regression=regression, autolag=autolag, maxlag=None if autolag else 4)
    r = adf(spread, regression=regression, autolag=autolag, maxlag=None if autolag else 4,
            lag_cap=None)
    assert r.stat == pytest.approx(ref.statistic, rel=1e-9)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-300)
    assert (r.lags, r.nobs) == (ref.lags, ref.nobs)
    assert r.critical_values == pytest.approx(ref.critical_values)
    if autolag:
        assert r.icbest == pytest.approx(ref.icbest, rel=1e-9)


def test_adf_gram_fast_path_equals_statsmodels(spread, monkeypatch):
    """The Toeplitz-with-edges Gram (used above 4M cells) on a small input."""
    monkeypatch.setattr(stattests, "_EXPLICIT_MAX_CELLS", 0)
    ref = sm_adf(spread)
    r = adf(spread, lag_cap=None)
    assert r.stat == pytest.approx(ref.statistic, rel=1e-9)
    assert (r.lags, r.icbest) == (ref.lags, pytest.approx(ref.icbest, rel=1e-9))


def test_adf_lag_cap(spread):
    full = adf(spread, lag_cap=None)
    capped = adf(spread, lag_cap=5)
    assert full.maxlag == math.ceil(12 * (2500 / 100) ** 0.25) and not full.lag_capped
    assert capped.maxlag == 5 and capped.lag_capped
    ref = sm_adf(spread, maxlag=5)
    assert capped.stat == pytest.approx(ref.statistic, rel=1e-9)


def test_adf_result_vocabulary_and_display(spread):
    r = adf(spread)
    s = r.summary()
    for key in ("stat", "pvalue", "critical_values", "nobs", "lags"):
        assert key in s
    assert set(s["critical_values"]) == {"1%", "5%", "10%"}
    json.dumps(s)
    assert "<table>" in r._repr_html_() and "pvalue" in r._repr_html_()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.stat = 0.0  # type: ignore[misc]


def test_adf_rejects_constant_and_short_input():
    with pytest.raises(ConfigError, match="constant"):
        adf(np.ones(100))
    with pytest.raises(InsufficientData):
        adf([1.0, 2.0, 1.0])


@pytest.mark.parametrize("trend", ["c", "ct"])
def test_engle_granger_both_directions_match_coint(trend):
    y, x = cointegrated_pair(2000, seed=5, vol=2e-3)
    both = engle_granger_both(y, x, trend=trend, lag_cap=None)
    for res, (a, b) in ((both.y_on_x, (y, x)), (both.x_on_y, (x, y))):
        ref = coint(a, b, trend=trend)
        assert res.stat == pytest.approx(ref[0], rel=1e-9)
        assert res.pvalue == pytest.approx(ref[1], rel=1e-7, abs=1e-300)
        assert list(res.critical_values.values()) == pytest.approx(list(ref[2]))
    assert both.pvalue == max(both.y_on_x.pvalue, both.x_on_y.pvalue)
    assert both.y_on_x.pvalue < 0.01                           # the pair is cointegrated
    assert both.y_on_x.beta == pytest.approx(0.07, abs=0.003)


def test_engle_granger_on_independent_walks_does_not_reject():
    y, x = independent_walks(2000, seed=9)
    r = ql_coint(y, x)
    assert r == engle_granger(y, x) and r.direction == "y~x"
    assert r.pvalue > 0.1
    assert r.pvalue == pytest.approx(coint(y, x, maxlag=r.maxlag)[1], rel=1e-7)


def test_johansen_matches_statsmodels():
    y, x = cointegrated_pair(2000, seed=6, vol=2e-3)
    r = johansen(y, x, det_order=0, k_ar_diff=2)
    ref = coint_johansen(np.column_stack([y, x]), 0, 2)
    assert r.trace_stat == pytest.approx(tuple(ref.lr1), rel=1e-10)
    assert r.max_eig_stat == pytest.approx(tuple(ref.lr2), rel=1e-10)
    assert r.stat == pytest.approx(ref.lr1[0])
    assert r.critical_values == {"10%": ref.cvt[0, 0], "5%": ref.cvt[0, 1], "1%": ref.cvt[0, 2]}
    assert r.rank_trace == 1 and r.lags == 2
    assert r.beta == pytest.approx(0.07, abs=0.005)


def test_kpss_matches_statsmodels(spread):
    r = kpss(spread)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sm_kpss(spread, regression="c", nlags="auto", result_object=True)
    assert r.stat == pytest.approx(ref.statistic, rel=1e-12)
    assert (r.pvalue, r.lags) == (ref.pvalue, ref.lags)
    assert r.critical_values["5%"] == 0.463
    walk = np.cumsum(np.random.default_rng(0).normal(size=2000))
    w = kpss(walk)
    assert w.pvalue == 0.01 and w.pvalue_bound == "smaller"      # table exceeded, said so


def test_half_life_matches_direct_ols_and_df_statistic(spread):
    r = half_life(spread)
    lag, ds = spread[:-1], np.diff(spread)
    X = np.column_stack([np.ones_like(lag), lag])
    (a, b), *_ = np.linalg.lstsq(X, ds, rcond=None)
    assert r.b == pytest.approx(b, rel=1e-10) and r.a == pytest.approx(a, rel=1e-8)
    assert r.half_life == pytest.approx(-math.log(2) / math.log(1 + b), rel=1e-10)
    ref = sm_adf(spread, maxlag=0, autolag=None)
    assert r.stat == pytest.approx(ref.statistic, rel=1e-10)
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-8)


def test_half_life_of_known_ar1_and_of_a_trend():
    s = ar1(20000, 0.9, 1.0, np.random.default_rng(3))
    assert half_life(s).half_life == pytest.approx(-math.log(2) / math.log(0.9), rel=0.1)
    explosive = np.cumprod(np.full(200, 1.01))                    # b > 0: no reversion
    assert half_life(explosive).half_life == math.inf


def test_hurst_random_walk_vs_mean_reverting():
    rng = np.random.default_rng(4)
    walk = np.cumsum(rng.normal(size=20000))
    assert hurst(walk).stat == pytest.approx(0.5, abs=0.05)
    assert hurst(ar1(20000, 0.9, 1.0, rng)).stat < 0.35
    s = ar1(3000, 0.95, 1.0, rng)
    lags = np.array([2, 10, 50])
    sd = [np.std(s[k:] - s[:-k]) for k in lags]
    direct = np.polyfit(np.log(lags), np.log(sd), 1)[0]
    assert hurst(s, min_lag=2, max_lag=50, n_lags=3).stat == pytest.approx(direct, rel=1e-12)
