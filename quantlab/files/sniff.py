"""Format sniffing (from the content's first line, never the extension) and what a
file name says about symbol and market.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import PurePath

from quantlab.config import MARKETS
from quantlab.errors import ConfigError, DataFileError
from quantlab.files.source import (
    AGG_SPOT_COLUMNS,
    AGG_USDM_COLUMNS,
    KLINE_COLUMNS,
    OHLC_COLUMNS,
    TRADES_SPOT_COLUMNS,
    TRADES_USDM_COLUMNS,
    _OHLC_TIME_NAMES,
    _SNIFF_BYTES,
    _Source,
)


# --------------------------------------------------------------------------------------
# Format sniffing and name inference
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sniff:
    format: str
    header: bool              # the first line is a header (skip it)
    columns: tuple[str, ...]  # positional column names (Binance's, not the file's)
    market: str | None        # what the column layout says, None if it cannot tell


_CAPTURE_LINE = re.compile(rb"^\s*\d+ [\[{]")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_bool(text: str) -> bool:
    return text.strip().lower() in ("true", "false")


def _looks_like_iso(text: str) -> bool:
    return bool(re.match(r"^\s*\d{4}-\d{2}-\d{2}", text))


def _first_line(src: _Source) -> str:
    """The first non-blank line, refusing what the CSV readers choke on: a bare
    carriage return (CR without LF) and a line longer than the sniffed head."""
    head = src.head()
    pieces = head.split(b"\n")
    for lineno, raw in enumerate(pieces, start=1):
        if not raw.strip():
            continue
        if lineno == len(pieces) and len(head) >= _SNIFF_BYTES:
            raise DataFileError(src.name, f"line is longer than {_SNIFF_BYTES // 1024} KiB (no line break in "
                                          f"its first {_SNIFF_BYTES} bytes); a CSV, NDJSON or capture line is "
                                          "far shorter: the file is damaged or not a data file", line=lineno)
        _check_bare_cr(src, raw, lineno)
        return raw.decode("utf-8-sig", "replace").strip()
    raise DataFileError(src.name, "file is empty; expected a CSV, NDJSON or capture file")


def _check_bare_cr(src: _Source, raw: bytes, lineno: int) -> None:
    if b"\r" in raw.rstrip(b"\r"):
        raise DataFileError(src.name, "line ends in a bare carriage return (CR without LF: classic Mac "
                                      "line endings); save the file with LF or CRLF line endings, e.g. "
                                      "tr '\\r' '\\n' < old.csv > new.csv", line=lineno)


def _csv_fields(src: _Source, line: str, lineno: int) -> list[str]:
    """One CSV line -> fields; :class:`csv.Error` (NUL byte, field over the size
    limit, newline in an unquoted field) becomes a located DataFileError."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:
        raise DataFileError(src.name, f"not a CSV line ({exc}); fix or remove the line",
                            line=lineno) from None


def _sniff(src: _Source) -> _Sniff:
    """Decide the format from the first non-blank line (BINANCE.md: "Sniff the first line")."""
    try:
        sniff = _sniff_content(src)
    except DataFileError as exc:
        if exc.line == 1 and "cannot recognise the first line" in exc.reason:
            _check_named_kind(src, _Sniff("unknown", False, (), None), _first_line(src))
        raise
    if sniff.format != "capture":
        _check_named_kind(src, sniff, _first_line(src))
    return sniff


def _sniff_content(src: _Source) -> _Sniff:
    head = src.head()
    stripped = head.lstrip(b"\xef\xbb\xbf")
    if _CAPTURE_LINE.match(stripped):
        return _Sniff("capture", False, (), None)
    line = _first_line(src)
    if line.startswith("{"):
        return _Sniff("ndjson", False, (), None)
    fields = [f.strip() for f in _csv_fields(src, line, 1)]
    names = [f.lower() for f in fields]
    n = len(fields)
    header = not (_is_number(fields[0]) or _looks_like_iso(fields[0]))
    if header:
        # Only USD-M archives have headers (spot files never do), but trust the columns.
        if names[0] == "open_time" and "close_time" in names:
            return _Sniff("klines", True, KLINE_COLUMNS[:n], "usdm")
        if names[0] in ("agg_trade_id", "a") or "first_trade_id" in names:
            _check_archive_header(src, names, AGG_SPOT_COLUMNS, "aggTrades")
            return _Sniff("aggTrades", True, AGG_SPOT_COLUMNS[:n], "spot" if n == 8 else "usdm")
        if names[0] == "id" and ("quote_qty" in names or "price" in names):
            _check_archive_header(src, names, TRADES_SPOT_COLUMNS, "trades")
            return _Sniff("trades", True, TRADES_SPOT_COLUMNS[:n], "spot" if n == 7 else "usdm")
        if names[0] in _OHLC_TIME_NAMES and {"open", "high", "low", "close"} & set(names):
            # Missing OHLC columns are reported by the OHLC reader, naming the column.
            return _Sniff("ohlc", True, tuple(names), None)
        raise DataFileError(src.name, f"unrecognised header {line[:120]!r}; expected a data.binance.vision "
                                      "trades/aggTrades/klines file or a CSV with header "
                                      "timestamp,open,high,low,close[,volume]", line=1)
    if n in (11, 12) and all(_is_number(f) for f in fields):
        return _Sniff("klines", False, KLINE_COLUMNS[:n], None)
    if n == 8 and _is_bool(fields[6]) and _is_bool(fields[7]):
        return _Sniff("aggTrades", False, AGG_SPOT_COLUMNS, "spot")
    if n == 7 and _is_bool(fields[5]) and _is_bool(fields[6]):
        return _Sniff("trades", False, TRADES_SPOT_COLUMNS, "spot")
    if n == 7 and _is_bool(fields[6]):
        return _Sniff("aggTrades", False, AGG_USDM_COLUMNS, "usdm")
    if n == 6 and _is_bool(fields[5]):
        return _Sniff("trades", False, TRADES_USDM_COLUMNS, "usdm")
    if n in (5, 6) and not any(_is_bool(f) for f in fields):
        return _Sniff("ohlc", False, OHLC_COLUMNS[:n], None)
    raise DataFileError(src.name, f"cannot recognise the first line {line[:120]!r} ({n} fields); expected a "
                                  "data.binance.vision trades/aggTrades/klines file, a timestamp,open,high,low,"
                                  "close[,volume] CSV, collector NDJSON or a WebSocket capture", line=1)


def _check_archive_header(src: _Source, names: list[str], full: tuple[str, ...], fmt: str) -> None:
    """A trades/aggTrades header must be Binance's (USD-M: without the last column):
    columns are read by position, so a missing one would shift every other."""
    if names[0] == "a":  # short field names (a,p,q,f,l,T,m[,M]): positions as Binance's
        if len(names) not in (len(full) - 1, len(full)):
            raise DataFileError(src.name, f"{len(names)} columns in the header; {fmt} files have "
                                          f"{len(full) - 1} (USD-M) or {len(full)} (spot)", line=1)
        return
    if tuple(names) in (full, full[:-1]):
        return
    missing = [c for c in full[:-1] if c not in names]
    layout = f"{','.join(full[:-1])} (USD-M; spot adds {full[-1]})"
    if missing:
        raise DataFileError(src.name, f"missing column {missing[0]!r} in the header; data.binance.vision {fmt} "
                                      f"files have {layout}", line=1, column=missing[0])
    raise DataFileError(src.name, f"header {','.join(names)[:120]!r} is not in Binance's column order; "
                                  f"{fmt} files have {layout}", line=1)


def _check_named_kind(src: _Source, sniff: "_Sniff", line: str) -> None:
    """A file named like a data.binance.vision trades/aggTrades archive whose first
    line is something else has lost a column (or is misnamed): say so instead of
    reading it as another format."""
    m = _NAME_RE.match(src.basename)
    kind = m.group("kind") if m else None
    if kind not in ("trades", "aggTrades") or sniff.format == kind:
        return
    full = TRADES_SPOT_COLUMNS if kind == "trades" else AGG_SPOT_COLUMNS
    n = line.count(",") + 1
    raise DataFileError(src.name, f"the name says {kind} but the first line has {n} fields "
                                  f"({line[:80]!r}); data.binance.vision {kind} rows have {len(full)} (spot: "
                                  f"{','.join(full)}) or {len(full) - 1} (USD-M): a column is missing, or "
                                  "rename the file", line=1)


_NAME_RE = re.compile(
    r"^(?P<sym>[A-Za-z0-9]{2,})-(?P<kind>trades|aggTrades|\d+(?:mo|[smhdwM]))-(?:(?P<mkt>um|usdm|spot|cm|futures)-)?",
)
_CAPTURE_NAME_RE = re.compile(r"^(?P<mkt>spot|usdm|um|futures)_(?P<sym>[A-Za-z0-9]{2,})_", re.IGNORECASE)
# User files (``BTCUSDT.csv``, ``ethusdt_1h.csv``): a leading token counts as a symbol only
# when it ends in a common quote asset, so ``prices.csv`` or ``download.csv`` name nothing.
_LOOSE_RE = re.compile(r"^([A-Za-z0-9]{2,}?(?:USDT|USDC|FDUSD|BUSD|TUSD|USD|BTC|ETH|BNB|EUR|TRY))(?:[-_.]|$)",
                       re.IGNORECASE)
_MARKET_WORDS = {"um": "usdm", "usdm": "usdm", "futures": "usdm", "spot": "spot", "cm": "cm"}


def _name_info(src: _Source) -> tuple[str | None, str | None]:
    """(symbol, market) named by the file name, the zip member or the parent folders.

    Understands ``BTCUSDT-trades-2024-08-08.zip``, ``BTCUSDT-1m-2022-01-01.csv.gz``,
    ``BTCUSDT-trades-um-...csv``, ``spot_btcusdt_20240808.gz``, a leading symbol ending in
    a quote asset (``BTCUSDT.csv``, ``ethusdt_1h.csv``) and data.binance.vision's
    folder layout ``.../{spot|futures/um}/{daily|monthly}/{trades|aggTrades|klines}/SYMBOL/...``.
    """
    symbol = market = None
    names = [src.basename]
    if src.compression == "zip" and src.member:
        names.append(PurePath(src.member).name)
    for name in names:
        m = _NAME_RE.match(name) or _CAPTURE_NAME_RE.match(name)
        if m:
            symbol = symbol or m.group("sym").upper()
            if m.group("mkt"):
                market = market or _MARKET_WORDS[m.group("mkt").lower()]
    parts = [p.lower() for p in PurePath(src.name).parts[:-1]]
    if market is None:
        for i, part in enumerate(parts):
            if part == "spot":
                market = "spot"
            elif part in ("um", "usdm") or (part == "futures" and i + 1 < len(parts) and parts[i + 1] == "um"):
                market = "usdm"
            elif part == "futures" and i + 1 < len(parts) and parts[i + 1] == "cm":
                market = "cm"
    if symbol is None:
        for name in names:
            m = _LOOSE_RE.match(name)
            if m:
                symbol = m.group(1).upper()
                break
    if symbol is None:
        raw_parts = PurePath(src.name).parts[:-1]
        for i in range(len(raw_parts) - 1, 0, -1):
            if raw_parts[i - 1] in ("trades", "aggTrades", "klines") and re.fullmatch(r"[A-Z0-9]{4,}", raw_parts[i]):
                symbol = raw_parts[i]
                break
    if market == "cm":
        raise DataFileError(src.name, "COIN-M (futures/cm) files are not supported; quantlab reads spot and USD-M")
    return symbol, market


def _check_market_arg(market: str | None) -> str | None:
    if market is not None and market not in MARKETS:
        raise ConfigError("market", market, "'spot' or 'usdm'")
    return market


def _need_symbol(src: _Source, what: str) -> DataFileError:
    return DataFileError(src.name, f"cannot tell the symbol of this {what} file from its name; "
                                   "pass symbol='BTCUSDT' (or name the file like BTCUSDT-trades-2024-08-08.csv "
                                   "or BTCUSDT.csv)")


def _resolve_market(src: _Source, sniff_market: str | None, explicit: str | None,
                     named: str | None, fmt: str) -> str | None:
    explicit = _check_market_arg(explicit)
    if sniff_market is not None and fmt in ("trades", "aggTrades"):
        # The column layout is decisive: spot archives carry is_best_match, USD-M do not.
        if explicit is not None and explicit != sniff_market:
            ncols = "with" if sniff_market == "spot" else "without"
            raise DataFileError(src.name, f"the columns ({ncols} is_best_match) are those of {sniff_market} "
                                          f"{fmt}, but market={explicit!r} was passed; drop market= or "
                                          "check the file")
        return sniff_market
    return explicit or named or sniff_market
