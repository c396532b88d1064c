"""CLI handlers: one small module per command (issue 14).

Each ``command(args)`` takes the :mod:`argparse` namespace that
:mod:`quantlab.cli` (the parser) built, turns it into plain arguments and calls
the library; the library modules (``pairs``, ``replay``, ``archive``,
``ledger`` ...) never read a namespace. Handlers raise
:class:`~quantlab.errors.QuantlabError` subclasses for bad input;
:func:`quantlab.cli.main` turns them into one line and exit status 2.
"""
