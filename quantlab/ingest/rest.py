"""REST backfill: what the stream missed, fetched by id, paced by weight.

Blocking HTTP (:func:`_http_get_json`, urllib, body capped at
:data:`REST_MAX_BODY_BYTES`) runs in short-lived daemon threads
(:func:`_run_in_daemon_thread`), never on the socket loop. :class:`_BackfillPart`
is the loop side of :class:`~quantlab.ingest.Ingester`: it takes the gaps owed
to REST from :class:`~quantlab.ingest.core.IdLedger`, pages them by ``fromId``
(or reconciles USD-M raw holes with aggTrades, :func:`~quantlab.ingest.core.
reconcile_raw_futures`), stores pages through the writer and records each
gap's outcome (:func:`~quantlab.ingest.core.gap_status`). Requests are paced
by a :class:`~quantlab.ingest.policy.TokenBucket` ("Endpoints").
"""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import numpy as np
import orjson

from quantlab.binance import (
    REST_MAX_LIMIT, REST_WEIGHTS, Trade, parse_rest_agg_trade, parse_rest_trade,
)
from quantlab.errors import FatalFeedError, NotATrade, RestError
from quantlab.ingest.core import Gap, attribute, gap_status, reconcile_raw_futures
from quantlab.ingest.policy import _describe, _fmt_s, _parse_retry_after
from quantlab.schema import now_ms as _now_ms

logger = logging.getLogger("quantlab.ingest")

#: Largest REST body read (bytes). A full Binance page (1,000 trades) is ~150 KB;
#: anything near this is not a trade page, and reading it whole could exhaust memory
#: (issue 13: 200 MB bodies drove the ingester to 2.1 GB).
REST_MAX_BODY_BYTES = 16 << 20
_REST_ERROR_BODY_BYTES = 64 << 10  # of an HTTP error body: enough for Binance's {"code","msg"}


def _http_get_json(url: str, timeout_s: float) -> Any:
    """GET ``url`` and parse JSON. Raises :class:`RestError` on any failure,
    including a body over :data:`REST_MAX_BODY_BYTES` (never read whole)."""
    req = urllib.request.Request(url, headers={"Accept": "application/json",
                                               "User-Agent": "quantlab-ingest"})
    cap = _body_cap()
    too_big = f"response body larger than {cap / 2**20:g} MiB (REST_MAX_BODY_BYTES); not a Binance page"
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                raise RestError(200, url, f"{too_big} (Content-Length {int(declared):,})")
            body = resp.read(cap + 1)  # chunked or undeclared: at most cap + 1 bytes held
            if len(body) > cap:
                body = b""  # freed before the error travels (and is retried)
                raise RestError(200, url, too_big)
    except RestError:
        raise
    except urllib.error.HTTPError as exc:
        retry_after = _parse_retry_after(exc.headers.get("Retry-After")) if exc.headers else None
        detail = exc.reason
        try:
            payload = orjson.loads(exc.read(_REST_ERROR_BODY_BYTES) or b"{}")
            if isinstance(payload, dict) and "msg" in payload:
                detail = f"{exc.reason}: {payload['msg']}"
        except Exception:  # body is not JSON: keep the HTTP reason
            pass
        raise RestError(exc.code, url, str(detail), retry_after) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RestError(0, url, str(reason)) from exc
    try:
        return orjson.loads(body)
    except Exception:
        head, body = body[:100], b""
        raise RestError(200, url, f"response is not JSON: {head!r}") from None


def _run_in_daemon_thread(fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
    """Run blocking ``fn(*args)`` in a fresh daemon thread; await its result.

    Not ``asyncio.to_thread``: ``asyncio.run`` joins the default executor at
    shutdown, so a REST call hanging until its timeout would delay
    :meth:`Ingester.stop`. REST calls are rare (a few per second at most), a
    thread each is cheap.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def deliver(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def target() -> None:
        try:
            result, exc = fn(*args), None
        except BaseException as e:  # delivered to the awaiting coroutine
            result, exc = None, e
        try:
            loop.call_soon_threadsafe(deliver, result, exc)
        except RuntimeError:  # loop already closed: the ingester stopped
            pass

    threading.Thread(target=target, name="quantlab-rest", daemon=True).start()
    return fut


def _body_cap() -> int:
    """:data:`REST_MAX_BODY_BYTES` as set on the package (``quantlab.ingest``),
    where callers and tests set it; this module's value otherwise."""
    pkg = sys.modules.get("quantlab.ingest")
    return int(getattr(pkg, "REST_MAX_BODY_BYTES", REST_MAX_BODY_BYTES))


class _BackfillPart:
    """The REST-backfill methods of :class:`~quantlab.ingest.Ingester` (loop
    thread; its state lives on the ingester)."""

    # -- backfill
    def _enqueue_gap(self, gap: Gap) -> None:
        """Loop thread: a recorded gap is ready for REST."""
        self._core.gap_recorded(gap)
        if self._gap_wake is not None:
            self._gap_wake.set()

    async def _backfill_worker(self) -> None:
        s = self.settings
        assert self._gap_wake is not None
        core = self._core
        while True:
            while not core.owed:
                self._gap_wake.clear()
                await self._gap_wake.wait()
            gap = core.next_gap()
            if not s.backfill:
                core.backfill_returned([gap])
                continue
            group = [gap]
            if self._market == "usdm" and self._kind == "trade":
                # Holes are frequent and mostly legitimate: wait a little and
                # reconcile all holes of the symbol with one aggTrades query.
                wait = gap.detected + s.hole_settle_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                group = core.group_with(gap)
            try:
                await self._fill(group)
            except FatalFeedError as exc:
                self._fatal(str(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, RestError):  # expected (exhausted retries): one line
                    logger.error("backfill of %s ids %d..%d failed: %s", gap.symbol, gap.first_id,
                                 group[-1].last_id, exc)
                else:
                    logger.exception("backfill of %s failed", group)
                self._set_error(f"backfill of {gap.symbol} ids {gap.first_id}..{group[-1].last_id} "
                                f"failed: {_describe(exc)}; left open for the next start")
                for g in group:
                    core.backfill_returned([g])
                    await self._update_gap(g, 0, 0, 0, f"backfill failed: {_describe(exc)}",
                                           failed=True)
            else:
                core.backfill_returned(group)

    async def _update_gap(self, gap: Gap, filled: int, unfillable: int, holes: int,
                          note: str | None = None, *, failed: bool = False) -> None:
        """Record a gap's outcome: ``filled`` (every id stored or a hole),
        ``partial`` / ``unfillable`` (some / none of the real trades could be
        had), or left ``open`` with a note when REST failed (resumed next start)."""
        if gap.gap_id is None:
            return
        status = gap_status(filled, unfillable, failed=failed)
        gid = gap.gap_id
        try:
            await self._writer_call(lambda st: st.update_gap(
                gid, status=status, filled_count=filled, unfilled_count=unfillable,
                hole_count=holes, note=note))
        except Exception:
            logger.exception("cannot update gap %s", gap)

    async def _stored_ids(self, sym: str, first: int, last: int) -> np.ndarray:
        s = self.settings
        ids = await self._writer_call(lambda st: st.trade_ids(s.market, sym, s.stream,
                                                              start_id=first, end_id=last))
        return np.asarray(ids, dtype=np.int64)

    async def _store_backfill(self, trades: list[Trade]) -> int:
        if not trades:
            return 0
        result = await self._writer_call(lambda st: self._write_trades(st, trades, live=False))
        inserted = int(getattr(result, "inserted", 0))
        self._n_backfilled += inserted
        return inserted

    async def _rest(self, endpoint: str, **params: Any) -> Any:
        """One paced REST GET. Waits for weight; retries 429 after Retry-After,
        418 after a long ban delay, transient errors with backoff; raises
        FatalFeedError on 451 and RestError after ``rest_max_attempts``."""
        s = self.settings
        assert self._bucket is not None
        url = self._endpoints.rest_url(endpoint, **params)
        weight = REST_WEIGHTS[self._market][endpoint]
        policy = s.backoff
        attempt = 0
        while True:
            wait = self._bucket.reserve(weight, time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await _run_in_daemon_thread(_http_get_json, url, s.rest_timeout_s)
            except RestError as exc:
                if not policy.should_retry(exc):
                    raise FatalFeedError(f"Binance refuses REST requests from this location "
                                         f"(HTTP {exc.status} on {url})") from exc
                attempt += 1
                if exc.status in (429, 418):
                    delay = policy.min_delay(exc)
                    self._bucket.block_until(time.monotonic() + delay)
                    self._set_error(f"REST rate limit (HTTP {exc.status}) on {endpoint}: "
                                    f"backfill paused {_fmt_s(delay)}")
                    if attempt > s.rest_max_attempts * 3:
                        raise
                    continue
                if 400 <= exc.status < 500:
                    raise
                if attempt >= s.rest_max_attempts:  # one line saying it gave up, not a traceback
                    raise RestError(exc.status, exc.url, f"{exc.reason}; gave up after {attempt} "
                                    "attempts", exc.retry_after_s) from None
                delay = policy.next_delay(attempt - 1, self._rng)
                self._set_error(f"REST {endpoint} failed: {exc.reason}; retrying in {_fmt_s(delay)}")
                await asyncio.sleep(delay)

    async def _agg_page(self, sym: str, **params: Any) -> list[Trade]:
        rows = await self._rest("aggTrades", symbol=sym, **params)
        recv = _now_ms()
        page = []
        for row in rows or ():
            try:
                page.append(parse_rest_agg_trade(row, self._market, sym, recv))
            except NotATrade as exc:
                logger.warning("bad REST row: %s", exc)
        return page

    async def _fill(self, group: list[Gap]) -> None:
        if self._market == "usdm" and self._kind == "trade":
            await self._reconcile_futures(group)
            return
        for gap in group:
            await self._fill_by_id(gap)

    async def _fill_by_id(self, gap: Gap) -> None:
        """Fetch ids first..last by ``fromId`` pages: spot ``historicalTrades``
        for ``@trade``, ``aggTrades`` for ``@aggTrade`` (both markets)."""
        sym = gap.symbol
        endpoint = "historicalTrades" if self._kind == "trade" else "aggTrades"
        parse_row = parse_rest_trade if self._kind == "trade" else parse_rest_agg_trade
        key = "id" if self._kind == "trade" else "a"
        stored = await self._stored_ids(sym, gap.first_id, gap.last_id)
        stored_set = set(stored.tolist())
        filled = unfillable = 0
        from_id = gap.first_id
        limit_max = REST_MAX_LIMIT[endpoint]
        while from_id <= gap.last_id:
            limit = min(limit_max, gap.last_id - from_id + 1)
            rows = await self._rest(endpoint, symbol=sym, fromId=from_id, limit=limit)
            recv = _now_ms()
            page: list[Trade] = []
            top = from_id - 1
            for row in rows or ():
                try:
                    tid = int(row[key])
                except (KeyError, TypeError, ValueError):
                    continue
                if tid < from_id or tid > gap.last_id:
                    continue
                top = max(top, tid)
                if tid in stored_set:
                    continue
                try:
                    page.append(parse_row(row, self._market, sym, recv))
                except NotATrade as exc:
                    logger.warning("bad REST row: %s", exc)
            if top < from_id:  # REST has nothing from here on (too old, or not yet)
                unfillable += gap.last_id - from_id + 1 - int(np.count_nonzero(stored >= from_id))
                break
            filled += await self._store_backfill(page)
            from_id = top + 1
        # ids below the first returned row of a page were skipped by REST
        got = await self._stored_ids(sym, gap.first_id, gap.last_id)
        missing = gap.size - int(got.size)
        unfillable = max(unfillable, missing)
        self._n_unfillable += unfillable
        await self._update_gap(gap, filled, unfillable, 0,
                               None if not unfillable else "REST did not return these ids")
        logger.info("gap %s %d..%d: %d backfilled, %d unfillable", sym, gap.first_id, gap.last_id,
                    filled, unfillable)

    async def _reconcile_futures(self, group: list[Gap]) -> None:
        """USD-M raw ``@trade``: decide each missing id with aggTrades of the
        gaps' time range (see :func:`reconcile_raw_futures`)."""
        sym = group[0].symbol
        first = min(g.first_id for g in group)
        last = max(g.last_id for g in group)
        befores = [g.before_ms for g in group if g.before_ms is not None]
        afters = [g.after_ms for g in group if g.after_ms is not None]
        stored = await self._stored_ids(sym, first, last)
        missing = np.setdiff1d(np.concatenate(
            [np.arange(g.first_id, g.last_id + 1, dtype=np.int64) for g in group]), stored)
        aggs: list[Trade] = []
        complete = False
        if missing.size and befores and afters:
            start_ms, end_ms = min(befores), max(afters)
            # Every market fill with an id in the gap happened in [start_ms, end_ms]
            # (ids grow with time). Binance: startTime..endTime must span < 1 h;
            # the rest is paged by fromId, which has no time bound.
            window_end = min(end_ms, start_ms + 3_599_999)
            page = await self._agg_page(sym, startTime=start_ms, endTime=window_end, limit=1000)
            aggs.extend(page)
            for _ in range(1000):  # bounded: a million aggregates
                if not page or page[-1].time_ms > end_ms or (page[-1].last_trade_id or 0) >= last:
                    break
                if len(page) < 1000 and window_end >= end_ms:
                    break
                page = await self._agg_page(sym, fromId=page[-1].trade_id + 1, limit=1000)
                aggs.extend(page)
                window_end = end_ms
            # No aggregate at all: either nothing but non-market prints happened
            # (possible for short gaps) or REST no longer has the range (USD-M
            # keeps recent data only, reportedly 48 h). Decide by age.
            complete = bool(aggs) or _now_ms() - end_ms < 24 * 3600 * 1000
        recon = reconcile_raw_futures(missing, aggs, complete=complete, symbol=sym,
                                      recv_ms=_now_ms())
        filled = await self._store_backfill(list(recon.trades))
        self._n_holes += recon.holes
        self._n_unfillable += recon.unfillable
        # Attribute the outcome to each gap of the group (for the gaps table).
        rebuilt = np.array(sorted(t.trade_id for t in recon.trades), dtype=np.int64)

        counts = attribute(group, rebuilt, recon.unfillable_ids, recon.hole_ids)
        for g, (n_rebuilt, n_unfillable, n_holes) in zip(group, counts):
            await self._update_gap(g, n_rebuilt, n_unfillable, n_holes,
                                   "unfillable ids lie in multi-fill aggregates"
                                   if n_unfillable else None)
        logger.info("futures %s ids %d..%d: %d missing, %d rebuilt, %d holes, %d unfillable",
                    sym, first, last, missing.size, filled, recon.holes, recon.unfillable)

