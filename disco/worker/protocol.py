"""Disco's worker protocol, the frames only: bytes in, messages out (no pipes, no processes).

Theory of operation
-------------------
A worker program and the node talk over two pipes: the worker writes requests to its stderr,
the node writes one reply to each on the worker's stdin, in order. Every message, both ways, is
one frame::

    TYPE SP LEN SP JSON \\n

``TYPE`` is 1 to 10 capital letters or ``_``, ``LEN`` the byte length of ``JSON`` in decimal
(at most ``MAX_PAYLOAD_BYTES``), ``JSON`` one JSON value (a message without a payload carries
``""``, length 2). :class:`FrameDecoder` takes bytes as they come and returns whole
:class:`Frame` s; a frame that breaks these rules raises :class:`FrameError`, which names the
offending bytes and says whether the worker (``peer``) or we broke the protocol. Nothing here
knows what a message means: that is :mod:`disco.worker.external_runner` (the node's side) and
:mod:`disco.worker.protocol_worker` (a worker's side). Standard library only, so that a worker
script run by any Python 3 can import it.

See docs/worker-protocol.md for every message.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

VERSION = "1.1"
MAX_TYPE_CHARS = 10
MAX_PAYLOAD_BYTES = 100 * 1024 * 1024
_MAX_LEN_DIGITS = len(str(MAX_PAYLOAD_BYTES))
_TYPE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")

# what a worker may send, and what the node may answer
REQUESTS = frozenset({"WORKER", "TASK", "INPUT", "INPUT_ERR", "MSG", "OUTPUT", "DONE", "ERROR",
                      "FATAL", "PING"})
REPLIES = frozenset({"OK", "TASK", "INPUT", "RETRY", "FAIL", "WAIT"})
NO_PAYLOAD = ""


class FrameError(ValueError):
    """A frame that breaks the framing rules. ``peer`` is True when the other side sent it."""

    def __init__(self, msg: str, peer: bool = True):
        super().__init__(msg)
        self.peer = peer


@dataclass(frozen=True)
class Frame:
    type: str
    payload: object = NO_PAYLOAD

    def __post_init__(self):
        _check_type(self.type, peer=False)

    def encode(self) -> bytes:
        return encode(self.type, self.payload)


def encode(type_: str, payload: object = NO_PAYLOAD) -> bytes:
    """One frame; raises FrameError (ours) for a bad type, a payload JSON cannot hold or one
    that is too large."""
    _check_type(type_, peer=False)
    try:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise FrameError(f"{type_} payload is not JSON: {exc}", peer=False) from None
    if len(body) > MAX_PAYLOAD_BYTES:
        raise FrameError(f"{type_} payload of {len(body)} bytes is over the "
                         f"{MAX_PAYLOAD_BYTES}-byte limit", peer=False)
    return b"%s %d %s\n" % (type_.encode("ascii"), len(body), body)


def _check_type(type_: str, peer: bool) -> None:
    if not (isinstance(type_, str) and 0 < len(type_) <= MAX_TYPE_CHARS
            and set(type_) <= _TYPE_CHARS):
        raise FrameError(f"bad message type {type_!r:.40} (1 to {MAX_TYPE_CHARS} of A-Z and _)",
                         peer=peer)


def _shown(data: bytes) -> str:
    """Bytes as they appear in an error: at most 80 of them, escaped."""
    text = repr(bytes(data[:80]))
    return text + ("..." if len(data) > 80 else "")


class FrameDecoder:
    """Turns a byte stream into frames: ``feed(bytes) -> [Frame, ...]``.

    After a FrameError the stream cannot be trusted any more; the decoder refuses more input.
    ``pending`` holds bytes of an incomplete frame (shown when the stream ends early).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD_BYTES):
        self.max_payload = max_payload
        self._buf = bytearray()
        self._broken: FrameError | None = None

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken is not None:
            raise self._broken
        self._buf += data
        frames = []
        try:
            while True:
                frame = self._next()
                if frame is None:
                    return frames
                frames.append(frame)
        except FrameError as exc:
            self._broken = exc
            raise

    def _next(self) -> Frame | None:
        buf = self._buf
        space = buf.find(b" ", 0, MAX_TYPE_CHARS + 1)
        if space < 0:
            if len(buf) > MAX_TYPE_CHARS or not _prefix_ok(buf):
                raise FrameError(f"bad frame {_shown(buf)}: expected TYPE SP LEN SP JSON\\n")
            return None
        type_ = buf[:space].decode("ascii", "replace")
        if not type_ or not set(type_) <= _TYPE_CHARS:
            raise FrameError(f"bad frame {_shown(buf)}: the type must be 1 to "
                             f"{MAX_TYPE_CHARS} of A-Z and _")
        end = buf.find(b" ", space + 1, space + 2 + _MAX_LEN_DIGITS)
        if end < 0:
            digits = buf[space + 1:]
            if len(digits) > _MAX_LEN_DIGITS or (digits and not digits.isdigit()):
                raise FrameError(f"bad frame {_shown(buf)}: the length must be digits")
            return None
        digits = bytes(buf[space + 1:end])
        if not digits.isdigit():
            raise FrameError(f"bad {type_} frame {_shown(buf)}: the length must be digits")
        size = int(digits)
        if size > self.max_payload:
            raise FrameError(f"bad {type_} frame: payload of {size} bytes is over the "
                             f"{self.max_payload}-byte limit")
        stop = end + 1 + size
        if len(buf) < stop + 1:
            return None
        if buf[stop] != 0x0A:
            raise FrameError(f"bad {type_} frame {_shown(buf[:stop + 1])}: {size} bytes of "
                             "payload are not followed by a newline (is LEN right?)")
        body = bytes(buf[end + 1:stop])
        del buf[:stop + 1]
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"bad {type_} frame: payload {_shown(body)} is not JSON "
                             f"({exc})") from None
        return Frame(type_, payload)


def _prefix_ok(buf: bytes) -> bool:
    return all(chr(b) in _TYPE_CHARS for b in buf)
