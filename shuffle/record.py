"""The record format: versioned, framed, compressed and checksummed.

Chunks, map outputs, spilled sort runs and results are all record files. Keys and values are
any picklable Python objects. Layout (all integers little-endian; see docs/record-format.md)::

    file   = FILE_HEADER frame*
    FILE_HEADER  (8 bytes)  b"DREC" | u8 version | 3 reserved bytes (zero)
    FRAME_HEADER (24 bytes) b"FR" | u8 codec | u8 flags | u32 payload_len | u32 raw_len
                            | u32 nrecords | u64 xxh64(payload)
    payload = codec(pickle.dumps([(k, v), ...], protocol=5))

Pairs are batched: a writer buffers them and emits one frame per ``frame_records`` pairs. When
``frame_records`` is not given the batch size adapts after each frame so that a frame's raw
(pickled) size is near ``frame_bytes`` (256 KiB by default: measured fastest, larger frames fall
out of the CPU cache and encode slower).

Readers never stop silently: a bad magic, an unknown version, codec or flag, a checksum mismatch
or a file that ends inside a frame each raise ``RecordFormatError``. Decoding unpickles, so only
read data from a trusted cluster.

Use ``RecordWriter`` to write, ``iter_records`` to read files (``shuffle.recordfile`` has
``write_file``/``read_file`` for paths) and
``FrameDecoder`` to decode a byte stream that arrives in arbitrary chunks (network transfers).
"""
from __future__ import annotations

import pickle
from io import BytesIO
import struct
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import BinaryIO

import lz4.block
import xxhash

from common.error import RecordFormatError

__all__ = [
    "CODEC_LZ4", "CODEC_NONE", "FILE_HEADER", "FILE_MAGIC", "FRAME_HEADER", "FRAME_MAGIC",
    "VERSION", "FrameDecoder", "RecordWriter", "decode_frame", "encode_frame", "is_record_file",
    "iter_frames", "iter_records",
]

FILE_MAGIC = b"DREC"
FRAME_MAGIC = b"FR"
VERSION = 1
FILE_HEADER = struct.Struct("<4sB3x")
FRAME_HEADER = struct.Struct("<2sBBIIIQ")
CODEC_NONE = 0
CODEC_LZ4 = 1
CODECS = (CODEC_NONE, CODEC_LZ4)
PICKLE_PROTOCOL = 5
MIN_COMPRESS_BYTES = 64
# lz4's "fast" mode, acceleration 2: 1.6x the encode speed of the default on sort records
# (10-byte keys, 90-byte values) at the same ratio, 1.05-1.1x on text for a 3-5 % lower ratio
# (bench/compression.py); decoding is as fast
LZ4_ACCELERATION = 2
FRAME_BYTES = 256 << 10
FIRST_FRAME_RECORDS = 1024
MAX_FRAME_RECORDS = 1 << 20
ITER_CHUNK_RECORDS = 1 << 16
U32_MAX = 0xFFFFFFFF

_FILE_HEADER_BYTES = FILE_HEADER.pack(FILE_MAGIC, VERSION)
_xxh64 = xxhash.xxh64_intdigest
_dumps = pickle.dumps
_Pickler = pickle.Pickler
_loads = pickle.loads
_compress = lz4.block.compress
_decompress = lz4.block.decompress
_pack_frame = FRAME_HEADER.pack
_unpack_frame = FRAME_HEADER.unpack_from
_FRAME_HEADER_SIZE = FRAME_HEADER.size


# -- frames -------------------------------------------------------------------------------------

def encode_frame(pairs: list, codec: int = CODEC_LZ4) -> bytes:
    """One frame (header + payload) holding ``pairs``; tiny or incompressible payloads are stored
    uncompressed (codec 0) whatever ``codec`` asks."""
    header, payload = _encode(pairs, codec)
    return header + payload


def _pickle(pairs: list) -> bytes:
    """Pickle without the memo ("fast" mode): twice as fast and smaller for record lists. Cyclic
    or very deep objects need the memo and fall back to plain ``pickle.dumps``."""
    out = BytesIO()
    pickler = _Pickler(out, PICKLE_PROTOCOL)
    pickler.fast = True
    try:
        pickler.dump(pairs)
    except (ValueError, RecursionError):
        return _dumps(pairs, PICKLE_PROTOCOL)
    return out.getvalue()


def _encode(pairs: list, codec: int, memo: bool = False) -> tuple[bytes, bytes]:
    raw = _dumps(pairs, PICKLE_PROTOCOL) if memo else _pickle(pairs)
    raw_len = len(raw)
    if raw_len > U32_MAX:
        raise RecordFormatError(f"frame of {len(pairs)} records pickles to {raw_len} bytes, "
                                f"over the 4 GiB frame limit; write fewer records per frame")
    payload = raw
    if codec == CODEC_LZ4 and raw_len >= MIN_COMPRESS_BYTES:
        packed = _compress(raw, mode="fast", acceleration=LZ4_ACCELERATION, store_size=False)
        if len(packed) < raw_len:
            payload = packed
        else:
            codec = CODEC_NONE
    elif codec not in CODECS:
        raise ValueError(f"unknown codec {codec}; use CODEC_NONE or CODEC_LZ4")
    else:
        codec = CODEC_NONE
    header = _pack_frame(FRAME_MAGIC, codec, 0, len(payload), raw_len, len(pairs), _xxh64(payload))
    return header, payload


def decode_frame(buf: bytes | memoryview) -> list[tuple]:
    """The pairs of one whole frame in ``buf`` (header + payload, nothing after it)."""
    if len(buf) < _FRAME_HEADER_SIZE:
        raise RecordFormatError(f"frame of {len(buf)} bytes is shorter than its "
                                f"{_FRAME_HEADER_SIZE}-byte header")
    header = _check_header(buf, 0)
    end = _FRAME_HEADER_SIZE + header[3]
    if len(buf) != end:
        raise RecordFormatError(f"frame length mismatch: header says {end} bytes, got {len(buf)}")
    return _decode_payload(header, buf[_FRAME_HEADER_SIZE:end])


def _check_header(buf, offset: int) -> tuple:
    header = _unpack_frame(buf, offset)
    magic, codec, flags = header[0], header[1], header[2]
    if magic != FRAME_MAGIC:
        raise RecordFormatError(f"bad frame magic {bytes(magic)!r}, expected {FRAME_MAGIC!r}")
    if codec not in CODECS:
        raise RecordFormatError(f"unknown frame codec {codec} (this reader knows 0 and 1)")
    if flags:
        raise RecordFormatError(f"unknown frame flags {flags:#04x} (version {VERSION} has none)")
    return header


def _decode_payload(header: tuple, payload) -> list:
    _, codec, _, payload_len, raw_len, nrecords, checksum = header
    if _xxh64(payload) != checksum:
        raise RecordFormatError(f"frame checksum mismatch ({payload_len}-byte payload, "
                                f"{nrecords} records): data is corrupt")
    try:
        raw = _decompress(payload, uncompressed_size=raw_len) if codec else payload
        if len(raw) != raw_len:
            raise ValueError(f"payload is {len(raw)} bytes, header says {raw_len}")
        pairs = _loads(raw)
    except Exception as exc:
        raise RecordFormatError(f"frame of {nrecords} records cannot be decoded: {exc}") from exc
    if type(pairs) is not list or len(pairs) != nrecords:
        raise RecordFormatError(f"frame holds {_describe(pairs)}, header says {nrecords} records")
    return pairs


def _describe(obj) -> str:
    return f"{len(obj)} records" if type(obj) is list else f"a {type(obj).__name__}"


# -- writing ------------------------------------------------------------------------------------

class RecordWriter:
    """Writes pairs to a binary file object as a record file, one frame per batch of pairs.

    ``frame_records`` fixes the pairs per frame; by default it adapts to ``frame_bytes`` of raw
    data per frame. ``memo=True`` pickles frames with pickle's memo: an object repeated in a
    frame is stored once and comes back as one object, which is what sorted, de-duplicated map
    runs are made of (without it, frames pickle in the memo-less "fast" mode, quicker for
    distinct records). ``close()`` flushes but leaves ``fileobj`` open. ``records`` counts pairs
    written (and buffered), ``bytes_written`` counts bytes handed to ``fileobj``.
    """

    def __init__(self, fileobj: BinaryIO, codec: int = CODEC_LZ4,
                 frame_records: int | None = None, *, frame_bytes: int = FRAME_BYTES,
                 memo: bool = False):
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec}; use CODEC_NONE or CODEC_LZ4")
        if frame_records is not None and frame_records < 1:
            raise ValueError(f"frame_records must be at least 1, got {frame_records}")
        self.fileobj = fileobj
        self.codec = codec
        self.frame_bytes = frame_bytes
        self.memo = memo
        self._adaptive = frame_records is None
        self._batch = FIRST_FRAME_RECORDS if frame_records is None else frame_records
        self._buf: list = []
        self.records = 0
        self.frames = 0
        self.closed = False
        fileobj.write(_FILE_HEADER_BYTES)
        self.bytes_written = len(_FILE_HEADER_BYTES)

    def add(self, key, value) -> None:
        buf = self._buf
        buf.append((key, value))
        self.records += 1
        if len(buf) >= self._batch:
            self.flush()

    def add_many(self, pairs: Iterable[tuple]) -> None:
        """Add pairs (2-tuples, stored as given); a list is framed by slicing, without copying
        pairs one by one."""
        if type(pairs) is not list:
            it = iter(pairs)
            while chunk := list(islice(it, ITER_CHUNK_RECORDS)):
                self._add_list(chunk)
            return
        self._add_list(pairs)

    def add_frame(self, pairs: list) -> None:
        """Write ``pairs`` (a list) as a frame of its own now, after what is buffered: for a
        caller whose pairs are in the CPU cache at this moment (just made or just sorted), so
        that pickling them does not wait until they have fallen out of it. A list too big for
        one frame is framed as ``add_many`` does."""
        if not pairs:
            return
        if len(pairs) > MAX_FRAME_RECORDS:
            self.add_many(pairs)
            return
        self.flush()
        self.records += len(pairs)
        self._write_frame(pairs, adapt=False)

    def _add_list(self, pairs: list) -> None:
        n = len(pairs)
        self.records += n
        start = 0
        if self._buf:
            start = min(n, self._batch - len(self._buf))
            self._buf.extend(pairs[:start])
            if len(self._buf) < self._batch:
                return
            self.flush()
        while n - start >= self._batch:
            stop = start + self._batch
            self._write_frame(pairs[start:stop])
            start = stop
        if start < n:
            self._buf = pairs[start:]

    def flush(self) -> None:
        """Write the buffered pairs as one frame (nothing if the buffer is empty)."""
        if self._buf:
            buf, self._buf = self._buf, []
            self._write_frame(buf)

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_frame(self, pairs: list, adapt: bool = True) -> None:
        header, payload = _encode(pairs, self.codec, self.memo)
        write = self.fileobj.write
        write(header)
        write(payload)
        self.bytes_written += len(header) + len(payload)
        self.frames += 1
        if self._adaptive and adapt:
            raw_len = _unpack_frame(header)[4]
            per_record = max(1, raw_len // len(pairs))
            self._batch = max(1, min(MAX_FRAME_RECORDS, self.frame_bytes // per_record))


# -- reading files ------------------------------------------------------------------------------

def check_file_header(header: bytes) -> None:
    """Raise RecordFormatError unless ``header`` is a whole file header of this version."""
    if len(header) < FILE_HEADER.size:
        raise RecordFormatError(f"truncated record file: {len(header)}-byte header, "
                                f"expected {FILE_HEADER.size}")
    magic, version = FILE_HEADER.unpack_from(header)
    if magic != FILE_MAGIC:
        raise RecordFormatError(f"not a record file: magic {bytes(magic)!r}, "
                                f"expected {FILE_MAGIC!r}")
    if version != VERSION:
        raise RecordFormatError(f"record file version {version} is not supported: this reader "
                                f"reads version {VERSION}")


def iter_frames(fileobj: BinaryIO) -> Iterator[list]:
    """Each frame's list of pairs, from a binary file object positioned at the file header."""
    read = fileobj.read
    check_file_header(read(FILE_HEADER.size))
    offset = FILE_HEADER.size
    while True:
        head = read(_FRAME_HEADER_SIZE)
        if not head:
            return
        if len(head) < _FRAME_HEADER_SIZE:
            raise RecordFormatError(f"truncated record file: {len(head)} bytes of a frame "
                                    f"header at offset {offset}")
        header = _check_header(head, 0)
        payload = read(header[3])
        if len(payload) < header[3]:
            raise RecordFormatError(f"truncated record file: frame at offset {offset} has "
                                    f"{len(payload)} of {header[3]} payload bytes")
        yield _decode_payload(header, payload)
        offset += _FRAME_HEADER_SIZE + header[3]


def iter_records(fileobj: BinaryIO) -> Iterator[tuple]:
    """Each pair in a record file object, in the order written."""
    for pairs in iter_frames(fileobj):
        yield from pairs


def is_record_file(fileobj_or_first_bytes) -> bool:
    """True if the bytes, or the file object's next bytes, start with the record-file magic.

    A file object keeps its position (it must be seekable or offer ``peek``)."""
    src = fileobj_or_first_bytes
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:len(FILE_MAGIC)]) == FILE_MAGIC
    if hasattr(src, "peek"):
        return src.peek(len(FILE_MAGIC))[:len(FILE_MAGIC)] == FILE_MAGIC
    pos = src.tell()
    try:
        return src.read(len(FILE_MAGIC)) == FILE_MAGIC
    finally:
        src.seek(pos)


# -- decoding a stream --------------------------------------------------------------------------

class FrameDecoder:
    """Decodes record data arriving in chunks of any size (sans-IO: bytes in, pairs out).

    ``feed(data)`` returns the pair lists of the frames completed by ``data``. A file header may
    appear wherever a frame could start (so whole files, or several concatenated, can be
    streamed); frame headers are checked as soon as they arrive. Call ``close()`` at the end of
    the stream: leftover bytes mean it was truncated. ``max_frame_bytes`` bounds the payload one
    frame may announce, and so the memory this decoder holds.
    """

    def __init__(self, *, max_frame_bytes: int = U32_MAX):
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._header: tuple | None = None
        self.frames = 0
        self.records = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[list[tuple]]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        while True:
            if self._header is None:
                step = self._read_header(buf, pos)
                if step == 0:
                    break
                pos += step
                continue
            end = pos + self._header[3]
            if len(buf) < end:
                break
            out.append(_decode_payload(self._header, buf[pos:end]))
            self.records += self._header[5]
            self.frames += 1
            self._header = None
            pos = end
        if pos:
            del buf[:pos]
        return out

    def _read_header(self, buf: bytearray, pos: int) -> int:
        """Consume a file or frame header at ``pos``: bytes used, 0 if more data is needed."""
        avail = len(buf) - pos
        if avail and buf[pos] == FILE_MAGIC[0]:
            if avail < FILE_HEADER.size:
                return 0
            check_file_header(bytes(buf[pos:pos + FILE_HEADER.size]))
            return FILE_HEADER.size
        if avail and buf[pos] != FRAME_MAGIC[0]:
            raise RecordFormatError(f"bad frame magic {bytes(buf[pos:pos + 2])!r} in stream, "
                                    f"expected {FRAME_MAGIC!r}")
        if avail < _FRAME_HEADER_SIZE:
            return 0
        header = _check_header(buf, pos)
        if header[3] > self.max_frame_bytes:
            raise RecordFormatError(f"frame announces {header[3]} payload bytes, over the "
                                    f"{self.max_frame_bytes}-byte limit")
        self._header = header
        return _FRAME_HEADER_SIZE

    def close(self) -> None:
        """Raise RecordFormatError if the stream ended inside a header or frame."""
        if self._buf or self._header is not None:
            raise RecordFormatError(f"truncated record stream: {len(self._buf)} bytes of an "
                                    f"unfinished frame left")
