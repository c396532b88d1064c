r"""Selection-bias statistics: the deflated and probabilistic Sharpe ratios, the
probability of backtest overfitting (CSCV), and family-wise adjusted p-values.

Pure: numpy, scipy and statsmodels; no I/O. The number of trials these need
comes from the trial ledger (:mod:`quantlab.ledger`), which counts every
backtest, sweep cell, scan and report so that the user never types it.

Conventions
-----------
* Sharpe ratios are **per bar** (per observation), never annualised:
  :math:`\widehat{SR} = \bar r / s_r` with the sample standard deviation
  (ddof 1) of the per-bar returns (or PnL changes; the ratio is scale free).
  An annualised Sharpe :math:`SR_a` over :math:`B` bars per year is
  :math:`SR_a / \sqrt{B}` per bar, and a variance of annualised Sharpes is
  divided by :math:`B`.
* Kurtosis is the **non-excess** fourth standardised moment (normal = 3);
  skewness the third. :func:`return_moments` computes both (population
  moments, as in Bailey and Lopez de Prado's code).

References
----------
Bailey, D. H. and Lopez de Prado, M. (2012). The Sharpe ratio efficient
frontier. Journal of Risk 15(2). (Probabilistic Sharpe ratio.)

Bailey, D. H. and Lopez de Prado, M. (2014). The deflated Sharpe ratio:
correcting for selection bias, backtest overfitting and non-normality.
Journal of Portfolio Management 40(5), 94-107. (Numerical example: N = 100
trials, annualised V[SR] = 1/2, best annualised SR = 2.5 over T = 1250 daily
observations (250 a year), skewness -3, kurtosis 10: SR0 = 0.1132 per day,
DSR = 0.9004. ``tests/test_overfit.py`` reproduces it.)

Bailey, D. H., Borwein, J., Lopez de Prado, M. and Zhu, Q. J. (2017). The
probability of backtest overfitting. Journal of Computational Finance 20(4).

Benjamini, Y. and Yekutieli, D. (2001). The control of the false discovery
rate in multiple testing under dependency. Annals of Statistics 29(4).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.analytics._base import Result, check_int
from quantlab.errors import ConfigError, InsufficientData

__all__ = [
    "EULER_GAMMA", "DeflatedSharpeResult", "ReturnMoments", "PBOResult", "SweepOverfit",
    "deflated_sharpe_ratio", "probabilistic_sharpe_ratio", "expected_max_sharpe",
    "return_moments", "probability_of_backtest_overfitting", "adjust_pvalues", "sweep_overfit",
]

#: Euler-Mascheroni constant :math:`\gamma`.
EULER_GAMMA = 0.5772156649015329


def _finite(field: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(field, value, "a finite number") from None
    if not math.isfinite(v):
        raise ConfigError(field, value, "a finite number")
    return v


# --- Sharpe ratios ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeflatedSharpeResult(Result):
    r"""Deflated (or probabilistic) Sharpe ratio of one selected strategy.

    Attributes
    ----------
    dsr : float
        :math:`\Phi(z)`, the probability that the true per-bar Sharpe exceeds
        ``expected_max_sharpe``; > 0.95 is the paper's significance bar.
    stat : float
        :math:`z = (\widehat{SR} - SR_0)\sqrt{T-1} /
        \sqrt{1 - \gamma_3 \widehat{SR} + \frac{\gamma_4 - 1}{4}\widehat{SR}^2}`.
    pvalue : float
        :math:`1 - \mathrm{dsr}`.
    expected_max_sharpe : float
        :math:`SR_0`, per bar: the expected largest Sharpe of ``n_trials``
        skill-free trials (the benchmark; 0 for one trial, or the given
        benchmark for the PSR).
    sharpe, n_obs (= ``nobs``), n_trials, sharpe_variance, skew, kurtosis :
        The inputs (per-bar Sharpe, bars, trials, :math:`V[\widehat{SR}_n]`
        across trials, :math:`\gamma_3`, non-excess :math:`\gamma_4`).
    """

    dsr: float
    expected_max_sharpe: float
    n_trials: int
    stat: float
    pvalue: float
    sharpe: float
    n_obs: int
    nobs: int
    sharpe_variance: float
    skew: float
    kurtosis: float
    _title = "Deflated Sharpe ratio"

    def __float__(self) -> float:
        return float(self.dsr)


def expected_max_sharpe(n_trials: int, sharpe_variance: float, mean_sharpe: float = 0.0) -> float:
    r"""Expected maximum of ``n_trials`` Sharpe estimates with zero true skill.

    .. math::

        SR_0 = E[\widehat{SR}] + \sqrt{V[\widehat{SR}_n]}\,\Big((1-\gamma)\,
        Z^{-1}\!\big(1 - \tfrac{1}{N}\big) + \gamma\, Z^{-1}\!\big(1 - \tfrac{1}{N e}\big)\Big)

    (Bailey and Lopez de Prado 2014, eq. 6 after the false strategy theorem),
    :math:`\gamma` the Euler-Mascheroni constant, :math:`Z^{-1}` the standard
    normal quantile. Units are those of the Sharpe estimates (per bar here).
    ``mean_sharpe`` for ``N = 1``.

    >>> round(expected_max_sharpe(100, 0.5 / 250), 4)
    0.1132
    """
    from scipy.stats import norm

    n = check_int("n_trials", n_trials, 1)
    var = _finite("sharpe_variance", sharpe_variance)
    if var < 0:
        raise ConfigError("sharpe_variance", sharpe_variance, "a variance >= 0")
    if n == 1:
        return float(mean_sharpe)
    z = ((1 - EULER_GAMMA) * norm.ppf(1 - 1 / n) + EULER_GAMMA * norm.ppf(1 - 1 / (n * math.e)))
    return float(mean_sharpe + math.sqrt(var) * z)


def _psr(sharpe: float, benchmark: float, n_obs: int, skew: float, kurtosis: float
         ) -> tuple[float, float]:
    from scipy.stats import norm

    denom = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe ** 2
    if not denom > 0:
        raise ConfigError("skew", skew, f"moments with 1 - skew*SR + (kurtosis-1)/4*SR^2 > 0 "
                          f"(got {denom:.3g} for SR={sharpe:.3g}, kurtosis={kurtosis:.3g}); is "
                          "the Sharpe per bar rather than annualised?")
    z = (sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(denom)
    return float(z), float(norm.cdf(z))


def _check_moments(sharpe: Any, n_obs: Any, skew: Any, kurtosis: Any) -> tuple[float, int, float, float]:
    sr = _finite("sharpe", sharpe)
    n = check_int("n_obs", n_obs, 2)
    g3 = _finite("skew", skew)
    g4 = _finite("kurtosis", kurtosis)
    if g4 < 1:
        raise ConfigError("kurtosis", kurtosis, "a non-excess kurtosis >= 1 (normal = 3)")
    return sr, n, g3, g4


def deflated_sharpe_ratio(sharpe: float, *, n_obs: int, n_trials: int,
                          sharpe_variance: float | None = None, skew: float = 0.0,
                          kurtosis: float = 3.0) -> DeflatedSharpeResult:
    r"""Deflated Sharpe ratio (Bailey and Lopez de Prado 2014).

    The probabilistic Sharpe ratio of the selected strategy against the
    expected maximum Sharpe :math:`SR_0` of ``n_trials`` skill-free trials
    (:func:`expected_max_sharpe`):

    .. math::

        \mathrm{DSR} = \Phi\!\left(\frac{(\widehat{SR} - SR_0)\sqrt{T - 1}}
        {\sqrt{1 - \gamma_3 \widehat{SR} + \frac{\gamma_4 - 1}{4}\widehat{SR}^2}}\right)

    Parameters
    ----------
    sharpe : float
        Per-bar (not annualised) Sharpe ratio :math:`\widehat{SR}` of the
        selected trial.
    n_obs : int
        Number of per-bar returns :math:`T` behind ``sharpe`` (>= 2).
    n_trials : int
        Trials :math:`N` the selection was made from (>= 1), e.g.
        :meth:`quantlab.ledger.Ledger.record` ``.n``.
    sharpe_variance : float, optional
        Variance :math:`V[\widehat{SR}_n]` of the per-bar Sharpes across the
        trials; required when ``n_trials > 1``.
    skew : float
        Skewness :math:`\gamma_3` of the selected trial's per-bar returns.
    kurtosis : float
        Non-excess kurtosis :math:`\gamma_4` (normal = 3).

    Returns
    -------
    DeflatedSharpeResult
        ``dsr`` (a probability), ``expected_max_sharpe`` (:math:`SR_0`),
        ``n_trials``, ``stat`` (z), ``pvalue`` (1 - dsr).

    Examples
    --------
    The paper's example: annualised SR 2.5 picked from 100 trials whose
    annualised Sharpes have variance 1/2, five years of daily data:

    >>> r = deflated_sharpe_ratio(2.5 / 250 ** 0.5, n_obs=1250, n_trials=100,
    ...                           sharpe_variance=0.5 / 250, skew=-3, kurtosis=10)
    >>> round(r.expected_max_sharpe, 4), round(r.dsr, 4)
    (0.1132, 0.9004)
    """
    sr, n, g3, g4 = _check_moments(sharpe, n_obs, skew, kurtosis)
    nt = check_int("n_trials", n_trials, 1)
    if sharpe_variance is None:
        if nt > 1:
            raise ConfigError("sharpe_variance", None, "the variance of the per-bar Sharpes "
                              "across the trials (e.g. Ledger.family_sharpes) when n_trials > 1")
        sharpe_variance = 0.0
    var = _finite("sharpe_variance", sharpe_variance)
    sr0 = expected_max_sharpe(nt, var)
    z, p = _psr(sr, sr0, n, g3, g4)
    return DeflatedSharpeResult(dsr=p, expected_max_sharpe=sr0, n_trials=nt, stat=z,
                                pvalue=1.0 - p, sharpe=sr, n_obs=n, nobs=n,
                                sharpe_variance=var, skew=g3, kurtosis=g4)


def probabilistic_sharpe_ratio(sharpe: float, *, n_obs: int, skew: float = 0.0,
                               kurtosis: float = 3.0, benchmark: float = 0.0
                               ) -> DeflatedSharpeResult:
    r"""Probabilistic Sharpe ratio (Bailey and Lopez de Prado 2012):
    :math:`\Phi\big((\widehat{SR} - SR^*)\sqrt{T-1} / \sqrt{1 - \gamma_3\widehat{SR}
    + \frac{\gamma_4-1}{4}\widehat{SR}^2}\big)`, the DSR with one trial and
    benchmark :math:`SR^*` (per bar, default 0).

    >>> round(probabilistic_sharpe_ratio(0.1, n_obs=250).dsr, 3)
    0.942
    """
    sr, n, g3, g4 = _check_moments(sharpe, n_obs, skew, kurtosis)
    bench = _finite("benchmark", benchmark)
    z, p = _psr(sr, bench, n, g3, g4)
    return DeflatedSharpeResult(dsr=p, expected_max_sharpe=bench, n_trials=1, stat=z,
                                pvalue=1.0 - p, sharpe=sr, n_obs=n, nobs=n, sharpe_variance=0.0,
                                skew=g3, kurtosis=g4)


@dataclasses.dataclass(frozen=True)
class ReturnMoments(Result):
    """Per-bar Sharpe (mean / sample std, ddof 1), number of returns, skewness
    and non-excess kurtosis (population moments) of a return series. ``sharpe``
    is None when the standard deviation is 0 (a trial that never traded)."""

    sharpe: float | None
    n_obs: int
    skew: float
    kurtosis: float
    mean: float
    std: float
    _title = "Return moments"


def return_moments(returns: Any) -> ReturnMoments:
    """:class:`ReturnMoments` of the finite values of ``returns`` (per bar).

    >>> m = return_moments([1.0, -1.0, 2.0, 0.0])
    >>> round(m.sharpe, 4), m.n_obs, round(m.kurtosis, 2)
    (0.3873, 4, 1.64)
    """
    r = np.asarray(returns, dtype=np.float64).ravel()
    r = r[np.isfinite(r)]
    if r.size < 2:
        raise InsufficientData("a Sharpe ratio", 2, int(r.size))
    mu = float(r.mean())
    sd = float(r.std(ddof=1))
    c = r - mu
    m2 = float(np.mean(c ** 2))
    if m2 > 0 and sd > 0:
        skew = float(np.mean(c ** 3) / m2 ** 1.5)
        kurt = float(np.mean(c ** 4) / m2 ** 2)
        sharpe: float | None = mu / sd
    else:
        skew, kurt, sharpe = 0.0, 3.0, None
    return ReturnMoments(sharpe=sharpe, n_obs=int(r.size), skew=skew, kurtosis=kurt, mean=mu,
                         std=sd)


# --- probability of backtest overfitting -------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class PBOResult(Result):
    r"""Probability of backtest overfitting by combinatorially symmetric
    cross-validation (Bailey, Borwein, Lopez de Prado and Zhu 2017).

    Attributes
    ----------
    pbo : float
        :math:`P(\lambda \le 0)`: the share of in-sample/out-of-sample splits
        where the in-sample best trial ranks at or below the out-of-sample
        median.
    logits : ndarray
        :math:`\lambda_c = \ln(\bar\omega_c / (1 - \bar\omega_c))`, one per
        split, :math:`\bar\omega_c` the relative out-of-sample rank (rank /
        (N + 1), ties averaged) of the in-sample best trial.
    is_best, oos_of_best : ndarray
        Per split, the in-sample per-bar Sharpe of the in-sample best trial and
        its out-of-sample per-bar Sharpe.
    degradation_slope, degradation_intercept, degradation_r2 : float
        OLS of ``oos_of_best`` on ``is_best`` (performance degradation; a slope
        near or below 0 means in-sample rank says nothing out of sample).
    prob_oos_loss : float
        Share of splits where the in-sample best has an out-of-sample Sharpe < 0.
    n_blocks, n_splits, n_trials, n_obs : int
        :math:`S`, :math:`\binom{S}{S/2}`, :math:`N`, :math:`T` used (the
        earliest ``T mod S`` rows are dropped so blocks are equal).
    """

    pbo: float
    logits: np.ndarray = dataclasses.field(metadata={"array": True})
    is_best: np.ndarray = dataclasses.field(metadata={"array": True})
    oos_of_best: np.ndarray = dataclasses.field(metadata={"array": True})
    degradation_slope: float = math.nan
    degradation_intercept: float = math.nan
    degradation_r2: float = math.nan
    prob_oos_loss: float = math.nan
    logit_median: float = math.nan
    n_blocks: int = 0
    n_splits: int = 0
    n_trials: int = 0
    n_obs: int = 0
    _title = "Probability of backtest overfitting (CSCV)"


def _sharpe_from_sums(s1: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    mu = s1 / n
    var = np.maximum(s2 - n * mu * mu, 0.0) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN sums (a NaN return) stay NaN
        sd = np.sqrt(var)
        tiny = 1e-12 * np.maximum(np.sqrt(s2 / n), 1e-300)
        return np.where(sd > tiny, mu / sd, 0.0)


def probability_of_backtest_overfitting(returns: Any, n_blocks: int = 16) -> PBOResult:
    r"""PBO of choosing the in-sample best of ``N`` trials, by CSCV.

    Algorithm (Bailey et al. 2017, section 2): split the :math:`T \times N`
    matrix of per-bar trial returns into ``n_blocks`` :math:`S` consecutive
    blocks of equal length; for each of the :math:`\binom{S}{S/2}` ways to pick
    half of the blocks as the in-sample set :math:`J` (its complement
    :math:`\bar J` out of sample), find the trial :math:`n^*` with the best
    per-bar Sharpe on :math:`J`, its relative rank :math:`\bar\omega` among the
    out-of-sample Sharpes on :math:`\bar J` and the logit
    :math:`\lambda = \ln(\bar\omega/(1-\bar\omega))`. Then
    :math:`\mathrm{PBO} = \#\{\lambda \le 0\} / \binom{S}{S/2}`.

    Parameters
    ----------
    returns : DataFrame or 2-D array, shape (T, N)
        Per-bar returns (or PnL changes) of each trial, one column per trial,
        rows aligned in time; finite. A trial with zero variance on a subset
        has Sharpe 0 there.
    n_blocks : int
        Even number of blocks :math:`S` (default 16: 12,870 splits).

    Returns
    -------
    PBOResult
    """
    m = returns.to_numpy(dtype=np.float64) if isinstance(returns, pd.DataFrame) else \
        np.asarray(returns, dtype=np.float64)
    if m.ndim != 2:
        raise ConfigError("returns", f"shape {m.shape}", "a 2-D T x N matrix, one column per trial")
    s = check_int("n_blocks", n_blocks, 2)
    if s % 2:
        raise ConfigError("n_blocks", n_blocks, "an even number of blocks (e.g. 16)")
    t, n = m.shape
    if n < 2:
        raise ConfigError("returns", f"{n} trial column(s)", "at least 2 trials to choose among")
    if not np.isfinite(m).all():
        i, j = np.argwhere(~np.isfinite(m))[0]
        raise ConfigError("returns", f"{m[i, j]!r} at row {i}, column {j}",
                          "finite per-bar returns (fill bars without a position with 0)")
    block = t // s
    if block < 2:
        raise InsufficientData(f"CSCV with n_blocks={s}", 2 * s, t)
    m = m[t - block * s:]
    # Per-block sums and sums of squares: every split's Sharpe is a sum of S/2 blocks.
    b1 = m.reshape(s, block, n).sum(axis=1)
    b2 = (m * m).reshape(s, block, n).sum(axis=1)
    combos = np.array(list(itertools.combinations(range(s), s // 2)), dtype=np.intp)
    mask = np.zeros((combos.shape[0], s))
    mask[np.arange(combos.shape[0])[:, None], combos] = 1.0
    half = block * s // 2
    tot1, tot2 = b1.sum(axis=0), b2.sum(axis=0)
    logits, is_best, oos_best = [], [], []
    for lo in range(0, mask.shape[0], 2048):  # bounded memory for many trials
        mk = mask[lo:lo + 2048]
        in1, in2 = mk @ b1, mk @ b2
        sr_in = _sharpe_from_sums(in1, in2, half)
        sr_out = _sharpe_from_sums(tot1 - in1, tot2 - in2, half)
        best = np.argmax(sr_in, axis=1)
        rows = np.arange(mk.shape[0])
        oos = sr_out[rows, best]
        below = (sr_out < oos[:, None]).sum(axis=1)
        equal = (sr_out == oos[:, None]).sum(axis=1)
        w = (below + (equal + 1) / 2.0) / (n + 1)
        logits.append(np.log(w / (1.0 - w)))
        is_best.append(sr_in[rows, best])
        oos_best.append(oos)
    lam = np.concatenate(logits)
    x, y = np.concatenate(is_best), np.concatenate(oos_best)
    if np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        r = np.corrcoef(x, y)[0, 1] if np.ptp(y) > 0 else 0.0
    else:
        slope, intercept, r = math.nan, float(np.mean(y)), math.nan
    for a in (lam, x, y):
        a.setflags(write=False)
    return PBOResult(pbo=float(np.mean(lam <= 0)), logits=lam, is_best=x, oos_of_best=y,
                     degradation_slope=float(slope), degradation_intercept=float(intercept),
                     degradation_r2=float(r * r), prob_oos_loss=float(np.mean(y < 0)),
                     logit_median=float(np.median(lam)), n_blocks=s, n_splits=int(lam.size),
                     n_trials=n, n_obs=int(m.shape[0]))


# --- multiple testing ---------------------------------------------------------------------
def adjust_pvalues(pvalues: Sequence[float] | np.ndarray | pd.Series, *, method: str = "fdr_by"
                   ) -> np.ndarray:
    """Family-wise adjusted p-values, Benjamini-Yekutieli by default.

    ``statsmodels.stats.multitest.multipletests(pvalues, method=method)``;
    ``fdr_by`` controls the false discovery rate under any dependence (pairs
    sharing a leg, both orderings of a pair, overlapping windows). NaN
    p-values (tests that could not run) stay NaN and are not counted in
    :math:`m`; every finite p-value is, so pass the whole family (e.g.
    :meth:`quantlab.ledger.Ledger.family_pvalues`).

    >>> adjust_pvalues([0.01, 0.02, 0.5]).round(4).tolist()
    [0.055, 0.055, 0.9167]
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if (p[ok] < 0).any() or (p[ok] > 1).any():
        raise ConfigError("pvalues", p[ok][(p[ok] < 0) | (p[ok] > 1)][0], "p-values in [0, 1]")
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


# --- sweeps -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class SweepOverfit:
    """Deflated Sharpe of every sweep cell and the PBO of picking the best.

    Attributes
    ----------
    table : DataFrame
        :func:`quantlab.backtest.sweep` rows plus ``sharpe_per_bar``,
        ``n_obs``, ``skew``, ``kurtosis``, ``n_trials``, ``dsr``.
    pnl : DataFrame
        Per-bar net PnL changes, one column per table row (the CSCV input).
    pbo : PBOResult or None
        None when there are too few bars for ``n_blocks`` (or one cell).
    n_trials : int
        Trials each cell's DSR is deflated by (the cells plus ``prior_trials``).
    sharpe_variance : float
        Variance of the per-bar Sharpes used for :math:`SR_0`.
    best : int
        Row of ``table`` with the highest per-bar Sharpe (-1 if none traded).
    """

    table: pd.DataFrame
    pnl: pd.DataFrame
    pbo: PBOResult | None
    n_trials: int
    sharpe_variance: float
    best: int

    def summary(self) -> dict:
        row = self.table.iloc[self.best] if self.best >= 0 else None
        return {"n_cells": int(len(self.table)), "n_trials": self.n_trials,
                "sharpe_variance": self.sharpe_variance,
                "pbo": None if self.pbo is None else self.pbo.pbo,
                "best_dsr": None if row is None else _none_nan(row["dsr"]),
                "best_sharpe_per_bar": None if row is None else _none_nan(row["sharpe_per_bar"])}

    def _repr_html_(self) -> str:
        import html
        items = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{v}</td></tr>"
                        for k, v in self.summary().items())
        return f"<table><caption><b>Sweep overfitting</b></caption>{items}</table>"


def _none_nan(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def sweep_overfit(data: pd.DataFrame | Mapping[str, Any], *, entries: Iterable[float],
                  exits: Iterable[float], windows: Iterable[int] | None = None,
                  zscore_for_window: Callable[[int], tuple[Any, Any]] | None = None,
                  settings: Any = None, n_blocks: int = 16, prior_trials: int = 0,
                  prior_sharpes: Sequence[float] = (), **overrides: Any) -> SweepOverfit:
    """:func:`quantlab.backtest.sweep` with a deflated Sharpe per cell and the
    PBO of picking the best cell. Pure: the ledger-aware caller passes the
    trials made before this sweep in ``prior_trials`` / ``prior_sharpes``.

    Each cell is simulated once, by the sweep, which keeps its per-bar net PnL
    (the ``pnl`` column of :func:`quantlab.backtest.backtest`'s equity frame);
    per-bar Sharpe, skew and kurtosis come from :func:`return_moments` of the equity changes (bars 1..n-1, as the
    backtest's Sharpe). :math:`V[SR]` is the variance (ddof 1) of the cells'
    per-bar Sharpes together with ``prior_sharpes``; cells that never traded
    count as trials with Sharpe 0.

    Parameters
    ----------
    data, entries, exits, windows, zscore_for_window, settings, **overrides
        As for :func:`quantlab.backtest.sweep`.
    n_blocks : int
        CSCV blocks for :func:`probability_of_backtest_overfitting`.
    prior_trials : int
        Trials of the same family already made (e.g. from the ledger).
    prior_sharpes : sequence of float
        Their per-bar Sharpes, for the variance.
    """
    from quantlab import backtest as bt

    windows = None if windows is None else [int(w) for w in windows]
    entries, exits = [float(v) for v in entries], [float(v) for v in exits]
    # one simulation per cell: the sweep keeps each cell's per-bar net PnL (the
    # `pnl` column of backtest()'s equity frame, bars 1..n-1)
    table, columns, index = bt._sweep_cells(
        data, entries=entries, exits=exits, windows=windows, zscore_for_window=zscore_for_window,
        settings=settings, overrides=overrides, keep_pnl=True)
    pnl = pd.DataFrame(np.column_stack(columns), index=index)
    moments = [return_moments(c) for c in columns]
    sharpes = np.array([m.sharpe if m.sharpe is not None else 0.0 for m in moments])
    n_trials = len(columns) + int(prior_trials)
    pool = np.concatenate([sharpes, np.asarray(list(prior_sharpes), dtype=float)])
    var = float(np.var(pool, ddof=1)) if pool.size >= 2 else 0.0
    dsr = []
    for m in moments:
        if m.sharpe is None:
            dsr.append(math.nan)
            continue
        try:
            dsr.append(deflated_sharpe_ratio(m.sharpe, n_obs=m.n_obs, n_trials=n_trials,
                                             sharpe_variance=var, skew=m.skew,
                                             kurtosis=m.kurtosis).dsr)
        except ConfigError:
            dsr.append(math.nan)
    table = table.assign(sharpe_per_bar=[m.sharpe for m in moments],
                         n_obs=[m.n_obs for m in moments], skew=[m.skew for m in moments],
                         kurtosis=[m.kurtosis for m in moments], n_trials=n_trials, dsr=dsr)
    pbo = None
    if len(columns) >= 2 and pnl.shape[0] >= 2 * n_blocks:
        pbo = probability_of_backtest_overfitting(pnl, n_blocks=n_blocks)
    traded = np.array([m.sharpe is not None for m in moments])
    best = int(np.argmax(np.where(traded, sharpes, -np.inf))) if traded.any() else -1
    return SweepOverfit(table=table, pnl=pnl, pbo=pbo, n_trials=n_trials, sharpe_variance=var,
                        best=best)
