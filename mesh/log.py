"""structlog, configured once per process.

Daemons write one JSON object per line to ``<data>/logs/<name>.jsonl``; a process attached to
a terminal also gets readable console lines on stderr. Log files rotate by size
(``RotatingFile``: ``DISCO_LOG_MB`` per file, default 64, and ``DISCO_LOG_FILES`` kept,
default 5: ``node.jsonl``, ``node.jsonl.1``, ...), also when several processes (a node's
workers) write one file. Bind ``node``, ``job``, ``task`` and
``stage`` with ``structlog.contextvars`` or ``log.bind``. ``disco.log`` re-exports this module's
names for code on the user's side.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path


def _structlog_without_rich():
    """structlog, without letting ``structlog.dev`` import rich (about 35 ms of a node's
    start here) only to pretty-print tracebacks on a console: ours, and those of a
    ``ConsoleRenderer`` in job code, stay plain text. rich itself stays importable
    (``disco.progress`` draws its bars with it); this runs at import, before any thread."""
    if "rich" in sys.modules:
        import structlog
        return structlog
    sys.modules["rich"] = None  # structlog.dev's ``try: import rich`` fails at once
    try:
        import structlog
    finally:
        if sys.modules.get("rich", False) is None:
            del sys.modules["rich"]
    return structlog


structlog = _structlog_without_rich()

DEFAULT_LOG_MB = 64
DEFAULT_LOG_FILES = 5


def _limits() -> tuple[int, int]:
    try:
        mb = float(os.environ.get("DISCO_LOG_MB") or DEFAULT_LOG_MB)
        files = int(os.environ.get("DISCO_LOG_FILES") or DEFAULT_LOG_FILES)
    except ValueError:
        mb, files = DEFAULT_LOG_MB, DEFAULT_LOG_FILES
    return max(1, int(mb * (1 << 20))), max(1, files)


def rotate(path: Path, keep: int) -> None:
    """``path`` becomes ``path.1``, ``path.1`` becomes ``path.2``, ...; at most ``keep`` files
    in all (the oldest goes)."""
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            if i + 1 >= keep:
                older.unlink(missing_ok=True)
            else:
                os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    if keep == 1:
        path.unlink(missing_ok=True)
    elif path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


class RotatingFile:
    """An append-only text file that rotates when it grows past ``max_bytes``.

    Several processes may share one: the rotation happens under an exclusive ``flock`` of
    ``PATH.lock``, and a writer whose file was rotated by another (its open file is no longer
    the one at ``path``) reopens before writing.
    """

    CHECK_S = 0.5  # how often a writer looks whether another rotated the file, at most

    def __init__(self, path: Path, max_bytes: int | None = None, keep: int | None = None):
        limit, files = _limits()
        self.path, self.max_bytes, self.keep = Path(path), max_bytes or limit, keep or files
        self._f = open(self.path, "a", buffering=1, encoding="utf-8")
        self._size = 0  # the file's size when last looked at, plus what we wrote since
        self._look_at = 0.0  # look at once

    def write(self, text: str) -> int:
        # looking costs two stats: done when our own lines may have filled the file, and
        # every CHECK_S (other writers' lines), so a writer whose file another rotated moves
        # to the new one within CHECK_S
        now = time.monotonic()
        if self._size >= self.max_bytes or now >= self._look_at:
            self._look_at = now + self.CHECK_S
            try:
                st = os.fstat(self._f.fileno())
                if st.st_size >= self.max_bytes or self._moved(st):
                    self._roll()
                    st = os.fstat(self._f.fileno())
                self._size = st.st_size
            except OSError:
                pass  # logging never stops the process
        self._size += len(text)
        return self._f.write(text)

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()

    def _moved(self, st) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (here.st_ino, here.st_dev) != (st.st_ino, st.st_dev)

    def _roll(self) -> None:
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:  # another writer may have rotated it while we waited
                if os.path.exists(self.path) and os.stat(self.path).st_size >= self.max_bytes:
                    rotate(self.path, self.keep)
            finally:
                self._f.close()
                self._f = open(self.path, "a", buffering=1, encoding="utf-8")
                fcntl.flock(lock, fcntl.LOCK_UN)


_configured = False


def _fallback(obj):
    """What JSON cannot hold: its ``__structlog__()`` if it has one, else its repr."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


# one encoder for every line: json.dumps with a ``default`` builds a new one per call
_ENCODER = json.JSONEncoder(default=_fallback)


def _encode(event_dict, **_kw) -> str:
    return _ENCODER.encode(event_dict)


class _Tee:
    """Write each rendered JSON line to a file and, optionally, a console renderer to stderr."""

    def __init__(self, path: Path | None, console: bool):
        self._file = RotatingFile(path) if path else None
        self._console = structlog.dev.ConsoleRenderer(colors=False) if console else None

    def __call__(self, logger, method, event_dict):
        if self._console is not None:
            sys.stderr.write(self._console(logger, method, dict(event_dict)) + "\n")
        if self._file is not None:
            return event_dict
        raise structlog.DropEvent


def configure(log_file: Path | None = None, console: bool | None = None, **context) -> None:
    """Set up logging for this process; later calls only rebind context."""
    global _configured
    if console is None:
        console = sys.stderr.isatty()
    if not _configured:
        tee = _Tee(log_file, console)
        out = tee._file if tee._file is not None else sys.stderr
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                tee,
                structlog.processors.JSONRenderer(serializer=_encode),
            ],
            logger_factory=structlog.WriteLoggerFactory(out),  # one write a line, not print's two
            cache_logger_on_first_use=True,
        )
        _configured = True
    structlog.contextvars.bind_contextvars(**context)


def get(**context):
    return structlog.get_logger().bind(**context)


__all__ = ["configure", "get", "RotatingFile", "rotate"]
