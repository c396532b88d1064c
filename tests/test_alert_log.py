"""The alert log lives in the store: persisted events survive a restart and export."""
from __future__ import annotations

import numpy as np
import pandas as pd

from quantlab.alerts import AlertEngine, replay_alerts
from quantlab.export import export_frame
from quantlab.store import TickStore


def test_alert_events_persist_across_restart(tmp_path):
    db = tmp_path / "alerts.db"
    z = np.sin(np.linspace(0, 6 * np.pi, 300)) * 3  # three periods: crosses 2 upwards 3 times
    with TickStore(db) as store:
        engine = AlertEngine(["zscore > 2", "zscore < -2"], "BTCUSDT/ETHUSDT", sinks=[store.alert_sink()])
        fired = []
        for i, value in enumerate(z):
            fired += engine.evaluate(1_700_000_000_000 + i * 60_000, {"zscore": float(value)})
    assert len(fired) == 6
    with TickStore(db, read_only=True) as store:  # a new process/session reads the same log
        log = store.alerts("BTCUSDT/ETHUSDT")
    assert len(log) == 6
    assert list(log["time_ms"]) == sorted((e.time_ms for e in fired), reverse=True)  # newest first
    assert set(log["rule"]) == {"zscore > 2", "zscore < -2"}
    assert (log.loc[log["rule"] == "zscore > 2", "value"] > 2).all()
    assert isinstance(log["time"].dtype, pd.DatetimeTZDtype)
    # replaying the same rules over the same series gives the same events
    frame = pd.DataFrame({"zscore": z}, index=pd.to_datetime(1_700_000_000_000 + np.arange(300) * 60_000,
                                                             unit="ms", utc=True))
    replayed = replay_alerts(frame, ["zscore > 2", "zscore < -2"], "BTCUSDT/ETHUSDT")
    assert sorted(replayed["time_ms"]) == sorted(log["time_ms"])
    out = export_frame(log.set_index("time"), tmp_path / "alerts.csv", metadata={"kind": "alert log"})
    assert len(pd.read_csv(out)) == 6
    with TickStore(db) as store:
        assert len(store.alerts(since_ms=int(log["time_ms"].iloc[0]))) == 1
        assert len(store.alerts(limit=2)) == 2
