"""Where the archive's files are and what they hold: the constants, partition
paths, the file metadata (``quantlab.complete``, ``quantlab.kind`` ...), the
atomic write, and the frame <-> pyarrow table conversions both ways that the
writer (:mod:`quantlab.archive.write`, which merges into partial days) and the
readers (:mod:`quantlab.archive.read`) share. No policy: what to write and
what to read live there."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ArchiveError, ConfigError
from quantlab.schema import BAR_COLUMNS, BAR_DTYPES, MARKETS, TICK_COLUMNS, ms_to_utc_index

logger = logging.getLogger(__name__)

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


def _open_ms(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(frame.index.as_unit("ms").asi8, dtype=np.int64)


# --- arguments ---------------------------------------------------------------------------------
def _check_market(market: str | None) -> str | None:
    if market is not None and market not in _MARKETS:
        raise ConfigError("market", market, "one of 'spot', 'usdm'")
    return market


# --- reading files (the writer's merges and the readers) -------------------------------------
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
