"""Reading a stored file from a node's data port, with credit-based flow control.

The reader keeps at most ``window`` ``Fetch`` requests of ``chunk_bytes`` outstanding (its
credit), as in the ZeroMQ guide's credit-based file transfer: the serving node never has more
than that many chunks queued for one reader, and the reader's memory is bounded by
``window * chunk_bytes``. Replies come back in order on one DEALER, each checked against the
offset it answers.

``disco://HOST:PORT/PATH`` names a file under a node's data dir; its data port is PORT+1. A file
on this very node is opened from disk instead (``open_disco``, with ``local``).
"""
from __future__ import annotations

import io
import itertools
from pathlib import Path

import zmq

from common.error import CommError, InputError, RemoteProtocolError
from mesh import message as m
from mesh import security

CHUNK_BYTES = 1 << 20
WINDOW = 4
TIMEOUT_S = 4.0  # per attempt
RESUMES = 2


def split_disco_url(url: str) -> tuple[str, str]:
    """``disco://host:port/vol0/x`` -> (``host:port``, ``vol0/x``)."""
    rest = url.split("://", 1)[1]
    address, _, path = rest.partition("/")
    if not address or ":" not in address or not path:
        raise InputError(f"bad disco URL {url!r}: expected disco://HOST:PORT/PATH", url=url)
    return address, path


def data_endpoint(address: str) -> str:
    from mesh.transport import connect_endpoint
    return connect_endpoint(address, data=True)


class RemoteFile(io.RawIOBase):
    """A read-only, sequential file object over a node's data port."""

    def __init__(self, address: str, path: str, *, chunk_bytes: int = CHUNK_BYTES,
                 window: int = WINDOW, timeout_s: float = TIMEOUT_S, ctx: zmq.Context | None = None):
        super().__init__()
        self.address, self.path = address, path
        self.chunk_bytes, self.window, self.timeout_ms = chunk_bytes, window, int(timeout_s * 1000)
        self._ctx = ctx or zmq.Context.instance()
        self.sock = self._connect()
        self.resumes_left = RESUMES
        self._rids = itertools.count(1)
        self._next_offset = 0      # offset of the next request to send
        self._inflight: list[tuple[int, int]] = []  # (rid, offset), oldest first
        self._buf = memoryview(b"")
        self._eof_seen = False
        self.size: int | None = None
        self._grant()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            if self._eof_seen and not self._inflight:
                return 0
            self._receive()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self.sock.close(linger=0)
        super().close()

    def _connect(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        security.dial(sock, security.process_keys())
        sock.connect(data_endpoint(self.address))
        return sock

    def _resume(self) -> None:
        """Start over from the oldest unanswered offset on a fresh connection."""
        self.sock.close(linger=0)
        self.sock = self._connect()
        self.resumes_left -= 1
        self._next_offset = self._inflight[0][1]
        self._inflight.clear()
        self._grant()

    def _grant(self) -> None:
        while not self._eof_seen and len(self._inflight) < self.window:
            rid = next(self._rids)
            self.sock.send(m.encode(m.Fetch(rid=rid, path=self.path, offset=self._next_offset,
                                            length=self.chunk_bytes)))
            self._inflight.append((rid, self._next_offset))
            self._next_offset += self.chunk_bytes

    def _receive(self) -> None:
        while not self.sock.poll(self.timeout_ms):
            if self.resumes_left <= 0:
                raise CommError(f"no answer from {self.address} for {self.path} "
                                f"in {self.timeout_ms / 1000:g} s, {RESUMES} resumes tried")
            self._resume()
        frames = self.sock.recv_multipart(copy=False)
        reply = m.decode(frames[0].bytes)
        if not self._inflight or getattr(reply, "rid", None) != self._inflight[0][0]:
            return  # an answer to a request abandoned by a resume
        rid, offset = self._inflight.pop(0)
        if isinstance(reply, m.Error):
            raise InputError(f"disco://{self.address}/{self.path}: {reply.msg}",
                             url=f"disco://{self.address}/{self.path}")
        if not isinstance(reply, m.Chunk) or reply.rid != rid or len(frames) != 2:
            raise RemoteProtocolError(f"{self.address} answered out of order for {self.path}")
        self.size = reply.size
        if reply.eof:
            self._eof_seen = True
            self._inflight.clear()  # later requests are past the end; their replies are dropped
        self._buf = frames[1].buffer
        self._grant()


def open_disco(url: str, local: str | None = None, data_dir: Path | None = None):
    """Open a ``disco://`` URL: from disk when it is on ``local`` (this node), else remotely.

    Returns ``(fileobj, size, url)`` like every input opener.
    """
    address, path = split_disco_url(url)
    if local is not None and address == local and data_dir is not None:
        full = Path(data_dir) / path
        try:
            f = open(full, "rb")
        except OSError as exc:
            raise InputError(f"{url}: {exc.strerror}", url=url) from None
        return f, full.stat().st_size, url
    raw = RemoteFile(address, path)
    return io.BufferedReader(raw, buffer_size=CHUNK_BYTES), None, url
