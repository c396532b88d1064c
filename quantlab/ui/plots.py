"""Streaming Bokeh figures of one pair, sharing one time axis.

Three data sources per pair, updated only by the UI pump (one ``stream`` call
each per tick, see :mod:`quantlab.ui.pump`):

* ``"<Y/X>:bars"`` - closed bars and their analytics (rollover ``max_bars``);
* ``"<Y/X>:forming"`` - the bar still forming (rollover 1);
* ``"<Y/X>:alerts"`` - alert markers on the z-score plot.

The figures: prices (candles of ``y`` on the left axis, ``x`` on a second
axis), spread with its rolling mean, z-score with entry/exit bands and alert
markers, rolling correlation, hedge ratio (static OLS vs rolling OLS vs
Kalman) and traded volume in quote currency. All have pan, wheel zoom, box
zoom, reset and hover.

Pleasant to use (issue 12):

* no tool owns the mouse wheel until the user picks wheel zoom in the toolbar
  (``active_scroll=None``): the page scrolls over the plots;
* the time axis follows the newest bars with a fixed visible span (a
  ``DataRange1d`` with ``follow="end"``) until the user pans or zooms;
  :meth:`PairPlots.follow` (the monitor's *follow* toggle) or a double click on
  a plot returns to following, keeping the span then shown;
* where no bar exists (a pause, an unfillable gap) a break row of NaN values
  stops the lines and a grey strip (``"<Y/X>:holes"``) marks the hole.

BokehJS must be loaded inline (no CDN offline, ``shared/BROWSER.md``):
:func:`load_bokehjs` does it once per kernel.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from bokeh.layouts import column
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DataRange1d,
    HoverTool,
    LinearAxis,
    Range1d,
    Span,
)
from bokeh.core.properties import value
from bokeh.plotting import figure
from bokeh.transform import dodge

from quantlab.ui.pipeline import ROW_COLUMNS, PairSpec
from quantlab.ui.pump import PairSink

__all__ = ["PairPlots", "load_bokehjs"]

_loaded = False

Y_COLOR = "#1f77b4"
X_COLOR = "#ff7f0e"
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"


def load_bokehjs(force: bool = False) -> None:
    """Load BokehJS into the notebook page from the Python package (INLINE),
    never from a CDN. Idempotent per kernel unless ``force``."""
    global _loaded
    if _loaded and not force:
        return
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(resources=INLINE, hide_banner=True)
    _loaded = True


def _empty(columns: Iterable[str]) -> dict[str, list]:
    return {c: [] for c in columns}


def columns_of(rows: list[dict]) -> dict[str, Any]:
    """Rows (dicts) -> Bokeh column data (numpy arrays for numbers: sent to
    the browser as binary buffers, not JSON lists)."""
    if not rows:
        return _empty(ROW_COLUMNS)
    out: dict[str, Any] = {}
    for k in ROW_COLUMNS:
        vals = [r[k] for r in rows]
        out[k] = vals if k.endswith("_color") else np.asarray(vals, dtype=np.float64)
    return out


#: visible span of the time axis while following, bars
FOLLOW_BARS = 300


class PairPlots:
    """The figures of one pair and their data sources.

    Parameters
    ----------
    spec : the pair (symbols, timeframe, bands, ``max_bars`` rollover).
    width : plot width, pixels.
    """

    def __init__(self, spec: PairSpec, *, width: int = 980):
        self.spec = spec
        label = spec.label
        self.bars = ColumnDataSource(_empty(ROW_COLUMNS), name=f"{label}:bars")
        self.forming = ColumnDataSource(_empty(ROW_COLUMNS), name=f"{label}:forming")
        self.alerts = ColumnDataSource({"t": [], "t_mid": [], "zscore": [], "text": []}, name=f"{label}:alerts")
        self.holes = ColumnDataSource({"left": [], "right": []}, name=f"{label}:holes")
        self.sink = PairSink(self.bars, self.forming, self.alerts, max_bars=spec.max_bars,
                             holes=self.holes, timeframe_ms=spec.timeframe_ms)
        self.span_ms = min(spec.max_bars, FOLLOW_BARS) * spec.timeframe_ms
        self.x_range = DataRange1d(range_padding=0.02, follow="end",
                                   follow_interval=self.span_ms, range_padding_units="percent")
        self.following = True
        self.width = width
        self.spans: dict[str, Span] = {}
        self._build()
        self._model = None

    # -- construction -----------------------------------------------------------------
    def _fig(self, title: str, height: int, **kw: Any):
        # No active scroll tool: the wheel scrolls the page until the user picks
        # wheel zoom in the toolbar.
        p = figure(title=title, height=height, width=self.width, x_axis_type="datetime",
                   x_range=self.x_range, tools=TOOLS, active_drag="xpan",
                   active_scroll=None, toolbar_location="right", **kw)
        p.vstrip(x0="left", x1="right", source=self.holes, fill_color="#9e9e9e",
                 fill_alpha=0.22, line_alpha=0)
        # Double click: follow the newest bars again with the span now shown
        # (changing follow_interval clears BokehJS's "updated interactively").
        p.js_on_event("doubletap", CustomJS(args={"r": self.x_range}, code="""
            const span = Math.abs(r.end - r.start);
            r.follow_interval = (span > 0 && span !== r.follow_interval) ? span
                                : r.follow_interval + 1;
        """))
        p.title.text_font_size = "11px"
        p.min_border_left = 60
        p.min_border_right = 70  # room for the price plot's second axis: aligned plots
        p.xgrid.visible = False  # fewer things to repaint (see the note on xaxis below)
        return p

    def _hover(self, p, renderers, fields: list[tuple[str, str]]) -> None:
        tips = [("time", "@t{%F %T}")] + fields
        p.add_tools(HoverTool(renderers=renderers, tooltips=tips, mode="vline",
                              formatters={"@t": "datetime"}))

    def _build(self) -> None:
        s = self.spec
        tf = s.timeframe_ms
        b, f = self.bars, self.forming

        # prices: candles of y (left axis), x on its own axis (right)
        price = self._fig(f"{s.symbol_y}: candles, left axis · {s.symbol_x}: orange line, "
                          f"right axis", 260)
        price.yaxis.axis_label = s.symbol_y
        price.segment("t_mid", "y_high", "t_mid", "y_low", source=b, color="y_color")
        candles = price.vbar("t_mid", tf * 0.7, "y_open", "y_close", source=b,
                             fill_color="y_color", line_color="y_color")
        price.segment("t_mid", "y_high", "t_mid", "y_low", source=f, color="y_color", alpha=0.5)
        price.vbar("t_mid", tf * 0.7, "y_open", "y_close", source=f, fill_color="y_color",
                   line_color="y_color", fill_alpha=0.35)
        price.extra_y_ranges = {"x": DataRange1d(only_visible=True)}
        x_line = price.line("t_mid", "x_close", source=b, color=X_COLOR, line_width=1.5,
                            y_range_name="x")
        price.scatter("t_mid", "x_close", source=f, color=X_COLOR, size=5, y_range_name="x")
        price.extra_y_ranges["x"].renderers = [x_line]
        price.y_range = DataRange1d(renderers=[candles], only_visible=True)
        price.add_layout(LinearAxis(y_range_name="x", axis_label=s.symbol_x), "right")
        self._hover(price, [candles], [(f"{s.symbol_y} O/H/L/C",
                                        "@y_open / @y_high / @y_low / @y_close"),
                                       (s.symbol_x, "@x_close")])

        spread = self._fig("spread (blue) and its rolling mean (dashed)", 170)
        sl = spread.line("t_mid", "spread", source=b, color=Y_COLOR)
        spread.line("t_mid", "spread_mean", source=b, color="#555", line_dash="dashed")
        self._hover(spread, [sl], [("spread", "@spread"), ("mean", "@spread_mean"),
                                   ("std", "@spread_std")])

        z = self._fig("z-score (forming bar: dot), entry (red) / exit (green) bands, "
                      "alerts (triangles)", 190)
        zl = z.line("t_mid", "zscore", source=b, color="#6a3d9a", line_width=1.5)
        z.scatter("t_mid", "zscore", source=f, color="#6a3d9a", size=6)
        z.scatter("t_mid", "zscore", source=self.alerts, marker="triangle", size=11,
                  color="#d62728")
        for key, loc, color, dash in (("entry_hi", s.z_entry, "#d62728", "dashed"),
                                      ("entry_lo", -s.z_entry, "#d62728", "dashed"),
                                      ("exit_hi", s.z_exit, "#2ca02c", "dotted"),
                                      ("exit_lo", -s.z_exit, "#2ca02c", "dotted"),
                                      ("zero", 0.0, "#999999", "solid")):
            span = Span(location=loc, dimension="width", line_color=color, line_dash=dash,
                        line_width=1)
            z.add_layout(span)
            self.spans[key] = span
        self._hover(z, [zl], [("z", "@zscore{0.00}")])
        # Spans do not count when Bokeh auto-ranges the axis, so the entry bands
        # would be off-screen until z reached them. Two invisible constant lines
        # just beyond the bands (same x as the bars) keep them always in view.
        self.band_guides = [z.line("t_mid", value(sign * 1.1 * s.z_entry), source=b, line_alpha=0)
                            for sign in (1.0, -1.0)]
        self.z_figure = z

        corr = self._fig("rolling correlation of log returns", 150,
                         y_range=Range1d(-1.05, 1.05))
        cl = corr.line("t_mid", "corr", source=b, color="#17becf", line_width=1.5)
        self._hover(corr, [cl], [("corr", "@corr{0.000}")])

        hedge = self._fig("hedge ratio: static OLS (black), rolling OLS (blue), Kalman (pink)",
                          170)
        h1 = hedge.line("t_mid", "beta_static", source=b, color="#333333")
        hedge.line("t_mid", "beta_rolling", source=b, color="#1f77b4")
        hedge.line("t_mid", "beta_kalman", source=b, color="#e377c2")
        self._hover(hedge, [h1], [("static", "@beta_static{0.0000}"),
                                  ("rolling", "@beta_rolling{0.0000}"),
                                  ("Kalman", "@beta_kalman{0.0000}"), ("used", "@beta{0.0000}")])

        vol = self._fig(f"traded volume in quote currency: {s.symbol_y} (blue), "
                        f"{s.symbol_x} (orange)", 150)
        v1 = vol.vbar(dodge("t_mid", -tf * 0.2, range=self.x_range), tf * 0.38, "y_quote_volume",
                      source=b, color=Y_COLOR)
        vol.vbar(dodge("t_mid", tf * 0.2, range=self.x_range), tf * 0.38, "x_quote_volume",
                 source=b, color=X_COLOR)
        vol.y_range.start = 0
        self._hover(vol, [v1], [(s.symbol_y, "@y_quote_volume{0,0}"),
                                (s.symbol_x, "@x_quote_volume{0,0}")])

        self.figures = [price, spread, z, corr, hedge, vol]
        for p in self.figures[:-1]:
            # One time axis, at the bottom. Removed, not just emptied: BokehJS resolves
            # CSS colours for every label it paints (getComputedStyle), which in
            # JupyterLab's large DOM is the main cost of a repaint; and every model
            # of the document costs the kernel time in each streamed update (Bokeh
            # serialises a reference map of all of them per message).
            for ax in list(p.below):
                p.below.remove(ax)
            for grid in [r for r in p.center if getattr(r, "dimension", None) == 0]:
                p.center.remove(grid)
        # The shared time axis follows the closed bars only: a forming-bar update
        # (10 a second) then leaves the axis as it is, and only the two plots that
        # draw the forming bar repaint, not all six (each repaint costs the
        # browser O(kept bars)).
        self.x_range.renderers = [r for fig in self.figures for r in fig.renderers
                                  if getattr(r, "data_source", None) is self.bars]
        self.layout = column(*self.figures, name=f"{s.label}:layout")

    # -- updates (UI pump / user actions only, on the kernel loop) ---------------------
    def reset(self, rows: list[dict], holes: Iterable[tuple[float, float]] = (),
              keep_alerts: bool = False) -> None:
        """Replace all plot data once (after a reconfiguration, a file load or
        a resynchronisation with the store; never in a loop: it resends
        everything). Break rows go before every hole between ``rows`` (see
        :class:`~quantlab.ui.pump.PairSink`); ``holes`` adds more shaded
        stretches ``(left, right)`` in ms (e.g. unfillable store gaps)."""
        rows = rows[-self.spec.max_bars:]
        shown, found = self.sink.with_breaks(rows)
        self.sink.last_t = float(rows[-1]["t"]) if rows else None
        self.bars.data = columns_of(shown)
        self.forming.data = _empty(ROW_COLUMNS)
        if not keep_alerts:
            self.alerts.data = {"t": [], "t_mid": [], "zscore": [], "text": []}
        allh = sorted(set(found) | {(float(a), float(b)) for a, b in holes})
        self.holes.data = {"left": [h[0] for h in allh], "right": [h[1] for h in allh]}

    def follow(self, on: bool = True) -> None:
        """Follow the newest bars (True: the time axis shows the last
        ``span_ms`` and moves with new bars, also after the user panned or
        zoomed) or show every kept bar (False)."""
        self.following = bool(on)
        if on:
            # A new value clears BokehJS's "updated interactively" flag.
            span = self.span_ms + (1 if self.x_range.follow_interval == self.span_ms else 0)
            self.x_range.follow = "end"
            self.x_range.follow_interval = span
        else:
            self.x_range.follow = None
            self.x_range.follow_interval = None

    def set_bands(self, z_entry: float, z_exit: float) -> None:
        for key, loc in (("entry_hi", z_entry), ("entry_lo", -z_entry),
                         ("exit_hi", z_exit), ("exit_lo", -z_exit)):
            self.spans[key].location = loc
        for guide, sign in zip(self.band_guides, (1.0, -1.0)):
            guide.glyph.y = value(sign * 1.1 * z_entry)

    @property
    def model(self):
        """The ``jupyter_bokeh.BokehModel`` widget showing the layout."""
        if self._model is None:
            from jupyter_bokeh import BokehModel

            load_bokehjs()
            self._model = BokehModel(self.layout)
        return self._model

