"""Packaging: environment.yml lists what pyproject.toml lists; `import quantlab`
starts nothing and the pure modules import no UI or socket library."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from tests.conftest import ROOT


def _norm(req: str) -> str:
    name = re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-")


def _environment_yml_packages() -> tuple[set[str], list[str]]:
    conda, pip = set(), []
    in_pip = in_deps = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if not line.startswith(" "):
            in_deps = line.startswith("dependencies:")
            continue
        if not in_deps:
            continue
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped.strip().startswith("- "):
            continue
        item = stripped.strip()[2:].strip()
        if item == "pip:":
            in_pip = True
            continue
        if in_pip and line.startswith("      "):
            pip.append(item)
        else:
            in_pip = False
            conda.add(_norm(item))
    return conda, pip


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"]}
    wanted |= {_norm(r) for r in project["optional-dependencies"]["test"]}
    conda, pip = _environment_yml_packages()
    conda -= {"python", "pip"}
    assert conda == wanted, f"only in environment.yml: {conda - wanted}; only in pyproject: {wanted - conda}"
    assert pip == ["-e ."], "the project itself is installed in editable mode through pip:"


def test_console_script_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["quantlab"] == "quantlab.cli:main"


PROBE = r"""
import sys, threading, logging
before = set(sys.modules)
threads = threading.active_count()
import {module}
heavy = sorted(m for m in ("bokeh", "ipywidgets", "jupyter_bokeh", "websockets", "tornado")
               if m in sys.modules)
print(heavy, threading.active_count() - threads, len(logging.getLogger().handlers))
"""


def _probe(module: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return out.stdout.strip()


def test_import_quantlab_starts_nothing():
    assert _probe("quantlab") == "[] 0 0"


def test_pure_modules_import_no_ui_or_sockets():
    for module in ("quantlab.binance", "quantlab.schema", "quantlab.config", "quantlab.bars",
                   "quantlab.backtest", "quantlab.alerts", "quantlab.synthetic", "quantlab.analytics",
                   "quantlab.io", "quantlab.export", "quantlab.store", "quantlab.pairs"):
        assert _probe(module) == "[] 0 0", module
