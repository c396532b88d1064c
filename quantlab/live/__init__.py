"""A live session outside the UI: the feed a monitor or a terminal client reads.

:class:`LiveSession` owns everything between Binance (or the replay server) and
a client that shows bars: the trade source (live Binance, or an in-process
:class:`~quantlab.replay.ReplayServer` on the synthetic pair or a capture file),
the :class:`~quantlab.ingest.Ingester` that stores the trades, the
:class:`~quantlab.ingest.Subscription` a client drains, the read-only
:class:`~quantlab.store.TickStore` history and late-bar corrections are read
from, the alert log, and the status figures (trades/s, stored, gaps,
reconnects, dropped ...). It imports no UI library: the JupyterLab monitor
(:mod:`quantlab.ui.monitor`) builds widgets and plots and reads a session;
``quantlab demo --terminal`` prints one.

::

    from quantlab.live import LiveSession, SessionSettings
    session = LiveSession(SessionSettings(source="replay", pairs=(("ETHUSDT", "BTCUSDT"),),
                                          db_path="data/live.db"))
    session.start()                 # replay server + ingester + subscription
    trades = session.drain()        # the trades stored since the last drain
    print(session.status().line())  # "live  stored 1,234 (50/s), ... dropped 0 ..."
    session.stop(); session.close()

Layout
------
* :mod:`~quantlab.live.session` -- :class:`SessionSettings`, :class:`LiveSession`
  (lifecycle, store reads for history and corrections, alert log).
* :mod:`~quantlab.live.sources` -- the in-process trade source: replay server on
  the synthetic pair (continuing the store's ids and prices) or on capture files.
* :mod:`~quantlab.live.status` -- :class:`SessionStatus`, the status figures.

Threads and sockets stay in :mod:`quantlab.ingest` and :mod:`quantlab.replay`;
they are imported when a session starts, not when this package is imported.
"""
from __future__ import annotations

from quantlab.live.session import SOURCES, LiveSession, SessionSettings
from quantlab.live.status import SessionStatus

__all__ = ["LiveSession", "SessionSettings", "SessionStatus", "SOURCES"]
