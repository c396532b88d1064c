r"""Incremental pair analytics: O(1) per bar, plain Python floats.

:class:`LivePairState` computes, bar by bar, the same per-bar values as
:func:`quantlab.analytics.analyze` (a test replays bars through both and
compares every bar). ``update(t, y, x)`` commits a closed bar; ``peek(y, x)``
returns the values a still-forming bar would get, without committing anything,
so the live monitor can refresh the spread and z-score on every tick.

Numerical method
----------------
The trailing windows are ring buffers of deviations from a reference, with
running sums recomputed exactly every ``recompute_every`` bars (the method and
those rare steps are in :mod:`quantlab.analytics.online`); the expanding OLS
uses Welford's update and the Kalman filter is the same arithmetic as the
batch loop.

The z-score and the rolling half-life share one ring: before bar :math:`t`
is added, the ring holds :math:`s_{t-Z} \ldots s_{t-1}`, exactly the lags of
the half-life regression, so that regression only needs one more running sum
(lag-1 products :math:`\sum u_j u_{j+1}`), and its regressor's sum of squares
is the z window's at the previous bar.

Speed
-----
The budget is a few microseconds of pure Python per bar (target < 5 us on the
benchmark machine, ``benchmarks/analytics.py``), where one float operation
costs ~15 ns and building the 11-key result dict ~0.3 us. So:

* the state lives in the local variables of one generator (``_state_machine``),
  which ``update`` resumes once per bar: local variables are CPython's fastest
  storage, and a suspended generator keeps them, with no frame to build or
  tear down per bar (a closure over ~70 cells was ~5% slower);
* ``peek`` runs the same code, saving the state first and putting it back
  after, so a peeked bar gives exactly the numbers its ``update`` would, with
  no second copy of the arithmetic;
* the common case (a valid bar entering a window full of valid bars) takes a
  short path that adds the new bar and drops the oldest in one difference;
  NaN bars and warm-up go through small helper functions;
* divisions by a window length are multiplications by its inverse, and logs
  are ``math.log2`` (``math.log`` is several times slower in CPython 3.11,
  as it parses an optional base);
* rings of equal length share one slot index, and the rare work (recentring,
  trimming the bars kept for :meth:`LivePairState.health`) hides behind one
  "next due bar" test.

"""
from __future__ import annotations

import math
from math import log, log2, sqrt

import numpy as np

from quantlab.analytics._base import TINY_REL_VAR, check_int, normalise_hedge
from quantlab.analytics.hedge import default_refit_every, robust_window_fit
from quantlab.analytics.kalman import _run, default_warmup, diffuse_start, estimate_params
# the rare steps of a bar: module globals of this module, as before they moved
from quantlab.analytics.online import (_NAN, _ols_fit, _ordered, _rebase,  # noqa: F401
                                       _recentre1, _recentre2, _slide1, _slide2)
from quantlab.analytics.pipeline import bars_needed, shortfall
from quantlab.config import require_choice
from quantlab.errors import ConfigError

__all__ = ["LivePairState"]

_COUNTS = (None, None, None, None)   # asks the state machine for (n_bars, last_time)
_FAILED = object()                   # yielded by the state machine when a bar raised


def _robust_fit(hx: list, hy: list, rx: float, ry: float, k: int, x: float, y: float,
                hedge: str, intercept: bool) -> tuple:
    """Huber / Theil-Sen (alpha, beta) on the window ending with the bar (x, y)
    about to replace slot ``k`` of the hedge ring (deviations from (rx, ry));
    NaN if the window has a NaN."""
    j = k + 1 if k + 1 < len(hx) else 0                # the oldest bar that stays
    wx = [d + rx for d in _ordered(hx, j)[:-1]]
    wy = [d + ry for d in _ordered(hy, j)[:-1]]
    wx.append(x)
    wy.append(y)
    if any(v != v for v in wx):                        # (x and y are NaN together)
        return _NAN, _NAN
    fa, fb = robust_window_fit(np.array([wy]), np.array([wx]), hedge, intercept)
    return float(fa[0]), float(fb[0])


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

    Each call returns a new dict: callers may keep it (a list of them makes a
    DataFrame) or change it.

    ``peek`` during a Kalman warm-up returns NaN values (the estimation runs
    once, when the last warm-up bar is committed). A Huber/Theil-Sen peek on a
    re-fit bar fits the window with the forming bar (a small numpy fit).

    ``update`` and ``peek`` are set on the instance by :meth:`reset` (a loop
    can keep ``up = state.update``; ``reset`` replaces them). One instance
    serves one thread at a time: a call made while another call on the same
    instance runs raises ``ValueError: generator already executing``.

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
        self.z_window = W if z_window is None else check_int("z_window", z_window, 3)
        self.corr_window = W if corr_window is None else check_int("corr_window", corr_window, 3)
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
        # bars kept for health(): its window plus one hedge window
        self._hist_len = self.health_window + W if self.health_window else 0
        self.reset()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every bar (keeps the configuration)."""
        self.kalman_params = None
        self._hist_y: list = []                 # closes kept for health(), oldest first
        self._hist_x: list = []
        errors: list = []                       # the exception of a bar that raised
        gen = self._state_machine(errors)
        next(gen)                               # run it to its first ``yield``
        send = gen.send

        # The hot path: ``update`` and ``peek`` are these small functions (instance
        # attributes shadowing the documented methods below). The generator
        # yields the bar's dict, or _FAILED when the bar raised, the exception
        # then being re-raised here: an exception escaping a generator would end
        # it, and the state with it.
        def update(t, y, x):
            out = send((t, float(y), float(x), True))
            if out is not _FAILED:
                return out
            raise errors.pop()

        def peek(y, x, t=None):
            out = send((t, float(y), float(x), False))
            if out is not _FAILED:
                return out
            raise errors.pop()

        self.update = update
        self.peek = peek
        self._send = send

    @property
    def n_bars(self) -> int:
        """Bars committed so far."""
        return self._send(_COUNTS)[0]

    @property
    def last_time(self):
        """``t`` of the last committed bar (None before the first)."""
        return self._send(_COUNTS)[1]

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

    # -- public steps (documentation only: ``reset`` binds the fast versions) -------------
    def update(self, t, y: float, x: float) -> dict:
        """Commit the closed bar ``t`` with closes ``y``, ``x``; return its values
        (a new dict each call: callers may keep it)."""
        return self.__dict__["update"](t, y, x)

    def peek(self, y: float, x: float, t=None) -> dict:
        """Values for a forming bar with current prices ``y``, ``x``; nothing is
        committed (the next ``update`` is unaffected)."""
        return self.__dict__["peek"](y, x, t)

    def health(self, **kwargs) -> dict:
        """Relationship health on the kept bars (:func:`quantlab.analytics.health_at`):
        EG p-value, half-life, beta drift and a verdict. Not O(1): call it on a
        slow cadence (every K bars or seconds), not on every tick."""
        from quantlab.analytics.health import health_at

        if not self._hist_len:
            raise ConfigError("health_window", None, "a number of bars (health is off)")
        ys = np.array(self._hist_y[-self._hist_len:], dtype=float)
        xs = np.array(self._hist_x[-self._hist_len:], dtype=float)
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

    def _state_machine(self, errors: list):
        """The state machine behind ``update`` and ``peek``: a generator that
        receives ``(t, y, x, commit)`` (floats ``y``, ``x``) and yields the bar's
        values, or ``_FAILED`` after appending the exception the bar raised to
        ``errors``.

        Why a generator: its local variables live on between bars, so the whole
        state is plain local variables (the fastest access CPython has), with no
        frame to build or tear down per bar. ``commit=False`` (``peek``) saves
        the state before the bar and puts it back after, so a peeked bar gives
        exactly the numbers its ``update`` would; what a peek must not touch at
        all (bars kept for health, Kalman warm-up buffer, recentring) is under
        ``if commit``. ``commit=None`` asks for ``(n_bars, last_time)``.
        """
        W, Z, C = self.window, self.z_window, self.corr_window
        rc = self.recompute_every
        h_every, z_every, c_every = (rc or max(4 * W, 256), rc or max(4 * Z, 256),
                                     rc or max(4 * C, 256))
        hedge = self.hedge
        windowed = hedge in ("rolling-ols", "huber", "theil-sen")   # on the hedge ring
        rolling = hedge == "rolling-ols"
        kalman = hedge == "kalman"
        intercept = self.fit_intercept
        log_prices = self.log_prices
        returns = self.corr_of == "returns"
        refit_every = self.refit_every
        kwarm = self.kalman_warmup
        hist_y, hist_x, hist_len = self._hist_y, self._hist_x, self._hist_len
        keep_hist = hist_len > 0
        # Multiplying by 1/window is a specialised float multiply in CPython 3.11
        # (a division is a generic, slower, operation) ...
        iW, iZ, iC = 1.0 / W, 1.0 / Z, 1.0 / C
        izden = 1.0 / (Z - 1)
        # ... and a variance is compared with TINY * window * mean^2 folded once
        TINY = TINY_REL_VAR
        TW, TZ, TC = TINY * W, TINY * Z, TINY * C
        nan = _NAN
        inf = math.inf
        # rings of equal length (the default) share the slot index
        z_shared = Z == W
        c_shared = C == W
        NEVER = 1 << 62

        # Rings: the bar committed as the n-th (from 0) goes to slot n % length, so
        # before that bar the slot holds the oldest bar of the window, the one that
        # leaves. A ring holds each bar's deviation from its window's reference
        # (the very number added to the running sums, so removing it later
        # subtracts exactly what was added, and costs no subtraction); a NaN bar
        # is NaN in both rings of a pair.
        hx = [nan] * W            # hedge window (x, y), also the robust fits' buffer
        hy = [nan] * W
        zb = [nan] * Z            # spreads: z-score and half-life
        ca = [nan] * C            # correlation window (returns or closes)
        cb = [nan] * C
        kbuf_y: list = []         # Kalman warm-up bars
        kbuf_x: list = []

        # ---- the state (every name below is saved and restored by a peek) ----------
        nbar = 0
        last_t = None
        # hedge window: NaN bars in it, reference (rx, ry), centred sums
        hbad = W
        hrx = hry = hsx = hsy = hsxx = hsxy = 0.0
        # spread window: centred sums, zp = sum of lag-1 products u_j u_{j+1} over
        # the Z pairs ending in the window (zgone = the spread that left last,
        # zprev = the last spread, as deviations), zlag_m2 = centred sum of
        # squares of the ring at the last commit (the half-life regressor's, see
        # below), NaN if too small to regress on
        zbad = Z
        zr = zs = zss = zp = 0.0
        zgone = zprev = zlag_m2 = nan
        # correlation window
        cbad = C
        cra = crb = csa = csb = csaa = csbb = csab = 0.0
        py = px = nan             # last closes if positive (returns)
        # expanding OLS (Welford)
        en = 0
        emx = emy = ecxx = ecxy = 0.0
        # robust: held fit
        ra_ = rb_ = nan
        # Kalman
        kready = False            # parameters known (warm-up done)
        ka = kb = kp00 = kp01 = kp11 = nan
        kstart = False            # diffuse start done
        kfy = kfx = nan
        kgap = 0
        kvw = kve = nan
        # Rare work (exact recentring, trimming the health bars) is done when
        # nbar reaches next_due: one test per bar. The bar count at which each
        # window is due to be recentred (the first right after the first bar:
        # that sets the reference), and the health lists to be trimmed.
        h_next = 1 if windowed else NEVER
        z_next = c_next = next_due = 1
        hist_next = 2 * hist_len if keep_hist else NEVER

        out = None
        while True:
            t, y, x, commit = yield out
            if not commit:
                if commit is None:                    # n_bars / last_time
                    out = (nbar, last_t)
                    continue
                saved = (nbar, last_t, hbad, hrx, hry, hsx, hsy, hsxx, hsxy,
                         zbad, zr, zs, zss, zp, zgone, zprev, zlag_m2,
                         cbad, cra, crb, csa, csb, csaa, csbb, csab, py, px,
                         en, emx, emy, ecxx, ecxy, ra_, rb_,
                         kready, ka, kb, kp00, kp01, kp11, kstart, kfy, kfx, kgap, kvw, kve,
                         h_next, z_next, c_next, next_due, hist_next)
                ph, pz, pc = nbar % W, nbar % Z, nbar % C      # the slots this bar writes
                slots = hx[ph], hy[ph], zb[pz], ca[pc], cb[pc]
            try:
                if log_prices:
                    ys = log(y) if y > 0.0 else nan
                    xs = log(x) if x > 0.0 else nan
                else:
                    ys = y
                    xs = x
                ok = ys == ys and xs == xs
                k = nbar % W                          # this bar's slot in the hedge ring
                # ---- hedge: alpha, beta, spread (kbeta: Kalman's filtered beta) -----
                if windowed:
                    if not rolling and nbar >= W - 1 and (nbar - (W - 1)) % refit_every == 0:
                        # robust re-fit bar (before the ring changes: an exception in
                        # the fit leaves the state as it was)
                        ra_, rb_ = _robust_fit(hx, hy, hrx, hry, k, xs if ok else nan,
                                               ys if ok else nan, hedge, intercept)
                    b = hx[k]                         # the leaving bar's deviations
                    d = hy[k]
                    if ok and not hbad:
                        # fast path: a valid bar replaces a valid one. With the
                        # deviations a, b (new, old x) the sum gains a - b and the
                        # sum of squares a^2 - b^2 = (a - b)(a + b), computed so
                        # (fewer roundings)
                        a = xs - hrx
                        c = ys - hry
                        e = a - b
                        hsx += e
                        hsy += c - d
                        hsxx += e * (a + b)
                        hsxy += a * c - b * d
                    else:                             # NaN in or out (or warm-up)
                        if ok:
                            a = xs - hrx
                            c = ys - hry
                        else:
                            a = c = nan
                        hbad, hsx, hsy, hsxx, _, hsxy = _slide2(hbad, hsx, hsy, hsxx, 0.0, hsxy,
                                                                a, c, b, d)
                    hx[k] = a
                    hy[k] = c
                    if not rolling:
                        alpha, beta = ra_, rb_
                    elif hbad:
                        alpha = beta = nan
                    else:
                        gx = hsx * iW                 # window mean - reference
                        gy = hsy * iW
                        m2 = hsxx - hsx * gx          # centred sums of squares, products
                        cxy = hsxy - hsx * gy
                        mx = hrx + gx
                        if intercept:
                            # (false for a tiny, zero, negative (rounding) or NaN m2)
                            if m2 > TW * mx * mx:
                                beta = cxy / m2
                                alpha = hry + gy - beta * mx
                            else:
                                alpha = beta = nan
                        else:
                            my = hry + gy
                            rxx = (m2 if m2 > 0.0 else 0.0) + W * mx * mx
                            if rxx > 0.0:
                                beta = (cxy + W * mx * my) / rxx
                                alpha = 0.0
                            else:
                                alpha = beta = nan
                    spread = ys - beta * xs - alpha
                elif kalman and kstart:  # spread = innovation with the prior (kalman.py)
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
                        kb = kbeta = kb + k1 * spread
                        ka = ka + k0 * spread
                        kp00 = r00 - k0 * rf0
                        kp11 = r11 - k1 * rf1
                        kp01 = kp01 - k0 * rf1
                    else:
                        spread = q = nan
                        kbeta = kb
                        kp00 = r00
                        kp11 = r11
                elif kalman and kready:               # two distinct x not seen yet
                    alpha, beta = ka, kb
                    spread = q = nan
                    gap = kgap + 1 if kfx == kfx else 0
                    if ok:
                        if kfx != kfx:
                            kfy, kfx = ys, xs
                            gap = 0
                        elif xs != kfx:
                            ka, kb, kp00, kp01, kp11 = diffuse_start(kfy, kfx, ys, xs, kve, kvw,
                                                                     gap)
                            kstart = True
                    kgap = gap
                    kbeta = kb
                elif kalman:                          # warm-up: buffered (not by a peek)
                    alpha = beta = spread = q = kbeta = nan
                    if commit:
                        kbuf_y.append(ys)
                        kbuf_x.append(xs)
                        if nbar == kwarm - 1:
                            st, kvw, kve, (alpha, beta, spread, q, kbeta) = \
                                self._kalman_warmup(kbuf_y, kbuf_x)
                            ka, kb, kp00, kp01, kp11, kstart, kfy, kfx, kgap = st
                            kready = True
                            del kbuf_y[:], kbuf_x[:]
                else:                                 # expanding OLS, Welford
                    if ok:
                        en += 1
                        dx = xs - emx
                        emx = emx + dx / en
                        emy = emy + (ys - emy) / en
                        ecxx = ecxx + dx * (xs - emx)
                        ecxy = ecxy + dx * (ys - emy)
                        alpha, beta = _ols_fit(en, emx, emy, ecxx, ecxy, W, intercept)
                    else:
                        alpha = beta = nan
                    spread = ys - beta * xs - alpha
                # ---- z-score and half-life (one ring) -----------------------------------
                # Before the update the ring holds s_{t-Z}..s_{t-1}: exactly the lags
                # of the half-life regression  ds_i = a + b s_{i-1}, i = t-Z+1..t,
                # whose centred sum of squares is zlag_m2 (kept from the last bar),
                # and sum ds_i = s_t - s_{t-Z} (telescoping).
                kz = k if z_shared else nbar % Z
                do = zb[kz]                           # deviations: the leaving spread,
                dn = spread - zr                      # this one (NaN if it is)
                if dn == dn and not zbad:
                    # fast path (as the hedge's): valid spreads in and out
                    e = dn - do                       # s_t - s_{t-Z}
                    p = zp
                    if zgone == zgone:
                        p -= zgone * do
                    p += zprev * dn
                    # phi = 1 + slope, slope = centred sum(lag * ds) / zlag_m2
                    # (NaN zlag_m2: NaN phi, NaN half-life)
                    phi = 1.0 + (p - zss - zs * iZ * e) / zlag_m2
                    if phi < 0.0:
                        phi = -phi
                    # -ln 2 / ln phi as -1 / log2(phi): math.log is several times
                    # slower than math.log2 in CPython (it parses an optional base)
                    hl = inf if phi >= 1.0 else 0.0 if phi == 0.0 else -1.0 / log2(phi)
                    zs += e
                    zss += e * (dn + do)
                    zp = p
                else:                                 # a NaN lag or spread: no half-life
                    hl = nan
                    zbad, zs, zss, zp = _slide1(zbad, zs, zss, zp, dn, do, zprev, zgone)
                zb[kz] = zprev = dn
                zgone = do
                if zbad:
                    zlag_m2 = mean = std = z = nan
                else:
                    gz = zs * iZ
                    mean = zr + gz
                    m2 = zss - zs * gz
                    mm = mean * mean
                    zlag_m2 = m2 if m2 > TZ * mm else nan
                    if not kalman:
                        var = m2 * izden
                        if var > TINY * mm:           # (false for var <= 0 or NaN)
                            std = sqrt(var)
                            z = (spread - mean) / std
                        else:
                            std = z = nan
                if kalman:                            # z: the standardised innovation
                    if q == q:
                        mean = 0.0
                        std = sqrt(q)
                        z = spread / std
                    else:
                        mean = std = z = nan
                # ---- correlation --------------------------------------------------------
                if returns:
                    # Log returns in base 2, log2(y / py) = ln(y / py) / ln 2: a
                    # correlation does not see the common scale, and math.log2 is
                    # the fast one (see the half-life). py, px: the last closes,
                    # NaN unless positive (so a NaN return then, not an error).
                    if y > 0.0:
                        ra = log2(y / py)
                        py = y
                    else:
                        ra = py = nan
                    if x > 0.0:
                        rb = log2(x / px)
                        px = x
                    else:
                        rb = px = nan
                else:
                    ra = y
                    rb = x
                kc = k if c_shared else nbar % C
                b = ca[kc]                            # the leaving bar's deviations
                d = cb[kc]
                a = ra - cra
                c = rb - crb
                if ra == ra and rb == rb and not cbad:
                    # fast path (as the hedge's)
                    e = a - b
                    f = c - d
                    csa += e
                    csb += f
                    csaa += e * (a + b)
                    csbb += f * (c + d)
                    csab += a * c - b * d
                else:
                    if not (ra == ra and rb == rb):
                        a = c = nan                   # (NaN in both rings)
                    cbad, csa, csb, csaa, csbb, csab = _slide2(cbad, csa, csb, csaa, csbb, csab,
                                                               a, c, b, d)
                ca[kc] = a
                cb[kc] = c
                if cbad:
                    corr = nan
                else:
                    ga = csa * iC
                    gb = csb * iC
                    m2a = csaa - csa * ga
                    m2b = csbb - csb * gb
                    ma = cra + ga
                    mb = crb + gb
                    den = m2a * m2b
                    if m2a > TC * ma * ma and m2b > TC * mb * mb and den > 0.0:
                        corr = (csab - csa * gb) / sqrt(den)
                        if corr > 1.0:
                            corr = 1.0
                        elif corr < -1.0:
                            corr = -1.0
                    else:
                        corr = nan
                # ---- the rest of the state --------------------------------------------
                nbar += 1
                last_t = t
                if commit:
                    if keep_hist:
                        hist_y.append(y)
                        hist_x.append(x)
                    if nbar >= next_due:           # (>=: still due after an exception)
                        # exact recomputation of the windows due (a window with no
                        # finite value yet retries next bar), trimming of the
                        # health bars
                        if nbar >= h_next:
                            hbad, hrx, hry, hsx, hsy, hsxx, _, hsxy = _recentre2(hx, hy, hrx,
                                                                                 hry)
                            h_next = nbar + (h_every if hbad < W else 1)
                        if nbar >= z_next:
                            zbad, zr, zs, zss, zp, zgone, zprev = _recentre1(zb, zr, nbar % Z,
                                                                             zgone)
                            z_next = nbar + (z_every if zbad < Z else 1)
                        if nbar >= c_next:
                            cbad, cra, crb, csa, csb, csaa, csbb, csab = _recentre2(ca, cb, cra,
                                                                                    crb)
                            c_next = nbar + (c_every if cbad < C else 1)
                        if nbar >= hist_next:
                            del hist_y[:-hist_len], hist_x[:-hist_len]
                            hist_next = nbar + hist_len
                        next_due = min(h_next, z_next, c_next, hist_next)
                if kalman:
                    out = {"time": t, "y": y, "x": x, "beta": beta, "alpha": alpha,
                           "spread": spread, "spread_mean": mean, "spread_std": std,
                           "zscore": z, "corr": corr, "half_life": hl, "kalman_beta": kbeta}
                else:
                    out = {"time": t, "y": y, "x": x, "beta": beta, "alpha": alpha,
                           "spread": spread, "spread_mean": mean, "spread_std": std,
                           "zscore": z, "corr": corr, "half_life": hl}
            except BaseException as exc:              # update/peek raise it
                errors.append(exc)
                out = _FAILED
            if not commit:                            # a peek: put the state back
                (nbar, last_t, hbad, hrx, hry, hsx, hsy, hsxx, hsxy,
                 zbad, zr, zs, zss, zp, zgone, zprev, zlag_m2,
                 cbad, cra, crb, csa, csb, csaa, csbb, csab, py, px,
                 en, emx, emy, ecxx, ecxy, ra_, rb_,
                 kready, ka, kb, kp00, kp01, kp11, kstart, kfy, kfx, kgap, kvw, kve,
                 h_next, z_next, c_next, next_due, hist_next) = saved
                hx[ph], hy[ph], zb[pz], ca[pc], cb[pc] = slots
