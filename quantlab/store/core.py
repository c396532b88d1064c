"""The :class:`TickStore`: opening (file checks, connection, schema check and
migrations) and plumbing (lock, connection, errors). Its writes, retention,
gap and alert logs and reads are the mixins of :mod:`.writes`, :mod:`.gaps`
and :mod:`.reads`; this class joins them.
"""
from __future__ import annotations

import logging
import math
import os
import sqlite3
import stat
import threading
from pathlib import Path

from quantlab.config import require_positive
from quantlab.errors import ConfigError, SchemaVersionError, StoreError
from quantlab.schema import now_ms as _now_ms
from quantlab.store.batch import _check_retention, _readonly_hint
from quantlab.store.gaps import _Logs
from quantlab.store.reads import _Reads
from quantlab.store.sql import APPLICATION_ID, _PAGE_SIZE, _SCHEMA_V1, _V1_TABLES
from quantlab.store.writes import _Writes
from quantlab.transaction import write_transaction

# SCHEMA_VERSION and _MIGRATIONS are looked up on the package at call time, so a
# test (tests/test_store.py) can substitute quantlab.store.SCHEMA_VERSION/_MIGRATIONS.
import quantlab.store as _store  # noqa: E402  (the package, initialised by now)

logger = logging.getLogger(__name__)


# --- the store ------------------------------------------------------------------
class TickStore(_Writes, _Logs, _Reads):
    """Trades, 1 s bars and gap records in one SQLite file (WAL mode).

    Parameters
    ----------
    path : str or Path
        The database file. Created with the current schema when it does not
        exist (read-write only); its directory must exist.
    read_only : bool
        Open with ``mode=ro``: every write raises :class:`StoreError`. Use it
        for notebooks and reports that only read.
    keep_ticks_s : float, optional
        Retention setting (seconds): :meth:`write_trades` applies
        :meth:`apply_retention` with it at most every ``retention_interval_s``.
        None (default) keeps everything.
    keep_bars_s : float, optional
        Retention of the 1 s bars (seconds, >= ``keep_ticks_s``); None keeps them.
    retention_interval_s : float
        Minimum time between automatic retention runs (s).
    busy_timeout_s : float
        How long a statement waits for a lock held by another connection
        before failing (s). Only writers wait in WAL mode: a second writer,
        or a checkpoint.

    Raises
    ------
    StoreError
        The file cannot be opened, is not a quantlab store, or is read-only
        and missing.
    SchemaVersionError
        The file was written by a newer quantlab (or, read-only, needs an upgrade).

    Notes
    -----
    Every call holds an instance lock, so an instance may be shared between
    threads (they then take turns); open one per thread for concurrency, and
    never use one after ``fork``. Times are ms since the epoch (UTC) and time
    windows are half-open: ``start_ms <= t < end_ms``.

    Examples
    --------
    >>> import os, tempfile
    >>> from quantlab.binance import Trade
    >>> tmp = tempfile.TemporaryDirectory()
    >>> store = TickStore(os.path.join(tmp.name, "ticks.db"))
    >>> t = Trade("spot", "BTCUSDT", "trade", 7, 61837.63, 0.02, 1_722_000_000_123, 0, True)
    >>> store.write_trades([t, t])          # the same trade twice: stored once
    WriteResult(inserted=1, duplicates=1, bars_touched=1, expired=0)
    >>> bars = store.bars_1s("BTCUSDT")
    >>> bars[["open", "volume", "trade_count"]]  # doctest: +NORMALIZE_WHITESPACE
                                   open  volume  trade_count
    open_time
    2024-07-26 13:20:00+00:00  61837.63    0.02            1
    >>> store.close(); tmp.cleanup()
    """

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False,
                 keep_ticks_s: float | None = None, keep_bars_s: float | None = None,
                 retention_interval_s: float = 60.0, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        self.read_only = bool(read_only)
        require_positive("busy_timeout_s", busy_timeout_s, allow_zero=True)
        require_positive("retention_interval_s", retention_interval_s, allow_zero=True)
        _check_retention(keep_ticks_s, keep_bars_s)
        if read_only and keep_ticks_s is not None:
            raise ConfigError("keep_ticks_s", keep_ticks_s, "None on a read-only store")
        self.keep_ticks_s = keep_ticks_s
        self.keep_bars_s = keep_bars_s
        self.retention_interval_s = float(retention_interval_s)
        self._last_retention = -math.inf
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._con: sqlite3.Connection | None = None
        self._con = self._open(float(busy_timeout_s))

    # ------------------------------------------------------------------ open
    def _open(self, busy_timeout_s: float) -> sqlite3.Connection:
        self._check_file()
        if not self.read_only:
            return self._connect(str(self.path), False, busy_timeout_s)
        target = self.path.resolve().as_uri() + "?mode=ro"
        try:
            return self._connect(target, True, busy_timeout_s)
        except StoreError as exc:
            # A WAL file read with mode=ro needs its -shm (and -wal) file, which SQLite
            # cannot create in a read-only directory (https://sqlite.org/wal.html#readonly).
            # With no -wal content there is nothing a snapshot could miss: read the main
            # file as immutable (no locks, no -shm). A non-empty -wal means a writer may
            # be active (or crashed): refuse rather than show stale data.
            cause = exc.__cause__
            code = getattr(cause, "sqlite_errorname", "")  # SQLITE_READONLY_CANTINIT, SQLITE_CANTOPEN
            if not isinstance(cause, sqlite3.OperationalError) or not (
                    code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))
                    or "readonly" in str(cause) or "unable to open" in str(cause)):
                raise
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError("cannot be read here: its directory is read-only and its -wal file "
                                 "holds changes not yet in the main file; open it once where the "
                                 "directory is writable (or copy the folder)", self.path) from None
            logger.info("%s: read-only directory, opened as immutable", self.path)
            return self._connect(target + "&immutable=1", True, busy_timeout_s)

    def _check_file(self) -> None:
        """The path must be a regular file (or absent, for a writer): decided with
        os.stat before SQLite opens it (a FIFO would block, a device never end)."""
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            if self.read_only:
                raise StoreError("no such file (a read-only store must exist; the writer "
                                 "creates it)", self.path) from None
            return
        except OSError as exc:
            raise StoreError(f"cannot open ({exc.strerror or exc})", self.path) from None
        if stat.S_ISDIR(mode):
            raise StoreError("is a folder; pass the tick store's file, e.g. data/live.db", self.path)
        if not stat.S_ISREG(mode):
            what = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
            raise StoreError(f"is {what}, not a SQLite file; pass a tick store written by quantlab "
                             "ingest/import, or a new file name", self.path)

    def _connect(self, target: str, uri: bool, busy_timeout_s: float) -> sqlite3.Connection:
        try:
            # isolation_level=None: no implicit transactions; writes open
            # BEGIN IMMEDIATE themselves and reads run in autocommit, so a
            # reader never holds a snapshot (and the WAL) longer than a query.
            con = sqlite3.connect(target, uri=uri, timeout=busy_timeout_s, isolation_level=None,
                                  check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open ({exc}); does the directory exist?", self.path) from exc
        try:
            con.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            con.execute("PRAGMA synchronous = NORMAL")  # WAL: durable against process crashes
            con.execute("PRAGMA temp_store = MEMORY")
            con.execute("PRAGMA cache_size = -32768")  # 32 MiB page cache per connection
            if not self.read_only:
                # After a big import the WAL is truncated back to 64 MiB once
                # checkpointed, instead of keeping its peak size on disk.
                con.execute("PRAGMA journal_size_limit = 67108864")
            self._check_schema(con)
        except sqlite3.DatabaseError as exc:
            con.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise StoreError(f"not a SQLite tick store ({exc}); pass a store written by quantlab "
                                 "ingest/import, or a new file name", self.path) from exc
            raise StoreError(f"cannot open ({exc}){_readonly_hint(exc)}", self.path) from exc
        except BaseException:
            con.close()
            raise
        logger.debug("opened %s (%s)", self.path, "read-only" if self.read_only else "read-write")
        return con

    def _check_schema(self, con: sqlite3.Connection) -> None:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if app_id not in (0, APPLICATION_ID):
            raise StoreError(f"not a quantlab tick store (application_id {app_id:#x})", self.path)
        # Everything below reads only: a file that is not an intact quantlab store is
        # refused before anything (journal_mode = WAL included) is written to it.
        tables = {row[0] for row in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and tables:
            raise StoreError("not a quantlab tick store (it has tables but no quantlab schema "
                             f"version: {', '.join(sorted(tables)[:5])}); nothing was written to it: "
                             "pass a store written by quantlab ingest/import, or a new file name",
                             self.path)
        if version >= 1:
            missing = [t for t in _V1_TABLES if t not in tables]
            if missing and app_id != APPLICATION_ID and "ticks" not in tables:
                raise StoreError(f"not a quantlab tick store (user_version {version} but no ticks "
                                 "table); pass a store written by quantlab ingest/import",
                                 self.path)
            if missing:
                raise StoreError(f"damaged tick store: table {missing[0]!r} is missing (has "
                                 f"{', '.join(sorted(tables))}); restore the file from a backup, or "
                                 "re-import the data into a new store", self.path)
        if version > _store.SCHEMA_VERSION:
            raise SchemaVersionError(self.path, version, _store.SCHEMA_VERSION,
                                     "it was written by a newer quantlab; upgrade quantlab "
                                     "to read it")
        if self.read_only:
            if version == 0:
                raise StoreError("not a quantlab tick store, or not initialised yet (open it "
                                 "read-write once)", self.path)
            if version < _store.SCHEMA_VERSION:
                raise SchemaVersionError(self.path, version, _store.SCHEMA_VERSION,
                                         "open it read-write once to upgrade it")
            return
        if version == 0:
            # Only possible before the first write. 16 KiB pages: ~15-20% less
            # CPU per inserted trade than 4 KiB (fewer splits and WAL frames),
            # and longer sequential runs for range reads.
            con.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            # Persistent in the file; needs a moment without other connections.
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch to WAL mode (journal_mode={mode})", self.path)
        if version == _store.SCHEMA_VERSION:
            return
        with write_transaction(con):
            # Re-read under the write lock: another process may have created
            # or upgraded the file since the check above.
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                n_tables = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if n_tables:
                    raise StoreError("not a quantlab tick store (it has tables but no quantlab "
                                     "schema version)", self.path)
                for statement in _SCHEMA_V1:
                    con.execute(statement)
                con.execute("INSERT INTO meta (key, value) VALUES ('created_ms', ?)", (_now_ms(),))
                con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                version = 1
                logger.info("created tick store %s (schema version %d)", self.path, version)
            while version < _store.SCHEMA_VERSION:
                migrate = _store._MIGRATIONS.get(version)
                if migrate is None:
                    raise SchemaVersionError(self.path, version, _store.SCHEMA_VERSION,
                                             f"no migration from version {version} is known")
                migrate(con)
                version += 1
                logger.info("upgraded tick store %s to schema version %d", self.path, version)
            con.execute(f"PRAGMA user_version = {version}")

    # ------------------------------------------------------------------ plumbing
    def _conn(self) -> sqlite3.Connection:
        if self._con is None:
            raise StoreError("the store is closed", self.path)
        if os.getpid() != self._pid:
            raise StoreError("a TickStore cannot be used across fork(); open a new one in "
                             "this process", self.path)
        return self._con

    def _writable(self) -> sqlite3.Connection:
        con = self._conn()
        if self.read_only:
            raise StoreError("opened read_only=True; open TickStore(path) to write", self.path)
        return con

    def _fail(self, exc: sqlite3.Error, what: str) -> StoreError:
        hint = ""
        if "locked" in str(exc) or "busy" in str(exc):
            hint = " (another writer held the lock longer than busy_timeout_s)"
        return StoreError(f"{what} failed: {exc}{hint or _readonly_hint(exc)}", self.path)

    @property
    def schema_version(self) -> int:
        """``PRAGMA user_version`` of the file."""
        with self._lock:
            return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection; further calls raise :class:`StoreError`. Idempotent."""
        with self._lock:
            con, self._con = self._con, None
            if con is not None and os.getpid() == self._pid:
                con.close()

    def __enter__(self) -> "TickStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._con is None else ("read-only" if self.read_only else "read-write")
        return f"TickStore({str(self.path)!r}, {state})"
