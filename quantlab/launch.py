"""``quantlab demo`` and ``quantlab lab``: JupyterLab on the live monitor, and
the terminal tour on a :class:`~quantlab.live.LiveSession`.

An entry point (like the CLI): starts processes and a replay server, computes
nothing; plain arguments only (:mod:`quantlab.commands.demo` reads the
``argparse`` namespace). It owns the demo store's safety mark
(:func:`prepare_demo_store`), the JupyterLab launch and its settings. The notebook reads where to connect from the environment
(``QUANTLAB_SOURCE``, ``QUANTLAB_WS_URL``, ``QUANTLAB_REST_URL``,
``QUANTLAB_DB``) in its ``parameters`` cell, so papermill ``-p`` values still
override everything.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from quantlab.errors import InsufficientData, UnknownSymbol, UnsafeOverwrite

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = Path("notebooks") / "live_monitor.ipynb"

# JupyterLab 4 asks "Select Kernel" on every notebook open unless this
# setting is on (BROWSER.md); a one-click tour should not start with a dialog.
_LAB_OVERRIDES = {"@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True}}


def ensure_lab_overrides(prefix: str | Path = sys.prefix) -> Path | None:
    """Merge the autostart-kernel setting into ``<prefix>/share/jupyter/lab/settings/overrides.json``.

    Only inside a virtual environment (``sys.prefix != sys.base_prefix``): a
    system-wide JupyterLab is the user's, not ours to configure. Returns the
    file written, or None.
    """
    if Path(prefix) == Path(sys.base_prefix):
        return None
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    current: dict = {}
    if path.exists():
        try:
            current = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError:
            current = {}
    merged = {**current}
    for plugin, values in _LAB_OVERRIDES.items():
        merged[plugin] = {**current.get(plugin, {}), **values}
    if merged != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=2) + "\n")
    return path


def _lab_command(port: int, open_browser: bool) -> list[str]:
    cmd = [sys.executable, "-m", "jupyterlab", str(NOTEBOOK), "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--ServerApp.root_dir={ROOT}"]
    if not open_browser:
        cmd.append("--no-browser")
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def _run_lab(env: dict[str, str], port: int, open_browser: bool) -> int:
    ensure_lab_overrides()
    proc = subprocess.Popen(_lab_command(port, open_browser), cwd=ROOT, env=env)

    def forward(signum: int, frame: Any) -> None:
        proc.send_signal(signal.SIGTERM)  # Jupyter stops at once on SIGTERM

    previous = signal.signal(signal.SIGTERM, forward) if threading.current_thread() is threading.main_thread() else None
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # Ctrl-C: JupyterLab asks to confirm; a second one stops it
                proc.send_signal(signal.SIGINT)
                try:
                    return proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    return proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def terminal_demo(db: str | Path, rate: float, duration_s: float | None, *,
                  status_every_s: float = 2.0, out: Any = None) -> int:
    """``quantlab demo --terminal``: the offline tour without a browser.

    A :class:`~quantlab.live.LiveSession` (the monitor's feed, without the UI)
    starts the replay server on the synthetic pair (BTCUSDT/ETHUSDT at
    ``rate`` trades/s over both symbols; 0: as fast as possible), ingests it
    into ``db`` and drains its subscription as the monitor does; its status
    line is printed every ``status_every_s`` seconds to ``out`` (default
    stdout) and once more after it stopped, then the pair's analytics on the
    stored 1 s bars. Runs ``duration_s`` seconds (None: until Ctrl-C or
    SIGTERM). Returns 0; a fatal feed error raises
    :class:`~quantlab.errors.FatalFeedError`."""
    import time

    from quantlab.errors import FatalFeedError
    from quantlab.live import LiveSession, SessionSettings
    from quantlab.pairs import load_pair_bars, run_analysis

    out = out if out is not None else sys.stdout
    # y=ETHUSDT, x=BTCUSDT: the synthetic market's random-walk leg is BTCUSDT
    settings = SessionSettings(source="replay", market="spot", pairs=(("ETHUSDT", "BTCUSDT"),),
                               db_path=str(db), rate=rate, seed=0)
    session = LiveSession(settings)
    received = 0

    def line(prefix: str) -> None:
        st = session.status()
        if st is not None:
            print(f"{prefix} {st.line()}, client received {received:,}", file=out, flush=True)

    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        try:
            ws, rest = session.open_source()
            print(f"replay server: ws {ws}  rest {rest}", file=out, flush=True)
            session.start()
            t0 = time.monotonic()
            next_line = t0 + status_every_s
            while session.running:
                received += len(session.drain())
                now = time.monotonic()
                if duration_s is not None and now - t0 >= duration_s:
                    break
                if now >= next_line:
                    line(time.strftime("%H:%M:%S"))
                    next_line += status_every_s
                ends = [next_line] + ([t0 + duration_s] if duration_s is not None else [])
                session.wait(max(0.01, min(min(ends) - time.monotonic(), 0.25)))
        except KeyboardInterrupt:
            pass
        finally:
            try:
                session.stop(timeout_s=60.0)
            finally:
                received += len(session.drain())
                line("final")
                session.close()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    st = session.status()
    if st is not None and st.fatal:
        raise FatalFeedError(st.error or "ingester stopped on a fatal error")
    try:
        aligned = load_pair_bars(y="BTCUSDT", x="ETHUSDT", timeframe="1s", db=db)
        result = run_analysis(aligned, window=min(60, max(20, len(aligned) // 2)), health=False)
        s = result.summary()
        print(f"{len(aligned)} 1s bars in {db}: hedge_ratio={s['hedge_ratio']:.4g} "
              f"adf_pvalue={s['adf_pvalue']:.3g} half_life_bars={s['half_life_bars']}", file=out)
    except (InsufficientData, UnknownSymbol) as exc:
        print(f"not enough stored data for analytics yet: {exc}", file=out)
    return 0


#: ``meta`` row that marks a store as the demo's own: ``created_by = 'quantlab demo'``.
DEMO_MARK = ("created_by", "quantlab demo")


def is_demo_store(db: str | Path) -> bool:
    """True when ``db`` is a tick store that ``quantlab demo`` created (its ``meta``
    table holds :data:`DEMO_MARK`). Read through a read-only connection; any other
    file, a foreign SQLite file or a research store is False."""
    import sqlite3

    path = Path(db)
    if not path.is_file():
        return False
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (DEMO_MARK[0],)).fetchone()
    except sqlite3.Error:
        return False
    finally:
        con.close()
    return row is not None and row[0] == DEMO_MARK[1]


def prepare_demo_store(db: str | Path) -> Path:
    """A fresh, marked demo store at ``db``.

    The demo's synthetic trade ids restart every run, so it starts from an empty
    store; it deletes the previous one only when that one is its own (issue 13:
    ``quantlab demo --db research.db`` deleted real trades). Any other existing
    file raises :class:`~quantlab.errors.UnsafeOverwrite` and is left untouched.
    """
    import sqlite3

    from quantlab.store import TickStore

    db = Path(db).resolve()
    leftovers = [Path(f"{db}{suffix}") for suffix in ("", "-wal", "-shm")]
    if any(p.exists() or p.is_symlink() for p in leftovers):
        if not is_demo_store(db):
            raise UnsafeOverwrite(db, "exists and was not created by `quantlab demo` (the demo replaces its "
                                      "store on every run)",
                                  "it is left untouched: pass --db with a new file name, e.g. "
                                  "--db data/demo.db (delete an old demo store yourself if it predates "
                                  "this check)")
        for p in leftovers:
            p.unlink(missing_ok=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    TickStore(db).close()
    con = sqlite3.connect(db)
    try:
        with con:
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", DEMO_MARK)
    finally:
        con.close()
    return db


def seed_store_from_replay(server: Any, db: Path, symbols: tuple[str, ...]) -> int:
    """Write the replay server's tape (its back-dated history) into the store.
    Returns the number of trades written; the ingester continues with the next ids."""
    from quantlab.store import TickStore

    with TickStore(db) as store:
        return sum(store.write_trades(server.produced(sym)).inserted for sym in symbols)


def demo_lab(db: str | Path, rate: float, port: int, open_browser: bool = True) -> int:
    """The JupyterLab tour on ``db`` (a store :func:`prepare_demo_store` made): a
    replay server streams the synthetic BTCUSDT/ETHUSDT pair at ``rate``
    trades/s (ten minutes of back-dated history in its tape, copied into the
    store, so the monitor's plots are live at once); JupyterLab (``port``)
    opens the live monitor pointed at it. Prints the server's
    ``{"ws", "rest", "db"}`` as one JSON line first. Returns JupyterLab's exit
    status."""
    from quantlab.replay import ReplayServer, SyntheticSource

    db = Path(db)
    history_trades = int(max(rate, 1.0) * 600)
    source = SyntheticSource(("BTCUSDT", "ETHUSDT"), market="spot", rate=rate, seed=0,
                             prefill=history_trades)
    with ReplayServer(source) as server:
        seed_store_from_replay(server, db, ("BTCUSDT", "ETHUSDT"))
        print(json.dumps({"ws": server.ws_url, "rest": server.rest_url, "db": str(db)}), flush=True)
        print("offline tour: JupyterLab opens notebooks/live_monitor.ipynb, streaming the synthetic "
              "pair from the replay server above; Ctrl-C twice stops.", flush=True)
        env = {**os.environ, "QUANTLAB_SOURCE": "replay", "QUANTLAB_WS_URL": server.ws_url,
               "QUANTLAB_REST_URL": server.rest_url, "QUANTLAB_DB": str(db)}
        return _run_lab(env, port, open_browser)


def lab(db: str | Path, port: int, open_browser: bool = True) -> int:
    """JupyterLab (``port``) on the live monitor with live Binance as the
    source, storing into ``db``. A foreign or damaged ``db`` is refused (its
    :class:`~quantlab.errors.QuantlabError`) before JupyterLab starts. Returns
    JupyterLab's exit status."""
    from quantlab.store import TickStore

    db = Path(db).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    TickStore(db).close()
    env = {**os.environ, "QUANTLAB_SOURCE": "live", "QUANTLAB_DB": str(db)}
    for key in ("QUANTLAB_WS_URL", "QUANTLAB_REST_URL"):
        env.pop(key, None)
    return _run_lab(env, port, open_browser)
