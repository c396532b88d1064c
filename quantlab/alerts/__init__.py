"""Alert rules on pair analytics: parsing, edge-triggered evaluation, replay.

Pure: no threads, no I/O except the optional log sink (``logging``).
Persistence of events belongs to the store (:meth:`AlertEvent.to_dict` /
:meth:`AlertEvent.from_dict` are the row format).

Rules
-----
A rule compares one metric (:data:`METRICS`) with a threshold using one of
:data:`OPERATORS`. Build it from text with :meth:`AlertRule.parse`::

    zscore > 2
    corr < 0.5
    zscore crosses 0
    zscore crosses above 2 hysteresis=0.5 cooldown_s=300 name=wide

or directly as ``AlertRule(metric="zscore", op=">", threshold=2.0)``.

Semantics (the same in :class:`AlertEngine` and :func:`replay_alerts`)
---------------------------------------------------------------------
Values are evaluated in time order; ``h`` is the rule's ``hysteresis`` (>= 0,
in the metric's units), ``c`` the threshold.

*Level rules* (``>``, ``>=``, ``<``, ``<=``) are **edge-triggered**: a rule is
*armed* at start; it fires when the condition holds while armed, then disarms.
It re-arms only once the value is back past the threshold by the hysteresis:

========= =============== ===================
operator  fires when      re-arms when
========= =============== ===================
``>``     :math:`v > c`   :math:`v \\le c - h`
``>=``    :math:`v \\ge c` :math:`v < c - h`
``<``     :math:`v < c`   :math:`v \\ge c + h`
``<=``    :math:`v \\le c` :math:`v > c + h`
========= =============== ===================

With ``h = 0`` a rule re-arms as soon as the condition is false. The first
value fires if the condition already holds (the state before the first
observation counts as "not true").

*Cross rules* keep the side of the threshold the value is on: *above* once
:math:`v > c + h`, *below* once :math:`v < c - h`; in between (and exactly at
:math:`c` when ``h = 0``) the side does not change (a Schmitt trigger).
``crosses above`` fires when the side changes from below to above,
``crosses below`` the opposite, ``crosses`` on either change. The first value
only sets the side; it never fires.

*NaN or missing values* (a metric not computed yet, a missing key) never fire
and never change the state: they neither re-arm nor switch sides.

*Cooldown*: a firing less than ``cooldown_s`` seconds after the rule's previous
firing is suppressed; the edge is still consumed (the rule disarms or the side
changes), so a suppressed alert is not delivered late. Times are the caller's
(exchange bar time in replay), in ms since the epoch, UTC, non-decreasing.

Examples
--------
>>> engine = AlertEngine(["zscore > 2", "zscore crosses 0"], "BTCUSDT/ETHUSDT", sinks=())
>>> [e.rule for e in engine.evaluate(0, {"zscore": 2.5})]
['zscore > 2']
>>> engine.evaluate(60_000, {"zscore": 3.0})  # still above: no new edge
[]
>>> [e.message for e in engine.evaluate(120_000, {"zscore": -0.1})]
['BTCUSDT/ETHUSDT: zscore crossed below 0 (value -0.1)']

Layout
------
``rules`` (:data:`METRICS`, :data:`OPERATORS`, :class:`AlertRule`, :func:`parse_rule`:
the text form), ``events`` (:class:`AlertEvent`, the corrected / withdrawn marks,
message text, :class:`LogSink`), ``engine`` (:class:`AlertEngine`, one observation at
a time) and ``batch`` (:func:`replay_alerts` over a history, :data:`EVENT_COLUMNS`).
Every name, private ones included, is importable from ``quantlab.alerts``.
"""
from __future__ import annotations

from quantlab.alerts.batch import (EVENT_COLUMNS, _candidates, _ffill_last,  # noqa: F401
                                   _time_ms, replay_alerts)
from quantlab.alerts.engine import AlertEngine, _State, _step  # noqa: F401
from quantlab.alerts.events import (CORRECTED_PREFIX, WITHDRAWN_PREFIX,  # noqa: F401
                                    AlertEvent, LogSink, _event, _iso, _message,
                                    corrected_event, is_corrected, logger)
from quantlab.alerts.rules import (_LEVEL_OPS, _NUM_RE, _OPTIONS, _RULE_RE,  # noqa: F401
                                   METRICS, OPERATORS, AlertRule, _fmt, _rule_error,
                                   parse_rule)

__all__ = [
    "METRICS", "OPERATORS", "EVENT_COLUMNS", "AlertRule", "AlertEvent", "AlertEngine",
    "LogSink", "parse_rule", "replay_alerts",
]
