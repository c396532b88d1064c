"""Causality by recomputation: every per-bar output of ``analyze`` on a
truncated input equals the same rows of the full run, for every hedge method.

The rolling sums are centred on each block's first bar and the Kalman
parameters come from the warm-up bars only, so the earlier rows are equal bit
for bit, not just to rounding."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantlab.analytics import analyze, fit_hedge
from tests.pairs import cointegrated_pair

N = 2400
CUTS = (700, 1451, 2000)


@pytest.fixture(scope="module")
def pair():
    y, x = cointegrated_pair(N, seed=31, vol=2e-3)
    y = y.copy()
    y[900] = np.nan
    return y, x


def per_bar_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("y", "x")]


@pytest.mark.parametrize("hedge,kw", [
    ("rolling-ols", {}),
    ("rolling-ols", {"log_prices": True, "corr_of": "levels"}),
    ("ols", {}),
    ("huber", {"refit_every": 9}),
    ("theil-sen", {"refit_every": 9}),
    ("kalman", {"kalman_warmup": 300}),
    ("rolling-ols", {"with_kalman": True, "kalman_warmup": 300}),
])
def test_truncation_leaves_earlier_rows_unchanged(pair, hedge, kw):
    y, x = pair
    full = analyze(y, x, window=50, hedge=hedge, health_window=400, health_every=25, **kw).frame
    cols = per_bar_columns(full)
    assert {"beta", "alpha", "spread", "zscore", "corr", "half_life", "verdict"} <= set(cols)
    for cut in CUTS:
        part = analyze(y[:cut], x[:cut], window=50, hedge=hedge, health_window=400,
                       health_every=25, **kw).frame
        for c in cols:
            a, b = full[c].iloc[:cut], part[c]
            if a.dtype.kind == "f":
                assert np.array_equal(a.to_numpy(), b.to_numpy(), equal_nan=True), (hedge, cut, c)
            else:
                assert (a.astype(str).to_numpy() == b.astype(str).to_numpy()).all(), (hedge, cut, c)
        assert part["zscore"].notna().any()


def test_static_fit_is_not_causal_and_is_labelled(pair):
    """The whole-range OLS changes when later bars are added: it is the in-sample
    summary, never a per-bar column."""
    y, x = pair
    early, late = fit_hedge(y[:1000], x[:1000]), fit_hedge(y, x)
    assert early.beta != late.beta and late.in_sample
    a = analyze(y, x, window=50, hedge="ols", health=False)
    assert a.summary()["static_fit_in_sample"] is True
    # the causal expanding column only reaches the static value at the last bar
    assert a.frame["beta"].iloc[-1] == pytest.approx(late.beta, rel=1e-9)
    assert a.frame["beta"].iloc[999] == pytest.approx(early.beta, rel=1e-9)
