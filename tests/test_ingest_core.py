"""quantlab.ingest.core: the pure id accounting, without sockets, threads or a store.

The rules one by one (next id, jump, reconnect, duplicate, overflow, gap
markers taking a queue slot, stop, what is owed to REST, rotation hand-over,
gap outcomes), then a seeded property test over random interleavings of
wire losses, overlaps, reconnects (with and without a stored id), rotations,
a full writer queue and backfills: every id the exchange published from the
first one received is stored exactly once, or recorded in a gap.
"""
from __future__ import annotations

import ast
import collections
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantlab.binance import Trade
from quantlab.ingest.core import (
    DROP, DUPLICATE, FOREIGN, OVERFLOW, STORE, Gap, IdLedger, attribute, gap_status,
    handover_ready,
)

ROOT = Path(__file__).resolve().parent.parent


def tr(sym: str, tid: int) -> Trade:
    """Trade ``tid`` of ``sym``; its exchange time is ``10 * tid`` ms."""
    return Trade("spot", sym, "trade", tid, 100.0, 1.0, 10 * tid, 10 * tid + 1, False, 0, None)


def ledger(*seeds: tuple[str, int | None]) -> IdLedger:
    led = IdLedger([s for s, _ in seeds])
    for sym, last in seeds:
        led.seed(sym, last, None if last is None else 10 * last)
    return led


# =============================================================================
# the rules, one by one
# =============================================================================
def test_first_trade_of_an_empty_stream_opens_nothing_and_the_next_id_is_stored():
    led = ledger(("BTCUSDT", None))
    start = led.connection_opened()
    assert start == {"BTCUSDT": None}
    assert led.trade_received(tr("BTCUSDT", 500), 10, start) == STORE
    assert led.trade_received(tr("BTCUSDT", 501), 10, start) == STORE
    assert led.new_gaps == [] and led.gaps_found == 0 and led.pending == 0
    assert led.last_ids() == {"BTCUSDT": 501}


def test_jump_right_after_connecting_is_a_reconnect_gap_later_an_id_jump():
    led = ledger(("BTCUSDT", 100))
    start = led.connection_opened()
    assert led.trade_received(tr("BTCUSDT", 104), 10, start, now=7.0) == STORE
    (g,) = led.take_gaps()
    assert (g.first_id, g.last_id, g.reason, g.before_ms, g.after_ms, g.detected) == \
        (101, 103, "reconnect", 1000, 1040, 7.0)
    assert led.trade_received(tr("BTCUSDT", 110), 10, start) == STORE
    (g,) = led.take_gaps()
    assert (g.first_id, g.last_id, g.reason, g.size) == (105, 109, "id_jump", 5)
    assert led.trade_received(tr("BTCUSDT", 115), 10, start, reason="handover") == STORE
    assert led.take_gaps()[0].reason == "handover"
    assert led.gaps_found == 3 and led.pending == 3


def test_duplicates_and_foreign_symbols_are_not_stored():
    led = ledger(("BTCUSDT", 100))
    assert led.trade_received(tr("BTCUSDT", 100), 10) == DUPLICATE
    assert led.trade_received(tr("BTCUSDT", 99), 10) == DUPLICATE
    assert led.trade_received(tr("ETHUSDT", 1), 10) == FOREIGN
    assert led.duplicates == 2 and led.new_gaps == [] and led.last_ids() == {"BTCUSDT": 100}


def test_a_full_queue_drops_into_one_range_that_becomes_an_overflow_gap():
    led = ledger(("BTCUSDT", 100), ("ETHUSDT", 7))
    assert led.trade_received(tr("BTCUSDT", 101), 0) == OVERFLOW  # the first drop: report it
    assert led.overflow
    assert led.trade_received(tr("BTCUSDT", 102), 0) == DROP
    assert led.trade_received(tr("ETHUSDT", 8), 0) == DROP  # already overflowing: no new report
    assert led.dropped == 3 and led.new_gaps == []
    assert led.trade_received(tr("BTCUSDT", 103), 5) == STORE
    (g,) = led.take_gaps()
    assert (g.symbol, g.first_id, g.last_id, g.reason, g.before_ms, g.after_ms) == \
        ("BTCUSDT", 101, 102, "overflow", 1000, 1030)
    assert led.overflow  # ETHUSDT's range is still open
    led.connection_closed()  # a lost connection decides nothing
    assert led.new_gaps == [] and led.overflow
    led.connection_closed(final=True)  # stop: the open range is recorded, end unknown
    (g,) = led.take_gaps()
    assert (g.symbol, g.first_id, g.last_id, g.after_ms) == ("ETHUSDT", 8, 8, None)
    assert not led.overflow


def test_gap_markers_take_a_queue_slot_and_come_before_the_overflow_gap():
    led = ledger(("BTCUSDT", 100))
    # one slot left, but the jump's gap marker takes it: the trade is dropped
    assert led.trade_received(tr("BTCUSDT", 105), 1) == OVERFLOW
    assert [(g.first_id, g.last_id, g.reason) for g in led.take_gaps()] == [(101, 104, "id_jump")]
    # room again, and a new jump: the jump's gap first, then the drop range's
    assert led.trade_received(tr("BTCUSDT", 108), 3) == STORE
    assert [(g.first_id, g.last_id, g.reason) for g in led.take_gaps()] == \
        [(106, 107, "id_jump"), (105, 105, "overflow")]


def test_what_is_owed_to_rest_and_grouping_per_stream():
    led = ledger(("BTCUSDT", 100), ("ETHUSDT", 50))
    led.trade_received(tr("BTCUSDT", 103), 10)
    led.trade_received(tr("ETHUSDT", 55), 10)
    led.trade_received(tr("BTCUSDT", 110), 10)
    gaps = led.take_gaps()
    assert led.pending == 3
    resumed = Gap("ETHUSDT", 1, 2, "resume", None, None, gap_id=9)
    for g in gaps + [resumed]:
        led.gap_recorded(g)
    assert led.pending == 4  # a resumed gap was not detected by this ledger: counted now
    first = led.next_gap()
    assert (first.symbol, first.first_id) == ("BTCUSDT", 101)
    group = led.group_with(first)
    assert [(g.symbol, g.first_id) for g in group] == [("BTCUSDT", 101), ("BTCUSDT", 104)]
    assert [(g.symbol, g.first_id) for g in led.owed] == [("ETHUSDT", 51), ("ETHUSDT", 1)]
    led.backfill_returned(group)
    assert led.pending == 2
    led.backfill_returned([led.next_gap()])
    led.backfill_returned([led.next_gap()])
    assert led.pending == 0 and led.next_gap() is None


def test_trades_received_feeds_a_batch_and_fills_the_queue():
    led = ledger(("BTCUSDT", 100))
    out = led.trades_received([tr("BTCUSDT", i) for i in (101, 102, 104, 105, 106)], 4)
    # 101, 102 stored (2 slots), the jump's marker takes the 3rd, 104 the 4th, then full
    assert [v for _, v in out] == [STORE, STORE, STORE, OVERFLOW, DROP]
    assert [(g.first_id, g.reason) for g in led.new_gaps] == [(103, "id_jump")]


def test_handover_waits_until_the_old_connection_caught_up_on_every_stream():
    led = ledger(("BTCUSDT", 100), ("ETHUSDT", 50), ("SOLUSDT", None))
    held = [tr("BTCUSDT", 103), tr("ETHUSDT", 51), tr("BTCUSDT", 104)]
    assert not handover_ready(led.last, held, opened=False)
    assert not handover_ready(led.last, held)  # BTC: old at 100, new starts at 103
    led.trade_received(tr("BTCUSDT", 101), 10)
    assert not handover_ready(led.last, held)
    led.trade_received(tr("BTCUSDT", 102), 10)
    assert handover_ready(led.last, held)  # SOL never had a trade: not waited for
    assert not handover_ready(led.last, held[:1])  # new one has not started on ETH yet


def test_gap_status_and_attribution():
    assert gap_status(5, 0) == "filled" and gap_status(0, 0) == "filled"
    assert gap_status(3, 2) == "partial" and gap_status(0, 2) == "unfillable"
    assert gap_status(5, 0, failed=True) == "open"
    group = [Gap("X", 1, 5, "id_jump", None, None), Gap("X", 10, 12, "id_jump", None, None)]
    assert attribute(group, np.array([1, 2, 11]), np.array([12]), np.array([], dtype=np.int64)) == \
        [(2, 0, 0), (1, 1, 0)]


def test_core_does_no_io():
    """The core imports nothing that does I/O or keeps a clock, and what it
    imports (quantlab.binance) loads neither asyncio, sqlite, urllib.request nor
    websockets. (Importing ``quantlab.ingest.core`` runs the package's
    ``__init__``, which loads the threaded parts, so the check is on the
    core's own imports.)"""
    tree = ast.parse((ROOT / "quantlab" / "ingest" / "core.py").read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mods.add(node.module)
    assert mods <= {"__future__", "collections", "dataclasses", "typing", "numpy",
                    "quantlab.binance"}, mods
    code = ("import sys, quantlab.binance; "
            "bad = {'asyncio', 'sqlite3', 'websockets', 'urllib.request'} "
            "& set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# =============================================================================
# property: random interleavings
# =============================================================================
class Sim:
    """An exchange publishing ids per stream, a wire that loses and repeats
    them, connections that drop and rotate, a bounded writer queue and a REST
    backfiller, all around one :class:`IdLedger`. Records what was stored."""

    def __init__(self, rng: random.Random, symbols: tuple[str, ...], stored_before: dict):
        self.rng = rng
        self.symbols = symbols
        self.led = IdLedger(symbols)
        self.store: collections.Counter = collections.Counter()  # (sym, id) -> times stored
        self.recorded: list[Gap] = []
        self.live: dict[str, list[int]] = {s: [] for s in symbols}
        self.next_id = {}
        for s in symbols:
            last = stored_before.get(s)
            self.led.seed(s, last, None if last is None else 10 * last)
            if last is not None:
                self.store[(s, last)] += 1
            # a store written earlier ends at `last`; the exchange has moved on meanwhile
            self.next_id[s] = (last if last is not None else rng.randrange(1, 10_000)) \
                + 1 + rng.choice([0, 0, rng.randrange(1, 30)])
        self.first_published = dict(self.next_id)
        self.queue: collections.deque = collections.deque()
        self.qmax = rng.choice([3, 8, 50, 10_000])
        self.start = self.led.connection_opened()
        self.held: list[Trade] | None = None  # a rotation's new connection, when open
        self.max_seen = {s: None for s in symbols}
        self.first_fed: dict[str, int] = {}

    def publish(self, sym: str) -> Trade:
        t = tr(sym, self.next_id[sym])
        self.next_id[sym] += 1
        return t

    def feed(self, t: Trade, reason: str | None = None) -> None:
        v = self.led.trade_received(t, self.qmax - len(self.queue), self.start, reason)
        self.queue.extend(self.led.take_gaps())
        if v == STORE:
            self.queue.append(t)
        self.first_fed.setdefault(t.symbol, t.trade_id)
        m = self.max_seen[t.symbol]
        self.max_seen[t.symbol] = t.trade_id if m is None else max(m, t.trade_id)

    def writer(self, n: int) -> None:
        for _ in range(min(n, len(self.queue))):
            item = self.queue.popleft()
            if isinstance(item, Gap):
                self.recorded.append(item)
                self.led.gap_recorded(item)
            else:
                self.store[(item.symbol, item.trade_id)] += 1
                self.live[item.symbol].append(item.trade_id)

    def backfill(self) -> None:
        gap = self.led.next_gap()
        if gap is None:
            return
        group = self.led.group_with(gap) if self.rng.random() < 0.5 else [gap]
        for g in group:
            for i in range(g.first_id, g.last_id + 1):
                if self.store[(g.symbol, i)] == 0:  # the backfiller skips stored ids
                    self.store[(g.symbol, i)] += 1
        self.led.backfill_returned(group)

    def step(self) -> None:
        rng, sym = self.rng, self.rng.choice(self.symbols)
        r = rng.random()
        if r < 0.55:  # the primary delivers the next trade (a secondary holds it too)
            t = self.publish(sym)
            if self.held is not None:
                self.held.append(t)
            self.feed(t)
        elif r < 0.62:  # lost on the primary's wire (a rotation's new connection may have it)
            t = self.publish(sym)
            if self.held is not None and rng.random() < 0.5:
                self.held.append(t)
        elif r < 0.67:  # an overlap: a recent id again
            if self.next_id[sym] > self.first_published[sym]:
                back = rng.randrange(1, 5)
                self.feed(tr(sym, max(self.first_published[sym], self.next_id[sym] - back)))
        elif r < 0.71:  # the connection drops; the next one starts later, or earlier (overlap)
            self.held = None
            self.led.connection_closed()
            for s in self.symbols:
                self.next_id[s] = max(self.first_published[s],
                                      self.next_id[s] + rng.randrange(-3, 20))
            self.start = self.led.connection_opened()
        elif r < 0.74 and self.held is None:  # a rotation starts: a new connection holds trades
            self.held = []
        elif r < 0.78 and self.held is not None:  # the rotation hands over
            if handover_ready(self.led.last, self.held) or rng.random() < 0.3:
                held, self.held = self.held, None
                for t in held:
                    self.feed(t, "handover")
        elif r < 0.90:
            self.writer(rng.randrange(1, 20))
        else:
            self.backfill()

    def finish(self) -> None:
        self.led.connection_closed(final=True)
        self.queue.extend(self.led.take_gaps())
        self.writer(len(self.queue))
        while self.led.owed:
            self.backfill()


@pytest.mark.parametrize("seed", range(6))
def test_every_id_is_stored_once_or_recorded_in_a_gap(seed):
    rng = random.Random(seed)
    cases = 0
    for _ in range(60):
        symbols = ("BTCUSDT", "ETHUSDT")[:rng.choice([1, 2])]
        before = {s: rng.choice([None, rng.randrange(100, 5000)]) for s in symbols}
        sim = Sim(rng, symbols, before)
        for _ in range(rng.randrange(50, 400)):
            sim.step()
            cases += 1
        # before the backfill: every id received or published after the first is
        # stored live or lies in a recorded gap (or is still queued)
        sim.led.connection_closed(final=True)
        sim.queue.extend(sim.led.take_gaps())
        sim.writer(len(sim.queue))
        for s in symbols:
            live = sim.live[s]
            assert live == sorted(set(live)), "a live id stored twice or out of order"
            top = sim.max_seen[s]
            if top is None:
                continue
            low = before[s] + 1 if before[s] is not None else sim.first_fed[s]
            covered = np.zeros(top - low + 1, dtype=bool)
            for g in sim.recorded:
                if g.symbol == s:
                    assert low <= g.first_id <= g.last_id <= top, (g, low, top)
                    covered[g.first_id - low:g.last_id - low + 1] = True
            for i in live:
                if i >= low:
                    covered[i - low] = True
            assert covered.all(), f"ids {np.flatnonzero(~covered)[:10] + low} neither stored nor in a gap"
        sim.finish()
        # after the backfill: every id from the first one up to the last seen, exactly once
        for s in symbols:
            top = sim.max_seen[s]
            if top is None:
                continue
            low = before[s] if before[s] is not None else sim.first_fed[s]
            for i in range(low, top + 1):
                assert sim.store[(s, i)] == 1, (s, i, sim.store[(s, i)])
            assert not any(k[0] == s and k[1] > top for k in sim.store)
        assert sim.led.pending == 0 and not sim.led.overflow and not sim.led.owed
    assert cases > 5000
