"""One live feed, outside any UI: :class:`SessionSettings` and :class:`LiveSession`.

The session owns the trade source (an in-process replay server, or nothing for
live Binance and an external ``ws_url``), the :class:`~quantlab.ingest.Ingester`
that stores trades into the tick store, the subscription a client drains, a
read-only :class:`~quantlab.store.TickStore` for history and late-bar
corrections, and a writable one for the alert log. A client (the JupyterLab
monitor, ``quantlab demo --terminal``) calls plain methods and gets plain data:
trades, bar frames, ``(left, right)`` ms stretches, a :class:`SessionStatus`.

Threads: the ingester and the replay server run their own threads; every
method here is called from one client thread (the monitor: the kernel's event
loop), which owns the session's two store connections.

Lifecycle::

    session.open_source()   # optional: the replay server first (read history now)
    session.start()         # source if not open yet, ingester, subscription
    session.drain()         # stored trades since the last drain (a few times a second)
    session.stop()          # ingester flushed, replay server stopped; a last drain()
    session.close()         # subscription and store connections closed
    session.start()         # a stopped session starts again (a new synthetic seed)
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from quantlab.config import MARKETS
from quantlab.errors import ConfigError
from quantlab.live.sources import start_replay
from quantlab.live.status import SessionStatus

logger = logging.getLogger(__name__)

__all__ = ["LiveSession", "SessionSettings", "SOURCES"]

#: Where trades come from: Binance itself, the synthetic replay, a capture replayed.
SOURCES = ("live", "replay", "capture")


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    """What one live session streams and where it stores it.

    Parameters
    ----------
    source : ``"live"`` (Binance), ``"replay"`` (the synthetic market, served
        by an in-process replay server unless ``ws_url`` is given) or
        ``"capture"`` (``capture_path`` replayed by an in-process server).
    market : ``"spot"`` or ``"usdm"`` (a capture's own market wins).
    pairs : ``((symbol_y, symbol_x), ...)``; the ingester subscribes to the
        union of their symbols, in order of first appearance.
    db_path : the tick store the ingester writes (its folder is created).
    stream : ``"trade"`` or ``"aggTrade"``.
    ws_url, rest_url : WebSocket / REST bases overriding Binance's (a running
        ``quantlab replay``); with ``ws_url`` no server is started.
    rate : trades per second of the in-process synthetic market (all symbols;
        0: as fast as possible).
    seed : seed of the synthetic market; the n-th start of a session uses
        ``seed + n`` (a restart does not replay the same trades).
    capture_path : capture file(s) for ``source="capture"``: a path, several
        separated by commas, a list, or a folder (its ``*.gz`` files).
    batch_max_delay_s : the ingester's writer commits at least this often,
        seconds (a client sees trades only once stored: this bounds that part
        of tick-to-screen).
    """

    source: str = "replay"
    market: str = "spot"
    pairs: tuple[tuple[str, str], ...] = (("ETHUSDT", "BTCUSDT"),)
    db_path: str = "data/live.db"
    stream: str = "trade"
    ws_url: str | None = None
    rest_url: str | None = None
    rate: float = 50.0
    seed: int = 7
    capture_path: str | tuple[str, ...] | None = None
    batch_max_delay_s: float = 0.025

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError("source", self.source, "one of " + ", ".join(SOURCES))
        if self.market not in MARKETS:
            raise ConfigError("market", self.market, "one of " + ", ".join(MARKETS))
        pairs = tuple((str(y), str(x)) for y, x in self.pairs)
        if not pairs:
            raise ConfigError("pairs", self.pairs, "at least one (symbol_y, symbol_x) pair")
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "db_path", str(self.db_path))
        if not self.rate >= 0:
            raise ConfigError("rate", self.rate, "trades per second >= 0 (0: as fast as possible)")
        if self.source == "capture" and not self.capture_path and not self.ws_url:
            raise ConfigError("capture_path", self.capture_path,
                              "a capture file to replay when source='capture'")

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol of :attr:`pairs`, once, in order of first appearance."""
        out: list[str] = []
        for pair in self.pairs:
            for s in pair:
                if s not in out:
                    out.append(s)
        return tuple(out)


class LiveSession:
    """Source, ingester, subscription, store reads and alert log of one feed.

    Parameters
    ----------
    settings : :class:`SessionSettings`.
    ingester_factory : ``callable(IngestSettings) -> Ingester``-like; default
        :class:`quantlab.ingest.Ingester`.

    Attributes
    ----------
    ingester_factory : as the parameter; read by each :meth:`start`.
    settings : the settings of the current (or next) run; :meth:`open_source`
        replaces ``market`` by the one a capture recorded.
    ingester : the ingester of the last run (kept after :meth:`stop`, for its
        final figures), or None before the first.
    subscription : the ring :meth:`drain` reads, None when closed.
    replay : the in-process replay server while it runs, else None.
    starts : completed starts (the synthetic seed is ``settings.seed + starts``).
    """

    def __init__(self, settings: SessionSettings | None = None, *,
                 ingester_factory: Callable | None = None):
        self.settings = settings or SessionSettings()
        self.ingester_factory = ingester_factory
        self.ingester: Any = None
        self.subscription: Any = None
        self.replay: Any = None
        self.starts = 0
        self._bases: tuple[str | None, str | None] | None = None
        self._missed = 0          # ring overwrites of closed subscriptions
        self._reader: Any = None  # read-only TickStore: history, corrections, gaps
        self._alert_store: Any = None
        self._marks_seen: tuple = ()

    def __repr__(self) -> str:
        s = self.settings
        return (f"LiveSession(source={s.source!r}, market={s.market!r}, symbols={s.symbols}, "
                f"db={s.db_path!r}, running={self.running})")

    def __enter__(self) -> "LiveSession":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop()
        finally:
            self.close()

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` while the ingester runs."""
        ing = self.ingester
        return self.subscription is not None and ing is not None and bool(ing.running)

    def configure(self, settings: SessionSettings) -> None:
        """Use ``settings`` from the next :meth:`start` on; only while stopped
        (raises :class:`~quantlab.errors.ConfigError` while running)."""
        if self.running or self.replay is not None:
            raise ConfigError("session", "running", "stop() the session before configure()")
        self.settings = settings

    def open_source(self) -> tuple[str | None, str | None]:
        """Start the in-process replay server when the source asks for one
        (``replay`` / ``capture`` without ``ws_url``); returns the
        ``(ws_base, rest_base)`` the ingester will use (None: Binance's).
        Idempotent until :meth:`stop`. Read stored history between this and
        :meth:`start`: the ingester has not written anything yet."""
        if self._bases is not None:
            return self._bases
        s = self.settings
        if s.ws_url:
            self._bases = (s.ws_url, s.rest_url)
        elif s.source == "live":
            self._bases = (None, s.rest_url)
        else:
            store = self._open_reader() if s.source == "replay" else None
            try:
                self.replay = start_replay(s, seed=s.seed + self.starts, store=store)
            finally:
                if store is not None:
                    store.close()
            if self.replay.market != s.market:  # a capture says which market it recorded
                self.settings = dataclasses.replace(s, market=self.replay.market)
            self._bases = (self.replay.ws_url, self.replay.rest_url)
        return self._bases

    def start(self, *, subscriber_maxlen: int | None = None) -> "LiveSession":
        """Open the source (if :meth:`open_source` has not), start the
        ingester and subscribe; returns self. ``subscriber_maxlen`` bounds the
        ring (trades; default the ingester's ``subscriber_maxlen``).

        On failure everything this call started is stopped again and the
        exception propagates (:class:`~quantlab.errors.QuantlabError` for bad
        settings, ``OSError`` for an unusable path ...)."""
        if self.running:
            return self
        from quantlab.ingest import Ingester, IngestSettings

        try:
            ws_base, rest_base = self.open_source()
            s = self.settings
            Path(s.db_path).parent.mkdir(parents=True, exist_ok=True)
            settings = IngestSettings(symbols=s.symbols, db_path=s.db_path, market=s.market,
                                      stream=s.stream, ws_base=ws_base, rest_base=rest_base,
                                      batch_max_delay_s=s.batch_max_delay_s)
            factory = self.ingester_factory or Ingester
            self.ingester = factory(settings)
            self.ingester.start()
            self.subscription = (self.ingester.subscribe() if subscriber_maxlen is None
                                 else self.ingester.subscribe(maxlen=subscriber_maxlen))
        except BaseException:
            try:
                self.stop()
            finally:
                self.close()
            raise
        self.starts += 1
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the ingester (it stores every trade it received and hands them
        to the subscription) and then the replay server. The subscription keeps
        those last trades for one more :meth:`drain`; the store connections
        stay open for a last correction until :meth:`close`. Safe to call
        twice. An ingester that does not stop within ``timeout_s`` seconds
        raises (after the replay server was stopped)."""
        ing = self.ingester
        try:
            if ing is not None and ing.running:
                ing.stop(timeout=timeout_s)
        finally:
            self._bases = None
            rep, self.replay = self.replay, None
            if rep is not None:
                try:
                    rep.stop()
                except Exception:
                    logger.exception("stopping the replay server failed")

    def close(self) -> None:
        """Close the subscription (its :attr:`missed` count is kept) and the
        store connections. Safe to call twice; :meth:`start` works again."""
        sub, self.subscription = self.subscription, None
        if sub is not None:
            self._missed += sub.missed
            try:
                sub.close()
            except Exception:
                logger.exception("closing the subscription failed")
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        store, self._alert_store = self._alert_store, None
        if store is not None:
            store.close()

    def drain(self) -> list:
        """The trades stored since the last call, oldest first
        (:class:`~quantlab.binance.Trade` objects; backfilled ones arrive late);
        ``[]`` without a subscription."""
        sub = self.subscription
        return sub.drain() if sub is not None else []

    def wait(self, timeout_s: float) -> bool:
        """Block at most ``timeout_s`` seconds or until the ingester stopped
        (by :meth:`stop` or on a fatal error); True once stopped."""
        ing = self.ingester
        if ing is None:
            return True
        return bool(ing.wait(timeout_s))

    # -- status ------------------------------------------------------------------------
    @property
    def missed(self) -> int:
        """Trades the subscription ring overwrote before :meth:`drain` read
        them, over every run of this session."""
        sub = self.subscription
        return self._missed + (sub.missed if sub is not None else 0)

    def status(self) -> SessionStatus | None:
        """The status figures now (:class:`SessionStatus`), or None before
        the first ingester was made."""
        if self.ingester is None:
            return None
        return SessionStatus.from_ingester(self.ingester, running=self.running,
                                           missed=self.missed)

    def feed_marks(self) -> tuple:
        """Ingester counters that move when trades may have reached the store
        out of order: ``(gaps_found, trades_backfilled, dropped, reconnects,
        unfillable)``; ``()`` without an ingester."""
        ing = self.ingester
        if ing is None:
            return ()
        st = ing.stats
        return (st.gaps_found, st.trades_backfilled, st.dropped, st.reconnects, st.unfillable)

    def marks_moved(self) -> bool:
        """True when :meth:`feed_marks` changed since the last call (a
        resynchronisation with the store may be due)."""
        marks = self.feed_marks()
        if marks == self._marks_seen:
            return False
        self._marks_seen = marks
        return True

    # -- the store (read-only, this thread) ------------------------------------------------
    def _open_reader(self) -> Any:
        """A new read-only TickStore on the session's file, or None when it
        does not exist yet."""
        if not Path(self.settings.db_path).exists():
            return None
        from quantlab.store import TickStore

        return TickStore(self.settings.db_path, read_only=True)

    def open_store(self) -> bool:
        """Open the session's read-only store if the file exists (kept until
        :meth:`close`); True when it is open."""
        if self._reader is None:
            self._reader = self._open_reader()
        return self._reader is not None

    def close_store(self) -> None:
        """Close the read-only store now (it reopens on the next read)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def bars(self, symbol: str, timeframe: str | int, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Stored bars of ``symbol`` overlapping ``[start_ms, end_ms)`` (ms,
        UTC) on the session's market and stream, empty bars explicit
        (:meth:`quantlab.store.TickStore.bars`). Raises
        :class:`~quantlab.errors.UnknownSymbol` (nothing stored) or
        :class:`~quantlab.errors.ConfigError` (e.g. a sub-second timeframe);
        :class:`~quantlab.errors.ConfigError` too when there is no store file."""
        if not self.open_store():
            raise ConfigError("db_path", self.settings.db_path, "a tick store the ingester wrote")
        s = self.settings
        return self._reader.bars(symbol, timeframe, start_ms=int(start_ms), end_ms=int(end_ms),
                                 market=s.market, kind=s.stream)

    def pair_bars(self, symbol_y: str, symbol_x: str, timeframe: str | int, start_ms: int,
                  end_ms: int) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """Both legs' stored bars of ``[start_ms, end_ms)`` (ms): the history
        of a pair, or the bars a late-bar correction compares with. None when
        the store file does not exist; raises as :meth:`bars`."""
        if not self.open_store():
            return None
        return (self.bars(symbol_y, timeframe, start_ms, end_ms),
                self.bars(symbol_x, timeframe, start_ms, end_ms))

    def holes(self, symbols: Sequence[str], lo_ms: float, hi_ms: float) -> list[tuple[float, float]]:
        """Stretches ``(left, right)`` (ms) overlapping ``[lo_ms, hi_ms]`` where
        the store recorded a gap of ``symbols`` it could not (fully) fill
        (status ``partial`` or ``unfillable``), to shade on plots. A hint:
        read errors are logged and end the list early."""
        out: list[tuple[float, float]] = []
        if not self.open_store():
            return out
        s = self.settings
        try:
            for sym in symbols:
                g = self._reader.gaps(sym, market=s.market, kind=s.stream,
                                      status=("partial", "unfillable"))
                for a, b in zip(g["before_ms"].tolist(), g["after_ms"].tolist()):
                    if a is pd.NA or b is pd.NA or a is None or b is None:
                        continue
                    if b >= lo_ms and a <= hi_ms:
                        out.append((float(a), float(b)))
        except Exception as exc:  # shading is a hint; never break a client for it
            logger.info("cannot read the store's gaps: %s", exc)
        return out

    def backfill_pending(self) -> bool:
        """True while the store holds an ``open`` gap of the session's symbols
        (the ingester is still backfilling it from REST). False without a store
        file; read errors are logged and read as False."""
        if not self.open_store():
            return False
        s = self.settings
        try:
            open_gaps = self._reader.gaps(market=s.market, kind=s.stream, status="open")
            return bool(len(open_gaps) and set(open_gaps["symbol"]) & set(s.symbols))
        except Exception as exc:
            logger.info("cannot read the store's gaps: %s", exc)
            return False

    # -- the alert log (writable, this thread) ------------------------------------------------
    def open_alert_log(self) -> None:
        """Open the store's alert log for writing (events survive restarts).
        Raises what :class:`~quantlab.store.TickStore` raises (the feed works
        without it)."""
        if self._alert_store is not None:
            return
        from quantlab.store import TickStore

        self._alert_store = TickStore(self.settings.db_path)

    def alert_sink(self) -> Callable[[Any], None] | None:
        """A sink for :class:`quantlab.alerts.AlertEngine` writing each event to
        the alert log, or None when the log is not open. Call it from this
        session's thread."""
        store = self._alert_store
        return store.alert_sink() if store is not None else None

    def record_alerts(self, events: Sequence[Any]) -> int:
        """Append alert events (:class:`quantlab.alerts.AlertEvent` or their
        ``to_dict()``) to the alert log; returns how many (0 when closed)."""
        store = self._alert_store
        return store.append_alerts(list(events)) if store is not None else 0

    def past_alerts(self, pair: str, limit: int = 20) -> list[tuple[str, str]]:
        """The alert log's newest ``limit`` events of ``pair`` (``"ETHUSDT/BTCUSDT"``)
        as ``(UTC time "YYYY-MM-DD HH:MM:SS", message)``; ``[]`` when the log
        is not open. Raises on a read error."""
        store = self._alert_store
        if store is None:
            return []
        past = store.alerts(pair, limit=limit)
        return [(t.isoformat()[:19].replace("T", " "), m)
                for t, m in zip(past["time"], past["message"])]
