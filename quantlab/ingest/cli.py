"""Entry points of the ingester for the CLI and child processes: :func:`run_for`
and :func:`run_cli` (``quantlab ingest``)."""
from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any

from quantlab.errors import FatalFeedError
from quantlab.ingest.ingester import Ingester
from quantlab.ingest.settings import IngestSettings, IngestStats

def run_for(settings: IngestSettings, duration_s: float | None = None, *,
            status_every_s: float = 5.0, out: Any = None) -> IngestStats:
    """Ingest for ``duration_s`` seconds (``None``: until interrupted or fatal),
    printing a status line every ``status_every_s`` seconds to ``out``
    (default stdout); then stop and return the final stats.

    Signal handling is the caller's business (the CLI turns SIGINT/SIGTERM
    into ``KeyboardInterrupt``, which stops the ingester cleanly here and is
    re-raised). Raises :class:`~quantlab.errors.FatalFeedError` when the feed
    stopped on a fatal error.
    """
    out = out if out is not None else sys.stdout
    ing = Ingester(settings)
    ing.start()
    t0 = time.monotonic()
    try:
        next_line = t0 + status_every_s
        while ing.running:
            now = time.monotonic()
            if duration_s is not None and now - t0 >= duration_s:
                break
            if now >= next_line:
                _print_status(ing, out)
                next_line += status_every_s
            ends = [next_line] + ([t0 + duration_s] if duration_s is not None else [])
            ing.wait(max(0.01, min(ends) - time.monotonic()))
    finally:
        stats = ing.stop(timeout=60.0)
        _print_status(ing, out, final=True)
    st = ing.status
    if st.fatal:
        raise FatalFeedError(st.error or "ingester stopped on a fatal error")
    return stats


def _print_status(ing: Ingester, out: Any, final: bool = False) -> None:
    st, stats = ing.status, ing.stats
    age = "" if math.isnan(stats.last_trade_age_s) else f", last trade {stats.last_trade_age_s:.1f} s ago"
    prefix = "final" if final else time.strftime("%H:%M:%S")
    print(f"{prefix} {st.state:<12} {stats.summary()}{age}"
          + (f" | {st.error}" if st.error and (st.state != "live" or final) else ""),
          file=out, flush=True)


def run_cli(args: Any) -> int:
    """``quantlab ingest``: build settings from the parsed arguments and run.

    Converts SIGTERM into ``KeyboardInterrupt`` (main thread only) so that a
    ``kill`` flushes like Ctrl-C. Returns 0, or 1 after a fatal feed error.
    """
    import signal

    kwargs: dict[str, Any] = {"market": args.market, "symbols": tuple(args.symbols),
                              "stream": getattr(args, "stream", "trade"), "db_path": args.db}
    if getattr(args, "ws_url", None):
        kwargs["ws_base"] = args.ws_url
    if getattr(args, "rest_url", None):
        kwargs["rest_base"] = args.rest_url
    if getattr(args, "stale_after", None):
        kwargs["stale_after_s"] = args.stale_after
    if getattr(args, "usdm_trade_route", None):
        kwargs["usdm_trade_route"] = args.usdm_trade_route
    settings = IngestSettings(**kwargs)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        run_for(settings, getattr(args, "duration", None),
                status_every_s=getattr(args, "status_every", 5.0) or 5.0)
    except KeyboardInterrupt:
        return 0
    except FatalFeedError as exc:
        print(f"quantlab ingest: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
