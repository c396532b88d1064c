"""Shared by ``quantlab analyze``, ``features`` and ``backtest``: the aligned pair
and the output metadata from the namespace of :func:`quantlab.cli._add_pair_source`."""
from __future__ import annotations

from typing import Any

import pandas as pd

from quantlab.pairs import load_pair_bars, source_kwargs, source_metadata


def pair_from_args(args: Any) -> pd.DataFrame:
    aligned = load_pair_bars(y=args.y, x=args.x, timeframe=args.timeframe, **source_kwargs(args),
                             market=args.market, start=args.start, end=args.end,
                             max_carry_bars=args.max_carry_bars)
    # The still-forming last bar is not final: research outputs use closed bars only.
    if "is_forming" in aligned and len(aligned) and bool(aligned["is_forming"].iloc[-1]):
        aligned = aligned.iloc[:-1]
    return aligned


def metadata(args: Any, aligned: pd.DataFrame, command: str) -> dict:
    return {
        "command": command, "y": args.y.upper(), "x": args.x.upper(), "timeframe": args.timeframe,
        "window": args.window, "hedge": args.hedge, "log_prices": bool(args.log_prices),
        "source": source_metadata(args),
        "start": aligned.index[0].isoformat() if len(aligned) else None,
        "end": aligned.index[-1].isoformat() if len(aligned) else None,
        "causal_columns": "every per-bar column uses bars up to and including its own",
    }
