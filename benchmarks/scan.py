"""The pair scanner at research scale: a generated universe of 100 symbols
(4,950 pairs, some planted cointegrated), 30 days of 1 m bars, formation 20
days, evaluation 10 days, on the local process pool and on a Dask LocalCluster.

    .venv/bin/python benchmarks/scan.py [--symbols 100] [--days 30] [--workers 2] [--skip-dask]

Prints, for each executor: wall time of the whole scan (chunk planning, worker
start, archive reads, every pair, adjustment and selection), pairs/s, and the
peak resident memory of the process tree (this process + workers, sampled every
0.2 s). Targets on 2 cores: whole scan < 120 s, Dask within 1.3x of the pool,
memory < 4 GB. Also checks that both tables are identical and that the planted
pairs are selected.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import pandas as pd  # noqa: E402
import psutil  # noqa: E402

from quantlab.scan import ScanSettings, ScanWindows  # noqa: E402
from quantlab.scan.run import scan  # noqa: E402
from quantlab.scan.source import write_universe  # noqa: E402
from quantlab.scan.synthetic import synthetic_universe  # noqa: E402


class PeakRSS:
    """Peak RSS of this process and all its children (bytes), sampled."""

    def __init__(self, every_s: float = 0.2):
        self.every_s, self.peak = every_s, 0
        self.cpu: dict[int, float] = {}  # pid -> user + system CPU seconds, last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for proc in [me, *me.children(recursive=True)]:
            try:
                if proc is not me:
                    total += proc.memory_info().rss
                t = proc.cpu_times()
                self.cpu[proc.pid] = t.user + t.system
            except psutil.Error:
                pass
        return total

    def cpu_seconds(self) -> float:
        """CPU time the process tree spent between enter and exit (processes
        alive at enter count from their state then)."""
        return sum(v - self.base.get(pid, 0.0) for pid, v in self.cpu.items())

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self._sample())

    def __enter__(self):
        self.peak = self._sample()
        self.base = dict(self.cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def run(label: str, fn, cores: int) -> tuple[float, object, int]:
    """Wall time, result, peak RSS. Also prints the CPU time of the process
    tree per pair: on a shared machine the wall time depends on the other
    users, the CPU time much less (``cpu / cores`` is the wall time the same
    work would take on ``cores`` idle cores)."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        res = fn()
        wall = time.perf_counter() - t0
    cpu = mem.cpu_seconds()
    n = len(res.table)
    print(f"{label:<30} {wall:7.1f} s wall  {n / wall:6.1f} pairs/s  CPU {1e3 * cpu / n:5.1f} ms/pair"
          f" (idle {cores} cores: ~{cpu / cores:5.1f} s)  peak RSS {mem.peak / 2**30:4.2f} GB"
          f"  ({res.n_tasks} tasks, {int(res.table['selected'].sum())} selected)", flush=True)
    return wall, res, mem.peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--formation-days", type=int, default=20)
    ap.add_argument("--planted", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pairs-per-task", type=int, default=200)
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args()

    n_bars = args.days * 1440
    t0 = time.perf_counter()
    u = synthetic_universe(args.symbols, n_bars, n_planted=args.planted, seed=2024,
                           start="2024-01-01", phi=0.97)
    n_pairs = args.symbols * (args.symbols - 1) // 2
    with tempfile.TemporaryDirectory(prefix="quantlab-bench-scan-") as arch:
        write_universe(arch, u.bars)
        planted, s0, end_ms = u.planted, u.start_ms, u.end_ms
        del u  # the workers read the archive, not this process's frames
        print(f"universe: {args.symbols} symbols, {n_pairs} pairs, {args.planted} planted, "
              f"{n_bars} 1m bars each; generated + archived in {time.perf_counter() - t0:.1f} s",
              flush=True)
        split = s0 + args.formation_days * 86_400_000
        w = ScanWindows(formation=(s0, split), evaluation=(split, end_ms))
        kw = dict(archive=arch, timeframe="1m", windows=w, settings=ScanSettings(),
                  pairs_per_task=args.pairs_per_task)
        pool_wall, pool, pool_mem = run(f"local pool ({args.workers} workers)",
                                        lambda: scan(None, workers=args.workers, **kw),
                                        args.workers)
        found = {tuple(p) for p in pool.selected[["y", "x"]].itertuples(index=False)}
        missing = [p for p in planted if p not in found]
        print(f"planted pairs selected: {len(planted) - len(missing)}/{len(planted)}; "
              f"other pairs selected: {len(found - set(planted))}")
        ok = pool_wall < 120 and pool_mem < 4 * 2**30 and not missing
        if not args.skip_dask:
            from distributed import Client, LocalCluster

            t0 = time.perf_counter()
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              dashboard_address=":0") as cluster, Client(cluster) as client:
                print(f"LocalCluster of {args.workers} worker processes started in "
                      f"{time.perf_counter() - t0:.1f} s (not counted: a cluster is up before a "
                      "scan; the pool's start is counted)", flush=True)
                dask_wall, dask_res, dask_mem = run(f"dask LocalCluster ({args.workers} procs)",
                                                    lambda: scan(None, client=client, **kw),
                                                    args.workers)
            same = dask_res.table.equals(pool.table)
            ratio = dask_wall / pool_wall
            print(f"dask / pool wall: {ratio:.2f}x (target <= 1.3x); tables identical: {same}")
            ok = ok and same and ratio <= 1.3 and dask_mem < 4 * 2**30 and dask_wall < 120
    print(f"targets (whole scan < 120 s, memory < 4 GB, Dask within 1.3x, planted found): "
          f"{'met' if ok else 'NOT met'} (load average now {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    sys.exit(main())
