"""Batch replay: :func:`replay_alerts`, the events rules would have fired over a
history of metric values, vectorised per rule (``_candidates`` is the array form
of the engine's ``_step``; only candidate edges are walked in Python, for the
cooldown). :data:`EVENT_COLUMNS` are its columns.

Pure numpy/pandas: no I/O.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from quantlab.alerts.events import AlertEvent, _event
from quantlab.alerts.rules import _LEVEL_OPS, AlertRule, parse_rule
from quantlab.errors import ConfigError

__all__ = ["EVENT_COLUMNS", "replay_alerts"]

#: Columns of :func:`replay_alerts`.
EVENT_COLUMNS = ("time", "time_ms", "rule", "name", "metric", "op", "value", "threshold",
                 "pair", "message")


def _ffill_last(marks: np.ndarray) -> np.ndarray:
    """Value of the last nonzero mark strictly before each position (0 if none)."""
    n = marks.size
    idx = np.where(marks != 0, np.arange(n), -1)
    last = np.maximum.accumulate(idx)
    prev = np.empty(n, dtype=np.int64)
    prev[0] = -1
    prev[1:] = last[:-1]
    return np.where(prev >= 0, marks[np.maximum(prev, 0)], 0)


def _candidates(rule: AlertRule, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions where ``rule`` has an edge (before cooldown) and its direction.

    Vectorised form of :func:`_step`: level rules are set/reset flip-flops
    (the condition and the re-arm condition are exclusive), cross rules a side
    that changes only on "above"/"below" marks. NaN compares False: no mark.
    """
    c, h, op = rule.threshold, rule.hysteresis, rule.op
    with np.errstate(invalid="ignore"):
        if op in _LEVEL_OPS:
            if op == ">":
                cond, rearm = v > c, v <= c - h
            elif op == ">=":
                cond, rearm = v >= c, v < c - h
            elif op == "<":
                cond, rearm = v < c, v >= c + h
            else:
                cond, rearm = v <= c, v > c + h
            marks = np.where(cond, -1, np.where(rearm, 1, 0)).astype(np.int8)
            prev = _ffill_last(marks)
            pos = np.flatnonzero(cond & (prev != -1))  # armed: last mark a re-arm, or none
            return pos, np.full(pos.size, op in (">", ">="))
        side = np.where(v > c + h, 1, np.where(v < c - h, -1, 0)).astype(np.int8)
    prev = _ffill_last(side)
    change = (side != 0) & (prev != 0) & (side != prev)
    if op == "crosses above":
        change &= side == 1
    elif op == "crosses below":
        change &= side == -1
    pos = np.flatnonzero(change)
    return pos, side[pos] == 1


def _time_ms(index: pd.Index) -> np.ndarray:
    if isinstance(index, pd.DatetimeIndex):
        idx = index if index.tz is not None else index.tz_localize("UTC")
        return np.asarray(idx.as_unit("ms").asi8, dtype=np.int64)
    if pd.api.types.is_integer_dtype(index.dtype):
        return np.asarray(index, dtype=np.int64)
    raise ConfigError("frame.index", type(index).__name__,
                      "a DatetimeIndex (UTC) or integer ms since the epoch")


def replay_alerts(frame: pd.DataFrame, rules: Iterable[AlertRule | str], pair: str) -> pd.DataFrame:
    """Events the rules would have fired over a history of metric values.

    Same semantics as feeding each row, in order, to a fresh
    :class:`AlertEngine` (a test checks they agree), but vectorised per rule:
    only the candidate edges are walked in Python (for the cooldown).

    Parameters
    ----------
    frame : DataFrame
        Index: time (``DatetimeIndex``, UTC; or integer ms), sorted. Columns:
        metrics (e.g. the output of :func:`quantlab.analytics.analyze`);
        columns that are not metrics are ignored.
    rules : iterable of AlertRule or str
    pair : str

    Returns
    -------
    DataFrame
        One row per event, sorted by time then rule order, columns
        :data:`EVENT_COLUMNS`: ``time`` (UTC timestamp), ``time_ms``, ``rule``
        (expression), ``name``, ``metric``, ``op``, ``value``, ``threshold``,
        ``pair``, ``message``.

    Raises
    ------
    ConfigError
        A rule's metric is not a column of ``frame`` (names the columns), or
        the index is not time.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t = pd.date_range("2024-01-01", periods=400, freq="1min", tz="UTC")
    >>> z = pd.DataFrame({"zscore": 3 * np.sin(np.arange(400) * 2 * np.pi / 100 + 0.1)}, index=t)
    >>> ev = replay_alerts(z, ["zscore crosses 0", "zscore > 2"], "BTCUSDT/ETHUSDT")
    >>> ev.groupby("rule").size().to_dict()
    {'zscore > 2': 4, 'zscore crosses 0': 8}
    """
    rules = [parse_rule(r) for r in rules]
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError("frame", type(frame).__name__, "a DataFrame of metrics indexed by time")
    for r in rules:
        if r.metric not in frame.columns:
            raise ConfigError("frame", f"columns {list(frame.columns)}",
                              f"a column {r.metric!r} for rule {r.expression!r}")
    times = _time_ms(frame.index)
    if times.size > 1 and bool((np.diff(times) < 0).any()):
        raise ConfigError("frame.index", "unsorted times", "times in increasing order (sort_index())")
    parts: list[tuple[int, int, AlertEvent]] = []
    for k, rule in enumerate(rules):
        v = frame[rule.metric].to_numpy(dtype=np.float64)
        pos, up = _candidates(rule, v)
        last: int | None = None
        for i, u in zip(pos.tolist(), up.tolist()):
            t = int(times[i])
            if last is not None and rule.cooldown_s > 0 and t - last < rule.cooldown_s * 1000.0:
                continue
            last = t
            parts.append((i, k, _event(rule, pair, t, float(v[i]), u)))
    parts.sort(key=lambda p: (p[0], p[1]))
    rows = [p[2].to_dict() for p in parts]
    out = pd.DataFrame(rows, columns=[c for c in EVENT_COLUMNS if c != "time"] + ["time_iso"])
    out.insert(0, "time", pd.to_datetime(out["time_ms"].astype(np.int64), unit="ms", utc=True))
    return out[list(EVENT_COLUMNS)].reset_index(drop=True)
