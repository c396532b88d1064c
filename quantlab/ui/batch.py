"""Rows of many bars at once, from the batch analytics, and live states seeded to
continue after them.

Why: a parameter change (window, hedge, timeframe), a history load or a
resynchronisation with the store after a gap recomputes every kept bar. Replaying
10,000 bars one by one through :class:`~quantlab.analytics.LivePairState` costs
25-650 ms per state (Huber re-fits each bar's window); the vectorised batch path,
:func:`quantlab.analytics.analyze` and :func:`quantlab.analytics.hedge_series`,
gives the same per-bar values in a few milliseconds (:func:`analytics_columns`
runs the steps of ``analyze`` itself, without its in-sample summary). The live states then only
need to *continue* from the last bar:

* windowed methods (rolling OLS, Huber, Theil-Sen) depend on the last
  ``window + z_window`` bars only (the hedge ring, the spread ring and the bar
  before it, the correlation ring): the state is fed just that tail, starting
  on a bar of the same re-fit phase, so its next values equal those of a state
  that saw every bar (to rounding; ``tests/test_ui_batch.py`` checks it);
* the expanding OLS and the Kalman filter depend on every bar since the start:
  they are fed every bar (O(1) each, no re-fit), the Kalman filter with the
  parameters the batch path estimated on the same warm-up bars (so the
  maximum-likelihood fit runs once, not twice).

Pure: numpy and :mod:`quantlab.analytics`; no Bokeh, no widgets, no I/O.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["analytics_columns", "seed_state", "tail_start", "warmup_bars", "COMPARE"]

NAN = math.nan

#: comparison hedge-ratio columns of the hedge plot -> the method computing them
COMPARE = (("beta_static", "ols"), ("beta_rolling", "rolling-ols"), ("beta_kalman", "kalman"))

_MAIN = ("spread", "spread_mean", "spread_std", "zscore", "corr", "beta", "alpha", "half_life")


def _norm(method: str) -> str:
    return method.replace("_", "-")


def kalman_warmup(window: int) -> int:
    """Bars of the Kalman maximum-likelihood warm-up for ``window`` (the
    analytics' default: ``max(window, 500)``, at least 12)."""
    from quantlab.analytics.kalman import default_warmup

    return max(default_warmup(window, True), 12)


def warmup_bars(window: int, hedge: str) -> int:
    """Bars before every output of ``hedge`` (and the comparison ratios) has a
    value: kept beyond the plotted window so that a recomputation of the kept
    bars gives values for every plotted bar."""
    from quantlab.analytics import bars_needed

    needs = bars_needed(window, _norm(hedge))
    return max(max(needs.values()), 2 * window + 2)


def tail_start(method: str, n: int, window: int, refit_every: int = 1) -> int:
    """First bar to feed a fresh live state so that after bar ``n - 1`` it is
    in the same state as one fed every bar (windowed methods), or 0 (methods
    whose state depends on every bar: expanding OLS, Kalman).

    A windowed state holds the last ``window`` bars (hedge), ``window`` spreads
    plus the one that left (z-score, half-life) and ``window`` returns plus
    the last close (correlation): ``2 * window + 2`` bars rebuild all of it.
    Robust methods re-fit every ``refit_every`` bars counted from the state's
    first bar, so the tail starts on a multiple of ``refit_every``.

    >>> tail_start("rolling-ols", 10_000, 60), tail_start("ols", 10_000, 60)
    (9878, 0)
    >>> tail_start("huber", 10_000, 60, refit_every=15)
    9870
    """
    m = _norm(method)
    if m in ("ols", "kalman"):
        return 0
    need = 2 * window + 2
    start = max(0, n - need)
    k = max(1, int(refit_every))
    return start // k * k


def analytics_columns(y: np.ndarray, x: np.ndarray, *, window: int, hedge: str,
                      kalman_params: Any = None, reuse: Mapping[str, np.ndarray] | None = None
                      ) -> tuple[dict[str, np.ndarray], Any]:
    """Per-bar analytics of the committed bars (closes ``y``, ``x``) from the
    batch path: ``spread``, ``spread_mean``, ``spread_std``, ``zscore``,
    ``corr``, ``beta``, ``alpha``, ``half_life`` of ``hedge`` and the
    comparison ratios ``beta_static`` (expanding OLS), ``beta_rolling``
    (rolling OLS), ``beta_kalman`` (the Kalman filter's filtered beta).

    Returns ``(columns, kalman_params)``; ``kalman_params`` are those of the
    Kalman run (main or comparison; None before its warm-up is complete). Too
    few bars for :func:`~quantlab.analytics.analyze` give NaN columns (the
    values then come from the live states, see :class:`PairPipeline`).

    ``kalman_params`` given (:class:`~quantlab.analytics.KalmanParams` of an
    earlier run on the same warm-up length) skips the maximum-likelihood
    fit; ``reuse`` maps comparison columns to values still valid (a hedge
    change leaves them as they are).
    """
    from quantlab.analytics import (hedge_series, kalman_filter, log_returns, rolling_corr,
                                    rolling_half_life, rolling_zscore)
    from quantlab.analytics.hedge import default_refit_every

    n = int(y.size)
    m = _norm(hedge)
    out = {c: np.full(n, NAN) for c in _MAIN + tuple(c for c, _ in COMPARE)}
    kparams = None
    kbeta = None
    kw = kalman_warmup(window)
    kp = {} if kalman_params is None else {"kalman_delta": kalman_params.delta,
                                            "kalman_obs_var": kalman_params.obs_var}
    if n >= max(window, 20) and (m != "kalman" or n >= kw):
        # analyze()'s per-bar columns, step by step with the same functions (its
        # in-sample summary, ADF and Engle-Granger over all bars, is not needed)
        with np.errstate(invalid="ignore", divide="ignore"):
            if m == "kalman":
                k = kalman_filter(y, x, warmup=kw, delta=kp.get("kalman_delta"),
                                  obs_var=kp.get("kalman_obs_var"))
                kparams = k.params
                spread = np.asarray(k.spread, dtype=np.float64)
                out.update(beta=np.asarray(k.beta_prior, dtype=np.float64),
                           alpha=np.asarray(k.alpha_prior, dtype=np.float64), spread=spread,
                           spread_mean=np.where(np.isfinite(spread), 0.0, np.nan),
                           spread_std=np.sqrt(np.asarray(k.innovation_var, dtype=np.float64)),
                           zscore=np.asarray(k.zscore, dtype=np.float64))
                kbeta = np.asarray(k.beta, dtype=np.float64)
            else:
                hs = hedge_series(y, x, method=m, window=window,
                                  refit_every=default_refit_every(m, window))
                spread = y - hs.beta * x - hs.alpha
                z, mean, std = rolling_zscore(spread, window)
                out.update(beta=np.asarray(hs.beta, dtype=np.float64),
                           alpha=np.asarray(hs.alpha, dtype=np.float64), spread=spread,
                           spread_mean=mean, spread_std=std, zscore=z)
            out["corr"] = rolling_corr(log_returns(y), log_returns(x), window)
            out["half_life"] = rolling_half_life(spread, window)
    reuse = reuse or {}
    for col, method in COMPARE:
        if col in reuse and _norm(method) != m:
            out[col] = reuse[col]
            continue
        if _norm(method) == m:
            if m != "kalman":
                out[col] = out["beta"]
            elif kbeta is not None:
                out[col] = kbeta
            continue
        if method == "kalman":
            if n >= kw:
                k = kalman_filter(y, x, warmup=kw, delta=kp.get("kalman_delta"),
                                  obs_var=kp.get("kalman_obs_var"))
                kparams = kparams or k.params
                out[col] = np.asarray(k.beta, dtype=np.float64)
            continue
        if n >= window:
            out[col] = np.asarray(hedge_series(y, x, method=_norm(method), window=window).beta,
                                  dtype=np.float64)
    if kbeta is not None:
        out["beta_kalman"] = kbeta
    return out, kparams


def seed_state(make: Callable[..., Any], method: str, t: np.ndarray, y: np.ndarray,
               x: np.ndarray, *, window: int, kalman_params: Any = None) -> Any:
    """A live state (``make()``) fed the bars it needs to continue after the
    last of ``t``, ``y``, ``x`` exactly as a state fed every bar would (see
    :func:`tail_start`). A Kalman state given ``kalman_params`` (those the
    batch path estimated on the same warm-up bars) skips its own
    maximum-likelihood fit: ``make(kalman_delta=..., kalman_obs_var=...,
    kalman_warmup=...)``."""
    if _norm(method) == "kalman" and kalman_params is not None:
        st = make(kalman_delta=kalman_params.delta, kalman_obs_var=kalman_params.obs_var,
                  kalman_warmup=kalman_warmup(window))
    else:
        st = make()
    start = tail_start(method, int(t.size), window, getattr(st, "refit_every", 1))
    up = st.update
    for ti, yi, xi in zip(t[start:].tolist(), y[start:].tolist(), x[start:].tolist()):
        up(ti, yi, xi)
    return st
