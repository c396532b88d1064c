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
                   "quantlab.files", "quantlab.export", "quantlab.store", "quantlab.pairs",
                   "quantlab.live"):
        assert _probe(module) == "[] 0 0", module


# --- the lock: exact versions of pyproject's dependencies + the test extra ------------------
LOCK = ROOT / "requirements.lock"
FIX = ("run `make lock` (pip-compile of pyproject.toml with the test extra, Python 3.11) "
       "and commit requirements.lock")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> tuple[dict[str, str], set[str], list[str]]:
    """Pins (name -> version), the direct dependencies (annotated ``via quantlab
    (pyproject.toml)``) and the lines that are not ``name==version``."""
    pins: dict[str, str] = {}
    direct: set[str] = set()
    bad: list[str] = []
    current = None
    for no, line in enumerate(LOCK.read_text().splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            if current and "quantlab (pyproject.toml)" in s:
                direct.add(current)
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!]+)", s)
        if m is None:
            bad.append(f"line {no}: {s}")
            current = None
            continue
        current = _canon(m.group(1))
        pins[current] = m.group(2)
    return pins, direct, bad


def _pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"]["test"])


def test_lock_pins_exact_versions_only():
    assert LOCK.exists(), f"requirements.lock is missing: {FIX}"
    text = LOCK.read_text()
    pins, _, bad = _lock()
    # no ranges, URLs, editable installs or machine-specific --index-url / --find-links lines
    assert not bad, f"requirements.lock has lines that are not exact `name==version` pins: {bad}; {FIX}"
    assert len(pins) > 50
    assert "Python 3.11" in text and "make lock" in text.split("\n\n", 1)[0], \
        f"requirements.lock was not made by `make lock` for Python 3.11: {FIX}"


def test_lock_matches_pyproject():
    from packaging.requirements import Requirement

    pins, direct, _ = _lock()
    problems = []
    for raw in _pyproject_requirements():
        req = Requirement(raw)
        name = _canon(req.name)
        if name not in pins:
            problems.append(f"{req.name} is in pyproject.toml but not in the lock")
            continue
        if not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}=={pins[name]} in the lock does not satisfy {raw!r}")
        if name not in direct:
            problems.append(f"{req.name} is not marked `via quantlab (pyproject.toml)` in the lock")
        for extra in req.extras:  # e.g. dask[distributed]: what the extra pulls in is pinned too
            try:
                from importlib.metadata import requires
                extra_reqs = [Requirement(r) for r in requires(req.name) or ()]
            except Exception:  # not installed here: pip-compile resolved it, nothing to add
                continue
            for r in extra_reqs:
                if r.marker is not None and r.marker.evaluate({"extra": extra}) \
                        and not r.marker.evaluate({"extra": ""}) and _canon(r.name) not in pins:
                    problems.append(f"{r.name} (from {raw}) is not in the lock")
    wanted = {_canon(Requirement(r).name) for r in _pyproject_requirements()}
    problems += [f"{n} is pinned as a direct dependency but no longer in pyproject.toml"
                 for n in sorted(direct - wanted)]
    assert not problems, ("pyproject.toml and requirements.lock disagree:\n  "
                          + "\n  ".join(problems) + f"\nFix: {FIX}")


def test_environment_yml_is_in_step_with_the_lock():
    """environment.yml keeps ranges (conda-forge builds), but the lock's exact
    versions must satisfy them, so both installs describe the same set."""
    from packaging.specifiers import SpecifierSet

    pins, _, _ = _lock()
    conda, _ = _environment_yml_packages()
    problems = []
    for line in (ROOT / "environment.yml").read_text().splitlines():
        item = line.split("#", 1)[0].strip()
        if not item.startswith("- ") or item.endswith(":"):
            continue
        m = re.fullmatch(r"-\s+([A-Za-z0-9_.-]+)\s*([<>=!~][^\s]*)?", item)
        if m is None or _canon(m.group(1)) in ("python", "pip") or not m.group(2):
            continue
        name, spec = _canon(m.group(1)), m.group(2)
        if name in pins and not SpecifierSet(spec).contains(pins[name], prereleases=True):
            problems.append(f"{name}=={pins[name]} (lock) vs {name}{spec} (environment.yml)")
    assert not problems, "environment.yml and requirements.lock disagree: " + "; ".join(problems) \
        + " (widen the range in environment.yml and pyproject.toml, or `make lock`)"
    assert conda - {"python", "pip"} <= set(pins), f"in environment.yml, not in the lock: {FIX}"


def test_make_setup_installs_the_lock():
    make = (ROOT / "Makefile").read_text()
    rule = make[make.index("$(STAMP):"):make.index("touch $(STAMP)")]
    assert "pyproject.toml" in rule.splitlines()[0] and "$(LOCK)" in rule.splitlines()[0], \
        "the install stamp must depend on pyproject.toml and the lock (re-install when either changes)"
    assert "-r $(LOCK)" in rule and "--no-deps -e ." in rule
    assert re.search(r"^LOCK := requirements\.lock$", make, re.M) and re.search(r"^lock:", make, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI installs through make setup
