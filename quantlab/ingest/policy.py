"""Values of the ingester's retry and pacing policy: backoff, REST token bucket.

Pure: no I/O, no clock of their own (the caller passes ``now``), testable without
sleeping. Also the short texts the status line uses for errors and durations.
Its errors (:class:`~quantlab.errors.RestError`,
:class:`~quantlab.errors.IngestStopTimeout`) live in :mod:`quantlab.errors` and
are re-exported here.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator

from quantlab.binance import REST_WEIGHT_BUDGET_PER_MIN
from quantlab.config import require_positive
from quantlab.errors import (ConfigError, FatalFeedError,  # noqa: F401 (re-exported)
                             IngestStopTimeout, RestError)

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
# Short texts for the status line
# =============================================================================
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

