"""Ring figures: replica balance, movement on a join and on a loss, build and lookup time.

For N in 5, 10, 20, 50, 100 nodes (``node-0`` .. ``node-{N-1}``), ``--keys`` keys
(``blob-0``, ``blob-1``, ...) get ``--k`` replicas each on ``storage.ring.Ring``. Printed per N:

- load max/mean: the most replica assignments on one node over the mean (aim <= 1.10);
- join: ``node-N`` joins; moved = the sum over keys of |new set - old set|, as a fraction of
  the k * keys assignments, over the ideal 1/(N+1) (the new node's fair share) (aim <= 1.10);
- loss: ``node-0`` leaves; moved over the assignments it held (ideally exactly 1.0: each of its
  keys gets one replacement and nothing else moves);
- build: the time to build the N-node ring (aim: well under 1 s at N = 100);
- µs/call: the mean time of one ``replicas(key, k)`` (aim: well under 50 µs at N = 100).

    python bench/ring.py [--keys 100000] [--k 3] [--vnodes 1024]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.ring import DEFAULT_VNODES, Ring  # noqa: E402

SIZES = (5, 10, 20, 50, 100)
LOAD_AIM, JOIN_AIM, LOSS_AIM, BUILD_AIM_MS, CALL_AIM_US = 1.10, 1.10, 1.0, 1000.0, 50.0


def place(ring: Ring, keys: list[str], k: int) -> tuple[list[frozenset], float]:
    """Every key's replica set, and the mean µs of one replicas() call."""
    started = time.perf_counter()
    lists = [ring.replicas(key, k) for key in keys]
    elapsed = time.perf_counter() - started
    return [frozenset(r) for r in lists], elapsed / len(keys) * 1e6


def build(nodes: list[str], vnodes: int) -> tuple[Ring, float]:
    started = time.perf_counter()
    ring = Ring(nodes, vnodes=vnodes)
    return ring, (time.perf_counter() - started) * 1000


def load_ratio(sets: list[frozenset], nodes: list[str]) -> float:
    load = dict.fromkeys(nodes, 0)
    for replicas in sets:
        for node in replicas:
            load[node] += 1
    return max(load.values()) / (sum(load.values()) / len(nodes))


def moved(old: list[frozenset], new: list[frozenset]) -> int:
    return sum(len(b - a) for a, b in zip(old, new))


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def measure(n: int, keys: list[str], k: int, vnodes: int) -> dict:
    nodes = [f"node-{i}" for i in range(n)]
    ring, build_ms = build(nodes, vnodes)
    old, call_us = place(ring, keys, k)
    joined, _ = place(Ring(nodes + [f"node-{n}"], vnodes=vnodes), keys, k)
    left, _ = place(Ring(nodes[1:], vnodes=vnodes), keys, k)
    ideal_join = len(keys) * min(k, n + 1) / (n + 1)  # the new node's fair share
    lost = sum(1 for replicas in old if nodes[0] in replicas)
    return {"load": load_ratio(old, nodes), "join": moved(old, joined) / ideal_join,
            "loss": moved(old, left) / lost if lost and n - 1 >= k else None,
            "build_ms": build_ms, "call_us": call_us}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--k", type=int, default=3, help="replicas per key")
    ap.add_argument("--vnodes", type=int, default=DEFAULT_VNODES)
    args = ap.parse_args()
    if args.keys < 1 or args.k < 1:
        ap.error("--keys and --k must be at least 1")
    keys = [f"blob-{i}" for i in range(args.keys)]
    print(f"{args.keys} keys, k = {args.k}, vnodes = {args.vnodes}")
    print(f"{'N':>4}  {'load max/mean':>20}  {'join moved/ideal':>20}  {'loss moved/lost':>20}  "
          f"{'build ms':>16}  {'µs/replicas()':>16}")
    print(f"{'':>4}  {'aim <= 1.10':>20}  {'aim <= 1.10':>20}  {'aim = 1.00':>20}  "
          f"{'aim < 1000':>16}  {'aim < 50':>16}")
    for n in SIZES:
        r = measure(n, keys, args.k, args.vnodes)
        loss = ("n/a (N - 1 < k)" if r["loss"] is None else
                f"{r['loss']:.3f} {verdict(abs(r['loss'] - LOSS_AIM) < 1e-9)}")
        print(f"{n:>4}  {r['load']:>15.3f} {verdict(r['load'] <= LOAD_AIM):>4}  "
              f"{r['join']:>15.3f} {verdict(r['join'] <= JOIN_AIM):>4}  {loss:>20}  "
              f"{r['build_ms']:>11.1f} {verdict(r['build_ms'] < BUILD_AIM_MS):>4}  "
              f"{r['call_us']:>11.2f} {verdict(r['call_us'] < CALL_AIM_US):>4}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
