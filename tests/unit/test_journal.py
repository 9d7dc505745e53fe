"""The journal on disk (mesh/journal.py): Raft's durable writes read back after a restart.

Each test writes through one ``Journal`` and reads with a fresh one on the same directory, as a
restarted daemon would.
"""
from __future__ import annotations

import msgpack
import pytest

from disco.error import DataError
from mesh.journal import Journal
from mesh.raft import Persist, Snapshot, State

VOTERS = {"type": "voters", "voters": ["a", "b"]}


def job(n) -> dict:
    return {"type": "job", "n": n}


def entries(first: int, last: int, term: int = 1) -> tuple:
    return tuple((term, job(n)) for n in range(first, last + 1))


def reopen(tmp_path) -> State:
    return Journal(tmp_path).load()


def power_cut(*_):
    raise OSError("power cut")


def test_an_empty_directory_loads_as_an_empty_state(tmp_path):
    assert Journal(tmp_path).load() == State(0, None, [], None)


def test_term_vote_and_entries_round_trip(tmp_path):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, "a", None, ((0, VOTERS),) + entries(2, 3)))
    j.persist(Persist(2, None, None, ()))
    assert reopen(tmp_path) == State(2, None, [(0, VOTERS), *entries(2, 3)], None)


def test_a_truncation_drops_the_suffix_from_its_index(tmp_path):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, None, None, entries(1, 4)))
    j.persist(Persist(2, None, 3, entries(3, 3, term=2)))
    assert reopen(tmp_path).log == [*entries(1, 2), *entries(3, 3, term=2)]


def test_a_snapshot_round_trips_and_the_log_keeps_only_the_entries_after_it(tmp_path):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, "a", None, entries(1, 5)))
    snap = Snapshot(3, 1, ("a", "b"), b"\x00state\xff")
    j.persist(Persist(1, "a", None, (), snap))
    assert (tmp_path / "journal" / "snapshot").is_file()
    assert reopen(tmp_path) == State(1, "a", list(entries(4, 5)), snap)


def test_after_a_compaction_indexes_stay_absolute(tmp_path):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, None, None, entries(1, 5)))
    j.persist(Persist(1, None, None, (), Snapshot(3, 1, (), b"s")))
    j.persist(Persist(1, None, None, entries(6, 7)))
    j.persist(Persist(2, None, 5, entries(5, 5, term=2)))  # drop 5.. (absolute), append 5
    state = reopen(tmp_path)
    assert state.snapshot.index == 3
    assert state.log == [*entries(4, 4), *entries(5, 5, term=2)]
    j.persist(Persist(2, None, None, (), Snapshot(5, 2, (), b"t")))
    assert reopen(tmp_path) == State(2, None, [], Snapshot(5, 2, (), b"t"))


def test_an_installed_snapshot_with_truncate_from_drops_a_conflicting_log(tmp_path):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, None, None, entries(1, 6)))
    j.persist(Persist(2, None, 5, (), Snapshot(4, 2, ("a",), b"leader's")))
    assert reopen(tmp_path) == State(2, None, [], Snapshot(4, 2, ("a",), b"leader's"))


def test_a_torn_tail_is_dropped_and_appending_goes_on_after_it(tmp_path):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, None, None, entries(1, 3)))
    j.close()
    log = tmp_path / "journal" / "log"
    good = log.stat().st_size
    with open(log, "ab") as f:
        f.write(msgpack.packb([1, job(4)], use_bin_type=True)[:-3])
    j = Journal(tmp_path)
    assert j.load().log == list(entries(1, 3))
    assert log.stat().st_size == good
    j.persist(Persist(1, None, None, entries(4, 4)))
    assert reopen(tmp_path).log == list(entries(1, 4))


def test_a_torn_tail_after_a_compaction_keeps_the_log_base(tmp_path):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, None, None, entries(1, 4)))
    j.persist(Persist(1, None, None, (), Snapshot(2, 1, (), b"s")))
    j.close()
    with open(tmp_path / "journal" / "log", "ab") as f:
        f.write(b"\x92\x01")  # [1, ... cut short
    state = Journal(tmp_path).load()
    assert state.snapshot.index == 2 and state.log == list(entries(3, 4))
    assert reopen(tmp_path).log == list(entries(3, 4))


def test_a_crash_between_snapshot_and_log_rewrite_is_finished_on_load(tmp_path, monkeypatch):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, None, None, entries(1, 5)))
    monkeypatch.setattr(j, "_rewrite", power_cut)  # after the snapshot, before the log
    with pytest.raises(OSError):
        j.persist(Persist(1, None, None, (), Snapshot(3, 1, (), b"s")))
    monkeypatch.undo()
    assert reopen(tmp_path) == State(1, None, list(entries(4, 5)), Snapshot(3, 1, (), b"s"))


def test_a_crash_before_dropping_a_conflicting_log_drops_it_on_load(tmp_path, monkeypatch):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, None, None, entries(1, 5)))
    monkeypatch.setattr(j, "_rewrite", power_cut)
    with pytest.raises(OSError):  # entry 3 has term 1 here, 2 in the leader's snapshot
        j.persist(Persist(2, None, 4, (), Snapshot(3, 2, (), b"s")))
    monkeypatch.undo()
    assert reopen(tmp_path) == State(2, None, [], Snapshot(3, 2, (), b"s"))


def test_a_log_that_starts_after_a_missing_snapshot_is_an_error(tmp_path):
    j = Journal(tmp_path)
    j.load()
    j.persist(Persist(1, None, None, entries(1, 5)))
    j.persist(Persist(1, None, None, (), Snapshot(3, 1, (), b"s")))
    (tmp_path / "journal" / "snapshot").unlink()
    with pytest.raises(DataError, match="snapshot"):
        reopen(tmp_path)


def test_size_bytes_counts_every_file_and_shrinks_after_a_compaction(tmp_path):
    j = Journal(tmp_path)
    j.load()
    assert j.size_bytes() == 0
    big = tuple((1, {"type": "submit", "jobpack": b"x" * 10_000}) for _ in range(10))
    j.persist(Persist(1, "a", None, big))
    files = sorted((tmp_path / "journal").iterdir())
    assert [f.name for f in files] == ["log", "state"]
    assert j.size_bytes() == sum(f.stat().st_size for f in files) > 100_000
    j.persist(Persist(1, "a", None, (), Snapshot(10, 1, (), b"tiny")))
    assert 0 < j.size_bytes() < 1000
