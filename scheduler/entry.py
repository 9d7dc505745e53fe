"""The job journal's entries and the state machine they build, in one place.

Theory of operation
-------------------
What must survive a change of master is written to the replicated journal (``mesh.raft``) as
entries, and acted on only once committed. Every node applies every committed entry to its own
``JournalState`` (the replicated state machine), so a new master starts from the state it
already holds instead of replaying the whole log, and a snapshot of that state lets the log be
truncated (Raft section 7).

Entries (frozen dataclasses; on the wire and on disk each is a plain map with a ``type``):

- ``Submit``: a job was accepted: its name, its validated header, the content hash of its job
  pack (stored once under ``<data>/jobpacks/<hash>`` on the nodes that acknowledged it,
  ``holders``), the submission time and the client's token (a retried submit is not a new job);
- ``Done``: a task finished on a node with these outputs;
- ``End``: a job finished, failed or was killed, with its results or error;
- ``Remade``: a finished job's results after some were made again (their node was lost);
- ``Purge``: a job and its data are forgotten everywhere;
- ``Voters`` and ``Noop`` belong to Raft (configuration, and the new leader's first entry).

``JournalState`` keeps, per job not purged: the header, pack hash, token, the finished tasks
(kept after the job ends: they are the lineage a lost result is made again from) and the end.
Purged jobs leave nothing behind, so the state after N submitted-and-purged jobs is empty.
``replay(entries)`` folds a sequence of entries into a state; ``JournalState.snapshot()`` and
``from_snapshot()`` turn it into plain data and back.

Invariants (``check_invariants``): a token names a job that exists.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class Submit:
    job: str
    header: dict
    jobpack: str          # content hash (hex sha256) of the job pack
    submitted: float      # wall-clock seconds
    token: str = ""
    holders: tuple = ()   # node addresses that fsynced the job pack before the submit


@dataclass(frozen=True)
class Done:
    task: str
    node: str
    outputs: tuple


@dataclass(frozen=True)
class End:
    job: str
    status: str
    finished: float
    results: tuple = ()
    error: dict | None = None


@dataclass(frozen=True)
class Remade:
    job: str
    results: tuple


@dataclass(frozen=True)
class Purge:
    job: str


@dataclass(frozen=True)
class Voters:
    voters: tuple


@dataclass(frozen=True)
class Noop:
    pass


_TYPES = {"submit": Submit, "done": Done, "end": End, "purge": Purge, "voters": Voters,
          "noop": Noop, "remade": Remade}
_NAMES = {cls: name for name, cls in _TYPES.items()}
_TUPLES = {"holders", "outputs", "results", "voters"}


def to_wire(entry) -> dict:
    """The plain map stored in the log and sent to followers (a plain map is one already:
    other state machines' entries, such as DDFS tags, travel in the same journal)."""
    if isinstance(entry, dict):
        return entry
    if type(entry) is Done:  # one a task: asdict's deep copy of its outputs cost 25 us
        return {"type": "done", "task": entry.task, "node": entry.node,
                "outputs": tuple(entry.outputs)}
    return {"type": _NAMES[type(entry)], **asdict(entry)}


def from_wire(data: dict):
    """The entry of a plain map; ``ValueError`` if it is not one this version knows."""
    cls = _TYPES.get(data.get("type")) if isinstance(data, dict) else None
    if cls is None:
        raise ValueError(f"unknown journal entry {data!r:.80}")
    try:
        return cls(**{f.name: tuple(data[f.name]) if f.name in _TUPLES else data[f.name]
                      for f in fields(cls) if f.name in data})
    except TypeError as exc:
        raise ValueError(f"malformed {data.get('type')} entry: {exc}") from None


def job_of_task(task_id: str) -> str:
    """Task ids are ``<job>:<stage>:<index>``."""
    return task_id.rsplit(":", 2)[0]


@dataclass
class JobState:
    name: str
    header: dict
    jobpack: str
    submitted: float
    token: str = ""
    holders: tuple = ()
    done: dict = field(default_factory=dict)  # task id -> (node, outputs), in commit order
    end: End | None = None


class JournalState:
    """The state machine every node builds from the committed journal."""

    def __init__(self):
        self.jobs: dict[str, JobState] = {}
        self.tokens: dict[str, str] = {}

    def apply(self, entry) -> None:
        handler = _APPLY.get(type(entry))
        if handler is not None:
            handler(self, entry)

    def _submit(self, e: Submit) -> None:
        if e.job in self.jobs:
            return
        self.jobs[e.job] = JobState(e.job, e.header, e.jobpack, e.submitted, e.token, e.holders)
        if e.token:
            self.tokens[e.token] = e.job

    def _done(self, e: Done) -> None:
        job = self.jobs.get(job_of_task(e.task))
        if job is not None:  # an ended job's too: a task that made a lost result again
            job.done[e.task] = (e.node, list(e.outputs))

    def _end(self, e: End) -> None:
        job = self.jobs.get(e.job)
        if job is not None and job.end is None:
            job.end = e

    def _remade(self, e: Remade) -> None:
        job = self.jobs.get(e.job)
        if job is not None and job.end is not None:
            job.end = End(job.end.job, job.end.status, job.end.finished, tuple(e.results),
                          job.end.error)

    def _purge(self, e: Purge) -> None:
        job = self.jobs.pop(e.job, None)
        if job is not None and job.token:
            self.tokens.pop(job.token, None)

    def active(self) -> list[JobState]:
        return [j for j in self.jobs.values() if j.end is None]

    # -- snapshots --

    def snapshot(self) -> dict:
        jobs = []
        for j in self.jobs.values():
            jobs.append({"name": j.name, "header": j.header, "jobpack": j.jobpack,
                         "submitted": j.submitted, "token": j.token, "holders": list(j.holders),
                         "done": [[t, n, o] for t, (n, o) in j.done.items()],
                         "end": to_wire(j.end) if j.end else None})
        return {"jobs": jobs}

    @classmethod
    def from_snapshot(cls, data: dict) -> "JournalState":
        state = cls()
        for j in data.get("jobs", ()):
            job = JobState(j["name"], j["header"], j["jobpack"], j["submitted"], j["token"],
                           tuple(j["holders"]), {t: (n, o) for t, n, o in j["done"]},
                           from_wire(j["end"]) if j["end"] else None)
            state.jobs[job.name] = job
            if job.token:
                state.tokens[job.token] = job.name
        return state

    def check_invariants(self) -> None:
        for token, name in self.tokens.items():
            assert name in self.jobs and self.jobs[name].token == token


_APPLY = {Submit: JournalState._submit, Done: JournalState._done, End: JournalState._end,
          Purge: JournalState._purge, Remade: JournalState._remade}


def replay(entries, state: JournalState | None = None) -> JournalState:
    """Fold entries (dataclasses or their wire maps) into ``state`` (a new one by default)."""
    state = state if state is not None else JournalState()
    for entry in entries:
        state.apply(from_wire(entry) if isinstance(entry, dict) else entry)
    return state
