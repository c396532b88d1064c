"""The public entry points: :func:`backtest` (one pair, one rule set) and
:func:`sweep` (every window x entry x exit; ``_sweep_cells`` also keeps each
cell's per-bar PnL for :func:`quantlab.analytics.sweep_overfit`), with the
default causal rolling beta/z per window. Pure.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

# One implementation per rule (issue 14): the default rolling beta/z of sweep() is
# quantlab.analytics' (rolling_ols + rolling_zscore).
from quantlab.analytics.hedge import rolling_beta_zscore
from quantlab.backtest.engine import _column, _half_life, _prices, _signals, _simulate
from quantlab.backtest.settings import SUMMARY_KEYS, BacktestSettings, _resolve
from quantlab.backtest.stats import BacktestResult, _equity_frame, _stats, _trades_frame
from quantlab.errors import ConfigError

logger = logging.getLogger(__name__)


# --- public entry points --------------------------------------------------------------------
def backtest(data: pd.DataFrame | Mapping[str, Any], settings: BacktestSettings | None = None,
             **overrides: Any) -> BacktestResult:
    """Backtest the z-score mean-reversion rules on one pair.

    Parameters
    ----------
    data : DataFrame or mapping of arrays
        One row per bar, oldest first, with columns ``y_open``, ``y_close``,
        ``x_open``, ``x_close`` (quote per unit, finite and > 0), ``beta`` and
        ``zscore`` (causal: value at bar t uses bars <= t; NaN during warm-up),
        optionally ``half_life`` (bars). A DataFrame's index (``open_time``,
        UTC) labels trades and gives the bar size; a mapping may carry a
        ``time`` array, else rows are numbered and ``bar_seconds`` is needed for
        annualised statistics.
    settings : BacktestSettings, optional
        Rules, sizing and costs; defaults to ``BacktestSettings()``.
    **overrides
        Fields of :class:`BacktestSettings` to change, e.g. ``entry=2.5``.

    Returns
    -------
    BacktestResult
        Trades, per-bar equity curve and :class:`BacktestStats`.

    Raises
    ------
    ConfigError
        A setting is invalid, a column is missing, or prices are not finite
        and positive.
    InsufficientData
        Fewer than 2 bars.
    """
    s = _resolve(settings, overrides)
    p = _prices(data, s)
    n = p.y_open.size
    beta, z = _signals(data, n)
    hl = _half_life(data, s, n)
    sim = _simulate(p, beta, z, hl, s)
    stats = _stats(sim, p.bar_seconds, s)
    return BacktestResult(settings=s, trades=_trades_frame(sim, p, z),
                          equity=_equity_frame(sim, p, z), stats=stats)


# --- default causal z-score per window ------------------------------------------------------
def default_zscore_for_window(data: pd.DataFrame | Mapping[str, Any]
                              ) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``window -> (beta, zscore)`` for :func:`sweep`, from the data's closes.

    Uses :func:`quantlab.analytics.hedge.rolling_beta_zscore` (also importable as
    ``quantlab.backtest.rolling_beta_zscore``) on ``y_close`` and ``x_close``:
    rolling OLS :math:`\\beta_t` and the z-score of :math:`y_t - \\beta_t x_t`, one window.
    """
    y = _column(data, "y_close", None, prices=True)
    x = _column(data, "x_close", y.size, prices=True)
    return lambda window: rolling_beta_zscore(y, x, window)


def sweep(data: pd.DataFrame | Mapping[str, Any], *, entries: Iterable[float],
          exits: Iterable[float], windows: Iterable[int] | None = None,
          zscore_for_window: Callable[[int], tuple[Any, Any]] | None = None,
          settings: BacktestSettings | None = None, **overrides: Any) -> pd.DataFrame:
    """Backtest every (window, entry, exit) combination; one row each.

    The z-score is computed once per window, then each (entry, exit) pair runs
    the same engine as :func:`backtest` without building the trade and equity
    frames. Combinations with ``|exit| >= entry`` (or ``stop <= entry``) are
    not valid rules and are skipped.

    Parameters
    ----------
    data : DataFrame or mapping
        As for :func:`backtest`. ``beta``/``zscore`` columns are needed only
        when ``windows`` is None.
    entries, exits : iterables of float
        Entry and exit levels in z units.
    windows : iterable of int, optional
        Rolling windows in bars. None uses the data's own ``beta``/``zscore``
        (the ``window`` column is then None).
    zscore_for_window : callable, optional
        ``window -> (beta, zscore)``, arrays of one value per bar, causal.
        Default: :func:`default_zscore_for_window` (rolling OLS on the closes).
        Pass e.g. ``lambda w: (a := analyze(aligned, window=w))["beta"],
        a["zscore"]`` to sweep the analytics module's definition.
    settings, **overrides
        Everything else (stop, fees, fill, sizing, ...), as for :func:`backtest`.

    Returns
    -------
    DataFrame
        Columns ``window``, ``entry``, ``exit`` followed by :data:`SUMMARY_KEYS`.
    """
    return _sweep_cells(data, entries=entries, exits=exits, windows=windows,
                        zscore_for_window=zscore_for_window, settings=settings,
                        overrides=overrides)[0]


def _sweep_cells(data: pd.DataFrame | Mapping[str, Any], *, entries: Iterable[float],
                 exits: Iterable[float], windows: Iterable[int] | None,
                 zscore_for_window: Callable[[int], tuple[Any, Any]] | None,
                 settings: BacktestSettings | None, overrides: Mapping[str, Any],
                 keep_pnl: bool = False
                 ) -> tuple[pd.DataFrame, list[np.ndarray] | None, pd.Index]:
    """:func:`sweep`'s engine. With ``keep_pnl`` it also returns each row's
    per-bar net PnL (bars 1..n-1, the ``pnl`` column of :func:`backtest`'s
    equity frame) and their index, so that
    :func:`quantlab.analytics.sweep_overfit` simulates every cell once."""
    base = _resolve(settings, overrides)
    p = _prices(data, base)
    n = p.y_open.size
    entries = [float(v) for v in entries]
    exits = [float(v) for v in exits]
    if not entries or not exits:
        raise ConfigError("entries" if not entries else "exits", [], "at least one z level")
    if windows is None:
        sources: list[tuple[int | None, Callable[[], tuple[Any, Any]]]] = [
            (None, lambda: _signals(data, n))]
    else:
        zfw = zscore_for_window or default_zscore_for_window(data)
        sources = [(int(w), (lambda w=w: zfw(w))) for w in windows]
        if not sources:
            raise ConfigError("windows", [], "at least one window in bars, or None")
    hl = _half_life(data, base, n)
    rows: list[dict[str, Any]] = []
    pnls: list[np.ndarray] | None = [] if keep_pnl else None
    skipped = 0
    for window, make in sources:
        b_raw, z_raw = make()
        beta = np.asarray(b_raw, dtype=np.float64).ravel()
        z = np.asarray(z_raw, dtype=np.float64).ravel()
        if beta.size != n or z.size != n:
            raise ConfigError("zscore_for_window", f"arrays of {beta.size} and {z.size} values",
                              f"(beta, zscore) with {n} values each, one per bar")
        cache: dict = {}  # "next bar where z crosses a level" arrays, per window
        for entry in entries:
            for ex in exits:
                if abs(ex) >= entry or entry <= 0 or (base.stop is not None and base.stop <= entry):
                    skipped += 1
                    continue
                s = dataclasses.replace(base, entry=entry, exit=ex)
                sim = _simulate(p, beta, z, hl, s, cache)
                stats = _stats(sim, p.bar_seconds, s)
                rows.append({"window": window, "entry": entry, "exit": ex, **stats.summary()})
                if pnls is not None:
                    pnls.append(sim.pnl[1:])
    if not rows:
        raise ConfigError("exits", exits, f"at least one exit level with |exit| < entry "
                          f"(entries {entries})")
    if skipped:
        logger.debug("sweep: skipped %d invalid (entry, exit) combinations", skipped)
    table = pd.DataFrame(rows, columns=["window", "entry", "exit", *SUMMARY_KEYS])
    return table, pnls, p.index[1:]
