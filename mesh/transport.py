"""Node addresses to zmq endpoints (control on ``host:port``, data on ``host:port+1``), and
the one way a node binds a ROUTER."""
from __future__ import annotations

import errno

import zmq

from common.error import PortInUse, UsageError
from mesh import message as m
from mesh import security
from mesh.settings import parse_address


def bind_router(ctx: zmq.Context, endpoint: str, keys) -> zmq.Socket:
    """A ROUTER with the node's options (Curve when ``keys``), bound; ``UsageError`` naming the
    endpoint if it cannot be."""
    sock = ctx.socket(zmq.ROUTER)
    security.serve(sock, keys)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, m.MAX_FRAME_BYTES + 4096)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        kind = PortInUse if exc.errno == errno.EADDRINUSE else UsageError
        raise kind(f"cannot bind {endpoint}: {exc.strerror}") from None
    return sock


def connect_endpoint(address: str, data: bool = False) -> str:
    host, port = parse_address(address)
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    return f"tcp://{host}:{port + 1 if data else port}"
