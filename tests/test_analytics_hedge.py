"""Hedge ratios: static fits against statsmodels / scipy, rolling and expanding
OLS against statsmodels' RollingOLS, robust re-fits against direct fits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from numpy.lib.stride_tricks import sliding_window_view
from numpy.testing import assert_allclose
from scipy.stats import theilslopes
from statsmodels.regression.rolling import RollingOLS

from quantlab.analytics import expanding_ols, fit_hedge, hedge_series, rolling_ols, rolling_robust
from quantlab.errors import ConfigError, InsufficientData
from tests.pairs import cointegrated_pair


@pytest.fixture(scope="module")
def pair():
    # vol 3e-3 per bar: x ranges over ~+-30 %, so beta is well identified
    return cointegrated_pair(3000, seed=11, vol=3e-3)


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("log_prices", [False, True])
def test_static_ols_matches_statsmodels(pair, intercept, log_prices):
    y, x = pair
    fit = fit_hedge(y, x, method="ols", fit_intercept=intercept, log_prices=log_prices)
    Y, X = (np.log(y), np.log(x)) if log_prices else (y, x)
    res = sm.OLS(Y, sm.add_constant(X) if intercept else X[:, None]).fit()
    assert fit.beta == pytest.approx(res.params[-1], rel=1e-9)
    assert fit.alpha == pytest.approx(res.params[0] if intercept else 0.0, rel=1e-7, abs=1e-12)
    assert fit.r2 == pytest.approx(res.rsquared, rel=1e-9)
    assert fit.resid_std == pytest.approx(math.sqrt(res.scale), rel=1e-8)
    assert fit.nobs == 3000 and fit.in_sample


def test_static_ols_recovers_known_beta(pair):
    fit = fit_hedge(*pair)
    assert fit.beta == pytest.approx(0.07, abs=0.002)      # ~4 standard errors


@pytest.mark.parametrize("intercept", [True, False])
def test_huber_matches_statsmodels_rlm(pair, intercept):
    y, x = pair
    y = y.copy()
    top = np.flatnonzero(x > np.quantile(x, 0.8))[::5]
    y[top] += 2000.0                              # outliers at high x tilt the OLS slope
    fit = fit_hedge(y, x, method="huber", fit_intercept=intercept)
    exog = sm.add_constant(x) if intercept else x[:, None]
    res = sm.RLM(y, exog, M=sm.robust.norms.HuberT()).fit()
    assert fit.beta == pytest.approx(res.params[-1], rel=1e-7)
    if intercept:
        assert fit.alpha == pytest.approx(res.params[0], rel=1e-6)
    ols = fit_hedge(y, x)
    assert abs(fit.beta - 0.07) < abs(ols.beta - 0.07)


def test_theil_sen_matches_scipy_including_ties():
    y, x = cointegrated_pair(400, seed=4)
    x = np.round(x, -1)                          # many tied x values
    fit = fit_hedge(y, x, method="theil-sen")
    ref = theilslopes(y, x)
    assert fit.beta == pytest.approx(ref.slope, rel=1e-12)
    assert fit.alpha == pytest.approx(ref.intercept, rel=1e-10)


def test_theil_sen_requires_intercept():
    with pytest.raises(ConfigError, match="fit_intercept"):
        fit_hedge([1.0, 2, 3, 4], [1.0, 2, 3, 4], method="theil_sen", fit_intercept=False)


def test_rolling_ols_matches_statsmodels_rolling_ols(pair):
    y, x = pair
    y, x = y[:1500], x[:1500]
    r = rolling_ols(y, x, 60)
    ref = RollingOLS(y, sm.add_constant(x), window=60).fit().params
    assert np.isnan(r.beta[:59]).all()
    # statsmodels solves each window with pinv on raw prices (condition number
    # ~ (x / sd(x))^2 ~ 1e7 here), so it is itself accurate to ~1e-8 only
    assert_allclose(r.beta, ref[:, 1], rtol=1e-6, atol=1e-9, equal_nan=True)
    assert_allclose(r.alpha, ref[:, 0], rtol=1e-6, atol=1e-6, equal_nan=True)
    # against an exact two-pass computation per window
    X, Y = sliding_window_view(x, 60), sliding_window_view(y, 60)
    dx, dy = X - X.mean(1, keepdims=True), Y - Y.mean(1, keepdims=True)
    assert_allclose(r.beta[59:], (dx * dy).sum(1) / (dx * dx).sum(1), rtol=1e-9)
    r0 = rolling_ols(y, x, 60, fit_intercept=False)
    ref0 = RollingOLS(y, x[:, None], window=60).fit().params[:, 0]
    assert_allclose(r0.beta, ref0, rtol=1e-9, equal_nan=True)


def test_expanding_ols_matches_statsmodels_and_ends_at_static(pair):
    y, x = pair
    y, x = y[:1200], x[:1200]
    e = expanding_ols(y, x, 60)
    ref = RollingOLS(y, sm.add_constant(x), window=1200, expanding=True, min_nobs=60).fit()
    assert_allclose(e.beta, ref.params[:, 1], rtol=1e-9, equal_nan=True)
    assert e.beta[-1] == pytest.approx(fit_hedge(y, x).beta, rel=1e-10)
    assert np.isnan(e.beta[:59]).all() and np.isfinite(e.beta[59])


def test_rolling_huber_refits_on_trailing_window_and_holds(pair):
    y, x = pair
    y, x = y[:400], x[:400]
    r = rolling_robust(y, x, 100, method="huber", refit_every=25)
    for fit_bar in (99, 124, 399 - (399 - 99) % 25):
        direct = fit_hedge(y[fit_bar - 99:fit_bar + 1], x[fit_bar - 99:fit_bar + 1], method="huber")
        assert r.beta[fit_bar] == pytest.approx(direct.beta, rel=1e-9)
    assert (r.beta[99:124] == r.beta[99]).all() and r.beta[124] != r.beta[99]
    assert np.isnan(r.beta[:99]).all()


def test_rolling_theil_sen_matches_scipy_per_window(pair):
    y, x = pair
    r = hedge_series(y[:300], x[:300], method="theil_sen", window=80, refit_every=1)
    for t in (79, 150, 299):
        assert r.beta[t] == pytest.approx(theilslopes(y[t - 79:t + 1], x[t - 79:t + 1]).slope,
                                          rel=1e-12)


def test_too_few_bars_and_bad_method():
    with pytest.raises(InsufficientData, match="needs at least 3 bars, got 2"):
        fit_hedge([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match="hedge"):
        hedge_series([1.0], [1.0], method="ridge", window=3)


def test_log_prices_reject_non_positive():
    with pytest.raises(ConfigError, match="prices > 0"):
        fit_hedge([1.0, 2.0, -3.0, 4.0], [1.0, 2.0, 3.0, 4.0], log_prices=True)
