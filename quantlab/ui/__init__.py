"""The notebook UI: the only part of quantlab that imports Bokeh, ipywidgets and
jupyter_bokeh. It runs no feed itself: the feed (source, ingester, history and
correction reads, alert log, status figures) is a :class:`quantlab.live.LiveSession`,
which the monitor builds widgets and plots for and reads.

* :mod:`quantlab.ui.pump` - the one UI pump on the kernel's loop (no Bokeh);
* :mod:`quantlab.ui.pipeline` - trades -> pair bars -> analytics rows (no Bokeh);
* :mod:`quantlab.ui.plots` - the streaming Bokeh figures;
* :mod:`quantlab.ui.monitor` - :class:`LiveMonitor`, the widget panel: its lifecycle
  (start, stop, the pump's step, history, late-bar corrections, status strip), built from
  :mod:`quantlab.ui.panels` (one ``PairView`` per pair, the HTML helpers),
  :mod:`quantlab.ui.controls` (:class:`MonitorParams`, the widgets and what they change) and
  :mod:`quantlab.ui.actions` (ADF, export, features, report, files, summary).

``import quantlab.ui`` itself imports nothing heavy; ``LiveMonitor`` and
``build_monitor`` are loaded on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["LiveMonitor", "MonitorParams", "build_monitor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from quantlab.ui import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module 'quantlab.ui' has no attribute {name!r}")
