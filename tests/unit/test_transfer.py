"""RemoteFile against a scripted data port on loopback: credit window, resume, errors."""
from __future__ import annotations

import os
import threading

import pytest
import zmq

from disco.embedded import free_port_pair
from disco.error import CommError, InputError
from mesh import message as m
from mesh.transfer import RemoteFile


class FakeDataPort:
    """Serves ``content`` for Fetch; ``drop`` lists request offsets to ignore once."""

    def __init__(self, content: bytes, drop=(), error: str | None = None, silent=False):
        self.content, self.drop, self.error, self.silent = content, set(drop), error, silent
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
                header = m.Chunk(rid=req.rid, offset=req.offset, size=len(self.content), eof=eof)
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
