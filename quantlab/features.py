r"""Feature table of a pair: one row per bar, every feature causal.

Pure (numpy/pandas/scipy): no I/O. :func:`feature_table` takes the aligned bars of
:func:`quantlab.pairs.load_pair_bars` (or :func:`quantlab.bars.align_pair`) and
returns a DataFrame indexed like them. The pair statistics come from
:func:`quantlab.analytics.analyze` (one implementation per statistic); this module
only adds the per-leg technical indicators and the multi-bar returns.

Causality
---------
Every feature at bar :math:`t` uses bars up to and including :math:`t` (a test
recomputes the table on data cut at several points and checks the earlier rows are
bit-identical). Forward-looking values exist only as **labels**: columns named
``label_...``, absent unless ``labels=True`` (``--labels``); never feed them to a
model as inputs. :data:`LABEL_PREFIX` marks them, :func:`feature_columns` lists
the others.

The in-sample ("static") hedge ratio over the whole range is *not* causal (the
fit sees the future), so it is not a feature: ``beta_static_expanding`` is the
same OLS over bars :math:`0 \ldots t` (its last value equals the in-sample static
fit; :func:`quantlab.analytics.expanding_ols`). The in-sample figures stay in
``analyze``'s summary.

Columns (``{L}`` is ``y`` or ``x``; ``{h}`` a horizon in bars; ``{n}`` a window)
--------------------------------------------------------------------------------
====================================== ===============================================
``y_close``, ``x_close``               closes (quote currency)
``{L}_logret_{h}``                     :math:`\ln(c_t / c_{t-h})` for each horizon
``{L}_vol``                            realised volatility of one-bar log returns over
                                       ``window`` bars, annualised on 365 days
``{L}_volume``, ``{L}_quote_volume``   base and quote volume of the bar
``{L}_trades``, ``{L}_trade_rate``     trade count of the bar, and per second
``{L}_taker_buy_share``                taker-buy volume / volume (NaN without volume)
``beta``, ``alpha``                    hedge in force at the bar (``hedge``), used by
                                       ``spread`` / ``zscore``
``beta_rolling``                       OLS over the trailing ``window`` bars
``beta_static_expanding``              OLS over bars 0..t (min ``window`` bars)
``beta_kalman``                        filtered Kalman :math:`\beta_{t|t}` (NaN in the
                                       maximum-likelihood warm-up)
``spread``, ``spread_mean``,           :math:`s_t = y_t - \beta_t x_t - \alpha_t`, its
``spread_std``, ``zscore``             rolling mean / std (ddof 1) and z over ``window``
``corr``                               rolling correlation of one-bar log returns
``half_life``                          rolling AR(1) half-life of the spread, bars
``{L}_sma_{n}``                        simple moving average of the close
``{L}_ema_{n}``                        exponential average, span n:
                                       :math:`e_t = a c_t + (1-a) e_{t-1}`,
                                       :math:`a = 2/(n+1)`, :math:`e_0 = c_0`
                                       (pandas ``ewm(span=n, adjust=False)``)
``{L}_bb_mid_{n}``, ``_upper_``,       Bollinger bands: SMA :math:`\pm k\sigma`, with
``_lower_``, ``{L}_bb_pctb_{n}``       :math:`\sigma` the **population** std (ddof 0, as
                                       Bollinger defines it); %b = (c - lower)/(upper - lower)
``{L}_vwap_{n}``                       :math:`\sum p q / \sum q` over the trailing n bars
                                       (quote volume / volume)
``{L}_vwap_day``                       the same since 00:00 UTC of the bar's day
``{L}_rsi_{n}``                        Wilder's RSI: average gain :math:`G` and loss
                                       :math:`L` seeded with the mean of the first n
                                       changes, then :math:`G_t = G_{t-1} + (g_t -
                                       G_{t-1})/n`; RSI = 100 G/(G+L) (NaN when flat)
``label_{L}_fwd_ret_{h}``              **label**: :math:`\ln(c_{t+h}/c_t)`
``label_spread_fwd_chg_{h}``           **label**: :math:`(y_{t+h}-y_t) - \beta_t
                                       (x_{t+h}-x_t)`, the change of the spread held at
                                       the bar's hedge (quote currency per unit of y)
====================================== ===============================================

Indicators need ``n`` bars (EMA: defined from the first bar; RSI: ``n + 1``);
before that they are NaN, never a fake zero.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError

__all__ = ["LABEL_PREFIX", "FeatureSettings", "feature_table", "feature_columns", "label_columns",
           "sma", "ema", "bollinger", "rsi", "rolling_vwap", "day_vwap"]

#: Columns that look ahead start with this; everything else is causal.
LABEL_PREFIX = "label_"
LEGS = ("y", "x")


# --- indicators (per leg, causal) ---------------------------------------------------------------
def _arr(values: Any, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ConfigError(name, f"shape {a.shape}", "a 1-D series")
    return a


def _window(n: Any, name: str, low: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < low:
        raise ConfigError(name, n, f"an int >= {low}")
    return int(n)


def sma(close: Any, n: int) -> np.ndarray:
    r"""Simple moving average :math:`\frac1n \sum_{i=t-n+1}^{t} c_i` (NaN for the
    first ``n - 1`` bars); :func:`quantlab.analytics.rolling_mean_std`."""
    from quantlab.analytics import rolling_mean_std

    mean, _ = rolling_mean_std(_arr(close, "close"), _window(n, "n"), ddof=0)
    return mean


def ema(close: Any, span: int) -> np.ndarray:
    r"""Exponential moving average, ``adjust=False`` recursion.

    .. math:: e_0 = c_0, \qquad e_t = a c_t + (1 - a) e_{t-1}, \qquad a = \frac{2}{n + 1}

    A sequential IIR filter (:func:`scipy.signal.lfilter`), so the value at
    :math:`t` depends on bars :math:`0 \ldots t` only. Equals pandas
    ``Series.ewm(span=n, adjust=False).mean()`` to rounding.

    >>> [round(float(v), 4) for v in ema([1.0, 2.0, 3.0], 3)]
    [1.0, 1.5, 2.25]
    """
    from scipy.signal import lfilter

    c = _arr(close, "close")
    span = _window(span, "span")
    if c.size == 0:
        return c.copy()
    a = 2.0 / (span + 1.0)
    out, _ = lfilter([a], [1.0, a - 1.0], c, zi=[(1.0 - a) * c[0]])
    return out


def bollinger(close: Any, n: int, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Bollinger bands ``(mid, upper, lower)``: the n-bar SMA and
    :math:`\mathrm{SMA} \pm k \sigma_t`, :math:`\sigma_t` the population standard
    deviation (ddof 0) of the same n closes. A constant window has :math:`\sigma`
    NaN (not a zero-width band)."""
    from quantlab.analytics import rolling_mean_std

    mid, sd = rolling_mean_std(_arr(close, "close"), _window(n, "n"), ddof=0)
    return mid, mid + k * sd, mid - k * sd


def rsi(close: Any, n: int = 14) -> np.ndarray:
    r"""Wilder's relative strength index over ``n`` bars, 0..100.

    With changes :math:`d_t = c_t - c_{t-1}`, gains :math:`g_t = \max(d_t, 0)`,
    losses :math:`l_t = \max(-d_t, 0)`: the averages start at the mean of the
    first ``n`` changes (bar ``n``) and then follow Wilder's smoothing

    .. math:: G_t = G_{t-1} + (g_t - G_{t-1}) / n, \qquad \mathrm{RSI}_t = 100 \frac{G_t}{G_t + L_t}

    NaN for bars ``0 .. n-1`` and where :math:`G_t + L_t = 0` (no movement).
    """
    from scipy.signal import lfilter

    c = _arr(close, "close")
    n = _window(n, "n")
    out = np.full(c.size, np.nan)
    if c.size <= n:
        return out
    d = np.diff(c)
    g, loss = np.maximum(d, 0.0), np.maximum(-d, 0.0)
    a = 1.0 / n

    def smooth(v: np.ndarray) -> np.ndarray:
        seed = float(np.mean(v[:n]))            # G at bar n (changes 1..n)
        rest = v[n:]                             # changes n+1 ..
        if rest.size == 0:
            return np.array([seed])
        tail, _ = lfilter([a], [1.0, a - 1.0], rest, zi=[(1.0 - a) * seed])
        return np.concatenate(([seed], tail))

    G, L = smooth(g), smooth(loss)
    with np.errstate(invalid="ignore", divide="ignore"):
        tot = G + L
        out[n:] = np.where(tot > 0, 100.0 * G / np.where(tot > 0, tot, 1.0), np.nan)
    return out


def rolling_vwap(quote_volume: Any, volume: Any, n: int) -> np.ndarray:
    r"""VWAP over the trailing ``n`` bars, :math:`\sum_i (pq)_i / \sum_i q_i`
    (ratio of the rolling means from :func:`quantlab.analytics.rolling_mean_std`);
    NaN where the window has no volume."""
    from quantlab.analytics import rolling_mean_std

    n = _window(n, "n")
    qv, _ = rolling_mean_std(_arr(quote_volume, "quote_volume"), n, ddof=0)
    v, _ = rolling_mean_std(_arr(volume, "volume"), n, ddof=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(v > 0, qv / np.where(v > 0, v, 1.0), np.nan)


def day_vwap(quote_volume: Any, volume: Any, day: Any) -> np.ndarray:
    r"""VWAP since the start of each bar's day (``day``: an integer day key per
    bar, e.g. ``open_ms // 86_400_000``): cumulative sums reset at each new day.
    NaN until the day has volume."""
    qv = pd.Series(_arr(quote_volume, "quote_volume"))
    v = pd.Series(_arr(volume, "volume"))
    key = pd.Series(np.asarray(day))
    cq = qv.groupby(key, sort=False).cumsum().to_numpy()
    cv = v.groupby(key, sort=False).cumsum().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cv > 0, cq / np.where(cv > 0, cv, 1.0), np.nan)


# --- the table ----------------------------------------------------------------------------------
class FeatureSettings:
    """Windows of :func:`feature_table` (validated; plain values)."""

    def __init__(self, *, window: int = 60, horizons: Sequence[int] = (1, 5, 15, 60),
                 sma_windows: Sequence[int] | None = None, ema_spans: Sequence[int] = (12, 26),
                 bb_window: int = 20, bb_k: float = 2.0, rsi_window: int = 14,
                 vwap_window: int | None = None, hedge: str = "rolling-ols",
                 log_prices: bool = False, labels: bool = False,
                 label_horizons: Sequence[int] | None = None):
        self.window = _window(window, "window", 3)
        self.horizons = tuple(_window(h, "horizons") for h in horizons)
        self.sma_windows = tuple(_window(n, "sma_windows") for n in
                                 (sma_windows if sma_windows is not None else (20, self.window)))
        self.ema_spans = tuple(_window(n, "ema_spans") for n in ema_spans)
        self.bb_window = _window(bb_window, "bb_window", 2)
        if not (isinstance(bb_k, (int, float)) and bb_k > 0):
            raise ConfigError("bb_k", bb_k, "a number > 0 (band width in standard deviations)")
        self.bb_k = float(bb_k)
        self.rsi_window = _window(rsi_window, "rsi_window")
        self.vwap_window = _window(vwap_window if vwap_window is not None else self.window,
                                   "vwap_window")
        self.hedge = hedge
        self.log_prices = bool(log_prices)
        self.labels = bool(labels)
        self.label_horizons = tuple(_window(h, "label_horizons") for h in
                                    (label_horizons if label_horizons is not None else self.horizons))

    def as_dict(self) -> dict:
        return dict(vars(self))


def _leg(aligned: pd.DataFrame, leg: str, name: str) -> np.ndarray | None:
    col = f"{leg}_{name}"
    return aligned[col].to_numpy(dtype=np.float64) if col in aligned.columns else None


def feature_table(aligned: pd.DataFrame, settings: FeatureSettings | None = None,
                  **options: Any) -> pd.DataFrame:
    """Per-bar causal features of a pair (module table), plus labels when asked.

    Parameters
    ----------
    aligned : DataFrame
        :func:`quantlab.bars.align_pair` output (``y_close``, ``x_close``;
        volumes, trade counts and ``*_quote_volume`` / ``*_taker_buy_volume``
        used when present), indexed by ``open_time`` (UTC).
    settings : FeatureSettings, optional
        Windows; or pass its keywords directly (``window=60, labels=True``).

    Returns
    -------
    DataFrame
        Same index as ``aligned``; causal columns first, then ``label_...``
        columns when ``labels``. ``attrs["feature_settings"]`` records the windows.
    """
    from quantlab.analytics import analyze, expanding_ols, rolling_ols

    if settings is None:
        settings = FeatureSettings(**options)
    elif options:
        raise ConfigError("options", sorted(options), "either settings= or keywords, not both")
    s = settings
    if not isinstance(aligned, pd.DataFrame) or "y_close" not in aligned or "x_close" not in aligned:
        raise ConfigError("aligned", type(aligned).__name__,
                          "a DataFrame with y_close and x_close (quantlab.pairs.load_pair_bars)")
    res = analyze(aligned, window=s.window, hedge=s.hedge, log_prices=s.log_prices,
                  with_kalman=s.hedge != "kalman", health=False)
    a = res.frame
    n = len(a)
    cols: dict[str, np.ndarray] = {}
    closes = {leg: aligned[f"{leg}_close"].to_numpy(dtype=np.float64) for leg in LEGS}
    for leg in LEGS:
        c = closes[leg]
        cols[f"{leg}_close"] = c
        logc = np.log(c)
        for h in s.horizons:
            if h == 1:
                cols[f"{leg}_logret_1"] = a[f"{leg}_ret"].to_numpy()
                continue
            r = np.full(n, np.nan)
            if n > h:
                r[h:] = logc[h:] - logc[:-h]
            cols[f"{leg}_logret_{h}"] = r
        cols[f"{leg}_vol"] = a[f"{leg}_vol"].to_numpy()
        vol = _leg(aligned, leg, "volume")
        qv = _leg(aligned, leg, "quote_volume")
        if vol is not None:
            cols[f"{leg}_volume"] = vol
        if qv is not None:
            cols[f"{leg}_quote_volume"] = qv
        for src, dst in (("trades", "trades"), ("trade_rate", "trade_rate")):
            if f"{leg}_{src}" in a.columns:
                cols[f"{leg}_{dst}"] = a[f"{leg}_{src}"].to_numpy()
        buy = _leg(aligned, leg, "taker_buy_volume")
        if buy is not None and vol is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                cols[f"{leg}_taker_buy_share"] = np.where(vol > 0, buy / np.where(vol > 0, vol, 1.0),
                                                          np.nan)
    cols["beta"] = a["beta"].to_numpy()
    cols["alpha"] = a["alpha"].to_numpy()
    ys, xs = closes["y"], closes["x"]
    if s.hedge == "rolling-ols":
        cols["beta_rolling"] = cols["beta"]
    else:
        cols["beta_rolling"] = rolling_ols(ys, xs, s.window, log_prices=s.log_prices).beta
    cols["beta_static_expanding"] = expanding_ols(ys, xs, s.window, log_prices=s.log_prices).beta
    kal = "kalman_beta" if "kalman_beta" in a.columns else None
    cols["beta_kalman"] = a[kal].to_numpy() if kal else np.full(n, np.nan)
    for c in ("spread", "spread_mean", "spread_std", "zscore", "corr", "half_life"):
        cols[c] = a[c].to_numpy()
    day = aligned.index.as_unit("ms").asi8 // 86_400_000 if isinstance(aligned.index, pd.DatetimeIndex) \
        else None
    for leg in LEGS:
        c = closes[leg]
        for w in s.sma_windows:
            cols[f"{leg}_sma_{w}"] = sma(c, w)
        for w in s.ema_spans:
            cols[f"{leg}_ema_{w}"] = ema(c, w)
        mid, up, lo = bollinger(c, s.bb_window, s.bb_k)
        w = s.bb_window
        cols[f"{leg}_bb_mid_{w}"], cols[f"{leg}_bb_upper_{w}"], cols[f"{leg}_bb_lower_{w}"] = mid, up, lo
        with np.errstate(invalid="ignore", divide="ignore"):
            cols[f"{leg}_bb_pctb_{w}"] = (c - lo) / (up - lo)
        vol, qv = _leg(aligned, leg, "volume"), _leg(aligned, leg, "quote_volume")
        if vol is not None and qv is not None:
            cols[f"{leg}_vwap_{s.vwap_window}"] = rolling_vwap(qv, vol, s.vwap_window)
            if day is not None:
                cols[f"{leg}_vwap_day"] = day_vwap(qv, vol, day)
        cols[f"{leg}_rsi_{s.rsi_window}"] = rsi(c, s.rsi_window)
    if s.labels:
        for h in s.label_horizons:
            for leg in LEGS:
                logc = np.log(closes[leg])
                r = np.full(n, np.nan)
                if n > h:
                    r[:-h] = logc[h:] - logc[:-h]
                cols[f"{LABEL_PREFIX}{leg}_fwd_ret_{h}"] = r
            chg = np.full(n, np.nan)
            if n > h:
                # in the hedge's own units: log prices when the hedge is fitted on them
                py, px = (np.log(ys), np.log(xs)) if s.log_prices else (ys, xs)
                chg[:-h] = (py[h:] - py[:-h]) - cols["beta"][:-h] * (px[h:] - px[:-h])
            cols[f"{LABEL_PREFIX}spread_fwd_chg_{h}"] = chg
    out = pd.DataFrame(cols, index=aligned.index)
    out.attrs.update({k: v for k, v in aligned.attrs.items() if isinstance(v, (str, int, float))})
    out.attrs["feature_settings"] = s.as_dict()
    return out


def label_columns(frame: pd.DataFrame) -> list[str]:
    """The look-ahead columns (``label_...``) of a feature table."""
    return [c for c in frame.columns if str(c).startswith(LABEL_PREFIX)]


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The causal columns of a feature table (everything but the labels)."""
    return [c for c in frame.columns if not str(c).startswith(LABEL_PREFIX)]
