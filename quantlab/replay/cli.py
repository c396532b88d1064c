"""``quantlab replay`` from the command line (:func:`run_cli`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Mapping, Sequence

from quantlab.replay.faults import Faults
from quantlab.replay.server import ReplayServer
from quantlab.replay.sources import make_sources

logger = logging.getLogger(__name__)
# websockets logs every connection (and every REST answer) at INFO; the CLI quiets this.
_ws_logger = logging.getLogger("quantlab.replay.ws")


# =============================================================================
# CLI
# =============================================================================
def run_cli(args: argparse.Namespace | None = None, *, source_kind: str | None = None,
            paths: Sequence[str] = (), symbols: Sequence[str] | None = None, rate: float | None = 50.0,
            speed: float = 1.0, port: int = 0, market: str = "spot", faults: Faults | Mapping | None = None,
            seed: int = 0, host: str = "127.0.0.1", prefill: int = 0, rebase_time: bool = False,
            live_clock: bool = False) -> int:
    """``quantlab replay``: serve until SIGINT/SIGTERM; exit status 0.

    Prints exactly one JSON object as the first stdout line, flushed, once listening::

        {"ws": "ws://127.0.0.1:PORT", "rest": "http://127.0.0.1:PORT"}

    Parameters
    ----------
    args : optional ``argparse`` namespace of ``quantlab replay``, mapped to these
        keywords by :func:`quantlab.commands.replay.replay_keywords` (when given it
        overrides them); the CLI itself calls with plain keywords.
    source_kind : ``"synthetic"`` (default), ``"capture"`` or ``"trades"``; paths : files.
    symbols, rate, speed, port, market, seed, host, prefill, rebase_time : see
        :func:`make_sources` (``market="both"``: spot and USD-M on one port) and
        :class:`ReplayServer`.
    live_clock : start a recording's clock at server start, not at the first subscription.
    faults : :class:`Faults`, a mapping of its fields, or ``None``.

    Returns
    -------
    int
        0 after a signal; configuration and data errors propagate as
        :class:`~quantlab.errors.QuantlabError` (the CLI maps them to 2); 1 if the port
        cannot be bound.
    """
    if args is not None:  # the namespace form, kept for callers; quantlab.commands.replay maps it
        from quantlab.commands.replay import replay_keywords

        return run_cli(**replay_keywords(
            args, source_kind=source_kind, paths=paths, symbols=symbols, rate=rate, speed=speed,
            port=port, market=market, faults=faults, seed=seed, host=host, prefill=prefill,
            rebase_time=rebase_time, live_clock=live_clock))
    if isinstance(faults, Mapping):
        faults = Faults.from_dict(faults)
    elif isinstance(faults, (list, tuple)):
        faults = Faults.from_strings(faults)
    sources = make_sources(source_kind or "synthetic", paths, symbols=symbols, market=market, rate=rate,
                           speed=speed, seed=seed, prefill=prefill, rebase_time=rebase_time)
    server = ReplayServer(sources, host=host, port=port, faults=faults, live_clock=live_clock)
    if not logger.isEnabledFor(logging.DEBUG):
        _ws_logger.setLevel(logging.WARNING)  # one INFO line per REST call is noise

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # main thread only: this is the CLI path
            loop.add_signal_handler(sig, stop.set)

        def ready() -> None:
            print(json.dumps({"ws": server.ws_url, "rest": server.rest_url}), flush=True)

        serving = asyncio.create_task(server.serve(ready=ready))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            stopped.cancel()
            serving.result()  # re-raises a bind error
            return 0
        serving.cancel()
        try:
            await serving
        except asyncio.CancelledError:
            pass
        logger.info("replay server stopped: %s", server.stats)
        return 0

    try:
        return asyncio.run(main())
    except OSError as exc:
        print(f"quantlab replay: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
