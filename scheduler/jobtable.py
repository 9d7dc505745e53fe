"""The master's job table around the scheduler core, as a pure state machine.

Theory of operation
-------------------
The master names jobs, keeps each job's record (header, status, results, error) and its event
log, feeds the scheduler core (``scheduler.core``) its events and turns what it returns into
actions for the node core (``mesh.node``) to carry out. It never unpickles user code.

What must survive a change of master goes through the journal: a finished task or a job's end
is *proposed* (``Propose``; with ``save_results``, the end is preceded by the DDFS tag
``disco:results:<job>`` naming the saved outputs, and the job's result is that tag) and acted
on only when the node core hands it back committed (``Committed``). A new master builds its
table from the ``JournalState`` it already holds (``JobTable.restore``): jobs come back with
their finished tasks, everything else is scheduled again, and jobs the restore finds complete
are ended. Task failures and events are not journaled (a fail-over resets them).

Events in (``step(now, event)``): ``Committed(entry)``, ``TaskNote``, ``PurgeAsked`` and the
scheduler's own events (``core.NodeSlots``, ``core.NodeLost``, ``core.TaskFailed``,
``core.InputLost``, ``core.JobKilled``, ``core.NodeBlacklisted``, ``core.NodeWhitelisted``,
``core.Tick``), passed through. Actions out: ``core.AssignTask``, ``core.CancelTask``,
``Propose(entry)``, ``JobClosed(job)`` and ``Fact``s for the log. Time comes in as ``now``; the
wall clock is ``now + wall_offset``.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from common.error import JobNotFound, UsageError
from scheduler import core
from scheduler import entry as en

MAX_EVENTS_PER_JOB = 20_000
ENDED_JOBS_KEPT = 32  # ended multi-stage jobs whose stages' outputs stay known (stageresults)
EVENTS_PER_PAGE = 5000


# ---- events and actions ------------------------------------------------------------------

@dataclass(frozen=True)
class Committed:
    entry: object


@dataclass(frozen=True)
class TaskNote:
    job: str
    task: str
    node: str
    msg: str


@dataclass(frozen=True)
class PurgeAsked:
    job: str


@dataclass(frozen=True)
class RemakeAsked:
    """A reader could not read ``url``, a result of the finished ``job``: if its node is not
    ``alive``, the job's lost results are made again from its finished tasks (``done``, the
    journal's ``task -> (node, outputs)``), and a ``Remade`` entry gives the new results."""
    job: str
    url: str
    alive: frozenset
    done: dict


@dataclass(frozen=True)
class Propose:
    entry: object


@dataclass(frozen=True)
class JobClosed:
    job: str


# Job events kept in the job's record but not logged: one line per task is the running node's
# ``task_done`` (mesh.executor), with its stats; these two more cost the master 2 lines a task.
_UNLOGGED = frozenset({"task_started", "task_done"})


@dataclass(frozen=True)
class Fact:
    """Something the loop logs (``level`` info or warning); the simulator may assert on it."""
    event: str
    level: str = "info"
    fields: dict = field(default_factory=dict)


class BadJob(UsageError, ValueError):
    """A submission's header cannot work (the node answers the client with a usage error)."""


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
    counts: dict = field(default_factory=dict)  # per-stage task counts when the job ended
    remaking: bool = False  # lost results are being made again

    def summary(self) -> dict:
        return {"job": self.name, "status": self.status, "submitted": self.submitted,
                "finished": self.finished}


def check_header(header) -> dict:
    """A submitted job pack's header, validated (``BadJob`` says why not)."""
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) \
            or not isinstance(header.get("partitions"), int):
        raise BadJob("job pack is malformed (expected a header with inputs and partitions)")
    if header["partitions"] < 1:
        raise BadJob(f"partitions must be 1 or more, not {header['partitions']}")
    pipeline = header.get("pipeline")
    if pipeline is not None:
        check_pipeline(pipeline)
    elif not header.get("has_map") and not header.get("has_reduce"):
        raise BadJob("a job needs a map or a reduce function")
    return header


def check_pipeline(pipeline) -> None:
    """A pipeline's stages: ``[[name, grouping, concurrent], ...]``, names unique."""
    if not isinstance(pipeline, list) or not pipeline:
        raise BadJob("a pipeline is a non-empty list of [stage name, grouping] pairs")
    seen = set()
    for stage in pipeline:
        if not isinstance(stage, (list, tuple)) or len(stage) not in (2, 3) \
                or not all(isinstance(x, str) for x in stage[:2]):
            raise BadJob(f"a pipeline stage is [name, grouping], not {stage!r:.80}")
        name, grouping = stage[0], stage[1]
        if not name or not all(c.isalnum() or c in "_-" for c in name):
            raise BadJob(f"stage name {name!r} must be letters, digits, '_' or '-'")
        if name in seen:
            raise BadJob(f"stage name {name!r} is used twice; stage names must be unique")
        seen.add(name)
        if grouping not in core.GROUPINGS:
            raise BadJob(f"stage {name!r}: unknown grouping {grouping!r}; "
                         f"one of {', '.join(core.GROUPINGS)}")


class JobTable:
    def __init__(self, max_failures: int = 10, wall_offset: float = 0.0, salt: int = 0,
                 speculation: bool = True):
        self.scheduler = core.Scheduler(core.SchedulerSettings(speculation=speculation))
        self.jobs: dict[str, JobRecord] = {}
        self.max_failures, self.wall_offset, self.salt = max_failures, wall_offset, salt
        self._seq = itertools.count(1)
        self._ended_jobs: dict = {}  # name -> scheduler Job, of the last multi-stage jobs ended
        self._now = 0.0
        self._out: list = []

    # -- the one entry point --

    def step(self, now: float, event) -> list:
        self._now, self._out = now, []
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        else:
            self._schedule(event)
        return self._out

    @property
    def wall(self) -> float:
        return self._now + self.wall_offset

    def _committed(self, ev: Committed) -> None:
        e = ev.entry
        if isinstance(e, en.Submit):
            self._submitted(e, restored=False)
        elif isinstance(e, en.Done):
            self._schedule(self._finished(e))
        elif isinstance(e, en.Purge) and e.job in self.jobs:
            self._forget(e.job)
        elif isinstance(e, en.End) and e.job in self.jobs:
            self._closed(e)
        elif isinstance(e, en.Remade) and e.job in self.jobs:
            self._remade(e)

    def _submitted(self, e: en.Submit, restored: bool) -> None:
        if e.job in self.jobs:
            return
        header = e.header
        self.jobs[e.job] = JobRecord(e.job, header, e.submitted)
        self._fact("job_resumed" if restored else "job_submitted", job=e.job,
                   inputs=len(header["inputs"]))
        self._schedule(self._job_spec(e.job, header))

    def _finished(self, e: en.Done):
        job = self.scheduler.jobs.get(en.job_of_task(e.task))
        task = job.tasks.get(e.task) if job else None
        if task is not None and task.state == core.RUNNING and task.node == e.node:
            return core.TaskFinished(e.task, e.node, list(e.outputs))
        return core.TaskRestored(e.task, e.node, list(e.outputs))

    def _note(self, ev: TaskNote) -> None:
        record = self.jobs.get(ev.job)
        if record is not None:
            stage = ev.task.split(":")[-2] if ev.task.count(":") >= 2 else None
            self._event(record, "task_message", ev.msg, task=ev.task, stage=stage, node=ev.node)

    def _purge(self, ev: PurgeAsked) -> None:
        record = self.record(ev.job)
        if record.status == core.ACTIVE:
            self._schedule(core.JobKilled(ev.job))
        self._out.append(Propose(en.Purge(ev.job)))
        self._forget(ev.job)

    def _forget(self, name: str) -> None:
        self.jobs.pop(name, None)
        self._ended_jobs.pop(name, None)
        self.scheduler.jobs.pop(name, None)
        self._fact("job_purged", job=name)

    # -- the scheduler's actions --

    def _schedule(self, event) -> None:
        for action in self.scheduler.step(self._now, event):
            self._do(action)

    def _do(self, action) -> None:
        if isinstance(action, (core.AssignTask, core.CancelTask)):
            self._out.append(action)
        elif isinstance(action, core.JobEvent):
            self._event(self.jobs[action.job], action.type, action.msg, action.task,
                        action.stage, action.node)
            if action.type in _UNLOGGED:
                return  # a job event; the node that ran the task logs its one summary line
            self._fact(action.type, "warning" if action.type == "task_failed" else "info",
                       job=action.job, task=action.task, stage=action.stage, on=action.node,
                       msg=action.msg)
        elif isinstance(action, core.JobFinished):
            self._end(action.job, core.FINISHED, results=action.results)
        elif isinstance(action, core.JobFailed):
            self._end(action.job, action.status, error={
                "msg": action.error, "task": action.task, "input": action.input,
                "node": action.node, "traceback": action.traceback})

    def _job_spec(self, name: str, header: dict, hold: bool = False) -> core.JobSubmitted:
        """What the scheduler gets for a job: its inputs and stages, from its header."""
        return core.JobSubmitted(
            name, list(header["inputs"]), bool(header.get("has_map")),
            bool(header.get("has_reduce")), header["partitions"], self.max_failures,
            tuple(tuple(s[:2]) for s in header.get("pipeline") or ()),
            tuple(header.get("input_labels") or ()), hold=hold)

    def _remake(self, ev: RemakeAsked) -> None:
        record = self.record(ev.job)
        if record.status != core.FINISHED:
            raise BadJob(f"job {ev.job} is {record.status}: only a finished job's results "
                         "are made again")
        url = current_result(record.results, ev.url)  # a task writes the same path anywhere
        if url is None:
            raise BadJob(f"{ev.url} is not a result of job {ev.job}")
        if record.remaking or _node_of(url) in ev.alive:
            return  # on its way, or the node is there (the read failed some other way)
        header = record.header
        record.remaking = True
        self._fact("job_remaking", "warning", job=ev.job, url=url)
        self._event(record, "job_remaking", f"{url} is on a node that is gone: making it again")
        self._schedule(self._job_spec(ev.job, header, hold=True))
        for task, (node, outputs) in ev.done.items():
            self._schedule(core.TaskRestored(task, node, list(outputs)))
        dead = ({node for node, _ in ev.done.values()} | set(self.scheduler.nodes)
                | {_node_of(url)}) - set(ev.alive)
        for node in sorted(dead):
            self._schedule(core.NodeLost(node))
        self._schedule(core.ReleaseJob(ev.job))

    def _remade(self, e: en.Remade) -> None:
        record = self.jobs[e.job]
        moved = sum(old != new for old, new in zip(record.results, e.results))
        record.results, record.remaking = list(e.results), False
        self._event(record, "job_remade", f"{moved} results made again")
        self._out.append(JobClosed(e.job))  # those waiting for it hear now

    def _end(self, name: str, status: str, results=(), error=None) -> None:
        record = self.jobs[name]
        if record.remaking:  # a finished job whose lost results were made again
            self.scheduler.jobs.pop(name, None)
            if status == core.FINISHED:
                self._out.append(Propose(en.Remade(name, tuple(results))))
            else:
                record.remaking = False
                self._fact("job_remake_failed", "warning", job=name,
                           error=(error or {}).get("msg"))
                self._out.append(JobClosed(name))
            return
        record.finished = self.wall
        if record.header.get("save_results") and status == core.FINISHED:
            # the saved outputs (replica sets of DDFS blobs) go under one tag, the job's result
            tag = f"disco:results:{name}"
            self._out.append(Propose({"type": "tag_put", "tag": tag, "wall": self.wall,
                                      "urls": [list(r) if isinstance(r, (list, tuple)) else [r]
                                               for r in results]}))
            results = [f"tag://{tag}"]
        record.results, record.error = list(results), error
        if name in self.scheduler.jobs:
            record.counts = self.scheduler.counts(name)
            if len(self.scheduler.jobs[name].stages) > 1:  # its stages' results, for a while
                self._ended_jobs[name] = self.scheduler.jobs[name]
                while len(self._ended_jobs) > ENDED_JOBS_KEPT:
                    self._ended_jobs.pop(next(iter(self._ended_jobs)))
        self.scheduler.jobs.pop(name, None)
        self._out.append(Propose(en.End(name, status, record.finished, tuple(record.results),
                                        error)))
        self._fact("job_" + status, job=name, results=len(record.results),
                   error=error["msg"] if error else None)

    def _closed(self, e: en.End) -> None:
        """A job's end is committed: only now is it over for its clients, so what it promised
        (its results, a saved results' tag committed just before) is durable when they hear."""
        record = self.jobs[e.job]
        if record.status == core.ACTIVE:
            record.status = e.status
            self._out.append(JobClosed(e.job))

    def _event(self, record: JobRecord, type_: str, msg: str, task=None, stage=None, node=None):
        if len(record.events) >= MAX_EVENTS_PER_JOB and type_ == "task_message":
            record.dropped_events += 1
            return
        event = {"time": self.wall, "job": record.name, "type": type_, "msg": msg}
        for key, value in (("task", task), ("stage", stage), ("node", node)):
            if value is not None:
                event[key] = value
        record.events.append(event)

    def _fact(self, event: str, level: str = "info", **fields) -> None:
        self._out.append(Fact(event, level, {k: v for k, v in fields.items() if v is not None}))

    # -- a new master --

    @classmethod
    def restore(cls, state: en.JournalState, now: float, alive: set, note: str,
                **kwargs) -> tuple["JobTable", list]:
        """The table of a new master, from the journal state every node keeps."""
        table = cls(**kwargs)
        table._now, table._out = now, []
        for job in state.jobs.values():
            if job.end is not None:
                table._restore_ended(job)
                continue
            table._submitted(en.Submit(job.name, job.header, job.jobpack, job.submitted),
                             restored=True)
            for task, (node, outputs) in job.done.items():
                table._schedule(core.TaskRestored(task, node, list(outputs)))
        gone = {t.node for j in table.scheduler.jobs.values() if j.state == core.ACTIVE
                for t in j.tasks.values() if t.state == core.DONE and t.node not in alive}
        for node in sorted(gone):
            table._schedule(core.NodeLost(node))
        for record in table.jobs.values():
            if record.status == core.ACTIVE:
                table._event(record, "master_changed", note)
        return table, table._out

    def _restore_ended(self, job: en.JobState) -> None:
        e = job.end
        self.jobs[job.name] = JobRecord(job.name, job.header, job.submitted, e.status,
                                        e.finished, list(e.results), e.error)

    # -- queries --

    def new_name(self, prefix: str) -> str:
        bad = set(prefix) & set("/\\:@ \t\n")
        if bad or prefix.startswith("."):
            raise BadJob(f"job name prefix {prefix!r} may not contain {sorted(bad) or '.'}")
        stamp = datetime.fromtimestamp(self.wall, timezone.utc).strftime("%Y%m%d%H%M%S")
        while True:
            name = f"{prefix}@{stamp}{self.salt % 1000:03d}{next(self._seq):04d}"
            if name not in self.jobs:
                return name

    def running_tasks(self) -> list[tuple[str, str]]:
        """(task id, node) of every running task of every active job that its node has not
        reported done (those a node no longer lists are lost). A job's running tasks by id,
        from its index of them: every tick asks, and a job may have 100,000 tasks."""
        return [(t.id, t.node) for j in self.scheduler.jobs.values() if j.state == core.ACTIVE
                for t in map(j.tasks.get, sorted(j.running_ids)) if not t.released]

    def unreleased(self) -> int:
        """How many tasks still run on their nodes (more reports to come)."""
        return sum(j.by_state[core.RUNNING] for j in self.scheduler.jobs.values()
                   if j.state == core.ACTIVE) - self.scheduler.released

    def record(self, name: str) -> JobRecord:
        record = self.jobs.get(name)
        if record is None:
            raise JobNotFound(f"no job named {name!r} (see `disco jobs`)")
        return record

    def status(self, name: str, stage: str | None = None) -> dict:
        """A job's status; with ``stage``, also that stage's outputs (``stage_results``: a
        list of URLs, None while the stage is not done; only while the master holds the job's
        tasks, that is until the job ends or a new master is elected)."""
        record = self.record(name)
        counts = self.scheduler.counts(name) if name in self.scheduler.jobs else record.counts
        header = record.header
        stages = [s[0] for s in header.get("pipeline") or ()] or [
            s for s, _ in core.classic_pipeline(bool(header.get("has_map")),
                                                bool(header.get("has_reduce")))]
        out = {**record.summary(), "results": record.results, "error": record.error,
               "counts": counts, "stages": stages}
        if record.remaking:
            out["remaking"] = True
        if stage is not None:
            if stage not in stages:
                raise JobNotFound(f"job {name} has no stage {stage!r} (stages: "
                                  f"{', '.join(stages)})")
            out["stage_results"] = self._stage_results(name, stage)
            if out["stage_results"] is None and record.status == core.FINISHED \
                    and stage == stages[-1]:
                out["stage_results"] = list(record.results)
        return out

    def _stage_results(self, name: str, stage: str):
        job = self.scheduler.jobs.get(name) or self._ended_jobs.get(name)
        if job is None:
            return None
        tasks = [t for t in job.tasks.values() if t.stage == stage]
        if not tasks or any(t.state != core.DONE for t in tasks):
            return None
        return [o["url"] for t in sorted(tasks, key=lambda t: t.index)
                for o in sorted(t.outputs, key=lambda o: int(o["label"]))]

    def events(self, name: str, offset: int) -> dict:
        record = self.record(name)
        return {"events": record.events[offset:offset + EVENTS_PER_PAGE],
                "offset": min(len(record.events), offset + EVENTS_PER_PAGE),
                **self.status(name)}

    def list_jobs(self) -> list:
        return [r.summary() for r in sorted(self.jobs.values(), key=lambda r: r.submitted)]

    def check_invariants(self) -> None:
        self.scheduler.check_invariants()
        for name in self.scheduler.jobs:
            assert name in self.jobs, f"scheduler job {name} has no record"


def current_result(results: list, url: str):
    """The result in ``results`` that is ``url`` or its remade copy (the same file of the
    job's directory, on another node, in any worker's directory), or None."""
    if url in results:
        return url
    path = _output_path(url)
    return next((r for r in results if path and _output_path(r) == path), None)


_WORKER_DIR = re.compile(r"w\d+")


def _output_path(url) -> tuple | None:
    """A ``disco://`` URL's path without its node and without a worker's ``w<pid>``
    directory: the same for every copy of one task output."""
    if not isinstance(url, str) or "://" not in url:
        return None
    parts = url.split("/", 3)[3:]
    return tuple(p for p in parts[0].split("/") if not _WORKER_DIR.fullmatch(p)) if parts else None


def _node_of(url) -> str | None:
    """The node a ``disco://HOST:PORT/...`` URL names (None for other URLs)."""
    if isinstance(url, str) and url.startswith(("disco://", "dir://")):
        return url.split("/", 3)[2]
    return None


_HANDLERS = {Committed: JobTable._committed, TaskNote: JobTable._note,
             PurgeAsked: JobTable._purge, RemakeAsked: JobTable._remake}
