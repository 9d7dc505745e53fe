"""DataServer on a real ROUTER (tcp on 127.0.0.1) over real files in tmp_path."""
from __future__ import annotations

import os
import threading
import time

import msgpack
import pytest
import zmq

from disco.embedded import free_port_pair
from common.error import UsageError
from mesh import message as m
from mesh.dataserver import CHUNK_LIMIT, DataServer, servable
from mesh.transfer import RemoteFile

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def node(tmp_path, ctx):
    """A started DataServer on a free port of a fresh data dir; stopped afterwards."""
    (tmp_path / "vol0" / "jobs" / "j1").mkdir(parents=True)
    port = free_port_pair()
    server = DataServer(ctx, f"tcp://127.0.0.1:{port + 1}", tmp_path, "n1", None)
    server.start()
    server.port, server.dir = port, tmp_path
    yield server
    server.stop()
    assert not server.alive


def client(ctx, server) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{server.port + 1}")
    return sock


def fetch(sock, path, offset=0, length=1 << 20, rid=1, timeout_ms=5000):
    sock.send(m.encode(m.Fetch(rid=rid, path=path, offset=offset, length=length)))
    return answer(sock, timeout_ms)


def answer(sock, timeout_ms=5000):
    assert sock.poll(timeout_ms), "no answer from the data server"
    frames = sock.recv_multipart()
    return m.decode(frames[0]), frames[1:]


def test_ranges_sizes_and_the_eof_flag(node, ctx):
    content = os.urandom(10_000)
    (node.dir / "vol0" / "jobs" / "j1" / "out").write_bytes(content)
    sock = client(ctx, node)
    head, (data,) = fetch(sock, "vol0/jobs/j1/out", 0, 4096, rid=7)
    assert head == m.Chunk(rid=7, offset=0, size=10_000, eof=False) and data == content[:4096]
    head, (data,) = fetch(sock, "vol0/jobs/j1/out", 8192, 4096, rid=8)
    assert head == m.Chunk(rid=8, offset=8192, size=10_000, eof=True) and data == content[8192:]
    head, (data,) = fetch(sock, "/vol0/jobs/j1/out", 20_000, 10)
    assert head.eof and data == b""
    head, (data,) = fetch(sock, "vol0/jobs/j1/out", 0, -5)
    assert not head.eof and data == b""
    assert node.served_requests == 4 and node.served_bytes == 4096 + 10_000 - 8192


def test_a_chunk_is_at_most_the_limit(node, ctx):
    with open(node.dir / "vol0" / "big", "wb") as f:
        f.truncate(CHUNK_LIMIT + 100)
    head, (data,) = fetch(client(ctx, node), "vol0/big", 0, CHUNK_LIMIT * 4)
    assert len(data) == CHUNK_LIMIT and head.size == CHUNK_LIMIT + 100 and not head.eof


def test_remote_file_reads_a_whole_file(node):
    content = os.urandom(3 * 65536 + 5)
    (node.dir / "vol0" / "r").write_bytes(content)
    with RemoteFile(f"127.0.0.1:{node.port}", "vol0/r", chunk_bytes=65536, window=3) as f:
        assert f.read() == content


def test_a_missing_file_is_data_not_found(node, ctx):
    head, rest = fetch(client(ctx, node), "vol0/jobs/j1/none", rid=3)
    assert isinstance(head, m.Error) and head.rid == 3 and head.code == "DataNotFound"
    assert "does not exist on n1" in head.msg and rest == []
    assert node.bad_requests == 1


def test_only_regular_files_are_read(node, ctx):
    os.mkfifo(node.dir / "vol0" / "fifo")  # opening it must not block the thread
    sock = client(ctx, node)
    for rid, path in enumerate(["vol0/jobs/j1", "vol0/fifo"], 4):
        head, _ = fetch(sock, path, rid=rid)
        assert head.code == "DataNotFound" and head.rid == rid and "not a file" in head.msg


@pytest.mark.parametrize("path", ["incarnation", "vol0/../incarnation", "../secret", "",
                                  "/etc/passwd", "jobs/j1/home", "jobs/j1/jobpack",
                                  "jobs/j1/../../incarnation",
                                  "vol0/\x00x", "jobpacks/xyz", "logs/node.jsonl",
                                  "vol0/escape/passwd", "vol0/.trash-1234/x"])
def test_paths_outside_the_volumes_are_refused(node, ctx, path):
    (node.dir / "incarnation").write_text("1\n")
    (node.dir / "vol0" / "escape").symlink_to("/etc")
    head, _ = fetch(client(ctx, node), path, rid=5)
    assert isinstance(head, m.Error) and head.code == "protocol" and head.rid == 5
    assert node.bad_requests == 1


def test_job_packs_are_served_by_hash_only(node, ctx):
    digest = "0123456789abcdef" * 4
    (node.dir / "jobpacks").mkdir()
    (node.dir / "jobpacks" / digest).write_bytes(b"pack by hash")
    (node.dir / "jobs" / "j1").mkdir(parents=True)
    (node.dir / "jobs" / "j1" / "jobpack").write_bytes(b"an old per-job copy")
    sock = client(ctx, node)
    assert fetch(sock, f"jobpacks/{digest}")[1] == [b"pack by hash"]
    head, _ = fetch(sock, "jobs/j1/jobpack")
    assert isinstance(head, m.Error)


def test_servable_paths():
    assert servable(("vol0", "x")) and servable(("vol12", "jobs", "j", "x"))
    assert not servable(("jobs", "j", "jobpack")) and servable(("jobpacks", "ab" * 16))
    assert not servable(("vol0",)) and not servable(("jobpacks", "AB" * 16))
    assert not servable(("jobs", "..", "jobpack")) and not servable(("jobpacks", "ab"))


GARBAGE = [
    [b"not msgpack \xc1"],
    [msgpack.packb([1, 2, 3])],
    [msgpack.packb({"v": 99, "t": "fetch"})],
    [m.encode(m.Hello(rid=9, python="3.11"))],
    [msgpack.packb({"v": 1, "t": "fetch", "rid": 1, "path": 5, "offset": 0, "length": 1})],
    [m.encode(m.Fetch(rid=1, path="vol0/x", offset=-1, length=1))],
    [m.encode(m.Fetch(rid=1, path="vol0/x", offset=0, length=1)), b"extra"],
    [b""],
]


def test_garbage_is_answered_counted_and_survived(node, ctx):
    (node.dir / "vol0" / "x").write_bytes(b"fine")
    sock = client(ctx, node)
    for frames in GARBAGE:
        sock.send_multipart(frames)
        head, rest = answer(sock)
        assert isinstance(head, m.Error) and head.code == "protocol" and rest == []
    assert node.bad_requests == len(GARBAGE)
    assert fetch(sock, "vol0/x")[1] == [b"fine"]
    assert node.served_requests == 1 and node.alive


def test_a_small_fetch_answers_quickly_while_a_large_file_streams(node, ctx):
    with open(node.dir / "vol0" / "big", "wb") as f:
        f.truncate(256 << 20)
    (node.dir / "vol0" / "small").write_bytes(b"s")
    streamed = []
    started, go_on = threading.Event(), threading.Event()

    def stream():
        with RemoteFile(f"127.0.0.1:{node.port}", "vol0/big", chunk_bytes=CHUNK_LIMIT,
                        window=4, ctx=ctx) as f:
            streamed.append(len(f.read(CHUNK_LIMIT)))
            started.set()
            go_on.wait(30)  # the read stays in flight (its window asked for more) meanwhile
            while chunk := f.read(CHUNK_LIMIT):
                streamed.append(len(chunk))

    reader = threading.Thread(target=stream)
    reader.start()
    try:
        assert started.wait(10), "the large read never started"
        sock = client(ctx, node)
        for i in range(10):  # answered while the large read is in flight, not after it
            head, (data,) = fetch(sock, "vol0/small", rid=i + 2)
            assert data == b"s"
        assert node.served_bytes < (256 << 20)  # the large read is not over
    finally:
        go_on.set()
        reader.join(30)
    assert sum(streamed) == 256 << 20  # and it goes on to its end
    # how fast the small fetches are answered meanwhile is bench/loop.py's figure


def test_stop_is_prompt_and_leaves_no_thread(tmp_path, ctx):
    port = free_port_pair()
    before = threading.active_count()
    server = DataServer(ctx, f"tcp://127.0.0.1:{port}", tmp_path, "n1", None)
    server.start()
    assert server.alive
    t0 = time.perf_counter()
    server.stop()
    assert time.perf_counter() - t0 < 0.5
    assert not server.alive and threading.active_count() == before
    deadline = time.monotonic() + 2  # zmq releases the port in its I/O thread, soon after
    while True:
        try:
            again = DataServer(ctx, f"tcp://127.0.0.1:{port}", tmp_path, "n1", None)
            break
        except UsageError:
            assert time.monotonic() < deadline, "the port was never released"
            time.sleep(0.02)
    again.stop()  # never started: closes its sockets


def test_a_taken_port_is_a_usage_error(node, ctx):
    with pytest.raises(UsageError, match=f"127.0.0.1:{node.port + 1}"):
        DataServer(ctx, f"tcp://127.0.0.1:{node.port + 1}", node.dir, "n2", None)


@pytest.fixture
def store(tmp_path, ctx):
    """A started DataServer that stores blobs (a real ``Volumes``)."""
    from storage.volume import Volumes
    port = free_port_pair()
    volumes = Volumes(tmp_path)
    server = DataServer(ctx, f"tcp://127.0.0.1:{port + 1}", tmp_path, "n1", None, volumes)
    server.start()
    server.port, server.dir, server.volumes = port, tmp_path, volumes
    yield server
    server.stop()


def leftovers(root) -> list:
    return sorted(p.name for p in root.glob("vol0/blob/*/*"))


def put(sock, *frames):
    sock.send_multipart(list(frames))
    return answer(sock)[0]


def test_a_put_is_stored_whole_and_checked(store, ctx):
    import xxhash
    sock = client(ctx, store)
    assert isinstance(put(sock, m.encode(m.PutStart(rid=1, name="b1", size=6))), m.PutAck)
    assert put(sock, m.encode(m.PutData(rid=1, offset=0)), b"abc").offset == 3
    assert put(sock, m.encode(m.PutData(rid=1, offset=3)), b"def").offset == 6
    stored = put(sock, m.encode(m.PutEnd(rid=1, size=6, checksum=xxhash.xxh3_64_hexdigest(
        b"abcdef"))))
    assert isinstance(stored, m.Stored) and stored.size == 6
    assert (store.dir / stored.path).read_bytes() == b"abcdef"
    assert leftovers(store.dir) == ["b1", "b1.xxh3"]


def test_an_abandoned_put_leaves_nothing_at_once(store, ctx):
    sock = client(ctx, store)
    put(sock, m.encode(m.PutStart(rid=1, name="b2", size=6)))
    put(sock, m.encode(m.PutData(rid=1, offset=0)), b"abc")
    assert any(n.startswith(".partial-") for n in leftovers(store.dir))
    reply = put(sock, m.encode(m.PutEnd(rid=1, size=-1, checksum="")))
    assert isinstance(reply, m.Error) and reply.code == "aborted"
    assert leftovers(store.dir) == [] and store.bad_requests == 0
    reply = put(sock, m.encode(m.PutData(rid=1, offset=3)), b"def")
    assert isinstance(reply, m.Error) and "no open put" in reply.msg


def test_bad_puts_are_refused_and_end_the_put(store, ctx):
    sock = client(ctx, store)
    assert "no open put" in put(sock, m.encode(m.PutData(rid=9, offset=0)), b"x").msg
    assert isinstance(put(sock, m.encode(m.PutStart(rid=2, name="../x", size=1))), m.Error)
    assert isinstance(put(sock, m.encode(m.PutStart(rid=3, name="ok", size=-1))), m.Error)
    put(sock, m.encode(m.PutStart(rid=4, name="ok", size=4)))
    assert "offset" in put(sock, m.encode(m.PutData(rid=4, offset=1)), b"x").msg
    assert "no open put" in put(sock, m.encode(m.PutData(rid=4, offset=0)), b"x").msg
    put(sock, m.encode(m.PutStart(rid=5, name="ok", size=2)))
    put(sock, m.encode(m.PutData(rid=5, offset=0)), b"xy")
    wrong = put(sock, m.encode(m.PutEnd(rid=5, size=2, checksum="0" * 16)))
    assert isinstance(wrong, m.Error) and "expected" in wrong.msg
    assert leftovers(store.dir) == [] and store.bad_requests >= 5 and store.alive


def test_a_put_too_big_for_the_volume_says_disk_full(store, ctx, monkeypatch):
    monkeypatch.setattr(store.volumes, "free_bytes", lambda volume: 10)
    sock = client(ctx, store)
    reply = put(sock, m.encode(m.PutStart(rid=1, name="big", size=11)))
    assert isinstance(reply, m.Error) and reply.msg.startswith("disk full on n1: ")
    assert leftovers(store.dir) == []
