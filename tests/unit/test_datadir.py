"""The data dir's small files: incarnation, members, pid files, content-addressed job packs."""
from __future__ import annotations

import os
import stat

import pytest

from mesh.datadir import DataDir, digest_of


@pytest.fixture
def d(tmp_path):
    data = DataDir(tmp_path / "data", tmp_path / "data" / "disco.pid")
    data.prepare()
    return data


def test_incarnation_grows_by_one_each_start(d):
    assert [d.bump_incarnation() for _ in range(3)] == [1, 2, 3]
    (d.root / "incarnation").write_text("garbage")
    assert d.bump_incarnation() == 1


def test_members_round_trip_and_garbage_is_no_members(d):
    assert d.known_peers() == []
    d.remember_members({"h:2", "h:1"})
    assert d.known_peers() == ["h:1", "h:2"]
    (d.root / "members.json").write_text("{not json")
    assert d.known_peers() == []


def test_jobpack_is_stored_once_read_only_under_its_hash(d):
    pack = b"a job pack"
    digest = digest_of(pack)
    d.store_jobpack(digest, pack)
    path = d.jobpack_path(digest)
    assert path.read_bytes() == pack
    assert not os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    d.store_jobpack(digest, pack)  # again: already there, nothing rewritten
    assert [p.name for p in path.parent.iterdir()] == [digest]


def test_a_pack_that_does_not_match_its_hash_is_refused_and_leaves_nothing(d):
    with pytest.raises(ValueError, match="does not match"):
        d.store_jobpack(digest_of(b"one"), b"other")
    assert list((d.root / "jobpacks").iterdir()) == []


def test_pid_file_is_removed_only_if_it_is_ours(d):
    d.write_pid("n", "h:1")
    assert d.pid_file.read_text().strip() == str(os.getpid())
    d.pid_file.write_text("1\n")
    d.remove_pid()
    assert d.pid_file.exists()
    d.write_pid("n", "h:1")
    d.remove_pid()
    assert not d.pid_file.exists()


def test_job_paths_name_the_pack_only_when_asked(d):
    assert len(d.job_paths("J@1")) == 2
    assert d.job_paths("J@1", "ab")[-1] == d.jobpack_path("ab")


def test_a_pack_stored_again_starts_its_grace_anew(d):
    pack = b"pack"
    digest = digest_of(pack)
    d.store_jobpack(digest, pack)
    old = d.jobpack_path(digest).stat().st_mtime - 3600
    os.utime(d.jobpack_path(digest), (old, old))
    assert d.stale_jobpacks(set(), 600) == [d.jobpack_path(digest)]
    assert d.stale_jobpacks({digest}, 600) == []
    d.store_jobpack(digest, pack)
    assert d.stale_jobpacks(set(), 600) == []
