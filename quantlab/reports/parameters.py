"""The parameters of the pair report, validated in one place.

The report notebook's first code cell calls :func:`notebook_parameters` on its
own globals (papermill only *warns* about unknown names, so a misspelt ``-p
windw 90`` would otherwise run with the default). ``quantlab report`` calls
:func:`validate_parameters` before it starts a kernel, so a wrong value fails
in well under a second, with exit code 2.

Pure: no I/O.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
from typing import Any, Mapping

from quantlab.config import MARKETS, require_choice
from quantlab.errors import ConfigError

__all__ = ["ReportParameters", "validate_parameters", "notebook_parameters", "coerce_cli_value",
           "parameter_names"]

#: Names IPython itself puts in a kernel's namespace; never report parameters.
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def lookback_seconds(text: str) -> float:
    """``"30d"`` -> 2592000.0; units s, m, h, d, w.

    >>> lookback_seconds("12h")
    43200.0
    """
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError("lookback", text, "a duration such as 30d, 12h, 90m or 2w")
    return float(m.group(1)) * _DURATION_S[m.group(2)]


def _rules_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        parts = value.replace(";", "\n").splitlines()
    elif isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        raise ConfigError("alert_rules", value, 'rules as text, one per line, e.g. "zscore > 2"')
    return tuple(p.strip() for p in parts if p.strip())


def _levels(field: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(field, value, "a list of z levels such as [1.5, 2.0, 2.5]") from exc
    if not out or not all(math.isfinite(v) for v in out):
        raise ConfigError(field, value, "a non-empty list of finite z levels")
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportParameters:
    """Everything a pair report depends on. Frozen, keyword-only.

    Parameters
    ----------
    symbol_y, symbol_x : str
        Dependent and independent legs (the spread is :math:`y - \\beta x - \\alpha`).
    market : {"spot", "usdm"} or None
        Market, when the source holds both.
    timeframe : str
        Bar size (``"1m"``, ``"5m"``, ``"1h"`` ...).
    start, end : str or None
        ISO-8601 UTC, ``[start, end)``.
    lookback : str or None
        Instead of ``start``: the last ``lookback`` (``"30d"``, ``"12h"``) of the data
        before ``end`` (or before the last bar).
    window : int
        Rolling window in bars (hedge ratio, z-score, correlation).
    hedge : str
        ``rolling-ols`` (default), ``ols``, ``huber``, ``theil-sen`` or ``kalman``
        (``_`` spellings accepted).
    z_entry, z_exit, z_stop : float
        Backtest levels in z units (``z_stop`` None disables the stop).
    fee_bps, slippage_bps : float
        Cost per leg per side, basis points of traded notional.
    fill : {"next_open", "next_close"}
        Fill of a signal on bar t, on bar t+1.
    alert_rules : str or list of str
        Alert rules replayed over the history, one per line (``"zscore > 2"``).
    db_path, files, archive : exactly one
        Tick store, data files, or a Parquet archive folder.
    max_carry_bars : int
        A silent leg's close is carried this many bars; beyond, the bar is a gap.
    sweep_entries, sweep_exits : list of float
        The entry x exit grid of the net-Sharpe heatmap.
    plot_points : int
        Points per plotted series after downsampling (every statistic uses all bars).
    title : str or None
        Report title (default: the pair).
    summary_path : str or None
        Where the run writes its JSON summary (``quantlab report`` sets it).
    ledger_path : str or None
        Trial ledger (default: ``QUANTLAB_LEDGER``, else beside the store, else
        ``ledger.sqlite`` in the directory ``quantlab report`` runs from).
    """

    symbol_y: str = "BTCUSDT"
    symbol_x: str = "ETHUSDT"
    market: str | None = None
    timeframe: str = "1m"
    start: str | None = None
    end: str | None = None
    lookback: str | None = None
    window: int = 60
    hedge: str = "rolling-ols"
    z_entry: float = 2.0
    z_exit: float = 0.0
    z_stop: float | None = None
    fee_bps: float = 4.0
    slippage_bps: float = 0.0
    fill: str = "next_open"
    alert_rules: Any = ("zscore > 2", "zscore < -2")
    db_path: str | None = None
    files: Any = None
    archive: str | None = None
    max_carry_bars: int = 5
    sweep_entries: Any = (1.0, 1.5, 2.0, 2.5, 3.0)
    sweep_exits: Any = (-0.5, 0.0, 0.5, 1.0)
    plot_points: int = 2000
    title: str | None = None
    summary_path: str | None = None
    ledger_path: str | None = None

    def __post_init__(self) -> None:
        from quantlab.analytics._base import normalise_hedge
        from quantlab.bars import parse_timeframe

        set_ = object.__setattr__
        for name in ("symbol_y", "symbol_x"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(name, v, "a symbol such as BTCUSDT")
            set_(self, name, v.strip().upper())
        if self.symbol_y == self.symbol_x:
            raise ConfigError("symbol_x", self.symbol_x, "a symbol different from symbol_y")
        if self.market is not None:
            require_choice("market", self.market, MARKETS)
        if not isinstance(self.timeframe, str):
            raise ConfigError("timeframe", self.timeframe, 'a bar size such as "1m"')
        parse_timeframe(self.timeframe)
        for name in ("start", "end", "lookback", "title", "summary_path", "ledger_path",
                     "db_path", "archive"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                set_(self, name, str(v))
        if self.lookback is not None:
            if self.start is not None:
                raise ConfigError("lookback", self.lookback, "None when start is given (one or the other)")
            lookback_seconds(self.lookback)
        for name, minimum in (("window", 3), ("max_carry_bars", 0), ("plot_points", 100)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ConfigError(name, v, f"an integer >= {minimum}")
        set_(self, "hedge", normalise_hedge(self.hedge))
        sources = [n for n in ("db_path", "files", "archive") if getattr(self, n) not in (None, "", [])]
        if len(sources) != 1:
            raise ConfigError("db_path", {n: getattr(self, n) for n in ("db_path", "files", "archive")},
                              "exactly one data source: db_path=, files= or archive=")
        if self.files is not None:
            files = [self.files] if isinstance(self.files, str) else list(self.files)
            set_(self, "files", tuple(str(f) for f in files))
        set_(self, "alert_rules", _rules_list(self.alert_rules))
        from quantlab.alerts import parse_rule

        for rule in self.alert_rules:
            parse_rule(rule)
        set_(self, "sweep_entries", _levels("sweep_entries", self.sweep_entries))
        set_(self, "sweep_exits", _levels("sweep_exits", self.sweep_exits))
        for name in ("z_entry", "z_exit", "fee_bps", "slippage_bps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(name, v, "a number")
            set_(self, name, float(v))
        if self.z_stop is not None:
            if isinstance(self.z_stop, bool) or not isinstance(self.z_stop, (int, float)):
                raise ConfigError("z_stop", self.z_stop, "None or a number")
            set_(self, "z_stop", float(self.z_stop))
        self.backtest_settings()  # the backtest's own rules (entry > 0, |exit| < entry, ...)

    def backtest_settings(self):
        """The :class:`quantlab.backtest.BacktestSettings` these parameters mean."""
        from quantlab.backtest import BacktestSettings

        return BacktestSettings(entry=self.z_entry, exit=self.z_exit, stop=self.z_stop,
                                fee_bps=self.fee_bps, slippage_bps=self.slippage_bps,
                                fill=self.fill)

    @property
    def pair(self) -> str:
        return f"{self.symbol_y}/{self.symbol_x}"

    def source(self) -> dict:
        """``{"db": ...}``, ``{"files": [...]}`` or ``{"archive": ...}`` for load_pair_bars."""
        if self.db_path:
            return {"db": self.db_path}
        if self.files:
            return {"files": list(self.files)}
        return {"archive": self.archive}

    def as_dict(self) -> dict:
        """Plain JSON-friendly values (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


def parameter_names() -> list[str]:
    """Every valid parameter name, in the order of the notebook's parameters cell."""
    return [f.name for f in dataclasses.fields(ReportParameters)]


def validate_parameters(values: Mapping[str, Any]) -> ReportParameters:
    """:class:`ReportParameters` from a mapping; an unknown name is refused with the
    list of valid names.

    >>> validate_parameters({"windw": 90, "files": ["a.csv"]})
    Traceback (most recent call last):
    ...
    quantlab.errors.ConfigError: windw: expected a report parameter (fix the name; valid: symbol_y, symbol_x, market, timeframe, start, end, lookback, window, hedge, z_entry, z_exit, z_stop, fee_bps, slippage_bps, fill, alert_rules, db_path, files, archive, max_carry_bars, sweep_entries, sweep_exits, plot_points, title, summary_path, ledger_path), got 90
    """
    names = parameter_names()
    for key, value in values.items():
        if key not in names:
            raise ConfigError(key, value, f"a report parameter (fix the name; valid: {', '.join(names)})")
    return ReportParameters(**dict(values))


def notebook_parameters(namespace: Mapping[str, Any]) -> ReportParameters:
    """Validate the report notebook's parameters from its globals.

    Every public global that is not a module, a function or one of IPython's own
    names counts as a parameter: the cells before this call hold only the
    parameters and papermill's injected parameters, so anything else is a name
    papermill was given that the notebook does not know.
    """
    values = {k: v for k, v in namespace.items()
              if not k.startswith("_") and k not in _KERNEL_NAMES
              and not isinstance(v, (types.ModuleType, types.FunctionType, type))}
    return validate_parameters(values)


def coerce_cli_value(text: str) -> Any:
    """A ``-p NAME VALUE`` string as the value it spells: int, float, bool, None,
    a JSON list, else the text itself.

    >>> coerce_cli_value("90"), coerce_cli_value("2.5"), coerce_cli_value("none"), coerce_cli_value("kalman")
    (90, 2.5, None, 'kalman')
    >>> coerce_cli_value("[1, 2]")
    [1, 2]
    """
    import json

    t = text.strip()
    low = t.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if t.startswith("[") and t.endswith("]"):
        try:
            return json.loads(t)
        except ValueError:
            return text
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return text
