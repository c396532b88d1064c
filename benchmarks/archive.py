"""Benchmark of the Parquet archive: `analyze` over two years of 1m BTC/ETH bars
from the archive against the same from the gzip CSV files (the baseline, measured
in the same run).

    .venv/bin/python benchmarks/archive.py [--repeat 3] [--archive DIR] [--no-cli]

Figures (wall clock, best of ``--repeat``, CPU time beside it since the machine is
shared):

* convert: ``quantlab.archive.archive_files`` over the 1,460 gzip files (once), and
  the incremental re-run (reads no file);
* load: ``load_pair_bars(archive=...)`` vs ``load_pair_bars(files=...)``;
* analyze: load + ``run_analysis`` (the `quantlab analyze` pipeline, health
  included) in this process, imports warm: **target < 4 s** from the archive;
* CLI: ``python -m quantlab analyze --archive DIR ... --out FILE.parquet`` end to
  end in a fresh process (imports, load, analyze, writing 1M rows), vs ``--files``.

Real data: ``../shared/data/klines-um-1m-BTCUSDT-ETHUSDT-2022-2023`` (the script
says so and exits 0 when it is absent).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("QUANTLAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / \
    "klines-um-1m-BTCUSDT-ETHUSDT-2022-2023"
WINDOW = 60
TARGET_S = 4.0
PAIR = {"y": "ETHUSDT", "x": "BTCUSDT", "timeframe": "1m"}


def best(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall s, CPU s of that run, result)."""
    out, t_best, c_best = None, math.inf, math.nan
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t
        if wall < t_best:
            t_best, c_best = wall, time.process_time() - c
    return t_best, c_best, out


def row(name: str, ours: tuple[float, float], base: tuple[float, float] | None, base_name: str,
        target: float | None = None) -> None:
    ratio = f"{base[0] / ours[0]:6.1f}x" if base else "     -"
    verdict = "" if target is None else ("PASS" if ours[0] < target else "FAIL")
    tgt = f"(target < {target:g} s)" if target is not None else ""
    b = f"{base[0]:7.2f} s (cpu {base[1]:5.2f})" if base else " " * 21
    print(f"  {name:<34} {ours[0]:7.2f} s (cpu {ours[1]:5.2f})   {base_name:<22} {b}  {ratio}  "
          f"{verdict} {tgt}")


def cli(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of ``python -m quantlab ARGS`` in a fresh process."""
    import resource

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "quantlab", *args], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"quantlab {' '.join(args)} failed: {proc.stderr.strip()}")
    return wall, (ru2.ru_utime + ru2.ru_stime) - (ru.ru_utime + ru.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--archive", help="reuse/keep the archive in this folder")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI runs")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}: benchmark skipped (set QUANTLAB_SHARED_DATA)")
        return 0
    from quantlab.archive import archive_files
    from quantlab.pairs import load_pair_bars, run_analysis

    tmp = tempfile.TemporaryDirectory(prefix="quantlab-archive-bench-")
    out = Path(args.archive) if args.archive else Path(tmp.name) / "archive"
    files = sorted(p for p in DATA.iterdir() if p.name.endswith(".csv.gz"))
    print(f"two years of 1m bars ETHUSDT/BTCUSDT: {len(files)} gzip files -> {out}")

    fresh = not (out / "bars_1m").is_dir()
    t, c = time.perf_counter(), time.process_time()
    res = archive_files([DATA], out)
    convert = (time.perf_counter() - t, time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    again = archive_files([DATA], out)
    incremental = (time.perf_counter() - t, time.process_time() - c)
    print("\n[convert]")
    row("archive_files (gzip -> Parquet)" if fresh else "archive_files (existing archive)", convert,
        None, "")
    print(f"    {res.summary()}")
    row("incremental re-run", incremental, None, "")
    print(f"    {again.summary()}")

    rep = max(1, args.repeat)
    t_arch = best(lambda: load_pair_bars(**PAIR, archive=out), rep)
    t_files = best(lambda: load_pair_bars(**PAIR, files=files), 1)
    aligned = t_arch[2]
    n = len(aligned)
    assert n == len(t_files[2]), "archive and files disagree on the number of bars"
    print(f"\n[load] {n:,} aligned 1m bars")
    row("load_pair_bars(archive=)", t_arch[:2], t_files[:2], "load_pair_bars(files=)")

    def pipeline(source: dict):
        def run():
            pair = load_pair_bars(**PAIR, **source)
            return run_analysis(pair, window=WINDOW).summary()
        return run

    run_analysis(aligned.iloc[:5000], window=WINDOW)  # warm imports (scipy.stats, statsmodels)
    t_an = best(lambda: run_analysis(aligned, window=WINDOW), rep)
    a_arch = best(pipeline({"archive": out}), rep)
    a_files = best(pipeline({"files": files}), 1)
    print(f"\n[analyze, window {WINDOW}, health on: load + run_analysis in-process]")
    row("from the archive", a_arch[:2], a_files[:2], "from gzip CSV files", target=TARGET_S)
    row("  of which run_analysis alone", t_an[:2], None, "")
    same = a_arch[2]["hedge_ratio"] == a_files[2]["hedge_ratio"]
    print(f"    same summary from both sources: {same}")

    if not args.no_cli:
        common = ["analyze", "--y", PAIR["y"], "--x", PAIR["x"], "--window", str(WINDOW)]
        dst = Path(tmp.name) / "out.parquet"
        c_arch = min(cli([*common, "--archive", str(out), "--out", str(dst)]) for _ in range(rep))
        c_files = cli([*common, "--files", str(DATA), "--out", str(dst)])
        print("\n[CLI end to end: fresh process, imports + load + analyze + write 1M rows Parquet]")
        row("quantlab analyze --archive", c_arch, c_files, "--files (gzip CSV)")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
