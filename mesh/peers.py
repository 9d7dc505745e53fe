"""Outgoing one-way connections to other nodes' control ports (gossip and master commands).

One DEALER per peer address, created on first use. Sends never block the loop: a peer that
stopped reading fills its queue up to ``SNDHWM`` and further messages are dropped (gossip is
lossy by design; the master learns of a lost node from membership and re-runs its tasks).
"""
from __future__ import annotations

import zmq

from mesh import message as m
from mesh import security
from mesh.transport import connect_endpoint

SNDHWM = 2000


class Peers:
    def __init__(self, ctx: zmq.Context):
        self.ctx = ctx
        self.socks: dict[str, zmq.Socket] = {}
        self.dropped = 0

    def send(self, address: str, msg) -> bool:
        sock = self.socks.get(address)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, SNDHWM)
            security.dial(sock, security.process_keys())
            sock.connect(connect_endpoint(address))
            self.socks[address] = sock
        try:
            sock.send(m.encode(msg), zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.dropped += 1
            return False

    def forget(self, address: str) -> None:
        sock = self.socks.pop(address, None)
        if sock is not None:
            sock.close(linger=0)

    def close(self, linger_ms: int = 0) -> None:
        for sock in self.socks.values():
            sock.close(linger=linger_ms)
        self.socks.clear()
