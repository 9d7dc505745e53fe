"""The node core's vocabulary: its configuration, the events it takes and the actions it
returns (``mesh.node`` has the theory of operation). Events are facts that happened (a tick, a
request arrived, a report came from this node's executor); actions are what the loop must do,
in order (a ``raft.Persist`` is fsynced before any action after it is carried out).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mesh import membership as mb
from mesh import message as m
from mesh import raft as rf
from scheduler.jobtable import Fact  # noqa: F401  (the node core's facts, for the loop)
from storage import repair as rp

# ---- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeConfig:
    name: str
    address: str
    incarnation: int = 1
    seeds: tuple = ()
    founder: bool = True
    python: str = ""
    pid: int = 0
    data_dir: str = ""
    slots: int = 1
    max_failures: int = 10
    speculation: bool = True  # backup attempts for stragglers (the scheduler's settings)
    dead_voter_s: float = 60.0
    lost_report_s: float = 3.0
    wait_max_s: float = 60.0
    pack_timeout_s: float = 10.0
    compact_every: int = 2000
    commit_window_s: float = 0.0  # group commit of finished tasks (the daemon uses 20 ms)
    pack_grace_s: float = 600.0
    wall_offset: float = 0.0
    mesh: mb.Config = field(default_factory=mb.Config)
    raft: rf.Config = field(default_factory=rf.Config)
    ddfs: rp.Config = field(default_factory=rp.Config)  # k, repair bounds, collection delay


# ---- events ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tick:
    tasks: tuple = ()
    disk_used: int = 0
    disk_free: int = 0
    refused: dict = field(default_factory=dict)
    blob_bytes: int = 0        # bytes of the DDFS copies this node holds
    blobs_added: tuple = ()    # blob copies stored since the last tick: [name, size, sum, path, mtime]
    blobs_removed: tuple = ()  # names of copies deleted since the last tick
    copies_ended: tuple = ()   # (blob, error) of ``StoreCopy`` actions that ended ("" = stored)


@dataclass(frozen=True)
class Request:
    ident: bytes
    msg: object


@dataclass(frozen=True)
class Submission:
    ident: bytes
    msg: m.SubmitJob
    header: dict | None  # None: the pack is not a msgpack map with a header and code
    digest: str


@dataclass(frozen=True)
class LocalReport:
    task: dict
    kind: str  # done, failed, message
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Undeliverable:
    address: str
    msg: object


@dataclass(frozen=True)
class Flush:
    pass


@dataclass(frozen=True)
class Stopping:
    pass


# ---- actions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    address: str
    msg: object


@dataclass(frozen=True)
class Reply:
    ident: bytes
    rid: int
    body: object


@dataclass(frozen=True)
class Fail:
    ident: bytes
    rid: int
    code: str
    msg: str


@dataclass(frozen=True)
class StoreJobpack:
    """Store the pack under its hash (fsynced); only once it is stored, carry out ``then``: a
    ``Send`` (a voter's acknowledgement) or an event for this node (the master's own)."""
    digest: str
    data: bytes
    then: object = None
    hashed: bool = False  # the loop hashed these very bytes already (a submission's own pack)


@dataclass(frozen=True)
class StartTask:
    task: dict


@dataclass(frozen=True)
class CancelTask:
    task: str


@dataclass(frozen=True)
class RetireJob:
    job: str


@dataclass(frozen=True)
class DropJobData:
    job: str
    jobpack: str | None = None  # also the content-addressed pack, when no job uses it


@dataclass(frozen=True)
class CollectJobpacks:
    """Delete stored job packs that no job uses (``keep`` are in use) and that were stored more
    than ``grace_s`` ago: a pack just stored may belong to a submission not yet committed."""
    keep: frozenset
    grace_s: float


@dataclass(frozen=True)
class RememberMembers:
    addresses: tuple


@dataclass(frozen=True)
class ForgetPeer:
    address: str


@dataclass(frozen=True)
class StoreCopy:
    """Fetch blob ``blob`` from one of ``sources`` and store it as a verified copy (repair);
    the outcome comes back in a later ``Tick.copies_ended``."""
    blob: str
    size: int
    checksum: str
    sources: tuple


@dataclass(frozen=True)
class DeleteBlob:
    """Delete this node's copy of ``blob`` (off the loop)."""
    blob: str
