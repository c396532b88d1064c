"""``quantlab ledger`` (list, filter, export trials) and ``quantlab ledger forget``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from quantlab.errors import ConfigError
from quantlab.ledger import Ledger, default_ledger_path


def _ledger_from_args(args: Any) -> Ledger:
    path = getattr(args, "ledger", None)
    if path:
        return Ledger(path)
    db = getattr(args, "db", None)
    path = default_ledger_path(db=db)
    if not Path(path).exists():
        raise ConfigError("ledger", str(path), "an existing ledger file (nothing recorded there "
                          "yet); pass --ledger PATH")
    return Ledger(path)


def _short_time(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")


def command(args: Any) -> int:
    """``quantlab ledger``: list, filter and export the trials (``--json``), or
    ``quantlab ledger forget ID ... --reason TEXT``."""
    if getattr(args, "action", None) == "forget":
        return forget(args)
    with _ledger_from_args(args) as ledger:
        recs = ledger.trials(pair=args.pair, kind=args.kind, since=args.since,
                             include_forgotten=args.all)
        if args.json:
            payload = {"ledger": str(ledger.path), "trials": [r.as_dict() for r in recs],
                       "events": ledger.events()}
            print(json.dumps(payload, indent=2, allow_nan=False))
            return 0
        if not recs:
            print(f"no trials in {ledger.path} matching the filters")
            return 0
        refs = ledger._positions([r.trial_id for r in recs if not r.forgotten])
        table = pd.DataFrame([{
            "id": r.trial_id, "kind": r.kind, "y~x": f"{r.y}~{r.x}", "tf": r.timeframe,
            "start": _short_time(r.start_ms), "end": _short_time(r.end_ms), "bars": r.n_bars,
            "sharpe/bar": r.sharpe, "pvalue": r.pvalue,
            "k/n": (f"{refs[r.trial_id][0]}/{refs[r.trial_id][1]}" if r.trial_id in refs
                    else "forgotten"),
            "seen": r.n_seen, "last_seen": _short_time(r.last_seen_ms),
        } for r in recs])
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"{len(recs)} trial(s) in {ledger.path}")
    return 0


def forget(args: Any) -> int:
    """``quantlab ledger forget ID ... --reason TEXT``: recorded, never deleted."""
    with _ledger_from_args(args) as ledger:
        event = ledger.forget(args.ids, reason=args.reason)
    print(f"forgot trial(s) {', '.join(map(str, sorted(set(args.ids))))} (event {event}: "
          f"{args.reason}) in {ledger.path}")
    return 0
