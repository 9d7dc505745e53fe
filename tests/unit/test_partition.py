"""Stable partitioning (SPEC section 7): xxhash of key bytes, never Python's salted hash."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disco.error import UsageError
from shuffle.partition import default_partition, key_bytes, partition_pairs

ROOT = Path(__file__).resolve().parents[2]
keys = st.one_of(
    st.text(), st.binary(), st.integers(), st.floats(allow_nan=False), st.none(), st.booleans(),
    st.tuples(st.text(), st.integers()), st.frozensets(st.text(max_size=4), max_size=5),
)

PROBE = """
import json, sys
from shuffle.partition import default_partition
keys = ["apple", "zürich", b"raw", 42, -7, 10**30, 1.5, None, True, ("a", 1), ["x", [2]],
        frozenset({"alpha", "beta", "gamma", "delta"}), {"k": 1}, complex(1, 2)]
print(json.dumps([default_partition(k, 97) for k in keys]))
"""


@settings(max_examples=300, deadline=None)
@given(keys, st.integers(1, 1000))
def test_partition_in_range(key, n):
    p = default_partition(key, n)
    assert 0 <= p < n and p == default_partition(key, n, params={"ignored": 1})


def test_key_bytes_encodings():
    assert key_bytes("zürich") == "zürich".encode()
    assert key_bytes(b"\x00\xff") == b"\x00\xff"
    assert key_bytes(123) == key_bytes("123") == b"123"
    assert key_bytes(-5) == b"-5"
    assert key_bytes("\ud800") == "\ud800".encode("utf-8", "surrogatepass")
    assert key_bytes(True) != key_bytes(1)
    assert key_bytes(frozenset({"a", "b"})) == key_bytes(frozenset({"b", "a"}))
    assert isinstance(key_bytes(object), bytes)


def test_stable_across_hash_seeds():
    results = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=30, check=True)
        results.append(json.loads(out.stdout))
    assert results[0] == results[1]
    namespace: dict = {}
    exec(PROBE.replace("print(", "result = ("), namespace)
    assert json.loads(namespace["result"]) == results[0]


def test_known_values_do_not_drift():
    # The partition of a key is part of the on-disk contract between map and reduce nodes.
    assert [default_partition(k, 1 << 20) for k in ("a", b"a", 1)] == \
        [default_partition("a", 1 << 20)] * 2 + [default_partition("1", 1 << 20)]
    import xxhash
    assert default_partition("hello", 1000) == xxhash.xxh64_intdigest(b"hello") % 1000


@settings(max_examples=100, deadline=None)
@given(st.lists(keys, max_size=60), st.integers(1, 9))
def test_partition_pairs_matches_default_partition(key_list, n):
    pairs = [(k, i) for i, k in enumerate(key_list)]
    parts = partition_pairs(pairs, n, default_partition, None)
    assert len(parts) == n
    for i, part in enumerate(parts):
        assert all(default_partition(k, n) == i for k, _ in part)
        assert [v for _, v in part] == sorted(v for _, v in part)  # input order kept
    assert sorted(v for part in parts for _, v in part) == list(range(len(pairs)))


def test_partition_pairs_custom_function_and_single_partition():
    pairs = [(i, str(i)) for i in range(10)]
    parts = partition_pairs(pairs, 3, lambda k, n, params: (k + params) % n, 1)
    assert parts == [[(2, "2"), (5, "5"), (8, "8")], [(0, "0"), (3, "3"), (6, "6"), (9, "9")],
                     [(1, "1"), (4, "4"), (7, "7")]]
    assert partition_pairs(iter(pairs), 1, default_partition, None) == [pairs]


@pytest.mark.parametrize("bad", [-1, 3, None, "0"])
def test_partition_pairs_rejects_out_of_range(bad):
    with pytest.raises(UsageError, match="expected an int"):
        partition_pairs([("a", 1)], 3, lambda k, n, p: bad, None)
    with pytest.raises(UsageError):
        partition_pairs([("a", 1)], 0, default_partition, None)


# -- range_partition ---------------------------------------------------------------------------

def test_range_partition_labels_follow_key_order():
    from shuffle.partition import range_partition
    f = range_partition(33, 127)
    assert [f(k, 4) for k in (b"", b"!", b"!!zzz", b"O", b"O~", b"P", b"~", b"~~~")] == \
        [0, 0, 0, 1, 1, 2, 3, 3]
    assert f(b"\x00\xff", 4) == 0 and f(b"\xff", 4) == 3  # outside the alphabet: the ends
    assert f("P", 4) == f(b"P", 4) == 2  # str by its UTF-8
    assert f(b"A", 1) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=4), min_size=2, max_size=50), st.integers(1, 300),
       st.integers(0, 200), st.integers(1, 56))
def test_range_partition_is_monotone_and_in_range(keys, n, low, width):
    from shuffle.partition import range_partition
    f = range_partition(low, low + width)
    labels = [f(k, n) for k in sorted(keys)]
    assert labels == sorted(labels) and all(0 <= x < n for x in labels)


def test_range_partition_split_matches_the_function_and_keeps_order():
    import pickle
    import random
    from shuffle.partition import range_partition
    rng = random.Random(5)
    f = pickle.loads(pickle.dumps(range_partition(33, 127)))  # as a job ships it
    keys = [bytes(rng.randrange(20, 140) for _ in range(rng.randrange(4))) for _ in range(5000)]
    pairs = [(k, i) for i, k in enumerate(keys)]
    for n in (2, 16, 97):
        parts = partition_pairs(pairs, n, f)
        assert parts == [[p for p in pairs if f(p[0], n) == label] for label in range(n)]
    mixed = [(b"ab", 0), ("ab", 1), (b"", 2)]
    assert partition_pairs(mixed, 3, f) == [[(b"", 2)], [], [(b"ab", 0), ("ab", 1)]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=4)), max_size=300), st.integers(1, 300),
       st.integers(0, 200), st.integers(1, 56), st.booleans())
def test_range_partition_split_sorted_is_split_for_sorted_pairs(keys, n, low, width, text):
    from shuffle.partition import range_partition
    f = range_partition(low, low + width)
    if text:  # str keys: ordered as their UTF-8 is
        keys = [k.decode("latin-1") + "\ud800" * (len(k) % 2) for k in keys]
    pairs = sorted(((k, i) for i, k in enumerate(keys)), key=lambda p: p[0])
    parts = partition_pairs(pairs, n, f)
    assert f.split_sorted(pairs, n) == [(label, part) for label, part in enumerate(parts) if part]


def test_range_partition_split_sorted_refuses_other_key_types():
    from shuffle.partition import range_partition
    with pytest.raises(UsageError, match="bytes and str keys"):
        range_partition().split_sorted([(1, 0), (2, 0)], 4)


def test_range_partition_refuses_other_key_types():
    from shuffle.partition import range_partition
    with pytest.raises(UsageError, match="bytes and str keys"):
        partition_pairs([(b"ab", 0), ([97, 98], 1)], 4, range_partition())
    with pytest.raises(UsageError, match="low < high"):
        range_partition(10, 10)
