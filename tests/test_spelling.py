"""One spelling (issue 14): hedge methods are spelled as in
``quantlab.analytics.HEDGE_METHODS`` (``rolling-ols``, ``theil-sen``) in every
user-facing place (README, notebooks, CLI, UI, reports, benchmarks, library
defaults and docstrings); ``rolling_ols`` / ``theil_sen`` are still accepted on input.

``rolling_ols`` the *function* (``rolling_ols(y, x, w)``, ``:func:`rolling_ols```,
imports, ``__all__``) is not a method name and is allowed.
"""
from __future__ import annotations

import ast
import json
import re

import pytest

from quantlab.analytics import HEDGE_METHODS
from tests.conftest import ROOT

#: method names with "_" -> canonical spelling
WRONG = {m.replace("-", "_"): m for m in HEDGE_METHODS if "-" in m}


def _python_offences(source: str, where: str) -> list[str]:
    """String constants equal to a non-canonical method name, or quoting one in
    prose, outside ``__all__`` (imports and calls are not string constants)."""
    tree = ast.parse(source)
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                allowed.update(id(c) for c in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in allowed:
            if node.value.strip() in WRONG:  # a whole literal: hedge="rolling_ols"
                out.append(f"{where}:{node.lineno}: {node.value!r}")
            else:  # a quoted name inside a docstring or help text
                out += _text_offences(node.value, f"{where}:{node.lineno}")
    return out


def _text_offences(text: str, where: str) -> list[str]:
    """Quoted or backticked method names in prose (README, markdown cells, comments,
    docstrings). A line that names the canonical spelling too explains the alias
    ("``rolling_ols`` is read as ``rolling-ols``") and is allowed."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for bad, good in WRONG.items():
            if good in line:
                continue
            if re.search(rf"(?<!:func:)[\"'`]{bad}[\"'`](?!\()", line):
                out.append(f"{where}:{lineno}: {line.strip()[:100]}")
    return out


def _comment_offences(source: str, where: str) -> list[str]:
    out = []
    for lineno, line in enumerate(source.splitlines(), 1):
        if "#" in line:
            out += [f"{where}:{lineno}: {line.strip()[:100]}"
                    for _ in _text_offences(line[line.index("#"):], where)]
    return out


def _user_facing_files():
    for pattern in ("quantlab/**/*.py", "benchmarks/*.py"):
        yield from sorted(ROOT.glob(pattern))
    yield from sorted(ROOT.glob("notebooks/*.ipynb"))
    yield from sorted(ROOT.glob("*.md"))


def test_hedge_methods_spelled_canonically_everywhere():
    offences: list[str] = []
    for path in _user_facing_files():
        rel = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".py":
            offences += _python_offences(text, rel) + _comment_offences(text, rel)
        elif path.suffix == ".ipynb":
            for i, cell in enumerate(json.loads(text)["cells"]):
                src = "".join(cell["source"])
                where = f"{rel} cell {i}"
                if cell["cell_type"] == "code":
                    offences += _python_offences(src, where) + _comment_offences(src, where)
                else:
                    offences += _text_offences(src, where)
        else:
            offences += _text_offences(text, rel)
    assert not offences, ("hedge methods are spelled " + ", ".join(HEDGE_METHODS)
                          + " in user-facing places:\n" + "\n".join(offences))


def test_the_check_finds_a_wrong_spelling():
    assert _python_offences('hedge = "rolling_ols"\n', "x.py") == ["x.py:1: 'rolling_ols'"]
    assert not _python_offences('hedge = "rolling-ols"  # "rolling_ols" is read as "rolling-ols"\n',
                                "x.py")
    assert _python_offences('def f():\n    """hedge ``"theil_sen"``."""\n', "x.py")
    assert _comment_offences('h = 1  # "theil_sen" or "kalman"\n', "x.py")
    assert _text_offences("pick `rolling_ols` here", "R.md")
    # the function rolling_ols is not a method name
    assert not _python_offences('__all__ = ["rolling_ols"]\nfrom m import rolling_ols\n'
                                'b = rolling_ols(y, x, 3)\n"""see :func:`rolling_ols`"""\n', "x.py")
    assert not _text_offences("`rolling_ols(y, x, w)` and :func:`rolling_ols`", "R.md")


def test_cli_offers_the_canonical_names_and_accepts_both():
    from quantlab.cli import build_parser

    parser = build_parser()
    seen = 0
    for action in parser._subparsers._group_actions[0].choices.values():  # noqa: SLF001
        for a in action._actions:  # noqa: SLF001
            if "--hedge" in a.option_strings:
                seen += 1
                assert set(a.choices) == set(HEDGE_METHODS) and a.default == "rolling-ols"
                assert a.type("theil_sen") == "theil-sen" and a.type("rolling-ols") == "rolling-ols"
    assert seen >= 1
    args = ["analyze", "--files", "a.csv", "--y", "AUSDT", "--x", "BUSDT", "--window", "30",
            "--out", "o.csv", "--hedge"]
    assert parser.parse_args(args + ["theil_sen"]).hedge == "theil-sen"
    assert parser.parse_args(args + ["rolling-ols"]).hedge == "rolling-ols"


def test_ui_and_reports_use_canonical_names_and_accept_both():
    pytest.importorskip("ipywidgets")
    from quantlab.reports.parameters import ReportParameters
    from quantlab.ui import MonitorParams
    from quantlab.ui.pipeline import HEDGES, PairSpec

    assert set(HEDGES) == set(HEDGE_METHODS)
    assert PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT").hedge == "rolling-ols"
    assert PairSpec(symbol_y="ETHUSDT", symbol_x="BTCUSDT", hedge="theil_sen").hedge == "theil-sen"
    assert MonitorParams().hedge == "rolling-ols"
    assert MonitorParams(hedge="rolling_ols").hedge == "rolling-ols"
    assert ReportParameters.__dataclass_fields__["hedge"].default == "rolling-ols"
