"""The Raft state on disk: ``<data>/journal/{state,snapshot,log}`` (ARCHITECTURE).

``state`` holds the current term and vote (msgpack), replaced atomically (write, fsync, rename,
fsync the directory). ``snapshot`` holds the latest Raft snapshot (msgpack map of index, term,
voters, data), replaced the same way. ``log`` is an append-only sequence of msgpack ``[term,
entry]`` records, fsynced after every batch; after a compaction it opens with a ``{"base": N}``
record: its first entry has index N + 1 (no such record: N = 0). A truncation (a follower
dropping a conflicting suffix, which is rare) or a compaction rewrites the kept entries to a new
file and renames it over the old one. All of it is fsynced before the daemon sends anything that
depends on it (a vote, an acknowledgement), as Raft requires.

A compaction writes the snapshot first, then the log without the entries it covers. A crash
between the two leaves the old log under the new snapshot; ``load`` finishes the job with Raft's
rule [7]: entries after the snapshot are kept only if the log holds the snapshot's last entry
(same index and term). A torn last record (a crash mid-append) is dropped on load: it was never
acknowledged.
"""
from __future__ import annotations

import os
from pathlib import Path

import msgpack

from common.error import DataError
from mesh import raft
from mesh.datadir import write_atomic


class Journal:
    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / "journal"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path, self.log_path = self.dir / "state", self.dir / "log"
        self.snapshot_path = self.dir / "snapshot"
        self._state = (None, None)
        self._base = 0   # index of the entry before the log file's first one
        self._count = 0  # entries in the log file
        self._log = None

    def load(self) -> raft.State:
        self.close()
        term, voted_for = 0, None
        try:
            term, voted_for = msgpack.unpackb(self.state_path.read_bytes(), raw=False)
        except (OSError, ValueError, msgpack.UnpackException):
            pass
        snapshot = self._read_snapshot()
        base, entries, torn = self._read_log()
        index = snapshot.index if snapshot else 0
        if base > index:
            raise DataError(f"{self.log_path} starts after entry {base} but the snapshot ends at "
                            f"{index} (snapshot file missing or old): restore the journal "
                            f"directory, or move it away to rejoin as a new node")
        if base < index:  # a compaction was interrupted after its snapshot was written
            skip = index - base
            matches = skip <= len(entries) and entries[skip - 1][0] == snapshot.term
            entries = entries[skip:] if matches else []
        if torn or base < index:
            self._rewrite(index, entries)
        self._state, self._base, self._count = (term, voted_for), index, len(entries)
        return raft.State(term, voted_for, entries, snapshot)

    def persist(self, p: raft.Persist) -> None:
        if (p.term, p.voted_for) != self._state:
            self._atomic(self.state_path, msgpack.packb([p.term, p.voted_for]))
            self._state = (p.term, p.voted_for)
        if p.snapshot is not None:
            self._compact(p.snapshot, p.truncate_from)
        elif p.truncate_from is not None and p.truncate_from <= self._base + self._count:
            base, entries, _ = self._read_log()
            self._rewrite(base, entries[:max(0, p.truncate_from - 1 - base)])
        if p.entries:
            log = self._open()
            for term, entry in p.entries:
                log.write(msgpack.packb([term, entry], use_bin_type=True))
            log.flush()
            os.fsync(log.fileno())
            self._count += len(p.entries)

    def load_entries(self) -> list:
        return self.load().log

    def size_bytes(self) -> int:
        """Bytes on disk of the whole journal (state, snapshot, log)."""
        with os.scandir(self.dir) as it:
            return sum(e.stat().st_size for e in it if e.is_file(follow_symlinks=False))

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- internals --

    def _compact(self, snapshot: raft.Snapshot, truncate_from: int | None) -> None:
        """Snapshot first (durable), then the log without the entries it covers."""
        base, entries, _ = self._read_log()
        self._atomic(self.snapshot_path, msgpack.packb(
            {"index": snapshot.index, "term": snapshot.term, "voters": list(snapshot.voters),
             "data": snapshot.data}, use_bin_type=True))
        kept = entries[snapshot.index - base:]
        if truncate_from is not None:
            kept = kept[:max(0, truncate_from - 1 - snapshot.index)]
        self._rewrite(snapshot.index, kept)

    def _read_snapshot(self) -> raft.Snapshot | None:
        try:
            raw = msgpack.unpackb(self.snapshot_path.read_bytes(), raw=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            raise DataError(f"{self.snapshot_path} is unreadable ({exc}): restore the journal "
                            f"directory, or move it away to rejoin as a new node") from exc
        return raft.Snapshot(raw["index"], raw["term"], tuple(raw["voters"]), raw["data"])

    def _read_log(self) -> tuple[int, list, bool]:
        """(base, entries, whether a torn tail was left out) of the log file."""
        self.close()
        try:
            data = self.log_path.read_bytes()
        except OSError:
            data = b""
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 30)
        unpacker.feed(data)
        base, entries, good = 0, [], 0
        try:
            for record in unpacker:
                if good == 0 and isinstance(record, dict):
                    base = int(record["base"])
                elif isinstance(record, list) and len(record) == 2:
                    entries.append((record[0], record[1]))
                else:
                    break  # not a record we wrote: treat the rest as torn
                good = unpacker.tell()
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            pass
        return base, entries, good < len(data)

    def _open(self):
        if self._log is None:
            self._log = open(self.log_path, "ab")
        return self._log

    def _rewrite(self, base: int, entries: list) -> None:
        self.close()
        head = msgpack.packb({"base": base}) if base else b""
        self._atomic(self.log_path, head + b"".join(msgpack.packb([t, e], use_bin_type=True)
                                                    for t, e in entries))
        self._base, self._count = base, len(entries)

    def _atomic(self, path: Path, data: bytes) -> None:
        write_atomic(path, data, fsync=True)
