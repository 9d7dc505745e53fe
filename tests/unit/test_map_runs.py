"""A map's output bound for a reduce is written as sorted runs (``disco.worker.task._Runs``):
equal pairs counted and written as one object, pickled with the memo so they stay one object
in the reduce; output that hardly repeats is sorted by key without counting."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from disco.worker import task
from disco.worker.task import MapOutputError, _Runs, pairs_of
from shuffle import record
from shuffle.partition import default_partition, partition_pairs, range_partition


class Sink:
    """Stands in for the task's ``Output``: what each label's writer was given, and memo
    changes."""

    def __init__(self):
        self.runs: list[tuple[int, list]] = []
        self.how: list[str] = []  # "frame" (written at once) or "buffered", for each run
        self.memo: list[bool] = []

    def writer(self, label):
        def add(how):
            def given(pairs):
                self.runs.append((label, list(pairs)))
                self.how.append(how)
            return given
        return SimpleNamespace(add_many=add("buffered"), add_frame=add("frame"))

    def set_memo(self, on):
        self.memo.append(on)

    def runs_of(self, label):
        return [pairs for lab, pairs in self.runs if lab == label]


def run(batches, labels=1, partition=None, params=None):
    sink = Sink()
    runs = _Runs(sink, labels, partition, params, "job:map:0")
    for batch in batches:
        runs.add(list(batch))
    runs.flush()
    return sink


def words(text):
    return [("".join(list(w)), 1) for w in text.split()]  # fresh str objects, as split makes


def test_word_pairs_come_out_as_one_sorted_run_with_every_pair_kept():
    pairs = words("b a c a b a") * 3
    sink = run([pairs])
    assert sink.runs == [(0, sorted(pairs))]
    assert sink.memo == []  # counting pays here: the writer keeps its memo


def test_equal_pairs_become_one_object():
    sink = run([words("wx wx wx wx v wx wx")])
    (_, out), = sink.runs
    assert out == [("v", 1)] + [("wx", 1)] * 6
    assert len({id(p) for p in out}) == 2


def test_batches_are_counted_into_one_run():
    sink = run([words("a b a b"), words("b c b c")])
    assert sink.runs == [(0, sorted(words("a b a b b c b c")))]


def test_a_run_is_written_when_it_holds_run_distinct_pairs(monkeypatch):
    monkeypatch.setattr(task, "RUN_DISTINCT", 3)
    sink = run([words("a a b b"), words("c c d d"), words("e e")])
    assert [len(p) for _, p in sink.runs] == [8, 2]  # 4 distinct pairs after the second batch
    assert all(p == sorted(p) for _, p in sink.runs)


def test_equal_values_of_other_types_are_not_merged():
    # 1, True and 1.0 are equal and hash alike; a reduce must still see each as it was
    pairs = [("k", 1), ("k", True), ("k", 1.0), ("k", 1), ("k", 1), ("k", 1)]
    (_, out), = run([pairs]).runs
    assert sorted(map(repr, out)) == sorted(map(repr, pairs))


def test_distinct_output_is_sorted_by_key_only_and_no_longer_counted(monkeypatch):
    monkeypatch.setattr(task, "RUN_SAMPLE", 4)
    pairs = [(3, "c"), (1, "z"), (2, "b"), (1, "a"), (0, "q")]
    sink = Sink()
    runs = _Runs(sink, 1, None, None, "t")
    runs.add(list(pairs))
    assert sink.memo == [False] and not runs.counting  # the first batch hardly repeats
    runs.add([(5, "x"), (5, "x"), (4, "y")])
    runs.flush()
    assert sorted(p for _, run_ in sink.runs for p in run_) == sorted(pairs + [(5, "x"), (5, "x"), (4, "y")])
    assert sink.runs[-1] == (0, [(4, "y"), (5, "x"), (5, "x")])


def test_output_not_counted_is_written_every_run_local_pairs_sorted_per_label(monkeypatch):
    # sorted while the map's newest pairs are still in the CPU cache, then split by label:
    # each label gets one sorted run per RUN_LOCAL pairs the map gave, in the order given
    monkeypatch.setattr(task, "RUN_SAMPLE", 4)
    monkeypatch.setattr(task, "RUN_LOCAL", 6)
    pairs = [(f"k{(i * 7919) % 20:02}", i) for i in range(20)]
    sink = run([pairs[:5], pairs[5:9], pairs[9:15], pairs[15:]], labels=2,
               partition=range_partition())
    # the first batch is counted (a sample), found distinct and written; then 4 + 6 pairs
    # reach RUN_LOCAL and are written; the last 5 when the map ends
    given = [pairs[:5], pairs[5:15], pairs[15:]]
    expect = [(label, part) for chunk in given
              for label, part in enumerate(partition_pairs(sorted(chunk), 2, range_partition()))
              if part]
    assert sink.runs == expect
    assert all(run_ == sorted(run_) for _, run_ in sink.runs)
    assert sorted(p for _, run_ in sink.runs for p in run_) == sorted(pairs)


def test_a_big_enough_cut_of_a_sorted_run_is_framed_at_once_a_small_one_buffered(monkeypatch):
    monkeypatch.setattr(task, "RUN_SAMPLE", 1)
    monkeypatch.setattr(task, "RUN_LOCAL", 8)
    monkeypatch.setattr(task, "FRAME_NOW_PAIRS", 3)
    first = [(b"!", 0)]  # counted as the sample, found distinct
    keys = [b"!a", b"!b", b"!c", b"!d", b"!e", b"~a", b"~b", b"!f"]  # 6 for label 0, 2 for 1
    sink = run([first, [(k, 1) for k in keys]], labels=2, partition=range_partition(33, 127))
    assert sink.runs[1:] == [(0, [(k, 1) for k in sorted(keys) if k < b"~"]),
                             (1, [(b"~a", 1), (b"~b", 1)])]
    assert sink.how[1:] == ["frame", "buffered"]


def test_keys_that_do_not_compare_are_grouped_unsorted():
    pairs = [("a", 1), (2, 1), ("a", 1), (2, 1), ("a", 1), (2, 1)]
    (_, out), = run([pairs]).runs
    assert sorted(map(repr, out)) == sorted(map(repr, pairs))
    assert out[:3] == [out[0]] * 3 and out[3:] == [out[3]] * 3


def test_unhashable_values_are_checked_and_sorted_by_key():
    pairs = [("b", [1]), ("a", [2]), ("b", [1]), ["a", {"x": 1}]]
    (_, out), = run([pairs]).runs
    assert out == [("a", [2]), ("a", {"x": 1}), ("b", [1]), ("b", [1])]


@pytest.mark.parametrize("bad", [("a", 1, 2), "ab", b"ab", 7, ["a"]])
def test_what_is_not_a_pair_fails_the_task_naming_it(bad):
    with pytest.raises(MapOutputError, match="job:map:0: map must yield"):
        run([[("a", 1), ("a", 1), bad, ("a", 1)]])


@pytest.mark.parametrize("partition", [None, default_partition, range_partition(0, 128),
                                       lambda key, n, params: len(key) % n])
def test_partitions_get_what_the_partitioner_says(partition):
    pairs = words("apple b apple cc b dddd apple cc b b") * 2
    sink = run([pairs[:10], pairs[10:]], labels=3, partition=partition)
    expect = partition_pairs(pairs, 3, partition or default_partition, None)
    for label in range(3):
        runs_ = sink.runs_of(label)
        assert len(runs_) <= 1 and all(r == sorted(r) for r in runs_)
        assert [p for r in runs_ for p in r] == sorted(expect[label])


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
    with pytest.raises(MapOutputError, match="task t: map must yield"):
        pairs_of([("a", 1), ("b", 2, 3)], "t")
    with pytest.raises(MapOutputError):
        pairs_of([("a", 1), "ab"], "t")


def test_sum_combining_a_dict_items_map_output_adds_up_as_the_loop_does():
    from collections import Counter

    from disco.worker.task import _map_summing
    entries = [Counter({"a": 2, "b": 1}), {"b": True, 3: 1.5}, Counter({"a": 1, "c": 4})]
    got = []
    _map_summing(lambda e, p: e.items(), entries, None, got.append)
    want: dict = {}
    for e in entries:
        for k, v in e.items():
            want[k] = want.get(k, 0) + v
    assert got == [list(want.items())] == [[("a", 3), ("b", 2), (3, 1.5), ("c", 4)]]
    listed = []
    _map_summing(lambda e, p: list(e.items()) + [("a", 1)], entries, None, listed.append)
    assert dict(listed[0])["a"] == 6  # pairs that may repeat a key still go one by one
    with pytest.raises(TypeError):
        _map_summing(lambda e, p: {"x": "text"}.items(), [1], None, got.append)


def test_sum_combining_takes_a_first_batch_of_ints_as_it_is_and_others_through_the_sum():
    from disco.worker.task import _map_summing
    got = []
    _map_summing(lambda e, p: e.items(), [{"b": True, "c": 2}], None, got.append)
    assert got == [[("b", 1), ("c", 2)]] and type(got[0][0][1]) is int  # 0 + True, not True
    counts = {"x": 3, "y": 1}
    got = []
    _map_summing(lambda e, p: e.items(), [counts, {"x": 1}], None, got.append)
    assert got == [[("x", 4), ("y", 1)]] and counts == {"x": 3, "y": 1}  # the map's own dict kept


def test_sum_combining_pairs_one_by_one_adds_as_sum_combiner_does():
    from disco.worker.task import _map_summing

    def mapf(line, params):
        for word in line.split():
            yield word, (True if word == "t" else 1.5 if word == "f" else 1)

    got = []
    _map_summing(mapf, ["a t b a", "f f a"], None, got.append)
    assert got == [[("a", 3), ("t", 1), ("b", 1), ("f", 3.0)]]
    assert [type(v) for _, v in got[0]] == [int, int, int, float]  # 0 + True is 1, not True
    with pytest.raises(TypeError):  # a value that does not add fails as in the loop
        _map_summing(lambda e, p: [("x", 1), ("x", "text")], [1], None, got.append)
    with pytest.raises(TypeError):  # and so does a key that does not hash
        _map_summing(lambda e, p: [(["x"], 1)], [1], None, got.append)


class _Tally:
    """A value that adds up in place when it can (``+=``), and whose ``__add__`` may raise."""

    def __init__(self, n: int, bad: bool = False):
        self.n, self.bad = n, bad

    def __add__(self, other):
        if self.bad:
            raise KeyError("the value's own error")
        return _Tally(self.n + (other.n if isinstance(other, _Tally) else other))

    def __radd__(self, other):
        return self if other == 0 else _Tally(other + self.n)

    def __iadd__(self, other):
        self.n += other.n
        return self


def test_sum_combining_adds_as_plus_does_not_in_place_and_keeps_the_values_errors():
    from disco.worker.task import _map_summing
    one = _Tally(1)  # the map yields this same object for every word
    got = []
    _map_summing(lambda line, p: ((w, one) for w in line.split()), ["a b a"], None, got.append)
    assert [(k, v.n) for k, v in got[0]] == [("a", 2), ("b", 1)] and one.n == 1
    with pytest.raises(KeyError, match="the value's own error"):
        _map_summing(lambda e, p: [("a", _Tally(1, bad=True)), ("a", _Tally(1))], [1], None,
                     got.append)


@pytest.mark.parametrize("partition", [None, default_partition, range_partition(0, 128)])
def test_combined_output_for_a_reduce_is_written_sorted_by_key_per_label(partition):
    from disco.worker.task import _labelled
    pairs = [(w, i) for i, w in enumerate("pear fig apple kiwi date plum lime cherry".split())]
    got = _labelled(list(pairs), 3 if partition else 1, partition, None, by_key=True)
    expect = partition_pairs(pairs, 3, partition) if partition else [pairs]
    assert got == [(label, sorted(part)) for label, part in enumerate(expect) if part]
    assert _labelled(list(pairs), 1, None, None) == [(0, pairs)]  # unsorted unless asked


def test_combined_output_whose_keys_do_not_compare_is_written_whole():
    from disco.worker.task import _labelled
    pairs = [("b", 1), (2, 1), ("a", 1), (1, 1)]
    (label, out), = _labelled(list(pairs), 1, None, None, by_key=True)
    assert label == 0 and sorted(map(repr, out)) == sorted(map(repr, pairs))
