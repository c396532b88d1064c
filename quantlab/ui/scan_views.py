"""Bokeh views of a scan: the correlation heatmap of a universe and the
lead-lag cross-correlation of one pair. Plain figures (no widgets, no
server): they render in a notebook (``bokeh.io.show`` after
``output_notebook``), in offline HTML (``bokeh.embed.file_html`` with the
core-only inline resources of :func:`quantlab.reports.figures.bokeh_resources`)
and in reports. Only :mod:`quantlab.ui` imports Bokeh;
the numbers come from :mod:`quantlab.scan` (pure).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from bokeh.models import (BasicTicker, ColorBar, ColumnDataSource, HoverTool, LinearColorMapper,
                          Span)
from bokeh.palettes import RdBu11
from bokeh.plotting import figure

__all__ = ["correlation_heatmap", "lead_lag_figure", "HEATMAP_HOVER"]

#: Figures shown on hover over a heatmap cell (when the table has them).
HEATMAP_HOVER = (
    ("pair", "@y / @x"), ("corr", "@value{0.000}"), ("coint p (BY adj)", "@coint_pvalue_by_adj{0.0000}"),
    ("coint p (raw, max)", "@coint_pvalue{0.0000}"), ("half-life (bars)", "@half_life_bars{0.0}"),
    ("hedge ratio", "@hedge_ratio{0.0000}"), ("Hurst", "@hurst{0.00}"),
    ("crossings", "@n_crossings{0}"), ("selected", "@selected"),
    ("Sharpe (formation)", "@sharpe{0.00}"), ("Sharpe (evaluation)", "@eval_sharpe{0.00}"),
)
_CARRY = ("coint_pvalue_by_adj", "coint_pvalue", "half_life_bars", "hedge_ratio", "hurst",
          "n_crossings", "sharpe", "eval_sharpe")


def correlation_heatmap(table: pd.DataFrame, *, value: str = "corr_returns",
                        symbols: Sequence[str] | None = None, title: str | None = None,
                        size: int = 640) -> Any:
    """A symbols x symbols heatmap of one figure of a scan table.

    Parameters
    ----------
    table : a scan table (:attr:`quantlab.scan.run.ScanResult.table`), one
        row per pair with ``y``, ``x`` and ``value``.
    value : the column coloured, default ``corr_returns`` (correlation of
        one-bar log returns, colour scale -1 .. 1). Another column is scaled
        to its own range.
    symbols : order of the axes (default: sorted symbols of the table).
    title, size : figure title and side in pixels.

    Returns
    -------
    bokeh.plotting.figure
        Both triangles filled (the matrix is symmetric), the diagonal blank;
        selected pairs outlined in black. Hover shows the pair's figures
        (:data:`HEATMAP_HOVER`).
    """
    if value not in table.columns:
        raise KeyError(f"column {value!r} not in the scan table")
    syms = list(symbols) if symbols is not None else sorted(set(table["y"]) | set(table["x"]))
    t = table[table["y"].isin(syms) & table["x"].isin(syms)]
    both = pd.concat([t, t.rename(columns={"y": "x", "x": "y"})], ignore_index=True)
    data: dict[str, Any] = {"y": both["y"].astype(str).to_numpy(),
                            "x": both["x"].astype(str).to_numpy(),
                            "value": both[value].to_numpy(dtype=float)}
    for c in _CARRY:
        data[c] = both[c].to_numpy(dtype=float) if c in both else np.full(len(both), np.nan)
    data["selected"] = (both["selected"].to_numpy(bool) if "selected" in both
                        else np.zeros(len(both), bool))
    data["line"] = np.where(data["selected"], "black", None)
    src = ColumnDataSource(data)
    if value == "corr_returns":
        lo, hi = -1.0, 1.0
    else:
        finite = data["value"][np.isfinite(data["value"])]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if lo == hi:
            hi = lo + 1.0
    mapper = LinearColorMapper(palette=list(reversed(RdBu11)), low=lo, high=hi, nan_color="#eeeeee")
    fig = figure(title=title or f"{value} across {len(syms)} symbols", x_range=syms,
                 y_range=list(reversed(syms)), width=size + 90, height=size,
                 tools="hover,save,reset,box_zoom", toolbar_location="above",
                 x_axis_location="above")
    fig.rect(x="x", y="y", width=1, height=1, source=src, line_color="line", line_width=2,
             fill_color={"field": "value", "transform": mapper})
    fig.select_one(HoverTool).tooltips = list(HEATMAP_HOVER)
    fig.add_layout(ColorBar(color_mapper=mapper, ticker=BasicTicker(desired_num_ticks=9),
                            title=value), "right")
    fig.xaxis.major_label_orientation = math.pi / 3
    fig.grid.grid_line_color = None
    fig.axis.major_label_text_font_size = "9px" if len(syms) > 30 else "11px"
    return fig


def lead_lag_figure(result: Any, *, y: str = "y", x: str = "x", bar_seconds: float | None = None,
                    width: int = 640, height: int = 300) -> Any:
    """Bars of the cross-correlation :math:`\\rho(k) = corr(r^y_t, r^x_{t-k})` by
    lag from :func:`quantlab.scan.lead_lag`; the peak is highlighted and the
    title says which leg leads by how many bars (and seconds when
    ``bar_seconds`` is given)."""
    lags = np.asarray(result.lags)
    corr = np.asarray(result.corr, dtype=float)
    colors = np.where(lags == result.best_lag, "#d62728", "#1f77b4")
    if result.leader is None:
        head = f"{y} and {x} move together (peak at lag 0, rho = {result.best_corr:.3f})"
    else:
        lead, follow = (x, y) if result.leader == "x" else (y, x)
        k = abs(result.best_lag)
        secs = f" = {k * bar_seconds:g} s" if bar_seconds else ""
        head = f"{lead} leads {follow} by {k} bar{'s' if k != 1 else ''}{secs} (rho = {result.best_corr:.3f})"
    src = ColumnDataSource({"lag": lags, "corr": corr, "color": colors})
    fig = figure(title=head, width=width, height=height, tools="hover,save,reset",
                 x_axis_label=f"lag k (bars): corr({y}_t, {x}_t-k); k > 0 means {x} leads",
                 y_axis_label="correlation of returns")
    fig.vbar(x="lag", top="corr", width=0.8, color="color", source=src)
    fig.add_layout(Span(location=0, dimension="width", line_color="#888888"))
    fig.select_one(HoverTool).tooltips = [("lag", "@lag"), ("corr", "@corr{0.0000}")]
    return fig
