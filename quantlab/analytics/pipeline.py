r"""``analyze``: every per-bar statistic of a pair in one causal frame, plus an
in-sample summary.

Per-bar columns (all causal: the value at bar :math:`t` uses bars up to and
including :math:`t`):

================== ===========================================================
``y``, ``x``       closes of the two legs (price units)
``beta``, ``alpha`` hedge ratio and intercept in force at the bar (see
                   :mod:`quantlab.analytics.hedge`; Kalman: the prior
                   :math:`\theta_{t|t-1}`)
``spread``         :math:`s_t = y_t - \beta_t x_t - \alpha_t` (log prices if
                   ``log_prices``); Kalman: the innovation :math:`e_t`
``spread_mean``    rolling mean of the spread over ``z_window`` bars (Kalman: 0)
``spread_std``     rolling std, ddof 1 (Kalman: :math:`\sqrt{Q_t}`)
``zscore``         :math:`(s_t - \bar s_t)/\sigma_t`; Kalman :math:`e_t/\sqrt{Q_t}`
``corr``           rolling correlation of one-bar log returns (or levels)
                   over ``corr_window`` bars
``half_life``      rolling AR(1) half-life of the spread over ``z_window``
                   pairs, bars (``inf``: not mean-reverting)
``y_ret``, ``x_ret`` one-bar log returns
``y_vol``, ``x_vol`` realised volatility over ``corr_window`` returns,
                   annualised on 365 days when the bar length is known
``y_volume`` ...   volume, trade count and trades per second per leg, when
                   the input has them
``kalman_beta``,   filtered :math:`\beta_{t|t}`, :math:`\alpha_{t|t}` (Kalman hedge
``kalman_alpha``   or ``with_kalman=True``)
``health_*``,      relationship health (:mod:`quantlab.analytics.health`),
``beta_drift``,    latest evaluation at or before the bar
``verdict``
================== ===========================================================

Not enough bars gives NaN (never a fake zero): :func:`bars_needed` and
:func:`shortfall` say how many each column needs.

The summary is **in-sample** (``static_fit_in_sample: True``): a static OLS
of y on x with intercept over the whole range (on log prices when
``log_prices``), and the ADF (statsmodels' defaults, uncapped), Engle-Granger
(y on x, and x on y) and half-life of that static spread, the Hurst exponent,
the relationship-health verdict on the last bar and per-leg statistics.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Any

import numpy as np
import pandas as pd

from quantlab.analytics._base import (as_float_array, check_int, normalise_hedge, plain,
                                      require, to_log)
from quantlab.analytics.kalman import KalmanParams, default_warmup, kalman_filter
from quantlab.config import require_choice
from quantlab.errors import ConfigError

__all__ = ["analyze", "PairAnalysis", "bars_needed", "shortfall", "FRAME_COLUMNS"]

#: Fewest bars ``analyze`` accepts whatever the window (the in-sample tests need some).
MIN_BARS = 20

#: Columns always present in ``analyze(...).frame``, in order.
FRAME_COLUMNS = ("y", "x", "beta", "alpha", "spread", "spread_mean", "spread_std", "zscore",
                 "corr", "half_life", "y_ret", "x_ret", "y_vol", "x_vol")


def bars_needed(window: int, hedge: str = "rolling-ols", *, z_window: int | None = None,
                corr_window: int | None = None, corr_of: str = "returns",
                kalman_warmup: int | None = None, kalman_estimated: bool = True
                ) -> dict[str, int]:
    """Bars each per-bar output needs before its first value.

    >>> bars_needed(60)
    {'beta': 60, 'spread': 60, 'zscore': 119, 'corr': 61, 'half_life': 120}
    >>> bars_needed(60, "kalman", kalman_estimated=False)["zscore"]
    60
    """
    W = check_int("window", window, 3)
    hedge = normalise_hedge(hedge)
    Z = W if z_window is None else check_int("z_window", z_window, 3)
    C = W if corr_window is None else check_int("corr_window", corr_window, 3)
    if hedge == "kalman":
        first = default_warmup(W, kalman_estimated) if kalman_warmup is None else int(kalman_warmup)
        beta = spread = zscore = first
    else:
        beta = spread = W
        zscore = W + Z - 1
    return {"beta": beta, "spread": spread, "zscore": zscore,
            "corr": C + 1 if corr_of == "returns" else C, "half_life": spread + Z}


def shortfall(n_bars: int, needs: dict[str, int]) -> list[str]:
    """Messages for the outputs that ``n_bars`` cannot fill yet.

    >>> shortfall(12, {"zscore": 119, "corr": 61, "beta": 10})
    ['zscore needs 119 bars, have 12', 'corr needs 61 bars, have 12']
    """
    return [f"{name} needs {need} bars, have {n_bars}" for name, need in needs.items()
            if n_bars < need]


@dataclasses.dataclass(frozen=True, eq=False)
class PairAnalysis:
    """Result of :func:`analyze`.

    Attributes
    ----------
    frame : DataFrame, one row per input bar, causal columns (module table).
    config : the options used.
    static : :class:`~quantlab.analytics.hedge.HedgeFit`, in-sample OLS.
    adf, coint, half_life, hurst : tests of the static spread (in-sample).
    kalman : :class:`~quantlab.analytics.kalman.KalmanParams` or None.
    health : :class:`~quantlab.analytics.health.HealthResult` or None.
    health_latest : health evaluated on the last bar (dict) or None.
    legs : ``{"y": LegStats, "x": LegStats}``.
    """

    frame: pd.DataFrame
    config: dict
    static: Any
    adf: Any
    coint: Any
    half_life: Any
    hurst: Any
    kalman: KalmanParams | None
    health: Any
    health_latest: dict | None
    legs: dict

    def __getitem__(self, column: str) -> pd.Series:
        return self.frame[column]

    @property
    def needs(self) -> dict[str, int]:
        c = self.config
        return bars_needed(c["window"], c["method"], z_window=c["z_window"],
                           corr_window=c["corr_window"], corr_of=c["corr_of"],
                           kalman_warmup=c.get("kalman_warmup"))

    def summary(self) -> dict:
        """Plain dict (JSON-friendly: NaN kept as float, infinite half-life as None)."""
        c = self.config
        f = self.frame
        last = f.iloc[-1] if len(f) else None
        hl = self.half_life.half_life if self.half_life is not None else math.nan
        out: dict[str, Any] = {
            "y_symbol": c.get("y_symbol"), "x_symbol": c.get("x_symbol"),
            "method": c["method"], "window": c["window"], "z_window": c["z_window"],
            "corr_window": c["corr_window"], "corr_of": c["corr_of"],
            "log_prices": c["log_prices"], "fit_intercept": c["fit_intercept"],
            "refit_every": c["refit_every"],
            "n_bars": int(len(f)), "n_valid": c["n_valid"],
            "start": c.get("start"), "end": c.get("end"), "bar_seconds": c.get("bar_seconds"),
            "static_fit_in_sample": True,
            "hedge_ratio": self.static.beta, "intercept": self.static.alpha,
            "r2": self.static.r2, "resid_std": self.static.resid_std,
            "adf_stat": self.adf.stat, "adf_pvalue": self.adf.pvalue, "adf_lags": self.adf.lags,
            "adf_nobs": self.adf.nobs, "adf_critical_values": dict(self.adf.critical_values),
            "coint_stat": self.coint.y_on_x.stat, "coint_pvalue": self.coint.y_on_x.pvalue,
            "coint_lags": self.coint.y_on_x.lags,
            "coint_critical_values": dict(self.coint.y_on_x.critical_values),
            "coint_pvalue_x_on_y": self.coint.x_on_y.pvalue,
            "half_life_bars": None if math.isinf(hl) else hl,
            "half_life_seconds": (None if math.isinf(hl) or not c.get("bar_seconds")
                                  else hl * c["bar_seconds"]),
            "hurst": self.hurst.stat if self.hurst is not None else math.nan,
        }
        if last is not None:
            for col in ("beta", "alpha", "spread", "zscore", "corr"):
                out[f"last_{col}"] = float(last[col])
        if self.kalman is not None:
            out.update(kalman_delta=self.kalman.delta, kalman_obs_var=self.kalman.obs_var,
                       kalman_estimated=self.kalman.estimated,
                       kalman_warmup=c.get("kalman_warmup"))
        if self.health_latest is not None:
            h = self.health_latest
            out.update(verdict=h["verdict"], verdict_reason=h["reason"],
                       health_window=c["health_window"], health_every=c["health_every"],
                       health_coint_pvalue=h["coint_pvalue"],
                       health_half_life=None if h["half_life"] == math.inf else h["half_life"],
                       beta_drift=h["beta_drift"])
        for leg, st in self.legs.items():
            out[f"{leg}_vol_annualised"] = st.vol_annualised
            out[f"{leg}_trades_per_second"] = st.trades_per_second
        out["bars_needed"] = self.needs
        return plain(out)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                       f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
                       for k, v in self.summary().items())
        return (f"<table><caption style='text-align:left'><b>Pair analysis</b> "
                f"({len(self.frame)} bars; summary in-sample)</caption>{rows}</table>"
                + self.frame.tail(5)._repr_html_())


def _column(frame: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray | None:
    for name in names:
        if name in frame.columns:
            return frame[name].to_numpy(dtype=np.float64)
    return None


def _inputs(aligned, x) -> tuple[np.ndarray, np.ndarray, pd.Index, dict, dict]:
    """(y, x, index, extras, attrs) from an aligned frame or two series."""
    extras: dict[str, np.ndarray] = {}
    if x is not None:
        y = as_float_array(aligned, "y")
        xa = as_float_array(x, "x")
        if y.size != xa.size:
            raise ConfigError("x", f"{xa.size} values", f"{y.size} values, as many as y")
        if isinstance(aligned, pd.Series):
            index = aligned.index
        elif isinstance(x, pd.Series):
            index = x.index
        else:
            index = pd.RangeIndex(y.size, name="bar")
        return y, xa, index, extras, {}
    if not isinstance(aligned, pd.DataFrame):
        raise ConfigError("aligned", type(aligned).__name__,
                          "a DataFrame from quantlab.bars.align_pair (y_close, x_close) "
                          "or two series: analyze(y, x, window=...)")
    y = _column(aligned, ("y_close", "y"))
    xa = _column(aligned, ("x_close", "x"))
    if y is None or xa is None:
        raise ConfigError("aligned", f"columns {list(aligned.columns)[:12]}",
                          "columns y_close and x_close (quantlab.bars.align_pair)")
    for leg in ("y", "x"):
        v = _column(aligned, (f"{leg}_volume",))
        if v is not None:
            extras[f"{leg}_volume"] = v
        k = _column(aligned, (f"{leg}_trade_count", f"{leg}_count", f"{leg}_trades"))
        if k is not None:
            extras[f"{leg}_trades"] = k
    return y, xa, aligned.index, extras, dict(aligned.attrs)


def analyze(aligned, x=None, *, window: int, hedge: str = "rolling-ols",
            log_prices: bool = False, z_window: int | None = None,
            corr_window: int | None = None, corr_of: str = "returns",
            fit_intercept: bool = True, refit_every: int | None = None,
            kalman_delta: float | None = None, kalman_obs_var: float | None = None,
            kalman_warmup: int | None = None, with_kalman: bool = False,
            health: bool = True, health_window: int | None = None,
            health_every: int | None = None, bar_seconds: float | None = None,
            symbols: tuple[str, str] | None = None) -> PairAnalysis:
    r"""Causal per-bar pair analytics and an in-sample summary.

    Parameters
    ----------
    aligned : DataFrame or array_like
        The output of :func:`quantlab.bars.align_pair` (``y_close``,
        ``x_close``; ``*_volume`` and ``*_trade_count`` used when present), or
        the y closes when ``x`` is given.
    x : array_like, optional
        The x closes (then ``aligned`` holds the y closes).
    window : int
        Hedge window in bars (>= 3): rolling OLS window, robust re-fit window,
        expanding-OLS minimum; default for ``z_window`` and ``corr_window``.
    hedge : {"rolling-ols", "ols", "huber", "theil-sen", "kalman"}
        Per-bar hedge ratio (causal for every option, see
        :mod:`quantlab.analytics.hedge`): ``ols`` is an expanding fit,
        ``huber``/``theil-sen`` trailing-window re-fits every ``refit_every`` bars.
    log_prices : bool
        Regression and spread on log prices.
    z_window, corr_window : int, optional
        z-score / half-life window and correlation / volatility window (bars).
    corr_of : {"returns", "levels"}
        Correlate one-bar log returns (default) or closes.
    fit_intercept : bool
        Hedge regressions with :math:`\alpha` (default).
    refit_every : int, optional
        Huber/Theil-Sen re-fit cadence, bars (default ``max(1, window // 4)``).
    kalman_delta, kalman_obs_var, kalman_warmup
        Kalman parameters; None ones are estimated by maximum likelihood on
        the first ``kalman_warmup`` bars (default ``max(window, 500)``;
        ``window`` when both are given), whose outputs are NaN.
    with_kalman : bool
        Add ``kalman_beta``/``kalman_alpha`` columns for a non-Kalman hedge.
    health : bool
        Add relationship-health columns (``health_window`` default
        ``20 * window``, evaluated every ``health_every`` = ``window`` bars)
        and the verdict on the last bar to the summary.
    bar_seconds : float, optional
        Bar length; inferred from a DatetimeIndex when None. Annualises the
        volatility (365 days) and gives trades per second.
    symbols : (y_symbol, x_symbol), optional
        For the summary (also read from ``aligned.attrs`` when present).

    Returns
    -------
    PairAnalysis
        ``.frame`` (columns in the module table), ``.summary()`` (dict).

    Raises
    ------
    InsufficientData
        Fewer bars than ``window`` (at least 20), or than the Kalman warm-up.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = 100 + np.cumsum(rng.normal(size=400))
    >>> y = 10 + 2 * x + rng.normal(size=400)
    >>> a = analyze(y, x, window=50, health=False)
    >>> round(a.summary()["hedge_ratio"], 2), a.summary()["static_fit_in_sample"]
    (2.0, True)
    >>> bool(a.frame["zscore"].iloc[:98].isna().all()), bool(np.isfinite(a.frame["zscore"].iloc[98]))
    (True, True)
    """
    from quantlab.analytics import stattests
    from quantlab.analytics.health import health_at, relationship_health
    from quantlab.analytics.hedge import default_refit_every, fit_hedge, hedge_series
    from quantlab.analytics.legs import infer_bar_seconds, leg_stats, realised_vol
    from quantlab.analytics.rolling import (log_returns, rolling_corr, rolling_half_life,
                                            rolling_zscore)

    W = check_int("window", window, 3)
    method = normalise_hedge(hedge)
    Z = W if z_window is None else check_int("z_window", z_window, 3)
    C = W if corr_window is None else check_int("corr_window", corr_window, 3)
    require_choice("corr_of", corr_of, ("returns", "levels"))
    if method in ("kalman", "theil-sen") and not fit_intercept:
        raise ConfigError("fit_intercept", fit_intercept, f"True for {method}")
    K = default_refit_every(method, W) if refit_every is None else \
        check_int("refit_every", refit_every, 1)
    y, xa, index, extras, attrs = _inputs(aligned, x)
    n = y.size
    require(f"analyze(window={W}, hedge={method!r})", max(W, MIN_BARS), n)
    if symbols is None:
        sy, sx = attrs.get("y_symbol"), attrs.get("x_symbol")
        symbols = (sy, sx) if sy or sx else None
    if bar_seconds is None:
        bar_seconds = infer_bar_seconds(index)
    ys, xs = (to_log(y, "y"), to_log(xa, "x")) if log_prices else (y, xa)

    cols: dict[str, Any] = {"y": y, "x": xa}
    kparams = None
    kw = None
    if method == "kalman":
        estimated = kalman_delta is None or kalman_obs_var is None
        kw = default_warmup(W, estimated) if kalman_warmup is None else \
            check_int("kalman_warmup", kalman_warmup, 1)
        k = kalman_filter(ys, xs, delta=kalman_delta, obs_var=kalman_obs_var, warmup=kw)
        kw = k.warmup
        kparams = k.params
        spread = k.spread
        with np.errstate(invalid="ignore"):
            std = np.sqrt(k.innovation_var)
        mean = np.where(np.isfinite(spread), 0.0, np.nan)
        cols.update(beta=k.beta_prior, alpha=k.alpha_prior, spread=spread, spread_mean=mean,
                    spread_std=std, zscore=k.zscore)
        kal = k
    else:
        hs = hedge_series(ys, xs, method=method, window=W, refit_every=K,
                          fit_intercept=fit_intercept)
        with np.errstate(invalid="ignore"):
            spread = ys - hs.beta * xs - hs.alpha
        z, mean, std = rolling_zscore(spread, Z)
        cols.update(beta=hs.beta, alpha=hs.alpha, spread=spread, spread_mean=mean,
                    spread_std=std, zscore=z)
        kal = None
        if with_kalman:
            estimated = kalman_delta is None or kalman_obs_var is None
            kw = default_warmup(W, estimated) if kalman_warmup is None else \
                check_int("kalman_warmup", kalman_warmup, 1)
            if n >= kw:
                kal = kalman_filter(ys, xs, delta=kalman_delta, obs_var=kalman_obs_var,
                                    warmup=kw)
                kparams = kal.params
    ry, rx = log_returns(y), log_returns(xa)
    cols["corr"] = rolling_corr(ry, rx, C) if corr_of == "returns" else rolling_corr(y, xa, C)
    cols["half_life"] = rolling_half_life(spread, Z)
    cols.update(y_ret=ry, x_ret=rx, y_vol=realised_vol(y, C, bar_seconds=bar_seconds),
                x_vol=realised_vol(xa, C, bar_seconds=bar_seconds))
    for leg in ("y", "x"):
        if f"{leg}_volume" in extras:
            cols[f"{leg}_volume"] = extras[f"{leg}_volume"]
        if f"{leg}_trades" in extras:
            cols[f"{leg}_trades"] = extras[f"{leg}_trades"]
            if bar_seconds:
                cols[f"{leg}_trade_rate"] = extras[f"{leg}_trades"] / bar_seconds
    if kal is not None:
        cols.update(kalman_beta=kal.beta, kalman_alpha=kal.alpha)
        if method == "kalman":
            cols["kalman_q"] = kal.innovation_var

    H = E = None
    hres = hlatest = None
    if health:
        H = 20 * W if health_window is None else check_int("health_window", health_window, 20)
        E = W if health_every is None else check_int("health_every", health_every, 1)
        hres = relationship_health(y, xa, window=H, every=E, beta_window=W,
                                   log_prices=log_prices, index=index)
        cols.update(hres.per_bar(n))
        hlatest = health_at(y, xa, window=H, beta_window=W, log_prices=log_prices)
    frame = pd.DataFrame(cols, index=index)

    # --- in-sample summary on the static spread ---------------------------------------------
    static = fit_hedge(y, xa, method="ols", fit_intercept=True, log_prices=log_prices)
    s_static = static.spread(y, xa)
    s_ok = s_static[np.isfinite(s_static)]
    adf_res = stattests.adf(s_ok, lag_cap=None)          # statsmodels' defaults, uncapped
    eg = stattests.engle_granger_both(ys, xs, lag_cap=None)
    hl = stattests.half_life(s_static)
    try:
        hu = stattests.hurst(s_ok, max_lag=min(100, max(2, s_ok.size // 4)))
    except Exception:  # too short or constant: the summary says NaN
        hu = None
    ok = np.isfinite(y) & np.isfinite(xa)
    config = {"method": method, "window": W, "z_window": Z, "corr_window": C, "corr_of": corr_of,
              "log_prices": bool(log_prices), "fit_intercept": bool(fit_intercept),
              "refit_every": K, "n_valid": int(ok.sum()), "bar_seconds": bar_seconds,
              "kalman_warmup": kw, "health_window": H, "health_every": E,
              "y_symbol": symbols[0] if symbols else None,
              "x_symbol": symbols[1] if symbols else None}
    if isinstance(index, pd.DatetimeIndex) and n:
        config["start"], config["end"] = index[0].isoformat(), index[-1].isoformat()
    legs = {leg: leg_stats(vals, volume=extras.get(f"{leg}_volume"),
                           trade_count=extras.get(f"{leg}_trades"), bar_seconds=bar_seconds,
                           symbol=config[f"{leg}_symbol"])
            for leg, vals in (("y", y), ("x", xa))}
    return PairAnalysis(frame=frame, config=config, static=static, adf=adf_res, coint=eg,
                        half_life=hl, hurst=hu, kalman=kparams, health=hres,
                        health_latest=hlatest, legs=legs)

