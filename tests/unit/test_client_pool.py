"""A process's ``Disco`` handles share idle connections and what they learned of the members."""
from __future__ import annotations

import os
import threading

import pytest
import zmq

from disco import core
from disco.core import Disco
from mesh import message as m
from mesh.client import Pool


@pytest.fixture
def node():
    """A fake node on loopback answering every request; yields (address, requests, peers):
    each request's type name, and the ZMQ identity of the socket each came from."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    address = f"127.0.0.1:{port}"
    stop, requests, peers = threading.Event(), [], []

    def serve():
        while not stop.is_set():
            if sock.poll(20):
                ident, frame = sock.recv_multipart()
                req = m.decode(frame)
                requests.append(type(req).__name__)
                peers.append(ident)
                body = {"members": [{"address": address}]} if isinstance(req, m.GetStatus) else []
                sock.send_multipart([ident, m.encode(m.Reply(rid=req.rid, body=body))])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    core._MEMBERS.pop(address, None)
    try:
        yield address, requests, peers
    finally:
        stop.set()
        thread.join(2)
        sock.close(linger=0)
        core._MEMBERS.pop(address, None)


def test_handles_on_one_node_share_a_socket_and_learn_the_members_once(node):
    address, requests, peers = node
    for _ in range(3):
        assert Disco(address).jobs() == []
    assert requests == ["ListJobs", "GetStatus", "ListJobs", "ListJobs"]
    assert len(set(peers)) == 1  # one socket (one connect and handshake) for all three
    assert Disco(address)._known == [address]


def test_members_are_learned_again_once_they_are_old(node, monkeypatch):
    address, requests, _ = node
    Disco(address).jobs()
    monkeypatch.setattr(core, "MEMBERS_TTL_S", 0.0)
    Disco(address).jobs()
    assert requests == ["ListJobs", "GetStatus", "ListJobs", "GetStatus"]


def test_old_members_still_serve_to_find_a_new_master(node, monkeypatch):
    """Past MEMBERS_TTL_S the list is learned again at the next answer; until then (a master
    that stopped answering) the old one is what a handle looks for the new master through."""
    address, requests, _ = node
    Disco(address).jobs()
    monkeypatch.setattr(core, "MEMBERS_TTL_S", 0.0)
    assert Disco(address)._known == [address]


def test_a_failed_learning_keeps_what_was_learned(node, monkeypatch):
    address, requests, _ = node
    Disco(address).jobs()
    monkeypatch.setattr(core, "MEMBERS_TTL_S", 0.0)
    disco = Disco(address)
    monkeypatch.setattr(disco, "_ask", lambda cls, **kw: (_ for _ in ()).throw(
        core.CommError("no")) if cls is m.GetStatus else [])
    disco.request(m.ListJobs)
    assert disco._known == [address]


def test_a_connection_in_use_is_not_handed_out_twice():
    pool = Pool()
    a = pool.take("127.0.0.1:1", 1.0)
    b = pool.take("127.0.0.1:1", 1.0)
    assert a is not b
    pool.give(a)
    pool.give(b)
    assert pool.idle("127.0.0.1:1") == 2
    assert pool.take("127.0.0.1:1", 2.5) in (a, b)
    assert {a.timeout_s, b.timeout_s} == {1.0, 2.5}  # taken with the caller's time-out


def test_idle_connections_past_the_limit_are_closed():
    pool = Pool()
    conns = [pool.take("127.0.0.1:1", 1.0) for _ in range(Pool.MAX_IDLE + 2)]
    for conn in conns:
        conn._socket()
    for conn in conns:
        pool.give(conn)
    assert pool.idle("127.0.0.1:1") == Pool.MAX_IDLE
    assert [c._sock is None for c in conns] == [False] * Pool.MAX_IDLE + [True, True]
    for conn in conns:
        conn.close()


def test_a_forked_child_never_gets_its_parents_connections():
    pool = Pool()
    parent = pool.take("127.0.0.1:1", 1.0)
    pool.give(parent)
    pid = os.fork()
    if pid == 0:  # the child: a new connection, and the parent's is left alone
        code = 1
        try:
            code = 0 if pool.take("127.0.0.1:1", 1.0) is not parent and \
                pool.idle("127.0.0.1:1") == 0 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert pool.idle("127.0.0.1:1") == 1
    assert pool.take("127.0.0.1:1", 1.0) is parent
