"""Seeded synthetic pairs with known parameters, and a minimal reader of the real
1-minute klines in ``../shared/data`` (for the analytics tests and benchmark).

Every generator takes a ``seed`` and returns plain numpy arrays; prices are
BTC/ETH-sized by default (x ~ 40 000, y ~ 3 000) so that the numerical care of
the rolling sums is exercised.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

KLINE_COLUMNS = ["open_time", "open", "high", "low", "close", "volume", "close_time",
                 "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
KLINES_DIR = "klines-um-1m-BTCUSDT-ETHUSDT-2022-2023"


def ar1(n: int, phi: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) noise u_t = phi u_{t-1} + e_t, e ~ N(0, scale^2)."""
    return lfilter([1.0], [1.0, -phi], rng.normal(0.0, scale, n))


def cointegrated_pair(n: int, *, beta: float = 0.07, alpha: float = 200.0, phi: float = 0.95,
                      noise: float = 5.0, x0: float = 40_000.0, vol: float = 1e-3,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """y = alpha + beta x + u with x a geometric random walk and u an AR(1).

    The true half-life of the spread is -ln 2 / ln(phi) bars.
    """
    rng = np.random.default_rng(seed)
    x = x0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    y = alpha + beta * x + ar1(n, phi, noise, rng)
    return y, x


def independent_walks(n: int, *, seed: int = 0, x0: float = 40_000.0, y0: float = 3_000.0,
                      vol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Two independent geometric random walks: not cointegrated."""
    rng = np.random.default_rng(seed)
    x = x0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    y = y0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    return y, x


def time_varying_pair(n: int, *, seed: int = 0, beta0: float = 0.8, amplitude: float = 0.3,
                      period: int = 4000, noise: float = 0.002, x0: float = 40_000.0,
                      vol: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log prices with a slowly oscillating hedge ratio:
    ln y = 0.5 + beta_t ln x + e,  beta_t = beta0 + amplitude sin(2 pi t / period).

    Returns ``(log_y, log_x, beta_true)`` (already in logs).
    """
    rng = np.random.default_rng(seed)
    lx = np.log(x0) + np.cumsum(rng.normal(0.0, vol, n))
    beta = beta0 + amplitude * np.sin(2 * np.pi * np.arange(n) / period)
    ly = 0.5 + beta * lx + rng.normal(0.0, noise, n)
    return ly, lx, beta


def state_space_pair(n: int, *, delta: float, obs_var: float, seed: int = 0,
                     x0: float = 10.6, vol: float = 1e-3, alpha0: float = 0.5,
                     beta0: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exactly the Kalman hedge model: (alpha, beta) random walks with variance
    delta/(1-delta) per step, y = alpha + beta x + N(0, obs_var). Returns
    ``(y, x, alpha_true, beta_true)``."""
    rng = np.random.default_rng(seed)
    sw = np.sqrt(delta / (1 - delta))
    x = x0 + np.cumsum(rng.normal(0.0, vol, n))
    a = alpha0 + np.cumsum(rng.normal(0.0, sw, n))
    b = beta0 + np.cumsum(rng.normal(0.0, sw, n))
    y = a + b * x + rng.normal(0.0, np.sqrt(obs_var), n)
    return y, x, a, b


# --- real data ---------------------------------------------------------------------------------
def read_kline_day(path: Path) -> pd.DataFrame:
    """One daily data.binance.vision kline file (gz CSV, with or without header)."""
    with gzip.open(path, "rt") as fh:
        first = fh.readline()
    header = 0 if first.startswith("open_time") else None
    return pd.read_csv(path, header=header, names=KLINE_COLUMNS,
                       usecols=["open_time", "close", "volume", "count"])


def read_klines(data_dir: Path, symbol: str, start: str, days: int) -> pd.DataFrame:
    """``days`` daily files of ``symbol`` from ``start`` (YYYY-MM-DD), indexed by
    a UTC ``open_time``; columns close, volume, count."""
    frames = []
    for day in pd.date_range(start, periods=days, freq="D"):
        frames.append(read_kline_day(Path(data_dir) / f"{symbol}-1m-{day:%Y-%m-%d}.csv.gz"))
    df = pd.concat(frames, ignore_index=True)
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("open_time"), unit="ms", utc=True),
                                name="open_time")
    return df


def real_pair(shared_data: Path, start: str = "2023-03-01", days: int = 14) -> pd.DataFrame:
    """ETHUSDT (y) and BTCUSDT (x) 1-minute closes in ``quantlab.bars.align_pair``'s
    column names: ``y_close``, ``y_volume``, ``y_trade_count``, ``x_...``."""
    base = Path(shared_data) / KLINES_DIR
    y = read_klines(base, "ETHUSDT", start, days)
    x = read_klines(base, "BTCUSDT", start, days)
    out = pd.DataFrame({"y_close": y["close"], "y_volume": y["volume"],
                        "y_trade_count": y["count"]}).join(
        pd.DataFrame({"x_close": x["close"], "x_volume": x["volume"],
                      "x_trade_count": x["count"]}), how="outer")
    out.attrs.update(y_symbol="ETHUSDT", x_symbol="BTCUSDT")
    return out
