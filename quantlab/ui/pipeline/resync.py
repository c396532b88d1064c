"""Late trades, gaps and parameter changes of
:class:`~quantlab.ui.pipeline.PairPipeline` (a mixin): resynchronisation with the
store's bars (:class:`Resync`), alert re-evaluation and :meth:`reconfigure`.
Pure Python.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from quantlab.ui.pipeline.rows import _aligned, _columns_of_rows, _differ
from quantlab.ui.pipeline.spec import NAN

logger = logging.getLogger(__name__)


class _Resync:
    """Resynchronisation and reconfiguration of :class:`PairPipeline` (a mixin)."""

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


