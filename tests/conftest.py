"""Shared fixtures: real node daemons as subprocesses on loopback, always stopped.

``node_factory(**env)`` starts ``python -m disco.cli nodaemon`` on a free port pair with its own
data dir, waits until it answers, and returns a ``RunningNode``. Teardown sends SIGTERM, waits,
then SIGKILLs the whole process group (the daemon and its workers), and fails the test if
anything of that group is still alive.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
sys.path.insert(0, str(ROOT / "tests" / "sim"))


def pytest_addoption(parser):
    parser.addoption("--seed", type=int, default=None,
                     help="replay only this simulator seed (printed by a failing sim test)")


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for key in ("DISCO_MASTER", "DISCO_PORT", "DISCO_DATA", "DISCO_HOST", "DISCO_JOIN"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class RunningNode:
    proc: subprocess.Popen
    port: int
    data: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_up(self, timeout_s: float = 30.0) -> None:
        from disco.client import await_started
        if not await_started(self.proc, self.address, self.data / "disco.pid",
                             time.monotonic() + timeout_s):
            raise RuntimeError(f"node did not start: {(self.data / 'stderr.txt').read_text()}")

    def log_text(self) -> str:
        try:
            return (self.data / "logs" / "node.jsonl").read_text()
        except OSError:
            return ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of an exited group still count as "alive" for killpg; look closer
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> bool:
    """SIGTERM the daemon, wait, then SIGKILL its group. True if it exited by itself."""
    clean = True
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            clean = False
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 5
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return clean


def spawn_node(data: Path, workers: int = 2, args: tuple = (), port: int | None = None,
               **env) -> "RunningNode":
    """Start a node daemon on ``port`` (a free port triple if None) with ``data`` as its data
    dir (the caller stops it with ``stop_group(node.proc)``; ``node.wait_up()`` waits until
    it answers)."""
    from disco.embedded import free_port_pair
    port = port or free_port_pair()
    err = open(data / "stderr.txt", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--port", str(port),
         "--data", str(data), "--workers", str(workers), *args],
        env=child_env(**env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=err, start_new_session=True)
    err.close()
    return RunningNode(proc, port, data)


def start_node(data: Path, workers: int = 2, args: tuple = (), started=None,
               **env) -> "RunningNode":
    """``spawn_node`` and ``wait_up``, on another free port pair if one of the ports was taken
    between finding it free and the daemon binding it (by another test's outgoing connection,
    which takes its ephemeral port from the same range). ``started`` (a list) gets each process
    spawned, so the caller stops it whatever happens."""
    from disco.embedded import start_on_free_ports

    def spawn(port: int) -> "RunningNode":
        node = spawn_node(data, workers, args, port=port, **env)
        if started is not None:
            started.append(node)  # stopped by the caller, even when its port was taken
        return node

    return start_on_free_ports(spawn, RunningNode.wait_up)


@contextlib.contextmanager
def joined_nodes(tmp_path_factory, n: int, workers: int = 1, name: str = "node"):
    """``n`` node daemons, the first the seed the others join, once every one sees all of them
    alive; every one (and its workers) stopped at the end, also on failure. A group stopped
    with SIGSTOP is continued first."""
    nodes: list[RunningNode] = []
    try:
        for i in range(n):
            args = ("--join", nodes[0].address) if nodes else ()
            start_node(tmp_path_factory.mktemp(f"{name}{i}"), workers, args, started=nodes)
        addresses = {x.address for x in nodes}
        for node in nodes:
            wait_for(lambda node=node: {x["address"] for x in status_of(node)["members"]
                                        if x["state"] == "alive"} == addresses, 30,
                     what=f"{node.address} to see all {n} alive")
        yield nodes
    finally:
        for node in nodes:
            if node.alive():
                try:
                    os.killpg(node.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            stop_group(node.proc)


@pytest.fixture
def node_factory(tmp_path_factory):

    started: list[RunningNode] = []

    def start(workers: int = 2, args: tuple = (), **env) -> RunningNode:
        return start_node(tmp_path_factory.mktemp("node"), workers, args, started=started, **env)

    yield start
    leaks = []
    for node in started:
        stop_group(node.proc)
        if _group_alive(node.proc.pid):
            leaks.append(node.proc.pid)
    assert not leaks, f"processes left behind by nodes {leaks}"


@pytest.fixture
def node(node_factory) -> RunningNode:
    """One node daemon, founder of its own cluster, once it has elected itself master (a node
    answers before that: a job request in between is refused with ``NotMaster``)."""
    started = node_factory()
    wait_for(lambda: status_of(started)["master"] == started.address, 15,
             what=f"{started.address} to elect itself master")
    return started


def run_cli(*args, env=None, cwd=None, timeout=60, check=True, tool="disco"):
    """Run ``bin/disco ARGS`` (or bin/ddfs) and return the CompletedProcess."""
    proc = subprocess.run([str(BIN / tool), *map(str, args)], env=env or child_env(),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition"):
    """Poll ``predicate`` every 0.1 s until it returns something true (returned), or fail
    the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def status_of(node) -> dict:
    """The cluster as ``node`` sees it (its ``disco status --json``)."""
    from mesh import message as m
    from mesh.client import Connection
    conn = Connection(node.address, 5)
    try:
        return conn.request(m.GetStatus)
    finally:
        conn.close()
