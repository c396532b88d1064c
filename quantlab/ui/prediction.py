r"""What the formation period predicted for the pair on screen, beside what the
live data shows, with a warning when live behaviour leaves the predicted range.

The prediction is the latest ``report`` or ``scan`` trial of the pair in the
trial ledger (:meth:`quantlab.ledger.Ledger.latest`): its static fit
:math:`y = \alpha + \beta x + s` (``hedge_ratio``, ``intercept``), the spread's
mean and standard deviation (``spread_mean``, ``spread_std``) and half-life
(``half_life_bars``) over the formation window. Live, the same formation
:math:`\alpha, \beta` build the spread of the bars in memory,
:math:`s_t = y_t - \alpha - \beta x_t`, and

* ``spread_z`` :math:`= (s_t - \mu_f) / \sigma_f` of the latest bar;
* ``share_outside``: the share of live bars with :math:`|z| > k` (``band_k``,
  default 3 formation standard deviations);
* ``live_half_life_s``: the half-life of the live spread (AR(1),
  :func:`quantlab.analytics.half_life`) in seconds, compared with the
  formation's in seconds (the formation and the monitor may use different bar
  sizes).

Warnings: the latest bar outside the band; more than ``max_share_outside``
of live bars outside it (a Gaussian spread has 0.27 % beyond 3 sigma); the live
half-life more than ``half_life_ratio`` times longer or shorter than predicted
(or the live spread no longer mean-reverting).

:func:`check_prediction` is pure (numpy and the pure analytics); only
:class:`PredictionPanel` touches widgets.
"""
from __future__ import annotations

import dataclasses
import html
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Prediction", "PredictionCheck", "check_prediction", "latest_prediction",
           "PredictionPanel"]


def _num(stats: Mapping[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = stats.get(k)
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            return f
    return None


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The formation's figures for a pair (from one ledger record).

    ``y``, ``x`` are the record's ordering (the fit is of y on x);
    ``half_life_s`` is ``half_life_bars`` times the formation bar size;
    any figure may be None when the record did not carry it.
    """

    y: str
    x: str
    timeframe: str
    bar_seconds: float
    half_life_bars: float | None
    hedge_ratio: float | None
    intercept: float | None
    spread_mean: float | None
    spread_std: float | None
    trial_id: int | None = None
    kind: str | None = None
    formation_end_ms: int | None = None

    @property
    def half_life_s(self) -> float | None:
        return None if self.half_life_bars is None else self.half_life_bars * self.bar_seconds

    @property
    def has_band(self) -> bool:
        return None not in (self.hedge_ratio, self.intercept, self.spread_mean, self.spread_std) \
            and self.spread_std > 0

    @classmethod
    def from_record(cls, record: Any) -> "Prediction | None":
        """From a :class:`quantlab.ledger.TrialRecord` (None when it carries neither a
        half-life nor a spread band). Reads ``stats`` keys ``half_life_bars``,
        ``hedge_ratio``, ``intercept``, ``spread_mean``, ``spread_std`` (the scan's
        and the analytics summary's names)."""
        from quantlab.bars import parse_timeframe

        if record is None:
            return None
        st = record.stats or {}
        pred = cls(y=record.y, x=record.x, timeframe=record.timeframe,
                   bar_seconds=parse_timeframe(record.timeframe) / 1000.0,
                   half_life_bars=_num(st, "half_life_bars", "half_life"),
                   hedge_ratio=_num(st, "hedge_ratio", "beta"),
                   intercept=_num(st, "intercept", "alpha"),
                   spread_mean=_num(st, "spread_mean"), spread_std=_num(st, "spread_std"),
                   trial_id=record.trial_id, kind=record.kind, formation_end_ms=record.end_ms)
        if pred.half_life_bars is None and not pred.has_band:
            return None
        return pred


@dataclasses.dataclass(frozen=True)
class PredictionCheck:
    """Prediction against live data (:func:`check_prediction`).

    ``status`` is ``"ok"``, ``"outside"`` (at least one warning), ``"no prediction"``
    or ``"warming up"`` (fewer than ``min_bars`` live bars); ``warnings`` say why
    in words.
    """

    status: str
    warnings: tuple[str, ...]
    prediction: Prediction | None
    n_bars: int
    spread_z: float | None = None
    share_outside: float | None = None
    live_half_life_s: float | None = None
    band_k: float = 3.0

    def summary(self) -> dict:
        p = self.prediction
        return {"status": self.status, "warnings": list(self.warnings), "n_bars": self.n_bars,
                "spread_z": self.spread_z, "share_outside": self.share_outside,
                "live_half_life_s": self.live_half_life_s,
                "predicted_half_life_s": None if p is None else p.half_life_s,
                "band_k": self.band_k, "trial_id": None if p is None else p.trial_id}


def check_prediction(prediction: Prediction | None, closes: Mapping[str, Any], *,
                     bar_seconds: float, band_k: float = 3.0, max_share_outside: float = 0.05,
                     half_life_ratio: float = 2.0, min_bars: int = 30) -> PredictionCheck:
    """Compare the formation's prediction with live bars. Pure.

    Parameters
    ----------
    prediction : Prediction or None
    closes : mapping symbol -> live closes (oldest first, equal lengths), at
        least the prediction's two legs.
    bar_seconds : live bar size in seconds (to compare half-lives in seconds).
    band_k : half-width of the predicted spread band, formation standard deviations.
    max_share_outside : warn when more of the live bars are outside the band.
    half_life_ratio : warn when the live half-life is more than this factor
        longer or shorter than predicted.
    min_bars : live bars needed before judging.
    """
    from quantlab.analytics import half_life

    if prediction is None:
        return PredictionCheck(status="no prediction", warnings=(), prediction=None, n_bars=0,
                               band_k=band_k)
    try:
        y = np.asarray(closes[prediction.y], dtype=np.float64)
        x = np.asarray(closes[prediction.x], dtype=np.float64)
    except KeyError:
        return PredictionCheck(status="no prediction", warnings=(
            f"live data lacks {prediction.y} or {prediction.x}",), prediction=prediction,
            n_bars=0, band_k=band_k)
    ok = np.isfinite(y) & np.isfinite(x)
    y, x = y[ok], x[ok]
    n = int(y.size)
    if n < min_bars:
        return PredictionCheck(status="warming up", warnings=(), prediction=prediction, n_bars=n,
                               band_k=band_k)
    warnings: list[str] = []
    spread_z = share = live_hl_s = None
    if prediction.has_band:
        s = y - prediction.intercept - prediction.hedge_ratio * x
        z = (s - prediction.spread_mean) / prediction.spread_std
        spread_z = float(z[-1])
        share = float(np.mean(np.abs(z) > band_k))
        if abs(spread_z) > band_k:
            warnings.append(f"spread at {spread_z:+.1f} formation sd, outside the predicted "
                            f"±{band_k:g} band")
        if share > max_share_outside:
            warnings.append(f"{share:.0%} of live bars outside the ±{band_k:g} sd band "
                            f"(predicted {2 * (1 - _phi(band_k)):.1%})")
        spread = s
    else:
        spread = None
    if prediction.half_life_s is not None:
        if spread is None:  # no formation fit: judge the live OLS spread's persistence
            b, a = np.polyfit(x, y, 1)
            spread = y - a - b * x
        try:
            hl = half_life(spread).half_life
        except Exception as exc:  # a failed fit must not break the panel
            logger.info("live half-life failed: %s", exc)
            hl = math.nan
        if math.isinf(hl):
            live_hl_s = math.inf
            warnings.append("live spread is not mean-reverting (predicted half-life "
                            f"{_dur(prediction.half_life_s)})")
        elif math.isfinite(hl):
            live_hl_s = float(hl * bar_seconds)
            ratio = live_hl_s / prediction.half_life_s if prediction.half_life_s > 0 else math.inf
            if ratio > half_life_ratio or ratio < 1 / half_life_ratio:
                warnings.append(f"live half-life {_dur(live_hl_s)} vs predicted "
                                f"{_dur(prediction.half_life_s)} ({ratio:.1f}x)")
    return PredictionCheck(status="outside" if warnings else "ok", warnings=tuple(warnings),
                           prediction=prediction, n_bars=n, spread_z=spread_z,
                           share_outside=share, live_half_life_s=live_hl_s, band_k=band_k)


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _dur(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "none"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def latest_prediction(ledger: Any, symbol_y: str, symbol_x: str, *, market: str | None = None
                      ) -> Prediction | None:
    """The latest report or scan of the pair (either ordering) in ``ledger``
    (a :class:`quantlab.ledger.Ledger`) that carries a prediction, or None."""
    for kind in (("report", "scan"), "scan", "report"):  # the latest that carries figures
        pred = Prediction.from_record(ledger.latest(f"{symbol_y}/{symbol_x}", kind=kind,
                                                    market=market))
        if pred is not None:
            return pred
    return None


class PredictionPanel:
    """A small HTML widget: formation prediction beside live, with warnings.

    ``PredictionPanel(ledger_path, symbol_y, symbol_x)``; call
    :meth:`update` with the live closes (the monitor does, on its slow
    statistics tick). The ledger is read once at start and again every
    ``reload_every`` updates; a missing ledger just says so.
    """

    def __init__(self, ledger_path: str | Path | None, symbol_y: str, symbol_x: str, *,
                 market: str | None = None, band_k: float = 3.0, reload_every: int = 20):
        import ipywidgets as W

        self.ledger_path = None if ledger_path is None else Path(ledger_path)
        self.symbol_y, self.symbol_x = symbol_y.upper(), symbol_x.upper()
        self.market = market
        self.band_k = band_k
        self.reload_every = int(reload_every)
        self.widget = W.HTML(layout=W.Layout(width="430px", overflow="auto"))
        self.prediction: Prediction | None = None
        self.check: PredictionCheck | None = None
        self._updates = 0
        self.reload()
        self.widget.value = self.render()

    @classmethod
    def for_spec(cls, spec: Any, **kwargs: Any) -> "PredictionPanel":
        """The panel of a monitor pair (:class:`quantlab.ui.pipeline.PairSpec`), on the
        ledger at ``$QUANTLAB_LEDGER``, else ``data/ledger.sqlite`` (beside the
        monitor's default store ``data/live.db``). Set ``ledger_path`` and call
        :meth:`reload` for another one."""
        import os

        from quantlab.ledger import LEDGER_ENV, LEDGER_FILENAME

        path = os.environ.get(LEDGER_ENV) or str(Path("data") / LEDGER_FILENAME)
        return cls(path, spec.symbol_y, spec.symbol_x, **kwargs)

    def reload(self) -> None:
        """Re-read the latest prediction from the ledger (quietly None on any failure)."""
        self.prediction = None
        if self.ledger_path is None or not self.ledger_path.exists():
            return
        try:
            from quantlab.ledger import Ledger

            with Ledger(self.ledger_path, busy_timeout_s=1.0) as ledger:
                self.prediction = latest_prediction(ledger, self.symbol_y, self.symbol_x,
                                                    market=self.market)
        except Exception as exc:  # the panel must never break the monitor
            logger.info("prediction: cannot read %s: %s", self.ledger_path, exc)

    def update(self, closes: Mapping[str, Any], bar_seconds: float) -> PredictionCheck | None:
        """Compare with the live closes (symbol -> array) and refresh the widget."""
        self._updates += 1
        if self._updates % self.reload_every == 0:
            self.reload()
        try:
            self.check = check_prediction(self.prediction, closes, bar_seconds=bar_seconds,
                                          band_k=self.band_k)
        except Exception as exc:  # the panel must never break the monitor
            logger.info("prediction check failed: %s", exc)
            self.check = None
        value = self.render()
        if self.widget.value != value:
            self.widget.value = value
        return self.check

    def render(self) -> str:
        p, c = self.prediction, self.check
        head = "<div style='font-weight:bold;margin-top:4px'>formation vs live</div>"
        if p is None:
            where = self.ledger_path or "no ledger"
            return (head + "<div style='font-size:12px;color:#777'>no report or scan of "
                    f"{html.escape(self.symbol_y)}/{html.escape(self.symbol_x)} in "
                    f"{html.escape(str(where))}</div>")
        rows = [("source", f"{html.escape(str(p.kind))} trial {p.trial_id} "
                           f"({html.escape(p.y)}~{html.escape(p.x)}, {html.escape(p.timeframe)})"),
                ("half-life", f"{_dur(p.half_life_s)} &rarr; "
                              f"{_dur(None if c is None else c.live_half_life_s)}")]
        if p.has_band:
            z = None if c is None else c.spread_z
            share = None if c is None else c.share_outside
            rows.append((f"spread (formation sd, band ±{self.band_k:g})",
                         "—" if z is None else f"{z:+.2f}"))
            rows.append(("live bars outside band", "—" if share is None else f"{share:.1%}"))
        body = "".join(f"<tr><td style='color:#555;padding-right:10px'>{k}</td>"
                       f"<td style='text-align:right'>{v}</td></tr>" for k, v in rows)
        status = "" if c is None else c.status
        color = {"ok": "#2e7d32", "outside": "#c62828"}.get(status, "#555")
        warn = "" if c is None else "".join(
            f"<div style='font-size:12px;color:#c62828'>&#9888; {html.escape(w)}</div>"
            for w in c.warnings)
        return (head + f"<table style='font-size:12px'>{body}</table>"
                f"<div style='font-size:12px;color:{color};font-weight:bold'>"
                f"{html.escape(status)}</div>{warn}")
