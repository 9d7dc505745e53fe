"""The data port (``port + 1``), served on its own thread (ARCHITECTURE "Processes").

Use a ``DataServer`` for the node's bulk reads, so that a 1 GiB shuffle read never waits in
line with heartbeats and client requests on the daemon's loop::

    server = DataServer(ctx, "tcp://127.0.0.1:8990", data_dir, node_name, keys)  # binds now
    server.start()          # serves on a thread of its own
    ...
    server.stop()           # prompt; closes the socket; call before ``ctx.destroy()``

Theory of operation. The server thread owns one ROUTER socket (bound in the constructor, in the
caller's thread, then only ever used by the thread) and one inproc PAIR through which ``stop()``
wakes it. Each poll turn it takes up to ``BATCH`` requests in arrival order (zmq queues fairly
between peers) and answers each before taking the next:

- ``Fetch(rid, path, offset, length)`` -> ``Chunk(rid, offset, size, eof)`` + one raw frame of
  at most ``CHUNK_LIMIT`` bytes, sent without a copy; ``eof`` is true when the chunk reaches the
  end of the file;
- ``PutStart(rid, name, size)``, then ``PutData(rid, offset)`` + one raw frame per chunk, then
  ``PutEnd(rid, size, checksum)``: a DDFS blob is streamed into a temporary file of one of the
  node's volumes (``storage.volume``), each chunk acknowledged with ``PutAck`` (the writer's
  credit); the end is answered ``Stored`` only once the blob and its checksum are fsynced and
  renamed into place, or ``Error`` (a full disk, a checksum that does not match, a name that
  exists) with nothing left behind. A ``PutEnd`` whose size is ``ABANDON`` (-1) gives the put
  up: its partial file goes at once and the answer is ``Error`` (code ``aborted``). A put whose
  writer goes quiet for ``PUT_IDLE_S`` is aborted, as are all open puts when the server stops;
- anything else (wrong frame count, not msgpack, another message type, a path outside the
  served tree, a negative offset, a missing or unreadable file) -> ``Error(rid, code, msg)``
  with the code of ``common.error.code_of``: ``protocol`` (``RemoteProtocolError``: the
  request is wrong) or ``DataNotFound`` (the file is not there: another replica may have it).
  Nothing a peer sends can stop the thread; a bug of ours is answered ``internal`` and logged.

Served paths, relative to the data dir (anything else is refused before the disk is touched,
and a symlink out of the data dir is refused after resolving it):

- ``vol*/...``: blobs, map outputs and results;
- ``jobpacks/<hex>``: the content-addressed job-pack store (16 to 128 lowercase hex digits).

No component may start with ``.trash-``, ``.partial-`` or be ``.spare``: what the janitor is
deleting, a blob still being written, and spare files kept for workers to write into are not in
view.

A chunk is read with one ``os.pread``, which releases the GIL while the disk works, so the
daemon's loop thread keeps running. The counters ``served_requests``, ``served_bytes`` and
``bad_requests`` are plain ints, written only by the server thread and safe to read from any
thread. Bad requests are logged as ``bad_data_request``, at most ``LOG_PER_S`` a second; the
next line logged says how many were left out (``suppressed``).
"""
from __future__ import annotations

import errno
import itertools
import os
import re
import stat
import threading
import time
from pathlib import Path, PurePosixPath

import zmq

from common.error import DataNotFound, DiscoError, RemoteProtocolError, code_of, \
    message_of
from mesh import log as mesh_log
from mesh import message as m
from mesh.janitor import TRASH_PREFIX
from mesh.spare import SPARE_DIR
from mesh.transfer import ABANDON
from storage.volume import PARTIAL_PREFIX, DiskFull
from mesh.transport import bind_router

BATCH = 256
CHUNK_LIMIT = 8 << 20
PUT_IDLE_S = 60.0
MAX_PUTS = 64
MAX_REQUEST_BYTES = 64 << 10  # a Fetch is a path and three ints
LOG_PER_S = 10
_HEX = re.compile(r"[0-9a-f]{16,128}")
_ids = itertools.count(1)


class DataServer:
    """A thread answering ``Fetch`` on the data port; see the module docstring."""

    def __init__(self, ctx: zmq.Context, endpoint: str, data_dir: Path, node_name: str, keys,
                 volumes=None):
        self.endpoint, self.node_name = endpoint, node_name
        self.volumes = volumes  # storage.volume.Volumes: blobs are served and stored
        self._puts: dict[tuple[bytes, int], list] = {}  # (peer, rid) -> [writer, last active]
        self.stored_blobs = 0
        self.root = Path(data_dir).resolve()
        self.log = mesh_log.get(node=node_name)
        self.served_requests = 0
        self.served_bytes = 0
        self.bad_requests = 0
        self._log_window = (0.0, 0, 0)  # (window start, lines logged in it, lines suppressed)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.sock = bind_router(ctx, endpoint, keys)
        wake = f"inproc://disco-dataserver-{os.getpid()}-{next(_ids)}"
        self._wake_rx = ctx.socket(zmq.PAIR)
        self._wake_rx.setsockopt(zmq.LINGER, 0)
        self._wake_rx.bind(wake)
        self._wake_tx = ctx.socket(zmq.PAIR)
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.connect(wake)

    # -- life cycle --

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("DataServer.start() called twice")
        self._thread = threading.Thread(target=self._serve, name=f"dataserver-{self.node_name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Make the thread exit after the request it is answering; close every socket.

        Call it before ``ctx.destroy()``; a second call does nothing."""
        if self._wake_tx.closed:
            return
        if self._thread is not None and self._thread.is_alive():
            self._stopping = True  # seen between two requests of a batch
            self._wake_tx.send(b"")
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self.log.warning("dataserver_stop_slow", waited_s=timeout_s)
                return  # never close sockets another thread still uses
        else:
            self._close_thread_sockets()
        self._wake_tx.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread --

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while True:
                try:
                    ready = dict(poller.poll(1000 if self._puts else None))
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if self._wake_rx in ready:
                    return
                self._drain()
                self._expire_puts()
        except zmq.ContextTerminated:
            pass
        except Exception:  # a zmq failure of ours: say so, never die silently
            self.log.exception("dataserver_failed", endpoint=self.endpoint)
        finally:
            for writer, _ in self._puts.values():
                writer.abort()
            self._puts.clear()
            self._close_thread_sockets()

    def _close_thread_sockets(self) -> None:
        self.sock.close(linger=0)
        self._wake_rx.close(linger=0)

    def _drain(self) -> None:
        for _ in range(BATCH):
            if self._stopping:
                return
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_frames(frames)
            except zmq.ContextTerminated:
                raise
            except Exception as exc:  # a bug of ours must never stop the data port
                self.log.exception("data_request_failed")
                self._send_error(frames[0], 0, code_of(exc),
                                 f"fetch failed on {self.node_name}: {message_of(exc)}")

    # -- one request --

    def _on_frames(self, frames: list) -> None:
        ident = frames[0]
        if len(frames) not in (2, 3):
            self._refuse(ident, 0, RemoteProtocolError(
                f"expected one or two frames on the data port, got {len(frames) - 1}"))
            return
        msg = None
        try:
            msg = m.decode(frames[1], MAX_REQUEST_BYTES)
            if (len(frames) == 3) != isinstance(msg, m.PutData):
                raise RemoteProtocolError(f"{msg.TYPE}: wrong number of frames")
            handler = _HANDLERS.get(type(msg))
            if handler is None:
                raise RemoteProtocolError(
                    f"{msg.TYPE} is not served on the data port (this is port P+1 of a node "
                    "whose control port is P: talk to that one)")
            answer = handler(self, ident, msg, frames[2] if len(frames) == 3 else None)
        except DiskFull as exc:  # no bad request: say where the room ran out, and why
            self._end_put(ident, getattr(msg, "rid", 0))
            self.log.warning("blob_disk_full", error=str(exc), volume=str(exc.volume))
            self._send_error(ident, getattr(msg, "rid", 0), code_of(exc),
                             f"disk full on {self.node_name}: {exc}")
            return
        except DiscoError as exc:
            rid = getattr(msg, "rid", 0)
            self._end_put(ident, rid)
            self._refuse(ident, rid, exc)
            return
        self.served_requests += 1  # before the answer, so a reader of its reply sees it
        self.sock.send_multipart([ident] + answer, copy=False)

    def _end_put(self, ident: bytes, rid: int) -> None:
        """A failed request of an open put ends it: its partial file goes."""
        put = self._puts.pop((ident, rid), None)
        if put is not None:
            put[0].abort()

    def _fetch(self, ident: bytes, msg: m.Fetch, data) -> list:
        header, data = self._read(msg)
        self.served_bytes += len(data)
        return [m.encode(header), data]

    # -- storing blobs --

    def _put_start(self, ident: bytes, msg: m.PutStart, data) -> list:
        if self.volumes is None:
            raise RemoteProtocolError(f"{self.node_name} stores no blobs")
        if (ident, msg.rid) in self._puts:
            raise RemoteProtocolError(f"put {msg.rid} is open already")
        if len(self._puts) >= MAX_PUTS:
            raise DiscoError(f"{self.node_name} has {MAX_PUTS} puts open; try again")
        if msg.size < 0:
            raise RemoteProtocolError(f"put of {msg.name!r} with negative size {msg.size}")
        writer = self.volumes.writer(msg.name, msg.size)
        self._puts[(ident, msg.rid)] = [writer, time.monotonic()]
        return [m.encode(m.PutAck(rid=msg.rid, offset=0))]

    def _open_put(self, ident: bytes, rid: int):
        put = self._puts.get((ident, rid))
        if put is None:
            raise RemoteProtocolError(f"no open put {rid} (never started, or timed out)")
        put[1] = time.monotonic()
        return put[0]

    def _put_data(self, ident: bytes, msg: m.PutData, data) -> list:
        writer = self._open_put(ident, msg.rid)
        if msg.offset != writer.size:
            raise RemoteProtocolError(f"put of {writer.name!r}: data at offset {msg.offset}, "
                                      f"expected {writer.size}")
        if len(data) > CHUNK_LIMIT:
            raise RemoteProtocolError(f"put chunk of {len(data)} bytes exceeds {CHUNK_LIMIT}")
        writer.write(data.buffer if hasattr(data, "buffer") else data)
        return [m.encode(m.PutAck(rid=msg.rid, offset=writer.size))]

    def _put_end(self, ident: bytes, msg: m.PutEnd, data) -> list:
        writer = self._open_put(ident, msg.rid)
        if msg.size == ABANDON:
            del self._puts[(ident, msg.rid)]
            writer.abort()
            self.log.info("put_abandoned", blob=writer.name, bytes=writer.size, why="client")
            return [m.encode(m.Error(rid=msg.rid, code="aborted",
                                     msg=f"put of {writer.name!r} abandoned by the client"))]
        info = writer.commit(expected_checksum=msg.checksum or None, expected_size=msg.size)
        del self._puts[(ident, msg.rid)]
        self.stored_blobs += 1
        return [m.encode(m.Stored(rid=msg.rid, path=info.path, size=info.size,
                                  checksum=info.checksum))]

    def _expire_puts(self) -> None:
        now = time.monotonic()
        for key, (writer, last) in list(self._puts.items()):
            if now - last > PUT_IDLE_S:
                del self._puts[key]
                writer.abort()
                self._warn("put_abandoned", f"put of {writer.name!r} idle {PUT_IDLE_S:g} s")

    def _read(self, msg: m.Fetch) -> tuple[m.Chunk, bytes]:
        if msg.offset < 0:
            raise RemoteProtocolError(f"fetch of {msg.path!r} at negative offset {msg.offset}")
        path = self._data_path(msg.path)
        length = min(max(msg.length, 0), CHUNK_LIMIT)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO never blocks
        except FileNotFoundError:
            raise DataNotFound(f"{msg.path} does not exist on {self.node_name}") from None
        except OSError as exc:
            raise DataNotFound(f"{msg.path} cannot be read on {self.node_name}: "
                               f"{exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DataNotFound(f"{msg.path} is not a file on {self.node_name}")
            size = st.st_size
            data = os.pread(fd, length, msg.offset) if length and msg.offset < size else b""
        except OSError as exc:  # an I/O error
            raise DataNotFound(f"{msg.path} cannot be read on {self.node_name}: "
                               f"{exc.strerror}") from None
        finally:
            os.close(fd)
        eof = msg.offset + len(data) >= size
        checksum = ""
        if msg.offset == 0 and self.volumes is not None and len(parts := PurePosixPath(
                msg.path).parts) >= 4 and parts[1] == "blob":
            info = self.volumes.get(parts[-1])
            checksum = info.checksum if info is not None else ""
        return m.Chunk(rid=msg.rid, offset=msg.offset, size=size, eof=eof,
                       checksum=checksum), data

    def _data_path(self, rel: str) -> Path:
        """The file ``rel`` names, if it is one this port serves; else RemoteProtocolError."""
        parts = PurePosixPath(rel.lstrip("/")).parts
        if "\x00" in rel or not servable(parts):
            raise RemoteProtocolError(f"path {rel!r} is outside this node's volumes")
        try:
            path = self.root.joinpath(*parts).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise RemoteProtocolError(f"path {rel!r} cannot be resolved on {self.node_name}") \
                from None
        if self.root not in path.parents:  # a symlink out of the data dir
            raise RemoteProtocolError(f"path {rel!r} is outside this node's volumes")
        return path

    # -- refusals --

    def _refuse(self, ident: bytes, rid: int, exc: DiscoError) -> None:
        self.bad_requests += 1
        self._warn(code_of(exc), str(exc))
        self._send_error(ident, rid, code_of(exc), message_of(exc))

    def _send_error(self, ident: bytes, rid: int, code: str, text: str) -> None:
        self.sock.send_multipart([ident, m.encode(m.Error(rid=rid, code=code, msg=text))])

    def _warn(self, code: str, text: str) -> None:
        now = time.monotonic()
        start, logged, suppressed = self._log_window
        if now - start >= 1.0:
            start, logged = now, 0
        if logged >= LOG_PER_S:
            self._log_window = (start, logged, suppressed + 1)
            return
        self.log.warning("bad_data_request", code=code, error=text, suppressed=suppressed,
                         bad_requests=self.bad_requests)
        self._log_window = (start, logged + 1, 0)


_HANDLERS = {m.Fetch: DataServer._fetch, m.PutStart: DataServer._put_start,
             m.PutData: DataServer._put_data, m.PutEnd: DataServer._put_end}


def servable(parts: tuple[str, ...]) -> bool:
    """True when the relative path ``parts`` names something the data port serves."""
    hidden = (TRASH_PREFIX, PARTIAL_PREFIX, SPARE_DIR)
    if not parts or any(p in ("", ".", "..") or p.startswith(hidden) for p in parts):
        return False
    if parts[0].startswith("vol") and len(parts) >= 2:
        return True
    return len(parts) == 2 and parts[0] == "jobpacks" and _HEX.fullmatch(parts[1]) is not None


__all__ = ["DataServer", "servable", "CHUNK_LIMIT"]
