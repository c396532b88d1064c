"""`quantlab scan` end to end: archive and files sources, CSV out, summary,
bad input -> exit 2 with one line."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from quantlab.cli import main
from quantlab.scan.source import write_universe
from quantlab.scan.synthetic import synthetic_universe


@pytest.fixture(scope="module")
def universe():
    return synthetic_universe(5, 2880, n_planted=1, seed=3, start="2024-03-01")


def _kline_files(u, folder):
    """data.binance.vision daily 1m kline CSVs (headerless, 12 columns)."""
    folder.mkdir()
    for sym, f in u.bars.items():
        ms = f.index.as_unit("ms").asi8
        for day in np.unique(ms // 86_400_000):
            part = f[ms // 86_400_000 == day]
            o = part.index.as_unit("ms").asi8
            date = pd.Timestamp(int(day) * 86_400_000, unit="ms").strftime("%Y-%m-%d")
            pd.DataFrame({"a": o, "o": part["open"], "h": part["high"], "l": part["low"],
                          "c": part["close"], "v": part["volume"], "ct": o + 59_999,
                          "q": part["quote_volume"], "n": part["trade_count"],
                          "tb": part["taker_buy_volume"], "tq": part["taker_buy_volume"] * part["close"],
                          "i": 0}).to_csv(folder / f"{sym}-1m-{date}.csv", header=False,
                                          index=False, float_format="%.17g")
    return folder


ARGS = ["--no-ledger", "--timeframe", "5m", "--formation", "2024-03-01/2024-03-02T08:00",
        "--evaluation", "2024-03-02T08:00/2024-03-03", "--workers", "1", "--min-bars", "50"]


def test_scan_archive_writes_table_and_summary(universe, tmp_path, capsys):
    arch = write_universe(tmp_path / "arch", universe.bars)
    out, summary = tmp_path / "scan.csv", tmp_path / "scan.json"
    rc = main(["scan", "--archive", str(arch), "--symbols", ",".join(universe.symbols), *ARGS[1:],
               "--out", str(out), "--summary", str(summary), "--q", "0.05"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "scanned 10 pairs (20 Engle-Granger tests)" in printed.out
    assert "scan: 10/10 pairs (100%)" in printed.err  # not a TTY: plain progress lines
    table = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert len(table) == 10 and list(table[["y", "x"]].iloc[0]) == ["S000USDT", "S001USDT"]
    assert table.loc[0, "selected"] and table["selected"].sum() == 1
    assert table["n_bars"].iloc[0] == 384 and table["eval_n_bars"].iloc[0] == 192
    meta = json.loads(summary.read_text())
    assert meta["pairs"] == 10 and meta["selected"] == 1 and meta["adjust"] == "by"
    # every pair x ordering went into the default ledger ($QUANTLAB_LEDGER: conftest, per test)
    assert meta["ledger"] == {"ledger": str(tmp_path / "ledger.sqlite"), "trials": 20, "new": 20}


def test_scan_files_are_materialised_into_an_archive(universe, tmp_path, capsys):
    files = _kline_files(universe, tmp_path / "klines")
    arch = write_universe(tmp_path / "arch", universe.bars)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    syms = ",".join(universe.symbols[:3])
    assert main(["scan", "--files", str(files), "--market", "spot", "--symbols", syms, *ARGS,
                 "--out", str(a),
                 "--no-progress"]) == 0
    assert main(["scan", "--archive", str(arch), "--symbols", syms, *ARGS, "--out", str(b),
                 "--no-progress"]) == 0
    ta, tb = pd.read_csv(a), pd.read_csv(b)
    cols = ["y", "x", "hedge_ratio", "coint_pvalue", "selected", "eval_total_return"]
    pd.testing.assert_frame_equal(ta[cols], tb[cols], rtol=1e-9)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("extra, message", [
    (["--formation", "2024-03-01", "--evaluation", "2024-03-02/2024-03-03"],
     "formation: expected START/END"),
    (["--formation", "2024-03-01/2024-03-02", "--evaluation", "2024-03-01T12:00/2024-03-03"],
     "evaluation: expected a window that starts at or after the formation window ends"),
    (["--formation", "2024-03-01/2024-03-02", "--evaluation", "2024-03-02/2024-03-03",
      "--q", "1.5"], "q: expected a number > 0 and <= 1"),
    (["--formation", "2024-03-01/2024-03-02", "--evaluation", "2024-03-02/2024-03-03",
      "--symbols", "S000USDT,NOPEUSDT"], "unknown symbol 'NOPEUSDT'"),
    (["--formation", "2024-03-01/2024-03-02", "--evaluation", "2024-03-02/2024-03-03",
      "--workers", "0"], "workers: expected an integer >= 1"),
])
def test_bad_input_exits_2_with_one_line(universe, tmp_path, capsys, extra, message):
    arch = write_universe(tmp_path / "arch", universe.bars)
    argv = ["scan", "--archive", str(arch), "--out", str(tmp_path / "o.csv"), *extra]
    if "--symbols" not in extra:
        argv += ["--symbols", "S000USDT,S001USDT"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("quantlab scan: error: ") and message in err[0], err
    assert not (tmp_path / "o.csv").exists()


def test_scan_real_usdm_alts_from_files(shared_data, tmp_path, capsys):
    """Real Binance USD-M 1m klines of February 2024 (ALGO, AVAX, FIL, NEAR):
    materialised from the gzip files, scanned on 15m bars."""
    folder = shared_data / "klines-um-1m-alts"
    files = sorted(folder.glob("*-1m-2024-02.csv.gz"))
    if len(files) < 3:
        pytest.skip(f"fewer than 3 February 2024 kline files in {folder}")
    out = tmp_path / "real.csv"
    rc = main(["scan", "--files", *map(str, files), "--timeframe", "15m",
               "--formation", "2024-02-01/2024-02-20", "--evaluation", "2024-02-20/2024-03-01",
               "--workers", "1", "--no-ledger", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    t = pd.read_csv(out, keep_default_na=False, na_values=[""])
    n = len(files)
    assert len(t) == n * (n - 1) // 2 and t["error"].isna().all()
    assert (t["n_bars"] == 19 * 96).all() and (t["eval_n_bars"] == 10 * 96).all()  # 2024 is a leap year
    assert t["corr_returns"].between(0.3, 1.0).all()  # alts move together
    assert (t["liquidity_quote"] > 1e4).all()
    assert ((t["coint_pvalue_by_adj"] >= t["coint_pvalue_bh_adj"]) | t["coint_pvalue_by_adj"].isna()).all()
