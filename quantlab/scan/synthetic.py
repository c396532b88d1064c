r"""A seeded universe of 1-symbol bar frames for scans, tests and benchmarks.
Pure: numpy, scipy and pandas; no I/O.

Every symbol is a geometric random walk of closes; ``n_planted`` pairs are
cointegrated by construction: for pair ``k`` the second symbol is
:math:`y_t = \alpha + \beta x_t + u_t` with :math:`u` an AR(1)
(:math:`u_t = \phi u_{t-1} + e_t`, half-life :math:`-\ln 2/\ln\phi` bars) and
``x`` the first symbol. The remaining symbols are independent walks, so any
pair among them is a true null for the cointegration tests.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError
from quantlab.schema import BAR_COLUMNS, ms_to_utc_index

__all__ = ["SyntheticUniverse", "synthetic_universe"]


@dataclasses.dataclass(frozen=True)
class SyntheticUniverse:
    """``bars``: symbol -> bar frame (:mod:`quantlab.schema`, no empty bars);
    ``planted``: the cointegrated pairs as (first, second) symbol names in
    sorted order; ``timeframe``; ``start_ms``/``end_ms`` of the bars."""

    bars: dict[str, pd.DataFrame]
    planted: tuple[tuple[str, str], ...]
    timeframe: str
    start_ms: int
    end_ms: int

    @property
    def symbols(self) -> list[str]:
        return sorted(self.bars)


def synthetic_universe(n_symbols: int = 10, n_bars: int = 5_000, *, n_planted: int = 2,
                       seed: int = 0, start: str = "2024-01-01", timeframe: str = "1m",
                       vol_per_bar: float = 1e-3, phi: float = 0.9, noise: float = 3e-4,
                       quote_volume: float = 1e5, illiquid: tuple[int, ...] = ()
                       ) -> SyntheticUniverse:
    """Build the universe.

    Parameters
    ----------
    n_symbols : number of symbols, named ``S000USDT``, ``S001USDT`` ...
    n_bars : bars per symbol, one every ``timeframe`` from ``start``.
    n_planted : cointegrated pairs (``S000/S001``, ``S002/S003``, ...).
    seed : generator seed; the same seed gives bit-identical frames.
    vol_per_bar : standard deviation of one-bar log returns of the walks.
    phi : AR(1) coefficient of the planted spreads (0 < phi < 1).
    noise : planted spread innovation, a fraction of the mean price of ``y``.
    quote_volume : median quote volume per bar (quote currency).
    illiquid : indices of symbols whose quote volume is 1,000 times smaller.
    """
    from scipy.signal import lfilter

    from quantlab.bars import parse_timeframe

    if n_symbols < 2 or n_bars < 10 or not 0 <= 2 * n_planted <= n_symbols:
        raise ConfigError("n_planted", n_planted, f"0 .. {n_symbols // 2} with n_symbols >= 2, "
                          "n_bars >= 10")
    if not 0 < phi < 1:
        raise ConfigError("phi", phi, "0 < phi < 1")
    tf = parse_timeframe(timeframe)
    start_ms = int(pd.Timestamp(start, tz="UTC").value // 1_000_000) // tf * tf
    index = ms_to_utc_index(start_ms + tf * np.arange(n_bars, dtype=np.int64))
    rng = np.random.default_rng(seed)
    names = [f"S{i:03d}USDT" for i in range(n_symbols)]
    closes = np.empty((n_symbols, n_bars))
    levels = 10.0 ** rng.uniform(0, 3, size=n_symbols)
    for i in range(n_symbols):
        closes[i] = levels[i] * np.exp(np.cumsum(rng.normal(scale=vol_per_bar, size=n_bars)))
    planted = []
    for k in range(n_planted):
        xi, yi = 2 * k, 2 * k + 1
        beta = rng.uniform(0.5, 2.0)
        base = beta * closes[xi]
        u = lfilter([1.0], [1.0, -phi], rng.normal(scale=noise * base.mean(), size=n_bars))
        closes[yi] = levels[yi] + base + u
        planted.append((names[xi], names[yi]))
    out: dict[str, pd.DataFrame] = {}
    for i, name in enumerate(names):
        c = closes[i]
        o = np.r_[c[0], c[:-1]]
        qv = quote_volume * rng.lognormal(0.0, 0.5, size=n_bars)
        if i in illiquid:
            qv = qv / 1000.0
        vol = qv / c
        frame = pd.DataFrame({
            "open": o, "high": np.maximum(o, c), "low": np.minimum(o, c), "close": c,
            "volume": vol, "quote_volume": qv,
            "trade_count": rng.integers(1, 50, size=n_bars).astype(np.int64),
            "vwap": (o + c) / 2, "taker_buy_volume": vol / 2,
            "is_empty": np.zeros(n_bars, bool), "is_forming": np.zeros(n_bars, bool),
        }, index=index, columns=list(BAR_COLUMNS))
        out[name] = frame
    return SyntheticUniverse(bars=out, planted=tuple(planted), timeframe=timeframe,
                             start_ms=start_ms, end_ms=start_ms + tf * n_bars)
