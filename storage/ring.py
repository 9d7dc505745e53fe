"""DDFS placement: which nodes hold a blob's replicas, as a pure consistent-hash ring.

Theory of operation (Karger et al., "Consistent Hashing and Random Trees", 1997; the virtual
nodes of Dynamo, DeCandia et al., 2007)
-------------------------------------------------------------------------------------------
The ring is the 64-bit hash space [0, 2**64) closed into a circle. Each node owns ``count``
points on it, its virtual nodes: point ``i`` of ``node`` is ``xxh3_64(f"{node}#{i}")`` (UTF-8)
for ``i`` in ``0 .. count-1``. The decomposition of that string is unique (``i`` is digits
only, so the last ``#`` splits it), so two nodes never share a point string, whatever their
names. ``count`` is ``vnodes`` (default ``DEFAULT_VNODES``), scaled by the node's weight:
``max(1, round(vnodes * weight))``; weight 1.0 is ``vnodes``, and since a node's points are a
prefix of one sequence, changing its weight only adds or removes points of that node.

A key sits at ``key_hash(key) = xxh3_64(key)`` (UTF-8). Its replicas are found by walking
clockwise from there: the first point at or after the key's hash (wrapping past 2**64 to the
smallest point), then the following points, keeping each node the first time it is met, until
``k`` distinct nodes are found (or every node is, if the ring has fewer). Equivalently: the
nodes sorted by the clockwise distance from the key to their nearest point, the first ``k``.
The points are one sorted list (ties, which need a 64-bit collision, are broken by node name),
found with ``bisect``: a lookup is O(log P) plus a few steps, P = total points. The walk's
length grows with ``k`` and with how rare the last node needed is (a node of tiny weight may be
a lap away), so for ``k`` above half the nodes a lookup ranks every node by its distance
instead (one ``bisect`` into each node's own sorted points, O(N log P)); both give the same list.

    replicas(key, k) == replicas(key, k + 1)[:k]          (a longer list only extends)

Movement, which follows from the walk (and is what the tests check):

- a node joins: each key's new list is its old list with the new node inserted somewhere (and
  the last one dropped), or unchanged; only replica assignments *onto* the new node move, and
  they are its share of the ring, about k/(N+1) of them;
- a node leaves: only keys whose list held it change, each gains exactly one node (the next
  distinct node clockwise) and keeps the others, so moved / lost assignments is exactly 1.0.

The same node set (and weights and vnodes) always gives the same placement, whatever the order
or repetition of the names given: the ring depends only on the set. A ``Ring`` is an immutable
value; a change of membership is a new ``Ring``.

Balance, and the choice of ``DEFAULT_VNODES`` (measured, bench/ring.py and the exact arc
shares of 10 sets of node names, k = 3)
------------------------------------------------------------------------------------------
A node's share of the ring is a sum of ~k * count random arcs, so its relative spread is about
1 / sqrt(k * count) and the most loaded of N nodes sits a few spreads above the mean. Expected
replica-load max/mean from the arcs alone (no key sampling), mean over the 10 name sets at
N = 100 (worst of the 10 in brackets), and the time to build a 100-node ring:

    vnodes    max/mean N=100      build, 100 nodes
    128       1.140 (1.170)          8 ms
    256       1.091 (1.121)         18 ms
    512       1.067 (1.093)         39 ms
    1024      1.050 (1.063)         90 ms
    2048      1.032 (1.041)        211 ms

Placing 100,000 keys adds sampling noise on top (at N = 100 each node holds ~3,000
assignments, +-1.8 %, about 1.045 max/mean from sampling alone). The target is max/mean <= 1.10
with that noise included. With 100,000 keys on the same 10 name sets at N = 100, 512 vnodes
gave 1.068 .. 1.106 (one miss) and 1024 gave 1.059 .. 1.088, so ``DEFAULT_VNODES = 1024``: the
build stays well under 1 s (~0.1 s) and ~100,000 points (a few MB) for 100 nodes, and a lookup
costs ~1.5 us. Plain virtual nodes reach the target, so none of the costlier techniques is
used: bounded-load hashing needs the live loads, so it is not a pure function of the node set;
multi-probe and rendezvous hashing pay several hashes, or N, per lookup instead of one.

Invariants (``check_invariants``): the points are sorted with their owners beside them; every
node has ``vnode_count`` points, owns no others, and its own sorted list holds exactly those.
"""
from __future__ import annotations

import math
import operator
from bisect import bisect_left
from collections.abc import Iterable, Mapping

from xxhash import xxh3_64_intdigest

DEFAULT_VNODES = 1024
_SPACE = 1 << 64


def key_hash(key: str) -> int:
    """A key's place on the ring: xxh3_64 of its UTF-8 bytes."""
    return xxh3_64_intdigest(key.encode("utf-8"))


def point_hash(node: str, i: int) -> int:
    """The place of ``node``'s virtual node ``i``."""
    return xxh3_64_intdigest(f"{node}#{i}".encode("utf-8"))


def vnode_count(vnodes: int, weight: float = 1.0) -> int:
    """How many points a node of ``weight`` gets: at least one, whatever its weight."""
    return max(1, round(vnodes * weight))


def _check_nodes(nodes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(nodes, (str, bytes)):
        raise TypeError("nodes must be an iterable of names, not one name")
    names = set(nodes)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"a node name must be a str, not {type(name).__name__}")
        if not name:
            raise ValueError("a node name must not be empty")
    return tuple(sorted(names))


def _check_vnodes(vnodes: int) -> int:
    if isinstance(vnodes, bool) or not isinstance(vnodes, int):
        raise TypeError(f"vnodes must be an int, not {type(vnodes).__name__}")
    if vnodes < 1:
        raise ValueError(f"vnodes must be at least 1, not {vnodes}")
    return vnodes


def _check_weights(weights: Mapping[str, float] | None, nodes: tuple[str, ...]) -> dict[str, float]:
    """Every node's weight (1.0 unless given); a weight must be finite and above 0."""
    given = dict(weights or {})
    unknown = set(given) - set(nodes)
    if unknown:
        raise ValueError(f"weights for nodes not in the ring: {sorted(unknown)!r}")
    for node, weight in given.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"weight of {node!r} must be a number, not {type(weight).__name__}")
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weight of {node!r} must be finite and above 0, not {weight!r}")
    return {node: float(given.get(node, 1.0)) for node in nodes}


def _points(counts: Mapping[str, int]) -> tuple[list[int], list[str]]:
    """The sorted point hashes, and beside each the node it belongs to."""
    pairs = sorted((point_hash(node, i), node) for node, count in counts.items()
                   for i in range(count))
    return [point for point, _ in pairs], [node for _, node in pairs]


class Ring:
    """Consistent-hash placement over a fixed set of nodes (see the module docstring)."""

    def __init__(self, nodes: Iterable[str], vnodes: int = DEFAULT_VNODES,
                 weights: Mapping[str, float] | None = None):
        self.nodes: tuple[str, ...] = _check_nodes(nodes)
        self.vnodes: int = _check_vnodes(vnodes)
        self.weights: dict[str, float] = _check_weights(weights, self.nodes)
        self.counts: dict[str, int] = {node: vnode_count(self.vnodes, self.weights[node])
                                       for node in self.nodes}
        self._members = frozenset(self.nodes)
        self._points, self._owners = _points(self.counts)
        self._by_node: dict[str, list[int]] = {node: [] for node in self.nodes}
        for point, node in zip(self._points, self._owners):
            self._by_node[node].append(point)  # in ring order, so each list is sorted

    def replicas(self, key: str, k: int) -> list[str]:
        """The first ``k`` distinct nodes clockwise of ``key_hash(key)``, nearest first; all
        nodes if the ring has fewer than ``k``; [] for an empty ring or ``k == 0``."""
        k = operator.index(k)
        if k < 0:
            raise ValueError(f"k must not be negative, not {k}")
        want = min(k, len(self.nodes))
        if not want:
            return []
        if want > len(self.nodes) // 2:
            return self._rank(key_hash(key))[:want]
        return self._walk(key_hash(key), want)

    def _walk(self, h: int, want: int) -> list[str]:
        """The ring walk from ``h`` until ``want`` distinct nodes are met: a few steps for a
        small ``want``. Ends within one lap: each node has a point and want <= nodes."""
        points, owners = self._points, self._owners
        end = len(points)
        i = bisect_left(points, h)
        found: list[str] = []
        while True:
            if i == end:
                i = 0
            node = owners[i]
            if node not in found:
                found.append(node)
                if len(found) == want:
                    return found
            i += 1

    def _rank(self, h: int) -> list[str]:
        """Every node, ordered as the walk from ``h`` would meet them: by the clockwise distance
        to its nearest point (then name, as for tied points). O(N log P), whatever the weights."""
        def distance(node: str) -> tuple[int, str]:
            own = self._by_node[node]
            j = bisect_left(own, h)
            return ((own[j] if j < len(own) else own[0]) - h) % _SPACE, node
        return sorted(self.nodes, key=distance)

    def owner(self, key: str) -> str | None:
        """The key's first replica, or None for an empty ring."""
        first = self.replicas(key, 1)
        return first[0] if first else None

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._members

    def __repr__(self) -> str:
        return f"Ring({len(self.nodes)} nodes, vnodes={self.vnodes}, {len(self._points)} points)"

    def check_invariants(self) -> None:
        points, owners = self._points, self._owners
        assert len(points) == len(owners) == sum(self.counts.values())
        assert all(a <= b for a, b in zip(points, points[1:])), "points not sorted"
        by_node: dict[str, int] = {}
        for owner in owners:
            by_node[owner] = by_node.get(owner, 0) + 1
        assert by_node == self.counts, "wrong counts"
        for node, own in self._by_node.items():
            assert own == [p for p, o in zip(points, owners) if o == node], node
