"""quantlab.ingest: the loss-free ingester, against the replay server.

Real sockets on port 0, real SQLite files in ``tmp_path``. Every end-to-end test
compares the set of trade ids in the store with the set the server produced:
none missing (except ids inside gaps the store still lists as ``open``, which
the next start resumes), none twice. Waits are on conditions with deadlines
(``wait_until``), never bare sleeps. The policy values (backoff, token bucket,
reconciliation, parsing) are tested pure, without sleeping.
"""
from __future__ import annotations

import http.server
import itertools
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from quantlab.binance import Trade, parse_message
from quantlab.config import settings_from_dict
from quantlab.errors import ConfigError, FatalFeedError
from quantlab.ingest import (
    BackoffPolicy, IngestSettings, Ingester, IngestStats, IngestStatus, IngestStopTimeout, RestError,
    Subscription, TokenBucket, fast_parse_trade, reconcile_raw_futures, run_cli, run_for,
)
from quantlab.replay import Faults, ReplayServer, SyntheticSource
from quantlab.store import StoreError, TickStore
from quantlab.synthetic import default_spec
from tests.util import wait_until

ROOT = Path(__file__).resolve().parent.parent
SYMS = ("BTCUSDT", "ETHUSDT")
BTC_SPOT_FIRST = default_spec("BTCUSDT", "spot").first_trade_id
BTC_USDM_FIRST = default_spec("BTCUSDT", "usdm").first_trade_id

pytestmark = pytest.mark.timeout(60)


# =============================================================================
# helpers
# =============================================================================
@contextmanager
def replay(faults: Faults | None = None, *, market: str = "spot", rate: float = 2000.0,
           seed: int = 3, **model):
    srv = ReplayServer(SyntheticSource(SYMS, market=market, rate=rate, seed=seed, **model),
                       faults=faults or Faults()).start()
    try:
        yield srv
    finally:
        srv.stop()


def settings(srv: ReplayServer, db: Path, **kw) -> IngestSettings:
    """Fast-reacting settings against a replay server (backoff in tens of ms)."""
    values = dict(symbols=SYMS, db_path=db, market=srv.market, ws_base=srv.ws_url,
                  rest_base=srv.rest_url,
                  backoff=BackoffPolicy(initial_s=0.02, max_s=0.2, reset_after_s=5.0),
                  stale_after_s=1.0, first_message_timeout_s=2.0, hole_settle_s=0.2,
                  close_timeout_s=0.5)
    values.update(kw)
    return IngestSettings(**values)


def check_complete(db: Path, srv: ReplayServer, *, market: str = "spot", kind: str = "trade",
                   allow: dict | None = None) -> dict:
    """Every id the server produced between the first and last stored id is stored,
    once; the only exceptions are ids in gaps still ``open`` in the store and the
    ids of ``allow[symbol]``. Returns ``{symbol: stored ids}``."""
    out = {}
    with TickStore(db, read_only=True) as store:
        open_gaps = store.gaps(status="open")
        for sym in SYMS:
            got = store.trade_ids(market, sym, kind)
            assert got.size > 0, f"nothing stored for {sym}"
            assert np.unique(got).size == got.size, "an id stored twice"
            assert store.count(sym, market=market, kind=kind) == got.size
            prod = srv.produced_ids(sym, kind)
            assert np.setdiff1d(got, prod).size == 0, "stored ids the server never produced"
            missing = np.setdiff1d(prod[(prod >= got[0]) & (prod <= got[-1])], got)
            if allow and sym in allow:
                missing = np.setdiff1d(missing, allow[sym])
            mine = open_gaps[open_gaps.symbol == sym]
            covered = np.zeros(missing.size, dtype=bool)
            for first, last in zip(mine.first_missing_id, mine.last_missing_id):
                covered |= (missing >= first) & (missing <= last)
            assert covered.all(), f"{sym}: {int((~covered).sum())} ids missing, e.g. {missing[~covered][:5]}"
            out[sym] = got
    return out


def history_states(ing: Ingester) -> list[str]:
    return [state for _, state, _ in ing.status_history()]


def history_text(ing: Ingester) -> str:
    return "\n".join(f"{state}: {err}" for _, state, err in ing.status_history())


def run_until(ing: Ingester, condition, timeout: float = 20.0, message: str = "condition"):
    try:
        wait_until(condition, timeout=timeout, message=message)
    except AssertionError:
        raise AssertionError(f"{message}; status {ing.status}; stats {ing.stats}\n{history_text(ing)}")
    path = ing.stats.ws_path
    if path:  # the frame path that ran is the one asked for (the ws_path fixture, the env var)
        assert path == expected_ws_path(ing.settings), (path, os.environ.get(WS_ENV))


WS_ENV = "QUANTLAB_WS_FAST_PATH"


def expected_ws_path(s: IngestSettings) -> str:
    return "plain" if os.environ.get(WS_ENV) == "0" or not s.ws_fast_path else "tap"


@pytest.fixture(params=["tap", "plain"])
def ws_path(request, monkeypatch):
    """Run the test on the websockets socket-buffer tap and on the plain
    ``recv()`` path (quantlab.ingest.tap); ``run_until`` checks which ran."""
    if request.param == "plain":
        monkeypatch.setenv(WS_ENV, "0")
    else:
        monkeypatch.delenv(WS_ENV, raising=False)
    return request.param


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# =============================================================================
# pure: retry policy, rate limit, settings, reconciliation, parsing
# =============================================================================
def test_backoff_grows_to_the_cap_and_jitter_stays_in_bounds():
    p = BackoffPolicy(initial_s=0.5, factor=2.0, max_s=30.0, jitter=0.5)
    assert [p.base_delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert p.base_delay(10_000) == 30.0  # no float overflow after a long outage
    rng = random.Random(1)
    for n in range(40):
        d = p.next_delay(n, rng)
        assert p.base_delay(n) * 0.5 <= d <= p.base_delay(n) <= 30.0
    # delays() is the same sequence as next_delay with the same generator state
    a = list(itertools.islice(p.delays(random.Random(7)), 12))
    rng = random.Random(7)
    assert a == [p.next_delay(n, rng) for n in range(12)]
    # jitter really spreads the delays (clients do not reconnect in lock-step)
    spread = {round(p.next_delay(5, random.Random(s)), 6) for s in range(20)}
    assert len(spread) > 10
    assert BackoffPolicy(jitter=0).next_delay(3) == BackoffPolicy(jitter=0).base_delay(3)


def test_backoff_resets_after_a_stable_period():
    p = BackoffPolicy(reset_after_s=60)
    assert p.attempt_after(7, connected_s=59.9) == 7
    assert p.attempt_after(7, connected_s=60.0) == 0
    for bad in (dict(factor=0.5), dict(jitter=1.5), dict(initial_s=0), dict(initial_s=10, max_s=1)):
        with pytest.raises(ConfigError):
            BackoffPolicy(**bad)


def test_should_retry_classifies_fatal_and_transient_errors():
    from websockets.datastructures import Headers
    from websockets.exceptions import ConnectionClosedError, InvalidStatus, InvalidURI
    from websockets.frames import Close
    from websockets.http11 import Response

    p = BackoffPolicy(ban_s=120)
    url = "https://api.binance.com/api/v3/aggTrades"

    def handshake(status: int, **headers) -> InvalidStatus:
        return InvalidStatus(Response(status, "x", Headers(headers), b""))

    fatal = [RestError(451, url, "Unavailable For Legal Reasons"), handshake(451),
             FatalFeedError("banned"), ConfigError("x", 1, "y"), InvalidURI("http://x", "not ws")]
    transient = [RestError(429, url, "Too Many", 3), RestError(418, url, "I'm a teapot"),
                 RestError(503, url, "busy"), RestError(0, url, "Connection refused"),
                 handshake(503), handshake(429), ConnectionRefusedError(), TimeoutError(),
                 ConnectionClosedError(None, None), ConnectionClosedError(Close(1001, "bye"), None),
                 OSError("network unreachable")]
    assert [p.should_retry(e) for e in fatal] == [False] * len(fatal)
    assert [p.should_retry(e) for e in transient] == [True] * len(transient)
    # Retry-After is honoured; 418 (IP ban) waits at least ban_s
    assert p.min_delay(RestError(429, url, "x", 3.0)) == 3.0
    assert p.min_delay(handshake(429, **{"Retry-After": "7"})) == 7.0
    assert p.min_delay(RestError(418, url, "x")) == 120.0
    assert p.min_delay(RestError(418, url, "x", 600.0)) == 600.0
    assert p.min_delay(OSError()) == 0.0


def test_token_bucket_paces_by_weight_and_honours_retry_after():
    b = TokenBucket(capacity=100, refill_per_s=10, now=0.0)
    assert b.reserve(25, now=0.0) == 0.0
    assert b.reserve(75, now=0.0) == 0.0
    assert b.reserve(25, now=0.0) == pytest.approx(2.5)  # 25 weight at 10/s
    assert b.reserve(25, now=0.0) == pytest.approx(5.0)  # queued behind the previous one
    assert b.reserve(1, now=100.0) == 0.0  # refilled (capped at capacity)
    assert b.tokens == pytest.approx(99)
    b.block_until(130.0)  # 429 with Retry-After: 30
    assert b.reserve(1, now=100.0) == pytest.approx(30.0)
    # the defaults spend half of Binance's per-minute budget: spot historicalTrades
    # (weight 25) at 3000/min -> 120 requests at once, then 2 per second
    spot = TokenBucket.for_market("spot", 0.5, now=0.0)
    waits = [spot.reserve(25, now=0.0) for _ in range(122)]
    assert waits[119] == 0.0 and waits[120] == pytest.approx(0.5) and waits[121] == pytest.approx(1.0)


def test_settings_are_frozen_keyword_only_and_validated(tmp_path):
    s = IngestSettings(symbols=["btcusdt", "ETHUSDT"], db_path=tmp_path / "x.db",
                       backoff={"initial_s": 1, "max_s": 5})
    assert s.symbols == ("BTCUSDT", "ETHUSDT") and isinstance(s.backoff, BackoffPolicy)
    assert s.stream_url == "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
    assert s.max_connection_age_s == 23.5 * 3600
    u = IngestSettings(symbols=("BTCUSDT",), db_path="x.db", market="usdm", stream="trade",
                       usdm_trade_route="/public")
    assert u.stream_url == "wss://fstream.binance.com/public/stream?streams=btcusdt@trade"
    with pytest.raises(AttributeError):
        s.market = "usdm"  # type: ignore[misc]
    with pytest.raises(TypeError):
        IngestSettings(("BTCUSDT",), "x.db")  # type: ignore[misc]
    with pytest.raises(ConfigError, match="batch_max_delay_s"):
        IngestSettings(symbols=("BTCUSDT",), db_path="x.db", batch_max_delay_s=0.5)
    with pytest.raises(ConfigError, match="symbols"):
        IngestSettings(symbols=(), db_path="x.db")
    with pytest.raises(ConfigError, match="symbols"):
        IngestSettings(symbols=("BTCUSDT", "btcusdt"), db_path="x.db")
    with pytest.raises(ConfigError, match="symbol"):
        IngestSettings(symbols=("BTC/USDT",), db_path="x.db")
    with pytest.raises(ConfigError, match="market"):
        IngestSettings(symbols=("BTCUSDT",), db_path="x.db", market="coinm")
    with pytest.raises(ConfigError, match="queue_max"):
        IngestSettings(symbols=("BTCUSDT",), db_path="x.db", queue_max=0)
    with pytest.raises(ConfigError, match="stale_after_s, first_message_timeout_s"):
        settings_from_dict(IngestSettings, {"symbols": ("BTCUSDT",), "db_path": "x", "stale_s": 3})


def test_reconcile_futures_ids_with_aggregates():
    def agg(a, f, l, price=10.0, qty=1.0, t=100, m=True):
        return Trade("usdm", "BTCUSDT", "aggTrade", a, price, qty, t, 0, m, 0, None, f, l)

    aggs = [agg(1, 10, 10, 10.5, 0.25, 101, False), agg(2, 11, 13), agg(3, 15, 15, 11.0, 2.0, 103)]
    missing = np.array([10, 12, 14, 15, 16])
    r = reconcile_raw_futures(missing, aggs, complete=True, symbol="BTCUSDT", recv_ms=9)
    assert r.trades == (
        Trade("usdm", "BTCUSDT", "trade", 10, 10.5, 0.25, 101, 9, False, 0, "MARKET"),
        Trade("usdm", "BTCUSDT", "trade", 15, 11.0, 2.0, 103, 9, True, 0, "MARKET"))
    assert r.unfillable_ids.tolist() == [12]  # inside the multi-fill aggregate 11..13
    assert r.hole_ids.tolist() == [14, 16]  # covered by no aggregate: not market fills
    # without the whole time range, uncovered ids cannot be called holes
    r = reconcile_raw_futures(missing, aggs, complete=False, symbol="BTCUSDT", recv_ms=9)
    assert r.hole_ids.size == 0 and r.unfillable_ids.tolist() == [12, 14, 16]
    # archive rows with f = l = -1 carry no ids
    r = reconcile_raw_futures(np.array([5]), [agg(9, -1, -1)], complete=True, symbol="BTCUSDT", recv_ms=0)
    assert r.holes == 1 and r.trades == ()


def _frame(data: dict) -> bytes:
    return json.dumps({"stream": "x@trade", "data": data}, separators=(",", ":")).encode()


def test_fast_parse_equals_parse_message_and_defers_everything_else():
    spot = {"e": "trade", "E": 2, "s": "BTCUSDT", "t": 7, "p": "61837.63000000", "q": "0.02000000",
            "T": 1, "m": True, "M": True}
    usdm = {"e": "trade", "E": 2, "T": 1, "s": "BTCUSDT", "t": 7, "p": "0", "q": "0", "X": "NA", "m": False}
    agg = {"e": "aggTrade", "E": 2, "s": "ETHUSDT", "a": 5, "p": "3000.1", "q": "1.5", "f": 100, "l": 105,
           "T": 1, "m": True}
    for data, market in ((spot, "spot"), (usdm, "usdm"), (agg, "usdm")):
        raw = _frame(data)
        fast = fast_parse_trade(raw, market, 42)
        assert fast == parse_message(raw, market, recv_ms=42)
        assert type(fast) is Trade and hash(fast) == hash(parse_message(raw, market, recv_ms=42))
    # anything unusual is left to parse_message, which explains it
    odd = [b"not json", b"[1,2]", b'{"result":null,"id":1}',
           b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}',
           _frame({**spot, "t": "7"}), _frame({**spot, "s": "btcusdt"}), _frame({**spot, "m": 1}),
           _frame({**spot, "p": "abc"}), _frame({k: v for k, v in spot.items() if k != "T"}),
           _frame({**agg, "f": None}), _frame({**usdm, "X": 3}), json.dumps(spot).encode()]
    assert [fast_parse_trade(r, "spot", 0) for r in odd] == [None] * len(odd)


def test_fast_parse_on_real_captures(shared_data):
    from quantlab.files import iter_capture

    n = 0
    for name, market in (("spot_btcusdt_20240808.gz", "spot"), ("usdm_ethusdt_20240808.gz", "usdm")):
        for recv_ns, raw in itertools.islice(iter_capture(shared_data / "ws-capture-2024-08-08" / name), 20000):
            expected = parse_message(raw, market, recv_ms=recv_ns // 1_000_000)
            fast = fast_parse_trade(raw.encode(), market, recv_ns // 1_000_000)
            if isinstance(expected, Trade):
                assert fast == expected
                n += 1
            else:
                assert fast is None
    assert n > 1000


def test_subscription_ring_counts_what_a_slow_consumer_missed():
    sub = Subscription(maxlen=5)
    ts = [Trade("spot", "BTCUSDT", "trade", i, 1.0, 1.0, i, i, True) for i in range(12)]
    sub._push(ts[:3])
    assert [t.trade_id for t in sub.drain()] == [0, 1, 2] and sub.missed == 0
    sub._push(ts[3:7])
    sub._push(ts[7:12])  # 9 buffered, ring of 5: the 4 oldest are overwritten
    assert [t.trade_id for t in sub.drain()] == [7, 8, 9, 10, 11]
    assert sub.missed == 4 and sub.delivered == 8 and sub.drain() == []


# =============================================================================
# end to end against the replay server
# =============================================================================
@pytest.mark.usefixtures("ws_path")
def test_drop_without_close_frame_repeatedly_loses_nothing(tmp_path):
    with replay(Faults(drop_after_messages=1200)) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db")).start()
        run_until(ing, lambda: ing.stats.reconnects >= 3 and ing.status.pending_gaps == 0
                  and ing.stats.trades_backfilled > 0, message="3 reconnects, gaps filled")
        stats = ing.stop()
        check_complete(tmp_path / "t.db", srv)
    assert "dropped without a close frame (1006)" in history_text(ing)
    assert stats.gaps_found >= 3 and stats.dropped == 0
    with TickStore(tmp_path / "t.db", read_only=True) as store:
        gaps = store.gaps()
    assert set(gaps.reason) == {"reconnect"} and (gaps.status == "filled").sum() >= 3


@pytest.mark.usefixtures("ws_path")
def test_stall_longer_than_stale_after_forces_a_reconnect(tmp_path):
    with replay(Faults(stall_after_messages=1500, stall_s=3.0)) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db", stale_after_s=0.4)).start()
        run_until(ing, lambda: ing.stats.reconnects >= 2 and ing.status.pending_gaps == 0
                  and ing.stats.trades_backfilled > 0, message="2 stale reconnects, gaps filled")
        ing.stop()
        check_complete(tmp_path / "t.db", srv)
    assert "stale" in history_states(ing)
    assert "stale_after_s=0.4" in history_text(ing)


@pytest.mark.usefixtures("ws_path")
def test_garbage_frames_are_counted_and_ignored(tmp_path):
    with replay(Faults(garbage_every_messages=200)) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db")).start()
        run_until(ing, lambda: ing.stats.garbage >= 9 and ing.stats.trades_stored >= 2000,
                  message="garbage received")
        stats = ing.stop()
        check_complete(tmp_path / "t.db", srv)
    assert stats.reconnects == 0 and stats.gaps_found == 0  # garbage is not a reason to reconnect


@pytest.mark.usefixtures("ws_path")
def test_id_gap_is_filled_from_rest_through_a_429(tmp_path):
    lo, hi = BTC_SPOT_FIRST + 1500, BTC_SPOT_FIRST + 1899
    with replay(Faults(skip_ids=(lo, hi), skip_symbol="BTCUSDT", rest_429_count=1, retry_after_s=1)) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db")).start()
        run_until(ing, lambda: ing.stats.trades_backfilled >= 400 and ing.status.pending_gaps == 0,
                  message="the skipped ids backfilled")
        stats = ing.stop()
        ids = check_complete(tmp_path / "t.db", srv)
        assert srv.stats.rest_throttled == 1
        ticks = TickStore(tmp_path / "t.db", read_only=True).ticks("BTCUSDT", market="spot", kind="trade")
    assert np.isin(np.arange(lo, hi + 1), ids["BTCUSDT"]).all()
    assert stats.trades_backfilled == 400 and stats.gaps_found == 1
    assert "REST rate limit (HTTP 429)" in history_text(ing)
    with TickStore(tmp_path / "t.db", read_only=True) as store:
        gap = store.gaps().iloc[0]
    assert (gap.first_missing_id, gap.last_missing_id, gap.reason, gap.status, gap.filled_count) == \
        (lo, hi, "id_jump", "filled", 400)
    # the backfilled rows are the trades the server produced, exactly
    tape = srv.produced("BTCUSDT").set_index("trade_id").loc[lo:hi]
    got = ticks.set_index("trade_id").loc[lo:hi]
    assert np.array_equal(got.price, tape.price) and np.array_equal(got.qty, tape.qty)
    assert np.array_equal(got.time_ms, tape.time_ms)
    assert np.array_equal(got.is_buyer_maker, tape.is_buyer_maker)


@pytest.mark.usefixtures("ws_path")
def test_server_shutdown_rotates_with_overlap_no_gap_no_duplicate(tmp_path):
    with replay(Faults(shutdown_after_messages=1500, shutdown_grace_s=1.0)) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db")).start()
        run_until(ing, lambda: ing.stats.rotations >= 2, message="2 rotations")
        stats = ing.stop()
        check_complete(tmp_path / "t.db", srv)
        assert srv.stats.shutdown_notices >= 2
    assert stats.gaps_found == 0 and stats.reconnects == 0
    assert stats.duplicates > 0  # the overlap delivered ids twice; stored once
    assert "server shutdown notice" in history_text(ing)


@pytest.mark.usefixtures("ws_path")
def test_connection_lifetime_close_1001_reconnects_and_backfills(tmp_path):
    with replay(Faults(lifetime_s=0.8)) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db")).start()
        run_until(ing, lambda: ing.stats.reconnects >= 2 and ing.status.pending_gaps == 0,
                  message="2 reconnects after 1001")
        ing.stop()
        check_complete(tmp_path / "t.db", srv)
    assert "closed by the server (1001 connection lifetime reached)" in history_text(ing)


@pytest.mark.usefixtures("ws_path")
def test_own_rotation_before_max_age_overlaps_without_loss_or_duplicates(tmp_path):
    with replay() as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db", max_connection_age_s=0.6)).start()
        run_until(ing, lambda: ing.stats.rotations >= 3, message="3 rotations")
        stats = ing.stop()
        check_complete(tmp_path / "t.db", srv)
    assert stats.gaps_found == 0 and stats.reconnects == 0
    assert stats.trades_stored == stats.trades_received - stats.duplicates


@pytest.mark.usefixtures("ws_path")
def test_usdm_agg_trade_stream_reconnects_and_fills_by_agg_id(tmp_path):
    with replay(Faults(drop_after_messages=800), market="usdm", rate=3000.0) as srv:
        ing = Ingester(settings(srv, tmp_path / "a.db", market="usdm", stream="aggTrade")).start()
        assert ing.settings.stream_url.startswith(srv.ws_url + "/market/stream?streams=")
        run_until(ing, lambda: ing.stats.reconnects >= 2 and ing.status.pending_gaps == 0
                  and ing.stats.trades_backfilled > 0, message="aggTrade gaps filled")
        stats = ing.stop()
        check_complete(tmp_path / "a.db", srv, market="usdm", kind="aggTrade")
    assert stats.unfillable == 0 and stats.holes == 0  # aggregate ids are contiguous
    with TickStore(tmp_path / "a.db", read_only=True) as store:
        ticks = store.ticks("BTCUSDT", market="usdm", kind="aggTrade")
    assert (ticks.first_trade_id <= ticks.last_trade_id).all()


def test_kill_9_mid_stream_leaves_a_clean_db_and_restart_fills_the_hole(tmp_path):
    db = tmp_path / "k.db"
    with replay(rate=3000.0) as srv:
        code = ("from quantlab.ingest import IngestSettings, run_for; "
                f"run_for(IngestSettings(symbols={SYMS!r}, db_path={str(db)!r}, ws_base={srv.ws_url!r}, "
                f"rest_base={srv.rest_url!r}), 60, status_every_s=0.5)")
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            def stored() -> int:
                try:
                    with TickStore(db, read_only=True) as ro:
                        return ro.count()
                except StoreError:  # not created, or not initialised by the child yet
                    return 0
            wait_until(lambda: stored() >= 3000, timeout=30, message="the child stores trades")
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(10) == -signal.SIGKILL
            assert b" live " in child.stdout.read()  # it printed status lines
        finally:
            child.kill()
            child.stdout.close()
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        with TickStore(db, read_only=True) as ro:
            before = {s: ro.last_trade_id("spot", s, "trade") for s in SYMS}
            ro.bars("BTCUSDT", "1s")  # readable
        ing = Ingester(settings(srv, db)).start()
        run_until(ing, lambda: ing.stats.gaps_found >= 2 and ing.status.pending_gaps == 0
                  and ing.stats.trades_backfilled > 0, message="restart gaps filled")
        ing.stop()
        ids = check_complete(db, srv)
    for sym in SYMS:  # the hole across the kill was filled
        assert ids[sym][0] < before[sym] < ids[sym][-1]
    with TickStore(db, read_only=True) as store:
        gaps = store.gaps()
    assert set(gaps.reason) >= {"reconnect"} and set(gaps.status) == {"filled"}


def test_a_reader_process_reads_bars_while_the_writer_runs(tmp_path):
    db = tmp_path / "r.db"
    reader = r"""
import sys, time
from quantlab.store import StoreError, TickStore
db, seconds = sys.argv[1], float(sys.argv[2])
reads = errors = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        with TickStore(db, read_only=True) as st:
            for sym in ("BTCUSDT", "ETHUSDT"):
                st.bars(sym, "1s"); st.bars(sym, "1m"); reads += 1
    except Exception as exc:
        errors += 1
        print(repr(exc), file=sys.stderr)
print(reads, errors)
"""
    with replay(rate=6000.0) as srv:
        ing = Ingester(settings(srv, db, batch_max_delay_s=0.02)).start()
        run_until(ing, lambda: ing.stats.trades_stored > 500, message="first trades")
        proc = subprocess.run([sys.executable, "-c", reader, str(db), "3"], capture_output=True,
                              text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        ing.stop()
    reads, errors = map(int, proc.stdout.split())
    assert errors == 0 and "locked" not in proc.stderr, proc.stderr
    assert reads >= 10


def test_futures_non_market_prints_are_stored_but_never_reach_bars(tmp_path):
    db = tmp_path / "f.db"
    with replay(market="usdm", non_market_fraction=0.05, hole_fraction=0.01) as srv:
        ing = Ingester(settings(srv, db, market="usdm", stream="trade")).start()
        run_until(ing, lambda: ing.stats.trades_stored >= 4000 and ing.stats.holes > 0,
                  message="usdm trades and reconciled holes")
        stats = ing.stop()
        check_complete(db, srv, market="usdm")
    assert stats.unfillable == 0
    with TickStore(db, read_only=True) as store:
        ticks = store.ticks("BTCUSDT", market="usdm", kind="trade")
        bars = store.bars_1s("BTCUSDT", market="usdm", kind="trade")
        gaps = store.gaps()
    assert set(ticks.trade_type) == {"MARKET", "NA", "INSURANCE_FUND", "ADL"}
    na = ticks[ticks.trade_type == "NA"]
    assert len(na) > 0 and (na.price == 0).all() and (na.qty == 0).all()
    market = ticks[(ticks.trade_type == "MARKET") & (ticks.price > 0) & (ticks.qty > 0)]
    assert bars.trade_count.sum() == len(market) < len(ticks)
    assert bars.volume.sum() == pytest.approx(market.qty.sum())
    far = ticks[ticks.trade_type.isin(["INSURANCE_FUND", "ADL"])]
    assert (far.price > bars.high.max()).any() or (far.price < bars.low.min()).any()
    # the raw-id holes were reconciled with aggTrades, not chased: no market fill in them
    resolved = gaps[gaps.status != "open"]
    assert len(resolved) > 0 and (resolved.status == "filled").all()
    assert (resolved.hole_count == resolved.last_missing_id - resolved.first_missing_id + 1).all()


@pytest.mark.usefixtures("ws_path")
def test_futures_gap_is_reconciled_with_aggtrades(tmp_path):
    db = tmp_path / "g.db"
    lo, hi = BTC_USDM_FIRST + 1500, BTC_USDM_FIRST + 1999
    faults = Faults(skip_ids=(lo, hi), skip_symbol="BTCUSDT")
    with replay(faults, market="usdm", non_market_fraction=0.05, hole_fraction=0.0) as srv:
        ing = Ingester(settings(srv, db, market="usdm", stream="trade")).start()
        run_until(ing, lambda: ing.stats.gaps_found >= 1 and ing.status.pending_gaps == 0
                  and ing.stats.trades_backfilled > 0, message="the usdm gap reconciled")
        stats = ing.stop()
        tape = srv.produced("BTCUSDT").set_index("trade_id")
        aggs = srv.produced("BTCUSDT", "aggTrade")
    single = aggs[aggs.first_trade_id == aggs.last_trade_id]
    single = single[(single.first_trade_id >= lo) & (single.first_trade_id <= hi)]
    multi_ids = np.concatenate([np.arange(f, l + 1) for f, l in
                                zip(aggs.first_trade_id, aggs.last_trade_id) if f < l])
    multi_ids = multi_ids[(multi_ids >= lo) & (multi_ids <= hi)]
    non_market = tape.index[(tape.trade_type != "MARKET")]
    non_market = non_market[(non_market >= lo) & (non_market <= hi)]
    assert len(single) > 0 and multi_ids.size > 0 and non_market.size > 0  # all three cases occur
    # what REST can prove is stored exactly; the rest is accounted for, not lost
    ids = check_complete(db, srv, market="usdm",
                         allow={"BTCUSDT": np.concatenate([multi_ids, non_market.to_numpy()])})
    assert np.isin(single.first_trade_id.to_numpy(), ids["BTCUSDT"]).all()
    with TickStore(db, read_only=True) as store:
        got = store.ticks("BTCUSDT", market="usdm", kind="trade").set_index("trade_id")
        gaps = store.gaps()
    rebuilt = got.loc[single.first_trade_id.to_numpy()]
    assert np.array_equal(rebuilt.price, single.price) and np.array_equal(rebuilt.qty, single.qty)
    assert np.array_equal(rebuilt.time_ms, single.time_ms)
    assert (rebuilt.trade_type == "MARKET").all()
    gap = gaps[(gaps.symbol == "BTCUSDT") & (gaps.first_missing_id <= lo) & (gaps.last_missing_id >= hi)].iloc[0]
    assert gap.filled_count == len(single) and gap.unfilled_count == multi_ids.size
    assert gap.hole_count == non_market.size and gap.status == "partial"
    assert stats.unfillable == multi_ids.size


@pytest.mark.usefixtures("ws_path")
def test_stop_flushes_everything_received(tmp_path):
    db = tmp_path / "s.db"
    with replay(rate=6000.0) as srv:
        ing = Ingester(settings(srv, db, batch_max_trades=1_000_000, batch_max_delay_s=0.25)).start()
        run_until(ing, lambda: ing.stats.trades_received >= 3000, message="trades received")
        stats = ing.stop(timeout=10)
    assert not ing.running and ing.status.state == "stopped"
    assert stats.queue_depth == 0 and stats.trades_stored == stats.trades_received
    with TickStore(db, read_only=True) as store:
        assert store.count() == stats.trades_received
    assert ing.stop().trades_stored == stats.trades_stored  # idempotent


def test_status_transitions_and_errors_name_the_host(tmp_path):
    port = free_port()
    ing = Ingester(IngestSettings(symbols=SYMS, db_path=tmp_path / "t.db", ws_base=f"ws://127.0.0.1:{port}",
                                  rest_base=f"http://127.0.0.1:{port}",
                                  backoff=BackoffPolicy(initial_s=0.05, max_s=0.1)))
    assert ing.status.state == "stopped" and isinstance(ing.stats, IngestStats)
    ing.start()
    run_until(ing, lambda: "retrying in" in (ing.status.error or ""), message="a connect error")
    st = ing.status
    assert isinstance(st, IngestStatus) and st.state == "connecting"
    assert st.error.startswith("cannot reach 127.0.0.1: ") and st.since_ms > 0
    srv = ReplayServer(SyntheticSource(SYMS, rate=500.0), port=port).start()
    try:
        run_until(ing, lambda: ing.status.state == "live", message="live once the server is up")
        ing.stop()
    finally:
        srv.stop()
    states = history_states(ing)
    assert states[0] == "connecting" and states[-1] == "stopped" and "live" in states
    assert not ing.status.fatal


@pytest.mark.usefixtures("ws_path")
def test_http_451_is_fatal_and_stops_with_a_clear_status(tmp_path):
    class Refuse(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # websockets wants an HTTP/1.1 status line

        def do_GET(self):
            self.send_response(451)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"ws://127.0.0.1:{server.server_address[1]}"
        ing = Ingester(symbols=SYMS, db_path=tmp_path / "t.db", ws_base=url).start()
        run_until(ing, lambda: not ing.running, message="the ingester gives up")
        st = ing.status
        assert st.state == "stopped" and st.fatal and "HTTP 451" in st.error
        assert "retrying cannot fix" in st.error
        ing.stop()
        # the entry point the CLI calls turns it into an error (exit status 1)
        with open(os.devnull, "w") as devnull, pytest.raises(FatalFeedError, match="451"):
            run_for(IngestSettings(symbols=SYMS, db_path=tmp_path / "u.db", ws_base=url), 30,
                    status_every_s=60, out=devnull)
    finally:
        server.shutdown()


@pytest.mark.usefixtures("ws_path")
def test_subscribers_get_every_stored_trade_and_slow_ones_count_misses(tmp_path):
    with replay(Faults(drop_after_messages=2000)) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db"))
        everything = ing.subscribe(maxlen=1_000_000)
        slow = ing.subscribe(maxlen=100)
        ing.start()
        seen: list[Trade] = []
        run_until(ing, lambda: (seen.extend(everything.drain()) or True) and ing.stats.reconnects >= 1
                  and ing.status.pending_gaps == 0 and ing.stats.trades_backfilled > 0,
                  message="a reconnect and its backfill")
        stats = ing.stop()
        seen.extend(everything.drain())
        ids = check_complete(tmp_path / "t.db", srv)
    for sym in SYMS:  # live and backfilled trades, each once, nothing unstored
        mine = sorted(t.trade_id for t in seen if t.symbol == sym)
        assert np.array_equal(np.array(mine), ids[sym])
    assert everything.missed == 0
    assert slow.missed > 0 and slow.missed + len(slow.drain()) == stats.trades_stored
    slow.close()
    assert slow not in ing._subs


@pytest.mark.usefixtures("ws_path")
def test_overflow_is_counted_reported_and_backfilled(tmp_path):
    class SlowDisk(TickStore):
        """A store whose first writes are slow, as a disk under pressure."""

        def __init__(self, path):
            super().__init__(path)
            self.slow_until = time.monotonic() + 1.0

        def write_trades(self, trades):
            if time.monotonic() < self.slow_until:
                time.sleep(0.2)
            return super().write_trades(trades)

    with replay(rate=3000.0) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db", queue_max=200, batch_max_trades=100),
                       store_factory=SlowDisk)
        ing.start()
        overflow_seen = []
        run_until(ing, lambda: (overflow_seen.append(ing.status.overflow) or True)
                  and ing.stats.dropped > 0 and ing.status.pending_gaps == 0
                  and ing.stats.trades_backfilled >= ing.stats.dropped, message="drops backfilled")
        stats = ing.stop()
        check_complete(tmp_path / "t.db", srv)
    assert any(overflow_seen) and not ing.status.overflow
    assert "writer queue full (200 trades)" in history_text(ing)
    with TickStore(tmp_path / "t.db", read_only=True) as store:
        gaps = store.gaps()
    assert "overflow" in set(gaps.reason) and (gaps.status == "filled").all()
    assert gaps[gaps.reason == "overflow"].filled_count.sum() == stats.dropped


def test_import_starts_nothing():
    code = ("import threading, quantlab.ingest as i, sys; "
            "assert threading.active_count() == 1, threading.enumerate(); "
            "assert 'websockets' not in sys.modules, 'websockets imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_stop_timeout_is_reported_and_stop_can_be_called_again(tmp_path):
    class SlowCommit(TickStore):
        def write_trades(self, trades):
            time.sleep(0.3)
            return super().write_trades(trades)

    with replay(rate=2000.0) as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db"), store_factory=SlowCommit).start()
        run_until(ing, lambda: ing.stats.trades_stored > 0, message="a first commit")
        with pytest.raises(IngestStopTimeout, match="call stop\\(\\) again"):
            ing.stop(timeout=0.01)
        stats = ing.stop(timeout=20)
    assert not ing.running and stats.queue_depth == 0
    with TickStore(tmp_path / "t.db", read_only=True) as store:
        assert store.count() == stats.trades_received == stats.trades_stored


def test_run_cli_ingests_for_a_duration_and_prints_status_lines(tmp_path, capsys):
    from argparse import Namespace

    with replay(rate=500.0) as srv:
        args = Namespace(market="spot", symbols=list(SYMS), stream="trade", db=str(tmp_path / "c.db"),
                         ws_url=srv.ws_url, rest_url=srv.rest_url, stale_after=None, duration=1.5,
                         status_every=0.5)
        assert run_cli(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) >= 3 and out[-1].startswith("final stopped") and "stored" in out[-1]
    with TickStore(tmp_path / "c.db", read_only=True) as store:
        assert store.count() > 0


# =============================================================================
# bulk frame decoding in the connection (raw frames over a real socket)
# =============================================================================
def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked server->client frame with the shortest length encoding."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def test_fast_frame_path_over_a_raw_socket():
    """The connection's own frame loop (quantlab.ingest._tap_connection_class):
    many frames in one TCP chunk, a frame split across chunks (also inside a
    64-bit header), 16- and 64-bit lengths, a ping between data frames
    (answered with its payload), a binary frame and a close frame. The raw
    server runs on the same event loop and writes the next part only after
    the client's ``data_received`` has seen the previous one, so the chunks
    really are separate. Frames the fast path parses arrive as ``bytes``,
    those websockets parses as ``bytearray``: both kinds are checked."""
    import asyncio
    import base64
    import hashlib

    from websockets.asyncio.client import connect

    from quantlab.ingest import _tap_connection_class

    small = [json.dumps({"stream": "btcusdt@trade", "data": {"t": i}}).encode() for i in range(50)]
    mid = b"m" * 300  # 16-bit length
    split = b"s" * 100  # arrives in two chunks
    after = [b"after-split-%d" % i for i in range(3)]
    around_ping = [b"before-ping", b"after-ping"]
    big = bytes(range(256)) * 300  # 76,800 bytes: 64-bit length, header split too
    tail = [b"tail-0", b"tail-1"]
    binary = b"\x00\x01not text"
    last = b"last text"
    f_split = _server_frame(1, split)
    f_big = _server_frame(1, big)
    assert f_big[1] == 127 and _server_frame(1, mid)[1] == 126
    a = b"".join(_server_frame(1, p) for p in small + [mid]) + f_split[:40]
    b = (f_split[40:] + b"".join(_server_frame(1, p) for p in after)
         + _server_frame(1, around_ping[0]) + _server_frame(0x9, b"ping-1")
         + _server_frame(1, around_ping[1]))
    c1, c2 = f_big[:5], f_big[5:] + b"".join(_server_frame(1, p) for p in tail)
    d = (_server_frame(2, binary) + _server_frame(1, last)
         + _server_frame(0x8, (1000).to_bytes(2, "big") + b"bye"))

    async def main() -> tuple:
        got: list = []
        seen = {"bytes": 0}
        progress = asyncio.Event()
        tap = _tap_connection_class()

        class Probe(tap):  # counts what data_received saw, to pace the server
            def data_received(self, data):
                super().data_received(data)
                seen["bytes"] += len(data)
                progress.set()

        async def until(cond) -> None:
            while not cond():
                progress.clear()
                await progress.wait()

        def create_connection(*args, **kwargs):
            conn = Probe(*args, **kwargs)
            conn.on_frame = lambda data: (got.append(data), progress.set())
            return conn

        client_frames: list = []

        async def read_client_frame(reader) -> tuple[int, bytes]:
            h1, h2 = await reader.readexactly(2)
            n = h2 & 0x7F
            if n == 126:
                n = int.from_bytes(await reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await reader.readexactly(8), "big")
            assert h2 & 0x80, "client frames are masked"
            mask = await reader.readexactly(4)
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(await reader.readexactly(n)))
            return h1 & 0x0F, data

        async def handle(reader, writer) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            key = [line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                      .digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            await until(lambda: conn_box)
            sent = seen["bytes"]
            for part in (a, b, c1, c2):
                writer.write(part)
                sent += len(part)
                await until(lambda: seen["bytes"] >= sent)
            client_frames.append(await read_client_frame(reader))  # the pong
            writer.write(d)
            client_frames.append(await read_client_frame(reader))  # the close echo
            writer.close()

        conn_box: list = []
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            ws = await connect(f"ws://127.0.0.1:{port}/stream", compression=None,
                               create_connection=create_connection, ping_interval=None)
            conn_box.append(ws)
            progress.set()
            await asyncio.wait_for(ws.wait_closed(), 10)
        return got, client_frames, ws.close_code, ws.close_reason

    got, client_frames, code, reason = asyncio.run(asyncio.wait_for(main(), 20))
    expected = small + [mid, split] + after + around_ping + [big] + tail + [binary, last]
    assert [bytes(g) for g in got] == expected
    kinds = [type(g) for g in got]
    assert kinds[:51] == [bytes] * 51  # one chunk, 16-bit length included: fast path
    assert kinds[51] is bytearray  # the split frame: completed by websockets
    assert kinds[52:55] == [bytes] * 3  # back on the fast path right after it
    i_big = expected.index(big)
    assert kinds[i_big] is bytearray and kinds[i_big + 1:i_big + 3] == [bytes, bytes]
    assert client_frames == [(0xA, b"ping-1"), (0x8, (1000).to_bytes(2, "big") + b"bye")]
    assert (code, reason) == (1000, "bye")


# =============================================================================
# the websockets fast path, fenced (quantlab.ingest.tap)
# =============================================================================
@pytest.mark.parametrize("how", ["setting", "env"])
def test_the_plain_path_can_be_forced_and_loses_nothing(tmp_path, monkeypatch, how):
    """``IngestSettings(ws_fast_path=False)`` or ``QUANTLAB_WS_FAST_PATH=0``: frames
    come through websockets' recv(), the connection is websockets' own class,
    and a drop still loses nothing. By default (verified websockets) the tap runs."""
    from websockets.asyncio.client import ClientConnection

    from quantlab.ingest.tap import _tap_connection_class

    monkeypatch.delenv(WS_ENV, raising=False)
    with replay(Faults(drop_after_messages=1500)) as srv:
        kw = {}
        if how == "setting":
            kw["ws_fast_path"] = False
        else:
            monkeypatch.setenv(WS_ENV, "0")
        ing = Ingester(settings(srv, tmp_path / "p.db", **kw)).start()
        run_until(ing, lambda: ing.stats.reconnects >= 1 and ing.status.pending_gaps == 0
                  and ing.stats.trades_backfilled > 0, message="a reconnect backfilled")
        conn = ing._primary.ws
        stats = ing.stop()
        check_complete(tmp_path / "p.db", srv)
    assert stats.ws_path == "plain"
    assert type(conn) is ClientConnection and not isinstance(conn, _tap_connection_class())
    monkeypatch.delenv(WS_ENV, raising=False)
    with replay() as srv:
        ing = Ingester(settings(srv, tmp_path / "t.db")).start()
        run_until(ing, lambda: ing.stats.trades_stored > 100, message="trades on the tap")
        conn = ing._primary.ws
        stats = ing.stop()
    assert stats.ws_path == "tap" and isinstance(conn, _tap_connection_class())


def test_fast_path_is_used_only_with_verified_websockets(monkeypatch, caplog):
    """An unverified websockets version turns the tap off (with a warning naming
    why), and the verified range is the one pyproject.toml and environment.yml bound."""
    import tomllib

    import websockets

    from quantlab.ingest.tap import VERIFIED_WEBSOCKETS, fast_path_problem, use_fast_path

    assert fast_path_problem() is None and use_fast_path(True) and not use_fast_path(False)
    monkeypatch.setattr(websockets, "__version__", "99.0")
    assert "99.0 is outside the verified range" in fast_path_problem()
    with caplog.at_level("WARNING", logger="quantlab.ingest"):
        assert not use_fast_path(True)
    assert "fast path off" in caplog.text
    (lo, _), (hi, _) = VERIFIED_WEBSOCKETS
    bound = f"websockets>={lo},<{hi}"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert bound in deps, deps
    assert f"- {bound}" in (ROOT / "environment.yml").read_text()
