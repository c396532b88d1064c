"""Trades -> pair bars -> analytics rows, for one pair, owned by the UI pump.

Pure Python (no Bokeh, no widgets, no threads): the pump calls
:meth:`PairPipeline.add_trades` with what it drained and
:meth:`PairPipeline.advance` once per tick, and streams what comes back.

Rows
----
A *row* is a flat ``dict`` (column -> float/int/str), one per closed bar of
the pair, which the plots stream as is (:data:`ROW_COLUMNS`):

* ``t``: bar open, ms since the epoch UTC (exchange time), and ``t_mid``,
  the bar's centre (where candles are drawn); ``t_last``: exchange time (ms)
  of the newest trade the pipeline had seen when it made the row (what a
  tick-to-screen measurement compares the browser's clock with,
  ``benchmarks/live.py``);
* per leg ``L`` in ``y``, ``x``: ``L_open``, ``L_high``, ``L_low``,
  ``L_close``, ``L_volume`` (base units), ``L_quote_volume`` (quote units),
  ``L_trades`` (count), ``L_color`` (candle colour);
* analytics of the main state (NaN while not enough bars): ``spread``,
  ``spread_mean``, ``spread_std``, ``zscore``, ``corr``, ``beta``,
  ``alpha``, ``half_life``; and hedge ratios of the three comparison
  estimators ``beta_static`` (OLS over the window), ``beta_rolling`` (rolling
  OLS) and ``beta_kalman``.

A *forming* row has the same columns for the bar still receiving trades; its
analytics come from ``peek`` (nothing committed).

Causality: a closed row uses bars up to and including its own; alerts are
evaluated on closed bars only, at the bar's open time.

Layout
------
``spec`` (row columns, :data:`HEDGES`, :class:`PairSpec`, :class:`PipelineUpdate`,
:class:`ExchangeClock`), ``core`` (:class:`PairPipeline`: state, input, per tick,
views), its mixins ``rows`` (the batch path) and ``resync`` (late bars, gaps,
:class:`Resync`, parameter changes). Every name is importable from
``quantlab.ui.pipeline``.
"""
from __future__ import annotations

from quantlab.ui.pipeline.core import PairPipeline
from quantlab.ui.pipeline.resync import Resync  # noqa: F401 (returned by PairPipeline.resync)
from quantlab.ui.pipeline.spec import (ANALYTICS_COLUMNS, HEDGES, LEG_FIELDS,  # noqa: F401
                                       MAX_CARRY_BARS, ROW_COLUMNS, ExchangeClock, PairSpec,
                                       PipelineUpdate)

__all__ = ["HEDGES", "PairSpec", "PairPipeline", "PipelineUpdate", "ExchangeClock",
           "ROW_COLUMNS", "ANALYTICS_COLUMNS"]
