"""Wall time and size of pair reports on real 1m BTCUSDT/ETHUSDT bars.

    .venv/bin/python benchmarks/report.py [--data ../shared/data] [--source files|archive]

Runs ``quantlab report`` (papermill + nbconvert, the same path users run) over
one month (2023-03) and one year (2023) of the real minutes in
``../shared/data/klines-um-1m-BTCUSDT-ETHUSDT-2022-2023`` and prints, per report,
the wall time, the HTML size and the split (kernel start, load, analytics,
backtest + sweep, honesty checks, figures and tables, export) read from the
report's JSON. The baseline, measured in the same run, is the floor every
report pays: papermill executing a one-cell notebook plus its nbconvert export.

Targets on the 2-core machine: a month under 15 s, a year under 40 s, either
HTML under 5 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KLINES = "klines-um-1m-BTCUSDT-ETHUSDT-2022-2023"
CASES = (("month", "2023-03-01", "2023-04-01", 15.0), ("year", "2023-01-01", "2024-01-01", 40.0))
MAX_BYTES = 5_000_000


def baseline(tmp: Path) -> float:
    """papermill + nbconvert of a one-cell notebook: kernel start and export."""
    import nbformat
    import papermill as pm

    from quantlab.reports.runner import export_html

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    src, out = tmp / "one.ipynb", tmp / "one-out.ipynb"
    nbformat.write(nb, src)
    t = time.monotonic()
    pm.execute_notebook(str(src), str(out), progress_bar=False, log_output=False)
    export_html(out, tmp / "one.html")
    return time.monotonic() - t


def run_case(name: str, start: str, end: str, source: list[str], tmp: Path) -> dict:
    out = tmp / f"{name}.html"
    cmd = [sys.executable, "-m", "quantlab", "report", *source, "--y", "BTCUSDT", "--x", "ETHUSDT",
           "--start", start, "--end", end, "-p", "window", "120",
           "-p", "ledger_path", str(tmp / "ledger.sqlite"), "--out", str(out)]
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    wall = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"{name}: quantlab report failed: {proc.stderr.strip().splitlines()[-1]}")
    payload = json.loads(out.with_suffix(".json").read_text())
    return {"wall_s": wall, "bytes": out.stat().st_size, "timings": payload["timings"],
            "n_bars": payload["headline"]["n_bars"], "verdict": payload["headline"]["verdict"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--source", choices=("files", "archive"), default="files",
                    help="archive: convert the files with `quantlab archive` first (not timed)")
    args = ap.parse_args()
    folder = Path(args.data) / KLINES
    if not folder.is_dir():
        print(f"skipped: real 1m bars not found at {folder} (pass --data)")
        return 0
    with tempfile.TemporaryDirectory(prefix="quantlab-bench-report-") as tmpdir:
        tmp = Path(tmpdir)
        source = ["--files", str(folder)]
        if args.source == "archive":
            subprocess.run([sys.executable, "-m", "quantlab", "archive", "--files", str(folder),
                            "--out", str(tmp / "archive")], check=True, capture_output=True)
            source = ["--archive", str(tmp / "archive")]
        floor = baseline(tmp)
        print(f"baseline (papermill one-cell notebook + nbconvert): {floor:.1f} s")
        ok = True
        for name, start, end, target in CASES:
            r = run_case(name, start, end, source, tmp)
            t = r["timings"]
            split = ", ".join(f"{k} {t.get(k, 0):.1f}" for k in (
                "kernel_start_s", "load_s", "analytics_s", "backtest_s", "checks_s", "header_s",
                "figures_s", "tables_s", "export_s"))
            within = r["wall_s"] < target and r["bytes"] < MAX_BYTES
            ok &= within
            print(f"{name}: {r['n_bars']:,} bars, {r['wall_s']:.1f} s wall ({r['wall_s'] / floor:.1f}x "
                  f"baseline; target < {target:.0f} s), HTML {r['bytes'] / 1e6:.2f} MB (target < 5 MB)"
                  f" {'OK' if within else 'MISSED'}")
            print(f"  split (s): {split}")
            print(f"  verdict: {r['verdict']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
