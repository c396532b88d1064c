"""The CLI end to end: `main(argv) -> int`, real files, exit codes 0/1/2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from quantlab.cli import main

DAY_MS = 86_400_000


def write_kline_files(folder, symbol: str, closes: np.ndarray, start_ms: int) -> list:
    """Daily data.binance.vision-style 1m kline files (with header) for ``closes``."""
    folder.mkdir(parents=True, exist_ok=True)
    t = start_ms + 60_000 * np.arange(len(closes))
    frame = pd.DataFrame({
        "open_time": t, "open": closes, "high": closes * 1.0005, "low": closes * 0.9995,
        "close": closes, "volume": 10.0, "close_time": t + 59_999, "quote_volume": closes * 10,
        "count": 100, "taker_buy_volume": 5.0, "taker_buy_quote_volume": closes * 5, "ignore": 0,
    })
    paths = []
    for day, chunk in frame.groupby(frame.open_time // DAY_MS):
        date = pd.Timestamp(int(day) * DAY_MS, unit="ms").strftime("%Y-%m-%d")
        path = folder / f"{symbol}-1m-{date}.csv"
        chunk.to_csv(path, index=False)
        paths.append(path)
    return paths


@pytest.fixture
def pair_files(tmp_path):
    """Two days of a cointegrated 1m pair: y = 5 + 2 x + OU noise."""
    rng = np.random.default_rng(7)
    n = 2 * 1440
    x = 100 + np.cumsum(rng.normal(0, 0.2, n))
    ou = np.zeros(n)
    for i in range(1, n):
        ou[i] = 0.9 * ou[i - 1] + rng.normal(0, 0.3)
    y = 5 + 2 * x + ou
    start = 1_672_531_200_000  # 2023-01-01
    folder = tmp_path / "klines"
    write_kline_files(folder, "AAAUSDT", y, start)
    write_kline_files(folder, "BBBUSDT", x, start)
    return folder


def test_analyze_files_writes_causal_frame_and_summary(pair_files, tmp_path, capsys):
    out, summary, alerts = tmp_path / "a.csv", tmp_path / "s.json", tmp_path / "al.csv"
    rc = main(["analyze", "--files", str(pair_files), "--y", "AAAUSDT", "--x", "BBBUSDT",
               "--timeframe", "1m", "--window", "120", "--out", str(out), "--summary", str(summary),
               "--alert", "zscore > 2", "--alert", "zscore < -2", "--alerts-out", str(alerts)])
    assert rc == 0, capsys.readouterr().err
    frame = pd.read_csv(out)
    for col in ("time", "y", "x", "beta", "alpha", "spread", "zscore", "corr"):
        assert col in frame.columns
    assert len(frame) == 2 * 1440
    assert frame["time"].iloc[0] == "2023-01-01T00:00:00Z"
    assert frame["beta"].iloc[:119].isna().all() and frame["beta"].iloc[200:].notna().all()
    s = json.loads(summary.read_text())
    for key in ("hedge_ratio", "intercept", "r2", "adf_stat", "adf_pvalue", "coint_pvalue",
                "half_life_bars", "n_bars"):
        assert key in s
    assert s["n_bars"] == 2 * 1440 and abs(s["hedge_ratio"] - 2.0) < 0.05
    assert s["adf_pvalue"] < 0.01 and s["static_fit_in_sample"] is True
    ev = pd.read_csv(alerts)
    z = frame["zscore"].to_numpy()
    up = np.sum((z[1:] > 2) & ~(z[:-1] > 2) & ~np.isnan(z[:-1]))
    assert (ev["rule"] == "zscore > 2").sum() in (up, up + 1)  # +1: true on the first valid bar
    assert set(ev.columns) >= {"time", "rule", "value", "threshold", "pair"}
    meta = json.loads((tmp_path / "a.meta.json").read_text())
    assert meta["y"] == "AAAUSDT" and meta["window"] == 120 and meta["hedge"] == "rolling-ols"


@pytest.mark.parametrize("fmt", ["parquet", "json", "xlsx"])
def test_analyze_other_formats(pair_files, tmp_path, fmt):
    out = tmp_path / f"a.{fmt}"
    assert main(["analyze", "--files", str(pair_files), "--y", "AAAUSDT", "--x", "BBBUSDT",
                 "--timeframe", "5m", "--window", "30", "--hedge", "kalman", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_backtest_cli(pair_files, tmp_path):
    files = {k: tmp_path / f"{k}.{'json' if k == 'summary' else 'csv'}" for k in ("trades", "equity", "summary")}
    rc = main(["backtest", "--files", str(pair_files), "--y", "AAAUSDT", "--x", "BBBUSDT",
               "--timeframe", "1m", "--window", "120", "--entry-z", "2", "--exit-z", "0",
               "--stop-z", "4", "--fee-bps", "5", "--trades", str(files["trades"]),
               "--equity", str(files["equity"]), "--summary", str(files["summary"])])
    assert rc == 0
    s = json.loads(files["summary"].read_text())
    for key in ("total_pnl", "sharpe", "max_drawdown", "n_trades", "fees", "break_even_fee_bps"):
        assert key in s
    trades = pd.read_csv(files["trades"])
    equity = pd.read_csv(files["equity"])
    assert s["n_trades"] == len(trades) > 0
    assert len(equity) == 2 * 1440
    assert equity["equity"].iloc[-1] == pytest.approx(s["total_pnl"])
    assert s["fees"] == pytest.approx(trades["fees"].sum())


@pytest.mark.parametrize("argv,needle", [
    (["--y", "AAAUSDT", "--x", "ZZZUSDT", "--window", "10"], "unknown symbol 'ZZZUSDT'"),
    (["--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "100000"], "needs at least 100000 bars"),
    (["--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "10", "--timeframe", "1x"], "timeframe"),
    (["--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "10", "--start", "yesterday-ish"], "start"),
])
def test_analyze_bad_input_is_one_line_exit_2(pair_files, tmp_path, capsys, argv, needle):
    rc = main(["analyze", "--files", str(pair_files), "--out", str(tmp_path / "o.csv"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.csv").exists()


def test_mismatched_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "BADUSDT-1m-2023-01-01.csv"
    bad.write_text("open_time,open,high,low,close\n1,2,3\n")
    rc = main(["analyze", "--files", str(bad), "--y", "BADUSDT", "--x", "BBBUSDT", "--window", "5",
               "--out", str(tmp_path / "o.csv")])
    assert rc == 2
    assert "BADUSDT-1m-2023-01-01.csv" in capsys.readouterr().err


def test_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["analyze", "--y", "A"])
    assert info.value.code == 2


def test_import_then_analyze_from_db(tmp_path, capsys):
    """Synthetic trades -> data.binance.vision trade files -> `quantlab import` (twice:
    idempotent) -> `quantlab analyze --db`."""
    from quantlab.synthetic import SyntheticMarket

    market = SyntheticMarket(("BTCUSDT", "ETHUSDT"), seed=3, rate=40.0)
    batch = market.generate(40 * 1800)  # ~30 minutes of trades
    ticks = batch.to_frame()
    paths = []
    for sym, part in ticks.groupby("symbol"):
        path = tmp_path / f"{sym}-trades-2024-01-01.csv"
        pd.DataFrame({"id": part.trade_id, "price": part.price, "qty": part.qty,
                      "quote_qty": part.price * part.qty, "time": part.time_ms,
                      "is_buyer_maker": part.is_buyer_maker.map({True: "True", False: "False"}),
                      "is_best_match": "True"}).to_csv(path, index=False, header=False)
        paths.append(str(path))
    db = str(tmp_path / "t.db")
    assert main(["import", *paths, "--db", db]) == 0
    assert main(["import", *paths, "--db", db]) == 0
    out = capsys.readouterr().out
    assert f"imported 0 trades into {db} ({len(ticks)} duplicates ignored)" in out
    rc = main(["analyze", "--db", db, "--y", "BTCUSDT", "--x", "ETHUSDT", "--timeframe", "10s",
               "--window", "30", "--out", str(tmp_path / "a.csv"), "--summary", str(tmp_path / "s.json")])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["n_bars"] >= 170
    assert s["hedge_ratio"] > 0


def test_analyze_real_klines(shared_data, tmp_path):
    folder = shared_data / "klines-um-1m-BTCUSDT-ETHUSDT-2022-2023"
    out, summary = tmp_path / "a.parquet", tmp_path / "s.json"
    assert main(["analyze", "--files", str(folder), "--y", "BTCUSDT", "--x", "ETHUSDT",
                 "--timeframe", "5m", "--start", "2023-03-01", "--end", "2023-03-08", "--window", "60",
                 "--out", str(out), "--summary", str(summary)]) == 0
    s = json.loads(summary.read_text())
    assert s["n_bars"] == 7 * 288
    frame = pd.read_parquet(out)
    assert frame["y"].iloc[0] == pytest.approx(23169.0)  # BTCUSDT 5m close 2023-03-01 00:00


def test_load_files_skips_files_dated_outside_the_range(tmp_path):
    from quantlab.files import dated_name_overlaps
    from quantlab.pairs import parse_time_ms

    lo, hi = parse_time_ms("2023-03-01T12:00", "s"), parse_time_ms("2023-03-02", "e")
    names = ("A-1m-2023-02-28.csv", "A-1m-2023-03-01.csv", "A-1m-2023-03-02.csv",
             "A-1m-2023-03.csv", "A-1m-2023-04.csv", "notes.csv")
    kept = {n for n in names if dated_name_overlaps(n, lo, hi)}
    assert kept == {"A-1m-2023-03-01.csv", "A-1m-2023-03.csv", "notes.csv"}

def test_analyze_out_folder_names_the_file(pair_files, tmp_path):
    folder = tmp_path / "outputs"
    folder.mkdir()
    assert main(["analyze", "--files", str(pair_files), "--y", "AAAUSDT", "--x", "BBBUSDT",
                 "--timeframe", "5m", "--window", "30", "--out", str(folder)]) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["analyze-rolling-ols-w30_AAAUSDT-BBBUSDT_5m_20230101T0000-20230102T2355.csv",
                     "analyze-rolling-ols-w30_AAAUSDT-BBBUSDT_5m_20230101T0000-20230102T2355.meta.json"]


def test_ingest_cli_against_replay_usdm_public_route(tmp_path, capsys):
    """`quantlab ingest` with the flags of the issue, on USD-M through the /public route."""
    from quantlab.replay import ReplayServer, SyntheticSource
    from quantlab.store import TickStore

    db = tmp_path / "um.db"
    source = SyntheticSource(("BTCUSDT", "ETHUSDT"), market="usdm", rate=300.0, seed=1)
    with ReplayServer(source) as server:
        rc = main(["ingest", "--market", "usdm", "--symbols", "BTCUSDT,ETHUSDT", "--stream", "trade",
                   "--db", str(db), "--ws-url", server.ws_url, "--rest-url", server.rest_url,
                   "--usdm-trade-route", "/public", "--stale-after", "5", "--duration", "2",
                   "--status-every", "0.5"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "final stopped" in out and "dropped 0" in out
    with TickStore(db, read_only=True) as store:
        inst = store.instruments()
    assert set(inst["market"]) == {"usdm"} and set(inst["symbol"]) == {"BTCUSDT", "ETHUSDT"}
    assert (inst["n_ticks"] > 50).all()
