"""storage.volume on real files in tmp_path: writes, reads, crashes, corruption, scrubbing."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
import time

import pytest
import xxhash

from common.error import DataError, DataNotFound, UsageError
from mesh import janitor
from storage import volume
from storage.volume import BlobExists, BlobInfo, ChecksumMismatch, DiskFull, InvalidBlobName, \
    Scrubber, Volumes, check_name, hash_dir

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def vols(tmp_path):
    return Volumes(tmp_path / "data")


def put(vols: Volumes, name: str, data: bytes, **commit) -> BlobInfo:
    with vols.writer(name, size_hint=len(data)) as w:
        for i in range(0, len(data), 1000):
            w.write(memoryview(data)[i:i + 1000])
        return w.commit(**commit)


def files_in(root) -> list[str]:
    """Every file under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def corrupt(path, offset: int = 0) -> None:
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


# -- names --

@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x.xxh3", "a" * 251, "é", "a b", "..",
                                  "a\n", "tab\t", None, 7])
def test_bad_names_are_refused_with_a_clear_message(vols, name):
    with pytest.raises(InvalidBlobName, match="invalid blob name") as caught:
        vols.writer(name)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, UsageError)
    assert files_in(vols.data_dir) == []


@pytest.mark.parametrize("name", ["a", "A-b_c@d:e.f$g", "a" * 250, "x.xxh3a", "0"])
def test_good_names_pass(name):
    assert check_name(name) == name


def test_the_longest_name_stores(vols):
    info = put(vols, "n" * volume.NAME_MAX, b"long")
    assert vols.verify(info.name)


# -- writing and reading --

def test_write_commit_read_verify_round_trip(vols):
    data = os.urandom(10_500)
    digest = xxhash.xxh3_64_hexdigest(data)
    info = put(vols, "blob-1", data, expected_checksum=digest, expected_size=len(data))
    hh = hash_dir("blob-1")
    assert info == BlobInfo("blob-1", len(data), digest, f"vol0/blob/{hh}/blob-1", info.mtime)
    assert len(hh) == 2 and int(hh, 16) >= 0
    path = vols.data_dir / info.path
    assert path.read_bytes() == data
    assert (path.parent / "blob-1.xxh3").read_text() == f"{digest} {len(data)}\n"
    assert files_in(vols.data_dir) == [f"vol0/blob/{hh}/blob-1", f"vol0/blob/{hh}/blob-1.xxh3"]
    with vols.open("blob-1") as f:
        assert f.read() == data and f.verified
    assert vols.verify("blob-1")
    assert vols.get("blob-1") == info and vols.inventory() == {"blob-1": info}


def test_empty_blob(vols):
    info = put(vols, "empty", b"")
    assert info.size == 0 and vols.verify("empty")
    with vols.open("empty") as f:
        assert f.read() == b""


def test_a_committed_blob_is_read_only(vols):
    info = put(vols, "ro", b"data")
    path = vols.data_dir / info.path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
    assert stat.S_IMODE(os.stat(str(path) + ".xxh3").st_mode) == 0o400


def test_an_existing_name_is_refused(vols):
    put(vols, "taken", b"one")
    with pytest.raises(BlobExists) as caught:
        vols.writer("taken")
    assert isinstance(caught.value, FileExistsError) and isinstance(caught.value, UsageError)
    again = Volumes(vols.data_dir)  # not scanned yet: the disk still says no
    with pytest.raises(BlobExists):
        again.writer("taken")
    assert vols.open("taken").read() == b"one"


def test_a_name_being_written_is_refused_until_its_writer_ends(vols):
    first = vols.writer("busy")
    with pytest.raises(BlobExists, match="being written"):
        vols.writer("busy")
    first.abort()
    assert put(vols, "busy", b"second").size == 6


def test_abort_leaves_nothing_and_is_idempotent(vols):
    w = vols.writer("gone")
    w.write(b"x" * 5000)
    assert len(files_in(vols.data_dir)) == 1  # the partial file
    w.abort()
    w.abort()
    assert files_in(vols.data_dir) == [] and vols.get("gone") is None
    with pytest.raises(ValueError):
        w.write(b"more")
    with pytest.raises(ValueError):
        w.commit()


def test_the_context_manager_aborts_without_commit_and_on_exception(vols):
    with vols.writer("a") as w:
        w.write(b"never committed")
    with pytest.raises(RuntimeError), vols.writer("b") as w:
        w.write(b"half")
        raise RuntimeError("source failed")
    assert files_in(vols.data_dir) == [] and vols.inventory() == {}
    assert vols.changes() == ([], [])


@pytest.mark.parametrize("expected", [{"expected_size": 4}, {"expected_checksum": "0" * 16}])
def test_an_unexpected_checksum_or_size_aborts(vols, expected):
    with pytest.raises(ChecksumMismatch), vols.writer("bad") as w:
        w.write(b"abc")
        w.commit(**expected)
    assert files_in(vols.data_dir) == [] and vols.get("bad") is None
    assert put(vols, "bad", b"abc").size == 3  # the name is free again


def test_open_of_an_absent_blob_is_data_not_found(vols):
    with pytest.raises(DataNotFound):
        vols.open("nothing")
    with pytest.raises(DataNotFound):
        vols.verify("nothing")


# -- crashes --

def test_a_crashed_writer_leaves_only_partials_that_are_not_indexed_and_get_cleaned(vols):
    put(vols, "kept", b"kept")
    w = vols.writer("crashed")
    w.write(b"half a blob")
    hh = vols.data_dir / "vol0" / "blob" / hash_dir("orphan")
    hh.mkdir(parents=True, exist_ok=True)
    (hh / "orphan.xxh3").write_text(f"{'0' * 16} 3\n")  # a crash between sidecar and blob
    restarted = Volumes(vols.data_dir)  # the process that crashed is gone
    assert set(restarted.scan()) == {"kept"}
    assert [p.reason for p in restarted.problems] == ["checksum file without its blob"]
    assert restarted.clean_partials(3600, time.time()) == []  # younger than the bound
    assert vols.clean_partials(0, time.time() + 10) == [hh / "orphan.xxh3"]  # w is alive here
    cleaned = restarted.clean_partials(0, time.time() + 10)
    assert [p.name for p in cleaned] == [w._tmp.name]
    assert cleaned[0].name.startswith(volume.PARTIAL_PREFIX + "crashed-")
    assert files_in(vols.data_dir) == sorted(
        f"vol0/blob/{hash_dir('kept')}/{n}" for n in ("kept", "kept.xxh3"))
    w.abort()  # its file is gone already: nothing to do, nothing raised
    assert restarted.verify("kept")


def test_clean_partials_keeps_what_is_younger_than_the_bound(vols):
    w = vols.writer("slow")
    w.write(b"x")
    restarted = Volumes(vols.data_dir)
    old = time.time() - 7200
    os.utime(w._tmp, (old, old))
    assert restarted.clean_partials(3600, old + 1800) == []
    assert restarted.clean_partials(3600, time.time()) == [w._tmp]
    w.abort()


def test_the_final_name_appears_only_after_data_and_sidecar_are_fsynced(vols, monkeypatch):
    events = []
    real = {name: getattr(os, name) for name in ("fsync", "replace", "link")}

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real["fsync"](fd)

    def moved(kind):
        def call(src, dst):
            events.append((kind, os.path.basename(dst)))
            real[kind](src, dst)
        return call

    w = vols.writer("ordered")
    w.write(b"payload")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", moved("replace"))
    monkeypatch.setattr(os, "link", moved("link"))
    w.commit()
    monkeypatch.undo()

    def kind(name):
        if name == hash_dir("ordered"):
            return "the directory"
        if name.startswith(volume.PARTIAL_PREFIX):
            return "partial sidecar" if name.endswith(".xxh3") else "partial blob"
        return name

    assert [(call, kind(name)) for call, name in events] == [
        ("fsync", "partial blob"), ("fsync", "partial sidecar"), ("replace", "ordered.xxh3"),
        ("fsync", "the directory"), ("link", "ordered"), ("fsync", "the directory")]


def test_remove_of_a_name_being_written_touches_nothing(vols):
    w = vols.writer("inflight")
    w.write(b"data")
    assert vols.remove("inflight") == []
    info = w.commit()
    assert vols.verify("inflight") and vols.get("inflight") == info


# -- corruption --

def test_a_flipped_byte_fails_at_eof_verify_and_the_scrubber(vols):
    data = os.urandom(200_000)
    info = put(vols, "rot", data)
    put(vols, "fine", b"fine")
    corrupt(vols.data_dir / info.path, offset=100)
    with vols.open("rot") as f:
        assert len(f.read(150_000)) == 150_000  # nothing is known before the end
        with pytest.raises(ChecksumMismatch, match="rot"):
            f.read(50_000)  # the read that reaches the end
        with pytest.raises(ChecksumMismatch):
            f.read()
    with pytest.raises(ChecksumMismatch):
        vols.open("rot").read()
    assert not vols.verify("rot") and vols.verify("fine")
    scrubber = Scrubber(vols, rate_bytes_s=10 << 20)
    assert scrubber.step(0.0, 10.0) == []  # the bucket starts empty
    assert scrubber.step(1.0, 10.0) == ["rot"]
    assert scrubber.step(2.0, 10.0) == ["rot"]  # found again on the next pass
    scrubber.close()


@pytest.mark.parametrize("change", ["truncate", "append"])
def test_a_blob_of_the_wrong_length_fails_at_the_end(vols, change):
    info = put(vols, "len", b"0123456789")
    path = vols.data_dir / info.path
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        if change == "truncate":
            f.truncate(5)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"extra")
    with pytest.raises(ChecksumMismatch):
        vols.open("len").read()
    assert not vols.verify("len")
    assert Volumes(vols.data_dir).scan() == {}  # the sidecar's size no longer fits


# -- the index --

def test_scan_rebuilds_the_same_index(vols):
    for i in range(20):
        put(vols, f"b{i}", os.urandom(i * 100))
    again = Volumes(vols.data_dir)
    assert again.inventory() == {}  # nothing scanned yet
    assert again.scan() == vols.inventory() and again.problems == []
    added, removed = again.changes()
    assert {i.name: i for i in added} == vols.inventory() and removed == []


def test_scan_reports_what_it_cannot_index(vols):
    put(vols, "ok", b"ok")
    for name, sidecar in [("nosum", None), ("badsum", "zz 3\n"), ("short", f"{'0' * 16} 99\n")]:
        folder = vols.data_dir / "vol0" / "blob" / hash_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"abc")
        if sidecar:
            (folder / (name + ".xxh3")).write_text(sidecar)
    wrong = "misplaced"
    other = "00" if hash_dir(wrong) != "00" else "01"
    (vols.data_dir / "vol0" / "blob" / other).mkdir(exist_ok=True)
    (vols.data_dir / "vol0" / "blob" / other / wrong).write_bytes(b"x")
    (vols.data_dir / "vol0" / "blob" / "stray").write_bytes(b"x")
    assert set(vols.scan()) == {"ok"}
    reasons = {p.path.rsplit("/", 1)[1]: p.reason for p in vols.problems}
    assert reasons == {"nosum": "no checksum file", "badsum": "malformed checksum file",
                       "short": "3 bytes, its checksum file says 99",
                       wrong: f"in the wrong directory (its own is {hash_dir(wrong)})",
                       "stray": "not a hash directory"}


def test_a_scan_keeps_what_is_committed_or_removed_while_it_walks(vols):
    put(vols, "early", b"early")
    walk = vols._walk_volume

    def walk_then_change(vol, found, problems):
        walk(vol, found, problems)  # saw "early", not "late"
        put(vols, "late", b"late")
        vols.remove("early")

    vols._walk_volume = walk_then_change
    assert set(vols.scan()) == {"late"}
    assert set(vols.inventory()) == {"late"}


def test_changes_reports_adds_and_removes_once(vols):
    a, b = put(vols, "a", b"1"), put(vols, "b", b"2")
    assert vols.changes() == ([a, b], [])
    assert vols.changes() == ([], [])
    vols.remove("a")
    assert vols.changes() == ([], ["a"])
    c = put(vols, "c", b"3")
    vols.remove("c")  # added and removed between two calls: its latest state only
    vols.remove("b")
    a2 = put(vols, "a", b"new")
    assert vols.changes() == ([a2], ["c", "b"]) and a2 != a
    assert c.name == "c" and vols.changes() == ([], [])


def test_commits_from_many_threads(vols):
    def writer(t):
        for i in range(10):
            put(vols, f"t{t}-{i}", os.urandom(500))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    added, removed = vols.changes()
    assert len(added) == 40 and removed == [] and len(vols.inventory()) == 40
    assert Volumes(vols.data_dir).scan() == vols.inventory()


# -- volumes --

def test_a_data_dir_without_volumes_gets_vol0(tmp_path):
    assert Volumes(tmp_path / "d").volumes == [tmp_path / "d" / "vol0"]
    assert (tmp_path / "d" / "vol0").is_dir()


def test_new_blobs_go_to_the_volume_with_most_free_space(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for name in ("vol1", "vol0", "vol10", "jobs"):
        (data / name).mkdir(parents=True)
    vols = Volumes(data)
    assert [v.name for v in vols.volumes] == ["vol0", "vol1", "vol10"]
    free = {"vol0": 100, "vol1": 5000, "vol10": 10}
    monkeypatch.setattr(vols, "free_bytes", lambda vol: free[vol.name])
    assert put(vols, "x", b"x" * 40).path.startswith("vol1/blob/")
    free["vol0"] = 9000
    assert put(vols, "y", b"y").path.startswith("vol0/blob/")
    with pytest.raises(DiskFull, match="vol0.*9000.*9001") as caught:
        vols.writer("z", size_hint=9001)
    assert caught.value.nbytes == 9001 and caught.value.volume == data / "vol0"
    assert vols.usage() == (41, 9000)  # one file system (tmp_path's): counted once
    assert set(Volumes(data).scan()) == {"x", "y"}


def test_usage_without_a_probe_is_the_file_systems(vols):
    put(vols, "u", b"u" * 123)
    used, free = vols.usage()
    assert used == 123 and free == os.statvfs(vols.volumes[0]).f_bavail * \
        os.statvfs(vols.volumes[0]).f_frsize


# -- remove --

def test_remove_hides_the_blob_and_returns_trash_for_a_janitor(vols):
    info = put(vols, "old", b"old bytes")
    put(vols, "other", b"x")
    trash = vols.remove("old")
    assert len(trash) == 2 and all(p.name.startswith(janitor.TRASH_PREFIX) for p in trash)
    assert all(p.parent == vols.volumes[0] and p.exists() for p in trash)
    assert sorted(p.read_bytes() for p in trash) == sorted([b"old bytes",
                                                            f"{info.checksum} 9\n".encode()])
    assert vols.get("old") is None and not (vols.data_dir / info.path).exists()
    with pytest.raises(DataNotFound):
        vols.open("old")
    assert set(Volumes(vols.data_dir).scan()) == {"other"}
    assert vols.remove("old") == []
    assert put(vols, "old", b"again").size == 5
    j = janitor.Janitor([vols.data_dir, vols.volumes[0]])
    j.start()  # the trash left in the volume is found and deleted
    deadline = time.monotonic() + 30
    while any(p.exists() for p in trash):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert j.stop(5) == 0


def test_the_trash_prefix_is_the_janitors():
    assert volume.TRASH_PREFIX == janitor.TRASH_PREFIX


# -- a full disk --

def failing(code):
    def write_all(fd, view):
        raise OSError(code, os.strerror(code))
    return write_all


def test_enospc_while_writing_is_disk_full_and_leaves_nothing(vols, monkeypatch):
    put(vols, "before", b"b" * 100)
    w = vols.writer("big")
    w.write(b"x" * 3000)
    monkeypatch.setattr(volume, "_write_all", failing(errno.ENOSPC))
    with pytest.raises(DiskFull, match="vol0.*3000 bytes") as caught:
        w.write(b"y")
    assert caught.value.nbytes == 3000
    monkeypatch.undo()
    assert [p.name for p in (vols.volumes[0] / "blob").rglob("*")
            if p.is_file() and "big" in p.name] == []
    assert vols.writer("big").name == "big"  # the name is free again (writer dropped here)
    assert vols.verify("before")


def test_another_os_error_in_commit_is_a_data_error_and_leaves_nothing(vols, monkeypatch):
    w = vols.writer("eio")
    w.write(b"data")
    real_fsync = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:  # the data, the sidecar, then the directory: fails
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DataError, match="eio.*Input/output error") as caught:
        w.commit()
    monkeypatch.undo()
    assert not isinstance(caught.value, DiskFull)
    assert [f for f in files_in(vols.data_dir) if "eio" in f] == [] and vols.get("eio") is None


@pytest.fixture
def tiny_volume(tmp_path):
    """A data dir whose only volume is a 1 MiB tmpfs (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "data" / "vol0"
    mount.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield tmp_path / "data"
    finally:
        if subprocess.run(["umount", str(mount)], timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], timeout=30)


def test_a_real_full_disk_is_disk_full_and_leaves_nothing_behind(tiny_volume):
    vols = Volumes(tiny_volume)
    earlier = put(vols, "earlier", os.urandom(100_000))
    chunk = os.urandom(64 << 10)
    with pytest.raises(DiskFull, match="vol0") as caught, vols.writer("huge") as w:
        for _ in range(32):  # 2 MiB
            w.write(chunk)
        w.commit()
    assert caught.value.volume == tiny_volume / "vol0"
    left = files_in(tiny_volume)
    assert left == [earlier.path, earlier.path + ".xxh3"]
    assert not any(volume.PARTIAL_PREFIX in f for f in left)
    assert vols.verify("earlier") and vols.inventory() == {"earlier": earlier}
    with pytest.raises(DiskFull, match="needs 2097152"):
        vols.writer("huge", size_hint=2 << 20)  # refused before writing at all


# -- the scrubber --

def test_the_scrubber_keeps_to_its_rate(vols, monkeypatch):
    sizes = [300_000, 10, 0, 150_000, 70_000]
    for i, size in enumerate(sizes):
        put(vols, f"s{i}", os.urandom(size))
    read = []
    real = volume.VerifyingReader.readinto

    def counting(self, buffer):
        n = real(self, buffer)
        read.append(n)
        return n

    monkeypatch.setattr(volume.VerifyingReader, "readinto", counting)
    rate, chunk = 50_000, 16_384
    scrubber = Scrubber(vols, rate, chunk_bytes=chunk)
    now = 1000.0
    for _ in range(200):  # 50 s of fake time in steps of 0.25 s
        assert scrubber.step(now, budget_s=30.0) == []
        assert sum(read) <= rate * (now - 1000.0) + chunk
        now += 0.25
    assert sum(read) == scrubber.bytes_read
    assert scrubber.passes >= 4 and sum(read) >= 3 * sum(sizes)
    scrubber.close()


def test_the_scrubber_does_not_burst_after_a_long_pause(vols):
    put(vols, "p", os.urandom(500_000))
    scrubber = Scrubber(vols, 1000, chunk_bytes=1000)
    scrubber.step(0.0, 10.0)
    scrubber.step(3600.0, 10.0)  # an hour later: at most BURST_S seconds' worth
    assert scrubber.bytes_read <= 1000 * Scrubber.BURST_S + 1000
    scrubber.close()


def test_the_scrubber_skips_vanished_blobs(vols):
    put(vols, "a", os.urandom(100_000))
    put(vols, "b", os.urandom(100_000))
    put(vols, "c", b"c")
    scrubber = Scrubber(vols, 10_000, chunk_bytes=10_000)
    scrubber.step(0.0, 10.0)
    assert scrubber.step(1.0, 10.0) == [] and scrubber._reader is not None  # inside "a"
    corrupt(vols.data_dir / vols.get("a").path, offset=99_999)
    vols.remove("a")  # removed while being read, and its bytes gone bad
    vols.remove("b")  # removed before its turn
    found = [name for t in range(2, 40) for name in scrubber.step(float(t), 10.0)]
    assert found == [] and scrubber.passes >= 2
    scrubber.close()


def test_a_step_ends_within_its_budget(vols):
    for i in range(5):
        put(vols, f"q{i}", os.urandom(20_000))
    ticks = iter(range(1000))
    scrubber = Scrubber(vols, 10 << 20, chunk_bytes=1000, clock=lambda: float(next(ticks)))
    scrubber.step(0.0, 1.0)
    scrubber.step(10.0, 3.0)  # the clock moves a second per look: an open, then a chunk or two
    assert 0 < scrubber.bytes_read <= 3000
    scrubber.close()
