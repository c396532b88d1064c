"""Selection-bias statistics: DSR against the paper's example and an independent
scipy computation, PBO against a brute-force CSCV and on noise vs a planted edge,
Benjamini-Yekutieli against statsmodels, the sweep helper against the sweep."""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from quantlab.analytics import (adjust_pvalues, deflated_sharpe_ratio, expected_max_sharpe,
                                probabilistic_sharpe_ratio, probability_of_backtest_overfitting,
                                return_moments, sweep_overfit)
from quantlab.errors import ConfigError, InsufficientData


# --- deflated Sharpe ratio -----------------------------------------------------------------
def test_dsr_reproduces_the_papers_numerical_example():
    # Bailey and Lopez de Prado (2014), numerical example: N = 100 trials with annualised
    # V[SR] = 1/2; the best has annualised SR 2.5 over five years of daily data
    # (T = 1250, 250 days a year), skewness -3, kurtosis 10 -> SR0 = 0.1132 per day
    # (1.7894 annualised) and DSR = 0.9004. Per-day inputs: divide by sqrt(250) and 250.
    r = deflated_sharpe_ratio(2.5 / math.sqrt(250), n_obs=1250, n_trials=100,
                              sharpe_variance=0.5 / 250, skew=-3.0, kurtosis=10.0)
    assert r.expected_max_sharpe == pytest.approx(0.1132, abs=5e-5)
    assert r.expected_max_sharpe * math.sqrt(250) == pytest.approx(1.7894, abs=5e-4)
    assert r.dsr == pytest.approx(0.9004, abs=5e-5)
    assert r.n_trials == 100 and r.pvalue == pytest.approx(1 - r.dsr)
    s = r.summary()
    assert {"dsr", "expected_max_sharpe", "n_trials", "stat", "pvalue", "nobs"} <= set(s)
    assert "Deflated Sharpe" in r._repr_html_()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.dsr = 0.5


def test_dsr_matches_an_independent_scipy_computation():
    rng = np.random.default_rng(11)
    trials = rng.standard_t(df=5, size=(900, 30)) * 0.01 + 0.0004  # fat-tailed per-bar returns
    sharpes = trials.mean(axis=0) / trials.std(axis=0, ddof=1)
    best = int(np.argmax(sharpes))
    r = trials[:, best]
    g3 = stats.skew(r)
    g4 = stats.kurtosis(r, fisher=False)
    mom = return_moments(r)
    assert_allclose([mom.sharpe, mom.skew, mom.kurtosis], [sharpes[best], g3, g4], rtol=1e-12)
    v = np.var(sharpes, ddof=1)
    # Independent: E[max] from order statistics quantiles, PSR z via scipy.stats.norm.
    emc = np.euler_gamma
    sr0 = np.sqrt(v) * ((1 - emc) * stats.norm.isf(1 / 30) + emc * stats.norm.isf(1 / (30 * np.e)))
    z = (sharpes[best] - sr0) * np.sqrt(899) / np.sqrt(1 - g3 * sharpes[best]
                                                       + (g4 - 1) / 4 * sharpes[best] ** 2)
    got = deflated_sharpe_ratio(mom.sharpe, n_obs=mom.n_obs, n_trials=30, sharpe_variance=v,
                                skew=mom.skew, kurtosis=mom.kurtosis)
    assert_allclose([got.expected_max_sharpe, got.stat, got.dsr],
                    [sr0, z, stats.norm.cdf(z)], rtol=1e-10)


def test_expected_max_sharpe_is_close_to_monte_carlo():
    rng = np.random.default_rng(3)
    for n in (10, 100, 1000):
        mc = rng.standard_normal((4000, n)).max(axis=1).mean()
        assert expected_max_sharpe(n, 1.0) == pytest.approx(mc, rel=0.03), n
    assert expected_max_sharpe(1, 0.3) == 0.0


def test_psr_is_the_dsr_with_one_trial_and_more_trials_deflate_more():
    psr = probabilistic_sharpe_ratio(0.08, n_obs=500, skew=-0.5, kurtosis=5)
    one = deflated_sharpe_ratio(0.08, n_obs=500, n_trials=1, skew=-0.5, kurtosis=5)
    assert psr.dsr == pytest.approx(one.dsr) and psr.expected_max_sharpe == 0.0
    # normal returns: PSR = Phi(SR sqrt(T-1) / sqrt(1 + SR^2/2))
    assert probabilistic_sharpe_ratio(0.1, n_obs=250).dsr == pytest.approx(
        stats.norm.cdf(0.1 * math.sqrt(249) / math.sqrt(1 + 0.01 / 2)))
    values = [deflated_sharpe_ratio(0.08, n_obs=500, n_trials=n, sharpe_variance=0.002).dsr
              for n in (1, 2, 10, 100, 1000)]
    assert all(b < a for a, b in zip(values, values[1:]))
    assert probabilistic_sharpe_ratio(0.05, n_obs=500, benchmark=0.05).dsr == pytest.approx(0.5)


def test_dsr_bad_input_is_a_config_error():
    with pytest.raises(ConfigError, match="sharpe_variance"):
        deflated_sharpe_ratio(0.1, n_obs=100, n_trials=5)
    with pytest.raises(ConfigError, match="n_trials"):
        deflated_sharpe_ratio(0.1, n_obs=100, n_trials=0, sharpe_variance=0.1)
    with pytest.raises(ConfigError, match="annualised"):  # an annualised Sharpe by mistake
        deflated_sharpe_ratio(3.0, n_obs=100, n_trials=1, skew=2.0)
    with pytest.raises(InsufficientData):
        return_moments([1.0])
    assert return_moments(np.zeros(10)).sharpe is None


# --- probability of backtest overfitting ---------------------------------------------------
def _brute_force_pbo(m: np.ndarray, s: int) -> np.ndarray:
    t, n = m.shape
    block = t // s
    m = m[t - block * s:]
    blocks = np.split(m, s)
    out = []
    for combo in itertools.combinations(range(s), s // 2):
        train = np.vstack([blocks[i] for i in combo])
        test = np.vstack([blocks[i] for i in range(s) if i not in combo])
        sr_in = train.mean(0) / train.std(0, ddof=1)
        sr_out = test.mean(0) / test.std(0, ddof=1)
        best = np.argmax(sr_in)
        w = stats.rankdata(sr_out)[best] / (n + 1)
        out.append(np.log(w / (1 - w)))
    return np.array(out)


def test_pbo_logits_match_a_brute_force_cscv():
    rng = np.random.default_rng(5)
    m = rng.normal(0, 1, (203, 7))  # 203 rows: the 3 earliest are dropped for 8 equal blocks
    res = probability_of_backtest_overfitting(m, n_blocks=8)
    expect = _brute_force_pbo(m, 8)
    assert res.n_splits == math.comb(8, 4) == expect.size and res.n_obs == 200
    assert_allclose(res.logits, expect, rtol=1e-9, atol=1e-12)
    assert res.pbo == pytest.approx(np.mean(expect <= 0))
    assert_allclose(np.polyfit(res.is_best, res.oos_of_best, 1),
                    [res.degradation_slope, res.degradation_intercept])
    assert not res.logits.flags.writeable


def test_pbo_is_high_on_noise_and_low_with_a_planted_edge():
    rng = np.random.default_rng(2017)
    noise = rng.normal(0, 1, (1600, 40))
    res = probability_of_backtest_overfitting(pd.DataFrame(noise))
    assert res.n_splits == 12870 and res.n_trials == 40
    assert res.pbo >= 0.35, res.pbo           # near or above 0.5: in-sample rank means nothing
    assert res.degradation_slope < 0.3
    edged = noise.copy()
    edged[:, 17] += 0.25                      # one strategy with a real per-bar Sharpe ~0.25
    res2 = probability_of_backtest_overfitting(edged)
    assert res2.pbo < 0.05, res2.pbo
    assert res2.prob_oos_loss == 0.0
    s = res2.summary()
    assert "logits" not in s and s["pbo"] == res2.pbo and "CSCV" in res2._repr_html_()


def test_pbo_bad_input():
    with pytest.raises(ConfigError, match="even"):
        probability_of_backtest_overfitting(np.zeros((100, 3)), n_blocks=5)
    with pytest.raises(ConfigError, match="finite"):
        probability_of_backtest_overfitting(np.full((100, 3), np.nan))
    with pytest.raises(InsufficientData):
        probability_of_backtest_overfitting(np.zeros((20, 3)), n_blocks=16)
    with pytest.raises(ConfigError, match="2 trials"):
        probability_of_backtest_overfitting(np.zeros((100, 1)))


# --- Benjamini-Yekutieli ----------------------------------------------------------------------
def test_adjusted_pvalues_match_statsmodels_and_keep_nan():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(1)
    p = np.concatenate([rng.uniform(0, 1, 40), rng.uniform(0, 0.001, 5)])
    assert_allclose(adjust_pvalues(p), multipletests(p, method="fdr_by")[1])
    assert_allclose(adjust_pvalues(p, method="fdr_bh"), multipletests(p, method="fdr_bh")[1])
    with_nan = np.append(p, np.nan)
    got = adjust_pvalues(with_nan)
    assert np.isnan(got[-1])
    assert_allclose(got[:-1], multipletests(p, method="fdr_by")[1])
    with pytest.raises(ConfigError):
        adjust_pvalues([0.5, 1.5])


# --- sweep ------------------------------------------------------------------------------------
@pytest.fixture
def pair_bars():
    rng = np.random.default_rng(42)
    n = 3000
    x = 100 + np.cumsum(rng.normal(0, 0.2, n))
    ou = np.zeros(n)
    for i in range(1, n):
        ou[i] = 0.95 * ou[i - 1] + rng.normal(0, 0.3)
    y = 5 + 2 * x + ou
    idx = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    return pd.DataFrame({"y_open": y, "y_close": y, "x_open": x, "x_close": x}, index=idx)


def test_sweep_overfit_rows_match_sweep(pair_bars):
    from quantlab.backtest import sweep

    grid = dict(entries=[1.0, 1.5, 2.0], exits=[0.0, 0.5], windows=[60, 120])
    table = sweep(pair_bars, fee_bps=1.0, **grid)
    res = sweep_overfit(pair_bars, fee_bps=1.0, prior_trials=5, prior_sharpes=[0.01, -0.02],
                        **grid)
    assert len(res.table) == len(table) == 12 and res.n_trials == 12 + 5
    assert_allclose(res.table["total_pnl"], table["total_pnl"])
    assert_allclose(res.table["sharpe_per_bar"] * np.sqrt(table["bars_per_year"]), table["sharpe"],
                    rtol=1e-9)
    assert_allclose(res.pnl.sum().to_numpy(), table["total_pnl"].to_numpy(), rtol=1e-9)
    pool = np.concatenate([res.table["sharpe_per_bar"], [0.01, -0.02]])
    assert res.sharpe_variance == pytest.approx(np.var(pool, ddof=1))
    row = res.table.iloc[res.best]
    assert row["sharpe_per_bar"] == res.table["sharpe_per_bar"].max()
    one = deflated_sharpe_ratio(row["sharpe_per_bar"], n_obs=int(row["n_obs"]), n_trials=17,
                                sharpe_variance=res.sharpe_variance, skew=row["skew"],
                                kurtosis=row["kurtosis"])
    assert row["dsr"] == pytest.approx(one.dsr)
    assert res.pbo is not None and 0.0 <= res.pbo.pbo <= 1.0 and res.pbo.n_trials == 12
    assert res.summary()["n_trials"] == 17
