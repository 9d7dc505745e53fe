"""Many tiny tasks: tasks per second and the master's memory per task, on one node.

Usage: .venv/bin/python bench/tasks.py [--sizes 1000,10000,100000] [--slots 2]

Starts an embedded node (``local:--slots``: a real node daemon, which is also the master) and
runs one map-only job of N ``raw://`` inputs with a trivial map for each N in ``--sizes``, one
after another on the same node. For each job it prints the tasks per second from ``run()`` to
``wait()`` returning, and how much the daemon's resident memory (VmRSS, read from ``/proc``)
grew while the job ran and was still held (before ``purge()``), in bytes per task. The last line
compares the per-task growth of the largest job with the smaller ones': memory that grows
linearly with the tasks gives about the same bytes per task at every size (a ratio near 1.0;
allocator noise makes small jobs read high), and the target is that the master stays modest
(a few KiB per task). Memory is measured after each job's purge too, to show whether the node
gives it back to its allocator for the next job (Python rarely returns it to the OS).

A ``# WARNING`` line says other processes used over 5 % of the machine meanwhile (the figures
are then disturbed); see bench/wordcount.py, whose check this shares.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from disco import embedded  # noqa: E402
from disco.core import Job  # noqa: E402

_spec = importlib.util.spec_from_file_location("wordcount", Path(__file__).with_name("wordcount.py"))
_wordcount = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_wordcount)
Foreign, warn_if_disturbed = _wordcount.Foreign, _wordcount.warn_if_disturbed


def trivial_map(entry, params):
    yield entry, 1


def rss(pid: int) -> int:
    """Resident bytes of process ``pid``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def one_job(master: str, pid: int, n: int) -> tuple[float, int, int]:
    """(tasks/s, daemon RSS growth while the job was held, RSS after its purge - before)."""
    before = rss(pid)
    urls = [f"raw://t{i}" for i in range(n)]
    foreign = Foreign()
    t0 = time.perf_counter()
    job = Job(master=master).run(input=urls, map=trivial_map, name=f"bench_tasks_{n}")
    results = job.wait()
    wall = time.perf_counter() - t0
    disturbed = warn_if_disturbed(f"{n} tasks", foreign, wall)
    if len(results) != n:
        sys.exit(f"FAIL: {n} tasks gave {len(results)} results")
    held = rss(pid)
    job.purge()
    deadline = time.monotonic() + 30
    while any(j["job"] == job.name for j in job.disco.jobs()):  # until the purge has committed
        if time.monotonic() > deadline:
            sys.exit(f"FAIL: {job.name} was still listed 30 s after its purge")
        time.sleep(0.05)
    after = rss(pid)
    print(f"({n} tasks) {n / wall:.0f} tasks/s, wall {wall:.2f} s; master RSS "
          f"{before / 2**20:.1f} -> {held / 2**20:.1f} MiB while held "
          f"({(held - before) / n:.0f} B/task), {after / 2**20:.1f} MiB after purge"
          + (" [DISTURBED]" if disturbed else ""))
    return n / wall, held - before, after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="tasks per job, comma-separated (default 1000,10000,100000)")
    parser.add_argument("--slots", type=int, default=2, help="task slots of the node (default 2)")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes takes whole numbers, e.g. 1000,10000; not {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        parser.error("--sizes needs at least one size of 1 or more")
    master = embedded.cluster(args.slots)
    pid = next(e.proc.pid for e in embedded._clusters.values() if e.address == master)
    Job(master=master).run(input=["raw://warm"], map=trivial_map, name="bench_tasks_warm").wait()
    print(f"# node {master} (pid {pid}), {args.slots} slots, RSS {rss(pid) / 2**20:.1f} MiB "
          "after one warm-up job", file=sys.stderr)
    per_task = {}
    for n in sizes:
        _, grown, _ = one_job(master, pid, n)
        per_task[n] = grown / n
    big = max(sizes)
    others = [n for n in sizes if n != big and per_task[n] > 0]
    if others:
        ref = max(others)
        print(f"(memory) {big} tasks: {per_task[big]:.0f} B/task held by the master; "
              f"{ref} tasks: {per_task[ref]:.0f} B/task; ratio {per_task[big] / per_task[ref]:.2f} "
              "(about 1.0: linear)")


if __name__ == "__main__":
    main()
