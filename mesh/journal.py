"""The Raft state on disk: ``<data>/journal/state`` and ``<data>/journal/log`` (ARCHITECTURE).

``state`` holds the current term and vote (msgpack), replaced atomically (write, fsync, rename).
``log`` is an append-only sequence of msgpack ``[term, entry]`` records, fsynced after every
batch; a truncation (a follower dropping a conflicting suffix, which is rare) rewrites the kept
prefix to a new file and renames it over the old one. Both are fsynced before the daemon sends
anything that depends on them (a vote, an acknowledgement), as Raft requires.

A torn last record (a crash mid-append) is dropped on load: it was never acknowledged.
"""
from __future__ import annotations

import os
from pathlib import Path

import msgpack

from mesh import raft


class Journal:
    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / "journal"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path, self.log_path = self.dir / "state", self.dir / "log"
        self._state = (None, None)
        self._count = 0
        self._log = None

    def load(self) -> raft.State:
        term, voted_for = 0, None
        try:
            term, voted_for = msgpack.unpackb(self.state_path.read_bytes(), raw=False)
        except (OSError, ValueError, msgpack.UnpackException):
            pass
        entries, good = [], 0
        try:
            data = self.log_path.read_bytes()
        except OSError:
            data = b""
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 30)
        unpacker.feed(data)
        try:
            for term_, entry in unpacker:
                entries.append((term_, entry))
                good = unpacker.tell()
        except (ValueError, msgpack.UnpackException):
            pass
        if good < len(data):  # a torn tail: never acknowledged, so safe to drop
            self._rewrite(entries)
        self._state, self._count = (term, voted_for), len(entries)
        return raft.State(term, voted_for, entries)

    def persist(self, p: raft.Persist) -> None:
        if (p.term, p.voted_for) != self._state:
            self._atomic(self.state_path, msgpack.packb([p.term, p.voted_for]))
            self._state = (p.term, p.voted_for)
        if p.truncate_from is not None and p.truncate_from <= self._count:
            kept = self.load_entries()[:p.truncate_from - 1]
            self._rewrite(kept)
        if p.entries:
            log = self._open()
            for term, entry in p.entries:
                log.write(msgpack.packb([term, entry], use_bin_type=True))
            log.flush()
            os.fsync(log.fileno())
            self._count += len(p.entries)

    def load_entries(self) -> list:
        self.close()
        return self.load().log

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _open(self):
        if self._log is None:
            self._log = open(self.log_path, "ab")
        return self._log

    def _rewrite(self, entries: list) -> None:
        self.close()
        self._atomic(self.log_path, b"".join(msgpack.packb([t, e], use_bin_type=True)
                                             for t, e in entries))
        self._count = len(entries)

    def _atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
