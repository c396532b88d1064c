"""Files as sources: the formats and column layouts of data.binance.vision, the
plausibility limits every loader checks, the :class:`LoadedFile` result, and
:class:`_Source` (a path or bytes in memory, zip/gzip decompressed transparently).
"""
from __future__ import annotations

import gzip
import io as _io
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import BinaryIO, Union

import pandas as pd

from quantlab.errors import DataFileError


PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("trades", "aggTrades", "klines", "ohlc", "ndjson", "capture")
TICK_FORMATS = ("trades", "aggTrades", "ndjson", "capture")
BAR_FORMATS = ("klines", "ohlc")

# Column layouts of data.binance.vision (BINANCE.md "Historical files"). USD-M files are
# the spot layout without the trailing ``is_best_match``.
TRADES_SPOT_COLUMNS = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match")
TRADES_USDM_COLUMNS = TRADES_SPOT_COLUMNS[:6]
AGG_SPOT_COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                    "transact_time", "is_buyer_maker", "is_best_match")
AGG_USDM_COLUMNS = AGG_SPOT_COLUMNS[:7]
KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time",
                 "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore")
OHLC_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
# Header names accepted for the first column of a user OHLC file.
_OHLC_TIME_NAMES = ("timestamp", "time", "date", "datetime", "open_time")

_MS_US_LIMIT = 10**14   # >= this: microseconds (1e14 ms is the year 5138)
_US_NS_LIMIT = 10**17   # >= this: nanoseconds
_S_MS_LIMIT = 10**11    # user files only: < this is seconds (1e11 s is the year 5138)

_DATA_SUFFIXES = (".csv", ".gz", ".zip", ".ndjson", ".jsonl", ".json", ".txt")
_SNIFF_BYTES = 1 << 13  # enough for any first CSV/NDJSON line and a capture prefix
_MAX_LINE_CHARS = 1 << 16  # a CSV row of a data file longer than this is damage, not data
# Plausible values, checked on every loaded row (issue 13: 1e308 merged into a real bar,
# seconds stored as 1970). Trade times before 2010 predate every crypto exchange; no file
# holds times after 2100. A price or quantity of 1e15 or more is damage (BTC in IDR is
# ~1e9; price * qty then stays far from float overflow in the bar sums).
_MIN_TRADE_MS = 1_262_304_000_000  # 2010-01-01T00:00Z
_MAX_FILE_MS = 4_102_444_800_000   # 2100-01-01T00:00Z
_MAX_VALUE = 1e15
#: Binance symbols: ASCII upper-case letters and digits (``BTCUSDT``, ``1000SHIBUSDT``).
SYMBOL_RE = re.compile(r"[A-Z0-9]{1,32}")


# --------------------------------------------------------------------------------------
# Result type
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LoadedFile:
    """One loaded file (or, from :func:`load_files`, one symbol's merged files).

    Attributes
    ----------
    format : one of ``trades``, ``aggTrades``, ``klines``, ``ohlc``, ``ndjson``,
        ``capture``. From :func:`load_files`, formats that were merged are joined
        with ``+`` in sorted order (e.g. ``"capture+trades"``).
    symbol : upper-case symbol, or ``None`` when the frame holds several symbols
        (see ``symbols``) or, for bars, when nothing names it.
    market : ``"spot"``, ``"usdm"`` or ``None`` when unknown (bars only).
    frame : a tick frame (``is_bars`` false) or a bar frame (``is_bars`` true), see
        :mod:`quantlab.schema`.
    is_bars : true for ``klines`` and ``ohlc``.
    symbols : every symbol in the frame, sorted.
    sources : the file names that were read.
    notes : what was noticed but not refused, one sentence each, e.g.
        ``"2 rows with price or quantity <= 0 (2 skipped; the first at line 7)"``.
    """

    format: str
    symbol: str | None
    market: str | None
    frame: pd.DataFrame
    is_bars: bool
    symbols: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:
        return (f"LoadedFile(format={self.format!r}, symbol={self.symbol!r}, market={self.market!r}, "
                f"rows={len(self.frame)}, is_bars={self.is_bars}, sources={len(self.sources)})")


# --------------------------------------------------------------------------------------
# Sources: a path or bytes in memory, with transparent zip/gzip decompression
# --------------------------------------------------------------------------------------
class _Source:
    """A file on disk or bytes from an upload; ``name`` is what errors show."""

    __slots__ = ("name", "path", "data", "_member", "_compression", "_head")

    def __init__(self, name: str, path: Path | None = None, data: bytes | None = None):
        self.name = name
        self.path = path
        self.data = data
        self._member: str | None = None
        self._compression: str | None = None
        self._head: bytes | None = None

    @classmethod
    def from_path(cls, path: PathLike) -> "_Source":
        p = Path(path)
        check_regular_file(p)
        return cls(str(p), path=p)

    @property
    def basename(self) -> str:
        return PurePath(self.name).name

    def _raw(self) -> BinaryIO:
        if self.path is not None:
            try:
                return open(self.path, "rb")
            except OSError as exc:
                raise DataFileError(self.name, f"cannot open: {exc.strerror or exc}") from exc
        return _io.BytesIO(self.data or b"")

    def _magic(self) -> bytes:
        with self._raw() as fh:
            return fh.read(4)

    @property
    def compression(self) -> str:
        """``zip``, ``gzip`` or ``none``, from the magic bytes (cached)."""
        if self._compression is None:
            magic = self._magic()
            self._compression = ("zip" if magic.startswith(b"PK\x03\x04")
                                 else "gzip" if magic.startswith(b"\x1f\x8b") else "none")
        return self._compression

    @property
    def member(self) -> str | None:
        """Name of the CSV inside a zip (it names the symbol when the zip does not)."""
        if self._member is None and self.compression == "zip":
            self.open().close()
        return self._member

    def open(self) -> BinaryIO:
        """Decompressed binary stream. The caller closes it (which closes the file)."""
        kind = self.compression
        # Archives are opened by path, not from a handle we pass in: ZipFile and GzipFile
        # only close the underlying file themselves when they opened it.
        target: object = self.path if self.path is not None else _io.BytesIO(self.data or b"")
        try:
            if kind == "zip":
                zf = zipfile.ZipFile(target)  # type: ignore[arg-type]
                try:
                    names = [n for n in zf.namelist() if not n.endswith("/")]
                    if len(names) != 1:
                        csvs = [n for n in names if n.lower().endswith((".csv", ".ndjson", ".jsonl", ".json"))]
                        if len(csvs) != 1:
                            raise DataFileError(self.name, f"zip holds {len(names)} files ({', '.join(names[:5])}); "
                                                           "expected exactly one CSV as data.binance.vision ships")
                        names = csvs
                    self._member = names[0]
                    return zf.open(names[0])  # keeps the file open until the member is closed
                finally:
                    zf.close()
            if kind == "gzip":
                return gzip.GzipFile(filename=self.path) if self.path is not None \
                    else gzip.GzipFile(fileobj=target)  # type: ignore[return-value, arg-type]
            return self._raw()
        except DataFileError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise DataFileError(self.name, f"cannot read {kind} archive: {exc}") from exc

    def read_all(self) -> bytes:
        """All decompressed bytes."""
        if self.compression == "gzip":
            # One C call: ~30 % faster than streaming through GzipFile for many small files.
            with self._raw() as fh:
                try:
                    return gzip.decompress(fh.read())
                except (OSError, EOFError, zlib.error) as exc:
                    raise DataFileError(self.name, f"archive is damaged or truncated: {exc}") from exc
        with self.open() as fh:
            try:
                return fh.read()
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise DataFileError(self.name, f"archive is damaged or truncated: {exc}") from exc

    def head(self) -> bytes:
        """The first few KiB of decompressed content (cached; for sniffing)."""
        if self._head is None:
            with self.open() as fh:
                try:
                    self._head = fh.read(_SNIFF_BYTES)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                    raise DataFileError(self.name, f"archive is damaged or truncated: {exc}") from exc
        return self._head


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(path: PathLike) -> Path:
    """``path`` if it is a regular file (symlinks followed), else a
    :class:`~quantlab.errors.DataFileError` saying what it is.

    Decided with :func:`os.stat` before anything opens the path: opening a FIFO
    for reading blocks until a writer appears, and ``/dev/zero`` never ends.
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise DataFileError(p, "no such file; check the path") from None
    except OSError as exc:
        raise DataFileError(p, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise DataFileError(p, "is a folder; pass a file (load_klines and load_files also take folders)")
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise DataFileError(p, f"is {what}, not a regular file; quantlab reads regular files only "
                               "(it would wait forever on it): save the data to a file and pass that")
    return p


def _as_source(path: PathLike | _Source) -> _Source:
    return path if isinstance(path, _Source) else _Source.from_path(path)
