"""Alert events: :class:`AlertEvent` (one firing of a rule; :meth:`AlertEvent.to_dict`
is the store's row format), the *corrected* / *withdrawn* marks of events re-evaluated
on corrected bars (:func:`corrected_event`, :func:`is_corrected`), the text of an
event (``_message``, ``_event``), and :class:`LogSink` (one line per event on the
``quantlab.alerts`` logger).

Pure: no I/O except the log sink (``logging``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
from typing import Any, Mapping

from quantlab.alerts.rules import _LEVEL_OPS, AlertRule, _fmt
from quantlab.errors import ConfigError

__all__ = ["AlertEvent", "LogSink", "CORRECTED_PREFIX", "WITHDRAWN_PREFIX", "corrected_event",
           "is_corrected"]

#: The alerts' logger, named after the package as before the split: LogSink's default,
#: and where the engine reports a failing sink.
logger = logging.getLogger("quantlab.alerts")


def _iso(time_ms: int) -> str:
    t = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(milliseconds=time_ms)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertEvent:
    """One firing of a rule.

    Attributes
    ----------
    time_ms : int
        Time of the value that fired, ms since the epoch, UTC.
    time_iso : str
        Same instant, ISO 8601 with ms and ``Z``.
    rule : str
        The rule's expression text (:attr:`AlertRule.expression`).
    name : str
        The rule's label (name, or the expression).
    metric, op : str
    value, threshold : float
    pair : str
        e.g. ``"BTCUSDT/ETHUSDT"``.
    message : str
        Human-readable line.
    """

    time_ms: int
    time_iso: str
    rule: str
    name: str
    metric: str
    op: str
    value: float
    threshold: float
    pair: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str, int, float), the store's row format."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AlertEvent":
        """Inverse of :meth:`to_dict`; ``time_iso`` and ``name`` may be absent."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ConfigError("event", unknown, "keys among " + ", ".join(names))
        missing = [k for k in names if k not in d and k not in ("time_iso", "name")]
        if missing:
            raise ConfigError("event", f"missing keys {missing}", "all of " + ", ".join(names))
        time_ms = int(d["time_ms"])
        return cls(time_ms=time_ms, time_iso=str(d.get("time_iso") or _iso(time_ms)),
                   rule=str(d["rule"]), name=str(d.get("name") or d["rule"]),
                   metric=str(d["metric"]), op=str(d["op"]), value=float(d["value"]),
                   threshold=float(d["threshold"]), pair=str(d["pair"]),
                   message=str(d["message"]))


#: Message prefixes of events re-evaluated on bars corrected from the store
#: (:func:`corrected_event`); the ``alerts`` table keeps them in ``message``, so a
#: log written by an older quantlab reads the same and ``TickStore.alerts()``
#: derives its ``corrected`` column from them.
CORRECTED_PREFIX = "[corrected] "
WITHDRAWN_PREFIX = "[withdrawn] "


def corrected_event(event: AlertEvent, *, withdrawn: bool = False) -> AlertEvent:
    """``event`` marked as the result of a correction: *corrected* (it fires
    on the bars as the store now holds them, and did not on the bars first
    shown) or *withdrawn* (it fired on the bars first shown and does not on the
    corrected ones). The mark is a message prefix (:data:`CORRECTED_PREFIX`,
    :data:`WITHDRAWN_PREFIX`); marking twice changes nothing.

    >>> ev = AlertEvent(time_ms=0, time_iso="1970-01-01T00:00:00.000Z", rule="zscore > 2",
    ...                 name="zscore > 2", metric="zscore", op=">", value=2.5, threshold=2.0,
    ...                 pair="A/B", message="A/B: zscore > 2 (value 2.5)")
    >>> corrected_event(ev).message
    '[corrected] A/B: zscore > 2 (value 2.5)'
    >>> is_corrected(corrected_event(corrected_event(ev, withdrawn=True)))
    True
    """
    msg = event.message
    for p in (CORRECTED_PREFIX, WITHDRAWN_PREFIX):
        if msg.startswith(p):
            msg = msg[len(p):]
    prefix = WITHDRAWN_PREFIX if withdrawn else CORRECTED_PREFIX
    return dataclasses.replace(event, message=prefix + msg)


def is_corrected(event_or_message: "AlertEvent | str") -> bool:
    """True for an event (or message) marked by :func:`corrected_event`."""
    msg = event_or_message if isinstance(event_or_message, str) else event_or_message.message
    return msg.startswith(CORRECTED_PREFIX) or msg.startswith(WITHDRAWN_PREFIX)


def _message(rule: AlertRule, pair: str, value: float, up: bool | None) -> str:
    if rule.op in _LEVEL_OPS:
        what = f"{rule.metric} {rule.op} {_fmt(rule.threshold)}"
    else:
        what = f"{rule.metric} crossed {'above' if up else 'below'} {_fmt(rule.threshold)}"
    label = "" if rule.name is None else f" [{rule.name}]"
    return f"{pair}: {what} (value {value:.6g}){label}"


def _event(rule: AlertRule, pair: str, time_ms: int, value: float, up: bool | None) -> AlertEvent:
    return AlertEvent(time_ms=int(time_ms), time_iso=_iso(int(time_ms)), rule=rule.expression,
                      name=rule.label, metric=rule.metric, op=rule.op, value=float(value),
                      threshold=rule.threshold, pair=pair,
                      message=_message(rule, pair, value, up))


class LogSink:
    """Sink writing one log line per event on ``logging.getLogger(logger_name)``."""

    def __init__(self, level: int = logging.WARNING, logger_name: str = logger.name):
        self.level = level
        self._logger = logging.getLogger(logger_name)

    def __call__(self, event: AlertEvent) -> None:
        self._logger.log(self.level, "alert %s: %s", event.time_iso, event.message)

    def __repr__(self) -> str:
        return f"LogSink(level={logging.getLevelName(self.level)})"
