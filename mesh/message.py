"""Every message the product sends, in one place.

A message on the wire is one msgpack map ``{"v": VERSION, "t": TYPE, ...fields}``; bulk bytes
(fetched data) travel as a separate raw frame after it. ``decode`` checks, in this order, the
frame size, that it is msgpack, the version, the type and every field's presence and type, so
no core ever sees a malformed message. Each failure raises ``RemoteProtocolError`` (the peer
broke the protocol) with a message fit to send back to the peer. ``encode`` checks the same field
types before a frame leaves and raises ``LocalProtocolError`` (we broke it) for a bad message.

Message kinds:

- client -> node (control port), answered by ``Reply`` or ``Error`` carrying the same ``rid``;
- worker <-> node (each worker's channel, a socketpair: ``mesh.channel``): ``WorkerReady``,
  ``RunTask``, ``TaskDone``, ``TaskFailed``, ``TaskMessage``, ``Shutdown``;
- node -> node (control port, one-way): ``Gossip``, ``Assign``, ``Cancel``, ``Report``,
  ``JobEnded``, ``PutJobpack``, ``JobpackStored``; every master command carries the
  master's term;
- node -> node for DDFS: ``BlobReport``, ``CopyBlob``, ``CopyDone``, ``DropBlob``;
- any -> node (data port): ``Fetch`` answered by ``Chunk`` (+ one raw data frame) or ``Error``;
  ``PutStart``, ``PutData`` (+ one raw frame), ``PutEnd`` answered by ``PutAck`` / ``Stored``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import msgpack

from common.error import LocalProtocolError, RemoteProtocolError

VERSION = 1
MAX_FRAME_BYTES = 64 << 20

_REGISTRY: dict[str, type] = {}
_FIELD_TYPES: dict[str, dict[str, tuple[type, ...]]] = {}

_TYPEMAP: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "bytes": (bytes,),
    "dict": (dict,),
    "list": (list, tuple),
    "object": (object,),
    "str | None": (str, type(None)),
    "int | None": (int, type(None)),
    "dict | None": (dict, type(None)),
    "list | None": (list, tuple, type(None)),
}


def message(tag: str):
    """Class decorator: a frozen dataclass registered under wire type ``tag``."""

    def wrap(cls):
        cls = dataclass(frozen=True)(cls)
        cls.TYPE = tag
        _REGISTRY[tag] = cls
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        _FIELD_TYPES[tag] = {name: _TYPEMAP[str(t)] for name, t in hints.items()}
        return cls

    return wrap


# ---- client <-> node ------------------------------------------------------------------------

@message("hello")
class Hello:
    rid: int
    python: str
    client: str = "client"


@message("submit_job")
class SubmitJob:
    rid: int
    prefix: str
    jobpack: bytes
    python: str
    token: str = ""  # the client's id for this submission: a retry gets the same job back


@message("job_status")
class GetJobStatus:
    rid: int
    job: str
    stage: str = ""  # set: the answer carries that stage's outputs too ("stage_results")


@message("wait_job")
class WaitJob:
    """Answered with the job's status when it ends or after ``timeout_s`` (at most 60)."""
    rid: int
    job: str
    timeout_s: float = 10.0


@message("job_events")
class GetEvents:
    rid: int
    job: str
    offset: int = 0


@message("remake_result")
class RemakeResult:
    """A result ``url`` of the finished ``job`` cannot be read: make it again if its node is
    gone. Answered with the job's status (``results`` then hold the new URL) once it is made,
    or after ``timeout_s`` (``remaking`` set: ask again)."""
    rid: int
    job: str
    url: str
    timeout_s: float = 30.0


@message("list_jobs")
class ListJobs:
    rid: int


@message("kill_job")
class KillJob:
    rid: int
    job: str


@message("purge_job")
class PurgeJob:
    rid: int
    job: str


@message("job_dict")
class GetJobDict:
    rid: int
    job: str


@message("node_info")
class GetNodeInfo:
    rid: int


@message("blacklist")
class Blacklist:
    rid: int
    node: str


@message("whitelist")
class Whitelist:
    rid: int
    node: str


@message("status")
class GetStatus:
    rid: int


@message("tag_get")
class TagGet:
    """DDFS: one tag's object (``storage.tags.TagStore.read``); ``DataNotFound`` if none,
    ``Unauthorized`` without the tag's read token."""
    rid: int
    tag: str
    token: str | None = None


@message("tag_list")
class TagList:
    rid: int
    prefix: str = ""


@message("tag_write")
class TagWrite:
    """DDFS: change a tag (``kind``: add, put, delete, setattr, delattr); answered once
    committed. ``op`` is the client's id for the write: a retry is applied once."""
    rid: int
    kind: str
    tag: str
    urls: list = field(default_factory=list)
    update: bool = False
    attr: str = ""
    value: str | None = None
    op: str = ""
    token: str | None = None   # the tag's write token (``ddfs:write-token``), if it has one


@message("blob_place")
class BlobPlace:
    """DDFS: a new blob's name and the nodes (addresses, ring order) to write its copies to."""
    rid: int
    prefix: str
    replicas: int = 0        # 0: the cluster's setting
    exclude: list = field(default_factory=list)


@message("ddfs_status")
class DdfsStatus:
    rid: int


@message("reply")
class Reply:
    rid: int
    body: object = None


@message("error")
class Error:
    rid: int
    code: str
    msg: str


# ---- worker <-> node ------------------------------------------------------------------------

@message("worker_ready")
class WorkerReady:
    worker: str
    job: str
    pid: int


@message("run_task")
class RunTask:
    task: dict


@message("task_done")
class TaskDone:
    task: str
    outputs: list
    stats: dict = field(default_factory=dict)


@message("task_failed")
class TaskFailed:
    task: str
    error: str
    traceback: str = ""
    retryable: bool = True
    lost: str = ""  # an input made by an earlier task that could not be read
    elsewhere: bool = False  # only this node cannot: retry on nodes it has not failed on


@message("task_message")
class TaskMessage:
    task: str
    msg: str


@message("skip_task")
class SkipTask:
    """The node no longer wants a task it sent ahead to a busy worker (it was cancelled)."""
    task: str


@message("task_skipped")
class TaskSkipped:
    """The worker's answer to a ``SkipTask`` that came before the task started."""
    task: str


@message("shutdown")
class Shutdown:
    reason: str = ""


# ---- node <-> node (control port; one-way, never answered) ---------------------------------

@message("gossip")
class Gossip:
    """One membership (SWIM) message: ``body`` is the membership core's, validated there."""
    sender: str
    python: str
    body: dict


@message("assign")
class Assign:
    """Master -> node: run this task. Refused when ``term`` is older than the node knows."""
    term: int
    master: str
    task: dict


@message("cancel")
class Cancel:
    term: int
    master: str
    task: str


@message("report")
class Report:
    """Node -> master: a task of ``job`` is done, failed, or printed something (``kind``)."""
    term: int
    node: str
    job: str
    task: str
    kind: str
    outputs: list = field(default_factory=list)
    error: str = ""
    traceback: str = ""
    retryable: bool = True
    lost: str = ""
    msg: str = ""
    elsewhere: bool = False


@message("raft")
class Raft:
    """Node <-> node: one Raft message (``kind``: vote, vote_reply, append, append_reply)."""
    kind: str
    sender: str
    body: dict


@message("job_ended")
class JobEnded:
    """Master -> nodes: retire the job's workers; with ``purge``, delete its data too."""
    term: int
    job: str
    purge: bool = False


@message("put_jobpack")
class PutJobpack:
    """Master -> voter: store this job pack (fsynced) under its content hash, then answer
    ``JobpackStored``; the submit is journaled once a majority of voters holds the pack."""
    term: int
    master: str
    digest: str
    jobpack: bytes


@message("jobpack_stored")
class JobpackStored:
    term: int
    node: str     # the voter's address
    digest: str


@message("blob_report")
class BlobReport:
    """Node -> master: blobs this node's volumes hold; ``full`` replaces what the master
    knew of the node, else ``added`` ([name, size, checksum, path, mtime]) and ``removed``."""
    term: int
    node: str
    full: bool
    added: list = field(default_factory=list)
    removed: list = field(default_factory=list)


@message("copy_blob")
class CopyBlob:
    """Master -> node: fetch blob ``blob`` from one of ``sources`` and store it (repair)."""
    term: int
    master: str
    blob: str
    size: int
    checksum: str
    sources: list


@message("copy_done")
class CopyDone:
    """Node -> master: a ``CopyBlob`` ended (``error`` empty when the copy is stored)."""
    term: int
    node: str
    blob: str
    error: str = ""


@message("drop_blob")
class DropBlob:
    """Master -> node: delete this copy (no tag names it, and it is older than the delay)."""
    term: int
    master: str
    blob: str


# ---- data port ------------------------------------------------------------------------------

@message("fetch")
class Fetch:
    rid: int
    path: str
    offset: int
    length: int


@message("chunk")
class Chunk:
    rid: int
    offset: int
    size: int
    eof: bool
    checksum: str = ""  # the first chunk of a DDFS blob: its xxh3_64, for the reader to check


@message("put_start")
class PutStart:
    """Data port: begin storing blob ``name`` of ``size`` bytes; answered ``PutAck``
    (offset 0) or ``Error``."""
    rid: int
    name: str
    size: int


@message("put_data")
class PutData:
    """Data port: the bytes at ``offset`` follow in one raw frame; answered ``PutAck``."""
    rid: int
    offset: int


@message("put_end")
class PutEnd:
    """Data port: all bytes sent; answered ``Stored`` once fsynced and visible, or
    ``Error`` (nothing is left behind)."""
    rid: int
    size: int
    checksum: str


@message("put_ack")
class PutAck:
    rid: int
    offset: int


@message("stored")
class Stored:
    rid: int
    path: str
    size: int
    checksum: str


# ---- encoding -------------------------------------------------------------------------------

def encode(msg) -> bytes:
    """The wire form of one message; LocalProtocolError if ``decode`` would refuse it."""
    tag = getattr(msg, "TYPE", None)
    if not isinstance(tag, str) or type(msg) is not _REGISTRY.get(tag):
        raise LocalProtocolError(f"{type(msg).__name__} is not a message type")
    types = _FIELD_TYPES[tag]
    body = {"v": VERSION, "t": tag}
    for name, allowed in types.items():
        value = getattr(msg, name)
        if _mistyped(value, allowed):
            raise LocalProtocolError(f"{tag}: field {name!r} has type {type(value).__name__}")
        body[name] = value
    try:
        return msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # a value msgpack cannot carry
        raise LocalProtocolError(f"{tag}: cannot be packed ({exc})") from None


def _mistyped(value, allowed: tuple[type, ...]) -> bool:
    """Not of a declared type; bool is an int subclass, but not an int or a float here."""
    return not isinstance(value, allowed) or (
        isinstance(value, bool) and not {bool, object} & set(allowed))


def decode(frame: bytes, max_bytes: int = MAX_FRAME_BYTES):
    """Validate one frame and return its message; raise RemoteProtocolError saying what is
    wrong."""
    if len(frame) > max_bytes:
        raise RemoteProtocolError(f"frame of {len(frame)} bytes exceeds the limit of {max_bytes}")
    try:
        body = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise RemoteProtocolError(f"frame is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise RemoteProtocolError("frame is not a msgpack map")
    if type(body.get("v")) is not int or body["v"] != VERSION:  # True and 1.0 are not 1
        raise RemoteProtocolError(f"protocol version {body.get('v')!r} is not supported "
                            f"(this node speaks {VERSION})")
    tag = body.pop("t", None)
    body.pop("v")
    cls = _REGISTRY.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {tag!r}")
    return _build(cls, tag, body)


def _build(cls, tag: str, body: dict):
    types = _FIELD_TYPES[tag]
    unknown = set(body) - set(types)
    if unknown:
        keys = sorted(unknown, key=repr)  # keys may mix types
        raise RemoteProtocolError(f"{tag}: unexpected fields {keys}")
    for name, value in body.items():
        if _mistyped(value, types[name]):
            raise RemoteProtocolError(f"{tag}: field {name!r} has type {type(value).__name__}")
    try:
        return cls(**body)
    except TypeError:
        missing = [n for n in types if n not in body]
        raise RemoteProtocolError(f"{tag}: missing fields {missing}") from None


def jobpack_header(jobpack: bytes) -> dict | None:
    """A job pack's msgpack header, or None if the pack is not a map with a header and code
    (the pickled code inside is never touched)."""
    try:
        pack = msgpack.unpackb(jobpack, raw=False)
        header = pack["header"]
        ok = isinstance(header, dict) and isinstance(pack["code"], bytes)
    except Exception:  # msgpack raises several unrelated types
        return None
    return header if ok else None


def type_names() -> list[str]:
    """Every registered wire type, for docs and tests."""
    return sorted(_REGISTRY)


__all__ = [name for name, obj in list(globals().items())
           if isinstance(obj, type) and getattr(obj, "TYPE", None)] + [
    "VERSION", "MAX_FRAME_BYTES", "encode", "decode", "type_names"]
