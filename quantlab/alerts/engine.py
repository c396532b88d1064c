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
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import logging
import math
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from quantlab.errors import ConfigError

logger = logging.getLogger("quantlab.alerts")  # the package's name, as before the split

__all__ = [
    "METRICS", "OPERATORS", "EVENT_COLUMNS", "AlertRule", "AlertEvent", "AlertEngine",
    "LogSink", "parse_rule", "replay_alerts",
]

#: Metrics a rule may watch. Units: z units (zscore), quote (spread), 1
#: (corr, p-values), hedge-ratio units (beta, beta_drift), bars (half_life),
#: seconds (staleness_s), trades per second (trade_rate).
METRICS = ("zscore", "spread", "corr", "beta", "beta_drift", "half_life", "adf_pvalue",
           "coint_pvalue", "staleness_s", "trade_rate")
#: Comparison operators, as written in a rule's text.
OPERATORS = (">", "<", ">=", "<=", "crosses above", "crosses below", "crosses")
_LEVEL_OPS = (">", "<", ">=", "<=")
_OPTIONS = ("hysteresis", "cooldown_s", "name")
#: Columns of :func:`replay_alerts`.
EVENT_COLUMNS = ("time", "time_ms", "rule", "name", "metric", "op", "value", "threshold",
                 "pair", "message")

_RULE_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?P<op>>=|<=|>|<|crosses\s+above|crosses\s+below|crosses)"
    r"\s*(?P<rest>.*)$", re.IGNORECASE)
_NUM_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def _fmt(v: float) -> str:
    """Shortest text that reads back as the same float: 2.0 -> '2'."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def _iso(time_ms: int) -> str:
    t = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(milliseconds=time_ms)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rule_error(text: str, problem: str) -> ConfigError:
    return ConfigError(
        "alert rule", text,
        f"{problem}; write '<metric> <operator> <number> [hysteresis=H] [cooldown_s=S] "
        f"[name=N]' with metric one of {', '.join(METRICS)} and operator one of "
        f"{', '.join(repr(o) for o in OPERATORS)}, e.g. 'zscore > 2' or 'zscore crosses 0'")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertRule:
    """One alert rule. Frozen, keyword-only, validated.

    Parameters
    ----------
    metric : str
        One of :data:`METRICS`.
    op : str
        One of :data:`OPERATORS`.
    threshold : float
        Finite threshold, in the metric's units.
    hysteresis : float
        Re-arm / side-switch margin (>= 0), metric units. Default 0.
    cooldown_s : float
        Minimum seconds between two firings of this rule (>= 0). Default 0.
    name : str, optional
        Label; defaults to :attr:`expression`.

    Examples
    --------
    >>> AlertRule.parse("zscore crosses above 2 hysteresis=0.25").expression
    'zscore crosses above 2 hysteresis=0.25'
    >>> AlertRule(metric="zscor", op=">", threshold=2)
    Traceback (most recent call last):
    ...
    quantlab.errors.ConfigError: metric: expected one of zscore, spread, corr, beta, beta_drift, half_life, adf_pvalue, coint_pvalue, staleness_s, trade_rate, got 'zscor'
    """

    metric: str
    op: str
    threshold: float
    hysteresis: float = 0.0
    cooldown_s: float = 0.0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError("metric", self.metric, "one of " + ", ".join(METRICS))
        if self.op not in OPERATORS:
            raise ConfigError("op", self.op, "one of " + ", ".join(repr(o) for o in OPERATORS))
        for field, lo in (("threshold", None), ("hysteresis", 0.0), ("cooldown_s", 0.0)):
            v = getattr(self, field)
            ok = (isinstance(v, (int, float, np.integer, np.floating))
                  and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)
                  and (lo is None or v >= lo))
            if not ok:
                raise ConfigError(field, v, "a finite number" + (" >= 0" if lo is not None else ""))
            object.__setattr__(self, field, float(v))
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ConfigError("name", self.name, "None or a non-empty string")

    @property
    def expression(self) -> str:
        """Canonical text; :meth:`parse` of it gives an equal rule."""
        parts = [self.metric, self.op, _fmt(self.threshold)]
        if self.hysteresis:
            parts.append(f"hysteresis={_fmt(self.hysteresis)}")
        if self.cooldown_s:
            parts.append(f"cooldown_s={_fmt(self.cooldown_s)}")
        if self.name is not None and self.name != " ".join(parts):
            if re.search(r"\s", self.name):
                return " ".join(parts)  # not representable as an option; label kept aside
            parts.append(f"name={self.name}")
        return " ".join(parts)

    @property
    def label(self) -> str:
        """``name`` or, when unnamed, the expression."""
        return self.name if self.name is not None else self.expression

    @classmethod
    def parse(cls, text: str, **options: Any) -> "AlertRule":
        """Rule from ``'<metric> <op> <number> [key=value ...]'``.

        Keys: ``hysteresis``, ``cooldown_s``, ``name`` (no spaces). Keyword
        ``options`` give the same fields and override the text. No ``eval``.

        Raises
        ------
        ConfigError
            Naming the problem and listing the valid metrics and operators.
        """
        if not isinstance(text, str):
            raise ConfigError("alert rule", text, "a string such as 'zscore > 2'")
        m = _RULE_RE.match(text)
        if m is None:
            word = text.strip().split(" ")[0] if text.strip() else ""
            if not word:
                raise _rule_error(text, "empty rule")
            head = re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*", text)
            if head is None:
                raise _rule_error(text, "a rule starts with a metric name")
            if head.group(0).strip().lower() not in METRICS:
                raise _rule_error(text, f"unknown metric {head.group(0).strip()!r}")
            op = text[head.end():].strip().split(" ")[0]
            raise _rule_error(text, f"unknown operator {op!r}" if op else "missing operator")
        metric = m.group("metric").lower()
        if metric not in METRICS:
            raise _rule_error(text, f"unknown metric {m.group('metric')!r}")
        op = " ".join(m.group("op").lower().split())
        tokens = m.group("rest").split()
        if not tokens:
            raise _rule_error(text, "missing threshold after the operator")
        if not _NUM_RE.match(tokens[0]):
            raise _rule_error(text, f"threshold {tokens[0]!r} is not a number")
        fields: dict[str, Any] = {"metric": metric, "op": op, "threshold": float(tokens[0])}
        for tok in tokens[1:]:
            key, eq, value = tok.partition("=")
            if not eq or key not in _OPTIONS:
                raise _rule_error(text, f"unexpected {tok!r} (options are "
                                  + ", ".join(f"{o}=..." for o in _OPTIONS) + ")")
            if key == "name":
                fields[key] = value
            elif not _NUM_RE.match(value):
                raise _rule_error(text, f"{key} needs a number, got {value!r}")
            else:
                fields[key] = float(value)
        fields.update(options)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-ready)."""
        return dataclasses.asdict(self)


def parse_rule(rule: "AlertRule | str") -> AlertRule:
    """``rule`` itself, or :meth:`AlertRule.parse` of a string."""
    if isinstance(rule, AlertRule):
        return rule
    if isinstance(rule, str):
        return AlertRule.parse(rule)
    raise ConfigError("rules", rule, "AlertRule values or strings such as 'zscore > 2'")


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

    def __init__(self, level: int = logging.WARNING, logger_name: str = "quantlab.alerts"):
        self.level = level
        self._logger = logging.getLogger(logger_name)

    def __call__(self, event: AlertEvent) -> None:
        self._logger.log(self.level, "alert %s: %s", event.time_iso, event.message)

    def __repr__(self) -> str:
        return f"LogSink(level={logging.getLevelName(self.level)})"


@dataclasses.dataclass
class _State:
    armed: bool = True          # level rules
    side: int = 0               # cross rules: -1 below, +1 above, 0 unknown
    last_fire_ms: int | None = None
    fired: int = 0
    suppressed: int = 0


class AlertEngine:
    """Evaluate rules on successive metric values for one pair.

    Parameters
    ----------
    rules : iterable of AlertRule or str
        Strings are parsed with :meth:`AlertRule.parse`.
    pair : str
        Label carried by events, e.g. ``"BTCUSDT/ETHUSDT"``.
    sinks : sequence of callables, optional
        Each is called with every :class:`AlertEvent`, in order. Default: one
        :class:`LogSink` (a WARNING line on the ``quantlab.alerts`` logger).
        Pass a function to get a callback; ``()`` for none. A sink that
        raises is logged (with traceback) and counted in :attr:`sink_errors`;
        evaluation and the other sinks go on.
    max_events : int
        Size of the in-memory history :attr:`events` (newest first) kept for
        the notebook. Default 500.

    Notes
    -----
    Not thread-safe: one thread (the UI pump or the replay loop) owns the
    engine and calls :meth:`evaluate`; sinks run synchronously on that
    thread, so a slow callback should hand off to a queue. :attr:`events`
    returns a copy and may be read from that thread at any time.
    :meth:`evaluate` costs O(number of rules).
    """

    def __init__(self, rules: Iterable[AlertRule | str], pair: str, *,
                 sinks: Sequence[Callable[[AlertEvent], Any]] | None = None,
                 max_events: int = 500):
        if not isinstance(pair, str) or not pair:
            raise ConfigError("pair", pair, "a label such as 'BTCUSDT/ETHUSDT'")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ConfigError("max_events", max_events, "an integer >= 1")
        self.pair = pair
        self._rules = [parse_rule(r) for r in rules]
        self._states = [_State() for _ in self._rules]
        self.sinks = tuple(sinks) if sinks is not None else (LogSink(),)
        for s in self.sinks:
            if not callable(s):
                raise ConfigError("sinks", s, "callables taking an AlertEvent")
        self._events: collections.deque[AlertEvent] = collections.deque(maxlen=max_events)
        self.sink_errors = 0

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        return tuple(self._rules)

    @property
    def events(self) -> list[AlertEvent]:
        """The latest events, newest first (at most ``max_events``)."""
        return list(self._events)

    def stats(self) -> list[dict[str, Any]]:
        """Per rule: expression, times fired and suppressed by cooldown, state."""
        return [{"rule": r.expression, "name": r.label, "fired": s.fired,
                 "suppressed": s.suppressed, "armed": s.armed, "side": s.side,
                 "last_fire_ms": s.last_fire_ms} for r, s in zip(self._rules, self._states)]

    def add(self, rule: AlertRule | str) -> AlertRule:
        """Add a rule (fresh state) and return it."""
        r = parse_rule(rule)
        self._rules.append(r)
        self._states.append(_State())
        return r

    def remove(self, rule: AlertRule | str) -> None:
        """Remove the first rule equal to ``rule`` (or with that expression or name)."""
        for i, r in enumerate(self._rules):
            if r == rule or (isinstance(rule, str) and rule in (r.expression, r.label)):
                del self._rules[i]
                del self._states[i]
                return
        raise ConfigError("rule", rule, "one of " + ", ".join(r.expression for r in self._rules))

    def reset(self) -> None:
        """Forget every rule's state and the event history."""
        self._states = [_State() for _ in self._rules]
        self._events.clear()

    def set_history(self, events: Iterable[AlertEvent]) -> None:
        """Replace :attr:`events` by ``events`` (oldest first; the newest
        ``max_events`` are kept). The rules' state is unchanged; sinks are not
        called. Used after a correction re-evaluated the rules."""
        self._events.clear()
        for ev in events:
            self._events.appendleft(ev)

    def evaluate(self, time_ms: int, values: Mapping[str, float]) -> list[AlertEvent]:
        """Feed one observation; return the events it fired (possibly none).

        Parameters
        ----------
        time_ms : int
            Time of the observation, ms since the epoch UTC (non-decreasing).
        values : mapping
            Metric name -> value. Missing or NaN metrics leave their rules
            untouched.
        """
        out: list[AlertEvent] = []
        for rule, st in zip(self._rules, self._states):
            raw = values.get(rule.metric)
            if raw is None:
                continue
            try:
                v = float(raw)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                continue
            up = _step(rule, st, v)
            if up is None:
                continue
            if (st.last_fire_ms is not None and rule.cooldown_s > 0
                    and time_ms - st.last_fire_ms < rule.cooldown_s * 1000.0):
                st.suppressed += 1
                continue
            st.last_fire_ms = int(time_ms)
            st.fired += 1
            out.append(_event(rule, self.pair, time_ms, v, up))
        for ev in out:
            self._events.appendleft(ev)
            for sink in self.sinks:
                try:
                    sink(ev)
                except Exception:  # a user callback must never break evaluation
                    self.sink_errors += 1
                    logger.exception("alert sink %r failed on %s", sink, ev.rule)
        return out

    def __repr__(self) -> str:
        return f"AlertEngine(pair={self.pair!r}, rules={[r.expression for r in self._rules]})"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{s['rule']}</td><td>{s['fired']}</td><td>{s['suppressed']}</td></tr>"
                       for s in self.stats())
        return (f"<b>Alerts {self.pair}</b><table><tr><th>rule</th><th>fired</th>"
                f"<th>suppressed</th></tr>{rows}</table>")


def _step(rule: AlertRule, st: _State, v: float) -> bool | None:
    """Advance one rule's state with a finite value. Returns None (no edge),
    or the direction of the edge: True up / False down (level rules: True)."""
    c, h, op = rule.threshold, rule.hysteresis, rule.op
    if op in _LEVEL_OPS:
        cond = (v > c if op == ">" else v >= c if op == ">=" else v < c if op == "<" else v <= c)
        if st.armed:
            if cond:
                st.armed = False
                return op in (">", ">=")
            return None
        rearm = (v <= c - h if op == ">" else v < c - h if op == ">=" else
                 v >= c + h if op == "<" else v > c + h)
        if rearm:
            st.armed = True
        return None
    side = 1 if v > c + h else -1 if v < c - h else 0
    if side == 0 or side == st.side:
        return None
    prev, st.side = st.side, side
    if prev == 0:
        return None
    if op == "crosses" or (op == "crosses above") == (side == 1):
        return side == 1
    return None


# --- batch replay -----------------------------------------------------------------------------
def _ffill_last(marks: np.ndarray) -> np.ndarray:
    """Value of the last nonzero mark strictly before each position (0 if none)."""
    n = marks.size
    idx = np.where(marks != 0, np.arange(n), -1)
    last = np.maximum.accumulate(idx)
    prev = np.empty(n, dtype=np.int64)
    prev[0] = -1
    prev[1:] = last[:-1]
    return np.where(prev >= 0, marks[np.maximum(prev, 0)], 0)


def _candidates(rule: AlertRule, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions where ``rule`` has an edge (before cooldown) and its direction.

    Vectorised form of :func:`_step`: level rules are set/reset flip-flops
    (the condition and the re-arm condition are exclusive), cross rules a side
    that changes only on "above"/"below" marks. NaN compares False: no mark.
    """
    c, h, op = rule.threshold, rule.hysteresis, rule.op
    with np.errstate(invalid="ignore"):
        if op in _LEVEL_OPS:
            if op == ">":
                cond, rearm = v > c, v <= c - h
            elif op == ">=":
                cond, rearm = v >= c, v < c - h
            elif op == "<":
                cond, rearm = v < c, v >= c + h
            else:
                cond, rearm = v <= c, v > c + h
            marks = np.where(cond, -1, np.where(rearm, 1, 0)).astype(np.int8)
            prev = _ffill_last(marks)
            pos = np.flatnonzero(cond & (prev != -1))  # armed: last mark a re-arm, or none
            return pos, np.full(pos.size, op in (">", ">="))
        side = np.where(v > c + h, 1, np.where(v < c - h, -1, 0)).astype(np.int8)
    prev = _ffill_last(side)
    change = (side != 0) & (prev != 0) & (side != prev)
    if op == "crosses above":
        change &= side == 1
    elif op == "crosses below":
        change &= side == -1
    pos = np.flatnonzero(change)
    return pos, side[pos] == 1


def _time_ms(index: pd.Index) -> np.ndarray:
    if isinstance(index, pd.DatetimeIndex):
        idx = index if index.tz is not None else index.tz_localize("UTC")
        return np.asarray(idx.as_unit("ms").asi8, dtype=np.int64)
    if pd.api.types.is_integer_dtype(index.dtype):
        return np.asarray(index, dtype=np.int64)
    raise ConfigError("frame.index", type(index).__name__,
                      "a DatetimeIndex (UTC) or integer ms since the epoch")


def replay_alerts(frame: pd.DataFrame, rules: Iterable[AlertRule | str], pair: str) -> pd.DataFrame:
    """Events the rules would have fired over a history of metric values.

    Same semantics as feeding each row, in order, to a fresh
    :class:`AlertEngine` (a test checks they agree), but vectorised per rule:
    only the candidate edges are walked in Python (for the cooldown).

    Parameters
    ----------
    frame : DataFrame
        Index: time (``DatetimeIndex``, UTC; or integer ms), sorted. Columns:
        metrics (e.g. the output of :func:`quantlab.analytics.analyze`);
        columns that are not metrics are ignored.
    rules : iterable of AlertRule or str
    pair : str

    Returns
    -------
    DataFrame
        One row per event, sorted by time then rule order, columns
        :data:`EVENT_COLUMNS`: ``time`` (UTC timestamp), ``time_ms``, ``rule``
        (expression), ``name``, ``metric``, ``op``, ``value``, ``threshold``,
        ``pair``, ``message``.

    Raises
    ------
    ConfigError
        A rule's metric is not a column of ``frame`` (names the columns), or
        the index is not time.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t = pd.date_range("2024-01-01", periods=400, freq="1min", tz="UTC")
    >>> z = pd.DataFrame({"zscore": 3 * np.sin(np.arange(400) * 2 * np.pi / 100 + 0.1)}, index=t)
    >>> ev = replay_alerts(z, ["zscore crosses 0", "zscore > 2"], "BTCUSDT/ETHUSDT")
    >>> ev.groupby("rule").size().to_dict()
    {'zscore > 2': 4, 'zscore crosses 0': 8}
    """
    rules = [parse_rule(r) for r in rules]
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError("frame", type(frame).__name__, "a DataFrame of metrics indexed by time")
    for r in rules:
        if r.metric not in frame.columns:
            raise ConfigError("frame", f"columns {list(frame.columns)}",
                              f"a column {r.metric!r} for rule {r.expression!r}")
    times = _time_ms(frame.index)
    if times.size > 1 and bool((np.diff(times) < 0).any()):
        raise ConfigError("frame.index", "unsorted times", "times in increasing order (sort_index())")
    parts: list[tuple[int, int, AlertEvent]] = []
    for k, rule in enumerate(rules):
        v = frame[rule.metric].to_numpy(dtype=np.float64)
        pos, up = _candidates(rule, v)
        last: int | None = None
        for i, u in zip(pos.tolist(), up.tolist()):
            t = int(times[i])
            if last is not None and rule.cooldown_s > 0 and t - last < rule.cooldown_s * 1000.0:
                continue
            last = t
            parts.append((i, k, _event(rule, pair, t, float(v[i]), u)))
    parts.sort(key=lambda p: (p[0], p[1]))
    rows = [p[2].to_dict() for p in parts]
    out = pd.DataFrame(rows, columns=[c for c in EVENT_COLUMNS if c != "time"] + ["time_iso"])
    out.insert(0, "time", pd.to_datetime(out["time_ms"].astype(np.int64), unit="ms", utc=True))
    return out[list(EVENT_COLUMNS)].reset_index(drop=True)
