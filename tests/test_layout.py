"""Packages along the seams (issue 14): the split packages keep their old public
names, ``quantlab.io`` keeps working for one release with a DeprecationWarning,
and no module of the split packages is much over 600 lines."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPLIT = ("files", "store", "replay")


def test_quantlab_io_is_a_deprecated_alias_of_files() -> None:
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import quantlab.io\nexcept DeprecationWarning as e:\n    print('warned', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.startswith("warned quantlab.io is deprecated: import quantlab.files"), out
    with pytest.warns(DeprecationWarning, match="quantlab.files"):
        sys.modules.pop("quantlab.io", None)
        import quantlab.io as old  # noqa: F401
    import quantlab.files as new
    for name in new.__all__ + ["_DATA_SUFFIXES"]:
        assert getattr(old, name) is getattr(new, name), name


@pytest.mark.parametrize("pkg", SPLIT)
def test_split_modules_stay_small(pkg: str) -> None:
    folder = ROOT / "quantlab" / pkg
    assert (folder / "__init__.py").is_file()
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert len(sizes) >= 4, sizes
    assert max(sizes.values()) <= 650, sizes


def test_cli_handlers_live_in_commands() -> None:
    import argparse
    import importlib

    from quantlab import archive, ledger, pairs
    from quantlab.commands.replay import replay_keywords

    for name in ("analyze", "archive", "backtest", "features", "import_files", "ledger", "replay"):
        assert callable(importlib.import_module(f"quantlab.commands.{name}").command), name
    for mod in (pairs, archive, ledger):
        assert not [n for n in vars(mod) if n.endswith("_cli")], mod.__name__
    ns = argparse.Namespace(capture=["a.gz"], trades=None, symbols=["BTCUSDT"], market=None, rate=5.0,
                            speed=2.0, seed=1, host="127.0.0.1", port=0, faults=["drop_after=3"])
    kw = replay_keywords(ns, market="spot", prefill=0)
    assert kw == {"source_kind": "capture", "paths": ["a.gz"], "symbols": ["BTCUSDT"], "rate": 5.0,
                  "speed": 2.0, "port": 0, "seed": 1, "host": "127.0.0.1", "faults": ["drop_after=3"],
                  "market": "spot", "prefill": 0, "rebase_time": False, "live_clock": False}
