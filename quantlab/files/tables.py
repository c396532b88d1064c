"""Shared table machinery of the loaders: small vectorised helpers (epoch units,
tick and bar frames), CSV reading through pyarrow with explicit columns and a
precise error path, and the value checks every loader applies (one rule, one place).
"""
from __future__ import annotations

import datetime as _dt
import io as _io
import logging
import zipfile
import zlib
from typing import BinaryIO, Callable, Sequence

import numpy as np
import pandas as pd

from quantlab import schema
from quantlab.errors import DataFileError, UnknownSymbol
from quantlab.files.sniff import _check_bare_cr, _csv_fields
from quantlab.files.source import (
    SYMBOL_RE,
    _MAX_FILE_MS,
    _MAX_LINE_CHARS,
    _MAX_VALUE,
    _MIN_TRADE_MS,
    _MS_US_LIMIT,
    _S_MS_LIMIT,
    _Source,
    _US_NS_LIMIT,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------
def _epoch_to_ms(t: np.ndarray) -> np.ndarray:
    """Integer epoch times in ms, µs or ns (decided per value by magnitude) -> ms (floored)."""
    t = np.asarray(t, dtype=np.int64)
    if len(t) == 0 or t.max() < _MS_US_LIMIT:
        return t
    out = t.copy()
    ns = t >= _US_NS_LIMIT
    us = (t >= _MS_US_LIMIT) & ~ns
    out[us] //= 1_000
    out[ns] //= 1_000_000
    return out


def _obj(value: object, n: int) -> np.ndarray:
    """An object array of ``n`` copies (pandas 3 would otherwise infer ``str`` dtype)."""
    arr = np.empty(n, dtype=object)
    arr[:] = value if not isinstance(value, np.ndarray) else value
    return arr


def _tick_frame(*, market: object, symbol: object, kind: str, trade_id: np.ndarray,
                time_ms: np.ndarray, price: np.ndarray, qty: np.ndarray,
                is_buyer_maker: np.ndarray, trade_type: object = None,
                recv_ms: np.ndarray | None = None, first: np.ndarray | None = None,
                last: np.ndarray | None = None) -> pd.DataFrame:
    n = len(trade_id)
    if n == 0:
        return schema.empty_ticks()

    def ids(a: np.ndarray | None) -> pd.arrays.IntegerArray:
        if a is None:
            return pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool))
        return pd.arrays.IntegerArray(np.asarray(a, np.int64), np.zeros(n, bool))

    cols = {
        "market": pd.Series(_obj(market, n), dtype=object),
        "symbol": pd.Series(_obj(symbol, n), dtype=object),
        "kind": pd.Series(_obj(kind, n), dtype=object),
        "trade_id": np.asarray(trade_id, np.int64),
        "time_ms": np.asarray(time_ms, np.int64),
        "recv_ms": np.zeros(n, np.int64) if recv_ms is None else np.asarray(recv_ms, np.int64),
        "price": np.asarray(price, np.float64),
        "qty": np.asarray(qty, np.float64),
        "is_buyer_maker": np.asarray(is_buyer_maker, bool),
        "trade_type": pd.Series(_obj(trade_type, n), dtype=object),
        "first_trade_id": ids(first),
        "last_trade_id": ids(last),
    }
    return pd.DataFrame(cols, columns=list(schema.TICK_COLUMNS))


def _usdm_trade_type(price: np.ndarray, qty: np.ndarray) -> np.ndarray:
    """``X`` for USD-M rows of files that have no ``X`` column.

    Assumption (documented in :func:`load_trades`): a row with positive price and
    quantity is a ``MARKET`` print; a row with price or quantity <= 0 is ``NA`` (the
    shape of futures ``NA`` prints, BINANCE.md "Futures @trade"), so the bar builder,
    which keeps only ``MARKET``, drops it.
    """
    good = (np.asarray(price) > 0) & (np.asarray(qty) > 0)
    return np.where(good, "MARKET", "NA").astype(object)


def _finish_ticks(df: pd.DataFrame, single: bool | None = None) -> pd.DataFrame:
    """Sort by (time_ms, market, symbol, kind, trade_id) and drop repeated
    (market, symbol, kind, trade_id) keeping the first; fast when already in order.
    ``single``: the caller knows there is one (market, symbol, kind)."""
    if df.empty:
        return schema.empty_ticks()
    if single is None:
        single = all(df[c].nunique() == 1 for c in ("market", "symbol", "kind"))
    if single:
        ids = df["trade_id"].to_numpy()
        t = df["time_ms"].to_numpy()
        if len(ids) < 2 or (np.all(np.diff(ids) > 0) and np.all(np.diff(t) >= 0)):
            return df.reset_index(drop=True)
        order = np.lexsort((ids, t))
        df = df.iloc[order]
        keep = ~df["trade_id"].duplicated(keep="first").to_numpy()
        return df[keep].reset_index(drop=True)
    df = df.sort_values(["time_ms", "market", "symbol", "kind", "trade_id"], kind="stable")
    df = df.drop_duplicates(["market", "symbol", "kind", "trade_id"], keep="first")
    return df.reset_index(drop=True)


def _bar_frame(open_ms: np.ndarray, o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray,
               volume: np.ndarray, quote_volume: np.ndarray, count: np.ndarray,
               taker_buy: np.ndarray, vwap: np.ndarray | None = None,
               is_empty: np.ndarray | None = None) -> pd.DataFrame:
    if len(open_ms) == 0:
        return schema.empty_bars()
    volume = np.asarray(volume, np.float64)
    quote_volume = np.asarray(quote_volume, np.float64)
    c = np.asarray(c, np.float64)
    count = np.asarray(count, np.int64)
    if vwap is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            vwap = np.where(volume > 0, quote_volume / np.where(volume > 0, volume, 1.0), c)
    cols = {
        "open": np.asarray(o, np.float64), "high": np.asarray(h, np.float64),
        "low": np.asarray(low, np.float64), "close": c, "volume": volume,
        "quote_volume": quote_volume, "trade_count": count, "vwap": np.asarray(vwap, np.float64),
        "taker_buy_volume": np.asarray(taker_buy, np.float64),
        "is_empty": (count == 0) if is_empty is None else np.asarray(is_empty, bool),
        "is_forming": np.zeros(len(c), bool),
    }
    return pd.DataFrame(cols, index=schema.ms_to_utc_index(open_ms), columns=list(schema.BAR_COLUMNS))


# --------------------------------------------------------------------------------------
# CSV reading (pyarrow, explicit columns and types) with a precise error path
# --------------------------------------------------------------------------------------
_INT, _FLOAT, _BOOL = "int64", "float64", "bool"


def _read_csv_table(src: _Source, data: BinaryIO | bytes, columns: Sequence[str],
                    types: dict[str, str], skip_header: bool, line_offset: int = 0) -> dict[str, np.ndarray]:
    """Read a headerless-by-position CSV with pyarrow: only ``types``' columns, typed.

    On any parse failure, re-reads the file line by line (slow path, error only) to name
    the line and column of the first bad value.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    stream = _io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        table = pacsv.read_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=list(columns), skip_rows=1 if skip_header else 0,
                                           block_size=1 << 20),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(include_columns=list(types), column_types=types,
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        _raise_located(src, columns, types, skip_header, exc)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataFileError(src.name, f"archive is damaged or truncated: {exc}") from exc
    out = {}
    for name in types:
        col = table.column(name)
        if col.null_count:
            _raise_located(src, columns, types, skip_header, None)
        out[name] = col.to_numpy()
    return out


def _raise_located(src: _Source, columns: Sequence[str], types: dict[str, str], skip_header: bool,
                   exc: BaseException | None) -> None:
    """Find the first bad line of ``src`` and raise a DataFileError naming line and column."""
    text = src.read_all().decode("utf-8-sig", "replace")
    # Split on LF only (str.splitlines also splits on CR, VT, FF, U+2028 ... and would
    # misnumber the lines); a CR left inside a line is a bare CR.
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if lineno == 1 and skip_header or not line.strip():
            continue
        if len(line) > _MAX_LINE_CHARS:
            raise DataFileError(src.name, f"line is {len(line) / 2**20:.1f} MB long, while a row "
                                          f"({','.join(columns[:3])},...) is under 300 bytes: the file is "
                                          "damaged; remove the line", line=lineno) from None
        if "\r" in line:
            _check_bare_cr(src, line.encode(), lineno)
        if line.count('"') % 2:  # Binance files hold no quotes; an odd one swallows the next lines
            raise DataFileError(src.name, "an unbalanced double quote (\") makes the rest of the file one "
                                          "field; remove it", line=lineno) from None
        fields = _csv_fields(src, line, lineno)
        if len(fields) != len(columns):
            raise DataFileError(src.name, f"expected {len(columns)} fields ({','.join(columns)}), got "
                                          f"{len(fields)}; the file is cut or mixes formats", line=lineno) from exc
        for name, typ in types.items():
            value = fields[columns.index(name)].strip()
            if not _valid(value, typ):
                what = {"int64": "an integer", "float64": "a number", "bool": "true or false"}[typ]
                raise DataFileError(src.name, f"{_shown(value)} is not {what}", line=lineno, column=name) from exc
    raise DataFileError(src.name, f"cannot parse as CSV: {' '.join(str(exc).split())[:200]}") from exc


def _valid(value: str, typ: str) -> bool:
    if typ == _BOOL:
        return value.lower() in ("true", "false", "1", "0")
    try:
        v = int(value) if typ == _INT else float(value)
    except ValueError:
        return False
    return typ == _INT or np.isfinite(v)


# --------------------------------------------------------------------------------------
# Value checks shared by every loader (one rule, one place)
# --------------------------------------------------------------------------------------
def _iso_ms(ms: int) -> str:
    try:
        return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "beyond the year 9999"


def _time_problem(ms: int, min_ms: int) -> str | None:
    """Why ``ms`` (milliseconds since the epoch) is not a plausible time, or None."""
    if min_ms <= ms < _MAX_FILE_MS:
        return None
    if ms < 0:
        return f"time {ms} is negative ({_iso_ms(ms)}); expected milliseconds since 1970-01-01 UTC"
    if ms < min_ms:
        if min_ms <= ms * 1000 < _MAX_FILE_MS:
            return (f"time {ms} would be {_iso_ms(ms)}: it looks like seconds, and times here are "
                    "milliseconds since the epoch (multiply by 1000)")
        return (f"time {ms} is {_iso_ms(ms)}, before {_iso_ms(min_ms)[:4]}: not a trade time; "
                "times are milliseconds since the epoch")
    return (f"time {ms} is {_iso_ms(ms)}, after 2100: not a real time; times are milliseconds "
            "(or microseconds) since the epoch")


def check_symbol(symbol: object) -> str | None:
    """None when ``symbol`` is a valid Binance symbol, else why not (for a message).

    >>> check_symbol("BTCUSDT") is None
    True
    >>> check_symbol("\u0412\u0422\u0421USDT")  # Cyrillic look-alikes
    "'ВТСUSDT' is not ASCII upper-case letters and digits (it holds 'В' U+0412, a look-alike of a Latin letter)"
    """
    if isinstance(symbol, str) and SYMBOL_RE.fullmatch(symbol):
        return None
    text = f"{symbol!r} is not ASCII upper-case letters and digits"
    if isinstance(symbol, str):
        odd = next((ch for ch in symbol if not ("A" <= ch <= "Z" or "0" <= ch <= "9")), None)
        if odd is not None and not odd.isascii():
            text += f" (it holds {odd!r} U+{ord(odd):04X}, a look-alike of a Latin letter)"
        elif odd is None:
            text += " (1 to 32 of them)"
    return text


def _archive_line_of(src: _Source, header: bool) -> Callable[[int], int | None]:
    """Row index (0-based, pyarrow order: blank lines skipped) -> physical line number."""
    cache: dict[str, object] = {}

    def line_of(row: int) -> int | None:
        if "data" not in cache:
            data = src.read_all().lstrip(b"\xef\xbb\xbf")
            cache["data"] = data
            cache["dense"] = not (data.startswith((b"\n", b"\r\n")) or b"\n\n" in data or b"\n\r\n" in data)
        if cache["dense"]:
            return row + 1 + int(header)
        seen = -1 - int(header)
        for lineno, line in enumerate(cache["data"].split(b"\n"), start=1):  # type: ignore[union-attr]
            if line.strip(b"\r"):
                seen += 1
                if seen == row:
                    return lineno
        return None

    return line_of


def _check_ticks(src: _Source, frame: pd.DataFrame, line_of: Callable[[int], int | None],
                 columns: tuple[str, str, str], symbol_column: str | None = None
                 ) -> tuple[pd.DataFrame, str | None]:
    """Refuse implausible rows of a tick frame still in file order; drop (or, for USD-M
    ``trade`` rows, keep as ``NA`` prints) rows with price or quantity <= 0.

    ``columns`` are the file's names of (price, quantity, time). Returns the frame and a
    note counting the rows with price or quantity <= 0 (None when there are none).

    Raises
    ------
    DataFileError
        Naming the line and column of the first time outside [2010, 2100) (seconds,
        negative, year 3000), the first price or quantity that is not finite or >= 1e15,
        a symbol that is not ASCII upper-case letters and digits, or a file whose every
        row has price or quantity <= 0.
    """
    n = len(frame)
    if n == 0:
        return frame, None
    price_col, qty_col, time_col = columns
    if symbol_column is not None:
        for sym in pd.unique(frame["symbol"]):
            problem = check_symbol(sym)
            if problem is not None:
                i = int(np.argmax((frame["symbol"] == sym).to_numpy()))
                raise DataFileError(src.name, f"{problem}, so it is not a symbol such as 'BTCUSDT'",
                                    line=line_of(i), column=symbol_column)
    t = frame["time_ms"].to_numpy(np.int64)
    bad = (t < _MIN_TRADE_MS) | (t >= _MAX_FILE_MS)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFileError(src.name, _time_problem(int(t[i]), _MIN_TRADE_MS) or "bad time",
                            line=line_of(i), column=time_col)
    p = frame["price"].to_numpy(np.float64)
    q = frame["qty"].to_numpy(np.float64)
    for col, a, what in ((price_col, p, "price (quote currency per unit)"), (qty_col, q, "quantity")):
        bad = ~(np.abs(a) < _MAX_VALUE)  # NaN and inf included
        if bad.any():
            i = int(np.argmax(bad))
            raise DataFileError(src.name, f"{float(a[i])!r} is not a plausible {what}: it must be a finite "
                                          f"number below 1e15; fix or remove the row", line=line_of(i),
                                column=col)
    nonpos = (p <= 0) | (q <= 0)
    k = int(nonpos.sum())
    if k == 0:
        return frame, None
    i = int(np.argmax(nonpos))
    col = price_col if p[i] <= 0 else qty_col
    where = f"line {line_of(i)}" if line_of(i) is not None else f"row {i + 1}"
    if k == n:
        raise DataFileError(src.name, f"all {n} rows have price or quantity <= 0 (this is the first); "
                                      "that is not a file of trades: check the columns",
                            line=line_of(i), column=col)
    usdm_na = frame["market"].to_numpy(object) == "usdm"
    usdm_na &= frame["kind"].to_numpy(object) == "trade"
    keep = nonpos & usdm_na
    dropped = nonpos & ~usdm_na
    parts = []
    if dropped.any():
        frame = frame[~dropped]
        parts.append(f"{int(dropped.sum())} skipped")
    if keep.any():
        parts.append(f"{int(keep.sum())} kept as USD-M NA prints (never in bars)")
    note = f"{k} rows with price or quantity <= 0 ({', '.join(parts)}; the first at {where})"
    logger.info("%s: %s", src.name, note)
    return frame, note


def _filter_symbol(src: _Source, frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    symbol = symbol.upper()
    present = sorted(set(frame["symbol"]))
    if symbol not in present:
        if not present:
            return frame
        raise UnknownSymbol(symbol, present)
    return frame[frame["symbol"] == symbol]


def _shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value)):,} characters)"


def _parse_times(values: pd.Series, src: _Source, linenos: np.ndarray, column: str) -> np.ndarray:
    """ISO-8601 (naive = UTC) or epoch s/ms/µs/ns per value -> int64 ms. Raises at the first bad one."""
    s = values.astype(object)
    text = s.map(lambda v: v.strip() if isinstance(v, str) else v)
    num = pd.to_numeric(text, errors="coerce")
    is_num = num.notna().to_numpy() & np.isfinite(num.to_numpy(dtype=np.float64, na_value=np.nan))
    out = np.zeros(len(s), np.int64)
    if is_num.any():
        v = num.to_numpy(dtype=np.float64, na_value=np.nan)[is_num]
        mag = np.abs(v)
        scale = np.select([mag < _S_MS_LIMIT, mag < _MS_US_LIMIT, mag < _US_NS_LIMIT], [1000.0, 1.0, 1e-3], 1e-6)
        out[is_num] = np.floor(v * scale + 1e-6).astype(np.int64)
    if (~is_num).any():
        iso = pd.to_datetime(pd.Series(text[~is_num].astype(str).to_numpy(), dtype=object),
                             format="ISO8601", utc=True, errors="coerce")
        bad = iso.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(~is_num)[np.argmax(bad)])
            raw = values.iloc[i]
            what = "empty" if raw is None or (isinstance(raw, str) and not raw.strip()) else f"{_shown(raw)} is"
            raise DataFileError(src.name, f"{what} not an ISO-8601 time (2024-08-08T23:54:15Z) or an epoch "
                                          "number in s/ms", line=int(linenos[i]), column=column)
        # In ms, not ns: a year such as 0024 or 3000 parses but does not fit int64 ns.
        out[~is_num] = iso.dt.as_unit("ms").astype(np.int64).to_numpy()
    return out


def _parse_numbers(values: pd.Series, src: _Source, linenos: np.ndarray, column: str) -> np.ndarray:
    """Strings/numbers -> float64; raises at the first value that is not a finite number."""
    text = values.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
    num = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(num)
    if bad.any():
        i = int(np.argmax(bad))
        raw = values.iloc[i]
        if raw is None or (isinstance(raw, str) and not raw.strip()) or (isinstance(raw, float) and np.isnan(raw)):
            reason = "empty value (NaN); every row needs a number here"
        elif isinstance(raw, str) and raw.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            reason = f"{raw!r} is not allowed (NaN or infinite); put a finite number or remove the row"
        else:
            reason = f"{_shown(raw)} is not a number; fix the value or remove the row"
        raise DataFileError(src.name, reason, line=int(linenos[i]), column=column)
    return num
