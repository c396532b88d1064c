r"""The per-pair figures of a scan, as functions of arrays. Pure: numpy and
statsmodels (through :mod:`quantlab.analytics` and :mod:`quantlab.backtest`);
no I/O, no threads.

Train / test separation
-----------------------
A scan has two windows, kept apart by :class:`ScanWindows` (validated: each
``[start, end)`` non-empty, formation ends at or before evaluation starts).

* :func:`formation_figures` receives the **formation** bars only and returns
  the figures used for selection and the :class:`FormationParams` it froze
  (static hedge ratio and intercept, spread mean and standard deviation).
* :func:`evaluation_figures` receives those frozen parameters and the
  **evaluation** bars only; its columns are all named ``eval_...``.
* :func:`adjust_and_select` adjusts the formation p-values for multiple
  testing and sets ``selected`` from formation columns only. No ``eval_``
  column enters selection (a test perturbs the evaluation bars and checks that
  formation columns and selection are bit-identical).

Figures on formation (one row per pair, ``y`` the first symbol, ``x`` the second)
-------------------------------------------------------------------------------
``corr_returns``
    Pearson correlation of one-bar log returns.
``coint_stat_yx``, ``coint_pvalue_yx``, ``coint_stat_xy``, ``coint_pvalue_xy``
    Engle-Granger of y on x and of x on y (:func:`quantlab.analytics.engle_granger`,
    as ``statsmodels.tsa.stattools.coint``), ADF on the residuals with
    ``eg_lags`` fixed lagged differences (statsmodels ``maxlag=eg_lags,
    autolag=None``), MacKinnon p-values for two variables; ``coint_crit_5`` the
    5 % cointegration critical value (about -3.34, not the plain ADF -2.86).
    ``coint_pvalue`` = max of both orderings (a pair counts only if both reject).
``johansen_trace``, ``johansen_trace_crit_5``, ``johansen_rank``
    Johansen trace statistic of rank 0, its 5 % critical value, selected rank.
``hedge_ratio``, ``intercept``
    Static OLS :math:`y = \alpha + \beta x + u` over the formation window.
``spread_mean``, ``spread_std``
    Of :math:`s = y - \beta x - \alpha` over formation (ddof 1).
``half_life_bars``
    :math:`-\ln 2 / \ln(1 + b)` from :math:`\Delta s_t = a + b s_{t-1} + e_t`.
``hurst``
    Exponent from :math:`\mathrm{std}(s_{t+k} - s_t) \propto k^H`.
``n_crossings``
    Sign changes of :math:`s - \bar s` (zeros skipped).
``ssd``
    Distance of Gatev, Goetzmann and Rouwenhorst (2006):
    :math:`\sum_t (y_t / y_0 - x_t / x_0)^2`, prices normalised to 1 at the
    first formation bar.
``liquidity_quote``, ``illiquid``
    Median quote volume per bar of the thinner leg (quote currency per bar);
    ``illiquid`` when below ``min_notional``. Illiquid pairs are never selected.
``n_trades``, ``total_return``, ``sharpe``, ``max_drawdown_return``, ``hit_rate``
    :func:`quantlab.backtest.sweep` (the backtest engine without its frames) on
    :math:`z = (s - \bar s)/\mathrm{sd}(s)` with the static :math:`\beta`,
    positions of 1 quote of gross notional, fills at the next bar's open.
    In-sample by construction (formation is the fitting window).

Figures on evaluation, parameters frozen
----------------------------------------
``eval_n_bars``, ``eval_adf_pvalue`` (ADF with a constant and ``eg_lags`` lags on
the spread built with the formation :math:`\beta, \alpha`), ``eval_half_life_bars``,
``eval_spread_mean_z`` (drift of the spread mean in formation standard
deviations), and the same backtest (``eval_n_trades``, ``eval_total_return``, ...)
with :math:`z = (s - \bar s_{form}) / \mathrm{sd}_{form}` and the same thresholds.

Multiple testing
----------------
Every Engle-Granger test the scan ran (pairs x 2 orderings, NaN ones excluded:
they were not run) is adjusted at once with Benjamini-Hochberg and
Benjamini-Yekutieli (``statsmodels.stats.multitest.multipletests``, ``fdr_bh``
and ``fdr_by``; BY is valid under the dependence of pairs sharing a leg):
``coint_pvalue_yx_bh_adj`` ... and ``coint_pvalue_bh_adj`` /
``coint_pvalue_by_adj`` (max of both orderings). ``selected``:
``coint_pvalue_{adjust}_adj <= q``, not illiquid, no error, and the half-life
within ``max_half_life_bars`` when set.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, InsufficientData, QuantlabError

__all__ = ["ScanWindows", "ScanSettings", "PairBars", "FormationParams", "formation_figures",
           "evaluation_figures", "pair_figures", "adjust_and_select", "FORMATION_COLUMNS",
           "EVALUATION_COLUMNS", "ADJUSTED_COLUMNS", "TABLE_COLUMNS", "ADJUST_METHODS"]

ADJUST_METHODS = {"bh": "fdr_bh", "by": "fdr_by"}

_BT_KEYS = ("n_trades", "total_return", "sharpe", "max_drawdown_return", "hit_rate")
#: Per-bar moments of the formation backtest's net PnL changes, for the deflated Sharpe.
_MOMENT_KEYS = ("sharpe_per_bar", "pnl_skew", "pnl_kurtosis", "pnl_n_obs")
FORMATION_COLUMNS = (
    "n_bars", "corr_returns", "hedge_ratio", "intercept", "spread_mean", "spread_std",
    "coint_stat_yx", "coint_pvalue_yx", "coint_stat_xy", "coint_pvalue_xy", "coint_crit_5",
    "coint_pvalue", "johansen_trace", "johansen_trace_crit_5", "johansen_rank",
    "half_life_bars", "hurst", "n_crossings", "ssd", "liquidity_quote", "illiquid",
    *_BT_KEYS, *_MOMENT_KEYS,
)
EVALUATION_COLUMNS = (
    "eval_n_bars", "eval_adf_pvalue", "eval_half_life_bars", "eval_spread_mean_z",
    *(f"eval_{k}" for k in _BT_KEYS),
)
ADJUSTED_COLUMNS = tuple(f"coint_pvalue{o}_{m}_adj" for m in ADJUST_METHODS
                         for o in ("_yx", "_xy", ""))
TABLE_COLUMNS = ("y", "x", *FORMATION_COLUMNS, *EVALUATION_COLUMNS, *ADJUSTED_COLUMNS,
                 "dsr", "selected", "error")


def _ms(value: Any, field: str) -> int:
    """ISO-8601 (UTC when naive) or epoch ms -> int ms (:func:`quantlab.pairs.parse_time_ms`)."""
    from quantlab.pairs import parse_time_ms

    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    ms = parse_time_ms(str(value), field)
    if ms is None:
        raise ConfigError(field, value, "an ISO-8601 time such as 2024-01-01 or epoch ms")
    return ms


def _span(value: Any, field: str) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) != 2:
            raise ConfigError(field, value, "START/END, e.g. 2024-01-01/2024-01-21")
        value = parts
    try:
        start, end = value
    except (TypeError, ValueError):
        raise ConfigError(field, value, "a (start, end) pair or 'START/END'") from None
    lo, hi = _ms(start, field), _ms(end, field)
    if hi <= lo:
        raise ConfigError(field, value, "an end after the start ([start, end), UTC)")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class ScanWindows:
    """Formation (selection) and evaluation (out of sample) windows.

    Each is ``(start, end)``, half-open ``[start, end)``, in ms since the epoch
    UTC after validation (ISO-8601 strings and ``"START/END"`` accepted). The
    formation window must end at or before the evaluation window starts.

    Examples
    --------
    >>> w = ScanWindows(formation="2024-01-01/2024-01-21", evaluation="2024-01-21/2024-01-31")
    >>> w.formation
    (1704067200000, 1705795200000)
    >>> ScanWindows(formation=("2024-01-10", "2024-01-21"), evaluation=("2024-01-01", "2024-01-10"))
    Traceback (most recent call last):
    ...
    quantlab.errors.ConfigError: evaluation: expected a window that starts at or after the formation window ends (2024-01-21T00:00:00+00:00), got ('2024-01-01', '2024-01-10')
    """

    formation: tuple[int, int]
    evaluation: tuple[int, int]

    def __post_init__(self) -> None:
        f = _span(self.formation, "formation")
        e = _span(self.evaluation, "evaluation")
        if e[0] < f[1]:
            end = pd.Timestamp(f[1], unit="ms", tz="UTC").isoformat()
            raise ConfigError("evaluation", self.evaluation,
                              f"a window that starts at or after the formation window ends ({end})")
        object.__setattr__(self, "formation", f)
        object.__setattr__(self, "evaluation", e)

    def iso(self) -> dict[str, str]:
        """The windows as ``START/END`` ISO strings."""
        def fmt(span: tuple[int, int]) -> str:
            return "/".join(pd.Timestamp(v, unit="ms", tz="UTC").isoformat() for v in span)
        return {"formation": fmt(self.formation), "evaluation": fmt(self.evaluation)}


def _num(field: str, value: Any, *, low: float | None = None, high: float | None = None,
         strict_low: bool = False, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))
    if ok and low is not None:
        ok = value > low if strict_low else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = f"{'>' if strict_low else '>='} {low}" if low is not None else "finite"
        raise ConfigError(field, value, f"{'None or ' if none_ok else ''}a number {rng}"
                          + (f" and <= {high}" if high is not None else ""))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanSettings:
    """What a scan computes and how it selects. Frozen, keyword-only.

    Parameters
    ----------
    q : float
        False discovery rate for selection (0 < q < 1), default 0.05.
    adjust : {"by", "bh"}
        Which adjusted p-value drives ``selected`` (both are in the table).
        Default "by" (Benjamini-Yekutieli: valid when pairs share legs).
    min_notional : float
        Liquidity filter, quote currency per bar: a pair whose thinner leg's
        median quote volume per formation bar is below it is ``illiquid``.
    entry_z, exit_z, stop_z : float
        Backtest thresholds in formation standard deviations (as
        :class:`quantlab.backtest.BacktestSettings` ``entry``/``exit``/``stop``).
    fee_bps : float
        Fee per leg per side, basis points.
    eg_lags : int
        Lagged differences in the ADF of Engle-Granger and of the evaluation
        spread (fixed, no search: per-pair cost stays a few dot products).
    johansen_lags : int
        ``k_ar_diff`` of the Johansen VECM.
    hurst_max_lag : int
        Largest lag (bars) of the Hurst fit.
    min_bars : int
        Fewer aligned bars in a window and the pair gets an ``error``, no figures.
    max_half_life_bars : float or None
        Also require ``half_life_bars <= max_half_life_bars`` to select.
    """

    q: float = 0.05
    adjust: str = "by"
    min_notional: float = 0.0
    entry_z: float = 2.0
    exit_z: float = 0.0
    stop_z: float | None = None
    fee_bps: float = 0.0
    eg_lags: int = 1
    johansen_lags: int = 1
    hurst_max_lag: int = 100
    min_bars: int = 200
    max_half_life_bars: float | None = None

    def __post_init__(self) -> None:
        _num("q", self.q, low=0, high=1, strict_low=True)
        if self.adjust not in ADJUST_METHODS:
            raise ConfigError("adjust", self.adjust, "one of " + ", ".join(ADJUST_METHODS))
        _num("min_notional", self.min_notional, low=0)
        _num("entry_z", self.entry_z, low=0, strict_low=True)
        _num("exit_z", self.exit_z)
        if abs(self.exit_z) >= self.entry_z:
            raise ConfigError("exit_z", self.exit_z, f"|exit_z| < entry_z={self.entry_z}")
        _num("stop_z", self.stop_z, low=self.entry_z, strict_low=True, none_ok=True)
        _num("fee_bps", self.fee_bps, low=-1e4, strict_low=True)
        for name, lo in (("eg_lags", 0), ("johansen_lags", 0), ("hurst_max_lag", 3),
                         ("min_bars", 20)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(name, v, f"an integer >= {lo}")
        _num("max_half_life_bars", self.max_half_life_bars, low=0, strict_low=True, none_ok=True)


@dataclasses.dataclass(frozen=True)
class PairBars:
    """Aligned bars of one pair in one window (rows where both legs have a
    price), oldest first. Prices in quote per unit, volumes in quote currency
    per bar, ``bar_seconds`` the timeframe."""

    y_open: np.ndarray
    y_close: np.ndarray
    x_open: np.ndarray
    x_close: np.ndarray
    y_quote_volume: np.ndarray
    x_quote_volume: np.ndarray
    bar_seconds: float
    #: open time of each row, ms UTC (None when the caller has no clock)
    open_ms: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y_close.size)


@dataclasses.dataclass(frozen=True)
class FormationParams:
    """What the formation window froze for the evaluation window."""

    hedge_ratio: float
    intercept: float
    spread_mean: float
    spread_std: float


def _backtest(bars: PairBars, beta: float, z: np.ndarray, s: ScanSettings, *,
              moments: bool = False) -> dict[str, float]:
    """The backtest's summary figures; with ``moments`` also the per-bar Sharpe,
    skewness, non-excess kurtosis and count of its net PnL changes (the inputs
    of the deflated Sharpe)."""
    from quantlab.analytics.overfit import return_moments
    from quantlab.backtest import _sweep_cells  # sweep's engine, which can keep per-bar PnL

    data = {"y_open": bars.y_open, "y_close": bars.y_close, "x_open": bars.x_open,
            "x_close": bars.x_close, "beta": np.full(z.size, beta), "zscore": z}
    table, pnls, _ = _sweep_cells(data, entries=[s.entry_z], exits=[s.exit_z], windows=None,
                                  zscore_for_window=None, settings=None, keep_pnl=moments,
                                  overrides=dict(stop=s.stop_z, fee_bps=s.fee_bps,
                                                 sizing="gross_notional", size=1.0,
                                                 bar_seconds=bars.bar_seconds))
    row = table.iloc[0]
    out = {k: (math.nan if row[k] is None else float(row[k])) for k in _BT_KEYS}
    if moments:
        pnl = pnls[0]
        m = return_moments(pnl) if np.isfinite(pnl).sum() >= 2 else None
        ok = m is not None and m.sharpe is not None
        out.update(sharpe_per_bar=m.sharpe if ok else math.nan,
                   pnl_skew=m.skew if ok else math.nan, pnl_kurtosis=m.kurtosis if ok else math.nan,
                   pnl_n_obs=float(m.n_obs) if m is not None else math.nan)
    return out


def _check(bars: PairBars, s: ScanSettings, what: str) -> None:
    if len(bars) < s.min_bars:
        raise InsufficientData(f"{what} window (aligned bars)", s.min_bars, len(bars))


def formation_figures(bars: PairBars, settings: ScanSettings
                      ) -> tuple[dict[str, float], FormationParams]:
    """Figures of one pair on its formation bars, and the parameters frozen for
    evaluation. See the module docstring for every column.

    Raises
    ------
    InsufficientData
        Fewer than ``settings.min_bars`` bars.
    ConfigError
        A constant leg or spread.
    """
    from quantlab.analytics import engle_granger_both, half_life, hurst, johansen

    s = settings
    _check(bars, s, "formation")
    y, x = bars.y_close, bars.x_close
    n = y.size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ry, rx = np.diff(np.log(y)), np.diff(np.log(x))
        corr = float(np.corrcoef(ry, rx)[0, 1]) if ry.std() > 0 and rx.std() > 0 else math.nan
        eg = engle_granger_both(y, x, autolag=None, maxlag=s.eg_lags)
    beta, alpha = eg.y_on_x.beta, eg.y_on_x.alpha
    spread = y - beta * x - alpha
    mu, sd = float(spread.mean()), float(spread.std(ddof=1))
    if not sd > 0:
        raise ConfigError("spread", "a constant spread", "legs that are not exactly collinear")
    jo = johansen(y, x, k_ar_diff=s.johansen_lags)
    dev = spread - mu
    sign = np.sign(dev[dev != 0])
    figures: dict[str, float] = {
        "n_bars": n, "corr_returns": corr, "hedge_ratio": beta, "intercept": alpha,
        "spread_mean": mu, "spread_std": sd,
        "coint_stat_yx": eg.y_on_x.stat, "coint_pvalue_yx": eg.y_on_x.pvalue,
        "coint_stat_xy": eg.x_on_y.stat, "coint_pvalue_xy": eg.x_on_y.pvalue,
        "coint_crit_5": eg.y_on_x.critical_values["5%"], "coint_pvalue": eg.pvalue,
        "johansen_trace": jo.stat, "johansen_trace_crit_5": jo.critical_values["5%"],
        "johansen_rank": jo.rank_trace,
        "half_life_bars": half_life(spread).half_life,
        "hurst": hurst(spread, max_lag=min(s.hurst_max_lag, n // 2)).stat,
        "n_crossings": int(np.count_nonzero(sign[1:] != sign[:-1])),
        "ssd": float(np.sum((y / y[0] - x / x[0]) ** 2)),
        "liquidity_quote": float(min(np.median(bars.y_quote_volume),
                                     np.median(bars.x_quote_volume))),
    }
    figures["illiquid"] = bool(figures["liquidity_quote"] < s.min_notional)
    figures.update(_backtest(bars, beta, dev / sd, s, moments=True))
    return figures, FormationParams(hedge_ratio=float(beta), intercept=float(alpha),
                                    spread_mean=mu, spread_std=sd)


def evaluation_figures(params: FormationParams, bars: PairBars,
                       settings: ScanSettings) -> dict[str, float]:
    """Figures of one pair on its evaluation bars with the formation's
    parameters frozen (static hedge ratio and intercept, spread mean and std,
    same thresholds). Every key starts with ``eval_``."""
    from quantlab.analytics import adf, half_life

    s = settings
    _check(bars, s, "evaluation")
    spread = bars.y_close - params.hedge_ratio * bars.x_close - params.intercept
    z = (spread - params.spread_mean) / params.spread_std
    out: dict[str, float] = {
        "eval_n_bars": len(bars),
        "eval_adf_pvalue": adf(spread, regression="c", autolag=None, maxlag=s.eg_lags).pvalue,
        "eval_half_life_bars": half_life(spread).half_life,
        "eval_spread_mean_z": float(z.mean()),
    }
    out.update({f"eval_{k}": v for k, v in _backtest(bars, params.hedge_ratio, z, s).items()})
    return out


def pair_figures(formation: PairBars, evaluation: PairBars | None,
                 settings: ScanSettings) -> dict[str, Any]:
    """One row of the scan table (without ``y``/``x``, adjustments and
    selection): formation figures, then evaluation figures computed from the
    frozen formation parameters. A :class:`~quantlab.errors.QuantlabError`
    (too few bars, constant leg) leaves the figures NaN and says why in
    ``error``; a failure on evaluation keeps the formation figures."""
    row: dict[str, Any] = {c: math.nan for c in FORMATION_COLUMNS + EVALUATION_COLUMNS}
    row["illiquid"] = False
    row["error"] = ""
    try:
        figures, params = formation_figures(formation, settings)
    except QuantlabError as exc:
        row["n_bars"] = len(formation)
        row["error"] = f"formation: {exc}"
        return row
    row.update(figures)
    if evaluation is None:
        row["error"] = "evaluation: no bars"
        return row
    try:
        row.update(evaluation_figures(params, evaluation, settings))
    except QuantlabError as exc:
        row["eval_n_bars"] = len(evaluation)
        row["error"] = f"evaluation: {exc}"
    return row


def deflated_sharpes(table: pd.DataFrame) -> np.ndarray:
    """Deflated Sharpe (Bailey and Lopez de Prado 2014) of every pair's formation
    backtest, deflated by the scan itself: ``n_trials`` = pairs whose backtest
    has a per-bar Sharpe, :math:`V[SR]` their variance (ddof 1). NaN where a pair
    has no Sharpe (it never traded). Evaluation figures are out of sample and
    are not deflated."""
    from quantlab.analytics.overfit import deflated_sharpe_ratio

    if not {"sharpe_per_bar", "pnl_skew", "pnl_kurtosis", "pnl_n_obs"} <= set(table.columns):
        return np.full(len(table), np.nan)  # a table without backtest moments
    sr = table["sharpe_per_bar"].to_numpy(float)
    ok = np.isfinite(sr)
    out = np.full(sr.size, np.nan)
    n = int(ok.sum())
    if n == 0:
        return out
    var = float(np.var(sr[ok], ddof=1)) if n >= 2 else 0.0
    skew, kurt, nobs = (table[c].to_numpy(float) for c in ("pnl_skew", "pnl_kurtosis", "pnl_n_obs"))
    for i in np.flatnonzero(ok & (nobs >= 2)):
        try:
            out[i] = deflated_sharpe_ratio(float(sr[i]), n_obs=int(nobs[i]), n_trials=n,
                                           sharpe_variance=var, skew=float(skew[i]),
                                           kurtosis=float(kurt[i])).dsr
        except QuantlabError:  # e.g. a moment outside the formula's domain
            out[i] = math.nan
    return out


def adjust_and_select(table: pd.DataFrame, settings: ScanSettings) -> pd.DataFrame:
    """Adjust every Engle-Granger p-value of the table at once and select.

    The tests are the finite values of ``coint_pvalue_yx`` and
    ``coint_pvalue_xy`` over all rows (pairs x orderings); each is adjusted
    with BH and BY (``multipletests(method="fdr_bh" / "fdr_by")``) into
    ``coint_pvalue_yx_bh_adj`` ...; ``coint_pvalue_{m}_adj`` is the larger of
    the pair's two. ``selected`` uses formation columns only (see module
    docstring). ``attrs["n_tests"]`` is the number of tests adjusted over.
    Returns a new frame.
    """
    from statsmodels.stats.multitest import multipletests

    out = table.copy()
    raw = np.concatenate([out["coint_pvalue_yx"].to_numpy(float),
                          out["coint_pvalue_xy"].to_numpy(float)])
    ok = np.isfinite(raw)
    n = len(out)
    for short, method in ADJUST_METHODS.items():
        adj = np.full(raw.size, np.nan)
        if ok.any():
            adj[ok] = multipletests(raw[ok], method=method)[1]
        out[f"coint_pvalue_yx_{short}_adj"] = adj[:n]
        out[f"coint_pvalue_xy_{short}_adj"] = adj[n:]
        out[f"coint_pvalue_{short}_adj"] = np.fmax(adj[:n], adj[n:]) if n else adj[:0]
        both = np.isfinite(adj[:n]) & np.isfinite(adj[n:])
        out.loc[~both, f"coint_pvalue_{short}_adj"] = np.nan
    with np.errstate(invalid="ignore"):
        sel = (out[f"coint_pvalue_{settings.adjust}_adj"].to_numpy(float) <= settings.q)
    sel &= ~out["illiquid"].to_numpy(bool)
    sel &= ~out["error"].astype(str).str.startswith("formation").to_numpy(bool)
    if settings.max_half_life_bars is not None:
        with np.errstate(invalid="ignore"):
            sel &= out["half_life_bars"].to_numpy(float) <= settings.max_half_life_bars
    out["selected"] = sel
    out["dsr"] = deflated_sharpes(out)
    out.attrs["n_tests"] = int(ok.sum())
    out.attrs["q"] = settings.q
    out.attrs["adjust"] = settings.adjust
    return out
