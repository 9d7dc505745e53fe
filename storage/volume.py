"""A node's blobs on its own disks: ``Volumes``, ``BlobWriter``, ``VerifyingReader``, ``Scrubber``.

Use it for every DDFS blob this node stores (pushes, repair copies), never for task output::

    vols = Volumes(data_dir)                 # each <data>/vol*/ is a volume; vol0 made if none
    vols.clean_partials(0, time.time())      # at daemon start every partial file is stale
    vols.scan()                              # the index; ``vols.problems`` lists what was left out
    with vols.writer(name, size_hint=n) as w:    # the volume with most free space
        for chunk in source:
            w.write(chunk)
        info = w.commit(expected_checksum=digest, expected_size=n)
    with vols.open(name) as f:               # ChecksumMismatch on the read that reaches the end
        data = f.read()
    janitor_paths = vols.remove(name)        # gone from view at once; a Janitor deletes them
    added, removed = vols.changes()          # for the next BlobReport

Layout. A blob NAME lives at ``<vol>/blob/<hh>/NAME``, ``hh`` the first two hex digits of
``xxh3_64(NAME)``; beside it ``NAME.xxh3`` holds ``<xxh3_64 hex digest> <size>\\n``. Blob files
and sidecars are mode 0o400. ``BlobInfo.path`` is relative to the data dir
(``vol0/blob/3f/NAME``), the path the data port serves and ``disco://HOST:PORT/<path>`` names.

Theory of operation. A writer streams into ``<vol>/blob/<hh>/.partial-NAME-<hex>`` (a name the
index ignores), hashing as it goes. ``commit`` fsyncs the data, writes the sidecar to a partial
name, fsyncs it, renames it into place and fsyncs the directory, and only then links the blob
to its final name (``os.link``, which never overwrites; ``rename`` after a check where the file
system has no hard links) and fsyncs the directory again. So a final name appears only once
its data and its sidecar are on disk, and a crash at any point leaves at most partial files
(``clean_partials`` removes them) or a sidecar without its blob (not indexed, reported by
``scan``, removed by ``clean_partials``); never a half-written blob. A failed write or commit
(a full disk: ``DiskFull``; any other ``OSError``: ``DataError``) removes everything the writer
made before it raises. One process owns a data dir: the names being written are reserved in
memory, so two writers of one name never race.

``remove`` renames a blob and its sidecar to ``<vol>/.trash-<hex>`` (``TRASH_PREFIX``: what a
``mesh.janitor.Janitor`` with the volume among its roots deletes, and finds again after a
crash); the data port serves no ``.trash-`` path.

``changes()`` returns each name at most once, in its latest state since the last call: in
``added`` (with its ``BlobInfo``, which replaces what the reader knew) or in ``removed``. A
``scan`` records its difference from the index it replaces, so after the first scan every blob
is in ``added``. The index, the reservations and the changes are guarded by one lock: writers
may commit from any thread, also while ``scan`` walks the disk.

Errors (``common.error``): ``InvalidBlobName`` (UsageError, ValueError), ``BlobExists``
(UsageError, FileExistsError), ``DiskFull`` (DataError), ``ChecksumMismatch`` (DataError),
``DataNotFound`` for a blob this node does not hold; other I/O failures are ``DataError``.
"""
from __future__ import annotations

import collections
import errno
import io
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import xxhash

from common.error import DataError, DataNotFound, UsageError

# mesh.janitor.TRASH_PREFIX (storage sits below mesh and may not import it; a test pins both)
TRASH_PREFIX = ".trash-"
PARTIAL_PREFIX = ".partial-"
SUM_SUFFIX = ".xxh3"
BLOB_DIR = "blob"
CHUNK = 1 << 20
NAME_MAX = 255 - len(SUM_SUFFIX)  # the sidecar's name must fit a file system's 255 bytes
_PARTIAL_NAME_MAX = 255 - len(PARTIAL_PREFIX) - 1 - 16 - len(SUM_SUFFIX)
NAME_RE = re.compile(r"(?!\.)[A-Za-z0-9_\-@:.$]{1,%d}(?<!\.xxh3)" % NAME_MAX)
_HH_RE = re.compile(r"[0-9a-f]{2}")
_SIDECAR_RE = re.compile(rb"([0-9a-f]{16}) ([0-9]{1,20})\n")
_FULL = (errno.ENOSPC, errno.EDQUOT)
_NO_LINK = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK)


class InvalidBlobName(UsageError, ValueError):
    """A blob name outside ``NAME_RE``."""


class BlobExists(UsageError, FileExistsError):
    """A blob of that name is stored (or being written) here already; blobs are immutable."""


class DiskFull(DataError):
    """No room for a blob on ``volume``: ``nbytes`` is what it needed or had written."""

    def __init__(self, message: str, volume: Path | None = None, nbytes: int = 0):
        super().__init__(message)
        self.volume, self.nbytes = volume, nbytes


class ChecksumMismatch(DataError):
    """A blob's bytes do not match its checksum or size: corrupt here; another copy may do."""


def check_name(name: str) -> str:
    """``name`` if it is a valid blob name, else InvalidBlobName saying what is allowed."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise InvalidBlobName(
            f"invalid blob name {name!r}: use 1 to {NAME_MAX} of A-Z a-z 0-9 _ - @ : . $, "
            f"not starting with '.' nor ending with '{SUM_SUFFIX}'")
    return name


def hash_dir(name: str) -> str:
    return xxhash.xxh3_64_hexdigest(name.encode())[:2]


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    checksum: str   # xxh3_64, 16 lowercase hex digits
    path: str       # relative to the data dir: vol0/blob/3f/NAME
    mtime: float    # wall seconds


@dataclass(frozen=True)
class Problem:
    path: str       # relative to the data dir
    reason: str


class Volumes:
    """The blobs of one data dir's volumes and their in-memory index; see the module docstring."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        found = [p for p in self.data_dir.glob("vol*") if p.is_dir()]
        if not found:
            _make_dirs(self.data_dir / "vol0")
            found = [self.data_dir / "vol0"]
        self.volumes: list[Path] = sorted(found, key=_volume_order)
        self.problems: list[Problem] = []
        self._lock = threading.RLock()  # reentrant: a forgotten writer may abort from __del__
        self._scan_lock = threading.Lock()
        self._index: dict[str, BlobInfo] = {}
        self._writing: dict[str, tuple[Path, Path]] = {}  # name -> its writer's partial files
        self._added: dict[str, BlobInfo] = {}
        self._removed: dict[str, None] = {}
        self._scan_log: dict[str, BlobInfo | None] | None = None  # commits during a scan

    # -- the index --

    def scan(self) -> dict[str, BlobInfo]:
        """Walk every volume and rebuild the index; what cannot be indexed goes to ``problems``."""
        with self._scan_lock:
            with self._lock:
                self._scan_log = {}
            found: dict[str, BlobInfo] = {}
            problems: list[Problem] = []
            try:
                for vol in self.volumes:
                    self._walk_volume(vol, found, problems)
            except BaseException:
                with self._lock:
                    self._scan_log = None
                raise
            with self._lock:
                for name, info in self._scan_log.items():  # committed or removed meanwhile
                    if info is None:
                        found.pop(name, None)
                    else:
                        found[name] = info
                self._scan_log = None
                for name in self._index:
                    if name not in found:
                        self._note(name, None)
                for name, info in found.items():
                    if self._index.get(name) != info:
                        self._note(name, info)
                self._index, self.problems = found, problems
                return dict(found)

    def get(self, name: str) -> BlobInfo | None:
        with self._lock:
            return self._index.get(name)

    def inventory(self) -> dict[str, BlobInfo]:
        with self._lock:
            return dict(self._index)

    def changes(self) -> tuple[list[BlobInfo], list[str]]:
        """Blobs added and names removed since the last call; each name in one list at most."""
        with self._lock:
            added, removed = list(self._added.values()), list(self._removed)
            self._added, self._removed = {}, {}
            return added, removed

    def usage(self) -> tuple[int, int]:
        """Bytes the indexed blobs take, and bytes free on the volumes' file systems."""
        with self._lock:
            used = sum(info.size for info in self._index.values())
        devices, free = set(), 0
        for vol in self.volumes:
            device = os.stat(vol).st_dev
            if device not in devices:
                devices.add(device)
                free += self.free_bytes(vol)
        return used, free

    def free_bytes(self, volume: Path) -> int:
        """Free bytes on ``volume``'s file system (what an unprivileged writer may use)."""
        st = os.statvfs(volume)
        return st.f_bavail * st.f_frsize

    # -- blobs --

    def writer(self, name: str, size_hint: int | None = None) -> BlobWriter:
        """A writer for a new blob on the volume with most free space."""
        check_name(name)
        frees = {vol: self.free_bytes(vol) for vol in self.volumes}
        volume = max(self.volumes, key=frees.__getitem__)  # the first of equals
        free = frees[volume]
        if size_hint is not None and size_hint > free:
            raise DiskFull(f"volume {volume} has {free} bytes free, blob {name} needs "
                           f"{size_hint}", volume, size_hint)
        with self._lock:
            if name in self._writing:
                raise BlobExists(f"blob {name} is being written on this node already")
            if name in self._index or self._on_disk(name):
                raise BlobExists(f"blob {name} is stored on this node already")
            writer = BlobWriter(self, name, volume)  # reserves the name
        writer._start()
        return writer

    def open(self, name: str) -> VerifyingReader:
        """The blob's bytes as a binary file that checks them against the sidecar at the end."""
        check_name(name)
        info = self.get(name)
        if info is None:
            raise DataNotFound(f"blob {name} is not stored in {self.data_dir}")
        try:
            return VerifyingReader(self.data_dir / info.path, info)
        except FileNotFoundError:
            raise DataNotFound(f"blob {name} is gone from {info.path}") from None
        except OSError as exc:
            raise DataNotFound(f"blob {name} cannot be read at {info.path}: "
                               f"{exc.strerror or exc}") from None

    def verify(self, name: str) -> bool:
        """Re-read the whole blob: False if it fails its checksum or cannot be read."""
        buffer = bytearray(CHUNK)
        with self.open(name) as reader:
            try:
                while reader.readinto(buffer):
                    pass
            except (ChecksumMismatch, OSError):
                return False
        return True

    def remove(self, name: str) -> list[Path]:
        """Move the blob and its sidecar to trash names (for a janitor); [] if absent.

        A name being written is not stored yet: nothing to remove. The renames happen under
        the lock, so no writer of the name can start halfway through."""
        check_name(name)
        with self._lock:
            if name in self._writing:
                return []
            if self._index.pop(name, None) is not None:
                self._note(name, None)
            elif self._scan_log is not None:  # a scan may have seen it before the rename
                self._scan_log[name] = None
            trash = []
            for vol in self.volumes:
                folder = vol / BLOB_DIR / hash_dir(name)
                for path in (folder / name, folder / (name + SUM_SUFFIX)):  # the blob first
                    if os.path.lexists(path):
                        trash.append(_to_trash(vol, path))
            return trash

    def clean_partials(self, older_than_s: float, now: float) -> list[Path]:
        """Remove what crashed writers left (partial files, sidecars without their blob) last
        modified ``older_than_s`` or more before ``now`` (wall seconds); the paths removed.
        A live writer's files are never touched, whatever their age."""
        cutoff = now - older_than_s
        removed = []
        for folder in self._hash_dirs():
            for entry in _entries(folder):
                if not entry.name.startswith(PARTIAL_PREFIX) and not entry.name.endswith(SUM_SUFFIX):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime <= cutoff and \
                            self._unlink_leftover(folder, entry.name):
                        removed.append(folder / entry.name)
                except FileNotFoundError:
                    pass
        return removed

    def _unlink_leftover(self, folder: Path, name: str) -> bool:
        """Unlink a partial file or an orphan sidecar unless a live writer owns it (checked
        under the lock, which a writer takes to reserve its name before making any file)."""
        path = folder / name
        with self._lock:
            if name.startswith(PARTIAL_PREFIX):
                if any(path in partials for partials in self._writing.values()):
                    return False
            else:
                blob = name[:-len(SUM_SUFFIX)]
                if blob in self._writing or os.path.lexists(folder / blob):
                    return False
            os.unlink(path)
            return True

    # -- the writers' side --

    def _reserve(self, name: str, partials: tuple[Path, Path]) -> None:
        with self._lock:
            self._writing[name] = partials

    def _release(self, name: str) -> None:
        with self._lock:
            self._writing.pop(name, None)

    def _committed(self, info: BlobInfo) -> None:
        with self._lock:
            self._index[info.name] = info
            self._note(info.name, info)
            self._writing.pop(info.name, None)

    def _note(self, name: str, info: BlobInfo | None) -> None:
        """Record a change (the lock held): ``info`` added, or None for removed."""
        if self._scan_log is not None:
            self._scan_log[name] = info
        if info is None:
            self._added.pop(name, None)
            self._removed[name] = None
        else:
            self._removed.pop(name, None)
            self._added[name] = info

    def _on_disk(self, name: str) -> bool:
        return any(os.path.lexists(vol / BLOB_DIR / hash_dir(name) / name) for vol in self.volumes)

    # -- the walk --

    def _hash_dirs(self) -> list[Path]:
        return [Path(e.path) for vol in self.volumes for e in _entries(vol / BLOB_DIR)
                if _HH_RE.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]

    def _walk_volume(self, vol: Path, found: dict, problems: list) -> None:
        for entry in _entries(vol / BLOB_DIR):
            if _HH_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                self._walk_hash_dir(Path(entry.path), found, problems)
            elif not entry.name.startswith((PARTIAL_PREFIX, TRASH_PREFIX)):
                problems.append(Problem(self._rel(entry.path), "not a hash directory"))

    def _walk_hash_dir(self, folder: Path, found: dict, problems: list) -> None:
        blobs, sums = set(), set()
        for entry in _entries(folder):
            if entry.name.startswith((PARTIAL_PREFIX, TRASH_PREFIX)):
                continue
            if entry.name.endswith(SUM_SUFFIX):
                sums.add(entry.name[:-len(SUM_SUFFIX)])
            else:
                blobs.add(entry.name)
        for name in sorted(sums - blobs):
            problems.append(Problem(self._rel(folder / (name + SUM_SUFFIX)),
                                    "checksum file without its blob"))
        for name in sorted(blobs):
            info, why = self._load(folder, name)
            if info is not None and name in found:
                info, why = None, f"a second copy of {found[name].path}"
            if info is None:
                problems.append(Problem(self._rel(folder / name), why))
            else:
                found[name] = info

    def _load(self, folder: Path, name: str) -> tuple[BlobInfo | None, str]:
        if NAME_RE.fullmatch(name) is None:
            return None, "not a valid blob name"
        if hash_dir(name) != folder.name:
            return None, f"in the wrong directory (its own is {hash_dir(name)})"
        try:
            st = os.lstat(folder / name)
            with open(folder / (name + SUM_SUFFIX), "rb") as f:
                sidecar = _SIDECAR_RE.fullmatch(f.read(64))
        except FileNotFoundError:
            return None, "no checksum file"
        except OSError as exc:
            return None, f"unreadable: {exc.strerror or exc}"
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if sidecar is None:
            return None, "malformed checksum file"
        size = int(sidecar[2])
        if size != st.st_size:
            return None, f"{st.st_size} bytes, its checksum file says {size}"
        return BlobInfo(name, size, sidecar[1].decode(), self._rel(folder / name), st.st_mtime), ""

    def _rel(self, path) -> str:
        return Path(path).relative_to(self.data_dir).as_posix()


class BlobWriter:
    """Streams one new blob to a partial file; ``commit`` makes it visible, ``abort`` removes it.

    A context manager: leaving the block without ``commit()`` (normally or by an exception)
    aborts. Not for use from two threads at once.
    """

    def __init__(self, volumes: Volumes, name: str, volume: Path):
        self.name, self.volume, self.size = name, volume, 0
        self.info: BlobInfo | None = None
        self._volumes = volumes
        self._dir = volume / BLOB_DIR / hash_dir(name)
        self._final = self._dir / name
        self._final_sum = self._dir / (name + SUM_SUFFIX)
        self._tmp = self._dir / f"{PARTIAL_PREFIX}{name[:_PARTIAL_NAME_MAX]}-{secrets.token_hex(8)}"
        self._tmp_sum = self._tmp.with_name(self._tmp.name + SUM_SUFFIX)
        self._hash = xxhash.xxh3_64()
        self._fd: int | None = None
        self._placed: list[Path] = []  # final names made before the commit completed
        self._state = "open"
        volumes._reserve(name, (self._tmp, self._tmp_sum))

    def _start(self) -> None:
        try:
            _make_dirs(self._dir)
            self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                               0o600)
        except OSError as exc:
            self.abort()
            raise self._error(exc, "create") from exc

    def write(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            raise ValueError(f"blob {self.name}'s writer is {self._state}")
        view = memoryview(data).cast("B")
        try:
            _write_all(self._fd, view)
        except OSError as exc:
            self.abort()
            raise self._error(exc, "write") from exc
        except BaseException:
            self.abort()
            raise
        self._hash.update(view)
        self.size += len(view)

    def commit(self, expected_checksum: str | None = None,
               expected_size: int | None = None) -> BlobInfo:
        """Make the blob durable and visible; ChecksumMismatch (and nothing left) if it is not
        what the caller expected."""
        if self._fd is None:
            raise ValueError(f"blob {self.name}'s writer is {self._state}")
        digest = self._hash.hexdigest()
        try:
            fd, self._fd = self._fd, None
            try:
                os.fchmod(fd, 0o400)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._check(digest, expected_checksum, expected_size)
            self._place_sidecar(digest)
            self._place_blob()
            mtime = os.stat(self._final).st_mtime
        except (ChecksumMismatch, BlobExists):
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            raise self._error(exc, "commit") from exc
        except BaseException:
            self.abort()
            raise
        self._state, self._placed = "committed", []
        self.info = BlobInfo(self.name, self.size, digest, self._volumes._rel(self._final), mtime)
        self._volumes._committed(self.info)
        return self.info

    def abort(self) -> None:
        """Remove everything this writer made; does nothing after ``commit`` or ``abort``."""
        if self._state != "open":
            return
        self._state = "aborted"
        fd, self._fd = self._fd, None
        if fd is not None:
            _quietly(os.close, fd)
        for path in [*reversed(self._placed), self._tmp, self._tmp_sum]:  # the blob first
            _quietly(os.unlink, path)
        if self._placed:
            _quietly(_fsync_dir, self._dir)
        self._placed = []
        self._volumes._release(self.name)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()

    def __del__(self):
        if getattr(self, "_state", None) == "open":
            try:
                self.abort()
            except Exception:  # at interpreter exit the modules it needs may be gone
                pass

    def _check(self, digest: str, expected_checksum: str | None, expected_size: int | None):
        if expected_size is not None and expected_size != self.size:
            raise ChecksumMismatch(f"blob {self.name}: received {self.size} bytes, "
                                   f"expected {expected_size}")
        if expected_checksum is not None and expected_checksum.lower() != digest:
            raise ChecksumMismatch(f"blob {self.name}: received bytes hash to {digest}, "
                                   f"expected {expected_checksum}")

    def _place_sidecar(self, digest: str) -> None:
        fd = os.open(self._tmp_sum, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        try:
            _write_all(fd, memoryview(f"{digest} {self.size}\n".encode()))
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.path.lexists(self._final):
            raise BlobExists(f"blob {self.name} appeared in {self.volume} while being written")
        os.replace(self._tmp_sum, self._final_sum)  # over what a crashed writer may have left
        self._placed.append(self._final_sum)
        _fsync_dir(self._dir)

    def _place_blob(self) -> None:
        try:
            os.link(self._tmp, self._final)  # never over an existing name
        except FileExistsError:
            raise BlobExists(f"blob {self.name} appeared in {self.volume} while being written") \
                from None
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            if os.path.lexists(self._final):  # no hard links here: check, then rename
                raise BlobExists(f"blob {self.name} appeared in {self.volume}") from None
            os.rename(self._tmp, self._final)
        self._placed.append(self._final)
        _quietly(os.unlink, self._tmp)  # a partial name left by a crash here is cleaned later
        _fsync_dir(self._dir)

    def _error(self, exc: OSError, doing: str) -> DataError:
        if exc.errno in _FULL:
            return DiskFull(f"volume {self.volume} is out of space: could not {doing} blob "
                            f"{self.name} at {self.size} bytes ({exc.strerror})",
                            self.volume, self.size)
        return DataError(f"could not {doing} blob {self.name} on volume {self.volume}: "
                         f"{exc.strerror or exc}")


class VerifyingReader(io.RawIOBase):
    """A blob opened for reading: hashes what is read, and raises ChecksumMismatch on the read
    that reaches the end (the sidecar's size, or end of file before it) if the bytes are not
    the blob's. ``verified`` turns true once they are. Reads in order only (not seekable)."""

    def __init__(self, path: Path, info: BlobInfo):
        super().__init__()
        self.info, self.verified = info, False
        self._file = open(path, "rb", buffering=0)
        self._hash = xxhash.xxh3_64()
        self._read = 0
        self._failure: ChecksumMismatch | None = None

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def readinto(self, buffer) -> int:
        if self._failure is not None:
            raise self._failure
        n = self._file.readinto(buffer)
        if n:
            self._hash.update(memoryview(buffer).cast("B")[:n])
            self._read += n
            if self._read >= self.info.size:
                self._check()
        elif not self.verified:
            self._check()
        return n

    def close(self) -> None:
        file = getattr(self, "_file", None)  # None if the open in __init__ failed
        if file is not None:
            file.close()
        super().close()

    def _check(self) -> None:
        digest = self._hash.hexdigest()
        if self._read == self.info.size and digest == self.info.checksum:
            self.verified = True
            return
        self.verified = False
        self._failure = ChecksumMismatch(
            f"blob {self.info.name} at {self.info.path} is corrupt: {self._read} bytes read "
            f"hashing to {digest}, its checksum file says {self.info.size} bytes, "
            f"{self.info.checksum}")
        raise self._failure


class Scrubber:
    """Re-reads every blob, round robin, at ``rate_bytes_s`` on average; call ``step`` often.

    A token bucket filled from the ``now`` of each call (at most ``BURST_S`` seconds' worth)
    pays for each chunk read; a chunk is read while the bucket is above zero, so over any run of
    steps it reads at most ``rate * elapsed + chunk_bytes``. A step also ends after ``budget_s``
    of its own time (``clock``), and after finishing a pass over the index (the next pass starts
    with the next step). A blob is read across steps; its page cache is dropped first so that
    the disk, not memory, is checked.
    """

    BURST_S = 10.0

    def __init__(self, volumes: Volumes, rate_bytes_s: int, chunk_bytes: int = CHUNK,
                 clock=time.monotonic):
        if rate_bytes_s <= 0 or chunk_bytes <= 0:
            raise ValueError("the scrub rate and chunk size must be positive")
        self.volumes, self.rate_bytes_s = volumes, rate_bytes_s
        self.bytes_read = 0
        self.passes = 0
        self._clock = clock
        self._buffer = bytearray(chunk_bytes)
        self._tokens = 0.0
        self._last: float | None = None
        self._queue: collections.deque[str] = collections.deque()
        self._reader: VerifyingReader | None = None

    def step(self, now: float, budget_s: float) -> list[str]:
        """Scrub what the bucket allows; the names of blobs found corrupt or unreadable."""
        self._refill(now)
        deadline = self._clock() + budget_s
        failed: list[str] = []
        fresh = not self._queue and self._reader is None  # the last pass ended before this step
        while self._tokens > 0 and self._clock() < deadline:
            if self._reader is None:
                if not self._queue:
                    if not fresh or not self._new_pass():
                        break  # a pass ended in this step: the next one starts with the next
                    fresh = False
                self._open(self._queue.popleft(), failed)
            else:
                self._read_chunk(failed)
        return failed

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _refill(self, now: float) -> None:
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            self._tokens = min(self._tokens + elapsed * self.rate_bytes_s,
                               self.BURST_S * self.rate_bytes_s)
        self._last = now

    def _new_pass(self) -> bool:
        self._queue.extend(sorted(self.volumes.inventory()))
        self.passes += bool(self._queue)
        return bool(self._queue)

    def _open(self, name: str, failed: list) -> None:
        try:
            self._reader = self.volumes.open(name)
        except DataNotFound:  # removed meanwhile, or unreadable
            if self._still_stored(name):
                failed.append(name)
            return
        try:
            os.posix_fadvise(self._reader.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except (AttributeError, OSError):
            pass

    def _read_chunk(self, failed: list) -> None:
        reader = self._reader
        try:
            n = reader.readinto(self._buffer)
        except (ChecksumMismatch, OSError):
            self.close()
            if self._still_stored(reader.info.name, reader.info):
                failed.append(reader.info.name)
            return
        self.bytes_read += n
        self._tokens -= n
        if n == 0:
            self.close()

    def _still_stored(self, name: str, info: BlobInfo | None = None) -> bool:
        now = self.volumes.get(name)
        return now is not None and (info is None or now == info) and \
            os.path.lexists(self.volumes.data_dir / now.path)


def _volume_order(path: Path) -> tuple:
    suffix = path.name[3:]
    return (0, int(suffix), "") if suffix.isdigit() else (1, 0, path.name)


def _entries(folder: Path) -> list:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _make_dirs(path: Path) -> None:
    """``path`` and its missing parents, each one's entry fsynced in its parent."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _to_trash(volume: Path, path: Path) -> Path:
    """Rename ``path`` to a trash name under the volume (beside it if that fails: EXDEV)."""
    name = TRASH_PREFIX + secrets.token_hex(16)
    for target in (volume / name, path.with_name(name)):
        try:
            os.rename(path, target)
            return target
        except OSError as exc:
            failure = exc
    raise DataError(f"could not remove {path}: {failure.strerror or failure}") from failure


def _quietly(func, *args) -> None:
    try:
        func(*args)
    except OSError:
        pass


__all__ = ["NAME_RE", "NAME_MAX", "TRASH_PREFIX", "check_name", "hash_dir", "BlobInfo", "Problem",
           "Volumes", "BlobWriter", "VerifyingReader", "Scrubber", "InvalidBlobName", "BlobExists",
           "DiskFull", "ChecksumMismatch"]
