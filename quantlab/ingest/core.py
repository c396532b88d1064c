"""The ingester's id accounting: where every gap is decided. Pure, no I/O.

:class:`IdLedger` is a plain object in the Sans-I/O spirit of websockets'
protocol classes: the threaded :class:`~quantlab.ingest.Ingester` feeds it
events and acts on the decisions it returns; it never reads a socket, a clock
or a store itself (times are passed in), so every rule here is tested without
sockets (``tests/test_ingest_core.py``).

Events in
    :meth:`IdLedger.seed` (the last stored id per stream, at start),
    :meth:`IdLedger.connection_opened` (a connection starts: the ids it is
    compared with), :meth:`IdLedger.trade_received` (one live trade, with the
    room left in the writer queue), :meth:`IdLedger.connection_closed`
    (``final=True`` at stop), :meth:`IdLedger.gap_recorded` (the writer put a
    gap in the store: it is owed to REST), :meth:`IdLedger.backfill_returned`
    (REST is done with a group of gaps).

Decisions out
    the verdict of each trade (:data:`STORE`, :data:`DUPLICATE`,
    :data:`DROP`, :data:`OVERFLOW`, :data:`FOREIGN`), the new gaps in
    :attr:`IdLedger.new_gaps` (to be recorded *before* the trade that revealed
    them), the gaps owed to REST (:meth:`IdLedger.next_gap`,
    :meth:`IdLedger.group_with`), a gap's final status (:func:`gap_status`),
    whether a rotation may hand over (:func:`handover_ready`) and what each
    missing USD-M raw id was (:func:`reconcile_raw_futures`).

The rules (BINANCE.md "Connection rules", "Messages")
    * per stream the last accepted id; a trade at or below it is a duplicate
      (a rotation's overlap), a trade above ``last + 1`` opens a gap
      ``last+1 .. id-1``: reason ``reconnect`` when ``last`` is where the
      current connection started, else ``id_jump`` (or the reason given, e.g.
      ``handover`` for a rotation's held trades);
    * a trade that finds no room in the writer queue is dropped; consecutive
      drops of a stream form one range that becomes an ``overflow`` gap when
      the next trade of that stream is accepted (or at stop). Gap markers take
      a queue slot each;
    * the first trade of a stream that has no stored id opens nothing: the
      ingester records from the first trade received.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from quantlab.binance import Trade

__all__ = ["IdLedger", "Gap", "Reconciliation", "reconcile_raw_futures", "handover_ready",
           "gap_status", "attribute", "STORE", "DUPLICATE", "DROP", "OVERFLOW", "FOREIGN"]

#: Verdicts of :meth:`IdLedger.trade_received`.
STORE = 0  #: queue it for the writer
DUPLICATE = 1  #: already accepted (overlap): ignore
DROP = 2  #: no room in the writer queue: not stored, its id is in an open drop range
OVERFLOW = 3  #: as DROP, and the first drop while the queue was not overflowing: report it
FOREIGN = 4  #: not a subscribed stream: ignore (counted as garbage)

_MISSING = object()


@dataclass
class Gap:
    """A range of ids ``first_id..last_id`` of one stream that was not received live."""

    symbol: str
    first_id: int
    last_id: int
    reason: str
    before_ms: int | None  # exchange time of trade first_id - 1, when known
    after_ms: int | None  # exchange time of trade last_id + 1, when known
    gap_id: int | None = None  # set by the writer once recorded in the store
    detected: float = 0.0  # monotonic seconds

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


#: Old private name (quantlab.ingest._Gap).
_Gap = Gap


class _Last:
    """Stand-in for the last accepted Trade when only its id is known (from the store)."""

    __slots__ = ("trade_id", "time_ms")

    def __init__(self, trade_id: int, time_ms: int | None = None):
        self.trade_id = trade_id
        self.time_ms = time_ms


class IdLedger:
    """Last id per stream, gaps, overflow ranges and what is owed to REST.

    Single-threaded: the ingester calls it from its event loop only; other
    threads only read :attr:`last`, :attr:`pending` and the counters (plain
    attribute reads). See the module docstring for the events and rules.

    Attributes
    ----------
    last : symbol -> last accepted trade (or a stand-in with ``trade_id`` and
        ``time_ms``), ``None`` while the stream has none. The hot path of the
        ingester reads and writes it directly for the one case that decides
        nothing (the next id, room in the queue, no drop range open).
    drop_open : symbol -> ``[first_id, last_id, before_ms]`` of the trades
        dropped since the last accepted one; the hot path checks it is empty.
    new_gaps : gaps opened by the last events, oldest first; the caller takes
        them with :meth:`take_gaps` and records them before the trade.
    pending : gaps detected (or resumed) and not yet settled by REST.
    duplicates, dropped, gaps_found : counters since creation.
    """

    def __init__(self, symbols: Sequence[str] = ()):
        self.symbols = tuple(symbols)
        self.last: dict[str, Any] = {}
        self.drop_open: dict[str, list] = {}
        self.new_gaps: list[Gap] = []
        self.owed: collections.deque[Gap] = collections.deque()
        self.pending = 0
        self.duplicates = 0
        self.dropped = 0
        self.gaps_found = 0

    # ------------------------------------------------------------------ events
    def seed(self, symbol: str, last_id: int | None, last_ms: int | None = None) -> None:
        """The store's last id of ``symbol`` (``None``: nothing stored yet)."""
        self.last[symbol] = None if last_id is None else _Last(int(last_id), last_ms)

    def connection_opened(self) -> dict[str, int | None]:
        """A connection starts: the last id per stream it will be compared with
        (pass it to :meth:`trade_received` as ``start_ids``)."""
        return {sym: getattr(v, "trade_id", None) for sym, v in self.last.items()}

    def trade_received(self, t: Trade, queue_free: int, start_ids: Mapping[str, Any] | None = None,
                       reason: str | None = None, now: float = 0.0) -> int:
        """Account for live trade ``t``; return its verdict.

        Parameters
        ----------
        t : the trade (its ``symbol``, ``trade_id``, ``time_ms`` are used).
        queue_free : slots left in the writer queue before this trade (a gap
            marker takes one).
        start_ids : :meth:`connection_opened` of the connection ``t`` came on;
            an id jump right after it is a ``reconnect`` gap.
        reason : the reason of a gap this trade opens, overriding
            ``reconnect``/``id_jump`` (``"handover"``).
        now : monotonic seconds, stamped on new gaps (``Gap.detected``).
        """
        sym = t.symbol
        last = self.last.get(sym, _MISSING)
        if last is _MISSING:
            return FOREIGN
        if last is not None:
            tid = t.trade_id
            lid = last.trade_id
            if tid <= lid:
                self.duplicates += 1
                return DUPLICATE
            if tid != lid + 1:
                if reason is None:
                    reason = ("reconnect" if start_ids is not None and lid == start_ids.get(sym)
                              else "id_jump")
                self._open(sym, lid + 1, tid - 1, last.time_ms, t.time_ms, reason, now)
                queue_free -= 1
        self.last[sym] = t
        if queue_free > 0:
            if sym in self.drop_open:
                self._close_drop_range(sym, t.time_ms, now)
            return STORE
        return self._drop(t, last)

    def trades_received(self, trades: Sequence[Trade], queue_free: int,
                        start_ids: Mapping[str, Any] | None = None, reason: str | None = None,
                        now: float = 0.0) -> list[tuple[Trade, int]]:
        """:meth:`trade_received` for each trade in order; the queue fills by
        one per stored trade and gap marker. Returns ``(trade, verdict)`` pairs;
        the gaps are in :attr:`new_gaps` (their order relative to the trades is
        lost: callers that need it use :meth:`trade_received`)."""
        out = []
        for t in trades:
            before = len(self.new_gaps)
            v = self.trade_received(t, queue_free, start_ids, reason, now)
            queue_free -= (len(self.new_gaps) - before) + (v == STORE)
            out.append((t, v))
        return out

    def connection_closed(self, *, final: bool = False, now: float = 0.0) -> None:
        """A connection ended. A lost connection decides nothing by itself (the
        first id of the next one does); at the final close (stop) the open drop
        ranges become ``overflow`` gaps with an unknown end time."""
        if final:
            for sym in list(self.drop_open):
                self._close_drop_range(sym, None, now)

    def gap_recorded(self, gap: Gap) -> None:
        """The writer recorded ``gap`` in the store: it is owed to REST. A gap
        resumed from a previous run (reason ``resume``) is counted pending now."""
        if gap.reason == "resume":
            self.pending += 1
        self.owed.append(gap)

    def next_gap(self) -> Gap | None:
        """The oldest gap owed to REST, taken off the queue; ``None`` if none."""
        return self.owed.popleft() if self.owed else None

    def group_with(self, gap: Gap) -> list[Gap]:
        """``gap`` and every other owed gap of its stream, taken off the queue
        (USD-M raw holes are reconciled with one aggTrades query)."""
        group = [gap]
        keep: collections.deque[Gap] = collections.deque()
        while self.owed:
            g = self.owed.popleft()
            (group if g.symbol == gap.symbol else keep).append(g)
        self.owed.extendleft(reversed(keep))
        return group

    def backfill_returned(self, group: Sequence[Gap]) -> None:
        """REST is done with ``group`` (filled, unfillable, failed or skipped):
        no longer pending. Its outcome per gap is :func:`gap_status`."""
        self.pending -= len(group)

    # ------------------------------------------------------------------ queries
    @property
    def overflow(self) -> bool:
        """Trades are being dropped (some drop range is open)."""
        return bool(self.drop_open)

    def take_gaps(self) -> list[Gap]:
        """The gaps opened since the last call, oldest first."""
        out, self.new_gaps = self.new_gaps, []
        return out

    def last_ids(self) -> dict[str, int | None]:
        return {s: getattr(v, "trade_id", None) for s, v in dict(self.last).items()}

    # ------------------------------------------------------------------ rules
    def _open(self, sym: str, first: int, last: int, before_ms: int | None,
              after_ms: int | None, reason: str, now: float) -> None:
        self.gaps_found += 1
        self.pending += 1
        self.new_gaps.append(Gap(sym, first, last, reason, before_ms, after_ms, detected=now))

    def _drop(self, t: Trade, prev: Any) -> int:
        self.dropped += 1
        rng = self.drop_open.get(t.symbol)
        if rng is None:
            began = not self.drop_open
            self.drop_open[t.symbol] = [t.trade_id, t.trade_id, getattr(prev, "time_ms", None)]
            return OVERFLOW if began else DROP
        rng[1] = t.trade_id
        return DROP

    def _close_drop_range(self, sym: str, after_ms: int | None, now: float) -> None:
        first, last, before_ms = self.drop_open.pop(sym)
        self._open(sym, first, last, before_ms, after_ms, "overflow", now)


# =============================================================================
# Rotation hand-over
# =============================================================================
def handover_ready(last: Mapping[str, Any], held: Sequence[Trade], opened: bool = True) -> bool:
    """May a rotation hand over from the old connection to the new one?

    True when the old connection has delivered every id up to where the new
    one started (``held``: the new one's trades, held until then), for every
    stream, and the new one has started on every stream that has ever had a
    trade. ``last`` is :attr:`IdLedger.last`; ``opened``: the new connection's
    handshake is done.
    """
    if not opened:
        return False
    firsts: dict[str, int] = {}
    for t in held:
        if t.symbol not in firsts:
            firsts[t.symbol] = t.trade_id
            if len(firsts) == len(last):
                break
    for sym, prev in last.items():
        if prev is None:
            continue
        first = firsts.get(sym)
        if first is None or prev.trade_id < first - 1:
            return False
    return True


# =============================================================================
# Backfill outcomes
# =============================================================================
def gap_status(filled: int, unfillable: int, *, failed: bool = False) -> str:
    """A gap's status once REST is done with it: ``filled`` (every id stored or
    a hole), ``partial`` / ``unfillable`` (some / none of the real trades could
    be had), ``open`` when REST failed (resumed by the next start)."""
    if failed:
        return "open"
    if unfillable == 0:
        return "filled"
    return "partial" if filled else "unfillable"


def attribute(group: Sequence[Gap], *ids: np.ndarray) -> list[tuple[int, ...]]:
    """For each gap of ``group``, how many of each id array lie in it."""
    return [tuple(int(np.count_nonzero((a >= g.first_id) & (a <= g.last_id))) for a in ids)
            for g in group]


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
