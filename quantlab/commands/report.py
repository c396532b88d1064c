"""``quantlab report``: one report (``--y --x ... --out report.html``) or a batch
(``--pairs Y/X,... --out-dir DIR``). Argument parsing only; the work is in
:mod:`quantlab.reports.runner`. Moved from ``quantlab/reports/command.py`` (the CLI
layer reads namespaces, the reports package does not); that path re-exports it
for one release."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from quantlab.errors import ConfigError

__all__ = ["add_arguments", "command"]


def add_arguments(p: argparse.ArgumentParser, add_data_source) -> None:
    add_data_source(p)
    p.add_argument("--y", help="dependent leg, e.g. BTCUSDT (one report)")
    p.add_argument("--x", help="independent leg, e.g. ETHUSDT (one report)")
    p.add_argument("--pairs", help="a batch: Y/X pairs separated by commas, e.g. "
                                   "BTCUSDT/ETHUSDT,AVAXUSDT/NEARUSDT (with --out-dir)")
    p.add_argument("--pairs-from", metavar="SCAN.csv",
                   help="a batch of the pairs a `quantlab scan` table selected (with --out-dir)")
    p.add_argument("--top", type=int, default=None, help="--pairs-from: the first N selected pairs")
    p.add_argument("--timeframe", default="1m", help="bar size (default 1m)")
    p.add_argument("--start", help="first bar, ISO-8601 UTC (inclusive)")
    p.add_argument("--end", help="last bar, ISO-8601 UTC (exclusive)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="any notebook parameter, e.g. -p window 90 -p hedge kalman "
                        "-p alert_rules 'zscore > 2' (repeatable)")
    p.add_argument("--out", help="HTML file of one report (report.json is written beside it)")
    p.add_argument("--out-dir", help="folder of a batch: one HTML + JSON per pair and index.html")
    p.add_argument("--workers", type=int, default=None, help="batch: reports at once (default: cores)")
    p.add_argument("--notebook", default="pair_report",
                   help="pair_report (default), pair_scan, or a notebook path")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    from quantlab.reports.parameters import coerce_cli_value

    out: dict[str, Any] = {}
    for name, value in args.param:
        out[name] = coerce_cli_value(value)
    return out


def command(args: argparse.Namespace) -> int:
    """Handler of ``quantlab report``."""
    import logging

    from quantlab.pairs import source_kwargs
    from quantlab.reports.runner import pairs_from_scan, parse_pairs, run_batch, run_report

    logging.getLogger("papermill").setLevel(logging.WARNING)  # its per-run INFO lines are noise here
    source = source_kwargs(args)
    common = dict(timeframe=args.timeframe, start=args.start, end=args.end, market=args.market,
                  params=_params(args), notebook=args.notebook, **source)
    if args.pairs or args.pairs_from:
        if args.pairs and args.pairs_from:
            raise ConfigError("pairs-from", args.pairs_from, "either --pairs or --pairs-from, not both")
        if not args.out_dir:
            raise ConfigError("out-dir", None, "a folder for the batch (--pairs ... --out-dir DIR)")
        if args.y or args.x or args.out:
            raise ConfigError("pairs", args.pairs or args.pairs_from,
                              "either a batch (--pairs/--pairs-from with --out-dir), or --y/--x with --out")
        pairs = parse_pairs(args.pairs) if args.pairs else pairs_from_scan(args.pairs_from, top=args.top)
        rows = run_batch(pairs, args.out_dir, workers=args.workers, **common)
        failed = [r for r in rows if not r["ok"]]
        for r in failed:
            print(f"{r['pair']}: {r['error']}", file=sys.stderr)
        print(f"{len(rows) - len(failed)} of {len(rows)} reports written; index -> "
              f"{args.out_dir.rstrip('/')}/index.html")
        return 1 if failed else 0
    if args.notebook == "pair_report" and not (args.y and args.x):
        raise ConfigError("y", args.y, "--y and --x (one report), or --pairs with --out-dir (a batch)")
    if not args.out:
        raise ConfigError("out", None, "an HTML path, e.g. --out report.html")
    outcome = run_report(out=args.out, y=args.y, x=args.x, **common)
    if not outcome.ok:
        print(f"quantlab report: error: {outcome.error} (executed notebook: {outcome.notebook})",
              file=sys.stderr)
        return outcome.exit_code
    h = outcome.headline or {}
    print(f"{outcome.html} ({outcome.html.stat().st_size / 1e6:.1f} MB, "
          f"{outcome.timings.get('total_s', 0):.1f} s): {h.get('verdict', '')}")
    return 0
