"""The record format (SPEC section 7): round trips, framing, streaming, corruption, versions."""
from __future__ import annotations

import io
import random
import struct

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from disco.error import RecordFormatError
from shuffle import record as r
from shuffle import recordfile

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(), st.binary(), st.complex_numbers(allow_nan=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.frozensets(st.integers(), max_size=4),
    ),
    max_leaves=12,
)
pairs_lists = st.lists(st.tuples(values, values), max_size=40)


def write(pairs, **kw) -> bytes:
    out = io.BytesIO()
    writer = r.RecordWriter(out, **kw)
    writer.add_many(pairs)
    writer.close()
    assert writer.bytes_written == len(out.getvalue())
    assert writer.records == len(pairs)
    return out.getvalue()


def read(data: bytes) -> list:
    return list(r.iter_records(io.BytesIO(data)))


def word_pairs(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [(f"word{rng.randrange(1000)}", rng.randrange(100)) for _ in range(n)]


@settings(max_examples=150, deadline=None)
@given(pairs_lists, st.sampled_from([r.CODEC_NONE, r.CODEC_LZ4]), st.integers(1, 7))
def test_round_trip_of_arbitrary_objects(pairs, codec, frame_records):
    assert read(write(pairs, codec=codec, frame_records=frame_records)) == pairs


@settings(max_examples=100, deadline=None)
@given(pairs_lists)
def test_frame_round_trip(pairs):
    assert r.decode_frame(r.encode_frame(pairs)) == pairs
    assert r.decode_frame(memoryview(r.encode_frame(pairs, r.CODEC_NONE))) == pairs


def test_shared_and_cyclic_values_round_trip():
    cyclic: list = []
    cyclic.append(cyclic)
    shared = [1, 2]
    (key, value), = r.decode_frame(r.encode_frame([("k", cyclic)]))
    assert value[0] is value
    assert r.decode_frame(r.encode_frame([(shared, shared)])) == [([1, 2], [1, 2])]


def test_add_add_many_and_flush_mix():
    out = io.BytesIO()
    writer = r.RecordWriter(out, frame_records=3)
    writer.add("a", 1)
    writer.add_many([("b", 2), ("c", 3), ("d", 4)])
    writer.add_many(iter([("e", 5)]))
    writer.flush()
    writer.add_many(("f", i) for i in range(7))
    writer.close()
    writer.close()
    expected = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)] + [("f", i) for i in range(7)]
    assert read(out.getvalue()) == expected
    frames = list(r.iter_frames(io.BytesIO(out.getvalue())))
    assert [len(f) for f in frames] == [3, 2, 3, 3, 1]


def test_add_frame_writes_its_own_frame_after_what_is_buffered(monkeypatch):
    out = io.BytesIO()
    writer = r.RecordWriter(out, frame_records=3)
    writer.add("a", 1)
    writer.add_frame([("b", 2), ("c", 3), ("d", 4), ("e", 5)])  # bigger than frame_records
    writer.add_frame([])
    writer.add_many([("f", 6)])
    monkeypatch.setattr(r, "MAX_FRAME_RECORDS", 2)
    writer.add_frame([("g", 7), ("h", 8), ("i", 9)])  # too big for a frame: framed as usual
    writer.close()
    assert read(out.getvalue()) == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 6),
                                    ("g", 7), ("h", 8), ("i", 9)]
    frames = list(r.iter_frames(io.BytesIO(out.getvalue())))
    assert [len(f) for f in frames] == [1, 4, 3, 1] and writer.records == 9


def test_many_frames_adaptive():
    pairs = word_pairs(60_000)
    data = write(pairs, frame_bytes=16 << 10)
    frames = list(r.iter_frames(io.BytesIO(data)))
    assert len(frames) > 10
    assert [p for f in frames for p in f] == pairs
    assert len(data) < len(write(pairs, codec=r.CODEC_NONE))


def test_empty_file_and_tiny_frame_is_uncompressed():
    assert read(write([])) == []
    assert write([]) == r.FILE_HEADER.pack(r.FILE_MAGIC, r.VERSION)
    frame = r.encode_frame([("a", 1)])
    assert r.FRAME_HEADER.unpack_from(frame)[1] == r.CODEC_NONE


def test_header_layout():
    assert r.FILE_HEADER.size == 8 and r.FRAME_HEADER.size == 24
    data = write([("k", "v")] * 100)
    assert data[:5] == b"DREC\x01" and data[5:8] == b"\0\0\0"
    magic, codec, flags, plen, raw_len, n, checksum = r.FRAME_HEADER.unpack_from(data, 8)
    assert (magic, codec, flags, n) == (b"FR", r.CODEC_LZ4, 0, 100)
    assert len(data) == 8 + 24 + plen and plen < raw_len


def test_write_file_and_read_file(tmp_path):
    path = tmp_path / "out.drec"
    pairs = word_pairs(5000)
    assert recordfile.write_file(path, pairs, fsync=True) == 5000
    assert list(recordfile.read_file(path)) == pairs
    assert recordfile.write_file(str(path), iter(pairs[:10])) == 10
    assert list(recordfile.read_file(path)) == pairs[:10]
    assert [p.name for p in tmp_path.iterdir()] == ["out.drec"]


def test_write_file_leaves_nothing_on_failure(tmp_path):
    def bad():
        yield ("a", 1)
        raise RuntimeError("map failed")

    with pytest.raises(RuntimeError):
        recordfile.write_file(tmp_path / "x", bad())
    assert list(tmp_path.iterdir()) == []


def test_is_record_file(tmp_path):
    data = write([("a", 1)])
    assert r.is_record_file(data) and r.is_record_file(memoryview(data)[:4])
    assert not r.is_record_file(b"hello world") and not r.is_record_file(b"")
    f = io.BytesIO(data)
    f.seek(0)
    assert r.is_record_file(f) and f.tell() == 0
    path = tmp_path / "f"
    path.write_bytes(data)
    with open(path, "rb") as fh:
        assert r.is_record_file(fh)
        assert list(r.iter_records(fh)) == [("a", 1)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 4))
def test_frame_decoder_random_chunks(seed, nfiles):
    rng = random.Random(seed)
    files = [word_pairs(rng.randrange(0, 300), seed + i) for i in range(nfiles)]
    stream = b"".join(write(p, frame_records=rng.randrange(1, 60)) for p in files)
    decoder = r.FrameDecoder()
    got, pos = [], 0
    while pos < len(stream):
        step = rng.choice([1, 2, 7, 23, 100, 1000, 5000])
        for frame in decoder.feed(stream[pos:pos + step]):
            got.extend(frame)
        pos += step
    decoder.close()
    assert got == [p for f in files for p in f]
    assert decoder.records == len(got) and decoder.pending == 0


def test_frame_decoder_without_file_header_and_truncation():
    frame = r.encode_frame(word_pairs(50))
    decoder = r.FrameDecoder()
    assert decoder.feed(frame + frame[:30]) == [word_pairs(50)]
    assert decoder.pending > 0
    with pytest.raises(RecordFormatError, match="truncated"):
        decoder.close()


def test_frame_decoder_rejects_garbage_and_oversized_frames():
    with pytest.raises(RecordFormatError, match="magic"):
        r.FrameDecoder().feed(b"GET / HTTP/1.1\r\n")
    frame = r.encode_frame(word_pairs(500))
    with pytest.raises(RecordFormatError, match="limit"):
        r.FrameDecoder(max_frame_bytes=100).feed(frame[:24])


def corrupt(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x40]) + data[offset + 1:]


@pytest.mark.parametrize("where", ["payload", "checksum", "length", "codec", "magic", "flags"])
def test_corrupt_byte_is_an_error(where):
    data = write(word_pairs(2000), frame_records=500)
    offset = {"payload": 8 + 24 + 100, "checksum": 8 + 16, "length": 8 + 5,
              "codec": 8 + 2, "magic": 8, "flags": 8 + 3}[where]
    with pytest.raises(RecordFormatError):
        read(corrupt(data, offset))
    decoder = r.FrameDecoder()
    with pytest.raises(RecordFormatError):
        decoder.feed(corrupt(data, offset))
        decoder.close()  # a grown length only waits for more bytes: the end shows the damage


def test_checksum_message_and_decode_frame_length():
    frame = r.encode_frame(word_pairs(300))
    with pytest.raises(RecordFormatError, match="checksum"):
        r.decode_frame(corrupt(frame, len(frame) - 1))
    with pytest.raises(RecordFormatError, match="length"):
        r.decode_frame(frame + b"x")
    with pytest.raises(RecordFormatError, match="shorter"):
        r.decode_frame(frame[:10])


def test_valid_checksum_over_garbage_is_still_an_error():
    payload = b"not a pickle at all"
    header = r.FRAME_HEADER.pack(b"FR", r.CODEC_NONE, 0, len(payload), len(payload), 1,
                                 xxhash.xxh64_intdigest(payload))
    with pytest.raises(RecordFormatError, match="cannot be decoded"):
        r.decode_frame(header + payload)


@pytest.mark.parametrize("keep", [0, 3, 8 + 10, 8 + 24, 8 + 24 + 50, -1])
def test_truncated_file_is_an_error(keep):
    data = write(word_pairs(3000), frame_records=1000)
    with pytest.raises(RecordFormatError, match="truncated"):
        read(data[:keep])


def test_wrong_version_names_both_versions():
    data = write([("a", 1)])
    bad = data[:4] + struct.pack("<B", 7) + data[5:]
    with pytest.raises(RecordFormatError) as err:
        read(bad)
    assert "version 7" in str(err.value) and f"version {r.VERSION}" in str(err.value)
    with pytest.raises(RecordFormatError, match="version 7"):
        r.FrameDecoder().feed(bad)


def test_not_a_record_file():
    with pytest.raises(RecordFormatError, match="not a record file"):
        read(b"PK\x03\x04 zip file")


def test_bad_codec_arguments():
    with pytest.raises(ValueError):
        r.RecordWriter(io.BytesIO(), codec=9)
    with pytest.raises(ValueError):
        r.encode_frame([("a", "b" * 100)], codec=9)
    with pytest.raises(ValueError):
        r.RecordWriter(io.BytesIO(), frame_records=0)
