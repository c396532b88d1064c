"""``quantlab archive``: the store or files into the Parquet archive."""
from __future__ import annotations

from typing import Any

from quantlab.archive import archive_files, archive_store
from quantlab.errors import ConfigError


def command(args: Any) -> int:
    """``quantlab archive (--db PATH | --files ...) --out DIR [--ticks] [--rewrite]``."""
    if args.db:
        timeframes = tuple(args.timeframes) if args.timeframes else ("1s", "1m")
        res = archive_store(args.db, args.out, timeframes=timeframes, ticks=args.ticks,
                            symbols=args.symbols, market=args.market, rewrite=args.rewrite)
    else:
        if args.symbols:
            raise ConfigError("symbols", args.symbols, "no --symbols with --files (pass only the "
                              "files of the symbols to convert)")
        if args.timeframes:
            raise ConfigError("timeframes", args.timeframes,
                              "no --timeframes with --files (kline files keep their interval; "
                              "trade files give 1s and 1m)")
        res = archive_files(args.files, args.out, market=args.market, ticks=args.ticks,
                            rewrite=args.rewrite)
    print(f"archive {res.out}: {res.summary()}")
    return 0
