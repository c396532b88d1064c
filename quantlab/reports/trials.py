"""A report run is a trial: record it in the trial ledger and say where it
stands in its family ("trial k of N in this family; deflated Sharpe 0.42").

The report's own backtest is recorded as kind ``report`` and every cell of its
entry x exit sweep as ``sweep_cell`` (looking at the heatmap is choosing among
them), so re-running the identical report on identical bars counts nothing new.
I/O: writes the ledger (``params.ledger_path``, else ``QUANTLAB_LEDGER``, else
``ledger.sqlite`` beside the store or in the current directory, see
:func:`quantlab.ledger.default_ledger_path`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

__all__ = ["record_trial", "TrialInfo", "trial_params"]


@dataclasses.dataclass(frozen=True)
class TrialInfo:
    """Where the report's trial stands: ``k`` of ``n`` in its family, its
    deflated Sharpe (``dsr``, a probability) and the raw annualised net Sharpe."""

    trial_id: int
    k: int
    n: int
    dsr: float | None
    sharpe: float | None
    ledger: str

    @property
    def line(self) -> str:
        dsr = "n/a" if self.dsr is None else f"{self.dsr:.2f}"
        sharpe = "n/a" if self.sharpe is None or not math.isfinite(self.sharpe) else f"{self.sharpe:.2f}"
        return (f"Trial {self.k} of {self.n} in this family; deflated Sharpe {dsr} "
                f"(raw net Sharpe {sharpe}); ledger {self.ledger}")

    def headline(self) -> dict:
        return {"trial_id": self.trial_id, "trial_k": self.k, "n_trials": self.n, "dsr": self.dsr}


def trial_params(params: Any) -> dict:
    """The parameters that select a report's evaluation (its trial identity)."""
    return {"window": params.window, "hedge": params.hedge, "entry": params.z_entry,
            "exit": params.z_exit, "stop": params.z_stop, "fee_bps": params.fee_bps,
            "slippage_bps": params.slippage_bps, "fill": params.fill}


def record_trial(study: Any, provenance: Mapping[str, Any]) -> TrialInfo:
    """Record the report's backtest and its sweep cells; return the report's standing."""
    from quantlab.ledger import Ledger, default_ledger_path, trial_from_backtest

    p = study.params
    src = p.source()
    path = p.ledger_path or default_ledger_path(**src)
    summary = study.analysis.summary()
    coint = summary.get("coint_pvalue")
    stats = {"half_life_bars": summary.get("half_life_bars"), "hedge_ratio": summary.get("hedge_ratio"),
             "coint_pvalue": coint, "spread_mean": 0.0, "spread_std": summary.get("resid_std"),
             "report": True}
    chosen = trial_params(p)
    trial = trial_from_backtest(study.aligned, study.backtest, params=chosen, kind="report",
                                stats=stats, y=p.symbol_y, x=p.symbol_x, timeframe=p.timeframe,
                                market=p.market,
                                pvalue=coint if coint is not None and math.isfinite(coint) else None)
    with Ledger(path) as ledger:
        ref = ledger.record(trial)
        cell_params = {k: v for k, v in chosen.items() if k not in ("entry", "exit")}
        ledger.record_sweep(study.aligned, study.overfit, params=cell_params)
        d = ledger.deflate(ref)
    return TrialInfo(trial_id=ref.trial_id, k=d.k, n=d.n_trials, dsr=d.dsr,
                     sharpe=study.stats.get("sharpe"), ledger=str(path))
