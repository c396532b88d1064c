"""What the server plays: :class:`SyntheticSource` (generated trades) and
:class:`RecordedSource` (captures and trade files on their recorded schedule), the
:class:`Emission` they hand the server, and :func:`make_source` / :func:`make_sources`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from quantlab.config import require_choice
from quantlab.errors import ConfigError, DataFileError
from quantlab.schema import MARKETS
from quantlab.schema import now_ms as _now_ms
from quantlab.synthetic import (
    AggBatch,
    SymbolSpec,
    SyntheticMarket,
    TradeBatch,
    aggregate_trades,
    default_spec,
    encode_trades,
)
from quantlab.replay.protocol import _ws_text_frames
from quantlab.replay.recordings import (
    Extras,
    _recorded_spec,
    _shift_payload,
    load_capture,
    load_capture_markets,
    load_trade_files,
)


# Simulated trades/s driving the price dynamics when the synthetic source runs as
# fast as possible (its timestamps then come from the wall clock).
_ASAP_SIM_RATE = 1000.0


class Emission(NamedTuple):
    """What a source's ``poll(now_ms)`` returns.

    Attributes
    ----------
    batch : trades due now (``None`` or empty when none).
    aggs : the aggregates those trades complete (``None`` when none).
    wait_s : seconds until the next trade is due (0: poll again at once); ``None``
        once the source is exhausted.
    encoded : optional ``(symbol index, kind, combined) -> (frames, rows) | None`` giving
        WebSocket frames the source encoded ahead of time for this batch (``rows`` are
        their row positions in ``batch``); ``None`` means "encode them now".
    extras : other recorded streams due now: ``(symbol index, kind) -> (data payloads,
        positions among the rows of batch)`` (``bookTicker``, ``depth``), or ``None``.
    """

    batch: TradeBatch | None
    aggs: AggBatch | None
    wait_s: float | None
    encoded: Callable[[int, str, bool], tuple[list[bytes], np.ndarray] | None] | None = None
    extras: dict[tuple[int, str], tuple[list[bytes], np.ndarray]] | None = None


# =============================================================================
# Sources
# =============================================================================
class SyntheticSource:
    """Source (a): :class:`~quantlab.synthetic.SyntheticMarket`, live.

    Parameters
    ----------
    symbols : two or more symbols (the first is the random-walk leg).
    market : ``"spot"`` or ``"usdm"``.
    rate : trades per second over all symbols; ``0`` or ``None`` means as fast as
        possible (then the price dynamics run on a nominal 1000 trades/s clock and
        every batch is stamped with the wall clock; trades are generated only while at
        least one WebSocket connection is open).
    seed : generator seed.
    prefill : trades already in the tape (REST) when the server starts, with
        timestamps in the past; streaming continues with the next ids.
    batch_size : trades per step in as-fast-as-possible mode.
    **model : further :class:`~quantlab.synthetic.SyntheticMarket` parameters
        (``beta``, ``spread_std``, ``non_market_fraction``, ``hole_fraction``, ...).
    """

    def __init__(self, symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"), *, market: str = "spot",
                 rate: float | None = 50.0, seed: int = 0, prefill: int = 0, batch_size: int = 2000,
                 **model: Any):
        if rate is not None and not rate >= 0:
            raise ConfigError("rate", rate, "trades per second >= 0 (0 = as fast as possible)")
        if prefill < 0:
            raise ConfigError("prefill", prefill, "a number of trades >= 0")
        if batch_size < 1:
            raise ConfigError("batch_size", batch_size, "a number of trades >= 1")
        self.paced = bool(rate)
        self.gen = SyntheticMarket(symbols, market=market, seed=seed,
                                   rate=float(rate) if rate else _ASAP_SIM_RATE, **model)
        self.instruments = self.gen.instruments
        self.specs = self.gen.specs
        self.prefill = int(prefill)
        self.batch_size = int(batch_size)

    def start(self, now_ms: int) -> tuple[TradeBatch, AggBatch] | None:
        """Set the clock origin; return the pre-filled history, if any."""
        if not self.prefill:
            self.gen.start_ms = now_ms
            return None
        # Back-date the history so that it ends before now (5 sigma of the Poisson
        # duration), then move the clock on to now: no future timestamps in the tape.
        span_s = (self.prefill + 5 * math.sqrt(self.prefill)) / self.gen.rate + 1.0
        self.gen.start_ms = now_ms - int(span_s * 1000)
        batch = self.gen.generate(self.prefill)
        aggs = self.gen.aggregate(batch)
        self.gen.advance_clock_to(now_ms)
        return batch, aggs

    def begin(self, now_ms: int) -> None:
        """A synthetic market is live: its clock runs from :meth:`start`, subscribed or not."""

    def streams(self) -> set[tuple[int, str]]:
        """No recorded ``bookTicker``/``depth`` streams."""
        return set()

    def poll(self, now_ms: int) -> Emission:
        """Trades due by ``now_ms``, their aggregates, and seconds until the next is due."""
        if not self.paced:
            batch = self.gen.generate(self.batch_size, stamp_ms=now_ms)
            return Emission(batch, self.gen.aggregate(batch), 0.0)
        batch = self.gen.generate_until(now_ms, event_ms=now_ms)
        aggs = self.gen.aggregate(batch) if len(batch) else None
        wait_s = (self.gen.next_time_ms - now_ms) / 1000.0
        return Emission(batch, aggs, min(0.25, max(0.0005, wait_s)))


class RecordedSource:
    """Sources (b) and (c): recorded trades replayed on their own schedule.

    Build it with :meth:`from_capture` or :meth:`from_trade_files`.

    Parameters
    ----------
    batch : every trade, in replay order.
    schedule_ns : when each trade was seen (ns, non-decreasing): the capture's local
        receive time, or the trade time for archive files.
    speed : replay speed factor (2 = twice as fast); ``0`` = as fast as possible.
    prefill : leading trades put in the tape (REST) before streaming starts.
    rebase_time : shift ``T`` and ``E`` so that the tape plays as if recorded now: the
        prefilled history ends when the server starts, and every streamed trade carries
        about the wall time at which it is sent (the first one the time the clock
        starts, see :meth:`begin`); default: the recorded times.
    specs : per-symbol :class:`~quantlab.synthetic.SymbolSpec` for exchangeInfo.
    batch_size : trades per step in as-fast-as-possible mode.
    extras : recorded ``bookTicker``/``depth`` messages to replay on their own
        schedule alongside the trades (:func:`load_capture` with ``extras=True``).
    preencode : frame every ``@trade`` message for combined streams now, so that
        streaming them is only slicing and joining bytes (benchmarks: the server then
        costs almost no CPU per message). Takes about 4 s per million trades and
        ~200 bytes per trade; other streams are still encoded as they are sent.
        Incompatible with ``rebase_time`` (the frames carry the times).
    """

    def __init__(self, batch: TradeBatch, schedule_ns: np.ndarray, *, speed: float = 1.0,
                 prefill: int = 0, rebase_time: bool = False, specs: Sequence[SymbolSpec] | None = None,
                 batch_size: int = 2000, preencode: bool = False, extras: Extras | None = None):
        if not speed >= 0:
            raise ConfigError("speed", speed, "a factor >= 0 (0 = as fast as possible)")
        if len(batch) == 0:
            raise ConfigError("source", "no trades", "at least one trade to replay")
        if not 0 <= prefill <= len(batch):
            raise ConfigError("prefill", prefill, f"0..{len(batch)} trades")
        self.instruments = batch.instruments
        self.specs = tuple(specs) if specs else tuple(
            _recorded_spec(s, batch.instruments) for s in batch.instruments.symbols)
        self.paced = bool(speed)
        self.speed = float(speed)
        self.prefill = int(prefill)
        self.rebase_time = bool(rebase_time)
        self.batch_size = int(batch_size)
        self._all = batch
        self._sched = np.asarray(schedule_ns, dtype=np.int64)
        first_agg = [default_spec(s, batch.market).first_agg_id for s in batch.instruments.symbols]
        self._aggs, _ = aggregate_trades(batch, first_agg)  # once: agg ids do not depend on pacing
        self._cursor = 0
        self._origin_wall_ms = 0
        self._origin_ns = 0
        self._start_ms: int | None = None
        self._begun = False
        self._shift = 0  # ms added to recorded times (rebase_time)
        self.extras = extras if extras is not None and len(extras.ns) else None
        self._xcursor = 0
        if preencode and rebase_time:
            raise ConfigError("preencode", preencode, "False when rebase_time is True")
        # (symbol index) -> (rows of that symbol in the whole batch, their combined @trade frames)
        self._preencoded: dict[int, tuple[np.ndarray, list[bytes]]] = {}
        if preencode:
            for s in range(len(self.instruments.symbols)):
                rows = np.flatnonzero(batch.sym == s)
                self._preencoded[s] = (rows, _ws_text_frames(encode_trades(batch, rows, combined=True)))

    def __len__(self) -> int:
        return len(self._all)

    def _encoded_between(self, a: int, b: int) -> Callable[[int, str, bool], tuple[list[bytes], np.ndarray] | None]:
        """Lookup of the pre-encoded frames of rows ``a..b-1`` (see :class:`Emission`)."""
        def lookup(s: int, kind: str, combined: bool) -> tuple[list[bytes], np.ndarray] | None:
            if kind != "trade" or not combined or s not in self._preencoded:
                return None
            rows, frames = self._preencoded[s]
            lo, hi = np.searchsorted(rows, [a, b])
            return frames[lo:hi], rows[lo:hi] - a
        return lookup

    def _slice(self, a: int, b: int) -> tuple[TradeBatch, AggBatch]:
        lo, hi = np.searchsorted(self._aggs.last_row, [a, b])
        aggs = self._aggs.take(slice(int(lo), int(hi)))
        aggs = dataclasses.replace(aggs, last_row=aggs.last_row - a)
        return self._all.take(slice(a, b)), aggs

    def streams(self) -> set[tuple[int, str]]:
        """``(symbol index, kind)`` of the recorded non-trade streams this source replays."""
        return self.extras.streams() if self.extras is not None else set()

    def _shift_times(self, shift: int, from_row: int) -> None:
        if not shift:
            return
        t, e = self._all.time_ms.copy(), self._all.event_ms.copy()  # new arrays: the tape keeps its own
        t[from_row:] += shift
        e[from_row:] += shift
        self._all = dataclasses.replace(self._all, time_ms=t, event_ms=e)
        later = self._aggs.last_row >= from_row
        self._aggs = dataclasses.replace(self._aggs, time_ms=self._aggs.time_ms + np.where(later, shift, 0),
                                         event_ms=self._aggs.event_ms + np.where(later, shift, 0))
        self._shift += shift

    def start(self, now_ms: int) -> tuple[TradeBatch, AggBatch] | None:
        """Server start: return the prefilled history (with ``rebase_time``, shifted to
        end at ``now_ms``). The schedule starts at :meth:`begin`."""
        n = len(self._all)
        self._start_ms = now_ms
        if self.rebase_time:
            self._shift_times(now_ms - int(self._all.time_ms[min(self.prefill, n - 1)]), 0)
        self._cursor = self.prefill
        return self._slice(0, self.prefill) if self.prefill else None

    def begin(self, now_ms: int) -> None:
        """Start the clock: trade ``prefill`` is due now, the others at their recorded
        offsets divided by ``speed``. The server calls it at the first subscription (so
        the first client gets the whole tape) or, live-like, when it starts. With
        ``rebase_time`` the trades not yet sent move on by the wait since :meth:`start`
        (a quiet spell between the history and the stream, as on a live market)."""
        n = len(self._all)
        if self._begun:
            return
        self._begun = True
        if self._start_ms is None:
            self.start(now_ms)
        if self.rebase_time:
            self._shift_times(now_ms - self._start_ms, self._cursor)
        self._origin_wall_ms = now_ms
        self._origin_ns = int(self._sched[min(self.prefill, n - 1)])
        if self.extras is not None:
            if not self.prefill:  # the whole recording, from its first message
                self._origin_ns = min(self._origin_ns, int(self.extras.ns[0]))
            # with a prefill, messages recorded before the first streamed trade are history
            self._xcursor = int(np.searchsorted(self.extras.ns, self._origin_ns, side="left"))

    def _extras_until(self, a: int, b: int, limit_ns: int | None) -> dict[tuple[int, str], tuple[list[bytes], np.ndarray]] | None:
        """Extra messages due up to ``limit_ns`` (``None``: all left), keyed by stream, with
        their positions among the trade rows ``a..b-1`` of the same emission."""
        x = self.extras
        if x is None or self._xcursor >= len(x.ns):
            return None
        lo = self._xcursor
        hi = len(x.ns) if limit_ns is None else int(np.searchsorted(x.ns, limit_ns, side="right"))
        if hi <= lo:
            return None
        self._xcursor = hi
        pos = np.searchsorted(self._sched[a:b], x.ns[lo:hi], side="right") - 0.5
        out: dict[tuple[int, str], tuple[list[bytes], list[float]]] = {}
        shift = self._shift
        for i in range(lo, hi):
            key = (int(x.sym[i]), x.kind[i])
            data = x.data[i] if not shift else _shift_payload(x.data[i], shift)
            frames, where = out.setdefault(key, ([], []))
            frames.append(data)
            where.append(float(pos[i - lo]))
        return {k: (f, np.asarray(w)) for k, (f, w) in out.items()}

    def poll(self, now_ms: int) -> Emission:
        n = len(self._all)
        a = self._cursor
        if a >= n:
            extras = self._extras_until(a, a, None)
            return Emission(None, None, None, extras=extras)
        if not self.paced:
            b = min(n, a + self.batch_size)
            wait_s = 0.0
            limit_ns = None if b >= n else int(self._sched[b]) - 1
        else:
            elapsed_ns = (now_ms - self._origin_wall_ms) * 1_000_000 * self.speed
            limit_ns = self._origin_ns + int(elapsed_ns)
            b = int(np.searchsorted(self._sched, limit_ns, side="right"))
            b = max(a, b)
            if b >= n:
                wait_s = 0.0
            else:
                due_ms = self._origin_wall_ms + (self._sched[b] - self._origin_ns) / 1e6 / self.speed
                if self.extras is not None and self._xcursor < len(self.extras.ns):
                    due_ms = min(due_ms, self._origin_wall_ms
                                 + (self.extras.ns[self._xcursor] - self._origin_ns) / 1e6 / self.speed)
                wait_s = min(0.25, max(0.0005, (due_ms - now_ms) / 1000.0))
        self._cursor = b
        extras = self._extras_until(a, b, limit_ns)
        if b == a:
            return Emission(None, None, wait_s, extras=extras)
        batch, aggs = self._slice(a, b)
        return Emission(batch, aggs, wait_s, self._encoded_between(a, b) if self._preencoded else None, extras)

    # --- constructors ------------------------------------------------------------
    @classmethod
    def from_capture(cls, paths: Sequence[str | Path], *, symbols: Sequence[str] | None = None,
                     market: str | None = None, **kwargs: Any) -> "RecordedSource":
        """Replay the ``@trade``, ``@bookTicker`` and ``@depth...`` messages of WebSocket captures.

        The files hold ``<local_receive_time_ns> <json>`` lines (gzip), mixed streams
        (``data/README.md``): ``@trade`` lines become the tape, ``bookTicker``/``depth``
        lines are replayed as recorded (exact bytes; times shifted with ``rebase_time``)
        on the streams of the same names, the REST depth snapshot is ignored. ``market``
        picks the spot or the USD-M messages of captures that hold both. Several files (days, symbols) are merged by
        receive time and de-duplicated by id. Trades are re-encoded from exact integers
        in the decimals the capture used, so the frames are byte-identical to the
        recorded payloads. Paced by the recorded receive times divided by ``speed``.
        """
        batch, sched, extras = load_capture(paths, symbols=symbols, market=market, extras=True)
        return cls(batch, sched, extras=extras, **kwargs)

    @classmethod
    def from_trade_files(cls, paths: Sequence[str | Path], *, symbols: Sequence[str] | None = None,
                         market: str | None = None, keep_market: str | None = None,
                         **kwargs: Any) -> "RecordedSource":
        """Replay data.binance.vision ``trades`` files, read by :func:`quantlab.files.load_trades`,
        paced by trade time ``T`` divided by ``speed`` (``E = T``)."""
        batch = load_trade_files(paths, symbols=symbols, market=market, keep_market=keep_market)
        return cls(batch, batch.time_ms * 1_000_000, **kwargs)

    @classmethod
    def from_synthetic(cls, n: int, *, symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"), market: str = "spot",
                       seed: int = 0, rate: float = 1000.0, start_ms: int | None = None,
                       model: Mapping[str, Any] | None = None, **kwargs: Any) -> "RecordedSource":
        """``n`` synthetic trades generated now and replayed like a recording.

        The benchmark source: ``RecordedSource.from_synthetic(1_000_000, speed=0,
        preencode=True)`` streams pre-encoded frames as fast as the client reads.
        Trade times are simulated at ``rate`` trades/s from ``start_ms`` (default: now
        minus the simulated span, so the last trade is about now); ``speed`` replays
        them at ``speed`` times that pace (0 = as fast as possible).
        """
        gen = SyntheticMarket(symbols, market=market, seed=seed, rate=rate, **dict(model or {}))
        if start_ms is None:
            start_ms = _now_ms() - int(n / rate * 1000)
        gen.start_ms = int(start_ms)
        batch = gen.generate(n)
        return cls(batch, batch.time_ms * 1_000_000, specs=gen.specs, **kwargs)


def make_source(kind: str = "synthetic", paths: Sequence[str | Path] = (), *,
                symbols: Sequence[str] | None = None, market: str = "spot", rate: float | None = 50.0,
                speed: float = 1.0, seed: int = 0, prefill: int = 0, rebase_time: bool = False):
    """A source by name: ``"synthetic"``, ``"capture"`` or ``"trades"``.

    For recorded sources the market comes from the data and ``market`` is ignored (the
    CLI always passes its default, which must not contradict a USD-M file).
    """
    require_choice("source_kind", kind, ("synthetic", "capture", "trades"))
    if kind == "synthetic":
        return SyntheticSource(tuple(symbols or ("BTCUSDT", "ETHUSDT")), market=market, rate=rate,
                               seed=seed, prefill=prefill)
    if not paths:
        raise ConfigError("paths", paths, f"at least one {kind} file")
    if kind == "capture":
        return RecordedSource.from_capture(paths, symbols=symbols, speed=speed, prefill=prefill,
                                           rebase_time=rebase_time)
    return RecordedSource.from_trade_files(paths, symbols=symbols, market=None, speed=speed,
                                           prefill=prefill, rebase_time=rebase_time)


_MARKET_NAMES = {"spot": "spot", "usdm": "USD-M"}


def make_sources(kind: str = "synthetic", paths: Sequence[str | Path] = (), *,
                 symbols: Sequence[str] | None = None, market: str = "spot", rate: float | None = 50.0,
                 speed: float = 1.0, seed: int = 0, prefill: int = 0, rebase_time: bool = False) -> list:
    """The sources of one server: ``[make_source(...)]``, or for ``market="both"`` a
    spot and a USD-M source (synthetic: the same symbols, seeds ``seed`` and
    ``seed + 1``; recorded: the spot and the USD-M trades of the files, both required).
    """
    require_choice("market", market, (*MARKETS, "both"))
    if market != "both":
        return [make_source(kind, paths, symbols=symbols, market=market, rate=rate, speed=speed, seed=seed,
                            prefill=prefill, rebase_time=rebase_time)]
    require_choice("source_kind", kind, ("synthetic", "capture", "trades"))
    if kind == "synthetic":
        syms = tuple(symbols or ("BTCUSDT", "ETHUSDT"))
        return [SyntheticSource(syms, market="spot", rate=rate, seed=seed, prefill=prefill),
                SyntheticSource(syms, market="usdm", rate=rate, seed=seed + 1, prefill=prefill)]
    if not paths:
        raise ConfigError("paths", paths, f"at least one {kind} file")
    options = dict(speed=speed, prefill=prefill, rebase_time=rebase_time)
    if kind == "capture":
        by_market = load_capture_markets(paths, symbols=symbols)
        missing = [m for m in MARKETS if m not in by_market]
        if missing:
            raise DataFileError(", ".join(str(p) for p in paths),
                                f"holds no {' or '.join(_MARKET_NAMES[m] for m in missing)} trades; --market both "
                                "needs captures of both markets (or pick --market " + next(iter(by_market)) + ")")
        return [RecordedSource(b, sched, extras=x, **options) for b, sched, x in
                (by_market["spot"], by_market["usdm"])]
    return [RecordedSource.from_trade_files(paths, symbols=symbols, keep_market=m, **options)
            for m in MARKETS]
