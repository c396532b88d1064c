"""Loss-free live trade ingestion from Binance into the tick store.

The :class:`Ingester` keeps one combined-stream WebSocket connection per market
open in a daemon thread that owns a private asyncio loop, hands every trade to a
writer thread through a bounded queue, and fills whatever the stream missed
(reconnects, id jumps, overflow) from REST by trade id. A notebook drives it
through a synchronous face; nothing touches the kernel's event loop::

    ing = Ingester(IngestSettings(symbols=("BTCUSDT", "ETHUSDT"), db_path="data/live.db"))
    ing.start()     # returns at once; raises if the store cannot be opened
    ing.status      # IngestStatus(state='live', error=None, ...)
    ing.stats       # IngestStats(trades_stored=..., lag_ms_p50=..., ...)
    sub = ing.subscribe(maxlen=50_000)
    sub.drain()     # the trades stored since the last drain, for a live monitor
    ing.stop()      # flushes everything received, then returns the final stats

The CLI (``quantlab ingest``) and child processes use :func:`run_for`.

Design (facts and section names from ``shared/BINANCE.md``)
-----------------------------------------------------------
* **The socket loop parses and hands off, nothing else.** websockets hands each
  frame to a handler (:func:`_tap_connection_class`) that parses it
  (:func:`fast_parse_trade`, orjson), checks its id and appends it to a
  ``deque``. Storage runs on a writer thread that owns the only
  :class:`~quantlab.store.TickStore` and commits batches (size
  ``batch_max_trades``, age ``batch_max_delay_s`` <= 0.25 s). A slow disk never
  delays the pong Binance wants within 60 s of its ping ("Connection rules").
* **Every id is accounted for.** Per stream the loop keeps the last id it
  accepted, seeded from the store at start. An id that jumps, the first id
  after a reconnect (compared with the last stored), ids refused by a full
  queue: each opens a *gap*. The writer records it in the store's gaps table
  in order with the trades (so a ``kill -9`` never leaves an unrecorded hole),
  the backfiller fills it from REST by ``fromId`` through the same writer
  ("Connection rules": Binance does not replay missed messages), and gaps
  still ``open`` when a process dies are resumed by the next start.
* **USD-M raw ``@trade`` holes are reconciled, not chased** ("Messages"): the
  aggTrades of the gap's time range tell, through their ``f..l`` ranges, which
  missing raw ids were market fills (:func:`reconcile_raw_futures`); a
  single-fill aggregate is stored as that raw trade, ids no aggregate covers
  are holes, and fills inside multi-fill aggregates are counted unfillable.
* **Reconnect forever** with the capped, jittered exponential backoff of
  :class:`BackoffPolicy`, reset after a stable period; stop only on errors
  retrying cannot fix (HTTP 451). A first-message deadline and a staleness
  watchdog per stream force a reconnect ("What a robust ingester does" 2).
  Connections are rotated after ``max_connection_age_s`` (before Binance's
  24 h close) and on ``serverShutdown``: the new connection opens first, its
  trades are held until the old one has delivered every id before them, then
  the old one is closed, so the handover has neither gap nor duplicate (3).
* **Overflow is never silent**: a trade that finds the queue full
  (``queue_max``) is counted in ``stats.dropped``, flagged in
  ``status.overflow`` and its id range becomes an ``overflow`` gap, backfilled
  like any other. Before that, while the writer is behind, the loop pauses
  reading the socket for a millisecond at a time (the writer needs the GIL
  back after every SQLite step).
* **REST is paced** by a :class:`TokenBucket` over Binance's request weights
  (``rest_weight_share`` of the per-minute budget), honours ``Retry-After`` on
  429, backs off at least ``ban_s`` on 418 and stops on 451 ("Endpoints").
  Requests run in short-lived daemon threads (urllib), never on the loop.

Guarantees and limits
---------------------
* Every trade id published on the configured streams from the first trade
  received until :meth:`Ingester.stop` is stored exactly once, or recorded in
  the gaps table: still ``open`` (resumed by the next start), ``unfillable``
  (REST no longer has it, e.g. USD-M aggTrades older than ~48 h, or a futures
  fill inside a multi-fill aggregate), or a USD-M hole (``hole_count``).
* Trades before the first one received (before the first start) are not
  fetched: this is a live recorder, not an archive loader.
* USD-M non-market prints (``INSURANCE_FUND``, ``ADL``, ``NA``) missed during
  a disconnect cannot be recovered (Binance's REST omits them); they are
  counted as holes and never belong in bars anyway.
* A stream that is silent for ``stale_after_s`` is reconnected; raise it for
  illiquid symbols. Ids missed just before such a silence are found (and
  filled) when the next trade of that stream arrives.
* ``kill -9`` loses what was queued but not committed (at most
  ``batch_max_delay_s`` of trades plus the queue); the next start finds those
  ids as a gap after the last stored id and backfills them.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import dataclasses
import logging
import math
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np

from quantlab import binance
from quantlab.binance import (
    REST_MAX_LIMIT,
    REST_WEIGHT_BUDGET_PER_MIN,
    REST_WEIGHTS,
    Endpoints,
    ErrorReply,
    NotTrade,
    ServerShutdown,
    Trade,
    parse_message,
    parse_rest_agg_trade,
    parse_rest_trade,
)
from quantlab.config import require_choice, require_positive
from quantlab.errors import ConfigError, FatalFeedError, NotATrade, QuantlabError

try:
    import orjson as _json

    _loads = _json.loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json as _json

    _loads = _json.loads

logger = logging.getLogger(__name__)

__all__ = [
    "BackoffPolicy", "IngestSettings", "IngestStatus", "IngestStats", "Ingester",
    "IngestStopTimeout", "RestError", "Subscription", "TokenBucket", "Reconciliation",
    "reconcile_raw_futures", "fast_parse_trade", "run_for", "run_cli", "STATES",
]

#: Ingester states, in the order a healthy run passes through them.
STATES = ("connecting", "live", "stale", "reconnecting", "stopped")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# =============================================================================
# Errors
# =============================================================================
class RestError(QuantlabError):
    """A Binance REST request failed.

    Attributes
    ----------
    status : HTTP status (0 when the server could not be reached).
    url : the request URL.
    retry_after_s : ``Retry-After`` header in seconds, when the server sent one.
    reason : short text (HTTP reason, socket error).
    """

    def __init__(self, status: int, url: str, reason: str, retry_after_s: float | None = None):
        self.status = status
        self.url = url
        self.reason = reason
        self.retry_after_s = retry_after_s
        what = f"HTTP {status}" if status else "no response"
        extra = f"; Retry-After {retry_after_s:g} s" if retry_after_s is not None else ""
        super().__init__(f"GET {url}: {what} ({reason}){extra}")


class IngestStopTimeout(QuantlabError, TimeoutError):
    """:meth:`Ingester.stop` did not finish within its timeout.

    The ingester keeps flushing in the background; call ``stop()`` again to
    keep waiting. ``queued`` is how many trades were still waiting for the
    writer when the timeout expired.
    """

    def __init__(self, timeout_s: float, queued: int):
        self.timeout_s = timeout_s
        self.queued = queued
        super().__init__(f"ingester did not stop within {timeout_s:g} s ({queued} trades still "
                         "queued for the writer); it keeps flushing: call stop() again to wait")


# =============================================================================
# Retry policy: a plain value, testable without sleeping
# =============================================================================
_FATAL_HTTP = frozenset({451})  # restricted location ("Endpoints"): retrying cannot fix it


@dataclass(frozen=True, kw_only=True)
class BackoffPolicy:
    r"""Capped, jittered exponential backoff between connection attempts.

    The base delay of attempt :math:`n = 0, 1, \dots` is

    .. math:: b_n = \min(\text{max\_s},\ \text{initial\_s} \cdot \text{factor}^n)

    and the delay actually used is drawn uniformly from
    :math:`[b_n (1 - \text{jitter}),\ b_n]` ("equal jitter": never longer than
    the cap, never shorter than half of it with the default), so that many
    clients cut off together do not reconnect in lock-step. A connection that
    stayed up ``reset_after_s`` seconds resets :math:`n` to 0. With the
    defaults a flapping connection settles at one attempt per 30-60 s, far
    below Binance's limit of 300 attempts per 5 minutes per IP.

    Parameters
    ----------
    initial_s : first base delay, seconds.
    factor : growth per failed attempt (>= 1).
    max_s : cap on the base delay, seconds.
    jitter : fraction in [0, 1] of the base delay that is randomised away.
    reset_after_s : a connection up this long (seconds) counts as stable.
    ban_s : delay after HTTP 418 (IP ban) when the response says no
        ``Retry-After``, seconds. Binance bans for 2 minutes to 3 days.

    Examples
    --------
    >>> p = BackoffPolicy(initial_s=1, factor=2, max_s=5, jitter=0)
    >>> [p.next_delay(n) for n in range(5)]
    [1.0, 2.0, 4.0, 5.0, 5.0]
    >>> p.should_retry(RestError(451, "https://api.binance.com/api/v3/aggTrades", "Unavailable"))
    False
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 60.0
    jitter: float = 0.5
    reset_after_s: float = 60.0
    ban_s: float = 300.0

    def __post_init__(self) -> None:
        require_positive("initial_s", self.initial_s)
        require_positive("max_s", self.max_s)
        require_positive("reset_after_s", self.reset_after_s)
        require_positive("ban_s", self.ban_s)
        if self.factor < 1:
            raise ConfigError("factor", self.factor, "a number >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("jitter", self.jitter, "a fraction between 0 and 1")
        if self.max_s < self.initial_s:
            raise ConfigError("max_s", self.max_s, f"a number >= initial_s={self.initial_s}")

    def base_delay(self, attempt: int) -> float:
        """Delay before jitter for attempt ``attempt`` (0-based), seconds."""
        if attempt < 0:
            raise ConfigError("attempt", attempt, "an integer >= 0")
        # Cap the exponent first: factor**attempt overflows floats after ~1000 attempts.
        n = min(attempt, 1 + int(math.log(self.max_s / self.initial_s, self.factor))
                if self.factor > 1 else 0)
        return min(self.max_s, self.initial_s * self.factor ** n)

    def next_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Jittered delay for attempt ``attempt``, seconds, in
        ``[base*(1-jitter), base]``. ``rng`` defaults to the module's random."""
        base = self.base_delay(attempt)
        u = (rng or random).random()
        return base * (1.0 - self.jitter * u)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Endless generator of jittered delays for attempts 0, 1, 2, ... (seconds)."""
        attempt = 0
        while True:
            yield self.next_delay(attempt, rng)
            attempt += 1

    def attempt_after(self, attempt: int, connected_s: float) -> int:
        """The attempt counter to use after a connection that stayed up
        ``connected_s`` seconds: 0 once it was stable, else ``attempt``."""
        return 0 if connected_s >= self.reset_after_s else attempt

    @staticmethod
    def http_status(exc: BaseException) -> int | None:
        """HTTP status carried by ``exc`` (REST error or refused WebSocket
        handshake), else ``None``."""
        if isinstance(exc, RestError):
            return exc.status or None
        response = getattr(exc, "response", None)  # websockets InvalidStatus
        status = getattr(response, "status_code", None)
        return int(status) if isinstance(status, int) else None

    def should_retry(self, exc: BaseException) -> bool:
        """False for errors retrying cannot fix, True for everything else.

        Fatal: :class:`~quantlab.errors.FatalFeedError`, HTTP 451 (restricted
        location), an invalid URL, a configuration error. Everything else,
        including every WebSocket close (1000, 1001, 1006, 1008 ...), timeouts,
        DNS and socket errors, 5xx, 429 and 418, is retried ("every close is
        reconnectable").
        """
        if isinstance(exc, (FatalFeedError, ConfigError)):
            return False
        if self.http_status(exc) in _FATAL_HTTP:
            return False
        try:
            from websockets.exceptions import InvalidURI
        except ImportError:  # pragma: no cover
            InvalidURI = ()  # type: ignore[assignment]
        if InvalidURI and isinstance(exc, InvalidURI):
            return False
        return True

    def min_delay(self, exc: BaseException) -> float:
        """Lower bound on the next delay that ``exc`` imposes, seconds:
        ``Retry-After`` of a 429/418, at least ``ban_s`` after a 418, else 0."""
        status = self.http_status(exc)
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is None:
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None)
            if headers is not None:
                retry_after = _parse_retry_after(headers.get("Retry-After"))
        if status == 418:
            return max(retry_after or 0.0, self.ban_s)
        if status == 429:
            return retry_after if retry_after is not None else 1.0
        return 0.0


def _parse_retry_after(value: object) -> float | None:
    try:
        return max(0.0, float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # HTTP-date form: Binance sends seconds; ignore anything else


# =============================================================================
# REST pacing
# =============================================================================
class TokenBucket:
    r"""Token bucket over Binance's REST request weights.

    Holds at most ``capacity`` weight units and refills at ``refill_per_s``.
    :meth:`reserve` takes a request's weight at once (the balance may go
    negative) and answers how long to wait before sending, so concurrent
    requests queue up fairly. :meth:`block_until` honours ``Retry-After``.
    Pure: the clock is passed in (seconds, any monotonic origin).

    Examples
    --------
    >>> b = TokenBucket(capacity=100, refill_per_s=10, now=0.0)
    >>> b.reserve(25, now=0.0), b.reserve(100, now=0.0)
    (0.0, 2.5)
    """

    def __init__(self, capacity: float, refill_per_s: float, now: float):
        require_positive("capacity", capacity)
        require_positive("refill_per_s", refill_per_s)
        self.capacity = float(capacity)
        self.refill_per_s = float(refill_per_s)
        self.tokens = float(capacity)
        self._t = now
        self.blocked_until = -math.inf

    @classmethod
    def for_market(cls, market: str, share: float, now: float) -> "TokenBucket":
        """Bucket spending ``share`` of the market's per-minute weight budget
        (spot 6000, USD-M 2400 per IP)."""
        budget = REST_WEIGHT_BUDGET_PER_MIN[market] * share
        return cls(capacity=budget, refill_per_s=budget / 60.0, now=now)

    def _refill(self, now: float) -> None:
        if now > self._t:
            self.tokens = min(self.capacity, self.tokens + (now - self._t) * self.refill_per_s)
            self._t = now

    def reserve(self, weight: float, now: float) -> float:
        """Spend ``weight`` and return the wait before sending, seconds (>= 0)."""
        self._refill(now)
        self.tokens -= weight
        wait = -self.tokens / self.refill_per_s if self.tokens < 0 else 0.0
        return max(wait, self.blocked_until - now, 0.0)

    def block_until(self, t: float) -> None:
        """Send nothing before ``t`` (``Retry-After``); also empties the bucket,
        since Binance counted more weight than we did."""
        self.blocked_until = max(self.blocked_until, t)
        self.tokens = min(self.tokens, 0.0)


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
    ws_max_queue : ``max_queue`` of websockets' own message queue. Data frames
        bypass it (they go straight to the ingester's handler, see
        :func:`_tap_connection_class`); kept for frames that would not.
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


# =============================================================================
# Subscribers
# =============================================================================
class Subscription:
    """A bounded, thread-safe hand-off of stored trades to one consumer.

    The writer thread appends every batch *after* committing it, so a
    subscriber sees stored trades only (live ones in id order per symbol;
    backfilled ones late, when their gap is filled: order by ``time_ms`` and
    ``trade_id`` if you need time order). A consumer that falls behind never
    slows the ingester: the ring keeps the newest ``maxlen`` trades and
    :attr:`missed` counts the oldest ones it overwrote.

    Use :meth:`drain` from any thread, a few times per second.
    """

    def __init__(self, maxlen: int, owner: "Ingester | None" = None):
        require_positive("maxlen", maxlen)
        self.maxlen = int(maxlen)
        self._buf: collections.deque[Trade] = collections.deque(maxlen=self.maxlen)
        self._lock = threading.Lock()
        self._owner = weakref.ref(owner) if owner is not None else None
        self.missed = 0  #: trades overwritten before :meth:`drain` read them
        self.delivered = 0  #: trades handed out by :meth:`drain`
        self.closed = False

    def _push(self, trades: Sequence[Trade]) -> None:
        """Writer thread: append a stored batch (O(len) C-level extend)."""
        with self._lock:
            over = len(self._buf) + len(trades) - self.maxlen
            if over > 0:
                self.missed += over
            self._buf.extend(trades)

    def drain(self) -> list[Trade]:
        """Everything buffered since the last call, oldest first."""
        with self._lock:
            out = list(self._buf)
            self._buf.clear()
        self.delivered += len(out)
        return out

    def __len__(self) -> int:
        return len(self._buf)

    def close(self) -> None:
        """Stop receiving trades."""
        self.closed = True
        owner = self._owner() if self._owner else None
        if owner is not None:
            owner._unsubscribe(self)

    def __repr__(self) -> str:
        return f"Subscription(maxlen={self.maxlen}, buffered={len(self._buf)}, missed={self.missed})"


# =============================================================================
# Gap reconciliation (pure)
# =============================================================================
@dataclass(frozen=True)
class Reconciliation:
    """Outcome of reconciling missing USD-M raw trade ids with aggTrades.

    Attributes
    ----------
    trades : raw trades rebuilt exactly from single-fill aggregates (``f == l``).
    hole_ids : missing ids no aggregate covers: prints that were not market
        fills (insurance fund, ADL, ``NA``: never in aggregates, and Binance's
        REST does not serve them) or ids never used. Nothing to fill; they
        never belong in bars.
    unfillable_ids : missing ids inside a multi-fill aggregate (the split of
        its quantity between fills is unknown), or every id when the
        aggregates could not be had (``complete`` false).
    """

    trades: tuple[Trade, ...]
    hole_ids: np.ndarray
    unfillable_ids: np.ndarray

    @property
    def holes(self) -> int:
        return int(self.hole_ids.size)

    @property
    def unfillable(self) -> int:
        return int(self.unfillable_ids.size)


def reconcile_raw_futures(missing: np.ndarray, aggs: Sequence[Trade], *, complete: bool,
                          symbol: str, recv_ms: int) -> Reconciliation:
    """Decide what each missing USD-M raw trade id was (BINANCE.md "Messages").

    Futures aggTrades exclude insurance-fund and ADL fills, and raw ``@trade``
    ids have holes where such prints were left out. So for a missing raw id
    ``i``: an aggregate with ``f <= i <= l`` proves ``i`` was a market fill; if
    ``f == l`` the aggregate *is* that fill (same price, quantity, time, side)
    and is stored as raw trade ``i``; if ``f < l`` the fill's own quantity is
    unknown (unfillable). An id no aggregate covers is a hole, but only if
    ``complete`` says the aggregates span the whole gap's time range;
    otherwise it is unfillable too.

    Parameters
    ----------
    missing : sorted raw ids not in the store.
    aggs : aggTrades (``first_trade_id``/``last_trade_id`` set) around the gap.
    complete : the aggregates cover every market fill of the gap's time range.
    symbol, recv_ms : stamped on rebuilt trades.

    Examples
    --------
    >>> a = [Trade("usdm", "BTCUSDT", "aggTrade", 50, 1.5, 2.0, 10, 0, True, 0, None, 7, 7),
    ...      Trade("usdm", "BTCUSDT", "aggTrade", 51, 1.6, 3.0, 11, 0, False, 0, None, 9, 10)]
    >>> r = reconcile_raw_futures(np.array([6, 7, 8, 9]), a, complete=True, symbol="BTCUSDT", recv_ms=0)
    >>> [(t.trade_id, t.price, t.qty) for t in r.trades], r.hole_ids.tolist(), r.unfillable_ids.tolist()
    ([(7, 1.5, 2.0)], [6, 8], [9])
    """
    missing = np.unique(np.asarray(missing, dtype=np.int64))
    rebuilt = np.zeros(missing.size, dtype=bool)
    multi = np.zeros(missing.size, dtype=bool)
    trades: list[Trade] = []
    for agg in aggs:
        f, l = agg.first_trade_id, agg.last_trade_id
        if f is None or l is None or f < 0:  # archive rows with f=l=-1 carry nothing
            continue
        lo, hi = np.searchsorted(missing, [f, l + 1])
        if lo == hi:
            continue
        if f == l:
            rebuilt[lo] = True
            trades.append(Trade("usdm", symbol, "trade", int(f), agg.price, agg.qty, agg.time_ms,
                                recv_ms, agg.is_buyer_maker, 0, "MARKET"))
        else:
            multi[lo:hi] = True
    uncovered = ~(rebuilt | multi)
    if complete:
        return Reconciliation(tuple(trades), missing[uncovered], missing[multi])
    return Reconciliation(tuple(trades), missing[:0], missing[multi | uncovered])


# =============================================================================
# Hot-path parsing (pure)
# =============================================================================
_new_object = object.__new__
_slot = {name: getattr(Trade, name).__set__ for name in Trade.__slots__}
(_s_market, _s_symbol, _s_kind, _s_trade_id, _s_price, _s_qty, _s_time_ms, _s_recv_ms,
 _s_is_buyer_maker, _s_event_ms, _s_trade_type, _s_first, _s_last) = (
    _slot[f.name] for f in dataclasses.fields(Trade))
del _slot


def fast_parse_trade(raw: bytes | str, market: str, recv_ms: int) -> Trade | None:
    """Parse a combined-stream trade frame fast, or return ``None``.

    Handles exactly the frames the ingester lives on::

        {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",
         "t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}

    (``@aggTrade``: ``a``, ``f``, ``l`` instead of ``t``; USD-M adds ``X`` to
    raw trades) and returns the same :class:`~quantlab.binance.Trade` as
    :func:`quantlab.binance.parse_message` would. Anything else (control
    replies, ``serverShutdown``, garbage, a field of an unexpected type, a
    lower-case symbol) returns ``None``: the caller falls back to
    ``parse_message``, which explains it.

    Why: the frozen dataclass's generated ``__init__`` costs ~4 us per trade
    on this machine; setting the slots directly costs ~1 us and yields an
    equal, genuine ``Trade`` (``==`` and ``hash`` agree).

    >>> raw = ('{"stream":"btcusdt@trade","data":{"e":"trade","E":2,"s":"BTCUSDT","t":7,'
    ...        '"p":"61837.63000000","q":"0.02000000","T":1,"m":true,"M":true}}')
    >>> fast_parse_trade(raw, "spot", 5) == parse_message(raw, "spot", recv_ms=5)
    True
    >>> fast_parse_trade('{"result":null,"id":1}', "spot", 5) is None
    True
    """
    try:
        d = _loads(raw)["data"]
        e = d["e"]
        if e == "trade":
            tid = d["t"]
            first = last = None
            x = d.get("X")
            if x is not None and x.__class__ is not str:
                return None
        elif e == "aggTrade":
            tid = d["a"]
            first = d["f"]
            last = d["l"]
            x = None
            if first.__class__ is not int or last.__class__ is not int:
                return None
        else:
            return None
        t_ms = d["T"]
        e_ms = d.get("E", 0)
        m = d["m"]
        sym = d["s"]
        if (tid.__class__ is not int or t_ms.__class__ is not int or e_ms.__class__ is not int
                or (m is not True and m is not False) or sym.__class__ is not str
                or not sym.isupper()):
            return None
        price = float(d["p"])
        qty = float(d["q"])
    except Exception:  # not JSON, not a dict, a key missing, a bad number: slow path
        return None
    t = _new_object(Trade)
    _s_market(t, market)
    _s_symbol(t, sym)
    _s_kind(t, e)
    _s_trade_id(t, tid)
    _s_price(t, price)
    _s_qty(t, qty)
    _s_time_ms(t, t_ms)
    _s_recv_ms(t, recv_ms)
    _s_is_buyer_maker(t, m)
    _s_event_ms(t, e_ms)
    _s_trade_type(t, x)
    _s_first(t, first)
    _s_last(t, last)
    return t


# =============================================================================
# REST (blocking; always called off the socket loop)
# =============================================================================
#: Largest REST body read (bytes). A full Binance page (1,000 trades) is ~150 KB;
#: anything near this is not a trade page, and reading it whole could exhaust memory
#: (issue 13: 200 MB bodies drove the ingester to 2.1 GB).
REST_MAX_BODY_BYTES = 16 << 20
_REST_ERROR_BODY_BYTES = 64 << 10  # of an HTTP error body: enough for Binance's {"code","msg"}


def _http_get_json(url: str, timeout_s: float) -> Any:
    """GET ``url`` and parse JSON. Raises :class:`RestError` on any failure,
    including a body over :data:`REST_MAX_BODY_BYTES` (never read whole)."""
    req = urllib.request.Request(url, headers={"Accept": "application/json",
                                               "User-Agent": "quantlab-ingest"})
    cap = REST_MAX_BODY_BYTES
    too_big = f"response body larger than {cap / 2**20:g} MiB (REST_MAX_BODY_BYTES); not a Binance page"
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                raise RestError(200, url, f"{too_big} (Content-Length {int(declared):,})")
            body = resp.read(cap + 1)  # chunked or undeclared: at most cap + 1 bytes held
            if len(body) > cap:
                body = b""  # freed before the error travels (and is retried)
                raise RestError(200, url, too_big)
    except RestError:
        raise
    except urllib.error.HTTPError as exc:
        retry_after = _parse_retry_after(exc.headers.get("Retry-After")) if exc.headers else None
        detail = exc.reason
        try:
            payload = _loads(exc.read(_REST_ERROR_BODY_BYTES) or b"{}")
            if isinstance(payload, dict) and "msg" in payload:
                detail = f"{exc.reason}: {payload['msg']}"
        except Exception:  # body is not JSON: keep the HTTP reason
            pass
        raise RestError(exc.code, url, str(detail), retry_after) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RestError(0, url, str(reason)) from exc
    try:
        return _loads(body)
    except Exception:
        head, body = body[:100], b""
        raise RestError(200, url, f"response is not JSON: {head!r}") from None


def _run_in_daemon_thread(fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
    """Run blocking ``fn(*args)`` in a fresh daemon thread; await its result.

    Not ``asyncio.to_thread``: ``asyncio.run`` joins the default executor at
    shutdown, so a REST call hanging until its timeout would delay
    :meth:`Ingester.stop`. REST calls are rare (a few per second at most), a
    thread each is cheap.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def deliver(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def target() -> None:
        try:
            result, exc = fn(*args), None
        except BaseException as e:  # delivered to the awaiting coroutine
            result, exc = None, e
        try:
            loop.call_soon_threadsafe(deliver, result, exc)
        except RuntimeError:  # loop already closed: the ingester stopped
            pass

    threading.Thread(target=target, name="quantlab-rest", daemon=True).start()
    return fut


# =============================================================================
# websockets: frames straight to the handler
# =============================================================================
_TAP: Any = None


def _frame_size(buf: bytes, pos: int, n: int) -> int:
    """Total size (header + payload) of the unmasked WebSocket frame at
    ``buf[pos:n]``, read from its header; -1 if the header is incomplete, -2
    if the frame is masked (which a server must not send)."""
    if n - pos < 2:
        return -1
    ln = buf[pos + 1]
    if ln & 0x80:
        return -2
    if ln < 126:
        return 2 + ln
    if ln == 126:
        return -1 if n - pos < 4 else 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
    return -1 if n - pos < 10 else 10 + int.from_bytes(buf[pos + 2:pos + 10], "big")


def _tap_connection_class() -> Any:
    """A ``ClientConnection`` that hands every complete data frame to
    ``self.on_frame(data)`` as websockets parses it, instead of queueing it
    for ``recv()``.

    Why: ``recv()`` costs a coroutine round trip, a queue put/get and flow
    control bookkeeping per message, about a quarter of the loop's time per
    trade on this machine (benchmarks/ingest.py). Its ``data_received`` goes
    further and decodes runs of plain text frames itself while websockets'
    parser is idle (see there): websockets' own per-frame decoding cost about
    half of the loop's time per trade. Pings, pongs and the closing
    handshake are still handled by websockets; ``connect(create_connection=)``
    is its documented hook for custom connections. Built on first use so that
    importing quantlab.ingest does not import websockets.
    """
    global _TAP
    if _TAP is not None:
        return _TAP
    from websockets.asyncio.client import ClientConnection
    from websockets.frames import Frame, Opcode
    from websockets.protocol import Protocol, State
    from websockets.streams import StreamReader

    TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
    OPEN = State.OPEN

    # Where websockets' parse() generator waits between frames, and inside one.
    PARSE = Protocol.parse.__code__
    AT_EOF = StreamReader.at_eof.__code__
    FRAME_PARSE = Frame.parse.__func__.__code__
    READ_EXACT = StreamReader.read_exact.__code__
    from_bytes = int.from_bytes

    class _TapConnection(ClientConnection):
        on_frame: Callable[[bytes], None] | None = None
        _fragments: list | None = None

        def _need(self) -> int:
            """How many bytes websockets' parser needs before it waits at a
            frame boundary again: 0 when it waits there with an empty buffer
            (frames may be parsed without it), else the bytes its pending
            ``read_exact`` lacks, or -1 when not known (closing, a fragmented
            message, an unexpected parser state): then all goes to websockets."""
            proto = self.protocol
            if proto.state is not OPEN or proto.current_size is not None:
                return -1
            gen = proto.parser  # ClientProtocol.parse delegates to Protocol.parse
            while gen is not None and gen.gi_code is not PARSE:
                gen = gen.gi_yieldfrom
            sub = gen.gi_yieldfrom if gen is not None else None
            if sub is None:
                return -1
            code = sub.gi_code
            if code is AT_EOF:
                return -1 if proto.reader.buffer else 0
            if code is not FRAME_PARSE:
                return -1
            rd = sub.gi_yieldfrom
            if rd is None or rd.gi_code is not READ_EXACT:
                return -1
            need = rd.gi_frame.f_locals.get("n", 0) - len(proto.reader.buffer)
            return need if need > 0 else -1

        def data_received(self, data: bytes) -> None:
            """Bulk frame decoding: while websockets' parser waits at a frame
            boundary, complete unmasked, unfragmented TEXT frames are parsed
            here in a tight loop and go straight to ``on_frame`` (websockets'
            generator-based ``Frame.parse``, event list and dispatch cost ~3x
            more per frame). Anything else — a control frame (a ping is
            answered by websockets as usual), a binary or fragmented frame,
            RSV bits, a frame over the size limit, an incomplete frame at the
            end of ``data`` — goes to websockets' own ``data_received``, one
            frame at a time; a frame websockets holds incomplete gets exactly
            the bytes it lacks first. Websockets' reader state is thus always
            what it would have been, and frames are delivered in order.
            """
            on_frame = self.on_frame
            if on_frame is None or self.response is None:  # handshake
                super().data_received(data)
                return
            n = len(data)
            pos = 0
            proto = self.protocol
            limit = proto.max_message_size  # websockets' own checks: PayloadTooBig
            frag = proto.max_fragment_size
            if frag is not None:
                limit = frag if limit is None else min(limit, frag)
            if limit is None:
                limit = 1 << 63
            while pos < n:
                need = self._need()
                if need:  # websockets first: resync to a frame boundary, or all of it
                    if need < 0 or pos + need >= n:
                        super().data_received(data[pos:] if pos else data)
                        return
                    super().data_received(data[pos:pos + need])
                    pos += need
                    continue
                # -- the hot loop: FIN=1, RSV=0, opcode TEXT (0x81), unmasked
                while True:
                    if n - pos < 2:
                        break
                    if data[pos] != 0x81:
                        break
                    ln = data[pos + 1]
                    if ln < 126:
                        start = pos + 2
                    elif ln == 126:
                        if n - pos < 4:
                            break
                        ln = (data[pos + 2] << 8) | data[pos + 3]
                        start = pos + 4
                    elif ln == 127:
                        if n - pos < 10:
                            break
                        ln = from_bytes(data[pos + 2:pos + 10], "big")
                        start = pos + 10
                    else:  # masked: a protocol error websockets reports
                        break
                    end = start + ln
                    if end > n or ln > limit:
                        break
                    pos = end
                    on_frame(data[start:end])
                if pos >= n:
                    return
                # -- anything else: websockets' path, one complete frame at a time
                size = _frame_size(data, pos, n)
                if size < 0 or pos + size >= n:  # incomplete, masked, or the last frame
                    super().data_received(data[pos:] if pos else data)
                    return
                super().data_received(data[pos:pos + size])
                pos += size

        def process_event(self, event: Any) -> None:
            on_frame = self.on_frame
            if on_frame is None or self.response is None:  # the handshake response
                super().process_event(event)
                return
            op = event.opcode
            if op is TEXT or op is BINARY:
                if event.fin:
                    on_frame(event.data)
                else:  # fragmented (Binance does not, but the protocol allows it)
                    self._fragments = [event.data]
            elif op is CONT:
                if self._fragments is not None:
                    self._fragments.append(event.data)
                    if event.fin:
                        data, self._fragments = b"".join(self._fragments), None
                        on_frame(data)
            else:  # ping, pong, close: websockets' business
                super().process_event(event)

    _TAP = _TapConnection
    return _TAP


# =============================================================================
# The ingester
# =============================================================================
@dataclass
class _Gap:
    symbol: str
    first_id: int
    last_id: int
    reason: str
    before_ms: int | None  # exchange time of trade first_id - 1, when known
    after_ms: int | None  # exchange time of trade last_id + 1, when known
    gap_id: int | None = None
    detected: float = 0.0  # monotonic seconds

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


class _Last:
    """Stand-in for the last accepted Trade when only its id is known (from the store)."""

    __slots__ = ("trade_id", "time_ms")

    def __init__(self, trade_id: int, time_ms: int | None = None):
        self.trade_id = trade_id
        self.time_ms = time_ms


class _Conn:
    """One WebSocket connection and its bookkeeping (loop thread only)."""

    __slots__ = ("ws", "serial", "opened", "primary", "buffer", "task", "start_ids",
                 "shutdown_notice", "messages", "active", "paused", "pause_start",
                 "no_pause_until", "announced", "__weakref__")

    def __init__(self, serial: int, primary: bool):
        self.ws: Any = None
        self.serial = serial
        self.opened = time.monotonic()
        self.primary = primary
        self.buffer: list[Trade] = []  # a secondary's trades, held until handover
        self.task: asyncio.Task | None = None
        self.start_ids: dict[str, int | None] = {}
        self.shutdown_notice = False
        self.messages = 0
        self.active = True  # False once closing: late frames are ignored
        self.paused = False  # reading paused while the writer catches up
        self.pause_start = 0.0  # loop time the current pause began
        self.no_pause_until = 0.0  # after a pause timed out: no new pause before this
        self.announced = False  # "live" was announced for this connection


class _Command:
    """A call the writer thread runs with its store (gap records, id queries,
    backfilled trades), in FIFO order with other commands."""

    __slots__ = ("fn", "loop", "future")

    def __init__(self, fn: Callable[[Any], Any], loop: asyncio.AbstractEventLoop | None,
                 future: Any):
        self.fn = fn
        self.loop = loop
        self.future = future


_MISSING = object()
_IDLE_POLL_S = 0.01  # writer poll period when idle: bounds the added latency to 10 ms
_TICK_S = 0.1  # supervisor period: watchdog, rotation, handover checks
_YIELD_S = 0.001  # pause of socket reading while the writer is behind (see _frame_handler)
_MAX_PAUSE_S = 0.25  # longest pause; a writer still behind then is stuck, not busy
_RATE_WINDOW_S = 5.0

_live_ingesters: "weakref.WeakSet[Ingester]" = weakref.WeakSet()
_atexit_registered = False


def _stop_all_at_exit() -> None:  # pragma: no cover - exercised at interpreter exit
    for ing in list(_live_ingesters):
        try:
            ing.stop(timeout=10.0)
        except Exception:
            logger.exception("could not stop %r at exit", ing)


class Ingester:
    """Stores a market's live trades loss-free; see the module docstring.

    Parameters
    ----------
    settings : :class:`IngestSettings`; or give its fields as keywords
        (``Ingester(symbols=("BTCUSDT",), db_path="x.db")``); keywords given
        with ``settings`` override its fields.
    store_factory : ``callable(path) -> store`` opening the writer's store;
        defaults to :class:`quantlab.store.TickStore`. For tests.

    Methods
    -------
    start() : open the store, start the threads; returns self.
    stop(timeout) : close, flush, return the final :class:`IngestStats`.
    wait(timeout) : block until stopped (by :meth:`stop` or a fatal error).
    subscribe(maxlen) : a :class:`Subscription` to stored trades.
    status, stats : frozen snapshots (:class:`IngestStatus`, :class:`IngestStats`).
    status_history() : recent state changes, for display and tests.

    Notes
    -----
    Threads: one daemon thread runs a private asyncio loop (the WebSocket,
    watchdog, rotation and backfill coordination); one daemon writer thread
    owns the only :class:`~quantlab.store.TickStore` of this ingester; REST
    requests run in short-lived daemon threads. Nothing touches the caller's
    event loop, the loop policy or signal handlers, so it works unchanged
    inside Jupyter (no ``nest_asyncio``). An ingester runs once: create a new
    one to start again (it resumes from the store). On a normal interpreter
    exit, running ingesters are stopped (and flushed) by an ``atexit`` hook.

    Examples
    --------
    >>> ing = Ingester(symbols=("BTCUSDT", "ETHUSDT"), db_path="data/live.db")
    >>> ing.status.state
    'stopped'
    """

    def __init__(self, settings: IngestSettings | None = None, *,
                 store_factory: Callable[[str], Any] | None = None, **kwargs: Any):
        if settings is None:
            settings = IngestSettings(**kwargs)
        elif kwargs:
            settings = dataclasses.replace(settings, **kwargs)
        self.settings = settings
        self._endpoints = settings.endpoints
        self._url = settings.stream_url
        self._host = urlsplit(self._url).hostname or self._url
        self._store_factory = store_factory
        self._market = settings.market
        self._kind = settings.stream
        self._rng = random.Random()

        self._thread: threading.Thread | None = None
        # Set when the ingester thread has finished (everything flushed). Waited
        # on instead of Thread.join: on Python 3.11 a join interrupted by a
        # signal handler's exception (Ctrl-C) marks the thread stopped while it
        # still runs (bpo-45274), so a later join would return too early.
        self._done = threading.Event()
        self._writer_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._writer_exit = False
        self._started = False
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._status_lock = threading.Lock()
        self._status = IngestStatus("stopped", _now_ms(), url=self._url)
        self._history: collections.deque[tuple[int, str, str | None]] = collections.deque(maxlen=256)

        # hand-off to the writer
        self._live: collections.deque = collections.deque()
        self._cmds: collections.deque[_Command] = collections.deque()
        self._writer_busy = False  # the writer is inside store.write_trades
        self._markers_put = 0  # gap markers appended to _live (loop thread)
        self._markers_done = 0  # gap markers processed (writer thread)
        self._subs: list[Subscription] = []
        self._subs_lock = threading.Lock()

        # loop-thread state
        self._hwm: dict[str, Any] = {}
        self._drop_open: dict[str, list] = {}  # symbol -> [first_id, last_id, before_ms]
        self._primary: _Conn | None = None
        self._open_conns: set[_Conn] = set()
        self._conn_serial = 0
        self._bg_tasks: set[asyncio.Task] = set()
        self._gap_queue: collections.deque[_Gap] = collections.deque()
        self._gap_wake: asyncio.Event | None = None
        self._kick: asyncio.Event | None = None
        self._pending_gaps = 0
        self._bucket: TokenBucket | None = None
        self._resume: list[_Gap] = []

        # counters (each written by one thread, read by any)
        self._n_msgs = 0
        self._n_trades = 0
        self._n_dup_live = 0
        self._n_dup_store = 0
        self._n_stored = 0
        self._n_backfilled = 0
        self._n_unfillable = 0
        self._n_holes = 0
        self._n_dropped = 0
        self._n_rejected = 0
        self._n_garbage = 0
        self._n_gaps = 0
        self._n_reconnects = 0
        self._n_rotations = 0
        self._overflow = False
        self._lags: collections.deque[int] = collections.deque(maxlen=4096)
        self._rate_samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=512)
        self._last_trade_ms = 0
        self._write_error: str | None = None

    # ------------------------------------------------------------------ public
    def start(self, timeout: float = 30.0) -> "Ingester":
        """Open the store and start ingesting in the background; returns self.

        Waits (at most ``timeout`` s) until the writer has opened the store,
        so a bad path raises here, not silently in a thread. Connecting
        happens in the background: watch :attr:`status`.
        """
        global _atexit_registered
        if self._started:
            raise QuantlabError("this Ingester was already started; create a new one to restart")
        self._started = True
        self._set_state("connecting")
        self._thread = threading.Thread(target=self._thread_main, name="quantlab-ingest",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise IngestStopTimeout(timeout, 0)
        if self._init_error is not None:
            self._done.wait(timeout)
            raise self._init_error
        _live_ingesters.add(self)
        if not _atexit_registered:  # flush on a normal interpreter exit without stop()
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True
        return self

    def stop(self, timeout: float | None = 30.0) -> IngestStats:
        """Close the connection, store every trade received, and stop.

        Blocks until the writer has committed everything that was received
        (and recorded the gaps of anything it had to drop). Gaps being filled
        stay open in the store and are resumed by the next start.

        Returns the final :class:`IngestStats`. Raises
        :class:`IngestStopTimeout` when ``timeout`` seconds pass first (the
        ingester keeps flushing; call ``stop()`` again to wait more).
        """
        thread = self._thread
        if thread is None:
            return self.stats
        self._stopping = True
        loop, ev = self._loop, self._stop_event
        if loop is not None and ev is not None:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop already finished
                pass
        if not self._done.wait(timeout):
            raise IngestStopTimeout(timeout or 0.0, len(self._live))
        _live_ingesters.discard(self)
        return self.stats

    def __enter__(self) -> "Ingester":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the ingester thread runs."""
        return self._thread is not None and not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the ingester has stopped (after :meth:`stop`, or by itself
        on a fatal error) or ``timeout`` seconds pass; True once stopped."""
        if self._thread is None:
            return True
        return self._done.wait(timeout)

    @property
    def status(self) -> IngestStatus:
        """Current :class:`IngestStatus` (a frozen snapshot)."""
        with self._status_lock:
            st = self._status
        return dataclasses.replace(st, overflow=self._overflow, pending_gaps=self._pending_gaps)

    def status_history(self) -> list[tuple[int, str, str | None]]:
        """Recent state changes as ``(ms since epoch, state, error)``, oldest first."""
        with self._status_lock:
            return list(self._history)

    @property
    def stats(self) -> IngestStats:
        """Current :class:`IngestStats` (a frozen snapshot)."""
        lags = np.fromiter(list(self._lags), dtype=np.float64)
        p50, p99 = (np.percentile(lags, [50, 99]) if lags.size else (math.nan, math.nan))
        last_ms = self._last_trade_ms
        return IngestStats(
            messages=self._n_msgs,
            trades_received=self._n_trades,
            trades_stored=self._n_stored,
            duplicates=self._n_dup_live + self._n_dup_store,
            trades_per_s=self._rate(),
            lag_ms_p50=float(p50),
            lag_ms_p99=float(p99),
            reconnects=self._n_reconnects,
            rotations=self._n_rotations,
            gaps_found=self._n_gaps,
            trades_backfilled=self._n_backfilled,
            unfillable=self._n_unfillable,
            holes=self._n_holes,
            dropped=self._n_dropped,
            rejected=self._n_rejected,
            garbage=self._n_garbage,
            queue_depth=len(self._live),
            last_trade_age_s=(_now_ms() - last_ms) / 1000.0 if last_ms else math.nan,
            last_ids={s: getattr(v, "trade_id", None) for s, v in dict(self._hwm).items()},
        )

    def subscribe(self, maxlen: int | None = None) -> Subscription:
        """A new :class:`Subscription` receiving every trade stored from now on.

        ``maxlen`` (default ``settings.subscriber_maxlen``) bounds its ring;
        a consumer that does not :meth:`~Subscription.drain` in time loses the
        oldest trades, counted in :attr:`Subscription.missed`, and never slows
        the ingester.
        """
        sub = Subscription(maxlen or self.settings.subscriber_maxlen, owner=self)
        with self._subs_lock:
            self._subs = self._subs + [sub]  # copy-on-write: the writer iterates without a lock
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            self._subs = [s for s in self._subs if s is not sub]

    def __repr__(self) -> str:
        s = self.settings
        return (f"Ingester({s.market} {s.stream} {','.join(s.symbols)} -> {s.db_path}: "
                f"{self.status})")

    # ------------------------------------------------------------------ status
    def _set_state(self, state: str, error: str | None = None, *, fatal: bool = False) -> None:
        now = _now_ms()
        with self._status_lock:
            old = self._status
            if error is not None:
                err, err_ms = error, now
            else:
                err, err_ms = old.error, old.error_ms
            since = old.since_ms if old.state == state else now
            self._status = IngestStatus(state, since, err, err_ms, False, fatal or old.fatal, 0,
                                        self._url)
            if old.state != state or error is not None:
                self._history.append((now, state, error))
        if error is not None:
            logger.warning("%s: %s", state, error)
        elif old.state != state:
            logger.info("ingester %s", state)

    def _set_error(self, error: str) -> None:
        with self._status_lock:
            st = self._status
        self._set_state(st.state, error)

    def _rate(self) -> float:
        samples = list(self._rate_samples)
        if not samples:
            return 0.0
        now = time.monotonic()
        total = self._n_stored
        base_t, base_n = samples[0]
        for t, n in samples:
            if t <= now - _RATE_WINDOW_S:
                base_t, base_n = t, n
            else:
                break
        dt = now - base_t
        return (total - base_n) / dt if dt > 0 else 0.0

    # ------------------------------------------------------------------ threads
    def _open_store(self) -> Any:
        if self._store_factory is not None:
            return self._store_factory(self.settings.db_path)
        from quantlab.store import TickStore

        Path(self.settings.db_path).parent.mkdir(parents=True, exist_ok=True)
        return TickStore(self.settings.db_path)

    def _thread_main(self) -> None:
        writer_done = threading.Event()
        writer_ready = threading.Event()

        def writer() -> None:
            try:
                self._writer_main(writer_ready)
            finally:
                writer_done.set()

        self._writer_thread = threading.Thread(target=writer, name="quantlab-ingest-writer",
                                               daemon=True)
        self._writer_thread.start()
        writer_ready.wait()
        try:
            if self._init_error is not None:
                self._set_state("stopped", f"cannot open store {self.settings.db_path}: "
                                           f"{self._init_error}", fatal=True)
                return
            self._ready.set()
            try:
                asyncio.run(self._main())
            except BaseException as exc:  # a bug: report it in status rather than vanish
                logger.exception("ingester loop crashed")
                self._set_state("stopped", f"internal error: {exc!r}", fatal=True)
            finally:
                self._writer_exit = True
                writer_done.wait()
                self._set_state("stopped", None)
        finally:
            self._ready.set()
            self._done.set()

    # ------------------------------------------------------------------ writer
    def _writer_main(self, ready: threading.Event) -> None:
        try:
            store = self._open_store()
            self._init_from_store(store)
        except BaseException as exc:
            self._init_error = exc
            ready.set()
            return
        ready.set()
        cmds = self._cmds
        pending: list = []
        first_at = 0.0
        try:
            while True:
                try:
                    pending, first_at, done = self._writer_step(store, pending, first_at)
                except Exception as exc:  # a bug: report it, keep the batch, keep going
                    logger.exception("writer step failed")
                    self._set_error(f"writer error: {exc!r}")
                    time.sleep(0.1)
                    continue
                if done:
                    break
        finally:
            # Commands still queued at exit (e.g. a backfill page) are answered
            # with an error, so no coroutine waits forever.
            while cmds:
                c = cmds.popleft()
                self._deliver(c, None, QuantlabError("ingester stopped"))
            try:
                store.close()
            except Exception:
                logger.exception("closing the store failed")

    def _writer_step(self, store: Any, pending: list, first_at: float) -> tuple[list, float, bool]:
        """One pass of the writer: run commands, top up the batch, write it when
        full or ``batch_max_delay_s`` old, else nap. Returns the new batch state
        and whether the writer is done (stopping and everything written)."""
        s = self.settings
        dq, cmds = self._live, self._cmds
        popleft = dq.popleft
        batch_max, delay = s.batch_max_trades, s.batch_max_delay_s
        while cmds:
            self._run_command(store, cmds.popleft())
        n = len(dq)
        if n:
            take = min(n, batch_max - len(pending))
            if not pending:
                first_at = time.monotonic()
            pending += [popleft() for _ in range(take)]
        exiting = self._writer_exit
        if pending and (len(pending) >= batch_max or exiting
                        or time.monotonic() - first_at >= delay):
            self._write_items(store, pending)
            return [], 0.0, False
        if exiting and not dq and not cmds:
            return pending, first_at, True
        if not dq or pending:
            time.sleep(_IDLE_POLL_S if not pending else
                       min(_IDLE_POLL_S, max(0.0, first_at + delay - time.monotonic())))
        return pending, first_at, False

    def _init_from_store(self, store: Any) -> None:
        """Seed the last id per symbol and the open gaps to resume (writer thread)."""
        s = self.settings
        last_ms: dict[str, int | None] = {}
        try:
            inst = store.instruments()
            for row in inst.to_dict("records"):
                if row["market"] == s.market and row["kind"] == s.stream:
                    last_ms[row["symbol"]] = _opt_int(row.get("last_ms"))
        except Exception:  # only needed to bound USD-M reconciliation in time
            logger.exception("cannot read the instruments registry")
        for sym in s.symbols:
            last = store.last_trade_id(s.market, sym, s.stream)
            # Ids grow with time, so the stream's newest time is that of its last id.
            self._hwm[sym] = None if last is None else _Last(int(last), last_ms.get(sym))
        self._resume = self._open_gaps_from_store(store)

    def _open_gaps_from_store(self, store: Any) -> list[_Gap]:
        """Gaps of our streams still ``open`` in the store (a previous run died or
        stopped before filling them): they are filled again first."""
        s = self.settings
        try:
            frame = store.gaps(market=s.market, kind=s.stream, status="open")
        except Exception:
            logger.exception("cannot read the gaps table; open gaps will not be resumed")
            return []
        out: list[_Gap] = []
        for row in frame.to_dict("records"):
            if row["symbol"] not in s.symbols:
                continue
            out.append(_Gap(row["symbol"], int(row["first_missing_id"]),
                            int(row["last_missing_id"]), "resume", _opt_int(row.get("before_ms")),
                            _opt_int(row.get("after_ms")), gap_id=int(row["gap_id"])))
        if out:
            logger.info("resuming %d open gap(s) from %s", len(out), s.db_path)
        return out

    def _write_items(self, store: Any, items: list) -> None:
        """Write a drained batch; split it at gap markers (rare), which are
        recorded in order with the trades around them."""
        if self._markers_put == self._markers_done:
            self._write_trades(store, items, live=True)
            return
        run: list[Trade] = []
        for item in items:
            if item.__class__ is _Gap:
                if run:
                    self._write_trades(store, run, live=True)
                    run = []
                self._record_gap(store, item)
                self._markers_done += 1
            else:
                run.append(item)
        if run:
            self._write_trades(store, run, live=True)

    def _write_trades(self, store: Any, trades: list[Trade], *, live: bool) -> Any:
        """Store ``trades`` in one transaction (writer thread); never raises.

        A store error (disk full, lock held beyond the busy timeout) keeps the
        batch and retries with a growing pause, reported in the status: the
        queue bound turns a long outage into counted drops and gaps, never into
        silent loss or unbounded memory. A batch the store refuses as invalid
        (:class:`~quantlab.errors.ConfigError`) is retried trade by trade and
        the invalid ones are counted in ``stats.rejected``.
        """
        attempt = 0
        while True:
            try:
                self._writer_busy = True
                try:
                    result = store.write_trades(trades)
                finally:
                    self._writer_busy = False
                break
            except ConfigError as exc:
                if len(trades) == 1:
                    self._n_rejected += 1
                    self._set_error(f"store refused a trade: {exc}: {trades[0]}")
                    return None
                for t in trades:
                    self._write_trades(store, [t], live=live)
                return None
            except Exception as exc:
                attempt += 1
                text = f"cannot write to {self.settings.db_path}: {exc}; retrying"
                if self._write_error != text:
                    self._write_error = text
                    self._set_error(text)
                if self._writer_exit and attempt >= 5:
                    # Stopping and the store still fails: these ids stay
                    # missing; the next start sees them as a gap after the
                    # last stored id and backfills them.
                    self._n_dropped += len(trades)
                    self._set_error(f"{len(trades)} trades not stored at stop: {exc}; the next "
                                    "start backfills them")
                    return None
                time.sleep(min(2.0, 0.05 * 2 ** attempt))
        self._write_error = None
        inserted = int(getattr(result, "inserted", len(trades)))
        self._n_stored += inserted
        self._n_dup_store += int(getattr(result, "duplicates", len(trades) - inserted))
        self._rate_samples.append((time.monotonic(), self._n_stored))
        if live and trades:
            tail = trades[-64:]
            self._lags.extend(t.recv_ms - t.time_ms for t in tail)
            self._last_trade_ms = max(self._last_trade_ms, tail[-1].time_ms)
        for sub in self._subs:
            sub._push(trades)
        return result

    def _record_gap(self, store: Any, gap: _Gap) -> None:
        s = self.settings
        try:
            gap.gap_id = int(store.record_gap(
                s.market, gap.symbol, s.stream, gap.first_id, gap.last_id, reason=gap.reason,
                before_ms=gap.before_ms, after_ms=gap.after_ms))
        except Exception:
            logger.exception("cannot record gap %s; it will still be backfilled", gap)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._enqueue_gap, gap)
            except RuntimeError:  # loop finished: the gap stays open in the store
                pass

    def _run_command(self, store: Any, cmd: _Command) -> None:
        try:
            result, exc = cmd.fn(store), None
        except BaseException as e:
            result, exc = None, e
        self._deliver(cmd, result, exc)

    @staticmethod
    def _deliver(cmd: _Command, result: Any, exc: BaseException | None) -> None:
        fut = cmd.future
        if cmd.loop is None:  # a concurrent.futures.Future
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            return

        def deliver() -> None:
            if not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)

        try:
            cmd.loop.call_soon_threadsafe(deliver)
        except RuntimeError:
            pass

    async def _writer_call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(store)`` on the writer thread; await its result."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._cmds.append(_Command(fn, loop, fut))
        return await fut

    # ------------------------------------------------------------------ loop
    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._gap_wake = asyncio.Event()
        self._kick = asyncio.Event()
        self._bucket = TokenBucket.for_market(self._market, self.settings.rest_weight_share,
                                              time.monotonic())
        if self._stopping:
            self._stop_event.set()
        for gap in self._resume:
            self._enqueue_gap(gap)
        self._resume = []
        backfill = asyncio.create_task(self._backfill_worker(), name="quantlab-backfill")
        conns = asyncio.create_task(self._connection_manager(), name="quantlab-connections")
        stop_wait = asyncio.create_task(self._stop_event.wait())
        await asyncio.wait({conns, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        # The connection manager notices the stop within one tick and closes its
        # connections; cancel it if it is stuck in a handshake.
        done, _ = await asyncio.wait({conns}, timeout=2 * _TICK_S)
        for task in (conns, backfill, stop_wait):
            task.cancel()
        for task in (conns, backfill):
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                logger.exception("task %s failed", task.get_name())
        for c in list(self._open_conns):
            self._close_later(c)
        if self._bg_tasks:  # closing handshakes, bounded by close_timeout_s
            await asyncio.wait(set(self._bg_tasks), timeout=self.settings.close_timeout_s + 0.5)
        self._flush_drop_ranges()

    # -- connections
    def _connect(self, c: _Conn) -> Any:
        """``websockets.asyncio.client.connect`` for connection ``c`` (awaitable)."""
        from websockets.asyncio.client import connect

        s = self.settings
        tap = _tap_connection_class()

        def create_connection(*args: Any, **kwargs: Any) -> Any:
            conn = tap(*args, **kwargs)
            conn.on_frame = self._frame_handler(c, conn)
            return conn

        # compression=None: permessage-deflate costs ~40% and Binance does not
        # need it (BROWSER.md). Pings are answered by websockets as long as this
        # loop is never blocked (BINANCE.md "Connection rules").
        return connect(self._url, compression=None, open_timeout=s.open_timeout_s,
                       ping_interval=s.ping_interval_s, ping_timeout=s.ping_timeout_s,
                       close_timeout=s.close_timeout_s, max_queue=s.ws_max_queue,
                       max_size=2 ** 20, user_agent_header="quantlab-ingest",
                       create_connection=create_connection)

    def _new_conn(self, primary: bool) -> _Conn:
        self._conn_serial += 1
        c = _Conn(self._conn_serial, primary)
        c.start_ids = {sym: getattr(v, "trade_id", None) for sym, v in self._hwm.items()}
        self._open_conns.add(c)
        return c

    async def _connection_manager(self) -> None:
        policy = self.settings.backoff
        attempt = 0
        ever_connected = False
        while not self._stopping:
            self._set_state("connecting" if not ever_connected else "reconnecting")
            c = self._new_conn(primary=True)
            try:
                c.ws = await self._connect(c)
            except Exception as exc:
                self._open_conns.discard(c)
                if not policy.should_retry(exc):
                    self._fatal(f"cannot connect to {self._host}: {_describe(exc)}")
                    return
                delay = max(policy.next_delay(attempt, self._rng), policy.min_delay(exc))
                attempt += 1
                self._set_state("connecting" if not ever_connected else "reconnecting",
                                f"cannot reach {self._host}: {_describe(exc)}; retrying in "
                                f"{_fmt_s(delay)}")
                await self._sleep(delay)
                continue
            if ever_connected:
                self._n_reconnects += 1
            ever_connected = True
            end, opened = await self._serve(c)
            if self._stopping:
                return
            attempt = policy.attempt_after(attempt, time.monotonic() - opened)
            if isinstance(end, BaseException) and not policy.should_retry(end):
                self._fatal(f"connection to {self._host} failed: {_describe(end)}")
                return
            delay = policy.next_delay(attempt, self._rng)
            if isinstance(end, BaseException):
                delay = max(delay, policy.min_delay(end))
            attempt += 1
            text = end if isinstance(end, str) else f"connection lost: {_describe(end)}"
            state = "stale" if isinstance(end, str) and end.startswith("no trade") else "reconnecting"
            self._set_state(state, f"{text}; reconnecting in {_fmt_s(delay)}")
            await self._sleep(delay)

    def _fatal(self, text: str) -> None:
        self._set_state("stopped", f"{text}; stopping (retrying cannot fix this)", fatal=True)
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` s unless stop() is called first."""
        assert self._stop_event is not None
        try:
            await asyncio.wait_for(self._stop_event.wait(), delay)
        except TimeoutError:
            pass

    def _close_later(self, c: _Conn) -> None:
        """Close ``c`` in the background; never wait on a stalled peer here."""
        c.active = False
        if c.task is not None and not c.task.done():
            c.task.cancel()
        self._open_conns.discard(c)
        ws = c.ws
        if ws is None:
            return

        async def close() -> None:
            try:
                await ws.close()
            except Exception:
                pass

        task = asyncio.create_task(close())
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)

    async def _serve(self, c: _Conn) -> tuple[BaseException | str | None, float]:
        """Read primary ``c`` (and rotate it) until it is lost.

        Returns why the last primary ended (an exception, or a text for a
        watchdog decision) and when that connection was opened (monotonic s).
        """
        s = self.settings
        assert self._stop_event is not None
        self._primary = c
        c.task = asyncio.create_task(self._reader(c))
        sec: _Conn | None = None
        next_rotation_try = 0.0
        progress: dict[str, tuple[int | None, float]] = {
            sym: (c.start_ids.get(sym), c.opened) for sym in s.symbols}
        stop_wait = asyncio.create_task(self._stop_event.wait())
        assert self._kick is not None
        kick_wait = asyncio.create_task(self._kick.wait())
        try:
            while True:
                waits = {stop_wait, c.task, kick_wait}
                if sec is not None:
                    waits.add(sec.task)
                await asyncio.wait(waits, timeout=_TICK_S, return_when=asyncio.FIRST_COMPLETED)
                if kick_wait.done():  # serverShutdown: act now, not at the next tick
                    self._kick.clear()
                    kick_wait = asyncio.create_task(self._kick.wait())
                if self._stopping:
                    self._close_later(c)
                    if sec is not None:
                        self._close_later(sec)
                    return None, c.opened
                now = time.monotonic()

                # -- secondary (rotation) lost before the handover: keep the old one
                if sec is not None and sec.task.done():
                    self._set_error(f"rotation: new connection lost before handover: "
                                    f"{_describe(_task_exc(sec.task))}; keeping the old one")
                    self._close_later(sec)
                    sec = None
                    next_rotation_try = now + s.backoff.next_delay(1, self._rng)

                # -- primary lost: promote a live secondary at once, else give up
                if c.task.done():
                    end = _task_exc(c.task)
                    if sec is not None and not sec.task.done():
                        # The new connection (open or still opening) takes over
                        # at once; ids between the two become a gap.
                        self._close_later(c)
                        self._promote(c, sec)
                        c, sec = sec, None
                        progress = {sym: (getattr(self._hwm[sym], "trade_id", None), now)
                                    for sym in s.symbols}
                        continue
                    if sec is not None:
                        self._close_later(sec)
                    self._close_later(c)
                    return end, c.opened

                # -- handover when the old connection caught up with the new one
                if sec is not None:
                    if (self._handover_ready(sec) or now - sec.opened >= s.first_message_timeout_s
                            or len(sec.buffer) >= s.queue_max):
                        if not sec.buffer and sec.messages == 0 and \
                                now - sec.opened >= s.first_message_timeout_s:
                            self._set_error("rotation: new connection sent nothing within "
                                            f"{_fmt_s(s.first_message_timeout_s)}; keeping the old one")
                            self._close_later(sec)
                            sec = None
                            next_rotation_try = now + s.first_message_timeout_s
                        else:
                            old = c
                            self._promote(old, sec)
                            self._close_later(old)
                            c, sec = sec, None
                            progress = {sym: (getattr(self._hwm[sym], "trade_id", None), now)
                                        for sym in s.symbols}
                            continue

                # -- watchdog: first-message deadline and staleness per stream
                for sym in s.symbols:
                    cur = getattr(self._hwm[sym], "trade_id", None)
                    last_id, since = progress[sym]
                    if cur != last_id:
                        progress[sym] = (cur, now)
                        continue
                    stream = binance.stream_name(sym, self._kind)
                    if cur == c.start_ids.get(sym):
                        if now - c.opened >= s.first_message_timeout_s:
                            self._close_later(c)
                            if sec is not None:
                                self._close_later(sec)
                            return (f"no trade on {stream} within {_fmt_s(s.first_message_timeout_s)}"
                                    " of connecting (unknown symbol or wrong route?)"), c.opened
                    elif now - since >= s.stale_after_s:
                        self._close_later(c)
                        if sec is not None:
                            self._close_later(sec)
                        return (f"no trade on {stream} for {_fmt_s(now - since)} "
                                f"(stale_after_s={s.stale_after_s:g})"), c.opened

                # -- rotation: before Binance's 24 h close, or on serverShutdown
                if sec is None and now >= next_rotation_try and (
                        c.shutdown_notice or now - c.opened >= s.max_connection_age_s):
                    sec = self._open_secondary()
        finally:
            stop_wait.cancel()
            kick_wait.cancel()

    def _open_secondary(self) -> _Conn:
        sec = self._new_conn(primary=False)

        async def open_and_read() -> None:
            sec.ws = await self._connect(sec)
            sec.opened = time.monotonic()
            await self._reader(sec)

        # One task both connects and reads, so the supervisor watches one task.
        sec.task = asyncio.create_task(open_and_read())
        return sec

    def _handover_ready(self, sec: _Conn) -> bool:
        """The old connection has delivered every id up to where the new one
        started, for every stream the new one has started on; and the new one
        has started on every stream that has ever had a trade."""
        if sec.ws is None:
            return False
        firsts: dict[str, int] = {}
        for t in sec.buffer:
            if t.symbol not in firsts:
                firsts[t.symbol] = t.trade_id
                if len(firsts) == len(self._hwm):
                    break
        for sym, last in self._hwm.items():
            if last is None:
                continue
            first = firsts.get(sym)
            if first is None or last.trade_id < first - 1:
                return False
        return True

    def _promote(self, old: _Conn, sec: _Conn) -> None:
        """Make ``sec`` the primary: replay its held trades through the normal
        path (ids the old connection already delivered are skipped; a jump
        between the two opens a gap), then let its reader run free."""
        old.primary = False
        buffered, sec.buffer = sec.buffer, []
        for t in buffered:
            self._accept(t, "handover")
        sec.primary = True
        self._primary = sec
        self._n_rotations += 1
        if sec.ws is None:
            self._set_state("reconnecting")
        logger.info("rotated to connection #%d (%d trades held during the overlap)",
                    sec.serial, len(buffered))

    def _on_other(self, c: _Conn, msg: Any) -> None:
        cls = msg.__class__
        if cls is ServerShutdown:
            # "open a new connection at once" (BINANCE.md "Messages"): wake the
            # supervisor, which opens it and hands over without a gap.
            if c.primary:
                c.shutdown_notice = True
                if self._kick is not None:
                    self._kick.set()
                self._set_error(f"server shutdown notice on connection #{c.serial}; "
                                "opening a new connection")
        elif cls is NotTrade:
            self._n_garbage += 1
            if self._n_garbage <= 10 or self._n_garbage % 1000 == 0:
                logger.warning("ignored frame #%d: %s: %.100r", self._n_garbage, msg.reason, msg.raw)
        elif cls is ErrorReply:
            self._set_error(f"stream error {msg.code}: {msg.msg}")
        elif cls is Trade:  # a trade of another symbol or kind than subscribed
            self._n_garbage += 1
        # ControlReply: acknowledgements carry nothing to act on.

    async def _reader(self, c: _Conn) -> None:
        """Wait for connection ``c`` to end and raise why (``ConnectionClosed``).

        Frames are not read here: :class:`_TapConnection` hands each one to
        the handler of :meth:`_frame_handler` as websockets parses it.
        """
        await c.ws.wait_closed()
        raise c.ws.close_exc

    def _frame_handler(self, c: _Conn, conn: Any) -> Callable[[bytes], None]:
        """The hot path for connection ``c``: parse, account for the id, hand off.

        Called by websockets' ``data_received`` for every complete data frame,
        in order. Per trade: one orjson parse (:func:`fast_parse_trade`), a
        dict lookup and a ``deque.append``, about 3 us. It never blocks, so
        websockets answers Binance's pings promptly (BINANCE.md "Connection
        rules"); locals are bound once per connection for speed.
        """
        market = self._market
        hwm = self._hwm
        dq = self._live
        append = dq.append
        qmax = self.settings.queue_max
        fast = fast_parse_trade
        time_ns = time.time_ns
        drop_open = self._drop_open
        pause_at = min(qmax // 2, self.settings.batch_max_trades)
        loop = asyncio.get_running_loop()

        def resume() -> None:
            if not c.active:
                return
            now = loop.time()
            if len(dq) >= pause_at:  # the writer has not taken the waiting batch yet
                if now - c.pause_start < _MAX_PAUSE_S:
                    loop.call_later(_YIELD_S, resume)
                    return
                # The writer is stuck (disk stall), not just busy: read on and
                # let the bounded queue overflow visibly rather than go stale.
                c.no_pause_until = now + 1.0
            c.paused = False
            try:
                conn.transport.resume_reading()
            except Exception:  # transport already closed
                pass

        def on_frame(data: bytes) -> None:
            if not c.active:  # a connection being closed: its frames are not ours any more
                return
            self._n_msgs += 1
            recv_ms = time_ns() // 1_000_000
            msg = fast(data, market, recv_ms)
            if msg is None:
                msg = parse_message(data, market, recv_ms)
                if msg.__class__ is not Trade:
                    c.messages += 1
                    self._on_other(c, msg)
                    return
            self._n_trades += 1
            if not c.primary:
                c.messages += 1
                c.buffer.append(msg)
                return
            if not c.announced:
                c.announced = True
                self._set_state("live")
            # --- inline of _accept(msg, ...) for speed; keep the two in step ---
            sym = msg.symbol
            last = hwm.get(sym, _MISSING)
            if last is None or last is _MISSING:
                if last is _MISSING:  # not a subscribed symbol
                    self._on_other(c, msg)
                    return
            else:
                tid = msg.trade_id
                lid = last.trade_id
                if tid <= lid:
                    self._n_dup_live += 1
                    return
                if tid != lid + 1:
                    self._open_gap(sym, lid + 1, tid - 1, last.time_ms, msg.time_ms,
                                   "reconnect" if lid == c.start_ids.get(sym) else "id_jump")
            hwm[sym] = msg
            depth = len(dq)
            if depth < qmax:
                if sym in drop_open:
                    self._close_drop_range(sym, msg.time_ms)
                append(msg)
                if depth >= pause_at and self._writer_busy and not c.paused \
                        and loop.time() >= c.no_pause_until:
                    # A full batch waits while the writer is still committing
                    # the previous one. The writer needs the GIL back after
                    # every SQLite step, and a thread busy parsing holds it for
                    # a whole switch interval (5 ms) each time: stop reading
                    # the socket until the writer takes the waiting batch
                    # (frames wait in the kernel; the loop stays free). Capped
                    # at _MAX_PAUSE_S, so a stuck disk shows as overflow.
                    c.paused = True
                    c.pause_start = loop.time()
                    conn.transport.pause_reading()
                    loop.call_later(_YIELD_S, resume)
            else:
                self._drop(msg, last)

        def guarded(data: bytes) -> None:
            try:
                on_frame(data)
            except Exception:  # a bug must not kill websockets' data_received
                logger.exception("frame handler failed on %.200r", data)

        return guarded

    def _accept(self, msg: Trade, reason: str) -> None:
        """Slow-path twin of the reader's inline accept (handover replay)."""
        sym = msg.symbol
        last = self._hwm.get(sym, _MISSING)
        if last is _MISSING:
            self._n_garbage += 1
            return
        if last is not None:
            if msg.trade_id <= last.trade_id:
                self._n_dup_live += 1
                return
            if msg.trade_id != last.trade_id + 1:
                self._open_gap(sym, last.trade_id + 1, msg.trade_id - 1, last.time_ms,
                               msg.time_ms, reason)
        self._hwm[sym] = msg
        if len(self._live) < self.settings.queue_max:
            if sym in self._drop_open:
                self._close_drop_range(sym, msg.time_ms)
            self._live.append(msg)
        else:
            self._drop(msg, last)

    # -- overflow: counted, reported, turned into a gap
    def _drop(self, msg: Trade, prev: Any) -> None:
        """The writer queue is full: refuse ``msg`` (``prev`` is the trade
        accepted before it). Its id joins the symbol's open drop range, which
        becomes an ``overflow`` gap once a trade of the symbol is accepted."""
        self._n_dropped += 1
        rng = self._drop_open.get(msg.symbol)
        if rng is None:
            self._drop_open[msg.symbol] = [msg.trade_id, msg.trade_id, getattr(prev, "time_ms", None)]
            if not self._overflow:
                self._overflow = True
                self._set_error(f"writer queue full ({self.settings.queue_max:,} trades): "
                                "dropping trades; their ids are recorded as gaps and backfilled")
        else:
            rng[1] = msg.trade_id

    def _close_drop_range(self, sym: str, after_ms: int | None) -> None:
        first, last, before_ms = self._drop_open.pop(sym)
        if not self._drop_open:
            self._overflow = False
        self._open_gap(sym, first, last, before_ms, after_ms, "overflow")

    def _flush_drop_ranges(self) -> None:
        for sym in list(self._drop_open):
            self._close_drop_range(sym, None)

    def _open_gap(self, sym: str, first: int, last: int, before_ms: int | None,
                  after_ms: int | None, reason: str) -> None:
        """Queue a gap marker in order with the trades: the writer records it
        before it stores the trade that revealed it (crash-safe), then hands
        it to the backfiller."""
        self._n_gaps += 1
        self._pending_gaps += 1
        gap = _Gap(sym, first, last, reason, before_ms, after_ms, detected=time.monotonic())
        logger.info("gap %s %s ids %d..%d (%d) [%s]", self._kind, sym, first, last, gap.size, reason)
        self._markers_put += 1
        self._live.append(gap)  # markers bypass queue_max: at most one per drop range / jump

    # -- backfill
    def _enqueue_gap(self, gap: _Gap) -> None:
        """Loop thread: a recorded gap is ready for REST."""
        if gap.reason == "resume":
            self._pending_gaps += 1
        self._gap_queue.append(gap)
        if self._gap_wake is not None:
            self._gap_wake.set()

    async def _backfill_worker(self) -> None:
        s = self.settings
        assert self._gap_wake is not None
        while True:
            while not self._gap_queue:
                self._gap_wake.clear()
                await self._gap_wake.wait()
            gap = self._gap_queue.popleft()
            if not s.backfill:
                self._pending_gaps -= 1
                continue
            group = [gap]
            if self._market == "usdm" and self._kind == "trade":
                # Holes are frequent and mostly legitimate: wait a little and
                # reconcile all holes of the symbol with one aggTrades query.
                wait = gap.detected + s.hole_settle_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                keep = collections.deque()
                while self._gap_queue:
                    g = self._gap_queue.popleft()
                    (group if g.symbol == gap.symbol else keep).append(g)
                self._gap_queue.extendleft(reversed(keep))
            try:
                await self._fill(group)
            except FatalFeedError as exc:
                self._fatal(str(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, RestError):  # expected (exhausted retries): one line
                    logger.error("backfill of %s ids %d..%d failed: %s", gap.symbol, gap.first_id,
                                 group[-1].last_id, exc)
                else:
                    logger.exception("backfill of %s failed", group)
                self._set_error(f"backfill of {gap.symbol} ids {gap.first_id}..{group[-1].last_id} "
                                f"failed: {_describe(exc)}; left open for the next start")
                for g in group:
                    self._pending_gaps -= 1
                    await self._update_gap(g, 0, 0, 0, f"backfill failed: {_describe(exc)}",
                                           failed=True)
            else:
                self._pending_gaps -= len(group)

    async def _update_gap(self, gap: _Gap, filled: int, unfillable: int, holes: int,
                          note: str | None = None, *, failed: bool = False) -> None:
        """Record a gap's outcome: ``filled`` (every id stored or a hole),
        ``partial`` / ``unfillable`` (some / none of the real trades could be
        had), or left ``open`` with a note when REST failed (resumed next start)."""
        if gap.gap_id is None:
            return
        if failed:
            status = "open"
        elif unfillable == 0:
            status = "filled"
        else:
            status = "partial" if filled else "unfillable"
        gid = gap.gap_id
        try:
            await self._writer_call(lambda st: st.update_gap(
                gid, status=status, filled_count=filled, unfilled_count=unfillable,
                hole_count=holes, note=note))
        except Exception:
            logger.exception("cannot update gap %s", gap)

    async def _stored_ids(self, sym: str, first: int, last: int) -> np.ndarray:
        s = self.settings
        ids = await self._writer_call(lambda st: st.trade_ids(s.market, sym, s.stream,
                                                              start_id=first, end_id=last))
        return np.asarray(ids, dtype=np.int64)

    async def _store_backfill(self, trades: list[Trade]) -> int:
        if not trades:
            return 0
        result = await self._writer_call(lambda st: self._write_trades(st, trades, live=False))
        inserted = int(getattr(result, "inserted", 0))
        self._n_backfilled += inserted
        return inserted

    async def _rest(self, endpoint: str, **params: Any) -> Any:
        """One paced REST GET. Waits for weight; retries 429 after Retry-After,
        418 after a long ban delay, transient errors with backoff; raises
        FatalFeedError on 451 and RestError after ``rest_max_attempts``."""
        s = self.settings
        assert self._bucket is not None
        url = self._endpoints.rest_url(endpoint, **params)
        weight = REST_WEIGHTS[self._market][endpoint]
        policy = s.backoff
        attempt = 0
        while True:
            wait = self._bucket.reserve(weight, time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await _run_in_daemon_thread(_http_get_json, url, s.rest_timeout_s)
            except RestError as exc:
                if not policy.should_retry(exc):
                    raise FatalFeedError(f"Binance refuses REST requests from this location "
                                         f"(HTTP {exc.status} on {url})") from exc
                attempt += 1
                if exc.status in (429, 418):
                    delay = policy.min_delay(exc)
                    self._bucket.block_until(time.monotonic() + delay)
                    self._set_error(f"REST rate limit (HTTP {exc.status}) on {endpoint}: "
                                    f"backfill paused {_fmt_s(delay)}")
                    if attempt > s.rest_max_attempts * 3:
                        raise
                    continue
                if 400 <= exc.status < 500:
                    raise
                if attempt >= s.rest_max_attempts:  # one line saying it gave up, not a traceback
                    raise RestError(exc.status, exc.url, f"{exc.reason}; gave up after {attempt} "
                                    "attempts", exc.retry_after_s) from None
                delay = policy.next_delay(attempt - 1, self._rng)
                self._set_error(f"REST {endpoint} failed: {exc.reason}; retrying in {_fmt_s(delay)}")
                await asyncio.sleep(delay)

    async def _agg_page(self, sym: str, **params: Any) -> list[Trade]:
        rows = await self._rest("aggTrades", symbol=sym, **params)
        recv = _now_ms()
        page = []
        for row in rows or ():
            try:
                page.append(parse_rest_agg_trade(row, self._market, sym, recv))
            except NotATrade as exc:
                logger.warning("bad REST row: %s", exc)
        return page

    async def _fill(self, group: list[_Gap]) -> None:
        if self._market == "usdm" and self._kind == "trade":
            await self._reconcile_futures(group)
            return
        for gap in group:
            await self._fill_by_id(gap)

    async def _fill_by_id(self, gap: _Gap) -> None:
        """Fetch ids first..last by ``fromId`` pages: spot ``historicalTrades``
        for ``@trade``, ``aggTrades`` for ``@aggTrade`` (both markets)."""
        sym = gap.symbol
        endpoint = "historicalTrades" if self._kind == "trade" else "aggTrades"
        parse_row = parse_rest_trade if self._kind == "trade" else parse_rest_agg_trade
        key = "id" if self._kind == "trade" else "a"
        stored = await self._stored_ids(sym, gap.first_id, gap.last_id)
        stored_set = set(stored.tolist())
        filled = unfillable = 0
        from_id = gap.first_id
        limit_max = REST_MAX_LIMIT[endpoint]
        while from_id <= gap.last_id:
            limit = min(limit_max, gap.last_id - from_id + 1)
            rows = await self._rest(endpoint, symbol=sym, fromId=from_id, limit=limit)
            recv = _now_ms()
            page: list[Trade] = []
            top = from_id - 1
            for row in rows or ():
                try:
                    tid = int(row[key])
                except (KeyError, TypeError, ValueError):
                    continue
                if tid < from_id or tid > gap.last_id:
                    continue
                top = max(top, tid)
                if tid in stored_set:
                    continue
                try:
                    page.append(parse_row(row, self._market, sym, recv))
                except NotATrade as exc:
                    logger.warning("bad REST row: %s", exc)
            if top < from_id:  # REST has nothing from here on (too old, or not yet)
                unfillable += gap.last_id - from_id + 1 - int(np.count_nonzero(stored >= from_id))
                break
            filled += await self._store_backfill(page)
            from_id = top + 1
        # ids below the first returned row of a page were skipped by REST
        got = await self._stored_ids(sym, gap.first_id, gap.last_id)
        missing = gap.size - int(got.size)
        unfillable = max(unfillable, missing)
        self._n_unfillable += unfillable
        await self._update_gap(gap, filled, unfillable, 0,
                               None if not unfillable else "REST did not return these ids")
        logger.info("gap %s %d..%d: %d backfilled, %d unfillable", sym, gap.first_id, gap.last_id,
                    filled, unfillable)

    async def _reconcile_futures(self, group: list[_Gap]) -> None:
        """USD-M raw ``@trade``: decide each missing id with aggTrades of the
        gaps' time range (see :func:`reconcile_raw_futures`)."""
        sym = group[0].symbol
        first = min(g.first_id for g in group)
        last = max(g.last_id for g in group)
        befores = [g.before_ms for g in group if g.before_ms is not None]
        afters = [g.after_ms for g in group if g.after_ms is not None]
        stored = await self._stored_ids(sym, first, last)
        missing = np.setdiff1d(np.concatenate(
            [np.arange(g.first_id, g.last_id + 1, dtype=np.int64) for g in group]), stored)
        aggs: list[Trade] = []
        complete = False
        if missing.size and befores and afters:
            start_ms, end_ms = min(befores), max(afters)
            # Every market fill with an id in the gap happened in [start_ms, end_ms]
            # (ids grow with time). Binance: startTime..endTime must span < 1 h;
            # the rest is paged by fromId, which has no time bound.
            window_end = min(end_ms, start_ms + 3_599_999)
            page = await self._agg_page(sym, startTime=start_ms, endTime=window_end, limit=1000)
            aggs.extend(page)
            for _ in range(1000):  # bounded: a million aggregates
                if not page or page[-1].time_ms > end_ms or (page[-1].last_trade_id or 0) >= last:
                    break
                if len(page) < 1000 and window_end >= end_ms:
                    break
                page = await self._agg_page(sym, fromId=page[-1].trade_id + 1, limit=1000)
                aggs.extend(page)
                window_end = end_ms
            # No aggregate at all: either nothing but non-market prints happened
            # (possible for short gaps) or REST no longer has the range (USD-M
            # keeps recent data only, reportedly 48 h). Decide by age.
            complete = bool(aggs) or _now_ms() - end_ms < 24 * 3600 * 1000
        recon = reconcile_raw_futures(missing, aggs, complete=complete, symbol=sym,
                                      recv_ms=_now_ms())
        filled = await self._store_backfill(list(recon.trades))
        self._n_holes += recon.holes
        self._n_unfillable += recon.unfillable
        # Attribute the outcome to each gap of the group (for the gaps table).
        rebuilt = np.array(sorted(t.trade_id for t in recon.trades), dtype=np.int64)

        def within(ids: np.ndarray, g: _Gap) -> int:
            return int(np.count_nonzero((ids >= g.first_id) & (ids <= g.last_id)))

        for g in group:
            await self._update_gap(g, within(rebuilt, g), within(recon.unfillable_ids, g),
                                   within(recon.hole_ids, g),
                                   "unfillable ids lie in multi-fill aggregates"
                                   if within(recon.unfillable_ids, g) else None)
        logger.info("futures %s ids %d..%d: %d missing, %d rebuilt, %d holes, %d unfillable",
                    sym, first, last, missing.size, filled, recon.holes, recon.unfillable)


def _opt_int(v: object) -> int | None:
    try:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _task_exc(task: asyncio.Task) -> BaseException | None:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


def _describe(exc: BaseException | None) -> str:
    """Short human text of a connection error."""
    if exc is None:
        return "closed"
    try:
        from websockets.exceptions import ConnectionClosed, InvalidStatus
    except ImportError:  # pragma: no cover
        ConnectionClosed = InvalidStatus = ()  # type: ignore[assignment]
    if ConnectionClosed and isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is None:
            return "dropped without a close frame (1006)"
        return f"closed by the server ({rcvd.code}{' ' + rcvd.reason if rcvd.reason else ''})"
    if InvalidStatus and isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code} on the WebSocket handshake"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or exc.__class__.__name__
    return text


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s"


# =============================================================================
# Entry points for the CLI and child processes
# =============================================================================
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
