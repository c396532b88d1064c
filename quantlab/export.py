"""Write frames to ``.csv``, ``.parquet``, ``.json`` or ``.xlsx`` with their provenance.

The metadata (symbols, timeframe, window, method, time range, quantlab version,
creation time ...) travels with the file, in the place each format offers:

========  ====================================================================
format    where the metadata goes
========  ====================================================================
parquet   file key-value metadata, key ``quantlab``, value a JSON object
json      the document is ``{"metadata": {...}, "rows": [{column: value}, ...]}``
xlsx      sheet ``data`` holds the table, sheet ``metadata`` two columns ``key, value``
csv       a sidecar ``<stem>.meta.json`` next to ``<stem>.csv``; the CSV stays a plain
          table any tool reads
========  ====================================================================

Times: in csv and json every datetime (index or column) is written as an ISO-8601 UTC
string, ``2022-01-01T00:00:00Z`` (``...00.123Z`` when a column has sub-second values);
naive datetimes are taken as UTC. Parquet keeps native UTC timestamps. Excel cannot hold
time zones: xlsx cells are naive datetimes **in UTC** (the metadata says
``"timezone": "UTC"``). A DatetimeIndex (e.g. bars' ``open_time``) becomes the first
column. Floats are written with full round-trip precision, except in xlsx (openpyxl
writes about 16 significant digits; Excel itself keeps 15).

Files are written to a temporary name in the target folder and renamed into place, so
a failed export never leaves a half-written file under the requested name.

Examples
--------
>>> default_filename("analyze", ["BTCUSDT", "ETHUSDT"], "1m", "2022-01-01", "2023-12-31 23:59", "csv")
'analyze_BTCUSDT-ETHUSDT_1m_20220101T0000-20231231T2359.csv'
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError, DataFileError

FORMATS = (".csv", ".parquet", ".json", ".xlsx")
PARQUET_KEY = b"quantlab"
XLSX_DATA_SHEET = "data"
XLSX_META_SHEET = "metadata"
XLSX_MAX_ROWS = 1_048_576 - 1  # Excel's sheet limit, minus the header row
XLSX_MAX_COLS = 16_384


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------
def _utc(ts: object, what: str) -> pd.Timestamp:
    try:
        t = pd.Timestamp(ts)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(what, ts, "a time (ISO-8601 string, datetime or pandas Timestamp)") from exc
    if t is pd.NaT:
        raise ConfigError(what, ts, "a time, not NaT")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _slug(text: str, what: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.-]+", "-", str(text)).strip("-.")
    if not s:
        raise ConfigError(what, text, "a non-empty name made of letters, digits, '-' or '.'")
    return s


def default_filename(kind: str, symbols: str | Iterable[str], timeframe: str, start: object,
                     end: object, ext: str) -> str:
    """A file name that says what produced the file.

    ``{kind}_{SYM1-SYM2}_{timeframe}_{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}.{ext}``, times in
    UTC (naive times are taken as UTC).

    Parameters
    ----------
    kind : what made it, e.g. ``"analyze"``, ``"backtest"``, ``"bars"``.
    symbols : one symbol or several (upper-cased, joined with ``-`` in the given order).
    timeframe : bar interval, e.g. ``"1m"``, ``"1s"``, ``"ticks"``.
    start, end : first and last time covered (anything :class:`pandas.Timestamp` takes).
    ext : ``csv``, ``parquet``, ``json`` or ``xlsx`` (with or without the dot).

    Examples
    --------
    >>> default_filename("bars", "ethusdt", "1s", pd.Timestamp("2024-08-08T23:54:15Z"),
    ...                  "2024-08-09T00:05:05+00:00", ".parquet")
    'bars_ETHUSDT_1s_20240808T2354-20240809T0005.parquet'
    """
    ext = "." + str(ext).lstrip(".").lower()
    if ext not in FORMATS:
        raise ConfigError("ext", ext, f"one of {', '.join(FORMATS)}")
    syms = [symbols] if isinstance(symbols, str) else list(symbols)
    if not syms:
        raise ConfigError("symbols", symbols, "at least one symbol")
    sym = "-".join(_slug(s, "symbols").upper() for s in syms)
    t0, t1 = _utc(start, "start"), _utc(end, "end")
    if t1 < t0:
        raise ConfigError("end", str(t1), f"a time at or after start {t0.isoformat()}")
    return (f"{_slug(kind, 'kind')}_{sym}_{_slug(timeframe, 'timeframe')}_"
            f"{t0:%Y%m%dT%H%M}-{t1:%Y%m%dT%H%M}{ext}")


def sidecar_path(csv_path: str | os.PathLike) -> Path:
    """The metadata sidecar of a CSV export: ``x.csv`` -> ``x.meta.json``."""
    p = Path(csv_path)
    return p.with_name(p.stem + ".meta.json")


# --------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """Metadata values -> JSON types; times -> ISO-8601 UTC strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, (pd.Timestamp, _dt.datetime, np.datetime64)):
        if pd.isna(value):
            return None
        return _iso(_utc(value, "metadata"))
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, _dt.timedelta)):
        return pd.Timedelta(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def _iso(t: pd.Timestamp) -> str:
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond or t.nanosecond:
        s += f".{t.microsecond // 1000:03d}"
    return s + "Z"


def _full_metadata(frame: pd.DataFrame, metadata: Mapping[str, Any], fmt: str) -> dict:
    if not isinstance(metadata, Mapping):
        raise ConfigError("metadata", type(metadata).__name__, "a dict such as {'symbols': [...], 'timeframe': '1m'}")
    from quantlab import __version__

    meta = _jsonable(dict(metadata))
    meta.setdefault("quantlab_version", __version__)
    meta.setdefault("created_at", _iso(pd.Timestamp.now(tz="UTC")))
    meta.setdefault("rows", int(len(frame)))
    meta.setdefault("format", fmt.lstrip("."))
    if isinstance(frame.index, pd.DatetimeIndex) and len(frame) and "time_range" not in meta:
        meta["time_range"] = [_iso(_utc(frame.index.min(), "index")), _iso(_utc(frame.index.max(), "index"))]
    if fmt == ".xlsx":
        meta.setdefault("timezone", "UTC")
    return meta


# --------------------------------------------------------------------------------------
# Frame preparation
# --------------------------------------------------------------------------------------
def _with_index_column(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep a meaningful index (named, or datetime) as the first column."""
    idx = frame.index
    if isinstance(idx, pd.DatetimeIndex) or idx.name is not None or isinstance(idx, pd.MultiIndex):
        name = idx.name or ("time" if isinstance(idx, pd.DatetimeIndex) else "index")
        out = frame.copy()
        out.index = idx.rename(name) if not isinstance(idx, pd.MultiIndex) else idx
        return out.reset_index()
    return frame.reset_index(drop=True)


def _to_utc(col: pd.Series) -> pd.Series:
    return col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")


def _iso_column(col: pd.Series) -> pd.Series:
    """Datetime column -> ISO-8601 UTC strings (vectorised; NaT -> None)."""
    utc = _to_utc(col).dt.tz_localize(None)
    values = utc.to_numpy(dtype="datetime64[ns]")
    has_frac = bool(((values.astype(np.int64) % 1_000_000_000) != 0)[~np.isnat(values)].any())
    unit = "ms" if has_frac else "s"
    text = np.datetime_as_string(values.astype(f"datetime64[{unit}]"), unit=unit)
    out = pd.Series(np.char.add(text.astype(str), "Z"), index=col.index, dtype=object)
    out[np.isnat(values)] = None
    return out


def _datetime_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c].dtype)]


def _text_times(frame: pd.DataFrame) -> pd.DataFrame:
    out = _with_index_column(frame)
    for c in _datetime_columns(out):
        out[c] = _iso_column(out[c])
    return out


def _check_columns(frame: pd.DataFrame) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError("frame", type(frame).__name__, "a pandas DataFrame")
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()][0]
        raise ConfigError("frame", f"duplicate column {dup!r}", "unique column names")


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------
def _write_csv(frame: pd.DataFrame, tmp: Path) -> None:
    # Default float formatting is repr(): shortest string that round-trips exactly.
    _text_times(frame).to_csv(tmp, index=False, lineterminator="\n")


def _write_json(frame: pd.DataFrame, tmp: Path, meta: dict) -> None:
    table = _text_times(frame)
    table = table.astype(object).where(table.notna(), None)
    rows = table.to_dict(orient="records")
    import orjson

    try:
        data = orjson.dumps({"metadata": meta, "rows": rows},
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an exotic cell type orjson does not know: fall back to str()
        data = json.dumps({"metadata": meta, "rows": rows}, default=str, allow_nan=False).encode()
    tmp.write_bytes(data)


def _write_parquet(frame: pd.DataFrame, tmp: Path, meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=not isinstance(frame.index, pd.RangeIndex))
    kv = dict(table.schema.metadata or {})
    kv[PARQUET_KEY] = json.dumps(meta).encode()
    pq.write_table(table.replace_schema_metadata(kv), tmp)


def _write_xlsx(frame: pd.DataFrame, tmp: Path, meta: dict) -> None:
    table = _with_index_column(frame)
    if len(table) > XLSX_MAX_ROWS or table.shape[1] > XLSX_MAX_COLS:
        raise ConfigError("path", f"{len(table)} rows x {table.shape[1]} columns",
                          f"at most {XLSX_MAX_ROWS} rows and {XLSX_MAX_COLS} columns for .xlsx "
                          "(an Excel sheet limit); export to .parquet or .csv instead")
    for c in _datetime_columns(table):
        table[c] = _to_utc(table[c]).dt.tz_localize(None)  # Excel has no time zones: naive UTC
    table = table.astype(object).where(table.notna(), None)
    meta_rows = pd.DataFrame({"key": list(meta),
                              "value": [v if isinstance(v, (str, int, float, bool)) or v is None
                                        else json.dumps(v) for v in meta.values()]})
    with pd.ExcelWriter(tmp, engine="openpyxl") as xw:
        table.to_excel(xw, sheet_name=XLSX_DATA_SHEET, index=False)
        meta_rows.to_excel(xw, sheet_name=XLSX_META_SHEET, index=False)


def export_frame(frame: pd.DataFrame, path: str | os.PathLike, *, metadata: Mapping[str, Any]) -> Path:
    """Write ``frame`` to ``path`` (format from the extension) with ``metadata`` attached.

    Parameters
    ----------
    frame : any DataFrame (bars, ticks, a result table). A DatetimeIndex or a named
        index is written as the first column (parquet keeps it as the index).
    path : target file ending in ``.csv``, ``.parquet``, ``.json`` or ``.xlsx``; parent
        folders are created. An existing file is replaced.
    metadata : what produced the table, e.g. ``{"symbols": ["BTCUSDT", "ETHUSDT"],
        "timeframe": "1m", "window": 120, "method": "ols", "time_range": [start, end]}``.
        Times become ISO-8601 UTC strings, tuples lists, numpy scalars Python numbers.
        Added when absent: ``quantlab_version``, ``created_at`` (UTC now), ``rows``,
        ``format``, ``time_range`` (from a DatetimeIndex) and, for xlsx, ``timezone``.

    Returns
    -------
    Path
        The file written (for csv, the sidecar is :func:`sidecar_path` of it).

    Raises
    ------
    ConfigError
        Unsupported extension, metadata not a dict, duplicate column names, or more rows
        than an Excel sheet holds.
    DataFileError
        The file cannot be written (folder not writable, disk full...).
    """
    target = Path(path)
    ext = target.suffix.lower()
    if ext not in FORMATS:
        raise ConfigError("path", str(path), f"a file name ending in {', '.join(FORMATS)}")
    _check_columns(frame)
    meta = _full_metadata(frame, metadata, ext)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=ext + ".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise DataFileError(target, f"cannot write here: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        if ext == ".csv":
            _write_csv(frame, tmp)
            side = sidecar_path(target)
            side_tmp = side.with_name(f".{side.name}.tmp")
            side_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            os.replace(side_tmp, side)
        elif ext == ".json":
            _write_json(frame, tmp, meta)
        elif ext == ".parquet":
            _write_parquet(frame, tmp, meta)
        else:
            _write_xlsx(frame, tmp, meta)
        os.replace(tmp, target)
    except ConfigError:
        raise
    except OSError as exc:
        raise DataFileError(target, f"cannot write: {exc.strerror or exc}") from exc
    except (ValueError, TypeError, ImportError) as exc:  # pyarrow/openpyxl refusing a column type
        raise DataFileError(target, f"cannot write this table as {ext}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata :func:`export_frame` attached to ``path`` (any of the four formats).

    Raises
    ------
    DataFileError
        No quantlab metadata found, or the file cannot be read.
    """
    p = Path(path)
    ext = p.suffix.lower()
    try:
        if ext == ".csv":
            side = sidecar_path(p)
            if not side.exists():
                raise DataFileError(p, f"no metadata sidecar {side.name} next to this CSV")
            return json.loads(side.read_text(encoding="utf-8"))
        if ext == ".json":
            doc = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or "metadata" not in doc:
                raise DataFileError(p, 'not a quantlab export: expected {"metadata": ..., "rows": [...]}')
            return doc["metadata"]
        if ext == ".parquet":
            import pyarrow.parquet as pq

            kv = pq.read_schema(p).metadata or {}
            if PARQUET_KEY not in kv:
                raise DataFileError(p, "no 'quantlab' key in the parquet metadata")
            return json.loads(kv[PARQUET_KEY])
        if ext == ".xlsx":
            sheet = pd.read_excel(p, sheet_name=XLSX_META_SHEET, dtype=object)
            out = {}
            for k, v in zip(sheet["key"], sheet["value"]):
                if isinstance(v, str) and v[:1] in "[{":
                    try:
                        v = json.loads(v)
                    except ValueError:
                        pass
                out[str(k)] = None if (isinstance(v, float) and math.isnan(v)) else v
            return out
    except DataFileError:
        raise
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise DataFileError(p, f"cannot read the metadata: {exc}") from exc
    raise ConfigError("path", str(path), f"a file name ending in {', '.join(FORMATS)}")
