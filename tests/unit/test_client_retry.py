"""The client retries a node that does not answer, never an error a node sent back."""
from __future__ import annotations

import threading
import time

import zmq

from disco.core import Disco
from disco.error import CommError, NoAnswer
from mesh import message as m


def serve_errors(sock, stop, answers, address):
    """Answers the first ListJobs and GetStatus, then an error for everything."""
    while not stop.is_set():
        if sock.poll(50):
            ident, frame = sock.recv_multipart()
            req = m.decode(frame)
            answers.append(type(req).__name__)
            if isinstance(req, m.GetStatus):
                reply = m.Reply(rid=req.rid, body={"members": [{"address": address}]})
            elif answers.count("ListJobs") == 1:
                reply = m.Reply(rid=req.rid, body=[])
            else:
                reply = m.Error(rid=req.rid, code="CommError", msg="the pack could not be stored")
            sock.send_multipart([ident, m.encode(reply)])


def test_a_comm_error_sent_by_the_master_is_raised_at_once():
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop, answers = threading.Event(), []
    thread = threading.Thread(target=serve_errors, daemon=True,
                              args=(sock, stop, answers, f"127.0.0.1:{port}"))
    thread.start()
    try:
        disco = Disco(f"127.0.0.1:{port}")
        assert disco.jobs() == []  # the client now knows the members: it could look elsewhere
        t0 = time.monotonic()
        try:
            disco.jobs()
        except NoAnswer:
            raise AssertionError("a sent error is an answer") from None
        except CommError as exc:
            assert "could not be stored" in str(exc)
        assert time.monotonic() - t0 < 2.0  # not retried for FIND_MASTER_S
        assert answers == ["ListJobs", "GetStatus", "ListJobs"]
    finally:
        stop.set()
        thread.join(2)
        sock.close(linger=0)
