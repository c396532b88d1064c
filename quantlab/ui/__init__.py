"""The notebook UI: the only part of quantlab that imports Bokeh, ipywidgets and
jupyter_bokeh.

* :mod:`quantlab.ui.pump` - the one UI pump on the kernel's loop (no Bokeh);
* :mod:`quantlab.ui.pipeline` - trades -> pair bars -> analytics rows (no Bokeh);
* :mod:`quantlab.ui.plots` - the streaming Bokeh figures;
* :mod:`quantlab.ui.monitor` - :class:`LiveMonitor`, the widget panel.

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
