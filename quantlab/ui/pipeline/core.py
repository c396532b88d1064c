""":class:`PairPipeline`: one pair's state, input (trades or bars), the per-tick
:meth:`~PairPipeline.advance`, commits through the analytics state and the
views (frame, closes, readiness). The batch path and the store
resynchronisation are its mixins (``rows``, ``resync``). Pure Python.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.bars import Bar, IncrementalBars
from quantlab.schema import now_ms as _now_ms
from quantlab.ui.pipeline.resync import _Resync
from quantlab.ui.pipeline.rows import _Rows, _aligned, _bar_tuple, _beta_of, _columns_of_rows
from quantlab.ui.pipeline.spec import (ANALYTICS_COLUMNS, DOWN_COLOR, LEG_FIELDS, MAX_CARRY_BARS,
                                       NAN, ROW_COLUMNS, UP_COLOR, ExchangeClock, PairSpec,
                                       PipelineUpdate, _analytics_dict, _f)


class PairPipeline(_Rows, _Resync):
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
        wall = _now_ms() if wall_ms is None else int(wall_ms)
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


