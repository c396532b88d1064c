"""`quantlab demo` launches a replay server and JupyterLab on the live monitor
pointed at it; SIGTERM stops both. (The live behaviour of the notebook itself is
proven by tests/test_browser.py and tests/test_notebooks.py.)"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import nbformat
import pytest

from tests.conftest import ROOT
from tests.test_notebooks import _summary
from tests.util import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def test_demo_starts_replay_and_jupyterlab_on_the_monitor(tmp_path):
    port = _free_port()
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    proc = subprocess.Popen([sys.executable, "-m", "quantlab", "demo", "--no-browser", "--port", str(port),
                             "--db", str(tmp_path / "demo.db"), "--rate", "200"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["ws"].startswith("ws://127.0.0.1:") and first["db"] == str(tmp_path / "demo.db")
        rows = wait_until(lambda: _get_json(first["rest"] + "/api/v3/aggTrades?symbol=BTCUSDT&limit=5"),
                          timeout=20, message="replay REST serving trades")
        assert len(rows) >= 1 and float(rows[0]["p"]) > 0
        info = wait_until(lambda: _get_json(f"http://127.0.0.1:{port}/api"), timeout=60,
                          message="JupyterLab answering")
        assert "version" in info
        from quantlab.store import TickStore

        with TickStore(first["db"], read_only=True) as store:  # ten minutes of history seeded
            bars = store.bars_1s("BTCUSDT")
            assert (bars.index[-1] - bars.index[0]).total_seconds() > 500
        # The notebook as the demo's JupyterLab runs it (same QUANTLAB_* environment):
        # history loads on start, so the z-score is live within seconds, nothing dropped.
        out_nb = tmp_path / "run.ipynb"
        nb_env = {**env, "QUANTLAB_SOURCE": "replay", "QUANTLAB_WS_URL": first["ws"],
                  "QUANTLAB_REST_URL": first["rest"], "QUANTLAB_DB": first["db"]}
        run = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "live_monitor.ipynb"),
                              str(out_nb), "-p", "run_seconds", "5", "--cwd", str(ROOT / "notebooks")],
                             env=nb_env, capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr[-3000:]
        summary = _summary(nbformat.read(out_nb, as_version=4))
        pair = summary["pairs"]["ETHUSDT/BTCUSDT"]
        assert pair["bars"] >= 200, summary  # the seeded history is on the plots at once
        assert pair["zscore"] is not None and abs(pair["zscore"]) < 50, summary
        assert summary["ingest"]["dropped"] == 0 and summary["pump_errors"] == 0, summary
        overrides = json.loads((ROOT / ".venv" / "share" / "jupyter" / "lab" / "settings" /
                                "overrides.json").read_text()) if (ROOT / ".venv").is_dir() else None
        if overrides is not None and sys.prefix != sys.base_prefix:
            assert overrides["@jupyterlab/notebook-extension:tracker"]["autoStartDefaultKernel"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("demo did not stop within 30 s of SIGTERM")
    assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), proc.stderr.read()[-2000:]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2)


def test_terminal_demo_ingests_and_reports(tmp_path):
    out = subprocess.run([sys.executable, "-m", "quantlab", "demo", "--terminal", "--duration", "6",
                          "--db", str(tmp_path / "t.db"), "--rate", "200"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "live" in out.stdout and "dropped 0" in out.stdout
    assert "1s bars in" in out.stdout or "not enough stored data" in out.stdout
