r"""Tests of the spread: ADF, Engle-Granger, Johansen, KPSS, half-life, Hurst.

Every function returns a frozen result with the shared vocabulary ``stat``,
``pvalue``, ``critical_values`` (``"1%"``, ``"5%"``, ``"10%"``), ``nobs``,
``lags``. These are whole-sample statistics: they use every bar given
(in-sample); per-bar causal versions live in :mod:`quantlab.analytics.health`.

ADF and Engle-Granger reproduce ``statsmodels.tsa.stattools.adfuller`` and
``coint`` exactly (same lag search, same samples, same information criteria,
MacKinnon p-values and critical values from statsmodels) but compute the
nested lag regressions from one Gram matrix: the lagged-difference block is
Toeplitz up to edge terms, so it costs :math:`p+1` dot products instead of
:math:`p` least-squares fits of an :math:`n \times p` matrix. On a million bars
with statsmodels' default 120 lags this is seconds instead of many minutes.
Johansen and KPSS call statsmodels.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from quantlab.analytics import _sm
from quantlab.analytics._base import (Result, as_float_array, as_pair, check_int, finite_pair,
                                      require)
from quantlab.analytics.rolling import half_life_from_slope
from quantlab.errors import ConfigError

__all__ = ["ADFResult", "EngleGrangerResult", "EngleGrangerPair", "JohansenResult",
           "KPSSResult", "HalfLifeResult", "HurstResult", "adf", "engle_granger",
           "engle_granger_both", "coint", "johansen", "kpss", "half_life", "hurst",
           "default_maxlag", "DEFAULT_LAG_CAP"]

#: Default cap on ADF / Engle-Granger lags (``maxlag = min(statsmodels default,
#: cap)``). statsmodels' default is :math:`\lceil 12 (n/100)^{1/4} \rceil`, 120
#: lags on a million bars; 1-minute crypto spreads pick far fewer by AIC.
DEFAULT_LAG_CAP = 24
_TRENDS = {"n": 0, "c": 1, "ct": 2, "ctt": 3}
_SQRTEPS = float(np.sqrt(np.finfo(np.double).eps))
# Below this many Gram cells an explicit design matrix is built; above, the
# Toeplitz-with-edges construction (same numbers, no n x p matrix in memory).
_EXPLICIT_MAX_CELLS = 4_000_000


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum: single-threaded and faster than BLAS ddot on small shared machines
    return float(np.einsum("i,i->", a, b))


# --- results ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ADFResult(Result):
    r"""Augmented Dickey-Fuller test of a unit root.

    Regression on :math:`\Delta s_t = d_t + \gamma s_{t-1} + \sum_{j=1}^{p}
    \phi_j \Delta s_{t-j} + e_t`; ``stat`` is the t-statistic of :math:`\gamma`
    (H0: unit root, :math:`\gamma = 0`). Small p-value: stationary spread.

    Attributes
    ----------
    stat, pvalue : t-statistic and MacKinnon (1994) p-value.
    critical_values : MacKinnon (2010), keyed ``"1%"``, ``"5%"``, ``"10%"``.
    lags : lagged differences used (:math:`p`).
    nobs : observations of the final regression (:math:`n - p - 1`).
    maxlag : largest lag searched. lag_capped : True if the cap lowered it.
    regression : deterministic terms (``"c"``, ``"ct"``, ``"ctt"``, ``"n"``).
    autolag : ``"aic"``, ``"bic"``, ``"t-stat"`` or None. icbest : best criterion.
    """

    stat: float
    pvalue: float
    critical_values: dict
    lags: int
    nobs: int
    maxlag: int
    lag_capped: bool
    regression: str
    autolag: str | None
    icbest: float | None
    _title = "Augmented Dickey-Fuller"


@dataclasses.dataclass(frozen=True)
class EngleGrangerResult(Result):
    r"""Engle-Granger (augmented) cointegration test of one direction.

    Step 1: OLS :math:`y_t = \alpha + \beta x_t + u_t` (``direction`` "y~x").
    Step 2: ADF without deterministic terms on :math:`\hat u_t`; p-value and
    critical values from MacKinnon for two variables (as ``statsmodels.coint``).
    H0: no cointegration. ``nobs`` is the number of bars.
    """

    stat: float
    pvalue: float
    critical_values: dict
    lags: int
    nobs: int
    direction: str
    beta: float
    alpha: float
    trend: str
    maxlag: int
    lag_capped: bool
    _title = "Engle-Granger cointegration"


@dataclasses.dataclass(frozen=True)
class EngleGrangerPair(Result):
    """Engle-Granger in both directions; ``pvalue`` is the larger of the two
    (cointegration should not depend on which leg is called y)."""

    y_on_x: EngleGrangerResult
    x_on_y: EngleGrangerResult
    _title = "Engle-Granger, both directions"

    @property
    def pvalue(self) -> float:
        return max(self.y_on_x.pvalue, self.x_on_y.pvalue)

    @property
    def stat(self) -> float:
        """Statistic of the direction with the larger p-value."""
        r = self.y_on_x if self.y_on_x.pvalue >= self.x_on_y.pvalue else self.x_on_y
        return r.stat

    def summary(self) -> dict:
        return {"pvalue": self.pvalue, "stat": self.stat,
                "y_on_x": self.y_on_x.summary(), "x_on_y": self.x_on_y.summary()}


@dataclasses.dataclass(frozen=True)
class JohansenResult(Result):
    r"""Johansen cointegration rank test of (y, x).

    ``stat`` and ``critical_values`` are the trace test of rank 0 (H0: no
    cointegrating vector); the tuples hold every rank. Johansen gives no
    p-value (``pvalue`` is None). ``rank_trace`` / ``rank_max_eig``: rank
    selected at 5 %. ``beta`` normalises the first cointegrating vector on y:
    :math:`y - \beta x` is stationary. ``lags`` = ``k_ar_diff``.
    """

    stat: float
    pvalue: None
    critical_values: dict
    nobs: int
    lags: int
    det_order: int
    trace_stat: tuple
    trace_critical_values: tuple
    max_eig_stat: tuple
    max_eig_critical_values: tuple
    eigenvalues: tuple
    rank_trace: int
    rank_max_eig: int
    beta: float
    _title = "Johansen cointegration"


@dataclasses.dataclass(frozen=True)
class KPSSResult(Result):
    """KPSS test (H0: stationary, the reverse of ADF). statsmodels' look-up
    table bounds the p-value to [0.01, 0.1]; ``pvalue_bound`` says "smaller" or
    "greater" when the true p-value lies beyond. Critical values also carry
    ``"2.5%"``."""

    stat: float
    pvalue: float
    critical_values: dict
    lags: int
    nobs: int
    regression: str
    pvalue_bound: str | None
    _title = "KPSS"


@dataclasses.dataclass(frozen=True)
class HalfLifeResult(Result):
    r"""Half-life of mean reversion from an AR(1) / discretised OU fit.

    OLS of :math:`\Delta s_t = a + b\, s_{t-1} + e_t`; :math:`\phi = 1 + b`,
    half-life :math:`-\ln 2/\ln|\phi|` bars (``math.inf`` when :math:`b \ge 0`:
    no mean reversion; see :func:`quantlab.analytics.rolling.half_life_from_slope`).
    ``stat`` is the t-statistic of :math:`b` (a Dickey-Fuller statistic without
    lags), ``pvalue``/``critical_values`` its MacKinnon values. ``mean`` is the
    level reverted to, :math:`-a/b`.
    """

    half_life: float
    b: float
    a: float
    phi: float
    mean: float
    stat: float
    pvalue: float
    critical_values: dict
    nobs: int
    lags: int = 0
    _title = "Half-life of mean reversion (bars)"


@dataclasses.dataclass(frozen=True)
class HurstResult(Result):
    r"""Hurst exponent from the scaling of lagged differences.

    :math:`\mathrm{std}(s_{t+\tau} - s_t) \propto \tau^H`; ``stat`` is :math:`H`,
    the OLS slope of :math:`\ln \mathrm{std}` on :math:`\ln \tau`. :math:`H < 0.5`
    mean-reverting, :math:`= 0.5` random walk, :math:`> 0.5` trending.
    ``lags`` is the number of lags in the fit. No p-value.
    """

    stat: float
    nobs: int
    lags: int
    min_lag: int
    max_lag: int
    pvalue: None = None
    _title = "Hurst exponent"


# --- ADF core ---------------------------------------------------------------------------------
def default_maxlag(nobs: int, regression: str = "c", lag_cap: int | None = None) -> int:
    r"""statsmodels' default ADF lag bound,
    :math:`\min(\lfloor n/2 \rfloor - k_{trend} - 1,\ \lceil 12 (n/100)^{1/4}\rceil)`,
    then capped at ``lag_cap`` (None: no cap)."""
    ntrend = _TRENDS[regression]
    m = int(math.ceil(12.0 * (nobs / 100.0) ** 0.25))
    m = min(nobs // 2 - ntrend - 1, m)
    if lag_cap is not None:
        m = min(m, int(lag_cap))
    return m


def _trend_cols(nobs: int, regression: str) -> np.ndarray:
    """Deterministic columns spanning the same space as statsmodels' add_trend
    (constant, t, t^2), centred/scaled for conditioning."""
    ntrend = _TRENDS[regression]
    cols = np.empty((nobs, ntrend))
    if ntrend:
        cols[:, 0] = 1.0
    if ntrend >= 2:
        t = (np.arange(nobs, dtype=float) - (nobs - 1) / 2.0) / max(nobs, 1)
        cols[:, 1] = t
        if ntrend == 3:
            t2 = t * t
            cols[:, 2] = t2 - t2.mean()
    return cols


def _adf_gram(x: np.ndarray, p: int, regression: str) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Gram matrix of the ADF design with ``p`` lagged differences.

    Columns ``[trend..., level, dlag_1..dlag_p]`` over rows ``t = p .. m-1``
    (``d = diff(x)``, ``m = len(d)``); response ``d_t``. Returns
    ``(G, X'y, y'y, nobs)``. With deterministic terms the level is centred
    (absorbed by the constant; keeps G well conditioned).
    """
    d = np.diff(x)
    m = d.size
    nobs = m - p
    ntrend = _TRENDS[regression]
    k = ntrend + 1 + p
    level = x[p:m].copy()
    if ntrend:
        level -= level.mean()
    trend = _trend_cols(nobs, regression)
    yv = d[p:m]
    if nobs * k <= _EXPLICIT_MAX_CELLS or m - 2 * p < 1:
        X = np.empty((nobs, k))
        X[:, :ntrend] = trend
        X[:, ntrend] = level
        for j in range(1, p + 1):
            X[:, ntrend + j] = d[p - j:m - j]
        return X.T @ X, X.T @ yv, _dot(yv, yv), nobs
    G = np.empty((k, k))
    Xy = np.empty(k)
    # deterministic and level columns against everything: direct dot products
    dense = [trend[:, i] for i in range(ntrend)] + [level]
    for a, ca in enumerate(dense):
        for b in range(a, len(dense)):
            G[a, b] = G[b, a] = _dot(ca, dense[b])
        for j in range(1, p + 1):
            G[a, ntrend + j] = G[ntrend + j, a] = _dot(ca, d[p - j:m - j])
        Xy[a] = _dot(ca, yv)
    # lagged differences (lag 0 = response): sum_{t=p}^{m-1} d_{t-i} d_{t-i-k}
    # = core (u = p .. m-1-p) + head (u = p-i .. p-1) + tail (u = m-p .. m-1-i)
    DD = np.empty((p + 1, p + 1))
    for lag in range(p + 1):
        core = _dot(d[p:m - p], d[p - lag:m - p - lag])
        head = d[lag:p] * d[0:p - lag]                    # u = lag .. p-1
        tail = d[m - p:m] * d[m - p - lag:m - lag]        # u = m-p .. m-1
        i = np.arange(0, p - lag + 1)
        hs = np.concatenate([[0.0], np.cumsum(head[::-1])])[i]       # last i of head
        tp = np.concatenate([[0.0], np.cumsum(tail)])[p - i]         # first p-i of tail
        vals = core + hs + tp
        DD[i, i + lag] = vals
        DD[i + lag, i] = vals
    base = ntrend + 1
    G[base:, base:] = DD[1:, 1:]
    Xy[base:] = DD[0, 1:]
    return G, Xy, float(DD[0, 0]), nobs


def _chol(G: np.ndarray, Xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cholesky of the unit-diagonal scaled Gram: returns ``(L, z, scale)`` with
    ``z = L^-1 D^-1 X'y``; nested RSS_k = y'y - sum(z[:k]**2)."""
    from scipy.linalg import solve_triangular

    scale = np.sqrt(np.diag(G))
    if not np.all(scale > 0):
        raise np.linalg.LinAlgError("a regressor is identically zero")
    Gs = G / np.outer(scale, scale)
    L = np.linalg.cholesky(Gs)
    z = solve_triangular(L, Xy / scale, lower=True)
    return L, z, scale


def _ic(rss: np.ndarray, nobs: int, k: np.ndarray, method: str) -> np.ndarray:
    llf = -nobs / 2.0 * (math.log(2 * math.pi) + np.log(rss / nobs) + 1.0)
    if method == "aic":
        return -2.0 * llf + 2.0 * k
    return -2.0 * llf + math.log(nobs) * k


def _adf_core(x: np.ndarray, maxlag: int, regression: str, autolag: str | None
              ) -> tuple[float, int, int, float | None]:
    """(stat, usedlag, nobs, icbest), exactly as statsmodels' adfuller."""
    ntrend = _TRENDS[regression]
    icbest = None
    if autolag:
        G, Xy, yy, nobs = _adf_gram(x, maxlag, regression)
        _, z, _ = _chol(G, Xy)
        startlag = ntrend + 1
        ks = np.arange(startlag, startlag + maxlag + 1)
        rss = yy - np.cumsum(z * z)[ks - 1]
        if autolag in ("aic", "bic"):
            ic = _ic(rss, nobs, ks, autolag)
            best = int(np.argmin(ic))        # first minimum, as min() over (ic, lag)
            icbest, bestlag = float(ic[best]), int(ks[best])
        else:  # t-stat: from the largest model down, first |t| of the last lag >= 1.645
            tvals = z[ks - 1] / np.sqrt(rss / (nobs - ks))
            bestlag, icbest = int(ks[-1]), 0.0
            for k_, t_ in zip(ks[::-1], tvals[::-1]):
                icbest, bestlag = float(abs(t_)), int(k_)
                if abs(t_) >= 1.6448536269514722:
                    break
        usedlag = bestlag - startlag
    else:
        usedlag = maxlag
    G, Xy, yy, nobs = _adf_gram(x, usedlag, regression)
    L, z, scale = _chol(G, Xy)
    k = G.shape[0]
    rss = yy - float(z @ z)
    from scipy.linalg import solve_triangular

    coef = solve_triangular(L.T, z, lower=False) / scale
    Linv = solve_triangular(L, np.eye(k), lower=True)
    lev = ntrend  # level column
    var_lev = float(Linv[:, lev] @ Linv[:, lev]) / scale[lev] ** 2
    s2 = rss / (nobs - k)
    stat = float(coef[lev] / math.sqrt(s2 * var_lev))
    return stat, usedlag, nobs, icbest


def _norm_autolag(autolag: str | None) -> str | None:
    if autolag is None:
        return None
    a = str(autolag).lower()
    if a not in ("aic", "bic", "t-stat"):
        raise ConfigError("autolag", autolag, "'AIC', 'BIC', 't-stat' or None")
    return a


def _resolve_maxlag(n: int, regression: str, maxlag: int | None, lag_cap: int | None,
                    what: str) -> tuple[int, bool]:
    ntrend = _TRENDS[regression]
    if maxlag is None:
        full = default_maxlag(n, regression)
        if full < 0:
            require(what, 2 * (ntrend + 1), n)
        m = full if lag_cap is None else min(full, check_int("lag_cap", lag_cap, 0))
        return m, m < full
    maxlag = check_int("maxlag", maxlag, 0)
    if maxlag > n // 2 - ntrend - 1:
        raise ConfigError("maxlag", maxlag, f"at most n/2 - 1 - ntrend = {n // 2 - ntrend - 1} "
                          f"for {n} observations")
    return maxlag, False


def adf(series, *, regression: str = "c", autolag: str | None = "AIC",
        maxlag: int | None = None, lag_cap: int | None = DEFAULT_LAG_CAP) -> ADFResult:
    r"""Augmented Dickey-Fuller test, as ``statsmodels.tsa.stattools.adfuller``.

    Parameters
    ----------
    series : array_like
        The spread (NaNs are dropped, which joins the pieces around a gap).
    regression : {"c", "ct", "ctt", "n"}
        Deterministic terms.
    autolag : {"AIC", "BIC", "t-stat", None}
        Lag selection over ``0 .. maxlag`` on a common sample; None uses ``maxlag``.
    maxlag : int, optional
        Largest lag. Default: statsmodels' :math:`\lceil 12 (n/100)^{1/4}\rceil`
        (bounded by :math:`n/2 - k - 1`), then ``min(.., lag_cap)``.
    lag_cap : int or None
        Cap on the default ``maxlag`` (default 24) so the search stays fast on a
        million bars; None reproduces statsmodels' defaults exactly.

    Returns
    -------
    ADFResult

    Examples
    --------
    >>> import numpy as np
    >>> s = np.random.default_rng(0).normal(size=500)     # white noise: stationary
    >>> r = adf(s)
    >>> r.pvalue < 0.01, r.critical_values["5%"] < -2.8
    (True, True)
    """
    if regression not in _TRENDS:
        raise ConfigError("regression", regression, "one of 'c', 'ct', 'ctt', 'n'")
    autolag = _norm_autolag(autolag)
    s = as_float_array(series, "series")
    s = s[np.isfinite(s)]
    n = s.size
    require("ADF", 2 * (_TRENDS[regression] + 1) + 2, n)
    if s.max() == s.min():
        raise ConfigError("series", "a constant series", "a series that varies")
    m, capped = _resolve_maxlag(n, regression, maxlag, lag_cap, "ADF")
    stat, used, nobs, icbest = _adf_core(s, m, regression, autolag)
    return ADFResult(stat=stat, pvalue=_sm.mackinnon_pvalue(stat, regression, 1),
                     critical_values=_sm.mackinnon_crit(regression, 1, nobs), lags=used,
                     nobs=nobs, maxlag=m, lag_capped=capped, regression=regression,
                     autolag=autolag, icbest=icbest)


# --- cointegration ----------------------------------------------------------------------------
def _ols_resid(y: np.ndarray, x: np.ndarray, trend: str) -> tuple[np.ndarray, float, float, float]:
    """Residuals of y on [x, trend], beta, alpha and statsmodels' rsquared."""
    if trend == "n":
        beta = _dot(x, y) / _dot(x, x)
        resid = y - beta * x
        return resid, beta, 0.0, 1.0 - _dot(resid, resid) / _dot(y, y)
    if trend == "c":
        mx, my = x.mean(), y.mean()
        dx, dy = x - mx, y - my
        beta = _dot(dx, dy) / _dot(dx, dx)
        resid = dy - beta * dx
        return resid, beta, float(my - beta * mx), 1.0 - _dot(resid, resid) / _dot(dy, dy)
    X = np.column_stack([x, _trend_cols(x.size, trend)])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    dy = y - y.mean()
    return resid, float(coef[0]), float("nan"), 1.0 - _dot(resid, resid) / _dot(dy, dy)


def engle_granger(y, x, *, trend: str = "c", autolag: str | None = "aic",
                  maxlag: int | None = None, lag_cap: int | None = DEFAULT_LAG_CAP,
                  direction: str = "y~x") -> EngleGrangerResult:
    r"""Engle-Granger cointegration test of ``y`` on ``x``, as
    ``statsmodels.tsa.stattools.coint(y, x)`` (with ``lag_cap=None``).

    Parameters
    ----------
    y, x : array_like
        Prices (or log prices) of the two legs; rows with a NaN are dropped.
    trend : {"c", "ct", "ctt", "n"}
        Deterministic terms of the cointegrating regression.
    autolag, maxlag, lag_cap
        Lag search of the residual ADF, as in :func:`adf` (no deterministic terms).

    Returns
    -------
    EngleGrangerResult
        Small ``pvalue``: cointegrated (the residual is stationary).
    """
    if trend not in _TRENDS:
        raise ConfigError("trend", trend, "one of 'c', 'ct', 'ctt', 'n'")
    autolag = _norm_autolag(autolag)
    ya, xa = finite_pair(*as_pair(y, x))
    n = ya.size
    require("Engle-Granger", 8, n)
    resid, beta, alpha, r2 = _ols_resid(ya, xa, trend)
    m, capped = _resolve_maxlag(n, "n", maxlag, lag_cap, "Engle-Granger")
    if r2 < 1 - 100 * _SQRTEPS:
        stat, used, _, _ = _adf_core(resid, m, "n", autolag)
    else:
        warnings.warn("y and x are (almost) perfectly collinear; the Engle-Granger "
                      "test is not reliable", RuntimeWarning, stacklevel=2)
        stat, used = -math.inf, 0
    return EngleGrangerResult(stat=stat, pvalue=_sm.mackinnon_pvalue(stat, trend, 2),
                              critical_values=_sm.mackinnon_crit(trend, 2, n - 1), lags=used,
                              nobs=n, direction=direction, beta=float(beta), alpha=float(alpha),
                              trend=trend, maxlag=m, lag_capped=capped)


#: The UI and the CLI call it ``coint``, as statsmodels does.
coint = engle_granger


def engle_granger_both(y, x, **kwargs) -> EngleGrangerPair:
    """:func:`engle_granger` of y on x and of x on y (same options)."""
    return EngleGrangerPair(y_on_x=engle_granger(y, x, direction="y~x", **kwargs),
                            x_on_y=engle_granger(x, y, direction="x~y", **kwargs))


def johansen(y, x, *, det_order: int = 0, k_ar_diff: int = 1) -> JohansenResult:
    """Johansen trace and maximum-eigenvalue tests on (y, x), via
    ``statsmodels.tsa.vector_ar.vecm.coint_johansen``.

    ``det_order``: -1 none, 0 constant, 1 linear trend. ``k_ar_diff``: lagged
    differences in the VECM. Rows with a NaN are dropped.
    """
    ya, xa = finite_pair(*as_pair(y, x))
    k_ar_diff = check_int("k_ar_diff", k_ar_diff, 0)
    require("Johansen", k_ar_diff + 12, ya.size)
    r = _sm.johansen(np.column_stack([ya, xa]), int(det_order), k_ar_diff)
    rank_t = next((i for i, (s, c) in enumerate(zip(r["trace_stat"], r["trace_crit"]))
                   if s <= c["5%"]), len(r["trace_stat"]))
    rank_m = next((i for i, (s, c) in enumerate(zip(r["max_eig_stat"], r["max_eig_crit"]))
                   if s <= c["5%"]), len(r["max_eig_stat"]))
    v = r["eigenvectors"][:, 0]
    return JohansenResult(stat=r["trace_stat"][0], pvalue=None, critical_values=r["trace_crit"][0],
                          nobs=r["nobs"], lags=k_ar_diff, det_order=int(det_order),
                          trace_stat=r["trace_stat"], trace_critical_values=r["trace_crit"],
                          max_eig_stat=r["max_eig_stat"], max_eig_critical_values=r["max_eig_crit"],
                          eigenvalues=r["eigenvalues"], rank_trace=int(rank_t),
                          rank_max_eig=int(rank_m),
                          beta=float(-v[1] / v[0]) if v[0] != 0 else math.nan)


def kpss(series, *, regression: str = "c", nlags="auto") -> KPSSResult:
    """KPSS stationarity test via ``statsmodels.tsa.stattools.kpss`` (H0:
    stationary). NaNs are dropped."""
    s = as_float_array(series, "series")
    s = s[np.isfinite(s)]
    require("KPSS", 10, s.size)
    r = _sm.kpss(s, regression, nlags)
    return KPSSResult(stat=r["stat"], pvalue=r["pvalue"], critical_values=r["critical_values"],
                      lags=r["lags"], nobs=int(s.size), regression=regression,
                      pvalue_bound=r["pvalue_bound"])


# --- mean reversion -------------------------------------------------------------------------------
def half_life(spread) -> HalfLifeResult:
    r"""Half-life of mean reversion of ``spread`` (bars).

    OLS of :math:`\Delta s_t = a + b\, s_{t-1} + e_t` over consecutive finite
    pairs; half-life :math:`-\ln 2 / \ln(1 + b)` bars for :math:`-1 < b < 0`,
    ``math.inf`` for :math:`b \ge 0` (not mean-reverting). Uses every bar given
    (in-sample).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = np.zeros(5000)
    >>> for t in range(1, 5000):
    ...     s[t] = 0.9 * s[t - 1] + rng.normal()
    >>> round(half_life(s).half_life, 1)       # -ln2/ln(0.9) = 6.58
    6.6
    """
    s = as_float_array(spread, "spread")
    lag, cur = s[:-1], s[1:]
    ok = np.isfinite(lag) & np.isfinite(cur)
    lag, ds = lag[ok], (cur - lag)[ok]
    n = lag.size
    require("half-life", 4, n + 1)
    ml, md = lag.mean(), ds.mean()
    dl = lag - ml
    sxx = _dot(dl, dl)
    if sxx <= 0:
        raise ConfigError("spread", "a constant series", "a series that varies")
    b = _dot(dl, ds - md) / sxx
    a = md - b * ml
    resid = ds - md - b * dl
    s2 = _dot(resid, resid) / (n - 2)
    tstat = b / math.sqrt(s2 / sxx) if s2 > 0 else -math.inf
    return HalfLifeResult(half_life=half_life_from_slope(b), b=float(b), a=float(a),
                          phi=float(1 + b), mean=float(-a / b) if b != 0 else math.nan,
                          stat=float(tstat), pvalue=_sm.mackinnon_pvalue(tstat, "c", 1),
                          critical_values=_sm.mackinnon_crit("c", 1, n), nobs=int(n))


def hurst(series, *, min_lag: int = 2, max_lag: int = 100, n_lags: int = 20) -> HurstResult:
    r"""Hurst exponent by the variance of lagged differences.

    For lags :math:`\tau` log-spaced in ``[min_lag, max_lag]`` (``n_lags``
    points, integers, duplicates dropped):
    :math:`\sigma_\tau = \mathrm{std}(s_{t+\tau} - s_t)`, and :math:`H` is the
    OLS slope of :math:`\ln \sigma_\tau` on :math:`\ln \tau` (a random walk
    gives :math:`\sigma_\tau \propto \tau^{1/2}`). NaNs are dropped first.

    Examples
    --------
    >>> import numpy as np
    >>> walk = np.cumsum(np.random.default_rng(0).normal(size=20000))
    >>> round(hurst(walk).stat, 1)
    0.5
    """
    s = as_float_array(series, "series")
    s = s[np.isfinite(s)]
    min_lag = check_int("min_lag", min_lag, 1)
    max_lag = check_int("max_lag", max_lag, min_lag + 1)
    require(f"Hurst (max_lag={max_lag})", 2 * max_lag, s.size)
    lags = np.unique(np.round(np.geomspace(min_lag, max_lag, n_lags)).astype(int))
    sd = np.array([np.std(s[k:] - s[:-k]) for k in lags])
    ok = sd > 0
    if ok.sum() < 2:
        raise ConfigError("series", "a constant series", "a series that varies")
    slope = np.polyfit(np.log(lags[ok]), np.log(sd[ok]), 1)[0]
    return HurstResult(stat=float(slope), nobs=int(s.size), lags=int(ok.sum()),
                       min_lag=min_lag, max_lag=max_lag)
