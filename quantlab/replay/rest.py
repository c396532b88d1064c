"""The tape (every trade produced, per symbol) and the REST API served from it:
``aggTrades``, ``historicalTrades``, ``trades``, ``klines``, ``exchangeInfo``,
``ping``, ``time`` with Binance's limits, weights and error shapes.
"""
from __future__ import annotations

import email.utils
import http
import re
import threading
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

from quantlab import binance
from quantlab.schema import now_ms as _now_ms
from quantlab.synthetic import (
    MARKET,
    SPOT_DECIMALS,
    AggBatch,
    Instruments,
    SymbolSpec,
    TradeBatch,
    format_decimal,
)
from quantlab.replay.faults import Faults, ReplayStats


# =============================================================================
# The tape: everything produced, per symbol, for REST and tests
# =============================================================================
class _Columns:
    """Append-only numpy columns keeping at most ``max_rows`` newest rows.

    Appends write past the current end and trims allocate new arrays, so a slice taken
    earlier never changes under its reader.
    """

    def __init__(self, dtypes: Mapping[str, Any], max_rows: int):
        self.max_rows = max_rows
        self._dtypes = dict(dtypes)
        self._n = 0
        self._cols = {k: np.empty(1024, dt) for k, dt in self._dtypes.items()}

    def __len__(self) -> int:
        return self._n

    def append(self, cols: Mapping[str, np.ndarray]) -> None:
        k = len(next(iter(cols.values())))
        if k == 0:
            return
        if k > self.max_rows:
            cols = {c: v[-self.max_rows:] for c, v in cols.items()}
            k = self.max_rows
        keep = self._n
        if keep + k > self.max_rows:  # trim to 3/4 so that trims are rare
            keep = max(0, min(keep, self.max_rows * 3 // 4 - k))
        cap = len(next(iter(self._cols.values())))
        if keep != self._n or keep + k > cap:
            new_cap = max(keep + k, min(self.max_rows, 2 * (keep + k)))
            new = {c: np.empty(new_cap, self._dtypes[c]) for c in self._cols}
            for c, arr in new.items():
                arr[:keep] = self._cols[c][self._n - keep:self._n]
            self._cols, self._n = new, keep
        for c, v in cols.items():
            self._cols[c][self._n:self._n + k] = v
        self._n += k

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name][:self._n]


_TRADE_DTYPES = {"id": np.int64, "price": np.int64, "qty": np.int64, "time": np.int64,
                 "event": np.int64, "m": bool, "ttype": np.int8}
_AGG_DTYPES = {"id": np.int64, "price": np.int64, "qty": np.int64, "first": np.int64, "last": np.int64,
               "time": np.int64, "event": np.int64, "m": bool}


class _Tape:
    """Trades and aggregates produced so far, per symbol index (thread-safe)."""

    def __init__(self, instruments: Instruments, max_rows: int):
        self.instruments = instruments
        self.lock = threading.Lock()
        self.trades = [_Columns(_TRADE_DTYPES, max_rows) for _ in instruments.symbols]
        self.aggs = [_Columns(_AGG_DTYPES, max_rows) for _ in instruments.symbols]

    def record(self, batch: TradeBatch, aggs: AggBatch | None) -> None:
        with self.lock:
            for s in np.unique(batch.sym).tolist():
                r = batch.sym == s
                self.trades[s].append({"id": batch.trade_id[r], "price": batch.price[r], "qty": batch.qty[r],
                                       "time": batch.time_ms[r], "event": batch.event_ms[r],
                                       "m": batch.is_buyer_maker[r], "ttype": batch.trade_type[r]})
            if aggs is not None:
                for s in np.unique(aggs.sym).tolist():
                    r = aggs.sym == s
                    self.aggs[s].append({"id": aggs.agg_id[r], "price": aggs.price[r], "qty": aggs.qty[r],
                                         "first": aggs.first_id[r], "last": aggs.last_id[r],
                                         "time": aggs.time_ms[r], "event": aggs.event_ms[r],
                                         "m": aggs.is_buyer_maker[r]})


# =============================================================================
# REST
# =============================================================================
class _ApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


# (default, max) limit per market and endpoint (Binance spot and USD-M docs; futures
# historicalTrades: default 100, max 500). Larger limits are clamped to the max.
_LIMITS = {
    "spot": {"aggTrades": (500, 1000), "historicalTrades": (500, 1000), "trades": (500, 1000), "klines": (500, 1000)},
    "usdm": {"aggTrades": (500, 1000), "historicalTrades": (100, 500), "trades": (500, 1000), "klines": (500, 1500)},
}
_MINUTE_MS = 60_000
_INTERVALS_MS = {
    "1s": 1000, "1m": _MINUTE_MS, "3m": 3 * _MINUTE_MS, "5m": 5 * _MINUTE_MS, "15m": 15 * _MINUTE_MS,
    "30m": 30 * _MINUTE_MS, "1h": 60 * _MINUTE_MS, "2h": 120 * _MINUTE_MS, "4h": 240 * _MINUTE_MS,
    "6h": 360 * _MINUTE_MS, "8h": 480 * _MINUTE_MS, "12h": 720 * _MINUTE_MS, "1d": 1440 * _MINUTE_MS,
    "3d": 3 * 1440 * _MINUTE_MS, "1w": 7 * 1440 * _MINUTE_MS, "1M": -1,
}
_WEEK_OFFSET_MS = 4 * 1440 * _MINUTE_MS  # weekly klines open on Mondays; 1970-01-01 was a Thursday
_AGG_WINDOW_MS = 3_600_000  # USD-M aggTrades: startTime..endTime may span at most 1 hour
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not re.fullmatch(r"-?[0-9]{1,20}", text):
        raise _ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(text)


def _exact_product_sum(price: np.ndarray, qty: np.ndarray, starts: np.ndarray) -> list[int]:
    """Exact sums of ``price * qty`` per group (Python ints: int64 would overflow)."""
    if price.size == 0:
        return []
    prod = price.astype(object) * qty.astype(object)
    return np.add.reduceat(prod, starts).tolist()


def _round_units(value: int, from_dp: int, to_dp: int) -> int:
    """Round ``value`` (units of 10**-from_dp) to units of 10**-to_dp, half up."""
    if to_dp >= from_dp:
        return value * 10 ** (to_dp - from_dp)
    div = 10 ** (from_dp - to_dp)
    return (value + div // 2) // div


class _RestApi:
    """Binance's market-data REST endpoints over the tape. Runs on the server's loop."""

    def __init__(self, tape: _Tape, specs: Sequence[SymbolSpec], faults: Faults, stats: ReplayStats):
        self.tape = tape
        self.inst = tape.instruments
        self.market = self.inst.market
        self.prefix = "/api/v3" if self.market == "spot" else "/fapi/v1"
        self.specs = {s.symbol: s for s in specs}
        self.stats = stats
        self.faults = faults
        self._throttle_left = faults.rest_429_count
        self._weight_minute = 0
        self._weight_used = 0

    # --- dispatch --------------------------------------------------------------
    def handle(self, target: str, headers: Mapping[str, str]) -> tuple[int, bytes, list[tuple[str, str]]]:
        """``(HTTP status, JSON body, extra headers)`` for a GET of ``target``."""
        self.stats.rest_requests += 1
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if not path.startswith(self.prefix + "/"):
            return 404, orjson.dumps({"code": -1, "msg": f"Unknown path {path}; this server is {self.market}, "
                                                          f"its REST lives under {self.prefix}"}), []
        endpoint = path[len(self.prefix) + 1:]
        handler = {
            "ping": self._ping, "time": self._time, "exchangeInfo": self._exchange_info,
            "aggTrades": self._agg_trades, "historicalTrades": self._historical_trades,
            "trades": self._recent_trades, "klines": self._klines,
        }.get(endpoint)
        if handler is None:
            return 404, orjson.dumps({"code": -1, "msg": f"Unknown endpoint {path}"}), []
        if self._throttle_left > 0:
            # Fault: one (or N) 429 with Retry-After, as Binance answers an IP over its
            # weight budget (BINANCE.md "Endpoints"; errors.md -1003).
            self._throttle_left -= 1
            self.stats.rest_throttled += 1
            body = {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) is "
                                          f"{binance.REST_WEIGHT_BUDGET_PER_MIN[self.market]} requests per minute. "
                                          "Please use the websocket for live updates to avoid polling the API."}
            return 429, orjson.dumps(body), [("Retry-After", str(self.faults.retry_after_s))]
        weight_header = self._count_weight(endpoint)
        try:
            if endpoint == "historicalTrades" and self.market == "usdm" and "X-MBX-APIKEY" not in headers:
                # fapi historicalTrades is MARKET_DATA: it wants an API key (any value here).
                raise _ApiError(-2014, "API-key format invalid.", 401)
            result = handler(params)
        except _ApiError as exc:
            return exc.status, orjson.dumps({"code": exc.code, "msg": exc.msg}), [weight_header]
        return 200, orjson.dumps(result), [weight_header]

    def _count_weight(self, endpoint: str) -> tuple[str, str]:
        minute = _now_ms() // _MINUTE_MS
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        self._weight_used += binance.REST_WEIGHTS[self.market].get(endpoint, 1)
        return "X-MBX-USED-WEIGHT-1M", str(self._weight_used)

    def _symbol(self, params: Mapping[str, str]) -> int:
        sym = params.get("symbol")
        if not sym:
            raise _ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not re.fullmatch(r"[A-Z0-9-_.]{1,20}", sym):
            raise _ApiError(-1100, "Illegal characters found in parameter 'symbol'; legal range is "
                                   "'^[A-Z0-9-_.]{1,20}$'.")
        i = self.inst.index(sym)
        if i < 0:
            raise _ApiError(-1121, "Invalid symbol.")
        return i

    def _limit(self, params: Mapping[str, str], endpoint: str) -> int:
        default, maximum = _LIMITS[self.market][endpoint]
        value = _int_param(params, "limit")
        return default if value is None else max(1, min(maximum, value))

    # --- endpoints ---------------------------------------------------------------
    def _ping(self, params: Mapping[str, str]) -> dict:
        return {}

    def _time(self, params: Mapping[str, str]) -> dict:
        return {"serverTime": _now_ms()}

    def _exchange_info(self, params: Mapping[str, str]) -> dict:
        wanted = list(self.inst.symbols)
        if params.get("symbol"):
            wanted = [self.inst.symbols[self._symbol(params)]]
        elif params.get("symbols"):
            try:
                asked = orjson.loads(params["symbols"])
            except orjson.JSONDecodeError:
                raise _ApiError(-1100, "Illegal characters found in parameter 'symbols'.") from None
            if not isinstance(asked, list) or any(self.inst.index(str(s)) < 0 for s in asked):
                raise _ApiError(-1121, "Invalid symbol.")
            wanted = [str(s) for s in asked]
        budget = binance.REST_WEIGHT_BUDGET_PER_MIN[self.market]
        info: dict[str, Any] = {"timezone": "UTC", "serverTime": _now_ms()}
        if self.market == "usdm":
            info["futuresType"] = "U_MARGINED"
        info["rateLimits"] = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                               "limit": budget}]
        info["exchangeFilters"] = []
        info["symbols"] = [self._symbol_info(s) for s in wanted]
        return info

    def _symbol_info(self, symbol: str) -> dict:
        spec = self.specs[symbol]
        base = next((symbol[:-len(q)] for q in _QUOTES if symbol.endswith(q) and len(symbol) > len(q)), symbol[:-4])
        quote = symbol[len(base):]
        pdp, qdp = spec.price_dp, spec.qty_dp
        filters = [
            {"filterType": "PRICE_FILTER", "minPrice": format_decimal(spec.tick_units, pdp),
             "maxPrice": format_decimal(1_000_000 * 10 ** pdp, pdp), "tickSize": format_decimal(spec.tick_units, pdp)},
            {"filterType": "LOT_SIZE", "minQty": format_decimal(spec.step_units, qdp),
             "maxQty": format_decimal(9000 * 10 ** qdp, qdp), "stepSize": format_decimal(spec.step_units, qdp)},
        ]
        if self.market == "spot":
            return {"symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
                    "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True, "filters": filters,
                    "permissions": [], "permissionSets": [["SPOT"]]}
        return {"symbol": symbol, "pair": symbol, "contractType": "PERPETUAL", "status": "TRADING",
                "baseAsset": base, "quoteAsset": quote, "marginAsset": quote, "pricePrecision": pdp,
                "quantityPrecision": qdp, "baseAssetPrecision": 8, "quotePrecision": 8, "filters": filters}

    def _trade_rows(self, s: int, rows: np.ndarray, cols: _Columns) -> list[dict]:
        pdp, qdp = self.inst.price_dp[s], self.inst.qty_dp[s]
        ids, price, qty = cols["id"][rows].tolist(), cols["price"][rows].tolist(), cols["qty"][rows].tolist()
        t, m = cols["time"][rows].tolist(), cols["m"][rows].tolist()
        out = []
        for i in range(len(ids)):
            quote = price[i] * qty[i]  # exact, units of 10**-(pdp + qdp)
            if self.market == "spot":
                quote_s = format_decimal(_round_units(quote, pdp + qdp, SPOT_DECIMALS), SPOT_DECIMALS)
                out.append({"id": ids[i], "price": format_decimal(price[i], pdp), "qty": format_decimal(qty[i], qdp),
                            "quoteQty": quote_s, "time": t[i], "isBuyerMaker": m[i], "isBestMatch": True})
            else:  # futures spell quoteQty without trailing zeros (as in their trade archives)
                quote_s = format_decimal(quote, pdp + qdp)
                quote_s = quote_s.rstrip("0").rstrip(".") if "." in quote_s else quote_s
                out.append({"id": ids[i], "price": format_decimal(price[i], pdp), "qty": format_decimal(qty[i], qdp),
                            "quoteQty": quote_s, "time": t[i], "isBuyerMaker": m[i]})
        return out

    def _market_rows(self, cols: _Columns, lo: int, limit: int, *, latest: bool) -> np.ndarray:
        """Rows from ``lo`` on (or the latest) holding market fills only: futures REST
        trades leave out insurance-fund, ADL and NA prints (USD-M docs, "Recent Trades List")."""
        if self.market == "spot":
            n = len(cols)
            return np.arange(max(lo, n - limit), n) if latest else np.arange(lo, min(n, lo + limit))
        ok = lo + np.flatnonzero(cols["ttype"][lo:] == MARKET)
        return ok[-limit:] if latest else ok[:limit]

    def _historical_trades(self, params: Mapping[str, str]) -> list[dict]:
        s = self._symbol(params)
        limit = self._limit(params, "historicalTrades")
        from_id = _int_param(params, "fromId")
        with self.tape.lock:
            cols = self.tape.trades[s]
            if from_id is None:  # "Default gets most recent trades"
                rows = self._market_rows(cols, 0, limit, latest=True)
            else:
                lo = int(np.searchsorted(cols["id"], from_id))
                rows = self._market_rows(cols, lo, limit, latest=False)
            return self._trade_rows(s, rows, cols)

    def _recent_trades(self, params: Mapping[str, str]) -> list[dict]:
        s = self._symbol(params)
        limit = self._limit(params, "trades")
        with self.tape.lock:
            cols = self.tape.trades[s]
            return self._trade_rows(s, self._market_rows(cols, 0, limit, latest=True), cols)

    def _agg_trades(self, params: Mapping[str, str]) -> list[dict]:
        s = self._symbol(params)
        limit = self._limit(params, "aggTrades")
        from_id = _int_param(params, "fromId")
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        if self.market == "usdm" and start is not None and end is not None and end - start > _AGG_WINDOW_MS:
            # USD-M refuses windows longer than one hour; exactly one hour is fine (ccxt's
            # fetch_trades(since=...) and python-binance's aggregate_trade_iter send that).
            # Spot has no limit since Binance's 2022-12-05 change.
            raise _ApiError(-1127, "More than 1 hours between startTime and endTime.")
        pdp, qdp = self.inst.price_dp[s], self.inst.qty_dp[s]
        with self.tape.lock:
            cols = self.tape.aggs[s]
            ids, t = cols["id"], cols["time"]
            lo, hi = 0, len(cols)
            if from_id is not None:
                lo = max(lo, int(np.searchsorted(ids, from_id)))
            if start is not None:
                lo = max(lo, int(np.searchsorted(t, start, side="left")))
            if end is not None:
                hi = min(hi, int(np.searchsorted(t, end, side="right")))
            if from_id is None and start is None:  # latest (up to endTime, if given)
                rows = np.arange(max(lo, hi - limit), hi)
            else:
                rows = np.arange(lo, max(lo, min(hi, lo + limit)))
            a, price, qty = cols["id"][rows].tolist(), cols["price"][rows].tolist(), cols["qty"][rows].tolist()
            f, l_, tt, m = (cols["first"][rows].tolist(), cols["last"][rows].tolist(), t[rows].tolist(),
                            cols["m"][rows].tolist())
        out = []
        for i in range(len(a)):
            row = {"a": a[i], "p": format_decimal(price[i], pdp), "q": format_decimal(qty[i], qdp),
                   "f": f[i], "l": l_[i], "T": tt[i], "m": m[i]}
            if self.market == "spot":
                row["M"] = True
            out.append(row)
        return out

    def _klines(self, params: Mapping[str, str]) -> list[list]:
        s = self._symbol(params)
        interval = params.get("interval")
        if not interval:
            raise _ApiError(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        iv = _INTERVALS_MS.get(interval)
        if iv is None or (interval == "1s" and self.market == "usdm"):
            raise _ApiError(-1120, "Invalid interval.")
        limit = self._limit(params, "klines")
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        with self.tape.lock:
            cols = self.tape.trades[s]
            ok = _kline_rows(cols["ttype"], cols["price"], cols["qty"])
            t, ids = cols["time"][ok], cols["id"][ok]
            price, qty, maker = cols["price"][ok], cols["qty"][ok], cols["m"][ok]
        if t.size == 0:
            return []
        g = _kline_groups(t, ids, price, qty, maker, interval)
        keys = g["t"]
        bars = {ot: tuple(g[k][i] for k in ("o", "h", "l", "c", "v", "q", "n", "V", "Q"))
                for i, ot in enumerate(keys.tolist())}
        fmt = _KlineFormat(self.market, self.inst.price_dp[s], self.inst.qty_dp[s])
        # Every interval from the first trade to the last is a row; an empty one is flat
        # at the previous close with zero volume, as Binance's klines are.
        all_opens = _interval_range(int(keys[0]), int(keys[-1]), interval)
        if start is not None:
            all_opens = all_opens[all_opens >= start]
        if end is not None:
            all_opens = all_opens[all_opens <= end]
        all_opens = all_opens[:limit] if start is not None else all_opens[-limit:]
        out = []
        prev_close = None
        first = int(all_opens[0]) if all_opens.size else None
        if first is not None:  # the close before the window seeds a leading empty bar
            before = keys[keys < first]
            if before.size:
                prev_close = bars[int(before[-1])][3]
        for ot in all_opens.tolist():
            bar = bars.get(ot)
            if bar is None:
                c = prev_close if prev_close is not None else 0
                bar = (c, c, c, c, 0, 0, 0, 0, 0)
            o, h, lo, c, v, q, n, tv, tq = bar
            prev_close = c
            out.append([ot, fmt.price(o), fmt.price(h), fmt.price(lo), fmt.price(c), fmt.qty(v),
                        _close_time(ot, interval), fmt.quote(q), n, fmt.qty(tv), fmt.quote(tq), "0"])
        return out


def _kline_rows(ttype: np.ndarray, price: np.ndarray, qty: np.ndarray) -> np.ndarray:
    """Rows that count in klines: market fills with a positive price and quantity
    (futures klines leave out insurance-fund, ADL and NA prints, BINANCE.md "Messages")."""
    return np.flatnonzero((ttype == MARKET) & (price > 0) & (qty > 0))


def _kline_groups(t: np.ndarray, ids: np.ndarray, price: np.ndarray, qty: np.ndarray, maker: np.ndarray,
                  interval: str) -> dict[str, Any]:
    """One kline per interval holding trades: the one aggregation used by REST
    ``klines`` and by the ``@kline_<interval>`` streams.

    Parameters
    ----------
    t, ids : trade times (ms, UTC) and trade ids, in trade order.
    price, qty : exact integers (units of ``10**-price_dp`` and ``10**-qty_dp``).
    maker : ``m`` (buyer is maker: the taker sold).
    interval : a Binance kline interval (``1s`` .. ``1M``).

    Returns
    -------
    dict of lists (and ``t``, an int64 array of open times, ms): ``o, h, l, c``
    prices; ``v`` volume and ``V`` taker-buy volume (qty units); ``q`` quote volume and
    ``Q`` taker-buy quote volume, exact :math:`\\sum p_i q_i` in units of
    ``10**-(price_dp + qty_dp)``; ``n`` trade count; ``f``, ``L`` first and last trade id;
    ``start`` the row of each bar's first trade.
    Bars are keyed by the open time of each trade's interval; a trade time earlier than
    its predecessor's stays in the running bar (ids order the tape).
    """
    opens = np.maximum.accumulate(_open_times(t, interval))
    starts = np.flatnonzero(np.r_[True, opens[1:] != opens[:-1]])
    ends = np.append(starts[1:], t.size) - 1
    buy_qty = np.where(maker, 0, qty)  # m false: the buyer was the taker
    return {
        "t": opens[starts], "o": price[starts].tolist(), "h": np.maximum.reduceat(price, starts).tolist(),
        "l": np.minimum.reduceat(price, starts).tolist(), "c": price[ends].tolist(),
        "v": np.add.reduceat(qty, starts).tolist(), "q": _exact_product_sum(price, qty, starts),
        "n": (ends - starts + 1).tolist(), "V": np.add.reduceat(buy_qty, starts).tolist(),
        "Q": _exact_product_sum(price, buy_qty, starts), "f": ids[starts].tolist(), "L": ids[ends].tolist(),
        "start": starts,
    }


class _KlineFormat:
    """Binance's spelling of kline numbers: prices and volumes in the symbol's decimals,
    quote volumes in 8 decimals on spot and ``min(8, price_dp + qty_dp)`` on USD-M."""

    def __init__(self, market: str, pdp: int, qdp: int):
        self.pdp, self.qdp = pdp, qdp
        self.qvol_dp = SPOT_DECIMALS if market == "spot" else min(8, pdp + qdp)

    def price(self, units: int) -> str:
        return format_decimal(units, self.pdp)

    def qty(self, units: int) -> str:
        return format_decimal(units, self.qdp)

    def quote(self, exact: int) -> str:
        return format_decimal(_round_units(exact, self.pdp + self.qdp, self.qvol_dp), self.qvol_dp)


def _open_times(t: np.ndarray, interval: str) -> np.ndarray:
    """Open time (ms) of the kline holding each trade time ``t`` (ms, UTC)."""
    if interval == "1M":
        months = t.astype("datetime64[ms]").astype("datetime64[M]")
        return months.astype("datetime64[ms]").astype(np.int64)
    iv = _INTERVALS_MS[interval]
    offset = _WEEK_OFFSET_MS if interval == "1w" else 0
    return t - (t - offset) % iv


def _interval_range(first: int, last: int, interval: str) -> np.ndarray:
    if interval == "1M":
        months = np.arange(np.datetime64(first, "ms").astype("datetime64[M]"),
                           np.datetime64(last, "ms").astype("datetime64[M]") + 1)
        return months.astype("datetime64[ms]").astype(np.int64)
    return np.arange(first, last + 1, _INTERVALS_MS[interval], dtype=np.int64)


def _close_time(open_ms: int, interval: str) -> int:
    if interval == "1M":
        nxt = (np.datetime64(open_ms, "ms").astype("datetime64[M]") + 1).astype("datetime64[ms]")
        return int(nxt.astype(np.int64)) - 1
    return open_ms + _INTERVALS_MS[interval] - 1


def _http_response(status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()) -> Response:
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Type", "application/json;charset=UTF-8"), ("Content-Length", str(len(body))),
                       *extra])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)
