r"""Incremental pair analytics: O(1) per bar, plain Python floats.

:class:`LivePairState` computes, bar by bar, the same per-bar values as
:func:`quantlab.analytics.analyze` (a test replays bars through both and
compares every bar). ``update(t, y, x)`` commits a closed bar; ``peek(y, x)``
returns the values a still-forming bar would get, without committing anything,
so the live monitor can refresh the spread and z-score on every tick.

Numerical method
----------------
Each trailing window keeps a ring buffer and running sums of its values
centred on a reference :math:`r` (sum, sum of squares, cross products). Adding
the new bar and removing the oldest costs O(1), but the rounding errors of
those additions accumulate, and prices of order :math:`10^4`-:math:`10^5`
squared leave little precision for a window variance of a few units. So every
``recompute_every`` bars (default: four window lengths, at least 256 bars;
amortised O(1)) the sums are recomputed exactly from the ring buffer around a
new reference, the buffer's mean (also right after the first finite value, so
that the very first window is already centred): the error never builds up over
more than one cadence, and the centred values stay as small as the price range
over a few windows (the 1e8-price test keeps beta within 1e-9 of a two-pass
computation). The expanding OLS uses Welford's update (no buffer needed). The
Kalman filter is the same arithmetic as the batch loop.

The z-score and the rolling half-life share one ring: before bar :math:`t`
is added, the ring holds :math:`s_{t-Z} \ldots s_{t-1}`, exactly the lags of
the half-life regression, so that regression only needs one more running sum
(lag-1 products :math:`\sum u_j u_{j+1}`).

Speed: all state lives in the cells of one closure (no attribute look-ups, one
Python call per bar); about 6 us per bar for rolling OLS + z + corr +
half-life on a busy 2-core machine whose pure-Python speed is ~2.3x below a
current desktop (see ``benchmarks/analytics.py``).
"""
from __future__ import annotations

import collections
import math

import numpy as np

from quantlab.analytics._base import TINY_REL_VAR, check_int, normalise_hedge
from quantlab.analytics.hedge import default_refit_every, robust_window_fit
from quantlab.analytics.kalman import _run, default_warmup, diffuse_start, estimate_params
from quantlab.analytics.pipeline import bars_needed, shortfall
from quantlab.config import require_choice
from quantlab.errors import ConfigError

__all__ = ["LivePairState"]

_NAN = math.nan


def _recentre1(buf: list) -> tuple:
    """Exact recomputation of a one-series window: (bad, r, s, ss) centred on
    the mean of the finite values."""
    vals = [v for v in buf if v == v]
    r = math.fsum(vals) / len(vals) if vals else 0.0
    s = ss = 0.0
    for v in vals:
        d = v - r
        s += d
        ss += d * d
    return len(buf) - len(vals), r, s, ss


def _recentre2(ba: list, bb: list) -> tuple:
    """Exact recomputation of a pair window: (bad, ra, rb, sa, sb, saa, sbb, sab)."""
    pairs = [(a, b) for a, b in zip(ba, bb) if a == a]
    k = len(pairs)
    ra = math.fsum(a for a, _ in pairs) / k if k else 0.0
    rb = math.fsum(b for _, b in pairs) / k if k else 0.0
    sa = sb = saa = sbb = sab = 0.0
    for a, b in pairs:
        da = a - ra
        db = b - rb
        sa += da
        sb += db
        saa += da * da
        sbb += db * db
        sab += da * db
    return len(ba) - k, ra, rb, sa, sb, saa, sbb, sab


def _lag_products(vals: list, r: float) -> float:
    """Sum of (a - r)(b - r) over consecutive finite pairs of ``vals``."""
    out = 0.0
    for a, b in zip(vals, vals[1:]):
        if a == a and b == b:
            out += (a - r) * (b - r)
    return out


def _ordered(buf: list, i: int) -> list:
    """Ring buffer contents oldest first (``i`` = next write position)."""
    return buf[i:] + buf[:i]


class LivePairState:
    r"""Incremental pair analytics for one pair, O(1) per bar.

    Parameters
    ----------
    window : int
        Bars of the hedge window (rolling OLS, robust re-fits; the expanding
        OLS's minimum), and the default z-score and correlation windows.
    hedge : {"rolling-ols", "ols", "huber", "theil-sen", "kalman"}
        As :func:`quantlab.analytics.analyze` (``_`` or ``-``).
    z_window, corr_window : int, optional
        Default ``window``.
    corr_of : {"returns", "levels"}
        Correlation of one-bar log returns (default) or of the closes.
    log_prices : bool
        Hedge regression and spread on log prices.
    fit_intercept : bool
        Include :math:`\alpha` (not for Kalman or Theil-Sen, which always have one).
    refit_every : int, optional
        Huber/Theil-Sen re-fit cadence (default ``max(1, window // 4)``).
    kalman_delta, kalman_obs_var, kalman_warmup
        As :func:`quantlab.analytics.kalman.kalman_filter`; the warm-up bars
        are buffered, the parameters estimated on them at the last one and the
        filter replayed over them, exactly as the batch path.
    health_window : int or None
        Bars kept for :meth:`health` (default ``20 * window``; None: off).
    recompute_every : int, optional
        Exact recomputation cadence of the running sums, bars (default: four
        times each window's length, at least 256).

    Notes
    -----
    ``update`` / ``peek`` return a dict with ``time``, ``y``, ``x`` (the closes),
    ``beta``, ``alpha``, ``spread``, ``spread_mean``, ``spread_std``, ``zscore``,
    ``corr``, ``half_life`` and, for Kalman, ``kalman_beta`` (filtered
    :math:`\beta_{t|t}`; ``beta`` is the prior used by the spread). Values are
    NaN until enough bars (:meth:`shortfall` says how many). Every value at bar
    :math:`t` uses bars up to and including :math:`t`.

    ``peek`` during a Kalman warm-up returns NaN values (the estimation runs
    once, when the last warm-up bar is committed). A Huber/Theil-Sen peek on a
    re-fit bar fits the window with the forming bar (a small numpy fit).

    Examples
    --------
    >>> st = LivePairState(window=3, hedge="rolling-ols", health_window=None)
    >>> for t, (y, x) in enumerate([(2.0, 1.0), (4.1, 2.0), (5.9, 3.0), (8.2, 4.0)]):
    ...     out = st.update(t, y, x)
    >>> round(out["beta"], 3), round(st.peek(11.0, 5.0)["beta"], 3), st.n_bars
    (2.05, 2.55, 4)
    """

    def __init__(self, window: int = 60, hedge: str = "rolling-ols", *,
                 z_window: int | None = None, corr_window: int | None = None,
                 corr_of: str = "returns", log_prices: bool = False, fit_intercept: bool = True,
                 refit_every: int | None = None, kalman_delta: float | None = None,
                 kalman_obs_var: float | None = None, kalman_warmup: int | None = None,
                 health_window: int | None | str = "default",
                 recompute_every: int | None = None):
        self.window = W = check_int("window", window, 3)
        self.hedge = normalise_hedge(hedge)
        self.z_window = Z = W if z_window is None else check_int("z_window", z_window, 3)
        self.corr_window = C = W if corr_window is None else check_int("corr_window", corr_window, 3)
        require_choice("corr_of", corr_of, ("returns", "levels"))
        self.corr_of = corr_of
        self.log_prices = bool(log_prices)
        self.fit_intercept = bool(fit_intercept)
        if self.hedge in ("kalman", "theil-sen") and not self.fit_intercept:
            raise ConfigError("fit_intercept", fit_intercept, f"True for {self.hedge}")
        self.refit_every = default_refit_every(self.hedge, W) if refit_every is None else \
            check_int("refit_every", refit_every, 1)
        self.kalman_delta = kalman_delta
        self.kalman_obs_var = kalman_obs_var
        estimated = kalman_delta is None or kalman_obs_var is None
        self.kalman_warmup = default_warmup(W, estimated) if kalman_warmup is None else \
            check_int("kalman_warmup", kalman_warmup, 1)
        if self.hedge == "kalman" and estimated:
            self.kalman_warmup = max(self.kalman_warmup, 12)
        if health_window == "default":
            health_window = 20 * W
        self.health_window = None if health_window is None else \
            check_int("health_window", health_window, 20)
        self.recompute_every = None if recompute_every is None else \
            check_int("recompute_every", recompute_every, 1)
        self._hist = collections.deque(maxlen=self.health_window + W) \
            if self.health_window else None
        self.reset()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every bar (keeps the configuration)."""
        if self._hist is not None:
            self._hist.clear()
        self.kalman_params = None
        step, self._counts = self._build()
        # The hot path: ``update`` is the closure itself (an instance attribute
        # shadowing the documented method below), one Python call per bar.
        self.update = step
        self._step = step

    @property
    def n_bars(self) -> int:
        """Bars committed so far."""
        return self._counts()[0]

    @property
    def last_time(self):
        """``t`` of the last committed bar (None before the first)."""
        return self._counts()[1]

    def needs(self) -> dict[str, int]:
        """Bars each output needs (see :func:`quantlab.analytics.bars_needed`)."""
        return bars_needed(self.window, self.hedge, z_window=self.z_window,
                           corr_window=self.corr_window, corr_of=self.corr_of,
                           kalman_warmup=self.kalman_warmup)

    def shortfall(self) -> list[str]:
        """Plain messages for outputs still warming up, e.g.
        ``"zscore needs 119 bars, have 12"`` (empty when all are available)."""
        return shortfall(self.n_bars, self.needs())

    @property
    def ready(self) -> bool:
        """True once every output has had enough bars."""
        return not self.shortfall()

    # -- public steps -----------------------------------------------------------------------
    def update(self, t, y: float, x: float) -> dict:  # replaced per instance by the closure
        """Commit the closed bar ``t`` with closes ``y``, ``x``; return its values."""
        return self._step(t, y, x, True)

    def peek(self, y: float, x: float, t=None) -> dict:
        """Values for a forming bar with current prices ``y``, ``x``; nothing is
        committed (the next ``update`` is unaffected)."""
        return self._step(t, y, x, False)

    def health(self, **kwargs) -> dict:
        """Relationship health on the kept bars (:func:`quantlab.analytics.health_at`):
        EG p-value, half-life, beta drift and a verdict. Not O(1): call it on a
        slow cadence (every K bars or seconds), not on every tick."""
        from quantlab.analytics.health import health_at

        if self._hist is None:
            raise ConfigError("health_window", None, "a number of bars (health is off)")
        ys = np.fromiter((p[0] for p in self._hist), dtype=float, count=len(self._hist))
        xs = np.fromiter((p[1] for p in self._hist), dtype=float, count=len(self._hist))
        return health_at(ys, xs, window=self.health_window, beta_window=self.window,
                         log_prices=self.log_prices, **kwargs)

    # -- the step ---------------------------------------------------------------------------
    def _kalman_warmup(self, ys_list: list, xs_list: list) -> tuple:
        """At the last warm-up bar: estimate the parameters on the buffered bars
        and replay the filter over them (as the batch path); returns
        ``(state, vw, ve, outputs of the last bar)``."""
        yb, xb = np.array(ys_list), np.array(xs_list)
        params = estimate_params(yb, xb, delta=self.kalman_delta, obs_var=self.kalman_obs_var)
        self.kalman_params = params
        vw, ve = params.state_var, params.obs_var
        state, _, (A, B, E, Q) = _run(yb, xb, vw, ve, store=True)
        last = (A[-2] if len(A) > 1 else _NAN, B[-2] if len(B) > 1 else _NAN, E[-1], Q[-1], B[-1])
        return state, vw, ve, last

    def _build(self):
        """Build the step function. All state lives in closure cells (local-speed
        access, no attribute look-ups); ``commit=False`` computes the same
        numbers without writing any cell (``peek``)."""
        W, Z, C = self.window, self.z_window, self.corr_window
        rc = self.recompute_every
        h_every, z_every, c_every = (rc or max(4 * W, 256), rc or max(4 * Z, 256),
                                     rc or max(4 * C, 256))
        mode = {"rolling-ols": 0, "ols": 1, "huber": 2, "theil-sen": 2, "kalman": 3}[self.hedge]
        intercept = self.fit_intercept
        log_prices = self.log_prices
        returns = self.corr_of == "returns"
        hedge = self.hedge
        refit_every = self.refit_every
        kwarm = self.kalman_warmup
        me = self
        TINY = TINY_REL_VAR
        nan = _NAN
        inf = math.inf
        log = math.log
        sqrt = math.sqrt
        LN2 = 0.6931471805599453
        zden = Z - 1.0

        # hedge window (x, y), also the robust fits' buffer
        hx = [nan] * W
        hy = [nan] * W
        hi = 0
        hbad = W
        hrx = hry = hsx = hsy = hsxx = hsxy = 0.0
        hsince = h_every - 1      # first recompute right after the first bar: sets the reference
        # spread window (z-score and half-life): ring of the last Z spreads, centred
        # sums, and zp = sum of lag-1 products u_j u_{j+1} over the Z pairs ending
        # in the window (zgone = the spread that left the ring last)
        zb = [nan] * Z
        zi = 0
        zbad = Z
        zr = zs = zss = zp = 0.0
        zgone = nan
        zsince = z_every - 1
        # correlation window
        ca = [nan] * C
        cb = [nan] * C
        ci = 0
        cbad = C
        cra = crb = csa = csb = csaa = csbb = csab = 0.0
        csince = c_every - 1
        prev_s = py = px = nan
        # expanding OLS (Welford)
        en = 0
        emx = emy = ecxx = ecxy = 0.0
        # robust: held fit; Kalman state
        ra_ = rb_ = nan
        kbuf_y: list = []
        kbuf_x: list = []
        kready = False            # parameters known (warm-up done)
        ka = kb = kp00 = kp01 = kp11 = nan
        kstart = False            # diffuse start done
        kfy = kfx = nan
        kgap = 0
        kvw = kve = nan
        nbar = 0
        last_t = None
        hist_append = self._hist.append if self._hist is not None else None

        def counts():
            return nbar, last_t

        def step(t, y, x, commit=True):
            nonlocal hi, hbad, hrx, hry, hsx, hsy, hsxx, hsxy, hsince
            nonlocal zi, zbad, zr, zs, zss, zp, zgone, zsince
            nonlocal ci, cbad, cra, crb, csa, csb, csaa, csbb, csab, csince
            nonlocal prev_s, py, px, en, emx, emy, ecxx, ecxy, ra_, rb_
            nonlocal kready, ka, kb, kp00, kp01, kp11, kstart, kfy, kfx, kgap, kvw, kve, nbar, last_t
            y = float(y)
            x = float(x)
            if log_prices:
                ys = log(y) if y > 0.0 else nan
                xs = log(x) if x > 0.0 else nan
            else:
                ys = y
                xs = x
            ok = ys == ys and xs == xs
            kbeta = None
            # ---- hedge ----------------------------------------------------------------
            if mode == 0 or mode == 2:
                ox = hx[hi]
                sx = hsx
                sy = hsy
                sxx = hsxx
                sxy = hsxy
                bad = hbad
                if ok:
                    dx = xs - hrx
                    dy = ys - hry
                    sx += dx
                    sy += dy
                    sxx += dx * dx
                    sxy += dx * dy
                else:
                    bad += 1
                if ox == ox:
                    dx = ox - hrx
                    dy = hy[hi] - hry
                    sx -= dx
                    sy -= dy
                    sxx -= dx * dx
                    sxy -= dx * dy
                else:
                    bad -= 1
                if mode == 0:
                    if bad:
                        alpha = beta = nan
                    else:
                        mx = hrx + sx / W
                        my = hry + sy / W
                        m2 = sxx - sx * sx / W
                        if m2 < 0.0:
                            m2 = 0.0
                        cxy = sxy - sx * sy / W
                        if intercept:
                            if m2 <= TINY * W * mx * mx or m2 <= 0.0:
                                alpha = beta = nan
                            else:
                                beta = cxy / m2
                                alpha = my - beta * mx
                        else:
                            rxx = m2 + W * mx * mx
                            if rxx > 0.0:
                                beta = (cxy + W * mx * my) / rxx
                                alpha = 0.0
                            else:
                                alpha = beta = nan
                else:
                    if nbar >= W - 1 and (nbar - (W - 1)) % refit_every == 0:
                        wx = _ordered(hx, hi)[1:]
                        wy = _ordered(hy, hi)[1:]
                        wx.append(xs if ok else nan)
                        wy.append(ys if ok else nan)
                        if bad:
                            alpha = beta = nan
                        else:
                            fa, fb = robust_window_fit(np.array([wy]), np.array([wx]), hedge,
                                                       intercept)
                            alpha, beta = float(fa[0]), float(fb[0])
                    else:
                        alpha, beta = ra_, rb_
                    if commit:
                        ra_, rb_ = alpha, beta
                if commit:
                    if ok:
                        hx[hi] = xs
                        hy[hi] = ys
                    else:
                        hx[hi] = hy[hi] = nan
                    hi += 1
                    if hi == W:
                        hi = 0
                    hsx, hsy, hsxx, hsxy, hbad = sx, sy, sxx, sxy, bad
                    hsince += 1
                    if hsince >= h_every:
                        hbad, hrx, hry, hsx, hsy, hsxx, _, hsxy = _recentre2(hx, hy)
                        hsince = 0 if hbad < W else h_every - 1     # empty: retry next bar
                spread = ys - beta * xs - alpha
            elif mode == 1:
                if ok:
                    n1 = en + 1
                    dx = xs - emx
                    mx = emx + dx / n1
                    my = emy + (ys - emy) / n1
                    cxx = ecxx + dx * (xs - mx)
                    cxy = ecxy + dx * (ys - my)
                    if commit:
                        en, emx, emy, ecxx, ecxy = n1, mx, my, cxx, cxy
                    if n1 < W:
                        alpha = beta = nan
                    elif intercept:
                        if cxx <= TINY * n1 * mx * mx or cxx <= 0.0:
                            alpha = beta = nan
                        else:
                            beta = cxy / cxx
                            alpha = my - beta * mx
                    else:
                        rxx = cxx + n1 * mx * mx
                        if rxx > 0.0:
                            beta = (cxy + n1 * mx * my) / rxx
                            alpha = 0.0
                        else:
                            alpha = beta = nan
                else:
                    alpha = beta = nan
                spread = ys - beta * xs - alpha
            else:  # Kalman: spread = innovation with the prior (see kalman.py)
                if not kready:
                    alpha = beta = spread = q = kbeta = nan
                    if commit:
                        kbuf_y.append(ys)
                        kbuf_x.append(xs)
                        if nbar == kwarm - 1:
                            st, kvw, kve, (alpha, beta, spread, q, kbeta) = \
                                me._kalman_warmup(kbuf_y, kbuf_x)
                            ka, kb, kp00, kp01, kp11, kstart, kfy, kfx, kgap = st
                            kready = True
                            del kbuf_y[:], kbuf_x[:]
                elif not kstart:                      # two distinct x not seen yet
                    alpha, beta = ka, kb
                    spread = q = nan
                    gap = kgap + 1 if kfx == kfx else 0
                    if ok:
                        if kfx != kfx:
                            if commit:
                                kfy, kfx = ys, xs
                            gap = 0
                        elif xs != kfx:
                            st = diffuse_start(kfy, kfx, ys, xs, kve, kvw, gap)
                            if commit:
                                ka, kb, kp00, kp01, kp11 = st
                                kstart = True
                            kbeta = st[1]
                    if commit:
                        kgap = gap
                    if kbeta is None:
                        kbeta = kb
                else:
                    alpha = ka
                    beta = kb
                    r00 = kp00 + kvw
                    r11 = kp11 + kvw
                    if ok:
                        rf0 = r00 + kp01 * xs
                        rf1 = kp01 + r11 * xs
                        q = rf0 + rf1 * xs + kve
                        spread = ys - ka - kb * xs
                        k0 = rf0 / q
                        k1 = rf1 / q
                        kbeta = kb + k1 * spread
                        if commit:
                            ka = ka + k0 * spread
                            kb = kbeta
                            kp00 = r00 - k0 * rf0
                            kp11 = r11 - k1 * rf1
                            kp01 = kp01 - k0 * rf1
                    else:
                        spread = q = nan
                        kbeta = kb
                        if commit:
                            kp00 = r00
                            kp11 = r11
            # ---- z-score and half-life (one ring) ---------------------------------------
            # Before the update the ring holds s_{t-Z}..s_{t-1}: exactly the lags of
            # the half-life regression  ds_i = a + b s_{i-1}, i = t-Z+1..t.
            oz = zb[zi]
            s1 = zs
            s2 = zss
            bad = zbad
            sok = spread == spread
            # half-life first (uses the sums before the update)
            pnew = zp
            if oz == oz and zgone == zgone:
                pnew -= (zgone - zr) * (oz - zr)
            if sok and prev_s == prev_s:
                pnew += (prev_s - zr) * (spread - zr)
            if bad or not sok:
                hl = nan
            else:
                ml = zr + s1 / Z
                m2 = s2 - s1 * s1 / Z
                if m2 <= TINY * Z * ml * ml or m2 <= 0.0:
                    hl = nan
                else:
                    phi = abs(1.0 + (pnew - s2 - s1 * (spread - oz) / Z) / m2)
                    hl = inf if phi >= 1.0 else 0.0 if phi == 0.0 else -LN2 / log(phi)
            if sok:
                d = spread - zr
                s1 += d
                s2 += d * d
            else:
                bad += 1
            if oz == oz:
                d = oz - zr
                s1 -= d
                s2 -= d * d
            else:
                bad -= 1
            if mode != 3:
                if bad:
                    mean = std = z = nan
                else:
                    mean = zr + s1 / Z
                    m2 = s2 - s1 * s1 / Z
                    var = (m2 if m2 > 0.0 else 0.0) / zden
                    if var <= TINY * mean * mean or var <= 0.0:
                        std = z = nan
                    else:
                        std = sqrt(var)
                        z = (spread - mean) / std
            elif q == q:
                mean = 0.0
                std = sqrt(q)
                z = spread / std
            else:
                mean = std = z = nan
            if commit:
                zb[zi] = spread if sok else nan
                zi += 1
                if zi == Z:
                    zi = 0
                zs, zss, zp, zbad, zgone = s1, s2, pnew, bad, oz
                zsince += 1
                if zsince >= z_every:
                    zbad, zr, zs, zss = _recentre1(zb)
                    zp = _lag_products([zgone] + _ordered(zb, zi), zr)
                    zsince = 0 if zbad < Z else z_every - 1
            # ---- correlation ----------------------------------------------------------
            if returns:
                ra = log(y / py) if (y > 0.0 and py > 0.0) else nan
                rb = log(x / px) if (x > 0.0 and px > 0.0) else nan
            else:
                ra = y
                rb = x
            rok = ra == ra and rb == rb
            oa = ca[ci]
            a1 = csa
            a2 = csb
            a11 = csaa
            a22 = csbb
            a12 = csab
            bad = cbad
            if rok:
                u = ra - cra
                v = rb - crb
                a1 += u
                a2 += v
                a11 += u * u
                a22 += v * v
                a12 += u * v
            else:
                bad += 1
            if oa == oa:
                u = oa - cra
                v = cb[ci] - crb
                a1 -= u
                a2 -= v
                a11 -= u * u
                a22 -= v * v
                a12 -= u * v
            else:
                bad -= 1
            if bad:
                corr = nan
            else:
                ma = cra + a1 / C
                mb = crb + a2 / C
                m2a = a11 - a1 * a1 / C
                m2b = a22 - a2 * a2 / C
                if m2a < 0.0:
                    m2a = 0.0
                if m2b < 0.0:
                    m2b = 0.0
                den = m2a * m2b
                if m2a <= TINY * C * ma * ma or m2b <= TINY * C * mb * mb or den <= 0.0:
                    corr = nan
                else:
                    corr = (a12 - a1 * a2 / C) / sqrt(den)
                    if corr > 1.0:
                        corr = 1.0
                    elif corr < -1.0:
                        corr = -1.0
            if commit:
                if rok:
                    ca[ci] = ra
                    cb[ci] = rb
                else:
                    ca[ci] = cb[ci] = nan
                ci += 1
                if ci == C:
                    ci = 0
                csa, csb, csaa, csbb, csab, cbad = a1, a2, a11, a22, a12, bad
                csince += 1
                if csince >= c_every:
                    cbad, cra, crb, csa, csb, csaa, csbb, csab = _recentre2(ca, cb)
                    csince = 0 if cbad < C else c_every - 1
                prev_s = spread
                py = y if y == y else nan
                px = x if x == x else nan
                nbar += 1
                last_t = t
                if hist_append is not None:
                    hist_append((y, x))
            out = {"time": t, "y": y, "x": x, "beta": beta, "alpha": alpha, "spread": spread,
                   "spread_mean": mean, "spread_std": std, "zscore": z, "corr": corr,
                   "half_life": hl}
            if kbeta is not None:
                out["kalman_beta"] = kbeta
            return out

        return step, counts
