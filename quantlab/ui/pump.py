"""The one UI pump: a few times a second, on the kernel's own loop, move what the
ingester buffered into the plots.

Why a pump (``shared/BROWSER.md``, measured): calling ``ColumnDataSource.stream``
from the ingest thread, or scheduling one loop callback per trade, starves the
kernel (re-running a cell took 16-23 s at 50 updates/s and the UI froze at
200/s); a single periodic task that drains a thread-safe buffer and streams one
coalesced batch per data source kept cells responsive (0.2 s). So:

* the ingester thread only appends to its subscriber buffer;
* :class:`UiPump` runs ``step(now)`` on the kernel's asyncio loop every
  ``interval_s`` and never more than ``max_updates_per_s`` times a second,
  whatever the trade rate;
* ``step`` collects its rows into a :class:`StreamBatch`, which calls
  ``source.stream(columns, rollover=N)`` **once per source** per tick.

Nothing here imports Bokeh: a "source" is anything with
``stream(data, rollover=None)``, so the tests use recording fakes.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable, Mapping, Sequence

from quantlab.schema import now_ms

logger = logging.getLogger(__name__)

__all__ = ["FeedStep", "PairSink", "StreamBatch", "Throttle", "UiPump"]


class Throttle:
    """At most ``max_per_s`` events a second: :meth:`ready` is true when at
    least ``1 / max_per_s`` seconds passed since the last accepted event.

    >>> t = Throttle(10)
    >>> [t.ready(now) for now in (0.0, 0.05, 0.1, 0.15, 0.2)]
    [True, False, True, False, True]
    """

    __slots__ = ("min_gap_s", "_last")

    def __init__(self, max_per_s: float):
        if not max_per_s > 0:
            raise ValueError(f"max_per_s must be > 0, got {max_per_s!r}")
        self.min_gap_s = 1.0 / max_per_s
        self._last = -math.inf

    def ready(self, now: float) -> bool:
        # 1e-9 s tolerance so that a clock ticking exactly at the limit passes.
        if now - self._last + 1e-9 >= self.min_gap_s:
            self._last = now
            return True
        return False

    def reset(self) -> None:
        self._last = -math.inf


class StreamBatch:
    """Rows collected during one pump tick, streamed once per source.

    Rows of the same source are concatenated column-wise; when more rows than
    ``rollover`` arrive in one tick only the last ``rollover`` are sent (the
    browser would drop the others at once). A one-row "forming bar" source is
    therefore ``rollover=1``: however often it is updated in a tick, one row
    goes out, and the browser never holds more than one.

    >>> class Src:
    ...     def __init__(self): self.calls = []
    ...     def stream(self, data, rollover=None): self.calls.append((data, rollover))
    >>> src, batch = Src(), StreamBatch()
    >>> batch.add_row(src, {"t": 1, "v": 1.0}, rollover=3)
    >>> batch.add_rows(src, {"t": [2, 3, 4], "v": [2.0, 3.0, 4.0]}, rollover=3)
    >>> batch.flush()
    1
    >>> src.calls
    [({'t': [2, 3, 4], 'v': [2.0, 3.0, 4.0]}, 3)]
    """

    def __init__(self) -> None:
        # id(source) -> [source, columns, rollover]; dicts keep insertion order.
        self._pending: dict[int, list] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add_rows(self, source: Any, columns: Mapping[str, Sequence], rollover: int | None = None) -> None:
        """Queue several rows (``{column: values}``, equal lengths) for ``source``."""
        entry = self._pending.get(id(source))
        if entry is None:
            self._pending[id(source)] = [source, {k: list(v) for k, v in columns.items()}, rollover]
            return
        cols = entry[1]
        if set(cols) != set(columns):
            raise ValueError(f"rows for one source must have the same columns: "
                             f"{sorted(cols)} != {sorted(columns)}")
        for k, v in columns.items():
            cols[k].extend(v)
        entry[2] = rollover

    def add_row(self, source: Any, row: Mapping[str, Any], rollover: int | None = None) -> None:
        """Queue one row (``{column: value}``) for ``source``."""
        self.add_rows(source, {k: [v] for k, v in row.items()}, rollover)

    def flush(self) -> int:
        """Stream every queued batch (one ``stream`` call per source); return
        how many calls were made. The batch is empty afterwards, even when a
        call raises (the exception propagates after the other sources ran)."""
        pending, self._pending = self._pending, {}
        calls = 0
        error: BaseException | None = None
        for source, cols, rollover in pending.values():
            if rollover is not None:
                n = len(next(iter(cols.values()), ()))
                if n > rollover:
                    cols = {k: v[n - rollover:] for k, v in cols.items()}
            try:
                source.stream(cols, rollover=rollover)
                calls += 1
            except Exception as exc:  # keep the other sources consistent
                error = error or exc
        if error is not None:
            raise error
        return calls

    def clear(self) -> None:
        self._pending.clear()


class UiPump:
    """Run ``step(now)`` periodically on the kernel's event loop.

    Parameters
    ----------
    step : callable
        ``step(now_s)`` does one UI update (drain, compute, stream). It runs on
        the loop thread, so it may touch Bokeh and widget objects. Exceptions
        are caught, logged and counted (:attr:`errors`, :attr:`last_error`):
        one bad tick never stops the pump.
    interval_s : float
        Pause between ticks, seconds. Default 0.15 (about 6-7 updates/s).
    max_updates_per_s : float
        Hard cap on ticks per second, also for direct :meth:`tick` calls.
        BROWSER.md: keep it at 10 or below.
    clock : callable
        Monotonic seconds; tests pass a fake clock and call :meth:`tick`.

    Notes
    -----
    :meth:`start` must be called from the loop thread (a notebook cell): the
    task is created on the running asyncio loop (ipykernel >= 6 runs cells on
    it), or on tornado's current IOLoop when no asyncio loop is running.
    """

    def __init__(self, step: Callable[[float], Any], *, interval_s: float = 0.15,
                 max_updates_per_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 on_error: Callable[[BaseException], Any] | None = None):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self._step = step
        self.interval_s = float(interval_s)
        self.throttle = Throttle(max_updates_per_s)
        self.clock = clock
        self.on_error = on_error
        self.ticks = 0          # steps run
        self.skipped = 0        # tick() calls refused by the throttle
        self.errors = 0
        self.last_error: BaseException | None = None
        self.step_s = 0.0       # duration of the last step, seconds
        self.max_step_s = 0.0
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- one tick ------------------------------------------------------------------
    def tick(self, now: float | None = None) -> bool:
        """Run one step unless the throttle refuses; return whether it ran."""
        now = self.clock() if now is None else now
        if not self.throttle.ready(now):
            self.skipped += 1
            return False
        t0 = time.perf_counter()
        try:
            self._step(now)
        except Exception as exc:  # never let one tick kill the pump
            self.errors += 1
            first = self.last_error is None or repr(exc) != repr(self.last_error)
            self.last_error = exc
            if first:
                logger.exception("UI pump step failed")
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:  # pragma: no cover - error reporting must not raise
                    logger.exception("UI pump on_error failed")
        finally:
            self.ticks += 1
            self.step_s = time.perf_counter() - t0
            self.max_step_s = max(self.max_step_s, self.step_s)
        return True

    # -- scheduling ----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Schedule the pump on the running loop (idempotent)."""
        if self.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            from tornado.ioloop import IOLoop  # the kernel's loop outside a coroutine

            loop = IOLoop.current().asyncio_loop  # type: ignore[attr-defined]
        self._loop = loop
        self.throttle.reset()
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                t0 = self.clock()
                self.tick()
                # a fixed period, not a fixed pause: a slow step does not add
                # its own duration to every trade's wait (tick-to-screen)
                await asyncio.sleep(max(0.01, self.interval_s - (self.clock() - t0)))
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        """Cancel the task; the current step (if any) is never interrupted
        because steps are synchronous."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    async def run_for(self, seconds: float) -> None:
        """Await ``seconds`` while the pump runs (for papermill / scripts:
        ``await pump.run_for(20)`` in a cell keeps the loop serving the pump)."""
        self.start()
        await asyncio.sleep(seconds)


class PairSink:
    """Where one pair's updates go: "sources" (anything with ``stream``).

    ``bars`` receives closed bars (rollover ``max_bars``), ``forming`` the bar
    still forming (rollover 1: it always holds exactly one row), ``alerts``
    one row per alert event (``t``, ``t_mid``, ``zscore``, ``text``; rollover
    ``max_alerts``), ``holes`` (optional) one row ``left``, ``right`` (ms) per
    stretch of time without a bar.

    Holes: when two consecutive closed bars are more than one timeframe
    (``timeframe_ms``) apart, a *break row* (``t`` = the first missing bar,
    every value NaN) goes between them, so lines break instead of drawing a
    straight segment across the hole, and the hole is added to ``holes``.
    """

    def __init__(self, bars: Any, forming: Any, alerts: Any, *, max_bars: int,
                 max_alerts: int = 200, holes: Any = None, timeframe_ms: int | None = None,
                 max_holes: int = 200):
        self.bars = bars
        self.forming = forming
        self.alerts = alerts
        self.holes = holes
        self.max_bars = int(max_bars)
        self.max_alerts = int(max_alerts)
        self.max_holes = int(max_holes)
        self.tf_ms = timeframe_ms
        self.last_t: float | None = None   # newest closed bar streamed (ms)

    def break_row(self, like: Mapping[str, Any], t: float) -> dict:
        """A row of NaN values at bar ``t`` (lines break there)."""
        row = {}
        for k, v in like.items():
            if isinstance(v, str):
                row[k] = v
            elif isinstance(v, int) and not isinstance(v, bool):
                row[k] = 0
            else:
                row[k] = math.nan
        row["t"] = float(t)
        if "t_mid" in row and self.tf_ms:
            row["t_mid"] = float(t) + self.tf_ms / 2
        return row

    def with_breaks(self, rows: Sequence[Mapping[str, Any]], last_t: float | None = None
                    ) -> tuple[list[Mapping[str, Any]], list[tuple[float, float]]]:
        """``rows`` with a break row before every hole (also between
        ``last_t`` and the first row), and the holes ``(left, right)`` in ms."""
        if not self.tf_ms or not rows:
            return list(rows), []
        tf = self.tf_ms
        out: list[Mapping[str, Any]] = []
        holes: list[tuple[float, float]] = []
        prev = last_t
        for r in rows:
            t = float(r["t"])
            if prev is not None and t - prev > tf * 1.5:
                out.append(self.break_row(r, prev + tf))
                holes.append((prev + tf, t))
            out.append(r)
            prev = t
        return out, holes

    def queue(self, batch: StreamBatch, update: Any) -> None:
        """Queue a :class:`~quantlab.ui.pipeline.PipelineUpdate` into ``batch``."""
        rows = update.rows
        if rows:
            shown, holes = self.with_breaks(rows, self.last_t)
            self.last_t = float(rows[-1]["t"])
            cols = {k: [r[k] for r in shown] for k in rows[0]}
            batch.add_rows(self.bars, cols, rollover=self.max_bars)
            if holes and self.holes is not None:
                batch.add_rows(self.holes, {"left": [h[0] for h in holes],
                                            "right": [h[1] for h in holes]},
                               rollover=self.max_holes)
        if update.forming is not None:
            batch.add_row(self.forming, update.forming, rollover=1)
        if update.alerts:
            by_t = {r["t"]: r for r in rows}
            ts, mids, zs, texts = [], [], [], []
            for ev in update.alerts:
                row = by_t.get(float(ev.time_ms))
                ts.append(float(ev.time_ms))
                mids.append(row["t_mid"] if row is not None else float(ev.time_ms))
                zs.append(row["zscore"] if row is not None else math.nan)
                texts.append(ev.message)
            batch.add_rows(self.alerts, {"t": ts, "t_mid": mids, "zscore": zs, "text": texts},
                           rollover=self.max_alerts)

    def patch(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Replace closed bars already sent (same ``t``) with ``rows``, in ONE
        ``bars.patch(...)`` call (no ``.data`` reassignment): a contiguous run
        of rows as one slice per column, else one ``(index, value)`` per row.
        Rows the source no longer holds (rolled over) are skipped. Returns how
        many rows were patched."""
        if not rows:
            return 0
        ts = self.bars.data.get("t", [])
        where = {float(t): i for i, t in enumerate(ts)}
        found = sorted((where[float(r["t"])], r) for r in rows if float(r["t"]) in where)
        if not found:
            return 0
        columns = list(found[0][1])
        idx = [i for i, _ in found]
        if idx == list(range(idx[0], idx[-1] + 1)):
            span = slice(idx[0], idx[-1] + 1)
            patches = {c: [(span, [r[c] for _, r in found])] for c in columns}
        else:
            patches = {c: [(i, r[c]) for i, r in found] for c in columns}
        self.bars.patch(patches)
        return len(found)


class FeedStep:
    """The pump's step for a monitor: drain the hand-off once, feed every
    pair, stream once per source.

    Parameters
    ----------
    drain : ``callable() -> list[Trade]`` (``Subscription.drain``), or None
        when there is no live feed (files only).
    targets : list of ``(pipeline, sink)``; a list the monitor may append to.
    after : optional ``callable(now_s, updates)`` run after streaming (status
        strip, stats panel); ``updates`` is a list of ``PipelineUpdate``.
    wall_ms : wall clock in ms (tests pass a fake).
    """

    def __init__(self, drain: Callable[[], list] | None, targets: list, *,
                 after: Callable[[float, list], Any] | None = None,
                 wall_ms: Callable[[], int] | None = None):
        self.drain = drain
        self.targets = targets
        self.after = after
        self.wall_ms = wall_ms or now_ms
        self.batch = StreamBatch()
        self.trades_seen = 0
        self.stream_calls = 0
        self.last_trade_count = 0

    def __call__(self, now: float) -> None:
        trades = self.drain() if self.drain is not None else []
        self.last_trade_count = len(trades)
        self.trades_seen += len(trades)
        wall = self.wall_ms()
        updates = []
        for pipeline, sink in list(self.targets):
            if trades:
                pipeline.add_trades(trades)
            upd = pipeline.advance(wall_ms=wall)
            updates.append(upd)
            if upd:
                sink.queue(self.batch, upd)
        self.stream_calls += self.batch.flush()
        if self.after is not None:
            self.after(now, updates)
