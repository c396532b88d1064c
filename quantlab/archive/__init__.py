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

Modules
-------
``layout`` (constants, partition paths, file metadata, the atomic write,
frames <-> Parquet tables), ``write`` (:class:`ArchiveResult`,
:func:`archive_store`, :func:`archive_files`, :func:`write_bars`: which days
are complete, merging partial ones) and ``read`` (:func:`bar_datasets`,
:func:`list_symbols`, :func:`inventory`, :func:`read_bars`, :func:`read_ticks`).
Every name is importable from ``quantlab.archive``.
"""
from __future__ import annotations

import os  # noqa: F401 (tests patch quantlab.archive.os.replace, what the atomic write calls)

from quantlab.archive.layout import (_MARKETS, BAR_FILE_COLUMNS, DAY_MS, PART_NAME,  # noqa: F401
                                     TICK_FILE_COLUMNS, TICKS, bar_dataset, partition_path)
from quantlab.archive.read import bar_datasets, inventory, list_symbols, read_bars, read_ticks
from quantlab.archive.write import (ArchiveResult, _now_ms, archive_files,  # noqa: F401 (_now_ms: test_rules)
                                    archive_store, write_bars)
from quantlab.errors import ArchiveError  # noqa: F401 (re-exported)

__all__ = [
    "ArchiveResult", "archive_files", "archive_store", "bar_datasets", "inventory", "list_symbols",
    "partition_path", "read_bars", "read_ticks",
]
