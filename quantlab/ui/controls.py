"""What the user sets, and what each setting changes.

* :class:`MonitorParams` - every setting of a monitor, validated (the live
  notebook's ``parameters`` cell maps 1:1), with :data:`SOURCES`,
  :data:`TIMEFRAMES` and :data:`MARKETS`, the choices the dropdowns offer;
* ``_Controls`` - a mixin of :class:`~quantlab.ui.monitor.LiveMonitor`: the
  widgets of the control panel (``w_*`` fields, ``b_*`` buttons) and their
  wiring, every callback behind ``_guard`` (errors inline, never a traceback),
  the controls read back as parameters, and the changes a running feed takes
  without a restart (window, hedge, bands, rules, timeframe, follow, another pair).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as W

from quantlab.bars import parse_timeframe
from quantlab.config import MARKET_LABELS
from quantlab.live import SessionSettings
from quantlab.live.session import SOURCES as SESSION_SOURCES
from quantlab.errors import ConfigError, QuantlabError
from quantlab.ui.panels import PairView, _describe, _error_html, _note_html
from quantlab.ui.pipeline import HEDGES, PairSpec

logger = logging.getLogger(__name__)

__all__ = ["MonitorParams", "SOURCES", "TIMEFRAMES", "MARKETS"]

#: Data sources: value -> label.
SOURCES = {
    "live": "Binance live",
    "replay": "Replay server (synthetic pair)",
    "capture": "Capture file (replayed)",
}
assert tuple(SOURCES) == SESSION_SOURCES  # labels of the session's one list
TIMEFRAMES = ("1s", "1m", "5m", "custom")
MARKETS = MARKET_LABELS  # the dropdown's choices: config's one list, with labels


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
        # source, market, capture: the session's rules; symbols, timeframe, window,
        # hedge, bands, rules: the pairs'
        self.session_settings()

    def session_settings(self) -> SessionSettings:
        """The :class:`~quantlab.live.SessionSettings` of these parameters: source,
        market, the pairs' symbols, store, stream, URLs, synthetic rate and seed."""
        return SessionSettings(source=self.source, market=self.market,
                               pairs=tuple((s.symbol_y, s.symbol_x) for s in self.pair_specs()),
                               db_path=self.db_path, stream=self.stream, ws_url=self.ws_url,
                               rest_url=self.rest_url, rate=self.rate, seed=self.seed,
                               capture_path=self.capture_path)

    def pair_specs(self) -> list[PairSpec]:
        pairs = [(self.symbol_y, self.symbol_x)] + list(self.extra_pairs)
        return [PairSpec(symbol_y=y, symbol_x=x, timeframe=self.timeframe, window=self.window,
                         hedge=self.hedge, z_entry=self.z_entry, z_exit=self.z_exit,
                         rules=self.alert_rules, max_bars=self.max_bars) for y, x in pairs]

    @property
    def lookback(self) -> int:
        n = self.lookback_bars if self.lookback_bars is not None else self.max_bars
        return max(0, min(int(n), self.max_bars))


def _capture_text(spec: Any) -> str:
    if not spec:
        return ""
    return str(spec) if isinstance(spec, (str, Path)) else ", ".join(str(p) for p in spec)


class _Controls:
    """The control panel of :class:`~quantlab.ui.monitor.LiveMonitor` (a mixin):
    widgets, wiring, the controls read back, and live changes of the settings."""

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
