"""Results read as frames: ``iter_replica_frames``, ``skip_records`` and ``result_iterator``.

Copies of one result written with different frame sizes, so a failover lands in the middle of
the next copy's frame; each record must come out exactly once, in order."""
from __future__ import annotations

import inspect
from itertools import chain
from pathlib import Path

import pytest

from disco import core
from disco.error import RecordFormatError
from disco.worker import replicas
from disco.worker.replicas import iter_replica_frames, iter_replicas, skip_records
from disco.worker.task_io import chain_reader
from shuffle.record import RecordWriter

pytestmark = pytest.mark.timeout(30)

PAIRS = [(f"k{i}", i) for i in range(100)]


def write_copy(path: Path, frame_records: int, pairs=PAIRS) -> str:
    with open(path, "wb") as f:
        writer = RecordWriter(f, frame_records=frame_records)
        writer.add_many(pairs)
        writer.close()
    return str(path)


def corrupt_frame(path: str, frame_records: int, index: int, pairs=PAIRS) -> None:
    """Flip the last byte of frame ``index`` (0-based): that frame fails its checksum, the
    ``index * frame_records`` records before it read fine."""
    prefix = Path(path + ".prefix")  # the same writer on the pairs up to that frame's end
    write_copy(prefix, frame_records, pairs[:(index + 1) * frame_records])
    data = bytearray(Path(path).read_bytes())
    data[prefix.stat().st_size - 1] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def flat(frames) -> list:
    return list(chain.from_iterable(frames))


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 6, 9])
def test_skip_records_drops_whole_frames_and_cuts_only_the_first_kept(count):
    frames = [[1, 2, 3], [4, 5], [6]]
    out = list(skip_records(frames, count))
    assert flat(out) == [1, 2, 3, 4, 5, 6][count:]
    kept = [f for f in frames if f[-1] > count]
    assert all(a is b for a, b in zip(out[1:], kept[1:]))  # only the first is copied


def test_a_failover_mid_frame_gives_each_record_once(tmp_path):
    bad = write_copy(tmp_path / "bad", 7)
    corrupt_frame(bad, 7, 4)  # 28 records read, then a bad frame
    good = write_copy(tmp_path / "good", 10)  # 28 is inside its third frame
    with pytest.raises(RecordFormatError):
        flat(iter_replica_frames([bad]))
    frames = list(iter_replica_frames([bad, good]))
    assert flat(frames) == PAIRS
    # the bad copy's 4 frames, then the good one's: 2 dropped, the third cut at 8
    assert [len(f) for f in frames] == [7] * 4 + [2] + [10] * 7
    assert list(iter_replicas([bad, good], chain_reader)) == PAIRS


def test_skip_counts_add_up_across_two_failovers(tmp_path):
    one = write_copy(tmp_path / "one", 7)
    corrupt_frame(one, 7, 4)  # fails after 28
    two = write_copy(tmp_path / "two", 10)
    corrupt_frame(two, 10, 6)  # fails after 60: 32 more than the first gave
    three = write_copy(tmp_path / "three", 13)  # 60 = 4 frames of 13, then 8 into the 5th
    seen = []
    frames = list(iter_replica_frames([one, two, three], notifier=seen.append))
    assert flat(frames) == PAIRS
    assert [len(f) for f in frames] == [7] * 4 + [2] + [10] * 3 + [5, 13, 13, 9]
    assert seen == [one, two, three]


def test_a_failing_readers_records_before_the_error_are_given(tmp_path, monkeypatch):
    monkeypatch.setattr(replicas, "BATCH_RECORDS", 4)
    urls = [write_copy(tmp_path / "a", 10), write_copy(tmp_path / "b", 10)]

    def reader(fd, size, url, params):  # the first copy's node goes away after 6 records
        for i, pair in enumerate(chain_reader(fd)):
            if url == urls[0] and i == 6:
                raise OSError("connection reset")
            yield pair

    assert list(iter_replicas(urls, reader)) == PAIRS

    def buggy(fd, size, url, params):
        yield from PAIRS[:6]
        raise ZeroDivisionError("reader bug")

    got = []
    with pytest.raises(ZeroDivisionError):
        for pair in iter_replicas(urls, buggy):
            got.append(pair)
    assert got == PAIRS[:6]


def test_other_readers_come_in_batches_with_params(tmp_path, monkeypatch):
    monkeypatch.setattr(replicas, "BATCH_RECORDS", 8)
    url = write_copy(tmp_path / "a", 10)
    frames = list(iter_replica_frames(url, lambda fd, size, u, p: (x * p for x in range(20)), 3))
    assert frames == [[0], [3, 6, 9, 12, 15, 18, 21, 24], [27, 30, 33, 36, 39, 42, 45, 48],
                      [51, 54, 57]]  # the first record alone: its size sets the batch
    assert list(iter_replicas(url, lambda fd, size, u: [b"x", "y"])) == [b"x", "y"]


def test_big_blocks_come_about_a_mib_a_frame(tmp_path, monkeypatch):
    url = write_copy(tmp_path / "a", 10)
    blocks = [b"%d" % i * (300 << 10) for i in range(10)]  # 300 KiB each
    frames = list(iter_replica_frames(url, lambda fd, size, u: iter(blocks)))
    assert [len(f) for f in frames] == [1, 3, 3, 3] and sum(frames, []) == blocks
    text = ["y" * (2 << 20)] * 3  # bigger than a MiB: one a frame
    assert [len(f) for f in iter_replica_frames(url, lambda fd, size, u: text)] == [1, 1, 1]


def test_a_lost_result_remade_continues_mid_frame(tmp_path, monkeypatch):
    lost = write_copy(tmp_path / "lost", 7)
    corrupt_frame(lost, 7, 4)
    remade = write_copy(tmp_path / "remade", 10)
    asked = []
    monkeypatch.setattr(core, "_remade", lambda url, master: asked.append(url) or remade)
    frames = list(core._read_or_remake(lost, chain_reader, None, None, None))
    assert flat(frames) == PAIRS and asked == [lost]
    assert [len(f) for f in frames] == [7] * 4 + [2] + [10] * 7


def test_a_read_that_fails_with_no_remake_raises(tmp_path, monkeypatch):
    lost = write_copy(tmp_path / "lost", 7)
    corrupt_frame(lost, 7, 4)
    monkeypatch.setattr(core, "_remade", lambda url, master: None)
    with pytest.raises(RecordFormatError):
        flat(core._read_or_remake(lost, chain_reader, None, None, None))


def test_result_iterator_is_a_lazy_generator_over_replica_lists(tmp_path):
    bad = write_copy(tmp_path / "bad", 7)
    corrupt_frame(bad, 7, 4)
    good = write_copy(tmp_path / "good", 10)
    other = write_copy(tmp_path / "other", 3, [(b"k", "v")] * 5)
    seen = []
    results = core.result_iterator([[bad, good], other], notifier=seen.append)
    assert inspect.isgenerator(results) and seen == []
    assert list(results) == PAIRS + [(b"k", "v")] * 5
    assert seen == [bad, good, other]
    assert list(core.result_iterator([other], reader=lambda fd, size, u, p: [p], params=7)) == [7]
