"""Tick files: data.binance.vision ``trades``/``aggTrades`` archives and the
collector's NDJSON lines.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

import orjson  # parses a JSON line ~2x faster than json (see quantlab.binance)

from quantlab import schema
from quantlab.errors import DataFileError
from quantlab.files.sniff import (
    _Sniff,
    _check_market_arg,
    _name_info,
    _need_symbol,
    _resolve_market,
)
from quantlab.files.source import _Source
from quantlab.files.tables import (
    _BOOL,
    _FLOAT,
    _INT,
    _archive_line_of,
    _check_ticks,
    _epoch_to_ms,
    _filter_symbol,
    _finish_ticks,
    _parse_numbers,
    _parse_times,
    _read_csv_table,
    _tick_frame,
    _usdm_trade_type,
    check_symbol,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# data.binance.vision trades and aggTrades
# --------------------------------------------------------------------------------------
def _load_archive_ticks(src: _Source, sniff: _Sniff, symbol: str | None,
                        market: str | None) -> tuple[pd.DataFrame, str, str, str | None]:
    named_symbol, named_market = _name_info(src)
    market = _resolve_market(src, sniff.market, market, named_market, sniff.format)
    symbol = (symbol or named_symbol)
    if symbol is None:
        raise _need_symbol(src, sniff.format)
    symbol = symbol.upper()
    if check_symbol(symbol) is not None:
        raise DataFileError(src.name, f"symbol {check_symbol(symbol)}; pass symbol='BTCUSDT' or rename the file")
    cols = sniff.columns
    rows: np.ndarray | None = None  # file row of each frame row, when rows were dropped
    with src.open() as fh:
        if sniff.format == "trades":
            t = _read_csv_table(src, fh, cols, {"id": _INT, "price": _FLOAT, "qty": _FLOAT, "time": _INT,
                                                "is_buyer_maker": _BOOL}, sniff.header)
            price, qty = t["price"], t["qty"]
            frame = _tick_frame(market=market, symbol=symbol, kind="trade", trade_id=t["id"],
                                time_ms=_epoch_to_ms(t["time"]), price=price, qty=qty,
                                is_buyer_maker=t["is_buyer_maker"],
                                trade_type=_usdm_trade_type(price, qty) if market == "usdm" else None)
        else:
            t = _read_csv_table(src, fh, cols, {"agg_trade_id": _INT, "price": _FLOAT, "quantity": _FLOAT,
                                                "first_trade_id": _INT, "last_trade_id": _INT,
                                                "transact_time": _INT, "is_buyer_maker": _BOOL}, sniff.header)
            # Placeholder rows p=0,q=0,f=-1,l=-1 (BINANCE.md, robust ingester item 7).
            bad = (t["price"] == 0) & (t["quantity"] == 0) & (t["first_trade_id"] == -1) & (t["last_trade_id"] == -1)
            if bad.any():
                logger.info("%s: dropped %d invalid aggTrades rows (p=0,q=0,f=-1,l=-1)", src.name, int(bad.sum()))
                t = {k: v[~bad] for k, v in t.items()}
                rows = np.flatnonzero(~bad)
            # aggTrades carry no X; like the live path (binance.parse_trade) trade_type is None.
            frame = _tick_frame(market=market, symbol=symbol, kind="aggTrade", trade_id=t["agg_trade_id"],
                                time_ms=_epoch_to_ms(t["transact_time"]), price=t["price"], qty=t["quantity"],
                                is_buyer_maker=t["is_buyer_maker"], first=t["first_trade_id"],
                                last=t["last_trade_id"])
    file_line = _archive_line_of(src, sniff.header)
    names = ("price", "qty", "time") if sniff.format == "trades" else ("price", "quantity", "transact_time")
    frame, note = _check_ticks(src, frame, lambda i: file_line(int(rows[i]) if rows is not None else i), names)
    return _finish_ticks(frame, single=True), symbol, market, note


# --------------------------------------------------------------------------------------
# Collector NDJSON
# --------------------------------------------------------------------------------------
def _ndjson_ticks(src: _Source, market: str | None, symbol: str | None) -> tuple[pd.DataFrame, str, str | None]:
    market = _check_market_arg(market)
    _, named_market = _name_info(src)
    market = market or named_market
    if market is None:
        raise DataFileError(src.name, "collector NDJSON does not say which market it came from; pass "
                                      "market='spot' or market='usdm'")
    syms, ts, price, size, linenos = [], [], [], [], []
    with src.open() as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DataFileError(src.name, f"not valid JSON ({exc}); each line must be one object "
                                              '{"symbol","ts","price","size"}', line=lineno) from exc
            if not isinstance(obj, dict):
                raise DataFileError(src.name, "expected a JSON object per line", line=lineno)
            for key in ("symbol", "ts", "price", "size"):
                if key not in obj:
                    raise DataFileError(src.name, f"missing; each line needs symbol, ts, price and size",
                                        line=lineno, column=key)
            sym = obj["symbol"]
            problem = check_symbol(sym.strip().upper() if isinstance(sym, str) else sym)
            if problem is not None:
                raise DataFileError(src.name, f"{problem}, so it is not a symbol such as 'BTCUSDT'",
                                    line=lineno, column="symbol")
            syms.append(sym.strip().upper())
            ts.append(obj["ts"])
            price.append(obj["price"])
            size.append(obj["size"])
            linenos.append(lineno)
    if not syms:
        return schema.empty_ticks(), market, None
    lines = np.asarray(linenos, np.int64)
    t_ms = _parse_times(pd.Series(ts, dtype=object), src, lines, "ts")
    p = _parse_numbers(pd.Series(price, dtype=object), src, lines, "price")
    q = _parse_numbers(pd.Series(size, dtype=object), src, lines, "size")
    sym_arr = np.asarray(syms, dtype=object)
    frame = _tick_frame(market=market, symbol=sym_arr, kind="trade", trade_id=np.zeros(len(p), np.int64),
                        time_ms=t_ms, price=p, qty=q, is_buyer_maker=np.zeros(len(p), bool),
                        trade_type=_usdm_trade_type(p, q) if market == "usdm" else None)
    frame["_line"] = lines
    frame, note = _check_ticks(src, frame, lambda i: int(lines[i]), ("price", "size", "ts"))
    if symbol is not None:
        frame = _filter_symbol(src, frame, symbol)
    return _number_ndjson(frame), market, note


def _number_ndjson(frame: pd.DataFrame) -> pd.DataFrame:
    """Synthetic ids: 0, 1, 2 ... per symbol in (time, file order) order."""
    order_cols = ["time_ms", "_line"] if "_line" in frame else ["time_ms"]
    frame = frame.sort_values(order_cols, kind="stable")
    frame["trade_id"] = frame.groupby("symbol", sort=False).cumcount().astype(np.int64)
    return frame.drop(columns=["_line"], errors="ignore").reset_index(drop=True)
