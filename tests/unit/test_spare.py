"""Spare files (``mesh.spare``): a purged job's small files are kept for the next outputs, and
an output written into one holds its own bytes only."""
from __future__ import annotations

import os
import time

import pytest

from disco.worker import task as task_mod
from mesh import spare
from mesh.dataserver import servable
from mesh.janitor import Janitor
from shuffle import record

pytestmark = pytest.mark.timeout(60)


def files(folder, sizes: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        (folder / name).write_bytes(b"s" * size)


def test_recycling_keeps_small_files_and_deletes_the_rest(tmp_path):
    spares = tmp_path / ".spare"
    spares.mkdir()
    job = tmp_path / "job"
    files(job / "w1", {"a": 10, "b": spare.SPARE_MAX_BYTES, "big": spare.SPARE_MAX_BYTES + 1})
    files(job / "w2", {"c": 0})
    os.symlink(job / "w1" / "a", job / "w2" / "link")
    assert spare.recycle_tree(job, spares) == 3
    assert not job.exists()
    assert sorted(p.stat().st_size for p in spares.iterdir()) == [0, 10, spare.SPARE_MAX_BYTES]


def test_recycling_stops_at_the_room_left(tmp_path, monkeypatch):
    monkeypatch.setattr(spare, "SPARE_FILES", 3)
    spares = tmp_path / ".spare"
    files(spares, {"old": 1})
    files(tmp_path / "job", {f"f{i}": 1 for i in range(5)})
    assert spare.recycle_tree(tmp_path / "job", spares) == 2
    assert len(os.listdir(spares)) == 3 and not (tmp_path / "job").exists()


def test_without_a_spare_dir_everything_is_deleted(tmp_path):
    files(tmp_path / "job", {"a": 1})
    assert spare.recycle_tree(tmp_path / "job", tmp_path / "missing") == 0
    assert not (tmp_path / "job").exists() and not (tmp_path / "missing").exists()


def test_create_takes_a_spare_file_then_makes_new_ones(tmp_path):
    spares = tmp_path / ".spare"
    files(spares, {"0-x": 100})
    inode = (spares / "0-x").stat().st_ino
    taker = spare.Spares(spares)
    with taker.create(tmp_path / "one") as f:
        assert f.tell() == 0 and f.writable()
    assert (tmp_path / "one").stat().st_ino == inode and taker.taken == 1
    with taker.create(tmp_path / "two"):  # none left: a new file, and no listing for RELIST_S
        pass
    files(spares, {"0-y": 1})
    with taker.create(tmp_path / "three"):
        pass
    assert taker.taken == 1 and (spares / "0-y").exists()
    assert (tmp_path / "two").stat().st_size == (tmp_path / "three").stat().st_size == 0
    taker._empty_until = 0.0  # RELIST_S later
    with taker.create(tmp_path / "four"):
        pass
    assert taker.taken == 2 and not (spares / "0-y").exists()


def test_a_file_kept_just_now_and_a_name_not_ours_are_not_taken(tmp_path, monkeypatch):
    spares = tmp_path / ".spare"
    spares.mkdir()
    files(tmp_path / "job", {"a": 1})
    files(spares, {"stray": 1})
    assert spare.recycle_tree(tmp_path / "job", spares) == 1
    with spare.Spares(spares).create(tmp_path / "new"):  # within QUARANTINE_S
        pass
    assert len(os.listdir(spares)) == 2
    monkeypatch.setattr(spare, "QUARANTINE_S", -1.0)  # as if QUARANTINE_S had passed
    taker = spare.Spares(spares)
    with taker.create(tmp_path / "later"):
        pass
    assert taker.taken == 1 and os.listdir(spares) == ["stray"]


def test_a_spare_taken_by_another_worker_is_skipped(tmp_path):
    spares = tmp_path / ".spare"
    files(spares, {"0-x": 1, "0-y": 1})
    taker = spare.Spares(spares)
    taker._next()  # listed both, gave one
    for name in os.listdir(spares):  # another worker takes what is left
        os.rename(spares / name, tmp_path / f"theirs-{name}")
    taker._names.append("0-x")
    with taker.create(tmp_path / "mine"):
        pass
    assert taker.taken == 0 and (tmp_path / "mine").exists()


def test_an_output_written_into_a_spare_file_holds_only_its_own_records(tmp_path):
    ctx = task_mod.JobContext("J@1", {"partitions": 1}, {}, "n1", "127.0.0.1:1", tmp_path)
    spares = spare.spare_dir(tmp_path / "vol0")
    files(spares, {"0-old": spare.SPARE_MAX_BYTES})
    (spares / "0-old").write_bytes(os.urandom(spare.SPARE_MAX_BYTES))
    out = task_mod.Output(ctx, "map-0")
    out.add_many([("k", 1)])
    [done] = out.commit()
    path = tmp_path / done["url"].split("/", 3)[3]
    assert ctx.spares().taken == 1 and not os.listdir(spares)
    with open(path, "rb") as f:
        assert list(record.iter_records(f)) == [("k", 1)]
    assert done["size"] == path.stat().st_size < spare.SPARE_MAX_BYTES


def test_the_janitor_keeps_a_purged_jobs_small_files_under_a_spare_root(tmp_path):
    vol, other = tmp_path / "vol0", tmp_path / "jobs"
    files(vol / "jobs" / "J" / "w1", {"a": 1, "b": 2})
    files(other / "J", {"state": 1})
    janitor = Janitor([vol, other], "n1", spare_roots=[vol])
    janitor.start()
    try:
        assert janitor.remove(vol / "jobs" / "J") and janitor.remove(other / "J")
        deadline = time.monotonic() + 30
        while janitor.pending():
            assert time.monotonic() < deadline, "the janitor did not finish"
            time.sleep(0.01)
    finally:
        janitor.stop(5)
    assert len(os.listdir(spare.spare_dir(vol))) == 2
    assert not (other / spare.SPARE_DIR).exists()
    assert sorted(os.listdir(vol)) == [spare.SPARE_DIR, "jobs"]
    assert os.listdir(other) == []


def test_spare_files_are_not_served():
    assert not servable(("vol0", spare.SPARE_DIR, "123-4-5"))
    assert servable(("vol0", "jobs", "J", "w1", "map-0-0.drec"))
