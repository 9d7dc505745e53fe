"""disco.worker.classic.func: Disco's ready-made job functions."""
from __future__ import annotations

import gzip
import io

from disco.worker import task_io
from disco.worker.classic import func
from disco.worker.classic.func import nop_map, nop_reduce, sum_combiner, sum_reduce


class _Out:
    def __init__(self):
        self.pairs = []

    def add(self, key, value):
        self.pairs.append((key, value))


def test_exports_keep_disco_names():
    assert set(func.__all__) >= {"nop_map", "nop_reduce", "sum_combiner", "sum_reduce",
                                 "chain_reader", "gzip_reader", "gzip_line_reader",
                                 "map_line_reader", "default_partition"}
    assert func.chain_reader is task_io.chain_reader
    assert func.gzip_line_reader is task_io.gzip_line_reader


def test_default_partition_is_the_shuffle_one():
    from shuffle.partition import default_partition
    assert func.default_partition is default_partition
    assert 0 <= func.default_partition("key", 7, None) < 7


def test_nop_map_passes_pairs_and_wraps_other_entries():
    assert list(nop_map(("k", 1), None)) == [("k", 1)]
    assert list(nop_map(["k", 1], None)) == [("k", 1)]
    assert list(nop_map("a line\n", None)) == [("a line\n", "")]


def test_nop_reduce_adds_every_pair():
    out = _Out()
    assert nop_reduce(iter([("a", 1), ("b", 2)]), out, None) is None
    assert out.pairs == [("a", 1), ("b", 2)]


def test_sum_combiner_buffers_until_done():
    buffer: dict = {}
    for key, value in [("a", 1), ("b", 2), ("a", 3)]:
        assert sum_combiner(key, value, buffer, False, None) is None
    assert dict(sum_combiner(None, None, buffer, True, None)) == {"a": 4, "b": 2}


def test_sum_reduce_on_sorted_and_unsorted_input():
    pairs = [("b", 1), ("a", 2), ("b", 3), ("a", 0.5)]
    assert list(sum_reduce(iter(sorted(pairs)), None)) == [("a", 2.5), ("b", 4)]
    assert dict(sum_reduce(iter(pairs), None)) == {"a": 2.5, "b": 4}
    assert list(sum_reduce(iter([]), None)) == []


def test_gzip_readers_yield_str_lines():
    data = gzip.compress("one\ntwo\n".encode())
    assert list(func.gzip_line_reader(io.BytesIO(data), len(data), "x.gz", None)) == \
        ["one\n", "two\n"]
    assert list(func.gzip_reader(io.BytesIO(data), len(data), "x.gz", None)) == \
        ["one\n", "two\n"]


def test_disco_stream_functions_are_importable_from_classic_func():
    # Disco's test_forcesched imports string_input_stream from here
    from disco.worker import task_io
    from disco.worker.classic import func
    for name in ("string_input_stream", "task_input_stream", "task_output_stream",
                 "disco_output_stream"):
        assert getattr(func, name) is getattr(task_io, name)
