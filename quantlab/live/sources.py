"""The in-process trade source of a live session: a
:class:`~quantlab.replay.ReplayServer` on loopback streaming either the
synthetic pair (continuing what the store holds) or capture files (their times
moved to now). Live Binance needs no source here: the ingester connects to it.

The replay package (sockets, threads) is imported only when a source is built.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from quantlab.errors import ConfigError, UnknownSymbol

if TYPE_CHECKING:  # pragma: no cover
    from quantlab.live.session import SessionSettings

__all__ = ["capture_paths", "resume_specs", "start_replay"]

#: history read back to find a synthetic symbol's last price, ms (one day)
RESUME_PRICE_LOOKBACK_MS = 86_400_000


def capture_paths(spec: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """Capture files from a path, a comma-separated list, a list or a folder
    (its ``*.gz`` files, sorted). Raises :class:`~quantlab.errors.ConfigError`
    when nothing is named."""
    items: list[str | Path] = []
    if isinstance(spec, (str, Path)):
        items = [part.strip() for part in str(spec).split(",") if part.strip()]
    elif spec:
        items = list(spec)
    out: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        out.extend(sorted(path.glob("*.gz")) if path.is_dir() else [path])
    if not out:
        raise ConfigError("capture_path", spec, "capture files (.gz) or a folder holding them")
    return out


def synthetic_symbols(settings: "SessionSettings") -> tuple[str, ...]:
    """The synthetic market's symbols: its first symbol is the random-walk leg,
    so it is the first pair's x (then ``y = alpha + beta x + OU spread``),
    followed by the first pair's y and every other symbol of the session."""
    y, x = settings.pairs[0]
    return (x, y) + tuple(s for s in settings.symbols if s not in (x, y))


def resume_specs(settings: "SessionSettings", symbols: Sequence[str], store: Any) -> dict:
    """Synthetic symbols continuing what the store holds: ids after the last
    stored id (the ingester ignores ids it already has) and the last stored
    1 s close of the past day (no price jump against the history).

    Parameters
    ----------
    settings : the session's settings (market, stream).
    symbols : the synthetic market's symbols.
    store : a read-only :class:`~quantlab.store.TickStore`, or None (no store
        file yet: the default specs).

    Returns
    -------
    dict
        symbol -> :class:`~quantlab.synthetic.SymbolSpec`.
    """
    from quantlab.synthetic import default_spec

    specs = {s: default_spec(s, settings.market) for s in symbols}
    if store is None:
        return specs
    now_ms = time.time_ns() // 1_000_000
    for sym, spec in specs.items():
        try:
            last = store.last_trade_id(settings.market, sym, settings.stream)
            bars = store.bars_1s(sym, market=settings.market, kind=settings.stream,
                                 start_ms=now_ms - RESUME_PRICE_LOOKBACK_MS)
        except (UnknownSymbol, ConfigError):
            continue
        changes: dict[str, Any] = {}
        if last is not None:
            key = "first_trade_id" if settings.stream == "trade" else "first_agg_id"
            changes[key] = int(last) + 1
        if len(bars):
            changes["price"] = float(bars["close"].iloc[-1])
        specs[sym] = dataclasses.replace(spec, **changes)
    return specs


def start_replay(settings: "SessionSettings", *, seed: int, store: Any = None) -> Any:
    """Start a :class:`~quantlab.replay.ReplayServer` on 127.0.0.1 (a free
    port) for ``settings.source`` ``"replay"`` (the synthetic market at
    ``settings.rate`` trades/s over all symbols, generator ``seed``, resumed
    from ``store``) or ``"capture"`` (``settings.capture_path`` replayed with
    its times moved to now, so lag and staleness read as live). Returns the
    running server; the caller stops it."""
    from quantlab.replay import ReplayServer, SyntheticSource, make_source

    if settings.source == "replay":
        symbols = synthetic_symbols(settings)
        source = SyntheticSource(symbols, market=settings.market, rate=settings.rate, seed=seed,
                                 specs=resume_specs(settings, symbols, store))
    elif settings.source == "capture":
        source = make_source("capture", capture_paths(settings.capture_path),
                             symbols=settings.symbols, market=settings.market, rebase_time=True)
    else:
        raise ConfigError("source", settings.source, "'replay' or 'capture' for an in-process server")
    server = ReplayServer(source)
    server.start()
    return server
