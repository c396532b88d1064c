"""One pair on the screen: :class:`PairView` (its
:class:`~quantlab.ui.pipeline.PairPipeline`, its :class:`~quantlab.ui.plots.PairPlots`
and the readiness, stats, alerts, ADF, prediction and latest-bars panels, refreshed
slowly), and the small HTML helpers every part of the monitor writes with
(``_fmt``, ``_table``, ``_csv_link``, ``_pct``, ``_error_html``, ``_note_html``,
``_describe``). Only the kernel's loop touches a view.
"""
from __future__ import annotations

import base64
import html
import logging
import math
import time
from typing import Any, Callable, Sequence

import ipywidgets as W
import numpy as np
import pandas as pd

from quantlab.errors import QuantlabError
from quantlab.ui import analytics as ui_analytics
from quantlab.ui.pipeline import HEDGES, PairPipeline, PairSpec
from quantlab.ui.plots import PairPlots
from quantlab.ui.prediction import PredictionPanel

logger = logging.getLogger(__name__)

__all__ = ["PairView"]


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
