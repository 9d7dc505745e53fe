"""DDFS on real daemons: the ``ddfs`` command, the Python API, fail-over, repair, collection and
faults (SPEC §6, §9, §10, §11)."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import child_env, run_cli
from disco.client import Connection
from mesh import message as m

pytestmark = pytest.mark.cluster


# -- helpers ----------------------------------------------------------------------------------

def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def status_of(node) -> dict:
    conn = Connection(node.address, 5)
    try:
        return conn.request(m.GetStatus)
    finally:
        conn.close()


def ddfs_status(node) -> dict:
    conn = Connection(node.address, 5)
    try:
        return conn.request(m.DdfsStatus)
    finally:
        conn.close()


def master_of(nodes):
    """The node all alive ``nodes`` agree is master, or None."""
    views = set()
    for n in nodes:
        try:
            views.add(status_of(n)["master"])
        except Exception:  # noqa: BLE001 - a node in the middle of a fail-over
            return None
    if len(views) != 1:
        return None
    return next((n for n in nodes if n.address in views), None)


def ready(nodes) -> bool:
    """Every node sees every other alive, all vote, one master, whose DDFS has every
    inventory and places blobs."""
    names = {n.address for n in nodes}
    for n in nodes:
        view = status_of(n)
        alive = {x["name"] for x in view["members"] if x["state"] == "alive"}
        if alive != names or len(view["voters"]) != min(len(nodes), 5):
            return False
    master = master_of(nodes)
    if master is None:
        return False
    try:
        st = ddfs_status(master)
    except Exception:  # noqa: BLE001 - master elected but not taken over yet
        return False
    return set(st["reported"]) == names and set(st["alive"]) == names


def start_cluster(node_factory, n: int, **env) -> list:
    first = node_factory(workers=1, **env)
    nodes = [first] + [node_factory(workers=1, args=("--join", first.address), **env)
                       for _ in range(n - 1)]
    wait_for(lambda: ready(nodes), 30, f"{n} nodes to be ready for DDFS")
    return nodes


def ddfs(nodes_or_node, *args, check=True, timeout=120, input=None):
    node = nodes_or_node[0] if isinstance(nodes_or_node, list) else nodes_or_node
    env = child_env(DISCO_MASTER=node.address)
    proc = subprocess.run([sys.executable, "-m", "disco.ddfs_cli", *map(str, args)], env=env,
                          capture_output=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"ddfs {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]!r}\n{proc.stderr.decode()[-4000:]}")
    return proc


def out(proc) -> str:
    return proc.stdout.decode()


def one_error_line(proc) -> str:
    """A user error: exit 1 and exactly one line ``ddfs: error: ...`` on stderr."""
    err = proc.stderr.decode()
    assert proc.returncode == 1, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddfs: error: "), err
    assert "Traceback" not in err
    return lines[0]


def node_of(url: str) -> str:
    return url.split("/")[2]


def path_of(url: str) -> str:
    return url.split("/", 3)[3]


def by_address(nodes) -> dict:
    return {n.address: n for n in nodes}


def kill9(node) -> None:
    os.killpg(node.proc.pid, signal.SIGKILL)
    node.proc.wait()


def restart(node, join: str, **env):
    """Start ``node`` again on its port and data dir (the fixture still stops it)."""
    err = open(node.data / "stderr-restart.txt", "ab")
    node.proc = subprocess.Popen(
        [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--port",
         str(node.port), "--data", str(node.data), "--workers", "1", "--join", join],
        env=child_env(**env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        start_new_session=True)
    err.close()
    return node


def disk_copies(nodes) -> dict:
    """Blob name -> set of node addresses whose volumes show it (final names only)."""
    found: dict[str, set] = {}
    for n in nodes:
        for path in n.data.glob("vol*/blob/*/*"):
            if path.name.startswith(".") or path.name.endswith(".xxh3"):
                continue
            found.setdefault(path.name, set()).add(n.address)
    return found


def partials(nodes) -> list:
    return [p for n in nodes for p in n.data.glob("vol*/blob/*/.partial-*")]


def make_file(path: Path, size: int, seed: int = 1) -> bytes:
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    data = bytes((b + seed) % 256 for b in data[:4096]) + data[4096:]
    path.write_bytes(data)
    return data


# -- 1. the command ---------------------------------------------------------------------------

def test_cli_round_trip_on_three_nodes(node_factory, tmp_path):
    nodes = start_cluster(node_factory, 3)
    big = make_file(tmp_path / "big.bin", 5 << 20 | 123, seed=3)
    small = b"hello ddfs\nsecond line\n"
    (tmp_path / "small.txt").write_bytes(small)
    push = ddfs(nodes, "push", "data:one", tmp_path / "big.bin", tmp_path / "small.txt")
    assert "pushed 2 blobs" in push.stderr.decode()

    lines = out(ddfs(nodes, "blobs", "data:one")).splitlines()
    assert len(lines) == 2
    addresses = by_address(nodes)
    for line in lines:
        urls = line.split(" ")
        assert len(urls) == 3 and all(u.startswith("disco://") for u in urls)
        assert {node_of(u) for u in urls} == set(addresses)
        for url in urls:
            blob = addresses[node_of(url)].data / path_of(url)
            assert stat.S_IMODE(blob.stat().st_mode) == 0o400
            sidecar = blob.with_name(blob.name + ".xxh3")
            assert stat.S_IMODE(sidecar.stat().st_mode) == 0o400
            digest, size = sidecar.read_text().split()
            assert int(size) == blob.stat().st_size
    assert ddfs(nodes, "cat", "data:one").stdout in (big + small, small + big)
    first_url = lines[0].split(" ")[1]
    assert ddfs(nodes, "cat", first_url).stdout in (big, small)
    as_json = json.loads(out(ddfs(nodes, "blobs", "--json", "data:one")))
    assert [" ".join(s) for s in as_json] == lines
    # urls: the tag's own sets, same lines
    assert out(ddfs(nodes, "urls", "data:one")).splitlines() == lines
    assert json.loads(out(ddfs(nodes, "urls", "--json", "data:one"))) == as_json

    # ls, get, stat
    ddfs(nodes, "touch", "data:two", "other:x")
    assert out(ddfs(nodes, "ls")).split() == ["data:one", "data:two", "other:x"]
    assert out(ddfs(nodes, "ls", "data:")).split() == ["data:one", "data:two"]
    assert json.loads(out(ddfs(nodes, "ls", "--json", "oth"))) == ["other:x"]
    obj = json.loads(out(ddfs(nodes, "get", "data:one")))
    assert obj["id"] == "data:one" and obj["urls"] == as_json and obj["user-data"] == {}
    assert obj["version"] >= 1 and obj["last-modified"] > 0
    st = json.loads(out(ddfs(nodes, "stat", "data:one")))
    assert st["id"] == "data:one" and st["replica-sets"] == 2 and "urls" not in st
    assert json.loads(out(ddfs(nodes, "get", "data:two")))["urls"] == []

    # attributes
    ddfs(nodes, "setattr", "data:one", "owner", "ops team")
    ddfs(nodes, "setattr", "data:one", "n", "1")
    assert json.loads(out(ddfs(nodes, "attrs", "data:one"))) == {"owner": "ops team", "n": "1"}
    assert out(ddfs(nodes, "getattr", "data:one", "owner")) == "ops team\n"
    ddfs(nodes, "delattr", "data:one", "n")
    assert json.loads(out(ddfs(nodes, "attrs", "data:one"))) == {"owner": "ops team"}
    one_error_line(ddfs(nodes, "getattr", "data:one", "n", check=False))

    # tag: each argument one replica set; quoted space-separated URLs are one blob's replicas
    ddfs(nodes, "tag", "data:two", lines[0], "raw://abc")
    sets = json.loads(out(ddfs(nodes, "urls", "--json", "data:two")))
    assert sorted(map(tuple, sets)) == sorted([tuple(lines[0].split()), ("raw://abc",)])
    assert b"abc" in ddfs(nodes, "cat", "data:two").stdout

    # cp: the blobs of SRC added to DST, no data copied
    ddfs(nodes, "cp", "data:one", "data:copy")
    assert out(ddfs(nodes, "blobs", "data:copy")).splitlines() == lines
    assert len(disk_copies(nodes)) == 2

    # exists, rm
    ok = ddfs(nodes, "exists", "data:copy", check=False)
    assert ok.returncode == 0 and out(ok).strip() == "True"
    ddfs(nodes, "rm", "data:copy", "other:x")
    gone = ddfs(nodes, "exists", "data:copy", check=False)
    assert gone.returncode == 1 and out(gone).strip() == "False"
    assert out(ddfs(nodes, "ls")).split() == ["data:one", "data:two"]

    # ddfs status --json: the master's view
    st = json.loads(out(ddfs(nodes, "status", "--json")))
    assert st["blobs"] == 2 and st["copies"] == 6 and st["under_replicated"] == 0
    assert st["k"] == 3 and st["tags"] == 2 and st["bytes"] == len(big) + len(small)
    assert sorted(st["alive"]) == sorted(st["reported"]) == sorted(addresses)

    # push --replicas 1
    (tmp_path / "single.txt").write_bytes(b"only once\n")
    ddfs(nodes, "push", "--replicas", "1", "data:single", tmp_path / "single.txt")
    (line,) = out(ddfs(nodes, "blobs", "data:single")).splitlines()
    assert len(line.split()) == 1
    assert ddfs(nodes, "cat", "data:single").stdout == b"only once\n"

    # errors: one line, exit 1
    for args in (("blobs", "no:such"), ("cat", "no:such"), ("get", "no:such"),
                 ("rm", "no:such"), ("attrs", "no:such"), ("stat", "no:such"),
                 ("urls", "no:such"), ("cp", "no:such", "x"), ("delattr", "no:such", "a"),
                 ("touch", "bad name"), ("tag", "bad/name", "raw://x"),
                 ("setattr", "bad*name", "a", "b"), ("get", "bad name"),
                 ("push", "--replicas", "4", "data:four", tmp_path / "single.txt"),
                 ("tag", "data:two", "not-a-url")):
        line = one_error_line(ddfs(nodes, *args, check=False))
        if args[0] != "tag" or args[1] != "data:two":
            assert "no:such" in line or "name" in line or "replicas" in line, line
    assert "nope.txt" in one_error_line(ddfs(nodes, "push", "data:x", tmp_path / "nope.txt",
                                             check=False))
    assert not ddfs(nodes, "exists", "data:four", check=False).returncode == 0
    assert not ddfs(nodes, "exists", "data:x", check=False).returncode == 0
