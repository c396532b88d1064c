"""Exceptions raised by quantlab.

Every error is a :class:`QuantlabError`. Subclasses carry the fields that
explain the failure (``field``, ``required``, ``got``, ``path``, ``line``) and a
message that says what was expected, what came instead and what to do.
"""
from __future__ import annotations

from typing import Sequence


class QuantlabError(Exception):
    """Base class of every error quantlab raises on purpose."""


class ConfigError(QuantlabError, ValueError):
    """A setting or argument is invalid.

    Parameters
    ----------
    field : name of the setting, e.g. ``"window"``.
    got : the value received.
    expected : what would have been accepted, in words.
    """

    def __init__(self, field: str, got: object, expected: str):
        self.field = field
        self.got = got
        self.expected = expected
        super().__init__(f"{field}: expected {expected}, got {got!r}")


class NotATrade(QuantlabError):
    """A WebSocket frame could not be understood as a trade or control message.

    ``raw`` keeps (a prefix of) the offending frame for logs.
    """

    def __init__(self, reason: str, raw: object = None):
        self.reason = reason
        self.raw = raw
        shown = raw if not isinstance(raw, (str, bytes)) else raw[:200]
        super().__init__(f"not a trade: {reason}; frame={shown!r}")


_MAX_REASON = 600  # characters of a DataFileError reason (head and tail are kept)


class DataFileError(QuantlabError, ValueError):
    """A data file is malformed. Names the file, line (1-based) and column."""

    def __init__(self, path: object, reason: str, line: int | None = None,
                 column: str | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        reason = " ".join(reason.splitlines())  # one line, whatever a third-party message held
        if len(reason) > _MAX_REASON:  # a huge bad value must not become a huge message
            reason = f"{reason[:_MAX_REASON // 2]} ... {reason[-_MAX_REASON // 3:]}"
        self.reason = reason
        where = self.path
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")


class InsufficientData(QuantlabError, ValueError):
    """Not enough observations for a statistic: "zscore needs at least
    window=120 bars, got 37"."""

    def __init__(self, what: str, required: int, got: int):
        self.what = what
        self.required = required
        self.got = got
        super().__init__(f"{what} needs at least {required} bars, got {got}")


class UnknownSymbol(QuantlabError, LookupError):
    """A symbol is not present in the store or the files given."""

    def __init__(self, symbol: str, available: list[str] | tuple[str, ...] = ()):
        self.symbol = symbol
        self.available = list(available)
        hint = f"; available: {', '.join(self.available)}" if self.available else ""
        super().__init__(f"unknown symbol {symbol!r}{hint}")


class FatalFeedError(QuantlabError):
    """A feed error that retrying cannot fix (HTTP 451 restricted location,
    418 IP ban still in force)."""


class UnsafeOverwrite(QuantlabError):
    """A command would delete or overwrite a file it did not create (``quantlab
    demo --db research.db``). ``path`` names the file, ``advice`` what to do."""

    def __init__(self, path: object, reason: str, advice: str):
        self.path = str(path)
        self.reason = reason
        self.advice = advice
        super().__init__(f"{self.path}: {reason}; {advice}")


class StoreError(QuantlabError):
    """The tick store cannot do what was asked: the file is not a quantlab
    store, is read-only, is closed, or SQLite failed (``path`` names the file).
    """

    def __init__(self, message: str, path: object = None):
        self.path = None if path is None else str(path)
        super().__init__(message if path is None else f"{path}: {message}")


class SchemaVersionError(StoreError):
    """The file's schema version is not the one this quantlab uses.

    ``found`` is the file's ``PRAGMA user_version``, ``supported``
    :data:`quantlab.store.SCHEMA_VERSION`.
    """

    def __init__(self, path: object, found: int, supported: int, advice: str):
        self.found = found
        self.supported = supported
        super().__init__(f"schema version {found}, this quantlab uses version {supported}: "
                         f"{advice}", path)


class AmbiguousSymbol(QuantlabError, LookupError):
    """A symbol is stored for several markets or kinds and the call did not
    say which. ``choices`` lists ``(market, kind)`` pairs."""

    def __init__(self, symbol: str, choices: Sequence[tuple[str, str]]):
        self.symbol = symbol
        self.choices = list(choices)
        listed = ", ".join(f"market={m!r} kind={k!r}" for m, k in self.choices)
        super().__init__(f"symbol {symbol!r} is stored for {len(self.choices)} streams: {listed}; "
                         f"pass market= and/or kind= to choose one")


class LedgerError(QuantlabError):
    """The ledger cannot do what was asked (``path`` names the file)."""

    def __init__(self, message: str, path: object = None):
        self.path = None if path is None else str(path)
        super().__init__(message if path is None else f"{path}: {message}")


class ArchiveError(QuantlabError):
    """An archive partition cannot be read (names the file and the fix)."""

    def __init__(self, message: str):
        super().__init__(message)


class RestError(QuantlabError):
    """A Binance REST request failed.

    Attributes
    ----------
    status : HTTP status (0 when the server could not be reached).
    url : the request URL.
    retry_after_s : ``Retry-After`` header in seconds, when the server sent one.
    reason : short text (HTTP reason, socket error).
    """

    def __init__(self, status: int, url: str, reason: str, retry_after_s: float | None = None):
        self.status = status
        self.url = url
        self.reason = reason
        self.retry_after_s = retry_after_s
        what = f"HTTP {status}" if status else "no response"
        extra = f"; Retry-After {retry_after_s:g} s" if retry_after_s is not None else ""
        super().__init__(f"GET {url}: {what} ({reason}){extra}")


class IngestStopTimeout(QuantlabError, TimeoutError):
    """:meth:`quantlab.ingest.Ingester.stop` did not finish within its timeout.

    The ingester keeps flushing in the background; call ``stop()`` again to
    keep waiting. ``queued`` is how many trades were still waiting for the
    writer when the timeout expired.
    """

    def __init__(self, timeout_s: float, queued: int):
        self.timeout_s = timeout_s
        self.queued = queued
        super().__init__(f"ingester did not stop within {timeout_s:g} s ({queued} trades still "
                         "queued for the writer); it keeps flushing: call stop() again to wait")
