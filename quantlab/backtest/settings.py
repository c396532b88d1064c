"""Settings of the backtest: the column and choice constants and
:class:`BacktestSettings` (validated, frozen), with ``_resolve`` merging keyword
overrides into them. Pure.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from quantlab.config import require_choice, settings_from_dict
from quantlab.errors import ConfigError


FILLS = ("next_open", "next_close")
SIZINGS = ("units", "y_notional", "gross_notional")
EXIT_REASONS = ("exit", "stop", "max_hold", "half_life", "end")
PRICE_COLUMNS = ("y_open", "y_close", "x_open", "x_close")
SIGNAL_COLUMNS = ("beta", "zscore")
SECONDS_PER_YEAR = 365 * 24 * 3600

TRADE_COLUMNS = (
    "entry_time", "exit_time", "side", "entry_z", "exit_z", "beta",
    "entry_y", "entry_x", "exit_y", "exit_x", "qty_y", "qty_x", "qty_x_exit",
    "n_rehedges", "traded_notional", "gross_pnl", "fees", "net_pnl", "bars_held",
    "exit_reason",
)
EQUITY_COLUMNS = (
    "zscore", "side", "qty_y", "qty_x", "exposure", "traded_notional", "fees", "pnl",
    "equity", "drawdown",
)
SUMMARY_KEYS = (
    "total_pnl", "gross_pnl", "fees", "traded_notional", "break_even_fee_bps", "capital",
    "total_return", "annual_return", "sharpe", "sortino", "max_drawdown",
    "max_drawdown_return", "max_drawdown_bars", "max_drawdown_s", "n_trades", "n_closed",
    "n_open", "hit_rate", "avg_bars_held", "avg_holding_s", "turnover", "n_rehedges",
    "time_in_market", "n_bars", "bar_seconds", "bars_per_year",
)

_R_EXIT, _R_STOP, _R_MAX, _R_HL, _R_END = range(5)


# --- settings -------------------------------------------------------------------------------
def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: object) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class BacktestSettings:
    """Rules, sizing and costs of :func:`backtest`. Frozen, keyword-only.

    Parameters
    ----------
    entry : float
        Entry level in z units (> 0): short the spread when :math:`z > e`,
        long when :math:`z < -e`. Default 2.
    exit : float
        Exit level in z units, :math:`|x| < e`: a short exits when
        :math:`z \\le x`, a long when :math:`z \\ge -x`. Default 0.
    stop : float or None
        Stop level in z units (> entry): a short stops when :math:`z > S`,
        a long when :math:`z < -S`. None (default) disables it.
    max_hold_bars : int or None
        Exit after this many bars in the trade (>= 1). None disables it.
    half_life_mult : float or None
        Time stop after ``ceil(half_life_mult * half_life)`` bars (> 0), the
        half-life (bars) taken from ``half_life_bars`` or, when that is None,
        from the data's ``half_life`` column at the entry signal bar. None
        disables it.
    half_life_bars : float or None
        Half-life of the spread in bars (> 0), for ``half_life_mult``.
    fill : {"next_open", "next_close"}
        Price at which a signal on bar t is filled on bar t+1.
    sizing : {"units", "y_notional", "gross_notional"}
        How ``size`` is read: units of y; quote notional of the y leg; or quote
        notional of both legs :math:`Q(p_y + |\\beta| p_x)`. Notional sizing
        uses the signal bar's closes.
    size : float
        Position size (> 0) in the unit given by ``sizing``. Default 1.
    rehedge_every : int
        Re-hedge the x leg to :math:`-\\beta Q` every K bars while in a trade;
        0 (default) keeps the ratio fixed at entry.
    fee_bps : float
        Fee per leg per side, basis points of traded notional. Negative means
        a rebate. Default 0.
    slippage_bps : float
        Adverse price move applied to every fill, basis points (>= 0).
    capital : float or None
        Capital base for returns and turnover, quote currency (> 0). None:
        largest gross notional at an entry fill.
    bar_seconds : float or None
        Bar length in seconds (> 0), for annualisation. None: the median step
        of the data's DatetimeIndex.

    Examples
    --------
    >>> BacktestSettings(entry=2.0, exit=2.5)
    Traceback (most recent call last):
    ...
    quantlab.errors.ConfigError: exit: expected a level with |exit| < entry=2.0 (e.g. 0 to exit at the mean), got 2.5
    """

    entry: float = 2.0
    exit: float = 0.0
    stop: float | None = None
    max_hold_bars: int | None = None
    half_life_mult: float | None = None
    half_life_bars: float | None = None
    fill: str = "next_open"
    sizing: str = "units"
    size: float = 1.0
    rehedge_every: int = 0
    fee_bps: float = 0.0
    slippage_bps: float = 0.0
    capital: float | None = None
    bar_seconds: float | None = None

    def __post_init__(self) -> None:
        if not _is_num(self.entry) or self.entry <= 0:
            raise ConfigError("entry", self.entry, "a finite z level > 0, e.g. 2.0")
        if not _is_num(self.exit) or abs(self.exit) >= self.entry:
            raise ConfigError("exit", self.exit,
                              f"a level with |exit| < entry={self.entry} (e.g. 0 to exit at the mean)")
        if self.stop is not None and (not _is_num(self.stop) or self.stop <= self.entry):
            raise ConfigError("stop", self.stop, f"None or a z level > entry={self.entry}")
        if self.max_hold_bars is not None and (not _is_int(self.max_hold_bars)
                                               or self.max_hold_bars < 1):
            raise ConfigError("max_hold_bars", self.max_hold_bars, "None or an integer >= 1")
        for name in ("half_life_mult", "half_life_bars", "capital", "bar_seconds"):
            v = getattr(self, name)
            if v is not None and (not _is_num(v) or v <= 0):
                raise ConfigError(name, v, "None or a finite number > 0")
        require_choice("fill", self.fill, FILLS)
        require_choice("sizing", self.sizing, SIZINGS)
        if not _is_num(self.size) or self.size <= 0:
            raise ConfigError("size", self.size, "a finite number > 0")
        if not _is_int(self.rehedge_every) or self.rehedge_every < 0:
            raise ConfigError("rehedge_every", self.rehedge_every,
                              "an integer >= 0 (0 keeps the entry hedge, K re-hedges every K bars)")
        if not _is_num(self.fee_bps) or self.fee_bps <= -1e4:
            raise ConfigError("fee_bps", self.fee_bps, "a finite number of basis points > -10000")
        if not _is_num(self.slippage_bps) or not 0 <= self.slippage_bps < 1e4:
            raise ConfigError("slippage_bps", self.slippage_bps,
                              "a finite number of basis points in [0, 10000)")

    def replace(self, **changes: Any) -> "BacktestSettings":
        """A copy with ``changes`` applied (validated; unknown names rejected)."""
        return settings_from_dict(BacktestSettings, {**dataclasses.asdict(self), **changes})


def _resolve(settings: BacktestSettings | None, overrides: Mapping[str, Any]) -> BacktestSettings:
    if settings is None:
        return settings_from_dict(BacktestSettings, overrides)
    if not isinstance(settings, BacktestSettings):
        raise ConfigError("settings", type(settings).__name__, "a BacktestSettings or None")
    return settings.replace(**overrides) if overrides else settings


