"""Families of trials and the deflated Sharpe, a mixin of
:class:`~quantlab.ledger.Ledger`: a trial's family (same pair, market, timeframe
and window), the family's Sharpes and multiple-testing adjusted p-values, and
:meth:`deflate` (deflated Sharpe ratio over the family's strategy trials).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError
from quantlab.ledger.values import Deflation, TrialRecord, TrialRef, _basis, _tid

logger = logging.getLogger(__name__)


class _Families:
    """Families of trials and the deflated Sharpe of :class:`Ledger` (a mixin)."""

    # families ---------------------------------------------------------------------------
    def _members(self, pair: str, market: str, timeframe: str, start_ms: int, end_ms: int
                 ) -> list[tuple]:
        return self._read(
            "SELECT trial_id, kind, sharpe, pvalue, start_ms, end_ms FROM trials "
            "WHERE pair = ? AND market = ? AND timeframe = ? AND forgotten_event IS NULL "
            "AND start_ms < ? AND end_ms > ? ORDER BY trial_id",
            (pair, market, timeframe, int(end_ms), int(start_ms)))

    def _positions(self, ids: Sequence[int]) -> dict[int, tuple[int, int, str, int]]:
        """trial_id -> (k, n, basis, family size), one query per (pair, market, timeframe)."""
        if not ids:
            return {}
        me = {}
        for lo in range(0, len(ids), 500):
            chunk = list(ids[lo:lo + 500])
            for r in self._read(
                    "SELECT trial_id, kind, sharpe, pvalue, start_ms, end_ms, pair, market, "
                    f"timeframe FROM trials WHERE trial_id IN ({', '.join('?' * len(chunk))})",
                    chunk):
                me[r[0]] = r
        out: dict[int, tuple[int, int, str, int]] = {}
        groups: dict[tuple, list] = {}
        for r in me.values():
            groups.setdefault((r[6], r[7], r[8]), []).append(r)
        for (pair, market, tf), mine in groups.items():
            lo_ms = min(r[4] for r in mine)
            hi_ms = max(r[5] for r in mine)
            rows = self._members(pair, market, tf, lo_ms, hi_ms)
            if not rows:
                rows = []
            mid = np.array([r[0] for r in rows], dtype=np.int64)
            ms = np.array([r[4] for r in rows], dtype=np.int64)
            me_ = np.array([r[5] for r in rows], dtype=np.int64)
            basis_of = np.array([_basis(r[1], r[2], r[3]) for r in rows], dtype=object)
            for r in mine:
                overlap = (ms < r[5]) & (me_ > r[4])
                basis = _basis(r[1], r[2], r[3])
                counted = overlap & (basis_of == basis) if basis != "all" else overlap
                n = int(counted.sum())
                k = int((counted & (mid < r[0])).sum()) + 1
                out[r[0]] = (k, max(n, k), basis, int(overlap.sum()))
        return out

    def _family_rows(self, target: Any, basis: str | None = None) -> tuple[list[tuple], Any]:
        rec = self.get(_tid(target))
        rows = self._members(rec.pair, rec.market, rec.timeframe, rec.start_ms, rec.end_ms)
        want = basis or rec.basis
        if want != "all":
            rows = [r for r in rows if _basis(r[1], r[2], r[3]) == want]
        return rows, rec

    def family(self, target: int | TrialRef | TrialRecord, *, basis: str | None = None) -> list[TrialRecord]:
        """The active family of a trial (by id or :class:`TrialRef`), oldest first.

        ``basis``: ``"strategy"``, ``"test"`` or ``"all"``; default the trial's
        own (strategy trials for a backtest, test trials for a scan).
        """
        if basis not in (None, "strategy", "test", "all"):
            raise ConfigError("basis", basis, "'strategy', 'test' or 'all'")
        rows, _ = self._family_rows(target, basis)
        ids = [r[0] for r in rows]
        if not ids:
            return []
        out: list[TrialRecord] = []
        for lo in range(0, len(ids), 500):
            chunk = ids[lo:lo + 500]
            out += self._rows(f"WHERE trial_id IN ({', '.join('?' * len(chunk))})", chunk)
        return out

    def family_sharpes(self, target: int | TrialRef | TrialRecord) -> np.ndarray:
        """Per-bar Sharpes of the strategy trials in the family (a strategy that
        never traded counts as 0), for :math:`V[\\widehat{SR}]`."""
        rows, _ = self._family_rows(target, "strategy")
        return np.array([0.0 if r[2] is None else float(r[2]) for r in rows])

    def family_pvalues(self, target: int | TrialRef | TrialRecord, *, method: str = "fdr_by") -> pd.DataFrame:
        """The test trials of the family with ``pvalue`` and ``adjusted``
        (Benjamini-Yekutieli over the whole family, :func:`quantlab.analytics.adjust_pvalues`)."""
        from quantlab.analytics.overfit import adjust_pvalues

        rows, _ = self._family_rows(target, "test")
        rows = [r for r in rows if r[3] is not None] or []
        p = np.array([float(r[3]) for r in rows])
        return pd.DataFrame({"trial_id": [r[0] for r in rows], "pvalue": p,
                             "adjusted": adjust_pvalues(p, method=method) if p.size else p})

    def adjusted_pvalue(self, target: int | TrialRef | TrialRecord, *, method: str = "fdr_by") -> float | None:
        """The trial's own p-value adjusted over its family (None without one)."""
        tid = _tid(target)
        fam = self.family_pvalues(tid, method=method)
        hit = fam.loc[fam["trial_id"] == tid, "adjusted"]
        return float(hit.iloc[0]) if len(hit) else None

    def deflate(self, target: int | TrialRef | TrialRecord, sharpe: float | None = None, *,
                n_obs: int | None = None, skew: float | None = None,
                kurtosis: float | None = None) -> Deflation:
        """Deflated Sharpe of a recorded trial by its family: ``n_trials`` =
        strategy trials in the family, ``V[SR]`` their Sharpe variance (0 with
        fewer than two), moments from the record unless given."""
        from quantlab.analytics.overfit import deflated_sharpe_ratio

        rec = self.get(_tid(target))
        rows, _ = self._family_rows(rec.trial_id, "strategy")
        ids = [r[0] for r in rows]
        sharpes = np.array([0.0 if r[2] is None else float(r[2]) for r in rows])
        n = max(len(rows), 1)
        k = (ids.index(rec.trial_id) + 1) if rec.trial_id in ids else n
        var = float(np.var(sharpes, ddof=1)) if sharpes.size >= 2 else 0.0
        sr = rec.sharpe if sharpe is None else float(sharpe)
        t = rec.n_obs if n_obs is None else int(n_obs)
        g3 = (rec.skew if rec.skew is not None else 0.0) if skew is None else float(skew)
        g4 = (rec.kurtosis if rec.kurtosis is not None else 3.0) if kurtosis is None else float(kurtosis)
        if sr is None or t is None or t < 2:
            return Deflation(trial_id=rec.trial_id, k=k, n_trials=n, sharpe=sr,
                             sharpe_variance=var, dsr=None, expected_max_sharpe=None)
        try:
            res = deflated_sharpe_ratio(sr, n_obs=t, n_trials=n, sharpe_variance=var, skew=g3,
                                        kurtosis=g4)
        except ConfigError as exc:
            logger.warning("trial %s: no deflated Sharpe (%s)", rec.trial_id, exc)
            return Deflation(trial_id=rec.trial_id, k=k, n_trials=n, sharpe=sr,
                             sharpe_variance=var, dsr=None, expected_max_sharpe=None)
        return Deflation(trial_id=rec.trial_id, k=k, n_trials=n, sharpe=sr, sharpe_variance=var,
                         dsr=res.dsr, expected_max_sharpe=res.expected_max_sharpe, result=res)

