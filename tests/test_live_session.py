"""A live session outside the UI (issue 14): :class:`quantlab.live.LiveSession`
owns the feed (source, ingester, subscription, store reads, alert log) and
``quantlab/ui`` opens no store itself.

Real parts only: the replay server on 127.0.0.1 port 0, the ingester, SQLite
files in tmp_path. Every wait is a condition with a deadline.
"""
from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantlab.errors import ConfigError, QuantlabError
from quantlab.live import LiveSession, SessionSettings, SessionStatus
from quantlab.store import TickStore
from tests.conftest import ROOT
from tests.util import wait_until

PAIR = (("ETHUSDT", "BTCUSDT"),)

# -- the UI opens no store ------------------------------------------------------------------
#: names whose use in quantlab/ui would mean the UI runs (part of) the feed itself
FEED_NAMES = {"TickStore", "Ingester", "IngestSettings", "ReplayServer", "SyntheticSource",
              "RecordedSource", "make_source", "make_sources", "Subscription"}
FEED_MODULES = ("quantlab.store", "quantlab.ingest", "quantlab.replay", "sqlite3")


def _feed_uses(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line name`` of every import of a feed module and every use of a
    feed name (docstrings and comments do not count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(root)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.startswith(FEED_MODULES) or any(a.name in FEED_NAMES for a in node.names):
                out.append(f"{rel}:{node.lineno} from {mod} import ...")
        elif isinstance(node, ast.Import):
            out += [f"{rel}:{node.lineno} import {a.name}" for a in node.names
                    if a.name.startswith(FEED_MODULES)]
        elif isinstance(node, ast.Name) and node.id in FEED_NAMES:
            out.append(f"{rel}:{node.lineno} {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in FEED_NAMES:
            out.append(f"{rel}:{node.lineno} .{node.attr}")
    return out


def test_the_ui_opens_no_store_and_runs_no_feed():
    files = sorted((ROOT / "quantlab" / "ui").rglob("*.py"))
    assert len(files) >= 5, files
    uses = [u for f in files for u in _feed_uses(f)]
    assert not uses, ("quantlab/ui must read the feed through quantlab.live.LiveSession: "
                      + "; ".join(uses))
    assert "from quantlab.live import" in (ROOT / "quantlab" / "ui" / "monitor.py").read_text()


def test_the_checker_sees_imports_names_and_attributes(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text("import quantlab.ingest\nfrom quantlab.store import TickStore\n"
                   "x = quantlab.replay.ReplayServer\n'''TickStore in a docstring'''\n")
    uses = _feed_uses(bad, tmp_path)
    assert [u.split(" ", 1)[1] for u in uses] == [
        "import quantlab.ingest", "from quantlab.store import ...", ".ReplayServer"], uses


# -- settings -------------------------------------------------------------------------------
def test_settings_validate_and_list_symbols_once():
    s = SessionSettings(pairs=(("ETHUSDT", "BTCUSDT"), ("SOLUSDT", "ETHUSDT")))
    assert s.symbols == ("ETHUSDT", "BTCUSDT", "SOLUSDT")
    for bad in (dict(source="binance"), dict(market="coinm"), dict(pairs=()),
                dict(rate=-1.0), dict(source="capture")):
        with pytest.raises(ConfigError):
            SessionSettings(**bad)
    assert SessionStatus(running=False, state="stopped", dropped=2, missed=3).lost == 5


# -- a session on the synthetic replay ------------------------------------------------------
def _threads() -> set[int]:
    return {t.ident for t in threading.enumerate()}


def _stored(db: Path, symbol: str) -> np.ndarray:
    with TickStore(db, read_only=True) as store:
        return np.sort(store.ticks(symbol)["trade_id"].to_numpy())


def test_session_streams_stores_drains_and_stops_every_thread(tmp_path):
    db = tmp_path / "live.db"
    before = _threads()
    session = LiveSession(SessionSettings(source="replay", pairs=PAIR, db_path=str(db),
                                          rate=400.0, seed=1))
    assert session.status() is None and session.drain() == []
    session.start()
    drained: list = []
    try:
        assert session.running and session.replay is not None
        assert session.replay.ws_url.startswith("ws://127.0.0.1:")
        wait_until(lambda: drained.extend(session.drain()) or len(drained) >= 400, timeout=20,
                   message="400 stored trades drained")
        st = session.status()
        assert st.running and st.state == "live" and st.trades_stored >= len(drained)
    finally:
        session.stop()
    drained += session.drain()  # what the ingester flushed at stop
    assert session.replay is None and not session.running
    final = session.status()
    assert final.state == "stopped" and final.lost == 0 and final.trades_stored == len(drained)
    assert "stopped" in final.line() and "dropped 0" in final.line()
    # every drained trade is in the store, once; every stored trade was drained
    for sym in ("ETHUSDT", "BTCUSDT"):
        ids = np.sort(np.array([t.trade_id for t in drained if t.symbol == sym]))
        assert ids.size > 50 and np.array_equal(ids, _stored(db, sym)), sym
    # the history a client reads equals the store's bars, and the drained trades' bars
    t_lo = min(t.time_ms for t in drained) // 1000 * 1000
    t_hi = max(t.time_ms for t in drained) // 1000 * 1000 + 1000
    by, bx = session.pair_bars("ETHUSDT", "BTCUSDT", "1s", t_lo, t_hi)
    with TickStore(db, read_only=True) as store:
        pd.testing.assert_frame_equal(by, store.bars("ETHUSDT", "1s", start_ms=t_lo, end_ms=t_hi))
    eth = [t for t in drained if t.symbol == "ETHUSDT"]
    per_s = pd.Series(1, index=[t.time_ms // 1000 * 1000 for t in eth]).groupby(level=0).sum()
    counts = by["trade_count"]
    counts = counts[counts > 0]
    assert np.array_equal(counts.index.as_unit("ms").asi8, per_s.index.to_numpy())
    assert np.array_equal(counts.to_numpy(), per_s.to_numpy())
    assert int(bx["trade_count"].sum()) == sum(t.symbol == "BTCUSDT" for t in drained)
    session.close()
    wait_until(lambda: _threads() <= before, timeout=10, message="every session thread ended")
    leftover = [t.name for t in threading.enumerate() if t.ident not in before]
    assert not leftover, leftover


def test_a_restarted_session_continues_the_stored_ids(tmp_path):
    db = tmp_path / "live.db"
    session = LiveSession(SessionSettings(source="replay", pairs=PAIR, db_path=str(db), rate=300.0))
    for run in range(2):
        session.start()
        try:
            n0 = session.status().trades_stored
            wait_until(lambda: session.status().trades_stored >= n0 + 100, timeout=20,
                       message=f"trades stored in run {run + 1}")
        finally:
            session.stop()
            session.close()
    assert session.starts == 2
    for sym in ("ETHUSDT", "BTCUSDT"):
        ids = _stored(db, sym)
        # the second run's synthetic ids continue after the first run's last stored id
        # (and the ingester backfills what was streamed before it connected): one range
        assert ids.size > 60 and np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)), sym


def test_a_session_on_an_external_server_reads_its_gaps(tmp_path):
    from quantlab.replay import Faults, ReplayServer, SyntheticSource

    db = tmp_path / "live.db"
    with ReplayServer(SyntheticSource(("BTCUSDT", "ETHUSDT"), rate=400.0, seed=2),
                      faults=Faults(drop_after_messages=300)) as server:
        session = LiveSession(SessionSettings(source="replay", pairs=PAIR, db_path=str(db),
                                              ws_url=server.ws_url, rest_url=server.rest_url))
        assert session.open_source() == (server.ws_url, server.rest_url)
        session.start()
        try:
            assert session.replay is None  # the server is someone else's
            assert session.marks_moved() is True  # the first reading of the counters
            wait_until(lambda: session.status().reconnects >= 1
                       and session.status().trades_backfilled > 0, timeout=30,
                       message="a dropped connection backfilled from REST")
            assert session.marks_moved() is True  # the counters moved since the first reading
            wait_until(lambda: not session.backfill_pending(), timeout=20,
                       message="no open gap left")
        finally:
            session.stop()
        session.marks_moved()
        assert session.marks_moved() is False  # a stopped ingester's counters stay put
        session.close()
        import urllib.request  # the server is not the session's to stop: it still answers

        with urllib.request.urlopen(server.rest_url + "/api/v3/ping", timeout=5) as resp:
            assert resp.status == 200


def test_holes_and_pending_backfill_come_from_the_stores_gaps(tmp_path):
    db = tmp_path / "live.db"
    with TickStore(db) as store:
        gap = store.record_gap("spot", "ETHUSDT", "trade", 10, 19, reason="reconnect",
                               before_ms=5_000, after_ms=9_000)
        store.record_gap("spot", "SOLUSDT", "trade", 1, 2, reason="reconnect",
                         before_ms=5_000, after_ms=9_000)
    session = LiveSession(SessionSettings(pairs=PAIR, db_path=str(db)))
    assert session.backfill_pending()  # ETHUSDT's gap is open
    assert session.holes(("ETHUSDT", "BTCUSDT"), 0, 100_000) == []  # open: not a hole yet
    session.close_store()
    with TickStore(db) as store:
        store.update_gap(gap, status="unfillable")
    assert not session.backfill_pending()  # SOLUSDT's open gap is not this session's
    assert session.holes(("ETHUSDT", "BTCUSDT"), 0, 100_000) == [(5_000.0, 9_000.0)]
    assert session.holes(("ETHUSDT",), 9_001, 100_000) == []  # outside the window
    assert session.holes(("BTCUSDT",), 0, 100_000) == []
    session.close()
    assert LiveSession(SessionSettings(db_path=str(tmp_path / "none.db"))).pair_bars(
        "ETHUSDT", "BTCUSDT", "1s", 0, 1000) is None  # no store file: no history


def test_alert_log_records_and_reads_back(tmp_path):
    from quantlab.alerts import AlertEvent

    db = tmp_path / "live.db"
    session = LiveSession(SessionSettings(pairs=PAIR, db_path=str(db)))
    assert session.alert_sink() is None and session.record_alerts([]) == 0
    session.open_alert_log()
    ev = AlertEvent(time_ms=1_700_000_000_000, time_iso="2023-11-14T22:13:20.000Z",
                    rule="zscore > 2", name="zscore > 2", metric="zscore", op=">", value=2.5,
                    threshold=2.0, pair="ETHUSDT/BTCUSDT", message="zscore 2.5 > 2")
    assert session.record_alerts([ev]) == 1
    session.alert_sink()(dict(ev.to_dict(), time_ms=ev.time_ms + 1000, message="again"))
    session.close()
    again = LiveSession(SessionSettings(pairs=PAIR, db_path=str(db)))
    again.open_alert_log()
    assert again.past_alerts("ETHUSDT/BTCUSDT") == [("2023-11-14 22:13:21", "again"),
                                                    ("2023-11-14 22:13:20", "zscore 2.5 > 2")]
    assert again.past_alerts("ETHUSDT/BTCUSDT", limit=1)[0][1] == "again"
    again.close()


def test_a_failed_start_stops_what_it_started(tmp_path):
    bad = tmp_path / "not-a-store.db"
    bad.write_bytes(b"this is not a SQLite file" * 100)
    before = _threads()
    session = LiveSession(SessionSettings(source="replay", pairs=PAIR, db_path=str(bad)))
    with pytest.raises(QuantlabError):
        session.start()
    assert session.replay is None and not session.running and session.subscription is None
    wait_until(lambda: _threads() <= before, timeout=10, message="the replay server's thread ended")
    assert bad.read_bytes().startswith(b"this is not")


def test_live_imports_no_ui():
    import subprocess
    import sys

    code = ("import sys, quantlab.live, quantlab.live.session, quantlab.live.sources; "
            "bad = [m for m in ('bokeh', 'ipywidgets', 'jupyter_bokeh', 'IPython', 'quantlab.ui') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_terminal_demo_prints_the_sessions_status_line(tmp_path, capsys):
    from quantlab.launch import prepare_demo_store, terminal_demo

    db = prepare_demo_store(tmp_path / "demo.db")
    before = _threads()
    t0 = time.monotonic()
    assert terminal_demo(db, 300.0, 2.5, status_every_s=1.0) == 0
    assert time.monotonic() - t0 < 30
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("replay server: ws ws://127.0.0.1:")
    status = [line for line in out if "client received" in line]
    assert len(status) >= 2 and status[-1].startswith("final stopped ")
    assert any(" live " in line for line in status[:-1]), status
    final = status[-1]
    stored = int(final.split("stored ", 1)[1].split(" ", 1)[0].replace(",", ""))
    received = int(final.rsplit("client received ", 1)[1].replace(",", ""))
    assert stored > 100 and received == stored and "dropped 0" in final
    assert len(_stored(db, "BTCUSDT")) + len(_stored(db, "ETHUSDT")) == stored
    wait_until(lambda: _threads() <= before, timeout=10, message="the demo's threads ended")


def test_demo_and_lab_handlers_live_in_commands():
    import argparse

    from quantlab import launch
    from quantlab.cli import build_parser
    from quantlab.commands import demo

    assert callable(demo.command) and callable(demo.lab_command)
    assert not [n for n in vars(launch) if n.endswith("_cli")]
    args = build_parser().parse_args(["demo", "--terminal", "--duration", "3", "--db", "d.db",
                                      "--rate", "10", "--port", "0", "--no-browser"])
    assert isinstance(args, argparse.Namespace) and args.func.__name__ == "_cmd_demo"
    assert (args.terminal, args.duration, args.db, args.rate, args.port, args.no_browser) == (
        True, 3.0, "d.db", 10.0, 0, True)
    lab = build_parser().parse_args(["lab", "--db", "l.db", "--port", "9999"])
    assert (lab.db, lab.port, lab.no_browser, lab.func.__name__) == ("l.db", 9999, False, "_cmd_lab")


def test_the_monitor_runs_its_feed_on_a_session_with_the_injected_ingester(tmp_path):
    import asyncio

    from quantlab.ingest import Ingester
    from quantlab.ui.monitor import LiveMonitor, MonitorParams

    made = []

    def factory(settings):
        made.append(settings)
        return Ingester(settings)

    m = LiveMonitor(MonitorParams(db_path=str(tmp_path / "live.db"), rate=300.0, timeframe="1s",
                                  window=3), ingester_factory=factory)

    async def main():
        m.start()
        try:
            assert m.last_error is None, m.last_error
            assert m.session.running and m.ingester is m.session.ingester
            assert m.replay is m.session.replay and m.replay is not None
            deadline = time.monotonic() + 20
            while m.views[0].pipeline.bars_committed < 2:
                assert time.monotonic() < deadline, "two bars through the session"
                await asyncio.sleep(0.05)
        finally:
            m.stop()

    asyncio.run(main())
    assert len(made) == 1 and made[0].symbols == ("ETHUSDT", "BTCUSDT")
    assert made[0].batch_max_delay_s == 0.025 and made[0].db_path == str(tmp_path / "live.db")
    st = m.session.status()
    assert not st.running and m.session.subscription is None and m.replay is None
    summary = m.summary()
    assert summary["ingest"]["trades_stored"] == st.trades_stored > 0
    assert summary["ingest"]["dropped"] == 0 and summary["ui_missed"] == m.session.missed == 0
    assert summary["pairs"]["ETHUSDT/BTCUSDT"]["trades_y"] + summary["pairs"][
        "ETHUSDT/BTCUSDT"]["trades_x"] > 0
