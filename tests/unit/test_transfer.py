"""RemoteFile against a scripted data port on loopback: credit window, resume, errors."""
from __future__ import annotations

import os
import threading

import pytest
import zmq

from disco.embedded import free_port_pair
from disco.error import CommError, InputError
from mesh import message as m
from mesh.transfer import RemoteFile, push_blob


class FakeDataPort:
    """Serves ``content`` for Fetch; ``drop`` lists request offsets to ignore once."""

    def __init__(self, content: bytes, drop=(), error: str | None = None, silent=False,
                 checksum: str = ""):
        self.content, self.drop, self.error, self.silent = content, set(drop), error, silent
        self.checksum = checksum  # sent with the first chunk, as a node does for a blob
        self.port = free_port_pair()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://127.0.0.1:{self.port + 1}")
        self.max_inflight = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            if not self.sock.poll(50):
                continue
            pending = []
            while self.sock.poll(0):
                pending.append(self.sock.recv_multipart())
            self.max_inflight = max(self.max_inflight, len(pending))
            for ident, frame in pending:
                req = m.decode(frame)
                if self.silent:
                    continue
                if req.offset in self.drop:
                    self.drop.discard(req.offset)
                    continue
                if self.error:
                    error = m.Error(req.rid, "DataNotFound", self.error)
                    self.sock.send_multipart([ident, m.encode(error)])
                    continue
                data = self.content[req.offset:req.offset + req.length]
                eof = req.offset + len(data) >= len(self.content)
                header = m.Chunk(rid=req.rid, offset=req.offset, size=len(self.content), eof=eof,
                                 checksum=self.checksum if req.offset == 0 else "")
                self.sock.send_multipart([ident, m.encode(header), data])

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()
        self.ctx.term()


@pytest.fixture
def serve():
    servers = []

    def make(*args, **kw):
        servers.append(FakeDataPort(*args, **kw))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_reads_everything_with_a_bounded_window(serve):
    content = os.urandom(5 * 4096 + 17)
    server = serve(content)
    with RemoteFile(f"127.0.0.1:{server.port}", "vol0/x", chunk_bytes=4096, window=3) as f:
        assert f.read() == content
    assert 1 <= server.max_inflight <= 3


def test_a_lost_chunk_is_resumed_from_its_offset(serve):
    content = os.urandom(6 * 1000)
    server = serve(content, drop={2000})
    with RemoteFile(f"127.0.0.1:{server.port}", "vol0/x", chunk_bytes=1000, window=2,
                    timeout_s=0.3) as f:
        assert f.read() == content
        assert f.resumes_left < 2


def test_a_silent_node_fails_after_its_resumes(serve):
    server = serve(b"x" * 100, silent=True)
    with pytest.raises(CommError, match="resumes"):
        RemoteFile(f"127.0.0.1:{server.port}", "vol0/x", timeout_s=0.1).read()


def test_an_error_reply_names_the_url(serve):
    server = serve(b"", error="vol0/x does not exist")
    with pytest.raises(InputError, match="does not exist"):
        RemoteFile(f"127.0.0.1:{server.port}", "vol0/x").read()


@pytest.fixture
def stores(tmp_path):
    """Three real DataServers storing blobs, each in its own data dir."""
    from mesh.dataserver import DataServer
    from storage.volume import Volumes
    ctx = zmq.Context()
    servers = []
    for i in range(3):
        port = free_port_pair()
        data = tmp_path / f"n{i}"
        server = DataServer(ctx, f"tcp://127.0.0.1:{port + 1}", data, f"n{i}", None,
                            Volumes(data))
        server.start()
        server.address, server.dir = f"127.0.0.1:{port}", data
        servers.append(server)
    yield servers
    for server in servers:
        server.stop()
    ctx.destroy(linger=0)


def files_of(server) -> list:
    return sorted(p.name for p in server.dir.glob("vol0/blob/*/*"))


def test_push_blob_stores_every_copy(stores):
    import io
    content = os.urandom(3 * 4096 + 5)
    stored, failed, checksum = push_blob(io.BytesIO(content), "b", len(content),
                                         [s.address for s in stores], chunk_bytes=4096)
    assert not failed and set(stored) == {s.address for s in stores}
    for s in stores:
        assert (s.dir / stored[s.address]).read_bytes() == content


def test_one_failure_abandons_the_put_everywhere_when_all_or_none(stores):
    import io
    (stores[1].dir / "vol0" / "blob").mkdir(parents=True, exist_ok=True)
    stores[1].volumes.free_bytes = lambda volume: 0  # this node's disk is full
    content = os.urandom(10_000)
    stored, failed, _ = push_blob(io.BytesIO(content), "b", len(content),
                                  [s.address for s in stores], chunk_bytes=4096,
                                  all_or_none=True)
    assert stored == {} and list(failed) == [stores[1].address]
    assert "disk full" in failed[stores[1].address]
    assert all(files_of(s) == [] for s in stores)
    # without all_or_none, the others keep their copies
    stored, failed, _ = push_blob(io.BytesIO(content), "c", len(content),
                                  [s.address for s in stores], chunk_bytes=4096)
    assert set(stored) == {stores[0].address, stores[2].address} and list(failed) == [
        stores[1].address]


def test_a_dropped_connection_fails_its_node_at_once(stores):
    import time

    class Source:
        """Stops the second node's server once the push is under way."""
        def __init__(self):
            self.reads = 0

        def read(self, n):
            self.reads += 1
            if self.reads == 3:
                stores[1].stop()
            return b"x" * n

    t0 = time.monotonic()
    stored, failed, _ = push_blob(Source(), "d", 40 * 4096, [s.address for s in stores],
                                  chunk_bytes=4096, timeout_s=20, all_or_none=True)
    assert list(failed) == [stores[1].address] and "dropped" in failed[stores[1].address]
    assert time.monotonic() - t0 < 10  # not the 20 s time-out
    assert files_of(stores[0]) == [] and files_of(stores[2]) == []


def test_a_node_that_refuses_the_connection_fails_at_once_not_at_the_time_out(stores):
    import io
    import time
    stores[1].stop()  # nothing listens there now: ZeroMQ would retry the connect for ever
    t0 = time.monotonic()
    stored, failed, _ = push_blob(io.BytesIO(b"y" * 8 * 4096), "r", 8 * 4096,
                                  [s.address for s in stores], chunk_bytes=4096, timeout_s=20)
    assert list(failed) == [stores[1].address] and "refused" in failed[stores[1].address]
    assert sorted(stored) == sorted([stores[0].address, stores[2].address])
    assert time.monotonic() - t0 < 10  # not the 20 s time-out


def test_a_corrupt_copy_is_refused_and_the_next_replica_read(serve):
    import xxhash
    from disco.ddfs import open_blob
    good = os.urandom(3 * 4096 + 9)
    digest = xxhash.xxh3_64_hexdigest(good)
    bad = bytearray(good)
    bad[5000] ^= 0xFF
    corrupt, right = serve(bytes(bad), checksum=digest), serve(good, checksum=digest)
    urls = [f"disco://127.0.0.1:{s.port}/vol0/blob/ab/b" for s in (corrupt, right)]
    with RemoteFile(f"127.0.0.1:{corrupt.port}", "vol0/blob/ab/b", chunk_bytes=4096) as f:
        with pytest.raises(InputError, match="checksum mismatch"):
            f.read()
    fd, size, url = open_blob(urls, spool_bytes=1024)  # spooled to disk past 1 KiB
    assert fd.read() == good and size == len(good) and url == urls[1]
    with pytest.raises(InputError, match="checksum mismatch"):
        open_blob(urls[:1])
    with pytest.raises(InputError, match="none of 2 replicas"):
        open_blob([urls[0], urls[0]])


def test_a_local_blob_is_checked_against_its_sidecar(tmp_path):
    import xxhash
    from mesh.transfer import open_disco
    folder = tmp_path / "vol0" / "blob" / "ab"
    folder.mkdir(parents=True)
    (folder / "b").write_bytes(b"payload!")
    (folder / "b.xxh3").write_text(f"{xxhash.xxh3_64_hexdigest(b'payload?')} 8\n")
    fd, size, _ = open_disco("disco://h:1/vol0/blob/ab/b", "h:1", tmp_path)
    with pytest.raises(InputError, match="checksum mismatch"):
        fd.read()
    (folder / "b.xxh3").chmod(0o600)
    (folder / "b.xxh3").write_text(f"{xxhash.xxh3_64_hexdigest(b'payload!')} 8\n")
    fd, size, _ = open_disco("disco://h:1/vol0/blob/ab/b", "h:1", tmp_path)
    assert fd.read() == b"payload!" and size == 8
