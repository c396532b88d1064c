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
