"""The monitor's Report button (issue 9's ``quantlab.reports.start_report``):
it returns at once, the UI polls the background job without blocking, and a
link to the HTML file (relative to the notebook's folder) or the error shows
when it is done. A real store, a real background ``quantlab report`` process."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest

from quantlab.store import TickStore

T0 = 1_704_067_200_000  # 2024-01-01, ms


def _store_with_minutes(path, minutes: int = 400) -> None:
    """Two legs, four trades a minute each, cointegrated closes."""
    rng = np.random.default_rng(7)
    x = 40_000 * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes)))
    s = np.zeros(minutes)
    for i in range(1, minutes):
        s[i] = 0.8 * s[i - 1] + rng.normal(0, 2.0)
    y = 100 + 0.06 * x + s
    rows = []
    for sym, closes in (("BTCUSDT", x), ("ETHUSDT", y)):
        tid = 1
        for m, c in enumerate(closes):
            for k in range(4):
                t = T0 + 60_000 * m + 10_000 * k
                rows.append(("spot", sym, "trade", tid, t, t, float(c) * (1 + 1e-5 * (k - 2)),
                             0.5, bool(k % 2), None, None, None))
                tid += 1
    frame = pd.DataFrame(rows, columns=["market", "symbol", "kind", "trade_id", "time_ms",
                                        "recv_ms", "price", "qty", "is_buyer_maker",
                                        "trade_type", "first_trade_id", "last_trade_id"])
    with TickStore(path) as store:
        store.write_trades(frame)


@pytest.mark.slow
def test_report_button_starts_a_background_report_and_shows_a_link(tmp_path, monkeypatch):
    pytest.importorskip("quantlab.reports")
    from quantlab.ui.monitor import LiveMonitor, MonitorParams

    monkeypatch.chdir(tmp_path)  # the notebook's folder: links are relative to it
    db = tmp_path / "live.db"
    _store_with_minutes(db)
    m = LiveMonitor(MonitorParams(db_path=str(db), timeframe="1m", window=30,
                                  hedge="rolling-ols", export_dir=str(tmp_path / "exports")))
    t0 = time.monotonic()
    m.b_report.click()
    took = time.monotonic() - t0
    assert m.last_error is None, m.last_error
    assert took < 2.0, f"the Report button blocked the kernel for {took:.1f} s"
    assert m.b_report.disabled and "building the report" in m.report_link.value

    async def wait():  # the poll task runs on this loop while the feed is stopped
        m._report_task = asyncio.get_running_loop().create_task(m._poll_report_loop())
        deadline = time.monotonic() + 240
        while m._report is not None:
            assert time.monotonic() < deadline, "the background report did not finish"
            t = time.monotonic()
            await asyncio.sleep(0.05)
            assert time.monotonic() - t < 1.0, "the loop was blocked while the report ran"

    asyncio.run(wait())
    value = m.report_link.value
    assert "report ready" in value, value
    href = value.split("href='")[1].split("'")[0]
    assert href.startswith("exports/report-ETHUSDT-BTCUSDT-1m-") and href.endswith(".html")
    assert (tmp_path / href).stat().st_size > 10_000
    assert not m.b_report.disabled


def test_report_errors_show_one_line_and_a_running_job_is_never_waited_for(tmp_path):
    """The poll shows the job's one-line error; while the job runs, polling
    returns at once (the contract: ``poll()`` is None until done)."""
    from types import SimpleNamespace

    from quantlab.ui.monitor import LiveMonitor, MonitorParams

    class Job:  # the contract of quantlab.reports.ReportJob.poll
        def __init__(self):
            self.result = None

        def poll(self):
            return self.result

    m = LiveMonitor(MonitorParams(db_path=str(tmp_path / "x.db"), timeframe="1m"))
    job = Job()
    m._report = (job, tmp_path / "r.html", time.monotonic())
    m.b_report.disabled = True
    t0 = time.perf_counter()
    m._poll_report()
    assert time.perf_counter() - t0 < 0.05 and m._report is not None and m.b_report.disabled
    job.result = SimpleNamespace(ok=False, html=None, error="no bars for ETHUSDT in x.db")
    m._poll_report()
    assert m._report is None and not m.b_report.disabled
    assert "report failed: no bars for ETHUSDT in x.db" in m.report_link.value
    assert "Traceback" not in m.report_link.value
