"""The live monitor's feature-table download: the same table as ``quantlab features``."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest

from quantlab.cli import main
from tests.test_features import _kline_files

pytest.importorskip("ipywidgets")


def test_features_button_writes_the_cli_table_and_offers_a_download(tmp_path, capsys):
    from quantlab.ui.monitor import LiveMonitor, MonitorParams

    files = _kline_files(tmp_path, n=400)
    m = LiveMonitor(MonitorParams(timeframe="1m", window=30, hedge="rolling-ols",
                                  db_path=str(tmp_path / "live.db"),
                                  export_dir=str(tmp_path / "exports")))
    m.load_files(files[0], files[1])
    assert m.last_error is None, m.last_error
    m.w_format.value = ".csv"
    m.b_features.click()
    assert m.last_error is None, m.last_error
    written = sorted((tmp_path / "exports").glob("features_*.csv"))
    assert len(written) == 1, list((tmp_path / "exports").iterdir())
    shown = pd.read_csv(written[0], comment="#", index_col=0)
    # the note links the file and carries the same bytes as a download
    note = m.message.value
    assert written[0].name in note
    data = re.search(r"href='data:text/csv;base64,([^']+)'", note)
    assert data, note
    assert base64.b64decode(data.group(1)) == written[0].read_bytes()

    out = tmp_path / "cli.csv"
    assert main(["features", "--files", *map(str, files), "--y", "ETHUSDT", "--x", "BTCUSDT",
                 "--timeframe", "1m", "--window", "30", "--out", str(out)]) == 0
    capsys.readouterr()
    cli = pd.read_csv(out, comment="#", index_col=0)
    assert list(shown.index) == list(cli.index) and len(shown) == 400
    assert not [c for c in shown.columns if c.startswith("label_")]
    # the monitor keeps no taker-buy volume: every other column is the CLI's, equal
    common = [c for c in cli.columns if c in shown.columns]
    assert set(cli.columns) - set(common) <= {"y_taker_buy_share", "x_taker_buy_share"}
    for col in ("zscore", "beta_kalman", "y_rsi_14", "x_bb_upper_20", "spread", "half_life"):
        assert col in common, col
    for col in common:
        np.testing.assert_allclose(shown[col].to_numpy(float), cli[col].to_numpy(float),
                                   rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=col)


def test_features_without_bars_is_one_clear_line_and_writes_nothing(tmp_path):
    from quantlab.ui.monitor import LiveMonitor, MonitorParams

    m = LiveMonitor(MonitorParams(timeframe="1m", window=30, db_path=str(tmp_path / "live.db"),
                                  export_dir=str(tmp_path / "exports")))
    m.b_features.click()
    assert "no bars yet" in m.message.value and "Traceback" not in m.message.value
    assert not (tmp_path / "exports").exists()
