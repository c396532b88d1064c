"""Malformed inputs through the real CLI (issue 13, part 2).

Every case is generated here and run through ``quantlab.cli.main(argv)`` (or, for
the cases that could hang, ``python -m quantlab`` in a subprocess with a timeout).
Each must end in exit code 2 with exactly one line on stderr that names the file
(and line where there is one), no traceback, and leave the store exactly as it
was: the sha256 of a canonical dump of its tables and ``PRAGMA integrity_check``
are compared before and after.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

import pytest

from quantlab.cli import main
from tests.conftest import ROOT

T0 = 1723161255342  # 2024-08-08T23:54:15.342Z, ms
NAME = "BTCUSDT-trades-2024-08-08.csv"


# ----------------------------------------------------------------------------------
# builders
# ----------------------------------------------------------------------------------
def trade_row(i: int, *, price: object = None, qty: object = None, time: object = None) -> str:
    p = 61837.63 + i if price is None else price
    q = 0.02 * (i + 1) if qty is None else qty
    t = T0 + 10 * i if time is None else time
    quote = p * q if isinstance(p, float) and isinstance(q, float) else 1.0
    return f"{100 + i},{p},{q},{quote},{t},{'true' if i % 2 else 'false'},true"


def trades_text(n: int = 5, override: dict | None = None) -> str:
    """Spot data.binance.vision trades; ``override={row: {field: value}}``."""
    rows = [trade_row(i, **(override or {}).get(i, {})) for i in range(n)]
    return "\n".join(rows) + "\n"


def cap_line(ns: int, i: int, symbol: str = "BTCUSDT") -> str:
    return (f'{ns} {{"stream":"btcusdt@trade","data":{{"e":"trade","E":{T0 + i + 1},"s":"{symbol}",'
            f'"t":{1000 + i},"p":"61837.63","q":"0.02","T":{T0 + i},"m":true,"M":true}}}}\n')


def depth_line(ns: int) -> str:
    return (f'{ns} {{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":{T0},'
            f'"s":"BTCUSDT","U":1,"u":2,"b":[["61837.00","1.0"]],"a":[]}}}}\n')


def ohlc_text(n: int = 40, bad_row: int | None = None, bad_value: str = "") -> str:
    rows = ["timestamp,open,high,low,close,volume"]
    for i in range(n):
        c = 100 + (i % 7)
        close = bad_value if i == bad_row else str(c)
        rows.append(f"2024-01-01T00:{i:02d}:00Z,{c},{c + 1},{c - 1},{close},5")
    return "\n".join(rows) + "\n"


def kline_text(n: int = 40, bad_row: int | None = None, bad_value: str = "") -> str:
    rows = []
    for i in range(n):
        t = 1_704_067_200_000 + 60_000 * i
        c = 100.0 + i % 5
        close = bad_value if i == bad_row else c
        rows.append(f"{t},{c},{c + 1},{c - 1},{close},2,{t + 59_999},200,10,1,100,0")
    return "\n".join(rows) + "\n"


def make_store(path: Path, n: int = 50) -> Path:
    """A real tick store with trades of two symbols (through TickStore, as import does)."""
    from quantlab.binance import Trade
    from quantlab.store import TickStore

    import numpy as np

    walk = 100.0 + np.cumsum(np.random.default_rng(3).normal(0, 0.5, (2, n)), axis=1)
    trades = [Trade("spot", sym, "trade", k, round(float(walk[j, k]), 2), 0.5, T0 + 1000 * k, 0,
                    bool(k % 2)) for j, sym in enumerate(("BTCUSDT", "ETHUSDT")) for k in range(n)]
    with TickStore(path) as store:
        store.write_trades(trades)
    return path


def digest(path: Path) -> tuple[str, list, str]:
    """(sha256 of a canonical dump of every table, integrity_check rows, journal_mode).

    Read from a copy of the file and its -wal (if any): opening the original, even
    read-only, would create -shm/-wal files next to it and change what is tested."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        if Path(f"{path}-wal").exists():
            shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        con = sqlite3.connect(copy)
        try:
            h = hashlib.sha256()
            for line in con.iterdump():
                h.update(line.encode() + b"\n")
            return (h.hexdigest(), con.execute("PRAGMA integrity_check").fetchall(),
                    con.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            con.close()


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------
# the table: name -> builder(tmp, db) -> (argv, [needles in the one stderr line])
# ----------------------------------------------------------------------------------
Case = Callable[[Path, Path], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn
    return register


def _file(tmp: Path, name: str, data: str | bytes) -> Path:
    p = tmp / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


@case("bare-cr-first-line")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(3).replace("\n", "\r"))
    return ["import", str(f), "--db", str(db)], [NAME, "line 1", "carriage return"]


@case("bare-cr-first-line-analyze")
def _(tmp, db):
    f = _file(tmp, "AAAUSDT-1m-2024-01-01.csv", kline_text(3).replace("\n", "\r"))
    return (["analyze", "--files", str(f), "--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "5",
             "--out", str(tmp / "o.csv")], ["AAAUSDT-1m-2024-01-01.csv", "line 1", "carriage return"])


@case("10mb-first-line")
def _(tmp, db):
    f = _file(tmp, NAME, "1" * (10 << 20) + "\n" + trades_text(2))
    return ["import", str(f), "--db", str(db)], [NAME, "line 1", "long"]


@case("10mb-line-mid-file")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(2) + "9," * (5 << 20) + "\n" + trades_text(2))
    return ["import", str(f), "--db", str(db)], [NAME, "line 3"]


@case("10mb-line-ohlc")
def _(tmp, db):
    f = _file(tmp, "AAAUSDT.csv", ohlc_text(5) + "x" * (10 << 20) + "\n")
    return (["analyze", "--files", str(f), "--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "5",
             "--out", str(tmp / "o.csv")], ["AAAUSDT.csv", "line 7"])


@case("price-1e308")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(5, {2: {"price": "1e308"}}))
    return ["import", str(f), "--db", str(db)], [NAME, "line 3", "'price'"]


@case("price-inf")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(5, {3: {"price": "inf"}}))
    return ["import", str(f), "--db", str(db)], [NAME, "line 4", "'price'"]


@case("qty-1e308")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(5, {1: {"qty": "1e308"}}))
    return ["import", str(f), "--db", str(db)], [NAME, "line 2", "'qty'"]


@case("ohlc-close-1e308-analyze")
def _(tmp, db):
    f = _file(tmp, "AAAUSDT.csv", ohlc_text(40, bad_row=30, bad_value="1e308"))
    g = _file(tmp, "BBBUSDT.csv", ohlc_text(40))
    return (["analyze", "--files", str(f), str(g), "--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "5",
             "--out", str(tmp / "o.csv")], ["AAAUSDT.csv", "line 32", "'close'"])


@case("klines-close-inf-analyze")
def _(tmp, db):
    f = _file(tmp, "AAAUSDT-1m-2024-01-01.csv", kline_text(40, bad_row=20, bad_value="inf"))
    g = _file(tmp, "BBBUSDT-1m-2024-01-01.csv", kline_text(40))
    return (["analyze", "--files", str(f), str(g), "--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "5",
             "--out", str(tmp / "o.csv")], ["AAAUSDT-1m-2024-01-01.csv", "line 21", "'close'"])


@case("klines-close-1e308-analyze")
def _(tmp, db):
    f = _file(tmp, "AAAUSDT-1m-2024-01-01.csv", kline_text(40, bad_row=20, bad_value="1e308"))
    g = _file(tmp, "BBBUSDT-1m-2024-01-01.csv", kline_text(40))
    return (["analyze", "--files", str(f), str(g), "--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "5",
             "--out", str(tmp / "o.csv")], ["AAAUSDT-1m-2024-01-01.csv", "line 21", "'close'"])


@case("only-zero-and-negative-prices")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(4, {0: {"price": 0.0}, 1: {"price": -5.0}, 2: {"qty": 0.0},
                                           3: {"qty": -1.0}}))
    return ["import", str(f), "--db", str(db)], [NAME, "<= 0", "4"]


@case("only-zero-prices-usdm-aggtrades")
def _(tmp, db):
    rows = "\n".join(f"{7 + i},0,{0.5 if i else 0},{10 + i},{10 + i},{T0 + i},true" for i in range(3))
    f = _file(tmp, "BTCUSDT-aggTrades-um-2024-08-08.csv", rows + "\n")
    return ["import", str(f), "--db", str(db)], ["BTCUSDT-aggTrades-um-2024-08-08.csv", "<= 0"]


@case("times-in-seconds")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(3, {i: {"time": (T0 // 1000) + i} for i in range(3)}))
    return ["import", str(f), "--db", str(db)], [NAME, "line 1", "'time'", "seconds"]


@case("time-year-3000")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(4, {2: {"time": 32503680000000}}))
    return ["import", str(f), "--db", str(db)], [NAME, "line 3", "'time'", "3000"]


@case("time-negative")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(4, {1: {"time": -T0}}))
    return ["import", str(f), "--db", str(db)], [NAME, "line 2", "'time'", "negative"]


@case("time-year-3000-analyze")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(4, {3: {"time": 32503680000000}}))
    g = _file(tmp, "ETHUSDT-trades-2024-08-08.csv", trades_text(4))
    return (["analyze", "--files", str(f), str(g), "--y", "BTCUSDT", "--x", "ETHUSDT", "--window", "5",
             "--out", str(tmp / "o.csv")], [NAME, "line 4", "'time'"])


@case("ohlc-time-negative-analyze")
def _(tmp, db):
    text = ohlc_text(10).replace("2024-01-01T00:00:00Z", "-1704067200")
    f = _file(tmp, "AAAUSDT.csv", text)
    g = _file(tmp, "BBBUSDT.csv", ohlc_text(10))
    return (["analyze", "--files", str(f), str(g), "--y", "AAAUSDT", "--x", "BBBUSDT", "--window", "5",
             "--out", str(tmp / "o.csv")], ["AAAUSDT.csv", "line 2", "'timestamp'", "negative"])


@case("capture-cut-line-mid-file")
def _(tmp, db):
    ns = T0 * 1_000_000
    cut = f'{ns + 5} {{"stream":"btcusdt@depth@100ms","data":{{"e":"depthU\n'
    text = cap_line(ns, 0) + depth_line(ns + 1) + cut + cap_line(ns + 9, 1)
    f = _file(tmp, "spot_btcusdt_20240808.gz", gzip.compress(text.encode()))
    return ["import", str(f), "--db", str(db)], ["spot_btcusdt_20240808.gz", "line 3", "cut"]


@case("capture-cyrillic-symbol")
def _(tmp, db):
    ns = T0 * 1_000_000
    text = cap_line(ns, 0) + cap_line(ns + 1, 1, symbol="ВТСUSDT")  # В, Т, С are Cyrillic
    f = _file(tmp, "spot_btcusdt_20240808.gz", gzip.compress(text.encode()))
    return ["import", str(f), "--db", str(db)], ["spot_btcusdt_20240808.gz", "line 2", "'s'", "ASCII"]


@case("ndjson-cyrillic-symbol")
def _(tmp, db):
    text = ('{"symbol":"BTCUSDT","ts":"2024-08-08T00:00:00Z","price":1,"size":1}\n'
            '{"symbol":"ВТСUSDT","ts":"2024-08-08T00:00:01Z","price":1,"size":1}\n')
    f = _file(tmp, "spot_ticks.ndjson", text)
    return ["import", str(f), "--db", str(db), "--market", "spot"], ["spot_ticks.ndjson", "line 2", "ASCII"]


@case("symbol-argument-cyrillic")
def _(tmp, db):
    f = _file(tmp, "ticks.csv", trades_text(3))
    return ["import", str(f), "--db", str(db), "--symbol", "ВТСUSDT"], ["symbol", "ASCII", "ВТСUSDT"]


@case("trades-missing-columns-headerless")
def _(tmp, db):
    text = "\n".join(",".join(trade_row(i).split(",")[:5]) for i in range(3)) + "\n"
    f = _file(tmp, NAME, text)
    return ["import", str(f), "--db", str(db)], [NAME, "line 1", "5 fields", "trades"]


@case("trades-missing-column-header")
def _(tmp, db):
    text = "id,price,qty,time,is_buyer_maker\n" + "\n".join(
        f"{100 + i},61837.6,0.02,{T0 + i},true" for i in range(3)) + "\n"
    f = _file(tmp, "BTCUSDT-trades-um-2024-08-08.csv", text)
    return ["import", str(f), "--db", str(db)], ["BTCUSDT-trades-um-2024-08-08.csv", "missing column",
                                                  "quote_qty"]


@case("damaged-store-import")
def _(tmp, db):
    con = sqlite3.connect(db)
    con.execute("DROP TABLE bars_1s")
    con.commit()
    con.close()
    f = _file(tmp, NAME, trades_text(3))
    return ["import", str(f), "--db", str(db)], [db.name, "bars_1s", "missing"]


@case("damaged-store-analyze")
def _(tmp, db):
    con = sqlite3.connect(db)
    con.execute("DROP TABLE instruments")
    con.commit()
    con.close()
    return (["analyze", "--db", str(db), "--y", "BTCUSDT", "--x", "ETHUSDT", "--window", "5",
             "--timeframe", "1s", "--out", str(tmp / "o.csv")], [db.name, "instruments", "missing"])


@case("port-99999-replay")
def _(tmp, db):
    return ["replay", "--port", "99999"], ["--port", "99999", "65535"]


@case("port-99999-demo")
def _(tmp, db):
    return ["demo", "--port", "99999", "--db", str(tmp / "d.db")], ["--port", "99999", "65535"]


@case("not-sqlite-db")
def _(tmp, db):
    f = _file(tmp, NAME, trades_text(3))
    db.unlink()
    db.write_text("timestamp,open\n1,2\n")
    return ["import", str(f), "--db", str(db)], [db.name, "not"]


@case("demo-refuses-research-store")
def _(tmp, db):
    return ["demo", "--db", str(db), "--no-browser", "--port", "0"], [db.name, "demo"]


@case("demo-terminal-refuses-research-store")
def _(tmp, db):
    return ["demo", "--terminal", "--db", str(db), "--duration", "1"], [db.name, "demo"]


def _run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _check_one_line(rc: int, err: str, needles: list[str]) -> str:
    assert rc == 2, (rc, err[:2000])
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0][:1000])
    assert len(lines[0]) < 700, lines[0][:1000]
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(name, tmp_path, capsys, caplog):
    db = make_store(tmp_path / "research.db")
    argv, needles = CASES[name](tmp_path, db)
    before = digest(db) if db.exists() and db.stat().st_size and name != "not-sqlite-db" else None
    before_bytes = file_sha(db) if db.exists() else None
    with caplog.at_level(logging.INFO):
        rc, out, err = _run_main(argv, capsys)
    line = _check_one_line(rc, err, needles)
    # Nothing else would have reached the real CLI's stderr (it logs INFO and up there).
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], (line, caplog.text[:2000])
    if before is not None:
        assert digest(db) == before, line
        assert before[1] == [("ok",)]
    if name == "not-sqlite-db":
        assert file_sha(db) == before_bytes
    assert not (tmp_path / "o.csv").exists()


# ----------------------------------------------------------------------------------
# what is not an error: some bad rows are counted and reported, the rest imported
# ----------------------------------------------------------------------------------
def test_some_zero_or_negative_rows_are_counted_reported_and_not_stored(tmp_path, capsys):
    from quantlab.store import TickStore

    f = _file(tmp_path, NAME, trades_text(6, {1: {"price": 0.0}, 4: {"qty": -2.0}}))
    db = tmp_path / "s.db"
    rc, out, err = _run_main(["import", str(f), "--db", str(db)], capsys)
    assert rc == 0, err
    assert "2 rows with price or quantity <= 0" in out and "line 2" in out, out
    with TickStore(db, read_only=True) as st:
        assert sorted(st.ticks("BTCUSDT")["trade_id"]) == [100, 102, 103, 105]


def test_import_stops_at_a_bad_file_and_says_what_was_stored(tmp_path, capsys):
    from quantlab.store import TickStore

    good = _file(tmp_path, NAME, trades_text(3))
    bad = _file(tmp_path, "ETHUSDT-trades-2024-08-08.csv", trades_text(3, {1: {"price": "inf"}}))
    db = tmp_path / "s.db"
    rc, out, err = _run_main(["import", str(good), str(bad), "--db", str(db)], capsys)
    _check_one_line(rc, err, [bad.name, "line 2", "the 1 file(s) before it were imported"])
    with TickStore(db, read_only=True) as st:
        assert st.count("BTCUSDT") == 3 and st.count() == 3


# ----------------------------------------------------------------------------------
# SQLite files that are not (intact) quantlab stores
# ----------------------------------------------------------------------------------
def _foreign_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO customers (name) VALUES ('ada'), ('grace')")
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("command", ["import", "analyze", "ingest", "lab"])
def test_foreign_sqlite_file_is_refused_before_anything_is_written(command, tmp_path, capsys):
    db = _foreign_db(tmp_path / "crm.db")
    before = file_sha(db)
    f = _file(tmp_path, NAME, trades_text(3))
    argv = {"import": ["import", str(f), "--db", str(db)],
            "analyze": ["analyze", "--db", str(db), "--y", "BTCUSDT", "--x", "ETHUSDT", "--window", "5",
                        "--out", str(tmp_path / "o.csv")],
            "ingest": ["ingest", "--market", "spot", "--symbols", "BTCUSDT", "--db", str(db),
                       "--ws-url", "ws://127.0.0.1:9", "--rest-url", "http://127.0.0.1:9",
                       "--duration", "5"],
            "lab": ["lab", "--db", str(db), "--no-browser", "--port", "0"]}[command]
    rc, out, err = _run_main(argv, capsys)
    _check_one_line(rc, err, ["crm.db", "not a quantlab tick store"])
    assert file_sha(db) == before
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    assert digest(db)[2] == "delete"  # never switched to WAL


# ----------------------------------------------------------------------------------
# subprocesses: inputs that hang a reader, and a read-only directory
# ----------------------------------------------------------------------------------
def _cli(args: list[str], timeout: float = 60, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "quantlab", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_and_devices_never_hang(tmp_path):
    fifo = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    os.mkfifo(fifo)
    db = make_store(tmp_path / "research.db")
    before = digest(db)
    runs = {
        "import-fifo": (["import", str(fifo), "--db", str(db)], [fifo.name, "FIFO"]),
        "analyze-fifo": (["analyze", "--files", str(fifo), "--y", "BTCUSDT", "--x", "ETHUSDT",
                          "--window", "5", "--out", str(tmp_path / "o.csv")], [fifo.name, "FIFO"]),
        "import-dev-zero": (["import", "/dev/zero", "--db", str(db)], ["/dev/zero", "regular file"]),
        "replay-capture-fifo": (["replay", "--capture", str(fifo), "--port", "0"], [fifo.name, "FIFO"]),
        "db-fifo": (["analyze", "--db", str(fifo), "--y", "BTCUSDT", "--x", "ETHUSDT", "--window", "5",
                     "--out", str(tmp_path / "o.csv")], [fifo.name, "FIFO"]),
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "quantlab", *args], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (args, _) in runs.items()}  # concurrently: each is an interpreter start
    try:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=90)  # a hang fails the test through TimeoutExpired
            assert "Traceback" not in err, (name, err[-3000:])
            _check_one_line(proc.returncode, err, runs[name][1])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert digest(db) == before


def _without_root_override() -> list[str]:
    """A command prefix under which directory permissions apply. Root ignores them
    (CAP_DAC_OVERRIDE), and dropping to another user fails here because the
    interpreter lives under /root; so root runs the CLI with those two capabilities
    removed from its bounding set (``setpriv``): still uid 0, but a chmod 555
    directory is then as read-only for it as for anyone."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux setpriv: a chmod'd directory would not "
                    "restrict this process")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_store_in_a_read_only_directory_can_still_be_read():
    prefix = _without_root_override()
    top = Path(tempfile.mkdtemp(prefix="quantlab-ro-"))
    try:
        folder = top / "ro"
        folder.mkdir()
        db = make_store(folder / "research.db")
        os.chmod(top, 0o755)
        os.chmod(db, 0o644)
        os.chmod(folder, 0o555)
        out_dir = top / "out"
        out_dir.mkdir(mode=0o777)
        os.chmod(out_dir, 0o777)
        before = digest(db)
        listing = sorted(p.name for p in folder.iterdir())
        proc = _cli(["analyze", "--db", str(db), "--y", "BTCUSDT", "--x", "ETHUSDT", "--window", "5",
                     "--timeframe", "1s", "--out", str(out_dir / "o.csv")], prefix=prefix)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out_dir / "o.csv").exists()
        assert sorted(p.name for p in folder.iterdir()) == listing  # no -wal/-shm created
        assert digest(db) == before
        # Writing there is refused in one line, not a traceback.
        f = out_dir / NAME
        f.write_text(trades_text(3))
        proc = _cli(["import", str(f), "--db", str(db)], prefix=prefix)
        _check_one_line(proc.returncode, proc.stderr, [db.name, "read-only", "reading still works"])
        assert digest(db) == before
    finally:
        os.chmod(top / "ro", 0o755)
        shutil.rmtree(top)


# ----------------------------------------------------------------------------------
# the demo keeps stores it did not create
# ----------------------------------------------------------------------------------
def test_demo_store_marker_allows_reuse_only_of_its_own_store(tmp_path):
    from quantlab import launch

    own = tmp_path / "demo.db"
    launch.prepare_demo_store(own)
    assert launch.is_demo_store(own)
    launch.prepare_demo_store(own)  # its own store: replaced, fine
    research = make_store(tmp_path / "research.db")
    assert not launch.is_demo_store(research)
    before = digest(research)
    from quantlab.errors import QuantlabError

    with pytest.raises(QuantlabError, match="not created by `quantlab demo`"):
        launch.prepare_demo_store(research)
    assert digest(research) == before


# ----------------------------------------------------------------------------------
# ingester REST bodies
# ----------------------------------------------------------------------------------
class _BigBody(http.server.BaseHTTPRequestHandler):
    size = 0
    chunked = False

    def do_GET(self):  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if not self.chunked:
            self.send_header("Content-Length", str(self.size))
        self.end_headers()
        block = b"[" + b"1," * (1 << 16)
        sent = 0
        try:
            while sent < self.size:
                self.wfile.write(block)
                sent += len(block)
        except OSError:  # the client stopped reading: what the cap is for
            pass

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("chunked", [False, True])
def test_rest_body_is_capped(chunked, monkeypatch):
    import tracemalloc

    from quantlab import ingest

    monkeypatch.setattr(ingest, "REST_MAX_BODY_BYTES", 1 << 20)
    handler = type("H", (_BigBody,), {"size": 64 << 20, "chunked": chunked,
                                       "protocol_version": "HTTP/1.0"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/v3/aggTrades"
        tracemalloc.start()
        with pytest.raises(ingest.RestError) as info:
            ingest._http_get_json(url, 10.0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert "larger than" in str(info.value) and "MiB" in str(info.value)
        assert peak < 8 << 20, peak  # never holds the 64 MiB body
        assert len(str(info.value).splitlines()) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_rest_retries_free_memory_and_give_up_in_one_line(tmp_path, monkeypatch):
    """Every attempt gets a 64 MiB body: each is refused at the cap, nothing piles up
    across the retries, and the last error says it gave up, in one line."""
    import asyncio
    import time
    import tracemalloc

    from quantlab import ingest

    monkeypatch.setattr(ingest, "REST_MAX_BODY_BYTES", 1 << 20)
    hits = []

    class Handler(_BigBody):
        size = 64 << 20
        chunked = True
        protocol_version = "HTTP/1.0"

        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = ingest.IngestSettings(
            symbols=("BTCUSDT",), market="spot", db_path=str(tmp_path / "t.db"),
            ws_base="ws://127.0.0.1:9", rest_base=f"http://127.0.0.1:{server.server_address[1]}",
            backoff=ingest.BackoffPolicy(initial_s=0.01, max_s=0.02, jitter=0), rest_max_attempts=3)
        ing = ingest.Ingester(settings)

        async def fetch():
            ing._bucket = ingest.TokenBucket.for_market("spot", settings.rest_weight_share, time.monotonic())
            return await ing._rest("aggTrades", symbol="BTCUSDT", limit=1)

        tracemalloc.start()
        with pytest.raises(ingest.RestError) as info:
            asyncio.run(fetch())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        server.shutdown()
        server.server_close()
    text = str(info.value)
    assert len(hits) == 3
    assert "gave up after 3 attempts" in text and "larger than 1 MiB" in text, text
    assert len(text.splitlines()) == 1
    assert info.value.__cause__ is None  # the earlier attempts are not kept alive by a chain
    assert peak < 8 << 20, peak


# ----------------------------------------------------------------------------------
# a seeded fuzz of every file format: only QuantlabErrors, each one line
# ----------------------------------------------------------------------------------
def _fuzz_bases() -> dict[str, bytes]:
    usdm = "id,price,qty,quote_qty,time,is_buyer_maker\n" + "\n".join(
        ",".join(trade_row(i).split(",")[:6]) for i in range(20)) + "\n"
    return {
        NAME: trades_text(20).encode(),
        "BTCUSDT-trades-um-2024-08-08.csv": usdm.encode(),
        "BTCUSDT-aggTrades-2024-08-08.csv": "".join(
            f"{i},100.5,0.2,{i * 3},{i * 3 + 2},{T0 + i},true,true\n" for i in range(20)).encode(),
        "AAAUSDT-1m-2024-01-01.csv": kline_text(20).encode(),
        "AAAUSDT.csv": ohlc_text(20).encode(),
        "spot_ticks.ndjson": "".join(f'{{"symbol":"BTCUSDT","ts":"2024-08-08T00:00:{i:02d}Z","price":1.5,'
                                     f'"size":2}}\n' for i in range(20)).encode(),
        "spot_btcusdt_20240808.gz": "".join(cap_line(T0 * 1_000_000 + i, i) for i in range(20)).encode(),
    }


def _mutate(rng, data: bytes) -> bytes:
    b = bytearray(data)
    k = rng.randrange(9)
    if k == 0:
        del b[rng.randrange(len(b)):]
    elif k == 1:
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif k == 2:
        b[rng.randrange(len(b) + 1):0] = bytes([rng.choice([0, 13, 10, 44, 34, 123, 125, 255])]) * rng.randrange(1, 4)
    elif k == 3:
        i = rng.randrange(len(b))
        b[i:i] = rng.choice([b"nan", b"inf", b"-1", b"1e308", b'"', b"9" * 30, b"\xef\xbb\xbf", "é".encode()])
    elif k == 4:
        b = bytearray(data.replace(b"\n", b"\r", rng.randrange(1, 4)))
    elif k == 5:
        b = bytearray(data.replace(b",", b";", 1))
    elif k == 6:
        i = rng.randrange(len(b))
        del b[i:rng.randrange(i, len(b) + 1)]
    elif k == 7:
        b = bytearray(data.replace(b"\n", b"\n\n", 2))
    else:
        b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    return bytes(b)


def test_fuzzed_files_raise_only_one_line_quantlab_errors(tmp_path):
    import random

    from quantlab import files as io
    from quantlab.errors import QuantlabError

    rng = random.Random(13)
    bases = _fuzz_bases()
    refused = 0
    for n in range(200):
        name = rng.choice(sorted(bases))
        data = bases[name]
        for _ in range(rng.randrange(1, 3)):
            data = _mutate(rng, data)
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        try:
            if n % 2:
                io.load_files([path])
            else:
                io.load_file(path, market="spot" if name.endswith(".ndjson") else None)
        except QuantlabError as exc:  # anything else fails the test with its traceback
            refused += 1
            text = str(exc)
            assert "\n" not in text and len(text) < 900, (n, text[:2000])
            assert name in text or "symbol" in text or "market" in text, (n, text)
    assert refused > 50  # the mutations do produce bad files
