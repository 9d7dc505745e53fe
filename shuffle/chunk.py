"""Chunking: re-encode an input, record by record, into record files of bounded stored size.

The engine behind ``ddfs chunk`` (Disco's ``fileutils.Chunker``; SPEC sections 6 and 7). It
touches no files, sockets or clocks: records (or a file object) in, ``Chunk`` objects out. The
caller chunks each input on its own and names the blobs ``<basename>-<chunk.index>``.

Theory of operation
-------------------
Each record is measured as it arrives: its size is the length of its pickle as the record
format stores it (protocol 5, no memo). Records are gathered into a batch of at most
``frame_records`` records and about ``frame_bytes`` pickled bytes; each batch is encoded as one
compressed frame (``shuffle.record.encode_frame``). The chunk being built is a list of byte
parts, the file header and its frames so far. A frame that would take the chunk past
``chunk_bytes`` closes it (it is yielded) and starts the next one; a frame too big even for an
empty chunk is split in halves, by records, until each piece fits. Every size compared with
``chunk_bytes`` is that of the encoded frames, i.e. of stored (compressed) bytes, so
``chunk.size <= chunk_bytes`` holds for every chunk, and no record is ever split.

Invariants: each chunk is a complete record file on its own (header + whole frames) of
``1 <= records`` and ``size <= chunk_bytes``; indexes count 0, 1, 2, ...; the records of all
chunks, in order, are exactly the input records. Memory is one chunk being built (at most
``chunk_bytes``) plus one batch of records and its frame: a 4 GiB input is chunked in bounded
memory, as long as the caller lets go of each chunk it has stored.

A record larger than ``max_record_bytes`` raises ``RecordTooLarge`` naming its 0-based index in
the input (and the input's name, if given). ``chunk_bytes`` must be at least
``max_record_bytes + CHUNK_OVERHEAD``, so any record allowed fits a chunk on its own.

What a chunk holds
------------------
Each record exactly as the reader yielded it. For text (the default reader, :func:`line_reader`)
the records are the lines: ``str``, UTF-8 decoded, newline kept, the very entries
``disco.worker.task_io.line_reader`` yields for the original file. A map task reading a chunk
with ``default_map_reader`` sees a record file and hands it to ``chain_reader``, which yields
each stored record as is, so the map function receives the line it would have received from
the text. This is what Disco does (its chunker stores records as read and ``chain_reader``
yields them back). For an input that is itself a record file (``reader=chain_reader``) the
records are its ``(key, value)`` pairs, and a map gets those same pairs. So the records of a
text chunk are ``str``, not 2-tuples: a job reading a chunk straight into reduce gets lines.
"""
from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from common.error import DataError
from shuffle.record import (CODEC_LZ4, CODEC_NONE, FILE_HEADER, FILE_MAGIC, FRAME_BYTES,
                            FRAME_HEADER, VERSION, encode_frame)

__all__ = ["CHUNK_OVERHEAD", "DEFAULT_CHUNK_BYTES", "DEFAULT_FRAME_RECORDS",
           "DEFAULT_MAX_RECORD_BYTES", "Chunk", "RecordTooLarge", "chunk_input", "chunk_records",
           "line_reader"]

DEFAULT_CHUNK_BYTES = 64 << 20        # Disco's chunk size (ddfs chunk -S)
DEFAULT_MAX_RECORD_BYTES = 1 << 20    # Disco's record limit (ddfs chunk -Z)
DEFAULT_FRAME_RECORDS = 1 << 13       # records per frame at most
PICKLE_PROTOCOL = 5                   # as shuffle.record pickles
PICKLE_SLACK = 16                     # a one-record frame pickles to at most its record + 11
CHUNK_OVERHEAD = FILE_HEADER.size + FRAME_HEADER.size + PICKLE_SLACK
STR_BYTES_PER_CHAR = 4                # UTF-8 (with surrogatepass, as pickle encodes) at most
SCALAR_SLACK = 32                     # a str's pickle is at most 4 bytes a char + 17, bytes' 1 + 21
STR_ESTIMATE_EXTRA = 8                # a str's pickle beyond its characters, about (ASCII)

_FILE_HEADER_BYTES = FILE_HEADER.pack(FILE_MAGIC, VERSION)
_CODECS = (CODEC_NONE, CODEC_LZ4)


class RecordTooLarge(DataError):
    """A record of the input pickles to more than the chunker's record limit.

    ``index`` is the record's 0-based position in its input, ``name`` the input's name ("" if
    none was given), ``size`` its pickled size in bytes (a lower bound when ``exact`` is false),
    ``limit`` the bound it broke. With ``stored``, ``size`` is the record's one-record frame and
    ``limit`` the room of an empty chunk (a safeguard: the record limit keeps any record under
    it). Retrying elsewhere cannot help.
    """

    retryable = False

    def __init__(self, index: int, size: int, limit: int, name: str = "", *,
                 exact: bool = True, stored: bool = False):
        self.index, self.size, self.limit, self.name = index, size, limit, name
        where = f"record {index} of {name}" if name else f"record {index}"
        if stored:
            text = (f"{where} takes {size} bytes stored, more than the {limit} bytes a chunk "
                    f"has room for; raise chunk_bytes (ddfs chunk -S)")
        else:
            amount = f"{size} bytes" if exact else f"at least {size} bytes"
            text = (f"{where} pickles to {amount}, over the {limit}-byte max_record_bytes "
                    f"limit; raise the limit (ddfs chunk -Z) or split the record")
        super().__init__(text)


@dataclass(frozen=True)
class Chunk:
    """One chunk: a complete record file, held as byte parts (the file header, then frames).

    ``size`` is its length in bytes, ``records`` how many records it holds, ``index`` its place
    among the chunks of its input (0 first). ``data`` joins the parts (a copy); ``write_to``
    writes them without joining.
    """

    parts: tuple[bytes, ...]
    records: int
    index: int
    size: int

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)

    def write_to(self, fileobj: BinaryIO) -> int:
        """Write the chunk to a binary file object; returns the bytes written."""
        for part in self.parts:
            fileobj.write(part)
        return self.size


def chunk_records(records: Iterable, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                  max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                  frame_records: int = DEFAULT_FRAME_RECORDS, *, frame_bytes: int | None = None,
                  codec: int = CODEC_LZ4, name: str = "") -> Iterator[Chunk]:
    """The chunks of ``records`` (any picklable objects, stored as given), in order.

    Each chunk's stored size is at most ``chunk_bytes``. ``frame_bytes`` is the pickled size a
    frame aims at (default: 256 KiB, or a quarter of a chunk's room if less). ``name`` names the
    input in errors. Arguments are checked at once (ValueError); records are read lazily, and a
    record over ``max_record_bytes`` raises ``RecordTooLarge`` when it is reached.
    """
    if frame_bytes is None:
        frame_bytes = max(1, min(FRAME_BYTES, (chunk_bytes - CHUNK_OVERHEAD) // 4))
    _check_arguments(chunk_bytes, max_record_bytes, frame_records, frame_bytes, codec)
    return _chunks(records, _Builder(chunk_bytes, codec, name), _Sizer(max_record_bytes, name),
                   frame_records, frame_bytes)


def _check_arguments(chunk_bytes: int, max_record_bytes: int, frame_records: int,
                     frame_bytes: int, codec: int) -> None:
    if max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}")
    if chunk_bytes < max_record_bytes + CHUNK_OVERHEAD:
        raise ValueError(f"chunk_bytes ({chunk_bytes}) must be at least max_record_bytes "
                         f"({max_record_bytes}) + {CHUNK_OVERHEAD} bytes of file and frame "
                         f"headers, so that the largest record allowed fits a chunk; raise "
                         f"chunk_bytes or lower max_record_bytes")
    if frame_records < 1:
        raise ValueError(f"frame_records must be at least 1, got {frame_records}")
    if frame_bytes < 1:
        raise ValueError(f"frame_bytes must be at least 1, got {frame_bytes}")
    if codec not in _CODECS:
        raise ValueError(f"unknown codec {codec}; use CODEC_NONE or CODEC_LZ4")


def _chunks(records: Iterable, builder: _Builder, sizer: _Sizer, frame_records: int,
            frame_bytes: int) -> Iterator[Chunk]:
    batch: list = []
    batch_bytes = 0
    first = 0                           # input index of batch[0]
    measure, short_str = sizer.measure, sizer.str_chars
    try:
        for index, record in enumerate(records):
            if type(record) is str and len(record) <= short_str:   # a line: measure() inlined
                size = len(record) + STR_ESTIMATE_EXTRA
            else:
                size = measure(record, index)
            if batch and (batch_bytes + size > frame_bytes or len(batch) >= frame_records):
                yield from builder.add(batch, first)
                batch, batch_bytes, first = [], 0, index
            batch.append(record)
            batch_bytes += size
    finally:
        if type(records) is _Input:      # ours: stop its reader now, whatever ended the loop
            records.close()
    if batch:
        yield from builder.add(batch, first)
    yield from builder.finish()


class _Sizer:
    """Measures records: each one's pickled size, or a close estimate where a cheap bound on it
    already proves it under the limit (short ``str`` and ``bytes``, the common case)."""

    def __init__(self, limit: int, name: str):
        self.limit, self.name = limit, name
        self.str_chars = (limit - SCALAR_SLACK) // STR_BYTES_PER_CHAR
        self.bytes_len = limit - SCALAR_SLACK
        self._out = io.BytesIO()
        self._pickler = self._new_pickler()

    def _new_pickler(self) -> pickle.Pickler:
        pickler = pickle.Pickler(self._out, PICKLE_PROTOCOL)
        pickler.fast = True
        return pickler

    def measure(self, record, index: int) -> int:
        kind = type(record)
        if kind is str:
            if len(record) <= self.str_chars:
                return len(record) + STR_ESTIMATE_EXTRA
            if len(record) > self.limit:
                raise RecordTooLarge(index, len(record), self.limit, self.name, exact=False)
        elif kind is bytes or kind is bytearray:
            if len(record) <= self.bytes_len:
                return len(record) + STR_ESTIMATE_EXTRA
            if len(record) > self.limit:
                raise RecordTooLarge(index, len(record), self.limit, self.name, exact=False)
        size = self._pickled_size(record)
        if size > self.limit:
            raise RecordTooLarge(index, size, self.limit, self.name)
        return size

    def _pickled_size(self, record) -> int:
        """The record's pickle as ``shuffle.record`` writes it: without the memo, or with it
        for the cyclic or very deep objects that need it."""
        out = self._out
        out.seek(0)
        out.truncate()
        try:
            self._pickler.dump(record)
        except (ValueError, RecursionError):
            self._pickler = self._new_pickler()
            return len(pickle.dumps(record, PICKLE_PROTOCOL))
        return out.tell()


class _Builder:
    """The chunk being built: frames go in, finished chunks come out."""

    def __init__(self, chunk_bytes: int, codec: int, name: str):
        self.chunk_bytes, self.codec, self.name = chunk_bytes, codec, name
        self.room = chunk_bytes - len(_FILE_HEADER_BYTES)    # for frames in an empty chunk
        self.index = 0
        self._start()

    def _start(self) -> None:
        self.parts: list[bytes] = [_FILE_HEADER_BYTES]
        self.size = len(_FILE_HEADER_BYTES)
        self.records = 0

    def add(self, batch: list, first: int) -> list[Chunk]:
        """Add a batch of records (``first`` is the input index of its first); returns the
        chunks this closes."""
        done = []
        for frame, count in self._frames(batch, first):
            if self.size + len(frame) > self.chunk_bytes:
                done.append(self._close())
            self.parts.append(frame)
            self.size += len(frame)
            self.records += count
        return done

    def _frames(self, batch: list, first: int) -> Iterator[tuple[bytes, int]]:
        """The batch as frames that each fit an empty chunk: one if it fits, else halves."""
        frame = encode_frame(batch, self.codec)
        if len(frame) <= self.room:
            yield frame, len(batch)
            return
        if len(batch) == 1:
            raise RecordTooLarge(first, len(frame), self.room, self.name, stored=True)
        del frame
        half = len(batch) // 2
        yield from self._frames(batch[:half], first)
        yield from self._frames(batch[half:], first + half)

    def finish(self) -> list[Chunk]:
        """The last chunk, if it holds any record."""
        return [self._close()] if self.records else []

    def _close(self) -> Chunk:
        chunk = Chunk(tuple(self.parts), self.records, self.index, self.size)
        self.index += 1
        self._start()
        return chunk


# -- inputs -------------------------------------------------------------------------------------

Reader = Callable[..., Iterable]


def line_reader(fd: BinaryIO, size: int | None = None, url: str | None = None,
                params: object = None) -> Iterator[str]:
    """Each line of a binary file object as ``str`` (UTF-8), its ``"\\n"`` kept: the entries of
    ``disco.worker.task_io.line_reader``. ``fd`` is left open."""
    yield from io.TextIOWrapper(_Borrowed(fd), encoding="utf-8", newline="\n")


class _Borrowed(io.BufferedIOBase):
    """Reads ``fd`` for a TextIOWrapper; closing it (as the wrapper does when it is collected)
    leaves ``fd`` open."""

    def __init__(self, fd: BinaryIO):
        super().__init__()
        self._read = fd.read
        self._read1 = getattr(fd, "read1", fd.read)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._read(size)

    def read1(self, size: int = -1) -> bytes:
        return self._read1(size)


def chunk_input(fileobj: BinaryIO, reader: Reader | None = None, *, name: str = "",
                size: int | None = None, params: object = None, **chunking) -> Iterator[Chunk]:
    """The chunks of one input: ``reader(fileobj, size, name, params)`` (Disco's reader
    signature; default :func:`line_reader`) yields its records, ``chunking`` goes to
    :func:`chunk_records`. ``name`` (a path or URL) names the input in errors. The file object
    is left open; close it once the chunks are consumed."""
    reader = line_reader if reader is None else reader
    return chunk_records(_Input(reader, fileobj, size, name, params), name=name, **chunking)


class _Input:
    """An input's records: the reader is called only when the chunker starts reading."""

    def __init__(self, reader: Reader, fileobj: BinaryIO, size: int | None, name: str, params):
        self._call = (reader, fileobj, size, name, params)
        self._records: Iterator | None = None

    def __iter__(self) -> Iterator:
        reader, *args = self._call
        self._records = iter(reader(*args))
        return self._records

    def close(self) -> None:
        close = getattr(self._records, "close", None)
        if close is not None:
            close()
