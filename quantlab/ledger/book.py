""":class:`Ledger`, the trial ledger in one SQLite file: schema, connection,
recording, reading, batches (sweeps) and forgetting; family queries and the
deflated Sharpe are its mixin (``families``). Also :func:`record_backtest_run`
(one CLI backtest run recorded and deflated).
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, LedgerError
from quantlab.ledger.families import _Families
from quantlab.ledger.values import (_APPLICATION_ID, KINDS, SCHEMA_VERSION, Deflation, Trial,
                                    TrialRecord, TrialRef, _ms, _opt_float, _parse_pair,
                                    canonical_json, default_ledger_path, pair_name,
                                    trial_from_backtest)
from quantlab.schema import now_ms as _now_ms
from quantlab.transaction import write_transaction

logger = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms   INTEGER NOT NULL,
    action    TEXT NOT NULL,
    trial_ids TEXT NOT NULL,
    reason    TEXT,
    user      TEXT,
    version   TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    trial_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    trial_key       TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    pair            TEXT NOT NULL,
    y               TEXT NOT NULL,
    x               TEXT NOT NULL,
    market          TEXT NOT NULL,
    timeframe       TEXT NOT NULL,
    start_ms        INTEGER NOT NULL,
    end_ms          INTEGER NOT NULL,
    n_bars          INTEGER,
    data_hash       TEXT NOT NULL,
    params          TEXT NOT NULL,
    stats           TEXT NOT NULL,
    sharpe          REAL,
    n_obs           INTEGER,
    skew            REAL,
    kurtosis        REAL,
    pvalue          REAL,
    version         TEXT NOT NULL,
    source          TEXT,
    first_seen_ms   INTEGER NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    n_seen          INTEGER NOT NULL,
    forgotten_event INTEGER REFERENCES events(event_id)
);
CREATE INDEX IF NOT EXISTS trials_family ON trials (pair, market, timeframe, start_ms);
"""

#: Columns :func:`bars_digest` hashes, those present (both legs' OHLCV).
# --- the ledger -----------------------------------------------------------------------------
_COLUMNS = ("trial_id", "trial_key", "kind", "pair", "y", "x", "market", "timeframe", "start_ms",
            "end_ms", "n_bars", "data_hash", "params", "stats", "sharpe", "n_obs", "skew",
            "kurtosis", "pvalue", "version", "source", "first_seen_ms", "last_seen_ms", "n_seen",
            "forgotten_event")


class Ledger(_Families):
    """The trial ledger in one SQLite file (created on first use).

    Parameters
    ----------
    path : str or Path
        The ledger file; its folder is created if missing.
    busy_timeout_s : float
        Seconds a writer waits for another process's transaction.

    One instance per process (it refuses to be used across ``fork``); an
    instance may be shared by threads (calls are serialised).
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._conn()  # fail early on a bad path or a foreign file

    @classmethod
    def default(cls, *, db: str | Path | None = None,
                files: Sequence[str | Path] | None = None, **kwargs: Any) -> "Ledger":
        """The project's ledger at :func:`default_ledger_path`."""
        return cls(default_ledger_path(db=db, files=files), **kwargs)

    # connection ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._con is not None:
            if os.getpid() != self._pid:
                raise LedgerError("a Ledger cannot be used across fork(); open a new one in this "
                                  "process", self.path)
            return self._con
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s,
                                  isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ledger ({exc})", self.path) from exc
        try:
            con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            app = con.execute("PRAGMA application_id").fetchone()[0]
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if app not in (0, _APPLICATION_ID) or (app == 0 and version != 0):
                raise LedgerError("not a quantlab ledger (another SQLite file); pass a new path",
                                  self.path)
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            if version == 0:
                with write_transaction(con):
                    if con.execute("PRAGMA user_version").fetchone()[0] == 0:
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                con.execute(stmt)
                        con.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise LedgerError(f"ledger schema version {version}, this quantlab reads "
                                  f"{SCHEMA_VERSION}; upgrade quantlab", self.path)
        except sqlite3.DatabaseError as exc:
            con.close()
            raise LedgerError(f"not a usable SQLite ledger ({exc})", self.path) from exc
        except BaseException:
            con.close()
            raise
        self._con = con
        return con

    def close(self) -> None:
        with self._lock:
            if self._con is not None and os.getpid() == self._pid:
                self._con.close()
            self._con = None

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def _write(self, fn: Any) -> Any:
        with self._lock:
            con = self._conn()
            try:
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise LedgerError(f"could not take the write lock within {self.busy_timeout_s} s "
                                  f"({exc})", self.path) from exc
            try:
                out = fn(con)
                con.execute("COMMIT")
                return out
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, tuple(args)).fetchall()

    # recording -------------------------------------------------------------------------
    def record(self, trial: Trial | None = None, /, **fields: Any) -> TrialRef:
        """Record one trial (a :class:`Trial`, or its fields as keywords).

        Returns its :class:`TrialRef`: ``trial_id``, ``k`` of ``n`` in its
        family. The identical evaluation recorded again is the same trial.
        """
        if trial is None:
            trial = Trial(**fields)
        elif fields:
            trial = dataclasses.replace(trial, **fields)
        return self.record_many([trial])[0]

    def record_many(self, trials: Iterable[Trial | Mapping[str, Any]]) -> list[TrialRef]:
        """Record a batch (a scan, a sweep) in one transaction; refs in input order.

        Workers return :class:`Trial` values (or dicts of its fields); the client
        calls this once the results are back.
        """
        items = [t if isinstance(t, Trial) else Trial(**t) for t in trials]
        if not items:
            return []
        from quantlab import __version__

        rows = []
        for t in items:
            sharpe = _opt_float(t.sharpe)
            rows.append({
                "trial_key": t.key, "kind": t.kind, "pair": pair_name(t.y, t.x),
                "y": t.y.upper(), "x": t.x.upper(), "market": t.market or "",
                "timeframe": t.timeframe, "start_ms": int(t.start_ms), "end_ms": int(t.end_ms),
                "n_bars": None if t.n_bars is None else int(t.n_bars), "data_hash": t.data_hash,
                "params": canonical_json(t.params), "stats": canonical_json(t.stats),
                "sharpe": sharpe, "n_obs": None if t.n_obs is None else int(t.n_obs),
                "skew": _opt_float(t.skew), "kurtosis": _opt_float(t.kurtosis),
                "pvalue": _opt_float(t.pvalue), "version": __version__, "source": t.source,
            })
        now = _now_ms()

        def txn(con: sqlite3.Connection) -> list[tuple[int, bool, int]]:
            out: list[tuple[int, bool, int]] = []
            reinstated: list[int] = []
            for r in rows:
                old = con.execute("SELECT trial_id, n_seen, forgotten_event FROM trials "
                                  "WHERE trial_key = ?", (r["trial_key"],)).fetchone()
                if old is None:
                    cur = con.execute(
                        "INSERT INTO trials (trial_key, kind, pair, y, x, market, timeframe, "
                        "start_ms, end_ms, n_bars, data_hash, params, stats, sharpe, n_obs, skew, "
                        "kurtosis, pvalue, version, source, first_seen_ms, last_seen_ms, n_seen) "
                        "VALUES (:trial_key, :kind, :pair, :y, :x, :market, :timeframe, :start_ms, "
                        ":end_ms, :n_bars, :data_hash, :params, :stats, :sharpe, :n_obs, :skew, "
                        ":kurtosis, :pvalue, :version, :source, :now, :now, 1)", {**r, "now": now})
                    out.append((int(cur.lastrowid), True, 1))
                else:
                    tid, seen, forgotten = old
                    con.execute(
                        "UPDATE trials SET last_seen_ms = ?, n_seen = n_seen + 1, stats = ?, "
                        "sharpe = ?, n_obs = ?, skew = ?, kurtosis = ?, pvalue = ?, version = ?, "
                        "n_bars = ?, source = COALESCE(?, source), forgotten_event = NULL "
                        "WHERE trial_id = ?",
                        (now, r["stats"], r["sharpe"], r["n_obs"], r["skew"], r["kurtosis"],
                         r["pvalue"], r["version"], r["n_bars"], r["source"], tid))
                    if forgotten is not None:
                        reinstated.append(int(tid))
                    out.append((int(tid), False, int(seen) + 1))
            if reinstated:
                con.execute("INSERT INTO events (time_ms, action, trial_ids, reason, user, version)"
                            " VALUES (?, 'reinstate', ?, ?, ?, ?)",
                            (now, json.dumps(reinstated), "recorded again", _user(), __version__))
            return out

        written = self._write(txn)
        ids = [w[0] for w in written]
        positions = self._positions(ids)
        refs = []
        for (tid, is_new, seen), r in zip(written, rows):
            k, n, basis, size = positions[tid]
            refs.append(TrialRef(trial_id=tid, trial_key=r["trial_key"], k=k, n=n, basis=basis,
                                 is_new=is_new, n_seen=seen, family_size=size))
        return refs

    def record_and_deflate(self, trial: Trial) -> tuple[TrialRef, Deflation]:
        """:meth:`record` then :meth:`deflate`: what a report header needs
        ("trial ``ref.k`` of ``d.n_trials`` in this family; deflated Sharpe ``d.dsr``")."""
        ref = self.record(trial)
        return ref, self.deflate(ref)

    # reading -----------------------------------------------------------------------------
    def _rows(self, where: str = "", args: Sequence[Any] = (), order: str = "trial_id"
              ) -> list[TrialRecord]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM trials {where} ORDER BY {order}"
        out = []
        for row in self._read(sql, args):
            d = dict(zip(_COLUMNS, row))
            d["params"] = json.loads(d["params"])
            d["stats"] = json.loads(d["stats"])
            out.append(TrialRecord(**d))
        return out

    def get(self, trial_id: int) -> TrialRecord:
        """One trial by id (forgotten ones too); :class:`LedgerError` if absent."""
        rows = self._rows("WHERE trial_id = ?", (int(trial_id),))
        if not rows:
            raise LedgerError(f"no trial {trial_id} in the ledger", self.path)
        return rows[0]

    def trials(self, *, pair: str | None = None, kind: str | None = None,
               since: Any = None, timeframe: str | None = None,
               include_forgotten: bool = False) -> list[TrialRecord]:
        """Trials, oldest first, filtered: ``pair`` ``"A/B"`` (either ordering) or
        one symbol (any pair with that leg); ``kind``; ``since`` (last seen at or
        after, ISO-8601 or ms); ``timeframe``; forgotten ones only on request."""
        where, args = [], []
        if pair:
            legs = _parse_pair(pair)
            if len(legs) == 2:
                where.append("pair = ?")
                args.append(pair_name(*legs))
            else:
                where.append("(y = ? OR x = ?)")
                args += [legs[0], legs[0]]
        if kind:
            if kind not in KINDS:
                raise ConfigError("kind", kind, "one of " + ", ".join(KINDS))
            where.append("kind = ?")
            args.append(kind)
        if since is not None:
            where.append("last_seen_ms >= ?")
            args.append(_ms(since, "since"))
        if timeframe:
            where.append("timeframe = ?")
            args.append(timeframe)
        if not include_forgotten:
            where.append("forgotten_event IS NULL")
        return self._rows(("WHERE " + " AND ".join(where)) if where else "", args)

    def frame(self, **filters: Any) -> pd.DataFrame:
        """:meth:`trials` as a DataFrame (params and stats as dicts)."""
        recs = self.trials(**filters)
        return pd.DataFrame([dataclasses.asdict(r) for r in recs], columns=list(_COLUMNS))

    def events(self) -> list[dict]:
        """The log of forget / reinstate acts, oldest first."""
        rows = self._read("SELECT event_id, time_ms, action, trial_ids, reason, user, version "
                          "FROM events ORDER BY event_id")
        return [{"event_id": r[0], "time_ms": r[1],
                 "time": pd.Timestamp(r[1], unit="ms", tz="UTC").isoformat(), "action": r[2],
                 "trial_ids": json.loads(r[3]), "reason": r[4], "user": r[5], "version": r[6]}
                for r in rows]

    def latest(self, pair: str, *, kind: str | Sequence[str] | None = None,
               timeframe: str | None = None, market: str | None = None,
               ordering: tuple[str, str] | None = None) -> TrialRecord | None:
        """The most recently seen active trial of ``pair`` (either ordering unless
        ``ordering=(y, x)``), of ``kind`` (one or several), or None."""
        legs = _parse_pair(pair)
        if len(legs) != 2:
            raise ConfigError("pair", pair, "two symbols, e.g. BTCUSDT/ETHUSDT")
        where, args = ["pair = ?", "forgotten_event IS NULL"], [pair_name(*legs)]
        kinds = [kind] if isinstance(kind, str) else list(kind or [])
        for k in kinds:
            if k not in KINDS:
                raise ConfigError("kind", k, "one of " + ", ".join(KINDS))
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args += kinds
        if timeframe:
            where.append("timeframe = ?")
            args.append(timeframe)
        if market is not None:
            where.append("market = ?")
            args.append(market)
        if ordering is not None:
            where += ["y = ?", "x = ?"]
            args += [ordering[0].upper(), ordering[1].upper()]
        rows = self._rows("WHERE " + " AND ".join(where), args,
                          order="last_seen_ms DESC, trial_id DESC LIMIT 1")
        return rows[0] if rows else None

    # batches ----------------------------------------------------------------------------
    def record_sweep(self, aligned: pd.DataFrame, sweep: Any, *, params: Mapping[str, Any]
                     ) -> pd.DataFrame:
        """Record every cell of a :func:`quantlab.analytics.sweep_overfit` result
        (kind ``sweep_cell``, params = ``params`` + window/entry/exit) in one
        transaction, and return its table with the ledger's ``trial_id``,
        ``trial_k``, ``n_trials`` and ``dsr`` (deflated by the whole family,
        earlier trials included)."""
        table = sweep.table
        trials = []
        for i, row in enumerate(table.itertuples(index=False)):
            cell = {**params, "window": None if pd.isna(row.window) else int(row.window),
                    "entry": float(row.entry), "exit": float(row.exit)}
            summary = {k: getattr(row, k) for k in table.columns
                       if k not in ("window", "entry", "exit")}
            trials.append(Trial.from_bars(
                aligned, kind="sweep_cell", params=cell, stats=summary,
                sharpe=_opt_float(row.sharpe_per_bar), n_obs=int(row.n_obs),
                skew=_opt_float(row.skew), kurtosis=_opt_float(row.kurtosis)))
        refs = self.record_many(trials)
        defl = [self.deflate(r) for r in refs]
        return table.assign(trial_id=[r.trial_id for r in refs], trial_k=[r.k for r in refs],
                            n_trials=[d.n_trials for d in defl],
                            dsr=[np.nan if d.dsr is None else d.dsr for d in defl])

    # forgetting -------------------------------------------------------------------------
    def forget(self, trial_ids: Iterable[int], *, reason: str, user: str | None = None) -> int:
        """Mark trials as forgotten (they leave every family) and record the act.

        Returns the event id. Raises :class:`LedgerError` for unknown or already
        forgotten ids (nothing is changed then) and :class:`ConfigError` for an
        empty reason.
        """
        from quantlab import __version__

        ids = sorted({int(i) for i in trial_ids})
        if not ids:
            raise ConfigError("trial_ids", [], "at least one trial id (see `quantlab ledger`)")
        if not reason or not str(reason).strip():
            raise ConfigError("reason", reason, "a reason saying why these trials are forgotten")

        def txn(con: sqlite3.Connection) -> int:
            q = ", ".join("?" * len(ids))
            found = {r[0]: r[1] for r in con.execute(
                f"SELECT trial_id, forgotten_event FROM trials WHERE trial_id IN ({q})", ids)}
            missing = [i for i in ids if i not in found]
            if missing:
                raise LedgerError(f"no trial(s) {', '.join(map(str, missing))} in the ledger "
                                  "(list them with `quantlab ledger`)", self.path)
            already = [i for i in ids if found[i] is not None]
            if already:
                raise LedgerError(f"trial(s) {', '.join(map(str, already))} already forgotten "
                                  f"(event {found[already[0]]})", self.path)
            cur = con.execute("INSERT INTO events (time_ms, action, trial_ids, reason, user, "
                              "version) VALUES (?, 'forget', ?, ?, ?, ?)",
                              (_now_ms(), json.dumps(ids), str(reason).strip(),
                               user or _user(), __version__))
            event = int(cur.lastrowid)
            con.execute(f"UPDATE trials SET forgotten_event = ? WHERE trial_id IN ({q})",
                        [event, *ids])
            return event

        return self._write(txn)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in a container
        return os.environ.get("USER", "unknown")


# --- recording a backtest run ----------------------------------------------------------------
def record_backtest_run(aligned: pd.DataFrame, result: Any, *, path: str | Path,
                        params: Mapping[str, Any]) -> dict:
    """Record a backtest run in the ledger at ``path`` and deflate its Sharpe by its family.

    ``params`` are the analytics options (window, hedge, log prices, carry); every
    :class:`quantlab.backtest.BacktestSettings` field of ``result.settings`` is added.
    Returns the keys the summary JSON gains: ``n_trials``, ``dsr``, ``trial_k``,
    ``trial_id``, ``sharpe_per_bar``, ``expected_max_sharpe``, ``ledger``.
    (``quantlab backtest`` calls it from :mod:`quantlab.commands.backtest`, which picks
    ``--ledger`` or :func:`default_ledger_path` of the run's source.)
    """
    params = {**params, **dataclasses.asdict(result.settings)}
    with Ledger(path) as ledger:
        ref = ledger.record(trial_from_backtest(aligned, result, params=params))
        d = ledger.deflate(ref)
    logger.info("ledger %s: trial %d (%d of %d in its family)", path, ref.trial_id, d.k,
                d.n_trials)
    return {"n_trials": d.n_trials, "dsr": d.dsr, "trial_k": d.k, "trial_id": ref.trial_id,
            "sharpe_per_bar": d.sharpe, "expected_max_sharpe": d.expected_max_sharpe,
            "ledger": str(path)}


