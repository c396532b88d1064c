"""Entry point of the ingester for the CLI and child processes: :func:`run_for`
(ingest for a while, printing status lines). The ``quantlab ingest`` handler,
which reads the argparse namespace, is :mod:`quantlab.commands.ingest`;
:func:`run_cli` is its old path, kept for one release."""
from __future__ import annotations

import math
import sys
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
    """Old path of the ``quantlab ingest`` handler, kept for one release: it reads an
    argparse namespace, so it lives in the CLI layer now
    (:func:`quantlab.commands.ingest.run_args`)."""
    from quantlab.commands.ingest import run_args

    return run_args(args)
