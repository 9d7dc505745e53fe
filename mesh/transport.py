"""Node addresses to zmq endpoints: control on ``host:port``, data on ``host:port+1``."""
from __future__ import annotations

from mesh.settings import parse_address


def connect_endpoint(address: str, data: bool = False) -> str:
    host, port = parse_address(address)
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    return f"tcp://{host}:{port + 1 if data else port}"
