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
>>> import numpy as np
>>> m = SyntheticMarket(("BTCUSDT", "ETHUSDT"), seed=7, rate=100.0)
>>> batch = m.generate(1000)
>>> len(batch) >= 1000, sorted(set(batch.symbol_names()))
(True, ['BTCUSDT', 'ETHUSDT'])
>>> frame = encode_trades(batch, np.array([0]))[0].decode()
>>> frame.startswith('{"stream":"') and '"e":"trade"' in frame
True
>>> float(m.beta[1]), round(m.half_life_s, 1)
(0.8, 83.2)

Modules
-------
``specs`` (the shared constants, :class:`SymbolSpec`, :func:`default_spec`,
:class:`Instruments`), ``batches`` (:class:`TradeBatch`, :class:`AggBatch`,
:func:`aggregate_trades`), ``wire`` (:func:`format_decimal`,
:func:`encode_trades`, :func:`encode_agg_trades`) and ``market``
(:class:`SyntheticMarket`, the generator). Every name is importable from
``quantlab.synthetic``.
"""
from __future__ import annotations

from quantlab.schema import MARKETS  # noqa: F401 (test_rules: one list of markets)
from quantlab.synthetic.batches import (AggBatch, TradeBatch, aggregate_trades,  # noqa: F401
                                        concat_trade_batches, empty_trade_batch)
from quantlab.synthetic.market import SyntheticMarket  # noqa: F401
from quantlab.synthetic.specs import (ADL, DEFAULT_START_MS, INSURANCE_FUND, KNOWN_SYMBOLS,  # noqa: F401
                                      MARKET, NA, SPOT_DECIMALS, TRADE_TYPES, Instruments, SymbolSpec,
                                      default_spec)
from quantlab.synthetic.wire import (decimal_strings, encode_agg_trades, encode_trades,  # noqa: F401
                                     format_decimal)

__all__ = [
    "TRADE_TYPES", "MARKET", "INSURANCE_FUND", "ADL", "NA", "DEFAULT_START_MS", "SPOT_DECIMALS",
    "KNOWN_SYMBOLS", "SymbolSpec", "default_spec", "Instruments", "TradeBatch", "AggBatch",
    "empty_trade_batch", "concat_trade_batches", "aggregate_trades", "format_decimal",
    "decimal_strings", "encode_trades", "encode_agg_trades", "SyntheticMarket",
]
