"""A node's data directory: the small files the daemon keeps beside the journal.

Layout (ARCHITECTURE "Storage on disk"): ``vol0/`` (map outputs, results), ``jobs/<job>/``
(per-job files), ``jobpacks/<sha256>`` (content-addressed job packs, fsynced, read-only),
``journal/`` (``mesh.journal``), ``logs/``, ``incarnation``, ``members.json``, ``node.json``
and the pid file. Every file becomes visible only complete (write a temporary name, rename);
what must survive a crash is fsynced first.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

SUBDIRS = ("logs", "jobs", "vol0", "jobpacks")


def digest_of(jobpack: bytes) -> str:
    return hashlib.sha256(jobpack).hexdigest()


def write_atomic(path: Path, data: bytes, fsync: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DataDir:
    def __init__(self, root: Path, pid_file: Path):
        self.root, self.pid_file = Path(root), Path(pid_file)
        self._disk = (0.0, 0, 0)

    def prepare(self) -> None:
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def bump_incarnation(self) -> int:
        """One more than the last start's, fsynced before the node announces it."""
        path = self.root / "incarnation"
        try:
            last = int(path.read_text().strip())
        except (OSError, ValueError):
            last = 0
        write_atomic(path, f"{last + 1}\n".encode(), fsync=True)
        return last + 1

    def known_peers(self) -> list:
        try:
            peers = json.loads((self.root / "members.json").read_text())
        except (OSError, ValueError):
            return []
        return [p for p in peers if isinstance(p, str)]

    def remember_members(self, addresses) -> None:
        write_atomic(self.root / "members.json", json.dumps(sorted(addresses)).encode())

    def write_pid(self, name: str, address: str) -> None:
        """``disco.pid`` holds the pid; ``node.json`` tells ``disco stop/status --data`` the port."""
        info = {"pid": os.getpid(), "name": name, "address": address}
        write_atomic(self.root / "node.json", json.dumps(info).encode())
        write_atomic(self.pid_file, f"{os.getpid()}\n".encode())

    def remove_pid(self) -> None:
        try:
            if self.pid_file.read_text().strip() == str(os.getpid()):
                self.pid_file.unlink()
        except OSError:
            pass

    def jobpack_path(self, digest: str) -> Path:
        return self.root / "jobpacks" / digest

    def store_jobpack(self, digest: str, data: bytes, hashed: bool = False) -> None:
        """Store a pack under its hash, fsynced and read-only; checked against the hash unless
        the caller just computed it from these bytes (``hashed``)."""
        path = self.jobpack_path(digest)
        if path.exists():
            os.utime(path)  # stored again: its grace against collection starts anew
            return
        if not hashed and digest_of(data) != digest:
            raise ValueError(f"job pack does not match its hash {digest[:12]}")
        write_atomic(path, data, fsync=True)
        path.chmod(0o444)

    def stale_jobpacks(self, keep, grace_s: float) -> list[Path]:
        """Stored packs not in ``keep`` and older than ``grace_s`` (by modification time)."""
        cutoff = time.time() - grace_s
        stale = []
        with os.scandir(self.root / "jobpacks") as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.name not in keep and \
                        entry.stat().st_mtime < cutoff:
                    stale.append(Path(entry.path))
        return stale

    def job_paths(self, job: str, digest: str | None = None) -> list[Path]:
        paths = [self.root / "vol0" / "jobs" / job, self.root / "jobs" / job]
        if digest:
            paths.append(self.jobpack_path(digest))
        return paths

    def disk_usage(self, now: float) -> tuple[int, int]:
        """Used and free bytes of the data dir's filesystem: one statvfs a second, never a walk
        of the data dir (it may hold millions of files)."""
        stamp, used, free = self._disk
        if now - stamp > 1.0 or stamp == 0.0:
            usage = shutil.disk_usage(self.root)
            used, free = usage.used, usage.free
            self._disk = (now, used, free)
        return used, free
