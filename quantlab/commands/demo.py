"""``quantlab demo`` and ``quantlab lab``: the namespace -> :mod:`quantlab.launch`."""
from __future__ import annotations

import argparse


def command(args: argparse.Namespace) -> int:
    """``quantlab demo``: the offline tour. A replay server streams the synthetic
    BTCUSDT/ETHUSDT pair at ``--rate`` trades/s; JupyterLab (``--port``,
    ``--no-browser``) opens the live monitor pointed at it
    (:func:`quantlab.launch.demo_lab`); ``--terminal``: a live session ingests
    it into ``--db`` and prints its status for ``--duration`` seconds
    (:func:`quantlab.launch.terminal_demo`)."""
    from quantlab import launch

    # The demo's synthetic ids restart every run: start from a fresh store so the
    # ingester does not take the new trades for duplicates of the last run's; only
    # ever its own store (refused, untouched, when --db names any other file).
    db = launch.prepare_demo_store(args.db)
    if args.terminal:
        return launch.terminal_demo(db, args.rate, args.duration)
    return launch.demo_lab(db, args.rate, args.port, open_browser=not args.no_browser)


def lab_command(args: argparse.Namespace) -> int:
    """``quantlab lab``: JupyterLab (``--port``, ``--no-browser``) on the live
    monitor with live Binance as the source, storing into ``--db``
    (:func:`quantlab.launch.lab`)."""
    from quantlab import launch

    return launch.lab(args.db, args.port, open_browser=not args.no_browser)
