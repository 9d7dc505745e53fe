"""Disco's file helpers: chunking records, writing the record format, atomic output files.

Use :class:`Chunker` to cut records into record files of bounded size (what ``ddfs chunk``
stores), :class:`DiscoOutputStream` to write ``(key, value)`` pairs to any binary stream in
this project's record format (``shuffle.record``; ``version=0`` gives Disco's plain text
lines), :class:`AtomicFile` for an output that appears under its name only once complete, and
:class:`DiscoZipFile` to build a zip archive in memory.

What differs from Disco: the stream format is this project's (header ``DREC``, lz4 frames
with xxh64 checksums), not Disco's zlib hunks; Disco's ``compression_level``,
``min_hunk_size`` and ``version=1`` keywords are accepted.
"""
from __future__ import annotations

import io
import os
import select
import time
import zipfile
from inspect import getmodule, getsourcefile

from disco.error import DataError, UsageError

__all__ = ["MB", "MIN_DISK_SPACE", "MAX_RECORD_SIZE", "HUNK_SIZE", "CHUNK_SIZE", "Chunker",
           "DiscoOutputStream", "DiscoOutputStream_v0", "DiscoOutputStream_v1", "DiscoOutput",
           "DiscoZipFile", "NonBlockingInput", "AtomicFile", "Wait", "sync", "ensure_path",
           "ensure_free_space", "files"]

MB = 1 << 20
MIN_DISK_SPACE = 1 * MB      # an AtomicFile refuses to start with less free space than this
MAX_RECORD_SIZE = 1 * MB     # Disco's record limit for chunks
HUNK_SIZE = 1 * MB           # Disco's frame size; frames here aim at shuffle.record.FRAME_BYTES
CHUNK_SIZE = 64 * MB         # Disco's chunk size


class Chunker:
    """Cuts records into chunks, each a complete record file of at most ``chunk_size`` bytes.

    ``Chunker().chunks(records)`` yields each chunk's bytes; records are stored as given (a
    line stays a line) and never split. A record over ``max_record_size`` pickled bytes
    raises ``shuffle.chunk.RecordTooLarge`` naming its index."""

    def __init__(self, chunk_size: int = CHUNK_SIZE, max_record_size: int = MAX_RECORD_SIZE):
        from shuffle.chunk import CHUNK_OVERHEAD
        if max_record_size + CHUNK_OVERHEAD > chunk_size:
            max_record_size = chunk_size - CHUNK_OVERHEAD
        if max_record_size < 1:
            raise UsageError(f"chunk size {chunk_size} bytes is too small for any record")
        self.chunk_size = chunk_size
        self.max_record_size = max_record_size

    def chunks(self, records, name: str = ""):
        from shuffle.chunk import chunk_records
        for chunk in chunk_records(records, self.chunk_size, self.max_record_size, name=name):
            yield chunk.data


class DiscoOutputStream_v0:
    """Disco's oldest format: one text line ``"<len> <key> <len> <value>\\n"`` per pair
    (``str()`` of each, lengths in UTF-8 bytes). Read it back with ``old_netstr_reader``."""

    def __init__(self, stream, **_ignored):
        self.stream = stream

    def add(self, k, v) -> None:
        key, value = str(k).encode("utf-8"), str(v).encode("utf-8")
        self.stream.write(b"%d %s %d %s\n" % (len(key), key, len(value), value))

    def close(self) -> None:
        pass


class DiscoOutputStream_v1:
    """Pairs (``add``) or any records (``append``) in this project's record format.

    ``size`` counts bytes written to ``stream`` so far. ``close()`` writes what is buffered but
    leaves ``stream`` open. ``max_record_size`` (pickled bytes), if given, is checked per
    record (ValueError, as Disco)."""

    def __init__(self, stream, version: int = 1, compression_level: int = 2,
                 min_hunk_size: int = HUNK_SIZE, max_record_size: int | None = None):
        from shuffle.record import CODEC_LZ4, CODEC_NONE, RecordWriter
        self.stream = stream
        self.version = version
        self.max_record_size = max_record_size
        codec = CODEC_LZ4 if compression_level else CODEC_NONE
        self._writer = RecordWriter(stream, codec)

    @property
    def size(self) -> int:
        return self._writer.bytes_written

    def add(self, k, v) -> None:
        self.append((k, v))

    def append(self, record) -> None:
        if self.max_record_size:
            import pickle
            size = len(pickle.dumps(record, 5))
            if size > self.max_record_size:
                raise ValueError(f"record of {size} bytes is over the {self.max_record_size}"
                                 "-byte max_record_size")
        self._writer.add_many([record])

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class DiscoOutputStream:
    """``DiscoOutputStream(stream)``: a record-format writer (:class:`DiscoOutputStream_v1`);
    ``version=0`` gives Disco's text lines (:class:`DiscoOutputStream_v0`)."""

    def __new__(cls, stream, version: int = -1, **kwargs):
        if version == 0:
            return DiscoOutputStream_v0(stream, **kwargs)
        return DiscoOutputStream_v1(stream, version=1, **kwargs)


class DiscoOutput(DiscoOutputStream_v1):
    """A record file at ``path``, written through an :class:`AtomicFile`; ``close()`` renames
    it into place."""

    def __init__(self, path, **kwargs):
        super().__init__(AtomicFile(path), **kwargs)

    def close(self) -> None:
        super().close()
        self.stream.close()


class DiscoZipFile(zipfile.ZipFile):
    """A zip archive built in memory: ``writepath``, ``writemodule``, ``writesource``, then
    ``dumps()`` (the archive's bytes) or ``dump(handle)``."""

    def __init__(self):
        self.buffer = io.BytesIO()
        super().__init__(self.buffer, "w", zipfile.ZIP_DEFLATED)

    def writepath(self, pathname, exclude=()) -> None:
        for path in files(pathname):
            if os.path.splitext(path)[1] not in exclude:
                self.write(path, path)

    def writemodule(self, module, arcname=None) -> None:
        if isinstance(module, str):
            import importlib
            module = importlib.import_module(module)
        self.write(getsourcefile(module), arcname=arcname)

    def writesource(self, obj) -> None:
        self.writepath(getsourcefile(getmodule(obj)))

    def dump(self, handle) -> None:
        handle.write(self.dumps())

    def dumps(self) -> bytes:
        if self.fp is not None:
            self.close()
        return self.buffer.getvalue()


class NonBlockingInput:
    """Reads from a file descriptor with a time limit: ``t_read(n)`` and ``t_read_until(delim)``
    return ``(seconds spent, bytes)`` or raise OSError once ``timeout`` seconds have passed."""

    def __init__(self, file, timeout: float = 600):
        import fcntl
        self.fd, self.timeout = file.fileno(), timeout
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    def select(self, spent: float = 0) -> float:
        started = time.monotonic()
        if spent < self.timeout and select.select([self.fd], [], [], self.timeout - spent)[0]:
            return time.monotonic() - started
        raise OSError(f"reading timed out after {self.timeout} seconds")

    def _read(self, n: int) -> bytes:
        try:
            data = os.read(self.fd, n)
        except BlockingIOError:
            return b""
        if not data:
            raise EOFError("input ended")
        return data

    def t_read(self, nbytes: int, spent: float = 0, data: bytes = b""):
        while len(data) < nbytes:
            spent += self.select(spent)
            data += self._read(nbytes - len(data))
        return spent, data

    def t_read_until(self, delim: bytes, spent: float = 0, data: bytes = b""):
        while not data.endswith(delim):
            spent += self.select(spent)
            data += self._read(1)
        return spent, data


class AtomicFile:
    """A binary file written as ``<path>.partial`` and renamed to ``path`` by ``close()``
    (after flush and fsync), so a reader never sees a partly written output.

    Used as a context manager, an exception removes the partial file instead. A file that is
    dropped without ``close()`` leaves only the ``.partial``, never a ``path``."""

    def __init__(self, path):
        path = os.fspath(path)
        if path.startswith("file://"):
            path = path[len("file://"):]
        directory = os.path.dirname(path) or "."
        ensure_path(directory)
        ensure_free_space(directory)
        self.path = path
        self.partial = f"{path}.partial"
        self.isopen = True
        self._f = open(self.partial, "wb")

    def write(self, data) -> int:
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def tell(self) -> int:
        return self._f.tell()

    @property
    def closed(self) -> bool:
        return not self.isopen

    def close(self) -> None:
        if self.isopen:
            sync(self._f)
            self._f.close()
            os.replace(self.partial, self.path)
            self.isopen = False

    def abort(self) -> None:
        """Drop what was written: the partial file is removed, ``path`` is not touched."""
        if self.isopen:
            self._f.close()
            self.isopen = False
            try:
                os.unlink(self.partial)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Wait(Exception):
    """Raised by a file object whose read would block; ``retry_after`` is in seconds."""

    retry_after = 1

    def __init__(self, retry_after=None):
        super().__init__(retry_after)
        if retry_after is not None:
            self.retry_after = retry_after


def sync(fd) -> None:
    """Flush ``fd`` and fsync it to disk."""
    fd.flush()
    os.fsync(fd.fileno())


def ensure_path(path) -> None:
    """Create directory ``path`` and its parents; one that exists already is fine."""
    os.makedirs(path, exist_ok=True)


def ensure_free_space(fname) -> None:
    """Raise DataError when the filesystem of ``fname`` has under ``MIN_DISK_SPACE`` free."""
    s = os.statvfs(fname)
    free = s.f_bsize * s.f_bavail
    if free < MIN_DISK_SPACE:
        raise DataError(f"only {free // 1024} KB of disk space free at {fname}; "
                        "the task needs at least 1 MB")


def files(path):
    """Every file under ``path`` (``path`` itself if it is not a directory), depth first."""
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            yield from files(os.path.join(path, name))
    else:
        yield path
