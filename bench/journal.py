"""Journal figures: its size after many jobs, and how long a new master's take-over takes.

Drives one real node core (``mesh.node``, the founder and only voter) with its real journal
(``mesh.journal``, fsynced files in a temporary directory): N one-task jobs are submitted,
finished and (unless ``--keep``) purged. Then the process "dies" (the core is dropped, as by
kill -9: only what the journal fsynced survives), a new core loads the journal and takes over.

Printed: the journal directory's size (bounded by snapshots, not by N), the time to load it,
and the take-over (building the job table from the journal state) against the aim of well
under 1 s.

    python bench/journal.py --jobs 10000            # submitted and purged
    python bench/journal.py --jobs 10000 --keep     # submitted and kept (a long job history)
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh import event as ev  # noqa: E402
from mesh import message as m  # noqa: E402
from mesh import raft as rf  # noqa: E402
from mesh.datadir import digest_of  # noqa: E402
from mesh.journal import Journal  # noqa: E402
from mesh.node import Node  # noqa: E402

PY = "3.11"


class Driver:
    def __init__(self, data: Path, **cfg):
        self.journal = Journal(data)
        self.cfg = ev.NodeConfig(name="a", address="127.0.0.1:9000", python=PY, **cfg)
        self.node = Node(self.cfg, self.journal.load(), random.Random(1))
        self.now = 0.0

    def step(self, event) -> list:
        """As the daemon: journal writes, and a stored pack's acknowledgement stepped in turn."""
        out = self.node.step(self.now, event)
        for action in list(out):
            if isinstance(action, rf.Persist):
                self.journal.persist(action)
            elif isinstance(action, ev.StoreJobpack) and isinstance(action.then, ev.Request):
                out += self.step(action.then)
        return out

    def until_master(self) -> float:
        started = time.perf_counter()
        while not self.node.is_master:
            self.now += 0.1
            self.step(ev.Tick())
        return time.perf_counter() - started


def run_jobs(d: Driver, jobs: int, keep: bool) -> int:
    """Returns the journal directory's largest size along the way."""
    peak = 0
    header = {"inputs": ["raw://x"], "partitions": 1, "has_map": True, "has_reduce": False}
    for i in range(jobs):
        pack = msgpack.packb({"header": header, "code": b"c%d" % i}, use_bin_type=True)
        msg = m.SubmitJob(rid=i, prefix="J", jobpack=pack, python=PY, token=f"t{i}")
        out = d.step(ev.Submission(b"c", msg, header, digest_of(pack))) + d.step(ev.Flush())
        job = next(a.body["job"] for a in out if isinstance(a, ev.Reply))
        task = next(a.task for a in out if isinstance(a, ev.StartTask))
        d.step(ev.LocalReport(task, "done", {"outputs": [{"label": 0, "url": "u", "size": 1}]}))
        d.step(ev.Flush())
        d.step(ev.Flush())
        if not keep:
            d.step(ev.Request(b"c", m.PurgeJob(rid=i, job=job)))
            d.step(ev.Flush())
        if i % 50 == 0 or i == jobs - 1:
            peak = max(peak, d.journal.size_bytes())
        if i % 2000 == 1999:
            print(f"  {i + 1} jobs, journal {d.journal.size_bytes()} bytes", flush=True)
    return peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--keep", action="store_true", help="do not purge the jobs")
    ap.add_argument("--compact-every", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Driver(Path(tmp), compact_every=args.compact_every)
        d.until_master()
        started = time.perf_counter()
        peak = run_jobs(d, args.jobs, args.keep)
        elapsed = time.perf_counter() - started
        size = d.journal.size_bytes()
        entries = d.node.raft.last_index()
        kept = d.node.raft.entries_since_snapshot()
        d.journal.close()
        del d  # kill -9: nothing but the fsynced journal survives
        t0 = time.perf_counter()
        journal = Journal(Path(tmp))
        state = journal.load()
        load_s = time.perf_counter() - t0
        cfg = ev.NodeConfig(name="a", address="127.0.0.1:9000", python=PY,
                            compact_every=args.compact_every)
        t1 = time.perf_counter()
        node = Node(cfg, state, random.Random(2))
        build_s = time.perf_counter() - t1
        now, t2 = 0.0, time.perf_counter()
        while not node.is_master:
            now += 0.1
            for action in node.step(now, ev.Tick()):
                if isinstance(action, rf.Persist):
                    journal.persist(action)
        takeover_s = time.perf_counter() - t2
        what = "submitted and kept" if args.keep else "submitted and purged"
        print(f"{args.jobs} jobs {what} in {elapsed:.1f} s ({args.jobs / elapsed:.0f} jobs/s, "
              f"every entry fsynced)")
        print(f"journal: {size} bytes on disk for {entries} entries, {kept} kept "
              f"after the last snapshot; at most {peak / 1024:.0f} KiB along the way")
        print(f"restart: load {load_s * 1000:.1f} ms + state {build_s * 1000:.1f} ms + "
              f"take-over {takeover_s * 1000:.1f} ms = "
              f"{(load_s + build_s + takeover_s) * 1000:.1f} ms (aim: well under 1000 ms); "
              f"{len(node.table.jobs)} jobs in the new master's table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
