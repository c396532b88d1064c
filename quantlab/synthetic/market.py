"""The generator: :class:`SyntheticMarket`, a seeded Poisson stream of taker
orders on a cointegrated basket (random-walk leg, exact OU spreads between
arrivals, bid/ask bounce, futures prints and holes), handing out
:class:`~quantlab.synthetic.batches.TradeBatch` rows on a simulated clock.
Pure: no I/O, no thread, no clock of its own."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from quantlab.config import require_choice
from quantlab.errors import ConfigError
from quantlab.schema import MARKETS
from quantlab.synthetic.batches import AggBatch, TradeBatch, aggregate_trades
from quantlab.synthetic.specs import (ADL, DEFAULT_START_MS, INSURANCE_FUND, MARKET, NA, Instruments,
                                      SymbolSpec, default_spec)

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
