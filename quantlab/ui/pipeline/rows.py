"""The batch path of :class:`~quantlab.ui.pipeline.PairPipeline` (a mixin): many
rows at once from bar columns (history load, rebuild after a change), with the
row and column helpers it shares with the resync path. Pure Python.
"""
from __future__ import annotations

import collections
import gc
import itertools
import math
import operator
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.bars import Bar, align_pair
from quantlab.ui.pipeline.spec import (ANALYTICS_COLUMNS, DOWN_COLOR, LEG_FIELDS, NAN, ROW_COLUMNS,
                                       UP_COLOR, PairSpec, _analytics_dict, _f)


class _Rows:
    """The batch path of :class:`PairPipeline` (a mixin): many rows at once."""

    # -- the batch path: many rows at once -----------------------------------------
    @staticmethod
    def _keep(spec: PairSpec) -> int:
        from quantlab.ui.batch import warmup_bars

        return spec.max_bars + min(spec.max_bars, warmup_bars(spec.window, spec.hedge))

    def plot_rows(self) -> list[dict]:
        """The kept rows the plots show (the newest ``max_bars``)."""
        rows = self.rows
        n = len(rows)
        m = self.spec.max_bars
        return list(rows) if n <= m else list(itertools.islice(rows, n - m, n))

    def _batch_ok(self) -> bool:
        from quantlab.ui.analytics import make_state

        return self._analytics_factory is make_state

    def _rebuild(self, cols: Mapping[str, np.ndarray], reuse: Mapping[str, tuple] | None = None
                 ) -> None:
        # Building ~10,000 row dicts would trigger several full cyclic-GC passes
        # over every kept row (half the time of a rebuild): none are cycles.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._rebuild_rows(cols, reuse)
        finally:
            if enabled:
                gc.enable()

    def _rebuild_rows(self, cols: Mapping[str, np.ndarray],
                      reuse: Mapping[str, tuple] | None = None) -> None:
        """Replace the kept rows by ``cols`` (``t`` and the leg OHLCV columns of
        :data:`ROW_COLUMNS`, oldest first) with their analytics, and start the
        live states after the last of them.

        With the package's analytics, the columns come from the batch path and
        the states are seeded (:mod:`quantlab.ui.batch`): O(window) per state
        for windowed methods, one pass without re-fits for expanding OLS and
        Kalman. With other analytics (test fakes) every row is replayed.
        """
        keep = self._keep(self.spec)
        n_all = int(cols["t"].size)
        cols = {k: v[max(0, n_all - keep):] for k, v in cols.items()}
        if self.rows.maxlen != keep:
            self.rows = collections.deque(maxlen=keep)
        self.rows.clear()
        n = int(cols["t"].size)
        if n == 0:
            self._new_states()
            return
        if not self._batch_ok():
            self._new_states()
            for i in range(n):
                y = tuple(_leg_values(cols, "y", i))
                x = tuple(_leg_values(cols, "x", i))
                self._commit(int(cols["t"][i]), y, x, evaluate_alerts=False, count=False)
            return
        from quantlab.ui.batch import COMPARE, analytics_columns, seed_state

        spec = self.spec
        t = cols["t"].astype(np.int64)
        y = cols["y_close"].astype(np.float64)
        x = cols["x_close"].astype(np.float64)
        from quantlab.ui.batch import kalman_warmup

        kw = kalman_warmup(spec.window)
        kparams = self._kalman_params.get(kw)  # the ML fit once per warm-up length
        reuse = reuse or {}
        values, kp = analytics_columns(y, x, window=spec.window, hedge=spec.hedge,
                                       kalman_params=kparams,
                                       reuse={c: v[1][-n:] for c, v in reuse.items()})
        if kp is not None and kparams is None:
            self._kalman_params[kw] = kparams = kp
        factory = self._analytics_factory
        self.state = seed_state(lambda **o: factory(spec, spec.hedge, **o), spec.hedge, t, y, x,
                                window=spec.window, kalman_params=kparams)
        self._compare = {}
        for col, method in COMPARE:
            if method == spec.hedge:
                self._compare[col] = None
            elif col in reuse:
                self._compare[col] = reuse[col][0]
            else:
                self._compare[col] = seed_state(lambda m=method, **o: factory(spec, m, **o),
                                                method, t, y, x, window=spec.window,
                                                kalman_params=kparams)
        if spec.hedge == "kalman" or n < max(spec.window, 20):
            # warm-up or too few bars for the batch path: the values the live
            # states gave on the way are the reference; take them from a replay
            # of the (few) bars concerned
            values = self._replay_values(t, y, x, values)
        out = {"t": t.astype(np.float64), "t_mid": t + self.tf_ms / 2}
        for leg in ("y", "x"):
            for f in LEG_FIELDS[:-1]:
                out[f"{leg}_{f}"] = cols[f"{leg}_{f}"]
            o, c = cols[f"{leg}_open"], cols[f"{leg}_close"]
            out[f"{leg}_color"] = np.where(c >= o, UP_COLOR, DOWN_COLOR)
        out.update(values)
        out["t_last"] = t + (self.tf_ms - 1.0)
        lists = [out[c].tolist() for c in ROW_COLUMNS]
        trades_i = [ROW_COLUMNS.index("y_trades"), ROW_COLUMNS.index("x_trades")]
        for i in trades_i:
            lists[i] = [int(v) for v in lists[i]]
        self.rows.extend(dict(zip(ROW_COLUMNS, vals)) for vals in zip(*lists))
        self.last_t = int(t[-1])

    def _replay_values(self, t, y, x, values: dict) -> dict:
        """Analytics of a short or Kalman-warming history by replaying it through
        fresh states (cheap: few bars, or a Kalman warm-up that the batch path
        leaves NaN while the live state has values for its last bar)."""
        if int(t.size) >= max(self.spec.window, 20) and self.spec.hedge != "kalman":
            return values
        from quantlab.ui.batch import kalman_warmup

        if self.spec.hedge == "kalman" and int(t.size) >= kalman_warmup(self.spec.window):
            return values
        saved = self.state, self._compare, self.rows, self.last_t
        self.rows = collections.deque()
        self._new_states()
        for i in range(int(t.size)):
            vals = _analytics_dict(self.state.update(int(t[i]), y[i], x[i]))
            for col, st in self._compare.items():
                vals[col] = _beta_of(vals if st is None else
                                     _analytics_dict(st.update(int(t[i]), y[i], x[i])))
            for c in ANALYTICS_COLUMNS:
                if values.get(c) is None:
                    values[c] = np.full(t.size, NAN)
                values[c][i] = _f(vals.get(c, NAN))
        self.state, self._compare, self.rows, self.last_t = saved
        return values


def _beta_of(values: Mapping[str, Any]) -> float:
    """The hedge ratio to plot: the Kalman filter's filtered beta when there is
    one (``beta`` is then the prior used by the spread), else ``beta``."""
    kb = values.get("kalman_beta")
    if kb is not None and not (isinstance(kb, float) and math.isnan(kb)):
        return _f(kb)
    return _f(values.get("beta", NAN))


def _same_row(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Rows equal, NaN equal to NaN."""
    for k, v in a.items():
        w = b.get(k)
        if v != w and not (isinstance(v, float) and isinstance(w, float)
                           and math.isnan(v) and math.isnan(w)):
            return False
    return True


_OHLCV = tuple(f"{leg}_{f}" for leg in ("y", "x") for f in LEG_FIELDS[:-1])


def _differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: values that differ beyond float rounding (volumes summed in
    another order by the store), NaN equal to NaN."""
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return a != b
    return ~np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


def _leg_values(cols: Mapping[str, np.ndarray], leg: str, i: int) -> list:
    vals = [float(cols[f"{leg}_{f}"][i]) for f in LEG_FIELDS[:-1]]
    vals[-1] = int(vals[-1])
    return vals


def _columns_of_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """``t`` (int64) and the leg OHLCV columns (float64) of rows."""
    get = operator.itemgetter("t", *_OHLCV)
    arr = np.array([get(r) for r in rows], dtype=np.float64).reshape(len(rows), 1 + len(_OHLCV))
    out = {"t": arr[:, 0].astype(np.int64)}
    for i, c in enumerate(_OHLCV):
        out[c] = np.ascontiguousarray(arr[:, i + 1])
    return out


def _aligned(bars_y: pd.DataFrame, bars_x: pd.DataFrame, tf_ms: int) -> dict | None:
    """The pair's closed bars as :func:`quantlab.bars.align_pair` gives them
    (gaps dropped, forming bars left out), as ``t`` + leg OHLCV columns."""
    if bars_y is None or bars_x is None or bars_y.empty or bars_x.empty:
        return None
    aligned = align_pair(bars_y, bars_x, timeframe=tf_ms, drop_gaps=True)
    if "is_forming" in aligned.columns:
        aligned = aligned.loc[~aligned["is_forming"].to_numpy(dtype=bool)]
    if aligned.empty:
        return None
    out = {"t": aligned.index.as_unit("ms").asi8.astype(np.int64)}
    for leg in ("y", "x"):
        for f in LEG_FIELDS[:-1]:
            src = "trade_count" if f == "trades" else f
            out[f"{leg}_{f}"] = aligned[f"{leg}_{src}"].to_numpy(dtype=np.float64)
    return out


def _bar_tuple(b: Bar) -> tuple:
    return (b.open, b.high, b.low, b.close, b.volume, b.quote_volume, b.trade_count)
