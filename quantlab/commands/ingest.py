"""``quantlab ingest``: the parsed arguments -> :class:`~quantlab.ingest.IngestSettings`,
then :func:`quantlab.ingest.run_for` until ``--duration``, Ctrl-C or SIGTERM.
Moved from ``quantlab.ingest.run_cli`` (still importable there for one release)."""
from __future__ import annotations

import sys
import threading
from typing import Any

from quantlab.errors import FatalFeedError
from quantlab.ingest import IngestSettings, run_for


def command(args: Any) -> int:
    """Handler of ``quantlab ingest``: checks ``--db`` first, then :func:`run_args`."""
    from quantlab.store import TickStore

    TickStore(args.db).close()  # a foreign or damaged --db: one line now, not a writer-thread error
    return run_args(args)


def run_args(args: Any) -> int:
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
