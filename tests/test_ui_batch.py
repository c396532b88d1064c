"""The batch path of the monitor (quantlab.ui.batch): rows of many bars at once
from quantlab.analytics.analyze, live states seeded to continue after them.

* seeded state == replayed state: after seeding on N bars, the next bars give
  the values a state fed all N bars one by one gives, for every hedge method;
* rows rebuilt on the batch path == rows committed one by one (the live path);
* corrected alerts are marked in the store's log.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from quantlab.ui.analytics import make_state
from quantlab.ui.batch import seed_state
from quantlab.ui.pipeline import ANALYTICS_COLUMNS, PairPipeline, PairSpec

HEDGES = ("rolling-ols", "ols", "huber", "theil-sen", "kalman")
KEYS = ("beta", "alpha", "spread", "spread_mean", "spread_std", "zscore", "corr", "half_life")


def _pair(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = 30_000 + np.cumsum(rng.normal(0, 5, n))
    s = np.zeros(n)
    for i in range(1, n):  # OU spread
        s[i] = 0.9 * s[i - 1] + rng.normal(0, 1.0)
    y = 100 + 0.05 * x + s
    t = 1_700_000_000_000 + 1000 * np.arange(n, dtype=np.int64)
    return t, y, x


def _close(a: float, b: float, rtol: float = 1e-7, atol: float = 1e-7) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


@pytest.mark.parametrize("hedge", HEDGES)
def test_seeded_state_equals_replayed_state(hedge):
    window, n, more = 20, 700, 60   # Kalman: 500 warm-up bars, then filtering
    t, y, x = _pair(n + more)
    spec = PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", window=window, hedge=hedge)
    replayed = make_state(spec, hedge)
    for i in range(n):
        replayed.update(int(t[i]), y[i], x[i])
    seeded = seed_state(lambda: make_state(spec, hedge), hedge, t[:n], y[:n], x[:n],
                        window=window)
    bad = []
    for i in range(n, n + more):
        a = seeded.update(int(t[i]), y[i], x[i])
        b = replayed.update(int(t[i]), y[i], x[i])
        bad += [(i, k, a[k], b[k]) for k in KEYS if not _close(a[k], b[k])]
        pa, pb = seeded.peek(y[i] + 1, x[i]), replayed.peek(y[i] + 1, x[i])
        bad += [(i, "peek " + k, pa[k], pb[k]) for k in KEYS if not _close(pa[k], pb[k])]
    assert not bad, f"{len(bad)} values differ, e.g. {bad[:4]}"
    assert seeded.shortfall() == replayed.shortfall() == []


def _bars_frames(t, y, x):
    import pandas as pd

    idx = pd.DatetimeIndex(pd.to_datetime(t, unit="ms", utc=True), name="open_time")

    def frame(c):
        return pd.DataFrame({"open": c, "high": c + 0.5, "low": c - 0.5, "close": c,
                             "volume": np.ones_like(c), "quote_volume": c,
                             "trade_count": np.full(c.size, 3, dtype=np.int64),
                             "vwap": c, "taker_buy_volume": np.zeros_like(c),
                             "is_empty": np.zeros(c.size, bool),
                             "is_forming": np.zeros(c.size, bool)}, index=idx)
    return frame(y), frame(x)


@pytest.mark.parametrize("hedge", ["rolling-ols", "huber", "kalman"])
def test_batch_rows_equal_rows_committed_one_by_one(hedge):
    t, y, x = _pair(900, seed=4)
    # every bar kept: the expanding OLS and the Kalman filter depend on all of them
    spec = PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", window=20, hedge=hedge,
                    max_bars=1000)
    batch = PairPipeline(spec)
    batch.add_bars(*_bars_frames(t, y, x))
    live = PairPipeline(spec)
    for i in range(t.size):
        live._commit(int(t[i]), (y[i], y[i] + .5, y[i] - .5, y[i], 1.0, y[i], 3),
                     (x[i], x[i] + .5, x[i] - .5, x[i], 1.0, x[i], 3), evaluate_alerts=False)
    a, b = batch.plot_rows(), live.plot_rows()
    assert len(a) == len(b) == 900 and [r["t"] for r in a] == [r["t"] for r in b]
    a, b = a[510:], b[510:]  # past the Kalman warm-up (its last bar differs by design)
    bad = [(r["t"], k, r[k], s[k]) for r, s in zip(a, b) for k in ANALYTICS_COLUMNS
           if not _close(r[k], s[k], rtol=1e-6, atol=1e-6)]
    assert not bad, f"{len(bad)} values differ, e.g. {bad[:4]}"
    # the next live bar continues identically
    ra, _ = batch._commit(int(t[-1]) + 1000, (y[-1],) * 4 + (1.0, y[-1], 3),
                          (x[-1] + 3,) * 4 + (1.0, x[-1], 3), evaluate_alerts=False)
    rb, _ = live._commit(int(t[-1]) + 1000, (y[-1],) * 4 + (1.0, y[-1], 3),
                         (x[-1] + 3,) * 4 + (1.0, x[-1], 3), evaluate_alerts=False)
    assert all(_close(ra[k], rb[k], rtol=1e-6, atol=1e-6) for k in ANALYTICS_COLUMNS)


def test_kalman_is_live_at_once_with_history_and_says_when_warming_up():
    t, y, x = _pair(700, seed=2)
    spec = PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", window=20, hedge="kalman",
                    max_bars=600)
    p = PairPipeline(spec)
    p.add_bars(*_bars_frames(t[:120], y[:120], x[:120]))
    assert "Kalman warming up: 120 of 500 bars" in p.readiness()
    p = PairPipeline(spec)
    p.add_bars(*_bars_frames(t, y, x))
    assert not any("Kalman" in line for line in p.readiness())
    assert math.isfinite(p.rows[-1]["zscore"]) and math.isfinite(p.rows[-1]["beta_kalman"])


def test_window_change_with_10000_bars_recomputes_from_the_batch_path():
    t, y, x = _pair(10_000, seed=3)
    spec = PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", window=60, max_bars=10_000)
    p = PairPipeline(spec)
    p.add_bars(*_bars_frames(t, y, x))
    rows = p.reconfigure(window=30)
    assert len(rows) == 10_000
    ref = PairPipeline(PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", window=30,
                                max_bars=10_000))
    ref.add_bars(*_bars_frames(t, y, x))
    assert all(_close(a["zscore"], b["zscore"]) for a, b in zip(rows, ref.plot_rows()))


def test_corrected_alerts_are_marked_in_the_store_log(tmp_path):
    from quantlab.alerts import AlertEngine, corrected_event, is_corrected
    from quantlab.store import TickStore

    with TickStore(tmp_path / "a.db") as store:
        eng = AlertEngine(["zscore > 2"], "A/B", sinks=[store.alert_sink()])
        ev = eng.evaluate(1_000, {"zscore": 3.0})[0]
        store.append_alerts([corrected_event(ev), corrected_event(ev, withdrawn=True)])
        log = store.alerts("A/B")
    assert log["corrected"].tolist() == [False, True, True][::-1] or \
        sorted(log["corrected"].tolist()) == [False, True, True]
    assert log["message"].str.startswith("[withdrawn] ").sum() == 1
    assert is_corrected(corrected_event(ev)) and not is_corrected(ev)


def test_resync_inserts_missing_bars_and_marks_corrected_alerts():
    """The store holds a spike the feed missed and bars it never showed: the
    resync inserts them, recomputes z, and the alert the spike fires is sent
    to the sinks marked [corrected]; undoing it withdraws the alert."""
    t, y, x = _pair(400, seed=9)
    spec = PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", window=20, max_bars=1000,
                    rules=("zscore > 4",))
    p = PairPipeline(spec)
    got = []
    p.set_alert_sinks([got.append])
    keep = np.ones(t.size, bool)
    keep[300:310] = False                 # ten bars the feed never delivered
    p.add_bars(*_bars_frames(t[keep], y[keep], x[keep]))
    assert len(p.rows) == 395  # the first 5 missing carried (align_pair), then a hole
    y2 = y.copy()
    y2[305] += 40.0                       # ... one of them a spike
    res = p.resync(*_bars_frames(t, y2, x))
    assert res is not None and res.t_from == int(t[300])
    assert (res.inserted, res.corrected) == (5, 5)  # the hole filled, the carried bars real
    assert [r["t"] for r in p.rows] == [float(v) for v in t]
    z = {int(r["t"]): r["zscore"] for r in p.rows}
    assert z[int(t[305])] > 4
    ref = PairPipeline(spec)
    ref.add_bars(*_bars_frames(t, y2, x))  # the same bars loaded at once: same analytics
    assert all(_close(a["zscore"], b["zscore"]) for a, b in zip(p.rows, ref.rows))
    fired = [ev for ev in got if ev.time_ms == int(t[305])]
    assert fired and all(ev.message.startswith("[corrected] ") for ev in fired)
    assert any(ev.message.startswith("[corrected] ") for ev in p.alerts.events)
    got.clear()
    res = p.resync(*_bars_frames(t, y, x))  # the store's bars were the calm ones after all
    assert res is not None and res.corrected == 1 and res.inserted == 0
    assert [ev.message[:12] for ev in got if ev.time_ms == int(t[305])] == ["[withdrawn] "]
    assert p.resync(*_bars_frames(t, y, x)) is None  # nothing left to change


@pytest.mark.parametrize("hedge", ["ols", "kalman", "huber"])
def test_hedge_change_equals_a_fresh_load_with_that_hedge(hedge):
    """A hedge change reuses the comparison ratios and their live states: the
    rows and the next live bar equal those of a pipeline loaded with it."""
    t, y, x = _pair(1200, seed=6)
    base = dict(symbol_y="ETHUSDT", symbol_x="BTCUSDT", window=20, max_bars=1000)
    p = PairPipeline(PairSpec(**base))
    p.add_bars(*_bars_frames(t, y, x))
    k = t.size - len(p.rows)  # the bars it keeps (plotted + warm-up) are its whole history
    rows = p.reconfigure(hedge=hedge)
    ref = PairPipeline(PairSpec(**base, hedge=hedge))
    ref.add_bars(*_bars_frames(t[k:], y[k:], x[k:]))
    bad = [(a["t"], k, a[k], b[k]) for a, b in zip(rows, ref.plot_rows())
           for k in ANALYTICS_COLUMNS if not _close(a[k], b[k], rtol=1e-6, atol=1e-6)]
    assert not bad, f"{len(bad)} values differ, e.g. {bad[:4]}"
    bar = (int(t[-1]) + 1000, (y[-1] + 1,) * 4 + (1.0, y[-1], 3), (x[-1],) * 4 + (1.0, x[-1], 3))
    ra, _ = p._commit(*bar, evaluate_alerts=False)
    rb, _ = ref._commit(*bar, evaluate_alerts=False)
    assert all(_close(ra[k], rb[k], rtol=1e-6, atol=1e-6) for k in ANALYTICS_COLUMNS)
