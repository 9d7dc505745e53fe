"""Disco's binary job pack, and its conversion to this project's job pack.

Disco's job pack is what a worker written in any language is submitted in::

    offset 0    u16 magic 0xd5c0, u16 version (1 or 2)                    (big-endian)
    offset 4    u32 jobdict offset (always 128), u32 jobenvs offset,
                u32 jobhome offset, u32 jobdata offset                      (big-endian)
    offset 20   zero bytes up to 128
    offset 128  jobdict (JSON object) | jobenvs (JSON object of strings) |
                jobhome (a ZIP of the job's home dir) | jobdata (any bytes, to the end)

The offsets never decrease; each part runs to the next offset. :class:`JobPack` builds and
reads one (``dumps``, ``load``); :func:`to_internal` turns one into the msgpack job pack the
master reads (disco/jobpack.py): the jobdict becomes the header (a version 1 jobdict's
map/reduce becomes a pipeline as Disco's master made it), and ``header["worker"]`` says that
tasks run the pack's own executable over Disco's worker protocol
(:mod:`disco.worker.external_runner`). See docs/worker-protocol.md.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile

import msgpack

from disco.error import UsageError
from disco.settings import PYTHON

__all__ = ["HEADER_SIZE", "JobPack", "JobPackError", "MAGIC", "VERSIONS", "is_disco_pack",
           "to_internal"]

MAGIC = 0xD5C0
VERSIONS = (1, 2)
HEADER_FORMAT = "!HHIIII"
HEADER_SIZE = 128
MAX_PACK_BYTES = 1 << 30
GROUPINGS = ("split", "group_label", "group_node", "group_node_label", "group_all")
PROTOCOL = "disco"


class JobPackError(UsageError):
    """A Disco job pack that cannot be read or run; the message says which part is wrong."""


class JobPack:
    """Disco's job pack: ``jobdict`` and ``jobenvs`` are dicts, ``jobhome`` ZIP bytes,
    ``jobdata`` bytes. ``JobPack(2, jobdict, jobenvs, jobhome, jobdata).dumps()`` is what
    ``Disco().submit`` takes. Disco's older form without the version,
    ``JobPack(jobdict, jobenvs, jobhome, jobdata)``, makes a version 1 pack; ``jobhome`` and
    ``jobdata`` may be given as ``str`` (UTF-8 encoded), as Python 2 code did.

    ``HEADER_SIZE``, ``MAGIC`` (Disco's 32-bit magic and version word, ``0xd5c00001``) and
    :meth:`header` are Disco's names for building a header by hand, e.g. a bad one to test
    what the master answers."""

    HEADER_SIZE = HEADER_SIZE
    MAGIC = (MAGIC << 16) | 1
    HEADER_FORMAT = "!IIIII"

    def __init__(self, version, jobdict=None, jobenvs=None, jobhome=b"", jobdata=b""):
        if isinstance(version, dict):  # Disco's JobPack(jobdict, jobenvs, jobhome, jobdata)
            version, jobdict, jobenvs, jobhome, jobdata = \
                1, version, jobdict, jobenvs if jobenvs is not None else b"", jobhome
        jobhome, jobdata = _bytes(jobhome), _bytes(jobdata)
        if version not in VERSIONS:
            raise JobPackError(f"job pack version {version!r} is not supported (1 or 2)")
        self.version, self.jobdict = version, jobdict
        self.jobenvs = {} if jobenvs is None else jobenvs
        self.jobhome, self.jobdata = bytes(jobhome), bytes(jobdata)

    @classmethod
    def header(cls, offsets, magic: int | None = None, format: str | None = None,
               size: int | None = None) -> bytes:
        """A ``size``-byte header (default 128): the 32-bit ``magic`` (default
        :attr:`MAGIC`) then the four part offsets, zero-padded. Nothing is checked."""
        magic = cls.MAGIC if magic is None else magic
        size = cls.HEADER_SIZE if size is None else size
        head = struct.pack(format or cls.HEADER_FORMAT, magic, *offsets)
        return head.ljust(size, b"\0")

    def __eq__(self, other) -> bool:
        return isinstance(other, JobPack) and self._fields() == other._fields()

    def _fields(self) -> tuple:
        return self.version, self.jobdict, self.jobenvs, self.jobhome, self.jobdata

    def dumps(self) -> bytes:
        parts = [json.dumps(self.jobdict).encode(), json.dumps(self.jobenvs).encode(),
                 self.jobhome, self.jobdata]
        offsets, at = [], HEADER_SIZE
        for part in parts:
            offsets.append(at)
            at += len(part)
        header = struct.pack(HEADER_FORMAT, MAGIC, self.version, *offsets)
        return header.ljust(HEADER_SIZE, b"\0") + b"".join(parts)

    @classmethod
    def load(cls, fileobj) -> "JobPack":
        """Read a pack from a binary file object (or bytes); JobPackError says what is wrong."""
        blob = fileobj if isinstance(fileobj, (bytes, bytearray, memoryview)) else fileobj.read()
        return cls.loads(bytes(blob))

    @classmethod
    def loads(cls, blob: bytes) -> "JobPack":
        version, offsets = header_of(blob)
        ends = offsets[1:] + [len(blob)]
        dict_b, envs_b, home, data = (blob[a:b] for a, b in zip(offsets, ends))
        jobdict = _json_part(dict_b, "jobdict")
        jobenvs = _json_part(envs_b, "jobenvs")
        if not isinstance(jobdict, dict):
            raise JobPackError(f"jobdict must be a JSON object, not {type(jobdict).__name__}")
        if not isinstance(jobenvs, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in jobenvs.items()):
            raise JobPackError("jobenvs must be a JSON object of strings to strings")
        return cls(version, jobdict, jobenvs, home, data)


def _bytes(data) -> bytes:
    if data is None:
        return b""
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def header_of(blob: bytes) -> tuple[int, list[int]]:
    """(version, [jobdict, jobenvs, jobhome, jobdata offsets]) of a pack, checked."""
    if len(blob) > MAX_PACK_BYTES:
        raise JobPackError(f"job pack of {len(blob)} bytes is over the 1 GiB limit")
    if len(blob) < HEADER_SIZE:
        raise JobPackError(f"job pack of {len(blob)} bytes is shorter than its "
                           f"{HEADER_SIZE}-byte header")
    magic, version, *offsets = struct.unpack_from(HEADER_FORMAT, blob)
    if magic != MAGIC:
        raise JobPackError(f"not a Disco job pack: magic 0x{magic:04x}, expected 0x{MAGIC:04x}")
    if version not in VERSIONS:
        raise JobPackError(f"job pack version {version} is not supported (1 or 2)")
    if offsets[0] != HEADER_SIZE:
        raise JobPackError(f"jobdict offset is {offsets[0]}; it must be {HEADER_SIZE}, right "
                           "after the header")
    names = ("jobdict", "jobenvs", "jobhome", "jobdata")
    for i in range(1, 4):
        if offsets[i] < offsets[i - 1]:
            raise JobPackError(f"{names[i]} offset {offsets[i]} is before {names[i - 1]} "
                               f"offset {offsets[i - 1]} (offsets must not decrease)")
    if offsets[3] > len(blob):
        raise JobPackError(f"jobdata offset {offsets[3]} is past the end of the "
                           f"{len(blob)}-byte pack")
    return version, offsets


def _json_part(raw: bytes, name: str):
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise JobPackError(f"{name} is not JSON: {exc}") from None


def is_disco_pack(blob) -> bool:
    """True when ``blob`` starts like a Disco job pack (magic 0xd5c0, version 1 or 2)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) < 4:
        return False
    magic, version = struct.unpack_from("!HH", blob)
    return magic == MAGIC and version in VERSIONS


# -- conversion ---------------------------------------------------------------------------------

def to_internal(blob: bytes) -> tuple[bytes, str]:
    """A Disco job pack as this project's job pack: (msgpack bytes, job name prefix)."""
    pack = JobPack.loads(bytes(blob))
    header = internal_header(pack)
    _check_home(pack.jobhome, header["worker"]["path"])
    body = {"header": header, "code": b"", "files": {},
            "disco": {"version": pack.version, "jobdict": pack.jobdict,
                      "jobenvs": pack.jobenvs, "jobhome": pack.jobhome,
                      "jobdata": pack.jobdata}}
    return msgpack.packb(body, use_bin_type=True), header["prefix"]


def internal_header(pack: JobPack) -> dict:
    d = pack.jobdict
    worker = d.get("worker")
    if not isinstance(worker, str) or not worker or worker.startswith("/") \
            or ".." in worker.split("/"):
        raise JobPackError(f"jobdict 'worker' must be a relative path in the job home, not "
                           f"{worker!r}")
    prefix = d.get("prefix") or "Job"
    if not isinstance(prefix, str) or not all(c.isalnum() or c == "_" for c in prefix):
        raise JobPackError(f"jobdict 'prefix' {prefix!r}: use only letters, digits and _")
    if pack.version == 2:
        pipeline, inputs, labels = _pipeline2(d), *_inputs2(d.get("inputs", []))
    else:
        pipeline, inputs, labels = _pipeline1(d), _inputs1(d.get("input", [])), None
    header = {"inputs": inputs, "pipeline": pipeline, "partitions": 1, "has_map": True,
              "has_reduce": False, "save_results": bool(d.get("save_results")),
              "prefix": prefix, "owner": str(d.get("owner") or ""), "python": PYTHON,
              "worker": {"protocol": PROTOCOL, "path": worker}}
    if labels and any(labels):
        header["input_labels"] = labels
    return header


def _pipeline2(d: dict) -> list:
    stages = d.get("pipeline")
    if not isinstance(stages, list) or not stages:
        raise JobPackError("a version 2 jobdict needs 'pipeline': [[stage, grouping], ...]")
    out, seen = [], set()
    for stage in stages:
        if not isinstance(stage, list) or len(stage) not in (2, 3) \
                or not isinstance(stage[0], str) or not stage[0]:
            raise JobPackError(f"pipeline stage {stage!r:.80} is not [name, grouping] or "
                               "[name, grouping, concurrent]")
        name, grouping = stage[0], stage[1]
        if grouping not in GROUPINGS:
            raise JobPackError(f"stage {name!r}: grouping {grouping!r} is not one of "
                               f"{', '.join(GROUPINGS)}")
        if name in seen:
            raise JobPackError(f"stage name {name!r} is used twice; stage names are unique")
        seen.add(name)
        out.append([name, grouping, bool(stage[2]) if len(stage) == 3 else False])
    return out


def _inputs2(raw) -> tuple[list, list]:
    """v2 inputs ``[label, size_hint, [url, ...]]`` (or ``[label, size_hint, url, ...]``)."""
    if not isinstance(raw, list):
        raise JobPackError("jobdict 'inputs' must be a list of [label, size_hint, [urls]]")
    inputs, labels = [], []
    for item in raw:
        if not isinstance(item, list) or len(item) < 3 or not isinstance(item[0], int) \
                or isinstance(item[0], bool) or item[0] < 0:
            raise JobPackError(f"input {item!r:.80} is not [label, size_hint, [urls]] with a "
                               "label of 0 or more")
        urls = item[2] if isinstance(item[2], list) and len(item) == 3 else item[2:]
        inputs.append(_urls(urls, item))
        labels.append(item[0])
    return inputs, labels


def _inputs1(raw) -> list:
    if not isinstance(raw, list):
        raise JobPackError("jobdict 'input' must be a list of URLs or of lists of URLs")
    return [_urls(item if isinstance(item, list) else [item], item) for item in raw]


def _urls(urls, item):
    if not urls or not all(isinstance(u, str) and u for u in urls):
        raise JobPackError(f"input {item!r:.80} has no URL, or one that is not a string")
    return urls[0] if len(urls) == 1 else list(urls)


def _pipeline1(d: dict) -> list:
    """Disco's classic mapping of a version 1 jobdict (its master's jobpack.erl)."""
    has_map, has_reduce = bool(d.get("map?")), bool(d.get("reduce?"))
    nr_reduces = d.get("nr_reduces", 1)
    if not isinstance(nr_reduces, int) or isinstance(nr_reduces, bool) or nr_reduces < 0:
        raise JobPackError(f"jobdict 'nr_reduces' must be an integer of 0 or more, not "
                           f"{nr_reduces!r}")
    if not has_map and not has_reduce:
        raise JobPackError("a version 1 jobdict needs 'map?' or 'reduce?' true")
    pipeline = []
    if has_map:
        pipeline += [["map", "split", False], ["map_shuffle", "group_node", False]]
    if has_reduce:
        pipeline.append(["reduce", "group_all" if nr_reduces == 1 else "group_label", False])
        if d.get("reduce_shuffle?"):
            pipeline.append(["reduce_shuffle", "group_node", False])
    return pipeline


def _check_home(jobhome: bytes, worker: str) -> None:
    """The job home must be a ZIP holding the worker, with no name outside the home."""
    try:
        with zipfile.ZipFile(io.BytesIO(jobhome)) as z:
            names = z.namelist()
    except zipfile.BadZipFile as exc:
        raise JobPackError(f"jobhome is not a ZIP archive: {exc}") from None
    for name in names:
        check_member(name)
    if worker not in names:
        raise JobPackError(f"the worker {worker!r} is not in the jobhome ZIP "
                           f"(it holds {', '.join(names[:10]) or 'nothing'})")


def check_member(name: str) -> None:
    """A jobhome ZIP member name, refused when it could land outside the home or in
    ``.disco/`` (reserved)."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise JobPackError(f"jobhome member {name!r} would be written outside the job home")
    if parts[0] == ".disco":
        raise JobPackError(f"jobhome member {name!r}: .disco/ is reserved for Disco")
