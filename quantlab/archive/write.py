"""Writing the archive: :func:`archive_store` (a tick store's bars and ticks),
:func:`archive_files` (data.binance.vision files), :func:`write_bars` (a bar
frame made in memory) and what a run did (:class:`ArchiveResult`). Decides
which days are complete, skips them, and merges partial days with what the
source now has; the files themselves are :mod:`quantlab.archive.layout`'s."""
from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from quantlab.archive.layout import (DAY_MS, PART_NAME, TICKS, _DAILY_NAME, _bar_table, _check_market,
                                     _day, _is_complete, _open_ms, _read_part_bars, _read_part_ticks,
                                     _tf_name, _tick_table, _write_atomic, bar_dataset, partition_path)
from quantlab.errors import ArchiveError, ConfigError, UnknownSymbol
from quantlab.schema import now_ms as _now_ms

logger = logging.getLogger(__name__)

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


def _traded(bars: pd.DataFrame) -> pd.DataFrame:
    return bars[bars["trade_count"].to_numpy() > 0]


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
