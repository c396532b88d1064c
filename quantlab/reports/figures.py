"""Plain Bokeh figures of a pair study (no widgets, no BokehModel: they must
survive static HTML export).

The time-series figures share one x range (zoom or pan one, all follow) and are
downsampled for display by :func:`quantlab.reports.downsample.minmax_indices`;
each title says how many points it shows of how many. The mouse wheel scrolls
the page: no tool is active on scroll until the user picks one in the toolbar.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from bokeh.layouts import column
from bokeh.models import (BasicTicker, ColorBar, ColumnDataSource, DataRange1d, HoverTool,
                          LinearAxis, LinearColorMapper, Range1d, Span)
from bokeh.plotting import figure

from quantlab.reports.downsample import minmax_indices

__all__ = ["time_series_figures", "sweep_heatmap", "bokeh_resources"]

_TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_HEIGHT = 220


def bokeh_resources():
    """Inline BokehJS with only the core bundle (the figures use no widget or
    table model): ~1.3 MB instead of the ~4 MB of every bundle."""
    from bokeh.resources import Resources

    return Resources(mode="inline", components=["bokeh"])


def _figure(title: str, x_range: Any, **kw: Any):
    f = figure(title=title, x_axis_type="datetime", x_range=x_range, height=_HEIGHT,
               sizing_mode="stretch_width", tools=_TOOLS, toolbar_location="right", **kw)
    f.toolbar.active_scroll = None  # the wheel scrolls the page until a zoom tool is picked
    f.title.text_font_size = "11pt"
    return f


def _times_ms(index: pd.Index) -> np.ndarray:
    return pd.DatetimeIndex(index).as_unit("ms").asi8.astype(np.float64)


class _Series:
    """One downsampled series: ``(t_ms, values)`` and the counts for the caption."""

    def __init__(self, t_ms: np.ndarray, values: np.ndarray, points: int):
        idx = minmax_indices(values, points)
        self.t = t_ms[idx]
        self.v = np.asarray(values, dtype=np.float64)[idx]
        self.shown = int(idx.size)
        self.total = int(values.size)


def _line(f, s: _Series, label: str, color: str, **kw: Any):
    src = ColumnDataSource({"t": s.t, "v": s.v})
    r = f.line("t", "v", source=src, color=color, legend_label=label, line_width=1.2, **kw)
    f.add_tools(HoverTool(renderers=[r], tooltips=[(label, "@v{0,0.[0000]}"), ("time", "@t{%F %T}")],
                          formatters={"@t": "datetime"}, mode="vline"))
    return r


def _caption(series: list[_Series]) -> str:
    shown = sum(s.shown for s in series)
    total = sum(s.total for s in series)
    return f"{shown:,} of {total:,} points shown (min/max per bucket); statistics use all bars"


def time_series_figures(study: Any):
    """The linked column of time-series figures: prices, spread, z-score with
    bands and trades, correlation, hedge ratios, relationship health, equity
    and drawdown. Returns a Bokeh layout."""
    p = study.params
    frame = study.frame
    n_points = p.plot_points
    t = _times_ms(frame.index)
    x_range = DataRange1d(range_padding=0.01)
    figs = []

    def series(values) -> _Series:
        return _Series(t, np.asarray(values, dtype=np.float64), n_points)

    # 1. Prices of both legs, x on a second axis.
    sy, sx = series(frame["y"]), series(frame["x"])
    f = _figure(f"{p.symbol_y} (left) and {p.symbol_x} (right) closes: {_caption([sy, sx])}", x_range)
    r_y = _line(f, sy, p.symbol_y, _COLORS[0])
    f.y_range.renderers = [r_y]  # the left axis fits y only; x has its own range
    lo, hi = np.nanmin(sx.v), np.nanmax(sx.v)
    pad = (hi - lo) * 0.05 or 1.0
    f.extra_y_ranges = {"x": Range1d(lo - pad, hi + pad)}
    f.add_layout(LinearAxis(y_range_name="x", axis_label=p.symbol_x), "right")
    _line(f, sx, p.symbol_x, _COLORS[1], y_range_name="x")
    f.yaxis[0].axis_label = p.symbol_y
    figs.append(f)

    # 2. Spread and its rolling mean.
    ss, sm = series(frame["spread"]), series(frame["spread_mean"])
    f = _figure(f"Spread y - beta x - alpha ({p.hedge}, window {p.window}) and its mean: "
                f"{_caption([ss, sm])}", x_range)
    _line(f, ss, "spread", _COLORS[0])
    _line(f, sm, "mean", _COLORS[1], line_dash="dashed")
    figs.append(f)

    # 3. Z-score, bands, and the backtest's entries and exits.
    sz = series(frame["zscore"])
    f = _figure(f"Z-score with entry +/-{p.z_entry:g} and exit {p.z_exit:g} bands, trades marked: "
                f"{_caption([sz])}", x_range)
    _line(f, sz, "z", _COLORS[0])
    for level, color in ((p.z_entry, "#d62728"), (-p.z_entry, "#d62728"),
                         (p.z_exit, "#7f7f7f"), (-p.z_exit, "#7f7f7f")):
        f.add_layout(Span(location=level, dimension="width", line_color=color, line_dash="dashed"))
    trades = study.backtest.trades
    shown = trades.iloc[:: max(1, len(trades) // 1000)] if len(trades) else trades
    for side, marker, color in (("long", "triangle", "#2ca02c"), ("short", "inverted_triangle", "#d62728")):
        sel = shown[shown["side"] == side]
        if len(sel):
            f.scatter(_times_ms(pd.DatetimeIndex(sel["entry_time"])), sel["entry_z"].to_numpy(),
                      marker=marker, size=7, color=color, legend_label=f"{side} entry")
    if len(shown):
        f.scatter(_times_ms(pd.DatetimeIndex(shown["exit_time"])), shown["exit_z"].to_numpy(),
                  marker="x", size=7, color="black", legend_label="exit")
    if len(shown) < len(trades):
        f.title.text += f" ({len(shown):,} of {len(trades):,} trades marked)"
    figs.append(f)

    # 4. Rolling correlation.
    sc = series(frame["corr"])
    f = _figure(f"Rolling correlation of one-bar log returns: {_caption([sc])}", x_range)
    _line(f, sc, "corr", _COLORS[2])
    figs.append(f)

    # 5. Hedge ratio: static (in-sample), rolling OLS, Kalman.
    sr = series(study.rolling_beta)
    parts = [sr]
    f = _figure("", x_range)
    f.add_layout(Span(location=float(study.analysis.static.beta), dimension="width",
                      line_color="black", line_dash="dotted"))
    _line(f, sr, f"rolling OLS ({p.window})", _COLORS[0])
    if "kalman_beta" in frame:
        sk = series(frame["kalman_beta"])
        parts.append(sk)
        _line(f, sk, "Kalman", _COLORS[3])
    f.title.text = (f"Hedge ratio: static in-sample {study.analysis.static.beta:.5g} (dotted), rolling, "
                    f"Kalman: {_caption(parts)}")
    figs.append(f)

    # 6. Relationship health: rolling Engle-Granger p-value and half-life.
    if "health_coint_pvalue" in frame:
        sp = series(np.clip(frame["health_coint_pvalue"].to_numpy(dtype=float), 1e-6, 1.0))
        f = _figure(f"Relationship health: rolling Engle-Granger p-value, log scale, floored at 1e-6 "
                    f"(0.05 dashed): {_caption([sp])}", x_range, y_range=Range1d(1e-6, 1.0),
                    y_axis_type="log")
        _line(f, sp, "EG p-value", _COLORS[4])
        f.add_layout(Span(location=0.05, dimension="width", line_color="#d62728", line_dash="dashed"))
        figs.append(f)

    # 7. Equity and drawdown (net of fees, quote currency).
    eq = study.backtest.equity
    se, sd = series(eq["equity"]), series(eq["drawdown"])
    f = _figure(f"Equity, net of {p.fee_bps:g} bps per leg (quote currency): {_caption([se])}", x_range)
    _line(f, se, "equity", _COLORS[0])
    figs.append(f)
    f = _figure(f"Drawdown (quote currency): {_caption([sd])}", x_range)
    src = ColumnDataSource({"t": sd.t, "v": sd.v, "zero": np.zeros_like(sd.v)})
    f.varea("t", "zero", "v", source=src, color="#d62728", alpha=0.4)
    figs.append(f)

    for f in figs:
        if f.legend:
            f.legend.location = "top_left"
            f.legend.click_policy = "hide"
            f.legend.label_text_font_size = "8pt"
    return column(*figs, sizing_mode="stretch_width")


def sweep_heatmap(study: Any):
    """Net Sharpe over the entry x exit grid, one cell per valid rule; hover
    shows the cell's figures."""
    grid = study.sweep.copy()
    grid["entry_s"] = grid["entry"].map(lambda v: f"{v:g}")
    grid["exit_s"] = grid["exit"].map(lambda v: f"{v:g}")
    grid["sharpe_c"] = grid["sharpe"].fillna(0.0)
    entries = [f"{v:g}" for v in sorted(set(grid["entry"]))]
    exits = [f"{v:g}" for v in sorted(set(grid["exit"]))]
    finite = grid["sharpe"].replace([np.inf, -np.inf], np.nan).dropna()
    span = float(finite.abs().max()) if len(finite) else 1.0
    mapper = LinearColorMapper(palette=_diverging(), low=-span or -1,
                               high=span or 1)
    src = ColumnDataSource({c: grid[c].to_numpy() for c in
                            ("entry_s", "exit_s", "sharpe_c", "sharpe", "total_pnl", "n_trades",
                             "break_even_fee_bps", "dsr")})
    pbo = getattr(getattr(study, "overfit", None), "pbo", None)
    pbo_text = f"; PBO of picking the best cell {pbo.pbo:.2f}" if pbo is not None else ""
    f = figure(width=720, title=f"Net Sharpe after {study.params.fee_bps:g} bps per leg, entry x exit "
                     f"(window {study.params.window}){pbo_text}",
               x_range=exits, y_range=entries, height=320, tools="hover,save",
               x_axis_label="exit z", y_axis_label="entry z", toolbar_location="right")
    f.rect("exit_s", "entry_s", 1, 1, source=src, fill_color={"field": "sharpe_c", "transform": mapper},
           line_color="white")
    f.select_one(HoverTool).tooltips = [("entry", "@entry_s"), ("exit", "@exit_s"),
                                        ("net Sharpe", "@sharpe{0.00}"), ("PnL", "@total_pnl{0,0.00}"),
                                        ("trades", "@n_trades"), ("deflated Sharpe", "@dsr{0.00}"),
                                        ("break-even fee bps", "@break_even_fee_bps{0.0}")]
    f.add_layout(ColorBar(color_mapper=mapper, ticker=BasicTicker(), title="Sharpe"), "right")
    f.toolbar.active_scroll = None
    return f


def _diverging() -> list[str]:
    from bokeh.palettes import RdYlGn11

    return list(RdYlGn11)[::-1]
