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


def test_a_daemon_whose_port_is_taken_exits_with_a_status_of_its_own(tmp_path):
    """98 (PortInUse.EXIT_CODE) for a taken port, so a starter can pick another; 1 for
    anything else, which no retry helps."""
    import subprocess
    import sys

    from common.error import PortInUse
    from tests.conftest import child_env
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        base = [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console",
                "--host", "127.0.0.1", "--workers", "1"]
        taken = subprocess.run(base + ["--port", str(busy.getsockname()[1]),
                                       "--data", str(tmp_path / "a")], env=child_env(),
                               capture_output=True, text=True, timeout=60)
        assert taken.returncode == PortInUse.EXIT_CODE, taken.stderr
        assert "cannot bind tcp://127.0.0.1:" in taken.stderr
        assert "Address already in use" in taken.stderr
        port = embedded.free_port_pair()
        with socket.socket() as http:  # the status page's port, P + 2
            http.bind(("127.0.0.1", port + 2))
            http.listen()
            page = subprocess.run(base + ["--port", str(port), "--data", str(tmp_path / "c")],
                                  env=child_env(), capture_output=True, text=True, timeout=60)
        assert page.returncode == PortInUse.EXIT_CODE, page.stderr
        assert "cannot serve HTTP on 127.0.0.1" in page.stderr
        other = subprocess.run(base + ["--port", str(embedded.free_port_pair()), "--data",
                                       str(tmp_path / "b"), "--join", "not-an-address"],
                               env=child_env(), capture_output=True, text=True, timeout=60)
        assert other.returncode == 1, other.stderr
    finally:
        busy.close()
