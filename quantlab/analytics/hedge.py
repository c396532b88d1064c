r"""Hedge ratios: static fits (in-sample) and causal per-bar series.

The hedge regression is

.. math:: y_t = \alpha + \beta x_t + \varepsilon_t

on prices, or on log prices (``log_prices=True``: :math:`\ln y_t` on
:math:`\ln x_t`, so :math:`\beta` is an elasticity). :math:`\beta` is in units
of y per unit of x (prices) or dimensionless (log prices); :math:`\alpha` in
units of y (or log units).

Static fits (:func:`fit_hedge`) use every bar given, so a spread built from them
is **in-sample** (it knows the future). The per-bar series used for trading and
live display are causal: the value at bar :math:`t` uses bars up to and
including :math:`t` only.

========== ================================================================
method     per-bar (causal) series, :func:`hedge_series`
========== ================================================================
rolling-ols OLS over the trailing ``window`` bars, every bar, closed form
ols        expanding OLS over bars ``0 .. t`` (from ``window`` valid bars on);
           its last value equals the static in-sample fit
huber      Huber M-estimate over the trailing ``window`` bars, re-fitted every
           ``refit_every`` bars and held in between
theil-sen  Theil-Sen over the trailing ``window`` bars, re-fitted every
           ``refit_every`` bars and held in between
kalman     :mod:`quantlab.analytics.kalman` (random-walk state, one-step prior)
========== ================================================================
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from quantlab.analytics._base import (TINY_REL_VAR, Result, as_pair, check_int, finite_pair,
                                      normalise_hedge, require, to_log)
from quantlab.analytics.rolling import expanding_moments, rolling_moments
from quantlab.analytics.rolling import rolling_zscore
from quantlab.errors import ConfigError

__all__ = ["HedgeFit", "HedgeSeries", "fit_hedge", "rolling_ols", "expanding_ols",
           "rolling_robust", "hedge_series", "HUBER_T", "default_refit_every",
           "rolling_beta_zscore"]

#: Huber's tuning constant, as statsmodels' ``HuberT`` (95 % efficiency at the normal).
HUBER_T = 1.345
# statsmodels.robust.scale.mad divides by Phi^-1(3/4).
_MAD_C = 0.6744897501960817
# Beyond this many bars the static Theil-Sen fit uses a seeded sample of pairs.
THEIL_SEN_EXACT_MAX = 3000
THEIL_SEN_SAMPLE_PAIRS = 2_000_000


@dataclasses.dataclass(frozen=True)
class HedgeFit(Result):
    r"""A static (whole-sample, in-sample) hedge regression.

    Attributes
    ----------
    method : ``"ols"``, ``"huber"`` or ``"theil-sen"``.
    beta : slope, y units per x unit (dimensionless on log prices).
    alpha : intercept, y units (log units on log prices); 0 without intercept.
    r2 : :math:`1 - \mathrm{SSR}/\mathrm{SST}` with the fitted coefficients;
        SST centred with an intercept, uncentred without (as statsmodels).
    resid_std : :math:`\sqrt{\mathrm{SSR}/(n-k)}`, k = number of coefficients.
    nobs : bars used (rows where both legs are finite).
    log_prices, fit_intercept : the regression's options.
    in_sample : always True: a spread from this fit uses future bars.
    """

    method: str
    beta: float
    alpha: float
    r2: float
    resid_std: float
    nobs: int
    log_prices: bool
    fit_intercept: bool
    in_sample: bool = True
    _title = "Static hedge fit (in-sample)"

    def spread(self, y, x) -> np.ndarray:
        """:math:`y - \\beta x - \\alpha` on the fit's scale (logs if ``log_prices``)."""
        ya, xa = as_pair(y, x)
        if self.log_prices:
            ya, xa = to_log(ya, "y"), to_log(xa, "x")
        return ya - self.beta * xa - self.alpha


@dataclasses.dataclass(frozen=True, eq=False)
class HedgeSeries(Result):
    """A causal per-bar hedge ratio: ``beta[t]``, ``alpha[t]`` use bars <= t.

    Attributes
    ----------
    method : canonical method name.
    window : trailing window (bars), or min_periods for the expanding fit.
    refit_every : bars between re-estimations (1 = every bar).
    kind : ``"rolling"``, ``"expanding"``, ``"trailing-refit"`` or ``"kalman"``.
    beta, alpha : arrays, one value per bar, NaN until enough bars.
    log_prices, fit_intercept : options.
    """

    method: str
    window: int
    refit_every: int
    kind: str
    log_prices: bool
    fit_intercept: bool
    beta: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    alpha: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    _title = "Causal hedge ratio"


# --- closed-form and robust single/batch fits ------------------------------------------------
def _ols(y: np.ndarray, x: np.ndarray, fit_intercept: bool) -> tuple[float, float]:
    if fit_intercept:
        mx, my = x.mean(), y.mean()
        dx = x - mx
        sxx = float(dx @ dx)
        if sxx <= TINY_REL_VAR * x.size * mx * mx or sxx == 0:
            return math.nan, math.nan
        beta = float(dx @ (y - my)) / sxx
        return beta, float(my - beta * mx)
    sxx = float(x @ x)
    if sxx == 0:
        return math.nan, math.nan
    return float(x @ y) / sxx, 0.0


def _huber_weights(z: np.ndarray, t: float) -> np.ndarray:
    az = np.abs(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(az <= t, 1.0, t / az)


def _huber_rho(z: np.ndarray, t: float) -> np.ndarray:
    az = np.abs(z)
    return np.where(az <= t, 0.5 * z * z, az * t - 0.5 * t * t)


def _wls_rows(Y: np.ndarray, X: np.ndarray, W: np.ndarray | None, fit_intercept: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares per row, closed form (centred on weighted means)."""
    if W is None:
        W = np.ones_like(X)
    with np.errstate(invalid="ignore", divide="ignore"):
        if fit_intercept:
            sw = W.sum(axis=1)
            mx = (W * X).sum(axis=1) / sw
            my = (W * Y).sum(axis=1) / sw
            dx = X - mx[:, None]
            wdx = W * dx
            beta = (wdx * (Y - my[:, None])).sum(axis=1) / (wdx * dx).sum(axis=1)
            alpha = my - beta * mx
        else:
            wx = W * X
            beta = (wx * Y).sum(axis=1) / (wx * X).sum(axis=1)
            alpha = np.zeros_like(beta)
    return alpha, beta


def _huber_rows(Y: np.ndarray, X: np.ndarray, fit_intercept: bool, *, t: float = HUBER_T,
                maxiter: int = 50, tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Huber M-estimates of each row, vectorised across rows.

    Replicates ``statsmodels.api.RLM(y, X, M=HuberT()).fit()`` step by step
    (statsmodels 0.14/0.15, ``robust_linear_model.RLM.fit``): OLS start, scale
    = MAD about 0 (``scale.mad(resid, center=0)``), IRLS with Huber weights,
    convergence when the deviance :math:`\\sum \\rho(r_i/\\hat\\sigma^2_{wls})`
    changes by at most ``tol`` or after ``maxiter`` iterations.
    """
    m, w = Y.shape
    k = 2 if fit_intercept else 1
    df = w - k
    alpha, beta = _wls_rows(Y, X, None, fit_intercept)
    resid = Y - alpha[:, None] - beta[:, None] * X
    scale = np.median(np.abs(resid) / _MAD_C, axis=1)
    wls_scale = (resid * resid).sum(axis=1) / df
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = _huber_rho(resid / wls_scale[:, None], t).sum(axis=1)
    active = np.flatnonzero(np.isfinite(beta))
    iteration = 1
    while active.size:
        active = active[scale[active] != 0.0]     # statsmodels stops on a perfect fit
        if not active.size:
            break
        Ya, Xa, ra = Y[active], X[active], resid[active]
        W = _huber_weights(ra / scale[active][:, None], t)
        a1, b1 = _wls_rows(Ya, Xa, W, fit_intercept)
        r1 = Ya - a1[:, None] - b1[:, None] * Xa
        alpha[active], beta[active], resid[active] = a1, b1, r1
        scale[active] = np.median(np.abs(r1) / _MAD_C, axis=1)
        ws = (W * r1 * r1).sum(axis=1) / df
        with np.errstate(invalid="ignore", divide="ignore"):
            d1 = _huber_rho(r1 / ws[:, None], t).sum(axis=1)
        iteration += 1
        moving = np.abs(d1 - dev[active]) > tol
        dev[active] = d1
        if iteration >= maxiter:
            break
        active = active[moving]
    return alpha, beta


def _theil_sen_rows(Y: np.ndarray, X: np.ndarray, *, max_cells: int = 4_000_000
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Theil-Sen slope and intercept of each row, exactly as
    ``scipy.stats.theilslopes(y, x)`` (``method="separate"``).

    The slope is the median of :math:`(y_j-y_i)/(x_j-x_i)` over pairs with
    :math:`x_j \\ne x_i`. Rows are processed together: tied pairs would need
    a per-row count, so each pair's slope enters twice and a tie enters once
    as :math:`+\\infty` and once as :math:`-\\infty`, which leaves the median
    unchanged.
    """
    m, w = Y.shape
    iu, ju = np.triu_indices(w, k=1)
    npairs = iu.size
    beta = np.full(m, np.nan)
    step = max(1, max_cells // max(2 * npairs, 1))
    for s in range(0, m, step):
        Ys, Xs = Y[s:s + step], X[s:s + step]
        dx = Xs[:, ju] - Xs[:, iu]
        dy = Ys[:, ju] - Ys[:, iu]
        tie = dx == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            sl = dy / dx
        if not tie.any():
            beta[s:s + step] = np.median(sl, axis=1)
            continue
        lo = np.where(tie, -np.inf, sl)
        sl[tie] = np.inf
        both = np.concatenate([sl, lo], axis=1)
        with np.errstate(invalid="ignore"):
            beta[s:s + step] = np.median(both, axis=1)
    alpha = np.median(Y, axis=1) - beta * np.median(X, axis=1)
    return alpha, beta


def _theil_sen_large(y: np.ndarray, x: np.ndarray, pairs: int, seed: int = 0
                     ) -> tuple[float, float]:
    """Theil-Sen on a seeded random sample of ``pairs`` index pairs (approximate)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, y.size, size=pairs)
    j = rng.integers(0, y.size, size=pairs)
    dx = x[j] - x[i]
    ok = dx != 0
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    return float(np.median(y) - slope * np.median(x)), slope


def fit_hedge(y, x, *, method: str = "ols", fit_intercept: bool = True,
              log_prices: bool = False) -> HedgeFit:
    r"""Static hedge regression of ``y`` on ``x`` over the whole sample (in-sample).

    Parameters
    ----------
    y, x : array_like
        Prices (closes) of the two legs, one value per bar. Rows where either
        is NaN are dropped.
    method : {"ols", "huber", "theil-sen"}
        ``ols``: least squares, closed form on centred data. ``huber``: Huber
        M-estimator (IRLS, :math:`t = 1.345`, MAD scale), the same iterations
        as ``statsmodels.api.RLM(..., M=HuberT()).fit()``. ``theil-sen``:
        median of pairwise slopes, intercept
        :math:`\mathrm{med}(y) - \beta\,\mathrm{med}(x)` as
        ``scipy.stats.theilslopes``; exact up to 3000 bars, above that the
        median over a seeded sample of 2 million pairs (approximate).
    fit_intercept : bool
        Include :math:`\alpha` (always true for Theil-Sen).
    log_prices : bool
        Regress :math:`\ln y` on :math:`\ln x`.

    Returns
    -------
    HedgeFit

    Examples
    --------
    >>> fit = fit_hedge([2.0, 4.1, 5.9, 8.0], [1.0, 2.0, 3.0, 4.0])
    >>> round(fit.beta, 3), round(fit.alpha, 3), fit.in_sample
    (1.98, 0.05, True)
    """
    method = normalise_hedge(method)
    if method in ("rolling-ols", "kalman"):
        raise ConfigError("method", method, "'ols', 'huber' or 'theil-sen' for a static fit")
    if method == "theil-sen" and not fit_intercept:
        raise ConfigError("fit_intercept", fit_intercept, "True for Theil-Sen")
    ya, xa = finite_pair(*as_pair(y, x))
    if log_prices:
        ya, xa = to_log(ya, "y"), to_log(xa, "x")
    k = 2 if fit_intercept else 1
    require(f"a {method} hedge fit", k + 1, ya.size)
    if method == "ols":
        beta, alpha = _ols(ya, xa, fit_intercept)
    elif method == "huber":
        a, b = _huber_rows(ya[None, :], xa[None, :], fit_intercept)
        alpha, beta = float(a[0]), float(b[0])
    elif ya.size <= THEIL_SEN_EXACT_MAX:
        a, b = _theil_sen_rows(ya[None, :], xa[None, :])
        alpha, beta = float(a[0]), float(b[0])
    else:
        alpha, beta = _theil_sen_large(ya, xa, THEIL_SEN_SAMPLE_PAIRS)
    resid = ya - beta * xa - alpha
    ssr = float(resid @ resid)
    yc = ya - ya.mean() if fit_intercept else ya
    sst = float(yc @ yc)
    r2 = 1.0 - ssr / sst if sst > 0 else math.nan
    return HedgeFit(method=method, beta=float(beta), alpha=float(alpha), r2=float(r2),
                    resid_std=math.sqrt(ssr / (ya.size - k)), nobs=int(ya.size),
                    log_prices=bool(log_prices), fit_intercept=bool(fit_intercept))


# --- causal per-bar series ------------------------------------------------------------------
def _prep(y, x, log_prices: bool) -> tuple[np.ndarray, np.ndarray]:
    ya, xa = as_pair(y, x)
    if log_prices:
        ya, xa = to_log(ya, "y"), to_log(xa, "x")
    return ya, xa


def _beta_from_moments(mom, window, fit_intercept: bool) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) from moments of (a=x, b=y)."""
    mx, my, sxx, sxy = mom.mean_a, mom.mean_b, mom.m2_a, mom.c_ab
    n = np.asarray(window, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if fit_intercept:
            bad = (sxx <= TINY_REL_VAR * n * mx * mx) | (sxx <= 0)
            beta = np.where(bad, np.nan, sxy / sxx)
            alpha = my - beta * mx
        else:
            rxx = sxx + n * mx * mx
            beta = np.where(rxx > 0, (sxy + n * mx * my) / rxx, np.nan)
            alpha = np.where(np.isnan(beta), np.nan, 0.0)
    return alpha, beta


def rolling_ols(y, x, window: int, *, fit_intercept: bool = True,
                log_prices: bool = False) -> HedgeSeries:
    r"""OLS hedge ratio over the trailing ``window`` bars, every bar.

    .. math::

        \beta_t = \frac{\sum_{i=t-w+1}^{t} (x_i-\bar x_t)(y_i-\bar y_t)}
                       {\sum_{i=t-w+1}^{t} (x_i-\bar x_t)^2},
        \qquad \alpha_t = \bar y_t - \beta_t \bar x_t

    (without intercept: :math:`\beta_t = \sum x_i y_i / \sum x_i^2`). Causal:
    uses bars :math:`t-w+1 \ldots t`. NaN for the first ``window - 1`` bars,
    for any window holding a NaN, and where x is constant over the window.
    Closed form from block-centred cumulative sums (see
    :mod:`quantlab.analytics.rolling`), ~300x faster than statsmodels'
    ``RollingOLS`` and equal to it to rounding.

    Examples
    --------
    >>> r = rolling_ols([1.0, 2.0, 3.1, 3.9, 5.2], [1.0, 2.0, 3.0, 4.0, 5.0], 3)
    >>> [round(float(b), 3) for b in r.beta]
    [nan, nan, 1.05, 0.95, 1.05]
    """
    window = check_int("window", window, 2 if fit_intercept else 1)
    ya, xa = _prep(y, x, log_prices)
    mom = rolling_moments(xa, ya, window=window)
    alpha, beta = _beta_from_moments(mom, window, fit_intercept)
    return HedgeSeries(method="rolling-ols", window=window, refit_every=1, kind="rolling",
                       log_prices=bool(log_prices), fit_intercept=bool(fit_intercept),
                       beta=beta, alpha=alpha)


def expanding_ols(y, x, min_periods: int, *, fit_intercept: bool = True,
                  log_prices: bool = False) -> HedgeSeries:
    r"""OLS over all bars ``0 .. t`` (expanding window), every bar.

    Same formula as :func:`rolling_ols` with the window running from the first
    bar. NaN until ``min_periods`` valid bars, and on bars where a leg is NaN
    (those bars are skipped, not fatal). Causal; the last value equals the
    static in-sample :func:`fit_hedge` on the same bars.
    """
    min_periods = check_int("min_periods", min_periods, 2 if fit_intercept else 1)
    ya, xa = _prep(y, x, log_prices)
    mom = expanding_moments(xa, ya, min_periods=min_periods)
    alpha, beta = _beta_from_moments(mom, mom.count, fit_intercept)
    return HedgeSeries(method="ols", window=min_periods, refit_every=1, kind="expanding",
                       log_prices=bool(log_prices), fit_intercept=bool(fit_intercept),
                       beta=beta, alpha=alpha)


def default_refit_every(method: str, window: int) -> int:
    """Default re-estimation cadence in bars: 1 for the closed forms (OLS,
    rolling OLS, Kalman); ``max(1, window // 4)`` for Huber and Theil-Sen,
    whose fits cost O(window) per IRLS iteration and O(window^2) each (two
    years of 1-minute bars, window 60, whole ``analyze``: about 10 s for Huber
    and 15 s for Theil-Sen on a 2-core machine; re-fitting every bar would
    take 15 times longer)."""
    method = normalise_hedge(method)
    if method in ("huber", "theil-sen"):
        return max(1, int(window) // 4)
    return 1


def fit_rows(n: int, window: int, refit_every: int) -> np.ndarray:
    """Bars at which a trailing-refit estimator re-estimates: ``window-1``,
    ``window-1+K``, ... (shared by the batch and the live path)."""
    return np.arange(window - 1, n, refit_every)


def robust_window_fit(Y: np.ndarray, X: np.ndarray, method: str, fit_intercept: bool
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) of each row of ``Y`` on ``X`` by ``method`` (huber/theil-sen)."""
    if method == "huber":
        return _huber_rows(Y, X, fit_intercept)
    return _theil_sen_rows(Y, X)


def rolling_robust(y, x, window: int, *, method: str = "huber", refit_every: int | None = None,
                   fit_intercept: bool = True, log_prices: bool = False) -> HedgeSeries:
    r"""Robust hedge ratio re-fitted on the trailing ``window`` bars every
    ``refit_every`` bars and held in between.

    A fit at bar :math:`r` uses bars :math:`r-w+1 \ldots r` and is the value
    for bars :math:`r \ldots r+K-1` (:math:`K` = ``refit_every``): causal. Fit
    bars are ``window-1, window-1+K, ...``. A window holding a NaN gives NaN
    until the next fit.

    Parameters
    ----------
    method : {"huber", "theil-sen"}
        As in :func:`fit_hedge` (Theil-Sen always exact here).
    refit_every : int, optional
        Bars between fits; default :func:`default_refit_every`.
    """
    method = normalise_hedge(method)
    if method not in ("huber", "theil-sen"):
        raise ConfigError("method", method, "'huber' or 'theil-sen'")
    if method == "theil-sen" and not fit_intercept:
        raise ConfigError("fit_intercept", fit_intercept, "True for Theil-Sen")
    window = check_int("window", window, 3)
    k = default_refit_every(method, window) if refit_every is None else \
        check_int("refit_every", refit_every, 1)
    ya, xa = _prep(y, x, log_prices)
    n = ya.size
    beta = np.full(n, np.nan)
    alpha = np.full(n, np.nan)
    rows = fit_rows(n, window, k)
    if rows.size:
        starts = rows - (window - 1)
        Yw = sliding_window_view(ya, window)[starts]
        Xw = sliding_window_view(xa, window)[starts]
        ok = np.isfinite(Yw).all(axis=1) & np.isfinite(Xw).all(axis=1)
        fa = np.full(rows.size, np.nan)
        fb = np.full(rows.size, np.nan)
        chunk = 20_000
        idx = np.flatnonzero(ok)
        for s in range(0, idx.size, chunk):
            sel = idx[s:s + chunk]
            fa[sel], fb[sel] = robust_window_fit(Yw[sel], Xw[sel], method, fit_intercept)
        held = (np.arange(window - 1, n) - (window - 1)) // k
        beta[window - 1:] = fb[held]
        alpha[window - 1:] = fa[held]
    return HedgeSeries(method=method, window=window, refit_every=k, kind="trailing-refit",
                       log_prices=bool(log_prices), fit_intercept=bool(fit_intercept),
                       beta=beta, alpha=alpha)


def hedge_series(y, x, *, method: str, window: int, refit_every: int | None = None,
                 fit_intercept: bool = True, log_prices: bool = False) -> HedgeSeries:
    """Causal per-bar hedge ratio for every non-Kalman method (see module table).

    For ``kalman`` use :func:`quantlab.analytics.kalman.kalman_filter`.
    """
    method = normalise_hedge(method)
    if method == "rolling-ols":
        return rolling_ols(y, x, window, fit_intercept=fit_intercept, log_prices=log_prices)
    if method == "ols":
        return expanding_ols(y, x, window, fit_intercept=fit_intercept, log_prices=log_prices)
    if method in ("huber", "theil-sen"):
        return rolling_robust(y, x, window, method=method, refit_every=refit_every,
                              fit_intercept=fit_intercept, log_prices=log_prices)
    raise ConfigError("method", method, "a non-Kalman method (use kalman_filter)")


def rolling_beta_zscore(y, x, window: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Causal rolling-OLS hedge ratio and z-score of the intercept-free spread,
    one window for both: the signal :func:`quantlab.backtest.sweep` trades by default.

    For each bar :math:`t`, over the ``window`` bars :math:`t-w+1 \ldots t`:

    .. math::

        \beta_t = \frac{\sum (x_i-\bar x_t)(y_i-\bar y_t)}{\sum (x_i-\bar x_t)^2},\qquad
        s_t = y_t - \beta_t x_t,\qquad
        z_t = \frac{s_t - \bar s_t}{\mathrm{sd}_t(s)}

    with the mean and sample standard deviation (ddof 1) of the last ``window``
    spreads, each computed with its own causal :math:`\beta`. It is
    :func:`rolling_ols` followed by :func:`quantlab.analytics.rolling_zscore`
    (no other arithmetic), so its precision is theirs: block-centred sums,
    about :math:`10^{-10}` relative on the window moments of BTC-sized prices
    (see :mod:`quantlab.analytics.rolling`). Unlike :func:`quantlab.analytics.analyze`
    the spread has no :math:`\alpha_t`: :math:`\alpha_t` moves with the window,
    so the two z-scores differ (both causal).

    Uses bars up to and including :math:`t` only: ``beta`` is NaN for the first
    ``window - 1`` bars, ``zscore`` for the first ``2 window - 2``; a window holding
    a NaN, or in which x is constant, gives NaN. Values are bit-identical on any
    prefix of the data containing :math:`t`.

    Parameters
    ----------
    y, x : array_like
        Closes of the dependent and the independent leg, one value per bar.
    window : int
        Bars per window (>= 2), for the regression and the z-score.

    Returns
    -------
    (beta, zscore) : arrays of ``len(y)`` floats

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = 100 + np.cumsum(rng.normal(size=300))
    >>> y = 2 * x + rng.normal(scale=0.1, size=300)
    >>> beta, z = rolling_beta_zscore(y, x, 50)
    >>> bool(np.isnan(z[97])), bool(np.isfinite(z[98])), round(float(np.nanmedian(beta)), 1)
    (True, True, 2.0)
    """
    window = check_int("window", window, 2)
    ya, xa = as_pair(y, x)
    beta = rolling_ols(ya, xa, window).beta
    z = np.full(ya.size, np.nan)
    first = window - 1  # the spread is NaN before: z starts on the first beta
    if ya.size > first:
        with np.errstate(invalid="ignore"):
            spread = ya[first:] - beta[first:] * xa[first:]
        z[first:] = rolling_zscore(spread, window)[0]
    return beta, z
