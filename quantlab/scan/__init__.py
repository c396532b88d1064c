"""Pair scanner: every pair of a universe, formation figures for selection,
evaluation figures out of sample with the formation's parameters frozen,
multiple-testing adjustment, on a local process pool or a Dask cluster.

* :mod:`quantlab.scan.core` - pure per-pair figures (functions of arrays),
  :class:`ScanWindows`, :class:`ScanSettings`, :func:`adjust_and_select`;
* :mod:`quantlab.scan.leadlag` - pure lead-lag cross-correlation;
* :mod:`quantlab.scan.synthetic` - pure seeded universes (planted pairs);
* :mod:`quantlab.scan.source` - archive reads by path, materialising db/files (I/O);
* :mod:`quantlab.scan.run` - chunking, executors, progress, :func:`scan` (orchestration).

Figures are drawn by :mod:`quantlab.ui.scan_views` (Bokeh), never imported from here.

Example
-------
>>> from quantlab.scan import ScanWindows, ScanSettings, scan      # doctest: +SKIP
>>> res = scan(["BTCUSDT", "ETHUSDT", "SOLUSDT"], archive="data/archive", timeframe="5m",
...            windows=ScanWindows(formation="2024-01-01/2024-03-01",
...                                evaluation="2024-03-01/2024-04-01"))  # doctest: +SKIP
>>> res.selected[["y", "x", "coint_pvalue_by_adj", "eval_sharpe"]]  # doctest: +SKIP
"""
from quantlab.scan.core import (ADJUST_METHODS, EVALUATION_COLUMNS, FORMATION_COLUMNS,
                                TABLE_COLUMNS, FormationParams, PairBars, ScanSettings,
                                ScanWindows, adjust_and_select, evaluation_figures,
                                formation_figures, pair_figures)
from quantlab.scan.leadlag import LeadLagResult, lead_lag

__all__ = ["ScanWindows", "ScanSettings", "PairBars", "FormationParams", "formation_figures",
           "evaluation_figures", "pair_figures", "adjust_and_select", "FORMATION_COLUMNS",
           "EVALUATION_COLUMNS", "TABLE_COLUMNS", "ADJUST_METHODS", "LeadLagResult", "lead_lag",
           "scan", "ScanResult", "Progress", "plan_chunks", "run_chunk", "ChunkTask"]


def __getattr__(name: str):
    # orchestration (process pools, Dask) loads on first use: `import quantlab.scan`
    # stays as light as the pure modules
    if name in ("scan", "ScanResult", "Progress", "plan_chunks", "run_chunk", "ChunkTask"):
        from quantlab.scan import run

        return getattr(run, name)
    raise AttributeError(f"module 'quantlab.scan' has no attribute {name!r}")
