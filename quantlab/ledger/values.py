"""What the ledger stores and hands out, and the pure rules behind them: the
constants (:data:`LEDGER_ENV`, :data:`KINDS`, ...), canonical JSON and
:func:`bars_digest` (what makes two trials the same), :func:`pair_name`,
:func:`default_ledger_path`, and the value types :class:`Trial`,
:class:`TrialRef`, :class:`TrialRecord`, :class:`Deflation` with
:func:`trial_from_backtest`. No I/O.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError

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


def _tid(target: Any) -> int:
    """A trial id from an int, a :class:`TrialRef` or a :class:`TrialRecord`."""
    if isinstance(target, (TrialRef, TrialRecord)):
        return int(target.trial_id)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    raise ConfigError("trial", target, "a trial id, TrialRef or TrialRecord")


