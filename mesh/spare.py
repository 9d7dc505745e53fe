"""Recycled small files: a purged job's tiny outputs become the next job's output files.

Making a file costs a new inode, and on some file systems that is by far the dearest step of
a short task: on ext4 without a journal (this project's benchmark machine) the kernel skips
every inode freed in the last minutes when it looks for a free one, so creating a file after a
purge of thousands took 800 µs here against 30 µs for a rename; writing into a file's existing
block costs a third of giving an empty file its first one. A node running thousands of no-op
tasks a second spent most of its workers' time there. RocksDB recycles its log files for the
same reason.

So the node keeps spare files: ``<volume>/.spare/``, at most ``SPARE_FILES`` of them, each at
most ``SPARE_MAX_BYTES`` long.

- The janitor, deleting a purged job's directory, renames its small regular files into the
  spare directory (``recycle_tree``) while there is room, and deletes the rest as before.
- A worker making an output file takes a spare one by renaming it to its temporary name
  (``Spares.create``) and writes over it from the start; it makes a new file when none is left.
  Its writer truncates the file where its data ends (``Spares`` callers call ``f.truncate()``)
  before the file gets its final name, so no byte of the old content is ever read: the
  temporary and spare names are never served (the data port refuses ``.spare`` paths).

A spare file is named after the second it was kept (``<unix second>-<pid>-...``) and is not
taken until ``QUARANTINE_S`` later. A reader that opened a purged job's file before the purge
(a ``result_iterator`` racing a ``purge``) keeps reading what it opened, as it would from a
deleted file: files this small are read whole by the first read, long before a worker writes
over them.

Two workers may go for the same spare file: ``rename`` gives it to one; the other gets
``FileNotFoundError`` and tries the next name: each worker takes its list in its own order, and
a miss costs a failed rename (15 µs here). A worker lists the spare directory again only
when its list is used up, and when a listing found none old enough it makes new files for
``RELIST_S`` seconds before it looks again.
"""
from __future__ import annotations

import itertools
import math
import os
import random
import time
from pathlib import Path

SPARE_DIR = ".spare"
SPARE_FILES = 10_000  # per volume; at most SPARE_FILES * SPARE_MAX_BYTES on disk (40 MiB)
SPARE_MAX_BYTES = 4096  # one block: a spare file keeps its block, so writing one reuses it
RELIST_S = 1.0
QUARANTINE_S = 5.0  # a kept file is taken no sooner than this after it was kept
_names = itertools.count()


def spare_dir(volume: Path) -> Path:
    return Path(volume) / SPARE_DIR


def recycle_tree(tree: Path, spares: Path, room: int | None = None) -> int:
    """Delete the directory ``tree``, moving up to ``room`` (default: what ``spares`` has room
    for) of its regular files of at most ``SPARE_MAX_BYTES`` into ``spares``; files moved."""
    if room is None:
        room = SPARE_FILES - _count(spares)
    moved = 0
    # stamped by the second rounded up: a file is never stamped earlier than it was kept
    stem = f"{math.ceil(time.time())}-{os.getpid()}-{time.monotonic_ns()}-"
    for folder, dirs, files in os.walk(tree, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            try:
                if moved < room and _small_file(path):
                    os.rename(path, os.path.join(spares, f"{stem}{next(_names)}"))
                    moved += 1
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:  # the spare dir went away, another file system...: delete it
                _unlink_quietly(path)
        for name in dirs:
            _rmdir_quietly(os.path.join(folder, name))
    _rmdir_quietly(tree)
    return moved


class Spares:
    """A worker's side: ``create(path)`` opens a new file at ``path`` for writing, a spare one
    if there is one. The caller truncates it where its data ends before renaming it."""

    def __init__(self, spares: Path):
        self.dir = Path(spares)
        self._names: list[str] = []
        self._empty_until = 0.0
        self.taken = 0
        self._rng = random.Random(os.getpid())  # workers listing alike take them apart

    def create(self, path: Path):
        while True:
            name = self._next()
            if name is None:
                return open(path, "wb")
            try:
                os.rename(self.dir / name, path)
            except OSError:  # another worker took it, or the directory is gone
                continue
            try:
                f = open(path, "r+b")
            except OSError:
                _unlink_quietly(path)
                return open(path, "wb")
            self.taken += 1
            return f

    def _next(self) -> str | None:
        if not self._names:
            now = time.monotonic()
            if now < self._empty_until:
                return None
            try:
                names = os.listdir(self.dir)
            except OSError:
                names = []
            kept_by = time.time() - QUARANTINE_S
            self._names = [name for name in names if _kept_at(name) <= kept_by]
            if not self._names:
                self._empty_until = now + RELIST_S
                return None
            self._rng.shuffle(self._names)
        return self._names.pop()


def _kept_at(name: str) -> float:
    """The second a spare file was kept, from its name (never, for a name not ours)."""
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else float("inf")


def _small_file(path: str) -> bool:
    st = os.lstat(path)
    return (st.st_mode & 0o170000) == 0o100000 and st.st_size <= SPARE_MAX_BYTES and st.st_nlink == 1


def _count(spares: Path) -> int:
    try:
        with os.scandir(spares) as entries:
            return sum(1 for _ in entries)
    except OSError:
        return SPARE_FILES  # no spare dir: no room


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _rmdir_quietly(path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


__all__ = ["QUARANTINE_S", "RELIST_S", "SPARE_DIR", "SPARE_FILES", "SPARE_MAX_BYTES", "Spares",
           "recycle_tree", "spare_dir"]
