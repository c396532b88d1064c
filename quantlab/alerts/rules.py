"""Alert rules: the metrics and operators a rule may use, :class:`AlertRule`
(frozen, keyword-only, validated) and its text form (:meth:`AlertRule.parse`,
:func:`parse_rule`; no ``eval``).

Pure: no I/O. The syntax and what a rule means over time (edges, hysteresis,
cooldown, NaN) are in the package docstring (:mod:`quantlab.alerts`);
:mod:`quantlab.alerts.engine` and :mod:`quantlab.alerts.batch` implement them.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

from quantlab.errors import ConfigError

__all__ = ["METRICS", "OPERATORS", "AlertRule", "parse_rule"]

#: Metrics a rule may watch. Units: z units (zscore), quote (spread), 1
#: (corr, p-values), hedge-ratio units (beta, beta_drift), bars (half_life),
#: seconds (staleness_s), trades per second (trade_rate).
METRICS = ("zscore", "spread", "corr", "beta", "beta_drift", "half_life", "adf_pvalue",
           "coint_pvalue", "staleness_s", "trade_rate")
#: Comparison operators, as written in a rule's text.
OPERATORS = (">", "<", ">=", "<=", "crosses above", "crosses below", "crosses")
_LEVEL_OPS = (">", "<", ">=", "<=")
_OPTIONS = ("hysteresis", "cooldown_s", "name")

_RULE_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?P<op>>=|<=|>|<|crosses\s+above|crosses\s+below|crosses)"
    r"\s*(?P<rest>.*)$", re.IGNORECASE)
_NUM_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def _fmt(v: float) -> str:
    """Shortest text that reads back as the same float: 2.0 -> '2'."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


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
