"""CurveZMQ with a cluster secret (SPEC §10): members in, everyone else out."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import zmq

from conftest import child_env, run_cli
from disco.client import Connection
from disco.core import Job, result_iterator
from disco.embedded import free_port_pair
from disco.error import CommError, DiscoError
from mesh import message as m
from mesh.transfer import RemoteFile

pytestmark = pytest.mark.cluster


@pytest.fixture
def secret(tmp_path, monkeypatch):
    path = tmp_path / "cluster.secret"
    path.write_bytes(os.urandom(48).hex().encode() + b"\n")
    monkeypatch.setenv("DISCO_SECRET_FILE", str(path))
    return path


def test_members_with_the_secret_form_a_cluster_and_run_jobs(node_factory, secret):
    first = node_factory(workers=1)
    second = node_factory(workers=1, args=("--join", first.address))
    deadline = time.monotonic() + 15
    while True:
        members = Connection(second.address, 5).request(m.GetStatus)["members"]
        if sum(x["state"] == "alive" for x in members) == 2:
            break
        assert time.monotonic() < deadline, "the two secured nodes never met"
        time.sleep(0.2)
    job = Job(master=second.address).run(input=[f"raw://{w}" for w in "abcdef"],
                                         map=lambda e, p: [(e, 1)], partitions=2,
                                         reduce=lambda it, p: sorted(it))
    assert sorted(result_iterator(job.wait(timeout=60))) == [(w, 1) for w in "abcdef"]
    out = run_cli("--secret-file", secret, "status", "--port", first.port, "--json",
                  env={k: v for k, v in child_env().items() if k != "DISCO_SECRET_FILE"})
    assert '"alive"' in out.stdout


def test_outsiders_are_refused_on_every_port_before_application_code(node_factory, secret,
                                                                       tmp_path, monkeypatch):
    node = node_factory(workers=1)
    monkeypatch.delenv("DISCO_SECRET_FILE")
    with pytest.raises(CommError):
        Connection(node.address, 1.5).request(m.GetStatus)
    with pytest.raises(DiscoError):
        RemoteFile(node.address, "vol0/x", timeout_s=0.5).read()
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(os.urandom(32))
    monkeypatch.setenv("DISCO_SECRET_FILE", str(wrong))
    with pytest.raises(CommError):
        Connection(node.address, 1.5).request(m.GetStatus)
    # plain garbage from a NULL-mechanism peer never reaches the message decoder
    ctx = zmq.Context.instance()
    plain = ctx.socket(zmq.DEALER)
    plain.linger = 0
    plain.connect(f"tcp://127.0.0.1:{node.port}")
    plain.send(b"garbage")
    # a peer that knows the cluster's public key but not its secret: ZAP refuses it
    from mesh import security
    cluster = security.keys_from_file(str(secret))
    public, private = zmq.curve_keypair()
    forger = ctx.socket(zmq.DEALER)
    forger.linger = 0
    forger.curve_serverkey, forger.curve_publickey, forger.curve_secretkey = \
        cluster.public, public, private
    forger.connect(f"tcp://127.0.0.1:{node.port}")
    forger.send(m.encode(m.GetStatus(rid=1)))
    assert not forger.poll(1000)
    plain.close()
    forger.close()
    monkeypatch.setenv("DISCO_SECRET_FILE", str(secret))
    assert Connection(node.address, 5).request(m.GetStatus)["node"] == node.address
    log = node.log_text()
    assert "connection_refused" in log and "bad_message" not in log


def test_a_short_secret_is_refused_with_a_clear_error(tmp_path):
    short = tmp_path / "short.secret"
    short.write_bytes(b"too short\n")
    proc = subprocess.run(
        [sys.executable, "-m", "disco.cli", "nodaemon", "--port", str(free_port_pair()),
         "--data", str(tmp_path / "n"), "--secret-file", str(short)],
        env=child_env(), capture_output=True, text=True, timeout=30, start_new_session=True)
    assert proc.returncode != 0
    assert "32" in proc.stderr and "Traceback" not in proc.stderr
