"""disco.worker.replicas.iter_replicas on real record files: a copy that fails part way (a
corrupt frame, a vanished file) hands over to the next copy, each record coming out once."""
from __future__ import annotations

from pathlib import Path

import pytest

from disco.error import InputError, RecordFormatError
from disco.worker.replicas import iter_replicas
from disco.worker.task_io import chain_reader
from shuffle.record import RecordWriter

pytestmark = pytest.mark.timeout(30)

PAIRS = [(f"k{i}", i) for i in range(100)]


def write_copy(path: Path, pairs=PAIRS, frame_records: int = 10) -> str:
    with open(path, "wb") as f:
        writer = RecordWriter(f, frame_records=frame_records)
        writer.add_many(pairs)
        writer.close()
    return str(path)


def corrupt_tail(path: str, back: int = 5) -> None:
    """Flip a byte inside the last frame's payload: its checksum no longer matches."""
    data = bytearray(Path(path).read_bytes())
    data[-back] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def test_a_good_first_copy_is_read_alone(tmp_path):
    seen = []
    urls = [write_copy(tmp_path / "a"), str(tmp_path / "missing")]
    assert list(iter_replicas(urls, chain_reader, None, notifier=seen.append)) == PAIRS
    assert seen == [urls[0]]


def test_a_copy_corrupt_part_way_continues_from_the_next_without_repeats(tmp_path):
    bad, good = write_copy(tmp_path / "bad"), write_copy(tmp_path / "good")
    corrupt_tail(bad)
    with pytest.raises(RecordFormatError):  # the corrupt copy alone fails, after 90 records
        got = []
        for pair in iter_replicas([bad], chain_reader):
            got.append(pair)
    assert got == PAIRS[:90]
    assert list(iter_replicas([bad, good], chain_reader)) == PAIRS


def test_a_missing_first_copy_is_skipped(tmp_path):
    good = write_copy(tmp_path / "good")
    assert list(iter_replicas([str(tmp_path / "gone"), good])) == PAIRS


def test_every_copy_failing_names_each(tmp_path):
    one, two = write_copy(tmp_path / "one"), write_copy(tmp_path / "two")
    corrupt_tail(one)
    corrupt_tail(two, back=40)
    with pytest.raises(InputError) as info:
        list(iter_replicas([one, two], chain_reader))
    assert one in str(info.value) and two in str(info.value)


def test_an_error_of_the_readers_own_code_is_raised_at_once(tmp_path):
    calls = []

    def reader(fd, size, url, params):
        calls.append(url)
        raise ZeroDivisionError("reader bug")

    urls = [write_copy(tmp_path / "a"), write_copy(tmp_path / "b")]
    with pytest.raises(ZeroDivisionError):
        list(iter_replicas(urls, reader))
    assert calls == [urls[0]]


def test_readers_get_params_only_with_four_arguments(tmp_path):
    url = write_copy(tmp_path / "a")
    assert list(iter_replicas(url, lambda fd, size, u: chain_reader(fd))) == PAIRS
    assert list(iter_replicas(url, lambda fd, size, u, p: [p], params=7)) == [7]
