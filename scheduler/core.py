"""The master's brain: jobs, stages, tasks, placement and retries, as a pure state machine.

Theory of operation
---------------------------------
A job is a map stage (one task per input) and, if it has a reduce, a reduce stage (one task
per partition label that the maps produced), created when the last map finishes. Tasks move
through the states below; nothing else changes a task's state.

    pending --assign--> running --done--> done
       ^                   |  \\--failed (attempts < max)--> pending
       |                   |  \\--failed (attempts >= max, or not retryable)--> job failed
       +--node lost--------+
    done --node lost, output still needed--> pending          (map outputs live on their node)

Placement: a task goes only to a node that has advertised slots and has one free, preferring
a node that holds its input (locality), then a node it has not failed on, then the least busy.
A task start's event says whether its input was local to its node (``(input local)``) or not
(``(input remote)``), when the input names a node at all.
Jobs share slots fairly: each free slot goes to the job with the fewest running tasks.

Events in (``step(now, event)``): ``JobSubmitted``, ``NodeSlots``, ``NodeLost``,
``TaskReported``, ``TaskFinished``, ``TaskRestored``, ``TaskFailed``, ``InputLost``,
``JobKilled``,
``NodeBlacklisted``, ``NodeWhitelisted``, ``Tick``. Actions out: ``AssignTask``,
``CancelTask``, ``JobFinished``, ``JobFailed``, ``JobEvent`` (a fact for the job's event
log). The core has no sockets, clock or logging.

A task its node reports done is *released* (``TaskReported``): it stays running until its
``TaskFinished`` (the journal has it), but its slot is free at once, so the node's next task
runs while the journal catches up.

Invariants (``check_invariants``): each task is in exactly one state; a node's busy count
equals the number of tasks running on it and not released, and never exceeds its slots; only
running tasks are released; a finished job has every task done.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import singledispatchmethod

PENDING, RUNNING, DONE = "pending", "running", "done"
ACTIVE, FINISHED, FAILED, KILLED = "active", "finished", "failed", "killed"

# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSubmitted:
    job: str
    inputs: list
    has_map: bool = True
    has_reduce: bool = False
    partitions: int = 1
    max_failures: int = 10


@dataclass(frozen=True)
class NodeSlots:
    node: str
    slots: int


@dataclass(frozen=True)
class NodeLost:
    node: str


@dataclass(frozen=True)
class TaskFinished:
    task: str
    node: str
    outputs: list  # [{"label": int, "url": str, "size": int}]


@dataclass(frozen=True)
class TaskReported:
    """A running task's node says it finished; its ``TaskFinished`` follows once the journal
    has it. Its slot is free from now on (the node runs its next task meanwhile)."""
    task: str
    node: str


@dataclass(frozen=True)
class TaskFailed:
    task: str
    node: str
    error: str
    traceback: str = ""
    retryable: bool = True


@dataclass(frozen=True)
class TaskRestored:
    """A new master replays the journal: this task finished on ``node`` with ``outputs``."""
    task: str
    node: str
    outputs: list


@dataclass(frozen=True)
class InputLost:
    """A running task could not read ``url``; if a task of the job made it, re-make it."""
    task: str
    node: str
    url: str


@dataclass(frozen=True)
class JobKilled:
    job: str


@dataclass(frozen=True)
class NodeBlacklisted:
    node: str


@dataclass(frozen=True)
class NodeWhitelisted:
    node: str


@dataclass(frozen=True)
class Tick:
    pass


# ---- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignTask:
    node: str
    task: dict


@dataclass(frozen=True)
class CancelTask:
    node: str
    task: str


@dataclass(frozen=True)
class JobFinished:
    job: str
    results: list


@dataclass(frozen=True)
class JobFailed:
    job: str
    error: str
    task: str | None = None
    input: object = None
    node: str | None = None
    traceback: str = ""
    status: str = FAILED


@dataclass(frozen=True)
class JobEvent:
    job: str
    type: str
    msg: str
    task: str | None = None
    stage: str | None = None
    node: str | None = None


# ---- state ----------------------------------------------------------------------------------


@dataclass
class Task:
    id: str
    job: str
    stage: str
    index: int
    inputs: list
    label: int = 0
    state: str = PENDING
    node: str | None = None
    attempts: int = 0
    failed_on: set = field(default_factory=set)
    outputs: list = field(default_factory=list)
    owner: "Job | None" = field(default=None, repr=False, compare=False)
    released: bool = False  # running, but reported done: its slot is given back

    def spec(self) -> dict:
        return {"id": self.id, "job": self.job, "stage": self.stage, "index": self.index,
                "inputs": self.inputs, "label": self.label, "attempt": self.attempts}

    def __setattr__(self, name, value):
        owner = self.__dict__.get("owner")
        if name == "state" and owner is not None:
            owner.moved(self, self.__dict__["state"], value)
        object.__setattr__(self, name, value)


@dataclass
class Job:
    """A job's tasks, with counts by state and a queue of pending tasks kept up to date by
    ``Task.state`` assignments, so that dispatch and completion checks cost O(1)."""

    name: str
    spec: JobSubmitted
    submitted: float
    tasks: dict = field(default_factory=dict)  # id -> Task, in creation order
    state: str = ACTIVE
    stalled_since: float | None = None
    by_state: dict = field(default_factory=lambda: {PENDING: 0, RUNNING: 0, DONE: 0})
    pending: deque = field(default_factory=deque)

    def adopt(self, task: "Task") -> None:
        self.tasks[task.id] = task
        task.owner = self
        self.moved(task, None, task.state)

    def drop(self, task: "Task") -> None:
        del self.tasks[task.id]
        self.by_state[task.state] -= 1
        task.owner = None

    def moved(self, task: "Task", old: str | None, new: str) -> None:
        if old is not None:
            self.by_state[old] -= 1
        self.by_state[new] += 1
        if new == PENDING and old is None:
            self.pending.append(task)
        elif new == PENDING and old != PENDING:
            self.pending.appendleft(task)  # a retry or a re-run goes before fresh tasks

    def next_pending(self) -> "Task | None":
        while self.pending:
            task = self.pending[0]
            if task.state == PENDING and self.tasks.get(task.id) is task:
                return task
            self.pending.popleft()  # stale: started, dropped, or queued twice
        return None

    def all_done(self) -> bool:
        return self.by_state[PENDING] == 0 and self.by_state[RUNNING] == 0

    def stage_tasks(self, stage: str) -> list:
        return [t for t in self.tasks.values() if t.stage == stage]

    def running(self) -> int:
        return self.by_state[RUNNING]


@dataclass
class Node:
    name: str
    slots: int = 0
    busy: int = 0
    blacklisted: bool = False

    def free(self) -> int:
        return 0 if self.blacklisted else max(0, self.slots - self.busy)


@dataclass(frozen=True)
class SchedulerSettings:
    stall_timeout_s: float = 5.0

    def __post_init__(self):
        if self.stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be positive")


class Scheduler:
    """Jobs and tasks of the whole cluster; one mutating entry point, ``step``."""

    def __init__(self, settings: SchedulerSettings | None = None):
        self.settings = settings or SchedulerSettings()
        self.jobs: dict[str, Job] = {}
        self.nodes: dict[str, Node] = {}
        self.blacklist: set[str] = set()
        self.released = 0  # tasks reported done, not finished yet
        self._now = 0.0
        self._out: list = []

    def step(self, now: float, event) -> list:
        """Apply one event at time ``now``; return the actions to carry out, in order."""
        self._now = now
        self._out = []
        self._on(event)
        self._dispatch()
        out, self._out = self._out, []
        return out

    # -- event handlers --

    @singledispatchmethod
    def _on(self, event):
        raise TypeError(f"unknown scheduler event {type(event).__name__}")

    @_on.register
    def _(self, ev: JobSubmitted):
        job = Job(ev.job, ev, self._now)
        self.jobs[ev.job] = job
        if ev.has_map:
            for i, inp in enumerate(ev.inputs):
                self._add_task(job, "map", i, [inp])
        else:
            self._add_task(job, "reduce", 0, list(ev.inputs))
        self._fact(job, "job_submitted", f"{len(job.tasks)} {'map' if ev.has_map else 'reduce'} tasks")
        if not job.tasks:
            self._finish(job)

    @_on.register
    def _(self, ev: NodeSlots):
        node = self.nodes.setdefault(ev.node, Node(ev.node))
        node.slots = ev.slots
        node.blacklisted = ev.node in self.blacklist

    @_on.register
    def _(self, ev: NodeLost):
        self.nodes.pop(ev.node, None)  # unknown nodes too: a journal replay names dead nodes
        for job in self._active_jobs():
            # decide what is lost before acting: requeueing one map drops unfinished reduces,
            # after which the other maps' outputs would no longer look needed
            lost = [(t, "node_lost" if t.state == RUNNING else "output_lost")
                    for t in job.tasks.values() if t.node == ev.node and (
                        t.state == RUNNING or (t.state == DONE and self._still_needed(job, t)))]
            for task, why in lost:
                if job.tasks.get(task.id) is task:  # not dropped by an earlier requeue
                    self._requeue(job, task, why)

    @_on.register
    def _(self, ev: TaskFinished):
        job, task = self._running_task(ev.task, ev.node)
        if task is None:
            return
        self._release(task)
        task.state, task.outputs = DONE, list(ev.outputs)
        self._fact(job, "task_done", f"{task.id} done", task)
        if job.all_done():
            self._stage_complete(job, task.stage)

    @_on.register
    def _(self, ev: TaskReported):
        job, task = self._running_task(ev.task, ev.node)
        if task is not None and not task.released:
            self._release(task)
            task.released = True
            self.released += 1

    @_on.register
    def _(self, ev: TaskFailed):
        job, task = self._running_task(ev.task, ev.node)
        if task is None:
            return
        self._release(task)
        task.attempts += 1
        task.failed_on.add(ev.node)
        self._fact(job, "task_failed", f"{task.id} failed (attempt {task.attempts}): {ev.error}", task)
        task.state, task.node = PENDING, None  # before _fail, which cancels what is running
        limit = job.spec.max_failures
        if not ev.retryable or task.attempts >= limit:
            why = ev.error if not ev.retryable else \
                f"{ev.error} (failed {task.attempts} times, limit {limit})"
            self._fail(job, why, task=task, traceback=ev.traceback, node=ev.node)

    @_on.register
    def _(self, ev: TaskRestored):
        job = self.jobs.get(ev.task.rsplit(":", 2)[0])
        task = job.tasks.get(ev.task) if job else None
        if task is None or job.state != ACTIVE or task.state == DONE:
            return
        if task.state == RUNNING:
            self._release(task)
        task.state, task.node, task.outputs = DONE, ev.node, list(ev.outputs)
        self._fact(job, "task_restored", f"{task.id} done on {ev.node} (from the journal)", task)
        if job.all_done():
            self._stage_complete(job, task.stage)

    @_on.register
    def _(self, ev: InputLost):
        job, task = self._running_task(ev.task, ev.node)
        if task is None:
            return
        producer = next((t for t in job.tasks.values() if t.state == DONE
                         and any(o["url"] == ev.url for o in t.outputs)), None)
        if producer is None:  # the user's own input: an ordinary failure
            self._on(TaskFailed(ev.task, ev.node, f"input {ev.url} cannot be read"))
            return
        self._requeue(job, task, "input_lost")  # not the task's fault: no attempt counted
        self._requeue(job, producer, "output_lost")

    @_on.register
    def _(self, ev: JobKilled):
        job = self.jobs.get(ev.job)
        if job is not None and job.state == ACTIVE:
            self._fail(job, "killed by user", status=KILLED)

    @_on.register
    def _(self, ev: NodeBlacklisted):
        self.blacklist.add(ev.node)
        if ev.node in self.nodes:
            self.nodes[ev.node].blacklisted = True

    @_on.register
    def _(self, ev: NodeWhitelisted):
        self.blacklist.discard(ev.node)
        if ev.node in self.nodes:
            self.nodes[ev.node].blacklisted = False

    @_on.register
    def _(self, ev: Tick):
        for job in self._active_jobs():
            self._check_stall(job)

    # -- helpers --

    def _add_task(self, job: Job, stage: str, index: int, inputs: list, label: int = 0) -> Task:
        task = Task(f"{job.name}:{stage}:{index}", job.name, stage, index, inputs, label)
        job.adopt(task)
        return task

    def _running_task(self, task_id: str, node: str):
        job = self.jobs.get(task_id.rsplit(":", 2)[0])
        task = job.tasks.get(task_id) if job else None
        if task is None or task.state != RUNNING or task.node != node or job.state != ACTIVE:
            return job, None  # late or duplicate report: ignore
        return job, task

    def _release(self, task: Task) -> None:
        """Give the task's slot back (once: a task reported done gave it back already)."""
        if task.released:
            task.released = False
            self.released -= 1
            return
        node = self.nodes.get(task.node)
        if node is not None:
            node.busy -= 1

    def _requeue(self, job: Job, task: Task, why: str) -> None:
        if task.state == RUNNING:
            self._release(task)
        self._fact(job, "task_requeued", f"{task.id} re-queued: {why} on {task.node}", task)
        task.state, task.node, task.outputs = PENDING, None, []
        if task.stage == "map":  # its reduces must wait for it again
            for other in job.stage_tasks("reduce"):
                if other.state != DONE:
                    self._drop_reduce(job, other)

    def _drop_reduce(self, job: Job, task: Task) -> None:
        if task.state == RUNNING:
            self._release(task)
            self._out.append(CancelTask(task.node, task.id))
        job.drop(task)

    def _still_needed(self, job: Job, task: Task) -> bool:
        if task.stage != "map" or not job.spec.has_reduce:
            return False
        return not any(t.stage == "reduce" for t in job.tasks.values()) or any(
            t.stage == "reduce" and t.state != DONE for t in job.tasks.values())

    def _stage_complete(self, job: Job, stage: str) -> None:
        if stage == "map" and job.spec.has_reduce:
            by_label: dict[int, list] = {}
            for task in job.stage_tasks("map"):
                for out in task.outputs:
                    by_label.setdefault(int(out["label"]), []).append(out["url"])
            # reduces dropped because a map re-ran are made again; finished ones are kept
            missing = [label for label in sorted(by_label)
                       if f"{job.name}:reduce:{label}" not in job.tasks]
            for label in missing:
                self._add_task(job, "reduce", label, by_label[label], label)
            self._fact(job, "stage_done", f"map done; {len(missing)} reduce tasks", stage="map")
            if missing:
                return
        self._finish(job)

    def _finish(self, job: Job) -> None:
        final = "reduce" if job.stage_tasks("reduce") else "map"
        results = [o["url"] for t in sorted(job.stage_tasks(final), key=lambda t: t.index)
                   for o in sorted(t.outputs, key=lambda o: o["label"])]
        job.state = FINISHED
        self._fact(job, "job_done", f"{len(results)} results")
        self._out.append(JobFinished(job.name, results))

    def _fail(self, job: Job, error: str, *, task: Task | None = None, traceback: str = "",
              status: str = FAILED, node: str | None = None) -> None:
        for other in job.tasks.values():
            if other.state == RUNNING:
                self._release(other)
                self._out.append(CancelTask(other.node, other.id))
                other.state, other.node = PENDING, None
        job.state = status
        self._fact(job, "job_" + status, error, task)
        self._out.append(JobFailed(
            job.name, error, task=task.id if task else None,
            input=(task.inputs[0] if task and len(task.inputs) == 1 else task.inputs if task else None),
            node=node,
            traceback=traceback, status=status))

    def _check_stall(self, job: Job) -> None:
        waiting = job.by_state[PENDING] > 0
        usable = any(n.slots > 0 and not n.blacklisted for n in self.nodes.values())
        if not waiting or usable:
            job.stalled_since = None
            return
        if job.stalled_since is None:
            job.stalled_since = self._now
        elif self._now - job.stalled_since >= self.settings.stall_timeout_s:
            why = "no node can run its tasks: " + (
                "every node is blacklisted"
                if self.nodes and all(n.blacklisted for n in self.nodes.values())
                else "no node has task slots")
            self._fail(job, why)

    def _active_jobs(self) -> list:
        return [j for j in self.jobs.values() if j.state == ACTIVE]

    def _fact(self, job: Job, type_: str, msg: str, task: Task | None = None,
              stage: str | None = None) -> None:
        self._out.append(JobEvent(job.name, type_, msg, task.id if task else None,
                                  task.stage if task else stage, task.node if task else None))

    # -- placement --

    def _dispatch(self) -> None:
        while True:
            nodes = [n for n in self.nodes.values() if n.free() > 0]
            if not nodes:
                return
            job = self._next_job()
            if job is None:
                return
            task = job.next_pending()
            node = self._place(task, nodes)
            task.state, task.node = RUNNING, node.name
            node.busy += 1
            hosts = _input_nodes(task.inputs)
            where = "" if not hosts else " (input local)" if node.name in hosts else \
                " (input remote)"
            self._fact(job, "task_started", f"{task.id} on {node.name}{where}", task)
            self._out.append(AssignTask(node.name, task.spec()))

    def _next_job(self) -> Job | None:
        ready = [j for j in self._active_jobs() if j.by_state[PENDING] > 0]
        return min(ready, key=lambda j: (j.running(), j.submitted), default=None)

    def _place(self, task: Task, nodes: list) -> Node:
        hosts = _input_nodes(task.inputs)
        return min(nodes, key=lambda n: (n.name not in hosts, n.name in task.failed_on,
                                         n.busy - n.slots, n.name))

    # -- views --

    def counts(self, job_name: str) -> dict:
        """Per stage: how many tasks are pending, running and done."""
        out: dict[str, dict[str, int]] = {}
        for task in self.jobs[job_name].tasks.values():
            stage = out.setdefault(task.stage, {PENDING: 0, RUNNING: 0, DONE: 0, "failed": 0})
            stage[task.state] += 1
            stage["failed"] += task.attempts
        return out

    def check_invariants(self) -> None:
        assert self.released == sum(t.released for j in self.jobs.values()
                                    for t in j.tasks.values()), "released count drifted"
        busy: dict[str, int] = {}
        for job in self.jobs.values():
            for task in job.tasks.values():
                assert task.state in (PENDING, RUNNING, DONE), task
                if task.state == RUNNING:
                    assert job.state == ACTIVE, (job.name, task.id)
                    if not task.released:
                        busy[task.node] = busy.get(task.node, 0) + 1
                else:
                    assert not task.released, task
            if job.state == FINISHED:
                assert all(t.state == DONE for t in job.tasks.values()), job.name
            actual = {PENDING: 0, RUNNING: 0, DONE: 0}
            for task in job.tasks.values():
                actual[task.state] += 1
            assert job.by_state == actual, (job.name, job.by_state, actual)
        for node in self.nodes.values():
            assert node.busy == busy.get(node.name, 0), (node.name, node.busy, busy)
            assert node.busy <= node.slots or node.blacklisted, node


def _input_nodes(inputs: list) -> set:
    """Node names (host:port) that hold any of these inputs, from disco:// URLs."""
    hosts = set()
    for inp in inputs:
        for url in inp if isinstance(inp, (list, tuple)) else [inp]:
            if isinstance(url, str) and url.startswith(("disco://", "dir://")):
                hosts.add(url.split("/", 3)[2])
    return hosts
