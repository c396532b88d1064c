"""The websockets fast path, fenced: data frames straight from the socket buffer.

:func:`_tap_connection_class` builds a websockets ``ClientConnection`` subclass
that hands every data frame to ``on_frame(data)`` as it arrives, and decodes
runs of plain text frames itself while websockets' parser is idle. To know
when the parser is idle it reads **websockets' private state**: the
``Protocol.parse`` generator's frames (``gi_code``, ``gi_yieldfrom``,
``read_exact``'s local ``n``) and ``StreamReader.buffer``. That is not a
public API, so:

* it is used only with the websockets versions it was verified with
  (:data:`VERIFIED_WEBSOCKETS`, the bound in ``pyproject.toml``), and only
  when the private names it needs exist (:func:`fast_path_problem`);
* anything else, ``IngestSettings(ws_fast_path=False)`` or the environment
  variable ``QUANTLAB_WS_FAST_PATH=0`` selects the plain path: websockets'
  own ``recv()`` (:func:`use_fast_path`). ``IngestStats.ws_path`` says which
  one ran; the ingest tests run on both.

Nothing here decides anything about ids: frames go to the ingester's handler
(:mod:`quantlab.ingest.supervisor`), which asks :mod:`quantlab.ingest.core`.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

logger = logging.getLogger(__name__)

#: websockets versions (major, inclusive lower / exclusive upper) the tap was
#: verified with; keep in step with ``websockets>=14,<18`` in pyproject.toml.
VERIFIED_WEBSOCKETS = ((14, 0), (18, 0))

#: Environment variable that forces the plain path when set to ``0``.
ENV_FLAG = "QUANTLAB_WS_FAST_PATH"


def fast_path_problem() -> str | None:
    """Why the fast path cannot be used with the installed websockets, or
    ``None`` when it can (verified version, private names present)."""
    try:
        import websockets
        from websockets.frames import Frame
        from websockets.protocol import Protocol
        from websockets.streams import StreamReader
    except ImportError as exc:  # pragma: no cover - websockets is a declared dependency
        return f"websockets not importable: {exc}"
    version = getattr(websockets, "__version__", "0")
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return f"websockets version {version!r} not understood"
    lo, hi = VERIFIED_WEBSOCKETS
    if not lo <= parts < hi:
        return (f"websockets {version} is outside the verified range "
                f"{lo[0]}.{lo[1]}..<{hi[0]}.{hi[1]}")
    for owner, name in ((Protocol, "parse"), (StreamReader, "at_eof"), (StreamReader, "read_exact"),
                        (Frame, "parse")):
        fn = getattr(owner, name, None)
        fn = getattr(fn, "__func__", fn)
        if getattr(fn, "__code__", None) is None:
            return f"websockets {version}: {owner.__name__}.{name} is not a plain function"
    return None


def use_fast_path(requested: bool = True) -> bool:
    """Whether connections should use the tap: ``requested`` (the setting),
    not switched off by ``QUANTLAB_WS_FAST_PATH=0``, and the installed
    websockets verified (else a warning names why and the plain path runs)."""
    if not requested or os.environ.get(ENV_FLAG, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    problem = fast_path_problem()
    if problem is not None:
        logger.warning("websockets fast path off: %s; using recv()", problem)
        return False
    return True


_TAP: Any = None


def _frame_size(buf: bytes, pos: int, n: int) -> int:
    """Total size (header + payload) of the unmasked WebSocket frame at
    ``buf[pos:n]``, read from its header; -1 if the header is incomplete, -2
    if the frame is masked (which a server must not send)."""
    if n - pos < 2:
        return -1
    ln = buf[pos + 1]
    if ln & 0x80:
        return -2
    if ln < 126:
        return 2 + ln
    if ln == 126:
        return -1 if n - pos < 4 else 4 + ((buf[pos + 2] << 8) | buf[pos + 3])
    return -1 if n - pos < 10 else 10 + int.from_bytes(buf[pos + 2:pos + 10], "big")


def _tap_connection_class() -> Any:
    """A ``ClientConnection`` that hands every complete data frame to
    ``self.on_frame(data)`` as websockets parses it, instead of queueing it
    for ``recv()``.

    Why: ``recv()`` costs a coroutine round trip, a queue put/get and flow
    control bookkeeping per message, about a quarter of the loop's time per
    trade on this machine (benchmarks/ingest.py). Its ``data_received`` goes
    further and decodes runs of plain text frames itself while websockets'
    parser is idle (see there): websockets' own per-frame decoding cost about
    half of the loop's time per trade. Pings, pongs and the closing
    handshake are still handled by websockets; ``connect(create_connection=)``
    is its documented hook for custom connections. Built on first use so that
    importing quantlab.ingest does not import websockets.
    """
    global _TAP
    if _TAP is not None:
        return _TAP
    from websockets.asyncio.client import ClientConnection
    from websockets.frames import Frame, Opcode
    from websockets.protocol import Protocol, State
    from websockets.streams import StreamReader

    TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
    OPEN = State.OPEN

    # Where websockets' parse() generator waits between frames, and inside one.
    PARSE = Protocol.parse.__code__
    AT_EOF = StreamReader.at_eof.__code__
    FRAME_PARSE = Frame.parse.__func__.__code__
    READ_EXACT = StreamReader.read_exact.__code__
    from_bytes = int.from_bytes

    class _TapConnection(ClientConnection):
        on_frame: Callable[[bytes], None] | None = None
        _fragments: list | None = None

        def _need(self) -> int:
            """How many bytes websockets' parser needs before it waits at a
            frame boundary again: 0 when it waits there with an empty buffer
            (frames may be parsed without it), else the bytes its pending
            ``read_exact`` lacks, or -1 when not known (closing, a fragmented
            message, an unexpected parser state): then all goes to websockets."""
            proto = self.protocol
            if proto.state is not OPEN or proto.current_size is not None:
                return -1
            gen = proto.parser  # ClientProtocol.parse delegates to Protocol.parse
            while gen is not None and gen.gi_code is not PARSE:
                gen = gen.gi_yieldfrom
            sub = gen.gi_yieldfrom if gen is not None else None
            if sub is None:
                return -1
            code = sub.gi_code
            if code is AT_EOF:
                return -1 if proto.reader.buffer else 0
            if code is not FRAME_PARSE:
                return -1
            rd = sub.gi_yieldfrom
            if rd is None or rd.gi_code is not READ_EXACT:
                return -1
            need = rd.gi_frame.f_locals.get("n", 0) - len(proto.reader.buffer)
            return need if need > 0 else -1

        def data_received(self, data: bytes) -> None:
            """Bulk frame decoding: while websockets' parser waits at a frame
            boundary, complete unmasked, unfragmented TEXT frames are parsed
            here in a tight loop and go straight to ``on_frame`` (websockets'
            generator-based ``Frame.parse``, event list and dispatch cost ~3x
            more per frame). Anything else — a control frame (a ping is
            answered by websockets as usual), a binary or fragmented frame,
            RSV bits, a frame over the size limit, an incomplete frame at the
            end of ``data`` — goes to websockets' own ``data_received``, one
            frame at a time; a frame websockets holds incomplete gets exactly
            the bytes it lacks first. Websockets' reader state is thus always
            what it would have been, and frames are delivered in order.
            """
            on_frame = self.on_frame
            if on_frame is None or self.response is None:  # handshake
                super().data_received(data)
                return
            n = len(data)
            pos = 0
            proto = self.protocol
            limit = proto.max_message_size  # websockets' own checks: PayloadTooBig
            frag = proto.max_fragment_size
            if frag is not None:
                limit = frag if limit is None else min(limit, frag)
            if limit is None:
                limit = 1 << 63
            while pos < n:
                need = self._need()
                if need:  # websockets first: resync to a frame boundary, or all of it
                    if need < 0 or pos + need >= n:
                        super().data_received(data[pos:] if pos else data)
                        return
                    super().data_received(data[pos:pos + need])
                    pos += need
                    continue
                # -- the hot loop: FIN=1, RSV=0, opcode TEXT (0x81), unmasked
                while True:
                    if n - pos < 2:
                        break
                    if data[pos] != 0x81:
                        break
                    ln = data[pos + 1]
                    if ln < 126:
                        start = pos + 2
                    elif ln == 126:
                        if n - pos < 4:
                            break
                        ln = (data[pos + 2] << 8) | data[pos + 3]
                        start = pos + 4
                    elif ln == 127:
                        if n - pos < 10:
                            break
                        ln = from_bytes(data[pos + 2:pos + 10], "big")
                        start = pos + 10
                    else:  # masked: a protocol error websockets reports
                        break
                    end = start + ln
                    if end > n or ln > limit:
                        break
                    pos = end
                    on_frame(data[start:end])
                if pos >= n:
                    return
                # -- anything else: websockets' path, one complete frame at a time
                size = _frame_size(data, pos, n)
                if size < 0 or pos + size >= n:  # incomplete, masked, or the last frame
                    super().data_received(data[pos:] if pos else data)
                    return
                super().data_received(data[pos:pos + size])
                pos += size

        def process_event(self, event: Any) -> None:
            on_frame = self.on_frame
            if on_frame is None or self.response is None:  # the handshake response
                super().process_event(event)
                return
            op = event.opcode
            if op is TEXT or op is BINARY:
                if event.fin:
                    on_frame(event.data)
                else:  # fragmented (Binance does not, but the protocol allows it)
                    self._fragments = [event.data]
            elif op is CONT:
                if self._fragments is not None:
                    self._fragments.append(event.data)
                    if event.fin:
                        data, self._fragments = b"".join(self._fragments), None
                        on_frame(data)
            else:  # ping, pong, close: websockets' business
                super().process_event(event)

    _TAP = _TapConnection
    return _TAP
