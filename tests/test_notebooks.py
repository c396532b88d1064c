"""Notebooks run headless under papermill with small parameters.

``live_monitor.ipynb`` with ``source=replay``: an in-process replay server
streams the synthetic pair into the ingester and the UI pump for a few
seconds; the printed summary and the tick store prove that bars were built and
nothing was dropped.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

pytestmark = pytest.mark.slow


def _summary(nb) -> dict:
    """The JSON summary the run cell prints."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text = out.get("text", "")
                start = text.find("{")
                if start >= 0 and '"pairs"' in text:
                    return json.loads(text[start:])
    raise AssertionError("the notebook printed no summary")


def _errors(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def test_live_monitor_is_committed_without_outputs():
    for path in [NOTEBOOKS / "live_monitor.ipynb"]:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, \
                    f"{path.name}: commit notebooks without outputs"


def test_live_monitor_parameters_cell_is_tagged():
    nb = nbformat.read(NOTEBOOKS / "live_monitor.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    src = tagged[0].source
    for name in ("source", "market", "symbol_y", "symbol_x", "timeframe", "window", "run_seconds",
                 "db_path", "ws_url", "rest_url", "rate"):
        assert f"\n{name} =" in "\n" + src, f"parameter {name} missing"


def test_live_monitor_runs_under_papermill_with_replay(tmp_path):
    out = tmp_path / "live_monitor.out.ipynb"
    db = tmp_path / "live.db"
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "live_monitor.ipynb"), str(out),
           "-p", "source", "replay", "-p", "run_seconds", "14", "-p", "rate", "200",
           "-p", "window", "4", "-p", "timeframe", "1s", "-p", "db_path", str(db),
           "--cwd", str(tmp_path), "-k", "python3", "--log-level", "WARNING",
           "--execution-timeout", "120"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"papermill failed ({out}):\n{proc.stderr[-4000:]}"
    nb = nbformat.read(out, as_version=4)
    assert _errors(nb) == [], f"errors in {out}"
    summary = _summary(nb)
    pair = summary["pairs"]["ETHUSDT/BTCUSDT"]
    # 14 s of 1 s bars at 200 trades/s: bars close on the exchange clock
    assert pair["bars"] >= 8, summary
    assert pair["trades_y"] > 100 and pair["trades_x"] > 100, summary
    assert pair["zscore"] is not None, "z-score (needs 7 bars at window=4) never became available"
    assert summary["ingest"]["dropped"] == 0, summary
    assert summary["ui_missed"] == 0, summary
    assert summary["pump_errors"] == 0 and summary["last_error"] is None, summary
    assert summary["pump_ticks"] >= 14 * 4, "the UI pump did not run at its rate"
    assert summary["running"] is False and summary["ingest"]["state"] == "stopped"
    # the ticks are in the store
    from quantlab.store import TickStore

    store = TickStore(db, read_only=True)
    try:
        bars = store.bars("ETHUSDT", "1s", market="spot")
        assert len(bars) >= pair["bars"]
    finally:
        getattr(store, "close", lambda: None)()
