r"""The running-sum windows behind :class:`quantlab.analytics.live.LivePairState`:
exact recentring, the slow paths of a bar, ring order and the expanding-OLS fit.

Plain functions of floats and lists with no state of their own: the live
state keeps its rings and sums in the local variables of its generator and
calls these only off its fast path (a NaN bar, the warm-up, a robust re-fit
bar, the exact recomputation every few window lengths, the expanding OLS), so
a rolling bar in a full window of valid bars never calls them. (The robust
re-fit itself, ``_robust_fit``, stays in :mod:`quantlab.analytics.live`, beside
the ``robust_window_fit`` it calls.)

Numerical method
----------------
Each trailing window keeps a ring buffer and running sums of its values
centred on a reference :math:`r` (sum, sum of squares, cross products). The
ring holds each bar's deviation :math:`v - r`, the very number added to the
sums, so dropping the oldest bar subtracts exactly what was added. Adding the
new bar and removing the oldest costs O(1), but the rounding errors of those
additions accumulate, and prices of order :math:`10^4`-:math:`10^5` squared
leave little precision for a window variance of a few units. So every
``recompute_every`` bars (default: four window lengths, at least 256 bars;
amortised O(1)) the sums are recomputed exactly (``math.fsum``) from the ring
around a new reference, the window's mean (also right after the first finite
value, so that the very first window is already centred), and the ring is
rewritten as deviations from it: the error never builds up over more than one
cadence, and the centred values stay as small as the price range over a few
windows (the 1e8-price test keeps beta within 1e-9 of a two-pass computation).
The expanding OLS uses Welford's update (no buffer needed); :func:`_ols_fit`
turns its running means and centred sums into (alpha, beta).
"""
from __future__ import annotations

import math
from itertools import repeat
from math import fsum, isnan
from operator import add, mul, sub

from quantlab.analytics._base import TINY_REL_VAR

__all__: list[str] = []   # private helpers of quantlab.analytics.live

_NAN = math.nan


# -- exact recentring (every few window lengths: amortised O(1)) -------------------------
# The rings hold each bar's deviation from the window's reference, NaN for NaN bars.
def _rebase(buf: list, old: float) -> tuple:
    """Rewrite ``buf`` (deviations from ``old``) as deviations from the mean of
    its finite values; returns ``(that mean, the finite deviations)``. The
    values themselves come back exactly for prices: ``v - old`` was exact
    (Sterbenz), so ``(v - old) + old == v``. (C-level ``map`` and ``fsum``:
    a few microseconds for 60 bars.)"""
    n = len(buf)
    vals = list(map(add, buf, repeat(old, n)))         # the values themselves
    has_nan = any(map(isnan, vals))
    finite = [v for v in vals if v == v] if has_nan else vals
    if not finite:
        return old, finite
    r = fsum(finite) / len(finite)
    buf[:] = map(sub, vals, repeat(r, n))
    return r, [d for d in buf if d == d] if has_nan else buf


def _recentre2(ba: list, bb: list, ra: float, rb: float) -> tuple:
    """Pair window (a bar is NaN in both rings or in neither): re-centred on its
    mean, rings rewritten; returns ``(bad, ra, rb, sa, sb, saa, sbb, sab)``,
    exactly rounded sums."""
    ra, da = _rebase(ba, ra)
    rb, db = _rebase(bb, rb)
    return (len(ba) - len(da), ra, rb, fsum(da), fsum(db), fsum(map(mul, da, da)),
            fsum(map(mul, db, db)), fsum(map(mul, da, db)))


def _recentre1(buf: list, r: float, k: int, gone: float) -> tuple:
    """Spread window (``k`` = next write slot, ``gone`` = deviation of the
    spread that left last): re-centred on its mean, ring rewritten; returns
    ``(bad, r, s, ss, p, gone, prev)`` with ``p`` the lag-1 products over
    ``gone`` and the ring oldest first, ``prev`` the newest deviation."""
    r_new, d = _rebase(buf, r)
    if r_new != r:
        gone = (gone + r) - r_new
    seq = [gone] + buf[k:] + buf[:k]
    prods = list(map(mul, seq, seq[1:]))
    if any(map(isnan, prods)):                         # pairs touching a NaN: left out
        prods = [v for v in prods if v == v]
    p = fsum(prods)
    return len(buf) - len(d), r_new, fsum(d), fsum(map(mul, d, d)), p, gone, buf[k - 1]


# -- the slow paths of a bar: a NaN bar enters or leaves a window, or the window still
# holds NaN bars (warm-up). The same sums as the fast path, on deviations, one bar at a
# time, counting the window's NaN bars in ``bad``.
def _slide2(bad: int, sa: float, sb: float, saa: float, sbb: float, sab: float,
            a: float, b: float, oa: float, ob: float) -> tuple:
    """Pair window: add (a, b) (NaN together), drop (oa, ob) (NaN together).
    Returns (bad, sa, sb, saa, sbb, sab)."""
    if a == a:
        sa += a
        sb += b
        saa += a * a
        sbb += b * b
        sab += a * b
    else:
        bad += 1
    if oa == oa:
        sa -= oa
        sb -= ob
        saa -= oa * oa
        sbb -= ob * ob
        sab -= oa * ob
    else:
        bad -= 1
    return bad, sa, sb, saa, sbb, sab


def _slide1(bad: int, s: float, ss: float, p: float, new: float, old: float,
            prev: float, gone: float) -> tuple:
    """Spread window: add ``new``, drop ``old``; ``p`` (lag-1 products) gains
    the pair (prev, new) and loses (gone, old). Returns (bad, s, ss, p)."""
    if old == old and gone == gone:
        p -= gone * old
    if new == new and prev == prev:
        p += prev * new
    if new == new:
        s += new
        ss += new * new
    else:
        bad += 1
    if old == old:
        s -= old
        ss -= old * old
    else:
        bad -= 1
    return bad, s, ss, p


def _ordered(buf: list, i: int) -> list:
    """Ring buffer contents oldest first (``i`` = next write position)."""
    return buf[i:] + buf[:i]


def _ols_fit(n: int, mx: float, my: float, cxx: float, cxy: float, W: int,
             intercept: bool) -> tuple:
    """Expanding OLS (alpha, beta) from Welford's n, means and centred sums."""
    if n < W:
        return _NAN, _NAN
    if intercept:
        if cxx <= TINY_REL_VAR * n * mx * mx or cxx <= 0.0:
            return _NAN, _NAN
        beta = cxy / cxx
        return my - beta * mx, beta
    rxx = cxx + n * mx * mx
    if rxx > 0.0:
        return 0.0, (cxy + n * mx * my) / rxx
    return _NAN, _NAN
