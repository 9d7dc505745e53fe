"""Sorting reduce input (SPEC sections 7 and 11): external merge sort, mixed-type key order."""
from __future__ import annotations

import random
from operator import itemgetter

from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle.sort import ExternalSorter, merge_runs, sort_key

mixed_keys = st.one_of(
    st.text(max_size=3), st.integers(-5, 5), st.binary(max_size=2), st.none(), st.booleans(),
    st.floats(allow_nan=False), st.tuples(st.one_of(st.integers(), st.text(max_size=2))),
)


def word_pairs(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [(f"w{rng.randrange(5000)}", i) for i in range(n)]


def test_small_budget_spills_several_runs_and_sorts(tmp_path):
    pairs = word_pairs(40_000)
    with ExternalSorter(tmp_path, memory_budget_bytes=1 << 20) as sorter:
        for i in range(0, len(pairs), 3000):
            sorter.add_many(pairs[i:i + 3000])
        assert sorter.spills >= 3
        out = list(sorter)
        assert out == sorted(pairs, key=itemgetter(0))  # stable: ties keep insertion order
        assert list(sorter.sorted_pairs()) == out  # can be read again until closed
    assert list(tmp_path.iterdir()) == []


def test_add_one_at_a_time_and_generators(tmp_path):
    pairs = word_pairs(20_000, seed=3)
    sorter = ExternalSorter(tmp_path / "spill", memory_budget_bytes=256 << 10)
    for k, v in pairs[:10_000]:
        sorter.add(k, v)
    sorter.add_many(p for p in pairs[10_000:])
    assert sorter.spills >= 3
    assert len(list((tmp_path / "spill").iterdir())) == sorter.spills
    assert list(sorter) == sorted(pairs, key=itemgetter(0))
    sorter.close()
    assert list((tmp_path / "spill").iterdir()) == []


def test_no_spill_under_budget(tmp_path):
    with ExternalSorter(tmp_path) as sorter:
        sorter.add_many([(3, "c"), (1, "a"), (2, "b")])
        assert list(sorter) == [(1, "a"), (2, "b"), (3, "c")] and sorter.spills == 0
    with ExternalSorter(tmp_path) as sorter:
        assert list(sorter) == []


class Value:
    """A value whose death a weak reference sees."""


def test_drain_hands_over_sorted_lists_and_lets_each_go(tmp_path):
    import weakref
    pairs = [(k, Value()) for k, _ in word_pairs(5000, seed=7)]
    refs = [weakref.ref(v) for _, v in pairs]
    expect = [(k, ref) for (k, _), ref in zip(pairs, refs)]
    expect.sort(key=itemgetter(0))
    sorter = ExternalSorter(tmp_path)
    sorter.add_many(pairs)
    del pairs
    parts = sorter.drain(chunk=1000)
    first = next(parts)
    assert len(first) == 1000 and [k for k, _ in first] == [k for k, _ in expect[:1000]]
    del first
    assert all(ref() is None for _, ref in expect[:1000])  # freed once its consumer let go
    assert all(ref() is not None for _, ref in expect[1000:])
    rest = [pair for part in parts for pair in part]
    assert [k for k, _ in rest] == [k for k, _ in expect[1000:]]
    assert list(sorter) == []  # drained: the sorter is empty


def test_drain_after_spilling(tmp_path):
    pairs = word_pairs(40_000, seed=2)
    with ExternalSorter(tmp_path, memory_budget_bytes=1 << 20) as sorter:
        for i in range(0, len(pairs), 3000):
            sorter.add_many(pairs[i:i + 3000])
        assert sorter.spills >= 2
        parts = list(sorter.drain(chunk=777))
        assert all(len(p) == 777 for p in parts[:-1])
        assert [x for p in parts for x in p] == sorted(pairs, key=itemgetter(0))


def test_mixed_types_grouped_by_type_name():
    keys = ["b", 2, "a", 1, b"x", None, 1.5, (1, "z"), (1, 2), True, 0.5]
    out = [k for k, _ in sorted([(k, None) for k in keys], key=sort_key)]
    assert out == [None, True, b"x", 0.5, 1.5, 1, 2, "a", "b", (1, 2), (1, "z")]


@settings(max_examples=40, deadline=None)
@given(st.lists(mixed_keys, max_size=300), st.integers(2, 6))
def test_external_sort_of_mixed_keys_matches_sorted(tmp_path_factory, keys, chunk):
    pairs = [(k, i) for i, k in enumerate(keys)]
    spill = tmp_path_factory.mktemp("spill")
    with ExternalSorter(spill, memory_budget_bytes=2000) as sorter:
        for i in range(0, len(pairs), chunk):
            sorter.add_many(pairs[i:i + chunk])
        assert sorter.spills > 0 or len(pairs) < 100
        assert list(sorter) == sorted(pairs, key=sort_key)
    assert list(spill.iterdir()) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.lists(st.integers(0, 6), max_size=5), max_size=4), max_size=5))
def test_merge_runs_is_a_stable_merge(runs_of_frames):
    runs, expected = [], []
    for r, frames in enumerate(runs_of_frames):
        flat = sorted(k for frame in frames for k in frame)
        sizes = [len(f) for f in frames]
        tagged = [(k, (r, j)) for j, k in enumerate(flat)]
        cut = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        runs.append(iter([tagged[a:b] for a, b in zip(cut, cut[1:])]))
        expected.extend(tagged)
    expected.sort(key=itemgetter(0))
    assert list(merge_runs(runs, itemgetter(0))) == expected


def test_prefix_sort_of_bytes_and_str_keys_is_a_stable_sort(tmp_path):
    rng = random.Random(7)
    alphabet = b"ab\x00\xff"
    raw = [(bytes(rng.choice(alphabet) for _ in range(rng.randrange(5))), i)
           for i in range(20_000)]  # short keys, empty keys, many ties: all prefix edge cases
    text = [(k.decode("latin-1"), i) for k, i in raw]
    for pairs in (raw, text):
        with ExternalSorter(tmp_path) as sorter:
            sorter.add_many(list(pairs))
            assert list(sorter) == sorted(pairs, key=itemgetter(0))


def test_prefix_sort_when_spilling_and_for_presorted_runs(tmp_path):
    import shuffle.sort as sort_module
    rng = random.Random(8)
    pairs = [(rng.randbytes(4), i) for i in range(30_000)]
    runs = sorted(pairs[:15_000], key=itemgetter(0)) + sorted(pairs[15_000:], key=itemgetter(0))
    assert sort_module._runs_ahead(runs) and not sort_module._runs_ahead(pairs)
    for data in (pairs, runs):
        with ExternalSorter(tmp_path, memory_budget_bytes=1 << 20) as sorter:
            for i in range(0, len(data), 3000):
                sorter.add_many(data[i:i + 3000])
            assert sorter.spills >= 2
            assert list(sorter) == sorted(data, key=itemgetter(0))


def test_prefix_sort_groups_by_two_leading_items():
    from shuffle.sort import _prefix_sort
    pairs = [(b"bb", 0), (b"a", 1), (b"ab\x00", 2), (b"", 3), (b"ab", 4), (b"a", 5), (b"b", 6)]
    assert _prefix_sort(pairs) == [(b"", 3), (b"a", 1), (b"a", 5), (b"ab", 4), (b"ab\x00", 2),
                                   (b"b", 6), (b"bb", 0)]
