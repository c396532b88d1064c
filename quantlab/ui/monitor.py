"""The live pair monitor for JupyterLab: controls, streaming plots, status.

::

    from quantlab.ui import build_monitor
    monitor = build_monitor(source="replay", symbol_y="ETHUSDT", symbol_x="BTCUSDT")
    monitor.show()              # controls, status strip, plots, stats, alerts
    monitor.start()             # or the Start button
    await monitor.run_for(20)   # papermill / scripts: run 20 s, then stop

The feed itself (source, ingester, history, late-bar correction reads, alert
log, status figures) is a :class:`~quantlab.live.LiveSession`: this module builds
widgets and plots, reads the session, and opens no store itself.

Who touches what (``shared/BROWSER.md``, ``shared/STYLE.md``):

* the session's ingester threads write the store and the subscription ring,
  nothing else;
* the :class:`~quantlab.ui.pump.UiPump` (an asyncio task on the kernel's loop)
  drains the ring 6-7 times a second, builds bars and analytics and streams
  one batch per Bokeh source per tick;
* widget callbacks (buttons, slider) also run on the kernel's loop, so the
  Bokeh documents and widgets have exactly one writer thread.

Memory is bounded: the browser keeps ``max_bars`` rows per source (rollover),
the kernel keeps ``max_bars`` rows per pair, the ring ``subscriber_maxlen``
trades, the alert log 500 events.

This module owns the monitor's lifecycle: start / stop, the pump's step,
history load, late-bar corrections, the status strip. Its parts:
:mod:`~quantlab.ui.panels` (one :class:`PairView` per pair, HTML helpers),
:mod:`~quantlab.ui.controls` (:class:`MonitorParams`, the widgets and what
they change), :mod:`~quantlab.ui.actions` (ADF, export, report, files,
summary); every name is importable from here as before.
"""
from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import math
import time
import weakref
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as W

from quantlab.config import settings_from_dict
from quantlab.errors import ConfigError, QuantlabError, UnknownSymbol
from quantlab.live import LiveSession
from quantlab.schema import now_ms as _now_ms
from quantlab.ui.actions import _Actions
from quantlab.ui.controls import MARKETS, SOURCES, TIMEFRAMES, MonitorParams, _Controls
from quantlab.ui.panels import PairView, _describe, _error_html, _fmt, _note_html
from quantlab.ui.pipeline import PairPipeline, PairSpec
from quantlab.ui.plots import load_bokehjs
from quantlab.ui.pump import FeedStep, UiPump

logger = logging.getLogger(__name__)

__all__ = ["LiveMonitor", "MonitorParams", "build_monitor", "SOURCES", "TIMEFRAMES", "MARKETS",
           "PairView"]

_running_monitors: "weakref.WeakSet[LiveMonitor]" = weakref.WeakSet()


def build_monitor(params: MonitorParams | Mapping[str, Any] | None = None,
                  **kwargs: Any) -> "LiveMonitor":
    """A :class:`LiveMonitor` from a :class:`MonitorParams`, a mapping of its
    fields (unknown keys are rejected with the valid ones) or keywords.

    Re-running the notebook cell that builds a monitor stops the monitors
    still running in this kernel first (one feed and one pump at a time)."""
    if params is None:
        params = settings_from_dict(MonitorParams, kwargs)
    elif isinstance(params, Mapping):
        params = settings_from_dict(MonitorParams, {**params, **kwargs})
    elif kwargs:
        params = dataclasses.replace(params, **kwargs)
    for other in list(_running_monitors):
        other.stop()
    return LiveMonitor(params)


# ---------------------------------------------------------------------------------
# the monitor
# ---------------------------------------------------------------------------------
class LiveMonitor(_Controls, _Actions):
    """Controls, status strip and one :class:`PairView` per pair.

    Parameters
    ----------
    params : :class:`MonitorParams`.
    analytics_factory : ``callable(spec, hedge) -> live state``; default
        :func:`quantlab.ui.analytics.make_state`.
    ingester_factory : ``callable(IngestSettings) -> Ingester``-like; default
        :class:`quantlab.ingest.Ingester` (passed to the :attr:`session`).

    Attributes
    ----------
    session : the :class:`~quantlab.live.LiveSession` that runs the feed (one
        per monitor, restarted by each :meth:`start`); the monitor reads its
        trades, stored bars, holes and status figures.

    Build it with :func:`build_monitor`; display with :meth:`show` (or as the
    last expression of a cell); :meth:`start` / :meth:`stop` (or the buttons);
    :meth:`run_for` in scripts and papermill.
    """

    def __init__(self, params: MonitorParams | None = None, *,
                 analytics_factory: Callable | None = None,
                 ingester_factory: Callable | None = None):
        self.params = params or MonitorParams()
        self._analytics_factory = analytics_factory
        self._ingester_factory = ingester_factory
        #: the feed: source, ingester, subscription, store reads, alert log
        self.session = LiveSession(self.params.session_settings(),
                                   ingester_factory=ingester_factory)
        self.pump: UiPump | None = None
        self.step: FeedStep | None = None
        self._status_at = -math.inf
        self._started_at: float | None = None
        self.mode = "idle"   # idle | live | files
        self.last_error: str | None = None
        self._correct_at = -math.inf
        self._report: tuple | None = None     # (job, out path, started) of a running report
        self._report_task: Any = None
        self._resync_due: float | None = None
        self._last_ticks = 0
        self._build_controls()
        self.views: list[PairView] = []
        self.pairs_box = W.VBox()
        self._make_views(self.params.pair_specs())
        self.widget = W.VBox([self.controls, self.message, self.status, self.pairs_box],
                             layout=W.Layout(width="100%"))
        self._refresh_status(force=True)

    def _make_views(self, specs: Sequence[PairSpec]) -> None:
        self.views = [PairView(s, analytics_factory=self._analytics_factory) for s in specs]
        self.pairs_box.children = [v.widget for v in self.views]

    # -- display -----------------------------------------------------------------------
    def show(self) -> None:
        """Display the monitor (loads BokehJS inline first)."""
        from IPython.display import display

        load_bokehjs()
        display(self.widget)

    def _ipython_display_(self) -> None:
        self.show()

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.pump is not None and self.pump.running

    # The session's parts, as the monitor has always exposed them (read-only).
    @property
    def ingester(self) -> Any:
        """The session's :class:`~quantlab.ingest.Ingester` (kept after
        :meth:`stop` for its final figures), or None before the first start."""
        return self.session.ingester

    @property
    def subscription(self) -> Any:
        """The session's subscription ring while the feed runs, else None."""
        return self.session.subscription

    @property
    def replay(self) -> Any:
        """The in-process replay server while it runs, else None."""
        return self.session.replay

    def start(self) -> "LiveMonitor":
        """Start the feed (ingester, and the in-process replay server when the
        source asks for one), load stored history, start the UI pump.

        A feed that cannot start (bad DB path, unreadable capture ...) is
        reported inline and in :attr:`last_error`, not raised; invalid
        controls raise :class:`~quantlab.errors.ConfigError` (the Start button
        shows it inline)."""
        if self.running:
            return self
        params = self.params_from_controls()
        self.params = params
        for other in list(_running_monitors):
            if other is not self:
                other.stop()
        self.message.value = ""
        self.last_error = None
        specs = params.pair_specs()
        if [v.spec for v in self.views] != specs:
            # symbols, timeframe or rollover changed: new plots
            self._make_views(specs)
        else:
            for v in self.views:
                v.replace_pipeline(PairPipeline(v.spec, analytics_factory=self._analytics_factory))
        session = self.session
        try:
            session.ingester_factory = self._ingester_factory
            session.configure(params.session_settings())
            session.open_source()
            if session.settings.market != params.market:
                # a capture says which market it recorded
                params = dataclasses.replace(params, market=session.settings.market)
                self.params = params
                self.w_market.value = params.market
            self._load_history(params)
            session.close_store()  # history read before the ingester writes
            session.start()
        except Exception as exc:
            self._teardown_feed()
            self._refresh_status(force=True)
            if not isinstance(exc, (QuantlabError, OSError)):
                logger.exception("monitor start failed")
            self._show_error(f"cannot start: {_describe(exc)}")
            return self
        self._open_alert_log(params)
        self.step = FeedStep(session.drain, [v.target for v in self.views],
                             after=self._after_tick)
        self.pump = UiPump(self.step, interval_s=params.interval_s,
                           on_error=lambda exc: self._show_error(f"UI update failed: "
                                                                 f"{_describe(exc)}"))
        self.pump.start()
        self.mode = "live"
        self._started_at = time.monotonic()
        _running_monitors.add(self)
        self.b_start.disabled = True
        self.b_stop.disabled = False
        self._refresh_status(force=True)
        return self

    def stop(self) -> None:
        """Stop the pump, the ingester (flushing what it received) and the
        replay server. Safe to call twice; the kernel stays usable and
        :meth:`start` works again."""
        self._teardown_feed()
        _running_monitors.discard(self)
        if self.mode == "live":
            self.mode = "idle"
        self.b_start.disabled = False
        self.b_stop.disabled = True
        self._refresh_status(force=True)
        for v in self.views:
            v.refresh_panels(force=True)

    async def run_for(self, seconds: float) -> dict:
        """Start, let the pump run ``seconds`` on this loop, stop; return
        :meth:`summary`. Use ``await monitor.run_for(20)`` in a cell (papermill
        runs it like any cell; the kernel keeps serving the pump meanwhile)."""
        self.start()
        try:
            if self.running:
                await asyncio.sleep(seconds)
        finally:
            self.stop()
        return self.summary()

    def _teardown_feed(self) -> None:
        """Stop the pump, then the session's ingester and replay server. The
        ingester flushes what it received to the store and the subscription;
        one last step shows those trades (and a last correction from the
        store), so the plots match the store; then the session closes."""
        pump, self.pump = self.pump, None
        if pump is not None:
            pump.stop()
            self._last_ticks = pump.ticks
        session = self.session
        try:
            session.stop(timeout_s=30.0)
        except Exception as exc:
            self._show_error(f"ingester did not stop cleanly: {_describe(exc)}")
        if session.subscription is not None:
            if self.step is not None:
                try:
                    self.step(time.monotonic())
                except Exception:
                    logger.exception("final UI update failed")
            try:
                self._correct_late(force=True)  # the last late trades too
            except Exception:
                logger.exception("final late-bar correction failed")
        if session.alert_sink() is not None:
            for v in self.views:
                v.pipeline.set_alert_sinks(())
        session.close()

    def _open_alert_log(self, params: MonitorParams) -> None:
        """Alerts persist in the store's alert log (they survive restarts);
        the panel shows this session's events, then the stored earlier ones.
        The session writes them from the pump's thread (the kernel's loop)."""
        try:
            self.session.open_alert_log()
        except Exception as exc:  # the feed works without a persistent alert log
            self._show_error(f"alert log not persisted: {_describe(exc)}")
            return
        for v in self.views:
            v.pipeline.set_alert_sinks([self.session.alert_sink()])
            try:
                v.past_alerts = self.session.past_alerts(v.spec.label, limit=20)
            except Exception as exc:
                logger.info("cannot read the alert log: %s", exc)
            v.refresh_panels(force=True)

    # -- history (read through the session) ------------------------------------------------
    def _load_history(self, params: MonitorParams) -> None:
        """Stored bars of the lookback window (plus the warm-up bars before it),
        from the session's store (if it exists), through the batch path."""
        if params.lookback <= 0 or not self.session.open_store():
            return
        now_ms = _now_ms()
        for v in self.views:
            tf = v.spec.timeframe_ms
            end = now_ms // tf * tf
            keep = PairPipeline._keep(v.spec) - v.spec.max_bars + params.lookback
            start = end - keep * tf
            try:
                by, bx = self.session.pair_bars(v.spec.symbol_y, v.spec.symbol_x, v.spec.timeframe,
                                                start, end)
            except (UnknownSymbol, ConfigError) as exc:
                # nothing stored yet for this pair, or a sub-second timeframe
                logger.info("no history for %s: %s", v.spec.label, exc)
                continue
            rows = v.pipeline.add_bars(by, bx)
            if rows and params.source in ("live", "replay"):
                # The bar forming now is partial in the feed (its first trades
                # were before the subscription): start with the next one.
                v.pipeline.skip_until(end + tf)
            v.plots.reset(v.pipeline.plot_rows(), holes=self._store_holes(v))
            v.refresh_panels(force=True)

    def _store_holes(self, view: "PairView") -> list[tuple[float, float]]:
        """Stretches ``(left, right)`` (ms) of the kept rows' time where the
        store recorded a gap it could not (fully) fill, to shade on the plots."""
        rows = view.pipeline.rows
        if not rows:
            return []
        lo, hi = rows[0]["t"], rows[-1]["t"] + view.pipeline.tf_ms
        return self.session.holes((view.spec.symbol_y, view.spec.symbol_x), lo, hi)

    # -- per tick (UI pump) ----------------------------------------------------------------
    def _after_tick(self, now: float, updates: list) -> None:
        self._correct_late(now)
        self._poll_report()
        self._refresh_status(now)
        for v in self.views:
            v.refresh_panels(now)

    #: resynchronisations with the store run at most this often (seconds), never per trade
    CORRECT_EVERY_S = 1.0
    #: a resynchronisation waits for the ingester's open gaps to be backfilled,
    #: at most this long (seconds) after it became due
    BACKFILL_WAIT_S = 10.0

    def _feed_marks(self) -> tuple:
        """Ingester counters that move when trades may have reached the store
        out of order (gaps, backfills, overflow, reconnects)."""
        return self.session.feed_marks()

    def _correct_late(self, now: float | None = None, force: bool = False) -> None:
        """Resynchronise the kept rows with the store after any gap.

        Due when a pair received late trades (bars closed before their trades
        arrived: a reconnect, a stall, an overflow backfilled from REST, or
        the pause between two sessions), or when the ingester's gap counters
        moved (:meth:`LiveSession.marks_moved`). It waits until the ingester
        has no open gap (the backfill is done; at most BACKFILL_WAIT_S), then,
        per pair, reads the store's bars of the kept rows' time (the session's
        read-only store, owned by this loop; the ingester hands trades over
        only after committing them) and lets :meth:`PairPipeline.resync`
        insert, correct and recompute; the plots are patched (same bars) or
        reset once (bars inserted or removed). At most every CORRECT_EVERY_S."""
        now = time.monotonic() if now is None else now
        if not force and now - self._correct_at < self.CORRECT_EVERY_S:
            return
        self._correct_at = now
        session = self.session
        if session.marks_moved():
            self._resync_due = self._resync_due or now
        late = {id(v): v.pipeline.late_bars() for v in self.views}
        if any(late.values()) and self._resync_due is None:
            self._resync_due = now
        if self._resync_due is None:
            return
        if not session.open_store():
            return
        if not force and now - self._resync_due < self.BACKFILL_WAIT_S:
            if session.backfill_pending():
                return  # the backfill is still running
        self._resync_due = None
        for v in self.views:
            self.resync_view(v, session)

    def resync_view(self, v: "PairView", session: LiveSession | None = None) -> Any:
        """Resynchronise one pair's kept rows and plots with the store of
        ``session`` (default :attr:`session`); returns the
        :class:`~quantlab.ui.pipeline.Resync` (None: nothing changed)."""
        session = session if session is not None else self.session
        p = v.pipeline
        if p.last_t is None:
            return None
        tf = p.tf_ms
        start = int(p.rows[0]["t"]) if p.rows else p.last_t
        start = min([start] + p.late_bars())
        try:
            legs = session.pair_bars(p.spec.symbol_y, p.spec.symbol_x, tf, start, p.last_t + tf)
        except (UnknownSymbol, ConfigError) as exc:  # e.g. a sub-second timeframe
            logger.info("cannot resynchronise %s with the store: %s", p.label, exc)
            p.discard_late()
            return None
        if legs is None:  # no store file yet
            return None
        by, bx = legs
        before = list(v.plots.bars.data.get("t", []))
        res = p.resync(by, bx)
        if res is None:
            return None
        rows = p.plot_rows()
        shown, _ = v.plots.sink.with_breaks(rows)
        if res.inserted == 0 and res.removed == 0 and [r["t"] for r in shown] == before:
            first = next((i for i, r in enumerate(shown) if r["t"] >= res.t_from), len(shown))
            if first < len(shown):
                cols = list(shown[0])
                span = slice(first, len(shown))
                v.plots.bars.patch({c: [(span, [r[c] for r in shown[first:]])] for c in cols})
        else:
            v.plots.reset(rows, holes=self._store_holes(v), keep_alerts=True)
        fired = [ev for ev in res.alerts if not ev.message.startswith("[withdrawn]")]
        if fired:  # markers of the alerts the corrected bars fire
            by_t = {int(r["t"]): r for r in rows}
            marks = [(ev, by_t.get(int(ev.time_ms))) for ev in fired]
            v.plots.alerts.stream({
                "t": [float(ev.time_ms) for ev, _ in marks],
                "t_mid": [r["t_mid"] if r else float(ev.time_ms) for ev, r in marks],
                "zscore": [r["zscore"] if r else math.nan for ev, r in marks],
                "text": [ev.message for ev, _ in marks]}, rollover=v.plots.sink.max_alerts)
        v.refresh_panels(force=True)
        return res

    def _refresh_status(self, now: float | None = None, force: bool = False) -> None:
        now = time.monotonic() if now is None else now
        if not force and now - self._status_at < 1.0:
            return
        self._status_at = now
        text = self.status_html()
        if self.status.value != text:
            self.status.value = text

    def status_html(self) -> str:
        """The status strip: connection, rates, lag, gaps, drops, queue (the
        session's :class:`~quantlab.live.SessionStatus`, and the pump's rate)."""
        if self.mode == "files":
            return _note_html("files loaded: no live feed")
        st = self.session.status()
        if st is None:
            return _note_html("stopped · press Start (or call monitor.start())")
        colors = {"live": "#2e7d32", "connecting": "#ef6c00", "reconnecting": "#ef6c00",
                  "stale": "#ef6c00", "stopped": "#555"}
        state = st.state if self.running else "stopped"
        dropped = st.lost  # refused by the ingester's queue + overwritten in the UI's ring
        pump = self.pump
        ui_rate = ""
        if pump is not None and self._started_at is not None:
            elapsed = max(1e-3, time.monotonic() - self._started_at)
            ui_rate = f"{pump.ticks / elapsed:.1f} updates/s, step {pump.step_s * 1000:.0f} ms"
        parts = [
            f"<b style='color:{colors.get(state, '#555')}'>{html.escape(state)}</b>",
            f"{st.trades_per_s:,.0f} trades/s",
            f"lag {_fmt(st.lag_ms_p50, ',.0f', ' ms')}",
            f"last trade {_fmt(st.last_trade_age_s, '.1f', ' s')} ago",
            f"reconnects {st.reconnects}",
            f"gaps {st.gaps_found} (backfilled {st.trades_backfilled:,})",
            f"<span style='color:{'#c62828' if dropped else 'inherit'}'>dropped {dropped:,}</span>",
            f"queue {st.queue_depth:,}",
            f"stored {st.trades_stored:,}",
        ]
        if ui_rate:
            parts.append(f"UI {ui_rate}")
        line = " · ".join(parts)
        out = f"<div style='font-size:12px;font-family:monospace'>{line}</div>"
        if st.error and (st.fatal or (self.running and state != "live")):
            out += _error_html(st.error)
        elif st.error and not self.running:
            out += _note_html(f"last error: {st.error}")
        return out
