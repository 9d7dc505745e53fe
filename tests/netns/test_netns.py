"""Three daemons in three network namespaces joined by veth pairs and a bridge (SPEC §9).

Everything here lives in namespaces this test creates (a hub namespace holding the bridge, one
namespace per node); nothing touches the host's own interfaces. One node is cut off (its link
set down) in the middle of a job, and the job must still give exactly the right counts.
Skips with a reason unless running as root with ``ip netns``.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, child_env, stop_group

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

SUBNET = "10.199.{n}.{host}"
PORT = 8989


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    probe = f"disco-probe-{os.getpid()}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return "ip netns add does not work here"
    _ip("netns", "del", probe, check=False)
    return None


class Lab:
    """A hub namespace with a bridge, and one namespace per node on it."""

    def __init__(self, names: list[str]):
        tag = os.getpid() % 10000
        self.net = tag % 200 + 20
        self.hub = f"dh{tag}"
        self.ns = {name: f"d{name}{tag}" for name in names}
        self.procs: list[subprocess.Popen] = []
        _ip("netns", "add", self.hub)
        for bridge in ("br0", "br1"):  # br1 is the far side of a partition
            _ip("-n", self.hub, "link", "add", bridge, "type", "bridge")
            _ip("-n", self.hub, "link", "set", bridge, "up")
        for i, (name, ns) in enumerate(self.ns.items(), start=1):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", f"v{name}{tag}", "netns", ns, "type", "veth",
                "peer", "name", f"b{name}{tag}", "netns", self.hub)
            _ip("-n", ns, "link", "set", f"v{name}{tag}", "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.hub, "link", "set", f"b{name}{tag}", "master", "br0")
            _ip("-n", self.hub, "link", "set", f"b{name}{tag}", "up")
        self.tag = tag

    def addr(self, i: int) -> str:
        return SUBNET.format(n=self.net, host=i)

    def cut(self, name: str) -> None:
        _ip("-n", self.hub, "link", "set", f"b{name}{self.tag}", "down")

    def move(self, name: str, bridge: str) -> None:
        """Put a node on another bridge: nodes on different bridges cannot talk."""
        _ip("-n", self.hub, "link", "set", f"b{name}{self.tag}", "master", bridge)

    def status(self, name: str, i: int) -> dict | None:
        out = self.call(name, [str(BIN / "disco"), "status", "--host", self.addr(i), "--port",
                               str(PORT), "--json"])
        return json.loads(out.stdout) if out.returncode == 0 else None

    def run(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        # a virtual LAN as fast as loopback: the loopback membership timings, as SPEC §11 times
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[name], *argv],
                                env=child_env(DISCO_MESH_PRESET="loopback"),
                                start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def call(self, name: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns[name], *argv], env=child_env(),
                              capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        for proc in self.procs:
            stop_group(proc, grace_s=5)
        for ns in [*self.ns.values(), self.hub]:
            _ip("netns", "del", ns, check=False)


@pytest.fixture
def lab_factory():
    why = _can_make_namespaces()
    if why:
        pytest.skip(why)
    labs = []

    def make(names):
        labs.append(Lab(names))
        return labs[-1]

    yield make
    for lab in labs:
        lab.close()


@pytest.fixture
def lab(lab_factory):
    return lab_factory(["a", "b", "c"])


def start_nodes(lab: Lab, names: list[str], tmp_path: Path) -> str:
    """One daemon per namespace, all joined to the first; returns the seed address."""
    seed = f"{lab.addr(1)}:{PORT}"
    for i, name in enumerate(names, start=1):
        argv = [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--insecure",
                "--host", lab.addr(i), "--port", str(PORT), "--data", str(tmp_path / name),
                "--workers", "1"]
        if i > 1:
            argv += ["--join", seed]
        lab.run(name, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 40
    while True:
        st = lab.status(names[0], 1)
        # every node alive and a voter: a cut right after start leaves a majority of voters
        if st and st["master"] and sum(m["state"] == "alive" for m in st["members"]) == \
                len(names) and len(st.get("voters", ())) == len(names):
            return seed
        assert time.monotonic() < deadline, "the nodes never all saw each other"
        time.sleep(0.3)


JOB = '''
import json, sys, time
from disco.core import Job, result_iterator
from disco.util import kvgroup

def map(line, params):
    import time
    time.sleep(0.1)
    for word in line.split():
        yield word, 1

def reduce(iter, params):
    for word, counts in kvgroup(sorted(iter)):
        yield word, sum(counts)

job = Job(master=sys.argv[1]).run(input=sys.argv[2:], map=map, reduce=reduce, partitions=2)
print(job.name, flush=True)
print(json.dumps(dict(result_iterator(job.wait(timeout=120)))), flush=True)
'''


def test_node_cut_off_mid_job_gives_exact_counts(lab, tmp_path):
    python = sys.executable
    seed = start_nodes(lab, ["a", "b", "c"], tmp_path)
    disco = [str(BIN / "disco")]

    inputs, expected = [], collections.Counter()
    for i in range(12):
        text = "\n".join(f"w{(i * 5 + j) % 17} all" for j in range(30)) + "\n"
        expected.update(text.split())
        path = tmp_path / f"in{i}.txt"
        path.write_text(text)
        inputs.append(str(path))
    script = tmp_path / "job.py"
    script.write_text(JOB)
    client = lab.run("a", [python, str(script), seed, *inputs], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    job = client.stdout.readline().strip()
    assert "@" in job, client.stderr.read()

    victim = f"{lab.addr(3)}:{PORT}"
    deadline = time.monotonic() + 30
    while True:
        out = lab.call("a", [*disco, "events", job, "--json", "--master", seed])
        events = [json.loads(line) for line in out.stdout.splitlines()]
        if any(e["type"] == "task_done" and e.get("node") == victim for e in events):
            break
        assert time.monotonic() < deadline, "no task finished on the victim"
        time.sleep(0.2)
    lab.cut("c")
    counts = json.loads(client.stdout.readline())
    client.wait(30)
    assert counts == dict(expected)
    out = lab.call("a", [*disco, "status", "--host", lab.addr(1), "--port", str(PORT), "--json"])
    states = {m["address"]: m["state"] for m in json.loads(out.stdout)["members"]}
    assert states[victim] == "dead"
    assert Path(tmp_path / "c").exists()


def test_partition_with_the_master_in_the_minority(lab_factory, tmp_path):
    names = ["a", "b", "c", "d", "e"]
    lab = lab_factory(names)
    start_nodes(lab, names, tmp_path)
    index = {f"{lab.addr(i)}:{PORT}": (name, i) for i, name in enumerate(names, start=1)}
    first = lab.status("a", 1)
    old_master, old_term = first["master"], first["term"]
    minority = [index[old_master]] + [next(v for k, v in index.items() if k != old_master)]
    majority = [v for v in index.values() if v not in minority]
    for name, _ in minority:
        lab.move(name, "br1")  # 2 | 3, the master on the small side
    deadline = time.monotonic() + 10
    while True:
        views = [lab.status(n, i) for n, i in majority]
        masters = {v["master"] for v in views if v}
        if len(masters) == 1 and None not in masters and old_master not in masters:
            break
        seen = [(v["node"], v["term"], v.get("voters")) for v in views if v]
        assert time.monotonic() < deadline, \
            f"no new master on the majority side: {masters} (node, term, voters: {seen})"
        time.sleep(0.2)
    new_master = masters.pop()
    assert all(v["term"] > old_term for v in views if v)
    # the old master lost its lease: it no longer claims to be master, so it cannot schedule
    deadline = time.monotonic() + 5
    while lab.status(*minority[0])["master"] == old_master:
        assert time.monotonic() < deadline, "the old master kept its role without a majority"
        time.sleep(0.2)
    for name, _ in minority:
        lab.move(name, "br0")  # heal
    deadline = time.monotonic() + 15
    while True:
        masters = {(lab.status(n, i) or {}).get("master") for n, i in index.values()}
        if masters == {new_master}:
            break
        assert time.monotonic() < deadline, f"after healing, masters seen: {masters}"
        time.sleep(0.3)


def _ensure_iptables() -> str | None:
    if shutil.which("iptables") is None and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "iptables"], capture_output=True,
                       timeout=300)
    return None if shutil.which("iptables") else "needs iptables (apt-get install iptables)"


def _drop_randomly(lab: Lab, names: list[str], probability: float) -> None:
    """Drop that share of the packets on the way into every named node (iptables statistic)."""
    for name in names:
        out = lab.call(name, ["iptables", "-A", "INPUT", "-m", "statistic", "--mode", "random",
                              "--probability", str(probability), "-j", "DROP"])
        assert out.returncode == 0, out.stderr


def _deaths(tmp_path: Path, names: list[str]) -> list[str]:
    out = []
    for name in names:
        log = tmp_path / name / "logs" / "node.jsonl"
        out += [line for line in log.read_text().splitlines() if '"member_dead"' in line]
    return out


def _word_job(lab: Lab, seed: str, tmp_path: Path, n: int = 6) -> tuple[dict, dict]:
    inputs, expected = [], collections.Counter()
    for i in range(n):
        text = "\n".join(f"w{(i * 3 + j) % 11} all" for j in range(20)) + "\n"
        expected.update(text.split())
        path = tmp_path / f"job{i}.txt"
        path.write_text(text)
        inputs.append(str(path))
    script = tmp_path / "job.py"
    script.write_text(JOB)
    out = lab.call("a", [sys.executable, str(script), seed, *inputs], timeout=150)
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stderr[-2000:]
    return json.loads(lines[1]), dict(expected)


def test_ten_percent_loss_on_every_link_kills_no_one(lab_factory, tmp_path):
    why = _ensure_iptables()
    if why:
        pytest.skip(why)
    names = ["a", "b", "c"]
    lab = lab_factory(names)
    seed = start_nodes(lab, names, tmp_path)
    _drop_randomly(lab, names, 0.1)
    got, expected = _word_job(lab, seed, tmp_path)
    assert got == expected
    time.sleep(15)  # keep the mesh running under loss: any false death is logged
    assert not _deaths(tmp_path, names)


def test_flapping_link_settles_with_one_master(lab_factory, tmp_path):
    names = ["a", "b", "c"]
    lab = lab_factory(names)
    seed = start_nodes(lab, names, tmp_path)
    for _ in range(6):  # node c's link goes down and up every second
        lab.cut("c")
        time.sleep(1)
        _ip("-n", lab.hub, "link", "set", f"bc{lab.tag}", "up")
        time.sleep(1)
    deadline = time.monotonic() + 20
    while True:
        views = [lab.status(n, i) for i, n in enumerate(names, start=1)]
        masters = {v["master"] for v in views if v}
        alive = [sum(m["state"] == "alive" for m in v["members"]) for v in views if v]
        if len(masters) == 1 and None not in masters and alive == [3, 3, 3]:
            break
        assert time.monotonic() < deadline, f"not settled: masters {masters}, alive {alive}"
        time.sleep(0.3)
    got, expected = _word_job(lab, seed, tmp_path)
    assert got == expected


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_soak_saturated_cores_and_loss_kill_no_one(lab_factory, tmp_path):
    """Both cores busy with burners and 10 % loss for SOAK_S seconds (default 600)."""
    why = _ensure_iptables()
    if why:
        pytest.skip(why)
    names = ["a", "b", "c"]
    lab = lab_factory(names)
    seed = start_nodes(lab, names, tmp_path)
    _drop_randomly(lab, names, 0.1)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        deadline = time.monotonic() + float(os.environ.get("SOAK_S", "600"))
        while time.monotonic() < deadline:
            got, expected = _word_job(lab, seed, tmp_path)
            assert got == expected
            time.sleep(5)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert not _deaths(tmp_path, names)


WRITER = '''
import sys, time
from disco.ddfs import DDFS
master, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
ddfs = DDFS(master)
end, i = time.monotonic() + seconds, 0
while time.monotonic() < end:
    url = "http://" + name + "/" + str(i)
    try:
        ddfs.tag("shared", [[url]])
        print("ok", url, time.time(), flush=True)
    except Exception as exc:
        print("err", url, time.time(), type(exc).__name__, flush=True)
    i += 1
'''


def test_a_partition_during_tag_updates_loses_no_acknowledged_update(lab_factory, tmp_path):
    """Writers on both sides of a cut that leaves the master in the minority: every update
    that was acknowledged is in the tag once the cut heals; the minority's writers get errors,
    never a false acknowledgement."""
    names = ["a", "b", "c", "d", "e"]
    lab = lab_factory(names)
    start_nodes(lab, names, tmp_path)
    index = {f"{lab.addr(i)}:{PORT}": (name, i) for i, name in enumerate(names, start=1)}
    old_master = lab.status("a", 1)["master"]
    minority = [index[old_master]] + [next(v for k, v in index.items() if k != old_master)]
    majority = [v for v in index.values() if v not in minority]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writers = []
    for (name, i), side in [(minority[0], "min0"), (minority[1], "min1"), (majority[0], "maj0"),
                            (majority[1], "maj1")]:
        writers.append(lab.run(name, [sys.executable, str(script), f"{lab.addr(i)}:{PORT}",
                                      side, "24"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True))
    time.sleep(5)  # the writers run before, during and after the cut
    for name, _ in minority:
        lab.move(name, "br1")
    cut = time.time()
    time.sleep(10)
    for name, _ in minority:
        lab.move(name, "br0")
    healed = time.time()
    acked, during = set(), set()
    for proc in writers:
        out, err = proc.communicate(timeout=90)
        for line in out.splitlines():
            kind, url, when = line.split()[:3]
            if kind == "ok":
                acked.add(url)
                if cut + 5 < float(when) < healed:
                    during.add(url)
    assert acked, "no write was acknowledged"
    deadline = time.monotonic() + 30
    while True:
        out = lab.call(majority[0][0], [str(BIN / "ddfs"), "-M", f"{lab.addr(majority[0][1])}:{PORT}",
                                        "urls", "shared", "--json"])
        if out.returncode == 0:
            present = {s[0] for s in json.loads(out.stdout)}
            if acked <= present:
                break
        assert time.monotonic() < deadline, \
            f"acknowledged updates missing: {sorted(acked - present)[:10]} ({out.stderr})"
        time.sleep(0.5)
    # the majority elected a master and kept writing through the cut; the minority could not
    assert any(u.startswith("http://maj") for u in during), sorted(during)
    assert not any(u.startswith("http://min") for u in during), sorted(during)
