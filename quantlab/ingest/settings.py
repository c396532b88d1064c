"""What the ingester is told (:class:`IngestSettings`) and what it tells
(:class:`IngestStatus`, :class:`IngestStats`): frozen values, no I/O."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from quantlab import binance
from quantlab.binance import Endpoints
from quantlab.config import require_choice, require_positive
from quantlab.errors import ConfigError
from quantlab.ingest.policy import BackoffPolicy
from quantlab.schema import now_ms as _now_ms  # noqa: F401 (one clock, see tests/test_rules.py)

#: Ingester states, in the order a healthy run passes through them.
STATES = ("connecting", "live", "stale", "reconnecting", "stopped")


# =============================================================================
# Settings
# =============================================================================
@dataclass(frozen=True, kw_only=True)
class IngestSettings:
    """What to ingest, where to store it, and how hard to try.

    Parameters
    ----------
    symbols : Binance symbols of one market, e.g. ``("BTCUSDT", "ETHUSDT")``;
        upper-cased. All share one combined-stream connection.
    db_path : SQLite tick store file (created when missing).
    market : ``"spot"`` or ``"usdm"`` (USD-M futures).
    stream : ``"trade"`` (raw trades) or ``"aggTrade"``.
    ws_base, rest_base : WebSocket and REST bases; ``None`` means Binance's
        real endpoints (:mod:`quantlab.binance`). Tests and the demo point them
        at ``quantlab replay``.
    usdm_trade_route : ``"/market"`` or ``"/public"``: where USD-M ``@trade``
        is served is disputed (BINANCE.md "Endpoints").
    stale_after_s : a stream without a trade for this long (seconds) forces a
        reconnect. Raise it for illiquid symbols.
    first_message_timeout_s : a stream silent this long after connecting
        (seconds) forces a reconnect: Binance acknowledges unknown symbols and
        wrong routes and then sends nothing. Also bounds a rotation's overlap.
    max_connection_age_s : rotate the connection after this long (seconds);
        Binance closes every connection at 24 h.
    open_timeout_s, close_timeout_s : WebSocket handshake and closing
        handshake timeouts, seconds.
    ping_interval_s, ping_timeout_s : client keepalive pings, seconds
        (``None`` disables). Binance's own pings are answered regardless.
    ws_max_queue : ``max_queue`` of websockets' own message queue. On the
        fast path data frames bypass it (they go straight to the ingester's
        handler, see :mod:`quantlab.ingest.tap`); the plain path reads through it.
    ws_fast_path : hand data frames to the ingester straight from websockets'
        socket buffer (:mod:`quantlab.ingest.tap`, which reads websockets'
        private parser state) when the installed websockets is a verified
        version; ``False`` forces the plain path (``recv()``). The environment
        variable ``QUANTLAB_WS_FAST_PATH=0`` forces it too.
    batch_max_trades : the writer commits at most this many trades per transaction.
    batch_max_delay_s : and waits at most this long (seconds, <= 0.25) after
        the first trade of a batch before committing it.
    queue_max : trades waiting for the writer beyond which new trades are
        dropped, counted, reported and backfilled (never silently).
    backoff : :class:`BackoffPolicy` (or a mapping of its fields).
    backfill : fill gaps from REST; when False gaps are only recorded.
    rest_weight_share : fraction of Binance's per-minute REST weight budget
        (spot 6000, USD-M 2400 per IP) the backfiller may use; the rest is left
        to whatever else shares the IP (notebook loaders).
    rest_timeout_s : REST request timeout, seconds.
    rest_max_attempts : transient REST failures tolerated per request before
        the gap is left open (it is resumed at the next start).
    hole_settle_s : USD-M ``@trade`` holes are reconciled in batches, this long
        (seconds) after the first one, so one aggTrades request covers many.
    subscriber_maxlen : default ring size of :meth:`Ingester.subscribe`.
    """

    symbols: tuple[str, ...]
    db_path: str | Path
    market: str = "spot"
    stream: str = "trade"
    ws_base: str | None = None
    rest_base: str | None = None
    usdm_trade_route: str = "/market"
    stale_after_s: float = 30.0
    first_message_timeout_s: float = 15.0
    max_connection_age_s: float = 23.5 * 3600
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    ws_max_queue: int = 4096
    batch_max_trades: int = 5000
    batch_max_delay_s: float = 0.1
    queue_max: int = 250_000
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    backfill: bool = True
    rest_weight_share: float = 0.5
    rest_timeout_s: float = 10.0
    rest_max_attempts: int = 6
    hole_settle_s: float = 2.0
    subscriber_maxlen: int = 100_000
    ws_fast_path: bool = True

    def __post_init__(self) -> None:
        symbols = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        symbols = tuple(str(s).strip().upper() for s in symbols)
        if not symbols:
            raise ConfigError("symbols", self.symbols, "at least one symbol such as 'BTCUSDT'")
        if len(set(symbols)) != len(symbols):
            raise ConfigError("symbols", self.symbols, "distinct symbols")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "db_path", str(self.db_path))
        if not self.db_path:
            raise ConfigError("db_path", self.db_path, "a file path for the tick store")
        require_choice("market", self.market, binance.MARKETS)
        require_choice("stream", self.stream, binance.KINDS)
        require_choice("usdm_trade_route", self.usdm_trade_route, binance.USDM_ROUTES)
        if isinstance(self.backoff, Mapping):
            from quantlab.config import settings_from_dict

            object.__setattr__(self, "backoff", settings_from_dict(BackoffPolicy, self.backoff))
        if not isinstance(self.backoff, BackoffPolicy):
            raise ConfigError("backoff", self.backoff, "a BackoffPolicy or a mapping of its fields")
        for name in ("stale_after_s", "first_message_timeout_s", "max_connection_age_s",
                     "open_timeout_s", "close_timeout_s", "batch_max_delay_s", "rest_timeout_s",
                     "rest_weight_share"):
            require_positive(name, getattr(self, name))
        require_positive("hole_settle_s", self.hole_settle_s, allow_zero=True)
        for name in ("ping_interval_s", "ping_timeout_s"):
            if getattr(self, name) is not None:
                require_positive(name, getattr(self, name))
        if self.batch_max_delay_s > 0.25:
            raise ConfigError("batch_max_delay_s", self.batch_max_delay_s,
                              "at most 0.25 s (the live monitor must see trades within 250 ms)")
        if self.rest_weight_share > 1:
            raise ConfigError("rest_weight_share", self.rest_weight_share, "a fraction in (0, 1]")
        for name in ("ws_max_queue", "batch_max_trades", "queue_max", "rest_max_attempts",
                     "subscriber_maxlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, value, "an integer >= 1")
        # Builds and validates the URLs (symbol spelling, route) now, not in the thread.
        self.endpoints.stream_url(self.symbols)

    @property
    def endpoints(self) -> Endpoints:
        """The :class:`~quantlab.binance.Endpoints` these settings connect to."""
        return Endpoints.for_market(self.market, self.stream, ws_base=self.ws_base,
                                    rest_base=self.rest_base,
                                    usdm_trade_route=self.usdm_trade_route)

    @property
    def stream_url(self) -> str:
        """The combined-stream URL of all symbols."""
        return self.endpoints.stream_url(self.symbols)


# =============================================================================
# Status and statistics: frozen values
# =============================================================================
@dataclass(frozen=True)
class IngestStatus:
    """Where the ingester is, as a frozen value.

    Attributes
    ----------
    state : one of :data:`STATES`: ``connecting`` (opening the first
        connection), ``live`` (trades flowing), ``stale`` (a stream went silent;
        reconnecting), ``reconnecting`` (waiting out the backoff or opening
        again), ``stopped``.
    since_ms : when the state began, ms since epoch UTC.
    error : the last error, e.g. ``"cannot reach stream.binance.com: [Errno 111]
        Connection refused; retrying in 8 s"``; ``None`` if there was none.
        Kept after recovery, so a notebook can show what happened.
    error_ms : when ``error`` was set, ms since epoch UTC (0 when none).
    overflow : the writer queue is (or was, until the next accepted trade)
        full and trades are being dropped; they are recorded as gaps and
        backfilled.
    fatal : stopped by an error retrying cannot fix (HTTP 451 ...).
    pending_gaps : gaps recorded and not yet filled.
    url : the combined-stream URL.
    """

    state: str
    since_ms: int
    error: str | None = None
    error_ms: int = 0
    overflow: bool = False
    fatal: bool = False
    pending_gaps: int = 0
    url: str = ""

    def __str__(self) -> str:
        text = f"{self.state}"
        if self.overflow:
            text += " (OVERFLOW: dropping trades, will backfill)"
        if self.pending_gaps:
            text += f", {self.pending_gaps} gap(s) to fill"
        if self.error:
            text += f"; last error: {self.error}"
        return text


@dataclass(frozen=True)
class IngestStats:
    """Counters since :meth:`Ingester.start`, as a frozen value.

    Attributes
    ----------
    messages : WebSocket frames received (trades, control, garbage).
    trades_received : trade frames received (including overlap duplicates).
    trades_stored : rows inserted into the store (live and backfilled).
    duplicates : trades already held (overlap of a rotation, store duplicates).
    trades_per_s : stored trades per second over the last ~5 s.
    lag_ms_p50, lag_ms_p99 : receive time minus exchange trade time of recent
        live trades, ms (includes clock offset between this machine and Binance).
    reconnects : connections opened after a loss (not counting rotations).
    rotations : planned rotations (age, ``serverShutdown``) with overlap.
    gaps_found : gaps opened (id jumps, reconnects, overflow, startup).
    trades_backfilled : trades inserted from REST.
    unfillable : missing ids REST could not provide (too old, futures ids
        inside multi-fill aggregates); recorded in the gaps table.
    holes : USD-M raw ids proven to be non-market prints (legitimate holes).
    dropped : trades refused by a full writer queue (then backfilled).
    rejected : trades the store refused as invalid (not stored; see the status error).
    garbage : frames that were neither trades nor control messages.
    queue_depth : trades waiting for the writer now.
    last_trade_age_s : now minus exchange time of the newest stored live
        trade, seconds (``nan`` before the first).
    last_ids : last accepted trade id per symbol.
    ws_path : how WebSocket frames reach the ingester: ``"tap"`` (the
        socket-buffer fast path), ``"plain"`` (websockets' ``recv()``), or
        ``""`` before the first connection.
    """

    messages: int = 0
    trades_received: int = 0
    trades_stored: int = 0
    duplicates: int = 0
    trades_per_s: float = 0.0
    lag_ms_p50: float = math.nan
    lag_ms_p99: float = math.nan
    reconnects: int = 0
    rotations: int = 0
    gaps_found: int = 0
    trades_backfilled: int = 0
    unfillable: int = 0
    holes: int = 0
    dropped: int = 0
    rejected: int = 0
    garbage: int = 0
    queue_depth: int = 0
    last_trade_age_s: float = math.nan
    last_ids: Mapping[str, int | None] = field(default_factory=dict)
    ws_path: str = ""

    def summary(self) -> str:
        """One status line, e.g. for the CLI."""
        def ms(v: float) -> str:
            return "-" if math.isnan(v) else f"{v:,.0f}"

        return (f"stored {self.trades_stored:,} ({self.trades_per_s:,.0f}/s), "
                f"lag p50 {ms(self.lag_ms_p50)} ms p99 {ms(self.lag_ms_p99)} ms, "
                f"gaps {self.gaps_found} (backfilled {self.trades_backfilled:,}, "
                f"unfillable {self.unfillable:,}), reconnects {self.reconnects}, "
                f"rotations {self.rotations}, dropped {self.dropped:,}, "
                f"queue {self.queue_depth:,}")

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{f.name}</th><td>{getattr(self, f.name)}</td></tr>"
                       for f in dataclasses.fields(self))
        return f"<table>{rows}</table>"

