"""Time bars from trades: vectorised (batch), incremental (live), and pair alignment.

Pure numpy/pandas: no I/O, no threads, no logging handlers.

Every function here builds bars in the shape of :mod:`quantlab.schema`: a frame
indexed by ``open_time`` (tz-aware UTC, the bar's open) with the columns of
:data:`~quantlab.schema.BAR_COLUMNS`. Units: times in milliseconds since the
epoch (UTC), prices in quote currency per base unit, ``volume`` and
``taker_buy_volume`` in base units, ``quote_volume`` in quote currency.

Policies shared by every builder (batch and live give the same bars)
--------------------------------------------------------------------
Exchange time
    Bars are built from the exchange trade time ``T``, never from the local
    receive time, so live capture and replay give the same bars (STYLE.md).
Grid
    A bar of timeframe :math:`\\Delta` (ms) covers :math:`[k\\Delta, (k+1)\\Delta)`
    for an integer :math:`k`: bars are aligned on the epoch, so ``1m`` bars open
    on whole minutes and ``1d`` bars at 00:00 UTC (a ``7d`` bar would open on a
    Thursday, the weekday of 1970-01-01).
Order within a bar
    Trades are ordered by ``(time_ms, trade_id)``: equal timestamps are broken
    by trade id. Without trade ids, ties keep their input order.
Empty bars
    A bar without trades is an explicit row: ``is_empty`` true, ``volume``,
    ``quote_volume``, ``taker_buy_volume`` 0, ``trade_count`` 0, and ``open``,
    ``high``, ``low``, ``close``, ``vwap`` all equal to the previous close
    (carried forward; causal: only earlier trades are used).
Range
    Without ``start_ms`` the bars start at the bar of the first trade; without
    ``end_ms`` they end at the bar of the last trade. With ``start_ms`` /
    ``end_ms`` the output covers every bar that overlaps ``[start_ms, end_ms)``
    (``start_ms`` is floored to the grid), with explicit empty bars where
    nothing traded, so two symbols' bars line up on time. A bar is always
    whole: trades outside the covered bars are left out, trades inside them are
    all counted. Leading empty bars (before the first trade in the range) carry
    the price of the last trade *before* the range when the input has one,
    else their prices are NaN (``is_empty`` true). Hence a windowed result
    equals the same rows sliced out of the un-windowed result.
Forming bar
    ``is_forming`` is true for a bar whose close time is still in the future:
    ``open_ms + timeframe_ms > now_ms``. In batch mode (``now_ms=None``) no bar
    is forming unless the input bars say so (:func:`aggregate_bars`).
VWAP
    :math:`\\mathrm{vwap} = \\sum_i p_i q_i / \\sum_i q_i` over the bar's trades
    (``quote_volume / volume``); the close when the bar has no volume.

Late trades (live builder)
    :class:`IncrementalBars` accepts trades in any order *within* the forming
    bar (open and close follow ``(time_ms, trade_id)``, not arrival order). A
    trade for a bar that has already been emitted is a *late trade*: it is
    counted in :attr:`IncrementalBars.late_trades` and ignored. The store/batch
    path (:func:`resample_ticks` over stored ticks) is authoritative and
    includes it; rebuild from the store when exact history matters.

Layout
------
``timeframes`` (:func:`parse_timeframe` and the helpers every builder shares),
``batch`` (:func:`resample_ticks`, :func:`resample_trades`, :func:`market_mask`,
:func:`aggregate_bars`), ``incremental`` (:class:`IncrementalBars`, :class:`Bar`,
:func:`bars_to_frame`), ``align`` (:func:`align_pair`). Every name is importable
from ``quantlab.bars``.
"""
from __future__ import annotations

from quantlab.bars.align import align_pair
from quantlab.bars.batch import aggregate_bars, market_mask, resample_ticks, resample_trades
from quantlab.bars.incremental import Bar, IncrementalBars, bars_to_frame
from quantlab.bars.timeframes import MAX_BARS, parse_timeframe

__all__ = [
    "MAX_BARS", "Bar", "IncrementalBars", "aggregate_bars", "align_pair", "bars_to_frame",
    "market_mask", "parse_timeframe", "resample_ticks", "resample_trades",
]
