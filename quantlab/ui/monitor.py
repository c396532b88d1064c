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
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import logging
import math
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as W
import numpy as np
import pandas as pd

from quantlab.bars import parse_timeframe
from quantlab.config import settings_from_dict
from quantlab.errors import ConfigError, QuantlabError, UnknownSymbol
from quantlab.live import LiveSession, SessionSettings
from quantlab.ui import analytics as ui_analytics
from quantlab.ui.pipeline import HEDGES, PairPipeline, PairSpec
from quantlab.ui.plots import PairPlots, load_bokehjs
from quantlab.ui.prediction import PredictionPanel
from quantlab.ui.pump import FeedStep, UiPump

logger = logging.getLogger(__name__)

__all__ = ["LiveMonitor", "MonitorParams", "build_monitor", "SOURCES", "TIMEFRAMES"]

#: Data sources: value -> label.
SOURCES = {
    "live": "Binance live",
    "replay": "Replay server (synthetic pair)",
    "capture": "Capture file (replayed)",
}
TIMEFRAMES = ("1s", "1m", "5m", "custom")
MARKETS = {"spot": "Spot", "usdm": "USD-M futures"}

_running_monitors: "weakref.WeakSet[LiveMonitor]" = weakref.WeakSet()


@dataclass(frozen=True, kw_only=True)
class MonitorParams:
    """Everything a monitor needs; the notebook's ``parameters`` cell maps 1:1.

    Parameters
    ----------
    source : ``"live"`` (Binance), ``"replay"`` (the project's replay server
        with the synthetic pair; started in-process when ``ws_url`` is None) or
        ``"capture"`` (a capture file replayed by an in-process server).
    market : ``"spot"`` or ``"usdm"``.
    symbol_y, symbol_x : the pair; any Binance symbols.
    timeframe : bar length (``"1s"``, ``"1m"``, ``"5m"``, ``"250ms"`` ...).
    window : rolling window, bars.
    hedge : hedge-ratio method, a key of :data:`~quantlab.ui.pipeline.HEDGES`.
    z_entry, z_exit : z-score bands, z units.
    alert_rules : rules (text, one per item or per line), e.g. ``"zscore > 2"``.
    db_path : the tick store (the ingester writes it; history is read from it).
    ws_url, rest_url : WebSocket / REST bases overriding Binance's (a running
        ``quantlab replay``).
    rate : trades per second of the in-process synthetic replay (all symbols).
    capture_path : capture file(s) for ``source="capture"``: a path, several
        separated by commas, a list, or a folder (its ``*.gz`` files). The
        market is the one the capture recorded.
    lookback_bars : stored bars loaded on start (default ``max_bars``, at most
        ``max_bars``; the warm-up bars before them are read too, so every
        plotted bar has its analytics and a Kalman filter is live at once).
    max_bars : bars kept per pair in memory and in the browser.
    extra_pairs : more pairs ``(("SOLUSDT", "BNBUSDT"), ...)`` sharing the ingester.
    interval_s : UI pump period, seconds (at most 10 updates/s are sent anyway).
    export_dir : where the export button writes files.
    stream : ``"trade"`` or ``"aggTrade"``.
    seed : seed of the synthetic replay.
    """

    source: str = "replay"
    market: str = "spot"
    symbol_y: str = "ETHUSDT"
    symbol_x: str = "BTCUSDT"
    timeframe: str = "1s"
    window: int = 60
    hedge: str = "rolling-ols"
    z_entry: float = 2.0
    z_exit: float = 0.5
    alert_rules: tuple[str, ...] = ("zscore > 2", "zscore < -2")
    db_path: str = "data/live.db"
    ws_url: str | None = None
    rest_url: str | None = None
    rate: float = 50.0
    capture_path: str | tuple[str, ...] | None = None
    lookback_bars: int | None = None
    max_bars: int = 2000
    extra_pairs: tuple[tuple[str, str], ...] = ()
    interval_s: float = 0.1
    export_dir: str = "exports"
    stream: str = "trade"
    seed: int = 7

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError("source", self.source, "one of " + ", ".join(SOURCES))
        if self.market not in MARKETS:
            raise ConfigError("market", self.market, "one of " + ", ".join(MARKETS))
        rules = self.alert_rules
        if isinstance(rules, str):
            rules = tuple(line for line in rules.splitlines())
        object.__setattr__(self, "alert_rules", tuple(r.strip() for r in rules if r and r.strip()))
        object.__setattr__(self, "extra_pairs", tuple(tuple(p) for p in self.extra_pairs))
        object.__setattr__(self, "db_path", str(self.db_path))
        if isinstance(self.hedge, str):  # "rolling_ols" is accepted as "rolling-ols"
            object.__setattr__(self, "hedge", self.hedge.strip().replace("_", "-"))
        if self.capture_path is not None and not isinstance(self.capture_path, (str, Path)):
            object.__setattr__(self, "capture_path", tuple(str(p) for p in self.capture_path))
        if not self.rate > 0:
            raise ConfigError("rate", self.rate, "trades per second > 0")
        if not 0.05 <= self.interval_s <= 2:
            raise ConfigError("interval_s", self.interval_s, "seconds between 0.05 and 2")
        if self.source == "capture" and not self.capture_path and not self.ws_url:
            raise ConfigError("capture_path", self.capture_path,
                              "a capture file to replay when source='capture'")
        self.pair_specs()  # validates symbols, timeframe, window, hedge, bands, rules

    def pair_specs(self) -> list[PairSpec]:
        pairs = [(self.symbol_y, self.symbol_x)] + list(self.extra_pairs)
        return [PairSpec(symbol_y=y, symbol_x=x, timeframe=self.timeframe, window=self.window,
                         hedge=self.hedge, z_entry=self.z_entry, z_exit=self.z_exit,
                         rules=self.alert_rules, max_bars=self.max_bars) for y, x in pairs]

    @property
    def lookback(self) -> int:
        n = self.lookback_bars if self.lookback_bars is not None else self.max_bars
        return max(0, min(int(n), self.max_bars))


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
# small HTML helpers
# ---------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = ".4g", unit: str = "") -> str:
    if v is None:
        return "&mdash;"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    if not math.isfinite(f):
        return "&mdash;"
    return f"{format(f, spec)}{unit}"


def _table(rows: Sequence[tuple[str, str]], title: str | None = None) -> str:
    body = "".join(f"<tr><th style='text-align:left;padding-right:10px;font-weight:normal;"
                   f"color:#555'>{k}</th><td style='text-align:right'>{v}</td></tr>"
                   for k, v in rows)
    head = f"<div style='font-weight:bold;margin-bottom:2px'>{title}</div>" if title else ""
    return f"{head}<table style='font-size:12px;border-collapse:collapse'>{body}</table>"


def _csv_link(frame: pd.DataFrame, filename: str, text: str) -> str:
    data = base64.b64encode(frame.to_csv().encode()).decode()
    return (f"<a download='{html.escape(filename)}' href='data:text/csv;base64,{data}' "
            f"style='color:#1565c0'>{html.escape(text)}</a>")


def _pct(v: Any, spec: str = ".3f") -> str:
    """A fraction (log return, volatility) as percent, or a dash."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "&mdash;"
    return _fmt(f * 100, spec, " %") if math.isfinite(f) else "&mdash;"


def _error_html(text: str) -> str:
    return f"<div style='color:#b71c1c;font-size:12px'>&#9888; {html.escape(text)}</div>"


def _note_html(text: str, *, markup: bool = False) -> str:
    """A note line; ``markup=True``: ``text`` is HTML already escaped by the caller."""
    body = text if markup else html.escape(text)
    return f"<div style='color:#37474f;font-size:12px'>{body}</div>"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, QuantlabError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------
# one pair: pipeline + plots + panels
# ---------------------------------------------------------------------------------
class PairView:
    """Plots and panels of one pair. Only the kernel's loop touches it."""

    TABLE_ROWS = 10

    def __init__(self, spec: PairSpec, *, analytics_factory: Callable | None = None):
        self.spec = spec
        self.pipeline = PairPipeline(spec, analytics_factory=analytics_factory)
        self.plots = PairPlots(spec)
        self.title = W.HTML(f"<h4 style='margin:4px 0'>{html.escape(spec.label)} &middot; "
                            f"{html.escape(spec.timeframe)} bars</h4>")
        self.readiness = W.HTML(layout=W.Layout(height="22px", overflow="hidden"))
        self.stats = W.HTML(layout=W.Layout(width="430px", height="440px", overflow="auto"))
        self.alert_log = W.HTML(layout=W.Layout(width="520px", height="440px", overflow="auto"))
        self.adf = W.HTML()
        self.table = W.HTML(layout=W.Layout(height="300px", overflow="auto"))
        self.prediction = PredictionPanel.for_spec(spec)  # formation vs live (trial ledger)
        self.stat_values: dict[str, float] = {}
        self.past_alerts: list[tuple[str, str]] = []  # (UTC time, message) from the store
        self._tests_at = -math.inf
        self._panels_at = -math.inf
        self._table_at = -math.inf
        self._last_committed = -1
        self.widget = W.VBox([
            self.title, self.readiness, self.plots.model,
            W.HBox([self.stats, self.alert_log],
                   layout=W.Layout(align_items="flex-start", justify_content="flex-start")),
            self.adf, self.prediction.widget, self.table,
        ])
        self.refresh_panels(force=True)

    @property
    def target(self) -> tuple[PairPipeline, Any]:
        return self.pipeline, self.plots.sink

    def replace_pipeline(self, pipeline: PairPipeline) -> None:
        self.pipeline = pipeline
        self.plots.reset(pipeline.plot_rows())
        self.refresh_panels(force=True)

    # -- panels --------------------------------------------------------------------
    # Every widget update re-lays out the notebook and makes BokehJS check its size,
    # so the panels have fixed sizes and refresh slowly: stats and alerts at most
    # every STATS_EVERY_S, the table every TABLE_EVERY_S, and only after new bars.
    STATS_EVERY_S = 2.0
    TABLE_EVERY_S = 5.0
    TESTS_EVERY_S = 15.0

    def refresh_panels(self, now: float | None = None, force: bool = False) -> None:
        now = time.monotonic() if now is None else now
        lines = self.pipeline.readiness()
        ready = "" if not lines else _note_html(" · ".join(lines))
        if self.readiness.value != ready:
            self.readiness.value = ready
        committed = self.pipeline.bars_committed
        if not force and (committed == self._last_committed
                          or now - self._panels_at < self.STATS_EVERY_S):
            return
        self._panels_at = now
        self._last_committed = committed
        if force or now - self._tests_at >= self.TESTS_EVERY_S:
            self._tests_at = now
            self._update_tests()
        self._update_stats()
        self._update_alerts()
        if force or now - self._table_at >= self.TABLE_EVERY_S:
            self._table_at = now
            self._update_table()

    def _update_tests(self) -> None:
        """ADF / Engle-Granger p-values and relationship health for the stats
        panel (every TESTS_EVERY_S; each is a regression over the kept bars)."""
        p = self.pipeline
        _, y, x = p.closes()
        spread = np.fromiter((r["spread"] for r in p.rows), dtype=np.float64, count=len(p.rows))
        vals: dict[str, Any] = {"adf_pvalue": math.nan, "coint_pvalue": math.nan}
        if np.isfinite(spread).sum() >= max(20, p.spec.window):
            try:
                results = ui_analytics.tests_now(y, x, spread)
                vals["adf_pvalue"] = float(results[0][1].pvalue)
                vals["coint_pvalue"] = float(results[1][1].pvalue)
            except Exception as exc:  # a statistic failing must not break the panel
                logger.info("ADF/Engle-Granger failed: %s", exc)
        try:
            health = ui_analytics.health_now(y, x, p.spec.window)
        except Exception as exc:
            logger.info("relationship health failed: %s", exc)
            health = {"verdict": "unknown", "reason": _describe(exc)}
        vals["health"] = health
        self.stat_values.update(vals)
        self.prediction.update({p.spec.symbol_y: y, p.spec.symbol_x: x}, p.spec.timeframe_ms / 1000)
        p.slow_metrics = {k: float(v) for k, v in (
            ("adf_pvalue", vals["adf_pvalue"]), ("coint_pvalue", vals["coint_pvalue"]),
            ("beta_drift", health.get("beta_drift", math.nan))) if v == v}

    def _update_stats(self) -> None:
        p, spec = self.pipeline, self.pipeline.spec
        rows = list(p.rows)
        w = spec.window
        _, ys, xs = p.closes()
        legs = []
        for closes, leg in ((ys, "y"), (xs, "x")):
            st = ui_analytics.leg_summary(closes, w, spec.timeframe_ms / 1000)
            if p.last_price[leg] == p.last_price[leg]:
                st["last"] = p.last_price[leg]
            legs.append(st)
        leg_rows = [("last price", _fmt(legs[0]["last"], ".8g"), _fmt(legs[1]["last"], ".8g"))]
        for key, label, spec_ in (("ret_bar", "return, last bar", ".3f"),
                                  ("ret_window", f"return, {w} bars", ".3f"),
                                  ("vol_bar", "volatility / bar", ".4f"),
                                  ("vol_annual", "volatility, annualised", ".1f")):
            leg_rows.append((label, _pct(legs[0][key], spec_), _pct(legs[1][key], spec_)))
        head = (f"<tr><th></th><th style='text-align:right'>{html.escape(spec.symbol_y)}</th>"
                f"<th style='text-align:right;padding-left:12px'>"
                f"{html.escape(spec.symbol_x)}</th></tr>")
        body = "".join(f"<tr><td style='color:#555;padding-right:10px'>{k}</td>"
                       f"<td style='text-align:right'>{a}</td>"
                       f"<td style='text-align:right;padding-left:12px'>{b}</td></tr>"
                       for k, a, b in leg_rows)
        legs_html = f"<table style='font-size:12px;border-collapse:collapse'>{head}{body}</table>"
        last_row = rows[-1] if rows else {}
        health = self.stat_values.get("health") or {}
        verdict = str(health.get("verdict", "insufficient data"))
        color = {"cointegrated": "#2e7d32", "weakening": "#ef6c00",
                 "decoupling": "#c62828"}.get(verdict, "#555")
        pair_rows = [
            ("hedge ratio &beta; (" + html.escape(HEDGES[spec.hedge]) + ")",
             _fmt(last_row.get("beta"), ".5g")),
            ("z-score", _fmt(last_row.get("zscore"), ".3f")),
            ("half-life", _fmt(last_row.get("half_life"), ".3g", " bars")),
            ("correlation", _fmt(last_row.get("corr"), ".3f")),
            ("ADF p-value (spread)", _fmt(self.stat_values.get("adf_pvalue"), ".4f")),
            ("Engle-Granger p-value", _fmt(self.stat_values.get("coint_pvalue"), ".4f")),
            ("relationship", f"<span style='color:{color};font-weight:bold'>"
                             f"{html.escape(verdict)}</span>"),
            ("bars", f"{p.bars_committed:,}"),
        ]
        reason = str(health.get("reason", ""))
        self.stats.value = (
            "<div style='font-weight:bold;margin-bottom:2px'>stats</div>" + legs_html
            + "<div style='height:6px'></div>" + _table(pair_rows)
            + (f"<div style='font-size:11px;color:#555;max-width:420px'>"
               f"{html.escape(reason)}</div>" if reason else ""))

    def _update_alerts(self) -> None:
        events = self.pipeline.alerts.events[:20]  # newest first
        body = "".join(
            f"<div style='font-size:12px'><span style='color:#777'>"
            f"{html.escape(ev.time_iso[11:23])}</span> {html.escape(ev.message)}</div>"
            for ev in events)
        earlier = self.past_alerts[:max(0, 20 - len(events))]  # read at start: no overlap
        if earlier:
            body += ("<div style='font-size:11px;color:#777;margin-top:4px'>earlier "
                     "(stored)</div>" + "".join(
                         f"<div style='font-size:12px;color:#666'><span style='color:#999'>"
                         f"{html.escape(t)}</span> {html.escape(m)}</div>" for t, m in earlier))
        if not body:
            body = "<div style='color:#777;font-size:12px'>no alerts yet</div>"
        rules = ", ".join(html.escape(r) for r in self.pipeline.spec.rules) or "none"
        self.alert_log.value = (f"<div style='font-weight:bold'>alerts (newest first)</div>"
                                f"<div style='font-size:11px;color:#777'>rules: {rules}</div>{body}")

    def _update_table(self) -> None:
        frame = self.pipeline.frame(last=self.TABLE_ROWS)
        if frame.empty:
            self.table.value = ""
            return
        spec = self.pipeline.spec
        cols = [f"{spec.symbol_y}_close", f"{spec.symbol_x}_close", "spread", "zscore", "corr",
                "beta", "half_life"]
        shown = frame[cols].iloc[::-1]
        shown.index = shown.index.strftime("%H:%M:%S" if spec.timeframe_ms < 60_000 else "%m-%d %H:%M")
        table_html = shown.to_html(float_format=lambda v: f"{v:.6g}", na_rep="—", border=0)
        link = _csv_link(frame, f"{spec.symbol_y}-{spec.symbol_x}-{spec.timeframe}-latest.csv",
                         f"download these {len(frame)} bars as CSV")
        self.table.value = (f"<div style='font-weight:bold'>latest bars</div>"
                            f"<div style='font-size:11px'>{table_html}</div>{link}")


# ---------------------------------------------------------------------------------
# the monitor
# ---------------------------------------------------------------------------------
class LiveMonitor:
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
        self.session = LiveSession(_session_settings(self.params),
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

    # -- widgets -------------------------------------------------------------------------
    def _build_controls(self) -> None:
        p = self.params
        wide = {"description_width": "initial"}
        self.w_source = W.Dropdown(options=[(v, k) for k, v in SOURCES.items()], value=p.source,
                                   description="source", style=wide)
        self.w_capture = W.Text(value=_capture_text(p.capture_path),
                                placeholder="capture file(s) or folder",
                                layout=W.Layout(width="260px"),
                                disabled=p.source != "capture")
        self.w_market = W.Dropdown(options=[(v, k) for k, v in MARKETS.items()], value=p.market,
                                   description="market", style=wide)
        self.w_y = W.Text(value=p.symbol_y, description="Y", layout=W.Layout(width="150px"),
                          style={"description_width": "20px"})
        self.w_x = W.Text(value=p.symbol_x, description="X", layout=W.Layout(width="150px"),
                          style={"description_width": "20px"})
        tf_choice = p.timeframe if p.timeframe in TIMEFRAMES else "custom"
        self.w_tf = W.Dropdown(options=list(TIMEFRAMES), value=tf_choice, description="timeframe",
                               style=wide, layout=W.Layout(width="170px"))
        self.w_tf_custom = W.Text(value=p.timeframe if tf_choice == "custom" else "",
                                  placeholder="e.g. 15s, 250ms", layout=W.Layout(width="110px"),
                                  disabled=tf_choice != "custom")
        self.w_window = W.IntSlider(value=p.window, min=min(5, p.window), max=max(1000, p.window),
                                    step=1, description="window",
                                    continuous_update=False, style=wide,
                                    layout=W.Layout(width="330px"))
        self.w_hedge = W.Dropdown(options=[(v, k) for k, v in HEDGES.items()], value=p.hedge,
                                  description="hedge", style=wide)
        self.w_entry = W.BoundedFloatText(value=p.z_entry, min=0.1, max=10, step=0.1,
                                          description="z entry", style=wide,
                                          layout=W.Layout(width="150px"))
        self.w_exit = W.BoundedFloatText(value=p.z_exit, min=0.0, max=10, step=0.1,
                                         description="z exit", style=wide,
                                         layout=W.Layout(width="140px"))
        self.w_rules = W.Textarea(value="\n".join(p.alert_rules), description="alerts",
                                  placeholder="one rule per line, e.g. zscore > 2",
                                  continuous_update=False, style=wide,
                                  layout=W.Layout(width="330px", height="56px"))
        self.b_start = W.Button(description="Start", button_style="success", icon="play")
        self.b_stop = W.Button(description="Stop", button_style="danger", icon="stop",
                               disabled=True)
        self.b_adf = W.Button(description="ADF now", icon="flask")
        self.b_add = W.Button(description="Add pair", icon="plus",
                              tooltip="add the Y/X pair in the fields as another panel")
        self.w_format = W.Dropdown(options=[("CSV", ".csv"), ("Parquet", ".parquet"),
                                            ("Excel", ".xlsx")], value=".csv",
                                   layout=W.Layout(width="100px"))
        self.b_export = W.Button(description="Export", icon="download",
                                 tooltip="the kept bars and analytics of every pair")
        self.b_features = W.Button(description="Features", icon="table",
                                   tooltip="the feature table of every pair (causal "
                                           "per-bar state and indicators), as a file and "
                                           "a download")
        self.b_report = W.Button(description="Report", icon="file-text",
                                 tooltip="a shareable HTML report of the first pair, built "
                                         "in the background from the store")
        self.w_follow = W.ToggleButton(value=True, description="follow", icon="forward",
                                       tooltip="time axis follows the newest bars (a double "
                                               "click on a plot also returns to following); "
                                               "off: show every kept bar")
        self.report_link = W.HTML()
        self.w_up_y = W.FileUpload(accept=".csv,.gz,.zip,.txt,.json,.ndjson,.jsonl",
                                   multiple=False, description="Y file")
        self.w_up_x = W.FileUpload(accept=".csv,.gz,.zip,.txt,.json,.ndjson,.jsonl",
                                   multiple=False, description="X file")
        self.b_files = W.Button(description="Analyze files", icon="file",
                                tooltip="OHLC CSV or Binance data files, one per leg")
        self.message = W.HTML()
        self.status = W.HTML(layout=W.Layout(min_height="40px"))

        self.b_start.on_click(self._guard(lambda _b: self.start()))
        self.b_stop.on_click(self._guard(lambda _b: self.stop()))
        self.b_adf.on_click(self._guard(lambda _b: self.adf_now()))
        self.b_add.on_click(self._guard(lambda _b: self.add_pair(self.w_y.value, self.w_x.value)))
        self.b_export.on_click(self._guard(lambda _b: self.export(self.w_format.value)))
        self.b_features.on_click(self._guard(lambda _b: self.export_features(self.w_format.value)))
        self.b_report.on_click(self._guard(lambda _b: self.report()))
        self.w_follow.observe(self._guard(lambda ch: self.follow(ch["new"])), names="value")
        self.b_files.on_click(self._guard(lambda _b: self._load_uploads()))
        self.w_tf.observe(self._guard(self._on_tf), names="value")
        self.w_source.observe(self._guard(self._on_source), names="value")
        self.w_window.observe(self._guard(lambda ch: self.set_analytics(window=ch["new"])),
                              names="value")
        self.w_hedge.observe(self._guard(lambda ch: self.set_analytics(hedge=ch["new"])),
                             names="value")
        self.w_entry.observe(self._guard(lambda ch: self.set_bands(z_entry=ch["new"])),
                             names="value")
        self.w_exit.observe(self._guard(lambda ch: self.set_bands(z_exit=ch["new"])),
                            names="value")
        self.w_rules.observe(self._guard(lambda ch: self.set_rules(ch["new"])), names="value")

        row = dict(layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.controls = W.VBox([
            W.HBox([self.w_source, self.w_capture, self.w_market, self.w_y, self.w_x, self.w_tf,
                    self.w_tf_custom], **row),
            W.HBox([self.w_window, self.w_hedge, self.w_entry, self.w_exit], **row),
            W.HBox([self.w_rules, self.b_start, self.b_stop, self.b_adf, self.b_add,
                    self.w_format, self.b_export, self.b_features, self.b_report, self.w_follow], **row),
            self.report_link,
            W.HBox([self.w_up_y, self.w_up_x, self.b_files], **row),
        ])

    def _guard(self, fn: Callable) -> Callable:
        """Widget callbacks show errors inline, never as a traceback."""
        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                if not isinstance(exc, QuantlabError):
                    logger.exception("monitor callback failed")
                self._show_error(_describe(exc))
        return wrapper

    def _show_error(self, text: str) -> None:
        self.last_error = text
        self.message.value = _error_html(text)

    def _show_note(self, text: str) -> None:
        self.message.value = _note_html(text)

    def _on_tf(self, change: Mapping[str, Any]) -> None:
        self.w_tf_custom.disabled = change["new"] != "custom"
        if change["new"] != "custom" and self.running:
            self.set_timeframe(change["new"])

    def _on_source(self, change: Mapping[str, Any]) -> None:
        self.w_capture.disabled = change["new"] != "capture"

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

    # -- reading the controls --------------------------------------------------------------
    def params_from_controls(self) -> MonitorParams:
        tf = self.w_tf.value
        if tf == "custom":
            tf = self.w_tf_custom.value.strip()
            parse_timeframe(tf)
        extra = tuple((v.spec.symbol_y, v.spec.symbol_x) for v in self.views[1:])
        return dataclasses.replace(
            self.params, source=self.w_source.value, market=self.w_market.value,
            symbol_y=self.w_y.value.strip().upper(), symbol_x=self.w_x.value.strip().upper(),
            capture_path=self.w_capture.value.strip() or None,
            timeframe=tf, window=int(self.w_window.value), hedge=self.w_hedge.value,
            z_entry=float(self.w_entry.value), z_exit=float(self.w_exit.value),
            alert_rules=tuple(self.w_rules.value.splitlines()), extra_pairs=extra)

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
            session.configure(_session_settings(params))
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
        now_ms = time.time_ns() // 1_000_000
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

    # -- analytics controls -------------------------------------------------------------------
    def set_analytics(self, **changes: Any) -> None:
        """Change ``window`` and/or ``hedge`` for every pair and recompute the
        retained bars (the plots are replaced once)."""
        self.params = dataclasses.replace(self.params, **changes)
        for v in self.views:
            rows = v.pipeline.reconfigure(**changes)
            v.spec = v.pipeline.spec
            v.plots.reset(rows)
            v.refresh_panels(force=True)
        if "window" in changes and self.w_window.value != changes["window"]:
            self.w_window.value = changes["window"]
        if "hedge" in changes and self.w_hedge.value != changes["hedge"]:
            self.w_hedge.value = changes["hedge"]

    def follow(self, on: bool = True) -> None:
        """Time axes follow the newest bars (True; also after the user panned
        or zoomed) or show every kept bar (False)."""
        for v in self.views:
            v.plots.follow(on)
        if self.w_follow.value != bool(on):
            self.w_follow.value = bool(on)

    # -- report (issue 9 contract: quantlab.reports.start_report) --------------------------
    def report(self, out: str | Path | None = None) -> Any:
        """Start a shareable HTML report of the first pair in a background
        process (:func:`quantlab.reports.start_report`) and return its job.
        The UI pump (or a small poll task when the feed is stopped) polls
        ``job.poll()`` without blocking and shows a link to the file, or the
        error, when it is done; the kernel stays responsive meanwhile."""
        try:
            from quantlab.reports import start_report
        except ImportError as exc:
            raise ConfigError("report", "quantlab.reports.start_report is not available",
                              "a quantlab with the report builder (issue 9)") from exc
        spec = self.views[0].pipeline.spec
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path(self.params.export_dir) / (
                f"report-{spec.symbol_y}-{spec.symbol_x}-{spec.timeframe}-{stamp}.html")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        job = start_report(y=spec.symbol_y, x=spec.symbol_x, market=self.params.market,
                           timeframe=spec.timeframe, db=str(self.params.db_path),
                           params={"window": spec.window, "hedge": spec.hedge,
                                   "z_entry": spec.z_entry, "z_exit": spec.z_exit,
                                   "alert_rules": list(spec.rules)},
                           out=str(out))
        self._report = (job, out, time.monotonic())
        self.b_report.disabled = True
        self.report_link.value = _note_html(f"building the report {out.name} ...")
        if not self.running:
            try:  # in a kernel the button callback runs on the kernel's loop
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop here (plain Python): the caller polls the job
                loop = None
            if loop is not None:
                self._report_task = loop.create_task(self._poll_report_loop())
        return job

    async def _poll_report_loop(self) -> None:
        while self._report is not None and not self.running:
            self._poll_report()
            await asyncio.sleep(0.3)

    def _poll_report(self) -> None:
        """Non-blocking: show the report's link or error once the job is done."""
        if self._report is None:
            return
        job, out, t0 = self._report
        try:
            result = job.poll()
        except Exception as exc:  # a broken job reports, never breaks the pump
            result = None
            self._report = None
            self.b_report.disabled = False
            self.report_link.value = _error_html(f"report failed: {_describe(exc)}")
            return
        if result is None:
            return
        self._report = None
        self.b_report.disabled = False
        took = time.monotonic() - t0
        if getattr(result, "ok", False):
            path = Path(getattr(result, "html", None) or out)
            try:
                href = os.path.relpath(path.resolve(), Path.cwd())
            except ValueError:  # another drive
                href = str(path)
            href = href.replace(os.sep, "/")
            self.report_link.value = (
                f"<div style='font-size:12px'>report ready ({took:.0f} s): "
                f"<a href='{html.escape(href)}' target='_blank' style='color:#1565c0'>"
                f"{html.escape(path.name)}</a></div>")
        else:
            err = getattr(result, "error", None) or "unknown error"
            self.report_link.value = _error_html(f"report failed: {err}")

    def set_timeframe(self, timeframe: str) -> None:
        """Switch every pair to bars of ``timeframe`` while the feed runs: new
        plots, the kept window re-read from the store (batch path), the live
        bars built from the next trades on. The feed is not restarted."""
        parse_timeframe(timeframe)
        self.params = dataclasses.replace(self.params, timeframe=timeframe)
        if not self.running:
            return
        specs = self.params.pair_specs()
        self._make_views(specs)
        self._load_history(self.params)
        if self.session.alert_sink() is not None:
            for v in self.views:
                v.pipeline.set_alert_sinks([self.session.alert_sink()])
        if self.step is not None:
            self.step.targets[:] = [v.target for v in self.views]
        self._show_note(f"timeframe: {timeframe}")

    def set_bands(self, **changes: Any) -> None:
        p = dataclasses.replace(self.params, **changes)  # validates entry > exit
        self.params = p
        for v in self.views:
            v.pipeline.spec = dataclasses.replace(v.pipeline.spec, z_entry=p.z_entry,
                                                  z_exit=p.z_exit)
            v.plots.set_bands(p.z_entry, p.z_exit)

    def set_rules(self, text: str | Sequence[str]) -> None:
        """Replace the alert rules (text: one rule per line). A bad rule is
        reported inline and nothing changes."""
        from quantlab.alerts import parse_rule

        lines = text.splitlines() if isinstance(text, str) else list(text)
        rules = tuple(r.strip() for r in lines if r.strip())
        for r in rules:
            parse_rule(r)  # raises ConfigError with the reason
        self.params = dataclasses.replace(self.params, alert_rules=rules)
        for v in self.views:
            v.pipeline.set_rules(rules)
            v.spec = v.pipeline.spec
            v.refresh_panels(force=True)
        self._show_note(f"alert rules: {', '.join(rules) or 'none'}")

    # -- pairs ------------------------------------------------------------------------------
    def add_pair(self, symbol_y: str, symbol_x: str) -> PairView:
        """Add a pair panel sharing the feed. While running, the ingester is
        restarted with the union of symbols."""
        spec = dataclasses.replace(self.views[0].spec, symbol_y=symbol_y, symbol_x=symbol_x)
        if any(v.spec.label == spec.label for v in self.views):
            raise ConfigError("pair", spec.label, "a pair not shown already")
        view = PairView(spec, analytics_factory=self._analytics_factory)
        self.views.append(view)
        self.pairs_box.children = [v.widget for v in self.views]
        if self.running:
            self.stop()
            self.start()
        return view

    # -- actions ----------------------------------------------------------------------------
    def adf_now(self) -> None:
        """Run ADF on the spread and Engle-Granger on the prices now; show
        the results as small tables under each pair."""
        for v in self.views:
            p = v.pipeline
            _, y, x = p.closes()
            spread = np.fromiter((r["spread"] for r in p.rows), dtype=np.float64,
                                 count=len(p.rows))
            need = max(20, p.spec.window)
            have = int(np.isfinite(spread).sum())
            if have < need:
                v.adf.value = _note_html(f"ADF needs {need} bars with a spread, have {have}")
                continue
            try:
                results = ui_analytics.tests_now(y, x, spread)
            except QuantlabError as exc:
                v.adf.value = _error_html(str(exc))
                continue
            parts = []
            for title, res in results:
                rows = [("statistic", _fmt(res.stat, ".4f")), ("p-value", _fmt(res.pvalue, ".4f"))]
                rows += [(f"critical {k}", _fmt(c, ".4f")) for k, c in res.critical_values.items()]
                rows += [("lags", str(res.lags)), ("observations", str(res.nobs))]
                parts.append(f"<div style='display:inline-block;vertical-align:top;"
                             f"margin-right:32px'>{_table(rows, html.escape(title))}</div>")
            v.stat_values["adf_pvalue"] = float(results[0][1].pvalue)
            v.stat_values["coint_pvalue"] = float(results[1][1].pvalue)
            stamp = time.strftime("%H:%M:%S")
            v.adf.value = (f"<div style='font-size:11px;color:#777'>ADF at {stamp} on "
                           f"{have} bars</div>" + "".join(parts))

    def export(self, fmt: str = ".csv", directory: str | Path | None = None) -> list[Path]:
        """Write each pair's current bars and analytics (``.csv``,
        ``.parquet`` or ``.xlsx``) and show where; returns the paths."""
        return self._export_tables("monitor", lambda v: v.pipeline.frame(), fmt, directory)

    def export_features(self, fmt: str = ".csv", directory: str | Path | None = None) -> list[Path]:
        """Write each pair's feature table (:func:`quantlab.features.feature_table`
        over the kept closed bars, with the pair's window and hedge; every column
        causal, no labels) and show where, with a download link for CSV files;
        returns the paths. Same table as ``quantlab features`` on the same bars."""
        from quantlab.features import feature_table

        def features(v: PairView) -> pd.DataFrame:
            aligned = v.pipeline.aligned()
            if len(aligned) < 3:
                return aligned.iloc[:0]
            return feature_table(aligned, window=max(3, v.pipeline.spec.window),
                                 hedge=v.pipeline.spec.hedge)

        return self._export_tables("features", features, fmt, directory, download=True)

    #: largest CSV offered as an in-page download link (bytes); bigger: the path only
    DOWNLOAD_LINK_MAX_BYTES = 20_000_000

    def _export_tables(self, kind: str, table: Callable[[PairView], pd.DataFrame], fmt: str,
                       directory: str | Path | None, download: bool = False) -> list[Path]:
        from quantlab.export import default_filename, export_frame

        if not fmt.startswith("."):
            fmt = "." + fmt
        out_dir = Path(directory or self.params.export_dir)
        frames = []
        for v in self.views:
            frame = table(v)
            if frame.empty:
                raise ConfigError("export", f"{v.spec.label}: no bars yet",
                                  "at least one closed bar (start the feed or load files)")
            frames.append((v, frame))
        paths, links = [], []
        for v, frame in frames:
            spec = v.pipeline.spec
            name = default_filename(kind, [spec.symbol_y, spec.symbol_x], spec.timeframe,
                                    frame.index[0], frame.index[-1], fmt.lstrip("."))
            meta = {"symbols": [spec.symbol_y, spec.symbol_x], "timeframe": spec.timeframe,
                    "window": spec.window, "method": spec.hedge, "source": self.params.source,
                    "market": self.params.market, "z_entry": spec.z_entry, "z_exit": spec.z_exit,
                    "alert_rules": list(spec.rules)}
            if "feature_settings" in frame.attrs:
                meta["feature_settings"] = frame.attrs["feature_settings"]
            path = export_frame(frame, out_dir / name, metadata=meta)
            paths.append(path)
            text = html.escape(str(path))
            if download and fmt == ".csv" and path.stat().st_size <= self.DOWNLOAD_LINK_MAX_BYTES:
                data = base64.b64encode(path.read_bytes()).decode()
                text += (f" (<a download='{html.escape(path.name)}' href='data:text/csv;base64,"
                         f"{data}' style='color:#1565c0'>download</a>)")
            links.append(text)
        self.message.value = _note_html("written: " + ", ".join(links), markup=True)
        return paths

    # -- files (no live feed) ------------------------------------------------------------------
    def _load_uploads(self) -> None:
        ups = []
        for w, leg in ((self.w_up_y, "Y"), (self.w_up_x, "X")):
            if not w.value:
                raise ConfigError(f"{leg} file", None, f"a file in the {leg} upload box")
            item = w.value[0]
            ups.append((item["name"], bytes(item["content"])))
        self.load_files(ups[0], ups[1])

    def load_files(self, file_y: tuple[str, bytes] | str | Path,
                   file_x: tuple[str, bytes] | str | Path) -> PairView:
        """Run the analytics and plots on two files (one per leg): OHLC CSV,
        Binance klines/trades/aggTrades files or captures. Stops a running
        feed. A bad file raises (the buttons show the error) and changes
        nothing."""
        from quantlab.bars import aggregate_bars, resample_trades
        from quantlab.files import load_file, load_file_bytes

        params = self.params_from_controls()
        loaded = []
        for item, leg_symbol in ((file_y, params.symbol_y), (file_x, params.symbol_x)):
            if isinstance(item, tuple):
                lf = load_file_bytes(item[0], item[1])
            else:
                lf = load_file(item)
            loaded.append(lf)
        tf = parse_timeframe(params.timeframe)
        frames, symbols = [], []
        for lf, fallback in zip(loaded, (params.symbol_y, params.symbol_x)):
            sym = lf.symbol or fallback
            frame = lf.frame
            if lf.is_bars:
                frame = frame.copy()
                # OHLC files do not count trades; a bar with volume (or unknown) traded.
                if "trade_count" in frame.columns:
                    traded = ~frame["is_empty"].to_numpy(dtype=bool) if "is_empty" in frame else True
                    frame["trade_count"] = np.where((frame["trade_count"] == 0) & traded, 1,
                                                    frame["trade_count"])
                src_tf = _infer_tf(frame)
                if src_tf and tf > src_tf and tf % src_tf == 0:
                    frame = aggregate_bars(frame, tf, source_timeframe=src_tf)
                elif src_tf and tf != src_tf:
                    tf = src_tf
            else:
                if "symbol" in frame.columns and frame["symbol"].nunique() > 1:
                    frame = frame[frame["symbol"] == sym]
                frame = resample_trades(frame, tf)
            frames.append(frame)
            symbols.append(sym)
        if frames[0].empty or frames[1].empty:
            raise ConfigError("files", "no bars", "files with at least one trade or bar each")
        spec = dataclasses.replace(self.views[0].spec, symbol_y=symbols[0], symbol_x=symbols[1],
                                   timeframe=f"{tf}ms" if tf % 1000 else _tf_text(tf),
                                   window=params.window, hedge=params.hedge)
        pipeline = PairPipeline(spec, analytics_factory=self._analytics_factory)
        pipeline.add_bars(frames[0], frames[1])
        if pipeline.bars_committed == 0:
            raise ConfigError("files", "no overlapping bars",
                              "two files covering the same time range")
        # Everything parsed: now (and only now) change the display.
        if self.running:
            self.stop()
        view = PairView(spec, analytics_factory=self._analytics_factory)
        view.replace_pipeline(pipeline)
        self.views = [view]
        self.pairs_box.children = [view.widget]
        self.mode = "files"
        self._refresh_status(force=True)
        self._show_note(f"loaded {loaded[0].format} file for {symbols[0]} and {loaded[1].format} "
                        f"file for {symbols[1]}: {pipeline.bars_committed:,} bars")
        return view

    # -- reporting -----------------------------------------------------------------------------
    def summary(self) -> dict:
        """Counters for scripts and tests (plain JSON-able values)."""
        st = self.session.status()
        out: dict[str, Any] = {
            "running": self.running,
            "mode": self.mode,
            "pairs": {},
            "pump_ticks": self.pump.ticks if self.pump else self._last_ticks,
            "pump_errors": self.pump.errors if self.pump else 0,
            "last_error": self.last_error,
        }
        for v in self.views:
            p = v.pipeline
            out["pairs"][v.spec.label] = {
                "bars": p.bars_committed, "rows_kept": len(p.rows),
                "trades_y": p.trades["y"], "trades_x": p.trades["x"],
                "alerts": p.alerts_fired, "late_trades": sum(b.late_trades for b in p._bars.values()),
                "bars_corrected": p.bars_corrected, "analytics_stale": p.analytics_stale,
                "bars_inserted": p.bars_inserted, "resyncs": p.resyncs,
                "alerts_corrected": p.alerts_corrected,
                "zscore": _json_float(p.rows[-1]["zscore"]) if p.rows else None,
            }
        if st is not None:
            out["ingest"] = {"state": st.state, "trades_stored": st.trades_stored,
                             "dropped": st.dropped, "gaps_found": st.gaps_found,
                             "trades_backfilled": st.trades_backfilled,
                             "reconnects": st.reconnects, "queue_depth": st.queue_depth,
                             "error": st.error}
        out["ui_missed"] = self.session.missed
        return out


def _session_settings(params: MonitorParams) -> SessionSettings:
    """The :class:`~quantlab.live.SessionSettings` of ``params``: source,
    market, the pairs' symbols, store, stream, URLs, synthetic rate and seed."""
    return SessionSettings(source=params.source, market=params.market,
                           pairs=tuple((s.symbol_y, s.symbol_x) for s in params.pair_specs()),
                           db_path=params.db_path, stream=params.stream, ws_url=params.ws_url,
                           rest_url=params.rest_url, rate=params.rate, seed=params.seed,
                           capture_path=params.capture_path)


def _capture_text(spec: Any) -> str:
    if not spec:
        return ""
    return str(spec) if isinstance(spec, (str, Path)) else ", ".join(str(p) for p in spec)


def _json_float(v: float) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _infer_tf(frame: pd.DataFrame) -> int | None:
    if len(frame) < 2:
        return None
    ms = frame.index.as_unit("ms").asi8
    d = np.diff(ms)
    d = d[d > 0]
    return int(np.gcd.reduce(d)) if d.size else None


def _tf_text(tf_ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if tf_ms % size == 0:
            return f"{tf_ms // size}{unit}"
    return f"{tf_ms}ms"
