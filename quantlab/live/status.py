"""The status figures of a live session (:class:`SessionStatus`): one frozen
value built from the ingester's status and counters and the subscription's
ring, for the monitor's status strip and the terminal's status line. Pure: no
I/O, no threads."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SessionStatus"]


@dataclass(frozen=True, kw_only=True)
class SessionStatus:
    """What a live session is doing now.

    Attributes
    ----------
    running : the session's feed runs (started, not stopped, ingester alive).
    state : the ingester's connection state (``"connecting"``, ``"live"``,
        ``"reconnecting"``, ``"stale"``, ``"stopped"`` ...; see
        :data:`quantlab.ingest.STATES`).
    error : the ingester's last error text, or None.
    fatal : True when the ingester stopped on an error retrying cannot fix.
    trades_per_s : stored trades per second over the last ~5 s.
    lag_ms_p50, lag_ms_p99 : receive time minus exchange time of recent live
        trades, ms (``nan`` before the first).
    last_trade_age_s : now minus the exchange time of the newest stored live
        trade, seconds (``nan`` before the first).
    trades_stored : rows the ingester inserted (live and backfilled).
    reconnects : connections opened after a loss.
    rotations : planned connection hand-overs (Binance closes a connection at 24 h).
    gaps_found : gaps the ingester opened (id jumps, reconnects, overflow).
    trades_backfilled : trades inserted from REST.
    unfillable : missing ids REST could not provide.
    dropped : trades a full writer queue refused (then backfilled).
    missed : trades the subscription ring overwrote before the client drained
        them, over every run of the session (the client was too slow).
    queue_depth : trades waiting for the writer now.
    """

    running: bool
    state: str
    error: str | None = None
    fatal: bool = False
    trades_per_s: float = 0.0
    lag_ms_p50: float = math.nan
    lag_ms_p99: float = math.nan
    last_trade_age_s: float = math.nan
    trades_stored: int = 0
    reconnects: int = 0
    rotations: int = 0
    gaps_found: int = 0
    trades_backfilled: int = 0
    unfillable: int = 0
    dropped: int = 0
    missed: int = 0
    queue_depth: int = 0

    @classmethod
    def from_ingester(cls, ingester: Any, *, running: bool, missed: int = 0) -> "SessionStatus":
        """The figures of ``ingester`` (its ``status`` and ``stats``) plus the
        subscription's ``missed`` count (trades)."""
        st, stats = ingester.status, ingester.stats
        return cls(running=running, state=st.state, error=st.error, fatal=bool(st.fatal),
                   trades_per_s=stats.trades_per_s, lag_ms_p50=stats.lag_ms_p50,
                   lag_ms_p99=stats.lag_ms_p99, last_trade_age_s=stats.last_trade_age_s,
                   trades_stored=stats.trades_stored, reconnects=stats.reconnects,
                   rotations=stats.rotations,
                   gaps_found=stats.gaps_found, trades_backfilled=stats.trades_backfilled,
                   unfillable=stats.unfillable, dropped=stats.dropped, missed=int(missed),
                   queue_depth=stats.queue_depth)

    @property
    def lost(self) -> int:
        """Trades a client did not see live: ``dropped + missed`` (the store
        still gets the dropped ones from REST)."""
        return self.dropped + self.missed

    def as_dict(self) -> dict:
        """Plain JSON-able values (``nan`` as None)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            out[name] = None if isinstance(v, float) and not math.isfinite(v) else v
        return out

    def line(self) -> str:
        """One status line for a terminal, e.g. ``live  stored 1,234 (50/s),
        lag p50 3 ms, gaps 0 (backfilled 0), reconnects 0, rotations 0, dropped 0, queue 0,
        last trade 0.1 s ago``: :meth:`quantlab.ingest.IngestStats.summary`
        of these figures (``dropped`` counts :attr:`lost`)."""
        from quantlab.ingest.settings import IngestStats

        figures = {name: getattr(self, name) for name in IngestStats.__dataclass_fields__
                   if name in self.__dataclass_fields__}
        summary = IngestStats(**{**figures, "dropped": self.lost}).summary()
        age = ("" if math.isnan(self.last_trade_age_s)
               else f", last trade {self.last_trade_age_s:.1f} s ago")
        text = f"{self.state:<12} {summary}{age}"
        if self.error and (self.state != "live" or not self.running):
            text += f" | {self.error}"
        return text
