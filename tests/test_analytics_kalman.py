"""Kalman hedge: the spread is the one-step-ahead innovation, parameters are
recovered by maximum likelihood, and a moving beta is tracked better than by
rolling OLS."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from quantlab.analytics import estimate_kalman_params, kalman_filter, rolling_ols
from quantlab.errors import InsufficientData
from tests.pairs import state_space_pair, time_varying_pair

DELTA, OBS_VAR = 1e-8, 1e-6


@pytest.fixture(scope="module")
def model_pair():
    return state_space_pair(6000, delta=DELTA, obs_var=OBS_VAR, seed=7)


def test_spread_is_the_prior_innovation(model_pair):
    y, x, _, _ = model_pair
    k = kalman_filter(y, x, delta=DELTA, obs_var=OBS_VAR, warmup=100)
    t = np.arange(100, 6000)
    prior = y[t] - (k.alpha[t - 1] + k.beta[t - 1] * x[t])     # theta_{t|t-1} = theta_{t-1|t-1}
    assert_allclose(k.spread[t], prior, rtol=1e-12, atol=1e-13)
    assert_allclose(k.beta_prior[t], k.beta[t - 1], rtol=0)
    assert_allclose(k.spread[t], y[t] - k.alpha_prior[t] - k.beta_prior[t] * x[t],
                    rtol=1e-9, atol=1e-14)
    assert_allclose(k.zscore[t], k.spread[t] / np.sqrt(k.innovation_var[t]), rtol=1e-12)


def test_standardised_innovations_are_white_with_unit_variance(model_pair):
    y, x, _, _ = model_pair
    k = kalman_filter(y, x, delta=DELTA, obs_var=OBS_VAR, warmup=100)
    z = k.zscore[200:]
    assert abs(z.mean()) < 0.05
    assert z.var() == pytest.approx(1.0, abs=0.06)
    assert abs(np.corrcoef(z[1:], z[:-1])[0, 1]) < 0.05


def test_posterior_residual_collapses_the_prior_does_not():
    """The known bug: a 'spread' from the updated beta is the filter's own fit of
    bar t and shrinks towards 0 when the state adapts quickly."""
    y, x, _, _ = state_space_pair(3000, delta=1e-4, obs_var=1e-6, seed=3)
    k = kalman_filter(y, x, delta=1e-4, obs_var=1e-6, warmup=50)
    post = y - k.alpha - k.beta * x
    assert np.nanstd(post) < 0.2 * np.nanstd(k.spread)
    assert np.nanstd(k.zscore[100:]) == pytest.approx(1.0, abs=0.1)


def test_mle_recovers_parameters(model_pair):
    y, x, _, _ = model_pair
    p = estimate_kalman_params(y[:3000], x[:3000])
    assert p.estimated and p.nobs == 3000
    assert DELTA / 3 < p.delta < DELTA * 3
    assert p.obs_var == pytest.approx(OBS_VAR, rel=0.2)
    fixed_ve = estimate_kalman_params(y[:3000], x[:3000], obs_var=p.obs_var)
    assert fixed_ve.delta == pytest.approx(p.delta, rel=0.05)    # consistent profiles
    assert fixed_ve.loglik == pytest.approx(p.loglik, abs=0.01)


def test_tracks_time_varying_beta_better_than_rolling_ols():
    ly, lx, beta = time_varying_pair(8000, seed=2)
    k = kalman_filter(ly, lx, warmup=1000)                      # estimated parameters
    roll = rolling_ols(ly, lx, 250).beta
    sl = slice(1500, None)
    rmse_k = np.sqrt(np.mean((k.beta[sl] - beta[sl]) ** 2))
    rmse_r = np.sqrt(np.mean((roll[sl] - beta[sl]) ** 2))
    assert rmse_k < 0.05
    assert rmse_k < rmse_r


def test_warmup_rows_are_nan_and_nan_bars_are_skipped(model_pair):
    y, x, _, _ = model_pair
    y = y[:800].copy()
    y[400] = np.nan
    k = kalman_filter(y, x[:800], delta=DELTA, obs_var=OBS_VAR, warmup=300)
    assert np.isnan(k.spread[:299]).all() and np.isfinite(k.spread[299])
    assert np.isnan(k.spread[400]) and np.isfinite(k.spread[401])
    assert k.beta[400] == k.beta[399]                            # prior carried over the gap
    assert k.params.delta == DELTA and not k.params.estimated


def test_too_short_for_warmup():
    with pytest.raises(InsufficientData, match="needs at least 500 bars, got 100"):
        kalman_filter(np.arange(100.0) + 1, np.arange(100.0) + 2, window=60)
