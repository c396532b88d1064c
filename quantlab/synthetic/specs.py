"""The instruments: the constants every part shares (futures trade types, the
default clock origin, spot decimals), :class:`SymbolSpec` (how one symbol trades
and how its numbers are spelled), :func:`default_spec` (realistic values for
known symbols, name-derived ones otherwise) and :class:`Instruments` (the
symbols of a batch and their wire decimals). Pure: no I/O."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from quantlab.config import require_choice
from quantlab.errors import ConfigError
from quantlab.schema import MARKETS

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
