r"""Parquet archive: the data layer for research and for scan workers.

``quantlab archive --db PATH --out DIR`` exports a tick store's bars (and, with
``--ticks``, its trades); ``quantlab archive --files ... --out DIR`` converts
data.binance.vision files (anything :func:`quantlab.files.load_files` reads). The
readers here (:func:`read_bars`, :func:`read_ticks`, :func:`list_symbols`,
:func:`inventory`) are pure reads: they never write, lock or cache.

Layout
------
One folder per *dataset*, then hive partitions ``market=/symbol=/date=``, one
Parquet file per partition::

    DIR/
      bars_1s/market=usdm/symbol=BTCUSDT/date=2024-08-08/part-0.parquet
      bars_1m/market=usdm/symbol=BTCUSDT/date=2022-01-01/part-0.parquet
      bars_1h/...            (a kline file of another interval keeps its own)
      ticks/market=spot/symbol=ETHUSDT/date=2024-08-08/part-0.parquet

``date`` is the UTC calendar day of ``open_time`` (bars) or ``time_ms``
(ticks). The partition keys are **not** repeated inside the files (hive
readers add them as columns: pyarrow and pandas as strings/categories, DuckDB
infers ``date`` as a DATE).

Bar files (``bars_<timeframe>``), rows sorted by ``open_time``, one row per bar
**that traded** (bars without trades are omitted, as in the store's
``bars_1s``; :func:`read_bars` puts them back explicitly):

==================  =====================  ==========================================
column              type                   meaning
==================  =====================  ==========================================
open_time           timestamp[ms, UTC]     bar open; the bar covers [open, open + tf)
open high low close float64                quote currency per base unit
volume              float64                base units
quote_volume        float64                quote currency; vwap = quote_volume / volume
trade_count         int64                  trades in the bar (> 0)
vwap                float64                quote_volume / volume
taker_buy_volume    float64                base units bought by takers
==================  =====================  ==========================================

Tick files (``ticks``): the tick columns of :mod:`quantlab.schema` without
``market`` and ``symbol`` (``kind, trade_id, time_ms, recv_ms, price, qty,
is_buyer_maker, trade_type, first_trade_id, last_trade_id``), sorted by
``(time_ms, trade_id)``.

Each file's Parquet key-value metadata holds ``quantlab.complete`` (``"1"``
or ``"0"``), ``quantlab.kind`` (``trade``/``aggTrade``/``klines``...),
``quantlab.timeframe`` and ``quantlab.source``.

Incremental and atomic
----------------------
A second run writes only days that are missing or not yet *complete*;
complete days are never rewritten (``rewrite=True`` / ``--rewrite`` forces
it). A partial day is rewritten as the union of what it held and what the
source now has (the source's row wins on the same ``open_time`` or trade
id), so converting a day's files in two batches loses nothing. A day is
complete when

* from a store: the day ended at least ``grace_s`` (default 300 s) before
  the run (no live trade can land in it any more; a REST backfill that lands
  later is picked up only with ``--rewrite``);
* from files: the source has data for that symbol after the day, or the
  day's last bar closes at midnight (a data.binance.vision daily file).

Every file is written to a hidden temporary name in its partition folder
(``.part-0.parquet.<pid>.tmp``: readers skip names starting with ``.``) and
moved into place with :func:`os.replace`, so a reader sees the old file or the
new one, never half of one; a crash leaves at most a hidden temporary file.

Reading it elsewhere
--------------------
>>> import pandas as pd                                        # doctest: +SKIP
>>> pd.read_parquet("DIR/bars_1m", filters=[("symbol", "==", "BTCUSDT")])  # doctest: +SKIP

DuckDB: ``SELECT * FROM read_parquet('DIR/bars_1m/*/*/*/*.parquet',
hive_partitioning = true) WHERE symbol = 'BTCUSDT'``; Polars:
``pl.scan_parquet('DIR/bars_1m/**/*.parquet', hive_partitioning=True)``;
Dask: ``dd.read_parquet('DIR/bars_1m', filters=[('symbol', '==', 'BTCUSDT')])``.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ArchiveError, ConfigError, UnknownSymbol  # noqa: F401 (ArchiveError re-exported)
from quantlab.schema import BAR_COLUMNS, BAR_DTYPES, MARKETS, TICK_COLUMNS, ms_to_utc_index
from quantlab.schema import now_ms as _now_ms

logger = logging.getLogger(__name__)

__all__ = [
    "ArchiveResult", "archive_files", "archive_store", "bar_datasets", "inventory", "list_symbols",
    "partition_path", "read_bars", "read_ticks",
]

DAY_MS = 86_400_000
PART_NAME = "part-0.parquet"
TICKS = "ticks"
#: Bar columns written to a bar file, in order (``open_time`` first).
BAR_FILE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "quote_volume",
                    "trade_count", "vwap", "taker_buy_volume")
TICK_FILE_COLUMNS = tuple(c for c in TICK_COLUMNS if c not in ("market", "symbol"))
_MARKETS = MARKETS
_DATASET_RE = re.compile(r"^bars_(\w+)$")
# data.binance.vision daily names: SYMBOL-<interval|trades|aggTrades>-YYYY-MM-DD.<ext>
_DAILY_NAME = re.compile(r"^([A-Z0-9]+)-([A-Za-z0-9]+)-(\d{4}-\d{2}-\d{2})\.")


# --- paths --------------------------------------------------------------------------------
def _day(ms: int) -> str:
    return pd.Timestamp(int(ms) * 1_000_000, tz="UTC").strftime("%Y-%m-%d")


def _day_start_ms(date: str) -> int:
    return int(pd.Timestamp(date, tz="UTC").value // 1_000_000)


def bar_dataset(timeframe: str | int) -> str:
    """Folder name of a bar timeframe: ``bars_1m``; the timeframe is spelled as
    given when it is a string (``"1m"``), else as whole seconds/minutes/hours/days."""
    from quantlab.bars import parse_timeframe

    tf = parse_timeframe(timeframe)
    return f"bars_{_tf_name(tf)}"


def _tf_name(tf_ms: int) -> str:
    for unit, ms in (("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if tf_ms % ms == 0:
            return f"{tf_ms // ms}{unit}"
    return f"{tf_ms}ms"


def partition_path(root: str | os.PathLike, dataset: str, market: str, symbol: str,
                   date: str) -> Path:
    """``root/dataset/market=<m>/symbol=<S>/date=<YYYY-MM-DD>/part-0.parquet``."""
    return Path(root) / dataset / f"market={market}" / f"symbol={symbol}" / f"date={date}" / PART_NAME


def _kv(path: Path, key: str) -> str | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path).metadata or {}
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable footer (%s); rewriting it", path, exc)
        return None
    value = meta.get(f"quantlab.{key}".encode())
    return None if value is None else value.decode()


def _is_complete(path: Path) -> bool:
    return path.is_file() and _kv(path, "complete") == "1"


def _write_atomic(table: Any, path: Path) -> None:
    """Write a pyarrow table to ``path`` through a hidden temporary file + os.replace."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # LZ4 without dictionary pages: price columns rarely repeat, and 730 small
        # files per symbol read ~1.6x faster than zstd+dictionary (benchmarks/archive.py).
        pq.write_table(table, tmp, compression="lz4", use_dictionary=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --- frames <-> tables -----------------------------------------------------------------------
def _bar_table(fine: pd.DataFrame, meta: dict[str, str]) -> Any:
    """Rows of a schema bar frame -> pyarrow table with the file metadata."""
    import pyarrow as pa

    cols = {"open_time": pa.array(_open_ms(fine), type=pa.timestamp("ms", tz="UTC"))}
    for c in BAR_FILE_COLUMNS[1:]:
        cols[c] = pa.array(fine[c].to_numpy(dtype=BAR_DTYPES[c]))
    return pa.table(cols).replace_schema_metadata({f"quantlab.{k}": str(v) for k, v in meta.items()})


def _tick_table(ticks: pd.DataFrame, meta: dict[str, str]) -> Any:
    """Tick frame -> pyarrow table (market and symbol live in the partition path)."""
    import pyarrow as pa

    cols = {}
    for c in TICK_FILE_COLUMNS:
        s = ticks[c]
        if c in ("first_trade_id", "last_trade_id"):
            cols[c] = pa.array(s.astype("Int64"), type=pa.int64(), from_pandas=True)
        elif c in ("kind", "trade_type"):
            cols[c] = pa.array(s.astype(object), type=pa.string(), from_pandas=True)
        else:
            cols[c] = pa.array(s.to_numpy())
    return pa.table(cols).replace_schema_metadata({f"quantlab.{k}": str(v) for k, v in meta.items()})


def _bars_from_columns(open_ms: np.ndarray, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    n = open_ms.size
    data = {c: np.asarray(cols[c], dtype=BAR_DTYPES[c]) for c in BAR_FILE_COLUMNS[1:]}
    data["is_empty"] = np.zeros(n, dtype=bool)
    data["is_forming"] = np.zeros(n, dtype=bool)
    return pd.DataFrame({c: data[c] for c in BAR_COLUMNS}, index=ms_to_utc_index(open_ms))


def _table_bars(table: Any) -> pd.DataFrame:
    """pyarrow table of bar files -> schema bar frame (traded rows), no per-row Python."""
    import pyarrow as pa

    ot = table.column("open_time").combine_chunks()
    open_ms = ot.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    cols = {c: table.column(c).to_numpy() for c in BAR_FILE_COLUMNS[1:]}
    return _bars_from_columns(np.ascontiguousarray(open_ms, dtype=np.int64), cols)


def _read_part_bars(path: Path) -> pd.DataFrame:
    return _table_bars(_read_tables([path], BAR_FILE_COLUMNS))


# --- writing -----------------------------------------------------------------------------------
@dataclass
class ArchiveResult:
    """What one archive run did, per dataset: partitions ``written`` (new or
    rewritten partial days), ``skipped`` (already complete) and ``rows``."""

    out: Path
    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    partial: list[str] = field(default_factory=list)

    def _add(self, what: str, dataset: str, n: int = 1) -> None:
        d = getattr(self, what)
        d[dataset] = d.get(dataset, 0) + n

    def summary(self) -> str:
        sets = sorted((set(self.written) | set(self.skipped)) - {"files"})
        parts = [f"{d}: {self.written.get(d, 0)} written ({self.rows.get(d, 0):,} rows), "
                 f"{self.skipped.get(d, 0)} complete skipped" for d in sets]
        if self.skipped.get("files"):
            parts.append(f"{self.skipped['files']} files already archived (not read)")
        text = "; ".join(parts) if parts else "nothing new to archive"
        if self.partial:
            text += f"; partial (rewritten next run): {', '.join(self.partial[:6])}"
            if len(self.partial) > 6:
                text += f" and {len(self.partial) - 6} more"
        return text


def _split_days(open_ms: np.ndarray) -> list[tuple[int, int, int]]:
    """(day_index, row_start, row_stop) for sorted times."""
    if open_ms.size == 0:
        return []
    days = open_ms // DAY_MS
    cut = np.flatnonzero(days[1:] != days[:-1]) + 1
    starts = np.concatenate(([0], cut))
    stops = np.append(cut, open_ms.size)
    return [(int(days[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def _merge_bars(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    both = pd.concat([old, new])
    both = both[~both.index.duplicated(keep="last")]
    return both.sort_index(kind="stable")


def _put_bars(res: ArchiveResult, out: Path, dataset: str, market: str, symbol: str, day: int,
              bars_day: pd.DataFrame, complete: bool, meta: dict[str, str], rewrite: bool) -> None:
    """Write one day of traded bars unless the partition is already complete."""
    date = _day(day * DAY_MS)
    path = partition_path(out, dataset, market, symbol, date)
    if not rewrite and path.is_file():
        if _is_complete(path):
            res._add("skipped", dataset)
            return
        try:
            bars_day = _merge_bars(_read_part_bars(path), bars_day)
        except ArchiveError as exc:  # damaged: the source's rows replace it
            logger.warning("%s; rewriting it from the source", exc)
    if bars_day.empty:
        return
    _write_atomic(_bar_table(bars_day, {**meta, "complete": int(complete)}), path)
    res._add("written", dataset)
    res._add("rows", dataset, len(bars_day))
    if not complete:
        res.partial.append(f"{dataset}/{symbol}/{date}")


def write_bars(out: str | os.PathLike, symbol: str, bars: pd.DataFrame, *,
               timeframe: str = "1m", market: str = "spot",
               meta: dict[str, str] | None = None) -> ArchiveResult:
    """Write a schema bar frame of one symbol into the archive at ``out`` as
    complete day partitions (``market=/symbol=/date=``; traded bars only;
    each file atomic), replacing those days. For frames made in memory
    (generated universes in tests, benchmarks and demos); stores and
    data.binance.vision files go through :func:`archive_store` /
    :func:`archive_files`."""
    market = _check_market(market) or "spot"
    out = Path(out)
    dataset = bar_dataset(timeframe)
    res = ArchiveResult(out=out)
    traded = _traded(bars)
    meta = {"kind": "bars", "timeframe": timeframe, **(meta or {})}
    for day, a, b in _split_days(_open_ms(traded)):
        _put_bars(res, out, dataset, market, symbol, day, traded.iloc[a:b], True, meta,
                  rewrite=True)
    return res


def _check_market(market: str | None) -> str | None:
    if market is not None and market not in _MARKETS:
        raise ConfigError("market", market, "one of 'spot', 'usdm'")
    return market


def _traded(bars: pd.DataFrame) -> pd.DataFrame:
    return bars[bars["trade_count"].to_numpy() > 0]


def _open_ms(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(frame.index.as_unit("ms").asi8, dtype=np.int64)


def archive_store(db: str | os.PathLike, out: str | os.PathLike, *,
                  timeframes: Sequence[str] = ("1s", "1m"), ticks: bool = False,
                  symbols: Iterable[str] | None = None, market: str | None = None,
                  rewrite: bool = False, grace_s: float = 300.0,
                  now_ms: int | None = None) -> ArchiveResult:
    """Export a tick store's bars (and ticks) into the archive ``out``.

    Parameters
    ----------
    db : SQLite file of :class:`quantlab.store.TickStore` (opened read-only).
    out : archive folder (created).
    timeframes : bar datasets to write, multiples of 1 s built from the stored
        1 s bars with :func:`quantlab.bars.aggregate_bars` (default 1 s and 1 m).
    ticks : also export the ``ticks`` table (every stored row).
    symbols, market : restrict to these symbols / this market (default all).
    rewrite : rewrite complete days too.
    grace_s : a day is complete once it ended ``grace_s`` seconds before ``now_ms``.
    now_ms : the run's time (ms UTC); default the wall clock.

    Notes
    -----
    One stream per (market, symbol): when the store holds both ``trade`` and
    ``aggTrade`` for a symbol, the raw ``trade`` stream is archived (logged).
    Days are read from the store one at a time (memory bounded by one day of
    1 s bars or ticks).
    """
    from quantlab.bars import aggregate_bars, parse_timeframe
    from quantlab.store import TickStore

    market = _check_market(market)
    out = Path(out)
    db = Path(db)
    if not db.is_file():
        raise ConfigError("db", str(db), "an existing SQLite file written by quantlab ingest/import")
    tfs = [(tf, parse_timeframe(tf)) for tf in timeframes]
    for tf, ms in tfs:
        if ms % 1000 or DAY_MS % ms:
            raise ConfigError("timeframes", tf, "multiples of 1 s that divide a day (1s, 1m, 5m, 1h ...)")
    now = _now_ms() if now_ms is None else int(now_ms)
    wanted = None if symbols is None else {s.upper() for s in symbols}
    res = ArchiveResult(out)
    with TickStore(db, read_only=True) as store:
        inst = store.instruments()
        streams: dict[tuple[str, str], str] = {}
        for m, s, k in zip(inst["market"], inst["symbol"], inst["kind"]):
            if (market is not None and m != market) or (wanted is not None and s not in wanted):
                continue
            if (m, s) in streams:
                logger.info("%s %s: both trade and aggTrade stored; archiving 'trade'", m, s)
                k = "trade"
            streams[(m, s)] = k
        if wanted is not None:
            missing = sorted(wanted - {s for _, s in streams})
            if missing:
                raise UnknownSymbol(missing[0], sorted({s for s in inst["symbol"]}))
        con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            for (m, s), k in sorted(streams.items()):
                lo, hi = _stored_range(con, m, s, k, ticks)
                if lo is None:
                    continue
                for day in range(lo // DAY_MS, hi // DAY_MS + 1):
                    d0, d1 = day * DAY_MS, (day + 1) * DAY_MS
                    complete = now >= d1 + grace_s * 1000
                    date = _day(d0)
                    todo = [(tf, ms) for tf, ms in tfs
                            if rewrite or not _is_complete(partition_path(out, bar_dataset(tf), m, s, date))]
                    for tf, ms in tfs:
                        if (tf, ms) not in todo:
                            res._add("skipped", bar_dataset(tf))
                    if todo:
                        fine = store.bars_1s(s, market=m, kind=k, start_ms=d0, end_ms=d1)
                        for tf, ms in todo:
                            meta = {"kind": k, "timeframe": tf, "source": f"store:{db.name}"}
                            bars_day = fine if ms == 1000 else _traded(
                                aggregate_bars(fine, ms, source_timeframe="1s")) if len(fine) else fine
                            _put_bars(res, out, bar_dataset(tf), m, s, day, bars_day, complete, meta, rewrite)
                    if ticks:
                        path = partition_path(out, TICKS, m, s, date)
                        if not rewrite and _is_complete(path):
                            res._add("skipped", TICKS)
                            continue
                        tk = store.ticks(s, market=m, kind=k, start_ms=d0, end_ms=d1)
                        _put_ticks(res, out, m, s, date, tk, complete,
                                   {"kind": k, "source": f"store:{db.name}"}, rewrite)
        finally:
            con.close()
    return res


def _stored_range(con: sqlite3.Connection, market: str, symbol: str, kind: str,
                  ticks: bool) -> tuple[int | None, int | None]:
    """First and last ms of the stream's 1 s bars (and ticks): index seeks on the
    primary keys (the store's documented schema), never a scan."""
    lo = hi = None
    queries = [("bars_1s", "open_ms")] + ([("ticks", "time_ms")] if ticks else [])
    for table, col in queries:
        for order in ("ASC", "DESC"):
            row = con.execute(f"SELECT {col} FROM {table} WHERE market = ? AND symbol = ? AND kind = ? "
                              f"ORDER BY {col} {order} LIMIT 1", (market, symbol, kind)).fetchone()
            if row is None:
                continue
            v = int(row[0])
            lo = v if lo is None else min(lo, v)
            hi = v if hi is None else max(hi, v)
    return lo, hi


def _put_ticks(res: ArchiveResult, out: Path, market: str, symbol: str, date: str,
               tk: pd.DataFrame, complete: bool, meta: dict[str, str], rewrite: bool) -> None:
    path = partition_path(out, TICKS, market, symbol, date)
    if not rewrite and path.is_file():
        try:
            old = _read_part_ticks(path, market, symbol)
        except ArchiveError as exc:  # damaged: the source's rows replace it
            logger.warning("%s; rewriting it from the source", exc)
        else:
            tk = pd.concat([old, tk], ignore_index=True)
            tk = tk.drop_duplicates(["kind", "trade_id"], keep="last")
            tk = tk.sort_values(["time_ms", "trade_id"], kind="stable").reset_index(drop=True)
    if tk.empty:
        return
    _write_atomic(_tick_table(tk, {**meta, "complete": int(complete)}), path)
    res._add("written", TICKS)
    res._add("rows", TICKS, len(tk))
    if not complete:
        res.partial.append(f"{TICKS}/{symbol}/{date}")


def _files_by_day(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, str, str, str]]:
    """Expand folders; (path, symbol, what, date) for data.binance.vision daily names."""
    from quantlab.files import _DATA_SUFFIXES  # the folder rule of files.load_files, not a second copy

    out = []
    for p in paths:
        p = Path(p)
        items = sorted(q for q in p.iterdir() if q.is_file() and q.name.lower().endswith(_DATA_SUFFIXES)) \
            if p.is_dir() else [p]
        for q in items:
            m = _DAILY_NAME.match(q.name)
            out.append((q, m.group(1) if m else "", m.group(2) if m else "", m.group(3) if m else ""))
    return out


def _already_done(out: Path, symbol: str, what: str, date: str, ticks: bool) -> bool:
    """A daily file whose every target partition is complete (under any market) can be skipped."""
    from quantlab.bars import parse_timeframe

    if not symbol or not date:
        return False
    if what in ("trades", "aggTrades"):
        sets = ["bars_1s", "bars_1m"] + ([TICKS] if ticks else [])
    else:
        try:
            sets = [bar_dataset(parse_timeframe(what))]
        except ConfigError:
            return False
    for ds_name in sets:
        hits = list((out / ds_name).glob(f"market=*/symbol={symbol}/date={date}/{PART_NAME}"))
        if not any(_is_complete(h) for h in hits):
            return False
    return True


def archive_files(files: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                  market: str | None = None, ticks: bool = False,
                  rewrite: bool = False) -> ArchiveResult:
    """Convert data.binance.vision (or any :func:`quantlab.files.load_files`) files.

    Kline files keep their own interval (``bars_1m`` for ``...-1m-...`` files);
    trade and aggTrade files become ``bars_1s`` and ``bars_1m`` (market prints
    only, :func:`quantlab.bars.resample_trades`) and, with ``ticks``, ``ticks``.

    Parameters
    ----------
    files : files and/or folders.
    out : archive folder.
    market : the market when the files do not say (headerless spot/USD-M kline
        files); also keeps only that market's ticks.
    ticks : also write the trades themselves.
    rewrite : rewrite complete days too.

    Notes
    -----
    Incremental: a daily file (``SYMBOL-<kind>-YYYY-MM-DD.*``) whose target
    partitions are all complete is not even read, so re-running over a folder
    that gained one day reads one day. Other files are loaded and their
    complete days skipped.
    """
    from quantlab.files import load_files
    from quantlab.bars import aggregate_bars, parse_timeframe, resample_trades

    market = _check_market(market)
    out = Path(out)
    res = ArchiveResult(out)
    listed = _files_by_day(files)
    todo = [q for q, sym, what, date in listed
            if rewrite or not _already_done(out, sym, what, date, ticks)]
    n_skipped_files = len(listed) - len(todo)
    if n_skipped_files:
        res._add("skipped", "files", n_skipped_files)
    if not todo:
        return res
    loaded = load_files(todo, market=market)
    for sym, lf in loaded.items():
        if market is not None and lf.market is not None and market != lf.market:
            raise ConfigError("market", market, f"{lf.market!r}: the files of {sym} are {lf.market} data")
        mkt = market or lf.market
        if mkt is None:
            raise ConfigError("market", None, f"--market spot or usdm: the files of {sym} do not say "
                              "(headerless kline files)")
        src = ",".join(sorted({Path(s).name for s in lf.sources})[:1]) + (
            f" (+{len(lf.sources) - 1} more)" if len(lf.sources) > 1 else "")
        if lf.is_bars:
            fine = _traded(lf.frame)
            if fine.empty:
                continue
            om = _open_ms(fine)
            tf_ms = int(np.min(np.diff(om))) if om.size > 1 else 60_000
            if om.size > 1:
                tf_ms = int(np.gcd.reduce(om - om[0])) or tf_ms
            name = _tf_name(tf_ms)
            parse_timeframe(name)
            sets = [(name, fine)]
        else:
            t1s = _traded(resample_trades(lf.frame, "1s"))
            sets = [("1s", t1s), ("1m", _traded(aggregate_bars(t1s, "1m", source_timeframe="1s"))
                                 if len(t1s) else t1s)]
        for name, frame in sets:
            dataset = f"bars_{name}"
            tf_ms = parse_timeframe(name)
            om = _open_ms(frame)
            last = int(om[-1]) if om.size else 0
            for day, a, b in _split_days(om):
                d1 = (day + 1) * DAY_MS
                complete = last >= d1 or int(om[b - 1]) + tf_ms >= d1
                meta = {"kind": lf.format, "timeframe": name, "source": src}
                _put_bars(res, out, dataset, mkt, sym, day, frame.iloc[a:b], complete, meta, rewrite)
        if ticks and not lf.is_bars:
            tk = lf.frame.sort_values(["time_ms", "trade_id"], kind="stable").reset_index(drop=True)
            t = tk["time_ms"].to_numpy(dtype=np.int64)
            last = int(t[-1]) if t.size else 0
            for day, a, b in _split_days(t):
                date = _day(day * DAY_MS)
                path = partition_path(out, TICKS, mkt, sym, date)
                if not rewrite and _is_complete(path):
                    res._add("skipped", TICKS)
                    continue
                d1 = (day + 1) * DAY_MS
                # Trades have no "bar close": complete once the files hold a later trade,
                # or the day's last trade is in its last second.
                complete = last >= d1 or int(t[b - 1]) >= d1 - 1000
                _put_ticks(res, out, mkt, sym, date, tk.iloc[a:b], complete,
                           {"kind": lf.format, "source": src}, rewrite)
    return res


# --- reading -----------------------------------------------------------------------------------
def _root(archive: str | os.PathLike) -> Path:
    root = Path(archive)
    if not root.is_dir():
        raise ConfigError("archive", str(archive), "an existing folder written by `quantlab archive`")
    return root


def _kv_dirs(folder: Path, key: str) -> list[str]:
    if not folder.is_dir():
        return []
    pre = f"{key}="
    return sorted(p.name[len(pre):] for p in folder.iterdir() if p.is_dir() and p.name.startswith(pre))


def bar_datasets(archive: str | os.PathLike) -> dict[str, int]:
    """Bar datasets in the archive: ``{"bars_1m": 60000, ...}`` (timeframe in ms)."""
    from quantlab.bars import parse_timeframe

    out = {}
    for p in sorted(_root(archive).iterdir()):
        m = _DATASET_RE.match(p.name)
        if p.is_dir() and m:
            try:
                out[p.name] = parse_timeframe(m.group(1))
            except ConfigError:
                continue
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def list_symbols(archive: str | os.PathLike, *, timeframe: str | None = None,
                 market: str | None = None) -> list[str]:
    """Symbols with bars in the archive (sorted), optionally of one stored
    ``timeframe`` dataset (``"1m"``) and one ``market``."""
    root = _root(archive)
    market = _check_market(market)
    sets = [bar_dataset(timeframe)] if timeframe is not None else list(bar_datasets(root))
    found: set[str] = set()
    for ds_name in sets:
        for m in _kv_dirs(root / ds_name, "market"):
            if market is None or m == market:
                found.update(_kv_dirs(root / ds_name / f"market={m}", "symbol"))
    return sorted(found)


def inventory(archive: str | os.PathLike) -> pd.DataFrame:
    """One row per (dataset, market, symbol): ``first_date``, ``last_date``,
    ``days`` (partitions present). Reads folder names only."""
    root = _root(archive)
    rows = []
    for ds_name in list(bar_datasets(root)) + ([TICKS] if (root / TICKS).is_dir() else []):
        for m in _kv_dirs(root / ds_name, "market"):
            for s in _kv_dirs(root / ds_name / f"market={m}", "symbol"):
                dates = _kv_dirs(root / ds_name / f"market={m}" / f"symbol={s}", "date")
                if dates:
                    rows.append((ds_name, m, s, dates[0], dates[-1], len(dates)))
    return pd.DataFrame(rows, columns=["dataset", "market", "symbol", "first_date", "last_date", "days"])


def _resolve_market(root: Path, dataset: str, symbol: str, market: str | None) -> str:
    markets = [m for m in _kv_dirs(root / dataset, "market")
               if (root / dataset / f"market={m}" / f"symbol={symbol}").is_dir()]
    if market is not None:
        if market not in markets:
            raise UnknownSymbol(f"{symbol} (market={market!r}) in {root / dataset}",
                                [f"{s} (market={m!r})" for m in _kv_dirs(root / dataset, "market")
                                 for s in _kv_dirs(root / dataset / f"market={m}", "symbol")])
        return market
    if not markets:
        raise UnknownSymbol(symbol, list_symbols(root) if bar_datasets(root) else [])
    if len(markets) > 1:
        raise ConfigError("market", None, f"'spot' or 'usdm': the archive holds {symbol} for both")
    return markets[0]


def _dates_in(folder: Path, lo_ms: int | None, hi_ms: int | None) -> list[str]:
    """Partition dates under ``folder`` overlapping ``[lo_ms, hi_ms)`` (directory pruning)."""
    dates = _kv_dirs(folder, "date")
    lo = _day(lo_ms) if lo_ms is not None else None
    hi = _day(hi_ms - 1) if hi_ms is not None else None
    return [d for d in dates if (lo is None or d >= lo) and (hi is None or d <= hi)]


def _file_schema(columns: Sequence[str]) -> Any:
    import pyarrow as pa

    types = {"open_time": pa.timestamp("ms", tz="UTC"), "trade_count": pa.int64(),
             "kind": pa.string(), "trade_type": pa.string(), "is_buyer_maker": pa.bool_(),
             "trade_id": pa.int64(), "time_ms": pa.int64(), "recv_ms": pa.int64(),
             "first_trade_id": pa.int64(), "last_trade_id": pa.int64()}
    return pa.schema([(c, types.get(c, pa.float64())) for c in columns])


def _read_tables(paths: list[Path], columns: Sequence[str]) -> Any:
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    # One dataset over the listed files with the known schema: pyarrow reads them
    # in parallel, with no partition discovery (the folders were pruned already),
    # no existence check per path and no schema inference (~0.5 ms per file in all).
    import pyarrow as pa

    dataset = pads.FileSystemDataset.from_paths(
        [str(p) for p in paths], schema=_file_schema(columns), format=pads.ParquetFileFormat(),
        filesystem=pafs.LocalFileSystem())
    try:
        return dataset.to_table(columns=list(columns))
    except (OSError, pa.ArrowException) as exc:
        bad = _first_unreadable(paths, columns)
        raise ArchiveError(f"{bad or paths[0].parent.parent}: unreadable archive partition ({exc}); "
                           "delete it and re-run `quantlab archive`, or re-run with --rewrite") from exc


def _first_unreadable(paths: list[Path], columns: Sequence[str]) -> Path | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = _file_schema(columns)
    for p in paths:
        try:
            got = pq.read_schema(p)
        except (OSError, pa.ArrowException):
            return p
        if not all(got.field(c).type == want.field(c).type for c in columns if c in got.names) \
                or any(c not in got.names for c in columns):
            return p
    return None


def read_bars(archive: str | os.PathLike, symbol: str, timeframe: str | int = "1m", *,
              market: str | None = None, start_ms: int | None = None,
              end_ms: int | None = None, explicit_empty: bool = True) -> pd.DataFrame:
    """Bars of one symbol from the archive, reading only the partitions in range.

    Parameters
    ----------
    archive : archive folder.
    symbol : e.g. ``"BTCUSDT"`` (case-insensitive).
    timeframe : any multiple of a stored timeframe: read from the coarsest
        stored dataset that divides it (``5m`` from ``bars_1m``; ``1m`` from
        ``bars_1m`` rather than ``bars_1s``) and aggregated with
        :func:`quantlab.bars.aggregate_bars`.
    market : ``"spot"`` or ``"usdm"``; needed only when the archive has both.
    start_ms, end_ms : ``[start_ms, end_ms)`` in ms UTC; cover the bars
        overlapping it (whole bars, as in :meth:`quantlab.store.TickStore.bars`).
    explicit_empty : False: when ``timeframe`` is the stored one, return the
        archived (traded) rows as they are, without the explicit empty bars
        (what :func:`quantlab.bars.align_pair` needs; saves ~0.3 s per million
        bars). Coarser timeframes are always aggregated.

    Returns
    -------
    DataFrame
        Bar frame of :mod:`quantlab.schema` with **explicit** empty bars
        carrying the previous close (seeded from the last archived bar before
        the range), so a windowed read equals the same rows of a full read.
        ``attrs``: ``archive``, ``market``, ``symbol``, ``timeframe``,
        ``source_timeframe``, ``files`` (partitions read).

    Raises
    ------
    UnknownSymbol, ConfigError
        Symbol not archived (the message lists what is), no stored timeframe
        divides ``timeframe``, or an ambiguous market.
    """
    from quantlab.bars import aggregate_bars, parse_timeframe

    root = _root(archive)
    symbol = str(symbol).upper()
    market = _check_market(market)
    tf = parse_timeframe(timeframe)
    stored = bar_datasets(root)
    fits = [(name, ms) for name, ms in stored.items() if tf % ms == 0]
    if not fits:
        raise ConfigError("timeframe", timeframe,
                          f"a multiple of an archived timeframe ({', '.join(stored) or 'none archived'} "
                          f"in {root})")
    # Coarsest dataset that divides the target and holds the symbol.
    choice = None
    for name, ms in reversed(fits):
        if any((root / name / f"market={m}" / f"symbol={symbol}").is_dir()
               for m in _kv_dirs(root / name, "market")):
            choice = (name, ms)
            break
    if choice is None:
        raise UnknownSymbol(symbol, list_symbols(root))
    dataset, src_ms = choice
    m = _resolve_market(root, dataset, symbol, market)
    folder = root / dataset / f"market={m}" / f"symbol={symbol}"
    lo_q = None if start_ms is None else int(start_ms) // tf * tf
    hi_q = None if end_ms is None else -(-int(end_ms) // tf) * tf
    if lo_q is not None and hi_q is not None and hi_q <= lo_q:
        raise ConfigError("end_ms", end_ms, f"a time after start_ms={start_ms}")
    dates = _dates_in(folder, lo_q, hi_q)
    paths = [folder / f"date={d}" / PART_NAME for d in dates]
    paths = [p for p in paths if p.is_file()]
    if paths:
        fine = _table_bars(_read_tables(paths, BAR_FILE_COLUMNS))
        om = _open_ms(fine)
        keep = np.ones(om.size, dtype=bool)
        if lo_q is not None:
            keep &= om >= lo_q
        if hi_q is not None:
            keep &= om < hi_q
        if not keep.all():
            fine = fine[keep]
    else:
        fine = _bars_from_columns(np.empty(0, dtype=np.int64),
                                  {c: np.empty(0) for c in BAR_FILE_COLUMNS[1:]})
    if lo_q is not None and (explicit_empty or tf != src_ms):
        seed = _seed_bar(folder, dates[0] if dates else _day(lo_q), lo_q)
        if seed is not None:
            fine = pd.concat([seed, fine])
    if explicit_empty or tf != src_ms:
        out = aggregate_bars(fine, tf, start_ms=start_ms, end_ms=end_ms, source_timeframe=src_ms)
    else:
        out = fine
    out.attrs.update(archive=str(root), market=m, symbol=symbol, timeframe=timeframe,
                     source_timeframe=dataset[len("bars_"):], files=len(paths))
    return out


def _seed_bar(folder: Path, first_date: str, lo_ms: int) -> pd.DataFrame | None:
    """The last archived bar before ``lo_ms`` (seeds leading empty bars): the
    last row before it in the first partition read, else in the nearest earlier one."""
    candidates = [d for d in _kv_dirs(folder, "date") if d <= first_date]
    for d in reversed(candidates[-2:]):
        path = folder / f"date={d}" / PART_NAME
        if not path.is_file():
            continue
        bars = _read_part_bars(path)
        bars = bars[_open_ms(bars) < lo_ms]
        if len(bars):
            return bars.iloc[-1:]
    return None


def _read_part_ticks(path: Path, market: str, symbol: str) -> pd.DataFrame:
    return _ticks_frame(_read_tables([path], TICK_FILE_COLUMNS), market, symbol)


def _ticks_frame(table: Any, market: str, symbol: str) -> pd.DataFrame:
    from quantlab.schema import TICK_DTYPES

    n = table.num_rows

    def objects(values: Any) -> pd.Series:  # the schema's string columns are object (pandas 3: str)
        return pd.Series(np.asarray(values, dtype=object), dtype=object, copy=False)

    data: dict[str, Any] = {"market": objects(np.full(n, market, dtype=object)),
                            "symbol": objects(np.full(n, symbol, dtype=object))}
    for c in TICK_FILE_COLUMNS:
        col = table.column(c)
        if c in ("first_trade_id", "last_trade_id"):
            data[c] = pd.array(col.to_pandas(), dtype="Int64")
        elif c in ("kind", "trade_type"):
            data[c] = objects(col.to_pylist())
        else:
            data[c] = col.to_numpy(zero_copy_only=False).astype(TICK_DTYPES[c], copy=False)
    return pd.DataFrame({c: data[c] for c in TICK_COLUMNS})


def read_ticks(archive: str | os.PathLike, symbol: str, *, market: str | None = None,
               start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
    """Archived trades of one symbol in ``[start_ms, end_ms)`` (ms UTC), as a tick
    frame of :mod:`quantlab.schema` sorted by ``(time_ms, trade_id)``; reads only
    the partitions in range."""
    root = _root(archive)
    symbol = str(symbol).upper()
    m = _resolve_market(root, TICKS, symbol, _check_market(market))
    folder = root / TICKS / f"market={m}" / f"symbol={symbol}"
    paths = [folder / f"date={d}" / PART_NAME for d in _dates_in(folder, start_ms, end_ms)]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        from quantlab.schema import empty_ticks

        return empty_ticks()
    frame = _ticks_frame(_read_tables(paths, TICK_FILE_COLUMNS), m, symbol)
    t = frame["time_ms"].to_numpy()
    keep = np.ones(t.size, dtype=bool)
    if start_ms is not None:
        keep &= t >= int(start_ms)
    if end_ms is not None:
        keep &= t < int(end_ms)
    return frame[keep].reset_index(drop=True)
