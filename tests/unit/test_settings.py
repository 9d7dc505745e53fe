"""Node settings: flags over environment over defaults (SPEC §2)."""
from __future__ import annotations

import pytest

from disco.error import UsageError
from disco.settings import node_settings, parse_address


def test_membership_timings_follow_the_bind_address(monkeypatch):
    monkeypatch.delenv("DISCO_MESH_PRESET", raising=False)
    assert node_settings(host="127.0.0.1").mesh_preset == "loopback"
    assert node_settings(host="10.1.2.3", insecure=True).mesh_preset == "lan"
    monkeypatch.setenv("DISCO_MESH_PRESET", "loopback")
    assert node_settings(host="10.1.2.3", insecure=True).mesh_preset == "loopback"
    monkeypatch.setenv("DISCO_MESH_PRESET", "wan")
    with pytest.raises(UsageError, match="loopback or lan"):
        node_settings()


def test_flags_beat_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DISCO_PORT", "9100")
    monkeypatch.setenv("DISCO_WORKERS", "3")
    monkeypatch.setenv("DISCO_JOIN", "127.0.0.1:1,127.0.0.1:3")
    s = node_settings(workers=5, data=str(tmp_path))
    assert (s.port, s.workers, s.join) == (9100, 5, ("127.0.0.1:1", "127.0.0.1:3"))
    assert s.name == "127.0.0.1:9100" and s.pid_file == tmp_path / "disco.pid"
    monkeypatch.setenv("DISCO_WORKERS", "many")
    with pytest.raises(UsageError, match="DISCO_WORKERS"):
        node_settings()


@pytest.mark.parametrize("bad", ["", "host", "host:", ":80", "h:0", "h:99999", "h:x"])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(UsageError):
        parse_address(bad)
