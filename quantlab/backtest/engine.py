"""The simulation engine of :func:`quantlab.backtest.backtest`: input columns
(``_Prices``), the sequential trade finder (one Python iteration per trade) and
the vectorised accounting (``_Sim``: positions, fills, fees, PnL per bar). Pure;
the rules, fills and costs are documented in :mod:`quantlab.backtest`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from quantlab.backtest.settings import (PRICE_COLUMNS, _R_END, _R_EXIT, _R_HL, _R_MAX, _R_STOP,
                                        SIGNAL_COLUMNS, BacktestSettings)
from quantlab.errors import ConfigError, InsufficientData


# --- inputs ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Prices:
    index: pd.Index
    y_open: np.ndarray
    y_close: np.ndarray
    x_open: np.ndarray
    x_close: np.ndarray
    bar_seconds: float | None
    dcy: np.ndarray  # close-to-close changes, bars 1..n-1
    dcx: np.ndarray


def _column(data: Any, name: str, n: int | None, *, prices: bool) -> np.ndarray:
    try:
        raw = data[name]
    except (KeyError, IndexError) as exc:
        have = list(data.columns) if isinstance(data, pd.DataFrame) else list(data)
        need = PRICE_COLUMNS + SIGNAL_COLUMNS
        raise ConfigError(
            f"data[{name!r}]", f"columns {have}",
            f"columns {', '.join(need)} (join quantlab.bars.align_pair(...) with the "
            "beta and zscore columns of quantlab.analytics.analyze(...))") from exc
    try:
        arr = np.asarray(raw, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data[{name!r}]", type(raw).__name__, "numbers") from exc
    if n is not None and arr.size != n:
        raise ConfigError(f"data[{name!r}]", f"{arr.size} values", f"{n} values, one per bar")
    if prices:
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"data[{name!r}]", f"{int(bad.sum())} bad values, first at row "
                              f"{first} ({arr[first]!r})",
                              "finite prices > 0 on every bar (forward-fill empty bars or "
                              "drop the rows first)")
    return arr


def _prices(data: Any, settings: BacktestSettings) -> _Prices:
    if isinstance(data, pd.DataFrame):
        index = data.index
    elif isinstance(data, Mapping):
        index = None
    else:
        raise ConfigError("data", type(data).__name__,
                          "a DataFrame or a mapping of arrays with keys "
                          + ", ".join(PRICE_COLUMNS + SIGNAL_COLUMNS))
    y_open = _column(data, "y_open", None, prices=True)
    n = y_open.size
    if n < 2:
        raise InsufficientData("backtest", 2, n)
    cols = [y_open] + [_column(data, c, n, prices=True) for c in PRICE_COLUMNS[1:]]
    if index is None:
        t = data.get("time") if isinstance(data, Mapping) else None
        index = pd.DatetimeIndex(t, name="open_time") if t is not None else pd.RangeIndex(n)
        if len(index) != n:
            raise ConfigError("data['time']", f"{len(index)} values", f"{n} values, one per bar")
    bar_s = settings.bar_seconds
    if isinstance(index, pd.DatetimeIndex):
        if not index.is_monotonic_increasing or index.has_duplicates:
            raise ConfigError("data.index", "unsorted or duplicated times",
                              "strictly increasing bar times (sort and drop duplicates)")
        if bar_s is None:
            step = np.median(np.diff(index.asi8))  # in the index's own unit
            bar_s = pd.Timedelta(int(step), unit=index.unit).total_seconds()
    return _Prices(index, *cols, bar_seconds=bar_s, dcy=np.diff(cols[1]), dcx=np.diff(cols[3]))


def _signals(data: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    return (_column(data, "beta", n, prices=False), _column(data, "zscore", n, prices=False))


def _half_life(data: Any, settings: BacktestSettings, n: int) -> np.ndarray | float | None:
    if settings.half_life_mult is None:
        return None
    if settings.half_life_bars is not None:
        return float(settings.half_life_bars)
    has = (name := "half_life") in (data.columns if isinstance(data, pd.DataFrame) else data)
    if not has:
        raise ConfigError("half_life_bars", None,
                          "a half-life in bars when half_life_mult is set (or a 'half_life' "
                          "column of causal half-lives in bars in the data)")
    return _column(data, name, n, prices=False)


# --- the sequential part: one Python iteration per trade -----------------------------------
def _next_true(mask: np.ndarray) -> memoryview:
    """``nxt[t]`` = first bar ``i >= t`` where ``mask[i]``, else ``n``; length n+1."""
    n = mask.size
    dtype = np.int32 if n < 2**31 - 1 else np.int64  # half the memory traffic
    out = np.empty(n + 1, dtype=dtype)
    pos = np.flatnonzero(mask)
    if pos.size < n // 8:  # sparse (entries, stops): repeat each hit over the gap before it
        k = int(pos[-1]) + 1 if pos.size else 0
        out[:k] = np.repeat(pos.astype(dtype), np.diff(pos, prepend=-1))
        out[k:] = n
    else:  # dense (exits, re-arms): running minimum from the end
        idx = np.where(mask, np.arange(n, dtype=dtype), dtype(n))
        out[:n] = np.minimum.accumulate(idx[::-1])[::-1]
        out[n] = n
    # a memoryview indexes to plain Python ints, ~5x faster than numpy scalars
    return memoryview(out)  # type: ignore[return-value]


def _find_trades(z: np.ndarray, beta: np.ndarray, hl: np.ndarray | float | None,
                 s: BacktestSettings, cache: dict | None = None) -> tuple[np.ndarray, ...]:
    """Signal bars of every trade.

    The state machine is sequential, but each step only needs the *next* bar
    where a condition holds. Each condition becomes a "next true bar" array
    (O(n) numpy, cached per level in ``cache`` so a sweep computes it once
    per window), so the Python loop runs once per trade, not once per bar.

    Returns ``(entry_signal, side, exit_signal, reason)``; ``exit_signal`` is
    ``n - 1`` and reason ``end`` for a trade still open at the last bar.
    """
    n = z.size
    last = n - 2  # the last bar whose signal can still be filled
    forced = s.stop is not None or s.max_hold_bars is not None or hl is not None
    cache = {} if cache is None else cache  # sweep: shared by the combinations of a window

    def nxt(op: str, level: float, hedged: bool = False) -> memoryview:
        """Next bar where ``z op level`` (and, for entries, beta is finite)."""
        key = (op, level, hedged)
        if key not in cache:
            with np.errstate(invalid="ignore"):  # NaN compares False: no enter/exit/re-arm
                mask = {">": np.greater, "<": np.less, "<=": np.less_equal,
                        ">=": np.greater_equal}[op](z, level)
            if hedged:
                mask &= np.isfinite(beta)
            cache[key] = _next_true(mask)
        return cache[key]

    short_in = nxt(">", s.entry, True)
    long_in = nxt("<", -s.entry, True)
    short_out = nxt("<=", s.exit)
    long_out = nxt(">=", -s.exit)
    if s.stop is not None:
        short_stop = nxt(">", s.stop)
        long_stop = nxt("<", -s.stop)
    if forced:
        short_rearm = nxt("<=", s.entry)
        long_rearm = nxt(">=", -s.entry)
    hl_scalar = isinstance(hl, float)
    max_hold = s.max_hold_bars
    sig_in: list[int] = []
    sides: list[int] = []
    sig_out: list[int] = []
    reasons: list[int] = []
    start, blocked = 0, 0
    while True:
        ts = short_in[short_rearm[start]] if blocked == -1 else short_in[start]
        tl = long_in[long_rearm[start]] if blocked == 1 else long_in[start]
        t = min(ts, tl)
        if t > last:
            break
        side = -1 if ts < tl else 1
        e = t + 1  # entry fill bar; exits are evaluated from its close on
        reason = _R_EXIT
        if side == -1:
            tx = short_out[e]
            if s.stop is not None and short_stop[e] < tx:
                tx, reason = short_stop[e], _R_STOP
        else:
            tx = long_out[e]
            if s.stop is not None and long_stop[e] < tx:
                tx, reason = long_stop[e], _R_STOP
        if max_hold is not None and e + max_hold - 1 < tx:
            tx, reason = e + max_hold - 1, _R_MAX
        if hl is not None:
            h = hl if hl_scalar else float(hl[t])  # type: ignore[index]
            if math.isfinite(h) and h > 0:
                th = e + max(1, math.ceil(s.half_life_mult * h)) - 1  # type: ignore[operator]
                if th < tx:
                    tx, reason = th, _R_HL
        sig_in.append(t)
        sides.append(side)
        if tx > last:
            sig_out.append(n - 1)
            reasons.append(_R_END)
            break
        sig_out.append(tx)
        reasons.append(reason)
        start = tx + 1
        blocked = side if reason != _R_EXIT else 0
    return (np.asarray(sig_in, np.intp), np.asarray(sides, np.int64),
            np.asarray(sig_out, np.intp), np.asarray(reasons, np.int64))


# --- vectorised accounting ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Sim:
    """Arrays of one run. Per trade: ``sig_in .. entry_notional``; per fill
    (sorted by bar): ``f_*``; per bar: ``qy .. equity``."""

    sig_in: np.ndarray
    side: np.ndarray
    sig_out: np.ndarray
    reason: np.ndarray
    e: np.ndarray          # entry fill bar
    x: np.ndarray          # exit fill bar (n-1 for an open trade: marked at its close)
    beta_entry: np.ndarray
    gross: np.ndarray      # per trade, after slippage, before fees (open: marked)
    fees: np.ndarray
    notional: np.ndarray
    n_fills: np.ndarray
    entry_notional: np.ndarray
    f_idx: np.ndarray      # fill bars
    f_dqy: np.ndarray
    f_dqx: np.ndarray
    f_py: np.ndarray       # fill prices, slippage included
    f_px: np.ndarray
    f_notional: np.ndarray
    f_fee: np.ndarray
    qy: np.ndarray         # units held after each bar's fill
    qx: np.ndarray
    pnl: np.ndarray        # net PnL of each bar
    equity: np.ndarray


def _interleave(a: np.ndarray, b: np.ndarray, drop_last: bool) -> np.ndarray:
    out = np.empty(2 * a.size, dtype=np.result_type(a, b))
    out[0::2] = a
    out[1::2] = b
    return out[:-1] if drop_last else out


def _simulate(p: _Prices, beta: np.ndarray, z: np.ndarray, hl: Any,
              s: BacktestSettings, cache: dict | None = None) -> _Sim:
    n = z.size
    sig_in, side, sig_out, reason = _find_trades(z, beta, hl, s, cache)
    k = sig_in.size
    e = sig_in + 1
    has_open = bool(k) and reason[-1] == _R_END  # only the last trade can be open
    x = sig_out + 1
    if has_open:
        x[-1] = n - 1
    end = x.copy()  # exclusive end of the holding period
    if has_open:
        end[-1] = n

    # quantities are decided at the signal bar (causal)
    b = beta[sig_in]
    if s.sizing == "units":
        q = np.full(k, float(s.size))
    elif s.sizing == "y_notional":
        q = s.size / p.y_close[sig_in]
    else:
        q = s.size / (p.y_close[sig_in] + np.abs(b) * p.x_close[sig_in])
    qs = q * side  # signed units of y: + long the spread
    hx = -b * qs

    # positions per bar, run-length encoded: flat [end_{i-1}, e_i), held [e_i, end_i)
    bounds = np.empty(2 * k + 2, dtype=np.intp)
    bounds[0], bounds[-1] = 0, n
    bounds[1:-1:2], bounds[2:-1:2] = e, end
    lengths = np.diff(bounds)
    zeros = np.zeros(k + 1)
    qy = np.repeat(_interleave(zeros, np.append(qs, 0.0), True), lengths)
    ref_y, ref_x = (p.y_open, p.x_open) if s.fill == "next_open" else (p.y_close, p.x_close)
    if s.rehedge_every > 0 and k:
        tid = np.repeat(_interleave(np.full(k + 1, -1), np.append(np.arange(k), -1), True),
                        lengths)
        held = tid >= 0
        tidc = np.where(held, tid, 0)
        t = np.arange(n)
        anchor = t - (t - e[tidc]) % s.rehedge_every  # latest re-hedge fill bar <= t
        idx = np.where(np.isfinite(beta), t, 0)
        beta_ff = beta[np.maximum.accumulate(idx)]  # latest finite beta
        qx = np.where(held, -beta_ff[np.maximum(anchor - 1, 0)] * qs[tidc], 0.0)
        dqy = np.diff(qy, prepend=0.0)
        dqx = np.diff(qx, prepend=0.0)
        f_idx = np.flatnonzero((dqy != 0) | (dqx != 0))
        f_dqy, f_dqx = dqy[f_idx], dqx[f_idx]
        f_tid = np.searchsorted(e, f_idx, side="right") - 1
    else:
        qx = np.repeat(_interleave(zeros, np.append(hx, 0.0), True), lengths)
        f_idx = _interleave(e, x, has_open)
        f_dqy = _interleave(qs, -qs, has_open)
        f_dqx = _interleave(hx, -hx, has_open)
        f_tid = _interleave(np.arange(k), np.arange(k), has_open)

    slip = s.slippage_bps / 1e4
    f_py = ref_y[f_idx] * (1.0 + slip * np.sign(f_dqy))
    f_px = ref_x[f_idx] * (1.0 + slip * np.sign(f_dqx))
    f_notional = np.abs(f_dqy) * f_py + np.abs(f_dqx) * f_px
    f_fee = (s.fee_bps / 1e4) * f_notional
    # PnL of bar t: the position held since t-1 moves close to close, and each
    # fill at t earns (close_t - fill price) on its quantity. Summed over bars
    # this telescopes to cash flows + mark-to-market.
    cy, cx = p.y_close, p.x_close
    pnl = np.empty(n)
    pnl[0] = 0.0
    np.add(qy[:-1] * p.dcy, qx[:-1] * p.dcx, out=pnl[1:])
    pnl[f_idx] += (f_dqy * (cy[f_idx] - f_py) + f_dqx * (cx[f_idx] - f_px) - f_fee)
    equity = np.cumsum(pnl)

    cash = -(f_dqy * f_py + f_dqx * f_px)
    # (astype: bincount of nothing is int64 even with float weights)
    gross = np.bincount(f_tid, weights=cash, minlength=k).astype(np.float64)
    if has_open:
        gross[-1] += qy[n - 1] * cy[n - 1] + qx[n - 1] * cx[n - 1]
    fees = np.bincount(f_tid, weights=f_fee, minlength=k).astype(np.float64)
    notional = np.bincount(f_tid, weights=f_notional, minlength=k).astype(np.float64)
    n_fills = np.bincount(f_tid, minlength=k)
    entry_notional = f_notional[np.searchsorted(f_idx, e)]
    return _Sim(sig_in, side, sig_out, reason, e, x, b, gross, fees, notional, n_fills,
                entry_notional, f_idx, f_dqy, f_dqx, f_py, f_px, f_notional, f_fee,
                qy, qx, pnl, equity)


