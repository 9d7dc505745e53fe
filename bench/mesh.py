"""Mesh figures of issue 4, one line each: failure detection, failover, dissemination, seeds/min.

    .venv/bin/python bench/mesh.py [--rounds 5] [--sim-nodes 1000] [--skip real,sim]

- crash-to-dead: 5 real daemons on loopback; kill -9 one non-master; each survivor's
  ``disco status`` is polled every 50 ms: seconds until it shows the victim dead (target:
  p50 <= 1.5 s, p99 <= 3 s). The victim is restarted between rounds.
- failover: kill -9 of the master; seconds until a survivor names a new master, and until a
  trivial job submitted through a survivor has finished (target: p99 <= 2 s).
- dissemination: ``--sim-nodes`` simulated members (the real membership core), 30 % message
  loss; one member leaves; simulated seconds until every other member shows it left (target
  <= 2 s).
- simulator speed: Raft chaos seeds (5 nodes, loss, partitions, crashes, pauses) per minute of
  one core (target >= 1000).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "sim")]

from disco.client import Connection, answers  # noqa: E402
from disco.embedded import free_port_pair  # noqa: E402
from mesh import membership as mb  # noqa: E402
from mesh import message as m  # noqa: E402


class Cluster:
    def __init__(self, n: int, tmp: Path):
        self.tmp, self.procs, self.ports = tmp, {}, []
        self.ports = [free_port_pair() for _ in range(n)]
        for i in range(n):
            self.start(i)
        self.wait(lambda: all(self.alive_count(p) == n for p in self.ports), 30)

    def start(self, i: int) -> None:
        port = self.ports[i]
        argv = [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--port",
                str(port), "--data", str(self.tmp / f"n{i}"), "--workers", "1"]
        if i:
            argv += ["--join", f"127.0.0.1:{self.ports[0]}"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.procs[i] = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
        while not answers(f"127.0.0.1:{port}", 0.3):
            time.sleep(0.05)

    def kill(self, i: int) -> None:
        os.killpg(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait()

    def status(self, port: int) -> dict | None:
        try:
            return Connection(f"127.0.0.1:{port}", 1.0).request(m.GetStatus)
        except Exception:
            return None

    def alive_count(self, port: int) -> int:
        st = self.status(port)
        return sum(x["state"] == "alive" for x in st["members"]) if st else 0

    def master_index(self) -> int:
        st = self.status(self.ports[0]) or {}
        return next(i for i, p in enumerate(self.ports) if st.get("master") == f"127.0.0.1:{p}")

    @staticmethod
    def wait(predicate, timeout: float) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise SystemExit("bench: cluster did not converge")
            time.sleep(0.05)
        return time.monotonic() - start

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def pct(values: list, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def crash_to_dead(cluster: Cluster, rounds: int) -> list:
    times = []
    for r in range(rounds):
        master = cluster.master_index()
        victim = next(i for i in range(len(cluster.ports)) if i != master and i != (r % 5))
        victim_name = f"127.0.0.1:{cluster.ports[victim]}"
        survivors = [p for i, p in enumerate(cluster.ports) if i != victim]
        cluster.kill(victim)
        start, seen = time.monotonic(), {}
        while len(seen) < len(survivors) and time.monotonic() - start < 15:
            for port in survivors:
                if port in seen:
                    continue
                st = cluster.status(port)
                states = {x["name"]: x["state"] for x in (st or {}).get("members", [])}
                if states.get(victim_name) == "dead":
                    seen[port] = time.monotonic() - start
            time.sleep(0.05)
        times += list(seen.values())
        cluster.start(victim)
        cluster.wait(lambda: all(cluster.alive_count(p) == len(cluster.ports)
                                 for p in cluster.ports), 30)
    return times


def failover(cluster: Cluster, rounds: int) -> tuple[list, list]:
    from disco.core import Job, result_iterator
    named, dispatching = [], []
    for _ in range(rounds):
        master = cluster.master_index()
        old = f"127.0.0.1:{cluster.ports[master]}"
        via = next(p for i, p in enumerate(cluster.ports) if i != master)
        cluster.kill(master)
        start = time.monotonic()

        def new_master(via=via, old=old):
            return (cluster.status(via) or {}).get("master") not in (None, old)

        cluster.wait(new_master, 20)
        named.append(time.monotonic() - start)
        job = Job(master=f"127.0.0.1:{via}").run(input=["raw://x"], map=lambda e, p: [(e, 1)])
        list(result_iterator(job.wait(timeout=60)))
        dispatching.append(time.monotonic() - start)
        cluster.start(master)
        cluster.wait(lambda: all(cluster.alive_count(p) == len(cluster.ports)
                                 for p in cluster.ports), 30)
    return named, dispatching


def dissemination(n: int, loss: float) -> float:
    from swimsim import SwimSim
    sim = SwimSim(0, seed=7, loss=loss)
    names = [f"n{i}" for i in range(n)]
    for name in names:
        sim.add(name)
    for node in sim.nodes.values():  # a converged cluster: everyone knows everyone
        for name in names:
            if name not in node.members:
                node.members[name] = mb.Member(name, name, 1)
                node._by_address[name] = name
        node.heard_from_peer = True
    sim.run(0.5)
    start = sim.now
    sim.leave("n0")
    others = set(names) - {"n0"}
    while sim.now - start < 10:
        sim.run(0.05)
        if all(sim.nodes[o].members["n0"].state == mb.LEFT for o in others):
            return sim.now - start
    return float("inf")


def sim_seeds_per_minute(seconds: float = 15.0) -> float:
    from test_raft_sim import _chaos
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        _chaos(10_000 + n)
        n += 1
    return n / (time.perf_counter() - start) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sim-nodes", type=int, default=1000)
    parser.add_argument("--skip", default="", help="comma-separated: real,sim")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if "real" not in skip:
        with tempfile.TemporaryDirectory(prefix="disco-mesh-bench-") as tmp:
            cluster = Cluster(5, Path(tmp))
            try:
                dead = crash_to_dead(cluster, args.rounds)
                named, dispatching = failover(cluster, args.rounds)
            finally:
                cluster.stop()
        print(f"crash-to-dead, 5 daemons, every survivor ({len(dead)} samples): "
              f"p50 {statistics.median(dead):.2f} s  p99 {pct(dead, 0.99):.2f} s "
              f"(target 1.5 / 3)")
        print(f"failover after kill -9 of the master ({len(named)} rounds): new master named "
              f"p50 {statistics.median(named):.2f} s p99 {pct(named, 0.99):.2f} s; trivial job "
              f"done p50 {statistics.median(dispatching):.2f} s p99 {pct(dispatching, 0.99):.2f} s "
              f"(target p99 2)")
    if "sim" not in skip:
        t = dissemination(args.sim_nodes, 0.3)
        print(f"dissemination of a leave to {args.sim_nodes} simulated members at 30% loss: "
              f"{t:.2f} s simulated (target 2)")
        print(f"simulator: {sim_seeds_per_minute():.0f} Raft chaos seeds per minute of one core "
              f"(target 1000)")


if __name__ == "__main__":
    main()
