"""A map's output bound for a reduce is written as sorted runs (``disco.worker.task.sorted_run``)
with equal pairs shared, and pickled with the memo so they stay shared in the reduce."""
from __future__ import annotations

import io

from disco.worker.task import pairs_of, sorted_run
from shuffle import record


def test_word_pairs_come_out_in_key_order_with_every_pair_kept():
    pairs = [("b", 1), ("a", 1), ("c", 1), ("a", 1), ("b", 1), ("a", 1)]
    run = sorted_run(list(pairs))
    assert run == sorted(pairs)


def test_equal_pairs_become_one_object():
    pairs = [("".join(["w", "x"]), 1) for _ in range(6)] + [("".join(["v"]), 2)]
    assert len({id(p) for p in pairs}) == 7
    run = sorted_run(pairs)
    assert run == [("v", 2)] + [("wx", 1)] * 6
    assert len({id(p) for p in run}) == 2


def test_equal_values_of_other_types_are_not_merged():
    # 1, True and 1.0 are equal and hash alike; a reduce must still see each as it was
    pairs = [("k", 1), ("k", True), ("k", 1.0), ("k", 1), ("k", 1), ("k", 1)]
    run = sorted_run(list(pairs))
    assert sorted(map(repr, run)) == sorted(map(repr, pairs))
    assert [type(v) for _, v in run].count(bool) == 1 and [type(v) for _, v in run].count(float) == 1


def test_distinct_pairs_are_sorted_by_key_only_keeping_their_order():
    pairs = [(3, "c"), (1, "z"), (2, "b"), (1, "a")]
    assert sorted_run(list(pairs)) == [(1, "z"), (1, "a"), (2, "b"), (3, "c")]


def test_keys_that_do_not_compare_are_left_as_they_came():
    pairs = [(1, "a"), ("x", "b"), (None, "c")]
    assert sorted_run(list(pairs)) == pairs


def test_unhashable_values_are_sorted_by_key_without_counting():
    pairs = [("b", [1]), ("a", [2]), ("b", [1]), ("a", {"x": 1})]
    assert sorted_run(list(pairs)) == [("a", [2]), ("a", {"x": 1}), ("b", [1]), ("b", [1])]


def test_mixed_key_types_that_repeat_are_still_grouped():
    pairs = [("a", 1), (2, 1), ("a", 1), (2, 1), ("a", 1), (2, 1)]
    run = sorted_run(list(pairs))
    assert sorted(map(repr, run)) == sorted(map(repr, pairs))
    assert run[:3] == [run[0]] * 3 and run[3:] == [run[3]] * 3


def test_memo_frames_keep_shared_pairs_shared_and_are_smaller():
    pair = ("word", 1)
    pairs = [pair] * 5000 + [("other", 2)] * 5000
    sizes = {}
    for memo in (False, True):
        f = io.BytesIO()
        with record.RecordWriter(f, memo=memo) as w:
            w.add_many(pairs)
        sizes[memo] = len(f.getvalue())
        f.seek(0)
        back = [p for frame in record.iter_frames(f) for p in frame]
        assert back == pairs
        if memo:
            assert len({id(p) for p in back}) <= 2 * w.frames
    assert sizes[True] < sizes[False]


def test_pairs_of_converts_lists_and_refuses_what_is_not_a_pair():
    ok = [("a", 1), ("b", 2)]
    assert pairs_of(ok, "t") is ok
    assert pairs_of([["a", 1], ("b", 2)], "t") == [("a", 1), ("b", 2)]
    import pytest
    from disco.worker.task import MapOutputError
    with pytest.raises(MapOutputError, match="task t: map must yield"):
        pairs_of([("a", 1), ("b", 2, 3)], "t")
    with pytest.raises(MapOutputError):
        pairs_of([("a", 1), "ab"], "t")
