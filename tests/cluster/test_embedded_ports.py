"""An embedded node whose port was taken between finding it free and binding it starts on
another pair instead of failing (the port is busy for real here: a socket of the test's)."""
from __future__ import annotations

import socket

import pytest

from disco import embedded

pytestmark = pytest.mark.timeout(120)


def test_a_port_taken_before_the_node_binds_it_is_traded_for_another(monkeypatch):
    real = embedded.free_port_pair
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1] - 1  # the data port (P+1) is the busy one
    given = iter([taken])
    monkeypatch.setattr(embedded, "free_port_pair", lambda host="127.0.0.1": next(given, None) or real())
    node = embedded.Embedded(1)
    try:
        assert node.port != taken and node.proc.poll() is None
    finally:
        node.stop()
        busy.close()
