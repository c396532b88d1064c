"""A store gap the ingester could not fill is shaded on the monitor's plots.

Real parts: the replay server on 127.0.0.1 port 0, the ingester, a SQLite store
in tmp_path, the monitor with its Bokeh ColumnDataSources. A first session
stores bars; the store then records a gap marked ``unfillable`` inside that
history (as the ingester does when REST no longer has the ids); a second
session loads the history and shades exactly that stretch.
"""
from __future__ import annotations

import asyncio

from quantlab.replay import ReplayServer, SyntheticSource
from quantlab.store import TickStore
from tests.test_ui_resync import _monitor, _until


def test_unfillable_store_gap_is_shaded_after_loading_history(tmp_path):
    server = ReplayServer(SyntheticSource(("BTCUSDT", "ETHUSDT"), rate=200.0, seed=5))
    server.start()
    db = tmp_path / "live.db"
    try:
        m1 = _monitor(tmp_path, server)

        async def first():
            m1.start()
            await _until(lambda: m1.views[0].pipeline.bars_committed >= 8, 30, "first bars")
            m1.stop()

        asyncio.run(first())
        with TickStore(db) as store:
            t = store.bars_1s("ETHUSDT").index.as_unit("ms").asi8
            before, after = int(t[2]) + 300, int(t[5]) + 700
            gap = store.record_gap("spot", "ETHUSDT", "trade", 10**15, 10**15 + 9,
                                   reason="overflow", before_ms=before, after_ms=after)
            store.update_gap(gap, status="unfillable", unfilled_count=10)
            # a filled gap is not shaded
            done = store.record_gap("spot", "BTCUSDT", "trade", 10**15, 10**15 + 1,
                                    reason="reconnect", before_ms=int(t[1]), after_ms=int(t[3]))
            store.update_gap(done, status="filled", filled_count=2)

        m2 = _monitor(tmp_path, server)

        async def second():
            m2.start()
            await _until(lambda: (before, after) in _holes(m2), 20, "the store gap shaded")
            m2.stop()

        asyncio.run(second())
    finally:
        server.stop()
    assert m2.summary()["pump_errors"] == 0, m2.last_error
    holes = _holes(m2)
    assert (float(t[1]), float(t[3])) not in holes, holes
    assert not [h for h in holes if h != (before, after) and h[0] < after and h[1] > before], holes


def _holes(m) -> list[tuple[float, float]]:
    data = m.views[0].plots.holes.data
    return list(zip((float(v) for v in data["left"]), (float(v) for v in data["right"])))
