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
"""
from __future__ import annotations

import collections
import dataclasses
import gc
import itertools
import operator
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.bars import Bar, IncrementalBars, align_pair, parse_timeframe
from quantlab.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["HEDGES", "PairSpec", "PairPipeline", "PipelineUpdate", "ExchangeClock",
           "ROW_COLUMNS", "ANALYTICS_COLUMNS"]

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
            self._recv = int(recv_ms) if recv_ms else int(time.time() * 1000)

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


class PairPipeline:
    """Bars and analytics of one pair, fed by trades or by bars.

    Parameters
    ----------
    spec : :class:`PairSpec`.
    analytics_factory : ``callable(spec, hedge) -> state`` with
        ``update(t_ms, y, x)`` (commit a closed bar, returns the values) and
        ``peek(y, x)`` (values for a forming bar, nothing committed). Default:
        :func:`quantlab.ui.analytics.make_state` (the package's
        ``LivePairState``). Tests pass fakes.
    alert_factory : ``callable(rules, pair) -> engine`` with
        ``evaluate(time_ms, values) -> events``; default :class:`quantlab.alerts.AlertEngine`.
    grace_ms : a bar is closed once the exchange clock is this far past its
        end (trades in flight); default ``min(1000, max(200, timeframe/4))``.
    forming_every_ms : the forming bar is reported at most this often (wall
        clock, ms), and at once when a bar closes. Each report repaints plots
        in the browser (~30 ms of its main thread in JupyterLab); 100 ms (with
        the pump's 10 ticks a second) keeps tick-to-screen p95 under 250 ms.
    """

    def __init__(self, spec: PairSpec, *,
                 analytics_factory: Callable[[PairSpec, str], Any] | None = None,
                 alert_factory: Callable[[Sequence[str], str], Any] | None = None,
                 grace_ms: int | None = None, forming_every_ms: int = 100):
        self.spec = spec
        self.tf_ms = spec.timeframe_ms
        self.grace_ms = (min(1000, max(200, self.tf_ms // 4)) if grace_ms is None else int(grace_ms))
        if analytics_factory is None:
            from quantlab.ui.analytics import make_state as analytics_factory  # noqa: N813
        if alert_factory is None:
            from quantlab.alerts import AlertEngine

            def alert_factory(rules: Sequence[str], pair: str) -> Any:
                return AlertEngine(rules, pair, sinks=())
        self._analytics_factory = analytics_factory
        self._alert_factory = alert_factory
        self.clock = ExchangeClock()
        self._legs = {spec.symbol_y: "y", spec.symbol_x: "x"}
        self._bars = {"y": IncrementalBars(self.tf_ms), "x": IncrementalBars(self.tf_ms)}
        self._pending: dict[str, dict[int, Bar]] = {"y": {}, "x": {}}
        # Kept rows: the plotted ``max_bars`` plus the warm-up bars before them, so
        # that recomputing the kept bars (batch path) gives every plotted bar a value.
        self.rows: collections.deque[dict] = collections.deque(maxlen=self._keep(spec))
        # consecutive bars without trades per leg (align_pair's carry limit)
        self._empty_run = {"y": 0, "x": 0}
        self.last_t: int | None = None          # open time of the last committed row
        self.trades = {"y": 0, "x": 0}
        self.last_trade_ms = {"y": 0, "x": 0}
        self.last_price = {"y": NAN, "x": NAN}
        self.bars_committed = 0
        self.alerts_fired = 0
        #: metrics computed on a slow cadence by the view (``adf_pvalue``,
        #: ``coint_pvalue``, ``beta_drift``), offered to the alert rules
        self.slow_metrics: dict[str, float] = {}
        #: open times (ms) of bars that received trades after they were closed
        #: (backfilled after a reconnect, or in flight past the grace), to be
        #: resynchronised with the store by the view (:meth:`resync`)
        self._late: set[int] = set()
        self.bars_corrected = 0      # kept rows whose OHLCV was replaced from the store
        self.bars_inserted = 0       # rows the store had and the live feed had not
        self.resyncs = 0             # resynchronisations with the store that changed rows
        self.alerts_corrected = 0    # alerts fired or withdrawn by a resynchronisation
        self.analytics_stale = 0     # kept for summary() compatibility: always 0 now
        self._forming_dirty = False
        self._newest_recv: int | None = None  # newest receive time (ms) drained since advance
        self.delivery_ms = 0.0              # estimate of the socket-to-pipeline delay, ms
        self.forming_every_ms = int(forming_every_ms)
        self._forming_at = -10**18  # wall ms of the last forming report
        self._kalman_params: dict[int, Any] = {}   # warm-up bars -> KalmanParams
        self._new_states()
        self.alert_sinks: tuple = ()
        self.alerts = self._new_alerts()

    # -- state ---------------------------------------------------------------------
    def _new_states(self) -> None:
        spec = self.spec
        self.state = self._analytics_factory(spec, spec.hedge)
        # Comparison hedge ratios for the hedge plot (static / rolling / Kalman),
        # reusing the main state when it already is that method.
        self._compare = {}
        for col, method in (("beta_static", "ols"), ("beta_rolling", "rolling-ols"),
                            ("beta_kalman", "kalman")):
            self._compare[col] = None if method == spec.hedge else self._analytics_factory(spec, method)

    def _new_alerts(self) -> Any:
        engine = self._alert_factory(self.spec.rules, self.spec.label)
        if self.alert_sinks and hasattr(engine, "sinks"):
            engine.sinks = tuple(self.alert_sinks)
        return engine

    def set_rules(self, rules: Sequence[str]) -> None:
        """New alert rules (fresh rule state; the sinks are kept)."""
        self.spec = dataclasses.replace(self.spec, rules=tuple(rules))
        self.alerts = self._new_alerts()

    def set_alert_sinks(self, sinks: Sequence[Callable[[Any], Any]]) -> None:
        """Callables receiving every alert event (e.g. the store's
        ``alert_sink()``), now and after rule changes."""
        self.alert_sinks = tuple(sinks)
        if hasattr(self.alerts, "sinks"):
            self.alerts.sinks = self.alert_sinks

    @property
    def symbols(self) -> tuple[str, str]:
        return self.spec.symbol_y, self.spec.symbol_x

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def n_bars(self) -> int:
        """Closed pair bars committed to the analytics (since start or reconfigure)."""
        return self.bars_committed

    # -- input ---------------------------------------------------------------------
    def add_trades(self, trades: Iterable[Any]) -> int:
        """Feed trades (:class:`quantlab.binance.Trade`); other symbols are
        ignored. Returns how many were used. Bars close in :meth:`advance`."""
        used = 0
        legs = self._legs
        newest_recv = self._newest_recv
        for tr in trades:
            leg = legs.get(tr.symbol)
            if leg is None:
                continue
            if not tr.is_market_print:
                continue
            builder = self._bars[leg]
            n_late = builder.late_trades
            closed = builder.add(tr.time_ms, tr.price, tr.qty, tr.is_buyer_maker, tr.trade_id)
            if builder.late_trades != n_late:  # its bar was already closed: fix it later
                self._late.add(tr.time_ms // self.tf_ms * self.tf_ms)
            for b in closed:
                self._pending[leg][b.open_ms] = b
            self.clock.observe(tr.time_ms, tr.recv_ms)
            if tr.recv_ms and (newest_recv is None or tr.recv_ms > newest_recv):
                newest_recv = tr.recv_ms
            self.trades[leg] += 1
            self.last_trade_ms[leg] = max(self.last_trade_ms[leg], tr.time_ms)
            self.last_price[leg] = tr.price
            used += 1
        self._newest_recv = newest_recv
        if used:
            self._forming_dirty = True
        if len(self._late) > 2 * self.spec.max_bars:
            self.late_bars()  # bound memory: drop what rolled out
            if len(self._late) > 2 * self.spec.max_bars:
                self._late = set(sorted(self._late)[-2 * self.spec.max_bars:])
        return used

    def add_bars(self, bars_y: pd.DataFrame, bars_x: pd.DataFrame) -> list[dict]:
        """Commit historical or uploaded bars (frames of :mod:`quantlab.schema`).

        The pair is aligned as :func:`quantlab.bars.align_pair` does (a leg
        without trades carries its close for ``MAX_CARRY_BARS`` bars; rows
        where a leg is a gap are dropped). Rows at or before the last
        committed bar are skipped; bars flagged ``is_forming`` are not
        committed. The analytics of every kept row come from the batch path
        and the live states are seeded from it (:mod:`quantlab.ui.batch`).
        Returns the committed rows (the caller streams or resets its plots).
        """
        aligned = _aligned(bars_y, bars_x, self.tf_ms)
        if aligned is None:
            return []
        # Trailing bars where neither leg traded are not known yet (the feed may
        # backfill them): history ends with the last traded bar.
        traded = np.flatnonzero((aligned["y_trades"] > 0) | (aligned["x_trades"] > 0))
        if traded.size == 0:
            return []
        aligned = {k: v[:int(traded[-1]) + 1] for k, v in aligned.items()}
        t_new = aligned["t"]
        keep = t_new > self.last_t if self.last_t is not None else np.ones(t_new.size, bool)
        if not keep.any():
            return []
        new = {k: v[keep] for k, v in aligned.items()}
        old = _columns_of_rows(list(self.rows))
        merged = {k: np.concatenate([old[k], new[k]]) for k in new}
        n_new = int(keep.sum())
        self._rebuild(merged)
        self.bars_committed += n_new
        for leg in ("y", "x"):
            self.last_price[leg] = float(merged[f"{leg}_close"][-1])
        # Live bars must not re-open history: treat it as emitted.
        for leg in ("y", "x"):
            self._pending[leg] = {k: b for k, b in self._pending[leg].items()
                                  if self.last_t is None or k > self.last_t}
        return list(self.rows)[-n_new:]

    def skip_until(self, t_ms: int) -> None:
        """Never commit bars opening before ``t_ms`` (e.g. the bar forming when
        the feed started, whose earlier trades the feed never delivered)."""
        t_ms = int(t_ms) - 1  # rows opening at or before last_t are skipped
        if self.last_t is None or t_ms > self.last_t:
            self.last_t = t_ms

    # -- per tick ------------------------------------------------------------------
    def advance(self, now_ms: int | None = None, *, wall_ms: int | None = None) -> PipelineUpdate:
        """Close due bars, commit the pair rows both legs have, report the
        forming bar when it changed.

        Parameters
        ----------
        now_ms : exchange time, ms; default: :class:`ExchangeClock` estimate
            from ``wall_ms`` (default: the wall clock).
        """
        wall = int(time.time() * 1000) if wall_ms is None else int(wall_ms)
        if self._newest_recv is not None:
            # How long trades take from the socket to here (writer batch, the
            # subscription ring, the pump's period; more on a loaded machine):
            # the age of the freshest trade drained, as a slowly decaying maximum.
            # Trades received since are still on their way.
            self.delivery_ms = min(2000.0, max(float(wall - self._newest_recv),
                                               0.95 * self.delivery_ms))
            self._newest_recv = None
        if now_ms is None:
            now_ms = self.clock.now(wall)
            if now_ms is not None:
                # Trades received up to delivery_ms ago may still be on their way:
                # close bars on the exchange time they cover, or their last trades
                # arrive late (and the bar is corrected from the store after).
                now_ms -= int(self.delivery_ms)
        if now_ms is not None:
            for leg in ("y", "x"):
                for b in self._bars[leg].flush(now_ms - self.grace_ms):
                    self._pending[leg][b.open_ms] = b
        upd = PipelineUpdate()
        py, px = self._pending["y"], self._pending["x"]
        if py and px:
            common = sorted(set(py).intersection(px))
            for t in common:
                by, bx = py.pop(t), px.pop(t)
                if self.last_t is not None and t <= self.last_t:
                    continue
                # align_pair's rule (what the store's bars give): a leg without
                # trades carries its close for MAX_CARRY_BARS bars, then it is a
                # hole (no row: the plot breaks the line there).
                run = self._empty_run
                run["y"] = run["y"] + 1 if by.trade_count == 0 else 0
                run["x"] = run["x"] + 1 if bx.trade_count == 0 else 0
                if run["y"] > MAX_CARRY_BARS or run["x"] > MAX_CARRY_BARS:
                    continue
                row, events = self._commit(t, _bar_tuple(by), _bar_tuple(bx))
                upd.rows.append(row)
                upd.alerts.extend(events)
            if common:
                newest = common[-1]
                # Bars of one leg older than the newest pair bar can never pair
                # up (the other leg started later): drop them.
                for pend in (py, px):
                    for k in [k for k in pend if k < newest]:
                        del pend[k]
        # Bound the waiting bars when one leg never trades.
        for pend in (py, px):
            while len(pend) > self.spec.max_bars:
                del pend[min(pend)]
        if self._forming_dirty and (upd.rows or wall - self._forming_at >= self.forming_every_ms):
            upd.forming = self.forming_row()
            self._forming_dirty = False
            self._forming_at = wall
        return upd

    def forming_row(self) -> dict | None:
        """Row of the bar still forming (analytics from ``peek``), or None
        before both legs have a price."""
        fy, fx = self._bars["y"].forming, self._bars["x"].forming
        if fy is None and fx is None:
            return None
        legs = {}
        t = max(b.open_ms for b in (fy, fx) if b is not None)
        for leg, b in (("y", fy), ("x", fx)):
            if b is not None and b.open_ms == t:
                legs[leg] = _bar_tuple(b)
            else:  # this leg has not traded in the forming bar yet: flat at its last price
                p = self.last_price[leg]
                if math.isnan(p):
                    return None
                legs[leg] = (p, p, p, p, 0.0, 0.0, 0)
        values = self._peek(legs["y"][3], legs["x"][3])
        return self._row(t, legs["y"], legs["x"], values)

    # -- analytics -----------------------------------------------------------------
    def _commit(self, t: int, y: tuple, x: tuple, evaluate_alerts: bool = True,
                count: bool = True) -> tuple[dict, list]:
        values = _analytics_dict(self.state.update(t, y[3], x[3]))
        for col, st in self._compare.items():
            values[col] = _beta_of(values if st is None else
                                   _analytics_dict(st.update(t, y[3], x[3])))
        row = self._row(t, y, x, values)
        self.rows.append(row)
        self.last_t = t
        if count:
            self.bars_committed += 1
        events: list = []
        if evaluate_alerts:
            metrics = {k: row[k] for k in ("zscore", "spread", "corr", "beta", "half_life")}
            metrics.update(self.slow_metrics)
            events = list(self.alerts.evaluate(t, metrics))
            self.alerts_fired += len(events)
        return row, events

    def _peek(self, y: float, x: float) -> dict:
        values = _analytics_dict(self.state.peek(y, x))
        for col, st in self._compare.items():
            values[col] = _beta_of(values if st is None else _analytics_dict(st.peek(y, x)))
        return values

    def _row(self, t: int, y: tuple, x: tuple, values: Mapping[str, Any]) -> dict:
        row: dict[str, Any] = {"t": float(t), "t_mid": float(t + self.tf_ms / 2)}
        for leg, b in (("y", y), ("x", x)):
            o, h, lo, c, v, qv, n = b
            row[f"{leg}_open"] = o
            row[f"{leg}_high"] = h
            row[f"{leg}_low"] = lo
            row[f"{leg}_close"] = c
            row[f"{leg}_volume"] = v
            row[f"{leg}_quote_volume"] = qv
            row[f"{leg}_trades"] = int(n)
            row[f"{leg}_color"] = UP_COLOR if c >= o else DOWN_COLOR
        for col in ANALYTICS_COLUMNS:
            row[col] = _f(values.get(col, NAN))
        row["t_last"] = float(max(self.last_trade_ms["y"], self.last_trade_ms["x"]))
        return row

    # -- the batch path: many rows at once -----------------------------------------
    @staticmethod
    def _keep(spec: PairSpec) -> int:
        from quantlab.ui.batch import warmup_bars

        return spec.max_bars + min(spec.max_bars, warmup_bars(spec.window, spec.hedge))

    def plot_rows(self) -> list[dict]:
        """The kept rows the plots show (the newest ``max_bars``)."""
        rows = self.rows
        n = len(rows)
        m = self.spec.max_bars
        return list(rows) if n <= m else list(itertools.islice(rows, n - m, n))

    def _batch_ok(self) -> bool:
        from quantlab.ui.analytics import make_state

        return self._analytics_factory is make_state

    def _rebuild(self, cols: Mapping[str, np.ndarray], reuse: Mapping[str, tuple] | None = None
                 ) -> None:
        # Building ~10,000 row dicts would trigger several full cyclic-GC passes
        # over every kept row (half the time of a rebuild): none are cycles.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._rebuild_rows(cols, reuse)
        finally:
            if enabled:
                gc.enable()

    def _rebuild_rows(self, cols: Mapping[str, np.ndarray],
                      reuse: Mapping[str, tuple] | None = None) -> None:
        """Replace the kept rows by ``cols`` (``t`` and the leg OHLCV columns of
        :data:`ROW_COLUMNS`, oldest first) with their analytics, and start the
        live states after the last of them.

        With the package's analytics, the columns come from the batch path and
        the states are seeded (:mod:`quantlab.ui.batch`): O(window) per state
        for windowed methods, one pass without re-fits for expanding OLS and
        Kalman. With other analytics (test fakes) every row is replayed.
        """
        keep = self._keep(self.spec)
        n_all = int(cols["t"].size)
        cols = {k: v[max(0, n_all - keep):] for k, v in cols.items()}
        if self.rows.maxlen != keep:
            self.rows = collections.deque(maxlen=keep)
        self.rows.clear()
        n = int(cols["t"].size)
        if n == 0:
            self._new_states()
            return
        if not self._batch_ok():
            self._new_states()
            for i in range(n):
                y = tuple(_leg_values(cols, "y", i))
                x = tuple(_leg_values(cols, "x", i))
                self._commit(int(cols["t"][i]), y, x, evaluate_alerts=False, count=False)
            return
        from quantlab.ui.batch import COMPARE, analytics_columns, seed_state

        spec = self.spec
        t = cols["t"].astype(np.int64)
        y = cols["y_close"].astype(np.float64)
        x = cols["x_close"].astype(np.float64)
        from quantlab.ui.batch import kalman_warmup

        kw = kalman_warmup(spec.window)
        kparams = self._kalman_params.get(kw)  # the ML fit once per warm-up length
        reuse = reuse or {}
        values, kp = analytics_columns(y, x, window=spec.window, hedge=spec.hedge,
                                       kalman_params=kparams,
                                       reuse={c: v[1][-n:] for c, v in reuse.items()})
        if kp is not None and kparams is None:
            self._kalman_params[kw] = kparams = kp
        factory = self._analytics_factory
        self.state = seed_state(lambda **o: factory(spec, spec.hedge, **o), spec.hedge, t, y, x,
                                window=spec.window, kalman_params=kparams)
        self._compare = {}
        for col, method in COMPARE:
            if method == spec.hedge:
                self._compare[col] = None
            elif col in reuse:
                self._compare[col] = reuse[col][0]
            else:
                self._compare[col] = seed_state(lambda m=method, **o: factory(spec, m, **o),
                                                method, t, y, x, window=spec.window,
                                                kalman_params=kparams)
        if spec.hedge == "kalman" or n < max(spec.window, 20):
            # warm-up or too few bars for the batch path: the values the live
            # states gave on the way are the reference; take them from a replay
            # of the (few) bars concerned
            values = self._replay_values(t, y, x, values)
        out = {"t": t.astype(np.float64), "t_mid": t + self.tf_ms / 2}
        for leg in ("y", "x"):
            for f in LEG_FIELDS[:-1]:
                out[f"{leg}_{f}"] = cols[f"{leg}_{f}"]
            o, c = cols[f"{leg}_open"], cols[f"{leg}_close"]
            out[f"{leg}_color"] = np.where(c >= o, UP_COLOR, DOWN_COLOR)
        out.update(values)
        out["t_last"] = t + (self.tf_ms - 1.0)
        lists = [out[c].tolist() for c in ROW_COLUMNS]
        trades_i = [ROW_COLUMNS.index("y_trades"), ROW_COLUMNS.index("x_trades")]
        for i in trades_i:
            lists[i] = [int(v) for v in lists[i]]
        self.rows.extend(dict(zip(ROW_COLUMNS, vals)) for vals in zip(*lists))
        self.last_t = int(t[-1])

    def _replay_values(self, t, y, x, values: dict) -> dict:
        """Analytics of a short or Kalman-warming history by replaying it through
        fresh states (cheap: few bars, or a Kalman warm-up that the batch path
        leaves NaN while the live state has values for its last bar)."""
        if int(t.size) >= max(self.spec.window, 20) and self.spec.hedge != "kalman":
            return values
        from quantlab.ui.batch import kalman_warmup

        if self.spec.hedge == "kalman" and int(t.size) >= kalman_warmup(self.spec.window):
            return values
        saved = self.state, self._compare, self.rows, self.last_t
        self.rows = collections.deque()
        self._new_states()
        for i in range(int(t.size)):
            vals = _analytics_dict(self.state.update(int(t[i]), y[i], x[i]))
            for col, st in self._compare.items():
                vals[col] = _beta_of(vals if st is None else
                                     _analytics_dict(st.update(int(t[i]), y[i], x[i])))
            for c in ANALYTICS_COLUMNS:
                if values.get(c) is None:
                    values[c] = np.full(t.size, NAN)
                values[c][i] = _f(vals.get(c, NAN))
        self.state, self._compare, self.rows, self.last_t = saved
        return values

    # -- late trades and gaps: resynchronisation with the store ---------------------
    def late_bars(self) -> list[int]:
        """Open times (ms, oldest first) of bars up to the last committed one
        that received trades after they were closed (backfilled after a
        reconnect, a stall or an overflow, or in flight past the grace),
        whether or not a row exists for them: the rows from the oldest on are
        to be resynchronised with the store (:meth:`resync`). Times older than
        the kept rows are forgotten."""
        if not self._late:
            return []
        first = self.rows[0]["t"] if self.rows else -math.inf
        last = -math.inf if self.last_t is None else self.last_t
        self._late = {t for t in self._late if t >= first or t > last}
        return sorted(t for t in self._late if t <= last)

    def discard_late(self) -> None:
        """Forget the late bars (when they cannot be corrected)."""
        self._late.clear()

    def resync(self, bars_y: pd.DataFrame, bars_x: pd.DataFrame) -> "Resync | None":
        """Make the kept rows equal to the store's bars: ``bars_y``,
        ``bars_x`` are the store's bars (:meth:`quantlab.store.TickStore.bars`)
        from any time up to the last committed bar. Rows the store has and
        the feed had not are inserted, rows whose OHLCV differ are replaced,
        rows the store does not have (a leg without trades past the carry
        limit) are removed; the analytics of the first changed row and every
        later one are recomputed (batch path) and the live states reseeded.
        Alerts are re-evaluated from the first changed row on
        (:meth:`reevaluate_alerts`). Returns what changed, or None when the
        rows already equal the store's.
        """
        self._late.clear()
        if self.last_t is None:
            return None
        aligned = _aligned(bars_y, bars_x, self.tf_ms)
        if aligned is None:
            return None
        inside = aligned["t"] <= self.last_t
        store = {k: v[inside] for k, v in aligned.items()}
        if store["t"].size == 0:
            return None
        old_rows = list(self.rows)
        old = _columns_of_rows(old_rows)
        t0 = int(store["t"][0])
        before = old["t"] < t0
        merged = {k: np.concatenate([old[k][before], store[k]]) for k in store}
        # first row that differs (time or OHLCV)
        n_old, n_new = old["t"].size, merged["t"].size
        m = min(n_old, n_new)
        diff = np.zeros(m, dtype=bool)
        for k in merged:
            diff |= _differ(old[k][:m], merged[k][:m])
        idx = np.flatnonzero(diff)
        first = int(idx[0]) if idx.size else (m if n_old != n_new else None)
        if first is None:
            return None
        old_t = set(old["t"].tolist())
        new_t = set(merged["t"].tolist())
        inserted = len(new_t - old_t)
        removed = len(old_t - new_t)
        common = np.isin(merged["t"], old["t"])
        corrected = 0
        if common.any():
            pos = np.searchsorted(old["t"], merged["t"][common])
            ch = np.zeros(int(common.sum()), dtype=bool)
            for k in merged:
                ch |= _differ(old[k][pos], merged[k][common])
            corrected = int(ch.sum())
            # rows equal to rounding keep their values exactly (what the plots
            # already show: only changed rows need patching)
            same = np.flatnonzero(common)[~ch]
            for k in merged:
                merged[k][same] = old[k][pos[~ch]]
        t_from = int(merged["t"][first]) if first < n_new else int(old["t"][first])
        self._rebuild(merged)
        self.bars_committed += inserted - removed
        self.bars_inserted += inserted
        self.bars_corrected += corrected
        self.resyncs += 1
        self._forming_dirty = True
        events = self.reevaluate_alerts(t_from)
        return Resync(t_from=t_from, inserted=inserted, removed=removed, corrected=corrected,
                      alerts=events)

    def reevaluate_alerts(self, t_from: int) -> list:
        """Re-run the alert rules over the kept rows after a correction from
        ``t_from`` (ms) on. A fresh engine goes over every kept row (the rows
        before ``t_from`` only set the rules' state); events at or after
        ``t_from`` that the live engine did not fire are sent to the sinks
        marked *corrected* (:func:`quantlab.alerts.corrected_event`), and
        events it fired that the corrected bars no longer give are sent
        marked *withdrawn*. Returns those events."""
        from quantlab.alerts import corrected_event

        old_engine = self.alerts
        old_events = list(getattr(old_engine, "events", []))
        engine = self._alert_factory(self.spec.rules, self.spec.label)
        if hasattr(engine, "sinks"):
            engine.sinks = ()
        fresh: list = []
        for r in self.rows:
            t = int(r["t"])
            metrics = {k: r[k] for k in ("zscore", "spread", "corr", "beta", "half_life")}
            metrics.update(self.slow_metrics)
            evs = list(engine.evaluate(t, metrics))
            if t >= t_from:
                fresh.extend(evs)
        key = lambda ev: (int(ev.time_ms), ev.rule)  # noqa: E731
        had = {key(ev): ev for ev in old_events if int(ev.time_ms) >= t_from}
        now = {key(ev): ev for ev in fresh}
        out = [corrected_event(ev) for k, ev in now.items() if k not in had]
        out += [corrected_event(ev, withdrawn=True) for k, ev in had.items() if k not in now]
        out.sort(key=lambda ev: int(ev.time_ms))
        # The live engine continues from the corrected rules' state; its history
        # keeps what fired before t_from, then the corrected view of the rest.
        if hasattr(engine, "set_history"):
            fixed = {key(ev): ev for ev in out}
            history = [ev for ev in old_events if int(ev.time_ms) < t_from]
            history += [fixed.get(key(ev), ev) for ev in fresh]
            history += [ev for k, ev in fixed.items() if k not in now]  # withdrawn
            engine.set_history(history)
        engine.sinks = tuple(self.alert_sinks)
        for ev in out:
            for sink in engine.sinks:
                try:
                    sink(ev)
                except Exception:  # a sink must never break the monitor
                    logger.exception("alert sink failed on a corrected alert")
        self.alerts = engine
        self.alerts_corrected += len(out)
        return out

    def reconfigure(self, **changes: Any) -> list[dict]:
        """Change analytics settings (``window``, ``hedge``, ``z_entry``,
        ``z_exit``, ``rules``) and recompute every retained bar with them
        (batch path, live states seeded: well under 150 ms for 10,000 bars).

        Returns the plotted rows (oldest first) for the caller to replace its
        plot data once. History never re-fires alerts; the alert log is kept
        unless the rules change.
        """
        old_rules, old_hedge, old_state = self.spec.rules, self.spec.hedge, self.state
        old_window = self.spec.window
        self.spec = dataclasses.replace(self.spec, **changes)
        if self.spec.rules != old_rules:
            self.alerts = self._new_alerts()
        if {"window", "hedge"} & set(changes):
            enabled = gc.isenabled()
            gc.disable()  # see _rebuild
            try:
                self._reconfigure_rows(changes, old_hedge, old_state, old_window)
            finally:
                if enabled:
                    gc.enable()
        self._forming_dirty = True
        return self.plot_rows()

    def _reconfigure_rows(self, changes: Mapping[str, Any], old_hedge: str, old_state: Any,
                          old_window: int) -> None:
        from quantlab.ui import batch

        reuse = {}
        same_kalman = batch.kalman_warmup(old_window) == batch.kalman_warmup(self.spec.window)
        if len(self.rows) and self._batch_ok():
            # Comparison ratios whose values do not depend on the change keep
            # their column and state: all of them for a hedge change (the old
            # main state serves as the comparison it now is); for a window
            # change the expanding OLS (the window is only its minimum: the
            # kept warm-up rows are never plotted) and the Kalman filter
            # while its warm-up length stays.
            for col, method in batch.COMPARE:
                if "window" in changes and (method == "rolling-ols" or (
                        method == "kalman" and not same_kalman)):
                    continue
                st = self._compare.get(col, None)
                if st is None and method == old_hedge:
                    st = old_state
                if st is not None and method != self.spec.hedge:
                    vals = np.fromiter((r[col] for r in self.rows), dtype=np.float64,
                                       count=len(self.rows))
                    if method == "ols":
                        vals[:self.spec.window - 1] = NAN
                    reuse[col] = (st, vals)
        self._rebuild(_columns_of_rows(list(self.rows)), reuse=reuse)

    # -- views -----------------------------------------------------------------------
    def frame(self, last: int | None = None) -> pd.DataFrame:
        """Retained closed bars and analytics as a DataFrame indexed by
        ``open_time`` (UTC); ``last`` keeps only the newest rows."""
        rows = list(self.rows)
        if last is not None:
            rows = rows[-last:]
        cols = [c for c in ROW_COLUMNS if c not in ("t", "t_mid", "t_last")
                and not c.endswith("_color")]
        if not rows:
            frame = pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
            frame.index = pd.DatetimeIndex([], tz="UTC", name="open_time")
            return frame
        frame = pd.DataFrame.from_records(rows, columns=["t"] + cols)
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("t").astype("int64"), unit="ms",
                                                      utc=True), name="open_time")
        frame = frame.rename(columns={"y_close": f"{self.spec.symbol_y}_close",
                                      "x_close": f"{self.spec.symbol_x}_close"})
        return frame

    def aligned(self) -> pd.DataFrame:
        """Retained closed bars in :func:`quantlab.bars.align_pair`'s layout
        (``y_open`` ... ``x_trade_count``, no analytics), indexed by ``open_time``
        (UTC): the input of :func:`quantlab.features.feature_table`."""
        cols = [f"{leg}_{f}" for leg in ("y", "x") for f in LEG_FIELDS if f != "color"]
        frame = pd.DataFrame.from_records(list(self.rows), columns=["t"] + cols)
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("t").astype("int64"), unit="ms",
                                                      utc=True), name="open_time")
        frame.columns = [c.replace("_trades", "_trade_count") for c in frame.columns]
        return frame.astype(np.float64)

    def closes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(t_ms, y_close, x_close)`` of the retained closed bars."""
        rows = self.rows
        t = np.fromiter((r["t"] for r in rows), dtype=np.float64, count=len(rows))
        y = np.fromiter((r["y_close"] for r in rows), dtype=np.float64, count=len(rows))
        x = np.fromiter((r["x_close"] for r in rows), dtype=np.float64, count=len(rows))
        return t, y, x

    def readiness(self) -> list[str]:
        """Progressive enablement lines, e.g. ``"z-score needs 119 bars, have 12"``
        (what the analytics say they need); empty once everything is computed."""
        from quantlab.ui.analytics import readiness_lines

        out = []
        if not (self.trades["y"] or self.rows):
            out.append(f"waiting for the first {self.spec.symbol_y} trade")
        if not (self.trades["x"] or self.rows):
            out.append(f"waiting for the first {self.spec.symbol_x} trade")
        lines = readiness_lines(self.state, self.bars_committed, self.spec.window)
        if self.spec.hedge == "kalman":
            from quantlab.ui.batch import kalman_warmup

            need = kalman_warmup(self.spec.window)
            have = len(self.rows) if self._batch_ok() else self.bars_committed
            have = max(have, int(getattr(self.state, "n_bars", have)))
            if have < need:
                # the maximum-likelihood warm-up of the filter: say how far it is
                lines = [f"Kalman warming up: {have} of {need} bars"] + [
                    ln for ln in lines if not ln.startswith(("z-score", "spread", "hedge"))]
        return out + lines


def _beta_of(values: Mapping[str, Any]) -> float:
    """The hedge ratio to plot: the Kalman filter's filtered beta when there is
    one (``beta`` is then the prior used by the spread), else ``beta``."""
    kb = values.get("kalman_beta")
    if kb is not None and not (isinstance(kb, float) and math.isnan(kb)):
        return _f(kb)
    return _f(values.get("beta", NAN))


def _same_row(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Rows equal, NaN equal to NaN."""
    for k, v in a.items():
        w = b.get(k)
        if v != w and not (isinstance(v, float) and isinstance(w, float)
                           and math.isnan(v) and math.isnan(w)):
            return False
    return True


@dataclass(frozen=True)
class Resync:
    """What :meth:`PairPipeline.resync` changed: ``t_from`` (ms) the first
    changed row, rows ``inserted`` / ``removed`` / ``corrected`` (OHLCV), and
    the corrected or withdrawn alert events."""

    t_from: int
    inserted: int
    removed: int
    corrected: int
    alerts: list


_OHLCV = tuple(f"{leg}_{f}" for leg in ("y", "x") for f in LEG_FIELDS[:-1])


def _differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: values that differ beyond float rounding (volumes summed in
    another order by the store), NaN equal to NaN."""
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return a != b
    return ~np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


def _leg_values(cols: Mapping[str, np.ndarray], leg: str, i: int) -> list:
    vals = [float(cols[f"{leg}_{f}"][i]) for f in LEG_FIELDS[:-1]]
    vals[-1] = int(vals[-1])
    return vals


def _columns_of_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """``t`` (int64) and the leg OHLCV columns (float64) of rows."""
    get = operator.itemgetter("t", *_OHLCV)
    arr = np.array([get(r) for r in rows], dtype=np.float64).reshape(len(rows), 1 + len(_OHLCV))
    out = {"t": arr[:, 0].astype(np.int64)}
    for i, c in enumerate(_OHLCV):
        out[c] = np.ascontiguousarray(arr[:, i + 1])
    return out


def _aligned(bars_y: pd.DataFrame, bars_x: pd.DataFrame, tf_ms: int) -> dict | None:
    """The pair's closed bars as :func:`quantlab.bars.align_pair` gives them
    (gaps dropped, forming bars left out), as ``t`` + leg OHLCV columns."""
    if bars_y is None or bars_x is None or bars_y.empty or bars_x.empty:
        return None
    aligned = align_pair(bars_y, bars_x, timeframe=tf_ms, drop_gaps=True)
    if "is_forming" in aligned.columns:
        aligned = aligned.loc[~aligned["is_forming"].to_numpy(dtype=bool)]
    if aligned.empty:
        return None
    out = {"t": aligned.index.as_unit("ms").asi8.astype(np.int64)}
    for leg in ("y", "x"):
        for f in LEG_FIELDS[:-1]:
            src = "trade_count" if f == "trades" else f
            out[f"{leg}_{f}"] = aligned[f"{leg}_{src}"].to_numpy(dtype=np.float64)
    return out


def _bar_tuple(b: Bar) -> tuple:
    return (b.open, b.high, b.low, b.close, b.volume, b.quote_volume, b.trade_count)
