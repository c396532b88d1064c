"""Rolling primitives of quantlab.analytics: z-score, correlation, half-life,
returns; against pandas, an exact two-pass reference and known values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from numpy.testing import assert_allclose, assert_array_equal

from quantlab.analytics import (log_returns, rolling_corr, rolling_half_life, rolling_mean_std,
                                rolling_zscore)
from quantlab.analytics.rolling import half_life_from_slope, rolling_moments
from tests.pairs import ar1, cointegrated_pair


def exact_m2(a: np.ndarray, w: int) -> np.ndarray:
    """Two-pass sum of squared deviations per window (the precise reference)."""
    v = sliding_window_view(a, w)
    d = v - v.mean(axis=1, keepdims=True)
    return (d * d).sum(axis=1)


def test_zscore_mean_std_match_pandas_rolling():
    rng = np.random.default_rng(5)
    s = ar1(3000, 0.9, 2.0, rng) + 10.0
    z, mean, std = rolling_zscore(s, 50)
    ps = pd.Series(s)
    pm, psd = ps.rolling(50).mean(), ps.rolling(50).std()          # ddof=1
    assert_allclose(mean, pm, rtol=1e-10, equal_nan=True)
    assert_allclose(std, psd, rtol=1e-9, equal_nan=True)
    assert_allclose(z, (ps - pm) / psd, rtol=1e-8, atol=1e-10, equal_nan=True)
    assert np.isnan(z[:49]).all() and np.isfinite(z[49:]).all()


def test_zscore_window_includes_current_bar():
    z, _, _ = rolling_zscore([1.0, 2.0, 3.0, 4.0, 8.0], 3)
    # last window is (3, 4, 8): mean 5, sample std sqrt(7)
    assert z[-1] == pytest.approx((8 - 5) / math.sqrt(7), rel=1e-12)


def test_corr_of_returns_matches_pandas():
    y, x = cointegrated_pair(4000, seed=3)
    ry, rx = log_returns(y), log_returns(x)
    c = rolling_corr(ry, rx, 60)
    ref = pd.Series(ry).rolling(60).corr(pd.Series(rx)).to_numpy()
    assert np.isnan(c[:60]).all()                 # 60 returns need 61 bars
    assert_allclose(c, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.nanmax(np.abs(c)) <= 1.0


def test_log_returns_definition():
    r = log_returns([100.0, 110.0, np.nan, 121.0, -1.0])
    assert np.isnan(r[0]) and r[1] == pytest.approx(math.log(1.1))
    assert np.isnan(r[2:]).all()                  # NaN and non-positive prices give NaN


def test_precision_at_btc_scale_beats_pandas():
    """Windowed variance of prices near 1e8 (a float's precision limit for
    running sums): block-centred sums stay close to the two-pass value, a
    naive cumulative-sum formula does not."""
    rng = np.random.default_rng(0)
    x = 1e8 + np.cumsum(rng.normal(0.0, 50.0, 200_000))
    w = 60
    exact = exact_m2(x, w)
    ours = rolling_moments(x, window=w).m2_a[w - 1:]
    rel = np.abs(ours - exact) / exact
    assert rel.max() < 1e-7
    cs, cs2 = np.cumsum(np.r_[0.0, x]), np.cumsum(np.r_[0.0, x * x])
    s1, s2 = cs[w:] - cs[:-w], cs2[w:] - cs2[:-w]
    naive = s2 - s1 * s1 / w
    assert (np.abs(naive - exact) / exact).max() > 1e3 * rel.max()


def test_nan_gives_nan_windows_never_zeros():
    rng = np.random.default_rng(1)
    s = ar1(500, 0.8, 1.0, rng)
    clean, _, _ = rolling_zscore(s, 20)
    gap = s.copy()
    gap[200] = np.nan
    z, mean, std = rolling_zscore(gap, 20)
    assert np.isnan(z[200:220]).all() and np.isnan(std[200:220]).all()
    assert_allclose(z[220:], clean[220:], rtol=1e-10)
    assert_array_equal(z[:200], clean[:200])
    assert not (z[np.isfinite(z)] == 0).all()


def test_constant_window_has_nan_std_not_inf():
    s = np.r_[np.arange(10.0), np.full(30, 5.0)]
    z, _, std = rolling_zscore(s, 10)
    assert np.isnan(std[-1]) and np.isnan(z[-1])
    m, sd = rolling_mean_std(s, 10)
    assert m[-1] == 5.0


def test_rolling_half_life_matches_direct_ols_per_window():
    rng = np.random.default_rng(2)
    s = ar1(1500, 0.9, 1.0, rng)
    w = 200
    hl = rolling_half_life(s, w)
    assert np.isnan(hl[:w]).all() and np.isfinite(hl[w])
    for t in (w, 700, 1499):
        lag, ds = s[t - w:t], np.diff(s[t - w:t + 1])
        b = np.polyfit(lag, ds, 1)[0]
        assert hl[t] == pytest.approx(-math.log(2) / math.log(1 + b), rel=1e-8)


def test_half_life_from_slope_edges():
    assert half_life_from_slope(0.0) == math.inf
    assert half_life_from_slope(0.1) == math.inf
    assert half_life_from_slope(-1.0) == 0.0
    assert half_life_from_slope(-0.5) == pytest.approx(1.0)
    assert math.isnan(half_life_from_slope(math.nan))
