r"""The computation behind a pair report: one call, every figure and table's data.

:func:`study_pair` runs exactly what the CLI and the live monitor run
(:func:`quantlab.pairs.run_analysis`, :func:`quantlab.backtest.backtest`,
:func:`quantlab.backtest.sweep`, :func:`quantlab.alerts.replay_alerts`, the
tests of :mod:`quantlab.analytics`) and two honesty stamps computed in the run:

* **causality check**: the analysis is recomputed on the bars cut at a few
  points; every per-bar column of the full run must equal the truncated run's
  rows (NaN equal to NaN). The backtest's equity is checked the same way up to
  the bar before each cut (a fill at bar t+1 needs bar t+1).
* **lag check**: the backtest with one more bar of delay (the signals of bar
  t-1 filled on bar t+1); an edge that vanishes with one bar of delay is an
  artefact of the fill assumption, not of mean reversion.

Pure: no I/O (the caller loads the bars; timings use a monotonic clock only).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import pandas as pd

from quantlab.reports.parameters import ReportParameters

__all__ = ["PairStudy", "CausalityCheck", "LagCheck", "study_pair", "backtest_inputs",
           "verdict_line"]

#: Fractions of the bars at which the causality check cuts the input.
CAUSALITY_CUTS = (0.3, 0.6, 0.85)

def backtest_inputs(aligned: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The backtest's input: both legs' opens and closes from the bars, the causal
    ``beta``, ``zscore`` and ``half_life`` from the analysis frame."""
    return aligned[["y_open", "y_close", "x_open", "x_close"]].join(
        frame[["beta", "zscore", "half_life"]])


@dataclasses.dataclass(frozen=True)
class CausalityCheck:
    """Per-bar columns recomputed on truncated input equal the full run's rows.

    ``cuts``: bar counts the input was cut to; ``columns``: per-bar columns
    compared; ``max_abs_diff``: largest difference seen (0.0 when bit-identical);
    ``failures``: ``"column@cut"`` for every column that differed.
    """

    cuts: tuple[int, ...]
    columns: int
    max_abs_diff: float
    failures: tuple[str, ...]
    equity_checked: bool

    @property
    def passed(self) -> bool:
        return not self.failures

    def line(self) -> str:
        if not self.cuts:
            return "Causality check: not run (too few bars to cut)"
        cuts = ", ".join(f"{c:,}" for c in self.cuts)
        if self.passed:
            how = "bit-identical" if self.max_abs_diff == 0 else f"max |diff| {self.max_abs_diff:.2g}"
            return (f"Causality check passed: {self.columns} per-bar columns recomputed on the bars "
                    f"cut at {cuts} equal the full run's rows ({how})"
                    + ("; backtest equity too" if self.equity_checked else ""))
        return (f"Causality check FAILED at {', '.join(self.failures[:6])}: a value depends on "
                f"later bars")


@dataclasses.dataclass(frozen=True)
class LagCheck:
    """The backtest again with one more bar of delay between signal and fill."""

    sharpe: float
    sharpe_lagged: float
    total_pnl: float
    total_pnl_lagged: float
    n_trades: int
    n_trades_lagged: int

    def line(self) -> str:
        return (f"Lag check: net Sharpe {_num(self.sharpe)} as specified, {_num(self.sharpe_lagged)} "
                f"with one extra bar of delay (PnL {_num(self.total_pnl)} -> "
                f"{_num(self.total_pnl_lagged)}, {self.n_trades} -> {self.n_trades_lagged} trades)")


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}g}"


@dataclasses.dataclass(frozen=True, eq=False)
class PairStudy:
    """Everything a pair report shows. Built by :func:`study_pair`.

    Attributes
    ----------
    params : ReportParameters
    aligned : the input bars (:func:`quantlab.pairs.load_pair_bars`)
    analysis : :class:`quantlab.analytics.PairAnalysis` (causal frame + in-sample tests)
    rolling_beta : rolling-OLS beta over ``window`` (for the hedge-ratio plot)
    tests : in-sample tests of the static spread and of the pair
        (``adf``, ``engle_granger``, ``johansen``, ``kpss``, ``half_life``, ``hurst``)
    backtest : :class:`quantlab.backtest.BacktestResult`
    sweep : net Sharpe (and more) per (entry, exit), :func:`quantlab.backtest.sweep`, with
        each cell's deflated Sharpe (``dsr``, deflated by the grid)
    overfit : :class:`quantlab.analytics.SweepOverfit` of the grid (``pbo``: probability of
        backtest overfitting of picking the best cell)
    alerts : events the alert rules would have fired (:func:`quantlab.alerts.replay_alerts`)
    causality, lag : the honesty stamps
    digest : :func:`quantlab.ledger.bars_digest` of the input
    timings : seconds spent per step
    """

    params: ReportParameters
    aligned: pd.DataFrame
    analysis: Any
    rolling_beta: np.ndarray
    tests: dict
    backtest: Any
    sweep: pd.DataFrame
    overfit: Any
    alerts: pd.DataFrame
    causality: CausalityCheck
    lag: LagCheck
    digest: str
    timings: dict

    @property
    def frame(self) -> pd.DataFrame:
        return self.analysis.frame

    @property
    def stats(self) -> dict:
        return self.backtest.summary()

    def verdict(self) -> str:
        return verdict_line(self.tests["engle_granger"].y_on_x.pvalue,
                            self.tests["half_life"].half_life, self.stats.get("sharpe"),
                            self.params.fee_bps)

    def headline(self) -> dict:
        """The figures ``report.json`` and the batch index carry."""
        s = self.analysis.summary()
        st = self.stats
        return {
            "pair": self.params.pair, "symbol_y": self.params.symbol_y,
            "symbol_x": self.params.symbol_x, "timeframe": self.params.timeframe,
            "start": s.get("start"), "end": s.get("end"), "n_bars": s.get("n_bars"),
            "hedge_ratio": s.get("hedge_ratio"), "intercept": s.get("intercept"),
            "coint_pvalue": s.get("coint_pvalue"), "coint_pvalue_x_on_y": s.get("coint_pvalue_x_on_y"),
            "adf_pvalue": s.get("adf_pvalue"), "half_life_bars": s.get("half_life_bars"),
            "hurst": s.get("hurst"), "sharpe": st.get("sharpe"), "total_pnl": st.get("total_pnl"),
            "n_trades": st.get("n_trades"), "break_even_fee_bps": st.get("break_even_fee_bps"),
            "max_drawdown": st.get("max_drawdown"), "fee_bps": self.params.fee_bps,
            "sharpe_lagged": self.lag.sharpe_lagged, "causality_passed": self.causality.passed,
            "sweep_pbo": self.overfit.pbo.pbo if self.overfit.pbo is not None else None,
            "verdict": self.verdict(), "relationship": s.get("verdict"),
            "bars_sha256": self.digest,
        }


def verdict_line(coint_pvalue: float, half_life_bars: float, sharpe: float | None,
                 fee_bps: float) -> str:
    """The report's one-line verdict.

    >>> verdict_line(0.004, 41.6, 1.31, 4)
    'cointegrated at 1%, half-life 42 bars, net Sharpe 1.31 after 4 bps per leg'
    >>> verdict_line(0.3, float("inf"), -0.2, 0)
    'not cointegrated (Engle-Granger p = 0.3), no mean reversion (half-life infinite), net Sharpe -0.2 after 0 bps per leg'
    """
    if coint_pvalue is None or not math.isfinite(coint_pvalue):
        coint = "cointegration not testable"
    else:
        level = next((lvl for lvl in (0.01, 0.05, 0.10) if coint_pvalue < lvl), None)
        coint = (f"cointegrated at {level:.0%}" if level is not None
                 else f"not cointegrated (Engle-Granger p = {coint_pvalue:.2g})")
    if half_life_bars is None or not math.isfinite(half_life_bars):
        hl = "no mean reversion (half-life infinite)"
    else:
        hl = f"half-life {half_life_bars:.0f} bars"
    return f"{coint}, {hl}, net Sharpe {_num(sharpe)} after {fee_bps:g} bps per leg"


def _same(a: pd.Series, b: pd.Series) -> float | None:
    """Largest |a - b| (0.0 when equal, NaN == NaN); None when they differ in kind."""
    if a.dtype.kind in "fi" and b.dtype.kind in "fi":
        av, bv = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
        both_nan = np.isnan(av) & np.isnan(bv)
        if not np.array_equal(np.isnan(av), np.isnan(bv)):
            return math.inf
        with np.errstate(invalid="ignore"):
            d = np.abs(av - bv)
        d = d[~both_nan & np.isfinite(d)]
        same_inf = np.array_equal(av[np.isinf(av)], bv[np.isinf(bv)])
        return (float(d.max()) if d.size else 0.0) if same_inf else math.inf
    return 0.0 if a.astype(str).equals(b.astype(str)) else math.inf


def check_causality(aligned: pd.DataFrame, full_frame: pd.DataFrame, analyse, *,
                    equity: pd.DataFrame | None = None, run_backtest=None,
                    cuts: tuple[float, ...] = CAUSALITY_CUTS, min_bars: int = 0,
                    tolerance: float = 1e-9) -> CausalityCheck:
    """Recompute ``analyse(aligned[:c])`` for each cut and compare with the full run.

    ``analyse``: bars -> analysis frame (the same call that made ``full_frame``);
    ``run_backtest``: (bars, analysis frame) -> equity frame, optional.
    ``tolerance`` is relative to the column's scale; the analytics are
    bit-identical in practice, which the stamp reports.
    """
    n = len(aligned)
    points = sorted({int(n * f) for f in cuts if min_bars <= int(n * f) < n})
    worst = 0.0
    failures: list[str] = []
    for c in points:
        part = analyse(aligned.iloc[:c])
        head = full_frame.iloc[:c]
        for col in head.columns:
            d = _same(head[col], part[col])
            scale = float(np.nanmax(np.abs(head[col].to_numpy(dtype=float)))) \
                if head[col].dtype.kind in "fi" and head[col].notna().any() else 1.0
            if d is None or d > tolerance * max(scale, 1.0):
                failures.append(f"{col}@{c}")
            elif math.isfinite(d):
                worst = max(worst, d)
        if equity is not None and run_backtest is not None:
            eq = run_backtest(aligned.iloc[:c], part)
            # The last bar of the cut is where an open position is marked: compare before it.
            d = _same(equity["equity"].iloc[:c - 1], eq["equity"].iloc[:c - 1])
            if d is None or d > tolerance * max(float(np.nanmax(np.abs(equity["equity"]))), 1.0):
                failures.append(f"equity@{c}")
    return CausalityCheck(cuts=tuple(points), columns=len(full_frame.columns),
                          max_abs_diff=worst, failures=tuple(failures),
                          equity_checked=equity is not None and run_backtest is not None)


def study_pair(aligned: pd.DataFrame, params: ReportParameters) -> PairStudy:
    """Run the whole study of one pair on bars from :func:`quantlab.pairs.load_pair_bars`.

    Every per-bar series (beta, spread, z-score, correlation, health, the
    backtest's signals) is causal; the tests tables are **in-sample** over the
    whole range, as their captions say.
    """
    from quantlab.alerts import replay_alerts
    from quantlab.analytics import (engle_granger_both, hurst, johansen, kpss, rolling_ols,
                                    sweep_overfit)
    from quantlab.backtest import backtest
    from quantlab.ledger import bars_digest
    from quantlab.pairs import run_analysis

    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def analyse(bars: pd.DataFrame):
        return run_analysis(bars, window=params.window, hedge=params.hedge, with_kalman=True)

    analysis = analyse(aligned)
    frame = analysis.frame
    y, x = frame["y"].to_numpy(), frame["x"].to_numpy()
    rolling_beta = (frame["beta"].to_numpy() if params.hedge == "rolling-ols"
                    else rolling_ols(y, x, params.window).beta)
    static_spread = y - analysis.static.beta * x - analysis.static.alpha
    tests = {
        "adf": analysis.adf,
        "engle_granger": engle_granger_both(y, x),
        "johansen": johansen(y, x),
        "kpss": kpss(static_spread),
        "half_life": analysis.half_life,
        "hurst": analysis.hurst if analysis.hurst is not None else hurst(static_spread),
    }
    timings["analytics_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    settings = params.backtest_settings()
    data = backtest_inputs(aligned, frame)
    result = backtest(data, settings)
    lagged_data = data.assign(**{c: data[c].shift(1) for c in ("beta", "zscore", "half_life")})
    lagged = backtest(lagged_data, settings)
    st, lst = result.summary(), lagged.summary()
    lag = LagCheck(sharpe=st["sharpe"], sharpe_lagged=lst["sharpe"], total_pnl=st["total_pnl"],
                   total_pnl_lagged=lst["total_pnl"], n_trades=st["n_trades"],
                   n_trades_lagged=lst["n_trades"])
    overfit = sweep_overfit(data, entries=params.sweep_entries, exits=params.sweep_exits,
                            settings=settings)
    timings["backtest_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    events = replay_alerts(frame, params.alert_rules, params.pair) if params.alert_rules else \
        replay_alerts(frame, [], params.pair)
    causality = check_causality(
        aligned, frame, lambda bars: analyse(bars).frame, equity=result.equity,
        run_backtest=lambda bars, part: backtest(backtest_inputs(bars, part), settings).equity,
        min_bars=max(3 * params.window, 60))
    digest = bars_digest(aligned)
    timings["checks_s"] = time.perf_counter() - t2
    return PairStudy(params=params, aligned=aligned, analysis=analysis, rolling_beta=rolling_beta,
                     tests=tests, backtest=result, sweep=overfit.table, overfit=overfit, alerts=events, causality=causality,
                     lag=lag, digest=digest, timings=timings)
