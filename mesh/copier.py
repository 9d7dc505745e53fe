"""Repair copies, off the loop: fetch a blob from a node that has it, store it here, verified.

Use a ``Copier`` for the master's ``CopyBlob`` orders (``mesh.event.StoreCopy``)::

    copier = Copier(volumes, node_name, rate_bytes_s=64 << 20)
    copier.start()
    copier.copy(action)        # queued; returns at once
    copier.ended()             # [(blob, error)] of copies finished since the last call
    copier.stop()

Theory of operation. One thread takes orders in turn. For each it tries the sources in the
order given (the master puts the ring's nodes first): reads the blob over the source's data port
(``mesh.transfer.RemoteFile``, which checks the checksum at the end), writes it through a
``storage.volume`` writer that checks size and checksum again at commit, and only then makes
it visible (fsynced, renamed). A failed source is followed by the next; a copy whose every
source fails ends with the last error. Bandwidth is bounded by a token bucket of
``rate_bytes_s`` (with a burst of one second), so repair never starves running jobs of disk or
network; the figure is the node's, for all its copies together.
"""
from __future__ import annotations

import collections
import threading
import time

from common.error import DiscoError
from mesh import log as mesh_log
from mesh.transfer import CHUNK_BYTES, RemoteFile, split_disco_url

DEFAULT_RATE = 64 << 20


class Copier:
    def __init__(self, volumes, node_name: str, rate_bytes_s: int = DEFAULT_RATE):
        self.volumes, self.node_name = volumes, node_name
        self.rate = max(1, int(rate_bytes_s))
        self.log = mesh_log.get(node=node_name)
        self.copied_bytes = 0
        self._orders: collections.deque = collections.deque()
        self._ended: collections.deque = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._tokens, self._filled = float(self.rate), time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"copier-{self.node_name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def copy(self, order) -> None:
        """Queue a ``StoreCopy`` (blob, size, checksum, sources)."""
        with self._wake:
            if any(o.blob == order.blob for o in self._orders):
                return
            self._orders.append(order)
            self._wake.notify()

    def ended(self) -> list:
        out = []
        while self._ended:
            out.append(self._ended.popleft())
        return out

    # -- the thread --

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._orders and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                order = self._orders.popleft()
            try:
                error = self._copy(order)
            except Exception as exc:  # a bug of ours: the copy failed, the thread goes on
                self.log.exception("blob_copy_crashed", blob=order.blob)
                error = f"{type(exc).__name__}: {exc}"
            self._ended.append((order.blob, error))

    def _copy(self, order) -> str:
        if self.volumes.get(order.blob) is not None:
            return ""
        error = "no source given"
        for url in order.sources:
            try:
                self._fetch(url, order)
                self.log.info("blob_copy_stored", blob=order.blob, source=url, bytes=order.size)
                return ""
            except (DiscoError, OSError) as exc:
                error = f"{url}: {exc}"
                self.log.warning("blob_copy_source_failed", blob=order.blob, source=url,
                                 error=str(exc))
            if self._stopping:
                break
        return error

    def _fetch(self, url: str, order) -> None:
        address, path = split_disco_url(url)
        src = RemoteFile(address, path)
        try:
            with self.volumes.writer(order.blob, order.size) as writer:
                while not self._stopping:
                    data = src.read(CHUNK_BYTES)
                    if not data:
                        break
                    self._throttle(len(data))
                    writer.write(data)
                    self.copied_bytes += len(data)
                if self._stopping:
                    raise DiscoError("the node is stopping")
                writer.commit(expected_checksum=order.checksum or None, expected_size=order.size)
        finally:
            src.close()

    def _throttle(self, n: int) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.rate), self._tokens + (now - self._filled) * self.rate)
        self._filled = now
        self._tokens -= n
        if self._tokens < 0:
            time.sleep(-self._tokens / self.rate)
