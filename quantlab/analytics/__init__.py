r"""Pair analytics: hedge ratios, Kalman filter, spread / z-score / correlation,
stationarity and cointegration tests, relationship health, live incremental state.

Pure: numpy, pandas, scipy and statsmodels only; no I/O, no threads, and no
websockets / bokeh / ipywidgets import (a test checks it in a subprocess).

Entry points
------------
:func:`analyze`
    Causal per-bar frame (``beta``, ``alpha``, ``spread``, ``zscore``,
    ``corr``, ...) and an in-sample summary for a pair of closes.
:class:`LivePairState`
    The same per-bar values, O(1) per bar, with ``update(t, y, x)`` and
    ``peek(y, x)`` for a forming bar.
:func:`adf`, :func:`engle_granger` (alias :func:`coint`), :func:`engle_granger_both`,
:func:`johansen`, :func:`kpss`, :func:`half_life`, :func:`hurst`
    Tests of a spread; frozen results with ``stat``, ``pvalue``,
    ``critical_values``, ``nobs``, ``lags``, ``summary()`` and ``_repr_html_()``.
:func:`fit_hedge`, :func:`rolling_ols`, :func:`expanding_ols`, :func:`rolling_robust`,
:func:`hedge_series`, :func:`kalman_filter`, :func:`estimate_kalman_params`
    Hedge ratios: static (in-sample) and causal per-bar.
:func:`rolling_zscore`, :func:`rolling_corr`, :func:`rolling_half_life`, :func:`log_returns`,
:func:`realised_vol`, :func:`leg_stats`
    Building blocks.
:func:`relationship_health`, :func:`health_at`, :func:`verdict`
    Rolling Engle-Granger p-value, half-life and beta drift with a plain-words verdict.
:func:`deflated_sharpe_ratio`, :func:`probabilistic_sharpe_ratio`,
:func:`probability_of_backtest_overfitting`, :func:`adjust_pvalues`, :func:`sweep_overfit`
    Selection bias: Sharpe deflated by the number of trials (from :mod:`quantlab.ledger`),
    PBO by CSCV, Benjamini-Yekutieli adjusted p-values.

Every per-bar value at bar :math:`t` uses bars up to and including :math:`t`.
"""
from quantlab.analytics.health import (HealthResult, HealthThresholds, health_at,
                                       relationship_health, verdict)
from quantlab.analytics.hedge import (HedgeFit, HedgeSeries, expanding_ols, fit_hedge,
                                      hedge_series, rolling_ols, rolling_robust)
from quantlab.analytics.kalman import KalmanParams, KalmanResult, kalman_filter
from quantlab.analytics.kalman import estimate_params as estimate_kalman_params
from quantlab.analytics.legs import LegStats, bars_per_year, leg_stats, realised_vol
from quantlab.analytics.live import LivePairState
from quantlab.analytics.pipeline import FRAME_COLUMNS, PairAnalysis, analyze, bars_needed, shortfall
from quantlab.analytics.rolling import (log_returns, rolling_corr, rolling_half_life,
                                        rolling_mean_std, rolling_zscore)
from quantlab.analytics.stattests import (ADFResult, EngleGrangerPair, EngleGrangerResult,
                                          HalfLifeResult, HurstResult, JohansenResult, KPSSResult,
                                          adf, coint, engle_granger, engle_granger_both, half_life,
                                          hurst, johansen, kpss)
from quantlab.analytics.overfit import (DeflatedSharpeResult, PBOResult, ReturnMoments,
                                        SweepOverfit, adjust_pvalues, deflated_sharpe_ratio,
                                        expected_max_sharpe, probabilistic_sharpe_ratio,
                                        probability_of_backtest_overfitting, return_moments,
                                        sweep_overfit)
from quantlab.analytics._base import HEDGE_METHODS

__all__ = [
    "analyze", "PairAnalysis", "FRAME_COLUMNS", "bars_needed", "shortfall", "LivePairState",
    "HEDGE_METHODS", "HedgeFit", "HedgeSeries", "fit_hedge", "rolling_ols", "expanding_ols",
    "rolling_robust", "hedge_series", "KalmanParams", "KalmanResult", "kalman_filter",
    "estimate_kalman_params", "ADFResult", "EngleGrangerResult", "EngleGrangerPair",
    "JohansenResult", "KPSSResult", "HalfLifeResult", "HurstResult", "adf", "coint",
    "engle_granger", "engle_granger_both", "johansen", "kpss", "half_life", "hurst",
    "rolling_zscore", "rolling_corr", "rolling_mean_std", "rolling_half_life", "log_returns",
    "realised_vol", "leg_stats", "LegStats", "bars_per_year", "HealthResult",
    "HealthThresholds", "relationship_health", "health_at", "verdict",
    "DeflatedSharpeResult", "PBOResult", "ReturnMoments", "SweepOverfit", "adjust_pvalues",
    "deflated_sharpe_ratio", "expected_max_sharpe", "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting", "return_moments", "sweep_overfit",
]
