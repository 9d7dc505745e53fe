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

from conftest import child_env, status_of, wait_for
from disco.client import Connection, answers
from mesh import message as m

pytestmark = pytest.mark.cluster


# -- helpers ----------------------------------------------------------------------------------





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
                             f"{len(proc.stdout)} bytes on stdout, ending {proc.stdout[-200:]!r}\n"
                             f"{proc.stderr.decode()[-4000:]}")
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
    """Start ``node`` again on its port and data dir (the fixture still stops it).

    Its ports are this machine's ephemeral ports: an outgoing connection of another process
    (a peer reconnecting to the dead node) may hold one for a moment, so a start that finds
    its port in use is tried again."""
    log = node.data / "stderr-restart.txt"
    for _ in range(20):
        start = log.stat().st_size if log.exists() else 0
        err = open(log, "ab")
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--port",
             str(node.port), "--data", str(node.data), "--workers", "1", "--join", join],
            env=child_env(**env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=err, start_new_session=True)
        err.close()
        try:
            node.proc.wait(3.0)
        except subprocess.TimeoutExpired:
            return node  # it runs
        if b"Address already in use" not in log.read_bytes()[start:]:
            raise AssertionError(f"the node did not restart: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise AssertionError(f"the node's ports stayed in use: {log.read_text()[-2000:]}")


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
                 ("attrs", "no:such"), ("stat", "no:such"),
                 ("urls", "no:such"), ("cp", "no:such", "x"), ("delattr", "no:such", "a"),
                 ("touch", "bad name"), ("tag", "bad/name", "raw://x"),
                 ("setattr", "bad*name", "a", "b"), ("get", "bad name"),
                 ("push", "--replicas", "4", "data:four", tmp_path / "single.txt")):
        line = one_error_line(ddfs(nodes, *args, check=False))
        assert "no:such" in line or "name" in line or "replicas" in line, line
    # as in Disco: removing a tag that is not there succeeds; a replica may be any string
    assert ddfs(nodes, "rm", "no:such", check=False).returncode == 0
    ddfs(nodes, "tag", "data:two", "not-a-url")
    assert "not-a-url" in out(ddfs(nodes, "urls", "data:two"))
    assert "nope.txt" in one_error_line(ddfs(nodes, "push", "data:x", tmp_path / "nope.txt",
                                             check=False))
    assert not ddfs(nodes, "exists", "data:four", check=False).returncode == 0
    assert not ddfs(nodes, "exists", "data:x", check=False).returncode == 0


def test_push_replicas_k_is_kept_by_repair(node_factory, tmp_path):
    """``push --replicas 1`` is one copy for good, not one copy until the planner's next turn."""
    nodes = start_cluster(node_factory, 3)
    (tmp_path / "one.txt").write_bytes(b"one copy\n")
    ddfs(nodes, "push", "--replicas", "1", "k:one", tmp_path / "one.txt")
    master = master_of(nodes)
    wait_for(lambda: ddfs_status(master)["blobs"] == 1, 10, "the copy to be reported")
    deadline = time.monotonic() + 5  # five turns of the planner
    while time.monotonic() < deadline:
        st = ddfs_status(master)
        assert st["copies"] == 1 and st["under_replicated"] == 0 and \
            st["repairs_in_flight"] == 0, st
        assert len(tag_sets(master, "k:one")[0]) == 1
        time.sleep(0.2)


# -- 2. chunks --------------------------------------------------------------------------------

def test_chunk_bounds_each_blob_and_xcat_gives_the_lines_back(node_factory, tmp_path):
    import random
    nodes = start_cluster(node_factory, 3)
    rng = random.Random(5)
    words = [f"w{rng.getrandbits(40):x}" for _ in range(3000)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) + "\n"
             for _ in range(20000)]
    text = "".join(lines)
    (tmp_path / "in.txt").write_text(text)
    bound_mb = 0.05
    bound = int(bound_mb * (1 << 20))
    proc = ddfs(nodes, "chunk", "text:chunked", tmp_path / "in.txt", "-S", bound_mb)
    blobs = out(ddfs(nodes, "blobs", "text:chunked")).splitlines()
    assert len(blobs) >= 4, proc.stderr
    assert f"stored {len(blobs)} chunks" in proc.stderr.decode()
    addresses = by_address(nodes)
    for line in blobs:
        urls = line.split()
        assert len({node_of(u) for u in urls}) == 3
        sizes = {(addresses[node_of(u)].data / path_of(u)).stat().st_size for u in urls}
        assert len(sizes) == 1 and 0 < sizes.pop() <= bound
    assert out(ddfs(nodes, "xcat", "text:chunked")) == text
    assert ddfs(nodes, "cat", "text:chunked").stdout != text.encode()  # stored encoded
    missing = ddfs(nodes, "chunk", "text:x", tmp_path / "nope.txt", check=False)
    assert "nope.txt" in one_error_line(missing)


# -- 3. the Python API ------------------------------------------------------------------------

def test_python_api_push_blobs_walk_findtags_pull_and_links(node_factory, tmp_path):
    import io
    from disco.ddfs import DDFS
    from disco.error import DataNotFound
    nodes = start_cluster(node_factory, 3)
    api = DDFS(nodes[1].address)  # a non-master: the client follows the master
    (tmp_path / "a.txt").write_bytes(b"alpha\n")
    url, sets = api.push("api:a", [tmp_path / "a.txt", (io.BytesIO(b"beta\n"), "b.txt")])
    assert url == "tag://api:a" and len(sets) == 2
    assert all(len({node_of(u) for u in s}) == 3 for s in sets)
    assert sorted(map(tuple, api.blobs("api:a"))) == sorted(map(tuple, sets))
    _, csets = api.push("api:c", [(io.BytesIO(b"gamma\n"), "c")], replicas=2)
    assert [len(s) for s in csets] == [2]
    api.tag("api:top", ["tag://api:a", "tag://api:c"])
    api.tag("api:c", ["tag://api:top"])  # a cycle: walked once
    assert api.list("api:") == ["api:a", "api:c", "api:top"]
    assert api.exists("api:top") and not api.exists("api:none")
    walked = list(api.walk("api:top"))
    assert [w[0] for w in walked] == [("api:top",), ("api:top", "api:a"), ("api:top", "api:c")]
    assert walked[0][1] == ["api:a", "api:c"] and walked[0][2] == []
    assert sorted(map(tuple, walked[1][2])) == sorted(map(tuple, sets))
    found = list(api.findtags("api:top"))
    assert [f[0] for f in found] == ["api:top", "api:a", "api:c"]
    assert len(api.blobs("api:top")) == 3
    contents = sorted(fd.read() for fd, _, _ in api.pull("api:top"))
    assert contents == [b"alpha\n", b"beta\n", b"gamma\n"]
    api.setattr("api:a", "k", 5)
    assert api.getattr("api:a", "k") == "5" and api.attrs("api:a") == {"k": "5"}
    api.delattr("api:a", "k")
    with pytest.raises(DataNotFound):
        api.getattr("api:a", "k")
    api.tag("api:link", ["tag://api:gone"])
    assert api.blobs("api:link") == []
    with pytest.raises(DataNotFound):
        api.blobs("api:link", ignore_missing=False)
    api.delete("api:a")
    assert not api.exists("api:a") and api.blobs("api:top") == csets
    api.delete("api:a")  # Disco: deleting a tag that does not exist succeeds
    # Disco's shapes: any string as a replica, blob_name, 404s as CommError, reserved ddfs:
    from disco.error import CommError
    api.tag("api:s", [["urls"]])
    assert api.get(["api:s"])["urls"] == [["urls"]] and api.exists("tag://api:s")
    assert api.blob_name(sets[0][0]) == "a.txt"
    with pytest.raises(CommError) as err:
        api.get("api:none")
    assert err.value.status == 404 and isinstance(err.value, DataNotFound)
    with pytest.raises(CommError) as err:
        api.setattr("api:s", "ddfs:a1", "v")
    assert err.value.status == 404


def test_concurrent_tag_updates_lose_no_url(node_factory):
    import threading
    from disco.ddfs import DDFS
    nodes = start_cluster(node_factory, 3)
    writers, each = 8, int(os.environ.get("DDFS_TAG_WRITES", "200"))
    errors = []

    def write(w: int) -> None:
        api = DDFS(nodes[w % 3].address)
        try:
            for i in range(each):
                api.tag("conc:one", [f"raw://w{w}-{i}"])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    took = time.monotonic() - start
    print(f"\n{writers * each} concurrent tag writes took {took:.1f} s")
    assert not errors, errors[:3]
    urls = [s[0] for s in DDFS(nodes[0].address).urls("conc:one")]
    assert len(urls) == len(set(urls)) == writers * each
    assert set(urls) == {f"raw://w{w}-{i}" for w in range(writers) for i in range(each)}
    version = DDFS(nodes[2].address).get("conc:one")["version"]
    assert version == writers * each


# -- 4. fail-over -----------------------------------------------------------------------------

def test_acknowledged_tag_writes_survive_kill_9_of_the_master(node_factory):
    import threading
    from disco.ddfs import DDFS
    nodes = start_cluster(node_factory, 3)
    master = master_of(nodes)
    others = [n for n in nodes if n is not master]
    acked: list[str] = []
    raised: list[str] = []
    after_kill = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()
    acked_after: list[str] = []

    def write(w: int) -> None:
        api = DDFS(others[w % 2].address)
        i = 0
        while not stop.is_set():
            url = f"raw://w{w}-{i}"
            i += 1
            killed = after_kill.is_set()
            try:
                api.tag("fo:stream", [url])
            except Exception:  # noqa: BLE001 - may or may not have landed
                with lock:
                    raised.append(url)
                continue
            with lock:
                acked.append(url)
                if killed:
                    acked_after.append(url)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) >= 200, 30, "200 acknowledged writes")
        kill9(master)
        after_kill.set()
        wait_for(lambda: len(acked_after) >= 200, 60, "200 writes acknowledged after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    new = wait_for(lambda: master_of(others), 10, "a new master")
    assert new is not master
    for node in others:
        urls = [s[0] for s in DDFS(node.address).urls("fo:stream")]
        assert len(urls) == len(set(urls)), "a retried write landed twice"
        missing = set(acked) - set(urls)
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
        assert set(urls) <= set(acked) | set(raised)
    print(f"\n{len(acked)} writes acknowledged, {len(raised)} raised")


# -- 5. deletes -------------------------------------------------------------------------------

def _many_writes(address: str, tag: str, n: int, writers: int = 8) -> None:
    """``n`` tag writes from ``writers`` threads (enough to make the master compact)."""
    import threading
    from disco.ddfs import DDFS

    def write(w: int) -> None:
        api = DDFS(address)
        for i in range(w, n, writers):
            api.tag(tag, [f"raw://{i}"])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def test_a_deleted_tag_stays_deleted_when_a_node_down_during_the_delete_returns(
        node_factory, tmp_path):
    from disco.ddfs import DDFS
    nodes = start_cluster(node_factory, 3)
    a = master_of(nodes)
    b, c = [n for n in nodes if n is not a]
    (tmp_path / "f.txt").write_bytes(b"to be deleted\n")
    ddfs(a, "push", "del:x", tmp_path / "f.txt")
    ddfs(a, "touch", "del:keep")
    kill9(b)
    ddfs(a, "rm", "del:x")
    assert ddfs(a, "exists", "del:x", check=False).returncode == 1
    _many_writes(a.address, "del:filler", 2500)  # past a compaction: b catches up by snapshot
    wait_for(lambda: "journal_compacted" in a.log_text(), 10, "the master to compact")
    restart(b, join=a.address)
    wait_for(lambda: {x["name"]: x["state"] for x in status_of(a)["members"]}.get(b.address)
             == "alive", 20, "the restarted node to be alive")
    kill9(c)  # now every commit needs b: once one is acknowledged, b has caught up
    DDFS(a.address).touch("del:marker")
    kill9(a)
    restart(c, join=b.address)  # c's log lacks the marker: only b can win the election
    wait_for(lambda: master_of([b, c]) is b, 30, "the restarted node to become master")
    direct = DDFS(b.address)
    assert direct.master == b.address and status_of(b)["master"] == b.address
    assert not direct.exists("del:x")
    assert direct.list("del:") == ["del:filler", "del:keep", "del:marker"]
    assert out(ddfs(b, "ls", "del:")).split() == ["del:filler", "del:keep", "del:marker"]
    assert ddfs(c, "exists", "del:x", check=False).returncode == 1
    assert len(direct.urls("del:filler")) == 2500
    assert "snapshot_installed" in b.log_text()  # the catch-up path this test means to take


# -- 6. repair --------------------------------------------------------------------------------

def tag_sets(node, tag: str) -> list:
    from disco.ddfs import DDFS
    return DDFS(node.address).urls(tag)


def named_copies_exist(nodes, tags, node_for_reads) -> bool:
    """Every URL a tag names is a file on its node's disk (re-read before calling it a miss:
    a copy may be dropped once a retag moved the tag away from it)."""
    addresses = by_address(nodes)

    def missing():
        return {u for t in tags for s in tag_sets(node_for_reads, t) for u in s
                if not (addresses[node_of(u)].data / path_of(u)).exists()}

    first = missing()
    if not first:
        return True
    again = missing()
    assert not (first & again), f"a copy a tag names is gone: {sorted(first & again)[:3]}"
    return True


def test_kill_9_of_a_holder_re_replicates_then_its_extra_copies_go(node_factory, tmp_path):
    env = {"DDFS_GC_DELAY_S": 3}
    nodes = start_cluster(node_factory, 5, **env)
    master = master_of(nodes)
    files, expected = [], {}
    for i in range(8):
        data = make_file(tmp_path / f"f{i}.bin", 300_000 + 7919 * i, seed=i)
        files.append(tmp_path / f"f{i}.bin")
        expected[i] = data
    ddfs(master, "push", "rep:a", *files[:5])
    ddfs(master, "push", "rep:b", *files[5:])
    before = {t: ddfs(master, "cat", t).stdout for t in ("rep:a", "rep:b")}
    assert sorted(len(v) for v in before.values()) == sorted(
        [sum(len(expected[i]) for i in range(5)), sum(len(expected[i]) for i in range(5, 8))])
    held = disk_copies(nodes)
    assert len(held) == 8 and all(len(h) == 3 for h in held.values())
    victim = max((n for n in nodes if n is not master),
                 key=lambda n: sum(n.address in h for h in held.values()))
    lost = {b for b, h in held.items() if victim.address in h}
    assert lost
    alive = [n for n in nodes if n is not victim]
    repairs_before = master.log_text().count('"blob_repair"')
    kill9(victim)
    killed_at = time.monotonic()
    wait_for(lambda: master.log_text().count('"blob_repair"') > repairs_before, 15,
             "the master to start re-replication")
    started_s = time.monotonic() - killed_at

    def repaired():
        st = ddfs_status(master)
        copies = disk_copies(alive)
        sets = [s for t in ("rep:a", "rep:b") for s in tag_sets(master, t)]
        return (st["under_replicated"] == 0 and st["repairs_in_flight"] == 0
                and st["copies"] == 24 and all(len(copies.get(b, ())) >= 3 for b in held)
                and all(len({node_of(u) for u in s}) == 3 and victim.address not in
                        {node_of(u) for u in s} for s in sets))

    wait_for(repaired, 60, "every blob to have 3 copies on alive nodes and tags naming them")
    done_s = time.monotonic() - killed_at
    print(f"\nre-replication started {started_s:.1f} s and finished {done_s:.1f} s after "
          f"kill -9 of a node holding {len(lost)} of 8 blobs")
    named_copies_exist(alive, ("rep:a", "rep:b"), master)
    for tag, data in before.items():
        assert ddfs(master, "cat", tag).stdout == data

    restart(victim, join=master.address, **env)
    wait_for(lambda: victim.address in ddfs_status(master)["reported"], 20,
             "the restarted node's inventory")

    def settled():
        named_copies_exist(nodes, ("rep:a", "rep:b"), master)
        copies = disk_copies(nodes)
        sets = {tuple(sorted(s)) for t in ("rep:a", "rep:b") for s in tag_sets(master, t)}
        rels = {(a, b): _rel(by_address(nodes)[a], b) for b, h in copies.items() for a in h}
        if not all(rels.values()):
            return False  # a copy went between the two looks: look again
        on_disk = {tuple(sorted(f"disco://{a}/{rels[a, b]}" for a in h))
                   for b, h in copies.items()}
        return len(copies) == 8 and all(len(h) == 3 for h in copies.values()) and \
            sets == on_disk

    wait_for(settled, 60, "the extra copies to be dropped, and tags to name what remains")
    for tag, data in before.items():
        assert ddfs(victim, "cat", tag).stdout == data
    assert not partials(nodes)


def _rel(node, blob: str) -> str:
    """The blob's path on ``node`` ("" if it went meanwhile: a drop between two looks)."""
    paths = list(node.data.glob(f"vol*/blob/*/{blob}"))
    return paths[0].relative_to(node.data).as_posix() if len(paths) == 1 else ""


# -- 7. collection ----------------------------------------------------------------------------

def test_unreferenced_blobs_are_collected_only_after_the_delay(node_factory, tmp_path):
    import io
    from disco.ddfs import DDFS
    delay = 3.0
    nodes = start_cluster(node_factory, 3, DDFS_GC_DELAY_S=delay)
    api = DDFS(nodes[0].address)
    (tmp_path / "kept.txt").write_bytes(b"kept\n")
    (tmp_path / "later.txt").write_bytes(b"deleted later\n")
    api.push("gc:kept", [tmp_path / "kept.txt"])
    api.push("gc:later", [tmp_path / "later.txt"])
    pushed_at = time.monotonic()
    loose = api.put_blob((io.BytesIO(b"never tagged\n"), "loose"))
    blob = path_of(loose[0]).rsplit("/", 1)[1]
    assert disk_copies(nodes).get(blob) == {node_of(u) for u in loose}
    wait_for(lambda: blob not in disk_copies(nodes), 40, "the untagged blob to be collected")
    gone_s = time.monotonic() - pushed_at
    assert gone_s >= delay - 0.2, f"collected {gone_s:.1f} s after the push, before the delay"
    copies = disk_copies(nodes)
    kept, later = (path_of(api.urls(t)[0][0]).rsplit("/", 1)[1] for t in ("gc:kept", "gc:later"))
    assert len(copies[kept]) == 3 and len(copies[later]) == 3
    assert "unreferenced" in next(n for n in nodes if n.address == master_of(nodes).address
                                  ).log_text()
    # a blob whose only tag is removed goes too: at once if older than the delay, else after it
    (tmp_path / "fresh.txt").write_bytes(b"fresh\n")
    fresh_at = time.monotonic()
    fresh = path_of(api.push("gc:fresh", [tmp_path / "fresh.txt"])[1][0][0]).rsplit("/", 1)[1]
    ddfs(nodes, "rm", "gc:later", "gc:fresh")
    if time.monotonic() - fresh_at < delay - 0.5:
        assert len(disk_copies(nodes)[fresh]) == 3
    wait_for(lambda: later not in disk_copies(nodes), 30, "the blob of the removed tag to go")
    wait_for(lambda: fresh not in disk_copies(nodes), 30, "the fresh blob of a removed tag to go")
    assert time.monotonic() - fresh_at >= delay - 0.2
    assert len(disk_copies(nodes)[kept]) == 3
    assert ddfs(nodes, "cat", "gc:kept").stdout == b"kept\n"
    print(f"\nan untagged blob went {gone_s:.1f} s after its push (delay {delay:g} s)")


# -- 8. faults --------------------------------------------------------------------------------

def _flip_a_byte(path: Path, offset: int) -> None:
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.chmod(path, 0o400)


def test_a_corrupt_copy_is_refused_and_another_replica_read(node_factory, tmp_path):
    from disco.ddfs import DDFS
    # the scrubber would find the corrupt copies and have them replaced: keep it (nearly) idle,
    # this test is about the readers
    nodes = start_cluster(node_factory, 3, DDFS_SCRUB_MBPS=0.0001)
    data = make_file(tmp_path / "c.bin", 3 << 20 | 77, seed=9)
    text = b"".join(b"line %d of the text\n" % i for i in range(20000))
    (tmp_path / "t.txt").write_bytes(text)
    ddfs(nodes, "push", "bad:bin", tmp_path / "c.bin")
    ddfs(nodes, "chunk", "bad:text", tmp_path / "t.txt", "-S", 0.05)
    addresses = by_address(nodes)
    for tag in ("bad:bin", "bad:text"):
        for replicas in tag_sets(nodes[0], tag):
            first = addresses[node_of(replicas[0])].data / path_of(replicas[0])
            _flip_a_byte(first, first.stat().st_size // 2)
    assert ddfs(nodes, "cat", "bad:bin").stdout == data
    assert ddfs(nodes, "xcat", "bad:text").stdout == text
    url = tag_sets(nodes[0], "bad:bin")[0][0]
    lone = ddfs(nodes, "cat", url, check=False)  # one URL, corrupt: a clear error, no bytes
    assert "checksum" in one_error_line(lone) and lone.stdout == b""
    pulled = [fd.read() for fd, _, _ in DDFS(nodes[0].address).pull("bad:bin")]
    assert pulled == [data]


def test_kill_9_of_a_receiver_mid_push_leaves_no_visible_partial_blob(node_factory, tmp_path):
    import threading
    from disco.ddfs import DDFS
    nodes = start_cluster(node_factory, 4)
    master = master_of(nodes)
    size = int(os.environ.get("DDFS_BIG_PUSH_MB", "200")) << 20
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(size >> 20):
            f.write(block[i % 256:] + block[:i % 256])
    result: dict = {}

    def push() -> None:
        try:
            result["sets"] = DDFS(master.address).push("big:one", [big])[1]
        except Exception as exc:  # noqa: BLE001 - checked below
            result["error"] = exc

    pusher = threading.Thread(target=push)
    started = time.monotonic()
    pusher.start()
    others = [n for n in nodes if n is not master]

    def receiving():
        for n in others:
            for p in n.data.glob("vol*/blob/*/.partial-*"):
                try:
                    if p.stat().st_size > size // 4:
                        return n
                except FileNotFoundError:
                    pass
        return None

    victim = wait_for(receiving, 60, "a quarter of the blob to reach a non-master node")
    kill9(victim)
    pusher.join(240)
    took = time.monotonic() - started
    alive = [n for n in nodes if n is not victim]
    print(f"\na {size >> 20} MiB push with a receiver killed took {took:.1f} s: "
          f"{'ok' if 'sets' in result else result.get('error')}")
    if "sets" in result:
        (replicas,) = result["sets"]
        assert len({node_of(u) for u in replicas}) == 3
        assert victim.address not in {node_of(u) for u in replicas}
        addresses = by_address(alive)
        for u in replicas:
            assert (addresses[node_of(u)].data / path_of(u)).stat().st_size == size
        # the attempt the kill broke was abandoned on the other nodes, not left as an orphan
        assert disk_copies(alive) == {path_of(replicas[0]).rsplit("/", 1)[1]:
                                      {node_of(u) for u in replicas}}
    else:
        err = str(result["error"])
        assert "could not store" in err and victim.address in err
    # nothing half-written is visible: every final name is a whole, checksummed blob
    for n in alive:
        for path in n.data.glob("vol*/blob/*/*"):
            if path.name.startswith(".") or path.name.endswith(".xxh3"):
                continue
            assert path.stat().st_size == size
            assert path.with_name(path.name + ".xxh3").exists()
    visible = [p for p in victim.data.glob("vol*/blob/*/*") if not p.name.startswith(".")]
    crashed = set(victim.data.glob("vol*/blob/*/.partial-*"))
    restart(victim, join=master.address)
    wait_for(lambda: answers(victim.address, 0.5), 20, "the victim to answer again")
    # what the kill left is gone (a repair copy to the victim may have a partial of its own)
    assert not crashed & set(victim.data.glob("vol*/blob/*/.partial-*")), \
        "partials left after restart"
    assert not [p for p in visible if not p.name.endswith(".xxh3")
                and p.stat().st_size != size]


def test_a_push_that_loses_one_of_three_nodes_writes_the_k_the_live_nodes_allow(
        node_factory, tmp_path):
    """k = min(3, live nodes): the retry waits until the master sees the node dead, then
    writes two copies (never two while three nodes still count as alive)."""
    import threading
    from disco.ddfs import DDFS
    nodes = start_cluster(node_factory, 3)
    master = master_of(nodes)
    size = 64 << 20
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(size))
    result: dict = {}

    def push() -> None:
        try:
            result["sets"] = DDFS(master.address).push("three:one", [big])[1]
        except Exception as exc:  # noqa: BLE001 - checked below
            result["error"] = exc

    pusher = threading.Thread(target=push)
    pusher.start()
    others = [n for n in nodes if n is not master]

    def receiving():
        return next((n for n in others for p in n.data.glob("vol*/blob/*/.partial-*")
                     if _size(p) > size // 4), None)

    victim = wait_for(receiving, 60, "a quarter of the blob to reach a non-master node")
    kill9(victim)
    pusher.join(120)
    assert "sets" in result, result.get("error")
    (replicas,) = result["sets"]
    alive = [n for n in nodes if n is not victim]
    assert {node_of(u) for u in replicas} == {n.address for n in alive}
    assert disk_copies(alive) == {path_of(replicas[0]).rsplit("/", 1)[1]:
                                  {n.address for n in alive}}
    assert ddfs(master, "cat", "three:one").stdout == big.read_bytes()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_a_full_disk_fails_the_push_clearly_and_leaves_nothing(node_factory, tmp_path):
    first = node_factory(workers=1)
    second = node_factory(workers=1, args=("--join", first.address))
    small = node_factory(workers=1, args=("--join", first.address))
    small.proc.send_signal(signal.SIGTERM)
    assert small.proc.wait(20) == 0
    vol = small.data / "vol0"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(vol)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        restart(small, join=first.address)
        nodes = [first, second, small]
        wait_for(lambda: ready(nodes), 30, "three nodes, one with a 1 MiB volume")
        make_file(tmp_path / "two.bin", 2 << 20)
        proc = ddfs(nodes, "push", "full:x", tmp_path / "two.bin", check=False)
        line = one_error_line(proc)
        assert "disk full" in line and small.address in line, line
        assert not disk_copies(nodes) and not partials(nodes)
        assert ddfs(nodes, "exists", "full:x", check=False).returncode == 1
        # two copies fit elsewhere: a placement on the full node is retried without it
        for _ in range(3):
            ddfs(nodes, "push", "--replicas", "2", "full:two", tmp_path / "two.bin")
        sets = tag_sets(first, "full:two")
        assert len(sets) == 3 and all(small.address not in {node_of(u) for u in s} and
                                      len(s) == 2 for s in sets)
        assert not partials(nodes) and not list(vol.glob("blob/*/*"))
        assert small.alive() and "blob_disk_full" in small.log_text()
    finally:
        subprocess.run(["umount", "-l", str(vol)], capture_output=True)


def test_malformed_ddfs_requests_are_refused_logged_and_survived(node_factory):
    import zmq
    nodes = start_cluster(node_factory, 3)
    master = master_of(nodes)
    conn = Connection(master.address, 5)
    bad_writes = [dict(kind="add", tag="bad name", urls=[["raw://x"]]),
                  dict(kind="add", tag="x" * 600, urls=[]),
                  dict(kind="explode", tag="ok"),
                  dict(kind="add", tag="ok", urls=[[1, 2]]),
                  dict(kind="add", tag="ok", urls=[[]]),
                  dict(kind="add", tag="ok", urls=[["tag://bad name"]]),
                  dict(kind="setattr", tag="ok", attr="ddfs:mine", value="v"),
                  dict(kind="setattr", tag="ok", attr="a", value="v" * 5000),
                  dict(kind="delattr", tag="nosuch", attr="a")]
    for fields in bad_writes:
        with pytest.raises(Exception) as err:
            conn.request(m.TagWrite, **fields)
        assert type(err.value).__name__ in ("UsageError", "DataNotFound"), err.value
    for fields in (dict(prefix="../etc"), dict(prefix=""), dict(prefix=".hidden"),
                   dict(prefix="ok", replicas=-1), dict(prefix="ok", replicas=9)):
        with pytest.raises(Exception) as err:
            conn.request(m.BlobPlace, **fields)
        assert type(err.value).__name__ == "UsageError", err.value
    # a peer's blob report with rows of the wrong shape (one-way: the Error has rid 0)
    peer = zmq.Context.instance().socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(f"tcp://127.0.0.1:{master.port}")
    peer.send(m.encode(m.BlobReport(term=1, node=nodes[1].address, full=True,
                                    added=[["x"], 1], removed=[])))
    assert peer.poll(5000)
    reply = m.decode(peer.recv())
    assert isinstance(reply, m.Error) and "row" in reply.msg
    peer.close()
    assert ddfs_status(master)["reported"] == sorted(n.address for n in nodes)
    assert not conn.request(m.TagList, prefix="ok")

    # the data port: PutData with no PutStart, garbage, wrong offsets, bad names, bad sums
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{master.port + 1}")

    def ask(*frames, rid=None):
        sock.send_multipart(list(frames))
        assert sock.poll(5000), "no answer from the data port"
        reply = m.decode(sock.recv_multipart()[0])
        if rid is not None:
            assert reply.rid == rid
        return reply

    assert isinstance(ask(m.encode(m.PutData(rid=3, offset=0)), b"x" * 10, rid=3), m.Error)
    assert isinstance(ask(m.encode(m.PutEnd(rid=4, size=1, checksum="00")), rid=4), m.Error)
    for garbage in (b"", b"\xc1" * 50, b"not msgpack at all"):
        assert isinstance(ask(garbage), m.Error)
    assert isinstance(ask(m.encode(m.PutStart(rid=5, name="../../x", size=1)), rid=5), m.Error)
    assert isinstance(ask(m.encode(m.PutStart(rid=6, name="ok-blob", size=-5)), rid=6), m.Error)
    assert isinstance(ask(m.encode(m.PutStart(rid=7, name="ok-blob", size=4)), rid=7), m.PutAck)
    assert isinstance(ask(m.encode(m.PutData(rid=7, offset=2)), b"ab", rid=7), m.Error)
    assert isinstance(ask(m.encode(m.PutData(rid=7, offset=0)), b"ab", rid=7), m.Error)  # gone
    assert isinstance(ask(m.encode(m.PutStart(rid=8, name="ok-blob", size=4)), rid=8), m.PutAck)
    assert isinstance(ask(m.encode(m.PutData(rid=8, offset=0)), b"abcd", rid=8), m.PutAck)
    reply = ask(m.encode(m.PutEnd(rid=8, size=4, checksum="0123456789abcdef")), rid=8)
    assert isinstance(reply, m.Error) and "expected" in reply.msg
    assert isinstance(ask(m.encode(m.PutData(rid=9, offset=0))), m.Error)  # no data frame
    sock.close()
    assert not disk_copies([master]) and not partials([master])

    assert master.alive() and all(n.alive() for n in nodes)
    log = master.log_text()
    assert "ddfs_request_refused" in log and "bad_data_request" in log
    assert master_of(nodes) is master
    (ok_file := master.data / "after.txt").write_bytes(b"still serving\n")
    ddfs(nodes, "push", "after:x", ok_file)
    assert ddfs(nodes, "cat", "after:x").stdout == b"still serving\n"


def test_tag_tokens_are_enforced_by_the_master(node):
    from disco.ddfs import DDFS
    from disco.error import Unauthorized
    ddfs = DDFS(node.address)
    ddfs.tag("tok:t", [["raw://a"]])
    ddfs.setattr("tok:t", "ddfs:write-token", "w1")
    with pytest.raises(Unauthorized):
        ddfs.tag("tok:t", [["raw://b"]])  # no token
    with pytest.raises(Unauthorized):
        ddfs.tag("tok:t", [["raw://b"]], token="wrong")
    ddfs.tag("tok:t", [["raw://b"]], token="w1")
    assert sorted(ddfs.urls("tok:t")) == [["raw://a"], ["raw://b"]]
    ddfs.setattr("tok:t", "ddfs:read-token", "r1", token="w1")
    with pytest.raises(Unauthorized):
        ddfs.get("tok:t")
    assert ddfs.exists("tok:t")  # Disco: a 401 means it is there
    assert ddfs.get("tok:t", token="r1")["urls"]
    with pytest.raises(Unauthorized):
        ddfs.delete("tok:t", token="r1")  # the read token does not write
    ddfs.delete("tok:t", token="w1")
    assert not ddfs.exists("tok:t")
