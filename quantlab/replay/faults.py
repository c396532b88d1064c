"""What can go wrong on purpose (:class:`Faults`: drops, stalls, garbage, gaps, 429,
shutdown notices) and what the server counts (:class:`ReplayStats`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from quantlab.config import settings_from_dict
from quantlab.errors import ConfigError


# =============================================================================
# Faults
# =============================================================================
@dataclass(frozen=True, kw_only=True)
class Faults:
    """Misbehaviour to inject. Message counts are per connection (every new connection
    starts again from 0) and count trade/aggTrade frames only.

    Parameters
    ----------
    drop_after_messages : after this many messages, abort the TCP connection without a
        close frame (the client sees 1006), as during Binance maintenance.
    stall_after_messages, stall_s : after this many messages, send nothing for
        ``stall_s`` seconds while the connection stays open (pings still flow); trades
        of that time are missed, then streaming resumes. Once per connection.
    garbage_every_messages : after every this many messages, send one garbage frame,
        cycling through non-JSON text, a binary frame and an unknown event.
    skip_ids : ``(first, last)`` inclusive: trade ids ``t`` (``@trade``) and aggregate
        ids ``a`` (``@aggTrade``) in this range are never sent on any stream, but REST
        serves them (a gap the client must backfill).
    skip_symbol : limit ``skip_ids`` to this symbol (default: every symbol).
    rest_429_count, retry_after_s : answer the first ``rest_429_count`` REST requests
        with HTTP 429 and ``Retry-After: retry_after_s`` (seconds), then normally.
    shutdown_after_messages, shutdown_grace_s : after this many messages send the
        ``serverShutdown`` event, then close with 1001 ``shutdown_grace_s`` seconds later.
    lifetime_s : close every connection with 1001 after this many seconds (Binance: 24 h).
    max_incoming_per_s : close with 1008 a connection that sends more text messages per
        second than this. Default: the server's limit (``ReplayServer(max_incoming_per_s=)``,
        Binance's 5 spot, 10 futures unless changed).
    """

    drop_after_messages: int | None = None
    stall_after_messages: int | None = None
    stall_s: float = 5.0
    garbage_every_messages: int | None = None
    skip_ids: tuple[int, int] | None = None
    skip_symbol: str | None = None
    rest_429_count: int = 0
    retry_after_s: int = 1
    shutdown_after_messages: int | None = None
    shutdown_grace_s: float = 1.0
    lifetime_s: float | None = None
    max_incoming_per_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("drop_after_messages", "stall_after_messages", "garbage_every_messages",
                     "shutdown_after_messages"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(name, value, "a message count >= 1 or None")
        for name in ("stall_s", "shutdown_grace_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(name, getattr(self, name), "seconds >= 0")
        for name in ("lifetime_s", "max_incoming_per_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(name, value, "a number > 0 or None")
        if not isinstance(self.rest_429_count, int) or self.rest_429_count < 0:
            raise ConfigError("rest_429_count", self.rest_429_count, "an integer >= 0")
        if not isinstance(self.retry_after_s, int) or self.retry_after_s < 0:
            raise ConfigError("retry_after_s", self.retry_after_s, "whole seconds >= 0")
        if self.skip_ids is not None:
            try:
                lo, hi = (int(v) for v in self.skip_ids)
            except (TypeError, ValueError):
                raise ConfigError("skip_ids", self.skip_ids, "(first_id, last_id)") from None
            if lo > hi:
                raise ConfigError("skip_ids", self.skip_ids, "first_id <= last_id")
            object.__setattr__(self, "skip_ids", (lo, hi))
        if self.skip_symbol is not None:
            object.__setattr__(self, "skip_symbol", str(self.skip_symbol).upper())

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Faults":
        """Build from a mapping; unknown keys are rejected with the list of valid ones."""
        return settings_from_dict(cls, values)

    @classmethod
    def from_strings(cls, items: Iterable[str]) -> "Faults":
        """Build from ``key=value`` strings (CLI), e.g. ``["drop_after_messages=100",
        "skip_ids=5,9"]``.

        >>> Faults.from_strings(["stall_after_messages=10", "stall_s=0.5"]).stall_s
        0.5
        """
        values: dict[str, Any] = {}
        for item in items:
            key, sep, text = item.partition("=")
            if not sep:
                raise ConfigError("fault", item, "key=value")
            key = key.strip()
            text = text.strip()
            if key == "skip_ids":
                values[key] = tuple(int(v) for v in text.split(","))
            elif key == "skip_symbol":
                values[key] = text
            elif key in ("stall_s", "shutdown_grace_s", "lifetime_s", "max_incoming_per_s"):
                values[key] = None if text.lower() == "none" else float(text)
            else:
                values[key] = None if text.lower() == "none" else int(text)
        return cls.from_dict(values)


# =============================================================================
# Counters
# =============================================================================
@dataclass
class ReplayStats:
    """Counters of one server (a snapshot when read through :attr:`ReplayServer.stats`).

    Attributes
    ----------
    connections_accepted, connections_open : WebSocket connections (REST not included).
    messages_sent : trade/aggTrade frames written, all connections.
    bytes_sent : bytes of those frames, WebSocket headers included.
    control_replies : replies to SUBSCRIBE & co (errors included).
    rest_requests : REST requests answered (429s included); rest_throttled : 429s sent.
    trades_produced, agg_trades_produced : rows generated (every symbol).
    dropped_by_fault : connections aborted by ``drop_after_messages``.
    slow_clients_dropped : connections aborted because they did not read fast enough.
    garbage_sent, shutdown_notices, lifetime_closes, rate_limit_closes : fault events.
    source_exhausted : a recorded source has sent its last trade.
    """

    connections_accepted: int = 0
    connections_open: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    control_replies: int = 0
    rest_requests: int = 0
    rest_throttled: int = 0
    trades_produced: int = 0
    agg_trades_produced: int = 0
    dropped_by_fault: int = 0
    slow_clients_dropped: int = 0
    garbage_sent: int = 0
    shutdown_notices: int = 0
    lifetime_closes: int = 0
    rate_limit_closes: int = 0
    source_exhausted: bool = False
