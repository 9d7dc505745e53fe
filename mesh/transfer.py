"""Reading a stored file from a node's data port, and writing a DDFS blob to several nodes'
data ports, both with credit-based flow control.

The reader keeps at most ``window`` ``Fetch`` requests of ``chunk_bytes`` outstanding (its
credit), as in the ZeroMQ guide's credit-based file transfer: the serving node never has more
than that many chunks queued for one reader, and the reader's memory is bounded by
``window * chunk_bytes``. Replies come back in order on one DEALER, each checked against the
offset it answers.

``disco://HOST:PORT/PATH`` names a file under a node's data dir; its data port is PORT+1. A file
on this very node is opened from disk instead (``open_disco``, with ``local``). A DDFS blob is
checked as it is read: the first chunk carries its checksum (a local blob's sits beside it, in
``NAME.xxh3``), and the read that reaches the end raises ``InputError`` if the bytes differ.

``push_blob`` streams one file to the data ports of k nodes at once (``PutStart``, ``PutData``
chunks with at most ``window`` unacknowledged per node, ``PutEnd``): the file is read once, in
chunks, so memory stays bounded however big it is; it returns each node's stored path, and
each failed node's error, and never raises for one node's failure. A node whose connection
drops fails at once (its put died with the connection), not after the time-out; with
``all_or_none`` the first failure makes the others abandon the put before committing it
(``PutEnd`` with size ``ABANDON``), so a push that must be retried leaves no copy behind
(except when a node fails after taking every byte, as the others commit: their copies stay,
and ``DDFS.put_blob`` uses them if they are enough, else the garbage collector takes them).
"""
from __future__ import annotations

import io
import itertools
import time
from pathlib import Path

import xxhash
import zmq

from common.error import CommError, InputError, RemoteProtocolError
from mesh import message as m
from mesh import security

CHUNK_BYTES = 1 << 20
FETCHED_BYTES = 0  # bytes this process read from other nodes' data ports (for /metrics)
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
        self._expect = ""             # a blob's checksum, from its first chunk
        self._hash = xxhash.xxh3_64()
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
        if reply.checksum:
            self._expect = reply.checksum
        self._buf = frames[1].buffer
        global FETCHED_BYTES
        FETCHED_BYTES += len(self._buf)
        if self._expect:
            self._hash.update(self._buf)
        if reply.eof:
            self._eof_seen = True
            self._inflight.clear()  # later requests are past the end; their replies are dropped
            if self._expect and self._hash.hexdigest() != self._expect:
                raise InputError(f"disco://{self.address}/{self.path}: checksum mismatch (the "
                                 "copy is corrupt; another replica may be good)",
                                 url=f"disco://{self.address}/{self.path}")
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
        size = full.stat().st_size
        try:
            expect = full.with_name(full.name + ".xxh3").read_text().split()[0]
        except (OSError, IndexError):
            return f, size, url  # not a blob: nothing to check
        return io.BufferedReader(_Checked(f, expect, url), CHUNK_BYTES), size, url
    raw = RemoteFile(address, path)
    return io.BufferedReader(raw, buffer_size=CHUNK_BYTES), None, url


class _Checked(io.RawIOBase):
    """A local blob file whose read that reaches the end checks the bytes against ``expect``."""

    def __init__(self, f, expect: str, url: str):
        super().__init__()
        self._f, self._expect, self._url = f, expect, url
        self._hash = xxhash.xxh3_64()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        if n:
            self._hash.update(memoryview(b)[:n])
        elif self._expect and self._hash.hexdigest() != self._expect:
            self._expect = ""
            raise InputError(f"{self._url}: checksum mismatch (the copy is corrupt; another "
                             "replica may be good)", url=self._url)
        return n

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


PUSH_TIMEOUT_S = 30.0  # per answer awaited from one node
ABANDON = -1  # PutEnd(size=ABANDON): the client gives the put up; the node removes its partial
ABANDON_WAIT_S = 2.0


def push_blob(fileobj, name: str, size: int, addresses: list[str], *,
              chunk_bytes: int = CHUNK_BYTES, window: int = WINDOW,
              timeout_s: float = PUSH_TIMEOUT_S, progress=None,
              ctx: zmq.Context | None = None, all_or_none: bool = False) -> tuple[dict, dict, str]:
    """Store ``size`` bytes read from ``fileobj`` as blob ``name`` on every node of
    ``addresses`` (control addresses; their data ports are PORT+1).

    Returns ``(stored, failed, checksum)``: address -> the blob's path on that node for each
    node that fsynced it, address -> the reason for each that did not. ``progress(n)`` is
    called with each chunk's byte count as it is sent. A node fails when it answers ``Error``,
    when it is silent for ``timeout_s``, or at once when its connection drops (a node that
    died; its put is gone with the connection). With ``all_or_none``, the first failure ends
    the push: the other nodes are told to abandon the put (``PutEnd`` with size ``ABANDON``)
    before they commit, so nothing is left anywhere for the caller's retry to leave behind;
    those nodes are in neither dict.
    """
    push = _Push(ctx or zmq.Context.instance(), name, size, addresses, window, timeout_s)
    try:
        offset = 0
        while push.socks and not (all_or_none and push.failed):
            push.answer(lambda a: push.unacked[a] < window)
            if all_or_none and push.failed:
                break
            data = fileobj.read(min(chunk_bytes, size - offset)) if offset < size else b""
            if not data:
                break
            push.hasher.update(data)
            push.send_data(offset, data)
            offset += len(data)
            if progress is not None:
                progress(len(data))
        if offset != size and not push.failed:
            for address in list(push.socks):
                push.fail(address, f"the source gave {offset} bytes, {size} expected")
        if all_or_none and not push.failed:  # every chunk taken by every node, or none commits
            push.answer(lambda a: push.unacked[a] == 0)
        if all_or_none and push.failed:
            push.abandon()
        else:
            push.finish(size)
    finally:
        push.close()
    return push.stored, push.failed, push.hasher.hexdigest()


class _Push:
    """One blob's put to several data ports: a DEALER and a disconnect monitor per node."""

    def __init__(self, ctx: zmq.Context, name: str, size: int, addresses: list[str],
                 window: int, timeout_s: float):
        self.timeout_s = timeout_s
        self.socks: dict[str, zmq.Socket] = {}
        self.monitors: dict[zmq.Socket, str] = {}
        self.failed: dict[str, str] = {}
        self.stored: dict[str, str] = {}
        self.hasher = xxhash.xxh3_64()
        self.poller = zmq.Poller()
        keys = security.process_keys()
        for address in addresses:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            security.dial(sock, keys)
            # a refused connect (the node stopped before the connection was made) retries
            # forever in ZeroMQ: it fails the node as a drop does, not after the time-out
            monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
            sock.connect(data_endpoint(address))
            sock.send(m.encode(m.PutStart(rid=1, name=name, size=size)))
            self.socks[address] = sock
            self.monitors[monitor] = address
            self.poller.register(sock, zmq.POLLIN)
            self.poller.register(monitor, zmq.POLLIN)
        self.unacked = {a: 1 for a in self.socks}  # PutStart is answered with PutAck(0)

    def fail(self, address: str, why: str) -> None:
        self.failed[address] = why
        sock = self.socks.pop(address)
        self.poller.unregister(sock)
        self._close(sock)
        self.unacked.pop(address, None)

    def send_data(self, offset: int, data: bytes) -> None:
        for address, sock in self.socks.items():
            sock.send_multipart([m.encode(m.PutData(rid=1, offset=offset)), data], copy=False)
            self.unacked[address] += 1

    def finish(self, size: int) -> None:
        """Ask every node left to commit; wait for each one's ``Stored`` (or failure)."""
        for address, sock in self.socks.items():
            sock.send(m.encode(m.PutEnd(rid=1, size=size, checksum=self.hasher.hexdigest())))
            self.unacked[address] += 1
        self.answer(lambda a: a in self.stored)

    def abandon(self) -> None:
        """Tell every node left to drop its partial copy, and wait a moment for each to say
        so; those nodes did nothing wrong, so they end in neither ``stored`` nor ``failed``."""
        failed = dict(self.failed)
        for sock in self.socks.values():
            sock.send(m.encode(m.PutEnd(rid=1, size=ABANDON, checksum="")))
        self.answer(lambda a: False, ABANDON_WAIT_S)  # each answers Error: the put is gone
        self.failed = failed

    def answer(self, block_until, timeout_s: float | None = None) -> None:
        """Take answers until ``block_until()`` holds for every node left, or they time out."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while self.socks and not all(block_until(a) for a in self.socks):
            left = deadline - time.monotonic()
            ready = dict(self.poller.poll(max(0, int(left * 1000)))) if left > 0 else {}
            if not ready:
                for address in [a for a in self.socks if not block_until(a)]:
                    self.fail(address, f"no answer within {timeout_s:g} s")
                return
            for address, sock in list(self.socks.items()):
                if sock in ready:
                    self._take(address, sock)
            for monitor, address in self.monitors.items():
                if monitor in ready:
                    self._disconnected(monitor, address)
            deadline = time.monotonic() + timeout_s

    def _take(self, address: str, sock: zmq.Socket) -> None:
        while address in self.socks and sock.poll(0):
            try:
                reply = m.decode(sock.recv())
            except Exception as exc:  # noqa: BLE001 - a broken peer is one failed node
                self.fail(address, f"bad answer: {exc}")
                return
            if isinstance(reply, m.Error):
                self.fail(address, reply.msg)
            elif isinstance(reply, (m.PutAck, m.Stored)):
                if isinstance(reply, m.Stored):
                    self.stored[address] = reply.path
                self.unacked[address] -= 1

    def _disconnected(self, monitor: zmq.Socket, address: str) -> None:
        while monitor.poll(0):
            monitor.recv_multipart()
            sock = self.socks.get(address)
            if sock is not None:
                self._take(address, sock)  # what it said before the connection dropped
            if address in self.socks and address not in self.stored:
                self.fail(address, "the connection dropped or was refused (did the node stop?)")

    def _close(self, sock: zmq.Socket) -> None:
        sock.disable_monitor()
        sock.close(linger=0)

    def close(self) -> None:
        for sock in self.socks.values():
            self._close(sock)
        self.socks.clear()
        for monitor in self.monitors:
            monitor.close(linger=0)
