"""Wire text: exact decimal strings (:func:`format_decimal`,
:func:`decimal_strings`) and the Binance JSON frames of batches
(:func:`encode_trades`, :func:`encode_agg_trades`), keys in the order Binance
sends them. Pure: bytes out, no I/O."""
from __future__ import annotations

import numpy as np

from quantlab.synthetic.batches import AggBatch, TradeBatch
from quantlab.synthetic.specs import NA, TRADE_TYPES

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
