"""Benchmark of quantlab.bars: 10M synthetic trades (seeded) -> 1 s bars.

Prints the time of :func:`quantlab.bars.resample_ticks`, of a bare
searchsorted/reduceat baseline measured in the same run (non-empty bars only,
no frame), their ratio, pandas ``resample`` for reference, and the per-trade
cost of :class:`quantlab.bars.IncrementalBars`. Prints PASS/FAIL per target and
exits 0 either way.

Targets: resample_ticks <= 3x the baseline; 10M ticks -> 1 s bars < 0.5 s.

Run: ``.venv/bin/python benchmarks/bars.py [n_ticks]``
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pandas as pd

from quantlab.bars import IncrementalBars, resample_ticks

RATIO_TARGET = 3.0
SECONDS_TARGET = 0.5
REPEATS = 5


def synthetic_ticks(n: int, seed: int = 42):
    """``n`` trades over one day (about 116 per second), sorted by (time, id),
    with equal timestamps, as a store or file returns them."""
    rng = np.random.default_rng(seed)
    start = 1_723_075_200_000  # 2024-08-08 00:00 UTC
    t = np.sort(rng.integers(start, start + 86_400_000, n))
    ids = np.arange(n, dtype=np.int64) + 3_735_683_259
    price = 60_000 + np.cumsum(rng.normal(0, 0.5, n))
    qty = rng.exponential(0.05, n)
    m = rng.random(n) < 0.5
    return t, price, qty, m, ids


def baseline(t, price, qty, m, tf_ms: int):
    """Bare OHLCV of the non-empty bars: searchsorted of the bar edges, reduceat."""
    first, last = t[0] // tf_ms, t[-1] // tf_ms
    edges = np.arange(first, last + 2, dtype=np.int64) * tf_ms
    starts = np.searchsorted(t, edges)
    counts = np.diff(starts)
    nz = np.flatnonzero(counts)
    seg = starts[nz]
    return (price[seg], np.maximum.reduceat(price, seg), np.minimum.reduceat(price, seg),
            price[starts[nz + 1] - 1], np.add.reduceat(qty, seg),
            np.add.reduceat(price * qty, seg), np.add.reduceat(qty * ~m, seg),
            counts[nz])


def best_of(fn, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 10_000_000
    t, price, qty, m, ids = synthetic_ticks(n)
    print(f"{n:,} ticks over one day -> 1s bars (best of {REPEATS}; numpy {np.__version__}, "
          f"pandas {pd.__version__}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs)")

    bars = resample_ticks(t, price, qty, m, ids, timeframe="1s")
    base = baseline(t, price, qty, m, 1_000)
    traded = bars[~bars["is_empty"]]
    assert len(traded) == len(base[0]) and np.array_equal(traded["close"].to_numpy(), base[3])

    t_base = best_of(lambda: baseline(t, price, qty, m, 1_000))
    t_ours = best_of(lambda: resample_ticks(t, price, qty, m, ids, timeframe="1s"))
    ratio = t_ours / t_base
    print(f"  bars: {len(bars):,} ({int(bars['is_empty'].sum()):,} empty)")
    print(f"  baseline searchsorted/reduceat : {t_base * 1e3:8.1f} ms")
    print(f"  resample_ticks (sorted input)  : {t_ours * 1e3:8.1f} ms   "
          f"ratio {ratio:.2f}x  [{verdict(ratio <= RATIO_TARGET)} <= {RATIO_TARGET:.0f}x]  "
          f"[{verdict(t_ours < SECONDS_TARGET)} < {SECONDS_TARGET} s]")

    rng = np.random.default_rng(1)
    perm = rng.permutation(n)
    shuffled = (t[perm], price[perm], qty[perm], m[perm], ids[perm])
    t_unsorted = best_of(lambda: resample_ticks(*shuffled, timeframe="1s"), repeats=1)
    print(f"  resample_ticks (shuffled input): {t_unsorted * 1e3:8.1f} ms   "
          f"(includes a stable (time, id) argsort; information only)")

    frame = pd.DataFrame({"price": price, "qty": qty},
                         index=pd.to_datetime(t, unit="ms", utc=True))
    t_pandas = best_of(lambda: frame["price"].resample("1s").ohlc().join(
        frame["qty"].resample("1s").sum()), repeats=2)
    print(f"  pandas resample ohlc+sum (ref) : {t_pandas * 1e3:8.1f} ms")

    k = min(n, 1_000_000)
    live = IncrementalBars("1s")
    args = [a[:k].tolist() for a in (t, price, qty, m, ids)]
    t0 = time.perf_counter()
    add = live.add
    for row in zip(*args):
        add(*row)
    per_add = (time.perf_counter() - t0) / k * 1e6
    live = IncrementalBars("1s")
    t0 = time.perf_counter()
    live.add_many(t[:k], price[:k], qty[:k], m[:k], ids[:k])
    per_many = (time.perf_counter() - t0) / k * 1e6
    print(f"  IncrementalBars.add            : {per_add:8.2f} us/trade ({k:,} trades)")
    print(f"  IncrementalBars.add_many       : {per_many:8.2f} us/trade")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
