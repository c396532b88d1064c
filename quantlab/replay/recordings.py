"""Recordings read into trade batches: WebSocket captures (trades plus the
``bookTicker``/``depth`` extras, through :func:`quantlab.files.capture_trade`) and
data.binance.vision ``trades`` files.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import orjson
import pandas as pd

from quantlab.config import require_choice
from quantlab.errors import DataFileError
from quantlab.files import capture_market, capture_trade, iter_capture, load_trades
from quantlab.schema import MARKETS
from quantlab.synthetic import (
    KNOWN_SYMBOLS,
    MARKET,
    SPOT_DECIMALS,
    TRADE_TYPES,
    Instruments,
    SymbolSpec,
    TradeBatch,
    default_spec,
)


def _recorded_spec(symbol: str, inst: Instruments) -> SymbolSpec:
    """exchangeInfo values of a recorded symbol: known tick/step if they fit its decimals."""
    i = inst.index(symbol)
    pdp, qdp = inst.price_dp[i], inst.qty_dp[i]
    spec = default_spec(symbol, inst.market)
    tick, step = spec.tick, spec.step
    if round(tick * 10 ** pdp, 6) % 1 or tick * 10 ** pdp < 1:
        tick = 10.0 ** -pdp
    if round(step * 10 ** qdp, 6) % 1 or step * 10 ** qdp < 1:
        step = 10.0 ** -qdp
    return dataclasses.replace(spec, tick=tick, step=step, price_dp=pdp, qty_dp=qdp)


def _shift_payload(data: bytes, shift_ms: int) -> bytes:
    """A recorded payload with its event and transaction times (``E``, ``T``) moved by
    ``shift_ms`` (rebased replays); every other byte of meaning kept (key order too)."""
    obj = orjson.loads(data)
    for key in ("E", "T"):
        if isinstance(obj.get(key), int):
            obj[key] += shift_ms
    return orjson.dumps(obj)


def _decimals(text: str) -> int:
    dot = text.find(".")
    return 0 if dot < 0 else len(text) - dot - 1


def _units(text: str, dp: int) -> int:
    """Exact integer of a decimal string in units of ``10**-dp`` (``"61.50", 3 -> 61500``)."""
    whole, _, frac = text.partition(".")
    if len(frac) > dp:
        raise ValueError(f"{text!r} has more than {dp} decimals")
    return int(whole + frac.ljust(dp, "0"))


class Extras(NamedTuple):
    """Recorded messages of streams other than trades (``bookTicker``, ``depth...``),
    replayed as recorded: ``data`` payloads, exact bytes.

    Attributes
    ----------
    ns : receive time of each message (ns, non-decreasing).
    sym : symbol index of each (into the source's :class:`~quantlab.synthetic.Instruments`).
    kind : stream kind after the ``@`` (``"bookTicker"``, ``"depth@100ms"``).
    data : the ``data`` payload of each message (bytes).
    """

    ns: np.ndarray
    sym: np.ndarray
    kind: list[str]
    data: list[bytes]

    def streams(self) -> set[tuple[int, str]]:
        """``(symbol index, kind)`` of every stream held."""
        return set(zip(self.sym.tolist(), self.kind))


def _extra_market(data: str) -> str:
    # Futures bookTicker carries "e":"bookTicker" (spot's has no event type) and futures
    # depth updates carry "pu" (previous final update id); spot has neither.
    return "usdm" if '"e":"bookTicker"' in data or '"pu":' in data else "spot"


def _read_captures(paths: Sequence[str | Path], want: set[str] | None) -> tuple[dict[str, list[tuple]],
                                                                              dict[str, list[tuple]]]:
    """Trade rows and extra-stream rows of captures, by market (``"spot"``/``"usdm"``)."""
    rows: dict[str, list[tuple]] = {"spot": [], "usdm": []}
    extras: dict[str, list[tuple]] = {"spot": [], "usdm": []}
    for path in paths:
        for ns, raw in iter_capture(path):
            if '"e":"trade"' not in raw:  # depth/bookTicker lines are most of a capture
                if not raw.startswith('{"stream":"'):
                    continue  # a REST depth snapshot
                end = raw.find('"', 11)
                stream = raw[11:end]
                head = f'{{"stream":"{stream}","data":'
                if not raw.startswith(head) or not raw.endswith("}"):
                    continue
                name, _, kind = stream.partition("@")
                if not (kind == "bookTicker" or kind.startswith("depth")):
                    continue
                sym = name.upper()
                if want is not None and sym not in want:
                    continue
                data = raw[len(head):-1]
                extras[_extra_market(data)].append((ns, sym, kind, data.encode()))
                continue
            try:
                data = capture_trade(raw)
            except ValueError:  # orjson.JSONDecodeError
                continue  # a cut last line; io.iter_capture reports truncation itself
            if data is None or data.get("e") != "trade":
                continue
            sym = str(data["s"]).upper()
            if want is not None and sym not in want:
                continue
            m = capture_market(data)
            rows[m].append((ns, sym, int(data["t"]), str(data["p"]), str(data["q"]), int(data["T"]),
                            int(data.get("E", data["T"])), bool(data["m"]), data.get("X", "MARKET")))
    return rows, extras


def load_capture(paths: Sequence[str | Path] | str | Path, *, symbols: Sequence[str] | None = None,
                 market: str | None = None, extras: bool = False):
    """``@trade`` messages of captures -> (batch in receive order, receive times in ns).

    Market from the payloads (:func:`quantlab.files.capture_market`: spot carries ``M``); mixing is an error unless
    ``market`` picks one. Decimals per symbol from the strings (spot 8, e.g. futures
    BTCUSDT 2 and 3). With ``extras=True`` the result has a third item, the
    :class:`Extras` (``bookTicker`` and ``depth`` messages) of the same market.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    by_market = load_capture_markets(paths, symbols=symbols)
    if market is None:
        if len(by_market) > 1:
            raise DataFileError(", ".join(str(p) for p in paths),
                                "mixes spot and USD-M trades; replay one market per source "
                                "(`quantlab replay --market both` serves each from its own tape)")
        market = next(iter(by_market))
    require_choice("market", market, MARKETS)
    if market not in by_market:
        raise DataFileError(", ".join(str(p) for p in paths), f"no {market} @trade messages"
                            + (f" for {sorted(s.upper() for s in symbols)}" if symbols else ""))
    batch, sched, x = by_market[market]
    return (batch, sched, x) if extras else (batch, sched)


def load_capture_markets(paths: Sequence[str | Path], *, symbols: Sequence[str] | None = None
                         ) -> dict[str, tuple[TradeBatch, np.ndarray, Extras]]:
    """Every market of the captures, read once: ``{"spot"|"usdm": (batch, receive ns,
    extras)}`` for the markets that have ``@trade`` messages; at least one or
    :class:`~quantlab.errors.DataFileError`."""
    want = {s.upper() for s in symbols} if symbols else None
    rows, extra_rows = _read_captures(paths, want)
    out = {}
    for m in MARKETS:
        if rows[m]:
            batch, sched = _capture_batch(rows[m], m)
            out[m] = (batch, sched, _capture_extras(extra_rows[m], batch.instruments))
    if not out:
        raise DataFileError(", ".join(str(p) for p in paths), "no @trade messages"
                            + (f" for {sorted(want)}" if want else ""))
    return out


def _capture_extras(rows: list[tuple], inst: Instruments) -> Extras:
    keep = [r for r in rows if inst.index(r[1]) >= 0]  # streams of symbols that trade here
    keep.sort(key=lambda r: r[0])
    return Extras(np.array([r[0] for r in keep], np.int64),
                  np.array([inst.index(r[1]) for r in keep], np.int16),
                  [r[2] for r in keep], [r[3] for r in keep])


def _capture_batch(rows: list[tuple], market: str) -> tuple[TradeBatch, np.ndarray]:
    rows.sort(key=lambda r: r[0])  # stable: merge files by receive time
    names = list(dict.fromkeys(r[1] for r in rows))
    pdp = {s: 0 for s in names}
    qdp = {s: 0 for s in names}
    for r in rows:
        pdp[r[1]] = max(pdp[r[1]], _decimals(r[3]))
        qdp[r[1]] = max(qdp[r[1]], _decimals(r[4]))
    inst = Instruments(market, tuple(names), tuple(pdp[s] for s in names), tuple(qdp[s] for s in names))
    seen: set[tuple[str, int]] = set()
    keep = []
    for r in rows:  # overlapping files repeat messages: keep the first
        key = (r[1], r[2])
        if key not in seen:
            seen.add(key)
            keep.append(r)
    index = {s: i for i, s in enumerate(names)}
    ttype_code = {t: i for i, t in enumerate(TRADE_TYPES)}
    batch = TradeBatch(
        inst,
        np.array([index[r[1]] for r in keep], np.int16),
        np.array([r[2] for r in keep], np.int64),
        np.array([_units(r[3], pdp[r[1]]) for r in keep], np.int64),
        np.array([_units(r[4], qdp[r[1]]) for r in keep], np.int64),
        np.array([r[5] for r in keep], np.int64),
        np.array([r[6] for r in keep], np.int64),
        np.array([r[7] for r in keep], bool),
        np.array([ttype_code.get(r[8], MARKET) for r in keep], np.int8),
    )
    return batch, np.array([r[0] for r in keep], np.int64)


def _fit_decimals(values: np.ndarray, max_dp: int = 8) -> int:
    """Fewest decimals (<= max_dp) that spell every float of ``values`` exactly."""
    for dp in range(max_dp + 1):
        scaled = values * 10.0 ** dp
        if np.all(np.abs(scaled - np.rint(scaled)) < 1e-6):
            return dp
    return max_dp


def load_trade_files(paths: Sequence[str | Path] | str | Path, *, symbols: Sequence[str] | None = None,
                     market: str | None = None, keep_market: str | None = None) -> TradeBatch:
    """data.binance.vision ``trades`` files -> one batch sorted by time then id.

    Read with :func:`quantlab.files.load_trades`; prices/quantities are turned back into
    exact integers: spot with 8 decimals; futures with the contract's decimals for the
    symbols :func:`~quantlab.synthetic.default_spec` knows (BTCUSDT ``"61800.30"``,
    ``"0.006"``: the archive's floats lost the trailing zeros), else the fewest decimals
    that spell every value. ``keep_market`` keeps the trades of that market only (files
    of both markets for ``--market both``).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [load_trades(p, market=market) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    if keep_market is not None:
        frame = frame[frame["market"] == keep_market]
        if frame.empty:
            raise DataFileError(", ".join(str(p) for p in paths), f"no {keep_market} trades")
    if frame.empty:
        raise DataFileError(", ".join(str(p) for p in paths), "no trades")
    if set(frame["kind"]) != {"trade"}:
        raise DataFileError(", ".join(str(p) for p in paths),
                            "holds aggTrades; replay needs raw trades files (`trades`, not `aggTrades`)")
    markets = set(frame["market"])
    if len(markets) != 1:
        raise DataFileError(", ".join(str(p) for p in paths), f"mixes markets {sorted(markets)}")
    mkt = markets.pop()
    if symbols:
        frame = frame[frame["symbol"].isin({s.upper() for s in symbols})]
        if frame.empty:
            raise DataFileError(", ".join(str(p) for p in paths), f"no trades of {list(symbols)}")
    frame = frame.drop_duplicates(["symbol", "trade_id"]).sort_values(["time_ms", "trade_id"], kind="stable")
    names = list(dict.fromkeys(frame["symbol"]))
    sym = frame["symbol"].map({s: i for i, s in enumerate(names)}).to_numpy(np.int16)
    price = frame["price"].to_numpy(np.float64)
    qty = frame["qty"].to_numpy(np.float64)
    pdp, qdp = [], []
    for i in range(len(names)):
        mask = sym == i
        if mkt == "spot":
            pdp.append(SPOT_DECIMALS)
            qdp.append(SPOT_DECIMALS)
            continue
        known = default_spec(names[i], "usdm") if names[i] in KNOWN_SYMBOLS else None
        pdp.append(max(_fit_decimals(price[mask]), known.price_dp if known else 0))
        qdp.append(max(_fit_decimals(qty[mask]), known.qty_dp if known else 0))
    scale_p = 10.0 ** np.asarray(pdp)[sym]
    scale_q = 10.0 ** np.asarray(qdp)[sym]
    ttypes = frame["trade_type"].to_numpy(object)
    code = {t: i for i, t in enumerate(TRADE_TYPES)}
    t = frame["time_ms"].to_numpy(np.int64)
    return TradeBatch(
        Instruments(mkt, tuple(names), tuple(pdp), tuple(qdp)), sym,
        frame["trade_id"].to_numpy(np.int64), np.rint(price * scale_p).astype(np.int64),
        np.rint(qty * scale_q).astype(np.int64), t, t.copy(),
        frame["is_buyer_maker"].to_numpy(bool),
        np.array([code.get(x, MARKET) if x is not None else MARKET for x in ttypes], np.int8),
    )
