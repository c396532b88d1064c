"""``quantlab replay``: the namespace -> :func:`quantlab.replay.run_cli` keywords."""
from __future__ import annotations

import argparse
from typing import Any


def replay_keywords(args: argparse.Namespace, **defaults: Any) -> dict:
    """Plain keywords of :func:`quantlab.replay.run_cli` from the ``quantlab replay``
    namespace (``synthetic``, ``capture``/``trades`` file lists, ``symbols``,
    ``market``, ``rate``, ``speed``, ``seed``, ``host``, ``port``, and optionally
    ``faults`` (``key=value`` strings), ``prefill``, ``rebase_time``,
    ``live_clock``); ``defaults`` fill attributes the namespace lacks."""
    kw = dict(defaults)
    if getattr(args, "capture", None):
        kw.update(source_kind="capture", paths=args.capture)
    elif getattr(args, "trades", None):
        kw.update(source_kind="trades", paths=args.trades)
    else:
        kw["source_kind"] = "synthetic"
    for name in ("symbols", "rate", "speed", "port", "seed", "host", "faults"):
        if hasattr(args, name):
            kw[name] = getattr(args, name)
    if getattr(args, "market", None):
        kw["market"] = args.market
    kw["prefill"] = getattr(args, "prefill", kw.get("prefill", 0)) or 0
    kw["rebase_time"] = bool(getattr(args, "rebase_time", kw.get("rebase_time", False)))
    kw["live_clock"] = bool(getattr(args, "live_clock", kw.get("live_clock", False)))
    return kw


def command(args: argparse.Namespace) -> int:
    """``quantlab replay``: serve until SIGINT/SIGTERM (see :func:`quantlab.replay.run_cli`)."""
    from quantlab.replay import run_cli

    return run_cli(**replay_keywords(args))
