"""Time bars from trades: vectorised (batch), incremental (live), and pair alignment.

Pure numpy/pandas: no I/O, no threads, no logging handlers.

Every function here builds bars in the shape of :mod:`quantlab.schema`: a frame
indexed by ``open_time`` (tz-aware UTC, the bar's open) with the columns of
:data:`~quantlab.schema.BAR_COLUMNS`. Units: times in milliseconds since the
epoch (UTC), prices in quote currency per base unit, ``volume`` and
``taker_buy_volume`` in base units, ``quote_volume`` in quote currency.

Policies shared by every builder (batch and live give the same bars)
--------------------------------------------------------------------
Exchange time
    Bars are built from the exchange trade time ``T``, never from the local
    receive time, so live capture and replay give the same bars (STYLE.md).
Grid
    A bar of timeframe :math:`\\Delta` (ms) covers :math:`[k\\Delta, (k+1)\\Delta)`
    for an integer :math:`k`: bars are aligned on the epoch, so ``1m`` bars open
    on whole minutes and ``1d`` bars at 00:00 UTC (a ``7d`` bar would open on a
    Thursday, the weekday of 1970-01-01).
Order within a bar
    Trades are ordered by ``(time_ms, trade_id)``: equal timestamps are broken
    by trade id. Without trade ids, ties keep their input order.
Empty bars
    A bar without trades is an explicit row: ``is_empty`` true, ``volume``,
    ``quote_volume``, ``taker_buy_volume`` 0, ``trade_count`` 0, and ``open``,
    ``high``, ``low``, ``close``, ``vwap`` all equal to the previous close
    (carried forward; causal: only earlier trades are used).
Range
    Without ``start_ms`` the bars start at the bar of the first trade; without
    ``end_ms`` they end at the bar of the last trade. With ``start_ms`` /
    ``end_ms`` the output covers every bar that overlaps ``[start_ms, end_ms)``
    (``start_ms`` is floored to the grid), with explicit empty bars where
    nothing traded, so two symbols' bars line up on time. A bar is always
    whole: trades outside the covered bars are left out, trades inside them are
    all counted. Leading empty bars (before the first trade in the range) carry
    the price of the last trade *before* the range when the input has one,
    else their prices are NaN (``is_empty`` true). Hence a windowed result
    equals the same rows sliced out of the un-windowed result.
Forming bar
    ``is_forming`` is true for a bar whose close time is still in the future:
    ``open_ms + timeframe_ms > now_ms``. In batch mode (``now_ms=None``) no bar
    is forming unless the input bars say so (:func:`aggregate_bars`).
VWAP
    :math:`\\mathrm{vwap} = \\sum_i p_i q_i / \\sum_i q_i` over the bar's trades
    (``quote_volume / volume``); the close when the bar has no volume.

Late trades (live builder)
    :class:`IncrementalBars` accepts trades in any order *within* the forming
    bar (open and close follow ``(time_ms, trade_id)``, not arrival order). A
    trade for a bar that has already been emitted is a *late trade*: it is
    counted in :attr:`IncrementalBars.late_trades` and ignored. The store/batch
    path (:func:`resample_ticks` over stored ticks) is authoritative and
    includes it; rebuild from the store when exact history matters.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError
from quantlab.schema import BAR_COLUMNS, BAR_DTYPES, BAR_INDEX, market_print_mask, ms_to_utc_index

__all__ = [
    "MAX_BARS", "Bar", "IncrementalBars", "aggregate_bars", "align_pair", "bars_to_frame",
    "market_mask", "parse_timeframe", "resample_ticks", "resample_trades",
]

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


# --- batch: ticks -> bars ------------------------------------------------------
def resample_ticks(time_ms: Sequence[int] | np.ndarray, price: Sequence[float] | np.ndarray,
                   qty: Sequence[float] | np.ndarray,
                   is_buyer_maker: Sequence[bool] | np.ndarray,
                   trade_id: Sequence[int] | np.ndarray | None = None, *,
                   timeframe: str | int = "1m", start_ms: int | None = None,
                   end_ms: int | None = None, now_ms: int | None = None) -> pd.DataFrame:
    """Vectorised time bars from trades (one symbol).

    Parameters
    ----------
    time_ms : array of int
        Exchange trade time ``T``, ms since the epoch (UTC).
    price : array of float
        Quote currency per base unit; must be finite (see :func:`resample_trades`
        to drop non-market prints first).
    qty : array of float
        Base units.
    is_buyer_maker : array of bool
        Binance ``m``: true means the taker *sold*.
    trade_id : array of int, optional
        Breaks ties of equal ``time_ms``. Input need not be sorted: it is sorted
        by ``(time_ms, trade_id)`` when it is not already.
    timeframe : str or int
        See :func:`parse_timeframe`.
    start_ms, end_ms : int, optional
        Cover the bars overlapping ``[start_ms, end_ms)`` with explicit empty
        bars; see the module's *Range* policy.
    now_ms : int, optional
        Current time (ms). Bars with ``open_ms + timeframe_ms > now_ms`` are
        flagged ``is_forming``. None (batch): no bar is forming.

    Returns
    -------
    DataFrame
        Bar frame of :mod:`quantlab.schema`, one row per bar on the epoch-aligned
        grid, no missing bars between the first and the last.

    Notes
    -----
    Per bar, over its trades :math:`i` in ``(time_ms, trade_id)`` order:
    ``open`` = first price, ``high``/``low`` = max/min price, ``close`` = last
    price, ``volume`` :math:`=\\sum q_i`, ``quote_volume`` :math:`=\\sum p_i q_i`,
    ``taker_buy_volume`` :math:`=\\sum_{i: \\neg m_i} q_i`,
    ``vwap`` = ``quote_volume / volume``. Causal: a bar uses only trades with
    ``time_ms`` before its close, and an empty bar only earlier trades.

    Cost: one ``searchsorted`` of the bar edges plus five ``reduceat`` passes,
    about as fast as a bare searchsorted/reduceat loop: about 0.25 s for 10M
    sorted ticks into 1 s bars on a loaded 2-core machine
    (``benchmarks/bars.py``). Unsorted input adds a stable argsort (seconds
    for 10M shuffled trades, near-linear for nearly sorted ones).

    Examples
    --------
    >>> t = [1_000, 1_500, 1_500, 4_200]        # ms; no trade in [2 s, 4 s)
    >>> bars = resample_ticks(t, [10.0, 12.0, 11.0, 13.0], [1.0, 1.0, 2.0, 1.0],
    ...                       [False, True, False, True], [7, 9, 8, 10], timeframe="1s")
    >>> bars[["open", "close", "vwap", "trade_count", "is_empty"]]  # doctest: +NORMALIZE_WHITESPACE
                               open  close  vwap  trade_count  is_empty
    open_time
    1970-01-01 00:00:01+00:00  10.0   12.0  11.0            3     False
    1970-01-01 00:00:02+00:00  12.0   12.0  12.0            0      True
    1970-01-01 00:00:03+00:00  12.0   12.0  12.0            0      True
    1970-01-01 00:00:04+00:00  13.0   13.0  13.0            1     False
    >>> float(bars["taker_buy_volume"].iloc[0])    # trades 7 and 8: taker bought
    3.0
    """
    tf = parse_timeframe(timeframe)
    start_ms = _opt_ms("start_ms", start_ms)
    end_ms = _opt_ms("end_ms", end_ms)
    now_ms = _opt_ms("now_ms", now_ms)
    _check_window(start_ms, end_ms)
    t = np.asarray(time_ms)
    if t.dtype != np.int64:
        t = t.astype(np.int64)
    p = np.asarray(price, dtype=np.float64)
    q = np.asarray(qty, dtype=np.float64)
    m = np.asarray(is_buyer_maker, dtype=bool)
    ids = None if trade_id is None else np.asarray(trade_id, dtype=np.int64)
    n = t.size
    for field, arr in (("price", p), ("qty", q), ("is_buyer_maker", m), ("trade_id", ids)):
        if arr is not None and arr.shape != t.shape:
            raise ConfigError(field, f"{arr.size} values", f"one value per trade, {n} like time_ms")
    order = _sort_order(t, ids)
    if order is not None:
        t, p, q, m = t[order], p[order], q[order], m[order]

    if start_ms is not None:
        first_bin = start_ms // tf
    elif n:
        first_bin = int(t[0]) // tf
    else:
        return _empty_frame()
    if end_ms is not None:
        last_bin = -(-end_ms // tf) - 1  # last bar opening before end_ms
    elif n:
        last_bin = int(t[-1]) // tf
    else:
        return _empty_frame()
    if last_bin < first_bin:
        return _empty_frame()
    _check_size(last_bin - first_bin + 1, tf)

    # Bar k holds trades starts[k]:starts[k+1] (input sorted by time).
    edges = np.arange(first_bin, last_bin + 2, dtype=np.int64) * tf
    starts = np.searchsorted(t, edges, side="left")
    lo, hi = int(starts[0]), int(starts[-1])
    seed = float(p[lo - 1]) if lo > 0 else math.nan  # last trade before the range
    counts = np.diff(starts)
    nz = np.flatnonzero(counts)
    if nz.size:
        seg = starts[nz] - lo
        ps, qs, ms = p[lo:hi], q[lo:hi], m[lo:hi]
        o = ps[seg]
        c = ps[starts[nz + 1] - 1 - lo]
        h = np.maximum.reduceat(ps, seg)
        low = np.minimum.reduceat(ps, seg)
        vol = np.add.reduceat(qs, seg)
        work = np.multiply(ps, qs)  # one scratch buffer for both products
        quote = np.add.reduceat(work, seg)
        np.multiply(qs, ~ms, out=work)  # qty where the taker bought (m false)
        buy = np.add.reduceat(work, seg)
        count = counts[nz].astype(np.int64)
    else:
        o = h = low = c = vol = quote = buy = np.empty(0, dtype=np.float64)
        count = np.empty(0, dtype=np.int64)
    return _assemble(tf, first_bin, last_bin, nz.astype(np.int64) + first_bin, o, h, low, c,
                     vol, quote, count, buy, seed, now_ms)


def market_mask(ticks: pd.DataFrame) -> np.ndarray:
    """Rows of a tick frame that belong in bars (BINANCE.md, *Messages*): the rule
    of :func:`quantlab.schema.is_market_print`, on a frame.

    Futures ``X`` other than ``MARKET`` (``INSURANCE_FUND``, ``ADL``, ``NA``)
    are excluded, and so is any price or quantity <= 0 (or NaN), e.g. the
    archive rows with ``p=0, q=0``. Spot rows (``trade_type`` None) are kept.

    >>> import pandas as pd
    >>> ticks = pd.DataFrame({"price": [1.0, 2.0, 0.0, 3.0], "qty": [1.0, 1.0, 0.0, 1.0],
    ...                       "trade_type": ["MARKET", "ADL", "NA", None]})
    >>> market_mask(ticks).tolist()
    [True, False, False, True]
    """
    return market_print_mask(ticks["price"].to_numpy(dtype=np.float64),
                             ticks["qty"].to_numpy(dtype=np.float64), ticks.get("trade_type"))


def resample_trades(ticks: pd.DataFrame, timeframe: str | int = "1m", *, market_only: bool = True,
                    start_ms: int | None = None, end_ms: int | None = None,
                    now_ms: int | None = None) -> pd.DataFrame:
    """:func:`resample_ticks` on a tick frame of :mod:`quantlab.schema`.

    Parameters
    ----------
    ticks : DataFrame
        Columns ``time_ms``, ``price``, ``qty``, ``is_buyer_maker`` and
        optionally ``trade_id``, ``trade_type``, ``market``, ``symbol``,
        ``kind``. One market/symbol/kind only (mixing would add two series).
    timeframe : str or int
        See :func:`parse_timeframe`.
    market_only : bool
        Keep only rows of :func:`market_mask` (default). False keeps every row.
    start_ms, end_ms, now_ms : int, optional
        As in :func:`resample_ticks`.

    Returns
    -------
    DataFrame
        Bar frame of :mod:`quantlab.schema`.

    Examples
    --------
    >>> import pandas as pd
    >>> ticks = pd.DataFrame({"trade_id": [1, 2, 3], "time_ms": [0, 10, 20],
    ...     "price": [100.0, 5000.0, 101.0], "qty": [1.0, 1.0, 1.0],
    ...     "is_buyer_maker": [True, True, False],
    ...     "trade_type": ["MARKET", "INSURANCE_FUND", "MARKET"]})
    >>> bars = resample_trades(ticks, "1s")
    >>> float(bars["high"].iloc[0]), int(bars["trade_count"].iloc[0])
    (101.0, 2)
    """
    missing = [c for c in ("time_ms", "price", "qty", "is_buyer_maker") if c not in ticks.columns]
    if missing:
        raise ConfigError("ticks", f"missing columns {missing}",
                          "a tick frame of quantlab.schema (time_ms, price, qty, is_buyer_maker)")
    for col in ("market", "symbol", "kind"):
        if col in ticks.columns and ticks[col].nunique(dropna=True) > 1:
            raise ConfigError("ticks", f"{col} values {sorted(map(str, ticks[col].unique()))}",
                              f"ticks of a single {col}; filter the frame first")
    if market_only:
        ticks = ticks.loc[market_mask(ticks)]
    ids = ticks["trade_id"].to_numpy(dtype=np.int64) if "trade_id" in ticks.columns else None
    return resample_ticks(ticks["time_ms"].to_numpy(dtype=np.int64),
                          ticks["price"].to_numpy(dtype=np.float64),
                          ticks["qty"].to_numpy(dtype=np.float64),
                          ticks["is_buyer_maker"].to_numpy(dtype=bool), ids,
                          timeframe=timeframe, start_ms=start_ms, end_ms=end_ms, now_ms=now_ms)


# --- batch: finer bars -> coarser bars -------------------------------------------
_NEEDED = ("open", "high", "low", "close", "volume", "quote_volume", "trade_count",
           "taker_buy_volume")


def aggregate_bars(bars: pd.DataFrame, timeframe: str | int, *, start_ms: int | None = None,
                   end_ms: int | None = None, now_ms: int | None = None,
                   source_timeframe: str | int | None = None) -> pd.DataFrame:
    """Coarser bars from finer bars (e.g. stored 1 s bars -> 1 m).

    Parameters
    ----------
    bars : DataFrame
        Bar frame of :mod:`quantlab.schema` (``is_empty``, ``is_forming`` and
        ``vwap`` optional). Empty bars may be present or omitted: only rows with
        ``trade_count > 0`` contribute, so carried prices never widen a high/low.
    timeframe : str or int
        Target timeframe, a multiple of the source timeframe.
    start_ms, end_ms, now_ms : int, optional
        As in :func:`resample_ticks` (same *Range* and *Forming bar* policy).
        A target bar is also forming when any of its source rows is.
    source_timeframe : str or int, optional
        Timeframe of ``bars``. When None it is inferred as the greatest common
        divisor of the open times (ms), which is the source timeframe for any
        realistic frame (and is at least a multiple of it); pass it explicitly
        for tiny or very sparse frames if the check below misfires.

    Returns
    -------
    DataFrame
        Bar frame of :mod:`quantlab.schema`. ``open`` = first open, ``high`` =
        max, ``low`` = min, ``close`` = last close, sums of ``volume``,
        ``quote_volume``, ``trade_count``, ``taker_buy_volume``; ``vwap``
        recomputed as :math:`\\sum \\text{quote\\_volume} / \\sum \\text{volume}`.
        Equal to :func:`resample_ticks` at the target timeframe on the same
        trades (sums up to float rounding).

    Raises
    ------
    ConfigError
        ``timeframe`` not a multiple of the source timeframe, open times off the
        source grid, duplicate open times, missing columns.

    Examples
    --------
    >>> t = [500, 1_200, 61_000]                 # ms
    >>> fine = resample_ticks(t, [1.0, 3.0, 2.0], [1.0, 1.0, 2.0], [True, True, False],
    ...                       timeframe="1s")
    >>> len(fine), int(fine["is_empty"].sum())   # 62 one-second bars, 59 empty
    (62, 59)
    >>> coarse = aggregate_bars(fine[~fine["is_empty"]], "1m")
    >>> coarse[["open", "high", "close", "volume", "vwap"]]  # doctest: +NORMALIZE_WHITESPACE
                               open  high  close  volume  vwap
    open_time
    1970-01-01 00:00:00+00:00   1.0   3.0    3.0     2.0   2.0
    1970-01-01 00:01:00+00:00   2.0   2.0    2.0     2.0   2.0
    """
    tf = parse_timeframe(timeframe)
    start_ms = _opt_ms("start_ms", start_ms)
    end_ms = _opt_ms("end_ms", end_ms)
    now_ms = _opt_ms("now_ms", now_ms)
    _check_window(start_ms, end_ms)
    missing = [c for c in _NEEDED if c not in bars.columns]
    if missing:
        raise ConfigError("bars", f"missing columns {missing}", "a bar frame of quantlab.schema")
    open_ms = _open_ms(bars, "bars")
    if open_ms.size > 1 and not bool((open_ms[1:] > open_ms[:-1]).all()):
        order = np.argsort(open_ms, kind="stable")
        open_ms = open_ms[order]
        bars = bars.iloc[order]
        if not bool((open_ms[1:] > open_ms[:-1]).all()):
            raise ConfigError("bars", "duplicate open_time values", "one row per bar")
    if source_timeframe is not None:
        src = parse_timeframe(source_timeframe)
        if open_ms.size and bool((open_ms % src).any()):
            raise ConfigError("bars", "open times off the source grid",
                              f"open times on the epoch-aligned {src} ms grid of "
                              f"source_timeframe={source_timeframe!r}")
        if tf % src:
            raise ConfigError("timeframe", timeframe,
                              f"a multiple of source_timeframe={source_timeframe!r} ({src} ms)")
    elif open_ms.size > 1:
        grid = _gcd_ms(open_ms)
        if tf % grid:
            raise ConfigError("timeframe", timeframe,
                              f"a multiple of the source bars' timeframe: their open times lie "
                              f"on a {grid} ms grid (pass source_timeframe= if the source bars "
                              f"are finer than that)")

    count_all = bars["trade_count"].to_numpy(dtype=np.int64)
    close_all = bars["close"].to_numpy(dtype=np.float64)
    bins_all = open_ms // tf
    traded = count_all > 0
    tb = bins_all[traded]
    if start_ms is not None:
        first_bin = start_ms // tf
    elif tb.size:
        first_bin = int(tb[0])
    else:
        return _empty_frame()
    if end_ms is not None:
        last_bin = -(-end_ms // tf) - 1
    elif tb.size:
        last_bin = int(tb[-1])
    else:
        return _empty_frame()
    if last_bin < first_bin:
        return _empty_frame()
    _check_size(last_bin - first_bin + 1, tf)

    sel = traded & (bins_all >= first_bin) & (bins_all <= last_bin)
    rows = np.flatnonzero(sel)
    # Seed for leading empty bars: the last known close (a traded row, or an
    # empty row's carried close) before the first traded row of the range.
    before = bins_all < (bins_all[rows[0]] if rows.size else last_bin + 1)
    known = np.flatnonzero(before & ~np.isnan(close_all))
    seed = float(close_all[known[-1]]) if known.size else math.nan

    b = bins_all[rows]
    if rows.size:
        seg = np.concatenate(([0], np.flatnonzero(b[1:] != b[:-1]) + 1))
        ends = np.append(seg[1:], rows.size) - 1

        def col(name: str, dtype: type = np.float64) -> np.ndarray:
            return bars[name].to_numpy(dtype=dtype)[rows]

        o = col("open")[seg]
        c = close_all[rows][ends]
        h = np.maximum.reduceat(col("high"), seg)
        low = np.minimum.reduceat(col("low"), seg)
        vol = np.add.reduceat(col("volume"), seg)
        quote = np.add.reduceat(col("quote_volume"), seg)
        buy = np.add.reduceat(col("taker_buy_volume"), seg)
        count = np.add.reduceat(count_all[rows], seg)
        out_bins = b[seg]
    else:
        o = h = low = c = vol = quote = buy = np.empty(0, dtype=np.float64)
        count = out_bins = np.empty(0, dtype=np.int64)

    forming = None
    if "is_forming" in bars.columns:
        # A source row still forming keeps its target bar forming, even when
        # the row has no trade yet.
        src_forming = bars["is_forming"].to_numpy(dtype=bool)
        in_range = src_forming & (bins_all >= first_bin) & (bins_all <= last_bin)
        if in_range.any():
            forming = np.zeros(last_bin - first_bin + 1, dtype=bool)
            forming[bins_all[in_range] - first_bin] = True
    return _assemble(tf, first_bin, last_bin, out_bins, o, h, low, c, vol, quote, count, buy,
                     seed, now_ms, forming)


# --- live: one trade at a time ---------------------------------------------------
class Bar(NamedTuple):
    """One bar from :class:`IncrementalBars`; the fields of a row of the bar frame
    plus ``open_ms`` (the bar's open, ms since the epoch UTC)."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trade_count: int
    vwap: float
    taker_buy_volume: float
    is_empty: bool
    is_forming: bool


def bars_to_frame(bars: Iterable[Bar]) -> pd.DataFrame:
    """Bar frame of :mod:`quantlab.schema` from :class:`Bar` values.

    >>> live = IncrementalBars("1s")
    >>> closed = live.add_many([100, 2_300], [5.0, 6.0], [1.0, 1.0], [True, False])
    >>> bars_to_frame(closed)[["close", "is_empty"]]  # doctest: +NORMALIZE_WHITESPACE
                                    close  is_empty
    open_time
    1970-01-01 00:00:00+00:00         5.0     False
    1970-01-01 00:00:01+00:00         5.0      True
    """
    rows = list(bars)
    if not rows:
        return _empty_frame()
    arr = list(zip(*rows))
    open_ms = np.asarray(arr[0], dtype=np.int64)
    data = {name: np.asarray(arr[i + 1], dtype=BAR_DTYPES[name])
            for i, name in enumerate(Bar._fields[1:])}
    return pd.DataFrame({k: data[k] for k in BAR_COLUMNS}, index=ms_to_utc_index(open_ms))


class IncrementalBars:
    """Live bar builder: O(1) per trade, same bars as :func:`resample_ticks`.

    Parameters
    ----------
    timeframe : str or int
        See :func:`parse_timeframe`.
    grace_ms : int
        :meth:`flush` closes a bar only once ``now_ms - grace_ms`` has passed its
        close, leaving time for trades still in flight (exchange time lags the
        local clock by the feed latency). 0 by default.

    Attributes
    ----------
    timeframe_ms : int
    late_trades : int
        Trades ignored because their bar had already been emitted (see the
        module's *Late trades* policy; the batch path includes them).
    trades : int
        Trades accepted.

    Notes
    -----
    Bars start at the bar of the first trade (no leading empty bars). When a
    trade opens a bar several bars after the previous one, the empty bars in
    between are emitted as explicit rows carrying the last close; that costs
    one row per skipped bar. Trade ids are not de-duplicated here: the
    ingester de-duplicates by id. One writer: not thread-safe.

    Examples
    --------
    >>> live = IncrementalBars("1m")
    >>> live.add(1_000, 10.0, 1.0, False, trade_id=1)
    []
    >>> live.add(2_000, 11.0, 3.0, True, trade_id=2)
    []
    >>> live.forming.close, live.forming.vwap, live.forming.is_forming
    (11.0, 10.75, True)
    >>> [b.open_ms for b in live.add(185_000, 12.0, 1.0, True, trade_id=3)]
    [0, 60000, 120000]
    >>> live.add(30_000, 9.0, 1.0, True, trade_id=0), live.late_trades
    ([], 1)
    >>> [(b.open_ms, b.close) for b in live.flush(now_ms=240_000)]
    [(180000, 12.0)]
    """

    __slots__ = ("timeframe_ms", "grace_ms", "late_trades", "trades", "_bin", "_done", "_o",
                 "_h", "_l", "_c", "_v", "_qv", "_n", "_buy", "_ft", "_fid", "_lt", "_lid")

    def __init__(self, timeframe: str | int = "1s", *, grace_ms: int = 0):
        self.timeframe_ms = parse_timeframe(timeframe)
        if isinstance(grace_ms, bool) or not isinstance(grace_ms, (int, np.integer)) or grace_ms < 0:
            raise ConfigError("grace_ms", grace_ms, "an int of milliseconds >= 0")
        self.grace_ms = int(grace_ms)
        self.late_trades = 0
        self.trades = 0
        self._bin: int | None = None   # bar number (open_ms // timeframe_ms) of the forming bar
        self._done: int | None = None  # last bar number emitted
        self._c = math.nan             # last close, carried into empty bars

    def _current(self, forming: bool) -> Bar:
        v = self._v
        vwap = self._qv / v if v > 0 else self._c
        return Bar(self._bin * self.timeframe_ms, self._o, self._h, self._l, self._c, v,
                   self._qv, self._n, vwap, self._buy, False, forming)

    def _empty(self, k: int) -> Bar:
        c = self._c
        return Bar(k * self.timeframe_ms, c, c, c, c, 0.0, 0.0, 0, c, 0.0, True, False)

    @property
    def forming(self) -> Bar | None:
        """The bar receiving trades (``is_forming`` true), or None."""
        return None if self._bin is None else self._current(True)

    def add(self, time_ms: int, price: float, qty: float, is_buyer_maker: bool,
            trade_id: int | None = None) -> list[Bar]:
        """Add one trade; return the bars it closed (oldest first, often none).

        Parameters
        ----------
        time_ms : int
            Exchange trade time ``T``, ms since the epoch (UTC).
        price : float
            Quote currency per base unit.
        qty : float
            Base units.
        is_buyer_maker : bool
            Binance ``m`` (true: the taker sold).
        trade_id : int, optional
            Orders trades of equal ``time_ms`` for open/close.

        Returns
        -------
        list of Bar
            Closed bars, including explicit empty bars skipped over.
        """
        b = time_ms // self.timeframe_ms
        if b == self._bin:
            # Same bar: any arrival order gives the (time, id)-ordered open/close.
            if price > self._h:
                self._h = price
            if price < self._l:
                self._l = price
            self._v += qty
            self._qv += price * qty
            self._n += 1
            if not is_buyer_maker:
                self._buy += qty
            lt = self._lt
            if time_ms > lt or (time_ms == lt and (trade_id is None or self._lid is None
                                                   or trade_id >= self._lid)):
                self._c, self._lt, self._lid = price, time_ms, trade_id
            ft = self._ft
            if time_ms < ft or (time_ms == ft and trade_id is not None and self._fid is not None
                                and trade_id < self._fid):
                self._o, self._ft, self._fid = price, time_ms, trade_id
            self.trades += 1
            return []
        if (self._bin is not None and b < self._bin) or (self._done is not None and b <= self._done):
            self.late_trades += 1
            return []
        out: list[Bar] = []
        if self._bin is not None:
            out.append(self._current(False))
            self._done = self._bin
        if self._done is not None:
            for k in range(self._done + 1, b):
                out.append(self._empty(k))
        self._bin = b
        self._o = self._h = self._l = self._c = price
        self._v = qty
        self._qv = price * qty
        self._n = 1
        self._buy = 0.0 if is_buyer_maker else qty
        self._ft = self._lt = time_ms
        self._fid = self._lid = trade_id
        self.trades += 1
        return out

    def add_many(self, time_ms: Sequence[int] | np.ndarray, price: Sequence[float] | np.ndarray,
                 qty: Sequence[float] | np.ndarray, is_buyer_maker: Sequence[bool] | np.ndarray,
                 trade_id: Sequence[int] | np.ndarray | None = None) -> list[Bar]:
        """:meth:`add` for each trade, in the given order; the closed bars, oldest first."""
        ts = np.asarray(time_ms, dtype=np.int64).tolist()
        ps = np.asarray(price, dtype=np.float64).tolist()
        qs = np.asarray(qty, dtype=np.float64).tolist()
        ms = np.asarray(is_buyer_maker, dtype=bool).tolist()
        ids = [None] * len(ts) if trade_id is None else np.asarray(trade_id, dtype=np.int64).tolist()
        if not (len(ts) == len(ps) == len(qs) == len(ms) == len(ids)):
            raise ConfigError("add_many", "arrays of different lengths", "one value per trade")
        out: list[Bar] = []
        add = self.add
        for t, p, q, m, i in zip(ts, ps, qs, ms, ids):
            closed = add(t, p, q, m, i)
            if closed:
                out.extend(closed)
        return out

    def flush(self, now_ms: int) -> list[Bar]:
        """Close the bars whose time has passed; return them, oldest first.

        A bar is closed once ``now_ms - grace_ms >= open_ms + timeframe_ms``.
        Empty bars between the last emitted bar and the bar containing
        ``now_ms - grace_ms`` are emitted too (only after a first trade).
        Afterwards :attr:`forming` is None until the next trade.
        """
        limit_bin = (int(now_ms) - self.grace_ms) // self.timeframe_ms  # still open
        out: list[Bar] = []
        if self._bin is not None and self._bin < limit_bin:
            out.append(self._current(False))
            self._done = self._bin
            self._bin = None
        if self._bin is None and self._done is not None:
            for k in range(self._done + 1, limit_bin):
                out.append(self._empty(k))
            if limit_bin - 1 > self._done:
                self._done = limit_bin - 1
        return out


# --- pairs ----------------------------------------------------------------------
_LEG_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "trade_count", "vwap",
                "taker_buy_volume", "is_empty")


def align_pair(bars_y: pd.DataFrame, bars_x: pd.DataFrame, *, max_carry_bars: int = 5,
               timeframe: str | int | None = None, drop_gaps: bool = False) -> pd.DataFrame:
    """Join two symbols' bars on ``open_time`` (never by position).

    Parameters
    ----------
    bars_y, bars_x : DataFrame
        Bar frames of :mod:`quantlab.schema` on the same timeframe; empty bars
        may be explicit or omitted. Bars of different timeframes (1 m with 1 s)
        are not detected when ``timeframe`` is None: aggregate first.
    max_carry_bars : int
        How many consecutive bars a leg without trades keeps its last traded
        close (>= 0; 0 means never carry).
    timeframe : str or int, optional
        Grid of the output. None: the greatest common divisor of all open times
        (the bars' timeframe for any realistic frame).
    drop_gaps : bool
        Drop the rows where a leg's prices are NaN (default: keep them as NaN).

    Returns
    -------
    DataFrame
        Indexed by ``open_time`` on the full grid from the earliest to the latest
        open time of either leg (outer union, no missing bar). For each leg
        ``L`` in ``y``, ``x``: ``L_open, L_high, L_low, L_close, L_volume,
        L_quote_volume, L_trade_count, L_vwap, L_taker_buy_volume, L_is_empty,
        L_carried``, then ``is_forming`` (either leg's bar forming).

    Notes
    -----
    Policy per leg and bar:

    * traded (``trade_count > 0``): the leg's bar as given, ``L_carried`` false;
    * not traded (row absent or empty) within ``max_carry_bars`` bars after the
      leg's last traded bar: OHLC and vwap = that bar's close, volumes and
      count 0, ``L_is_empty`` and ``L_carried`` true;
    * otherwise (further than ``max_carry_bars``, or before the leg's first
      traded bar in the input): a gap, prices NaN, volumes 0, ``L_is_empty``
      true, ``L_carried`` false. Analytics drop rows with NaN.

    Carrying uses only earlier bars (causal). A leg's own carried empty rows
    are recomputed from its traded bars, so the limit counts every bar since
    the last trade; include earlier bars in the input to seed the start.

    Examples
    --------
    >>> y = resample_ticks([0, 1_000, 2_000, 3_000], [1.0, 2.0, 3.0, 4.0], [1.0] * 4,
    ...                    [True] * 4, timeframe="1s")
    >>> x = resample_ticks([0, 3_000], [10.0, 40.0], [1.0, 1.0], [False] * 2, timeframe="1s")
    >>> x = x[~x["is_empty"]]            # the store may omit empty bars
    >>> pair = align_pair(y, x, max_carry_bars=1)
    >>> pair[["y_close", "x_close", "x_carried"]]  # doctest: +NORMALIZE_WHITESPACE
                               y_close  x_close  x_carried
    open_time
    1970-01-01 00:00:00+00:00      1.0     10.0      False
    1970-01-01 00:00:01+00:00      2.0     10.0       True
    1970-01-01 00:00:02+00:00      3.0      NaN      False
    1970-01-01 00:00:03+00:00      4.0     40.0      False
    """
    if isinstance(max_carry_bars, bool) or not isinstance(max_carry_bars, (int, np.integer)) \
            or max_carry_bars < 0:
        raise ConfigError("max_carry_bars", max_carry_bars, "an int >= 0")
    legs = {"y": bars_y, "x": bars_x}
    opens = {}
    for name, frame in legs.items():
        missing = [c for c in ("open", "high", "low", "close", "volume", "quote_volume",
                               "trade_count", "taker_buy_volume") if c not in frame.columns]
        if missing:
            raise ConfigError(f"bars_{name}", f"missing columns {missing}",
                              "a bar frame of quantlab.schema")
        ms = _open_ms(frame, f"bars_{name}")
        # Sorted input (every quantlab source) proves uniqueness in O(n); np.unique
        # sorts/hashes 1M values in ~0.4 s.
        if not (ms.size < 2 or bool((ms[1:] > ms[:-1]).all())) and np.unique(ms).size != ms.size:
            raise ConfigError(f"bars_{name}", "duplicate open_time values", "one row per bar")
        opens[name] = ms
    both = np.concatenate([opens["y"], opens["x"]])
    if both.size == 0:
        index = ms_to_utc_index(np.empty(0, dtype=np.int64))
        out = pd.DataFrame(index=index)
        for leg in ("y", "x"):
            for c in _LEG_COLUMNS:
                out[f"{leg}_{c}"] = np.empty(0, dtype=BAR_DTYPES[c])
            out[f"{leg}_carried"] = np.empty(0, dtype=bool)
        out["is_forming"] = np.empty(0, dtype=bool)
        return out
    if timeframe is not None:
        tf = parse_timeframe(timeframe)
        if bool((both % tf).any()):
            raise ConfigError("timeframe", timeframe,
                              "the timeframe of both legs: some open times are off its grid")
    else:
        tf = _gcd_ms(np.unique(both)) if np.unique(both).size > 1 else 1
    first, last = int(both.min()) // tf, int(both.max()) // tf
    nbars = last - first + 1
    _check_size(nbars, tf)
    grid = (np.arange(nbars, dtype=np.int64) + first) * tf
    cols: dict[str, np.ndarray] = {}
    forming = np.zeros(nbars, dtype=bool)
    arange = np.arange(nbars, dtype=np.int64)
    for leg, frame in legs.items():
        pos = opens[leg] // tf - first
        count = frame["trade_count"].to_numpy(dtype=np.int64)
        traded = np.zeros(nbars, dtype=bool)
        traded[pos] = count > 0
        # Row of `frame` at each grid bar, -1 where absent.
        row = np.full(nbars, -1, dtype=np.int64)
        row[pos] = np.arange(pos.size)
        last_traded = np.where(traded, arange, -1)
        np.maximum.accumulate(last_traded, out=last_traded)
        carried = ~traded & (last_traded >= 0) & (arange - last_traded <= max_carry_bars)
        src_row = row[np.maximum(last_traded, 0)]  # row of the last traded bar
        close = frame["close"].to_numpy(dtype=np.float64)
        carry_px = np.where(carried, close[np.maximum(src_row, 0)] if close.size else np.nan,
                            np.nan)
        tr_rows = row[traded]
        if "vwap" in frame.columns:
            vwap_src = frame["vwap"].to_numpy(dtype=np.float64)
        else:
            vol = frame["volume"].to_numpy(dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                vwap_src = np.where(vol > 0, frame["quote_volume"].to_numpy(dtype=np.float64)
                                    / np.where(vol > 0, vol, 1.0), close)
        for c in ("open", "high", "low", "close", "vwap"):
            src = vwap_src if c == "vwap" else frame[c].to_numpy(dtype=np.float64)
            full = carry_px.copy()
            full[traded] = src[tr_rows]
            cols[f"{leg}_{c}"] = full
        for c in ("volume", "quote_volume", "trade_count", "taker_buy_volume"):
            dtype = BAR_DTYPES[c]
            full = np.zeros(nbars, dtype=dtype)
            full[traded] = frame[c].to_numpy(dtype=dtype)[tr_rows]
            cols[f"{leg}_{c}"] = full
        cols[f"{leg}_is_empty"] = ~traded
        cols[f"{leg}_carried"] = carried
        if "is_forming" in frame.columns:
            leg_forming = np.zeros(nbars, dtype=bool)
            leg_forming[pos] = frame["is_forming"].to_numpy(dtype=bool)
            forming |= leg_forming
    ordered = [f"{leg}_{c}" for leg in ("y", "x") for c in _LEG_COLUMNS + ("carried",)]
    if drop_gaps:
        # Filter the arrays before building the frame: a boolean .loc over a wide
        # mixed-dtype frame of 1M rows costs ~0.5 s more than this.
        keep = ~(np.isnan(cols["y_close"]) | np.isnan(cols["x_close"]))
        if not keep.all():
            cols = {k: cols[k][keep] for k in ordered}
            grid, forming = grid[keep], forming[keep]
    out = pd.DataFrame({k: cols[k] for k in ordered}, index=ms_to_utc_index(grid))
    out["is_forming"] = forming
    return out
