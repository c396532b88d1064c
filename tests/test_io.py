"""quantlab.files (formerly quantlab.io): files the tests build in Binance's exact shapes, plus the real data in
../shared/data (through the ``shared_data`` fixture, which skips with a reason)."""
from __future__ import annotations

import csv
import functools
import gzip
import io as _io
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantlab import files as io, schema
from quantlab.errors import DataFileError, QuantlabError, UnknownSymbol

T0 = 1723161255342  # 2024-08-08T23:54:15.342Z, ms


# ----------------------------------------------------------------------------------
# builders
# ----------------------------------------------------------------------------------
def write(path: Path, text: str, how: str = "csv") -> Path:
    """Write ``text`` as plain, gzip or zip (one member named like the file) at ``path``."""
    data = text.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "gz":
        path.write_bytes(gzip.compress(data))
    elif how == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(path.name.removesuffix(".zip") + ".csv", data)
    else:
        path.write_bytes(data)
    return path


def spot_trades(n: int = 5, t0: int = T0, unit: int = 1, first_id: int = 100) -> str:
    rows = []
    for i in range(n):
        price, qty = 61837.63 + i, 0.02 * (i + 1)
        rows.append(f"{first_id + i},{price:.8f},{qty:.8f},{price * qty:.8f},{(t0 + 10 * i) * unit},"
                    f"{'True' if i % 2 else 'False'},True")
    return "\n".join(rows) + "\n"


def usdm_trades(n: int = 5, header: bool = True, zero_rows: tuple[int, ...] = ()) -> str:
    rows = ["id,price,qty,quote_qty,time,is_buyer_maker"] if header else []
    for i in range(n):
        price, qty = (0.0, 0.0) if i in zero_rows else (61800.3 + i, 0.006 * (i + 1))
        rows.append(f"{5000 + i},{price:.2f},{qty:.3f},{price * qty:.4f},{T0 + i},{'true' if i % 2 else 'false'}")
    return "\n".join(rows) + "\n"


def kline_rows(start_ms: int, n: int, unit: int = 1, price: float = 100.0, zero_at: tuple[int, ...] = ()) -> list[str]:
    rows = []
    for i in range(n):
        o = price + i
        vol, count = (0.0, 0) if i in zero_at else (2.0 + i, 10 + i)
        c = o if i in zero_at else o + 0.5
        rows.append(f"{(start_ms + 60_000 * i) * unit},{o},{c + 1},{o - 1},{c},{vol},"
                    f"{(start_ms + 60_000 * i + 59_999) * unit},{vol * (o + 0.25)},{count},{vol / 2},"
                    f"{vol / 2 * o},0")
    return rows


KLINE_HEADER = ",".join(io.KLINE_COLUMNS)
DAY = 1_704_067_200_000  # 2024-01-01T00:00Z, ms


def assert_ticks_shape(df: pd.DataFrame) -> None:
    assert tuple(df.columns) == schema.TICK_COLUMNS
    assert df.dtypes.equals(schema.empty_ticks().dtypes), df.dtypes


def assert_bars_shape(df: pd.DataFrame) -> None:
    assert tuple(df.columns) == schema.BAR_COLUMNS
    assert df.dtypes.equals(schema.empty_bars().dtypes), df.dtypes
    assert df.index.name == schema.BAR_INDEX
    assert isinstance(df.index, pd.DatetimeIndex) and str(df.index.tz) == "UTC"
    assert df.index.is_monotonic_increasing and df.index.is_unique
    assert not df["is_forming"].any()


# ----------------------------------------------------------------------------------
# data.binance.vision trades
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["csv", "gz", "zip"])
def test_spot_trades_headerless_any_compression(tmp_path: Path, how: str) -> None:
    suffix = {"csv": ".csv", "gz": ".csv.gz", "zip": ".zip"}[how]
    p = write(tmp_path / f"BTCUSDT-trades-2024-08-08{suffix}", spot_trades(5), how)
    df = io.load_trades(p)
    assert_ticks_shape(df)
    assert len(df) == 5
    assert set(df.market) == {"spot"} and set(df.symbol) == {"BTCUSDT"} and set(df.kind) == {"trade"}
    assert df.trade_id.tolist() == [100, 101, 102, 103, 104]
    assert df.time_ms.tolist() == [T0 + 10 * i for i in range(5)]
    assert df.is_buyer_maker.tolist() == [False, True, False, True, False]
    assert df.trade_type.isna().all() and df.first_trade_id.isna().all()
    assert (df.recv_ms == 0).all()
    assert df.price.iloc[0] == 61837.63 and df.qty.iloc[1] == 0.04


def test_usdm_trades_with_header_marked_market_and_na(tmp_path: Path) -> None:
    p = write(tmp_path / "BTCUSDT-trades-2024-08-08.csv", usdm_trades(4, zero_rows=(2,)))
    df = io.load_trades(p)
    assert_ticks_shape(df)
    assert set(df.market) == {"usdm"}
    # No X column in the archive: positive price and qty -> MARKET, zero -> NA.
    assert df.trade_type.tolist() == ["MARKET", "MARKET", "NA", "MARKET"]
    assert df.is_buyer_maker.tolist() == [False, True, False, True]


def test_usdm_trades_headerless_old_archive(tmp_path: Path) -> None:
    p = write(tmp_path / "ETHUSDT-trades-2021-01-01.csv.gz", usdm_trades(3, header=False), "gz")
    df = io.load_trades(p)
    assert len(df) == 3 and set(df.market) == {"usdm"} and set(df.symbol) == {"ETHUSDT"}


def test_microsecond_times_detected_by_magnitude(tmp_path: Path) -> None:
    ms = io.load_trades(write(tmp_path / "a" / "BTCUSDT-trades-2024-12-31.csv", spot_trades(4, unit=1)))
    us = io.load_trades(write(tmp_path / "b" / "BTCUSDT-trades-2024-12-31.csv", spot_trades(4, unit=1000)))
    assert us.time_ms.tolist() == ms.time_ms.tolist() == [T0 + 10 * i for i in range(4)]


def test_microsecond_fraction_is_floored_to_ms(tmp_path: Path) -> None:
    text = f"1,100.0,1.0,100.0,{T0 * 1000 + 999},True,True\n"
    df = io.load_trades(write(tmp_path / "BTCUSDT-trades-2025-01-01.csv", text))
    assert df.time_ms.tolist() == [T0]


def test_trades_out_of_order_and_duplicates_sorted_and_deduplicated(tmp_path: Path) -> None:
    text = (f"3,1.0,1.0,1.0,{T0 + 2},True,True\n1,1.0,1.0,1.0,{T0},True,True\n"
            f"2,1.0,1.0,1.0,{T0 + 1},True,True\n1,1.0,1.0,1.0,{T0},True,True\n")
    df = io.load_trades(write(tmp_path / "BTCUSDT-trades-2024-08-08.csv", text))
    assert df.trade_id.tolist() == [1, 2, 3]


def test_spot_agg_trades_invalid_rows_dropped(tmp_path: Path) -> None:
    text = (f"10,100.5,1.5,20,22,{T0},True,True\n"
            f"11,0,0,-1,-1,{T0 + 1},False,True\n"          # placeholder row (BINANCE.md)
            f"12,100.6,0.5,23,23,{T0 + 2},False,True\n")
    df = io.load_trades(write(tmp_path / "BTCUSDT-aggTrades-2024-08-08.zip", text, "zip"))
    assert_ticks_shape(df)
    assert df.trade_id.tolist() == [10, 12]
    assert set(df.kind) == {"aggTrade"} and set(df.market) == {"spot"}
    assert df.first_trade_id.tolist() == [20, 23] and df.last_trade_id.tolist() == [22, 23]
    assert df.trade_type.isna().all()


def test_usdm_agg_trades_with_header(tmp_path: Path) -> None:
    text = ("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
            f"7,61800.3,0.1,70,71,{T0},true\n8,0,0,-1,-1,{T0},false\n")
    df = io.load_trades(write(tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv", text))
    assert df.trade_id.tolist() == [7] and set(df.market) == {"usdm"}


def test_usdm_agg_trades_headerless(tmp_path: Path) -> None:
    text = f"7,61800.3,0.1,70,71,{T0},true\n"
    lf = io.load_file(write(tmp_path / "BTCUSDT-aggTrades-2021-08-08.csv", text))
    assert (lf.format, lf.market, len(lf.frame)) == ("aggTrades", "usdm", 1)


@pytest.mark.parametrize("rel, symbol, market", [
    ("BTCUSDT-trades-2024-08-08.zip", "BTCUSDT", "spot"),
    ("BTCUSDT-trades-spot-2024-08-08T2354_2024-08-09T0005.csv", "BTCUSDT", "spot"),
    ("data/spot/daily/trades/SOLUSDT/SOLUSDT-trades-2024-08-08.zip", "SOLUSDT", "spot"),
    ("data/spot/daily/trades/SOLUSDT/renamed.csv", "SOLUSDT", "spot"),
])
def test_symbol_and_market_from_name(tmp_path: Path, rel: str, symbol: str, market: str) -> None:
    p = tmp_path / rel
    write(p, spot_trades(2), "zip" if rel.endswith(".zip") else "csv")
    lf = io.load_file(p)
    assert (lf.format, lf.symbol, lf.market, lf.is_bars) == ("trades", symbol, market, False)
    assert set(lf.frame.symbol) == {symbol}


def test_market_from_futures_folder_for_klines(tmp_path: Path) -> None:
    p = write(tmp_path / "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2021-01-01.csv",
              "\n".join(kline_rows(DAY, 3)) + "\n")
    lf = io.load_file(p)
    assert (lf.format, lf.symbol, lf.market, lf.is_bars) == ("klines", "BTCUSDT", "usdm", True)


def test_symbol_needed_when_name_says_nothing(tmp_path: Path) -> None:
    p = write(tmp_path / "download.csv", spot_trades(2))
    with pytest.raises(DataFileError, match=r"pass symbol='BTCUSDT'") as err:
        io.load_trades(p)
    assert err.value.path == str(p)
    df = io.load_trades(p, symbol="ethusdt")
    assert set(df.symbol) == {"ETHUSDT"}


def test_explicit_market_contradicting_columns_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path / "BTCUSDT-trades-2024-08-08.csv", spot_trades(2))
    with pytest.raises(DataFileError, match=r"spot trades, but market='usdm'"):
        io.load_trades(p, market="usdm")


def test_bad_value_in_archive_names_line_and_column(tmp_path: Path) -> None:
    lines = spot_trades(5).splitlines()
    lines[3] = lines[3].replace("61840.63000000", "61840.6x")
    p = write(tmp_path / "BTCUSDT-trades-2024-08-08.csv.gz", "\n".join(lines) + "\n", "gz")
    with pytest.raises(DataFileError) as err:
        io.load_trades(p)
    assert (err.value.line, err.value.column) == (4, "price")
    assert "'61840.6x' is not a number" in str(err.value)
    assert err.value.__cause__ is not None  # the pyarrow error is chained, not shown raw


def test_short_row_in_archive_names_line(tmp_path: Path) -> None:
    text = usdm_trades(3) + "5003,1.0,2.0\n"
    with pytest.raises(DataFileError, match=r"line 5: expected 6 fields"):
        io.load_trades(write(tmp_path / "BTCUSDT-trades-2024-08-08.csv", text))


def test_damaged_archives_raise_data_file_error(tmp_path: Path) -> None:
    gz = tmp_path / "BTCUSDT-trades-2024-08-08.csv.gz"
    gz.write_bytes(gzip.compress(spot_trades(50).encode())[:-30])
    with pytest.raises(DataFileError, match="damaged or truncated"):
        io.load_trades(gz)
    zp = tmp_path / "BTCUSDT-trades-2024-08-09.zip"
    zp.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataFileError, match="cannot read zip"):
        io.load_trades(zp)
    with pytest.raises(DataFileError, match="no such file"):
        io.load_trades(tmp_path / "missing.csv")


def test_unrecognised_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"line 1: unrecognised header"):
        io.load_file(write(tmp_path / "x.csv", "foo,bar\n1,2\n"))
    with pytest.raises(DataFileError, match="file is empty"):
        io.load_file(write(tmp_path / "y.csv", "\n\n"))


def test_load_trades_refuses_bars(tmp_path: Path) -> None:
    p = write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", "\n".join(kline_rows(DAY, 2)) + "\n")
    with pytest.raises(DataFileError, match="use load_klines"):
        io.load_trades(p)


# ----------------------------------------------------------------------------------
# klines
# ----------------------------------------------------------------------------------
def test_klines_header_and_headerless_give_the_same_bars(tmp_path: Path) -> None:
    rows = kline_rows(DAY, 5, zero_at=(3,))
    a = io.load_klines(write(tmp_path / "a" / "BTCUSDT-1m-2024-01-01.csv.gz", KLINE_HEADER + "\n" + "\n".join(rows) + "\n", "gz"))
    b = io.load_klines(write(tmp_path / "b" / "BTCUSDT-1m-2024-01-01.zip", "\n".join(rows) + "\n", "zip"))
    assert_bars_shape(a)
    pd.testing.assert_frame_equal(a, b)
    assert a.index[0] == pd.Timestamp("2024-01-01T00:00Z") and len(a) == 5
    assert a.trade_count.tolist() == [10, 11, 12, 0, 14]
    assert a.is_empty.tolist() == [False, False, False, True, False]
    # vwap = quote_volume / volume; close when volume is 0.
    assert a.vwap.iloc[0] == pytest.approx(100.25)
    assert a.vwap.iloc[3] == a.close.iloc[3]
    assert a.taker_buy_volume.iloc[0] == 1.0


def test_klines_microseconds_and_many_files_sorted(tmp_path: Path) -> None:
    day2 = DAY + 86_400_000
    f1 = write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", "\n".join(kline_rows(DAY, 3)) + "\n")
    f2 = write(tmp_path / "BTCUSDT-1m-2024-01-02.csv", "\n".join(kline_rows(day2, 3, unit=1000)) + "\n")
    bars = io.load_klines([f2, f1])  # out of order on purpose; the second file is in µs
    assert_bars_shape(bars)
    assert len(bars) == 6
    assert bars.index[3] == pd.Timestamp("2024-01-02T00:00Z")


def test_klines_identical_duplicates_dropped_conflicts_rejected(tmp_path: Path) -> None:
    rows = kline_rows(DAY, 4)
    monthly = write(tmp_path / "BTCUSDT-1m-2024-01.csv", "\n".join(rows) + "\n")
    daily = write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", "\n".join(rows[2:]) + "\n")
    bars = io.load_klines([monthly, daily])
    assert len(bars) == 4 and bars.index.is_unique
    changed = rows[2].split(",")
    changed[4] = "999.0"
    bad = write(tmp_path / "x" / "BTCUSDT-1m-2024-01-01.csv", ",".join(changed) + "\n")
    with pytest.raises(DataFileError, match=r"two different bars for open_time 2024-01-01T00:02:00\+00:00") as err:
        io.load_klines([monthly, bad])
    assert "BTCUSDT-1m-2024-01.csv" in str(err.value) and err.value.column == "open_time"


def test_klines_bad_value_located_in_its_file(tmp_path: Path) -> None:
    good = write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", KLINE_HEADER + "\n" + "\n".join(kline_rows(DAY, 3)) + "\n")
    rows = kline_rows(DAY + 86_400_000, 3)
    fields = rows[1].split(",")
    fields[8] = "abc"  # count
    rows[1] = ",".join(fields)
    bad = write(tmp_path / "BTCUSDT-1m-2024-01-02.csv", KLINE_HEADER + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataFileError) as err:
        io.load_klines([good, bad])
    assert err.value.path == str(bad)
    assert (err.value.line, err.value.column) == (3, "count")


def test_klines_mixed_symbols_rejected_and_folder_filter(tmp_path: Path) -> None:
    write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", "\n".join(kline_rows(DAY, 2)) + "\n")
    write(tmp_path / "ETHUSDT-1m-2024-01-01.csv", "\n".join(kline_rows(DAY, 3)) + "\n")
    with pytest.raises(DataFileError, match=r"several symbols \(BTCUSDT, ETHUSDT\)"):
        io.load_klines(tmp_path)
    assert len(io.load_klines(tmp_path, symbol="ETHUSDT")) == 3
    with pytest.raises(DataFileError, match="this file is BTCUSDT but symbol='ETHUSDT'"):
        io.load_klines(tmp_path / "BTCUSDT-1m-2024-01-01.csv", symbol="ETHUSDT")


def test_not_a_klines_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="not a klines file"):
        io.load_klines(write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", spot_trades(2)))


# ----------------------------------------------------------------------------------
# collector NDJSON
# ----------------------------------------------------------------------------------
NDJSON = (
    '{"symbol":"btcusdt","ts":"2024-08-08T23:54:15.500Z","price":"61837.63","size":"0.02"}\n'
    '{"symbol":"ETHUSDT","ts":"2024-08-08T23:54:15.100Z","price":2683.8,"size":0.5}\n'
    "\n"
    '{"symbol":"BTCUSDT","ts":"2024-08-08T23:54:15.200+00:00","price":61837.5,"size":0.1}\n'
    '{"symbol":"BTCUSDT","ts":"2024-08-08T23:54:16","price":61838,"size":1}\n'
)


def test_ndjson_ticks_with_synthetic_ids(tmp_path: Path) -> None:
    p = write(tmp_path / "collector.ndjson", NDJSON)
    lf = io.load_file(p, market="usdm")
    df = lf.frame
    assert_ticks_shape(df)
    assert (lf.format, lf.symbol, lf.market, lf.symbols) == ("ndjson", None, "usdm", ("BTCUSDT", "ETHUSDT"))
    btc = df[df.symbol == "BTCUSDT"]
    assert btc.trade_id.tolist() == [0, 1, 2]  # per symbol, in time order
    assert btc.time_ms.tolist() == [1723161255200, 1723161255500, 1723161256000]
    assert btc.price.tolist() == [61837.5, 61837.63, 61838.0]
    assert df[df.symbol == "ETHUSDT"].trade_id.tolist() == [0]
    assert not df.is_buyer_maker.any() and set(df.trade_type) == {"MARKET"}
    again = io.load_file(p, market="usdm").frame
    pd.testing.assert_frame_equal(df, again)  # stable ids
    only = io.load_trades(p, market="spot", symbol="ethusdt")
    assert len(only) == 1 and only.trade_type.isna().all()
    with pytest.raises(UnknownSymbol, match="available: BTCUSDT, ETHUSDT"):
        io.load_trades(p, market="spot", symbol="SOLUSDT")


def test_ndjson_needs_market(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="pass market='spot' or market='usdm'"):
        io.load_file(write(tmp_path / "collector.ndjson", NDJSON))


@pytest.mark.parametrize("line, column, message", [
    ('{"symbol":"BTCUSDT","ts":"yesterday","price":1,"size":1}', "ts", "'yesterday' is not an ISO-8601 time"),
    ('{"symbol":"BTCUSDT","ts":"2024-08-08T00:00:00Z","price":"abc","size":1}', "price", "'abc' is not a number"),
    ('{"symbol":"BTCUSDT","ts":"2024-08-08T00:00:00Z","price":1}', "size", "missing"),
    ('{"symbol":"BTC/USDT","ts":"2024-08-08T00:00:00Z","price":1,"size":1}', "symbol", "is not a symbol"),
    ('{"symbol":"BTCUSDT","ts":', None, "not valid JSON"),
])
def test_ndjson_errors_name_line_and_column(tmp_path: Path, line: str, column: str | None, message: str) -> None:
    p = write(tmp_path / "c.ndjson", NDJSON + line + "\n")
    with pytest.raises(DataFileError) as err:
        io.load_trades(p, market="spot")
    assert err.value.line == 6 and err.value.column == column
    assert message in str(err.value)


# ----------------------------------------------------------------------------------
# user OHLC CSV
# ----------------------------------------------------------------------------------
def ohlc_text(n: int = 20, header: str = "timestamp,open,high,low,close,volume", ts=None) -> str:
    lines = [header] if header else []
    for i in range(n):
        t = ts(i) if ts else f"2024-01-01T00:{i:02d}:00Z"
        o = 100 + i
        lines.append(f"{t},{o},{o + 2},{o - 1},{o + 1},{10 + i}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("ts", [
    lambda i: f"2024-01-01T00:{i:02d}:00Z",
    lambda i: f"2024-01-01 00:{i:02d}:00",                # naive ISO -> UTC
    lambda i: f"2024-01-01T01:{i:02d}:00+01:00",          # offset converted to UTC
    lambda i: str(1704067200 + 60 * i),                   # epoch seconds
    lambda i: str(1704067200000 + 60_000 * i),            # epoch milliseconds
])
def test_ohlc_good_time_formats(tmp_path: Path, ts) -> None:
    lf = io.load_file(write(tmp_path / "BTCUSDT-prices.csv", ohlc_text(20, ts=ts)))
    bars = lf.frame
    assert (lf.format, lf.is_bars, lf.symbol) == ("ohlc", True, "BTCUSDT")
    assert_bars_shape(bars)
    assert bars.index[0] == pd.Timestamp("2024-01-01T00:00Z") and bars.index[-1] == pd.Timestamp("2024-01-01T00:19Z")
    assert bars.close.iloc[0] == 101 and bars.volume.iloc[2] == 12
    assert (bars.vwap == bars.close).all() and bars.taker_buy_volume.isna().all()
    assert not bars.is_empty.any() and (bars.trade_count == 0).all()


def test_ohlc_without_volume_and_without_header(tmp_path: Path) -> None:
    text = "1704067200,1,2,0.5,1.5\n1704067260,1.5,2,1,1\n"
    bars = io.load_file(write(tmp_path / "x.csv", text), symbol="AAAUSDT").frame
    assert_bars_shape(bars)
    assert bars.volume.tolist() == [0.0, 0.0] and not bars.is_empty.any()


def test_ohlc_symbol_optional_for_one_file_required_to_group(tmp_path: Path) -> None:
    p = write(tmp_path / "prices.csv", ohlc_text(3))
    lf = io.load_file(p)  # bars carry no symbol: the caller knows the leg
    assert (lf.symbol, lf.symbols, len(lf.frame)) == (None, (), 3)
    assert io.load_file(p, symbol="solusdt").symbol == "SOLUSDT"
    with pytest.raises(DataFileError, match="pass symbol="):
        io.load_files([p])


def _bad(text: str, i_line: int, column: str, new: str) -> str:
    """Replace ``column``'s value on physical line ``i_line`` (1-based)."""
    lines = text.splitlines()
    names = lines[0].split(",")
    fields = lines[i_line - 1].split(",")
    fields[names.index(column)] = new
    lines[i_line - 1] = ",".join(fields)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("column, new, message", [
    ("close", "abc", "'abc' is not a number; fix the value or remove the row"),
    ("open", "", "empty value (NaN)"),
    ("low", "NaN", "'NaN' is not allowed (NaN or infinite)"),
    ("high", "100", "high 100.0 is below max(open, close) = 113.0"),
    ("low", "200", "low 200.0 is above min(open, close) = 112.0"),
    ("timestamp", "2024-01-01T00:05:00Z", "2024-01-01T00:05:00+00:00 is not after the previous row's "
                                          "2024-01-01T00:11:00+00:00 (line 13)"),
    ("timestamp", "2024-01-01T00:11:00Z", "is not after the previous row's"),  # duplicate
    ("timestamp", "soon", "'soon' is not an ISO-8601 time"),
    ("volume", "-1", "volume -1.0 must be >= 0"),
    ("close", "-3", "price -3.0 must be > 0"),
])
def test_ohlc_bad_files_name_line_and_column(tmp_path: Path, column: str, new: str, message: str) -> None:
    p = write(tmp_path / "BTCUSDT-ohlc.csv", _bad(ohlc_text(20), 14, column, new))
    with pytest.raises(DataFileError) as err:
        io.load_file(p)
    e = err.value
    assert (e.path, e.line, e.column) == (str(p), 14, column)
    assert str(e).startswith(f"{p}, line 14, column {column!r}: ")
    assert message in str(e)


def test_ohlc_structural_errors(tmp_path: Path) -> None:
    text = ohlc_text(5).splitlines()
    text[3] += ",7"
    with pytest.raises(DataFileError, match=r"line 4: expected 6 fields, got 7"):
        io.load_file(write(tmp_path / "BTCUSDT-a.csv", "\n".join(text) + "\n"))
    with pytest.raises(DataFileError, match=r"line 1: missing column 'close'"):
        io.load_file(write(tmp_path / "BTCUSDT-b.csv", "timestamp,open,high,low,volume\n2024-01-01,1,1,1,1\n"))
    with pytest.raises(DataFileError, match="no rows"):
        io.load_file(write(tmp_path / "BTCUSDT-c.csv", "timestamp,open,high,low,close\n"))


def test_ohlc_blank_lines_keep_physical_line_numbers(tmp_path: Path) -> None:
    lines = ohlc_text(5).splitlines()
    lines.insert(2, "")
    lines[5] = lines[5].replace(",103,", ",x,", 1)  # physical line 6, column open
    with pytest.raises(DataFileError) as err:
        io.load_file(write(tmp_path / "BTCUSDT-d.csv", "\n".join(lines) + "\n"))
    assert (err.value.line, err.value.column) == (6, "open")


def test_errors_are_quantlab_errors_not_pandas(tmp_path: Path) -> None:
    p = write(tmp_path / "BTCUSDT-e.csv", '"unterminated,1,2\n')
    with pytest.raises(QuantlabError):
        io.load_file(p)


# ----------------------------------------------------------------------------------
# WebSocket captures
# ----------------------------------------------------------------------------------
def cap_line(ns: int, payload: str) -> str:
    return f"{ns} {payload}\n"


SPOT_TRADE = ('{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":{i},'
              '"p":"61837.63000000","q":"0.02000000","T":{t},"m":true,"M":true}}}}')
USDM_TRADE = ('{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"T":{t},"s":"BTCUSDT","t":{i},'
              '"p":"{p}","q":"{q}","X":"{x}","m":false}}}}')
DEPTH = '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","b":[],"a":[]}}'
SNAPSHOT = '{"lastUpdateId":50093239218,"bids":[["61837.63","3.7"]],"asks":[]}'


def test_iter_capture_yields_every_line_including_snapshot(tmp_path: Path) -> None:
    text = (cap_line(1723161253937085768, DEPTH) + cap_line(1723161254206652067, SNAPSHOT)
            + cap_line(1723161254087896568, SPOT_TRADE.format(t=T0, i=1)))
    p = write(tmp_path / "spot_btcusdt_20240808.gz", text, "gz")
    items = list(io.iter_capture(p))
    assert [ns for ns, _ in items] == [1723161253937085768, 1723161254206652067, 1723161254087896568]
    assert items[1][1] == SNAPSHOT and all(isinstance(raw, str) for _, raw in items)


def test_iter_capture_bad_prefix_names_line(tmp_path: Path) -> None:
    p = write(tmp_path / "cap.gz", cap_line(1, DEPTH) + "garbage\n", "gz")
    with pytest.raises(DataFileError) as err:
        list(io.iter_capture(p))
    assert (err.value.line, err.value.column) == (2, "local_receive_time_ns")


def test_capture_trades_spot_with_recv_time(tmp_path: Path) -> None:
    text = (cap_line(1723161253937085768, DEPTH) + cap_line(1723161254206652067, SNAPSHOT)
            + cap_line(1723161254087896568, SPOT_TRADE.format(t=T0, i=2))
            + cap_line(1723161254087999999, SPOT_TRADE.format(t=T0 - 5, i=1)))
    df = io.load_capture_trades(write(tmp_path / "spot_btcusdt_20240808.gz", text, "gz"))
    assert_ticks_shape(df)
    assert df.trade_id.tolist() == [1, 2]  # sorted by exchange time
    assert df.recv_ms.tolist() == [1723161254087, 1723161254087]
    assert set(df.market) == {"spot"} and df.trade_type.isna().all()


def test_capture_market_from_content_and_conflict(tmp_path: Path) -> None:
    text = "".join(cap_line(10**18 + i, USDM_TRADE.format(t=T0 + i, i=i, p="61800.30", q="0.006", x=x))
                   for i, x in enumerate(["MARKET", "NA", "INSURANCE_FUND"]))
    p = write(tmp_path / "recording.gz", text, "gz")
    lf = io.load_file(p)
    assert (lf.format, lf.market, lf.symbol) == ("capture", "usdm", "BTCUSDT")
    assert lf.frame.trade_type.tolist() == ["MARKET", "NA", "INSURANCE_FUND"]
    with pytest.raises(DataFileError, match=r"line 1: a trade here is usdm"):
        io.load_capture_trades(p, market="spot")


def test_capture_cut_last_line_skipped_but_bad_middle_line_raises(tmp_path: Path) -> None:
    good = cap_line(1, SPOT_TRADE.format(t=T0, i=1))
    cut = '2 {"stream":"btcusdt@trade","data":{"e":"trade","E":1'
    df = io.load_capture_trades(write(tmp_path / "spot_a.gz", good + cut, "gz"))
    assert df.trade_id.tolist() == [1]
    with pytest.raises(DataFileError, match="line 2: not valid JSON"):
        io.load_capture_trades(write(tmp_path / "spot_b.gz", good + cut + "\n" + good, "gz"))


def test_capture_truncated_gzip(tmp_path: Path) -> None:
    text = "".join(cap_line(i, SPOT_TRADE.format(t=T0 + i, i=i)) for i in range(2000))
    p = tmp_path / "spot_btcusdt_x.gz"
    p.write_bytes(gzip.compress(text.encode())[:-100])
    with pytest.raises(DataFileError, match="damaged or truncated"):
        io.load_capture_trades(p)


# ----------------------------------------------------------------------------------
# load_file_bytes, load_files
# ----------------------------------------------------------------------------------
def test_load_file_bytes_zip_upload(tmp_path: Path) -> None:
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ETHUSDT-trades-2024-08-08.csv", spot_trades(3))
    lf = io.load_file_bytes("upload.zip", buf.getvalue())  # symbol from the zip member
    assert (lf.format, lf.symbol, lf.market, len(lf.frame)) == ("trades", "ETHUSDT", "spot", 3)
    with pytest.raises(DataFileError, match=r"^my prices\.csv, line 3, column 'close'"):
        io.load_file_bytes("my prices.csv", _bad(ohlc_text(4), 3, "close", "?").encode(), symbol="X")


def test_load_files_groups_by_symbol(tmp_path: Path) -> None:
    a = write(tmp_path / "BTCUSDT-trades-2024-08-08.csv", spot_trades(4, first_id=1))
    b = write(tmp_path / "BTCUSDT-trades-2024-08-09.csv.gz", spot_trades(4, t0=T0 + 30, first_id=4), "gz")  # overlaps a
    c = write(tmp_path / "ETHUSDT-1m-2024-01-01.csv", "\n".join(kline_rows(DAY, 3)) + "\n")
    d = write(tmp_path / "ETHUSDT-1m-2024-01-02.csv", "\n".join(kline_rows(DAY + 86_400_000, 3)) + "\n")
    out = io.load_files([tmp_path])
    assert list(out) == ["BTCUSDT", "ETHUSDT"]
    btc, eth = out["BTCUSDT"], out["ETHUSDT"]
    assert btc.format == "trades" and not btc.is_bars and len(btc.sources) == 2
    assert btc.frame.trade_id.tolist() == [1, 2, 3, 4, 5, 6, 7]  # ids 4 overlapped, kept once
    assert eth.is_bars and len(eth.frame) == 6 and set(eth.sources) == {str(c), str(d)}
    assert_bars_shape(eth.frame)
    assert_ticks_shape(btc.frame)
    del a, b


def test_load_files_splits_ndjson_and_renumbers(tmp_path: Path) -> None:
    write(tmp_path / "one.ndjson", NDJSON)
    write(tmp_path / "two.ndjson", NDJSON.replace("2024-08-08", "2024-08-09"))
    out = io.load_files(tmp_path, market="spot")
    assert out["BTCUSDT"].frame.trade_id.tolist() == list(range(6))
    assert out["ETHUSDT"].frame.trade_id.tolist() == [0, 1]


def test_load_files_market_conflicts_and_filter(tmp_path: Path) -> None:
    write(tmp_path / "BTCUSDT-trades-spot-x.csv", spot_trades(3))
    write(tmp_path / "BTCUSDT-trades-um-x.csv", usdm_trades(2))
    with pytest.raises(DataFileError, match="ticks of both markets"):
        io.load_files(tmp_path)
    only = io.load_files(tmp_path, market="usdm")
    assert only["BTCUSDT"].market == "usdm" and len(only["BTCUSDT"].frame) == 2


def test_load_files_bars_and_ticks_of_one_symbol_rejected(tmp_path: Path) -> None:
    write(tmp_path / "BTCUSDT-trades-x.csv", spot_trades(3))
    write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", "\n".join(kline_rows(DAY, 3)) + "\n")
    with pytest.raises(DataFileError, match="both bars and trades"):
        io.load_files(tmp_path)


# ----------------------------------------------------------------------------------
# real data (../shared/data)
# ----------------------------------------------------------------------------------
CAP = "ws-capture-2024-08-08"


@functools.lru_cache(maxsize=None)
def _capture(*paths: Path) -> pd.DataFrame:
    """Captures take ~1 s each to decompress; parse each set once per session."""
    return io.load_capture_trades(list(paths))


@pytest.mark.parametrize("files, symbol, market, count, first_id, last_id", [
    (["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"], "BTCUSDT", "spot", 19_904, 3_735_683_259, 3_735_703_162),
    (["spot_ethusdt_20240808.gz", "spot_ethusdt_20240809.gz"], "ETHUSDT", "spot", 14_515, 1_520_538_925, 1_520_553_439),
    (["usdm_btcusdt_20240808.gz"], "BTCUSDT", "usdm", 21_313, None, None),
    (["usdm_ethusdt_20240808.gz"], "ETHUSDT", "usdm", 14_076, None, None),
])
def test_real_capture_2024_08_08(shared_data: Path, files, symbol, market, count, first_id, last_id) -> None:
    df = _capture(*(shared_data / CAP / f for f in files))
    assert_ticks_shape(df)
    assert len(df) == count
    assert set(df.symbol) == {symbol} and set(df.market) == {market}
    ids = df.trade_id.to_numpy()
    assert np.all(np.diff(ids) == 1)  # contiguous, as the README says
    if first_id is not None:
        assert (ids[0], ids[-1]) == (first_id, last_id)
    if market == "usdm":
        assert set(df.trade_type) == {"MARKET"}
    start = pd.Timestamp("2024-08-08T23:54:15Z").value // 10**6
    end = pd.Timestamp("2024-08-09T00:05:06Z").value // 10**6
    assert start <= df.time_ms.min() and df.time_ms.max() <= end
    lag = np.median(df.recv_ms - df.time_ms)
    assert -2000 < lag < -500  # the recorder's clock ran ~1.3 s behind exchange time


def test_real_capture_iter_includes_depth_snapshot(shared_data: Path) -> None:
    lines = list(io.iter_capture(shared_data / CAP / "spot_ethusdt_20240808.gz"))
    assert len(lines) == 33_618
    snaps = [raw for _, raw in lines if raw.startswith('{"lastUpdateId"')]
    assert len(snaps) == 1
    assert all(10**18 < ns < 2 * 10**18 for ns, _ in lines[:100])


@pytest.mark.parametrize("symbol, count", [("btcusdt", 10_701), ("ethusdt", 13_655)])
def test_real_capture_2024_07_18(shared_data: Path, symbol: str, count: int) -> None:
    folder = shared_data / "ws-capture-2024-07-18"
    df = io.load_capture_trades([folder / f"usdm_{symbol}_20240718.gz", folder / f"usdm_{symbol}_20240719.gz"])
    assert_ticks_shape(df)
    assert len(df) == count and set(df.symbol) == {symbol.upper()} and set(df.market) == {"usdm"}
    assert df.time_ms.min() >= pd.Timestamp("2024-07-18T23:57:02Z").value // 10**6
    assert df.time_ms.max() < pd.Timestamp("2024-07-19T00:05:03Z").value // 10**6


@pytest.mark.parametrize("name, capture, market, count", [
    ("BTCUSDT-trades-spot-2024-08-08T2354_2024-08-09T0005.csv", "spot_btcusdt", "spot", 19_904),
    ("ETHUSDT-trades-spot-2024-08-08T2354_2024-08-09T0005.csv", "spot_ethusdt", "spot", 14_515),
    ("BTCUSDT-trades-um-2024-08-08T2354_2024-08-09T0000.csv", "usdm_btcusdt", "usdm", 21_313),
    ("ETHUSDT-trades-um-2024-08-08T2354_2024-08-09T0000.csv", "usdm_ethusdt", "usdm", 14_076),
])
def test_real_trades_files_match_the_capture(shared_data: Path, name, capture, market, count) -> None:
    lf = io.load_file(shared_data / "trades-2024-08-08" / name)
    df = lf.frame
    assert (lf.format, lf.market, len(df)) == ("trades", market, count)
    assert_ticks_shape(df)
    cap = _capture(*sorted((shared_data / CAP).glob(f"{capture}_*.gz")))
    cols = ["symbol", "market", "trade_id", "time_ms", "price", "qty", "is_buyer_maker", "trade_type"]
    pd.testing.assert_frame_equal(df[cols], cap[cols])


KLINES = "klines-um-1m-BTCUSDT-ETHUSDT-2022-2023"


def test_real_klines_one_header_file(shared_data: Path) -> None:
    lf = io.load_file(shared_data / KLINES / "BTCUSDT-1m-2022-01-01.csv.gz")
    assert (lf.format, lf.symbol, lf.market) == ("klines", "BTCUSDT", "usdm")
    bars = lf.frame
    assert_bars_shape(bars)
    assert len(bars) == 1440
    first = bars.iloc[0]
    assert bars.index[0] == pd.Timestamp("2022-01-01T00:00Z")
    assert (first.open, first.high, first.low, first.close, first.trade_count) == (46210.57, 46265.41, 46210.55, 46246.66, 1921)
    assert first.vwap == pytest.approx(11735030.82409 / 253.757)


def test_real_klines_one_headerless_file(shared_data: Path) -> None:
    path = shared_data / KLINES / "ETHUSDT-1m-2022-01-03.csv.gz"
    assert gzip.open(path).read(1).isdigit()  # really headerless
    bars = io.load_klines(path, symbol="ETHUSDT")
    assert_bars_shape(bars)
    assert len(bars) == 1440
    assert bars.index[0] == pd.Timestamp("2022-01-03T00:00Z")
    assert bars.index[-1] == pd.Timestamp("2022-01-03T23:59Z")


def test_real_klines_month_across_header_switch(shared_data: Path) -> None:
    # August 2022: the ETHUSDT files gain their header after 2022-08-10.
    files = sorted((shared_data / KLINES).glob("ETHUSDT-1m-2022-08-*.csv.gz"))
    assert len(files) == 31
    bars = io.load_klines(files)
    assert_bars_shape(bars)
    assert len(bars) == 31 * 1440
    assert bars.index.to_series().diff().dropna().eq(pd.Timedelta(minutes=1)).all()
    assert bars.index[0] == pd.Timestamp("2022-08-01T00:00Z")


@pytest.mark.slow
def test_real_klines_two_years_per_symbol(shared_data: Path) -> None:
    for symbol in ("BTCUSDT", "ETHUSDT"):
        t = time.perf_counter()
        bars = io.load_klines(shared_data / KLINES, symbol=symbol)
        elapsed = time.perf_counter() - t
        assert_bars_shape(bars)
        assert len(bars) == 1_051_200  # README: every minute of 2022-2023
        assert bars.index[0] == pd.Timestamp("2022-01-01T00:00Z")
        assert bars.index[-1] == pd.Timestamp("2023-12-31T23:59Z")
        assert elapsed < 30, f"{symbol}: {elapsed:.1f} s"  # ~2-4 s measured; generous for busy CI


def _manifest(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_real_klines_alts_match_manifest(shared_data: Path) -> None:
    folder = shared_data / "klines-um-1m-alts"
    rows = _manifest(folder / "MANIFEST.tsv")
    assert len(rows) == 13
    for row in rows:
        lf = io.load_file(folder / (row["file_in_repo"] + ".gz"))
        bars = lf.frame
        assert_bars_shape(bars)
        assert (lf.format, lf.market) == ("klines", "usdm")
        assert lf.symbol == row["file_in_repo"].split("-")[0]
        assert len(bars) == int(row["data_rows"]), row
        assert bars.index[0] == pd.Timestamp(row["first_open_time_utc"] + "Z")
        assert bars.index[-1] == pd.Timestamp(row["last_open_time_utc"] + "Z")
        assert bars.close.min() == float(row["close_min"]) and bars.close.max() == float(row["close_max"])
