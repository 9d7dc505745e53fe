"""Talking to the cluster: request/reply with one node, and finding that node.

``Connection`` (from ``mesh.client``) sends one request at a time and raises ``CommError``
naming the node on a time-out, ``NotMaster`` (with ``.master``) when the node is not the master.
``resolve_master`` turns ``DISCO_MASTER`` (or an explicit value) into a node address, starting
the embedded cluster for ``local``/``local:N`` or when nothing answers on the default.
"""
from __future__ import annotations

import sys

from disco import error
from disco.error import NotMaster
from disco.settings import DEFAULT_PORT, PYTHON, client_master, parse_address
from mesh import message as m
from mesh.client import Connection

__all__ = ["Connection", "NotMaster", "answers", "resolve_master"]


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
