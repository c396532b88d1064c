"""Z-score mean-reversion backtest of a pair spread. Pure: numpy and pandas only.

What it simulates
-----------------
A pair ``y`` (dependent leg) and ``x`` (independent leg) with a causal hedge
ratio :math:`\\beta_t` and a causal z-score :math:`z_t` of the spread
:math:`s_t = y_t - \\beta_t x_t` (both supplied by the caller, e.g. from
:func:`quantlab.analytics.analyze`, or computed per window by a callable in
:func:`sweep`).

*Long the spread* means long :math:`Q` units of ``y`` and short
:math:`\\beta Q` units of ``x``; *short the spread* is the opposite.

Rules. A signal is evaluated on the close of bar :math:`t` from :math:`z_t`
(``entry`` :math:`e`, ``exit`` :math:`x`, ``stop`` :math:`S`):

* flat: enter *short* the spread when :math:`z_t > e`, *long* when
  :math:`z_t < -e` (and :math:`\\beta_t` is finite);
* ``exit``: a short exits when :math:`z_t \\le x`, a long when :math:`z_t \\ge -x`;
* ``stop``: a short stops when :math:`z_t > S`, a long when :math:`z_t < -S`;
* ``max_hold``: after ``max_hold_bars`` :math:`H` bars in the trade;
* ``half_life``: after :math:`\\lceil m \\cdot hl \\rceil` bars, ``half_life_mult``
  :math:`m` times the half-life :math:`hl` in bars at the entry signal.

with ``entry`` :math:`e > 0`, ``exit`` :math:`x` (:math:`|x| < e`; ``x = 0``
exits at the zero crossing, ``x > 0`` exits early, ``x < 0`` waits for an
overshoot) and ``stop`` :math:`S > e`. The convention is symmetric: a long
exits at the mirror image :math:`-x` of the short's exit level. Exits are
evaluated from the close of the entry fill bar on. When several
exit conditions hold on the same bar the reason is the first of ``stop``,
``exit``, ``max_hold``, ``half_life``. After a forced exit (stop, max hold,
half-life) the same side is re-armed only after :math:`z` has been back inside
the entry band (:math:`z \\le e` for shorts, :math:`z \\ge -e` for longs), so a
stopped trade is not re-entered on the next bar. There is no same-bar reversal:
an exit signal and an entry signal are never filled on the same bar; the bar
whose fill closes a trade may itself give the next entry signal. NaN z never
enters, exits or re-arms (time stops still apply).

Causality and fills
-------------------
*What is causal*: the signal on bar :math:`t` uses :math:`z_t` and
:math:`\\beta_t`, which must use bars up to and including :math:`t` only (the
caller's responsibility; :func:`rolling_beta_zscore` is causal). The order is
filled on bar :math:`t+1`, at its open (``fill="next_open"``) or its close
(``fill="next_close"``). A signal on the last bar is never filled. Quantities
are decided at the signal: the hedge ratio is :math:`\\beta_t`, and notional
sizing divides by the close of bar :math:`t`, so the gross notional at the fill
is only approximately the target. Time stops count bars from the entry fill: a
``max_hold_bars=H`` exit is signalled on bar :math:`e+H-1` and filled on
:math:`e+H`, so ``bars_held == H`` exactly.

Re-hedging (``rehedge_every=K > 0``): while in a trade, the ``x`` leg is reset
to :math:`-\\beta Q` on fill bars :math:`e+K, e+2K, \\dots` using the latest
finite :math:`\\beta` known at the previous bar. Re-hedge trades pay fees and
slippage like any other fill. ``K = 0`` keeps the entry ratio.

Costs
-----
Slippage moves every fill against the trader:
:math:`p^{fill} = p^{ref} (1 + \\mathrm{sign}(\\Delta q)\\,
\\text{slippage\\_bps}/10^4)`, with :math:`\\Delta q` the signed quantity
bought (> 0) or sold (< 0) and :math:`p^{ref}` the open or close of the fill bar. The fee is charged per leg per side on traded
notional: :math:`\\text{fee} = \\text{fee\\_bps}/10^4 \\sum |\\Delta q|\\, p^{fill}`
(re-hedges included). "Gross" PnL is after slippage and before fees.

Because fees are linear in ``fee_bps`` and nothing else depends on it, the
break-even fee has a closed form:

.. math::

    \\text{break\\_even\\_fee\\_bps} = 10^4 \\, \\frac{G}{N}

with :math:`G` the total gross PnL (including the mark-to-market of an open
position) and :math:`N` the total traded notional. Re-running with that fee
gives a total PnL of zero. It is negative when the strategy loses before fees
(a rebate would be needed), ``None`` when nothing traded.

Accounting and statistics
-------------------------
Equity :math:`E_t` is the cumulative PnL in quote currency, net of fees, marked
to market at each bar's close; it starts at 0. An open position at the end is
marked at the last close without exit costs and reported with reason ``end``.

* Capital base :math:`C`: the ``capital`` setting, or else the largest gross
  notional :math:`|q_y| p_y + |q_x| p_x` at an entry fill (the most capital the
  strategy ever put to work, margin ignored). Returns are :math:`E/C`; positions
  are fixed-size, so profits are not reinvested and returns are not compounded.
* Annualisation: crypto trades every day, so
  :math:`B = 365 \\cdot 86400 / \\text{bar\\_seconds}` bars per year.
  ``annual_return`` :math:`= (E_{n-1}/C) \\cdot B / n`.
* Sharpe and Sortino use the per-bar equity changes
  :math:`\\Delta_t = E_t - E_{t-1}` (:math:`t = 1..n-1`, flat bars included, zero
  risk-free rate): :math:`\\mathrm{Sharpe} = \\sqrt{B}\\,\\bar\\Delta / s_\\Delta`
  (sample std, ddof 1), :math:`\\mathrm{Sortino} = \\sqrt{B}\\,\\bar\\Delta /
  \\sqrt{\\overline{\\min(\\Delta, 0)^2}}`. Both are ``None`` when undefined.
* Max drawdown: :math:`\\max_t (P_t - E_t)` with running peak
  :math:`P_t = \\max(0, \\max_{s \\le t} E_s)`, in quote currency; its duration is
  the longest run of bars spent below a previous peak (in bars and seconds).

Layout
------
``settings`` (constants and :class:`BacktestSettings`), ``engine`` (input
columns, the sequential trade finder, the vectorised accounting), ``stats``
(:class:`BacktestStats`, :class:`BacktestResult` and their frames), ``run``
(:func:`backtest`, :func:`sweep`). Every name is importable from
``quantlab.backtest``.

Examples
--------
>>> import numpy as np
>>> z = np.array([0.0, 2.5, 1.0, -0.5, 0.0, 0.0])
>>> y = np.array([100.0, 101, 102, 100, 99, 99])
>>> x = np.full(6, 50.0)
>>> res = backtest({"y_open": y, "y_close": y, "x_open": x, "x_close": x,
...                 "beta": np.full(6, 2.0), "zscore": z},
...                entry=2.0, exit=0.0, bar_seconds=60)
>>> res.trades[["side", "entry_y", "exit_y", "bars_held", "exit_reason", "net_pnl"]]
    side  entry_y  exit_y  bars_held exit_reason  net_pnl
0  short    102.0    99.0          2        exit      3.0
"""
from __future__ import annotations

# One implementation per rule (issue 14): the default rolling beta/z of sweep() is
# quantlab.analytics' (rolling_ols + rolling_zscore), re-exported here under its old name.
from quantlab.analytics.hedge import rolling_beta_zscore
from quantlab.backtest.run import (_sweep_cells, backtest,  # noqa: F401 (_sweep_cells: overfit, scan)
                                   default_zscore_for_window, sweep)
from quantlab.backtest.settings import (EQUITY_COLUMNS, EXIT_REASONS, FILLS,  # noqa: F401
                                        PRICE_COLUMNS,
                                        SECONDS_PER_YEAR, SIGNAL_COLUMNS, SIZINGS, SUMMARY_KEYS,
                                        TRADE_COLUMNS, BacktestSettings)
from quantlab.backtest.stats import BacktestResult, BacktestStats

__all__ = [
    "BacktestSettings", "BacktestStats", "BacktestResult", "backtest", "sweep",
    "rolling_beta_zscore", "default_zscore_for_window", "EXIT_REASONS", "TRADE_COLUMNS",
    "EQUITY_COLUMNS", "SUMMARY_KEYS",
]
