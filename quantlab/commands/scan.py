"""``quantlab scan``: arguments and handler (thin: calls :func:`quantlab.scan.run.scan`).
Moved from ``quantlab/scan/command.py`` (the CLI layer reads namespaces, the
scan package does not); that path re-exports it for one release.

::

    quantlab scan (--db PATH | --files FILE ... | --archive DIR) --symbols A,B,C \\
        --timeframe 5m --formation START/END --evaluation START/END \\
        [--scheduler tcp://host:8786 | --workers N] --out FILE.csv [--summary FILE.json] \\
        [--ledger PATH | --no-ledger]

Writes the table (one row per pair, ``y < x`` in sorted order) to ``--out``
(CSV, or .parquet), prints a progress bar on stderr (redrawn on a terminal,
periodic lines otherwise) and a one-line summary on stdout. Every pair x
ordering tested is recorded in the trial ledger (by this process, after the
results are back) unless ``--no-ledger``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from quantlab.config import MARKETS
from quantlab.errors import ConfigError


def _symbols(text: str) -> list[str]:
    out = [s.strip().upper() for s in text.split(",") if s.strip()]
    if len(out) < 2:
        raise argparse.ArgumentTypeError("expected at least two comma-separated symbols, "
                                         "e.g. BTCUSDT,ETHUSDT,SOLUSDT")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``scan`` subcommand's arguments (called by :mod:`quantlab.cli`)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="SQLite tick store (materialised into a temporary archive first)")
    src.add_argument("--files", nargs="+", metavar="FILE",
                     help="data.binance.vision / OHLC files (materialised into a temporary archive)")
    src.add_argument("--archive", metavar="DIR", help="Parquet archive written by `quantlab archive`")
    p.add_argument("--symbols", type=_symbols, default=None,
                   help="the universe, e.g. BTCUSDT,ETHUSDT,SOLUSDT (default: every archived symbol)")
    p.add_argument("--market", choices=MARKETS, help="market, when the source holds both")
    p.add_argument("--timeframe", default="1m", help="bar size: 1m, 5m, 1h, ... (default 1m)")
    p.add_argument("--formation", required=True, metavar="START/END",
                   help="selection window, ISO-8601 UTC, [start, end)")
    p.add_argument("--evaluation", required=True, metavar="START/END",
                   help="out-of-sample window, starting at or after the formation window's end")
    p.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: CPU count; 1 = this process)")
    p.add_argument("--out", required=True, help="table: FILE.csv or FILE.parquet")
    p.add_argument("--summary", help="also write the summary as JSON")
    p.add_argument("--q", type=float, default=0.05, help="false discovery rate (default 0.05)")
    p.add_argument("--adjust", choices=("by", "bh"), default="by",
                   help="adjusted p-value that drives `selected` (default by: Benjamini-Yekutieli)")
    p.add_argument("--min-notional", type=float, default=0.0,
                   help="liquidity filter: median quote volume per bar of the thinner leg")
    p.add_argument("--entry-z", type=float, default=2.0)
    p.add_argument("--exit-z", type=float, default=0.0)
    p.add_argument("--stop-z", type=float, default=None)
    p.add_argument("--fee-bps", type=float, default=0.0, help="fee per leg per side, basis points")
    p.add_argument("--eg-lags", type=int, default=1,
                   help="fixed ADF lags in Engle-Granger and the evaluation ADF (default 1)")
    p.add_argument("--max-half-life", type=float, default=None, metavar="BARS",
                   help="also require a formation half-life of at most this many bars to select")
    p.add_argument("--min-bars", type=int, default=200,
                   help="fewer aligned bars in a window and the pair gets an error (default 200)")
    p.add_argument("--pairs-per-task", type=int, default=200, help="chunk size (default 200)")
    p.add_argument("--stage-dir", metavar="DIR",
                   help="--db/--files: materialise the archive here (a path the workers can read) "
                        "instead of a temporary folder")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.add_argument("--ledger", metavar="PATH",
                   help="trial ledger recording every pair x ordering tested (default: "
                        "$QUANTLAB_LEDGER, else ledger.sqlite beside --db, else in the current "
                        "directory)")
    p.add_argument("--no-ledger", action="store_true", help="do not record the tests")


def command(args: Any) -> int:
    """Handler of ``quantlab scan``."""
    from quantlab.pairs import write_json
    from quantlab.scan.core import ScanSettings, ScanWindows
    from quantlab.scan.run import scan

    windows = ScanWindows(formation=args.formation, evaluation=args.evaluation)
    settings = ScanSettings(q=args.q, adjust=args.adjust, min_notional=args.min_notional,
                            entry_z=args.entry_z, exit_z=args.exit_z, stop_z=args.stop_z,
                            fee_bps=args.fee_bps, eg_lags=args.eg_lags, min_bars=args.min_bars,
                            max_half_life_bars=args.max_half_life)
    if args.workers is not None and args.workers < 1:
        raise ConfigError("workers", args.workers, "an integer >= 1")
    if args.pairs_per_task < 1:
        raise ConfigError("pairs-per-task", args.pairs_per_task, "an integer >= 1")
    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError("out", args.out, "a .csv or .parquet file name")
    for name in ("db", "archive"):
        value = getattr(args, name)
        if value is not None and not Path(value).exists():
            raise ConfigError(name, value, "an existing path")
    ledger = None
    if not args.no_ledger:
        from quantlab.ledger import default_ledger_path

        ledger = args.ledger or default_ledger_path(db=args.db, files=args.files,
                                                    archive=args.archive)
    res = scan(args.symbols, timeframe=args.timeframe, windows=windows, settings=settings,
               archive=args.archive, db=args.db, files=args.files, market=args.market,
               workers=args.workers, scheduler=args.scheduler,
               pairs_per_task=args.pairs_per_task, stage_dir=args.stage_dir,
               progress=not args.no_progress, ledger=ledger)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        res.table.to_parquet(out, index=False)
    else:
        res.table.to_csv(out, index=False, float_format="%.17g")
    if args.summary:
        write_json(args.summary, res.summary())
    print(res.summary_line() + f" -> {out}")
    return 0
