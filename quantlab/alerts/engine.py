"""Live evaluation: :class:`AlertEngine` feeds one observation at a time through
the rules of one pair and hands the events to its sinks; ``_step`` is one rule's
edge-triggered state machine (level rules armed/disarmed, cross rules a side).

Pure: no threads, no I/O except what the sinks do. The semantics are in the
package docstring (:mod:`quantlab.alerts`) and are the same as
:func:`quantlab.alerts.batch.replay_alerts` (a test checks they agree).
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

from quantlab.alerts.events import AlertEvent, LogSink, _event, logger
from quantlab.alerts.rules import _LEVEL_OPS, AlertRule, parse_rule
from quantlab.errors import ConfigError

__all__ = ["AlertEngine"]


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
