"""shuffle.chunk: records re-encoded into record files of bounded stored size (ddfs chunk)."""
from __future__ import annotations

import io
import itertools
import os
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disco.error import DataError
from disco.worker.task_io import chain_reader, default_map_reader, line_reader
from shuffle import record as r
from shuffle import chunk as c
from shuffle.chunk import (CHUNK_OVERHEAD, Chunk, RecordTooLarge, chunk_input, chunk_records)


def decode(chunk: Chunk) -> list:
    return list(r.iter_records(io.BytesIO(chunk.data)))


def check_chunks(chunks: list[Chunk], records: list, chunk_bytes: int) -> None:
    """The invariants of any chunking of ``records``."""
    assert [ch.index for ch in chunks] == list(range(len(chunks)))
    for ch in chunks:
        data = ch.data
        assert ch.size == len(data) <= chunk_bytes
        assert r.is_record_file(data)
        assert ch.records == len(decode(ch)) >= 1
    assert [rec for ch in chunks for rec in decode(ch)] == records


def text_records(rng: random.Random, n: int, max_len: int) -> list[str]:
    alphabet = "abc \té€\U0001F600"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) + "\n"
            for _ in range(n)]


# -- the bound, the order, valid files ----------------------------------------------------------

mixed = st.one_of(st.text(max_size=300), st.binary(max_size=300),
                  st.tuples(st.text(max_size=40), st.integers()), st.none(),
                  st.lists(st.integers(), max_size=20))


@settings(max_examples=120, deadline=None)
@given(st.lists(mixed, max_size=300), st.sampled_from([600, 1000, 4096, 65536]),
       st.integers(1, 50), st.sampled_from([r.CODEC_LZ4, r.CODEC_NONE]))
def test_chunks_are_bounded_valid_and_keep_every_record_in_order(records, chunk_bytes,
                                                                  frame_records, codec):
    max_record = chunk_bytes - CHUNK_OVERHEAD
    chunks = list(chunk_records(records, chunk_bytes, max_record, frame_records, codec=codec))
    check_chunks(chunks, records, chunk_bytes)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([256, 2000, 10_000]), st.integers(1, 400))
def test_random_sizes_up_to_the_record_limit(seed, max_record, frame_records):
    rng = random.Random(seed)
    chunk_bytes = max_record + CHUNK_OVERHEAD + rng.choice([0, 1, 100, 5 * max_record])
    sizes = [rng.choice([0, 1, rng.randint(0, max_record // 8), max_record - 30])
             for _ in range(rng.randint(0, 120))]
    records = [os.urandom(max(0, n)) if rng.random() < 0.5 else "x" * max(0, n) for n in sizes]
    chunks = list(chunk_records(records, chunk_bytes, max_record, frame_records))
    check_chunks(chunks, records, chunk_bytes)


def test_incompressible_records_fill_chunks_without_passing_the_bound():
    records = [os.urandom(random.Random(i).randint(1, 300)) for i in range(3000)]
    chunks = list(chunk_records(records, 16_384, 4096))
    check_chunks(chunks, records, 16_384)
    assert len(chunks) > 20
    assert all(ch.size > 16_384 * 3 // 4 for ch in chunks[:-1]), [ch.size for ch in chunks]


def test_a_frame_too_big_for_a_chunk_is_split_by_records():
    # Multi-byte characters make the size estimate low and frames unbounded by count or
    # bytes are far over the chunk: each must be split until its pieces fit.
    records = ["\U0001F600" * 150 for _ in range(500)]
    chunks = list(chunk_records(records, 4096, 1024, frame_records=10**6,
                                frame_bytes=10**9, codec=r.CODEC_NONE))
    check_chunks(chunks, records, 4096)
    assert len(chunks) >= 500 * 600 // 4096


def test_records_at_the_limit_fit_a_chunk_of_the_smallest_size_allowed():
    for max_record in (1, 50, 300, 70_000):
        chunk_bytes = max_record + CHUNK_OVERHEAD
        records = [rec for rec in ("é" * (max_record // 2 - 12), b"\0" * (max_record - 30),
                                   os.urandom(max(0, max_record - 30)), ("k", "v" * 10), None)
                   if len(_pickled(rec)) <= max_record]
        chunks = list(chunk_records(records, chunk_bytes, max_record))
        check_chunks(chunks, records, chunk_bytes)


def _pickled(record) -> bytes:
    return pickle.dumps(record, 5)


def test_empty_input_gives_no_chunks():
    assert list(chunk_records([])) == []
    assert list(chunk_input(io.BytesIO(b""))) == []


def test_a_single_small_record_is_one_chunk():
    (only,) = chunk_records(["hello\n"])
    assert (only.index, only.records) == (0, 1)
    assert decode(only) == ["hello\n"]


def test_chunk_data_write_to_and_size_agree():
    chunks = list(chunk_records([f"line {i}\n" for i in range(5000)], 8192, 1024))
    for ch in chunks:
        out = io.BytesIO()
        assert ch.write_to(out) == ch.size
        assert out.getvalue() == ch.data == b"".join(ch.parts)
        assert ch.data.startswith(r.FILE_MAGIC)


# -- bounded memory: records are read as chunks are taken ---------------------------------------

def test_records_are_consumed_lazily_a_chunk_at_a_time():
    taken = 0

    def endless():
        nonlocal taken
        for i in itertools.count():
            taken += 1
            yield f"record {i} " + "x" * (i % 97) + "\n"

    chunks = chunk_records(endless(), 8192, 1024, frame_records=16)
    assert taken == 0
    first = next(chunks)
    assert first.size <= 8192
    assert taken <= first.records + 16 + 1
    second = next(chunks)
    assert taken <= first.records + second.records + 16 + 1


# -- the record limit ---------------------------------------------------------------------------

def test_a_record_over_the_limit_raises_naming_its_index_and_the_input():
    records = ["short\n"] * 7 + ["x" * 5000 + "\n"] + ["after\n"]
    with pytest.raises(RecordTooLarge) as info:
        list(chunk_records(records, 8192, 4096, name="logs/big.txt"))
    err = info.value
    assert (err.index, err.name, err.limit) == (7, "logs/big.txt", 4096)
    assert "record 7 of logs/big.txt" in str(err) and "4096" in str(err)
    assert isinstance(err, DataError) and not err.retryable


def test_the_limit_is_on_pickled_size_of_any_record():
    limit = 1000
    fits = ("k" * 400, "v" * 400)
    over = ("k" * 600, "v" * 600)
    assert len(_pickled(fits)) <= limit < len(_pickled(over))
    assert [rec for ch in chunk_records([fits], 2000, limit) for rec in decode(ch)] == [fits]
    with pytest.raises(RecordTooLarge) as info:
        list(chunk_records([fits, fits, over], 2000, limit))
    assert info.value.index == 2 and info.value.size > limit


@pytest.mark.parametrize("record, fits", [
    ("é" * 491, True), ("é" * 492, False),              # 2 UTF-8 bytes a char, 17 of framing
    ("\U0001F600" * 245, True), ("\U0001F600" * 246, False),
    (b"\xff" * 983, True), (b"\xff" * 984, False),
    (bytearray(979), True), (bytearray(980), False),
    ("a" * 1001, False),
])
def test_long_str_and_bytes_are_measured_exactly_at_the_limit(record, fits):
    chunks = chunk_records([record], 2000, 1000)
    if fits:
        assert [rec for ch in chunks for rec in decode(ch)] == [record]
    else:
        with pytest.raises(RecordTooLarge):
            list(chunks)


def test_a_cyclic_record_is_measured_and_stored():
    cyclic: list = [1, 2]
    cyclic.append(cyclic)
    (only,) = chunk_records([cyclic, "next\n"], 2000, 1000)
    got, nxt = decode(only)
    assert got[:2] == [1, 2] and got[2] is got and nxt == "next\n"


class _Growing:
    """Pickles bigger each time: measured small, stored too big for a chunk."""

    calls = 0

    def __reduce__(self):
        _Growing.calls += 1
        return (bytes, (b"\x01" * (100 if _Growing.calls == 1 else 50_000),))


def test_a_record_stored_bigger_than_a_chunk_raises_rather_than_break_the_bound():
    _Growing.calls = 0
    with pytest.raises(RecordTooLarge) as info:
        list(chunk_records(["a\n", _Growing()], 4096, 1024, codec=r.CODEC_NONE, name="in"))
    assert info.value.index == 1 and "chunk_bytes" in str(info.value)


# -- argument validation ------------------------------------------------------------------------

@pytest.mark.parametrize("kw, words", [
    ({"chunk_bytes": 1000, "max_record_bytes": 1000}, "chunk_bytes (1000)"),
    ({"chunk_bytes": 1 << 20, "max_record_bytes": 1 << 20}, "max_record_bytes"),
    ({"chunk_bytes": 100, "max_record_bytes": 100 - CHUNK_OVERHEAD + 1}, "headers"),
    ({"max_record_bytes": 0}, "max_record_bytes must be at least 1"),
    ({"frame_records": 0}, "frame_records"),
    ({"frame_bytes": 0}, "frame_bytes"),
    ({"codec": 7}, "unknown codec 7"),
])
def test_bad_arguments_raise_at_the_call(kw, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        chunk_records(iter(["never read"]), **kw)
    with pytest.raises(ValueError):
        chunk_input(io.BytesIO(b"x\n"), **kw)


def test_the_smallest_chunk_size_allowed_is_accepted():
    chunk_records([], 100 + CHUNK_OVERHEAD, 100)
    assert c.DEFAULT_CHUNK_BYTES == 64 << 20 and c.DEFAULT_MAX_RECORD_BYTES == 1 << 20


# -- inputs and how a map reads chunks back -----------------------------------------------------

TEXT = "first line\nsecond, é and \U0001F600\r\n\n\ttabbed\nno newline at end".encode()


def test_a_map_reading_chunks_of_text_gets_the_original_lines():
    data = b"".join(b"%d: " % i + TEXT for i in range(300))
    original = list(line_reader(io.BytesIO(data)))
    chunks = list(chunk_input(io.BytesIO(data), chunk_bytes=2048, max_record_bytes=1024))
    assert len(chunks) > 3
    for ch in chunks:
        assert r.is_record_file(ch.data)
    entries = [entry for ch in chunks for entry in default_map_reader(io.BytesIO(ch.data))]
    assert entries == original
    assert all(type(entry) is str for entry in entries)
    assert "".join(entries).encode() == data


def test_chunks_of_a_record_file_give_a_map_the_same_pairs():
    pairs = [(f"key{i}", {"n": i}) for i in range(2000)]
    source = io.BytesIO()
    writer = r.RecordWriter(source)
    writer.add_many(pairs)
    writer.close()
    source.seek(0)
    chunks = list(chunk_input(source, chain_reader, chunk_bytes=4096, max_record_bytes=1024))
    check_chunks(chunks, pairs, 4096)
    assert [e for ch in chunks for e in default_map_reader(io.BytesIO(ch.data))] == pairs


def test_chunk_input_leaves_the_file_open_and_names_it_in_errors():
    fd = io.BytesIO(b"ok\n" + b"y" * 3000 + b"\n")
    with pytest.raises(RecordTooLarge, match="record 1 of data/in.txt"):
        list(chunk_input(fd, name="data/in.txt", chunk_bytes=2048, max_record_bytes=1024))
    assert not fd.closed
    fd = io.BytesIO(b"a\nb\n")
    assert [decode(ch) for ch in chunk_input(fd)] == [["a\n", "b\n"]]
    assert not fd.closed and fd.read() == b""


def test_chunk_input_passes_disco_reader_arguments():
    seen = []

    def reader(fd, size, url, params):
        seen.append((size, url, params))
        for line in fd:
            yield line.split()

    fd = io.BytesIO(b"a b\nc d\n")
    chunks = chunk_input(fd, reader, name="raw://x", size=8, params={"p": 1})
    assert seen == []                       # the reader starts with the first chunk wanted
    assert [decode(ch) for ch in chunks] == [[[b"a", b"b"], [b"c", b"d"]]]
    assert seen == [(8, "raw://x", {"p": 1})]


def test_the_module_line_reader_matches_task_io():
    assert list(c.line_reader(io.BytesIO(TEXT))) == list(line_reader(io.BytesIO(TEXT)))


def test_an_abandoned_chunking_leaves_the_file_open(tmp_path):
    import gc
    path = tmp_path / "in.txt"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(20_000)))
    with open(path, "rb", buffering=0) as fd:       # a raw, unbuffered file works too
        chunks = chunk_input(fd, chunk_bytes=4096, max_record_bytes=1024)
        first = next(chunks)
        del chunks
        gc.collect()
        assert not fd.closed
        assert decode(first)[0] == "line 0\n"


def test_any_object_with_read_is_an_input():
    class Stream:
        def __init__(self, data: bytes):
            self._data = io.BytesIO(data)

        def read(self, n=-1):
            return self._data.read(min(n, 5) if n and n > 0 else n)   # short reads

    chunks = list(chunk_input(Stream(TEXT)))
    assert [rec for ch in chunks for rec in decode(ch)] == list(line_reader(io.BytesIO(TEXT)))


def test_memory_stays_near_a_chunk_however_long_the_input():
    import tracemalloc
    chunk_bytes = 256 << 10
    rng = random.Random(5)
    lines = (f"{i} {rng.getrandbits(160):040x}\n" for i in range(50_000))
    tracemalloc.start()
    try:
        total = 0
        for ch in chunk_records(lines, chunk_bytes, 1 << 16):
            total += ch.size
            del ch
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total > 4 * chunk_bytes          # far more data than a chunk went through
    assert peak < 3 * chunk_bytes, peak
