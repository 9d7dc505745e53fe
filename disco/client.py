"""Talking to the cluster: request/reply with one node, and finding that node.

``Connection`` (from ``mesh.client``) sends one request at a time and raises ``CommError``
naming the node on a time-out, ``NotMaster`` (with ``.master``) when the node is not the master.
``resolve_master`` turns ``DISCO_MASTER`` (or an explicit value) into a node address, starting
the embedded cluster for ``local``/``local:N`` or when nothing answers on the default.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from disco import error
from disco.error import NotMaster
from disco.settings import DEFAULT_PORT, PYTHON, client_master, is_local, parse_address
from mesh import message as m
from mesh.client import Connection

__all__ = ["Connection", "NotMaster", "answers", "await_started", "resolve_master"]


def answers(address: str, timeout_s: float = 0.5, pid: int | None = None) -> bool:
    """True if the node at ``address`` answers (and, with ``pid``, is that process)."""
    conn = Connection(address, timeout_s)
    try:
        reply = conn.request(m.Hello, python=PYTHON)
        return pid is None or reply.get("pid") == pid
    except error.DiscoError:
        return False
    finally:
        conn.close()


ASK_EVERY_S = 1.0  # while the pid file does not name the new node yet
PID_POLL_S = 0.005
RETRY_S = 0.05  # between asks once it does (a node may write it just before it serves)


def await_started(proc, address: str, pid_file: Path, deadline: float) -> bool:
    """Wait until the node daemon ``proc`` just started answers at ``address`` as itself; False
    if it exits first or ``deadline`` (``time.monotonic()``) passes.

    A node writes its pid file once its sockets are bound, just before it starts serving, so
    a few-millisecond look at that file tells when to ask: a connection tried before the node
    listens only gets through at ZeroMQ's next reconnect, up to 100 ms later. It also asks
    every ``ASK_EVERY_S`` in any case, in case the file cannot tell."""
    next_ask, retry_at = time.monotonic() + ASK_EVERY_S, 0.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        now = time.monotonic()
        if now >= next_ask or (now >= retry_at and _names(pid_file, proc.pid)):
            next_ask, retry_at = now + ASK_EVERY_S, now + RETRY_S
            if answers(address, 0.3, pid=proc.pid):
                return True
        else:
            time.sleep(PID_POLL_S)
    return False


def _names(pid_file: Path, pid: int) -> bool:
    try:
        return pid_file.read_bytes().strip() == str(pid).encode()
    except OSError:
        return False


def resolve_master(master: str | None = None) -> str:
    """The address of a node to talk to: ``local[:N]`` an embedded cluster, an address itself,
    else the default port if a node answers there, else an embedded cluster."""
    master = master or client_master()
    if is_local(master):
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
