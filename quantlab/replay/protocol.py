"""The Binance WebSocket protocol, pure: control messages (``SUBSCRIBE`` ... with
Binance's replies, error codes and limits), stream paths, and WebSocket text frames.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from quantlab import binance


# =============================================================================
# Control messages (pure)
# =============================================================================
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
# Stream names Binance accepts (case-insensitive symbol: upper case is acknowledged and
# then silent). Anything else is "Invalid request: invalid stream".
_STREAM_RE = re.compile(
    r"^(?:[A-Za-z0-9]+@(?:trade|aggTrade|bookTicker|miniTicker|ticker|avgPrice"
    r"|ticker_(?:1h|4h|1d)|depth(?:5|10|20)?(?:@(?:0|100|250|500|1000)ms)?"
    r"|kline_(?:1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)|markPrice(?:@1s)?)"
    r"|![A-Za-z]+(?:_(?:1h|4h|1d))?@arr(?:@1s)?)$")


# "A single connection can listen to a maximum of 1024 streams" (spot and USD-M docs,
# "WebSocket Limits"). Binance documents no reply for a SUBSCRIBE beyond it; this server
# answers with its "Invalid request" error shape (code 2), before examining any name.
MAX_STREAMS = 1024
# Incoming messages per second and connection (same section): spot 5, USD-M 10; a
# connection beyond it is closed with 1008 "Too many requests", as Binance does.
MAX_INCOMING_PER_S = {"spot": 5.0, "usdm": 10.0}


def _too_many_streams(limit: int) -> str:
    return f"Invalid request: too many streams (a connection listens to at most {limit})"


def _error(code: int, msg: str, request_id: object) -> dict:
    return {"error": {"code": code, "msg": msg}, "id": request_id}


def _valid_id(value: object) -> bool:
    # Binance spot docs, "Live Subscribing/Unsubscribing": a 64-bit signed integer, an
    # alphanumeric string of at most 36 characters, or null.
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -2 ** 63 <= value < 2 ** 63
    return isinstance(value, str) and len(value) <= 36 and value.isalnum()


def handle_control(raw: str | bytes, subscriptions: Sequence[str], combined: bool, *,
                   max_streams: int = MAX_STREAMS, unserved: Callable[[str], str | None] | None = None
                   ) -> tuple[dict, list[str], bool]:
    """Answer one client text frame as Binance's stream servers do.

    Replies (binance-spot-api-docs, web-socket-streams.md, "Error Messages"):
    ``{"result":null,"id":1}`` for SUBSCRIBE/UNSUBSCRIBE/SET_PROPERTY, a list for
    LIST_SUBSCRIPTIONS, ``{"error":{"code":2,"msg":"Invalid request: ..."},"id":1}`` for
    an invalid stream, method, id or property name, code 3 for invalid JSON, code 1
    for a non-boolean ``combined`` value and code 0 for an unknown property.

    Parameters
    ----------
    raw : the frame's text.
    subscriptions : current stream names, in subscription order.
    combined : whether payloads are wrapped (``/stream``) or raw (``/ws``).
    max_streams : streams one connection may hold (Binance: 1024, "WebSocket Limits"); a
        SUBSCRIBE that would exceed it is refused whole, before its names are examined.
    unserved : ``stream -> reason or None``; a SUBSCRIBE naming a valid stream that the
        server cannot feed is refused whole with that reason (code 2), never acknowledged
        and then left silent.

    Cost is linear in the number of streams named and held.

    Returns
    -------
    (reply, subscriptions, combined) : the JSON object to send and the new state.

    Examples
    --------
    >>> handle_control('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}', [], True)
    ({'result': None, 'id': 1}, ['btcusdt@trade'], True)
    >>> handle_control('{"method":"SUBSCRIBE","params":["btcusdt@nope"],"id":2}', [], True)[0]
    {'error': {'code': 2, 'msg': 'Invalid request: invalid stream'}, 'id': 2}
    """
    subs = list(subscriptions)
    try:
        req = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}", None), subs, combined
    if not isinstance(req, dict):
        return _error(2, "Invalid request: expected a JSON object", None), subs, combined
    request_id = req.get("id")
    if "method" not in req:
        return _error(2, "Invalid request: missing field `method`", request_id if _valid_id(request_id) else None), \
            subs, combined
    method = req["method"]
    if method not in _METHODS:
        variants = ", ".join(f"`{m}`" for m in _METHODS)
        return _error(2, f"Invalid request: unknown variant `{method}`, expected one of {variants}",
                      request_id if _valid_id(request_id) else None), subs, combined
    if "id" not in req or not _valid_id(request_id):
        return _error(2, "Invalid request: request ID must be an unsigned integer", None), subs, combined
    params = req.get("params")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if isinstance(params, list) and method == "SUBSCRIBE" and len(params) > max_streams:
            return _error(2, _too_many_streams(max_streams), request_id), subs, combined
        if not isinstance(params, list) or not params or \
                not all(isinstance(p, str) and _STREAM_RE.match(p) for p in params):
            return _error(2, "Invalid request: invalid stream", request_id), subs, combined
        held = set(subs)
        if method == "SUBSCRIBE":
            new = [p for p in dict.fromkeys(params) if p not in held]
            if len(subs) + len(new) > max_streams:
                return _error(2, _too_many_streams(max_streams), request_id), subs, combined
            if unserved is not None:
                for p in new:
                    reason = unserved(p)
                    if reason is not None:
                        return _error(2, f"Invalid request: {reason}", request_id), subs, combined
            subs.extend(new)
        else:
            gone = set(params)
            subs = [s for s in subs if s not in gone]
        return {"result": None, "id": request_id}, subs, combined
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": subs, "id": request_id}, subs, combined
    if not isinstance(params, list) or not params or not isinstance(params[0], str):
        return _error(2, "Invalid request: property name must be a string", request_id), subs, combined
    if params[0] != "combined":
        return _error(0, "Unknown property", request_id), subs, combined
    if method == "GET_PROPERTY":
        return {"result": combined, "id": request_id}, subs, combined
    if len(params) != 2 or not isinstance(params[1], bool):
        return _error(1, "Invalid value type: expected Boolean", request_id), subs, combined
    return {"result": None, "id": request_id}, subs, params[1]


def parse_ws_path(path: str) -> tuple[str, bool, list[str]] | None:
    """``(route, combined, streams)`` of a stream URL path, or ``None`` if not one.

    >>> parse_ws_path("/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade")
    ('/market', True, ['btcusdt@aggTrade', 'ethusdt@aggTrade'])
    >>> parse_ws_path("/ws/btcusdt@trade")
    ('', False, ['btcusdt@trade'])
    """
    parts = urlsplit(path)
    p = parts.path.rstrip("/") or "/"
    route = ""
    for candidate in binance.USDM_ROUTES:
        if p == candidate or p.startswith(candidate + "/"):
            route, p = candidate, p[len(candidate):] or "/"
            break
    if p == "/ws":
        return route, False, []
    if p.startswith("/ws/"):
        return route, False, [unquote(s) for s in p[4:].split("/") if s]
    if p == "/stream":
        query = dict(parse_qsl(parts.query))
        return route, True, [s for s in query.get("streams", "").split("/") if s]
    return None


def _ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, unmasked WebSocket frame (RFC 6455 section 5.2; servers never mask).

    Data frames are framed here, once per trade, and written straight to the transport
    of every subscriber: websockets' ``send()`` costs ~50 us per message on this
    machine (about 20k messages/s), joined pre-framed bytes cost almost nothing. Control
    frames (ping, close) and replies still go through websockets, on the same loop, so
    frames never interleave.
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


# Headers of final text frames by payload length: every trade frame is shorter than this,
# and a table lookup is ~6x cheaper than building the header (throughput matters here).
_TEXT_HEADERS = [_ws_frame(b"\0" * n)[:-n or None] for n in range(4096)]


def _ws_text_frames(payloads: list[bytes]) -> list[bytes]:
    """:func:`_ws_frame` of many text payloads."""
    heads = _TEXT_HEADERS
    if payloads and max(map(len, payloads)) < len(heads):
        return [heads[len(p)] + p for p in payloads]
    return [_ws_frame(p) for p in payloads]
