"""Deprecated path of :mod:`quantlab.commands.report` (kept for one release).

The ``quantlab report`` handler reads an argparse namespace, so it lives in the CLI
layer now; ``from quantlab.reports.command import add_arguments, report_cli`` keeps
working and emits a :class:`DeprecationWarning` once, at import.
"""
from __future__ import annotations

import warnings

from quantlab.commands.report import _params, add_arguments  # noqa: F401
from quantlab.commands.report import command as report_cli  # noqa: F401

__all__ = ["add_arguments", "report_cli"]

warnings.warn("quantlab.reports.command is deprecated: import quantlab.commands.report instead "
              "(report_cli is now command)", DeprecationWarning, stacklevel=2)
