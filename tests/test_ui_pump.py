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

    def push(self, symbol: str, t_ms: int, price: float) -> None:
        self.ids += 1
        self.buf.append(make_trade(symbol, t_ms, price, self.ids))

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


def test_bars_are_streamed_only_when_they_close_and_forming_updates_every_tick():
    feed, pipeline, sink, step, wall = make_monitor_step()
    pump = UiPump(step, interval_s=0.15)
    now = 0.0
    # trades inside the first second: only the forming bar moves
    for k in range(6):
        wall["ms"] = T0 + 150 * k + 10
        feed.push("ETHUSDT", T0 + 150 * k, 10.0 + k)
        feed.push("BTCUSDT", T0 + 150 * k, 20.0)
        assert pump.tick(now=now)
        now += 0.15
        assert sink.bars.calls == [], "a bar was streamed before it closed"
        # the trade shows in the forming bar at the first tick after it (< 500 ms)
        assert sink.forming.data["y_close"] == [10.0 + k]
        assert len(sink.forming) == 1
    assert len(sink.forming.calls) == 6
    # a trade in the next second closes bar 0 at once
    wall["ms"] = T0 + 1_050
    feed.push("ETHUSDT", T0 + 1_000, 30.0)
    feed.push("BTCUSDT", T0 + 1_001, 21.0)
    pump.tick(now=now)
    assert len(sink.bars.calls) == 1
    assert sink.bars.data["t"] == [float(T0)]
    assert sink.bars.data["y_open"] == [10.0] and sink.bars.data["y_close"] == [15.0]
    assert sink.bars.data["y_high"] == [15.0] and sink.bars.data["y_low"] == [10.0]
    assert sink.forming.data["t"] == [float(T0 + 1_000)]


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
    """With the default interval a trade reaches the forming source within
    one tick, and ticks are at most 0.5 s apart even with a slow step."""
    feed, pipeline, sink, step, wall = make_monitor_step()
    pump = UiPump(step)  # defaults
    assert pump.interval_s + 0.1 < 0.5
    feed.push("ETHUSDT", T0 + 10, 10.0)
    feed.push("BTCUSDT", T0 + 10, 20.0)
    wall["ms"] = T0 + 20
    pump.tick(now=0.0)
    feed.push("ETHUSDT", T0 + 30, 11.0)
    wall["ms"] = T0 + 40
    assert pump.tick(now=pump.interval_s)
    assert sink.forming.data["y_close"] == [11.0]


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
    assert len(pipeline.rows) == 20, "kernel-side rows must stay bounded"
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
    for k in range(12):
        feed.push("ETHUSDT", T0 + 1000 * k + 10, 10.0 + (k * 7) % 5)
        feed.push("BTCUSDT", T0 + 1000 * k + 10, 5.0)
    wall["ms"] = T0 + 12_500
    step(0.0)
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
