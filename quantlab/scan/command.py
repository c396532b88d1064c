"""Deprecated path of :mod:`quantlab.commands.scan` (kept for one release).

The ``quantlab scan`` handler reads an argparse namespace, so it lives in the CLI
layer now; ``from quantlab.scan.command import add_arguments, scan_cli`` keeps
working and emits a :class:`DeprecationWarning` once, at import.
"""
from __future__ import annotations

import warnings

from quantlab.commands.scan import add_arguments  # noqa: F401
from quantlab.commands.scan import command as scan_cli  # noqa: F401

warnings.warn("quantlab.scan.command is deprecated: import quantlab.commands.scan instead "
              "(scan_cli is now command)", DeprecationWarning, stacklevel=2)
