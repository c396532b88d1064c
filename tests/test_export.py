"""quantlab.export: every format round-trips its table and its metadata."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pyarrow.parquet as pq
import pytest

import quantlab
from quantlab import export, schema
from quantlab.errors import ConfigError, DataFileError

META = {"symbols": ("BTCUSDT", "ETHUSDT"), "timeframe": "1m", "window": 120, "method": "ols",
        "start": pd.Timestamp("2024-01-01T01:00:00+01:00"), "hedge_ratio": np.float64(0.5)}


def bars(n: int = 5) -> pd.DataFrame:
    idx = schema.ms_to_utc_index(1_704_067_200_000 + 60_000 * np.arange(n))
    rng = np.random.default_rng(7)
    close = 42000 + rng.normal(0, 10, n).cumsum()
    frame = pd.DataFrame({
        "open": close - 0.1, "high": close + 1.0 / 3, "low": close - 1.5, "close": close,
        "volume": rng.uniform(0, 5, n), "quote_volume": rng.uniform(0, 5, n) * 42000,
        "trade_count": np.arange(n, dtype=np.int64), "vwap": close + 0.01,
        "taker_buy_volume": np.r_[np.nan, rng.uniform(0, 2, n - 1)],
        "is_empty": np.arange(n) == 0, "is_forming": np.zeros(n, bool),
    }, index=idx)
    return frame.astype(schema.BAR_DTYPES)


def ticks() -> pd.DataFrame:
    frame = pd.DataFrame({
        "market": ["usdm", "usdm"], "symbol": ["BTCUSDT", "BTCUSDT"], "kind": ["trade", "aggTrade"],
        "trade_id": [1, 2], "time_ms": [1723161255342, 1723161255343], "recv_ms": [0, 0],
        "price": [61837.63, 0.1 + 0.2], "qty": [0.02, 1e-8], "is_buyer_maker": [True, False],
        "trade_type": ["MARKET", None], "first_trade_id": [None, 7], "last_trade_id": [None, 9],
    })
    return frame.astype(schema.TICK_DTYPES)


def check_common_metadata(meta: dict, fmt: str, rows: int) -> None:
    assert meta["symbols"] == ["BTCUSDT", "ETHUSDT"] and meta["timeframe"] == "1m"
    assert meta["window"] == 120 and meta["method"] == "ols" and meta["hedge_ratio"] == 0.5
    assert meta["start"] == "2024-01-01T00:00:00Z"  # converted to UTC
    assert meta["quantlab_version"] == quantlab.__version__
    created = pd.Timestamp(meta["created_at"])
    assert meta["created_at"].endswith("Z") and abs(pd.Timestamp.now(tz="UTC") - created) < pd.Timedelta(minutes=5)
    assert meta["rows"] == rows and meta["format"] == fmt


def test_csv_round_trip_with_sidecar(tmp_path: Path) -> None:
    b = bars()
    out = export.export_frame(b, tmp_path / "bars.csv", metadata=META)
    assert out == tmp_path / "bars.csv"
    text = out.read_text()
    assert text.splitlines()[0] == "open_time," + ",".join(schema.BAR_COLUMNS)  # a plain table
    assert text.splitlines()[1].startswith("2024-01-01T00:00:00Z,")
    back = pd.read_csv(out)
    assert (pd.to_datetime(back.open_time, utc=True) == b.index).all()
    for c in ("open", "high", "close", "vwap", "quote_volume"):
        assert back[c].tolist() == b[c].tolist()  # full float precision
    assert np.isnan(back.taker_buy_volume[0]) and back.is_empty.tolist() == b.is_empty.tolist()
    meta = json.loads((tmp_path / "bars.meta.json").read_text())
    assert meta == export.read_metadata(out)
    check_common_metadata(meta, "csv", 5)
    assert meta["time_range"] == ["2024-01-01T00:00:00Z", "2024-01-01T00:04:00Z"]


def test_json_shape_and_round_trip(tmp_path: Path) -> None:
    b = bars()
    out = export.export_frame(b, tmp_path / "bars.json", metadata=META)
    doc = json.loads(out.read_text())
    assert set(doc) == {"metadata", "rows"}
    check_common_metadata(doc["metadata"], "json", 5)
    rows = doc["rows"]
    assert len(rows) == 5 and list(rows[0]) == ["open_time", *schema.BAR_COLUMNS]
    assert rows[0]["open_time"] == "2024-01-01T00:00:00Z"
    assert rows[0]["taker_buy_volume"] is None  # NaN -> null
    assert rows[0]["is_empty"] is True and rows[2]["trade_count"] == 2
    assert [r["close"] for r in rows] == b.close.tolist()


def test_json_ticks_nulls(tmp_path: Path) -> None:
    out = export.export_frame(ticks(), tmp_path / "t.json", metadata={"symbols": ["BTCUSDT"]})
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["first_trade_id"] is None and rows[1]["first_trade_id"] == 7
    assert rows[1]["trade_type"] is None and rows[1]["price"] == 0.1 + 0.2
    assert rows[1]["qty"] == 1e-8


def test_parquet_round_trip_and_key_value_metadata(tmp_path: Path) -> None:
    b = bars()
    out = export.export_frame(b, tmp_path / "bars.parquet", metadata=META)
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, b, check_index_type=False)
    assert str(back.index.tz) == "UTC"
    kv = pq.read_schema(out).metadata
    meta = json.loads(kv[b"quantlab"])
    check_common_metadata(meta, "parquet", 5)
    assert export.read_metadata(out) == meta


def test_parquet_ticks_keep_nullable_ids(tmp_path: Path) -> None:
    t = ticks()
    back = pd.read_parquet(export.export_frame(t, tmp_path / "t.parquet", metadata={}))
    assert back.first_trade_id.isna().tolist() == [True, False]
    assert back.trade_id.tolist() == [1, 2] and back.price.tolist() == t.price.tolist()


def test_xlsx_data_and_metadata_sheets(tmp_path: Path) -> None:
    b = bars()
    out = export.export_frame(b, tmp_path / "bars.xlsx", metadata=META)
    assert openpyxl.load_workbook(out, read_only=True).sheetnames == ["data", "metadata"]
    back = pd.read_excel(out, sheet_name="data")
    # Excel has no time zones: naive datetimes in UTC.
    assert (back.open_time == b.index.tz_localize(None)).all()
    # openpyxl writes floats with 16 significant digits (Excel itself keeps 15).
    np.testing.assert_allclose(back.close, b.close, rtol=1e-15, atol=0)
    meta = export.read_metadata(out)
    check_common_metadata(meta, "xlsx", 5)
    assert meta["timezone"] == "UTC"


def test_xlsx_row_limit_is_a_config_error_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(export, "XLSX_MAX_ROWS", 3)
    with pytest.raises(ConfigError, match=r"export to \.parquet or \.csv instead"):
        export.export_frame(bars(5), tmp_path / "big.xlsx", metadata={})
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temp file


def test_datetime_columns_iso_utc_in_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "naive": pd.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:01"]),
        "aware": pd.to_datetime(["2024-01-01T02:00:00.250+02:00", None], utc=True),
        "x": [1.5, 2.5],
    })
    out = export.export_frame(frame, tmp_path / "t.csv", metadata={})
    back = pd.read_csv(out, keep_default_na=False)
    assert back.naive.tolist() == ["2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z"]
    assert back.aware.tolist() == ["2024-01-01T00:00:00.250Z", ""]
    assert "time_range" not in export.read_metadata(out)  # no DatetimeIndex to take it from


def test_overwrite_and_parent_folders_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.csv"
    export.export_frame(bars(3), target, metadata={"run": 1})
    export.export_frame(bars(2), target, metadata={"run": 2})
    assert len(pd.read_csv(target)) == 2 and export.read_metadata(target)["run"] == 2


@pytest.mark.parametrize("name", ["x.txt", "x.xls", "x"])
def test_unknown_extension_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"a file name ending in \.csv, \.parquet, \.json, \.xlsx"):
        export.export_frame(bars(), tmp_path / name, metadata={})


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metadata"):
        export.export_frame(bars(), tmp_path / "x.csv", metadata=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="frame"):
        export.export_frame([1, 2], tmp_path / "x.csv", metadata={})  # type: ignore[arg-type]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataFileError, match="cannot write"):
        export.export_frame(bars(), blocker / "x.csv", metadata={})


def test_read_metadata_of_foreign_file(tmp_path: Path) -> None:
    p = tmp_path / "plain.csv"
    p.write_text("a\n1\n")
    with pytest.raises(DataFileError, match="no metadata sidecar plain.meta.json"):
        export.read_metadata(p)


def test_default_filename() -> None:
    assert export.default_filename("analyze", ["BTCUSDT", "ETHUSDT"], "1m", "2022-01-01T00:00",
                                   "2023-12-31T23:59", "csv") == \
        "analyze_BTCUSDT-ETHUSDT_1m_20220101T0000-20231231T2359.csv"
    # Times are converted to UTC; symbols upper-cased; ext with a dot accepted.
    assert export.default_filename("backtest", "ethusdt", "1s", "2024-08-09T01:54+02:00",
                                   pd.Timestamp("2024-08-09T00:05Z"), ".xlsx") == \
        "backtest_ETHUSDT_1s_20240808T2354-20240809T0005.xlsx"
    with pytest.raises(ConfigError, match="ext"):
        export.default_filename("a", "X", "1m", "2024-01-01", "2024-01-02", "txt")
    with pytest.raises(ConfigError, match="at or after start"):
        export.default_filename("a", "X", "1m", "2024-01-02", "2024-01-01", "csv")
    with pytest.raises(ConfigError, match="start"):
        export.default_filename("a", "X", "1m", "not a time", "2024-01-01", "csv")
    with pytest.raises(ConfigError, match="symbols"):
        export.default_filename("a", [], "1m", "2024-01-01", "2024-01-01", "csv")
