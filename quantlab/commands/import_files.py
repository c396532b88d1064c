"""``quantlab import``: files into the tick store."""
from __future__ import annotations

from typing import Any

from quantlab.errors import DataFileError


def command(args: Any) -> int:
    """``quantlab import FILE ... --db PATH``: ticks go through the same store
    (duplicates ignored), so re-importing is harmless."""
    from quantlab.files import load_file
    from quantlab.store import TickStore

    total_new = total_dup = 0
    store = None  # opened after the first file loads: a bad first file leaves --db untouched
    try:
        for done, path in enumerate(args.files):
            try:
                loaded = load_file(path, symbol=args.symbol, market=args.market)
            except DataFileError as exc:
                if not done:
                    raise
                # Each file is one transaction: say what is already stored.
                raise DataFileError(exc.path, f"{exc.reason}; the {done} file(s) before it were imported, "
                                              "nothing of this one", exc.line, exc.column) from exc
            if loaded.is_bars:
                raise DataFileError(path, f"holds {loaded.format} bars, not trades; the store keeps "
                                    "trades (use `quantlab analyze --files` for bar files)")
            if store is None:
                store = TickStore(args.db)
            result = store.write_trades(loaded.frame)
            total_new += result.inserted
            total_dup += result.duplicates
            notes = "".join(f"; {note}" for note in loaded.notes)  # e.g. rows with price <= 0
            print(f"{path}: {result.inserted} new trades, {result.duplicates} already stored{notes}")
    finally:
        if store is not None:
            store.close()
    print(f"imported {total_new} trades into {args.db} ({total_dup} duplicates ignored)")
    return 0
