"""What the report notebook's cells call: show the header, figures, tables and
stamps of a :class:`~quantlab.reports.study.PairStudy`, and write the run's
summary. Display only (IPython + plain Bokeh, BokehJS inline with the core
bundle only); the computation is in :mod:`quantlab.reports.study`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from quantlab.reports import render

__all__ = ["show_header", "show_figures", "show_tables", "show_honesty", "finish"]


def _html(text: str) -> None:
    from IPython.display import HTML, display

    display(HTML(text))


_bokeh_loaded = False


def _bokeh(obj: Any) -> None:
    """Show a Bokeh object; BokehJS is put inline once per kernel (a second copy
    would add ~1.3 MB to the HTML)."""
    global _bokeh_loaded
    from bokeh.io import output_notebook, show

    from quantlab.reports.figures import bokeh_resources

    if not _bokeh_loaded:
        output_notebook(resources=bokeh_resources(), hide_banner=True)
        _bokeh_loaded = True
    show(obj)


def show_header(study: Any, provenance: Mapping[str, Any], trial_line: str | None = None) -> None:
    """Section 1: what the report is, the verdict, the stamps, parameters, data, versions."""
    _html(render.header_html(study, provenance, trial_line))


def show_figures(study: Any) -> None:
    """Section 2: the linked time-series figures."""
    from quantlab.reports.figures import time_series_figures

    _html("<div class='ql-report'><h2>Time series</h2><p class='ql-note'>Zoom or pan any plot and "
          "the others follow; pick the wheel-zoom tool in a toolbar to zoom with the mouse wheel. "
          "Per-bar values are causal.</p></div>")
    _bokeh(time_series_figures(study))


def show_tables(study: Any) -> None:
    """Section 3: tests, backtest, trades, alerts and the entry x exit sweep."""
    from quantlab.reports.figures import sweep_heatmap

    _html(render.tests_html(study) + render.backtest_html(study) + render.trades_html(study)
          + render.alerts_html(study))
    _html("<div class='ql-report'><h2>Entry x exit sweep</h2><p class='ql-note'>Every cell is a "
          "backtest with the same causal z-score; picking the best cell is itself a trial "
          "(see the deflated Sharpe).</p></div>")
    _bokeh(sweep_heatmap(study))


def show_honesty(study: Any) -> None:
    """Section 4: the causality and lag checks in detail."""
    _html(render.honesty_html(study))


def summary_payload(study: Any, provenance: Mapping[str, Any], extra: Mapping[str, Any] | None = None
                    ) -> dict:
    """What ``report.json`` holds: parameters, data used, hash, versions, headline, timings."""
    headline = study.headline()
    if extra:
        headline.update(extra)
    return {"kind": "pair_report", "parameters": study.params.as_dict(),
            "data": {k: v for k, v in provenance.items() if k != "versions"},
            "bars_sha256": study.digest, "versions": provenance.get("versions"),
            "headline": headline, "timings": dict(study.timings)}


def finish(study: Any, provenance: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict:
    """Write the summary JSON to ``params.summary_path`` (when set); return it."""
    from quantlab.pairs import clean_json

    payload = clean_json(summary_payload(study, provenance, extra))
    path = study.params.summary_path
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    return payload
