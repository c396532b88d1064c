"""Benchmark of quantlab.ingest: replay server -> real socket -> Ingester -> SQLite.

The replay server runs in its own process (``python -c`` with
:class:`quantlab.replay.ReplayServer`) and streams a finite set of seeded
synthetic trades (BTCUSDT + ETHUSDT, spot ``@trade``) as fast as the client
reads them. The :class:`~quantlab.ingest.Ingester` stores them in a fresh
SQLite file. Printed:

* end-to-end throughput, trades/s: trades stored / (time the last one was
  stored - time the first one was stored), measured from this process;
* lost trades: ids the server produced that are not in the store (must be 0)
  and ids stored twice (must be 0; the store's unique key makes it impossible);
* the same measurement for a baseline ingester of the kind typical dashboards
  use (``json.loads`` + one ``INSERT`` and ``commit`` per trade on the socket
  loop), run for a fixed time against the same kind of server with SQLite's
  defaults (rollback journal, ``synchronous=FULL``: what those dashboards
  run); the 10x target is against it. For transparency the same naive loop is
  also run with WAL + ``synchronous=NORMAL`` (the store's settings), which
  removes the fsync per commit and is several times faster; that ratio is
  printed too, without a target;
* CPU time per trade of the ingesting process, split into the socket-loop
  thread and the writer thread, and of the server process: on a shared
  machine wall-clock rates vary with other load, CPU costs much less;
* a soak: RSS of this process sampled while ingesting 1,000 trades/s (paced).
  The default run soaks 20 s; ``--soak`` runs the 5 minutes of the target.

Targets: >= 60,000 trades/s end to end, >= 10x the baseline, 0 lost, RSS flat
during the soak (last sample within 10 % + 10 MB of the sample taken after the
first 20 % of the run). Prints PASS/FAIL per target and exits 0 either way.

Run: ``.venv/bin/python benchmarks/ingest.py [--trades N] [--baseline-s S] [--soak]``
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quantlab.ingest import IngestSettings, Ingester  # noqa: E402
from quantlab.store import TickStore  # noqa: E402

RATE_TARGET = 60_000.0
RATIO_TARGET = 10.0
SYMBOLS = ("BTCUSDT", "ETHUSDT")

# The server process. Modes: "finite N" replays N seeded synthetic trades as
# fast as the client reads (RecordedSource, speed 0); "asap" generates forever
# as fast as the client reads; "paced R" generates R trades/s. Prints its URLs
# as one JSON line, then answers "ids" on stdin with the produced ids.
SERVER = r"""
import json, sys
import numpy as np
from quantlab.replay import RecordedSource, ReplayServer, SyntheticSource
from quantlab.synthetic import SyntheticMarket
mode = sys.argv[1]
if mode == "finite":
    m = SyntheticMarket(("BTCUSDT", "ETHUSDT"), seed=11, rate=1000.0)
    batch = m.generate(int(sys.argv[2]))
    src = RecordedSource(batch, batch.time_ms * 1_000_000, speed=0, batch_size=2000)
elif mode == "asap":
    src = SyntheticSource(("BTCUSDT", "ETHUSDT"), rate=0, seed=12)
else:
    src = SyntheticSource(("BTCUSDT", "ETHUSDT"), rate=float(sys.argv[2]), seed=13)
srv = ReplayServer(src, tape_limit=5_000_000).start()
print(json.dumps({"ws": srv.ws_url, "rest": srv.rest_url}), flush=True)
for line in sys.stdin:
    if line.strip() == "ids":
        out = {s: srv.produced_ids(s).tolist() for s in ("BTCUSDT", "ETHUSDT")}
        out["messages_sent"] = srv.stats.messages_sent
        print(json.dumps(out), flush=True)
"""


class Server:
    """The replay server in a child process."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("replay server did not start")
        urls = json.loads(line)
        self.ws, self.rest = urls["ws"], urls["rest"]

    def produced(self) -> dict:
        self.proc.stdin.write("ids\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process, by name."""
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[t.name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process, MB."""
    cur = peak = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


# --- the ingester ------------------------------------------------------------------
def run_ingester(n_trades: int, workdir: Path) -> dict:
    server = Server("finite", str(n_trades))
    db = workdir / "bench.db"
    try:
        settings = IngestSettings(symbols=SYMBOLS, db_path=db, ws_base=server.ws, rest_base=server.rest,
                                  stale_after_s=30.0)
        ing = Ingester(settings)
        c0 = cpu_s()
        s0 = process_cpu_s(server.proc.pid)
        ing.start()
        first = last = None
        stored = 0
        deadline = time.monotonic() + 120
        expected = None
        max_queue = 0
        while time.monotonic() < deadline:
            st = ing.stats
            stored = st.trades_stored
            max_queue = max(max_queue, st.queue_depth)
            now = time.perf_counter()
            if stored and first is None:
                first = now
            if expected is None and stored >= n_trades:
                # the batch may hold a few more than asked (whole taker orders)
                expected = sum(len(v) for k, v in server.produced().items() if k in SYMBOLS)
            if expected is not None and stored >= expected:
                last = now
                break
            time.sleep(0.005)
        threads = thread_cpu_s()
        stats = ing.stop()
        cpu = cpu_s() - c0
        server_cpu = process_cpu_s(server.proc.pid) - s0
        produced = server.produced()
    finally:
        server.close()
    store = TickStore(db, read_only=True)
    lost = dup = 0
    total = 0
    for sym in SYMBOLS:
        got = store.trade_ids("spot", sym, "trade")
        want = np.asarray(produced[sym], dtype=np.int64)
        total += want.size
        lost += np.setdiff1d(want, got).size
        dup += got.size - np.unique(got).size
    store.close()
    return {"stored": stats.trades_stored, "produced": total, "lost": lost, "dup": dup,
            "seconds": (last - first) if (first and last) else float("nan"),
            "rate": (stats.trades_stored / (last - first)) if (first and last and last > first) else 0.0,
            "cpu_per_100k": cpu / max(1, stats.trades_stored) * 100_000, "stats": stats,
            "max_queue": max_queue,
            "us_loop": threads.get("quantlab-ingest", 0.0) / max(1, stats.trades_stored) * 1e6,
            "us_writer": threads.get("quantlab-ingest-writer", 0.0) / max(1, stats.trades_stored) * 1e6,
            "us_server": server_cpu / max(1, stats.trades_stored) * 1e6}


# --- the baseline ------------------------------------------------------------------
async def _baseline(url: str, db: Path, seconds: float, wal: bool) -> tuple[int, float]:
    """A dashboard-style ingester: json.loads and INSERT + commit per trade, on the loop."""
    from websockets.asyncio.client import connect

    con = sqlite3.connect(db)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE IF NOT EXISTS trades (symbol TEXT, id INTEGER, price REAL, qty REAL, "
                "time INTEGER, maker INTEGER)")
    con.commit()
    n = 0
    async with connect(url) as ws:
        t0 = time.perf_counter()
        end = t0 + seconds
        async for raw in ws:
            d = json.loads(raw)["data"]
            con.execute("INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?)",
                        (d["s"], d["t"], float(d["p"]), float(d["q"]), d["T"], d["m"]))
            con.commit()
            n += 1
            if n % 64 == 0 and time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - t0
    con.close()
    return n, elapsed


def run_baseline(seconds: float, workdir: Path, wal: bool) -> float:
    server = Server("asap")
    try:
        url = server.ws + "/stream?streams=btcusdt@trade/ethusdt@trade"
        n, elapsed = asyncio.run(_baseline(url, workdir / f"baseline_{'wal' if wal else 'default'}.db",
                                           seconds, wal))
    finally:
        server.close()
    return n / elapsed


# --- soak --------------------------------------------------------------------------
def run_soak(seconds: float, rate: float, workdir: Path, every_s: float) -> tuple[list, dict]:
    server = Server("paced", str(rate))
    samples = []
    try:
        settings = IngestSettings(symbols=SYMBOLS, db_path=workdir / "soak.db", ws_base=server.ws,
                                  rest_base=server.rest)
        ing = Ingester(settings).start()
        t0 = time.monotonic()
        while True:
            elapsed = time.monotonic() - t0
            cur, peak = rss_mb()
            stats = ing.stats
            samples.append((elapsed, cur, peak, stats.trades_stored))
            print(f"  soak t={elapsed:6.1f} s  rss={cur:7.1f} MB  peak={peak:7.1f} MB  "
                  f"stored={stats.trades_stored:9,d}  queue={stats.queue_depth}", flush=True)
            if elapsed >= seconds:
                break
            time.sleep(min(every_s, max(0.0, seconds - elapsed)))
        final = ing.stop()
    finally:
        server.close()
    return samples, {"stats": final}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=600_000, help="trades to stream (default 600,000)")
    ap.add_argument("--baseline-s", type=float, default=5.0, help="seconds per baseline run")
    ap.add_argument("--soak", action="store_true", help="5-minute soak at 1,000 trades/s (default: 20 s)")
    args = ap.parse_args(argv[1:])

    with tempfile.TemporaryDirectory(prefix="quantlab-bench-") as tmp:
        work = Path(tmp)
        print(f"ingest benchmark: {args.trades:,} synthetic spot trades (BTCUSDT+ETHUSDT), "
              f"replay server in a child process, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        r = run_ingester(args.trades, work)
        print(f"ingester : {r['rate']:10,.0f} trades/s end to end ({r['stored']:,} stored in "
              f"{r['seconds']:.2f} s)")
        print(f"           CPU per trade: socket loop {r['us_loop']:.1f} us, writer {r['us_writer']:.1f} us "
              f"(this process {r['cpu_per_100k'] * 10:.1f} us in all); replay server {r['us_server']:.1f} us")
        print(f"           produced {r['produced']:,}, lost {r['lost']}, stored twice {r['dup']}, "
              f"dropped {r['stats'].dropped}, gaps {r['stats'].gaps_found}, "
              f"writer queue peak {r['max_queue']:,}")
        base_default = run_baseline(args.baseline_s, work, wal=False)
        base_wal = run_baseline(args.baseline_s, work, wal=True)
        ratio = r["rate"] / base_default if base_default else float("inf")
        ratio_wal = r["rate"] / base_wal if base_wal else float("inf")
        print(f"baseline : {base_default:10,.0f} trades/s (json + INSERT + commit per trade, SQLite "
              f"defaults) -> ratio {ratio:,.1f}x")
        print(f"           {base_wal:10,.0f} trades/s (same loop, WAL + synchronous=NORMAL) -> "
              f"ratio {ratio_wal:,.1f}x (no target)")

        soak_s = 300.0 if args.soak else 20.0
        print(f"soak     : {soak_s:.0f} s at 1,000 trades/s, RSS of this process"
              + ("" if args.soak else " (short default run; --soak for 5 minutes)"))
        samples, soak = run_soak(soak_s, 1000.0, work, every_s=15.0 if args.soak else 2.0)
        ref = next(s for s in samples if s[0] >= 0.2 * soak_s)[1]
        last = samples[-1][1]
        flat = last <= ref * 1.10 + 10.0
        print(f"           RSS {ref:.1f} MB at 20 % -> {last:.1f} MB at the end; "
              f"peak {samples[-1][2]:.1f} MB; stored {soak['stats'].trades_stored:,}")

        print(f"{verdict(r['rate'] >= RATE_TARGET)} end to end >= {RATE_TARGET:,.0f} trades/s "
              f"({r['rate']:,.0f})")
        print(f"{verdict(ratio >= RATIO_TARGET)} >= {RATIO_TARGET:.0f}x the dashboard baseline ({ratio:,.1f}x)")
        print(f"{verdict(r['lost'] == 0 and r['dup'] == 0)} 0 lost, 0 duplicated "
              f"({r['lost']} lost, {r['dup']} duplicated)")
        print(f"{verdict(flat)} RSS flat during the soak ({ref:.1f} -> {last:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
