"""The steps of ``notebooks/pair_scan.ipynb``, so the notebook stays a handful
of short cells: :func:`validate_parameters` (the tagged parameters cell's
values -> a :class:`ScanJob`, refusing bad values with the parameter's name),
:func:`run_scan`, :func:`ranked_table`, :func:`top_pair_lead_lag`.
No Bokeh here: the notebook draws with :mod:`quantlab.ui.scan_views`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from quantlab.errors import ConfigError
from quantlab.scan.core import ScanSettings, ScanWindows

__all__ = ["PARAMETERS", "ScanJob", "validate_parameters", "run_scan", "ranked_table", "top_pair_lead_lag",
           "RANKED_COLUMNS"]

#: Names of the notebook's parameters that :func:`validate_parameters` reads.
PARAMETERS = ("symbols", "timeframe", "formation", "evaluation", "archive", "db_path", "files",
              "market", "q", "adjust", "min_notional", "entry_z", "exit_z", "fee_bps", "workers",
              "scheduler")

RANKED_COLUMNS = ("y", "x", "coint_pvalue_by_adj", "coint_pvalue_bh_adj", "coint_pvalue",
                  "johansen_trace", "half_life_bars", "hurst", "n_crossings", "ssd",
                  "corr_returns", "hedge_ratio", "liquidity_quote", "illiquid", "sharpe",
                  "eval_sharpe", "eval_total_return", "eval_adf_pvalue", "eval_half_life_bars",
                  "selected")


@dataclasses.dataclass(frozen=True)
class ScanJob:
    """A validated scan: source (one of ``archive``, ``db``, ``files``),
    universe, timeframe, windows, settings, execution."""

    symbols: tuple[str, ...] | None
    timeframe: str
    windows: ScanWindows
    settings: ScanSettings
    archive: str | None = None
    db: str | None = None
    files: tuple[str, ...] | None = None
    market: str | None = None
    workers: int = 1
    scheduler: str | None = None


def _split(text: Any) -> list[str]:
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        return [str(s).strip() for s in text if str(s).strip()]
    return [s.strip() for s in str(text).split(",") if s.strip()]


def validate_parameters(*, symbols: Any = "", timeframe: str = "5m", formation: str = "",
                        evaluation: str = "", archive: str = "", db_path: str = "",
                        files: Any = "", market: str = "", q: float = 0.05, adjust: str = "by",
                        min_notional: float = 0.0, entry_z: float = 2.0, exit_z: float = 0.0,
                        fee_bps: float = 0.0, workers: int = 1, scheduler: str = "",
                        **ignored: Any) -> ScanJob:
    """The notebook's parameters as a :class:`ScanJob`.

    ``symbols`` and ``files`` may be comma-separated strings or lists; empty
    strings mean "not given". Exactly one of ``archive``, ``db_path``,
    ``files`` must be given. Other keyword arguments (display options such as
    ``top_n``) are ignored here.

    Raises
    ------
    ConfigError
        Naming the parameter, what came and what is expected.
    """
    from quantlab.bars import parse_timeframe

    sources = {"archive": archive or None, "db_path": db_path or None,
               "files": tuple(_split(files)) or None}
    given = [k for k, v in sources.items() if v]
    if len(given) != 1:
        raise ConfigError("archive", given or None,
                          "exactly one of archive=, db_path=, files= (set it in the parameters cell)")
    if not formation or not evaluation:
        raise ConfigError("formation" if not formation else "evaluation", "",
                          "START/END in ISO-8601 UTC, e.g. 2024-01-01/2024-01-21")
    parse_timeframe(timeframe)
    syms = tuple(s.upper() for s in _split(symbols)) or None
    if syms is not None and len(syms) < 2:
        raise ConfigError("symbols", symbols, "at least two symbols, or '' for every archived one")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError("workers", workers, "an integer >= 1")
    return ScanJob(symbols=syms, timeframe=timeframe,
                   windows=ScanWindows(formation=formation, evaluation=evaluation),
                   settings=ScanSettings(q=q, adjust=adjust, min_notional=min_notional,
                                         entry_z=entry_z, exit_z=exit_z, fee_bps=fee_bps),
                   archive=sources["archive"], db=sources["db_path"], files=sources["files"],
                   market=market or None, workers=workers, scheduler=scheduler or None)


def run_scan(job: ScanJob, *, progress: bool = False):
    """:func:`quantlab.scan.run.scan` for the job; returns its ScanResult."""
    from quantlab.scan.run import scan

    return scan(list(job.symbols) if job.symbols else None, timeframe=job.timeframe,
                windows=job.windows, settings=job.settings, archive=job.archive, db=job.db,
                files=list(job.files) if job.files else None, market=job.market,
                workers=job.workers, scheduler=job.scheduler, progress=progress)


def ranked_table(table: pd.DataFrame, *, n: int = 20, adjust: str = "by") -> pd.DataFrame:
    """The ``n`` best pairs: selected first, then by adjusted p-value, formation
    half-life, and names (deterministic). 1-based ``rank`` index."""
    col = f"coint_pvalue_{adjust}_adj"
    t = table.assign(_unsel=~table["selected"].astype(bool))
    t = t.sort_values(["_unsel", col, "half_life_bars", "y", "x"], kind="stable",
                      na_position="last").head(int(n))
    out = t[[c for c in RANKED_COLUMNS if c in t.columns]].reset_index(drop=True)
    out.index = pd.RangeIndex(1, len(out) + 1, name="rank")
    return out


def top_pair_lead_lag(job: ScanJob, result: Any, *, max_lag: int = 30, archive: str | None = None):
    """Lead-lag (:func:`quantlab.scan.lead_lag`) of the best-ranked pair on its
    formation window; returns ``(y, x, LeadLagResult, bar_seconds)`` or None
    when the table is empty. ``archive``: the folder to read (default the
    job's archive; a db/files job is re-materialised into a temporary folder)."""
    import tempfile

    from quantlab.scan.leadlag import lead_lag
    from quantlab.scan.source import materialise, pair_window, window_arrays

    top = ranked_table(result.table, n=1, adjust=job.settings.adjust)
    if top.empty:
        return None
    y, x = top.iloc[0]["y"], top.iloc[0]["x"]
    lo, hi = job.windows.formation

    def compute(path: str):
        a = window_arrays(path, y, job.timeframe, job.market, lo, hi)
        b = window_arrays(path, x, job.timeframe, job.market, lo, hi)
        bars = pair_window(a, b)
        return lead_lag(bars.y_close, bars.x_close, max_lag=max_lag), bars.bar_seconds

    path = archive or job.archive
    if path is None:
        with tempfile.TemporaryDirectory(prefix="quantlab-scan-") as tmp:
            materialise(tmp, db=job.db, files=list(job.files) if job.files else None,
                        symbols=[y, x], timeframe=job.timeframe, market=job.market)
            res, secs = compute(tmp)
    else:
        import os

        res, secs = compute(os.path.abspath(path))
    return y, x, res, secs
