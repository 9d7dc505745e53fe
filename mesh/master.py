"""The master role of a node: the job table around the scheduler core.

The master names and records jobs, keeps each job's events, feeds the scheduler core its
events and carries out what it returns: task assignments go to the node that should run them
(through ``assign``), finished and failed jobs wake the clients waiting on them. It never
unpickles user code: it reads only the job pack's msgpack header.

What must survive a change of master goes through the replicated journal (``mesh.raft``):
submissions, finished tasks, job ends and purges are *proposed* as entries and acted on only
once committed (``apply``). A new master is a fresh ``Master`` that replays the committed
journal with ``restore=True``: jobs come back with their finished tasks kept, and everything
else is scheduled again. Task failures and events are not journaled (a failover resets them).
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from disco.error import ProtocolError, UsageError
from scheduler import core

MAX_EVENTS_PER_JOB = 20_000


@dataclass
class JobRecord:
    name: str
    header: dict
    submitted: float
    status: str = core.ACTIVE
    finished: float | None = None
    results: list = field(default_factory=list)
    error: dict | None = None
    events: list = field(default_factory=list)
    dropped_events: int = 0

    def summary(self) -> dict:
        return {"job": self.name, "status": self.status, "submitted": self.submitted,
                "finished": self.finished}


def read_jobpack_header(jobpack: bytes) -> dict:
    """The job pack's header, validated; the pickled code inside is not touched."""
    try:
        pack = msgpack.unpackb(jobpack, raw=False)
        header = pack["header"]
        assert isinstance(header, dict) and isinstance(pack["code"], bytes)
        assert isinstance(header["inputs"], list) and isinstance(header["partitions"], int)
    except Exception:
        raise ProtocolError("job pack is malformed (expected a msgpack map with header and code)") from None
    if header["partitions"] < 1:
        raise UsageError(f"partitions must be 1 or more, not {header['partitions']}")
    if not header.get("has_map") and not header.get("has_reduce"):
        raise UsageError("a job needs a map or a reduce function")
    return header


class Master:
    """Job table + scheduler; ``assign(node, task)`` sends work, ``now()`` reads the clock."""

    def __init__(self, data_dir: Path, assign, cancel, propose, log, max_failures: int = 10):
        self.scheduler = core.Scheduler()
        self.jobs: dict[str, JobRecord] = {}
        self.data_dir = data_dir
        self._assign, self._cancel, self._propose, self.log = assign, cancel, propose, log
        self.max_failures = max_failures
        self._seq = itertools.count(1)
        self.on_job_end = lambda name: None
        self._restoring = False
        self._ends_seen_in_replay: dict[str, tuple] = {}
        self.tokens: dict[str, str] = {}  # submission token -> job (retries are not new jobs)

    # -- inputs --

    def submission(self, prefix: str, jobpack: bytes, token: str = "") -> dict:
        """The journal entry for a new job (validated and named; nothing changes yet)."""
        header = read_jobpack_header(jobpack)
        return {"type": "submit", "job": self._new_name(prefix or "Job"), "header": header,
                "jobpack": jobpack, "submitted": time.time(), "token": token}

    def apply(self, now: float, entry: dict, restore: bool = False) -> None:
        """Act on a committed journal entry (``restore``: replayed by a new master)."""
        self._restoring = restore
        try:
            self._apply(now, entry, restore)
        finally:
            self._restoring = False

    def finish_restore(self, note: str) -> None:
        """After a replay: end the jobs the replay found complete but the journal did not end
        yet, and tell every job still running (``note``) that a new master carries it on."""
        for name, (status, results, error) in self._ends_seen_in_replay.items():
            if name in self.jobs and self.jobs[name].status == core.ACTIVE:
                self._end(name, status, results, error)
        self._ends_seen_in_replay.clear()
        for record in self.jobs.values():
            if record.status == core.ACTIVE:
                self._event(record, "master_changed", note)

    def _apply(self, now: float, entry: dict, restore: bool) -> None:
        kind, name = entry.get("type"), entry.get("job")
        if kind == "submit" and name not in self.jobs:
            if entry.get("token"):
                self.tokens[entry["token"]] = name
            header = entry["header"]
            self.jobs[name] = JobRecord(name, header, entry["submitted"])
            self.log.info("job_submitted", job=name, inputs=len(header["inputs"]),
                          restored=restore or None)
            self.step(now, core.JobSubmitted(
                name, list(header["inputs"]), bool(header.get("has_map")),
                bool(header.get("has_reduce")), header["partitions"], self.max_failures))
        elif kind == "done":
            self.step(now, self._finished(entry, restore))
        elif kind == "end" and name in self.jobs and self.jobs[name].status == core.ACTIVE:
            record = self.jobs[name]
            record.status, record.finished = entry["status"], entry["finished"]
            record.results, record.error = list(entry["results"]), entry["error"]
            self.scheduler.jobs.pop(name, None)
        elif kind == "purge" and name in self.jobs:
            self._forget(now, name)

    def _finished(self, entry: dict, restore: bool):
        job = self.scheduler.jobs.get(entry["task"].rsplit(":", 2)[0])
        task = job.tasks.get(entry["task"]) if job else None
        live = task is not None and task.state == core.RUNNING and task.node == entry["node"]
        if live and not restore:
            return core.TaskFinished(entry["task"], entry["node"], list(entry["outputs"]))
        return core.TaskRestored(entry["task"], entry["node"], list(entry["outputs"]))

    def finished(self, task: str, node: str, outputs: list) -> None:
        """A node reports a finished task: journal it; the scheduler hears it once committed."""
        self._propose({"type": "done", "task": task, "node": node, "outputs": outputs})

    def lost_nodes_after_restore(self, now: float, alive: set) -> None:
        """Finished tasks restored on nodes that are gone: their outputs are lost."""
        gone = {t.node for j in self.scheduler.jobs.values() if j.state == core.ACTIVE
                for t in j.tasks.values() if t.state == core.DONE and t.node not in alive}
        for node in sorted(gone):
            self.step(now, core.NodeLost(node))

    def step(self, now: float, event) -> None:
        for action in self.scheduler.step(now, event):
            self._do(action)

    def task_message(self, job: str, task: str, node: str, msg: str) -> None:
        record = self.jobs.get(job)
        if record is not None:
            stage = task.split(":")[-2] if task.count(":") >= 2 else None
            self._event(record, "task_message", msg, task=task, stage=stage, node=node)

    # -- actions --

    def _do(self, action) -> None:
        if isinstance(action, core.AssignTask):
            self._assign(action.node, action.task)
        elif isinstance(action, core.CancelTask):
            self._cancel(action.node, action.task)
        elif isinstance(action, core.JobEvent):
            record = self.jobs[action.job]
            self._event(record, action.type, action.msg, action.task, action.stage, action.node)
            level = self.log.warning if action.type == "task_failed" else self.log.info
            level(action.type, job=action.job, task=action.task, stage=action.stage,
                  on=action.node, msg=action.msg)
        elif isinstance(action, core.JobFinished):
            self._end(action.job, core.FINISHED, results=action.results)
        elif isinstance(action, core.JobFailed):
            self._end(action.job, action.status, error={
                "msg": action.error, "task": action.task, "input": action.input,
                "node": action.node, "traceback": action.traceback})

    def _end(self, name: str, status: str, results=(), error=None) -> None:
        if self._restoring:  # the journal's own end entry (if any) follows in the replay
            self._ends_seen_in_replay[name] = (status, list(results), error)
            return
        record = self.jobs[name]
        record.status, record.finished = status, time.time()
        record.results, record.error = list(results), error
        self._propose({"type": "end", "job": name, "status": status, "finished": record.finished,
                       "results": record.results, "error": error})
        self.log.info("job_" + status, job=name, results=len(record.results),
                      error=error["msg"] if error else None)
        self.on_job_end(name)

    def _event(self, record: JobRecord, type_: str, msg: str, task=None, stage=None, node=None):
        if len(record.events) >= MAX_EVENTS_PER_JOB and type_ == "task_message":
            record.dropped_events += 1
            return
        event = {"time": time.time(), "job": record.name, "type": type_, "msg": msg}
        for key, value in (("task", task), ("stage", stage), ("node", node)):
            if value is not None:
                event[key] = value
        record.events.append(event)

    # -- queries --

    def running_tasks(self) -> list[tuple[str, str]]:
        """(task id, node) of every running task of every active job."""
        return [(t.id, t.node) for j in self.scheduler.jobs.values() if j.state == core.ACTIVE
                for t in j.tasks.values() if t.state == core.RUNNING]

    def record(self, name: str) -> JobRecord:
        record = self.jobs.get(name)
        if record is None:
            raise UsageError(f"no job named {name!r} (see `disco jobs`)")
        return record

    def status(self, name: str) -> dict:
        record = self.record(name)
        counts = self.scheduler.counts(name) if name in self.scheduler.jobs else {}
        return {**record.summary(), "results": record.results, "error": record.error,
                "counts": counts}

    def events(self, name: str, offset: int) -> dict:
        record = self.record(name)
        return {"events": record.events[offset:offset + 5000],
                "offset": min(len(record.events), offset + 5000), **self.status(name)}

    def list_jobs(self) -> list:
        return [r.summary() for r in sorted(self.jobs.values(), key=lambda r: r.submitted)]

    def kill(self, now: float, name: str) -> None:
        self.record(name)
        self.step(now, core.JobKilled(name))

    def purge(self, now: float, name: str) -> None:
        record = self.record(name)
        if record.status == core.ACTIVE:
            self.kill(now, name)
        self._propose({"type": "purge", "job": name})
        self._forget(now, name)

    def _forget(self, now: float, name: str) -> None:
        self.jobs.pop(name, None)
        self.scheduler.jobs.pop(name, None)
        self.log.info("job_purged", job=name)

    def _new_name(self, prefix: str) -> str:
        bad = set(prefix) & set("/\\:@ \t\n")
        if bad or prefix.startswith("."):
            raise UsageError(f"job name prefix {prefix!r} may not contain {sorted(bad) or '.'}")
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        return f"{prefix}@{stamp}{os.getpid() % 1000:03d}{next(self._seq):04d}"
