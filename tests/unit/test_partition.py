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
