"""What a pair pipeline is configured with and hands out: the row columns
(:data:`ROW_COLUMNS`, :data:`ANALYTICS_COLUMNS`), the hedge methods offered
(:data:`HEDGES`), :class:`PairSpec`, :class:`PipelineUpdate` and the exchange
clock (:class:`ExchangeClock`). Pure Python.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from quantlab.bars import parse_timeframe
from quantlab.errors import ConfigError
from quantlab.schema import now_ms as _now_ms


#: Hedge-ratio methods offered in the UI: value -> label.
HEDGES = {
    "rolling-ols": "Rolling OLS",
    "ols": "OLS (expanding)",
    "huber": "Robust (Huber)",
    "theil-sen": "Robust (Theil-Sen)",
    "kalman": "Kalman",
}

LEG_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "color")
ANALYTICS_COLUMNS = ("spread", "spread_mean", "spread_std", "zscore", "corr", "beta", "alpha",
                     "half_life", "beta_static", "beta_rolling", "beta_kalman")
ROW_COLUMNS = (("t", "t_mid") + tuple(f"{leg}_{f}" for leg in ("y", "x") for f in LEG_FIELDS)
               + ANALYTICS_COLUMNS + ("t_last",))

#: bars a leg without trades keeps its last close (as :func:`quantlab.bars.align_pair`)
MAX_CARRY_BARS = 5

UP_COLOR = "#26a69a"
DOWN_COLOR = "#ef5350"
NAN = math.nan


@dataclass(frozen=True, kw_only=True)
class PairSpec:
    """One monitored pair and its analytics settings.

    Parameters
    ----------
    symbol_y, symbol_x : Binance symbols; the spread is
        :math:`y_t - \\beta_t x_t - \\alpha_t` (on log prices when the analytics
        say so).
    timeframe : bar length, e.g. ``"1s"``, ``"1m"``, ``"250ms"``.
    window : rolling window, bars (z-score, correlation, rolling beta).
    hedge : one of :data:`HEDGES`.
    z_entry, z_exit : z-score bands drawn on the z plot (z units).
    rules : alert rules, e.g. ``("zscore > 2", "zscore crosses 0")``.
    max_bars : closed bars kept in memory and in the browser (rollover).
    """

    symbol_y: str
    symbol_x: str
    timeframe: str = "1s"
    window: int = 60
    hedge: str = "rolling-ols"
    z_entry: float = 2.0
    z_exit: float = 0.5
    rules: tuple[str, ...] = ()
    max_bars: int = 2000

    def __post_init__(self) -> None:
        for name in ("symbol_y", "symbol_x"):
            value = str(getattr(self, name) or "").strip().upper()
            if not value or not value.isalnum():
                raise ConfigError(name, getattr(self, name),
                                  "a Binance symbol such as 'BTCUSDT' (letters and digits)")
            object.__setattr__(self, name, value)
        if self.symbol_y == self.symbol_x:
            raise ConfigError("symbol_x", self.symbol_x, f"a symbol other than {self.symbol_y}")
        parse_timeframe(self.timeframe)
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) \
                or self.window < 3:
            raise ConfigError("window", self.window, "an integer number of bars >= 3")
        object.__setattr__(self, "window", int(self.window))
        if isinstance(self.hedge, str):  # "rolling_ols" is accepted as "rolling-ols"
            object.__setattr__(self, "hedge", self.hedge.strip().replace("_", "-"))
        if self.hedge not in HEDGES:
            raise ConfigError("hedge", self.hedge, "one of " + ", ".join(HEDGES))
        if not (self.z_entry > 0 and 0 <= self.z_exit < self.z_entry):
            raise ConfigError("z_exit", (self.z_entry, self.z_exit),
                              "0 <= z_exit < z_entry (z units)")
        rules = (self.rules,) if isinstance(self.rules, str) else tuple(self.rules)
        object.__setattr__(self, "rules", tuple(r for r in (str(x).strip() for x in rules) if r))
        if isinstance(self.max_bars, bool) or not isinstance(self.max_bars, (int, np.integer)) \
                or self.max_bars < 10:
            raise ConfigError("max_bars", self.max_bars, "an integer >= 10")

    @property
    def label(self) -> str:
        return f"{self.symbol_y}/{self.symbol_x}"

    @property
    def timeframe_ms(self) -> int:
        return parse_timeframe(self.timeframe)


@dataclass
class PipelineUpdate:
    """What one :meth:`PairPipeline.advance` produced."""

    rows: list[dict] = field(default_factory=list)      # newly closed bars, oldest first
    forming: dict | None = None                          # the bar still forming, if changed
    alerts: list = field(default_factory=list)           # AlertEvent values, oldest first

    def __bool__(self) -> bool:
        return bool(self.rows or self.forming is not None or self.alerts)


class ExchangeClock:
    """Estimate of the exchange's current time from the trades seen.

    ``now(wall_ms) = T + (wall_ms - recv)`` for the trade with the largest
    exchange time ``T`` (received at ``recv``): live trades give the wall clock
    minus the feed latency, a replay of old data gives the replay's own time.
    """

    __slots__ = ("_t", "_recv")

    def __init__(self) -> None:
        self._t: int | None = None
        self._recv = 0

    def observe(self, time_ms: int, recv_ms: int) -> None:
        if self._t is None or time_ms >= self._t:
            self._t = int(time_ms)
            self._recv = int(recv_ms) if recv_ms else _now_ms()

    def now(self, wall_ms: int) -> int | None:
        if self._t is None:
            return None
        return self._t + max(0, int(wall_ms) - self._recv)


def _analytics_dict(result: Any) -> dict:
    """Normalise whatever the analytics return into ``{name: float}``."""
    if result is None:
        return {}
    if isinstance(result, Mapping):
        return dict(result)
    if dataclasses.is_dataclass(result):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if hasattr(result, "_asdict"):
        return dict(result._asdict())
    return {k: v for k, v in vars(result).items() if not k.startswith("_")}


def _f(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return NAN
    return v


