"""Benchmark of quantlab.store: write throughput and read speed of a real SQLite file.

Writes ``n_batches`` batches of 15,000 :class:`quantlab.binance.Trade` (USD-M
``@trade``, ids contiguous, ~60 trades per ms: what the ingester's writer
thread hands over) into a fresh store in a temp dir, then the same through a
tick DataFrame, then a batch of pure duplicates. Reports trades/s per batch
(best and median: this 2-core machine is shared, so the median moves with the
load average printed alongside) and overall.

Reads: a day of 1 s bars (86,400 bars, from a day of synthetic trades at 2 per
second) through :meth:`TickStore.bars_1s` and :meth:`TickStore.bars` (1 m), and
all the ticks written above through :meth:`TickStore.ticks`.

Targets (PASS/FAIL printed, exit 0 either way): writes >= 150,000 trades/s
(best batch), a day of 1 s bars < 0.5 s.

Run: ``.venv/bin/python benchmarks/store.py [n_batches]``
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import itertools
import sqlite3

import numpy as np
import pandas as pd

from quantlab.binance import Trade
from quantlab.schema import TICK_COLUMNS, trades_to_frame
from quantlab.store import SQL_TICKS, TickStore

BATCH = 15_000
WRITE_TARGET = 150_000  # trades/s, store alone (the ingester's end-to-end target is 60k/s)
DAY_BARS_TARGET_S = 0.5
T0 = 1_723_075_200_000  # 2024-08-08 00:00 UTC


def trades(first_id: int, n: int, seed: int, *, per_ms: float = 60.0,
           symbol: str = "BTCUSDT") -> list[Trade]:
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n)
    t = T0 + (ids / per_ms).astype(np.int64)
    price = np.round(60_000 + np.cumsum(rng.normal(0, 0.5, n)), 1)
    qty = np.round(rng.exponential(0.05, n), 3) + 0.001
    maker = rng.random(n) < 0.5
    return [Trade("usdm", symbol, "trade", i, p, q, tm, tm + 5, m, tm + 1, "MARKET")
            for i, p, q, tm, m in zip(ids.tolist(), price.tolist(), qty.tolist(), t.tolist(),
                                      maker.tolist())]


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def report(label: str, walls: list[float], cpus: list[float], n: int) -> float:
    walls_a = np.asarray(walls)
    best = n / walls_a.min()
    print(f"{label:34s} best {best:>9,.0f}/s  median {n / np.median(walls_a):>9,.0f}/s  "
          f"overall {n * len(walls) / walls_a.sum():>9,.0f}/s  "
          f"(CPU {n * len(cpus) / sum(cpus):>9,.0f}/s)")
    return best


def compare_reads(path: str) -> None:
    """The same rows read the ways store.py chose between."""
    con = sqlite3.connect(path)
    args = ("usdm", "BTCUSDT", "trade", -2 ** 63, 2 ** 63 - 1)

    def fetchall_numpy():
        cols = list(zip(*con.execute(SQL_TICKS, args).fetchall()))
        return [np.array(c) for c in cols]

    for label, fn in (("fetchall -> numpy", fetchall_numpy),
                      ("pd.read_sql", lambda: pd.read_sql(SQL_TICKS, con, params=args))):
        _, w, _ = timed(fn)
        print(f"  same rows via {label}: {w:.2f} s")
    con.close()


def compare_inserts(batch: list[Trade], tmp: str, reps: int = 8) -> None:
    """Rows per INSERT statement and what is bound: executemany of 1-row and
    100-row statements binding all 12 columns (the store until 2026-11) vs the
    store's own ``TickStore._insert_rows`` (100-row statements, market, symbol,
    kind and all-NULL columns as SQL literals, the rest bound column-wise),
    alternated so all see the same machine load; best CPU time of each."""
    rows = [tuple(getattr(t, c) for c in TICK_COLUMNS) for t in batch]
    one = "(" + ", ".join("?" * len(TICK_COLUMNS)) + ")"
    variants = ("1 row, all bound", "100 rows, all bound", "store (literals)")
    cons, best = {}, {}
    for k, name in enumerate(variants):
        path = os.path.join(tmp, f"insert{k}.db")
        TickStore(path).close()  # the store's schema and pragmas
        cons[name] = sqlite3.connect(path, isolation_level=None)
        best[name] = float("inf")
    keys = [tuple(getattr(batch[0], c) for c in TICK_COLUMNS[:3])]
    code = np.zeros(len(rows), dtype=np.int64)
    for rep in range(reps):
        shifted = [(*r[:3], r[3] + rep * len(rows), *r[4:]) for r in rows]
        flat = list(itertools.chain.from_iterable(shifted))
        cols = [np.array(c) if i < 9 else list(c)
                for i, c in enumerate(zip(*shifted))][3:]
        for name, con in cons.items():
            c0 = time.process_time()
            con.execute("BEGIN IMMEDIATE")
            if name == "store (literals)":
                TickStore._insert_rows(con, keys, code, tuple(cols))
            else:
                k = 1 if name.startswith("1 ") else 100
                sql = f"INSERT INTO ticks VALUES {', '.join([one] * k)}"
                con.executemany(sql, zip(*[iter(flat)] * (k * len(TICK_COLUMNS))))
            con.execute("COMMIT")
            best[name] = min(best[name], time.process_time() - c0)
    for name, con in cons.items():
        assert con.execute("SELECT count(*) FROM ticks").fetchone()[0] == reps * len(rows)
        con.close()
        print(f"  bare INSERT, {name:20s}: {len(rows) / best[name]:>9,.0f} rows/s "
              f"({best[name] / len(rows) * 1e6:.2f} us/row, best CPU time of {reps})")


def ingester_batches(tmp: str, n_batches: int = 60, size: int = 5_000) -> None:
    """write_trades CPU per trade for batches as the ingester's writer thread
    hands them over: 5,000 fresh spot Trades of two symbols interleaved."""
    rng = np.random.default_rng(5)
    next_id = {"BTCUSDT": 1, "ETHUSDT": 1}
    batches = []
    for b in range(n_batches):
        sym = np.where(rng.random(size) < 0.5, "BTCUSDT", "ETHUSDT").tolist()
        price = np.round(60_000 + rng.normal(0, 5, size), 2).tolist()
        qty = (np.round(rng.exponential(0.05, size), 3) + 0.001).tolist()
        maker = (rng.random(size) < 0.5).tolist()
        out = []
        for i in range(size):
            s = sym[i]
            tid = next_id[s]
            next_id[s] = tid + 1
            tm = T0 + (b * size + i) // 30
            out.append(Trade("spot", s, "trade", tid, price[i], qty[i], tm, tm + 3, maker[i],
                             tm + 1))
        batches.append(out)
    with TickStore(os.path.join(tmp, "ingester.db")) as st:
        cpus = []
        for b in batches:
            c0 = time.thread_time()
            res = st.write_trades(b)
            cpus.append(time.thread_time() - c0)
            assert res.inserted == size, res
    us = np.asarray(cpus[5:]) / size * 1e6
    print(f"write {n_batches} x {size:,} Trade (2 symbols, as the ingester): CPU per trade "
          f"best {us.min():.2f} us, median {np.median(us):.2f} us")


def main(argv: list[str]) -> int:
    n_batches = int(argv[1]) if len(argv) > 1 else 40
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        batches = [trades(i * BATCH, BATCH, seed=i) for i in range(n_batches)]
        frames = [trades_to_frame(trades((n_batches + i) * BATCH, BATCH, seed=1000 + i))
                  for i in range(max(4, n_batches // 4))]
        with TickStore(path) as st:
            walls, cpus = [], []
            for b in batches:
                res, w, c = timed(lambda: st.write_trades(b))
                assert res.inserted == BATCH, res
                walls.append(w)
                cpus.append(c)
            best = report(f"write {n_batches} x {BATCH:,} Trade", walls, cpus, BATCH)
            q = max(1, n_batches // 4)
            report("  first quarter", walls[:q], cpus[:q], BATCH)
            report("  last quarter", walls[-q:], cpus[-q:], BATCH)
            walls, cpus = [], []
            for f in frames:
                res, w, c = timed(lambda: st.write_trades(f))
                assert res.inserted == BATCH, res
                walls.append(w)
                cpus.append(c)
            report(f"write {len(frames)} x {BATCH:,} DataFrame", walls, cpus, BATCH)
            walls, cpus = [], []
            for b in batches[:5]:
                res, w, c = timed(lambda: st.write_trades(b))
                assert res.duplicates == BATCH, res
                walls.append(w)
                cpus.append(c)
            report("write 5 batches of duplicates", walls, cpus, BATCH)
            compare_inserts(batches[0], tmp)
            ingester_batches(tmp)
            n_ticks = st.count()
            _, w, _ = timed(lambda: st.ticks("BTCUSDT"))
            print(f"ticks(): {n_ticks:,} rows in {w:.2f} s ({n_ticks / w:,.0f} rows/s)")
            compare_reads(path)
            mb = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
            print(f"file size {mb / 1e6:.0f} MB ({mb / n_ticks:.0f} B per trade incl. bars)")

            # A day of 1 s bars: 2 trades per second for 24 h.
            day = trades(0, 2 * 86_400, seed=7, per_ms=0.002, symbol="ETHUSDT")
            for i in range(0, len(day), BATCH):
                st.write_trades(day[i:i + BATCH])
            walls = []
            for _ in range(5):
                frame, w, _ = timed(lambda: st.bars_1s("ETHUSDT", start_ms=T0,
                                                      end_ms=T0 + 86_400_000))
                walls.append(w)
            assert len(frame) == 86_400, len(frame)
            day_s = min(walls)
            print(f"bars_1s(): a day = {len(frame):,} bars in {day_s * 1000:.0f} ms "
                  f"(median {np.median(walls) * 1000:.0f} ms)")
            try:
                walls = []
                for _ in range(5):
                    frame, w, _ = timed(lambda: st.bars("ETHUSDT", "1m", start_ms=T0,
                                                       end_ms=T0 + 86_400_000))
                    walls.append(w)
                print(f"bars('1m'): a day = {len(frame):,} bars in {min(walls) * 1000:.0f} ms")
            except ImportError:
                print("bars('1m'): quantlab.bars not available")
    print(f"{'PASS' if best >= WRITE_TARGET else 'FAIL'}: write >= {WRITE_TARGET:,} trades/s "
          f"(best batch {best:,.0f}/s)")
    print(f"{'PASS' if day_s < DAY_BARS_TARGET_S else 'FAIL'}: a day of 1 s bars < "
          f"{DAY_BARS_TARGET_S} s ({day_s:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
