"""Timeframes and the helpers every bar builder shares: :func:`parse_timeframe`
(``"1m"`` -> 60000 ms), the size guard :data:`MAX_BARS`, window checks and the
assembly of a bar frame from per-bar arrays. Pure numpy/pandas.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError
from quantlab.schema import BAR_COLUMNS, BAR_DTYPES, ms_to_utc_index


#: Refuse to build more bars than this in one call (about 1 GB of output); a
#: stray timestamp (0, or microseconds read as milliseconds) would otherwise
#: ask for billions of rows.
MAX_BARS = 20_000_000

# --- timeframes ---------------------------------------------------------------
# Case matters: Binance "1m" is a minute and "1M" a month; pandas "MS" is month
# start, not milliseconds. Months and weeks are not fixed-length (or not
# epoch-aligned in Binance's sense) and are rejected.
_UNIT_MS = {
    "ms": 1, "L": 1,
    "s": 1_000, "S": 1_000, "sec": 1_000,
    "m": 60_000, "min": 60_000, "T": 60_000,
    "h": 3_600_000, "H": 3_600_000,
    "d": 86_400_000, "D": 86_400_000,
}
_TF_RE = re.compile(r"^\s*(\d*)\s*([A-Za-z]+)\s*$")
_TF_EXPECTED = ("a positive whole duration such as '250ms', '1s', '30S', '1m', '1min', '1T', "
                "'5m', '15m', '1h', '1H', '4h', '1d' (units ms/L, s/S/sec, m/min/T, h/H, d/D; "
                "weeks and months are not supported), or a positive int of milliseconds")


def parse_timeframe(tf: str | int) -> int:
    """Length of a bar timeframe in milliseconds.

    Parameters
    ----------
    tf : str or int
        Binance interval style (``"250ms"``, ``"1s"``, ``"1m"``, ``"5m"``,
        ``"15m"``, ``"1h"``, ``"4h"``, ``"1d"``) or pandas alias (``"1min"``,
        ``"5min"``, ``"1T"``, ``"1H"``, ``"30S"``, ``"1D"``). A missing number
        means 1 (``"min"``). An ``int`` is taken as milliseconds.

    Returns
    -------
    int
        Milliseconds, > 0.

    Raises
    ------
    ConfigError
        With ``field="timeframe"`` for anything else (``"1x"``, ``"0m"``,
        ``"-5s"``, ``"1M"`` month, ``1.5``).

    Examples
    --------
    >>> parse_timeframe("1m"), parse_timeframe("5min"), parse_timeframe("1H")
    (60000, 300000, 3600000)
    >>> parse_timeframe("250ms"), parse_timeframe("30S"), parse_timeframe("1d")
    (250, 30000, 86400000)
    >>> parse_timeframe("0m")
    Traceback (most recent call last):
    ...
    quantlab.errors.ConfigError: timeframe: expected a positive whole duration such as '250ms', '1s', '30S', '1m', '1min', '1T', '5m', '15m', '1h', '1H', '4h', '1d' (units ms/L, s/S/sec, m/min/T, h/H, d/D; weeks and months are not supported), or a positive int of milliseconds, got '0m'
    """
    if isinstance(tf, (int, np.integer)) and not isinstance(tf, (bool, np.bool_)):
        if tf > 0:
            return int(tf)
        raise ConfigError("timeframe", tf, _TF_EXPECTED)
    if not isinstance(tf, str):
        raise ConfigError("timeframe", tf, _TF_EXPECTED)
    match = _TF_RE.match(tf)
    if match is None or match.group(2) not in _UNIT_MS:
        raise ConfigError("timeframe", tf, _TF_EXPECTED)
    number = int(match.group(1)) if match.group(1) else 1
    if number <= 0:
        raise ConfigError("timeframe", tf, _TF_EXPECTED)
    return number * _UNIT_MS[match.group(2)]


# --- shared helpers -------------------------------------------------------------
def _opt_ms(field: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(field, value, "an int of milliseconds since the epoch (UTC) or None")
    return int(value)


def _check_window(start_ms: int | None, end_ms: int | None) -> None:
    if start_ms is not None and end_ms is not None and end_ms < start_ms:
        raise ConfigError("end_ms", end_ms, f"a time >= start_ms={start_ms}")


def _check_size(nbars: int, tf: int) -> None:
    if nbars > MAX_BARS:
        raise ConfigError("timeframe", tf,
                          f"at most MAX_BARS={MAX_BARS} bars per call, but the range needs "
                          f"{nbars}; pass start_ms/end_ms or a coarser timeframe (a stray "
                          f"timestamp, e.g. microseconds read as ms, also causes this)")


def _empty_frame() -> pd.DataFrame:
    index = ms_to_utc_index(np.empty(0, dtype=np.int64))
    return pd.DataFrame({c: np.empty(0, dtype=BAR_DTYPES[c]) for c in BAR_COLUMNS}, index=index)


def _assemble(tf: int, first_bin: int, last_bin: int, bins: np.ndarray, o: np.ndarray,
              h: np.ndarray, lo: np.ndarray, c: np.ndarray, vol: np.ndarray, quote: np.ndarray,
              count: np.ndarray, buy: np.ndarray, seed: float, now_ms: int | None,
              forming: np.ndarray | None = None) -> pd.DataFrame:
    """Bars ``first_bin..last_bin`` from the aggregates of the non-empty bars
    ``bins`` (sorted, unique, inside the range); empties carried from the
    previous close, or from ``seed`` before the first non-empty bar.
    ``forming``: optional extra ``is_forming`` flags, one per output bar."""
    nbars = last_bin - first_bin + 1
    if nbars <= 0:
        return _empty_frame()
    _check_size(nbars, tf)
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = np.where(vol > 0, quote / np.where(vol > 0, vol, 1.0), c)
    pos = bins - first_bin
    if pos.size == nbars:  # dense: every bar traded
        cols = {"open": o, "high": h, "low": lo, "close": c, "volume": vol,
                "quote_volume": quote, "trade_count": count, "vwap": vwap,
                "taker_buy_volume": buy, "is_empty": np.zeros(nbars, dtype=bool)}
    else:
        # Index of the last non-empty bar at or before each bar (-1: none yet).
        last = np.full(nbars, -1, dtype=np.int64)
        last[pos] = np.arange(pos.size)
        np.maximum.accumulate(last, out=last)
        if pos.size:
            carry = np.where(last >= 0, c[np.maximum(last, 0)], seed)
        else:
            carry = np.full(nbars, seed, dtype=np.float64)
        cols = {}
        for name, vals in (("open", o), ("high", h), ("low", lo), ("close", c), ("vwap", vwap)):
            full = carry.copy()
            full[pos] = vals
            cols[name] = full
        for name, vals, dtype in (("volume", vol, np.float64), ("quote_volume", quote, np.float64),
                                  ("trade_count", count, np.int64),
                                  ("taker_buy_volume", buy, np.float64)):
            full = np.zeros(nbars, dtype=dtype)
            full[pos] = vals
            cols[name] = full
        is_empty = np.ones(nbars, dtype=bool)
        is_empty[pos] = False
        cols["is_empty"] = is_empty
    open_ms = (np.arange(nbars, dtype=np.int64) + first_bin) * tf
    is_forming = np.zeros(nbars, dtype=bool)
    if now_ms is not None:
        is_forming |= open_ms + tf > now_ms
    if forming is not None:  # full-length flags from the source (aggregate_bars)
        is_forming |= forming
    cols["is_forming"] = is_forming
    frame = pd.DataFrame({k: np.asarray(cols[k], dtype=BAR_DTYPES[k]) for k in BAR_COLUMNS},
                         index=ms_to_utc_index(open_ms))
    return frame


def _sort_order(t: np.ndarray, ids: np.ndarray | None) -> np.ndarray | None:
    """Permutation sorting by ``(t, ids)``, or None when already sorted."""
    if t.size < 2:
        return None
    if bool((t[1:] >= t[:-1]).all()):
        if ids is None:
            return None
        # Binance ids grow with time: one cheap pass settles the usual case.
        if bool((ids[1:] >= ids[:-1]).all()):
            return None
        ties = np.flatnonzero(t[1:] == t[:-1])
        if ties.size == 0 or bool((ids[ties + 1] >= ids[ties]).all()):
            return None
    # A stable argsort keeps the input order of full ties (duplicates) and is
    # adaptive (timsort): near-sorted input, e.g. a few late trades, sorts in
    # about linear time. One combined (time, id) key beats lexsort; fall back
    # to lexsort when the key could overflow int64.
    if ids is None:
        return np.argsort(t, kind="stable")
    t_min, i_min = int(t.min()), int(ids.min())
    t_span, i_span = int(t.max()) - t_min + 1, int(ids.max()) - i_min + 1
    if t_span * i_span < 2 ** 62:
        return np.argsort((t - t_min) * i_span + (ids - i_min), kind="stable")
    return np.lexsort((ids, t))


def _open_ms(bars: pd.DataFrame, name: str) -> np.ndarray:
    """Bar open times (ms) from a frame indexed by a tz-aware ``open_time``."""
    index = bars.index
    if not isinstance(index, pd.DatetimeIndex):
        raise ConfigError(name, type(index).__name__,
                          "a frame indexed by a tz-aware UTC DatetimeIndex 'open_time'")
    if index.tz is None:
        raise ConfigError(name, "tz-naive index",
                          "a tz-aware UTC 'open_time' index; use .tz_localize('UTC')")
    return np.asarray(index.as_unit("ms").asi8, dtype=np.int64)


def _gcd_ms(values: np.ndarray) -> int:
    return int(np.gcd.reduce(np.abs(values))) if values.size else 0


