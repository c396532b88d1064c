"""Deprecated alias of :mod:`quantlab.files` (kept for one release).

``quantlab.io`` shadowed the standard library's :mod:`io` inside the package; the
loaders now live in :mod:`quantlab.files`. ``from quantlab.io import load_trades``
keeps working and emits a :class:`DeprecationWarning` once, at import.
"""
from __future__ import annotations

import warnings

from quantlab.files import *  # noqa: F401,F403
from quantlab.files import __all__  # noqa: F401
from quantlab.files import _DATA_SUFFIXES  # noqa: F401 (used by quantlab.archive before 14)

warnings.warn("quantlab.io is deprecated: import quantlab.files instead (same names)",
              DeprecationWarning, stacklevel=2)
