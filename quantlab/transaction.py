"""The one way quantlab writes to a SQLite file: ``BEGIN IMMEDIATE`` ... ``COMMIT``.

``BEGIN IMMEDIATE`` takes the write lock at the start, so two writers (threads
or processes) queue on the busy timeout instead of deadlocking on a lock
upgrade; any exception rolls back, unless SQLite already did (disk full, I/O
error). Used by the tick store and the trial ledger; the connection's owner
holds its own thread lock around the call.
"""
from __future__ import annotations

import contextlib
import sqlite3
from typing import Iterator

__all__ = ["write_transaction"]


@contextlib.contextmanager
def write_transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``with write_transaction(con): ...`` runs the block in one immediate
    transaction on ``con`` (an autocommit connection, ``isolation_level=None``):
    committed when the block ends, rolled back when it raises."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:  # SQLite may have rolled back itself (disk full, I/O)
            con.execute("ROLLBACK")
        raise
