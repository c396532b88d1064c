"""The UI pump without a browser: coalescing, rollover, throttling, forming and
closed bars. Sources are recording fakes; the pump's step is driven directly
with fake clocks (nothing sleeps)."""
from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time

import pytest

from quantlab.binance import Trade
from quantlab.ui.pipeline import PairPipeline, PairSpec
from quantlab.ui.pump import FeedStep, PairSink, StreamBatch, Throttle, UiPump


# -- fakes ---------------------------------------------------------------------------
class FakeSource:
    """Records ``stream`` calls and keeps data like Bokeh does (rollover)."""

    def __init__(self, name: str = "src"):
        self.name = name
        self.calls: list[tuple[dict, int | None]] = []
        self.data: dict[str, list] = {}

    def stream(self, new: dict, rollover: int | None = None) -> None:
        self.calls.append((new, rollover))
        for k, v in new.items():
            col = self.data.setdefault(k, [])
            col.extend(v)
            if rollover is not None and len(col) > rollover:
                del col[: len(col) - rollover]

    def __len__(self) -> int:
        return len(next(iter(self.data.values()), []))


class FakeState:
    """Analytics stand-in: the spread is y - x, its z-score needs ``window`` bars."""

    def __init__(self, spec: PairSpec, hedge: str):
        self.window = spec.window
        self.hedge = hedge
        self.spreads: list[float] = []

    def _values(self, spreads: list[float]) -> dict:
        s = spreads[-1]
        if len(spreads) < self.window:
            return {"spread": s, "zscore": math.nan, "beta": 1.0}
        w = spreads[-self.window:]
        mean = sum(w) / len(w)
        sd = (sum((v - mean) ** 2 for v in w) / (len(w) - 1)) ** 0.5
        return {"spread": s, "spread_mean": mean, "zscore": (s - mean) / sd if sd else 0.0,
                "beta": 1.0}

    def update(self, t: int, y: float, x: float) -> dict:
        self.spreads.append(y - x)
        return self._values(self.spreads)

    def peek(self, y: float, x: float) -> dict:
        return self._values(self.spreads + [y - x])


class FakeAlerts:
    def __init__(self, rules, pair):
        self.rules = rules

    def evaluate(self, t, values):
        return []


def make_trade(symbol: str, t_ms: int, price: float, trade_id: int, recv_ms: int | None = None) -> Trade:
    return Trade("spot", symbol, "trade", trade_id, price, 1.0, t_ms,
                 t_ms if recv_ms is None else recv_ms, False)


class Feed:
    """A subscription stand-in: the test appends, the step drains."""

    def __init__(self):
        self.buf: list[Trade] = []
        self.ids = 0

    def push(self, symbol: str, t_ms: int, price: float, recv_ms: int | None = None) -> None:
        self.ids += 1
        self.buf.append(make_trade(symbol, t_ms, price, self.ids, recv_ms))

    def drain(self) -> list[Trade]:
        out, self.buf = self.buf, []
        return out


def make_monitor_step(window: int = 5, timeframe: str = "1s", max_bars: int = 50):
    spec = PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", timeframe=timeframe, window=window,
                    max_bars=max_bars)
    pipeline = PairPipeline(spec, analytics_factory=FakeState, alert_factory=FakeAlerts,
                            grace_ms=200)
    sink = PairSink(FakeSource("bars"), FakeSource("forming"), FakeSource("alerts"),
                    max_bars=max_bars)
    feed = Feed()
    wall = {"ms": 0}
    step = FeedStep(feed.drain, [(pipeline, sink)], wall_ms=lambda: wall["ms"])
    return feed, pipeline, sink, step, wall


T0 = 1_700_000_000_000  # ms, on a whole second


# -- StreamBatch -----------------------------------------------------------------------
def test_batch_coalesces_rows_into_one_stream_call_per_source():
    a, b = FakeSource("a"), FakeSource("b")
    batch = StreamBatch()
    for i in range(500):
        batch.add_row(a, {"t": i, "v": float(i)}, rollover=1000)
        batch.add_row(b, {"t": i}, rollover=1)
    assert batch.flush() == 2
    assert len(a.calls) == 1 and len(b.calls) == 1
    assert a.calls[0][0]["t"] == list(range(500))
    # rows the browser would drop at once are not even sent
    assert b.calls[0] == ({"t": [499]}, 1)
    assert batch.flush() == 0  # empty after a flush


def test_batch_rejects_mismatched_columns():
    a = FakeSource()
    batch = StreamBatch()
    batch.add_row(a, {"t": 1})
    with pytest.raises(ValueError, match="same columns"):
        batch.add_row(a, {"u": 1})


# -- Throttle / UiPump -------------------------------------------------------------------
def test_throttle_caps_updates_per_second_whatever_the_call_rate():
    calls = []
    pump = UiPump(calls.append, interval_s=0.01, max_updates_per_s=10)
    for i in range(10_000):  # 10 kHz of tick attempts over one simulated second
        pump.tick(now=i / 10_000)
    assert len(calls) == 10
    assert pump.skipped == 10_000 - 10
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert min(gaps) >= 0.1 - 1e-9


def test_throttle_examples():
    t = Throttle(5)
    assert [t.ready(x) for x in (0.0, 0.1, 0.2, 0.35, 0.4)] == [True, False, True, False, True]
    with pytest.raises(ValueError):
        Throttle(0)


def test_step_errors_are_counted_and_do_not_stop_the_pump():
    seen = []

    def step(now):
        seen.append(now)
        if len(seen) == 1:
            raise RuntimeError("boom")

    errors = []
    pump = UiPump(step, on_error=errors.append)
    assert pump.tick(now=0.0) and pump.tick(now=1.0)
    assert pump.errors == 1 and str(pump.last_error) == "boom" and len(errors) == 1
    assert seen == [0.0, 1.0]


def test_pump_runs_on_the_running_loop_and_stops():
    async def main():
        ticks = []
        pump = UiPump(ticks.append, interval_s=0.02, max_updates_per_s=50)
        pump.start()
        pump.start()  # idempotent
        assert pump.running
        deadline = time.monotonic() + 5
        while len(ticks) < 3:  # wait on the condition, with a deadline
            assert time.monotonic() < deadline, "pump did not tick"
            await asyncio.sleep(0.01)
        pump.stop()
        await asyncio.sleep(0)  # let the cancellation land
        assert not pump.running
        n = len(ticks)
        await asyncio.sleep(0.1)
        assert len(ticks) == n, "pump kept ticking after stop()"
        # starting again works
        pump.start()
        deadline = time.monotonic() + 5
        while len(ticks) == n:
            assert time.monotonic() < deadline, "pump did not restart"
            await asyncio.sleep(0.01)
        pump.stop()

    asyncio.run(main())


# -- the monitor's step: trades -> bars -> sources ----------------------------------------
def test_many_trades_one_stream_call_per_source_per_tick():
    feed, pipeline, sink, step, wall = make_monitor_step()
    # 3 seconds of trades at 1,000 trades/s, arriving all at once
    for i in range(3000):
        t = T0 + i
        feed.push("ETHUSDT" if i % 2 else "BTCUSDT", t, 100.0 + (i % 7))
    wall["ms"] = T0 + 3000
    step(0.0)
    assert len(sink.bars.calls) == 1, "closed bars must be streamed in one call"
    assert len(sink.forming.calls) == 1
    # the bars 0..1 are closed; bar 2 is still inside the grace period
    assert sink.bars.data["t"] == [float(T0), float(T0 + 1000)]
    assert step.stream_calls == 2


def test_bars_are_streamed_only_when_they_close_and_the_forming_bar_follows_within_500ms():
    feed, pipeline, sink, step, wall = make_monitor_step()
    pump = UiPump(step, interval_s=0.15)
    shown = []  # (wall ms, forming y_close) after each tick
    trades = []  # (wall ms, price)
    # 0.9 s of trades inside the first second, one tick every 150 ms
    for k in range(6):
        wall["ms"] = T0 + 150 * k + 10
        feed.push("ETHUSDT", T0 + 150 * k, 10.0 + k)
        feed.push("BTCUSDT", T0 + 150 * k, 20.0)
        trades.append((wall["ms"], 10.0 + k))
        assert pump.tick(now=k * 0.15)
        assert sink.bars.calls == [], "a bar was streamed before it closed"
        assert len(sink.forming) == 1
        shown.append((wall["ms"], sink.forming.data["y_close"][0]))
    for t_trade, price in trades[:-1]:
        t_shown = next(t for t, p in shown if t >= t_trade and p >= price)
        assert t_shown - t_trade <= 500, f"forming bar showed {price} after {t_shown - t_trade} ms"
    # at most one forming update every forming_every_ms (100 ms): every tick here
    assert len(sink.forming.calls) == 6 and pipeline.forming_every_ms == 100
    # a trade in the next second closes bar 0 at once
    wall["ms"] = T0 + 1_050
    feed.push("ETHUSDT", T0 + 1_000, 30.0)
    feed.push("BTCUSDT", T0 + 1_001, 21.0)
    pump.tick(now=1.0)
    assert len(sink.bars.calls) == 1
    assert sink.bars.data["t"] == [float(T0)]
    assert sink.bars.data["y_open"] == [10.0] and sink.bars.data["y_close"] == [15.0]
    assert sink.bars.data["y_high"] == [15.0] and sink.bars.data["y_low"] == [10.0]
    assert sink.forming.data["t"] == [float(T0 + 1_000)], "a closing bar refreshes the forming bar"


def test_quiet_market_closes_bars_on_the_exchange_clock():
    feed, pipeline, sink, step, wall = make_monitor_step()
    feed.push("ETHUSDT", T0 + 100, 10.0)
    feed.push("BTCUSDT", T0 + 120, 20.0)
    wall["ms"] = T0 + 130
    step(0.0)
    assert sink.bars.calls == []
    # no trades for 3.5 s: bar 0 closes and empty bars 1, 2 follow (carried close)
    wall["ms"] = T0 + 3_500
    step(1.0)
    assert len(sink.bars.calls) == 1
    assert sink.bars.data["t"] == [float(T0), float(T0 + 1000), float(T0 + 2000)]
    assert sink.bars.data["y_close"] == [10.0, 10.0, 10.0]
    assert sink.bars.data["y_trades"] == [1, 0, 0]


def test_forming_bar_latency_is_below_500ms_at_the_pump_rate():
    """At the default pump period, a trade reaches the forming source in
    under 500 ms (fake clocks, ticks as the pump would run them)."""
    feed, pipeline, sink, step, wall = make_monitor_step()
    pump = UiPump(step)  # defaults
    feed.push("ETHUSDT", T0 + 10, 10.0)
    feed.push("BTCUSDT", T0 + 10, 20.0)
    wall["ms"] = T0 + 20
    pump.tick(now=0.0)
    assert sink.forming.data["y_close"] == [10.0]
    now = 0.0
    for k, offset in enumerate((30, 70, 110, 140, 5)):  # ms after a tick: anywhere between ticks
        price = 11.0 + k
        t_trade = wall["ms"] + offset
        feed.push("ETHUSDT", t_trade, price)
        while sink.forming.data["y_close"] != [price]:
            now += pump.interval_s
            wall["ms"] = T0 + 20 + int(now * 1000)
            assert pump.tick(now=now)
            assert wall["ms"] - t_trade < 500, \
                f"forming bar not updated {wall['ms'] - t_trade} ms after a trade"


def test_rollover_bounds_memory_on_both_sides():
    feed, pipeline, sink, step, wall = make_monitor_step(max_bars=20)
    t = T0
    for k in range(200):  # 200 seconds, one tick per second
        feed.push("ETHUSDT", t + 10, 10.0 + (k % 5))
        feed.push("BTCUSDT", t + 20, 20.0)
        wall["ms"] = t + 990
        step(float(k))
        t += 1000
    assert len(sink.bars) == 20, "browser-side data must stay at the rollover"
    # kernel side: the plotted rows plus at most max_bars warm-up rows before them
    assert len(pipeline.plot_rows()) == 20
    assert len(pipeline.rows) == pipeline.rows.maxlen <= 2 * 20, "kernel-side rows must stay bounded"
    assert all(r == 20 for _, r in sink.bars.calls)
    assert len(sink.forming) == 1
    assert pipeline.n_bars >= 190


def test_forming_row_uses_peek_not_update():
    feed, pipeline, sink, step, wall = make_monitor_step(window=3)
    for k in range(5):
        feed.push("ETHUSDT", T0 + 1000 * k + 10, 10.0 + k)
        feed.push("BTCUSDT", T0 + 1000 * k + 10, 5.0)
    wall["ms"] = T0 + 4_500
    step(0.0)
    committed = len(pipeline.state.spreads)
    for _ in range(5):
        pipeline._forming_dirty = True
        pipeline.advance(wall_ms=T0 + 4_500)
    assert len(pipeline.state.spreads) == committed, "the forming bar was committed"
    assert committed == 4


def test_window_change_recomputes_retained_bars():
    feed, pipeline, sink, step, wall = make_monitor_step(window=3)
    for k in range(12):  # one tick per second as the trades come
        feed.push("ETHUSDT", T0 + 1000 * k + 10, 10.0 + (k * 7) % 5)
        feed.push("BTCUSDT", T0 + 1000 * k + 10, 5.0)
        wall["ms"] = T0 + 1000 * k + 60
        step(float(k))
    wall["ms"] = T0 + 12_500
    step(12.0)
    before = [r["zscore"] for r in pipeline.rows]
    rows = pipeline.reconfigure(window=6)
    after = [r["zscore"] for r in rows]
    assert len(rows) == len(before) == 12
    assert sum(not math.isnan(z) for z in after) == 12 - 5
    assert before != after
    assert pipeline.readiness() == []


def test_readiness_says_what_is_missing_never_zero():
    feed, pipeline, sink, step, wall = make_monitor_step(window=60)
    assert "waiting for the first ETHUSDT trade" in pipeline.readiness()
    for k in range(13):
        feed.push("ETHUSDT", T0 + 1000 * k, 10.0)
        feed.push("BTCUSDT", T0 + 1000 * k, 5.0)
    wall["ms"] = T0 + 12_500
    step(0.0)
    assert "z-score needs 60 bars, have 12" in pipeline.readiness()
    assert all(math.isnan(z) for z in sink.bars.data["zscore"])


def test_pump_module_does_not_import_bokeh():
    code = ("import sys, quantlab.ui.pump, quantlab.ui.pipeline; "
            "bad = [m for m in ('bokeh', 'ipywidgets', 'jupyter_bokeh') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the monitor without a browser -----------------------------------------------------------
# A real replay server, ingester and tick store; analytics replaced by FakeState so
# these tests exercise the UI plumbing only.
def _monitor(tmp_path, **params):
    from quantlab.ui.monitor import LiveMonitor, MonitorParams

    defaults = dict(timeframe="1s", window=3, rate=400.0, db_path=str(tmp_path / "live.db"),
                    interval_s=0.1)
    defaults.update(params)
    return LiveMonitor(MonitorParams(**defaults), analytics_factory=FakeState)


async def _until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


def test_monitor_streams_stops_and_starts_again(tmp_path):
    m = _monitor(tmp_path)
    view = m.views[0]

    async def main():
        m.start()
        assert m.running and m.b_stop.disabled is False and m.b_start.disabled is True
        await _until(lambda: len(view.plots.bars.data["t"]) >= 3, 20, "three closed bars")
        assert len(view.plots.forming.data["t"]) == 1
        m.stop()
        assert not m.running and m.ingester.running is False and m.replay is None
        first = m.summary()
        assert first["ingest"]["dropped"] == 0 and first["ui_missed"] == 0
        assert first["pump_errors"] == 0, m.last_error
        assert "stopped" in m.status.value
        n = len(m.views[0].plots.bars.data["t"])
        await asyncio.sleep(0.5)
        assert len(m.views[0].plots.bars.data["t"]) == n, "plots changed after stop"
        # again, on the same DB: history is loaded, then live bars continue
        m.start()
        assert m.running
        view2 = m.views[0]
        start_bars = view2.pipeline.bars_committed
        assert start_bars >= 3, "stored bars were not loaded on start"
        await _until(lambda: view2.pipeline.bars_committed >= start_bars + 2, 20, "live bars")
        m.stop()
        assert m.summary()["ingest"]["dropped"] == 0

    asyncio.run(main())


def test_alerts_fire_are_persisted_and_shown_after_a_restart(tmp_path):
    m = _monitor(tmp_path, alert_rules=("zscore > -1000",))  # fires at the first z-score
    view = m.views[0]

    async def main():
        m.start()
        await _until(lambda: view.pipeline.alerts_fired >= 1, 20, "an alert")
        m.stop()
        assert "zscore &gt; -1000" in view.alert_log.value
        from quantlab.store import TickStore

        with TickStore(tmp_path / "live.db", read_only=True) as store:
            log = store.alerts("ETHUSDT/BTCUSDT")
        assert len(log) == view.pipeline.alerts_fired
        m.start()  # a new session: the stored alerts are listed as earlier ones
        assert "earlier (stored)" in m.views[0].alert_log.value
        m.stop()

    asyncio.run(main())


def test_several_pairs_share_one_ingester(tmp_path):
    m = _monitor(tmp_path, extra_pairs=(("SOLUSDT", "ETHUSDT"),))

    async def main():
        m.start()
        assert m.ingester.settings.symbols == ("ETHUSDT", "BTCUSDT", "SOLUSDT")
        await _until(lambda: all(v.pipeline.bars_committed >= 2 for v in m.views), 20,
                     "bars for both pairs")
        view = m.add_pair("BNBUSDT", "BTCUSDT")  # restarts the feed with the union
        assert m.running and len(m.views) == 3 and len(m.pairs_box.children) == 3
        assert "BNBUSDT" in m.ingester.settings.symbols
        await _until(lambda: view.pipeline.bars_committed >= 2, 20, "bars for the added pair")
        m.stop()
        summary = m.summary()
        assert set(summary["pairs"]) == {"ETHUSDT/BTCUSDT", "SOLUSDT/ETHUSDT", "BNBUSDT/BTCUSDT"}
        assert summary["ingest"]["dropped"] == 0 and summary["ui_missed"] == 0

    asyncio.run(main())


def test_monitor_unreachable_feed_shows_a_status_line_not_a_traceback(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = _monitor(tmp_path, source="live", ws_url=f"ws://127.0.0.1:{port}",
                 rest_url=f"http://127.0.0.1:{port}")

    async def main():
        m.start()
        await _until(lambda: "cannot reach" in m.status.value, 20, "the connection error")
        assert "retrying in" in m.status.value
        assert "Traceback" not in m.status.value + m.message.value
        m.stop()
        assert not m.running
        assert "retrying in" not in m.status.value.split("last error")[0]

    asyncio.run(main())


def _upload(name: str, data: bytes) -> tuple:
    import datetime

    return ({"name": name, "type": "text/csv", "size": len(data), "content": memoryview(data),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def _ohlc_csv(start_s: int, closes) -> bytes:
    lines = ["timestamp,open,high,low,close,volume"]
    for i, c in enumerate(closes):
        lines.append(f"{start_s + 60 * i},{c},{c + 1},{c - 1},{c},{10 + i}")
    return ("\n".join(lines) + "\n").encode()


def test_file_upload_runs_the_analytics_and_a_bad_file_changes_nothing(tmp_path):
    m = _monitor(tmp_path, timeframe="1m", window=5)
    y = _ohlc_csv(1_700_000_040, [100 + (i * 7) % 5 for i in range(40)])
    x = _ohlc_csv(1_700_000_040, [50 + (i * 3) % 4 for i in range(40)])
    m.w_up_y.value = _upload("ETHUSDT-ohlc.csv", y)
    m.w_up_x.value = _upload("BTCUSDT-ohlc.csv", x)
    m.b_files.click()
    assert m.last_error is None, m.last_error
    view = m.views[0]
    assert m.mode == "files" and view.pipeline.bars_committed == 40
    assert len(view.plots.bars.data["t"]) == 40
    assert "files loaded" in m.status.value
    assert "download these" in view.table.value
    before = (m.views, list(view.plots.bars.data["t"]), m.status.value)
    # a broken file: the loader's error inline, nothing else changes
    m.w_up_x.value = _upload("BTCUSDT-ohlc.csv", b"timestamp,open,high,low,close\n1700000040,1,2,0.5,abc\n")
    m.b_files.click()
    assert "abc" in m.message.value and "line 2" in m.message.value, m.message.value
    assert "Traceback" not in m.message.value
    assert (m.views, list(view.plots.bars.data["t"]), m.status.value) == before
    # export of what is shown
    paths = m.export(".csv", tmp_path / "exports")
    assert paths[0].exists() and paths[0].stat().st_size > 0


def test_window_and_band_controls_update_the_plots(tmp_path):
    m = _monitor(tmp_path, timeframe="1m", window=5)
    y = _ohlc_csv(1_700_000_040, [100 + (i * 7) % 5 for i in range(40)])
    x = _ohlc_csv(1_700_000_040, [50 + (i * 3) % 4 for i in range(40)])
    m.load_files(("ETHUSDT.csv", y), ("BTCUSDT.csv", x))
    view = m.views[0]
    finite = lambda: sum(1 for z in view.plots.bars.data["zscore"] if z == z)  # noqa: E731
    assert finite() == 36
    m.w_window.value = 20
    assert finite() == 21 and view.pipeline.spec.window == 20
    m.w_entry.value = 3.0
    assert view.plots.spans["entry_hi"].location == 3.0
    assert view.plots.spans["entry_lo"].location == -3.0
    m.w_rules.value = "zscore >> 2"
    assert "alert rule" in m.message.value and "zscore &gt;&gt; 2" in m.message.value
    assert view.pipeline.spec.rules == ("zscore > 2", "zscore < -2")


def test_bokeh_sources_stay_at_their_rollover():
    """The real ColumnDataSources (Python side of the browser's data) stay bounded."""
    from quantlab.ui.plots import PairPlots

    spec = PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", timeframe="1s", window=5, max_bars=50)
    pipeline = PairPipeline(spec, analytics_factory=FakeState, alert_factory=FakeAlerts,
                            grace_ms=200)
    plots = PairPlots(spec)
    feed = Feed()
    wall = {"ms": T0}
    step = FeedStep(feed.drain, [(pipeline, plots.sink)], wall_ms=lambda: wall["ms"])
    for k in range(500):
        feed.push("ETHUSDT", T0 + 1000 * k + 10, 10.0 + (k % 3))
        feed.push("BTCUSDT", T0 + 1000 * k + 20, 5.0)
        wall["ms"] = T0 + 1000 * k + 900
        step(float(k))
    assert len(plots.bars.data["t"]) == 50
    assert len(plots.forming.data["t"]) == 1
    assert plots.bars.data["t"][-1] == float(T0 + 1000 * 498)


def test_late_backfilled_trades_correct_the_kept_bars_from_the_store(tmp_path):
    """A dropped connection makes the ingester backfill the missed trades from
    REST; they reach the monitor after their bars were closed and streamed.
    The monitor corrects those bars from the store (OHLCV and the Bokeh source)."""
    from quantlab.replay import Faults, ReplayServer, SyntheticSource
    from quantlab.store import TickStore

    server = ReplayServer(SyntheticSource(("BTCUSDT", "ETHUSDT"), rate=400.0, seed=3),
                          faults=Faults(drop_after_messages=500))
    server.start()
    m = _monitor(tmp_path, ws_url=server.ws_url, rest_url=server.rest_url)

    def pair():
        return m.summary()["pairs"]["ETHUSDT/BTCUSDT"]

    async def main():
        m.start()
        try:
            await _until(lambda: pair()["late_trades"] > 0, 30, "late (backfilled) trades")
            await _until(lambda: pair().get("bars_corrected", 0) > 0, 20,
                         "late bars corrected from the store while running")
            assert m.summary()["ingest"]["trades_backfilled"] > 0
        finally:
            m.stop()
            server.stop()

    asyncio.run(main())
    summary = m.summary()
    assert summary["pump_errors"] == 0, m.last_error
    view = m.views[0]  # start() gave it a new pipeline
    rows = list(view.pipeline.rows)
    assert rows
    t0, t1 = int(rows[0]["t"]), int(rows[-1]["t"]) + 1000
    with TickStore(tmp_path / "live.db", read_only=True) as store:
        exact = {leg: store.bars(sym, "1s", start_ms=t0, end_ms=t1)
                 for leg, sym in (("y", "ETHUSDT"), ("x", "BTCUSDT"))}
    bad = []
    for leg, frame in exact.items():
        by_t = dict(zip(frame.index.as_unit("ms").asi8.tolist(),
                        zip(frame["volume"].tolist(), frame["close"].tolist())))
        for r in rows:
            want = by_t.get(int(r["t"]))
            got = (r[f"{leg}_volume"], r[f"{leg}_close"])
            if want is None or not (math.isclose(got[0], want[0], rel_tol=1e-9, abs_tol=1e-12)
                                    and got[1] == want[1]):
                bad.append((leg, int(r["t"]), got, want))
    assert not bad, f"{len(bad)} kept bars differ from the store, e.g. {bad[:3]}"
    # the browser's copy was patched too (same rows as the kernel's)
    data = view.plots.bars.data
    assert list(data["t"]) == [r["t"] for r in rows]
    for col in ("y_volume", "y_close", "x_volume", "x_close", "zscore"):
        assert all(a == b or (a != a and b != b)
                   for a, b in zip(data[col], (r[col] for r in rows), strict=True)), col
