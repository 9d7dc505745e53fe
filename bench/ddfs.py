"""DDFS figures: push and read throughput beside a plain fsynced copy, and repair after kill -9.

    .venv/bin/python bench/ddfs.py [--mb 1024] [--repair-mb 1024] [--blob-mb 64]
                                   [--rounds 2] [--repair-mbps X] [--quick] [--keep]
                                   [--skip push,repair]

Starts real node daemons (``python -m disco.cli nodaemon``, as ``tests/conftest.py`` does) on
this machine, their data dirs under one temporary directory beside ``/tmp`` (the free space is
checked first), and prints:

1. push: a separate process pushes a ``--mb`` MiB file with ``DDFS.push`` to a 3-node cluster,
   once with k = 1 and once with k = 3 (the time of ``push``: placement, streaming, every copy
   fsynced, the tag committed), MB/s beside a plain copy of the same bytes in this process
   (1 MiB reads and writes, then ``os.fsync``, as ``cp`` + ``sync``) to one file, and to three
   (one read, three writes: the bytes k = 3 puts on this one disk). The pushing process's
   peak RSS (``VmHWM``) and its growth over the RSS before the push show it reads the file in
   bounded memory. Each copy and push runs ``--rounds`` times, interleaved (this VM's disk
   speed drifts from minute to minute), and the best of each is compared.
2. read: the k = 1 blob read as ``ddfs cat`` does (``DDFS.pull``; this process holds no copy,
   so it is read over the holder's data port with ``RemoteFile``) and through the local-file
   path a task on the holding node takes (``open_disco`` with the node's data dir), both with
   the checksum checked, beside reading the plain file; best of 2, every file in the page cache.
3. repair: 5 daemons; blobs of about ``--blob-mb`` MiB, ``5 * --repair-mb / 3`` MiB of them,
   pushed with k = 3 (about ``--repair-mb`` per node); then kill -9 of the non-master holding
   the most. Polling ``DDFS.status()`` and the tag's replica sets every 0.1 s: seconds until
   repair started (the first copy ordered), until every blob is back at 3 copies on alive nodes
   (``under_replicated == 0`` once the victim is dead, every replica set of the tag 3 URLs on
   alive nodes), and bytes copied (blob bytes on the survivors' volumes after minus before)
   over bytes lost (the copies the dead node held). The time line comes from the nodes' logs
   (``member_suspect``/``member_dead``, ``blob_repair``, ``blob_copy_stored``, ``blob_copied``).
   Each node copies at most ``DDFS_REPAIR_MBPS`` (default 64) MiB/s; the floor it puts on the
   copying time is printed.

The table at the end gives each figure, its aim and ok/MISS; it never fails on a MISS. The
repair aims (started <= 10 s, done <= 60 s, copied/lost <= 1.1) are DDFS's; the throughput aims
are this bench's: a push at least half as fast as the plain copy of the same bytes, a pusher
that grows by at most 64 MiB, a local read at least half as fast as the plain read, and a
remote read of at least 117 MB/s (a 1 Gbit/s link, what a real cluster's remote reads get).
``--quick`` runs 32 MiB sizes (a smoke run; the figures mean little). Every process started is
stopped (its whole process group) at the end, also on failure or Ctrl-C; ``--keep`` leaves the
data dirs. A ``# WARNING`` line on stderr says other processes used the CPU meanwhile.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from disco.client import Connection, answers  # noqa: E402
from disco.embedded import free_port_pair  # noqa: E402
from mesh import message as m  # noqa: E402

MiB = 1 << 20
CHUNK = 1 << 20
LINE_RATE = 117e6        # 1 Gbit/s, bytes/s
PUSH_AIM = 0.5           # push MB/s over the plain copy's
RSS_GROWTH_AIM = 64 * MiB
LOCAL_READ_AIM = 0.5     # local read MB/s over the plain read's
START_AIM_S, DONE_AIM_S, COPIED_AIM = 10.0, 60.0, 1.1
DEFAULT_REPAIR_MBPS = 64.0
POLL_S = 0.1
READ_ROUNDS = 2
SLACK = 512 * MiB        # free space kept beyond the estimate (journals, logs, partials)

SETTLE_S = 3.0           # no copy or retag in flight this long after done: repair is over

_procs: list[subprocess.Popen] = []  # every process started, stopped in main's finally
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- processes --------------------------------------------------------------------------------


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for key in ("DISCO_MASTER", "DISCO_PORT", "DISCO_DATA", "DISCO_HOST", "DISCO_JOIN"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def stop_all(grace_s: float = 10.0) -> None:
    """SIGTERM every process still running, wait up to ``grace_s``, then SIGKILL each group."""
    for proc in _procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for proc in _procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in _procs:
        if proc.poll() is None:
            proc.kill()  # the pushing process, in our group
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a daemon's group: it and its workers
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    _procs.clear()


def request(address: str, cls, timeout_s: float = 3.0, **fields):
    conn = Connection(address, timeout_s)
    try:
        return conn.request(cls, **fields)
    finally:
        conn.close()


def try_request(address: str, cls, **fields):
    try:
        return request(address, cls, **fields)
    except Exception:  # noqa: BLE001 - a node starting, stopping or being elected
        return None


@dataclass
class Node:
    proc: subprocess.Popen
    port: int
    data: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_bytes(self) -> dict[str, int]:
        """Blob name -> size of each final blob file on this node's volumes."""
        out = {}
        for path in self.data.glob("vol*/blob/*/*"):
            if not path.name.startswith(".") and not path.name.endswith(".xxh3"):
                try:
                    out[path.name] = path.stat().st_size
                except OSError:
                    continue
        return out

    def log_lines(self) -> list[dict]:
        lines = []
        try:
            with open(self.data / "logs" / "node.jsonl", encoding="utf-8") as f:
                for line in f:
                    try:
                        lines.append(json.loads(line))
                    except ValueError:
                        continue
        except OSError:
            pass
        return lines


class Cluster:
    """``n`` daemons, 1 worker slot each, the first the seed the others join."""

    def __init__(self, tmp: Path, n: int, env: dict):
        self.nodes: list[Node] = []
        for i in range(n):
            data = tmp / f"n{i}"
            data.mkdir(parents=True)
            port = free_port_pair()
            join = ("--join", self.nodes[0].address) if self.nodes else ()
            err = open(data / "stderr.txt", "wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--port",
                 str(port), "--data", str(data), "--workers", "1", *join],
                env=child_env(**env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True)
            err.close()
            _procs.append(proc)
            node = Node(proc, port, data)
            self.nodes.append(node)
            deadline = time.monotonic() + 30
            while not answers(node.address, 0.3):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench: node {node.address} did not start: "
                                     f"{(data / 'stderr.txt').read_text()[-2000:]}")
        wait_for(self.ready, 60, f"{n} nodes did not become ready for DDFS")

    def ready(self) -> bool:
        """Everyone sees everyone alive and votes, one master, whose DDFS has every inventory."""
        names = {n.address for n in self.nodes}
        masters = set()
        for n in self.nodes:
            view = try_request(n.address, m.GetStatus)
            if view is None:
                return False
            alive = {x["name"] for x in view["members"] if x["state"] == "alive"}
            if alive != names or len(view["voters"]) != min(len(names), 5):
                return False
            masters.add(view["master"])
        if len(masters) != 1 or not masters <= names:
            return False
        st = try_request(next(iter(masters)), m.DdfsStatus)
        return st is not None and set(st["reported"]) == names and set(st["alive"]) == names

    @property
    def master(self) -> str:
        return request(self.nodes[0].address, m.GetStatus)["master"]

    def node(self, address: str) -> Node:
        return next(n for n in self.nodes if n.address == address)


def wait_for(predicate, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"bench: {what} within {timeout_s:g} s")
        time.sleep(0.1)
    return time.monotonic() - start


# -- files ------------------------------------------------------------------------------------


def write_source(path: Path, size: int) -> None:
    """``size`` bytes of incompressible data, fsynced (so no write-back disturbs what follows)."""
    block = os.urandom(8 * CHUNK)
    with open(path, "wb") as f:
        for offset in range(0, size, len(block)):
            f.write(block[:min(len(block), size - offset)])
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def plain_copy(src: Path, dsts: list[Path]) -> float:
    """Seconds to copy ``src`` to each of ``dsts`` (one read, a write per copy) and fsync them."""
    started = time.perf_counter()
    outs = [open(d, "wb") for d in dsts]
    try:
        with open(src, "rb") as f:
            while data := f.read(CHUNK):
                for out in outs:
                    out.write(data)
        for out in outs:
            out.flush()
            os.fsync(out.fileno())
    finally:
        for out in outs:
            out.close()
    for parent in {d.parent for d in dsts}:
        fsync_dir(parent)
    return time.perf_counter() - started


def read_all(f) -> int:
    total = 0
    while data := f.read(CHUNK):
        total += len(data)
    return total


def vm_bytes(key: str) -> int:
    """``VmRSS``, ``VmHWM``... of this process from /proc/self/status (0 if unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def remove_tree(path: Path) -> None:
    def retry(func, p, _):
        os.chmod(os.path.dirname(p), 0o700)
        try:
            os.chmod(p, 0o600)
        except OSError:
            pass
        func(p)
    shutil.rmtree(path, onerror=retry)


def mb_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


# -- the pushing process ----------------------------------------------------------------------


def push_child(master: str, path: str, k: int, tag: str) -> None:
    """Push ``path`` as one blob with ``k`` copies; print the time and memory as JSON."""
    from disco.ddfs import DDFS
    ddfs = DDFS(master)
    ddfs.list("")  # connected, the master found: not part of the push
    rss0, hwm0 = vm_bytes("VmRSS"), vm_bytes("VmHWM")
    started = time.perf_counter()
    _, sets = ddfs.push(tag, [(path, "bench")], replicas=k)
    seconds = time.perf_counter() - started
    import resource
    print(json.dumps({"seconds": seconds, "rss0": rss0, "hwm0": hwm0, "hwm": vm_bytes("VmHWM"),
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "sets": sets}))


def push_in_child(master: str, path: Path, k: int, tag: str) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--push-child", master, str(path), str(k),
                             tag], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _procs.append(proc)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"bench: the k = {k} push failed ({proc.returncode}): {err[-3000:]}")
    return json.loads(out)


# -- figures 1 and 2: push and read -----------------------------------------------------------


@dataclass
class Row:
    figure: str
    aim: str
    measured: str
    ok: bool | None   # None: no aim judged
    disturbed: bool = False


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)

    def add(self, figure, aim, measured, ok, disturbed=False) -> None:
        self.rows.append(Row(figure, aim, measured, ok, disturbed))


def _proc_table() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, CPU seconds of it, of it and its reaped children)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            own = (int(fields[11]) + int(fields[12])) / _TICK
            table[int(entry)] = (int(fields[1]), own, own + (int(fields[13]) + int(fields[14])) / _TICK)
    return table


def _machine_cpu() -> float:
    """CPU seconds the machine spent in user, nice and system time (not IRQs: loopback)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:4]]
    return sum(ticks) / _TICK


class Foreign:
    """CPU seconds that processes outside this one's tree (other tests, builds) used meanwhile:
    the machine's user and system time minus this process tree's and the kernel threads' (the
    write-back and fsyncs this bench asks for); IRQ time (loopback traffic) is left out."""

    def __init__(self):
        self.enabled = os.path.exists("/proc/stat")
        if self.enabled:
            self.cpu, self.before = _machine_cpu(), _proc_table()

    def seconds(self) -> float:
        if not self.enabled:
            return 0.0
        cpu, after = _machine_cpu() - self.cpu, _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in after.items():
            children.setdefault(ppid, []).append(pid)
        ours, todo = 0.0, [os.getpid()]
        while todo:
            pid = todo.pop()
            ours += after[pid][2] - self.before.get(pid, (0, 0.0, 0.0))[2]
            todo.extend(children.get(pid, ()))
        kernel = sum(own - self.before.get(pid, (0, 0.0, 0.0))[1]
                     for pid, (ppid, own, _) in after.items() if pid == 2 or ppid == 2)
        return max(0.0, cpu - ours - kernel)


def check_disturbed(label: str, foreign: Foreign, started: float) -> bool:
    wall = time.monotonic() - started
    used = foreign.seconds()
    if used > 0.05 * wall * (os.cpu_count() or 1):
        print(f"# WARNING ({label}): other processes used {used:.1f} CPU-s during these "
              f"{wall:.1f} s; the figures are disturbed", file=sys.stderr)
        return True
    return False


def push_and_read(args, tmp: Path, res: Results, env: dict) -> None:
    size = args.mb * MiB
    src, work = tmp / "source", tmp / "plain"
    work.mkdir()
    print(f"# push: writing a {args.mb} MiB source file", file=sys.stderr, flush=True)
    write_source(src, size)
    cluster = Cluster(tmp / "push", 3, env)
    master = cluster.master
    print(f"# push: 3 nodes up, master {master}", file=sys.stderr, flush=True)
    foreign, started = Foreign(), time.monotonic()
    copies: dict[int, list[float]] = {1: [], 3: []}
    pushed: dict[int, list[dict]] = {1: [], 3: []}
    for k in (1, 3):  # interleaved: this disk's speed drifts from minute to minute
        for r in range(args.rounds):
            dsts = [work / f"copy{i}" for i in range(k)]
            copies[k].append(plain_copy(src, dsts))
            for d in dsts:
                d.unlink()
            pushed[k].append(push_in_child(master, src, k, f"bench:push{k}-{r}"))
    disturbed = check_disturbed("push", foreign, started)
    base = {k: mb_s(size, min(t)) for k, t in copies.items()}
    rates = {k: [mb_s(size, p["seconds"]) for p in pushed[k]] for k in pushed}

    def samples(values):
        return "" if len(values) < 2 else " (" + ", ".join(f"{v:.0f}" for v in values) + ")"

    print(f"plain copy + fsync, best of {args.rounds}: {base[1]:.0f} MB/s to 1 file"
          f"{samples([mb_s(size, t) for t in copies[1]])}, {base[3]:.0f} MB/s to 3 files"
          f"{samples([mb_s(size, t) for t in copies[3]])} (read once, {args.mb} MiB each)")
    for k, what in ((1, "1 file"), (3, "3 files")):
        rate = max(rates[k])
        nodes = sorted({u.split("/")[2] for u in pushed[k][0]["sets"][0]})
        also = f", {rate / base[1]:.3f} x the copy to 1 file" if k > 1 else ""
        print(f"push k = {k}, best of {args.rounds}: {args.mb} MiB at {rate:.0f} MB/s"
              f"{samples(rates[k])}; {rate / base[k]:.3f} x the copy to {what}{also} "
              f"(on {', '.join(nodes)})")
        res.add(f"push k={k} (MB/s, x plain copy to {what})", f"ratio >= {PUSH_AIM:g}",
                f"{rate:.0f} vs {base[k]:.0f} = {rate / base[k]:.3f}", rate / base[k] >= PUSH_AIM,
                disturbed)
    every = pushed[1] + pushed[3]
    growth = {k: max(p["hwm"] - p["rss0"] for p in pushed[k]) for k in pushed}
    peak = max(p["hwm"] for p in every)
    print(f"pusher memory: peak RSS (VmHWM) {peak / MiB:.1f} MiB for a {args.mb} MiB file, "
          f"{max(growth.values()) / MiB:.1f} MiB over its RSS before the push (k = 1: "
          f"{growth[1] / MiB:.1f}, k = 3: {growth[3] / MiB:.1f}; getrusage maxrss "
          f"{max(p['maxrss'] for p in every) / MiB:.1f} MiB)")
    res.add("pusher peak RSS (MiB, growth in push)", f"growth <= {RSS_GROWTH_AIM // MiB} MiB",
            f"{peak / MiB:.0f} (+{max(growth.values()) / MiB:.1f}) for {args.mb} MiB",
            max(growth.values()) <= RSS_GROWTH_AIM)

    # -- figure 2: read --
    url = pushed[1][0]["sets"][0][0]
    holder = cluster.node(url.split("/")[2])
    foreign, started = Foreign(), time.monotonic()
    plain, remote, local = read_rounds(src, "bench:push1-0", url, holder, size)
    disturbed = check_disturbed("read", foreign, started)
    p, r, lo = (mb_s(size, t) for t in (plain, remote, local))
    print(f"read, best of {READ_ROUNDS}, from the page cache: plain file {p:.0f} MB/s; "
          f"DDFS.pull from a process without a copy (RemoteFile via {holder.address}) "
          f"{r:.0f} MB/s = {r / p:.3f} x plain; local-file path on the holder {lo:.0f} MB/s = "
          f"{lo / p:.3f} x plain")
    res.add("read remote, ddfs cat (MB/s, x plain read)", f">= {LINE_RATE / 1e6:.0f} MB/s",
            f"{r:.0f} vs {p:.0f} = {r / p:.3f}", r * 1e6 >= LINE_RATE, disturbed)
    res.add("read local path (MB/s, x plain read)", f"ratio >= {LOCAL_READ_AIM:g}",
            f"{lo:.0f} vs {p:.0f} = {lo / p:.3f}", lo / p >= LOCAL_READ_AIM, disturbed)
    if not args.keep:
        stop_all()
        remove_tree(tmp / "push")
        src.unlink()


def read_rounds(src: Path, tag: str, url: str, holder: Node, size: int) -> tuple[float, float, float]:
    """Best seconds of each way of reading: the plain file, ddfs cat's, the local blob path."""
    from disco.ddfs import DDFS
    from mesh.transfer import open_disco
    ddfs = DDFS(holder.address)
    best = [float("inf")] * 3
    for _ in range(READ_ROUNDS):
        t0 = time.perf_counter()
        with open(src, "rb") as f:
            n = read_all(f)
        t1 = time.perf_counter()
        for fd, _, _ in ddfs.pull(tag):
            try:
                n_remote = read_all(fd)
            finally:
                fd.close()
        t2 = time.perf_counter()
        fd, _, _ = open_disco(url, holder.address, holder.data)
        try:
            n_local = read_all(fd)
        finally:
            fd.close()
        t3 = time.perf_counter()
        if not n == n_remote == n_local == size:
            raise SystemExit(f"bench: read {n}, {n_remote}, {n_local} bytes, not {size}")
        best = [min(b, t) for b, t in zip(best, (t1 - t0, t2 - t1, t3 - t2))]
    return best[0], best[1], best[2]


# -- figure 3: repair -------------------------------------------------------------------------


def wall_of(line: dict) -> float:
    try:
        return datetime.datetime.fromisoformat(line["timestamp"]).timestamp()
    except (KeyError, ValueError):
        return float("nan")


def repair(args, tmp: Path, res: Results, env: dict, mbps: float) -> None:
    total = 5 * args.repair_mb * MiB // 3
    n_blobs = max(10, math.ceil(total / (args.blob_mb * MiB)))
    blob = total // n_blobs
    src = tmp / "repair-source"
    write_source(src, blob)
    cluster = Cluster(tmp / "repair", 5, env)
    master = cluster.master
    from disco.ddfs import DDFS
    ddfs = DDFS(master)
    # the ring is the master's view of the writable members: push only once all five are in
    # it, or a member that joins later moves copies (rebalancing) and the copy count is off
    wait_for(lambda: len(ddfs.status()["alive"]) == 5 and len(ddfs.status()["reported"]) == 5,
             60, "the master to see all five nodes")
    print(f"# repair: 5 nodes up, master {master}; pushing {n_blobs} blobs of "
          f"{blob / MiB:.1f} MiB, k = 3", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    ddfs.push("bench:repair", [(src, f"r{i}") for i in range(n_blobs)], replicas=3)
    push_s = time.perf_counter() - t0
    print(f"repair set-up: {n_blobs} blobs x {blob / MiB:.1f} MiB x 3 copies = "
          f"{3 * n_blobs * blob / MiB:.0f} MiB pushed in {push_s:.1f} s "
          f"({mb_s(n_blobs * blob, push_s):.0f} MB/s of blobs)")

    def steady() -> bool:
        st = ddfs.status()
        # more than 3 copies of a blob happen when a member looked dead for a moment during
        # the push (a loaded box): the extra goes only after the GC delay, and does no harm
        return (st["blobs"] == n_blobs and st["copies"] >= 3 * n_blobs
                and st["under_replicated"] == 0 and st["repairs_in_flight"] == 0)

    try:
        wait_for(steady, 60, "the pushed blobs were not all seen at 3 copies")
    except SystemExit:
        print(f"# the master's view: {ddfs.status()}", file=sys.stderr)
        raise
    before = {n.address: n.blob_bytes() for n in cluster.nodes}
    victim = max((n for n in cluster.nodes if n.address != master),
                 key=lambda n: sum(before[n.address].values()))
    lost = sum(before[victim.address].values())
    survivors = [n for n in cluster.nodes if n is not victim]
    alive = {n.address for n in survivors}
    held = ", ".join(f"{sum(b.values()) / MiB:.0f}" for b in before.values())
    print(f"before the kill: MiB of blobs per node {held}; victim {victim.address} holds "
          f"{len(before[victim.address])} copies, {lost / MiB:.0f} MiB", flush=True)

    timeline: dict[str, float] = {}
    foreign = Foreign()
    kill_wall, kill_t = time.time(), time.monotonic()
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    floor_s = lost / (len(survivors) * mbps * MiB)
    timeout = max(180.0, 4 * floor_s + 60)

    def note(what: str) -> None:
        timeline.setdefault(what, time.monotonic() - kill_t)

    while time.monotonic() - kill_t < timeout:
        st = try_ddfs(ddfs.status)
        sets = try_ddfs(lambda: ddfs.blobs("bench:repair"))
        if st is not None:
            if victim.address not in st["alive"]:
                note("dead")
            if st["repairs_in_flight"]:
                note("in_flight")
            copies_ok = ("dead" in timeline and st["under_replicated"] == 0
                         and st["copies"] >= 3 * n_blobs)
            if copies_ok:
                note("copies")
            if sets is not None and "dead" in timeline:
                retagged = len(sets) == n_blobs and all(
                    len(s) == 3 and len({u.split("/")[2] for u in s}) == 3
                    and all(u.split("/")[2] in alive for u in s) for s in sets)
                if retagged:
                    note("tags")
                if retagged and copies_ok:
                    note("done")
                    break
        time.sleep(POLL_S)
    if "done" in timeline:  # copies the planner still orders after (rebalancing) count too
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < SETTLE_S and time.monotonic() - kill_t < timeout:
            st = try_ddfs(ddfs.status)
            if st is None or st["repairs_in_flight"] or st["retags_in_flight"]:
                quiet_since = time.monotonic()
            time.sleep(POLL_S)
        timeline["settled"] = quiet_since - kill_t
    disturbed = check_disturbed("repair", foreign, kill_t)
    time.sleep(0.5)  # the last log lines
    report_repair(res, cluster.node(master), victim, survivors, before, lost, kill_wall,
                  timeline, mbps, floor_s, timeout, disturbed)


def try_ddfs(call):
    try:
        return call()
    except Exception:  # noqa: BLE001 - the master busy or a request timed out: poll again
        return None


def report_repair(res, master, victim, survivors, before, lost, kill_wall, timeline, mbps,
                  floor_s, timeout, disturbed) -> None:
    after = {n.address: n.blob_bytes() for n in survivors}
    per_node = {n.address: sum(after[n.address].values()) - sum(before[n.address].values())
                for n in survivors}
    copied = sum(per_node.values())
    logged, first_store, last_store, failures = 0, None, None, 0
    for n in survivors:
        for line in n.log_lines():
            if wall_of(line) < kill_wall:
                continue
            if line.get("event") == "blob_copy_stored":
                logged += int(line.get("bytes", 0))
                t = wall_of(line) - kill_wall
                first_store = t if first_store is None else min(first_store, t)
                last_store = t if last_store is None else max(last_store, t)
            elif line.get("event") == "blob_copy_source_failed":
                failures += 1
    events = {}
    orders, rebalanced = 0, 0
    for line in master.log_lines():
        t = wall_of(line) - kill_wall
        if t < 0:
            continue
        ev = line.get("event", "")
        if ev in ("member_suspect", "member_dead") and line.get("member") == victim.address:
            events.setdefault(ev, t)
        elif ev == "blob_repair":
            orders += 1
            rebalanced += int(line.get("sources", 0)) >= 3  # it had k live copies already
            events.setdefault("first blob_repair", t)
            events["last blob_repair"] = t
        elif ev == "blob_copied":
            events["last blob_copied"] = t
        elif ev == "blob_copy_failed":
            failures += 1
    started = events.get("first blob_repair", timeline.get("in_flight"))
    done = timeline.get("done")
    ratio = copied / lost if lost else float("nan")

    def fmt(t):
        return "-" if t is None else f"{t:.2f} s"

    print(f"repair after kill -9 of {victim.address} (DDFS_REPAIR_MBPS = {mbps:g}, per node):")
    print(f"  master log: suspect {fmt(events.get('member_suspect'))}, dead "
          f"{fmt(events.get('member_dead'))}, first copy ordered "
          f"{fmt(events.get('first blob_repair'))}, last ordered "
          f"{fmt(events.get('last blob_repair'))} ({orders} orders, {rebalanced} of them of "
          f"blobs at 3 live copies already: rebalancing), last copy done "
          f"{fmt(events.get('last blob_copied'))}")
    print(f"  survivors' logs: first copy stored {fmt(first_store)}, last {fmt(last_store)}; "
          f"{failures} failed copies or sources")
    print(f"  polled: victim dead in status {fmt(timeline.get('dead'))}, repairs in flight "
          f"{fmt(timeline.get('in_flight'))}, every blob at 3 live copies "
          f"{fmt(timeline.get('copies'))}, every tag URL on an alive node "
          f"{fmt(timeline.get('tags'))}, all done {fmt(done)}, nothing in flight from "
          f"{fmt(timeline.get('settled'))}"
          + ("" if done is not None else f" (NOT DONE after {timeout:.0f} s)"))
    spread = ", ".join(f"{b / MiB:.0f}" for b in per_node.values())
    busiest = max(per_node.values()) if per_node else 0
    print(f"  bytes: lost {lost / MiB:.1f} MiB; copied {copied / MiB:.1f} MiB on the survivors' "
          f"volumes ({spread} MiB each), {logged / MiB:.1f} MiB in blob_copy_stored lines; "
          f"copied/lost {ratio:.3f}")
    rate = mbps * MiB
    survivors_n = len(survivors)
    budget = max(0.0, DONE_AIM_S - (events.get("member_dead") or 0.0) - 1.0)
    print(f"  DDFS_REPAIR_MBPS = {mbps:g}: each node copies at most {mbps:g} MiB/s (after a "
          f"burst of {mbps:g} MiB), {mbps * survivors_n:g} MiB/s over {survivors_n} survivors, so "
          f"the {lost / MiB:.0f} MiB lost need >= {floor_s:.1f} s of copying spread evenly; the "
          f"busiest survivor copied {busiest / MiB:.0f} MiB: >= "
          f"{max(0.0, busiest - rate) / rate:.1f} s. Within the {DONE_AIM_S:g} s aim (less "
          f"detection and a plan period, {budget:.0f} s of copying) this rate repairs a node "
          f"holding up to about {budget * rate * survivors_n / 2**30:.1f} GiB with "
          f"{survivors_n} survivors, {budget * rate / 2**30:.1f} GiB per survivor")
    dead, copies = events.get("member_dead"), timeline.get("copies")
    if None not in (started, dead, copies, done):
        print(f"  where the time went: detection (kill to member_dead) {dead:.1f} s, to the "
              f"first order (the planner runs once a second) {started - dead:.1f} s, copying "
              f"(to every blob at 3 live copies) {copies - started:.1f} s, retagging (to every "
              f"tag URL on an alive node) {done - copies:.1f} s")
    res.add("repair started after kill -9 (s)", f"<= {START_AIM_S:g} s", fmt(started),
            started is not None and started <= START_AIM_S, disturbed)
    res.add("repair done: 3 live copies, tags on alive (s)", f"<= {DONE_AIM_S:g} s",
            fmt(done) if done is not None else f"not done in {timeout:.0f} s",
            done is not None and done <= DONE_AIM_S, disturbed)
    res.add("repair bytes copied / bytes lost", f"<= {COPIED_AIM:g} (>= 1)",
            f"{copied / MiB:.0f} / {lost / MiB:.0f} MiB = {ratio:.3f}",
            1.0 <= ratio <= COPIED_AIM)


# -- main -------------------------------------------------------------------------------------


def needed_bytes(args, skip: set) -> int:
    push = 0 if "push" in skip else (1 + 4 * args.rounds) * args.mb * MiB  # source, blobs
    rep = 0 if "repair" in skip else 6 * args.repair_mb * MiB + args.blob_mb * MiB  # 5 + repair
    return (push + rep if args.keep else max(push, rep)) + SLACK


def print_table(res: Results) -> None:
    w = max([len(r.figure) for r in res.rows] + [6])
    wa = max([len(r.aim) for r in res.rows] + [6])
    wm = max([len(r.measured) for r in res.rows] + [8])
    print()
    print(f"{'figure':<{w}}  {'target':<{wa}}  {'measured':<{wm}}  ok")
    print(f"{'-' * w}  {'-' * wa}  {'-' * wm}  ----")
    for r in res.rows:
        verdict = "-" if r.ok is None else ("ok" if r.ok else "MISS")
        print(f"{r.figure:<{w}}  {r.aim:<{wa}}  {r.measured:<{wm}}  {verdict}"
              + ("  [DISTURBED]" if r.disturbed else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, help="MiB pushed and read (default 1024, --quick 32)")
    ap.add_argument("--repair-mb", type=int,
                    help="MiB of blobs per node for the repair (default 1024, --quick 32)")
    ap.add_argument("--blob-mb", type=int, help="MiB per repair blob (default 64, --quick 8)")
    ap.add_argument("--repair-mbps", type=float,
                    help="DDFS_REPAIR_MBPS for the daemons (default: the environment's, else 64)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs of each plain copy and push, the best kept (default 2)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--keep", action="store_true", help="leave the data dirs")
    ap.add_argument("--skip", default="", help="comma-separated: push (figures 1 and 2), repair")
    ap.add_argument("--push-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.push_child:
        master, path, k, tag = args.push_child
        push_child(master, path, int(k), tag)
        return 0
    small = args.quick
    args.mb = args.mb if args.mb is not None else (32 if small else 1024)
    args.repair_mb = args.repair_mb if args.repair_mb is not None else (32 if small else 1024)
    args.blob_mb = args.blob_mb if args.blob_mb is not None else (8 if small else 64)
    skip = set(filter(None, args.skip.split(",")))
    if min(args.mb, args.repair_mb, args.blob_mb, args.rounds) < 1:
        ap.error("--mb, --repair-mb, --blob-mb and --rounds must be at least 1")
    env = {}
    if args.repair_mbps is not None:
        env["DDFS_REPAIR_MBPS"] = f"{args.repair_mbps:g}"
    mbps = float(env.get("DDFS_REPAIR_MBPS") or os.environ.get("DDFS_REPAIR_MBPS")
                 or DEFAULT_REPAIR_MBPS)

    base = Path(tempfile.gettempdir())
    need, free = needed_bytes(args, skip), shutil.disk_usage(base).free
    if need > free:
        print(f"bench: not enough disk: about {need / 2**30:.1f} GiB needed under {base}, "
              f"{free / 2**30:.1f} GiB free; use smaller --mb / --repair-mb", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-ddfs-", dir=base))
    print(f"# data under {tmp} ({need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free), "
          f"{os.cpu_count()} CPUs; --mb {args.mb} --repair-mb {args.repair_mb} "
          f"--blob-mb {args.blob_mb}, DDFS_REPAIR_MBPS {mbps:g}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = Results()
    try:
        if "push" not in skip:
            push_and_read(args, tmp, res, env)
            stop_all()
        if "repair" not in skip:
            repair(args, tmp, res, env, mbps)
    finally:
        stop_all()
        if args.keep:
            print(f"# data left in {tmp}", file=sys.stderr)
        else:
            remove_tree(tmp)
    print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
