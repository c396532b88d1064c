"""Shared fixtures. ``shared_data`` points at ../shared/data (real Binance data,
never copied into the project) and skips with a reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("QUANTLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real Binance data not found at {SHARED_DATA} (set QUANTLAB_SHARED_DATA)")
    return SHARED_DATA



@pytest.fixture(autouse=True)
def _ledger_in_tmp(tmp_path, monkeypatch):
    """Every test's default trial ledger is its own file in tmp_path: never the
    user's ``$QUANTLAB_LEDGER``, never ``./ledger.sqlite`` in the checkout (the
    default for --files/--archive). Tests of the default location delete the
    variable themselves."""
    monkeypatch.setenv("QUANTLAB_LEDGER", str(tmp_path / "ledger.sqlite"))


def pytest_configure(config):
    # the same for module- and session-scoped fixtures, which run before the one above
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="quantlab-test-ledger-")
    os.environ["QUANTLAB_LEDGER"] = os.path.join(folder, "ledger.sqlite")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
