"""Trades -> pair bars -> analytics rows, for one pair, owned by the UI pump.

Pure Python (no Bokeh, no widgets, no threads): the pump calls
:meth:`PairPipeline.add_trades` with what it drained and
:meth:`PairPipeline.advance` once per tick, and streams what comes back.

Rows
----
A *row* is a flat ``dict`` (column -> float/int/str), one per closed bar of
the pair, which the plots stream as is (:data:`ROW_COLUMNS`):

* ``t``: bar open, ms since the epoch UTC (exchange time), and ``t_mid``,
  the bar's centre (where candles are drawn);
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
    "rolling_ols": "Rolling OLS",
    "ols": "OLS (expanding)",
    "huber": "Robust (Huber)",
    "theil_sen": "Robust (Theil-Sen)",
    "kalman": "Kalman",
}

LEG_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "color")
ANALYTICS_COLUMNS = ("spread", "spread_mean", "spread_std", "zscore", "corr", "beta", "alpha",
                     "half_life", "beta_static", "beta_rolling", "beta_kalman")
ROW_COLUMNS = (("t", "t_mid") + tuple(f"{leg}_{f}" for leg in ("y", "x") for f in LEG_FIELDS)
               + ANALYTICS_COLUMNS)

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
    hedge: str = "rolling_ols"
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
        in the browser (~30 ms of its main thread in JupyterLab), so 300 ms
        keeps the forming bar fresh (< 500 ms) at a third of the cost.
    """

    def __init__(self, spec: PairSpec, *,
                 analytics_factory: Callable[[PairSpec, str], Any] | None = None,
                 alert_factory: Callable[[Sequence[str], str], Any] | None = None,
                 grace_ms: int | None = None, forming_every_ms: int = 300):
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
        self.rows: collections.deque[dict] = collections.deque(maxlen=spec.max_bars)
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
        #: corrected from the store by the view (:meth:`correct_bars`)
        self._late: set[int] = set()
        self.bars_corrected = 0      # kept rows whose OHLCV was replaced from the store
        self.analytics_stale = 0     # of those, rows whose analytics were not recomputed
        self._forming_dirty = False
        self.forming_every_ms = int(forming_every_ms)
        self._forming_at = -10**18  # wall ms of the last forming report
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
        for col, method in (("beta_static", "ols"), ("beta_rolling", "rolling_ols"),
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
            self.trades[leg] += 1
            self.last_trade_ms[leg] = max(self.last_trade_ms[leg], tr.time_ms)
            self.last_price[leg] = tr.price
            used += 1
        if used:
            self._forming_dirty = True
        if len(self._late) > 2 * self.spec.max_bars:
            self.late_bars()  # bound memory: drop what rolled out
            if len(self._late) > 2 * self.spec.max_bars:
                self._late = set(sorted(self._late)[-2 * self.spec.max_bars:])
        return used

    def add_bars(self, bars_y: pd.DataFrame, bars_x: pd.DataFrame) -> list[dict]:
        """Commit historical or uploaded bars (frames of :mod:`quantlab.schema`).

        Rows at or before the last committed bar are skipped; bars flagged
        ``is_forming`` are not committed. Returns the committed rows (the
        caller streams or resets its plots with them).
        """
        aligned = align_pair(bars_y, bars_x, timeframe=self.tf_ms, drop_gaps=True)
        if "is_forming" in aligned.columns:
            aligned = aligned.loc[~aligned["is_forming"].to_numpy(dtype=bool)]
        if aligned.empty:
            return []
        t_ms = aligned.index.as_unit("ms").asi8
        cols = {c: aligned[c].to_numpy() for c in aligned.columns}
        out = []
        for i, t in enumerate(t_ms.tolist()):
            if self.last_t is not None and t <= self.last_t:
                continue
            legs = {}
            for leg in ("y", "x"):
                legs[leg] = (_f(cols[f"{leg}_open"][i]), _f(cols[f"{leg}_high"][i]),
                             _f(cols[f"{leg}_low"][i]), _f(cols[f"{leg}_close"][i]),
                             _f(cols[f"{leg}_volume"][i]), _f(cols[f"{leg}_quote_volume"][i]),
                             int(cols[f"{leg}_trade_count"][i]))
            row, _ = self._commit(int(t), legs["y"], legs["x"], evaluate_alerts=False)
            out.append(row)
            self.last_price["y"] = legs["y"][3]
            self.last_price["x"] = legs["x"][3]
        # Live bars must not re-open history: treat it as emitted.
        for leg in ("y", "x"):
            self._pending[leg] = {k: b for k, b in self._pending[leg].items()
                                  if self.last_t is None or k > self.last_t}
        return out

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
        if now_ms is None:
            now_ms = self.clock.now(wall)
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
    def _commit(self, t: int, y: tuple, x: tuple, evaluate_alerts: bool = True) -> tuple[dict, list]:
        values = _analytics_dict(self.state.update(t, y[3], x[3]))
        for col, st in self._compare.items():
            values[col] = _beta_of(values if st is None else
                                   _analytics_dict(st.update(t, y[3], x[3])))
        row = self._row(t, y, x, values)
        self.rows.append(row)
        self.last_t = t
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
        return row

    # -- late trades -----------------------------------------------------------------
    #: rows replayed through fresh analytics states when a correction changes a
    #: close (~0.1-0.4 s for 2000 rows depending on the hedge method); above
    #: this only OHLCV are corrected and :attr:`analytics_stale` counts them.
    REPLAY_MAX_ROWS = 1000

    def late_bars(self) -> list[int]:
        """Open times (ms, oldest first) of committed, still kept rows that
        received late trades and await :meth:`correct_bars`. Times that rolled
        out of the kept rows are forgotten; bars not committed yet stay queued."""
        if not self._late:
            return []
        first = self.rows[0]["t"] if self.rows else math.inf
        last = -math.inf if self.last_t is None else self.last_t
        self._late = {t for t in self._late if t >= first or t > last}
        return sorted(t for t in self._late if t <= last)

    def discard_late(self) -> None:
        """Forget the late bars (when they cannot be corrected)."""
        self._late.clear()

    def correct_bars(self, bars: Mapping[str, pd.DataFrame]) -> list[tuple[int, dict]]:
        """Replace the OHLCV of the rows :meth:`late_bars` listed with exact
        bars (``{"y": frame, "x": frame}``, bar frames of :mod:`quantlab.schema`
        from the store covering those times).

        When a close changed and at most :data:`REPLAY_MAX_ROWS` rows are kept,
        the analytics are recomputed by replaying the kept rows through fresh
        states (as :meth:`reconfigure`), so later rows change too. Alerts are
        not re-evaluated. Returns ``(index in rows, new row)`` of every row that
        changed, oldest first (the caller patches its plots once).
        """
        todo = self.late_bars()
        if not todo:
            return []
        self._late.difference_update(todo)
        index = {int(r["t"]): i for i, r in enumerate(self.rows)}
        lookup = {}
        for leg in ("y", "x"):
            frame = bars.get(leg)
            if frame is None or frame.empty:
                lookup[leg] = {}
                continue
            t_ms = frame.index.as_unit("ms").asi8.tolist()
            cols = [frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume",
                                                   "quote_volume", "trade_count")]
            lookup[leg] = {t: i for i, t in enumerate(t_ms)}
            lookup[leg + "_cols"] = cols  # type: ignore[assignment]
        changed: dict[int, dict] = {}
        closes_changed = False
        for t in todo:
            i = index.get(t)
            if i is None:  # a gap in the kept rows (history): nothing to fix
                continue
            old = self.rows[i]
            new = dict(old)
            for leg in ("y", "x"):
                j = lookup[leg].get(t)
                if j is None:
                    continue
                cols = lookup[leg + "_cols"]
                o, h, lo, c, v, qv, n = (_f(col[j]) for col in cols)
                new.update({f"{leg}_open": o, f"{leg}_high": h, f"{leg}_low": lo,
                            f"{leg}_close": c, f"{leg}_volume": v, f"{leg}_quote_volume": qv,
                            f"{leg}_trades": int(n),
                            f"{leg}_color": UP_COLOR if c >= o else DOWN_COLOR})
            if new != old:
                closes_changed |= (new["y_close"] != old["y_close"]
                                   or new["x_close"] != old["x_close"])
                self.rows[i] = new
                changed[i] = new
        if not changed:
            return []
        self.bars_corrected += len(changed)
        if closes_changed and len(self.rows) <= self.REPLAY_MAX_ROWS:
            old_rows = list(self.rows)
            self._replay(old_rows)
            for i, (a, b) in enumerate(zip(old_rows, self.rows)):
                if i in changed or not _same_row(a, b):
                    changed[i] = b  # the replayed row (new analytics)
        elif closes_changed:
            self.analytics_stale += len(changed)
            logger.info("%s: %d bars corrected from the store; analytics not recomputed "
                        "(%d rows kept > %d)", self.label, len(changed), len(self.rows),
                        self.REPLAY_MAX_ROWS)
        self._forming_dirty = True
        return sorted(changed.items())

    def _replay(self, rows: Sequence[dict]) -> None:
        """Recompute every kept row's analytics with fresh states (no alerts)."""
        n = self.bars_committed
        self.rows.clear()
        self._new_states()
        for r in rows:
            y = tuple(r[f"y_{f}"] for f in LEG_FIELDS[:-1])
            x = tuple(r[f"x_{f}"] for f in LEG_FIELDS[:-1])
            self._commit(int(r["t"]), y, x, evaluate_alerts=False)
        self.bars_committed = n

    def reconfigure(self, **changes: Any) -> list[dict]:
        """Change analytics settings (``window``, ``hedge``, ``z_entry``,
        ``z_exit``, ``rules``) and recompute every retained bar with them.

        Returns the recomputed rows (oldest first) for the caller to replace
        its plot data once. History never re-fires alerts; the alert log is
        kept unless the rules change.
        """
        old_rules = self.spec.rules
        self.spec = dataclasses.replace(self.spec, **changes)
        if self.spec.rules != old_rules:
            self.alerts = self._new_alerts()
        old = list(self.rows)
        self.rows.clear()
        self.bars_committed = 0
        self._new_states()
        for r in old:
            y = tuple(r[f"y_{f}"] for f in LEG_FIELDS[:-1])
            x = tuple(r[f"x_{f}"] for f in LEG_FIELDS[:-1])
            self._commit(int(r["t"]), y, x, evaluate_alerts=False)
        self._forming_dirty = True
        return list(self.rows)

    # -- views -----------------------------------------------------------------------
    def frame(self, last: int | None = None) -> pd.DataFrame:
        """Retained closed bars and analytics as a DataFrame indexed by
        ``open_time`` (UTC); ``last`` keeps only the newest rows."""
        rows = list(self.rows)
        if last is not None:
            rows = rows[-last:]
        cols = [c for c in ROW_COLUMNS if c not in ("t", "t_mid") and not c.endswith("_color")]
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
        return out + readiness_lines(self.state, self.bars_committed, self.spec.window)


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


def _bar_tuple(b: Bar) -> tuple:
    return (b.open, b.high, b.low, b.close, b.volume, b.quote_volume, b.trade_count)
