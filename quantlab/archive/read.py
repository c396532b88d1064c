"""Reading the archive: :func:`read_bars`, :func:`read_ticks`,
:func:`list_symbols`, :func:`inventory` and :func:`bar_datasets`. Pure reads:
they never write, lock or cache; only the partitions in range are opened
(folder names prune the days first)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from quantlab.archive.layout import (BAR_FILE_COLUMNS, PART_NAME, TICK_FILE_COLUMNS, TICKS, _DATASET_RE,
                                     _bars_from_columns, _check_market, _day, _open_ms, _read_part_bars,
                                     _read_tables, _table_bars, _ticks_frame, bar_dataset)
from quantlab.errors import ConfigError, UnknownSymbol

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
