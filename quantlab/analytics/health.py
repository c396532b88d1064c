r"""Relationship health: is the pair still cointegrated, and is it drifting apart?

Every ``every`` bars, over the trailing ``window`` bars (:math:`H`), three
numbers are computed and turned into a plain-words verdict:

* **Engle-Granger p-value**: OLS :math:`y = \alpha + \beta x` on the window,
  then the ADF t-statistic of its residual :math:`u` with ``lags`` lagged
  differences and no deterministic terms, MacKinnon p-value for two variables.
  A fixed lag (default 1) rather than an AIC search keeps thousands of windows
  vectorised; it equals ``statsmodels.tsa.stattools.coint(y_w, x_w,
  maxlag=lags, autolag=None)`` on the same window.
* **Half-life** of :math:`u` (bars), from :math:`\Delta u_t = a + b u_{t-1} + e_t`.
* **Beta drift**: :math:`|\beta^{short}_t - \beta^{long}_t| / \mathrm{sd}(\beta^{short})`,
  the short rolling-OLS beta (``beta_window`` bars) against the window's own
  beta, in standard deviations of the short beta over the window.

Verdict (thresholds in :class:`HealthThresholds`, defaults shown):

=============== =============================================================
``cointegrated`` p < 0.05, half-life <= 0.25 H, and drift <= 2 (or unknown)
``decoupling``   p >= 0.20, or no mean reversion (half-life inf), or drift > 4
``weakening``    anything in between
=============== =============================================================

and ``"insufficient data"`` until the first full window. An evaluation at bar
:math:`r` uses bars :math:`r-H+1 \ldots r`; per-bar columns hold the latest
evaluation at or before the bar (causal). Evaluation bars are ``H-1, H-1+K,
...``, fixed from the start of the data, so appending bars never changes them.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from quantlab.analytics import _sm
from quantlab.analytics._base import (TINY_REL_VAR, Result, as_pair, check_int, to_log)
from quantlab.analytics.hedge import rolling_ols
from quantlab.analytics.rolling import half_life_from_slope, rolling_mean_std
from quantlab.config import require_positive
from quantlab.errors import ConfigError

__all__ = ["HealthThresholds", "HealthResult", "relationship_health", "health_at", "verdict",
           "VERDICTS"]

VERDICTS = ("cointegrated", "weakening", "decoupling", "insufficient data")
_SQRTEPS = float(np.sqrt(np.finfo(np.double).eps))


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealthThresholds:
    """Verdict thresholds (see module table).

    coint_pvalue : EG p-value below which the pair counts as cointegrated.
    decoupled_pvalue : p-value at or above which it is decoupling.
    max_half_life_frac : a cointegrated pair's half-life must be at most this
        fraction of the health window (bars).
    drift_weak, drift_decoupled : beta drift (standard deviations) above which
        the pair is at best weakening / decoupling.
    """

    coint_pvalue: float = 0.05
    decoupled_pvalue: float = 0.20
    max_half_life_frac: float = 0.25
    drift_weak: float = 2.0
    drift_decoupled: float = 4.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            require_positive(f.name, getattr(self, f.name))


def verdict(coint_pvalue: float, half_life: float, beta_drift: float, window: int,
            thresholds: HealthThresholds | None = None) -> tuple[str, str]:
    """``(verdict, reason)`` from one evaluation (see module table).

    >>> verdict(0.01, 20.0, 0.5, 1000)[0]
    'cointegrated'
    >>> verdict(0.5, math.inf, 0.5, 1000)
    ('decoupling', 'EG p=0.500 (>= 0.2); no mean reversion; beta drift 0.5 sd')
    """
    th = thresholds or HealthThresholds()
    p, hl, dr = coint_pvalue, half_life, beta_drift
    if p != p:
        return "insufficient data", f"needs {window} bars"
    max_hl = th.max_half_life_frac * window
    parts = [f"EG p={p:.3f}" + (f" (< {th.coint_pvalue:g})" if p < th.coint_pvalue else
                                f" (>= {th.decoupled_pvalue:g})" if p >= th.decoupled_pvalue else "")]
    parts.append("no mean reversion" if hl == math.inf else
                 "half-life unknown" if hl != hl else f"half-life {hl:.1f} bars")
    if dr == dr:
        parts.append(f"beta drift {dr:.1f} sd")
    reason = "; ".join(parts)
    if p >= th.decoupled_pvalue or hl == math.inf or (dr == dr and dr > th.drift_decoupled):
        return "decoupling", reason
    if p < th.coint_pvalue and hl == hl and hl <= max_hl and not (dr == dr and dr > th.drift_weak):
        return "cointegrated", reason
    return "weakening", reason


def _eg_rows(Y: np.ndarray, X: np.ndarray, lags: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Engle-Granger statistic (fixed ``lags``), beta, alpha and residual
    half-life for each row of (Y, X); vectorised across rows."""
    m, H = Y.shape
    mx, my = X.mean(axis=1), Y.mean(axis=1)
    dx, dy = X - mx[:, None], Y - my[:, None]
    sxx = np.einsum("ij,ij->i", dx, dx)
    syy = np.einsum("ij,ij->i", dy, dy)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.einsum("ij,ij->i", dx, dy) / sxx
        alpha = my - beta * mx
        u = dy - beta[:, None] * dx
        r2 = 1.0 - np.einsum("ij,ij->i", u, u) / syy
    d = np.diff(u, axis=1)
    M = H - 1
    cols = [u[:, lags:M]] + [d[:, lags - j:M - j] for j in range(1, lags + 1)]
    yv = d[:, lags:M]
    k = lags + 1
    nobs = M - lags
    G = np.empty((m, k, k))
    Xy = np.empty((m, k))
    for a in range(k):
        for b in range(a, k):
            G[:, a, b] = G[:, b, a] = np.einsum("ij,ij->i", cols[a], cols[b])
        Xy[:, a] = np.einsum("ij,ij->i", cols[a], yv)
    yy = np.einsum("ij,ij->i", yv, yv)
    stat = np.full(m, np.nan)
    ok = np.isfinite(G).all(axis=(1, 2)) & (np.linalg.det(G) > 0) if m else np.zeros(0, bool)
    if ok.any():
        Gi = np.linalg.inv(G[ok])
        coef = np.einsum("ijk,ik->ij", Gi, Xy[ok])
        rss = yy[ok] - np.einsum("ij,ij->i", coef, Xy[ok])
        with np.errstate(invalid="ignore", divide="ignore"):
            stat[ok] = coef[:, 0] / np.sqrt(rss / (nobs - k) * Gi[:, 0, 0])
    stat = np.where(r2 >= 1 - 100 * _SQRTEPS, -np.inf, stat)   # collinear, as statsmodels
    lag = u[:, :-1]
    dl = lag - lag.mean(axis=1)[:, None]
    dd = d - d.mean(axis=1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        sll = np.einsum("ij,ij->i", dl, dl)
        bslope = np.where(sll > TINY_REL_VAR, np.einsum("ij,ij->i", dl, dd) / sll, np.nan)
    hl = np.array([half_life_from_slope(float(b)) for b in bslope])
    return stat, beta, alpha, hl


@dataclasses.dataclass(frozen=True, eq=False)
class HealthResult(Result):
    """Rolling relationship health.

    ``frame`` has one row per evaluation bar (``bar`` = position, index = time
    when known) with ``coint_stat``, ``coint_pvalue``, ``half_life``,
    ``beta_long``, ``beta_short``, ``beta_drift``, ``verdict``, ``reason``.
    ``latest`` is the last row as a dict (None before the first evaluation).
    """

    window: int
    every: int
    lags: int
    beta_window: int
    log_prices: bool
    thresholds: HealthThresholds
    latest: dict | None
    frame: pd.DataFrame = dataclasses.field(repr=False, metadata={"array": True})
    _title = "Relationship health"

    def summary(self) -> dict:
        out = super().summary()
        out["thresholds"] = dataclasses.asdict(self.thresholds)
        return out

    def per_bar(self, n: int) -> dict[str, np.ndarray]:
        """The evaluations spread over ``n`` bars (each bar gets the latest
        evaluation at or before it): ``health_coint_pvalue``,
        ``health_half_life``, ``beta_drift``, ``verdict``."""
        bars = self.frame["bar"].to_numpy()
        pos = np.searchsorted(bars, np.arange(n), side="right") - 1
        has = pos >= 0
        out = {}
        for src, dst in (("coint_pvalue", "health_coint_pvalue"), ("half_life", "health_half_life"),
                         ("beta_drift", "beta_drift")):
            vals = self.frame[src].to_numpy(dtype=float)
            col = np.full(n, np.nan)
            col[has] = vals[pos[has]]
            out[dst] = col
        ver = np.full(n, "insufficient data", dtype=object)
        ver[has] = self.frame["verdict"].to_numpy(dtype=object)[pos[has]]
        out["verdict"] = pd.Categorical(ver, categories=VERDICTS)
        return out


def _prep(y, x, log_prices: bool) -> tuple[np.ndarray, np.ndarray]:
    ya, xa = as_pair(y, x)
    if log_prices:
        ya, xa = to_log(ya, "y"), to_log(xa, "x")
    return ya, xa


def _evaluate(ya, xa, ends: np.ndarray, window: int, lags: int, beta_window: int,
              thresholds: HealthThresholds) -> pd.DataFrame:
    n = ya.size
    short = rolling_ols(ya, xa, beta_window).beta
    _, short_sd = rolling_mean_std(short, window)
    m = ends.size
    stat = np.full(m, np.nan)
    beta_long = np.full(m, np.nan)
    hl = np.full(m, np.nan)
    if m and n >= window:
        Yv = sliding_window_view(ya, window)
        Xv = sliding_window_view(xa, window)
        starts = ends - (window - 1)
        chunk = max(1, 4_000_000 // window)
        for s in range(0, m, chunk):
            st = starts[s:s + chunk]
            Yw, Xw = Yv[st], Xv[st]
            ok = np.isfinite(Yw).all(axis=1) & np.isfinite(Xw).all(axis=1)
            if ok.any():
                idx = np.arange(s, s + st.size)[ok]
                stat[idx], beta_long[idx], _, hl[idx] = _eg_rows(Yw[ok], Xw[ok], lags)
    pval = _sm.mackinnon_pvalues(stat, "c", 2)
    bs = short[ends] if m else np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        drift = np.abs(bs - beta_long) / short_sd[ends] if m else np.zeros(0)
    verdicts = [verdict(float(p), float(h), float(d), window, thresholds)
                for p, h, d in zip(pval, hl, drift)]
    return pd.DataFrame({
        "bar": ends.astype(np.int64), "coint_stat": stat, "coint_pvalue": pval, "half_life": hl,
        "beta_long": beta_long, "beta_short": bs, "beta_drift": drift,
        "verdict": [v for v, _ in verdicts], "reason": [r for _, r in verdicts]})


def relationship_health(y, x, *, window: int, every: int, beta_window: int, lags: int = 1,
                        log_prices: bool = False, thresholds: HealthThresholds | None = None,
                        index: pd.Index | None = None) -> HealthResult:
    """Evaluate the relationship every ``every`` bars over the trailing ``window``
    bars (module notes).

    Parameters
    ----------
    y, x : array_like
        Closes of the two legs.
    window : int
        Health window H, bars (>= 20).
    every : int
        Cadence K, bars between evaluations (>= 1).
    beta_window : int
        Window of the short rolling beta (usually the analysis window).
    lags : int
        Lagged differences in the residual ADF (fixed, default 1).
    log_prices : bool
        Work on log prices.
    thresholds : HealthThresholds, optional
    index : Index, optional
        Times of the bars; the frame is indexed by the evaluation bars' times.
    """
    window = check_int("health_window", window, 20)
    every = check_int("health_every", every, 1)
    beta_window = check_int("beta_window", beta_window, 3)
    lags = check_int("lags", lags, 0)
    if window <= 4 * (lags + 2):
        raise ConfigError("health_window", window, f"more than {4 * (lags + 2)} bars for lags={lags}")
    th = thresholds or HealthThresholds()
    ya, xa = _prep(y, x, log_prices)
    ends = np.arange(window - 1, ya.size, every)
    frame = _evaluate(ya, xa, ends, window, lags, beta_window, th)
    if index is not None and len(index) == ya.size:
        frame.index = index[ends]
    latest = frame.iloc[-1].to_dict() if len(frame) else None
    return HealthResult(window=window, every=every, lags=lags, beta_window=beta_window,
                        log_prices=bool(log_prices), thresholds=th, latest=latest, frame=frame)


def health_at(y, x, *, window: int, beta_window: int, lags: int = 1, log_prices: bool = False,
              thresholds: HealthThresholds | None = None) -> dict:
    """One evaluation on the last ``window`` bars of (y, x): the dict of a
    :class:`HealthResult` row (``verdict`` ``"insufficient data"`` when short)."""
    window = check_int("health_window", window, 20)
    th = thresholds or HealthThresholds()
    ya, xa = _prep(y, x, log_prices)
    if ya.size < window:
        v, why = verdict(math.nan, math.nan, math.nan, window, th)
        return {"bar": ya.size - 1, "coint_stat": math.nan, "coint_pvalue": math.nan,
                "half_life": math.nan, "beta_long": math.nan, "beta_short": math.nan,
                "beta_drift": math.nan, "verdict": v,
                "reason": f"needs {window} bars, have {ya.size}"}
    tail = slice(max(0, ya.size - window - beta_window), ya.size)
    yt, xt = ya[tail], xa[tail]
    frame = _evaluate(yt, xt, np.array([yt.size - 1]), window, lags, beta_window, th)
    row = frame.iloc[0].to_dict()
    row["bar"] = ya.size - 1
    return row
