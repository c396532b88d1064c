"""Timings of the backtest and the alert replay on a seeded synthetic pair.

    .venv/bin/python benchmarks/backtest.py [--bars 1000000] [--sweep-bars 100000] [--repeat 3]

Prints the best of ``--repeat`` runs (wall clock, one process). What is timed:

* ``rolling_beta_zscore`` over the long series (window 240);
* one :func:`quantlab.backtest.backtest` over the long series, for several
  settings (the result frames included);
* a :func:`quantlab.backtest.sweep` of 5 entries x 3 exits x 4 windows over the
  short series (z computed once per window);
* for scale, a plain per-bar Python loop of the same entry/exit state machine
  (signals only, no accounting) over the long series;
* :func:`quantlab.alerts.replay_alerts` (3 rules) over the long series and
  :meth:`quantlab.alerts.AlertEngine.evaluate` per call.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from quantlab.alerts import AlertEngine, replay_alerts
from quantlab.backtest import backtest, rolling_beta_zscore, sweep


def synthetic_pair(n: int, seed: int = 1) -> pd.DataFrame:
    """BTC/ETH-like levels: x a geometric random walk, y = 13 x + AR(1) noise."""
    rng = np.random.default_rng(seed)
    x = 3000.0 * np.exp(np.cumsum(rng.normal(scale=5e-4, size=n)))
    eps = rng.normal(scale=3.0, size=n)
    u = lfilter([1.0], [1.0, -0.995], eps)  # AR(1), phi = 0.995: half-life ~138 bars
    y = 13.0 * x + 1000.0 + u
    idx = pd.date_range("2022-01-01", periods=n, freq="1min", tz="UTC", name="open_time")
    return pd.DataFrame({"y_open": np.r_[y[0], y[:-1]], "y_close": y,
                         "x_open": np.r_[x[0], x[:-1]], "x_close": x}, index=idx)


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def per_bar_loop(z: np.ndarray, entry: float, exit_: float) -> int:
    """The same state machine, one Python iteration per bar (for comparison)."""
    side, trades, pending = 0, 0, 0
    for t in range(z.size - 1):
        if pending:
            side, pending = pending if pending != 2 else 0, 0
        v = z[t]
        if side == 0:
            if v > entry:
                pending, trades = -1, trades + 1
            elif v < -entry:
                pending, trades = 1, trades + 1
        elif (side == -1 and v <= exit_) or (side == 1 and v >= -exit_):
            pending = 2
    return trades


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--sweep-bars", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    df = synthetic_pair(args.bars)
    t, (beta, z) = best(lambda: rolling_beta_zscore(df["y_close"], df["x_close"], 240), args.repeat)
    print(f"rolling_beta_zscore  {args.bars:>9,} bars, window 240          {t * 1e3:8.1f} ms")
    df["beta"], df["zscore"] = beta, z

    cases = {
        "entry 2 / exit 0": dict(entry=2.0, exit=0.0, fee_bps=2.0),
        "entry 1 / exit 0.5 / stop 3 / max 500": dict(entry=1.0, exit=0.5, stop=3.0,
                                                      max_hold_bars=500, fee_bps=2.0),
        "entry 2 / exit 0 / re-hedge every bar": dict(entry=2.0, exit=0.0, rehedge_every=1,
                                                      fee_bps=2.0),
        "entry 2 / exit 0 / next close, slippage": dict(entry=2.0, fill="next_close",
                                                        slippage_bps=1.0, fee_bps=2.0),
    }
    for label, kw in cases.items():
        t, res = best(lambda kw=kw: backtest(df, **kw), args.repeat)
        print(f"backtest             {args.bars:>9,} bars, {label:<38} {t * 1e3:8.1f} ms"
              f"  ({res.stats.n_trades:,} trades, {res.stats.n_rehedges:,} re-hedges)")

    t, n_loop = best(lambda: per_bar_loop(z, 2.0, 0.0), 1)
    print(f"per-bar Python loop  {args.bars:>9,} bars, signals only (reference) {t * 1e3:8.1f} ms"
          f"  ({n_loop:,} trades)")

    short = df.iloc[:args.sweep_bars][["y_open", "y_close", "x_open", "x_close"]]
    grid = dict(entries=[1.0, 1.5, 2.0, 2.5, 3.0], exits=[-0.5, 0.0, 0.5],
                windows=[60, 120, 240, 480])
    t, table = best(lambda: sweep(short, fee_bps=2.0, **grid), args.repeat)
    print(f"sweep 5x3x4          {args.sweep_bars:>9,} bars, {len(table)} combinations"
          f"{'':<20} {t * 1e3:8.1f} ms  ({t / len(table) * 1e3:.1f} ms per combination,"
          f" {int(table['n_trades'].sum()):,} trades)")

    metrics = pd.DataFrame({"zscore": z, "corr": 0.8}, index=df.index)
    rules = ["zscore > 2", "zscore crosses 0 hysteresis=0.1", "zscore < -2 cooldown_s=3600"]
    t, ev = best(lambda: replay_alerts(metrics, rules, "BTCUSDT/ETHUSDT"), args.repeat)
    print(f"replay_alerts        {args.bars:>9,} rows, 3 rules{'':<26} {t * 1e3:8.1f} ms"
          f"  ({len(ev):,} events)")
    eng = AlertEngine(rules, "BTCUSDT/ETHUSDT", sinks=())
    zs = z[:100_000].tolist()
    t0 = time.perf_counter()
    for i, v in enumerate(zs):
        eng.evaluate(i * 60_000, {"zscore": v})
    t = time.perf_counter() - t0
    print(f"AlertEngine.evaluate   {len(zs):>7,} calls, 3 rules{'':<25} {t / len(zs) * 1e6:8.2f} us/call")


if __name__ == "__main__":
    main()
