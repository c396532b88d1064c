"""WebSocket captures: ``<local_receive_time_ns> <raw frame>`` lines, and the one
parser of their trade frames (:func:`capture_trade`, :func:`capture_market`), which
:mod:`quantlab.replay` uses too.
"""
from __future__ import annotations

import logging
import os
import zipfile
import zlib
from typing import Iterator, Sequence

import pandas as pd

import orjson  # parses a JSON line ~2x faster than json (see quantlab.binance)

from quantlab import schema
from quantlab.binance import parse_trade
from quantlab.errors import DataFileError, NotATrade
from quantlab.files.sniff import _check_market_arg, _name_info
from quantlab.files.source import PathLike, _Source, _as_source
from quantlab.files.tables import _check_ticks, _filter_symbol, _finish_ticks, _shown

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# WebSocket captures
# --------------------------------------------------------------------------------------
_CHUNK = 1 << 23  # 8 MiB of decompressed text per read: lines are split in C, not by readline()


def _capture_lines(src: _Source) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, recv ns, raw JSON bytes) for every non-blank line."""
    lineno = 0
    rest = b""
    with src.open() as fh:
        try:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    lines = [rest] if rest else []
                else:
                    buf = rest + chunk
                    lines = buf.split(b"\n")
                    rest = lines.pop()  # maybe incomplete: completed by the next chunk
                for line in lines:
                    lineno += 1
                    ns_b, sep, raw = line.partition(b" ")
                    if not sep:
                        if not line.strip():
                            continue
                        ns_b = b"?"
                    try:
                        ns = int(ns_b)
                    except ValueError:
                        raise DataFileError(src.name, "expected '<local_receive_time_ns> <json>', got "
                                                      f"{line[:60].decode('utf-8', 'replace')!r}", line=lineno,
                                            column="local_receive_time_ns") from None
                    yield lineno, ns, raw.rstrip(b"\r")
                if not chunk:
                    return
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            raise DataFileError(src.name, f"archive is damaged or truncated after this line: {exc}",
                                line=lineno) from exc


def _iter_capture_source(src: _Source) -> Iterator[tuple[int, str]]:
    for _, ns, raw in _capture_lines(src):
        yield ns, raw.decode("utf-8", "replace")


def iter_capture(path: PathLike) -> Iterator[tuple[int, str]]:
    """Lines of a WebSocket capture, as recorded.

    The file (gzip, zip or plain) holds one message per line::

        1723161254087896568 {"stream":"btcusdt@trade","data":{"e":"trade",...}}

    i.e. the local receive time in **nanoseconds** since the epoch (UTC), one space, and
    the raw frame text. Every non-blank line is yielded, including REST depth snapshots
    (``{"lastUpdateId":...}``) that some captures hold near the start: skipping them is
    the caller's job. Reading is lazy (one line at a time).

    Parameters
    ----------
    path : the capture file, e.g. ``ws-capture-2024-08-08/spot_btcusdt_20240808.gz``.

    Yields
    ------
    (recv_ns, raw) : int nanoseconds, str JSON text (not parsed).

    Raises
    ------
    DataFileError
        At a line without an integer time prefix (``column='local_receive_time_ns'``),
        or when the archive ends early (after yielding every complete line).
    """
    return _iter_capture_source(_as_source(path))


def capture_trade(raw: bytes | str) -> dict | None:
    """The ``@trade``/``@aggTrade`` payload of one capture frame, else None.

    ``raw`` is the JSON text of a line of :func:`iter_capture`: a combined-stream
    frame ``{"stream":"btcusdt@trade","data":{...}}`` or a raw-stream payload.
    The wrapper is removed; depth, bookTicker and REST-snapshot frames give None.
    The one parser of capture trade frames (:mod:`quantlab.files` loaders and
    :mod:`quantlab.replay` both read captures through it).

    Raises
    ------
    ValueError
        Invalid JSON (``orjson.JSONDecodeError``); the caller decides whether a
        cut line is fatal.

    >>> capture_trade('{"stream":"btcusdt@trade","data":{"e":"trade","t":1,"M":true}}')
    {'e': 'trade', 't': 1, 'M': True}
    >>> capture_trade('{"lastUpdateId":7,"bids":[],"asks":[]}') is None
    True
    """
    obj = orjson.loads(raw)
    data = obj.get("data", obj) if isinstance(obj, dict) else None
    if not isinstance(data, dict) or data.get("e") not in schema.KINDS:
        return None
    return data


def capture_market(data: dict) -> str:
    """Market of a ``@trade``/``@aggTrade`` payload: ``"spot"`` or ``"usdm"``.

    Spot payloads carry ``M`` (``@trade`` and ``@aggTrade``); USD-M ``@trade``
    carries ``X`` and USD-M ``@aggTrade`` neither (BINANCE.md "Futures @trade /
    @aggTrade"). So ``M`` decides: present is spot, absent is USD-M. Checked on
    every ``@trade`` of the real captures in ``../shared/data/ws-capture-*``
    (spot: all carry ``M``, none ``X``; USD-M: all carry ``X``, none ``M``);
    ``tests/test_io.py`` asserts it. The one rule: the loaders here and
    :mod:`quantlab.replay` use it.

    >>> capture_market({"e": "trade", "M": True}), capture_market({"e": "trade", "X": "MARKET"})
    ('spot', 'usdm')
    >>> capture_market({"e": "aggTrade", "a": 1})
    'usdm'
    """
    return "spot" if "M" in data else "usdm"


def _capture_ticks(src: _Source, market: str | None, symbol: str | None,
                   with_note: bool = False) -> tuple:
    market = _check_market_arg(market)
    _, named_market = _name_info(src)
    want = market or named_market
    trades = []
    linenos: list[int] = []
    seen_market: str | None = None
    pending: tuple[int, str] | None = None  # an unparsable line; fatal unless it is the last one
    for lineno, ns, raw in _capture_lines(src):
        if pending is not None:
            raise DataFileError(src.name, f"not valid JSON: {pending[1]}; the capture is damaged at this "
                                          "line: remove it (or keep the lines before it)", line=pending[0])
        if not raw.rstrip().endswith((b"}", b"]")):
            # A frame is one JSON object (or array): a line that does not end like one was cut
            # short. Checked on every line, not only trades: a cut depth line is lost data too.
            pending = (lineno, f"the line is cut short (it ends in {raw[-20:].decode('utf-8', 'replace')!r})")
            continue
        # Cheap prefilter: depth and bookTicker lines (most of a capture) are never parsed.
        if b'"e":"trade"' not in raw and b'"e":"aggTrade"' not in raw:
            continue
        try:
            data = capture_trade(raw)
        except orjson.JSONDecodeError as exc:
            pending = (lineno, str(exc))
            continue
        if data is None:
            continue
        m = capture_market(data)
        if want is not None and data.get("e") == "trade" and ("X" in data or "M" in data) and m != want:
            raise DataFileError(src.name, f"a trade here is {m} (it {'has M' if m == 'spot' else 'has X'}), "
                                          f"but market={want!r}; drop market= or check the file", line=lineno)
        seen_market = seen_market or m
        try:
            trades.append(parse_trade(data, want or m, recv_ms=ns // 1_000_000))
        except NotATrade as exc:
            raise DataFileError(src.name, f"bad trade message: {exc.reason}", line=lineno) from exc
        linenos.append(lineno)
    if pending is not None:  # a cut last line is what a killed recorder leaves: warn, keep the rest
        logger.warning("%s: skipped the unparsable last line %d (%s)", src.name, pending[0], pending[1])
    try:
        frame = schema.trades_to_frame(trades)
    except (OverflowError, ValueError, TypeError):  # an id or time beyond int64: locate it
        for i, tr in enumerate(trades):
            for col, value in (("t", tr.trade_id), ("T", tr.time_ms), ("local_receive_time_ns", tr.recv_ms),
                               ("f", tr.first_trade_id or 0), ("l", tr.last_trade_id or 0)):
                if not -2**63 <= int(value) < 2**63:
                    raise DataFileError(src.name, f"{_shown(value)} does not fit a 64-bit integer; the "
                                                  "line is damaged", line=linenos[i], column=col) from None
        raise
    frame, note = _check_ticks(src, frame, lambda i: linenos[i], ("p", "q", "T"), symbol_column="s")
    if symbol is not None:
        frame = _filter_symbol(src, frame, symbol)
    mkt = want or seen_market
    return (_finish_ticks(frame), mkt, note) if with_note else (_finish_ticks(frame), mkt)


def load_capture_trades(path: PathLike | Sequence[PathLike], *, market: str | None = None,
                        symbol: str | None = None) -> pd.DataFrame:
    """Trades of a WebSocket capture (see :func:`iter_capture`) as a tick frame.

    Each ``@trade``/``@aggTrade`` message is parsed by :func:`quantlab.binance.parse_trade`,
    the same function the live ingester uses, so a replayed capture gives the ticks the
    live feed gave. Depth, bookTicker and snapshot lines are skipped.

    Parameters
    ----------
    path : one capture, or several (e.g. ``spot_btcusdt_20240808.gz`` and ``..._20240809.gz``);
        several are concatenated, sorted and de-duplicated.
    market : ``"spot"`` or ``"usdm"``. Default: from the file name prefix ``spot_`` /
        ``usdm_``, else from the messages (spot trades carry ``M``, USD-M ``X``).
    symbol : keep only this symbol (:class:`~quantlab.errors.UnknownSymbol` if absent).

    Returns
    -------
    DataFrame
        Tick frame (:data:`quantlab.schema.TICK_COLUMNS`), sorted by ``time_ms`` then
        ``trade_id``; ``recv_ms`` is the capture's local receive time in ms (floored
        from ns); USD-M ``trade_type`` is the message's ``X``.

    Raises
    ------
    DataFileError
        Bad line prefix, invalid JSON (other than a cut last line, which is skipped with a
        warning), a trade message missing a field, or a market that contradicts ``market``.
    """
    paths = [path] if isinstance(path, (str, os.PathLike, _Source)) else list(path)
    frames = [_capture_ticks(_as_source(p), market, symbol)[0] for p in paths]
    return _finish_ticks(pd.concat(frames, ignore_index=True)) if len(frames) > 1 else frames[0]
