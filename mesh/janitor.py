"""Deleting directories off the daemon's loop: ``Janitor``.

Use it wherever the daemon would call ``shutil.rmtree`` on something that may be large (a
purged job's map outputs, its job dir): removing 50,000 files takes seconds, and the loop must
keep answering heartbeats meanwhile::

    janitor = Janitor([data_dir, data_dir / "vol0"], node_name)
    janitor.start()                 # also deletes trash a crash left behind
    janitor.remove(data_dir / "vol0" / "jobs" / job)   # returns at once
    ...
    janitor.stop(timeout_s=2.0)     # finish the queue, or leave the rest for the next start

Theory of operation. ``remove(path)`` runs in the caller's thread and costs one ``rename``: the
path moves to ``<root>/.trash-<uuid>`` under the deepest given root that contains it (so one
purge never shows a half-deleted job to a reader, and a name can be reused at once), and the
trash name is queued. The janitor's thread takes names from the queue in order and deletes each
(``shutil.rmtree(ignore_errors=True)`` for a directory, ``unlink`` for anything else), at a
lower CPU priority than the daemon's loop. A rename can fail: across filesystems (``EXDEV``,
a volume mounted below a root that is not itself listed) the path is renamed to a
``.trash-<uuid>`` sibling instead; failing that it is deleted where it is.

Trash is named so that a crash loses nothing but time: ``start()`` queues every ``.trash-*``
entry directly under each root first. ``stop(timeout_s)`` waits that long for the queue to
empty, then abandons what is left (it stays on disk as trash, deleted by the next start) and
ends the thread after the entry it is deleting (a thread still deleting when the time is up
is left to finish that entry; it is a daemon thread and never holds up the process's exit).

Under a volume given as one of ``spare_roots``, the small files of a directory being deleted
are kept as spare files for workers to write into instead (``mesh.spare``): making a file is
the dearest part of a short task on some file systems.

``pending()`` is the number of entries queued or being deleted; ``removed`` counts entries
deleted. Both are safe to read from any thread.
"""
from __future__ import annotations

import collections
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from mesh import log as mesh_log
from mesh import spare

TRASH_PREFIX = ".trash-"
NICE = 10  # the janitor's thread yields the CPU to the daemon's loop


class Janitor:
    """A background thread deleting what it is handed; see the module docstring."""

    def __init__(self, roots=(), node_name: str = "", spare_roots=()):
        self.roots = sorted(map(_clean, roots), key=lambda p: len(p.parts),
                            reverse=True)  # deepest first
        self.spare_roots = {_clean(r) for r in spare_roots}
        self.log = mesh_log.get(node=node_name) if node_name else mesh_log.get()
        self.removed = 0
        self._queue: collections.deque[Path] = collections.deque()
        self._busy = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the caller's side --

    def start(self) -> None:
        """Queue the trash left under the roots, then start deleting in the background."""
        if self._thread is not None:
            raise RuntimeError("Janitor.start() called twice")
        with self._cond:
            queued = set(self._queue)  # trash of remove() calls before start()
            leftovers = [p for root in self.roots for p in _trash_in(root) if p not in queued]
            self._queue.extendleft(reversed(leftovers))
        if leftovers:
            self.log.info("trash_found", entries=len(leftovers))
        for root in self.spare_roots:
            try:
                spare.spare_dir(root).mkdir(exist_ok=True)
            except OSError as exc:  # files are then deleted, not kept
                self.log.warning("spare_dir_not_made", root=str(root), error=str(exc))
        self._thread = threading.Thread(target=self._run, name="janitor", daemon=True)
        self._thread.start()

    def remove(self, path) -> bool:
        """Make ``path`` disappear now and delete it in the background; False if it was absent."""
        trash = self._to_trash(_clean(path))
        if trash is None:
            return False
        with self._cond:
            self._queue.append(trash)
            self._cond.notify()
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._busy

    def stop(self, timeout_s: float | None = None) -> int:
        """Wait up to ``timeout_s`` (None: for ever) for the queue to empty, then end the thread.

        Returns how many entries were abandoned (left on disk as trash for the next start).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._thread is not None and (self._queue or self._busy):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            self._stopping = True
            abandoned = len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:  # it ends after the entry it is deleting
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._thread.join(left)
            abandoned += self._thread.is_alive()
        if abandoned:
            self.log.info("trash_left", entries=abandoned)
        return abandoned

    def _to_trash(self, path: Path) -> Path | None:
        """Rename ``path`` to a trash name; the name to delete, or None if nothing is there."""
        name = TRASH_PREFIX + uuid.uuid4().hex
        root = next((r for r in self.roots if r in path.parents), None)
        for target in ([root / name] if root else []) + [path.with_name(name)]:
            try:
                os.rename(path, target)
                return target
            except OSError:  # EXDEV (another filesystem), EACCES, a vanished root...
                if not os.path.lexists(path):
                    return None
        return path  # cannot be moved: deleted where it is

    # -- the thread --

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)  # this thread only
        except (AttributeError, OSError):
            pass
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                path = self._queue.popleft()
                self._busy = 1
            try:
                _delete(path, self.spare_roots)
            except Exception:  # never let one entry end the thread
                self.log.exception("trash_delete_failed", path=str(path))
            with self._cond:
                self._busy = 0
                self.removed += 1
                self._cond.notify_all()


def _clean(path) -> Path:
    return Path(os.path.normpath(Path(path).absolute()))


def _delete(path: Path, spare_roots=()) -> None:
    if path.is_dir() and not path.is_symlink():
        if path.parent in spare_roots:
            spare.recycle_tree(path, spare.spare_dir(path.parent))
        shutil.rmtree(path, ignore_errors=True)  # what recycling left (a symlink, say)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _trash_in(root: Path) -> list[Path]:
    try:
        with os.scandir(root) as entries:
            return [root / e.name for e in entries if e.name.startswith(TRASH_PREFIX)]
    except OSError:
        return []


__all__ = ["Janitor", "TRASH_PREFIX"]
