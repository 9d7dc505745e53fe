"""Request/reply with one node's control port over zmq.

Use ``Connection`` to ask one node something: it sends one request at a time on a DEALER and
waits for the reply with the same ``rid``; on a time-out it drops the socket (lazy pirate) and
raises ``NoAnswer`` (a ``CommError``) naming the node. An ``Error`` reply is raised as
``error_for(code, msg)`` (``common.error``), e.g. ``NotMaster`` with the master's address.
Finding which node to ask (``DISCO_MASTER``, the embedded cluster) is the user's side:
``disco.client``.
"""
from __future__ import annotations

import itertools
import os
import threading

import zmq

from common.error import DiscoError, NoAnswer, UsageError, error_for
from mesh import message as m
from mesh import security
from mesh.settings import PYTHON, parse_address


class Connection:
    """Request/reply with one node's control port."""

    def __init__(self, address: str, timeout_s: float = 30.0):
        parse_address(address)
        self.address, self.timeout_s = address, timeout_s
        self._rids = itertools.count(1)
        self._sock = None

    def request(self, cls, wait_s: float | None = None, **fields):
        """Send ``cls(rid, **fields)`` and return the ``Reply``'s body; raise what an ``Error``
        names, or ``NoAnswer`` when nothing answers within ``wait_s`` (default ``timeout_s``)."""
        rid = next(self._rids)
        sock = self._socket()
        sock.send(m.encode(cls(rid=rid, **fields)))
        wait_ms = int((wait_s or self.timeout_s) * 1000)
        while True:
            if not sock.poll(wait_ms):
                self.close()
                raise NoAnswer(f"no answer from node {self.address} within "
                                f"{wait_s or self.timeout_s:g} s; is it running? "
                                f"(`disco status --port {self.address.rsplit(':', 1)[1]}`)")
            reply = m.decode(sock.recv())
            if getattr(reply, "rid", None) not in (rid, 0):
                continue  # a late answer to an earlier, abandoned request
            if isinstance(reply, m.Error):
                raise error_for(reply.code, reply.msg)
            return reply.body

    def _socket(self):
        if self._sock is None:
            self._sock = zmq.Context.instance().socket(zmq.DEALER)
            self._sock.setsockopt(zmq.LINGER, 0)
            security.dial(self._sock, security.process_keys())
            host, port = parse_address(self.address)
            self._sock.connect(f"tcp://{host}:{port}")
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None


class Pool:
    """Idle connections of this process, by node address, for requests to share.

    A job's client used to open a socket (a TCP connect and a ZMTP, maybe CurveZMQ, handshake)
    for each ``Disco`` handle: a millisecond or two of a trivial job's few. ``take`` hands out
    an idle connection to the address (or a new one) for one request, used by one thread at a
    time as zmq sockets must be; ``give`` puts it back (closing it past ``MAX_IDLE`` idle ones
    per address). A connection whose request timed out has closed its socket and makes a new
    one when next used. A forked child starts with none and a lock of its own (one another
    thread held at the fork would never be released): its parent's sockets are not its to use
    or close, so they are kept, unused, until it exits."""

    MAX_IDLE = 4

    def __init__(self):
        self._lock = threading.Lock()
        self._idle: dict[str, list] = {}
        self._inherited: list = []
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._inherited.append(self._idle)
        self._idle = {}

    def take(self, address: str, timeout_s: float) -> Connection:
        with self._lock:
            idle = self._idle.get(address)
            conn = idle.pop() if idle else None
        if conn is None:
            return Connection(address, timeout_s)
        conn.timeout_s = timeout_s
        return conn

    def give(self, conn: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(conn.address, [])
            if len(idle) < self.MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def idle(self, address: str) -> int:
        """How many idle connections to ``address`` wait to be taken."""
        with self._lock:
            return len(self._idle.get(address, ()))


POOL = Pool()

__all__ = ["Connection", "POOL", "Pool"]


def check_seed(seed: str, log) -> None:
    """Refuse to join a cluster of another protocol version or Python minor version; a seed
    that does not answer is only logged (another may)."""
    conn = Connection(seed, 2.0)
    try:
        hello = conn.request(m.Hello, python=PYTHON, client="node")
    except DiscoError as exc:
        log.warning("seed_unreachable", seed=seed, error=str(exc))
        return
    finally:
        conn.close()
    if hello.get("version") != m.VERSION or hello.get("python") != PYTHON:
        raise UsageError(
            f"cannot join {seed}: it runs protocol {hello.get('version')} on Python "
            f"{hello.get('python')}, this node runs protocol {m.VERSION} on Python {PYTHON}")
