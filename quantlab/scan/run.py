"""Orchestration of a scan: chunk the pairs, run the chunks on a local process
pool or a Dask cluster, stream the results back, assemble one table.

* **Chunks.** Symbols are cut into blocks of ``b`` (``b*b`` about
  ``pairs_per_task``); a task is one (block, block) product, so it reads at
  most ``2b`` symbols for its ``~b*b`` pairs. Task order and content depend
  only on the sorted universe, never on the executor.
* **Data by path.** A task is a :class:`ChunkTask`: the archive's path, the
  timeframe, the windows, the settings and its pairs (a few kB pickled).
  Workers read the Parquet archive themselves (:func:`quantlab.scan.source.window_arrays`,
  cached per worker process).
* **Executors.** ``workers=1``: in this process. ``workers=N``: a
  ``ProcessPoolExecutor`` (spawned processes; ``OMP/MKL/OPENBLAS_NUM_THREADS=1``
  in their environment). ``client=`` a ``dask.distributed.Client`` (or
  ``scheduler="tcp://host:8786"``): ``client.submit`` per task with
  ``pure=False``, results streamed by ``distributed.as_completed``. Dask's
  nannies already start workers with those variables at 1
  (``distributed.nanny.pre-spawn-environ``).
* **Same table everywhere.** Rows are sorted by ``(y, x)`` after collection and
  every figure is computed by the same function on the same arrays, so the
  pool, Dask and in-process runs agree bit for bit (tested).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError
from quantlab.scan.core import (TABLE_COLUMNS, ScanSettings, ScanWindows, adjust_and_select,
                                pair_figures)

logger = logging.getLogger(__name__)

__all__ = ["ChunkTask", "ScanResult", "Progress", "plan_chunks", "run_chunk", "scan",
           "THREAD_ENV"]

#: Set in every worker's environment so numpy's BLAS stays single-threaded
#: (N workers on N cores; threads inside each would oversubscribe).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    """One unit of work: the pairs of two symbol blocks, and where to read them."""

    archive: str
    timeframe: str
    market: str | None
    windows: ScanWindows
    settings: ScanSettings
    pairs: tuple[tuple[str, str], ...]
    scan_id: str = ""
    provenance: bool = False  # also return each pair's formation digest and range (ledger)


def plan_chunks(symbols: Sequence[str], pairs_per_task: int = 200
                ) -> list[tuple[tuple[str, str], ...]]:
    """All pairs ``(a, b)``, ``a < b`` in sorted order, grouped into block-product chunks.

    >>> [len(c) for c in plan_chunks([f"S{i}" for i in range(6)], pairs_per_task=4)]
    [1, 4, 4, 1, 4, 1]
    """
    syms = sorted(set(symbols))
    b = max(1, math.isqrt(max(1, int(pairs_per_task))))
    blocks = [syms[i:i + b] for i in range(0, len(syms), b)]
    chunks = []
    for i, j in itertools.combinations_with_replacement(range(len(blocks)), 2):
        pairs = tuple((a, c) for a in blocks[i] for c in blocks[j] if a < c)
        if pairs:
            chunks.append(pairs)
    return chunks


_tuned = False


def _tune_allocator() -> None:
    """Keep numpy's temporaries (a few hundred kB per window) on glibc's heap.

    Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``); setting it disables glibc's
    sliding mmap threshold, so every array above 128 kB is a fresh ``mmap`` the
    kernel zero-fills, and this workload costs ~3x the CPU (measured). Once per
    process: mmap only above 64 MB, trim above 128 MB free. A no-op off glibc.
    """
    global _tuned
    if _tuned:
        return
    _tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 2**20)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def run_chunk(task: ChunkTask) -> list[dict[str, Any]]:
    """Worker side: read each symbol's formation and evaluation windows from
    the archive by path and compute every pair's row. The formation figures
    see formation bars only; evaluation figures see the frozen parameters and
    evaluation bars only (:func:`quantlab.scan.core.pair_figures`)."""
    from quantlab.scan.source import pair_window, window_arrays

    def read(symbol: str, span: tuple[int, int]):
        return window_arrays(task.archive, symbol, task.timeframe, task.market, span[0], span[1],
                             token=task.scan_id)

    _tune_allocator()
    rows = []
    for y, x in task.pairs:
        form = pair_window(read(y, task.windows.formation), read(x, task.windows.formation))
        ev = pair_window(read(y, task.windows.evaluation), read(x, task.windows.evaluation))
        row = pair_figures(form, ev, task.settings)
        if task.provenance and not row["error"].startswith("formation"):
            from quantlab.scan.trials import formation_provenance

            row.update(formation_provenance(form))
        rows.append({"y": y, "x": x, **row})
    return rows


class Progress:
    """Pairs done, rate and ETA on ``stream`` (stderr by default).

    On a terminal: one line redrawn in place (at most ~10 times a second).
    Otherwise: a plain line every ``every_s`` seconds, so logs stay readable.
    ``enabled=False`` prints nothing.
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, every_s: float = 10.0,
                 enabled: bool = True, clock: Callable[[], float] = time.monotonic):
        self.total = int(total)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s if not self.tty else 0.1
        self.enabled = enabled
        self.clock = clock
        self.start = clock()
        self.done = 0
        self._last = -math.inf

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta_s = f"{eta:.0f} s" if math.isfinite(eta) else "?"
        return (f"scan: {self.done}/{self.total} pairs ({pct:.0f}%) {rate:.1f} pairs/s "
                f"ETA {eta_s}")

    def update(self, n: int) -> None:
        self.done += int(n)
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            if self.tty:
                self.stream.write("\r" + self.line() + "\x1b[K")
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


@dataclasses.dataclass
class ScanResult:
    """A finished scan: ``table`` (one row per pair, sorted by ``y, x``,
    columns :data:`quantlab.scan.core.TABLE_COLUMNS`), what ran, how long."""

    table: pd.DataFrame
    windows: ScanWindows
    settings: ScanSettings
    timeframe: str
    symbols: tuple[str, ...]
    executor: str
    elapsed_s: float
    n_tasks: int
    ledger: dict | None = None

    @property
    def selected(self) -> pd.DataFrame:
        """Selected pairs, best (smallest adjusted p-value) first."""
        col = f"coint_pvalue_{self.settings.adjust}_adj"
        sel = self.table[self.table["selected"]]
        return sel.sort_values([col, "y", "x"], kind="stable")

    def summary(self) -> dict[str, Any]:
        t = self.table
        n = len(t)
        return {
            "pairs": n, "tests": int(t.attrs.get("n_tests", 0)),
            "selected": int(t["selected"].sum()), "illiquid": int(t["illiquid"].sum()),
            "errors": int((t["error"] != "").sum()), "q": self.settings.q,
            "adjust": self.settings.adjust, "timeframe": self.timeframe,
            **self.windows.iso(), "executor": self.executor, "tasks": self.n_tasks,
            "elapsed_s": round(self.elapsed_s, 3),
            "pairs_per_s": round(n / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
            "ledger": self.ledger,
        }

    def summary_line(self) -> str:
        s = self.summary()
        return (f"scanned {s['pairs']} pairs ({s['tests']} Engle-Granger tests) in "
                f"{s['elapsed_s']:.1f} s on {s['executor']} ({s['pairs_per_s']} pairs/s): "
                f"{s['selected']} selected at q={s['q']} ({s['adjust'].upper()}), "
                f"{s['illiquid']} illiquid, {s['errors']} with errors"
                + (f"; {s['ledger']['trials']} tests in the ledger {s['ledger']['ledger']} "
                   f"({s['ledger']['new']} new)" if s["ledger"] else ""))


@contextlib.contextmanager
def _thread_env() -> Iterator[None]:
    """Children spawned inside inherit single-threaded BLAS settings."""
    old = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update(THREAD_ENV)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_local(tasks: list[ChunkTask], workers: int, on_done: Callable[[list], None]) -> None:
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            on_done(run_chunk(t))
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with _thread_env():
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                                                      mp_context=ctx)
        try:
            futures = [pool.submit(run_chunk, t) for t in tasks]
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    with pool:
        try:
            for fut in concurrent.futures.as_completed(futures):
                on_done(fut.result())
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _run_dask(tasks: list[ChunkTask], client: Any, on_done: Callable[[list], None]) -> None:
    from distributed import as_completed

    futures = [client.submit(run_chunk, t, pure=False, key=f"quantlab-scan-{t.scan_id}-{i}")
               for i, t in enumerate(tasks)]
    try:
        for _, rows in as_completed(futures, with_results=True):
            on_done(rows)
    except BaseException:
        client.cancel(futures)
        raise


def _universe(symbols: Sequence[str] | None, archive: str, timeframe: str,
              market: str | None) -> tuple[str, ...]:
    from quantlab.scan.source import archive_symbols

    if symbols is None:
        found = archive_symbols(archive, market=market)
    else:
        found = [s.strip().upper() for s in symbols if s.strip()]
    syms = tuple(sorted(set(found)))
    if len(syms) < 2:
        raise ConfigError("symbols", list(symbols or found), "at least two symbols")
    return syms


def scan(symbols: Sequence[str] | None = None, *, timeframe: str = "1m",
         windows: ScanWindows, settings: ScanSettings | None = None,
         archive: str | os.PathLike | None = None, db: str | os.PathLike | None = None,
         files: Sequence[str | os.PathLike] | None = None, market: str | None = None,
         workers: int | None = None, client: Any = None, scheduler: str | None = None,
         pairs_per_task: int = 200, stage_dir: str | os.PathLike | None = None,
         progress: bool | Progress = False, ledger: Any = None) -> ScanResult:
    """Scan every pair of ``symbols`` (all of the archive's when None).

    Parameters
    ----------
    symbols : the universe; every unordered pair is scanned once (``y`` the
        first in sorted order).
    timeframe : bar size, e.g. ``"5m"``.
    windows : formation and evaluation windows (:class:`ScanWindows`).
    settings : :class:`ScanSettings` (thresholds, q, liquidity filter, ...).
    archive, db, files : exactly one source. ``db``/``files`` are first
        materialised into an archive folder (``stage_dir``, default a temporary
        folder removed afterwards; give a shared path when the workers are on
        other machines).
    market : ``"spot"`` or ``"usdm"`` when the source holds both.
    workers : local worker processes (default: the machine's CPU count).
    client, scheduler : a ``dask.distributed.Client``, or a scheduler address
        to connect one (closed afterwards); overrides ``workers``.
    pairs_per_task : at most about this many pairs per task (fewer when needed to give
        every worker ~4 tasks, so the last one does not hold up the scan).
    progress : True for a progress bar on stderr, or a :class:`Progress`.
    ledger : a :class:`quantlab.ledger.Ledger` or its path: record every pair x
        ordering tested as a ``scan`` trial once the results are back
        (:mod:`quantlab.scan.trials`; workers never write it). None: no record.

    Returns
    -------
    ScanResult
    """
    settings = settings if settings is not None else ScanSettings()
    if not isinstance(windows, ScanWindows):
        raise ConfigError("windows", type(windows).__name__, "a ScanWindows")
    from quantlab.bars import parse_timeframe

    parse_timeframe(timeframe)
    if sum(v is not None for v in (archive, db, files)) != 1:
        raise ConfigError("source", {"archive": archive, "db": db, "files": files},
                          "exactly one of archive=, db=, files=")
    origin = (str(archive) if archive is not None else str(db) if db is not None
              else ",".join(str(f) for f in files))
    with contextlib.ExitStack() as stack:
        if archive is None:
            from quantlab.scan.source import materialise

            if stage_dir is None:
                stage_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="quantlab-scan-"))
            archive = materialise(stage_dir, db=db, files=files, symbols=symbols,
                                  timeframe=timeframe, market=market)
        path = str(Path(archive).resolve())
        if not Path(path).is_dir():
            raise ConfigError("archive", str(archive), "an archive folder written by quantlab archive")
        syms = _universe(symbols, path, timeframe, market)
        if scheduler is not None and client is None:
            from distributed import Client

            client = stack.enter_context(Client(scheduler))
        if client is not None:
            slots = max(1, sum(client.nthreads().values()))
        else:
            slots = int(workers) if workers is not None else (os.cpu_count() or 1)
            if slots < 1:
                raise ConfigError("workers", workers, "an integer >= 1")
        # at least ~4 tasks per worker slot, so the last task does not hold up the scan
        n_pairs = len(syms) * (len(syms) - 1) // 2
        per_task = max(1, min(int(pairs_per_task), -(-n_pairs // (4 * slots))))
        chunks = plan_chunks(syms, per_task)
        scan_id = uuid.uuid4().hex
        tasks = [ChunkTask(path, timeframe, market, windows, settings, c, scan_id,
                           ledger is not None) for c in chunks]
        total = sum(len(c) for c in chunks)
        bar = progress if isinstance(progress, Progress) else Progress(total, enabled=bool(progress))
        bar.total = total
        rows: list[dict[str, Any]] = []

        def on_done(chunk_rows: list) -> None:
            rows.extend(chunk_rows)
            bar.update(len(chunk_rows))

        t0 = time.perf_counter()
        try:
            if client is not None:
                executor = f"dask ({client.scheduler.address})"
                _run_dask(tasks, client, on_done)
            else:
                executor = (f"local pool of {min(slots, len(tasks))}" if slots > 1
                            else "this process")
                _run_local(tasks, slots, on_done)
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
    rows.sort(key=lambda r: (r["y"], r["x"]))
    table = pd.DataFrame(rows)
    provenance = [{k: r.get(k) for k in ("_data_hash", "_start_ms", "_end_ms")} for r in rows]
    for c in TABLE_COLUMNS:
        if c not in table:
            table[c] = np.nan
    table = table.sort_values(["y", "x"], kind="stable").reset_index(drop=True)
    table = adjust_and_select(table[[c for c in TABLE_COLUMNS if c != "selected"]], settings)
    table = table[list(TABLE_COLUMNS)]
    for c in ("n_bars", "eval_n_bars", "n_trades", "eval_n_trades", "n_crossings",
              "johansen_rank"):
        table[c] = table[c].astype("float64")
    table["illiquid"] = table["illiquid"].astype(bool)
    table.attrs.update(timeframe=timeframe, **windows.iso())
    recorded = None
    if ledger is not None:
        from quantlab.scan.trials import record_scan, scan_trials

        trials = scan_trials(table, provenance, timeframe=timeframe, market=market,
                             settings=settings, source=origin)
        recorded = record_scan(ledger, trials)
    return ScanResult(table=table, windows=windows, settings=settings, timeframe=timeframe,
                      symbols=syms, executor=executor, elapsed_s=elapsed, n_tasks=len(tasks),
                      ledger=recorded)
