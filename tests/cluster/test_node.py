"""The node daemon itself: life cycle, bad input on both ports, refusals (SPEC §2, §10, §11)."""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import msgpack
import pytest
import zmq

from conftest import child_env, run_cli, stop_group
from disco.cli import _is_zombie
from disco.client import Connection, answers
from disco.embedded import free_port_pair
from disco.error import ProtocolError, UsageError
from mesh import message as m

pytestmark = pytest.mark.cluster


def _dealer(port: int) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def _recv(sock: zmq.Socket, timeout_ms: int = 5000):
    assert sock.poll(timeout_ms), "no reply from the node"
    return m.decode(sock.recv())


def test_garbage_on_both_ports_never_stops_the_daemon(node):
    rng = random.Random(7)
    ctrl, data = _dealer(node.port), _dealer(node.port + 1)
    samples = [b"", b"\x00", b"hello", msgpack.packb({"v": 1, "t": "NoSuchType"}),
               msgpack.packb({"v": 99, "t": "Hello", "rid": 1, "python": "3.11"}),
               msgpack.packb({"v": m.VERSION, "t": "Fetch", "rid": "x"}),
               msgpack.packb([1, 2, 3]), b"\xc1" * 100]
    samples += [rng.randbytes(rng.randint(1, 2000)) for _ in range(300)]
    for sample in samples:
        ctrl.send(sample)
        data.send(sample)
    ctrl.send_multipart([b"two", b"frames"])
    data.send_multipart([b"a", b"b", b"c"])
    # every garbage frame on the control port is answered with an Error, then the node still serves
    errors = 0
    while ctrl.poll(2000):
        reply = m.decode(ctrl.recv())
        assert isinstance(reply, m.Error) and reply.code == "protocol"
        errors += 1
    assert errors >= len(samples)
    assert node.alive() and answers(node.address, 2)
    assert "bad_message" in node.log_text()
    refused = Connection(node.address, 5).request(m.GetStatus)["refused"]
    assert refused["bad_messages"] >= len(samples) and refused["bad_frames"] >= 1
    assert refused["bad_data_requests"] >= len(samples)
    # a well-formed Fetch still works on the data port after the garbage
    while data.poll(200):
        data.recv_multipart()
    data.send(m.encode(m.Fetch(rid=5, path="vol0/../../etc/passwd", offset=0, length=10)))
    reply = _recv(data)
    assert isinstance(reply, m.Error) and reply.rid == 5


def test_oversized_frame_is_dropped_and_node_survives(node):
    ctrl = _dealer(node.port)
    ctrl.send(b"x" * (m.MAX_FRAME_BYTES + 8192))
    time.sleep(0.2)  # zmq drops the peer on MAXMSGSIZE; nothing to wait for but the node's health
    assert node.alive() and answers(node.address, 2)


def test_python_version_mismatch_is_refused_naming_both(node):
    conn = Connection(node.address, 5)
    with pytest.raises(UsageError) as err:
        conn.request(m.SubmitJob, prefix="Job", jobpack=b"\x80", python="2.7")
    text = str(err.value)
    assert "2.7" in text and f"{sys.version_info.major}.{sys.version_info.minor}" in text


def test_malformed_job_pack_gets_clear_error(node):
    conn = Connection(node.address, 5)
    with pytest.raises(ProtocolError):
        conn.request(m.SubmitJob, prefix="Job", jobpack=b"not a jobpack",
                     python=f"{sys.version_info.major}.{sys.version_info.minor}")
    assert node.alive()


def test_status_json_has_the_documented_shape(node):
    out = run_cli("status", "--port", node.port, "--json").stdout
    state = json.loads(out)
    assert state["node"] == node.address and state["master"] == node.address
    assert isinstance(state["term"], int)
    (member,) = state["members"]
    assert member["name"] == node.address and member["address"] == node.address
    assert member["state"] == "alive" and member["master"] is True
    assert member["slots"] == {"busy": 0, "total": 2}
    assert member["disk"]["free"] > 0 and member["disk"]["used"] >= 0
    table = run_cli("status", "--data", node.data).stdout
    assert "alive" in table and "master" in table


def test_sigterm_exits_zero_and_removes_pid_file(node):
    pid_file = node.data / "disco.pid"
    assert int(pid_file.read_text()) == node.proc.pid
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(15) == 0
    assert not pid_file.exists()
    assert "node_stopped" in node.log_text()


def test_start_status_stop_in_the_background(tmp_path):
    port = free_port_pair()
    data = tmp_path / "n"
    env = child_env()
    out = run_cli("start", "--port", port, "--data", data, "--workers", 1, env=env).stdout
    pid = int((data / "disco.pid").read_text())
    try:
        assert f"127.0.0.1:{port}" in out and "--join" in out
        assert answers(f"127.0.0.1:{port}", 2)
        again = run_cli("start", "--port", port, "--data", data, env=env, check=False)
        assert again.returncode != 0 and "already runs" in again.stderr
        lines = (data / "logs" / "node.jsonl").read_text().splitlines()
        first = json.loads(lines[0])
        assert first["node"] == f"127.0.0.1:{port}" and "timestamp" in first
        run_cli("restart", "--port", port, "--data", data, "--workers", 1, env=env)
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)
        old, pid = pid, int((data / "disco.pid").read_text())
        assert pid != old and answers(f"127.0.0.1:{port}", 2)
        run_cli("stop", "--port", port, env=env)  # found by asking the node for its data dir
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)
        missing = run_cli("stop", "--data", data, env=env, check=False)
        assert missing.returncode == 1 and missing.stderr.startswith("disco: error:")
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_start_reports_why_a_node_cannot_start(tmp_path):
    proc = run_cli("start", "--host", "10.1.2.3", "--port", free_port_pair(),
                   "--data", tmp_path / "n", check=False)
    assert proc.returncode != 0
    assert "--insecure" in proc.stderr and "Traceback" not in proc.stderr


def test_daemon_survives_task_and_control_load_with_no_leftover_workers(node_factory):
    node = node_factory(workers=2)
    conn = Connection(node.address, 5)
    for _ in range(200):
        conn.request(m.GetStatus)
    assert stop_group(node.proc)


def test_fuzzed_frames_to_both_ports_never_crash_the_daemon(node):
    """Mutations of valid messages (the hardest kind to reject); FUZZ_FRAMES sets how many."""
    rng = random.Random(11)
    valid = [m.encode(x) for x in (
        m.Hello(rid=1, python="3.11"), m.GetStatus(rid=2), m.WaitJob(rid=3, job="j@1"),
        m.Fetch(rid=4, path="vol0/x", offset=0, length=10), m.Gossip("x", "3.11", {"kind": "ping"}),
        m.Raft("append", "x", {"term": 1}), m.Assign(1, "x", {"id": "j:map:0"}))]
    ctrl, data = _dealer(node.port), _dealer(node.port + 1)
    total = int(os.environ.get("FUZZ_FRAMES", "4000"))
    for i in range(total):
        frame = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        (ctrl if i % 2 else data).send(bytes(frame))
        if i % 250 == 249 or i == total - 1:
            _barrier(ctrl, data, rid=1_000_000 + i)  # everything sent so far was decoded
    assert node.alive()
    refused = Connection(node.address, 5).request(m.GetStatus)["refused"]
    assert refused["bad_messages"] > 0 and refused["bad_data_requests"] > 0, refused


def _barrier(ctrl, data, rid: int) -> None:
    """A valid request on each socket, answered only after the frames queued before it."""
    ctrl.send(m.encode(m.GetStatus(rid=rid)))
    data.send(m.encode(m.Fetch(rid=rid, path="vol0/none", offset=0, length=1)))
    for sock in (ctrl, data):
        deadline = time.monotonic() + 20
        while True:
            assert sock.poll(max(1, int((deadline - time.monotonic()) * 1000))), "no answer"
            reply = m.decode(sock.recv_multipart()[0])
            if getattr(reply, "rid", None) == rid:
                break


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_hundred_thousand_fuzzed_frames(node, monkeypatch):
    monkeypatch.setenv("FUZZ_FRAMES", os.environ.get("FUZZ_FRAMES_SLOW", "100000"))
    test_fuzzed_frames_to_both_ports_never_crash_the_daemon(node)


def test_a_retried_submission_is_the_same_job(node):
    from disco import jobpack
    pack = jobpack.build({"inputs": ["raw://x"], "has_map": True, "has_reduce": False,
                          "partitions": 1, "prefix": "Retry"},
                         {"map": lambda e, p: [(e, 1)], "params": None})
    conn = Connection(node.address, 5)
    first = conn.request(m.SubmitJob, prefix="Retry", jobpack=pack, python=jobpack.PYTHON,
                         token="t-123")["job"]
    again = conn.request(m.SubmitJob, prefix="Retry", jobpack=pack, python=jobpack.PYTHON,
                         token="t-123")["job"]
    other = conn.request(m.SubmitJob, prefix="Retry", jobpack=pack, python=jobpack.PYTHON,
                         token="t-456")["job"]
    assert first == again != other


def _proc_stat(pid: int) -> list[str]:
    """``/proc/PID/stat``'s fields after the command name: [0] is field 3 (the state)."""
    from pathlib import Path
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _started_at(pid: int) -> float:
    """When a process started, on the wall clock: boot time plus its start in clock ticks."""
    from pathlib import Path
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + int(_proc_stat(pid)[19]) / os.sysconf("SC_CLK_TCK")


def test_the_worker_zygote_starts_while_the_daemon_is_still_starting(node):
    """``disco nodaemon`` starts the zygote before it imports the daemon, so the zygote's
    imports run beside the daemon's and the first task finds a worker ready; the executor
    takes that zygote over (one zygote, the daemon's child)."""
    from pathlib import Path
    zygotes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int(_proc_stat(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if b"disco.worker.zygote" in cmdline and ppid == node.proc.pid:
            zygotes.append(int(entry.name))
    assert len(zygotes) == 1, zygotes
    # the daemon writes its pid file once it has bound its ports, after its imports (a zygote
    # started by the executor's first tick comes after that); compared with the daemon's own
    # start, so that the bound holds on a fast machine as on a slow one
    daemon = _started_at(node.proc.pid)
    up = (node.data / "disco.pid").stat().st_mtime - daemon
    zygote = _started_at(zygotes[0]) - daemon
    assert zygote < up / 2, f"the zygote started {zygote:.3f} s after the daemon, which was up at {up:.3f} s"
