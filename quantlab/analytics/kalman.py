r"""Kalman-filter hedge ratio: a regression whose coefficients follow random walks.

Model (the parametrisation of Chan, *Algorithmic Trading*, 2013, ch. 3, and of
the Quantopian pairs examples):

.. math::

    \theta_t = (\alpha_t, \beta_t)^\top, \qquad
    \theta_t = \theta_{t-1} + w_t, \quad w_t \sim N\!\left(0, \tfrac{\delta}{1-\delta} I\right)

    y_t = \alpha_t + \beta_t x_t + v_t, \qquad v_t \sim N(0, V_e)

``delta`` (:math:`\delta`, dimensionless, in (0, 1)) sets how fast the hedge
ratio may drift; ``obs_var`` (:math:`V_e`, squared y units, or squared log units
on log prices) is the observation noise. Both noises are absolute, so sensible
values depend on the price scale: prefer the estimate (:func:`estimate_params`).

Filter, with :math:`F_t = (1, x_t)`, prior :math:`\theta_{t|t-1} = \theta_{t-1|t-1}`,
:math:`R_t = P_{t-1} + V_w`:

.. math::

    e_t = y_t - F_t \theta_{t|t-1}, \qquad Q_t = F_t R_t F_t^\top + V_e,

    K_t = R_t F_t^\top / Q_t, \quad \theta_{t|t} = \theta_{t|t-1} + K_t e_t, \quad
    P_t = R_t - K_t F_t R_t.

The **spread is the one-step-ahead innovation** :math:`e_t`, computed with the
prior :math:`\theta_{t|t-1}` (bars up to :math:`t-1` for the coefficients, bar
:math:`t` for the prices), and its z-score is :math:`e_t/\sqrt{Q_t}`. Using the
updated :math:`\theta_{t|t}` instead makes the "spread" collapse towards zero
(the filter has just fitted bar :math:`t`), a known bug of many write-ups.

Initialisation is exact-diffuse: the state is unknown until two valid bars
with different :math:`x` have been seen (bars :math:`i < j`); it is then the
line through them with covariance :math:`F^{-1} \Sigma F^{-\top}`, :math:`F` the
two rows :math:`(1, x_i), (1, x_j)`, and filtering proceeds from bar :math:`j+1`
(with the state noise of the transitions between them added to the first,
:func:`diffuse_start`). This uses no outside information (no prior guess of
:math:`\alpha, \beta`), and every covariance is proportional to :math:`V_e`, which is what lets the
likelihood be concentrated (:func:`estimate_params`). The innovations of bars
:math:`\le j` are not defined (NaN) and are not in the likelihood. A bar with
a NaN price is skipped (prior carried, covariance grown by :math:`V_w`) and its
outputs are NaN.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from quantlab.analytics._base import Result, as_pair, check_int, check_positive, require, to_log

__all__ = ["KalmanParams", "KalmanResult", "kalman_filter", "estimate_params",
           "default_warmup", "diffuse_start"]

# Valid bars needed before any likelihood term: the two of the diffuse start.
_LIK_SKIP = 2
_LOG2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class KalmanParams(Result):
    r"""Kalman hedge parameters.

    Attributes
    ----------
    delta : :math:`\delta`; state noise variance is :math:`\delta/(1-\delta)` per bar.
    obs_var : :math:`V_e`, y units squared (log units squared on log prices).
    estimated : True when fitted by maximum likelihood.
    loglik : innovations log-likelihood on the estimation bars (NaN if fixed).
    nobs : bars used for the estimate (0 if fixed).
    """

    delta: float
    obs_var: float
    estimated: bool
    loglik: float
    nobs: int
    _title = "Kalman parameters"

    @property
    def state_var(self) -> float:
        """:math:`\\delta / (1 - \\delta)`, variance of each coefficient's step per bar."""
        return self.delta / (1.0 - self.delta)


@dataclasses.dataclass(frozen=True, eq=False)
class KalmanResult(Result):
    """Output of :func:`kalman_filter`; arrays have one value per bar.

    ``alpha_prior``/``beta_prior`` are :math:`\\theta_{t|t-1}` (what the spread
    uses), ``alpha``/``beta`` the filtered :math:`\\theta_{t|t}`; ``spread`` is
    the innovation :math:`e_t`, ``innovation_var`` :math:`Q_t`, ``zscore``
    :math:`e_t/\\sqrt{Q_t}`. Rows before ``warmup - 1`` are NaN (the parameters
    are estimated on bars ``0 .. warmup-1``, so earlier rows would not be causal).
    """

    params: KalmanParams
    warmup: int
    log_prices: bool
    nobs: int
    alpha_prior: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    beta_prior: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    alpha: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    beta: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    spread: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    innovation_var: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    zscore: np.ndarray = dataclasses.field(repr=False, metadata={"array": True})
    _title = "Kalman hedge ratio"

    def summary(self) -> dict:
        out = super().summary()
        out["params"] = self.params.summary()
        return out


def diffuse_start(y0: float, x0: float, y1: float, x1: float, ve: float, vw: float,
                  steps: int) -> tuple[float, float, float, float, float]:
    r"""``(alpha, beta, p00, p01, p11)`` after the exact-diffuse start on two bars
    ``steps`` bars apart with ``x0 != x1``.

    With a flat prior the two observations determine :math:`\theta` at the
    second bar exactly: the line through both points. Written at that bar, the
    first observation carries the state noise of the ``steps`` transitions in
    between, :math:`y_0 = F_0\theta_1 - F_0 \sum w + v_0`, so
    :math:`P = F^{-1}\,\mathrm{diag}(V_e + k V_w (1 + x_0^2),\ V_e)\,F^{-\top}`.
    Every term is proportional to :math:`V_e` for a fixed ratio
    :math:`V_w/V_e` (what the concentrated likelihood needs).
    """
    dx = x1 - x0
    beta = (y1 - y0) / dx
    alpha = y0 - beta * x0
    s0 = ve + steps * vw * (1.0 + x0 * x0)
    s1 = ve
    det = dx * dx
    return (alpha, beta, (x1 * x1 * s0 + x0 * x0 * s1) / det, -(x1 * s0 + x0 * s1) / det,
            (s0 + s1) / det)


def _run(y: np.ndarray, x: np.ndarray, vw: float, ve: float, *, store: bool):
    """The filter loop in plain floats (the live path runs the same arithmetic,
    :class:`quantlab.analytics.live.LivePairState`).

    Returns ``(state, (sum of ln Q + e^2/Q, n terms, sum e^2/Q), outputs)``;
    ``outputs`` = lists of filtered alpha, beta, innovation and innovation
    variance when ``store`` (NaN before the state exists and on NaN bars).
    """
    nan = math.nan
    log = math.log
    a = b = nan
    p00 = p01 = p11 = nan
    ready = False
    fy = fx = nan                                    # first valid bar, until the start
    gap = 0                                          # transitions since that bar
    s_log = s_e2q = 0.0
    nll = 0
    A, B, E, Q = [], [], [], []
    for yt, xt in zip(y.tolist(), x.tolist()):
        if not ready:
            if fx == fx:
                gap += 1
            if yt == yt and xt == xt:
                if fx != fx:
                    fy, fx, gap = yt, xt, 0
                elif xt != fx:
                    a, b, p00, p01, p11 = diffuse_start(fy, fx, yt, xt, ve, vw, gap)
                    ready = True
            if store:
                A.append(a)
                B.append(b)
                E.append(nan)
                Q.append(nan)
            continue
        r00 = p00 + vw
        r11 = p11 + vw
        if yt != yt or xt != xt:                     # no observation: prior carried
            p00, p11 = r00, r11
            if store:
                A.append(a)
                B.append(b)
                E.append(nan)
                Q.append(nan)
            continue
        rf0 = r00 + p01 * xt
        rf1 = p01 + r11 * xt
        q = rf0 + rf1 * xt + ve
        e = yt - a - b * xt
        k0 = rf0 / q
        k1 = rf1 / q
        a += k0 * e
        b += k1 * e
        p00 = r00 - k0 * rf0
        p01 = p01 - k0 * rf1
        p11 = r11 - k1 * rf1
        e2q = e * e / q
        s_log += log(q)
        s_e2q += e2q
        nll += 1
        if store:
            A.append(a)
            B.append(b)
            E.append(e)
            Q.append(q)
    return (a, b, p00, p01, p11, ready, fy, fx, gap), (s_log + s_e2q, nll, s_e2q), (A, B, E, Q)


def _neg_loglik(y, x, vw, ve) -> tuple[float, int, float, float]:
    """(-loglik, n terms, sum e^2/Q, sum ln Q) with fixed noises."""
    _, (s, n, se2q), _ = _run(y, x, vw, ve, store=False)
    return 0.5 * (s + n * _LOG2PI), n, se2q, s - se2q


def estimate_params(y, x, *, delta: float | None = None, obs_var: float | None = None,
                    log_prices: bool = False) -> KalmanParams:
    r"""Maximum-likelihood :math:`\delta` and :math:`V_e` on the bars given.

    The innovations log-likelihood (first two innovations excluded: diffuse
    start)

    .. math:: \ell = -\tfrac12 \sum_t \left(\ln 2\pi + \ln Q_t + e_t^2 / Q_t\right)

    is maximised over a log grid (half-decade steps) and then refined with a
    bounded scalar search. With both parameters free, the scale is concentrated
    out: for a ratio :math:`r = V_w / V_e` the filter runs with :math:`V_e = 1`,
    :math:`\hat V_e = \overline{e_t^2 / Q_t}`, and only :math:`r` is searched
    (the initial prior is diffuse, so its scale does not matter). Given one of
    the two, the other is searched alone.

    Parameters
    ----------
    y, x : array_like
        Estimation bars (prices; logs taken when ``log_prices``).
    delta, obs_var : float, optional
        Hold one parameter fixed.

    Returns
    -------
    KalmanParams
    """
    from scipy.optimize import minimize_scalar

    ya, xa = as_pair(y, x)
    if log_prices:
        ya, xa = to_log(ya, "y"), to_log(xa, "x")
    nvalid = int((np.isfinite(ya) & np.isfinite(xa)).sum())
    require("Kalman parameter estimation", _LIK_SKIP + 10, nvalid)
    if delta is not None and obs_var is not None:
        d = check_positive("kalman_delta", delta, upper=1.0)
        v = check_positive("kalman_obs_var", obs_var)
        nll = _neg_loglik(ya, xa, d / (1 - d), v)[0]
        return KalmanParams(delta=d, obs_var=v, estimated=False, loglik=-nll, nobs=nvalid)

    if delta is None and obs_var is None:
        def objective(logr: float) -> float:
            # V_e = 1: Q_t and P scale with V_e, so sigma2 = mean(e^2/Q) is its MLE
            _, n, se2q, slogq = _neg_loglik(ya, xa, 10.0 ** logr, 1.0)
            sigma2 = se2q / n
            if not sigma2 > 0:
                return math.inf
            return 0.5 * (n * (_LOG2PI + math.log(sigma2) + 1.0) + slogq)
        lo, hi = -16.0, 2.0
    elif obs_var is not None:  # delta free: search log10(V_w)
        v = check_positive("kalman_obs_var", obs_var)

        def objective(logvw: float) -> float:
            return _neg_loglik(ya, xa, 10.0 ** logvw, v)[0]
        lo, hi = math.log10(v) - 16.0, math.log10(v) + 2.0
    else:  # obs_var free: search log10(V_e) around the scale of y's changes
        d = check_positive("kalman_delta", delta, upper=1.0)
        vw = d / (1 - d)
        dy = np.diff(ya[np.isfinite(ya)])
        scale = float(np.var(dy)) if dy.size > 1 and np.var(dy) > 0 else 1.0

        def objective(logve: float) -> float:
            return _neg_loglik(ya, xa, vw, 10.0 ** logve)[0]
        lo, hi = math.log10(scale) - 8.0, math.log10(scale) + 4.0

    grid = np.arange(lo, hi + 1e-9, 0.5)
    vals = np.array([objective(float(g)) for g in grid])
    k = int(np.nanargmin(vals))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    best, fbest = float(grid[k]), float(vals[k])
    if b > a:
        res = minimize_scalar(objective, bounds=(a, b), method="bounded",
                              options={"xatol": 1e-3})
        if res.fun < fbest:
            best, fbest = float(res.x), float(res.fun)
    if delta is None and obs_var is None:
        r = 10.0 ** best
        _, n, se2q, _ = _neg_loglik(ya, xa, r, 1.0)
        ve = se2q / n
        vw = r * ve
    elif obs_var is not None:
        ve, vw = float(obs_var), 10.0 ** best
    else:
        ve, vw = 10.0 ** best, float(delta) / (1 - float(delta))
    d = vw / (1.0 + vw)
    return KalmanParams(delta=float(d), obs_var=float(ve), estimated=True, loglik=-fbest,
                        nobs=nvalid)


def default_warmup(window: int, estimated: bool) -> int:
    """Bars before the first Kalman output: ``window`` with fixed parameters,
    ``max(window, 500)`` when they are estimated on those bars."""
    return int(window) if not estimated else max(int(window), 500)


def kalman_filter(y, x, *, delta: float | None = None, obs_var: float | None = None,
                  warmup: int | None = None, window: int = 60,
                  log_prices: bool = False) -> KalmanResult:
    r"""Run the Kalman hedge filter over all bars (see module notes).

    Parameters
    ----------
    y, x : array_like
        Closes of the two legs.
    delta, obs_var : float, optional
        Fixed parameters. Whichever is None is estimated by
        :func:`estimate_params` on the first ``warmup`` bars.
    warmup : int, optional
        Bars whose outputs are NaN; the estimation sample. Default
        :func:`default_warmup` (``window`` with fixed parameters, else
        ``max(window, 500)``).
    window : int
        Only used for the default warm-up.
    log_prices : bool
        Filter :math:`\ln y` on :math:`\ln x`.

    Returns
    -------
    KalmanResult
        Causal: every output at bar :math:`t \ge` ``warmup - 1`` uses bars up to
        and including :math:`t` (parameters from bars ``0 .. warmup-1``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x = 100 + np.cumsum(rng.normal(size=400))
    >>> y = 5 + 1.5 * x + rng.normal(scale=0.5, size=400)
    >>> k = kalman_filter(y, x, delta=1e-6, obs_var=0.25, warmup=50)
    >>> round(float(k.beta[-1]), 1), bool(np.isnan(k.spread[48])), bool(np.isfinite(k.spread[49]))
    (1.5, True, True)
    """
    ya, xa = as_pair(y, x)
    if log_prices:
        ya, xa = to_log(ya, "y"), to_log(xa, "x")
    n = ya.size
    estimated = delta is None or obs_var is None
    w = default_warmup(check_int("window", window, 2), estimated) if warmup is None else \
        check_int("kalman_warmup", warmup, 1)
    if estimated:
        w = max(w, _LIK_SKIP + 10)
    require(f"the Kalman filter (warm-up {w} bars)", w, n)
    params = estimate_params(ya[:w], xa[:w], delta=delta, obs_var=obs_var) if estimated else \
        KalmanParams(delta=check_positive("kalman_delta", delta, upper=1.0),
                     obs_var=check_positive("kalman_obs_var", obs_var), estimated=False,
                     loglik=math.nan, nobs=0)
    _, _, (A, B, E, Q) = _run(ya, xa, params.state_var, params.obs_var, store=True)
    alpha = np.array(A)
    beta = np.array(B)
    e = np.array(E)
    q = np.array(Q)
    a_prior = np.empty(n)
    b_prior = np.empty(n)
    a_prior[0] = b_prior[0] = np.nan
    a_prior[1:], b_prior[1:] = alpha[:-1], beta[:-1]
    with np.errstate(invalid="ignore"):
        z = e / np.sqrt(q)
    cut = w - 1
    for arr in (alpha, beta, e, q, a_prior, b_prior, z):
        arr[:cut] = np.nan
    return KalmanResult(params=params, warmup=w, log_prices=bool(log_prices), nobs=n,
                        alpha_prior=a_prior, beta_prior=b_prior, alpha=alpha, beta=beta,
                        spread=e, innovation_var=q, zscore=z)
