"""Statistics and results of a backtest: :class:`BacktestStats` (the summary
figures, formulas in :mod:`quantlab.backtest`), :class:`BacktestResult` and the
trade and equity frames built from a simulation. Pure.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from quantlab.backtest.engine import _Prices, _Sim
from quantlab.backtest.settings import (EXIT_REASONS, _R_END, SECONDS_PER_YEAR, SUMMARY_KEYS,
                                        TRADE_COLUMNS, BacktestSettings)


# --- statistics -----------------------------------------------------------------------------
def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BacktestStats:
    """Summary statistics of one backtest. Money in quote currency; ``None``
    where a statistic is undefined (no trades, zero variance, no capital).

    Definitions are in the module docstring (capital base, annualisation with
    365 days, Sharpe/Sortino from per-bar equity changes, drawdown).

    Attributes
    ----------
    total_pnl : final equity, net of fees (open position marked to market).
    gross_pnl : ``total_pnl + fees`` (after slippage).
    fees : fees paid, all fills including re-hedges.
    traded_notional : sum of :math:`|\\Delta q| p^{fill}` over all fills.
    break_even_fee_bps : :math:`10^4\\,G/N`, fee per leg per side that zeroes total PnL.
    capital : capital base :math:`C`.
    total_return : :math:`E_{n-1}/C`; annual_return: :math:`E_{n-1}/C \\cdot B/n`.
    sharpe, sortino : annualised, from per-bar equity changes.
    max_drawdown : largest fall from a running peak (quote); max_drawdown_return
        the same over :math:`C`; max_drawdown_bars / max_drawdown_s the longest
        time under water.
    n_trades : trades entered, the open one included; n_closed, n_open (0 or 1).
    hit_rate : share of closed trades with net PnL > 0.
    avg_bars_held, avg_holding_s : mean holding time of closed trades.
    turnover : traded_notional / capital (times the capital was traded).
    n_rehedges : re-hedge fills.
    time_in_market : share of bars with a position after the bar's fill.
    n_bars, bar_seconds, bars_per_year : sample size and annualisation basis :math:`B`.
    """

    total_pnl: float
    gross_pnl: float
    fees: float
    traded_notional: float
    break_even_fee_bps: float | None
    capital: float | None
    total_return: float | None
    annual_return: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_return: float | None
    max_drawdown_bars: int
    max_drawdown_s: float | None
    n_trades: int
    n_closed: int
    n_open: int
    hit_rate: float | None
    avg_bars_held: float | None
    avg_holding_s: float | None
    turnover: float | None
    n_rehedges: int
    time_in_market: float
    n_bars: int
    bar_seconds: float | None
    bars_per_year: float | None

    def summary(self) -> dict[str, float | int | None]:
        """Plain ``dict`` (floats, ints, None; never NaN), keys :data:`SUMMARY_KEYS`."""
        out: dict[str, float | int | None] = {}
        for k in SUMMARY_KEYS:
            v = getattr(self, k)
            out[k] = v if v is None or isinstance(v, int) else _f(v)
        return out

    def _repr_html_(self) -> str:
        return _html_table(self.summary())


def _html_table(values: Mapping[str, Any]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "&mdash;"
        return f"{v:,.6g}" if isinstance(v, float) else html.escape(str(v))
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{cell(v)}</td></tr>"
                   for k, v in values.items())
    return f"<table>{rows}</table>"


def _longest_run(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    return int((np.flatnonzero(d == -1) - np.flatnonzero(d == 1)).max())


def _stats(sim: _Sim, bar_seconds: float | None, s: BacktestSettings) -> BacktestStats:
    n = sim.equity.size
    eq = sim.equity
    total = float(eq[-1])
    fees = float(sim.f_fee.sum())
    gross = total + fees
    traded = float(sim.f_notional.sum())
    capital = s.capital if s.capital is not None else (
        float(sim.entry_notional.max()) if sim.entry_notional.size else None)
    bpy = SECONDS_PER_YEAR / bar_seconds if bar_seconds else None

    d = np.diff(eq)
    sharpe = sortino = None
    if bpy is not None and d.size >= 2:
        mu = d.mean()
        sd = d.std(ddof=1)
        if sd > 0:
            sharpe = _f(mu / sd * math.sqrt(bpy))
        down = math.sqrt(float(np.mean(np.minimum(d, 0.0) ** 2)))
        if down > 0:
            sortino = _f(mu / down * math.sqrt(bpy))

    peak = np.maximum.accumulate(np.maximum(eq, 0.0))
    dd = peak - eq
    mdd = float(dd.max())
    mdd_bars = _longest_run(dd > 0)

    closed = sim.reason != _R_END
    n_trades = int(sim.e.size)
    n_closed = int(closed.sum())
    net = sim.gross - sim.fees
    held = (sim.x - sim.e)[closed]
    hit = _f(np.mean(net[closed] > 0)) if n_closed else None
    avg_held = _f(held.mean()) if n_closed else None
    return BacktestStats(
        total_pnl=total, gross_pnl=gross, fees=fees, traded_notional=traded,
        break_even_fee_bps=_f(gross / traded * 1e4) if traded > 0 else None,
        capital=capital,
        total_return=_f(total / capital) if capital else None,
        annual_return=_f(total / capital * bpy / n) if capital and bpy else None,
        sharpe=sharpe, sortino=sortino, max_drawdown=mdd,
        max_drawdown_return=_f(mdd / capital) if capital else None,
        max_drawdown_bars=mdd_bars,
        max_drawdown_s=mdd_bars * bar_seconds if bar_seconds else None,
        n_trades=n_trades, n_closed=n_closed, n_open=n_trades - n_closed, hit_rate=hit,
        avg_bars_held=avg_held,
        avg_holding_s=avg_held * bar_seconds if avg_held is not None and bar_seconds else None,
        turnover=_f(traded / capital) if capital else None,
        n_rehedges=int(sim.n_fills.sum()) - n_trades - n_closed,
        time_in_market=float(np.count_nonzero(sim.qy)) / n, n_bars=n,
        bar_seconds=bar_seconds, bars_per_year=bpy,
    )


# --- result ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class BacktestResult:
    """Outcome of :func:`backtest`.

    Attributes
    ----------
    settings : BacktestSettings
    trades : DataFrame
        One row per trade, columns :data:`TRADE_COLUMNS`:

        ============== ====================================================================
        entry_time     bar of the entry fill (index value of the input)
        exit_time      bar of the exit fill; last bar for an open trade
        side           ``"long"`` (long y, short beta x) or ``"short"`` the spread
        entry_z        z on the entry signal bar
        exit_z         z on the exit signal bar (last bar for ``end``)
        beta           hedge ratio at entry (signal bar)
        entry_y/_x     fill prices at entry, slippage included, quote per unit
        exit_y/_x      fill prices at exit; last closes for an open trade
        qty_y          signed units of y (+ long)
        qty_x          signed units of x at entry (:math:`-\\beta\\,q_y`)
        qty_x_exit     signed units of x just before the exit (differs when re-hedged)
        n_rehedges     re-hedge fills inside the trade
        traded_notional  quote notional of all the trade's fills
        gross_pnl      PnL after slippage, before fees (open trades: marked to market)
        fees           fees of the trade's fills
        net_pnl        gross_pnl - fees
        bars_held      exit fill bar - entry fill bar
        exit_reason    one of :data:`EXIT_REASONS`
        ============== ====================================================================
    equity : DataFrame
        One row per input bar (same index), columns :data:`EQUITY_COLUMNS`:
        ``zscore``; ``side`` (-1, 0, +1 after the bar's fill); ``qty_y``,
        ``qty_x`` (signed units held after the fill); ``exposure``
        (:math:`|q_y| c_y + |q_x| c_x` at the close); ``traded_notional``,
        ``fees``, ``pnl`` (this bar, net); ``equity`` (cumulative net PnL);
        ``drawdown`` (equity minus running peak, <= 0).
    stats : BacktestStats
    """

    settings: BacktestSettings
    trades: pd.DataFrame
    equity: pd.DataFrame
    stats: BacktestStats

    def summary(self) -> dict[str, float | int | None]:
        """JSON-ready statistics: plain floats and ints, None for undefined.

        Keys :data:`SUMMARY_KEYS`, among them ``total_pnl``, ``sharpe``,
        ``max_drawdown``, ``n_trades``, ``fees``, ``break_even_fee_bps``.
        """
        return self.stats.summary()

    def _repr_html_(self) -> str:
        s = self.settings
        head = (f"<b>Backtest</b> entry={s.entry} exit={s.exit} stop={s.stop} fill={s.fill} "
                f"fee={s.fee_bps} bps/leg/side slippage={s.slippage_bps} bps")
        trades = self.trades.tail(10).to_html(max_rows=10, float_format=lambda v: f"{v:,.6g}")
        return f"<div>{head}{_html_table(self.summary())}<p>last trades</p>{trades}</div>"

    def __repr__(self) -> str:
        st = self.stats
        return (f"BacktestResult(n_trades={st.n_trades}, total_pnl={st.total_pnl:.6g}, "
                f"sharpe={st.sharpe}, max_drawdown={st.max_drawdown:.6g})")


def _trades_frame(sim: _Sim, p: _Prices, z: np.ndarray) -> pd.DataFrame:
    n = z.size
    open_ = sim.reason == _R_END
    at_entry = np.searchsorted(sim.f_idx, sim.e)
    at_exit = np.minimum(np.searchsorted(sim.f_idx, sim.x), max(sim.f_idx.size - 1, 0))
    closed = ~open_
    return pd.DataFrame({
        "entry_time": p.index[sim.e],
        "exit_time": p.index[sim.x],
        "side": np.where(sim.side > 0, "long", "short"),
        "entry_z": z[sim.sig_in],
        "exit_z": z[sim.sig_out],
        "beta": sim.beta_entry,
        "entry_y": sim.f_py[at_entry],
        "entry_x": sim.f_px[at_entry],
        "exit_y": np.where(closed, sim.f_py[at_exit] if sim.f_idx.size else 0.0,
                           p.y_close[n - 1]),
        "exit_x": np.where(closed, sim.f_px[at_exit] if sim.f_idx.size else 0.0,
                           p.x_close[n - 1]),
        "qty_y": sim.qy[sim.e],
        "qty_x": sim.qx[sim.e],
        "qty_x_exit": sim.qx[np.where(open_, n - 1, sim.x - 1)],
        "n_rehedges": sim.n_fills - 1 - closed,
        "traded_notional": sim.notional,
        "gross_pnl": sim.gross,
        "fees": sim.fees,
        "net_pnl": sim.gross - sim.fees,
        "bars_held": (sim.x - sim.e).astype(np.int64),
        "exit_reason": pd.Categorical.from_codes(sim.reason, categories=list(EXIT_REASONS)),
    }, columns=list(TRADE_COLUMNS))


def _equity_frame(sim: _Sim, p: _Prices, z: np.ndarray) -> pd.DataFrame:
    n = z.size
    notional = np.zeros(n)
    notional[sim.f_idx] = sim.f_notional
    fees = np.zeros(n)
    fees[sim.f_idx] = sim.f_fee
    peak = np.maximum.accumulate(np.maximum(sim.equity, 0.0))
    return pd.DataFrame({
        "zscore": z,
        "side": np.sign(sim.qy).astype(np.int8),
        "qty_y": sim.qy,
        "qty_x": sim.qx,
        "exposure": np.abs(sim.qy) * p.y_close + np.abs(sim.qx) * p.x_close,
        "traded_notional": notional,
        "fees": fees,
        "pnl": sim.pnl,
        "equity": sim.equity,
        "drawdown": sim.equity - peak,
    }, index=p.index)


