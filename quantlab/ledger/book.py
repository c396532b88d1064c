r"""The trial ledger: every evaluation that could be used to pick a strategy is
counted, so that every Sharpe can be deflated by the number of trials behind it.

One SQLite file per research project (WAL), written by the CLI, the reports, the
scanner's client and the UI; read by anyone::

    from quantlab.ledger import Ledger, Trial, trial_from_backtest
    ledger = Ledger("data/ledger.sqlite")                 # or Ledger.default(db="data/live.db")
    ref = ledger.record(trial_from_backtest(aligned, result, params={"window": 120}))
    ref.trial_id, ref.k, ref.n                            # "trial k of n in this family"
    d = ledger.deflate(ref)                               # d.dsr, d.n_trials, d.expected_max_sharpe

Guarantees
----------
* **A trial is counted once.** Its identity is the SHA-256 of the canonical JSON
  of ``kind``, ``y``, ``x`` (the ordering), ``market``, ``timeframe``,
  ``params`` and ``data_hash`` (:func:`bars_digest` of the input bars). Recording
  the same evaluation on identical data again updates ``last_seen_ms``,
  ``n_seen`` and the statistics (the latest code's numbers), not the count.
* **Nothing is deleted.** :meth:`Ledger.forget` (``quantlab ledger forget``) marks
  trials as forgotten and records the act itself in ``events`` (who, when, why,
  which). Forgotten trials leave every family count; re-recording a forgotten
  trial reinstates it (it was tried again) and logs a ``reinstate`` event.
* **Safe for several processes.** WAL; each write is one short ``BEGIN
  IMMEDIATE`` transaction (a batch from :meth:`Ledger.record_many` is one
  transaction), other writers wait up to ``busy_timeout_s``. Dask or process-pool
  workers never write: they return :class:`Trial` values (plain, picklable) and
  the client records them with :meth:`Ledger.record_many`.

Families
--------
Trials on the same target form a family, whose size is the :math:`N` of the
deflated Sharpe ratio. The family of a trial :math:`t` is every *active* trial
:math:`u` with

1. the same unordered pair (``BTCUSDT/ETHUSDT`` holds both orderings) and the
   same ``market``;
2. the same ``timeframe``;
3. an overlapping data range: :math:`u.start < t.end` and
   :math:`t.start < u.end` (ranges are ``[start_ms, end_ms)``, first bar's open
   to last bar's open plus one bar).

Overlap is not transitive, so a family is seen *from* a trial (two disjoint
months each overlap a trial spanning both). Within the family, counts depend
on what the trial produced:

* strategy trials (kind ``backtest`` or ``sweep_cell``, or any trial carrying a
  Sharpe, e.g. a report that ran a backtest): :math:`N` = strategy trials of the
  family, and :math:`V[\widehat{SR}]` the variance of their per-bar Sharpes (a
  strategy that never traded counts with Sharpe 0);
* test trials (a p-value but no Sharpe, e.g. a scan's cointegration test):
  :math:`m` = test trials of the family, for Benjamini-Yekutieli;
* anything else: every family member.

``k`` is the trial's position among those, in recording order (trial id).

Default location
----------------
``QUANTLAB_LEDGER`` if set; else ``ledger.sqlite`` beside the tick store
(``data/live.db`` -> ``data/ledger.sqlite``); else, for files or an archive,
``ledger.sqlite`` in the current directory: data that is only read never gets a
file written beside it. See :func:`default_ledger_path`.

Schema (version 1)
------------------
::

    CREATE TABLE trials (
        trial_id        INTEGER PRIMARY KEY AUTOINCREMENT,
        trial_key       TEXT NOT NULL UNIQUE,  -- sha256 hex of the identity above
        kind            TEXT NOT NULL,         -- backtest, sweep_cell, scan, report
        pair            TEXT NOT NULL,         -- unordered: sorted legs 'BTCUSDT/ETHUSDT'
        y               TEXT NOT NULL,         -- dependent leg (ordering)
        x               TEXT NOT NULL,
        market          TEXT NOT NULL,         -- 'spot', 'usdm' or '' (unknown)
        timeframe       TEXT NOT NULL,         -- '1m', '1h', ...
        start_ms        INTEGER NOT NULL,      -- open time of the first bar, ms UTC
        end_ms          INTEGER NOT NULL,      -- open time of the last bar + bar size
        n_bars          INTEGER,
        data_hash       TEXT NOT NULL,         -- bars_digest() of the input bars
        params          TEXT NOT NULL,         -- canonical JSON
        stats           TEXT NOT NULL,         -- JSON: every statistic produced
        sharpe          REAL,                  -- per-bar Sharpe (not annualised)
        n_obs           INTEGER,               -- returns behind sharpe
        skew            REAL,
        kurtosis        REAL,                  -- non-excess (normal = 3)
        pvalue          REAL,                  -- the trial's test p-value (e.g. coint)
        version         TEXT NOT NULL,         -- quantlab version that computed stats
        source          TEXT,                  -- where the bars came from (informative)
        first_seen_ms   INTEGER NOT NULL,
        last_seen_ms    INTEGER NOT NULL,
        n_seen          INTEGER NOT NULL,      -- times recorded
        forgotten_event INTEGER                -- events.event_id; NULL while active
    );
    CREATE TABLE events (
        event_id  INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms   INTEGER NOT NULL,
        action    TEXT NOT NULL,               -- 'forget' or 'reinstate'
        trial_ids TEXT NOT NULL,               -- JSON list
        reason    TEXT,
        user      TEXT,
        version   TEXT
    );
"""
from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, LedgerError  # noqa: F401 (LedgerError re-exported)
from quantlab.schema import now_ms as _now_ms

logger = logging.getLogger(__name__)

__all__ = [
    "LEDGER_ENV", "LEDGER_FILENAME", "KINDS", "STRATEGY_KINDS", "Ledger", "LedgerError", "Trial",
    "TrialRef", "TrialRecord", "Deflation", "bars_digest", "canonical_json", "default_ledger_path",
    "trial_from_backtest", "pair_name",
]

#: Environment variable naming the ledger file.
LEDGER_ENV = "QUANTLAB_LEDGER"
#: File name of a default ledger.
LEDGER_FILENAME = "ledger.sqlite"
#: Kinds of trial.
KINDS = ("backtest", "sweep_cell", "scan", "report")
#: Kinds that are strategy evaluations (count in the deflated Sharpe's N).
STRATEGY_KINDS = ("backtest", "sweep_cell")
SCHEMA_VERSION = 1
_APPLICATION_ID = 0x514C4C47  # b"QLLG"

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
DIGEST_COLUMNS = tuple(f"{leg}_{c}" for leg in ("y", "x")
                       for c in ("open", "high", "low", "close", "volume"))


# --- pure helpers -------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return None
        return int(v) if v.is_integer() and abs(v) < 2 ** 53 else v
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is None or isinstance(value, str):
        return value
    return str(value)


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, NaN/inf as null, numpy scalars as
    Python numbers and integral floats as ints (``2.0`` and ``2`` are the same
    parameter).

    >>> canonical_json({"b": 2.0, "a": [1, float("nan")]})
    '{"a":[1,null],"b":2}'
    """
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def bars_digest(aligned: pd.DataFrame) -> str:
    """SHA-256 hex digest of a pair's input bars: same bars, same digest.

    Hashes the open times (int64 ns, UTC) and, as little-endian float64, the
    columns of :data:`DIGEST_COLUMNS` that are present (both legs' OHLCV;
    ``y_close``/``x_close`` at least), with their names. NaN is canonicalised
    and ``-0.0`` is ``0.0``. ``attrs`` (symbols, source) are not data and are
    not hashed: the pair is part of the trial's identity separately.

    >>> idx = pd.date_range("2024-01-01", periods=3, freq="1min", tz="UTC")
    >>> a = pd.DataFrame({"y_close": [1.0, 2, 3], "x_close": [4.0, 5, 6]}, index=idx)
    >>> bars_digest(a) == bars_digest(a.copy()) != bars_digest(a.iloc[:2])
    True
    """
    if not isinstance(aligned, pd.DataFrame):
        raise ConfigError("aligned", type(aligned).__name__, "a DataFrame of aligned pair bars")
    cols = [c for c in DIGEST_COLUMNS if c in aligned.columns]
    if not {"y_close", "x_close"} <= set(cols):
        raise ConfigError("aligned", sorted(map(str, aligned.columns))[:12],
                          "aligned pair bars with y_close and x_close (quantlab.pairs.load_pair_bars)")
    h = hashlib.sha256()
    idx = aligned.index
    if isinstance(idx, pd.DatetimeIndex):
        idx = idx.tz_convert("UTC") if idx.tz is not None else idx
        stamps = idx.as_unit("ns").asi8.astype("<i8")
    else:
        stamps = np.asarray(idx, dtype="<i8")
    h.update(b"index\0" + stamps.tobytes())
    for c in cols:
        v = aligned[c].to_numpy(dtype=np.float64, na_value=np.nan) + 0.0
        v[np.isnan(v)] = np.nan
        h.update(c.encode() + b"\0" + v.astype("<f8").tobytes())
    return h.hexdigest()


def pair_name(a: str, b: str) -> str:
    """Unordered pair name: the legs upper-cased and sorted, ``'A/B'``.

    >>> pair_name("ethusdt", "BTCUSDT")
    'BTCUSDT/ETHUSDT'
    """
    legs = sorted((str(a).strip().upper(), str(b).strip().upper()))
    return f"{legs[0]}/{legs[1]}"


def _parse_pair(text: str) -> tuple[str, ...]:
    parts = [p for p in str(text).replace(",", "/").replace(" ", "/").split("/") if p]
    if len(parts) not in (1, 2):
        raise ConfigError("pair", text, "a pair such as BTCUSDT/ETHUSDT (or one symbol)")
    return tuple(p.upper() for p in parts)


def default_ledger_path(*, db: str | Path | None = None,
                        files: Sequence[str | Path] | None = None,
                        archive: str | Path | None = None) -> Path:
    """Where the project's ledger lives.

    1. ``$QUANTLAB_LEDGER`` when set;
    2. with a tick store ``db``: ``ledger.sqlite`` in the store's folder (the
       project's own store: ``data/live.db`` -> ``data/ledger.sqlite``);
    3. with a Parquet ``archive`` or data ``files``: ``ledger.sqlite`` in the
       current directory (the project you run from). Data that is only read
       (downloaded files, a shared or read-only archive) never gets a file
       written into or beside it.

    Raises :class:`ConfigError` when none applies.
    """
    env = os.environ.get(LEDGER_ENV)
    if env:
        return Path(env)
    if db is not None:
        return Path(db).resolve().parent / LEDGER_FILENAME
    if archive is not None or files:
        return Path.cwd() / LEDGER_FILENAME
    raise ConfigError("ledger", None, f"a ledger file: pass --ledger PATH (or --db STORE), or "
                      f"set {LEDGER_ENV}")


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ms(value: Any, field: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(field, value, "a time (pandas Timestamp, ISO-8601 or epoch ms)") from exc
    if ts is pd.NaT:
        raise ConfigError(field, value, "a time, not NaT")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.to_datetime64().astype("datetime64[ms]").astype(np.int64))


# --- values -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    """One evaluation to record: what was tried, on which bars, with what result.

    Plain and picklable, so workers can build them and return them to the
    client that records them. :meth:`from_bars` fills the pair, range and data
    hash from aligned bars.

    Parameters
    ----------
    kind : one of :data:`KINDS`.
    y, x : dependent and independent leg (the ordering tried).
    timeframe : bar size, e.g. ``"1m"``.
    start_ms, end_ms : data range ``[start, end)`` in ms UTC (first bar's open;
        last bar's open plus one bar).
    data_hash : :func:`bars_digest` of the input bars.
    params : everything that selects this evaluation (window, hedge, entry, ...).
    market : ``"spot"``, ``"usdm"`` or None.
    n_bars : bars evaluated.
    stats : every statistic produced (JSON-able; NaN becomes null). Keys the
        monitor's prediction reads when present: ``half_life_bars``,
        ``spread_mean``, ``spread_std``, ``hedge_ratio``, ``coint_pvalue``.
    sharpe : per-bar (not annualised) Sharpe, if the trial is a strategy.
    n_obs, skew, kurtosis : returns behind ``sharpe``, their skewness and
        non-excess kurtosis.
    pvalue : the trial's test p-value (e.g. Engle-Granger), for the family's
        Benjamini-Yekutieli adjustment.
    source : where the bars came from (store path, files), informative only.
    """

    kind: str
    y: str
    x: str
    timeframe: str
    start_ms: int
    end_ms: int
    data_hash: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    market: str | None = None
    n_bars: int | None = None
    stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sharpe: float | None = None
    n_obs: int | None = None
    skew: float | None = None
    kurtosis: float | None = None
    pvalue: float | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError("kind", self.kind, "one of " + ", ".join(KINDS))
        for f in ("y", "x", "timeframe", "data_hash"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f):
                raise ConfigError(f, getattr(self, f), "a non-empty string")
        if self.y.upper() == self.x.upper():
            raise ConfigError("x", self.x, "a symbol different from y")
        if not (isinstance(self.start_ms, (int, np.integer)) and isinstance(self.end_ms, (int, np.integer))
                and self.end_ms > self.start_ms):
            raise ConfigError("end_ms", self.end_ms, f"an int (ms) after start_ms={self.start_ms}")
        if self.pvalue is not None and _opt_float(self.pvalue) is not None and \
                not 0.0 <= float(self.pvalue) <= 1.0:
            raise ConfigError("pvalue", self.pvalue, "a p-value in [0, 1]")

    @property
    def key(self) -> str:
        """SHA-256 hex of the identity: kind, ordering, market, timeframe, params, data."""
        ident = {"kind": self.kind, "y": self.y.upper(), "x": self.x.upper(),
                 "market": self.market or "", "timeframe": self.timeframe,
                 "params": self.params, "data_hash": self.data_hash}
        return hashlib.sha256(canonical_json(ident).encode()).hexdigest()

    @classmethod
    def from_bars(cls, aligned: pd.DataFrame, *, kind: str, params: Mapping[str, Any],
                  y: str | None = None, x: str | None = None, timeframe: str | None = None,
                  market: str | None = None, **fields: Any) -> "Trial":
        """A trial on aligned bars (:func:`quantlab.pairs.load_pair_bars`):
        ``y``, ``x``, ``timeframe``, ``market`` and ``source`` default to the
        frame's ``attrs``; the range to its index; ``data_hash`` to
        :func:`bars_digest`; ``n_bars`` to its length."""
        from quantlab.bars import parse_timeframe

        attrs = aligned.attrs
        y = y or attrs.get("y")
        x = x or attrs.get("x")
        timeframe = timeframe or attrs.get("timeframe")
        if not (y and x and timeframe):
            raise ConfigError("aligned", "no y/x/timeframe in attrs", "y=, x= and timeframe= "
                              "(or bars from quantlab.pairs.load_pair_bars)")
        if len(aligned) < 1 or not isinstance(aligned.index, pd.DatetimeIndex):
            raise ConfigError("aligned", f"{len(aligned)} rows", "bars indexed by open time")
        step = parse_timeframe(timeframe)
        start = _ms(aligned.index[0], "start")
        end = _ms(aligned.index[-1], "end") + int(step)
        source = fields.pop("source", None)
        if source is None:
            src = attrs.get("db") or attrs.get("archive") or attrs.get("files")
            source = None if src is None else (src if isinstance(src, str) else canonical_json(src))
        return cls(kind=kind, y=str(y).upper(), x=str(x).upper(), timeframe=str(timeframe),
                   start_ms=start, end_ms=end, data_hash=bars_digest(aligned), params=params,
                   market=market if market is not None else attrs.get("market"),
                   n_bars=len(aligned), source=source, **fields)


@dataclasses.dataclass(frozen=True)
class TrialRef:
    """Where a recorded trial stands.

    Attributes
    ----------
    trial_id : row id in the ledger (what ``quantlab ledger forget`` takes).
    trial_key : identity hash.
    k, n : "trial k of n in this family" (see the module docstring: counted
        among strategy trials, test trials or all, per ``basis``).
    basis : ``"strategy"``, ``"test"`` or ``"all"``.
    is_new : False when the identical evaluation was recorded before.
    n_seen : times recorded, this one included.
    family_size : every active member of the family.
    """

    trial_id: int
    trial_key: str
    k: int
    n: int
    basis: str
    is_new: bool
    n_seen: int
    family_size: int


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """A row of the ledger, ``params`` and ``stats`` parsed."""

    trial_id: int
    trial_key: str
    kind: str
    pair: str
    y: str
    x: str
    market: str
    timeframe: str
    start_ms: int
    end_ms: int
    n_bars: int | None
    data_hash: str
    params: dict
    stats: dict
    sharpe: float | None
    n_obs: int | None
    skew: float | None
    kurtosis: float | None
    pvalue: float | None
    version: str
    source: str | None
    first_seen_ms: int
    last_seen_ms: int
    n_seen: int
    forgotten_event: int | None

    @property
    def forgotten(self) -> bool:
        return self.forgotten_event is not None

    @property
    def basis(self) -> str:
        return _basis(self.kind, self.sharpe, self.pvalue)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["start"] = pd.Timestamp(self.start_ms, unit="ms", tz="UTC").isoformat()
        d["end"] = pd.Timestamp(self.end_ms, unit="ms", tz="UTC").isoformat()
        d["forgotten"] = self.forgotten
        return _plain(d)


@dataclasses.dataclass(frozen=True)
class Deflation:
    """A trial's Sharpe deflated by its family (:meth:`Ledger.deflate`).

    ``dsr`` is None when the trial has no Sharpe (it never traded) or too few
    returns; ``result`` is the :class:`quantlab.analytics.DeflatedSharpeResult`.
    """

    trial_id: int
    k: int
    n_trials: int
    sharpe: float | None
    sharpe_variance: float
    dsr: float | None
    expected_max_sharpe: float | None
    result: Any = None

    def summary(self) -> dict:
        return {"trial_id": self.trial_id, "trial_k": self.k, "n_trials": self.n_trials,
                "dsr": self.dsr, "sharpe_per_bar": self.sharpe,
                "expected_max_sharpe": self.expected_max_sharpe,
                "sharpe_variance": self.sharpe_variance}


def _basis(kind: str, sharpe: Any, pvalue: Any) -> str:
    if kind in STRATEGY_KINDS or sharpe is not None:
        return "strategy"
    if pvalue is not None:
        return "test"
    return "all"


def trial_from_backtest(aligned: pd.DataFrame, result: Any, *, params: Mapping[str, Any],
                        kind: str = "backtest", stats: Mapping[str, Any] | None = None,
                        **fields: Any) -> Trial:
    """A :class:`Trial` for a :func:`quantlab.backtest.backtest` result on ``aligned``.

    The per-bar Sharpe, skewness and kurtosis come from the equity changes
    (bars 1..n-1, the backtest's own Sharpe basis;
    :func:`quantlab.analytics.return_moments`); ``stats`` holds the backtest
    summary plus ``stats``. ``params`` should name everything that selects the
    evaluation (analytics window and hedge, entry/exit/stop, costs, fill).
    """
    from quantlab.analytics.overfit import return_moments

    pnl = result.equity["pnl"].to_numpy()[1:]
    m = return_moments(pnl) if pnl.size >= 2 else None
    summary = {**result.summary(), **(stats or {})}
    return Trial.from_bars(aligned, kind=kind, params=params, stats=summary,
                           sharpe=None if m is None else m.sharpe,
                           n_obs=None if m is None else m.n_obs,
                           skew=None if m is None else m.skew,
                           kurtosis=None if m is None else m.kurtosis, **fields)


# --- the ledger -----------------------------------------------------------------------------
_COLUMNS = ("trial_id", "trial_key", "kind", "pair", "y", "x", "market", "timeframe", "start_ms",
            "end_ms", "n_bars", "data_hash", "params", "stats", "sharpe", "n_obs", "skew",
            "kurtosis", "pvalue", "version", "source", "first_seen_ms", "last_seen_ms", "n_seen",
            "forgotten_event")


class Ledger:
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
                con.execute("BEGIN IMMEDIATE")
                try:
                    if con.execute("PRAGMA user_version").fetchone()[0] == 0:
                        for stmt in _SCHEMA.split(";"):
                            if stmt.strip():
                                con.execute(stmt)
                        con.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
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

    # families ---------------------------------------------------------------------------
    def _members(self, pair: str, market: str, timeframe: str, start_ms: int, end_ms: int
                 ) -> list[tuple]:
        return self._read(
            "SELECT trial_id, kind, sharpe, pvalue, start_ms, end_ms FROM trials "
            "WHERE pair = ? AND market = ? AND timeframe = ? AND forgotten_event IS NULL "
            "AND start_ms < ? AND end_ms > ? ORDER BY trial_id",
            (pair, market, timeframe, int(end_ms), int(start_ms)))

    def _positions(self, ids: Sequence[int]) -> dict[int, tuple[int, int, str, int]]:
        """trial_id -> (k, n, basis, family size), one query per (pair, market, timeframe)."""
        if not ids:
            return {}
        me = {}
        for lo in range(0, len(ids), 500):
            chunk = list(ids[lo:lo + 500])
            for r in self._read(
                    "SELECT trial_id, kind, sharpe, pvalue, start_ms, end_ms, pair, market, "
                    f"timeframe FROM trials WHERE trial_id IN ({', '.join('?' * len(chunk))})",
                    chunk):
                me[r[0]] = r
        out: dict[int, tuple[int, int, str, int]] = {}
        groups: dict[tuple, list] = {}
        for r in me.values():
            groups.setdefault((r[6], r[7], r[8]), []).append(r)
        for (pair, market, tf), mine in groups.items():
            lo_ms = min(r[4] for r in mine)
            hi_ms = max(r[5] for r in mine)
            rows = self._members(pair, market, tf, lo_ms, hi_ms)
            if not rows:
                rows = []
            mid = np.array([r[0] for r in rows], dtype=np.int64)
            ms = np.array([r[4] for r in rows], dtype=np.int64)
            me_ = np.array([r[5] for r in rows], dtype=np.int64)
            basis_of = np.array([_basis(r[1], r[2], r[3]) for r in rows], dtype=object)
            for r in mine:
                overlap = (ms < r[5]) & (me_ > r[4])
                basis = _basis(r[1], r[2], r[3])
                counted = overlap & (basis_of == basis) if basis != "all" else overlap
                n = int(counted.sum())
                k = int((counted & (mid < r[0])).sum()) + 1
                out[r[0]] = (k, max(n, k), basis, int(overlap.sum()))
        return out

    def _family_rows(self, target: Any, basis: str | None = None) -> tuple[list[tuple], Any]:
        rec = self.get(_tid(target))
        rows = self._members(rec.pair, rec.market, rec.timeframe, rec.start_ms, rec.end_ms)
        want = basis or rec.basis
        if want != "all":
            rows = [r for r in rows if _basis(r[1], r[2], r[3]) == want]
        return rows, rec

    def family(self, target: int | TrialRef | TrialRecord, *, basis: str | None = None) -> list[TrialRecord]:
        """The active family of a trial (by id or :class:`TrialRef`), oldest first.

        ``basis``: ``"strategy"``, ``"test"`` or ``"all"``; default the trial's
        own (strategy trials for a backtest, test trials for a scan).
        """
        if basis not in (None, "strategy", "test", "all"):
            raise ConfigError("basis", basis, "'strategy', 'test' or 'all'")
        rows, _ = self._family_rows(target, basis)
        ids = [r[0] for r in rows]
        if not ids:
            return []
        out: list[TrialRecord] = []
        for lo in range(0, len(ids), 500):
            chunk = ids[lo:lo + 500]
            out += self._rows(f"WHERE trial_id IN ({', '.join('?' * len(chunk))})", chunk)
        return out

    def family_sharpes(self, target: int | TrialRef | TrialRecord) -> np.ndarray:
        """Per-bar Sharpes of the strategy trials in the family (a strategy that
        never traded counts as 0), for :math:`V[\\widehat{SR}]`."""
        rows, _ = self._family_rows(target, "strategy")
        return np.array([0.0 if r[2] is None else float(r[2]) for r in rows])

    def family_pvalues(self, target: int | TrialRef | TrialRecord, *, method: str = "fdr_by") -> pd.DataFrame:
        """The test trials of the family with ``pvalue`` and ``adjusted``
        (Benjamini-Yekutieli over the whole family, :func:`quantlab.analytics.adjust_pvalues`)."""
        from quantlab.analytics.overfit import adjust_pvalues

        rows, _ = self._family_rows(target, "test")
        rows = [r for r in rows if r[3] is not None] or []
        p = np.array([float(r[3]) for r in rows])
        return pd.DataFrame({"trial_id": [r[0] for r in rows], "pvalue": p,
                             "adjusted": adjust_pvalues(p, method=method) if p.size else p})

    def adjusted_pvalue(self, target: int | TrialRef | TrialRecord, *, method: str = "fdr_by") -> float | None:
        """The trial's own p-value adjusted over its family (None without one)."""
        tid = _tid(target)
        fam = self.family_pvalues(tid, method=method)
        hit = fam.loc[fam["trial_id"] == tid, "adjusted"]
        return float(hit.iloc[0]) if len(hit) else None

    def deflate(self, target: int | TrialRef | TrialRecord, sharpe: float | None = None, *,
                n_obs: int | None = None, skew: float | None = None,
                kurtosis: float | None = None) -> Deflation:
        """Deflated Sharpe of a recorded trial by its family: ``n_trials`` =
        strategy trials in the family, ``V[SR]`` their Sharpe variance (0 with
        fewer than two), moments from the record unless given."""
        from quantlab.analytics.overfit import deflated_sharpe_ratio

        rec = self.get(_tid(target))
        rows, _ = self._family_rows(rec.trial_id, "strategy")
        ids = [r[0] for r in rows]
        sharpes = np.array([0.0 if r[2] is None else float(r[2]) for r in rows])
        n = max(len(rows), 1)
        k = (ids.index(rec.trial_id) + 1) if rec.trial_id in ids else n
        var = float(np.var(sharpes, ddof=1)) if sharpes.size >= 2 else 0.0
        sr = rec.sharpe if sharpe is None else float(sharpe)
        t = rec.n_obs if n_obs is None else int(n_obs)
        g3 = (rec.skew if rec.skew is not None else 0.0) if skew is None else float(skew)
        g4 = (rec.kurtosis if rec.kurtosis is not None else 3.0) if kurtosis is None else float(kurtosis)
        if sr is None or t is None or t < 2:
            return Deflation(trial_id=rec.trial_id, k=k, n_trials=n, sharpe=sr,
                             sharpe_variance=var, dsr=None, expected_max_sharpe=None)
        try:
            res = deflated_sharpe_ratio(sr, n_obs=t, n_trials=n, sharpe_variance=var, skew=g3,
                                        kurtosis=g4)
        except ConfigError as exc:
            logger.warning("trial %s: no deflated Sharpe (%s)", rec.trial_id, exc)
            return Deflation(trial_id=rec.trial_id, k=k, n_trials=n, sharpe=sr,
                             sharpe_variance=var, dsr=None, expected_max_sharpe=None)
        return Deflation(trial_id=rec.trial_id, k=k, n_trials=n, sharpe=sr, sharpe_variance=var,
                         dsr=res.dsr, expected_max_sharpe=res.expected_max_sharpe, result=res)

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


def _tid(target: Any) -> int:
    """A trial id from an int, a :class:`TrialRef` or a :class:`TrialRecord`."""
    if isinstance(target, (TrialRef, TrialRecord)):
        return int(target.trial_id)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    raise ConfigError("trial", target, "a trial id, TrialRef or TrialRecord")


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


