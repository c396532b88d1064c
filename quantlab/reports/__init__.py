"""Pair reports: papermill runs ``notebooks/pair_report.ipynb`` headless with
parameters; nbconvert writes self-contained offline HTML.

Entry points
------------
:func:`run_report`, :func:`run_batch`, :func:`start_report`
    Run one report, a batch (with ``index.html``), or one in the background.
:func:`notebook_parameters`, :func:`validate_parameters`, :class:`ReportParameters`
    The notebook's parameters, validated (unknown names refused).
:func:`load_report_data`, :func:`study_pair`
    The notebook's load and compute steps (the same functions the CLI calls).
:func:`show_header`, :func:`show_figures`, :func:`show_tables`, :func:`show_honesty`, :func:`finish`
    The notebook's display steps and its summary JSON.

Submodules are imported on first use, so ``import quantlab.reports`` is cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ReportParameters": "parameters", "validate_parameters": "parameters",
    "notebook_parameters": "parameters", "parameter_names": "parameters",
    "load_report_data": "data", "package_versions": "data",
    "study_pair": "study", "PairStudy": "study",
    "show_header": "notebook", "show_figures": "notebook", "show_tables": "notebook",
    "show_honesty": "notebook", "finish": "notebook",
    "run_report": "runner", "run_batch": "runner", "start_report": "runner",
    "ReportOutcome": "runner", "ReportJob": "runner", "parse_pairs": "runner",
    "write_index": "index", "record_trial": "trials",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'quantlab.reports' has no attribute {name!r}")
    return getattr(importlib.import_module(f"quantlab.reports.{_EXPORTS[name]}"), name)
