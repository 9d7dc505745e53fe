"""The DDFS ring (storage/ring.py): exact placements against an independent oracle, and the
movement guarantees of a join, a loss and a weight change.

The oracle computes what the module docstring promises from xxhash alone: node ``n`` has points
``xxh3_64(f"{n}#{i}")`` for ``i < count``, and a key's replicas are the nodes sorted by the
clockwise distance from ``xxh3_64(key)`` to their nearest point (then by name), the first k.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.ring import DEFAULT_VNODES, Ring, key_hash, point_hash, vnode_count

ROOT = Path(__file__).resolve().parents[2]
SPACE = 1 << 64
FIVE = ["alpha", "beta", "gamma", "delta", "epsilon"]
KEYS = [f"blob-{i}" for i in range(300)] + ["", "zürich", "#", "a#0", "日本"]

names = st.text(alphabet="ab#0é", min_size=1, max_size=4)
node_sets = st.lists(names, max_size=7, unique=True)
small_vnodes = st.integers(1, 6)
keys = st.text(max_size=8)


def h(text: str) -> int:
    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))


def oracle(counts: dict[str, int], key: str, k: int) -> list[str]:
    """The replicas by brute force over every point, as the module docstring defines them."""
    at = h(key)
    nearest = {node: min((h(f"{node}#{i}") - at) % SPACE for i in range(count))
               for node, count in counts.items()}
    return sorted(nearest, key=lambda node: (nearest[node], node))[:k]


def expected_counts(nodes, vnodes, weights=None) -> dict[str, int]:
    weights = weights or {}
    return {node: max(1, round(vnodes * weights.get(node, 1.0))) for node in set(nodes)}


# ---- hashing -------------------------------------------------------------------------------


def test_key_hash_is_xxh3_64_of_the_utf8_bytes():
    for key in ["", "blob-1", "zürich", "日本"]:
        assert key_hash(key) == xxhash.xxh3_64_intdigest(key.encode("utf-8"))
    assert key_hash("zürich") != key_hash("zurich")


def test_point_hash_is_the_documented_scheme():
    assert point_hash("node-1", 0) == h("node-1#0")
    assert point_hash("node-1", 17) == h("node-1#17")
    assert vnode_count(100) == 100 and vnode_count(100, 2.5) == 250
    assert vnode_count(100, 0.001) == 1  # never below one point


def test_a_key_on_a_point_belongs_to_that_point():
    """``a#0`` hashes exactly onto point 0 of node ``a``: the point at *or after* the key's hash
    owns it, so ``a`` is its owner whatever else is on the ring."""
    ring = Ring(FIVE + ["a"], vnodes=8)
    for node in ring.nodes:
        for i in range(8):
            assert ring.owner(f"{node}#{i}") == node


def test_a_key_past_the_last_point_wraps_to_the_first():
    ring = Ring(["x", "y", "z"], vnodes=1)
    points = sorted((h(f"{n}#0"), n) for n in ring.nodes)
    past = next(key for key in (f"k{i}" for i in range(10_000)) if key_hash(key) > points[-1][0])
    assert ring.replicas(past, 3) == [points[0][1], points[1][1], points[2][1]]
    before = next(key for key in (f"k{i}" for i in range(10_000)) if key_hash(key) < points[0][0])
    assert ring.replicas(before, 3) == [points[0][1], points[1][1], points[2][1]]


# ---- exact small cases ---------------------------------------------------------------------


def test_empty_ring():
    ring = Ring([])
    assert ring.nodes == () and len(ring) == 0 and "a" not in ring
    assert ring.replicas("blob", 3) == [] and ring.replicas("blob", 0) == []
    assert ring.owner("blob") is None
    ring.check_invariants()


def test_one_node_holds_everything():
    ring = Ring(["solo"])
    assert ring.nodes == ("solo",) and len(ring) == 1 and "solo" in ring
    for key in KEYS:
        assert ring.replicas(key, 1) == ring.replicas(key, 3) == ["solo"]
        assert ring.owner(key) == "solo"


def test_k_larger_than_the_ring_gives_every_node_once():
    ring = Ring(FIVE, vnodes=16)
    for key in KEYS:
        every = ring.replicas(key, 50)
        assert sorted(every) == sorted(FIVE)
        assert every == oracle(expected_counts(FIVE, 16), key, 50)
        assert ring.replicas(key, 0) == []


def test_replicas_are_distinct_and_a_longer_list_only_extends():
    ring = Ring([f"n{i}" for i in range(12)], vnodes=32)
    for key in KEYS:
        full = ring.replicas(key, 12)
        assert len(set(full)) == 12
        for k in range(13):
            assert ring.replicas(key, k) == full[:k]
        assert ring.owner(key) == full[0]


def test_matches_the_oracle_at_the_default_vnodes():
    ring = Ring(FIVE)
    counts = expected_counts(FIVE, DEFAULT_VNODES)
    assert ring.counts == counts
    for key in KEYS[:40]:
        assert ring.replicas(key, 3) == oracle(counts, key, 3)


def test_placements_are_pinned():
    """A change of scheme would move every blob of a live cluster: these must never change."""
    ring = Ring(FIVE)
    assert ring.replicas("blob-0", 3) == ["beta", "alpha", "epsilon"]
    assert ring.replicas("blob-1", 3) == ["delta", "alpha", "beta"]
    assert ring.replicas("blob-2", 3) == ["gamma", "beta", "epsilon"]
    assert ring.replicas("zürich", 3) == ["beta", "epsilon", "delta"]
    weighted = Ring(["alpha", "beta", "gamma"], vnodes=4, weights={"beta": 2.0})
    assert weighted.replicas("blob-0", 3) == ["gamma", "alpha", "beta"]
    assert weighted.replicas("blob-1", 3) == ["beta", "gamma", "alpha"]


def test_the_same_set_in_any_order_gives_the_same_placement():
    nodes = [f"host{i}.example:8989" for i in range(9)]
    base = Ring(nodes, vnodes=64)
    for order in (list(reversed(nodes)), nodes[3:] + nodes[:3], nodes + nodes[:4]):
        other = Ring(iter(order), vnodes=64)
        assert other.nodes == tuple(sorted(nodes)) == base.nodes
        assert all(other.replicas(key, 3) == base.replicas(key, 3) for key in KEYS)


def test_membership_and_length():
    ring = Ring(["b", "a", "b", "c"])
    assert ring.nodes == ("a", "b", "c") and len(ring) == 3
    assert "a" in ring and "d" not in ring and 5 not in ring and None not in ring
    assert "Ring(3 nodes" in repr(ring)


def test_balance_at_the_default_vnodes():
    """Not the benchmark (bench/ring.py measures it): a gross fault (points clumped, one node's
    points lost) shows up as a load far from even."""
    nodes = [f"node-{i}" for i in range(10)]
    ring = Ring(nodes)
    ring.check_invariants()
    load = dict.fromkeys(nodes, 0)
    for i in range(20_000):
        for node in ring.replicas(f"blob-{i}", 3):
            load[node] += 1
    assert max(load.values()) / (3 * 20_000 / 10) < 1.10
    assert min(load.values()) / (3 * 20_000 / 10) > 0.90


# ---- movement ------------------------------------------------------------------------------


def assert_only_moves_onto(old: Ring, new: Ring, gainer: str, k: int) -> None:
    """``gainer`` joined (or got more points): each key's list is the old one with ``gainer``
    put in (or moved nearer), the last node pushed out if the list is full; nothing else."""
    for key in KEYS:
        before, after = old.replicas(key, k), new.replicas(key, k)
        assert gainer in after or gainer not in before, key  # more points never lose a key
        if gainer not in after:
            assert after == before, key
        else:
            rest = [node for node in after if node != gainer]
            assert rest == [node for node in before if node != gainer][:len(rest)], key
            assert len(after) == min(k, len(new)), key


def assert_loss_only_moves_keys_that_held(old: Ring, new: Ring, lost: str, k: int) -> None:
    for key in KEYS:
        before, after = old.replicas(key, k), new.replicas(key, k)
        if lost not in before:
            assert after == before, key
        else:  # the others stay, in order; the next distinct node clockwise fills the gap
            assert after == [node for node in old.replicas(key, k + 1) if node != lost][:k], key


def test_adding_a_node_only_moves_keys_onto_it():
    nodes = [f"n{i}" for i in range(8)]
    for k in (1, 3, 8, 9):
        assert_only_moves_onto(Ring(nodes, vnodes=32), Ring(nodes + ["new"], vnodes=32),
                                    "new", k)


def test_removing_a_node_only_moves_keys_whose_replicas_held_it():
    nodes = [f"n{i}" for i in range(8)]
    old = Ring(nodes, vnodes=32)
    for k in (1, 3, 7, 8):
        assert_loss_only_moves_keys_that_held(old, Ring(nodes[:3] + nodes[4:], vnodes=32),
                                              "n3", k)
    held = sum("n3" in old.replicas(key, 3) for key in KEYS)
    assert 0 < held < len(KEYS)  # the loss above moved some keys, and not all


def test_a_join_moves_about_its_share():
    nodes = [f"node-{i}" for i in range(9)]
    old, new = Ring(nodes), Ring(nodes + ["node-9"])
    moved = sum(len(set(new.replicas(f"b{i}", 3)) - set(old.replicas(f"b{i}", 3)))
                for i in range(5000))
    assert 0.85 < moved / (3 * 5000 / 10) < 1.15


@settings(max_examples=150, deadline=None)
@given(node_sets, names, small_vnodes, st.integers(1, 9))
def test_join_and_loss_properties(nodes, newcomer, vnodes, k):
    nodes = [node for node in nodes if node != newcomer]
    old, new = Ring(nodes, vnodes=vnodes), Ring(nodes + [newcomer], vnodes=vnodes)
    assert_only_moves_onto(old, new, newcomer, k)
    assert_loss_only_moves_keys_that_held(new, old, newcomer, k)


# ---- the oracle, at random -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(node_sets, small_vnodes, st.lists(keys, min_size=1, max_size=5), st.integers(0, 9))
def test_replicas_match_the_oracle(nodes, vnodes, some_keys, k):
    ring = Ring(nodes, vnodes=vnodes)
    ring.check_invariants()
    counts = expected_counts(nodes, vnodes)
    for key in some_keys:
        got = ring.replicas(key, k)
        assert got == oracle(counts, key, k)
        assert len(got) == len(set(got)) == min(k, len(set(nodes)))
        assert ring.owner(key) == (got[0] if got else None) or k == 0


@settings(max_examples=150, deadline=None)
@given(st.data(), node_sets, small_vnodes)
def test_weighted_replicas_match_the_oracle(data, nodes, vnodes):
    weights = {node: data.draw(st.floats(0.01, 4.0)) for node in nodes
               if data.draw(st.booleans())}
    ring = Ring(nodes, vnodes=vnodes, weights=weights)
    ring.check_invariants()
    counts = expected_counts(nodes, vnodes, weights)
    assert ring.counts == counts
    for key in data.draw(st.lists(keys, min_size=1, max_size=4)):
        k = data.draw(st.integers(0, 8))
        assert ring.replicas(key, k) == oracle(counts, key, k)


# ---- weights -------------------------------------------------------------------------------


def test_weight_scales_the_number_of_points():
    ring = Ring(["a", "b", "c"], vnodes=10, weights={"a": 2.0, "b": 0.5, "c": 1.0})
    assert ring.counts == {"a": 20, "b": 5, "c": 10}
    assert ring.weights == {"a": 2.0, "b": 0.5, "c": 1.0}
    ring.check_invariants()
    tiny = Ring(["a", "b"], vnodes=10, weights={"a": 1e-9})
    assert tiny.counts == {"a": 1, "b": 10}
    assert all(sorted(tiny.replicas(key, 2)) == ["a", "b"] for key in KEYS)


def test_weight_one_is_the_same_as_no_weight():
    plain = Ring(FIVE, vnodes=32)
    ones = Ring(FIVE, vnodes=32, weights=dict.fromkeys(FIVE, 1.0))
    assert all(plain.replicas(key, 3) == ones.replicas(key, 3) for key in KEYS)


def test_a_heavier_node_holds_more():
    ring = Ring(["a", "b", "c", "d"], weights={"a": 3.0})
    owners = [ring.owner(f"blob-{i}") for i in range(20_000)]
    assert 0.45 < owners.count("a") / len(owners) < 0.55  # 3 / (3 + 1 + 1 + 1)


def test_raising_a_weight_only_moves_keys_onto_that_node():
    nodes = [f"n{i}" for i in range(6)]
    old = Ring(nodes, vnodes=32)
    new = Ring(nodes, vnodes=32, weights={"n2": 2.0})
    assert_only_moves_onto(old, new, "n2", 3)
    assert any(old.replicas(key, 3) != new.replicas(key, 3) for key in KEYS)


# ---- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("vnodes", [0, -1])
def test_vnodes_below_one_is_refused(vnodes):
    with pytest.raises(ValueError):
        Ring(["a"], vnodes=vnodes)


@pytest.mark.parametrize("vnodes", [1.5, "8", True, None])
def test_vnodes_must_be_an_int(vnodes):
    with pytest.raises(TypeError):
        Ring(["a"], vnodes=vnodes)


@pytest.mark.parametrize("weight", [0, 0.0, -1.0, math.nan, math.inf, -math.inf])
def test_a_weight_must_be_finite_and_positive(weight):
    with pytest.raises(ValueError):
        Ring(["a", "b"], weights={"a": weight})


@pytest.mark.parametrize("weight", ["2", None, True])
def test_a_weight_must_be_a_number(weight):
    with pytest.raises(TypeError):
        Ring(["a", "b"], weights={"a": weight})


def test_a_weight_for_an_unknown_node_is_refused():
    with pytest.raises(ValueError, match="zed"):
        Ring(["a", "b"], weights={"zed": 2.0})


@pytest.mark.parametrize("nodes, error", [
    ("abc", TypeError),           # one name, not an iterable of names
    (b"abc", TypeError),
    (["a", 3], TypeError),
    (["a", None], TypeError),
    (["a", ""], ValueError),
])
def test_bad_node_names_are_refused(nodes, error):
    with pytest.raises(error):
        Ring(nodes)


def test_bad_k_is_refused():
    ring = Ring(["a", "b"])
    with pytest.raises(ValueError):
        ring.replicas("key", -1)
    with pytest.raises(TypeError):
        ring.replicas("key", 1.5)
    with pytest.raises(ValueError):
        Ring([]).replicas("key", -1)


# ---- purity --------------------------------------------------------------------------------


def test_the_core_imports_only_the_standard_library_and_xxhash():
    tree = ast.parse((ROOT / "storage" / "ring.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported == {"__future__", "bisect", "collections", "math", "operator", "xxhash"}
