"""Talking to the cluster over zmq: request/reply with one node, and finding that node (SPEC §3).

``Connection`` sends one request at a time on a DEALER and waits for the reply with the same
``rid``; on a time-out it drops the socket (lazy pirate) and raises ``CommError`` naming the
node. ``resolve_master`` turns ``DISCO_MASTER`` (or an explicit value) into a node address,
starting the embedded cluster for ``local``/``local:N`` or when nothing answers on the default.
"""
from __future__ import annotations

import itertools
import sys

import zmq

from disco import error
from disco.settings import DEFAULT_PORT, PYTHON, client_master, parse_address
from mesh import message as m
from mesh import security

_ERRORS = {"UsageError": error.UsageError, "ProtocolError": error.ProtocolError,
           "protocol": error.ProtocolError, "DataNotFound": error.DataError}


class Connection:
    """Request/reply with one node's control port."""

    def __init__(self, address: str, timeout_s: float = 30.0):
        parse_address(address)
        self.address, self.timeout_s = address, timeout_s
        self._rids = itertools.count(1)
        self._sock = None

    def request(self, cls, wait_s: float | None = None, **fields):
        rid = next(self._rids)
        sock = self._socket()
        sock.send(m.encode(cls(rid=rid, **fields)))
        wait_ms = int((wait_s or self.timeout_s) * 1000)
        while True:
            if not sock.poll(wait_ms):
                self.close()
                raise error.CommError(f"no answer from node {self.address} within "
                                      f"{wait_s or self.timeout_s:g} s; is it running? "
                                      f"(`disco status --port {self.address.rsplit(':', 1)[1]}`)")
            reply = m.decode(sock.recv())
            if getattr(reply, "rid", None) not in (rid, 0):
                continue  # a late answer to an earlier, abandoned request
            if isinstance(reply, m.Error):
                if reply.code == "NotMaster":
                    raise NotMaster(reply.msg)
                raise _ERRORS.get(reply.code, error.DiscoError)(reply.msg)
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


class NotMaster(error.CommError):
    """The node asked is not the master; ``master`` is the one it follows ("" if none yet)."""

    def __init__(self, master: str):
        super().__init__(f"not the master; the master is {master or 'not elected yet'}")
        self.master = master


def answers(address: str, timeout_s: float = 0.5) -> bool:
    conn = Connection(address, timeout_s)
    try:
        conn.request(m.Hello, python=PYTHON)
        return True
    except error.DiscoError:
        return False
    finally:
        conn.close()


def resolve_master(master: str | None = None) -> str:
    """The address of a node to talk to, following SPEC §3."""
    master = master or client_master()
    if master is not None and master.startswith("local"):
        slots = master.partition(":")[2]
        if slots and not slots.isdigit():
            raise error.UsageError(f"DISCO_MASTER={master!r}: expected local or local:N")
        from disco import embedded
        return embedded.cluster(int(slots) if slots else None)
    if master is not None:
        parse_address(master)
        return master
    default = f"127.0.0.1:{DEFAULT_PORT}"
    if answers(default):
        return default
    from disco import embedded
    address = embedded.cluster(None)
    print(f"disco: no node on {default}; started an embedded cluster at {address} "
          "(set DISCO_MASTER to use a real one)", file=sys.stderr)
    return address


