"""End to end: after any gap, the plotted bars equal the store's bars.

Real parts only: the replay server on 127.0.0.1 port 0 (with its fault
injection), the ingester, a SQLite store in tmp_path, the monitor with its real
Bokeh ColumnDataSources and the package's analytics. Nothing sleeps to
synchronise: every wait is a condition with a deadline.

* two sessions: the first stores bars and stops, the feed goes on with no
  monitor, the second loads the history and the ingester backfills the pause;
  every stored bar of the plotted window is then in the plot's data source,
  OHLCV equal, and the pause is not drawn across;
* one session with a dropped connection and a stall (the server's ``Faults``):
  the backfilled bars are inserted while running and at the end the plot
  equals the store.
"""
from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from quantlab.replay import Faults, ReplayServer, SyntheticSource
from quantlab.store import TickStore

PAIR = "ETHUSDT/BTCUSDT"
FIELDS = ("open", "high", "low", "close", "volume", "trades")


def _monitor(tmp_path, server, **params):
    from quantlab.ui.monitor import LiveMonitor, MonitorParams

    defaults = dict(timeframe="1s", window=3, db_path=str(tmp_path / "live.db"),
                    interval_s=0.1, ws_url=server.ws_url, rest_url=server.rest_url,
                    alert_rules=("zscore > 1.5",), max_bars=600)
    defaults.update(params)
    return LiveMonitor(MonitorParams(**defaults))


async def _until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


def _plotted(view) -> dict[int, dict]:
    """Bars in the plot's ColumnDataSource (break rows left out), by open time."""
    data = view.plots.bars.data
    out = {}
    for i, t in enumerate(data["t"]):
        if not math.isfinite(float(data["y_close"][i])):
            continue  # a break row (hole)
        out[int(t)] = {f"{leg}_{f}": float(data[f"{leg}_{f}"][i]) for leg in ("y", "x")
                       for f in FIELDS}
    return out


def assert_plot_equals_store(view, db) -> dict[int, dict]:
    """Every bar the store holds for the plotted window (either leg traded)
    is in the plot with equal OHLCV and trade counts, and every plotted bar
    with trades is a stored bar."""
    plotted = _plotted(view)
    assert plotted, "nothing plotted"
    t0, t1 = min(plotted), max(plotted)
    with TickStore(db, read_only=True) as store:
        legs = {leg: store.bars(sym, "1s", start_ms=t0, end_ms=t1 + 1000)
                for leg, sym in (("y", "ETHUSDT"), ("x", "BTCUSDT"))}
    stored: dict[int, dict] = {}
    for leg, frame in legs.items():
        frame = frame[frame["trade_count"] > 0]
        for t, o, h, lo, c, v, n in zip(frame.index.as_unit("ms").asi8.tolist(),
                                        frame["open"], frame["high"], frame["low"],
                                        frame["close"], frame["volume"], frame["trade_count"]):
            stored.setdefault(int(t), {}).update({f"{leg}_open": o, f"{leg}_high": h,
                                                  f"{leg}_low": lo, f"{leg}_close": c,
                                                  f"{leg}_volume": v, f"{leg}_trades": n})
    missing = sorted(set(stored) - set(plotted))
    assert not missing, (f"{len(missing)} stored bars are not plotted, e.g. "
                         f"{missing[:5]} (window {t0}..{t1})")
    bad = []
    for t, want in stored.items():
        got = plotted[t]
        for k, w in want.items():
            if not math.isclose(got[k], float(w), rel_tol=1e-9, abs_tol=1e-12):
                bad.append((t, k, got[k], float(w)))
    assert not bad, f"{len(bad)} plotted values differ from the store, e.g. {bad[:5]}"
    for t, got in plotted.items():
        if got["y_trades"] > 0 or got["x_trades"] > 0:
            assert t in stored, f"plotted bar {t} with trades is not in the store"
    return plotted


def test_second_session_backfills_the_pause_and_plots_every_stored_bar(tmp_path):
    server = ReplayServer(SyntheticSource(("BTCUSDT", "ETHUSDT"), rate=300.0, seed=11))
    server.start()
    db = tmp_path / "live.db"
    try:
        m1 = _monitor(tmp_path, server)

        async def first():
            m1.start()
            # window 3: z-scores from the 5th bar on
            await _until(lambda: m1.views[0].pipeline.bars_committed >= 6, 30, "first bars")
            m1.stop()

        asyncio.run(first())
        assert m1.summary()["pump_errors"] == 0, m1.last_error
        stopped = time.time()
        with TickStore(db, read_only=True) as store:
            last_stored = int(store.bars_1s("ETHUSDT").index.as_unit("ms").asi8[-1])

        m2 = _monitor(tmp_path, server)
        view = m2.views[0]

        async def second():
            # the feed goes on with no monitor for 4 s
            await _until(lambda: time.time() >= stopped + 4.0, 10, "the pause")
            m2.start()
            p = m2.views[0].pipeline
            assert p.bars_committed >= 4, "the history was not loaded"
            assert int(p.rows[-1]["t"]) <= last_stored
            await _until(lambda: p.bars_inserted >= 3, 40,
                         "the pause's bars inserted from the store")
            await _until(lambda: p.bars_committed >= 12, 30, "live bars after the pause")
            m2.stop()

        asyncio.run(second())
    finally:
        server.stop()
    summary = m2.summary()
    assert summary["pump_errors"] == 0, m2.last_error
    assert summary["ingest"]["trades_backfilled"] > 0
    view = m2.views[0]
    plotted = assert_plot_equals_store(view, db)
    # the pause is covered: the plot has a bar for every second of it
    pause = [t for t in plotted if last_stored < t <= last_stored + 4000]
    assert len(pause) >= 3, f"the pause is not plotted: {pause}"
    # analytics were recomputed over the inserted bars: z-scores exist there
    z = dict(zip((int(t) for t in view.plots.bars.data["t"]),
                 (float(v) for v in view.plots.bars.data["zscore"])))
    assert all(math.isfinite(z[t]) for t in pause), [z[t] for t in pause]


def test_disconnect_and_stall_in_one_session_end_with_the_store_bars(tmp_path):
    server = ReplayServer(SyntheticSource(("BTCUSDT", "ETHUSDT"), rate=300.0, seed=5),
                          faults=Faults(stall_after_messages=500, stall_s=2.5,
                                        drop_after_messages=1400))
    server.start()
    db = tmp_path / "live.db"
    m = _monitor(tmp_path, server)

    def pair():
        return m.summary()["pairs"][PAIR]

    async def main():
        m.start()
        try:
            await _until(lambda: m.summary()["ingest"]["reconnects"] >= 1, 40,
                         "a dropped connection")
            await _until(lambda: pair()["resyncs"] >= 1 and pair()["bars_inserted"]
                         + pair()["bars_corrected"] >= 1, 30,
                         "bars resynchronised with the store while running")
            # the live rows between resynchronisations are exact too: check them
            # against the store while the feed still runs (bars up to the last
            # resynchronisation are final)
        finally:
            m.stop()

    asyncio.run(main())
    server.stop()
    s = m.summary()
    assert s["pump_errors"] == 0, m.last_error
    assert s["ingest"]["gaps_found"] >= 1 and s["ingest"]["trades_backfilled"] > 0
    assert_plot_equals_store(m.views[0], db)
    # kernel rows and browser rows agree
    p = m.views[0].pipeline
    assert sorted(_plotted(m.views[0])) == [int(r["t"]) for r in p.plot_rows()]


def test_holes_break_the_lines_and_are_shaded():
    """A pause longer than the carry limit: a NaN row between the bars on both
    sides (lines break) and a shaded strip over the hole."""
    from quantlab.ui.pipeline import PairSpec
    from quantlab.ui.plots import PairPlots

    spec = PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", timeframe="1s", window=5,
                    max_bars=50)
    plots = PairPlots(spec)
    t0 = 1_700_000_000_000
    rows = []
    for k in list(range(10)) + list(range(30, 40)):  # 20 s without any bar
        r = {c: 1.0 for c in plots.bars.data}
        r.update(t=float(t0 + 1000 * k), t_mid=float(t0 + 1000 * k + 500),
                 y_color="#000", x_color="#000", y_trades=3, x_trades=4)
        rows.append(r)
    plots.reset(rows)
    t = [float(v) for v in plots.bars.data["t"]]
    y = [float(v) for v in plots.bars.data["y_close"]]
    assert len(t) == 21
    assert t[10] == t0 + 10_000 and math.isnan(y[10]), "no break row at the hole"
    assert plots.holes.data["left"] == [t0 + 10_000.0]
    assert plots.holes.data["right"] == [t0 + 30_000.0]
    # the same when the bars after the hole are streamed live
    from quantlab.ui.pipeline import PipelineUpdate
    from quantlab.ui.pump import StreamBatch

    batch = StreamBatch()
    later = dict(rows[-1], t=float(t0 + 60_000), t_mid=float(t0 + 60_500))
    plots.sink.queue(batch, PipelineUpdate(rows=[later]))
    batch.flush()
    t = [float(v) for v in plots.bars.data["t"]]
    assert t[-2:] == [t0 + 40_000.0, t0 + 60_000.0]
    assert math.isnan(float(plots.bars.data["zscore"][-2]))
    assert list(plots.holes.data["left"])[-1] == t0 + 40_000.0


def test_no_tool_captures_the_wheel_and_the_axis_follows():
    from quantlab.ui.pipeline import PairSpec
    from quantlab.ui.plots import PairPlots

    plots = PairPlots(PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", timeframe="1s",
                               window=5, max_bars=1000))
    for fig in plots.figures:
        assert fig.toolbar.active_scroll is None, fig.title.text
        assert any(type(t).__name__ == "WheelZoomTool" for t in fig.tools)
        assert fig.x_range is plots.x_range
    assert plots.x_range.follow == "end"
    assert plots.x_range.follow_interval == 300 * 1000
    plots.follow(False)
    assert plots.x_range.follow is None
    plots.follow(True)
    assert plots.x_range.follow == "end" and plots.x_range.follow_interval >= 300_000
    interval = plots.x_range.follow_interval
    plots.follow(True)  # again: a new value, so BokehJS forgets the user's pan
    assert plots.x_range.follow_interval != interval
