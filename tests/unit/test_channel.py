"""mesh.channel: length-prefixed frames over a socketpair, as the daemon and a worker use it."""
from __future__ import annotations

import threading

import pytest

from mesh import channel as ch

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ends():
    ours, theirs = ch.pair()
    daemon, worker = ch.Channel(ours), ch.Channel(theirs, blocking=True)
    yield daemon, worker
    daemon.close()
    worker.close()


def _receive_all(end: ch.Channel, n: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < n:
        assert end.poll(5000), f"only {len(got)} of {n} frames came"
        got += end.receive()
    return got


def test_frames_arrive_whole_and_in_order_both_ways(ends):
    daemon, worker = ends
    for data in (b"", b"a", b"x" * 70_000):
        daemon.send(data)
    assert [worker.recv() for _ in range(3)] == [b"", b"a", b"x" * 70_000]
    worker.send(b"one")
    worker.send(b"two")
    assert _receive_all(daemon, 2) == [b"one", b"two"]


def test_a_frame_the_socket_cannot_take_at_once_waits_for_flush(ends):
    daemon, worker = ends
    big = bytes(range(256)) * 40_000  # 10 MB: far more than a socket buffer
    daemon.send(big)
    daemon.send(b"after")
    assert daemon.pending > 0  # queued, not blocking the daemon
    got = []
    reader = threading.Thread(target=lambda: got.extend(worker.recv() for _ in range(2)))
    reader.start()
    while daemon.pending:
        daemon.flush()
    reader.join(10)
    assert got == [big, b"after"]


def test_the_end_of_the_other_side_closes_the_channel(ends):
    daemon, worker = ends
    worker.send(b"last words")
    worker.close()
    assert _receive_all(daemon, 1) == [b"last words"]
    while not daemon.closed:
        assert daemon.poll(5000)
        assert daemon.receive() == []
    daemon.send(b"to nobody")  # a non-blocking end drops it: the worker's exit says the rest
    assert daemon.pending == 0


def test_a_blocking_end_raises_when_the_other_side_is_gone(ends):
    daemon, worker = ends
    daemon.close()
    assert worker.poll(5000)  # ready: there is nothing more to wait for
    with pytest.raises(ch.ChannelClosed):
        worker.recv()


def test_a_length_no_peer_would_send_closes_the_channel(ends):
    daemon, worker = ends
    worker.sock.sendall(ch.HEADER.pack(ch.MAX_FRAME + 1) + b"junk")
    while not daemon.closed:
        assert daemon.poll(5000)
        assert daemon.receive() == []


def test_poll_waits_for_a_whole_frame(ends):
    daemon, worker = ends
    assert not worker.poll(50)
    frame = ch.HEADER.pack(5) + b"hello"
    daemon.sock.sendall(frame[:3])  # a partial frame is not ready
    assert not worker.poll(200)
    # the rest comes in two parts while poll waits: it waits for the whole frame
    parts = [threading.Timer(0.1, daemon.sock.sendall, (frame[3:6],)),
             threading.Timer(0.3, daemon.sock.sendall, (frame[6:],))]
    for part in parts:
        part.start()
    try:
        assert worker.poll(5000) and worker.recv() == b"hello"
    finally:
        for part in parts:
            part.join()


def test_a_broken_stream_is_shut_down_so_the_other_end_sees_it(ends):
    daemon, worker = ends
    worker.sock.sendall(ch.HEADER.pack(ch.MAX_FRAME + 1))
    while not daemon.closed:
        assert daemon.poll(5000)
        daemon.receive()
    assert worker.poll(5000)  # EOF at once, not a channel nobody reads any more
    with pytest.raises(ch.ChannelClosed):
        worker.recv()


def test_a_frame_over_the_limit_is_refused_before_it_is_sent(ends):
    daemon, worker = ends
    with pytest.raises(ValueError):
        daemon.send(b"x" * (ch.MAX_FRAME + 1))
    daemon.send(b"still fine")
    assert worker.recv() == b"still fine"


def test_frames_sent_by_threads_at_once_stay_whole(ends):
    daemon, worker = ends
    frames = {bytes([65 + t]) * (200_000 + t) for t in range(4)}

    def send_all(frame):
        for _ in range(5):
            worker.send(frame)

    senders = [threading.Thread(target=send_all, args=(f,)) for f in frames]
    got: list[bytes] = []
    for s in senders:
        s.start()
    try:
        while len(got) < 20:
            assert daemon.poll(5000), f"only {len(got)} of 20 frames came"
            got += daemon.receive()
    finally:
        for s in senders:
            s.join(10)
    assert sorted(got) == sorted(f for f in frames for _ in range(5))
