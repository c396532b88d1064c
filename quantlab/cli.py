"""``quantlab`` command line. Thin: parses arguments and calls the package.

Exit codes: 0 ok, 1 failure, 2 usage or configuration error (one line on
stderr naming what is wrong).
"""
from __future__ import annotations

import argparse
import logging
import sys

from quantlab.config import KINDS, MARKETS
from quantlab.errors import QuantlabError

logger = logging.getLogger("quantlab")


def _symbols(text: str) -> list[str]:
    from quantlab.files import check_symbol

    out = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as BTCUSDT,ETHUSDT")
    for sym in out:
        if check_symbol(sym) is not None:
            raise argparse.ArgumentTypeError(f"{check_symbol(sym)}; expected symbols such as BTCUSDT,ETHUSDT")
    return out


def _positive_ints(text: str) -> list[int]:
    """``1,5,15`` -> [1, 5, 15]: whole numbers >= 1."""
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1 such as 1,5,15, got {text}")
    return out


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _port(text: str) -> int:
    """A TCP port for ``--port``: 0..65535 (0 lets the OS pick a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 0..65535 (0 picks a free one), got {text}")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other bad input;
    ``--help`` still shows the usage. Subcommand parsers inherit it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _add_data_source(p: argparse.ArgumentParser, *, archive: bool = True) -> None:
    """Where history comes from: exactly one of ``--db``, ``--files``, ``--archive`` (the
    one source group every reading command reuses: analyze, backtest, features, scan,
    report), plus ``--market``. Handlers pass ``pairs.source_kwargs(args)`` on."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="SQLite tick store written by `quantlab ingest`/`import`")
    src.add_argument("--files", nargs="+", metavar="FILE",
                     help="data.binance.vision trades/aggTrades/klines, OHLC CSV or NDJSON files")
    if archive:
        src.add_argument("--archive", metavar="DIR",
                         help="Parquet archive folder written by `quantlab archive`")
    p.add_argument("--market", choices=MARKETS, help="market, when the source holds both")


def _add_pair_source(p: argparse.ArgumentParser) -> None:
    _add_data_source(p)
    p.add_argument("--y", required=True, help="dependent leg symbol, e.g. BTCUSDT")
    p.add_argument("--x", required=True, help="independent leg symbol, e.g. ETHUSDT")
    p.add_argument("--timeframe", default="1m", help="bar size: 1s, 1m, 5m, 1h, ... (default 1m)")
    p.add_argument("--start", help="first bar, ISO-8601 UTC (inclusive)")
    p.add_argument("--end", help="last bar, ISO-8601 UTC (exclusive)")
    p.add_argument("--window", type=int, required=True, help="rolling window in bars")
    p.add_argument("--hedge", default="rolling-ols", type=lambda s: s.strip().replace("_", "-"),
                   choices=("ols", "huber", "theil-sen", "rolling-ols", "kalman"),
                   help="hedge-ratio method for the causal per-bar columns (default rolling-ols)")
    p.add_argument("--log-prices", action="store_true", help="fit on log prices")
    p.add_argument("--max-carry-bars", type=int, default=5,
                   help="carry a silent leg's close forward at most this many bars (default 5)")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="quantlab", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("replay", help="Binance-protocol WebSocket+REST server on loopback")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--synthetic", action="store_true", help="seeded cointegrated pair (default)")
    src.add_argument("--capture", nargs="+", metavar="FILE", help="ws-capture gzip files")
    src.add_argument("--trades", nargs="+", metavar="FILE", help="data.binance.vision trade files")
    p.add_argument("--symbols", type=_symbols, default=None, help="e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--market", choices=(*MARKETS, "both"), default="spot",
                   help="both: spot (/api/v3, /ws, /stream) and USD-M (/fapi/v1, /market, /public) "
                        "on one port, each with its own tape (recorded data: files of both markets)")
    p.add_argument("--rate", type=_positive_float, default=50.0,
                   help="synthetic trades per second, all symbols (0 = as fast as possible)")
    p.add_argument("--speed", type=_positive_float, default=1.0,
                   help="replay speed factor for recorded data (0 = as fast as possible)")
    p.add_argument("--seed", type=int, default=0, help="synthetic generator seed")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=0, help="0 picks a free port")
    p.add_argument("--fault", dest="faults", action="append", default=[], metavar="KEY=VALUE",
                   help="fault injection, repeatable, e.g. drop_after_messages=500 "
                        "(see quantlab.replay.Faults)")
    p.add_argument("--prefill", type=int, default=0,
                   help="trades already in the REST tape before streaming starts")
    p.add_argument("--rebase-time", action="store_true",
                   help="recorded data: shift the tape's times so that it plays as if recorded now")
    p.add_argument("--live-clock", action="store_true",
                   help="recorded data: start the clock when the server starts (clients that subscribe "
                        "late miss the first trades); default: at the first subscription")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("import", help="load files into the tick store")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--db", required=True)
    p.add_argument("--symbol", help="symbol, when the file name does not say")
    p.add_argument("--market", choices=MARKETS, help="market, when the file name does not say")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("ingest", help="store live trades loss-free (Ctrl-C flushes and exits)")
    p.add_argument("--market", choices=MARKETS, required=True)
    p.add_argument("--symbols", type=_symbols, required=True, help="e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--stream", choices=KINDS, default="trade")
    p.add_argument("--db", required=True)
    p.add_argument("--ws-url", help="WebSocket base, e.g. the `ws` printed by `quantlab replay`")
    p.add_argument("--rest-url", help="REST base, e.g. the `rest` printed by `quantlab replay`")
    p.add_argument("--usdm-trade-route", choices=("/market", "/public"), default=None,
                   help="USD-M only: the path that serves @trade (Binance's docs are silent; "
                        "default /market)")
    p.add_argument("--stale-after", type=_positive_float, default=None,
                   help="seconds of silence before forcing a reconnect")
    p.add_argument("--duration", type=_positive_float, default=None,
                   help="stop after this many seconds (default: run until SIGINT/SIGTERM)")
    p.add_argument("--status-every", type=_positive_float, default=5.0, help="seconds between status lines")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("analyze", help="pair analytics over stored or file data")
    _add_pair_source(p)
    p.add_argument("--out", required=True,
                   help="per-bar output: .csv, .parquet, .json or .xlsx; or a folder, where a CSV "
                        "named after the pair, timeframe, method, window and range is written")
    p.add_argument("--summary", help="summary JSON file")
    p.add_argument("--alert", action="append", default=[], metavar="RULE",
                   help='alert rule to replay over history, e.g. "zscore > 2" (repeatable)')
    p.add_argument("--alerts-out", help="CSV of the events the --alert rules would have fired")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("backtest", help="z-score mean-reversion backtest")
    _add_pair_source(p)
    p.add_argument("--entry-z", type=float, default=2.0)
    p.add_argument("--exit-z", type=float, default=0.0)
    p.add_argument("--stop-z", type=float, default=None)
    p.add_argument("--max-hold-bars", type=int, default=None)
    p.add_argument("--fee-bps", type=float, default=0.0, help="fee per leg per side, basis points")
    p.add_argument("--slippage-bps", type=float, default=0.0)
    p.add_argument("--fill", choices=("next_open", "next_close"), default="next_open")
    p.add_argument("--rehedge", action="store_true", help="re-hedge the ratio every bar while in a trade")
    p.add_argument("--trades", required=True, help="trades CSV")
    p.add_argument("--equity", required=True, help="equity curve CSV")
    p.add_argument("--summary", required=True, help="summary JSON")
    p.add_argument("--ledger", metavar="PATH", help="trial ledger (default: $QUANTLAB_LEDGER, "
                   "else ledger.sqlite beside --db, else in the current directory)")
    p.set_defaults(func=_cmd_backtest)

    p = sub.add_parser("archive", help="bars (and ticks) of a store or files -> hive-partitioned Parquet")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="SQLite tick store to export (read-only)")
    src.add_argument("--files", nargs="+", metavar="FILE",
                     help="data.binance.vision klines/trades/aggTrades files or folders to convert")
    p.add_argument("--out", required=True, metavar="DIR", help="archive folder (created; incremental)")
    p.add_argument("--ticks", action="store_true", help="also archive the trades themselves")
    p.add_argument("--timeframes", type=lambda t: [s.strip() for s in t.split(",") if s.strip()],
                   default=None, help="--db only: bar datasets to write, e.g. 1s,1m,1h (default 1s,1m)")
    p.add_argument("--symbols", type=_symbols, default=None, help="--db only: e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--market", choices=MARKETS,
                   help="only this market (--db); the market of files that do not say (--files)")
    p.add_argument("--rewrite", action="store_true", help="rewrite complete days too")
    p.set_defaults(func=_cmd_archive)

    p = sub.add_parser("features", help="per-bar causal feature table of a pair (labels only on request)")
    _add_pair_source(p)
    p.add_argument("--out", required=True,
                   help="feature table: .csv, .parquet, .json or .xlsx; or a folder (CSV named after "
                        "the pair, timeframe, window and range)")
    p.add_argument("--horizons", type=_positive_ints, default=[1, 5, 15, 60],
                   help="log-return horizons in bars (default 1,5,15,60)")
    p.add_argument("--sma", type=_positive_ints, default=None,
                   help="SMA windows in bars (default 20 and --window)")
    p.add_argument("--ema", type=_positive_ints, default=[12, 26], help="EMA spans (default 12,26)")
    p.add_argument("--bb-window", type=int, default=20, help="Bollinger window (default 20)")
    p.add_argument("--bb-k", type=float, default=2.0, help="Bollinger width in std devs (default 2)")
    p.add_argument("--rsi-window", type=int, default=14, help="Wilder RSI window (default 14)")
    p.add_argument("--vwap-window", type=int, default=None, help="rolling VWAP window (default --window)")
    p.add_argument("--labels", action="store_true",
                   help="add forward-looking label_* columns (NOT features: they see the future)")
    p.add_argument("--label-horizons", type=_positive_ints, default=None,
                   help="label horizons in bars (default --horizons)")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("demo", help="offline tour: replay server + JupyterLab on the live monitor")
    p.add_argument("--db", default="data/demo.db", help="tick store the monitor's ingester writes")
    p.add_argument("--rate", type=_positive_float, default=50.0, help="synthetic trades per second")
    p.add_argument("--port", type=_port, default=8888, help="JupyterLab port")
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.add_argument("--terminal", action="store_true",
                   help="no JupyterLab: ingest the replay into --db and print live stats")
    p.add_argument("--duration", type=_positive_float, default=None,
                   help="--terminal only: seconds to run (default: until Ctrl-C)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("lab", help="JupyterLab on the live monitor, live Binance as the source")
    p.add_argument("--db", default="data/live.db", help="tick store the monitor's ingester writes")
    p.add_argument("--port", type=_port, default=8888, help="JupyterLab port")
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.set_defaults(func=_cmd_lab)

    p = sub.add_parser("ledger", help="the trial ledger: list, filter, export (--json); forget")
    p.add_argument("--ledger", metavar="PATH",
                   help="ledger file (default: $QUANTLAB_LEDGER, else beside --db)")
    p.add_argument("--db", help="tick store whose ledger to read (ledger.sqlite beside it)")
    p.add_argument("--json", action="store_true", help="export trials and events as JSON")
    p.add_argument("--pair", help="BTCUSDT/ETHUSDT (either ordering) or one symbol")
    p.add_argument("--kind", choices=("backtest", "sweep_cell", "scan", "report"))
    p.add_argument("--since", help="last seen at or after, ISO-8601 UTC")
    p.add_argument("--all", action="store_true", help="include forgotten trials")
    lsub = p.add_subparsers(dest="action", metavar="ACTION")
    f = lsub.add_parser("forget", help="mark trials forgotten (recorded, never deleted)")
    f.add_argument("ids", nargs="+", type=int, metavar="ID", help="trial ids from `quantlab ledger`")
    f.add_argument("--reason", required=True, help="why (kept in the ledger's event log)")
    f.add_argument("--ledger", metavar="PATH", default=argparse.SUPPRESS, help="ledger file")
    f.add_argument("--db", default=argparse.SUPPRESS, help="tick store whose ledger to use")
    p.set_defaults(func=_cmd_ledger)

    p = sub.add_parser("report", help="pair report notebook run headless -> offline HTML (one pair "
                                      "or a batch with index.html)")
    from quantlab.commands.report import add_arguments as _report_arguments

    _report_arguments(p, _add_data_source)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("scan", help="scan every pair of a universe: formation/evaluation, "
                                    "BH/BY-adjusted selection, local pool or Dask")
    from quantlab.commands.scan import add_arguments as _scan_arguments

    _scan_arguments(p)
    p.set_defaults(func=_cmd_scan)
    return parser


# --- handlers: each calls its quantlab.commands module
def _cmd_replay(args: argparse.Namespace) -> int:
    from quantlab.commands import replay

    return replay.command(args)


def _cmd_import(args: argparse.Namespace) -> int:
    from quantlab.commands import import_files

    return import_files.command(args)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from quantlab.commands import ingest

    return ingest.command(args)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from quantlab.commands import analyze

    return analyze.command(args)


def _cmd_backtest(args: argparse.Namespace) -> int:
    from quantlab.commands import backtest

    return backtest.command(args)


def _cmd_archive(args: argparse.Namespace) -> int:
    from quantlab.commands import archive

    return archive.command(args)


def _cmd_features(args: argparse.Namespace) -> int:
    from quantlab.commands import features

    return features.command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from quantlab.commands import demo

    return demo.command(args)


def _cmd_lab(args: argparse.Namespace) -> int:
    from quantlab.commands import demo

    return demo.lab_command(args)


def _cmd_ledger(args: argparse.Namespace) -> int:
    from quantlab.commands import ledger

    return ledger.command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from quantlab.commands import report

    return report.command(args)


def _cmd_scan(args: argparse.Namespace) -> int:
    from quantlab.commands import scan

    return scan.command(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except QuantlabError as exc:
        text = " ".join(str(exc).splitlines())  # one line, whatever the message held
        print(f"quantlab {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except OSError as exc:  # e.g. an --out folder without write permission: one line, no traceback
        if args.verbose:
            raise
        print(f"quantlab {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
