"""Z-score mean-reversion backtest of a pair spread. Pure: numpy and pandas only.

What it simulates
-----------------
A pair ``y`` (dependent leg) and ``x`` (independent leg) with a causal hedge
ratio :math:`\\beta_t` and a causal z-score :math:`z_t` of the spread
:math:`s_t = y_t - \\beta_t x_t` (both supplied by the caller, e.g. from
:func:`quantlab.analytics.analyze`, or computed per window by a callable in
:func:`sweep`).

*Long the spread* means long :math:`Q` units of ``y`` and short
:math:`\\beta Q` units of ``x``; *short the spread* is the opposite.

Rules. A signal is evaluated on the close of bar :math:`t` from :math:`z_t`
(``entry`` :math:`e`, ``exit`` :math:`x`, ``stop`` :math:`S`):

* flat: enter *short* the spread when :math:`z_t > e`, *long* when
  :math:`z_t < -e` (and :math:`\\beta_t` is finite);
* ``exit``: a short exits when :math:`z_t \\le x`, a long when :math:`z_t \\ge -x`;
* ``stop``: a short stops when :math:`z_t > S`, a long when :math:`z_t < -S`;
* ``max_hold``: after ``max_hold_bars`` :math:`H` bars in the trade;
* ``half_life``: after :math:`\\lceil m \\cdot hl \\rceil` bars, ``half_life_mult``
  :math:`m` times the half-life :math:`hl` in bars at the entry signal.

with ``entry`` :math:`e > 0`, ``exit`` :math:`x` (:math:`|x| < e`; ``x = 0``
exits at the zero crossing, ``x > 0`` exits early, ``x < 0`` waits for an
overshoot) and ``stop`` :math:`S > e`. The convention is symmetric: a long
exits at the mirror image :math:`-x` of the short's exit level. Exits are
evaluated from the close of the entry fill bar on. When several
exit conditions hold on the same bar the reason is the first of ``stop``,
``exit``, ``max_hold``, ``half_life``. After a forced exit (stop, max hold,
half-life) the same side is re-armed only after :math:`z` has been back inside
the entry band (:math:`z \\le e` for shorts, :math:`z \\ge -e` for longs), so a
stopped trade is not re-entered on the next bar. There is no same-bar reversal:
an exit signal and an entry signal are never filled on the same bar; the bar
whose fill closes a trade may itself give the next entry signal. NaN z never
enters, exits or re-arms (time stops still apply).

Causality and fills
-------------------
*What is causal*: the signal on bar :math:`t` uses :math:`z_t` and
:math:`\\beta_t`, which must use bars up to and including :math:`t` only (the
caller's responsibility; :func:`rolling_beta_zscore` is causal). The order is
filled on bar :math:`t+1`, at its open (``fill="next_open"``) or its close
(``fill="next_close"``). A signal on the last bar is never filled. Quantities
are decided at the signal: the hedge ratio is :math:`\\beta_t`, and notional
sizing divides by the close of bar :math:`t`, so the gross notional at the fill
is only approximately the target. Time stops count bars from the entry fill: a
``max_hold_bars=H`` exit is signalled on bar :math:`e+H-1` and filled on
:math:`e+H`, so ``bars_held == H`` exactly.

Re-hedging (``rehedge_every=K > 0``): while in a trade, the ``x`` leg is reset
to :math:`-\\beta Q` on fill bars :math:`e+K, e+2K, \\dots` using the latest
finite :math:`\\beta` known at the previous bar. Re-hedge trades pay fees and
slippage like any other fill. ``K = 0`` keeps the entry ratio.

Costs
-----
Slippage moves every fill against the trader:
:math:`p^{fill} = p^{ref} (1 + \\mathrm{sign}(\\Delta q)\\,
\\text{slippage\\_bps}/10^4)`, with :math:`\\Delta q` the signed quantity
bought (> 0) or sold (< 0) and :math:`p^{ref}` the open or close of the fill bar. The fee is charged per leg per side on traded
notional: :math:`\\text{fee} = \\text{fee\\_bps}/10^4 \\sum |\\Delta q|\\, p^{fill}`
(re-hedges included). "Gross" PnL is after slippage and before fees.

Because fees are linear in ``fee_bps`` and nothing else depends on it, the
break-even fee has a closed form:

.. math::

    \\text{break\\_even\\_fee\\_bps} = 10^4 \\, \\frac{G}{N}

with :math:`G` the total gross PnL (including the mark-to-market of an open
position) and :math:`N` the total traded notional. Re-running with that fee
gives a total PnL of zero. It is negative when the strategy loses before fees
(a rebate would be needed), ``None`` when nothing traded.

Accounting and statistics
-------------------------
Equity :math:`E_t` is the cumulative PnL in quote currency, net of fees, marked
to market at each bar's close; it starts at 0. An open position at the end is
marked at the last close without exit costs and reported with reason ``end``.

* Capital base :math:`C`: the ``capital`` setting, or else the largest gross
  notional :math:`|q_y| p_y + |q_x| p_x` at an entry fill (the most capital the
  strategy ever put to work, margin ignored). Returns are :math:`E/C`; positions
  are fixed-size, so profits are not reinvested and returns are not compounded.
* Annualisation: crypto trades every day, so
  :math:`B = 365 \\cdot 86400 / \\text{bar\\_seconds}` bars per year.
  ``annual_return`` :math:`= (E_{n-1}/C) \\cdot B / n`.
* Sharpe and Sortino use the per-bar equity changes
  :math:`\\Delta_t = E_t - E_{t-1}` (:math:`t = 1..n-1`, flat bars included, zero
  risk-free rate): :math:`\\mathrm{Sharpe} = \\sqrt{B}\\,\\bar\\Delta / s_\\Delta`
  (sample std, ddof 1), :math:`\\mathrm{Sortino} = \\sqrt{B}\\,\\bar\\Delta /
  \\sqrt{\\overline{\\min(\\Delta, 0)^2}}`. Both are ``None`` when undefined.
* Max drawdown: :math:`\\max_t (P_t - E_t)` with running peak
  :math:`P_t = \\max(0, \\max_{s \\le t} E_s)`, in quote currency; its duration is
  the longest run of bars spent below a previous peak (in bars and seconds).

Examples
--------
>>> import numpy as np
>>> z = np.array([0.0, 2.5, 1.0, -0.5, 0.0, 0.0])
>>> y = np.array([100.0, 101, 102, 100, 99, 99])
>>> x = np.full(6, 50.0)
>>> res = backtest({"y_open": y, "y_close": y, "x_open": x, "x_close": x,
...                 "beta": np.full(6, 2.0), "zscore": z},
...                entry=2.0, exit=0.0, bar_seconds=60)
>>> res.trades[["side", "entry_y", "exit_y", "bars_held", "exit_reason", "net_pnl"]]
    side  entry_y  exit_y  bars_held exit_reason  net_pnl
0  short    102.0    99.0          2        exit      3.0
"""
from __future__ import annotations

import dataclasses
import html
import logging
import math
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

# One implementation per rule (issue 14): the default rolling beta/z of sweep() is
# quantlab.analytics' (rolling_ols + rolling_zscore), re-exported here under its old name.
from quantlab.analytics.hedge import rolling_beta_zscore
from quantlab.config import require_choice, settings_from_dict
from quantlab.errors import ConfigError, InsufficientData

logger = logging.getLogger(__name__)

__all__ = [
    "BacktestSettings", "BacktestStats", "BacktestResult", "backtest", "sweep",
    "rolling_beta_zscore", "default_zscore_for_window", "EXIT_REASONS", "TRADE_COLUMNS",
    "EQUITY_COLUMNS", "SUMMARY_KEYS",
]

FILLS = ("next_open", "next_close")
SIZINGS = ("units", "y_notional", "gross_notional")
EXIT_REASONS = ("exit", "stop", "max_hold", "half_life", "end")
PRICE_COLUMNS = ("y_open", "y_close", "x_open", "x_close")
SIGNAL_COLUMNS = ("beta", "zscore")
SECONDS_PER_YEAR = 365 * 24 * 3600

TRADE_COLUMNS = (
    "entry_time", "exit_time", "side", "entry_z", "exit_z", "beta",
    "entry_y", "entry_x", "exit_y", "exit_x", "qty_y", "qty_x", "qty_x_exit",
    "n_rehedges", "traded_notional", "gross_pnl", "fees", "net_pnl", "bars_held",
    "exit_reason",
)
EQUITY_COLUMNS = (
    "zscore", "side", "qty_y", "qty_x", "exposure", "traded_notional", "fees", "pnl",
    "equity", "drawdown",
)
SUMMARY_KEYS = (
    "total_pnl", "gross_pnl", "fees", "traded_notional", "break_even_fee_bps", "capital",
    "total_return", "annual_return", "sharpe", "sortino", "max_drawdown",
    "max_drawdown_return", "max_drawdown_bars", "max_drawdown_s", "n_trades", "n_closed",
    "n_open", "hit_rate", "avg_bars_held", "avg_holding_s", "turnover", "n_rehedges",
    "time_in_market", "n_bars", "bar_seconds", "bars_per_year",
)

_R_EXIT, _R_STOP, _R_MAX, _R_HL, _R_END = range(5)


# --- settings -------------------------------------------------------------------------------
def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_num(v: object) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class BacktestSettings:
    """Rules, sizing and costs of :func:`backtest`. Frozen, keyword-only.

    Parameters
    ----------
    entry : float
        Entry level in z units (> 0): short the spread when :math:`z > e`,
        long when :math:`z < -e`. Default 2.
    exit : float
        Exit level in z units, :math:`|x| < e`: a short exits when
        :math:`z \\le x`, a long when :math:`z \\ge -x`. Default 0.
    stop : float or None
        Stop level in z units (> entry): a short stops when :math:`z > S`,
        a long when :math:`z < -S`. None (default) disables it.
    max_hold_bars : int or None
        Exit after this many bars in the trade (>= 1). None disables it.
    half_life_mult : float or None
        Time stop after ``ceil(half_life_mult * half_life)`` bars (> 0), the
        half-life (bars) taken from ``half_life_bars`` or, when that is None,
        from the data's ``half_life`` column at the entry signal bar. None
        disables it.
    half_life_bars : float or None
        Half-life of the spread in bars (> 0), for ``half_life_mult``.
    fill : {"next_open", "next_close"}
        Price at which a signal on bar t is filled on bar t+1.
    sizing : {"units", "y_notional", "gross_notional"}
        How ``size`` is read: units of y; quote notional of the y leg; or quote
        notional of both legs :math:`Q(p_y + |\\beta| p_x)`. Notional sizing
        uses the signal bar's closes.
    size : float
        Position size (> 0) in the unit given by ``sizing``. Default 1.
    rehedge_every : int
        Re-hedge the x leg to :math:`-\\beta Q` every K bars while in a trade;
        0 (default) keeps the ratio fixed at entry.
    fee_bps : float
        Fee per leg per side, basis points of traded notional. Negative means
        a rebate. Default 0.
    slippage_bps : float
        Adverse price move applied to every fill, basis points (>= 0).
    capital : float or None
        Capital base for returns and turnover, quote currency (> 0). None:
        largest gross notional at an entry fill.
    bar_seconds : float or None
        Bar length in seconds (> 0), for annualisation. None: the median step
        of the data's DatetimeIndex.

    Examples
    --------
    >>> BacktestSettings(entry=2.0, exit=2.5)
    Traceback (most recent call last):
    ...
    quantlab.errors.ConfigError: exit: expected a level with |exit| < entry=2.0 (e.g. 0 to exit at the mean), got 2.5
    """

    entry: float = 2.0
    exit: float = 0.0
    stop: float | None = None
    max_hold_bars: int | None = None
    half_life_mult: float | None = None
    half_life_bars: float | None = None
    fill: str = "next_open"
    sizing: str = "units"
    size: float = 1.0
    rehedge_every: int = 0
    fee_bps: float = 0.0
    slippage_bps: float = 0.0
    capital: float | None = None
    bar_seconds: float | None = None

    def __post_init__(self) -> None:
        if not _is_num(self.entry) or self.entry <= 0:
            raise ConfigError("entry", self.entry, "a finite z level > 0, e.g. 2.0")
        if not _is_num(self.exit) or abs(self.exit) >= self.entry:
            raise ConfigError("exit", self.exit,
                              f"a level with |exit| < entry={self.entry} (e.g. 0 to exit at the mean)")
        if self.stop is not None and (not _is_num(self.stop) or self.stop <= self.entry):
            raise ConfigError("stop", self.stop, f"None or a z level > entry={self.entry}")
        if self.max_hold_bars is not None and (not _is_int(self.max_hold_bars)
                                               or self.max_hold_bars < 1):
            raise ConfigError("max_hold_bars", self.max_hold_bars, "None or an integer >= 1")
        for name in ("half_life_mult", "half_life_bars", "capital", "bar_seconds"):
            v = getattr(self, name)
            if v is not None and (not _is_num(v) or v <= 0):
                raise ConfigError(name, v, "None or a finite number > 0")
        require_choice("fill", self.fill, FILLS)
        require_choice("sizing", self.sizing, SIZINGS)
        if not _is_num(self.size) or self.size <= 0:
            raise ConfigError("size", self.size, "a finite number > 0")
        if not _is_int(self.rehedge_every) or self.rehedge_every < 0:
            raise ConfigError("rehedge_every", self.rehedge_every,
                              "an integer >= 0 (0 keeps the entry hedge, K re-hedges every K bars)")
        if not _is_num(self.fee_bps) or self.fee_bps <= -1e4:
            raise ConfigError("fee_bps", self.fee_bps, "a finite number of basis points > -10000")
        if not _is_num(self.slippage_bps) or not 0 <= self.slippage_bps < 1e4:
            raise ConfigError("slippage_bps", self.slippage_bps,
                              "a finite number of basis points in [0, 10000)")

    def replace(self, **changes: Any) -> "BacktestSettings":
        """A copy with ``changes`` applied (validated; unknown names rejected)."""
        return settings_from_dict(BacktestSettings, {**dataclasses.asdict(self), **changes})


def _resolve(settings: BacktestSettings | None, overrides: Mapping[str, Any]) -> BacktestSettings:
    if settings is None:
        return settings_from_dict(BacktestSettings, overrides)
    if not isinstance(settings, BacktestSettings):
        raise ConfigError("settings", type(settings).__name__, "a BacktestSettings or None")
    return settings.replace(**overrides) if overrides else settings


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


# --- statistics -----------------------------------------------------------------------------
def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BacktestStats:
    """Summary statistics of one backtest. Money in quote currency; ``None``
    where a statistic is undefined (no trades, zero variance, no capital).

    Definitions are in the module docstring (capital base, annualisation with
    365 days, Sharpe/Sortino from per-bar equity changes, drawdown).

    Attributes
    ----------
    total_pnl : final equity, net of fees (open position marked to market).
    gross_pnl : ``total_pnl + fees`` (after slippage).
    fees : fees paid, all fills including re-hedges.
    traded_notional : sum of :math:`|\\Delta q| p^{fill}` over all fills.
    break_even_fee_bps : :math:`10^4\\,G/N`, fee per leg per side that zeroes total PnL.
    capital : capital base :math:`C`.
    total_return : :math:`E_{n-1}/C`; annual_return: :math:`E_{n-1}/C \\cdot B/n`.
    sharpe, sortino : annualised, from per-bar equity changes.
    max_drawdown : largest fall from a running peak (quote); max_drawdown_return
        the same over :math:`C`; max_drawdown_bars / max_drawdown_s the longest
        time under water.
    n_trades : trades entered, the open one included; n_closed, n_open (0 or 1).
    hit_rate : share of closed trades with net PnL > 0.
    avg_bars_held, avg_holding_s : mean holding time of closed trades.
    turnover : traded_notional / capital (times the capital was traded).
    n_rehedges : re-hedge fills.
    time_in_market : share of bars with a position after the bar's fill.
    n_bars, bar_seconds, bars_per_year : sample size and annualisation basis :math:`B`.
    """

    total_pnl: float
    gross_pnl: float
    fees: float
    traded_notional: float
    break_even_fee_bps: float | None
    capital: float | None
    total_return: float | None
    annual_return: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_return: float | None
    max_drawdown_bars: int
    max_drawdown_s: float | None
    n_trades: int
    n_closed: int
    n_open: int
    hit_rate: float | None
    avg_bars_held: float | None
    avg_holding_s: float | None
    turnover: float | None
    n_rehedges: int
    time_in_market: float
    n_bars: int
    bar_seconds: float | None
    bars_per_year: float | None

    def summary(self) -> dict[str, float | int | None]:
        """Plain ``dict`` (floats, ints, None; never NaN), keys :data:`SUMMARY_KEYS`."""
        out: dict[str, float | int | None] = {}
        for k in SUMMARY_KEYS:
            v = getattr(self, k)
            out[k] = v if v is None or isinstance(v, int) else _f(v)
        return out

    def _repr_html_(self) -> str:
        return _html_table(self.summary())


def _html_table(values: Mapping[str, Any]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "&mdash;"
        return f"{v:,.6g}" if isinstance(v, float) else html.escape(str(v))
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{cell(v)}</td></tr>"
                   for k, v in values.items())
    return f"<table>{rows}</table>"


def _longest_run(mask: np.ndarray) -> int:
    if not mask.any():
        return 0
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    return int((np.flatnonzero(d == -1) - np.flatnonzero(d == 1)).max())


def _stats(sim: _Sim, bar_seconds: float | None, s: BacktestSettings) -> BacktestStats:
    n = sim.equity.size
    eq = sim.equity
    total = float(eq[-1])
    fees = float(sim.f_fee.sum())
    gross = total + fees
    traded = float(sim.f_notional.sum())
    capital = s.capital if s.capital is not None else (
        float(sim.entry_notional.max()) if sim.entry_notional.size else None)
    bpy = SECONDS_PER_YEAR / bar_seconds if bar_seconds else None

    d = np.diff(eq)
    sharpe = sortino = None
    if bpy is not None and d.size >= 2:
        mu = d.mean()
        sd = d.std(ddof=1)
        if sd > 0:
            sharpe = _f(mu / sd * math.sqrt(bpy))
        down = math.sqrt(float(np.mean(np.minimum(d, 0.0) ** 2)))
        if down > 0:
            sortino = _f(mu / down * math.sqrt(bpy))

    peak = np.maximum.accumulate(np.maximum(eq, 0.0))
    dd = peak - eq
    mdd = float(dd.max())
    mdd_bars = _longest_run(dd > 0)

    closed = sim.reason != _R_END
    n_trades = int(sim.e.size)
    n_closed = int(closed.sum())
    net = sim.gross - sim.fees
    held = (sim.x - sim.e)[closed]
    hit = _f(np.mean(net[closed] > 0)) if n_closed else None
    avg_held = _f(held.mean()) if n_closed else None
    return BacktestStats(
        total_pnl=total, gross_pnl=gross, fees=fees, traded_notional=traded,
        break_even_fee_bps=_f(gross / traded * 1e4) if traded > 0 else None,
        capital=capital,
        total_return=_f(total / capital) if capital else None,
        annual_return=_f(total / capital * bpy / n) if capital and bpy else None,
        sharpe=sharpe, sortino=sortino, max_drawdown=mdd,
        max_drawdown_return=_f(mdd / capital) if capital else None,
        max_drawdown_bars=mdd_bars,
        max_drawdown_s=mdd_bars * bar_seconds if bar_seconds else None,
        n_trades=n_trades, n_closed=n_closed, n_open=n_trades - n_closed, hit_rate=hit,
        avg_bars_held=avg_held,
        avg_holding_s=avg_held * bar_seconds if avg_held is not None and bar_seconds else None,
        turnover=_f(traded / capital) if capital else None,
        n_rehedges=int(sim.n_fills.sum()) - n_trades - n_closed,
        time_in_market=float(np.count_nonzero(sim.qy)) / n, n_bars=n,
        bar_seconds=bar_seconds, bars_per_year=bpy,
    )


# --- result ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class BacktestResult:
    """Outcome of :func:`backtest`.

    Attributes
    ----------
    settings : BacktestSettings
    trades : DataFrame
        One row per trade, columns :data:`TRADE_COLUMNS`:

        ============== ====================================================================
        entry_time     bar of the entry fill (index value of the input)
        exit_time      bar of the exit fill; last bar for an open trade
        side           ``"long"`` (long y, short beta x) or ``"short"`` the spread
        entry_z        z on the entry signal bar
        exit_z         z on the exit signal bar (last bar for ``end``)
        beta           hedge ratio at entry (signal bar)
        entry_y/_x     fill prices at entry, slippage included, quote per unit
        exit_y/_x      fill prices at exit; last closes for an open trade
        qty_y          signed units of y (+ long)
        qty_x          signed units of x at entry (:math:`-\\beta\\,q_y`)
        qty_x_exit     signed units of x just before the exit (differs when re-hedged)
        n_rehedges     re-hedge fills inside the trade
        traded_notional  quote notional of all the trade's fills
        gross_pnl      PnL after slippage, before fees (open trades: marked to market)
        fees           fees of the trade's fills
        net_pnl        gross_pnl - fees
        bars_held      exit fill bar - entry fill bar
        exit_reason    one of :data:`EXIT_REASONS`
        ============== ====================================================================
    equity : DataFrame
        One row per input bar (same index), columns :data:`EQUITY_COLUMNS`:
        ``zscore``; ``side`` (-1, 0, +1 after the bar's fill); ``qty_y``,
        ``qty_x`` (signed units held after the fill); ``exposure``
        (:math:`|q_y| c_y + |q_x| c_x` at the close); ``traded_notional``,
        ``fees``, ``pnl`` (this bar, net); ``equity`` (cumulative net PnL);
        ``drawdown`` (equity minus running peak, <= 0).
    stats : BacktestStats
    """

    settings: BacktestSettings
    trades: pd.DataFrame
    equity: pd.DataFrame
    stats: BacktestStats

    def summary(self) -> dict[str, float | int | None]:
        """JSON-ready statistics: plain floats and ints, None for undefined.

        Keys :data:`SUMMARY_KEYS`, among them ``total_pnl``, ``sharpe``,
        ``max_drawdown``, ``n_trades``, ``fees``, ``break_even_fee_bps``.
        """
        return self.stats.summary()

    def _repr_html_(self) -> str:
        s = self.settings
        head = (f"<b>Backtest</b> entry={s.entry} exit={s.exit} stop={s.stop} fill={s.fill} "
                f"fee={s.fee_bps} bps/leg/side slippage={s.slippage_bps} bps")
        trades = self.trades.tail(10).to_html(max_rows=10, float_format=lambda v: f"{v:,.6g}")
        return f"<div>{head}{_html_table(self.summary())}<p>last trades</p>{trades}</div>"

    def __repr__(self) -> str:
        st = self.stats
        return (f"BacktestResult(n_trades={st.n_trades}, total_pnl={st.total_pnl:.6g}, "
                f"sharpe={st.sharpe}, max_drawdown={st.max_drawdown:.6g})")


def _trades_frame(sim: _Sim, p: _Prices, z: np.ndarray) -> pd.DataFrame:
    n = z.size
    open_ = sim.reason == _R_END
    at_entry = np.searchsorted(sim.f_idx, sim.e)
    at_exit = np.minimum(np.searchsorted(sim.f_idx, sim.x), max(sim.f_idx.size - 1, 0))
    closed = ~open_
    return pd.DataFrame({
        "entry_time": p.index[sim.e],
        "exit_time": p.index[sim.x],
        "side": np.where(sim.side > 0, "long", "short"),
        "entry_z": z[sim.sig_in],
        "exit_z": z[sim.sig_out],
        "beta": sim.beta_entry,
        "entry_y": sim.f_py[at_entry],
        "entry_x": sim.f_px[at_entry],
        "exit_y": np.where(closed, sim.f_py[at_exit] if sim.f_idx.size else 0.0,
                           p.y_close[n - 1]),
        "exit_x": np.where(closed, sim.f_px[at_exit] if sim.f_idx.size else 0.0,
                           p.x_close[n - 1]),
        "qty_y": sim.qy[sim.e],
        "qty_x": sim.qx[sim.e],
        "qty_x_exit": sim.qx[np.where(open_, n - 1, sim.x - 1)],
        "n_rehedges": sim.n_fills - 1 - closed,
        "traded_notional": sim.notional,
        "gross_pnl": sim.gross,
        "fees": sim.fees,
        "net_pnl": sim.gross - sim.fees,
        "bars_held": (sim.x - sim.e).astype(np.int64),
        "exit_reason": pd.Categorical.from_codes(sim.reason, categories=list(EXIT_REASONS)),
    }, columns=list(TRADE_COLUMNS))


def _equity_frame(sim: _Sim, p: _Prices, z: np.ndarray) -> pd.DataFrame:
    n = z.size
    notional = np.zeros(n)
    notional[sim.f_idx] = sim.f_notional
    fees = np.zeros(n)
    fees[sim.f_idx] = sim.f_fee
    peak = np.maximum.accumulate(np.maximum(sim.equity, 0.0))
    return pd.DataFrame({
        "zscore": z,
        "side": np.sign(sim.qy).astype(np.int8),
        "qty_y": sim.qy,
        "qty_x": sim.qx,
        "exposure": np.abs(sim.qy) * p.y_close + np.abs(sim.qx) * p.x_close,
        "traded_notional": notional,
        "fees": fees,
        "pnl": sim.pnl,
        "equity": sim.equity,
        "drawdown": sim.equity - peak,
    }, index=p.index)


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
