"""Seeded synthetic Binance trades of a cointegrated basket, and their exact wire text.

Pure: numpy and pandas only; no I/O, no thread, no clock (every time is either
simulated or handed in by the caller). :mod:`quantlab.replay` serves what this module
generates; analytics tests use it as a pair with known parameters.

The model
---------
Taker orders arrive as a Poisson process (``rate`` trades/s over all symbols, divided by
the mean number of fills per order). Symbol 0 is the random-walk leg ``x``; every other
symbol ``i`` is tied to it by a cointegrating relation in log prices:

.. math::

    \\log p_0(t) = \\log P_0 + \\sigma_x W(t), \\qquad
    \\log p_i(t) = \\alpha_i + \\beta_i \\log p_0(t) + s_i(t),

    ds_i = -\\kappa\\, s_i\\, dt + \\sigma_s\\, dB_i(t), \\qquad
    \\sigma_s = \\text{spread\\_std} \\sqrt{2\\kappa},

with time in seconds, :math:`\\alpha_i = \\log P_i - \\beta_i \\log P_0` (so every symbol
starts at its reference price :math:`P_i`) and the OU spread simulated exactly between
arrivals. A taker buy fills at the mid rounded *up* to the tick, a sell rounded *down*
(a one-tick bid/ask bounce). An order has ``1 + Geometric`` fills with the same side and
exchange time; each further fill may walk one tick deeper. Quantities are lognormal
around a median notional, rounded to the symbol's step. Trade ids are contiguous per
symbol and start at realistic large values.

USD-M futures (``market="usdm"``) add what BINANCE.md ("Messages") says real futures
raw trades carry: a fraction of non-market prints (``INSURANCE_FUND`` and ``ADL`` far
from the market, ``NA`` with price and quantity 0) which consume raw ids, and a fraction
of ids that are never emitted at all (holes).

Numbers are kept as integers in units of the wire's last decimal (``price_dp`` /
``qty_dp`` per symbol: 8 on spot, the contract precision on futures) so that the text
sent is exact and identical on every path (stream, REST, files).

Examples
--------
>>> m = SyntheticMarket(("BTCUSDT", "ETHUSDT"), seed=7, rate=100.0)
>>> batch = m.generate(1000)
>>> len(batch) >= 1000, sorted(set(batch.symbol_names()))
(True, ['BTCUSDT', 'ETHUSDT'])
>>> frame = encode_trades(batch, np.array([0]))[0].decode()
>>> frame.startswith('{"stream":"') and '"e":"trade"' in frame
True
>>> float(m.beta[1]), round(m.half_life_s, 1)
(0.8, 83.2)
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.schema import MARKETS
from quantlab.config import require_choice
from quantlab.errors import ConfigError
from quantlab.schema import TICK_COLUMNS, TICK_DTYPES

# Futures raw-trade ``X`` values (BINANCE.md "Messages"), as int8 codes in batches.
TRADE_TYPES = ("MARKET", "INSURANCE_FUND", "ADL", "NA")
MARKET, INSURANCE_FUND, ADL, NA = 0, 1, 2, 3

# Default simulated clock origin: 2024-08-09 00:00:00 UTC, in ms. The server passes
# the wall clock instead, so that what it streams looks live.
DEFAULT_START_MS = 1_723_161_600_000

# Spot prices and quantities always travel with 8 decimals ("61837.63000000").
SPOT_DECIMALS = 8


# =============================================================================
# Instruments
# =============================================================================
@dataclass(frozen=True, kw_only=True)
class SymbolSpec:
    """How one symbol trades and how its numbers are spelled.

    Parameters
    ----------
    symbol : upper case, e.g. ``"BTCUSDT"``.
    price : reference (start) price, quote per base unit.
    tick : price tick, quote units. Must be a whole number of ``10**-price_dp``.
    step : quantity step, base units. Must be a whole number of ``10**-qty_dp``.
    price_dp, qty_dp : decimals on the wire (8 on spot; contract precision on futures,
        e.g. BTCUSDT futures ``"63943.90"`` and ``"0.003"``).
    qty_median : median fill quantity, base units.
    first_trade_id, first_agg_id : first raw trade id and first aggregate id.
    """

    symbol: str
    price: float
    tick: float
    step: float
    price_dp: int
    qty_dp: int
    qty_median: float
    first_trade_id: int
    first_agg_id: int

    def __post_init__(self) -> None:
        if not self.symbol or not self.symbol.isalnum() or self.symbol != self.symbol.upper():
            raise ConfigError("symbol", self.symbol, "an upper-case alphanumeric symbol such as 'BTCUSDT'")
        for name in ("price", "tick", "step", "qty_median"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{self.symbol}.{name}", getattr(self, name), "a number > 0")
        for name in ("price_dp", "qty_dp"):
            if not 0 <= getattr(self, name) <= 8:
                raise ConfigError(f"{self.symbol}.{name}", getattr(self, name), "an integer 0..8")
        for name, value, dp in (("tick", self.tick, self.price_dp), ("step", self.step, self.qty_dp)):
            units = value * 10 ** dp
            if round(units) < 1 or abs(units - round(units)) > 1e-6 * max(1.0, units):
                raise ConfigError(f"{self.symbol}.{name}", value, f"a multiple of 1e-{dp}")
        if self.first_trade_id < 0 or self.first_agg_id < 0:
            raise ConfigError(f"{self.symbol}.first_trade_id", self.first_trade_id, "an id >= 0")

    @property
    def tick_units(self) -> int:
        """Tick in units of ``10**-price_dp``."""
        return int(round(self.tick * 10 ** self.price_dp))

    @property
    def step_units(self) -> int:
        """Quantity step in units of ``10**-qty_dp``."""
        return int(round(self.step * 10 ** self.qty_dp))


# symbol: (price, spot tick, spot step, usdm tick, usdm price_dp, usdm step, usdm qty_dp,
#          first spot trade id, first usdm trade id). BTC/ETH ids and decimals are those of
# the shared 2024-08-08 capture (data/README.md); the others are plausible.
_KNOWN = {
    "BTCUSDT": (60000.0, 0.01, 0.00001, 0.10, 2, 0.001, 3, 3_735_683_259, 5_266_583_935),
    "ETHUSDT": (3000.0, 0.01, 0.0001, 0.01, 2, 0.001, 3, 1_520_538_925, 4_308_068_523),
    "BNBUSDT": (550.0, 0.01, 0.001, 0.010, 3, 0.01, 2, 802_113_571, 1_402_559_118),
    "SOLUSDT": (150.0, 0.01, 0.001, 0.01, 2, 1.0, 0, 905_431_264, 2_104_871_332),
    "XRPUSDT": (0.55, 0.0001, 1.0, 0.0001, 4, 0.1, 1, 711_092_045, 1_803_337_610),
}
KNOWN_SYMBOLS = frozenset(_KNOWN)  # symbols with realistic (not name-derived) specs
# Median notional of one fill, quote units: futures fills are larger than spot fills.
_MEDIAN_NOTIONAL = {"spot": 300.0, "usdm": 1500.0}


def default_spec(symbol: str, market: str = "spot") -> SymbolSpec:
    """A plausible :class:`SymbolSpec` for ``symbol`` on ``market``.

    BTCUSDT (~60000, tick 0.01 spot / 0.10 futures), ETHUSDT (~3000, tick 0.01),
    BNBUSDT, SOLUSDT and XRPUSDT have realistic values; any other symbol gets a price in
    [1, 201) derived from its name (stable across runs), tick 0.001 and step 0.01
    (spot) or 0.1 (futures).

    >>> s = default_spec("BTCUSDT", "usdm")
    >>> (s.price, s.tick, s.price_dp, s.step, s.qty_dp, s.first_trade_id)
    (60000.0, 0.1, 2, 0.001, 3, 5266583935)
    """
    require_choice("market", market, MARKETS)
    symbol = symbol.upper()
    if symbol in _KNOWN:
        price, s_tick, s_step, u_tick, u_pdp, u_step, u_qdp, s_id, u_id = _KNOWN[symbol]
    else:
        h = zlib.crc32(symbol.encode())
        price = 1.0 + (h % 20000) / 100.0
        s_tick, s_step, u_tick, u_pdp, u_step, u_qdp = 0.001, 0.01, 0.001, 3, 0.1, 1
        s_id = u_id = 100_000_000 + h % 900_000_000
    if market == "spot":
        tick, step, pdp, qdp, first = s_tick, s_step, SPOT_DECIMALS, SPOT_DECIMALS, s_id
    else:
        tick, step, pdp, qdp, first = u_tick, u_step, u_pdp, u_qdp, u_id
    return SymbolSpec(symbol=symbol, price=price, tick=tick, step=step, price_dp=pdp, qty_dp=qdp,
                      qty_median=_MEDIAN_NOTIONAL[market] / price, first_trade_id=first,
                      first_agg_id=int(first * 0.85))


@dataclass(frozen=True)
class Instruments:
    """The symbols of a batch and how their numbers are spelled on the wire.

    ``symbols[i]`` is the symbol whose index is ``i`` in a batch's ``sym`` column;
    ``price_dp[i]`` / ``qty_dp[i]`` are its wire decimals.
    """

    market: str
    symbols: tuple[str, ...]
    price_dp: tuple[int, ...]
    qty_dp: tuple[int, ...]

    def __post_init__(self) -> None:
        require_choice("market", self.market, MARKETS)
        if not (len(self.symbols) == len(self.price_dp) == len(self.qty_dp)) or not self.symbols:
            raise ConfigError("instruments", self.symbols, "one price_dp and qty_dp per symbol")

    def index(self, symbol: str) -> int:
        """Position of ``symbol`` (upper case); ``-1`` when absent."""
        try:
            return self.symbols.index(symbol)
        except ValueError:
            return -1


# =============================================================================
# Batches
# =============================================================================
class _Columns:
    """What trade and aggregate batches share: symbol names and prices and
    quantities as floats from their integer (tick/step) encoding."""

    instruments: "Instruments"
    sym: np.ndarray
    price: np.ndarray
    qty: np.ndarray

    @property
    def market(self) -> str:
        return self.instruments.market

    def symbol_names(self) -> np.ndarray:
        """Symbol of every row (object array of str)."""
        return np.asarray(self.instruments.symbols, dtype=object)[self.sym]

    def price_float(self) -> np.ndarray:
        """Prices as float64, quote per base unit."""
        return self.price / _pow10(self.instruments.price_dp)[self.sym]

    def qty_float(self) -> np.ndarray:
        """Quantities as float64, base units."""
        return self.qty / _pow10(self.instruments.qty_dp)[self.sym]


@dataclass(frozen=True, eq=False)
class TradeBatch(_Columns):
    """Raw trades as columns (numpy arrays of equal length), in emission order.

    Attributes
    ----------
    instruments : symbols and wire decimals.
    sym : int16, index into ``instruments.symbols``.
    trade_id : int64, raw trade id ``t``.
    price : int64, price in units of ``10**-price_dp[sym]`` (0 for ``NA`` prints).
    qty : int64, quantity in units of ``10**-qty_dp[sym]`` (0 for ``NA`` prints).
    time_ms : int64, exchange trade time ``T``, ms since epoch UTC.
    event_ms : int64, event time ``E``, ms (>= ``time_ms``).
    is_buyer_maker : bool, ``m``; true means the taker sold.
    trade_type : int8, index into :data:`TRADE_TYPES` (always ``MARKET`` on spot).
    """

    instruments: Instruments
    sym: np.ndarray
    trade_id: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    time_ms: np.ndarray
    event_ms: np.ndarray
    is_buyer_maker: np.ndarray
    trade_type: np.ndarray

    def __len__(self) -> int:
        return int(self.trade_id.shape[0])

    def take(self, rows: np.ndarray | slice) -> "TradeBatch":
        """The rows ``rows`` (index array or slice) as a new batch."""
        return TradeBatch(self.instruments, *(getattr(self, c)[rows] for c in _TRADE_COLS))

    def to_frame(self) -> pd.DataFrame:
        """Tick frame (:data:`quantlab.schema.TICK_COLUMNS`); ``recv_ms`` 0,
        ``trade_type`` the futures ``X`` (``None`` on spot)."""
        n = len(self)
        if self.market == "usdm":
            ttype = np.asarray(TRADE_TYPES, dtype=object)[self.trade_type]
        else:
            ttype = np.full(n, None, dtype=object)
        cols = {
            "market": np.full(n, self.market, dtype=object), "symbol": self.symbol_names(),
            "kind": np.full(n, "trade", dtype=object), "trade_id": self.trade_id,
            "time_ms": self.time_ms, "recv_ms": np.zeros(n, np.int64), "price": self.price_float(),
            "qty": self.qty_float(), "is_buyer_maker": self.is_buyer_maker, "trade_type": ttype,
            "first_trade_id": pd.array([pd.NA] * n, dtype="Int64"),
            "last_trade_id": pd.array([pd.NA] * n, dtype="Int64"),
        }
        return pd.DataFrame({c: cols[c] for c in TICK_COLUMNS}).astype(TICK_DTYPES)


_TRADE_COLS = ("sym", "trade_id", "price", "qty", "time_ms", "event_ms", "is_buyer_maker", "trade_type")


@dataclass(frozen=True, eq=False)
class AggBatch(_Columns):
    """Aggregate trades as columns, in emission order.

    Attributes
    ----------
    instruments : symbols and wire decimals (those of the source batch).
    sym : int16 symbol index.
    agg_id : int64, aggregate id ``a`` (contiguous per symbol).
    price, qty : int64 wire units, as in :class:`TradeBatch`; ``qty`` is the sum of the fills.
    first_id, last_id : int64, raw trade ids ``f`` and ``l`` of the first and last fill.
    time_ms : int64, ``T`` of the fills (ms); event_ms : ``E`` of the last fill (ms).
    is_buyer_maker : bool ``m``.
    last_row : int64, row of the source batch holding the last fill: the aggregate is
        published right after that trade.
    """

    instruments: Instruments
    sym: np.ndarray
    agg_id: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    first_id: np.ndarray
    last_id: np.ndarray
    time_ms: np.ndarray
    event_ms: np.ndarray
    is_buyer_maker: np.ndarray
    last_row: np.ndarray

    def __len__(self) -> int:
        return int(self.agg_id.shape[0])

    def take(self, rows: np.ndarray | slice) -> "AggBatch":
        """The rows ``rows`` (index array or slice) as a new batch."""
        return AggBatch(self.instruments, *(getattr(self, c)[rows] for c in _AGG_COLS))

    def to_frame(self) -> pd.DataFrame:
        """Tick frame of ``kind="aggTrade"`` rows (``trade_type`` None)."""
        n = len(self)
        cols = {
            "market": np.full(n, self.market, dtype=object), "symbol": self.symbol_names(),
            "kind": np.full(n, "aggTrade", dtype=object), "trade_id": self.agg_id,
            "time_ms": self.time_ms, "recv_ms": np.zeros(n, np.int64), "price": self.price_float(),
            "qty": self.qty_float(), "is_buyer_maker": self.is_buyer_maker,
            "trade_type": np.full(n, None, dtype=object),
            "first_trade_id": pd.array(self.first_id, dtype="Int64"),
            "last_trade_id": pd.array(self.last_id, dtype="Int64"),
        }
        return pd.DataFrame({c: cols[c] for c in TICK_COLUMNS}).astype(TICK_DTYPES)


_AGG_COLS = ("sym", "agg_id", "price", "qty", "first_id", "last_id", "time_ms", "event_ms",
             "is_buyer_maker", "last_row")


def _pow10(dps: Sequence[int]) -> np.ndarray:
    return 10.0 ** np.asarray(dps, dtype=np.float64)


def empty_trade_batch(instruments: Instruments) -> TradeBatch:
    """A batch with no rows."""
    i64 = np.zeros(0, np.int64)
    return TradeBatch(instruments, np.zeros(0, np.int16), i64, i64, i64, i64, i64,
                      np.zeros(0, bool), np.zeros(0, np.int8))


def concat_trade_batches(batches: Sequence[TradeBatch]) -> TradeBatch:
    """Rows of ``batches`` one after the other (same instruments)."""
    if not batches:
        raise ConfigError("batches", batches, "at least one batch")
    return TradeBatch(batches[0].instruments,
                      *(np.concatenate([getattr(b, c) for b in batches]) for c in _TRADE_COLS))


# =============================================================================
# Aggregation
# =============================================================================
def aggregate_trades(batch: TradeBatch, next_agg_id: Sequence[int]) -> tuple[AggBatch, list[int]]:
    """Aggregate trades of ``batch``, as Binance's ``@aggTrade`` and ``aggTrades`` do.

    A run of raw trades of one symbol becomes one aggregate when the trades are
    consecutive in the batch (other symbols' rows in between do not matter), have
    contiguous ids (``t == previous t + 1``), the same price, the same side ``m`` and the
    same exchange time ``T`` (ms): the fills of one taker order at one price (Binance
    spot docs, "Compressed/Aggregate trades list"). Only market fills take part:
    futures ``INSURANCE_FUND``/``ADL``/``NA`` prints and any price or quantity <= 0 are
    excluded (BINANCE.md "Messages"), and because runs need contiguous ids, the
    ``f..l`` range of an aggregate never spans a hole or a non-market print.
    Runs never span two batches.

    Parameters
    ----------
    batch : raw trades.
    next_agg_id : next aggregate id per symbol index.

    Returns
    -------
    (AggBatch, list[int])
        The aggregates, ordered by the row of their last fill, and the updated
        ``next_agg_id``.
    """
    inst = batch.instruments
    next_ids = list(next_agg_id)
    usable = (batch.trade_type == MARKET) & (batch.price > 0) & (batch.qty > 0)
    parts = []
    for s in np.unique(batch.sym[usable]).tolist():
        rows = np.flatnonzero(usable & (batch.sym == s))
        ids, price = batch.trade_id[rows], batch.price[rows]
        m, t = batch.is_buyer_maker[rows], batch.time_ms[rows]
        new_run = np.ones(rows.size, dtype=bool)
        new_run[1:] = ((ids[1:] != ids[:-1] + 1) | (price[1:] != price[:-1])
                       | (m[1:] != m[:-1]) | (t[1:] != t[:-1]))
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], rows.size) - 1
        k = starts.size
        parts.append((
            np.full(k, s, np.int16), next_ids[s] + np.arange(k, dtype=np.int64), price[starts],
            np.add.reduceat(batch.qty[rows], starts), ids[starts], ids[ends], t[starts],
            batch.event_ms[rows[ends]], m[starts], rows[ends].astype(np.int64),
        ))
        next_ids[s] += k
    if not parts:
        i64 = np.zeros(0, np.int64)
        return AggBatch(inst, np.zeros(0, np.int16), i64, i64, i64, i64, i64, i64, i64,
                        np.zeros(0, bool), i64), next_ids
    cols = [np.concatenate(c) for c in zip(*parts)]
    order = np.argsort(cols[-1], kind="stable")  # publish after the last fill
    return AggBatch(inst, *(c[order] for c in cols)), next_ids


# =============================================================================
# Wire text
# =============================================================================
def format_decimal(units: int, dp: int) -> str:
    """``units`` of ``10**-dp`` as Binance spells it, trailing zeros kept.

    >>> format_decimal(6183763000000, 8), format_decimal(6394390, 2), format_decimal(7, 0)
    ('61837.63000000', '63943.90', '7')
    """
    if dp == 0:
        return str(units)
    scale = 10 ** dp
    return f"{units // scale}.{units % scale:0{dp}d}"


def decimal_strings(units: np.ndarray, dp: int) -> list[str]:
    """Vectorised :func:`format_decimal` of non-negative ints, one ``dp``."""
    units = np.asarray(units, dtype=np.int64)
    if dp == 0:
        return [str(v) for v in units.tolist()]
    whole, frac = np.divmod(units, 10 ** dp)
    fmt = f"%d.%0{dp}d"
    return [fmt % pair for pair in zip(whole.tolist(), frac.tolist())]


# Payload templates, keys in the order Binance sends them (spot from its docs and the
# 2024-08-08 capture, futures @trade from the capture, futures @aggTrade from its docs).
# ``{S}`` is the symbol, ``{P}``/``{Q}`` the number fields, ``{X}`` the futures trade type;
# they are filled once per (symbol, type) group so that each row costs one ``%``.
_TRADE_TEMPLATE = {
    "spot": '{{"e":"trade","E":%d,"s":"{S}","t":%d,"p":"{P}","q":"{Q}","T":%d,"m":%s,"M":true}}',
    "usdm": '{{"e":"trade","E":%d,"T":%d,"s":"{S}","t":%d,"p":"{P}","q":"{Q}","X":"{X}","m":%s}}',
}
_AGG_TEMPLATE = {
    "spot": '{{"e":"aggTrade","E":%d,"s":"{S}","a":%d,"p":"{P}","q":"{Q}","f":%d,"l":%d,"T":%d,"m":%s,"M":true}}',
    "usdm": '{{"e":"aggTrade","E":%d,"a":%d,"s":"{S}","p":"{P}","q":"{Q}","f":%d,"l":%d,"T":%d,"m":%s}}',
}


def _number_field(units: np.ndarray, dp: int) -> tuple[str, list[list[int]]]:
    """printf field and argument columns spelling ``units`` with ``dp`` decimals."""
    if dp == 0:
        return "%d", [units.tolist()]
    whole, frac = np.divmod(units, 10 ** dp)
    return f"%d.%0{dp}d", [whole.tolist(), frac.tolist()]


def _bools(a: np.ndarray) -> list[str]:
    return np.where(a, "true", "false").tolist()


def _encode_groups(keys: np.ndarray, encode_group) -> list[bytes]:
    """Run ``encode_group(rows, key)`` per distinct key and put the frames back in row order."""
    uniq = np.unique(keys)
    if uniq.size == 1:
        return encode_group(slice(None), int(uniq[0]))
    out = np.empty(keys.size, dtype=object)
    for key in uniq.tolist():
        rows = np.flatnonzero(keys == key)
        out[rows] = encode_group(rows, key)
    return out.tolist()


def encode_trades(batch: TradeBatch, rows: np.ndarray | None = None, *,
                  combined: bool = True) -> list[bytes]:
    """Binance ``@trade`` frames (UTF-8 JSON text) of ``rows`` of ``batch``.

    Spot: ``{"e":"trade","E":..,"s":"BTCUSDT","t":..,"p":"61837.63000000","q":"0.02000000","T":..,"m":true,"M":true}``;
    futures: ``{"e":"trade","E":..,"T":..,"s":"BTCUSDT","t":..,"p":"63943.90","q":"0.003","X":"MARKET","m":true}``
    with ``NA`` prints spelled ``"p":"0","q":"0"`` (BINANCE.md). ``combined`` wraps each
    payload as ``{"stream":"btcusdt@trade","data":{...}}``, as ``/stream?streams=`` does.

    Parameters
    ----------
    batch : the trades.
    rows : row indices to encode, in order (default all).
    combined : wrap for a combined stream (True) or send raw payloads (``/ws/<stream>``).
    """
    b = batch if rows is None else batch.take(rows)
    if len(b) == 0:
        return []
    inst = b.instruments
    keys = b.sym.astype(np.int64) * len(TRADE_TYPES) + b.trade_type  # one group per (symbol, X)

    def group(r, key: int) -> list[bytes]:
        s, ttype = divmod(key, len(TRADE_TYPES))
        na = inst.market == "usdm" and ttype == NA  # NA prints carry "0" and "0"
        pf, pargs = _number_field(b.price[r], 0 if na else inst.price_dp[s])
        qf, qargs = _number_field(b.qty[r], 0 if na else inst.qty_dp[s])
        tpl = _TRADE_TEMPLATE[inst.market].format(S=inst.symbols[s], P=pf, Q=qf, X=TRADE_TYPES[ttype])
        if combined:
            tpl = '{"stream":"' + inst.symbols[s].lower() + '@trade","data":' + tpl + "}"
        ev, t, ids, mk = b.event_ms[r].tolist(), b.time_ms[r].tolist(), b.trade_id[r].tolist(), _bools(b.is_buyer_maker[r])
        if inst.market == "spot":
            args = zip(ev, ids, *pargs, *qargs, t, mk)
        else:
            args = zip(ev, t, ids, *pargs, *qargs, mk)
        return [(tpl % a).encode() for a in args]

    return _encode_groups(keys, group)


def encode_agg_trades(aggs: AggBatch, rows: np.ndarray | None = None, *,
                      combined: bool = True) -> list[bytes]:
    """Binance ``@aggTrade`` frames of ``rows`` of ``aggs`` (see :func:`encode_trades`).

    Spot ``e,E,s,a,p,q,f,l,T,m,M``; futures ``e,E,a,s,p,q,f,l,T,m`` (no ``M``; BINANCE.md).
    """
    a = aggs if rows is None else aggs.take(rows)
    if len(a) == 0:
        return []
    inst = a.instruments

    def group(r, s: int) -> list[bytes]:
        pf, pargs = _number_field(a.price[r], inst.price_dp[s])
        qf, qargs = _number_field(a.qty[r], inst.qty_dp[s])
        tpl = _AGG_TEMPLATE[inst.market].format(S=inst.symbols[s], P=pf, Q=qf)
        if combined:
            tpl = '{"stream":"' + inst.symbols[s].lower() + '@aggTrade","data":' + tpl + "}"
        ev, ids, f, l_, t, mk = (a.event_ms[r].tolist(), a.agg_id[r].tolist(), a.first_id[r].tolist(),
                                 a.last_id[r].tolist(), a.time_ms[r].tolist(), _bools(a.is_buyer_maker[r]))
        return [(tpl % x).encode() for x in zip(ev, ids, *pargs, *qargs, f, l_, t, mk)]

    return _encode_groups(a.sym.astype(np.int64), group)


# =============================================================================
# The generator
# =============================================================================
def _ou_path(s0: float, dt: np.ndarray, kappa: float, sigma: float, z: np.ndarray) -> np.ndarray:
    """Exact Ornstein-Uhlenbeck samples after each step ``dt`` (seconds), vectorised.

    .. math::

        s_k = a_k s_{k-1} + \\sigma \\sqrt{(1 - a_k^2) / (2\\kappa)}\\, z_k,
        \\qquad a_k = e^{-\\kappa\\, dt_k}

    solved as :math:`s_k = e^{-L_k}(s_0 + \\sum_{j \\le k} e_j e^{L_j})` with
    :math:`L_k = \\sum_{j \\le k} \\kappa\\, dt_j`, in segments of :math:`L` below 30 so
    that :math:`e^{L}` never overflows.
    """
    kdt = np.minimum(kappa * dt, 50.0)  # e^-50 ~ 2e-22: a longer step forgets s_{k-1} anyway
    e = sigma * np.sqrt(-np.expm1(-2.0 * kdt) / (2.0 * kappa)) * z
    cum = np.cumsum(kdt)
    out = np.empty_like(dt)
    seg = np.floor(cum / 30.0)
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(seg)) + 1, [dt.size]))
    s = s0
    for i0, i1 in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        base = cum[i0 - 1] if i0 else 0.0
        rel = cum[i0:i1] - base
        out[i0:i1] = np.exp(-rel) * (s + np.cumsum(e[i0:i1] * np.exp(rel)))
        s = out[i1 - 1]
    return out


class SyntheticMarket:
    """Seeded generator of Binance-shaped trades of a cointegrated basket.

    Parameters
    ----------
    symbols : two or more symbols; ``symbols[0]`` is the random-walk leg ``x``, every
        other one is cointegrated with it.
    market : ``"spot"`` or ``"usdm"`` (futures: ``X`` types, non-market prints, holes).
    seed : seed of the numpy ``Generator``: same seed and parameters, same trades.
    rate : mean trades per second over all symbols (simulated clock).
    beta : log-price loading of each other symbol on ``x`` (one value for all, or one
        per symbol after the first).
    x_vol_per_sqrt_s : volatility of ``log p_0`` per square-root second (2e-4 is about
        1.2 % per hour).
    ou_kappa_per_s : mean-reversion speed of the log spread, 1/s (half-life ln 2 / kappa).
    spread_std : stationary standard deviation of the log spread (0.002 = 20 bp).
    fills_per_order : mean fills per taker order (>= 1).
    walk_prob : probability that a further fill of an order is one tick deeper.
    weights : relative share of orders per symbol (default equal).
    non_market_fraction : futures only; probability that an order is followed by a
        non-market print (60 % ``NA``, 20 % ``INSURANCE_FUND``, 20 % ``ADL``).
        Default 0.002 on usdm, must be 0 on spot.
    hole_fraction : futures only; fraction of raw ids never emitted anywhere.
        Default 0.001 on usdm, must be 0 on spot.
    start_ms : simulated clock origin, ms since epoch UTC.
    specs : per-symbol :class:`SymbolSpec` overriding :func:`default_spec`.
    chunk_orders : orders simulated per internal chunk. The trades depend on it through
        the order of the random draws: keep it fixed when comparing seeds.

    Attributes
    ----------
    beta : float64 array, ``beta[i]`` of symbol ``i`` (``beta[0] == 1``).
    alpha : float64 array, ``alpha[i] = log P_i - beta[i] log P_0`` (``alpha[0] == 0``).
    ou_kappa_per_s, ou_sigma_per_sqrt_s, spread_std, half_life_s, x_vol_per_sqrt_s :
        the true model parameters (1/s, 1/sqrt(s), log units, s, 1/sqrt(s)).
    instruments : symbols and wire decimals; specs : the :class:`SymbolSpec` tuple.
    """

    def __init__(self, symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"), *, market: str = "spot",
                 seed: int = 0, rate: float = 50.0, beta: float | Sequence[float] = 0.8,
                 x_vol_per_sqrt_s: float = 2e-4, ou_kappa_per_s: float = 1 / 120,
                 spread_std: float = 0.002, fills_per_order: float = 1.5, walk_prob: float = 0.2,
                 weights: Sequence[float] | None = None, non_market_fraction: float | None = None,
                 hole_fraction: float | None = None, start_ms: int = DEFAULT_START_MS,
                 specs: Mapping[str, SymbolSpec] | None = None, chunk_orders: int = 4096):
        require_choice("market", market, MARKETS)
        symbols = tuple(s.upper() for s in symbols)
        if len(symbols) < 2 or len(set(symbols)) != len(symbols):
            raise ConfigError("symbols", symbols, "two or more distinct symbols")
        n = len(symbols)
        if not rate > 0:
            raise ConfigError("rate", rate, "trades per second > 0")
        betas = np.broadcast_to(np.asarray(beta, dtype=np.float64), (n - 1,)) if np.ndim(beta) == 0 \
            else np.asarray(beta, dtype=np.float64)
        if betas.shape != (n - 1,) or not np.all(np.isfinite(betas)):
            raise ConfigError("beta", beta, f"a number or {n - 1} numbers")
        for name, value in (("x_vol_per_sqrt_s", x_vol_per_sqrt_s), ("spread_std", spread_std)):
            if not value >= 0:
                raise ConfigError(name, value, "a number >= 0")
        if not ou_kappa_per_s > 0:
            raise ConfigError("ou_kappa_per_s", ou_kappa_per_s, "a rate > 0 per second")
        if not fills_per_order >= 1:
            raise ConfigError("fills_per_order", fills_per_order, "a mean >= 1")
        if not 0 <= walk_prob < 1:
            raise ConfigError("walk_prob", walk_prob, "a probability in [0, 1)")
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or not np.all(w > 0):
            raise ConfigError("weights", weights, f"{n} positive numbers")
        defaults = (0.002, 0.001) if market == "usdm" else (0.0, 0.0)
        nm = defaults[0] if non_market_fraction is None else float(non_market_fraction)
        holes = defaults[1] if hole_fraction is None else float(hole_fraction)
        for name, value in (("non_market_fraction", nm), ("hole_fraction", holes)):
            if not 0 <= value < 0.5:
                raise ConfigError(name, value, "a fraction in [0, 0.5)")
            if market == "spot" and value > 0:
                raise ConfigError(name, value, "0 on spot (only USD-M futures have non-market prints and id holes)")
        if chunk_orders < 16:
            raise ConfigError("chunk_orders", chunk_orders, "an integer >= 16")

        specs = dict(specs or {})
        self.specs = tuple(specs.get(s) or default_spec(s, market) for s in symbols)
        self.symbols = symbols
        self.market = market
        self.seed = seed
        self.rate = float(rate)
        self.instruments = Instruments(market, symbols, tuple(s.price_dp for s in self.specs),
                                       tuple(s.qty_dp for s in self.specs))
        log_p0 = np.log([s.price for s in self.specs])
        self.beta = np.concatenate(([1.0], betas))
        self.alpha = log_p0 - self.beta * log_p0[0]
        self.x_vol_per_sqrt_s = float(x_vol_per_sqrt_s)
        self.ou_kappa_per_s = float(ou_kappa_per_s)
        self.spread_std = float(spread_std)
        self.ou_sigma_per_sqrt_s = self.spread_std * math.sqrt(2.0 * self.ou_kappa_per_s)
        self.half_life_s = math.log(2.0) / self.ou_kappa_per_s
        self.fills_per_order = float(fills_per_order)
        self.walk_prob = float(walk_prob)
        self.weights = w / w.sum()
        self.non_market_fraction = nm
        self.hole_fraction = holes
        self.start_ms = int(start_ms)
        self._chunk = int(chunk_orders)

        self._rng = np.random.default_rng(seed)
        self._order_rate = self.rate / (self.fills_per_order + nm)  # orders/s
        self._log_p0 = log_p0
        self._tick = np.array([s.tick for s in self.specs])
        self._tick_units = np.array([s.tick_units for s in self.specs], dtype=np.int64)
        self._step_units = np.array([s.step_units for s in self.specs], dtype=np.int64)
        self._median_steps = np.array([s.qty_median / s.step for s in self.specs])
        self._t_s = 0.0                     # simulated time of the last simulated order, s
        self._w = 0.0                       # random walk of log p_0 around log P_0
        self._s = np.zeros(n)               # log spreads (index 0 unused)
        self._next_id = [s.first_trade_id for s in self.specs]
        self._next_agg = [s.first_agg_id for s in self.specs]
        self._offset_ms = 0                 # clock shift from advance_clock_to()
        self._buf: dict[str, np.ndarray] = {}
        self._buf_len = 0

    # --- public ----------------------------------------------------------------
    def generate(self, n: int, *, stamp_ms: int | None = None) -> TradeBatch:
        """The next ``n`` or a few more trades: the batch ends with a whole taker order.

        Parameters
        ----------
        n : minimum number of raw trades (all symbols), >= 1.
        stamp_ms : when given, every trade gets ``T = E = stamp_ms`` (the caller's
            clock, ms); otherwise the simulated arrival times (``E = T``).
        """
        if n < 1:
            raise ConfigError("n", n, "an integer >= 1")
        while self._buf_len < n or not self._buf["order_end"][n - 1:].any():
            self._simulate_chunk()
        cut = n + int(np.argmax(self._buf["order_end"][n - 1:]))
        t = self.start_ms + self._offset_ms + self._buf["t_ms"][:cut] if stamp_ms is None \
            else np.full(cut, int(stamp_ms), np.int64)
        return self._pop(cut, t, t)

    def generate_until(self, t_ms: int, *, event_ms: int | None = None) -> TradeBatch:
        """Every trade whose simulated time ``T`` is <= ``t_ms`` (ms), possibly none.

        ``E`` is ``event_ms`` when given (the moment the caller publishes), else ``T``.
        """
        limit = int(t_ms) - self.start_ms - self._offset_ms
        while self._buf_len == 0 or self._buf["t_ms"][self._buf_len - 1] <= limit:
            self._simulate_chunk()
        cut = int(np.searchsorted(self._buf["t_ms"][:self._buf_len], limit, side="right"))
        t = self.start_ms + self._offset_ms + self._buf["t_ms"][:cut]
        e = t if event_ms is None else np.maximum(t, int(event_ms))
        return self._pop(cut, t, e)

    @property
    def next_time_ms(self) -> int:
        """Simulated time ``T`` (ms) of the next trade not yet returned."""
        if self._buf_len == 0:
            self._simulate_chunk()
        return int(self.start_ms + self._offset_ms + self._buf["t_ms"][0])

    def advance_clock_to(self, t_ms: int) -> None:
        """Shift the simulated clock so that the next trade is not before ``t_ms``.

        The price path does not change (it depends on time differences only). Used after
        a pre-filled history so that the live part starts at the wall clock.
        """
        gap = int(t_ms) - self.next_time_ms
        if gap > 0:
            self._offset_ms += gap

    def aggregate(self, batch: TradeBatch) -> AggBatch:
        """Aggregates of ``batch`` (see :func:`aggregate_trades`), continuing this
        generator's aggregate ids. Call it once per batch, in order."""
        aggs, self._next_agg = aggregate_trades(batch, self._next_agg)
        return aggs

    # --- simulation ------------------------------------------------------------
    def _pop(self, cut: int, time_ms: np.ndarray, event_ms: np.ndarray) -> TradeBatch:
        b = self._buf
        batch = TradeBatch(self.instruments, b["sym"][:cut], b["trade_id"][:cut], b["price"][:cut],
                           b["qty"][:cut], np.asarray(time_ms, np.int64), np.asarray(event_ms, np.int64),
                           b["m"][:cut], b["ttype"][:cut])
        self._buf = {k: v[cut:] for k, v in b.items()}
        self._buf_len -= cut
        return batch

    def _simulate_chunk(self) -> None:
        """Simulate ``chunk_orders`` taker orders and append their rows to the buffer."""
        rng, n, nsym = self._rng, self._chunk, len(self.symbols)
        gaps = rng.exponential(1.0 / self._order_rate, n)                      # s
        t = self._t_s + np.cumsum(gaps)
        z = rng.standard_normal((nsym, n))
        w = self._w + np.cumsum(self.x_vol_per_sqrt_s * np.sqrt(gaps) * z[0])
        logp = np.empty((nsym, n))
        logp[0] = self._log_p0[0] + w
        for i in range(1, nsym):
            s = _ou_path(self._s[i], gaps, self.ou_kappa_per_s, self.ou_sigma_per_sqrt_s, z[i])
            logp[i] = self.alpha[i] + self.beta[i] * logp[0] + s
            self._s[i] = s[-1]
        self._w, self._t_s = float(w[-1]), float(t[-1])

        sym = rng.choice(nsym, size=n, p=self.weights)
        buy = rng.random(n) < 0.5
        n_fills = rng.geometric(1.0 / self.fills_per_order, n)
        mid_ticks = np.exp(logp[sym, np.arange(n)]) / self._tick[sym]
        base = np.maximum(1, np.where(buy, np.ceil(mid_ticks), np.floor(mid_ticks))).astype(np.int64)
        if self.non_market_fraction > 0:
            has_print = rng.random(n) < self.non_market_fraction
            print_kind = rng.choice(np.array([NA, INSURANCE_FUND, ADL], np.int8), size=n, p=[0.6, 0.2, 0.2])
            print_dev = rng.uniform(0.02, 0.08, n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
        else:
            has_print = np.zeros(n, bool)
            print_kind = np.zeros(n, np.int8)
            print_dev = np.zeros(n)

        # Expand orders into rows: the fills, then the order's non-market print if any.
        counts = n_fills + has_print
        order = np.repeat(np.arange(n), counts)
        total = order.size
        starts = np.cumsum(counts) - counts
        k = np.arange(total) - starts[order]                      # position within the order
        last_in_order = k == counts[order] - 1
        is_print = has_print[order] & last_in_order
        deeper = (rng.random(total) < self.walk_prob) & (k > 0) & ~is_print
        cum = np.cumsum(deeper)
        walk = cum - cum[starts][order]                           # ticks walked so far in the order
        side = np.where(buy, 1, -1)[order]
        ticks = np.maximum(1, base[order] + side * walk)
        steps = np.maximum(1, np.rint(self._median_steps[sym[order]]
                                      * np.exp(1.2 * rng.standard_normal(total)))).astype(np.int64)
        ttype = np.where(is_print, print_kind[order], MARKET).astype(np.int8)
        # Insurance-fund and ADL prints happen far from the market (BINANCE.md).
        far = is_print & (ttype != NA)
        ticks[far] = np.maximum(1, np.rint(mid_ticks[order[far]] * (1.0 + print_dev[order[far]]))).astype(np.int64)
        steps[far] = np.maximum(1, steps[far] // 4)
        row_sym = sym[order]
        price = ticks * self._tick_units[row_sym]
        qty = steps * self._step_units[row_sym]
        price[ttype == NA] = 0
        qty[ttype == NA] = 0

        # Ids: contiguous per symbol, except the futures holes (ids nobody ever sees).
        ids = np.empty(total, np.int64)
        for i in range(nsym):
            mask = row_sym == i
            cnt = int(mask.sum())
            if cnt == 0:
                continue
            if self.hole_fraction > 0:
                incr = rng.geometric(1.0 - self.hole_fraction, cnt)  # 1 + number of holes before
            else:
                incr = np.ones(cnt, np.int64)
            sym_ids = self._next_id[i] - 1 + np.cumsum(incr)
            ids[mask] = sym_ids
            self._next_id[i] = int(sym_ids[-1]) + 1

        chunk = {
            "sym": row_sym.astype(np.int16), "trade_id": ids, "price": price, "qty": qty,
            "t_ms": np.floor(t * 1000.0).astype(np.int64)[order], "m": ~buy[order], "ttype": ttype,
            "order_end": last_in_order,
        }
        if self._buf_len:
            self._buf = {key: np.concatenate((self._buf[key], chunk[key])) for key in chunk}
        else:
            self._buf = chunk
        self._buf_len += total
