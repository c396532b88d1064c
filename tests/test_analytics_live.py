"""LivePairState: bar-by-bar parity with the batch ``analyze``, peek without
commit, numerical care with large prices, warm-up messages."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from numpy.testing import assert_allclose

from quantlab.analytics import LivePairState, analyze
from quantlab.errors import ConfigError
from tests.pairs import cointegrated_pair

LIVE_COLUMNS = ("beta", "alpha", "spread", "spread_mean", "spread_std", "zscore", "corr",
                "half_life")


def replay(state: LivePairState, y: np.ndarray, x: np.ndarray, *, check_peek: bool = True
           ) -> pd.DataFrame:
    rows = []
    for i, (yi, xi) in enumerate(zip(y.tolist(), x.tolist())):
        if check_peek:
            state.peek(yi * 1.01, xi * 0.99)               # a tick that is not the close
            before = state.peek(yi, xi)
        row = state.update(i, yi, xi)
        if check_peek and not (state.hedge == "kalman" and i == state.kalman_warmup - 1):
            for k, v in row.items():
                w = before[k] if k != "time" else i
                assert v == w or (v != v and w != w), (i, k, v, w)
        rows.append(row)
    return pd.DataFrame(rows)


def assert_same(batch: pd.DataFrame, live: pd.DataFrame, columns) -> None:
    for c in columns:
        a, b = batch[c].to_numpy(dtype=float), live[c].to_numpy(dtype=float)
        assert (np.isnan(a) == np.isnan(b)).all(), f"{c}: NaN rows differ"
        scale = np.nanmax(np.abs(a[np.isfinite(a)])) if np.isfinite(a).any() else 1.0
        ok = np.isfinite(a)
        assert_allclose(b[ok], a[ok], rtol=1e-7, atol=1e-9 * scale, err_msg=c)
        assert ((a == np.inf) == (b == np.inf)).all(), c


@pytest.fixture(scope="module")
def gappy_pair():
    y, x = cointegrated_pair(1600, seed=21, vol=2e-3)
    y, x = y.copy(), x.copy()
    y[700] = np.nan                                       # a gap in one leg
    x[1100:1103] = np.nan
    return y, x


@pytest.mark.parametrize("hedge,kw", [
    ("rolling-ols", {}),
    ("rolling_ols", {"log_prices": True, "corr_of": "levels", "z_window": 45}),
    ("rolling-ols", {"fit_intercept": False}),
    ("ols", {}),
    ("huber", {"refit_every": 7}),
    ("theil_sen", {"refit_every": 13}),
    ("kalman", {}),
    ("kalman", {"kalman_delta": 1e-9, "kalman_obs_var": 30.0, "log_prices": False}),
])
def test_incremental_matches_batch_bar_by_bar(gappy_pair, hedge, kw):
    y, x = gappy_pair
    window = 40
    batch = analyze(y, x, window=window, hedge=hedge, health=False,
                    with_kalman=False, **kw).frame
    live_kw = {k: v for k, v in kw.items()}
    state = LivePairState(window, hedge, health_window=None, **live_kw)
    live = replay(state, y, x)
    cols = LIVE_COLUMNS + (("kalman_beta",) if hedge == "kalman" else ())
    assert_same(batch, live, cols)
    assert live["zscore"].notna().sum() > 1000


def test_peek_commits_nothing():
    y, x = cointegrated_pair(300, seed=2)
    a, b = LivePairState(30, health_window=None), LivePairState(30, health_window=None)
    for i in range(300):
        if i % 3 == 0:
            for f in (0.9, 1.1, 1.3):
                a.peek(y[i] * f, x[i] / f)
        ra, rb = a.update(i, y[i], x[i]), b.update(i, y[i], x[i])
        assert ra == rb or all(ra[k] == rb[k] or (ra[k] != ra[k] and rb[k] != rb[k]) for k in ra)
    assert a.n_bars == 300 and a.last_time == 299


def test_running_sums_stay_exact_at_1e8_prices():
    """Prices near 1e8 over 100k bars: the incremental beta and z-score agree with
    an exact two-pass computation per window, which a naive running-sum update
    (no recentring) does not."""
    rng = np.random.default_rng(8)
    n, w = 100_000, 60
    x = 1e8 + np.cumsum(rng.normal(0.0, 20.0, n))
    y = 3e6 + 0.03 * x + rng.normal(0.0, 5.0, n)
    st = LivePairState(w, health_window=None)
    beta = np.array([st.update(i, yi, xi)["beta"] for i, (yi, xi)
                     in enumerate(zip(y.tolist(), x.tolist()))])
    X, Y = sliding_window_view(x, w), sliding_window_view(y, w)
    dx, dy = X - X.mean(1, keepdims=True), Y - Y.mean(1, keepdims=True)
    exact = (dx * dy).sum(1) / (dx * dx).sum(1)
    err = np.abs(beta[w - 1:] - exact).max()
    assert err < 1e-9
    # the same O(1) update on raw (uncentred) running sums
    sx = sxx = sxy = sy = 0.0
    naive = []
    for i in range(n):
        sx += x[i]; sy += y[i]; sxx += x[i] * x[i]; sxy += x[i] * y[i]     # noqa: E702
        if i >= w:
            o, p = x[i - w], y[i - w]
            sx -= o; sy -= p; sxx -= o * o; sxy -= o * p                   # noqa: E702
        if i >= w - 1 and i % 997 == 0:
            naive.append(((sxy - sx * sy / w) / (sxx - sx * sx / w), exact[i - w + 1]))
    naive_err = max(abs(a - b) for a, b in naive)
    assert naive_err > 1e4 * err


def test_warmup_messages_and_readiness():
    st = LivePairState(60, "rolling_ols")
    for i in range(12):
        out = st.update(i, 100.0 + i, 50.0 + 0.5 * i + (i % 3))
    assert "zscore needs 119 bars, have 12" in st.shortfall()
    assert "beta needs 60 bars, have 12" in st.shortfall()
    assert math.isnan(out["zscore"]) and not st.ready
    k = LivePairState(60, "kalman")
    assert k.needs()["zscore"] == 500


def test_health_on_the_kept_bars():
    y, x = cointegrated_pair(1500, seed=4, vol=2e-3)
    st = LivePairState(30, health_window=600)
    for i in range(1500):
        st.update(i, y[i], x[i])
    h = st.health()
    assert h["verdict"] == "cointegrated" and h["coint_pvalue"] < 0.05
    off = LivePairState(30, health_window=None)
    with pytest.raises(ConfigError):
        off.health()


def test_reset_and_bad_options():
    st = LivePairState(10, health_window=None)
    for i in range(30):
        st.update(i, 10.0 + math.sin(i), 5.0 + math.cos(i))
    st.reset()
    assert st.n_bars == 0 and math.isnan(st.update(0, 1.0, 2.0)["beta"])
    with pytest.raises(ConfigError, match="hedge"):
        LivePairState(10, "lasso")
    with pytest.raises(ConfigError, match="window"):
        LivePairState(2)


# -- peek, errors and the result dicts (the state machine of live.py) -----------------------
def same(a, b) -> bool:
    """Equal, NaN equal to NaN (for floats, dicts of them, tuples)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b or (a != a and b != b)


@pytest.mark.parametrize("hedge,kw", [
    ("rolling-ols", {}),
    ("rolling-ols", {"log_prices": True, "corr_of": "levels", "z_window": 25,
                     "corr_window": 35, "fit_intercept": False}),
    ("ols", {"fit_intercept": False}),
    ("huber", {"refit_every": 5}),
    ("theil-sen", {"refit_every": 9}),
    ("kalman", {}),                                     # estimated on the warm-up bars
    ("kalman", {"kalman_delta": 1e-9, "kalman_obs_var": 30.0}),
])
def test_peek_never_commits_any_state(gappy_pair, hedge, kw):
    """Peeks (odd prices, NaN, zero) between the updates of one instance leave
    every later update, n_bars, last_time and health() exactly as an instance
    that never peeks; recentring every 7 bars exercises the rare paths."""
    y, x = gappy_pair
    y, x = y[:900].tolist(), x[:900].tolist()
    opts = dict(recompute_every=7, health_window=200, **kw)
    a, b = LivePairState(30, hedge, **opts), LivePairState(30, hedge, **opts)
    for i, (yi, xi) in enumerate(zip(y, x)):
        for py_, px_ in ((yi * 1.3, xi * 0.7), (math.nan, xi), (0.0, -xi), (yi, xi)):
            a.peek(py_, px_)
        assert a.n_bars == b.n_bars == i and a.last_time == b.last_time
        ra, rb = a.update(i, yi, xi), b.update(i, yi, xi)
        assert same(ra, rb), (i, ra, rb)
    assert a.n_bars == 900 and a.last_time == 899
    assert same(a.health(), b.health())


def test_peek_saves_every_state_variable():
    """Guard for LivePairState._state_machine: every variable that is both set up before
    the bar loop and assigned in it is state, and must be in the tuple a peek
    saves and restores."""
    import ast
    import inspect
    import textwrap

    from quantlab.analytics import live

    fn = ast.parse(textwrap.dedent(inspect.getsource(live.LivePairState._state_machine))).body[0]
    loop = next(n for n in fn.body if isinstance(n, ast.While))

    def stored(nodes):
        return {n.id for node in nodes for n in ast.walk(node)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}

    state = (stored(fn.body[:fn.body.index(loop)]) & stored(loop.body)) - {"out"}
    saved = next(n for n in ast.walk(loop) if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", None) == "saved").value
    assert state - {e.id for e in saved.elts} == set()
    assert len(state) > 40


def test_an_exception_in_a_bar_leaves_the_state_usable(gappy_pair, monkeypatch):
    """A bar that raises (here the robust re-fit) raises from update/peek, and
    the instance goes on as if that bar had not been sent."""
    from quantlab.analytics import live

    y, x = gappy_pair
    y, x = y[:300].tolist(), x[:300].tolist()
    a, b = LivePairState(20, "huber", refit_every=4), LivePairState(20, "huber", refit_every=4)
    real_fit = live.robust_window_fit

    def failing_fit(*args):
        raise FloatingPointError("boom")

    for i, (yi, xi) in enumerate(zip(y, x)):
        if i in (39, 40, 199):                          # refit bars (19 + 4k), and not
            monkeypatch.setattr(live, "robust_window_fit", failing_fit)
            if i != 40:
                with pytest.raises(FloatingPointError):
                    a.peek(yi, xi)
                with pytest.raises(FloatingPointError):
                    a.update(i, yi, xi)
            monkeypatch.setattr(live, "robust_window_fit", real_fit)
        assert same(a.update(i, yi, xi), b.update(i, yi, xi)), i
    assert a.n_bars == 300


def test_results_are_new_dicts_with_the_documented_keys():
    y, x = cointegrated_pair(200, seed=3)
    keys = ["time", "y", "x", "beta", "alpha", "spread", "spread_mean", "spread_std",
            "zscore", "corr", "half_life"]
    for hedge, extra in (("rolling-ols", []), ("kalman", ["kalman_beta"])):
        st = LivePairState(20, hedge, kalman_delta=1e-9, kalman_obs_var=25.0)
        rows = [st.update(i, y[i], x[i]) for i in range(200)]   # numpy scalars in
        assert [list(r) for r in rows] == [keys + extra] * 200
        assert all(type(v) is float for k, v in rows[-1].items() if k != "time")
        assert len({id(r) for r in rows}) == 200                 # kept rows stay as they were
        rows[-1]["zscore"] = "changed"
        assert isinstance(st.peek(y[0], x[0])["zscore"], float)
        assert pd.DataFrame(rows)["beta"].notna().sum() > 100
        assert LivePairState.update(st, 200, y[1], x[1])["time"] == 200   # the class method


def test_recentring_every_few_bars_keeps_parity(gappy_pair):
    """The exact recomputation (here every 5 bars, NaN bars in the rings) gives
    the same values as the batch path."""
    y, x = gappy_pair
    for hedge in ("rolling-ols", "kalman"):
        batch = analyze(y, x, window=40, hedge=hedge, health=False, with_kalman=False).frame
        live = replay(LivePairState(40, hedge, health_window=None, recompute_every=5), y, x,
                      check_peek=False)
        assert_same(batch, live, LIVE_COLUMNS)
