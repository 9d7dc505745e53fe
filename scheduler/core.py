"""The master's brain: jobs, stages, tasks, placement and retries, as a pure state machine.

Theory of operation
---------------------------------
A job is a pipeline of stages, each a ``(name, grouping)``: Disco 0.5's model. A classic job is
its equivalent pipeline: ``map`` (``split``: one task per input) and, with a reduce, ``reduce``
(``group_label``: one task per partition label the maps produced; ``group_all`` for a
reduce-only job). The first stage's tasks are made at submission from the job's inputs (label
0 each); each later stage's tasks are made when every task of the stage before it is done,
from that stage's outputs, by its grouping:

    split             one task per input (per output of the stage before)
    group_label       one task per distinct label, over every input with that label
    group_node        one task per node holding inputs, over all its inputs (run there)
    group_node_label  one task per (node, label)
    group_all         one task over every input

A task of a later stage names the tasks whose outputs it reads (its *producers*); it runs only
while all of them are done, so a producer that must run again (its node was lost, or a
consumer could not read its output) holds its consumers back until its new output is there,
and a consumer that was running is cancelled and waits. This is lineage recovery: what was
lost is made again from what it was made of, one stage back at a time. Tasks move through the
states below; nothing else changes a task's state.

    pending --assign--> running --done--> done
       ^                   |  \\--failed (attempts < max)--> pending
       |                   |  \\--failed (attempts >= max, or not retryable)--> job failed
       +--node lost--------+
    done --node lost, output still needed--> pending          (outputs live on their node)

A done task's output is still needed while a task reading it is not done, while the next stage
is not made yet, and, for the last stage, while the job runs (its outputs are the results).

Placement: a task goes only to a node that has advertised slots and has one free, preferring
a node that holds its input (locality), then a node it has not failed on, then the least busy.
A task start's event says whether its input was local to its node (``(input local)``) or not
(``(input remote)``), when the input names a node at all.
Jobs share slots fairly: each free slot goes to the job with the fewest running tasks.
Short tasks queue: once a stage's tasks take under ``QUEUE_BELOW_S`` on average, a node with
no slot free is given up to ``QUEUE_PER_SLOT`` more of them per slot, held in its queue until a
slot frees (the node's executor runs no more than its slots at once), so that a slot's next
task is there when its last one ends. Backups (speculation) use free slots only.

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
equals the number of tasks running on it and not released, and never exceeds its slots and
its queue (``1 + QUEUE_PER_SLOT`` times its slots); only
running tasks are released; a finished job has every task done.
"""
from __future__ import annotations

from bisect import insort
from collections import deque
from dataclasses import dataclass, field
from functools import singledispatchmethod

PENDING, RUNNING, DONE = "pending", "running", "done"
SPECULATE_EVERY_S = 0.1  # how often the scheduler looks for stragglers at most
SPECULATE_MIN_SAMPLES = 3  # finished tasks of a stage before its median counts
QUEUE_BELOW_S = 0.1  # a stage whose tasks take less than this (on average, lately) is short:
# a node gets more of its tasks than it has slots, queued, so that each slot's next task is
# there when it finishes instead of a round trip to the master later
QUEUE_EWMA = 0.2  # the weight of the newest task in that average
QUEUE_PER_SLOT = 2  # queued short tasks a node may hold per slot: its executor sends one ahead
# to each busy worker and starts the next as soon as a worker answers, without the master's
# round trip (no-op tasks, 3 runs each: 1,650-1,955 tasks/s with 1, 1,845-2,152 with 2)
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
    pipeline: tuple = ()  # ((stage, grouping), ...); empty: the classic job's equivalent
    input_labels: tuple = ()  # each input's label (a Disco job pack's); empty: all 0
    hold: bool = False  # neither start tasks nor finish until ReleaseJob (a finished job's
    # lost results are being made again: its done tasks are restored first, then what was
    # lost is re-queued, and only then does anything run)

    def stages(self) -> tuple:
        if self.pipeline:
            return tuple((str(name), str(grouping)) for name, grouping, *_ in self.pipeline)
        return classic_pipeline(self.has_map, self.has_reduce)


GROUPINGS = ("split", "group_label", "group_node", "group_node_label", "group_all")


def classic_pipeline(has_map: bool, has_reduce: bool) -> tuple:
    """A classic map/reduce job as the pipeline it runs as."""
    if has_map:
        return (("map", "split"),) + ((("reduce", "group_label"),) if has_reduce else ())
    return (("reduce", "group_all"),)


@dataclass(frozen=True)
class NodeSlots:
    node: str
    slots: int
    queue: bool = True  # may hold tasks of short stages queued beyond its slots


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
    elsewhere: bool = False  # this node could not (a missing local file): others may


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
class ReleaseJob:
    """A held job (``JobSubmitted.hold``) may finish once its tasks are done."""
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
    started: float = 0.0  # when its (primary) attempt was assigned
    backup: str | None = None  # the node running its backup attempt (speculation)
    stage_no: int = 0
    grouping: str = "split"
    host: str | None = None  # the node a group_node(_label) task's inputs are on
    labels: list = field(default_factory=list)  # each input's label
    sources: list = field(default_factory=list)  # (producer id, label) of each input, stage > 0

    def spec(self) -> dict:
        owner = self.owner
        inputs, labels = self.inputs, self.labels or [0] * len(self.inputs)
        if self.sources and owner is not None:
            inputs, labels = owner.resolve(self.sources)
        return {"id": self.id, "job": self.job, "stage": self.stage, "index": self.index,
                "inputs": inputs, "labels": labels, "label": self.label,
                "grouping": self.grouping, "group": [self.label, self.host],
                "final": owner is not None and self.stage_no == len(owner.stages) - 1,
                "attempt": self.attempts}

    def producers(self) -> set:
        return {pid for pid, _ in self.sources}


def _task_state(self) -> str:
    return self._state


def _move_task(self, value: str) -> None:
    """``task.state = ...``: its job's counts and queues follow (``Job.moved``). A property
    rather than a ``__setattr__`` hook, so setting any other field costs nothing extra."""
    owner = self.__dict__.get("owner")
    if owner is not None:
        owner.moved(self, self._state, value)
    self._state = value


Task.state = property(_task_state, _move_task)  # the dataclass made its field first


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
    stages: tuple = ()  # ((name, grouping), ...)
    made: int = 0  # how many stages have their tasks
    consumers: dict = field(default_factory=dict)  # producer id -> ids of tasks reading it
    restored: dict = field(default_factory=dict)  # task id -> (node, outputs) of stages not made yet
    hold: bool = False
    durations: dict = field(default_factory=dict)  # stage no -> seconds of its finished tasks, sorted
    node_took: dict = field(default_factory=dict)  # (stage no, node) -> seconds of those it ran, sorted
    running_ids: set = field(default_factory=set)  # ids of its running tasks
    stage_sizes: dict = field(default_factory=dict)  # stage no -> how many tasks it has
    recent: dict = field(default_factory=dict)  # stage no -> its tasks' recent average s

    def took(self, stage_no: int, seconds: float) -> None:
        """A task of the stage took ``seconds``, from its assignment to its report."""
        insort(self.durations.setdefault(stage_no, []), seconds)
        mean = self.recent.get(stage_no, seconds)
        self.recent[stage_no] = mean + QUEUE_EWMA * (seconds - mean)

    def took_on(self, stage_no: int, node: str, seconds: float) -> None:
        """``node`` ran a task of the stage in ``seconds`` (its pace, for speculation)."""
        insort(self.node_took.setdefault((stage_no, node), []), seconds)

    def short(self, stage_no: int) -> bool:
        """Its stage's tasks are short (``QUEUE_BELOW_S``), judged by at least
        ``SPECULATE_MIN_SAMPLES`` of them."""
        return len(self.durations.get(stage_no, ())) >= SPECULATE_MIN_SAMPLES \
            and self.recent[stage_no] < QUEUE_BELOW_S

    def resolve(self, sources: list) -> tuple[list, list]:
        """The URLs and labels of (producer id, label) sources, from the producers' outputs."""
        urls, labels = [], []
        for pid, label in sources:
            producer = self.tasks.get(pid)
            for out in producer.outputs if producer else ():
                if int(out["label"]) == label:
                    urls.append(out["url"])
                    labels.append(label)
        return urls, labels

    def runnable(self, task: "Task") -> bool:
        return all(self.tasks[p].state == DONE for p in task.producers() if p in self.tasks)

    def adopt(self, task: "Task") -> None:
        self.tasks[task.id] = task
        task.owner = self
        self.stage_sizes[task.stage_no] = self.stage_sizes.get(task.stage_no, 0) + 1
        self.moved(task, None, task.state)

    def drop(self, task: "Task") -> None:
        del self.tasks[task.id]
        self.by_state[task.state] -= 1
        self.stage_sizes[task.stage_no] -= 1
        self.running_ids.discard(task.id)
        task.owner = None

    def moved(self, task: "Task", old: str | None, new: str) -> None:
        if old is not None:
            self.by_state[old] -= 1
        self.by_state[new] += 1
        if new == RUNNING:
            self.running_ids.add(task.id)
        elif old == RUNNING:
            self.running_ids.discard(task.id)
        if new == PENDING and old is None:
            self.pending.append(task)
        elif new == PENDING and old != PENDING:
            self.pending.appendleft(task)  # a retry or a re-run goes before fresh tasks

    def next_pending(self) -> "Task | None":
        """The first pending task whose producers are all done (None if every one waits)."""
        while self.pending:
            task = self.pending[0]
            if task.state == PENDING and self.tasks.get(task.id) is task:
                break
            self.pending.popleft()  # stale: started, dropped, or queued twice
        else:
            return None
        for task in self.pending:  # the head is runnable but in a re-run of a producer
            if task.state == PENDING and self.tasks.get(task.id) is task and self.runnable(task):
                return task
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
    queue: bool = True

    def free(self) -> int:
        return 0 if self.blacklisted else max(0, self.slots - self.busy)

    def queue_free(self) -> int:
        """Room for short tasks queued beyond its slots (``QUEUE_PER_SLOT`` per slot)."""
        if self.blacklisted or not self.queue:
            return 0
        return max(0, (1 + QUEUE_PER_SLOT) * self.slots - self.busy)


@dataclass(frozen=True)
class SchedulerSettings:
    stall_timeout_s: float = 5.0
    # speculative execution: a task still running when its stage is `speculation_quantile`
    # done, and for longer than `speculation_multiplier` times the stage's median task (and
    # `speculation_min_s`), gets a backup attempt on another node with a free slot
    speculation: bool = True
    speculation_quantile: float = 0.75
    speculation_multiplier: float = 1.5
    speculation_min_s: float = 0.5

    def __post_init__(self):
        if self.stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be positive")
        if not 0 < self.speculation_quantile <= 1 or self.speculation_multiplier < 1:
            raise ValueError("speculation_quantile must be in (0, 1] and the multiplier >= 1")


_HANDLERS: dict = {}  # event type -> Scheduler._on's handler for it, looked up once


class Scheduler:
    """Jobs and tasks of the whole cluster; one mutating entry point, ``step``."""

    def __init__(self, settings: SchedulerSettings | None = None):
        self.settings = settings or SchedulerSettings()
        self.jobs: dict[str, Job] = {}
        self.nodes: dict[str, Node] = {}
        self.blacklist: set[str] = set()
        self.released = 0  # tasks reported done, not finished yet
        self._speculated_at = float("-inf")
        self._now = 0.0
        self._out: list = []

    def step(self, now: float, event) -> list:
        """Apply one event at time ``now``; return the actions to carry out, in order."""
        self._now = now
        self._out = []
        handler = _HANDLERS.get(type(event))
        if handler is None:  # singledispatchmethod makes a new bound function at every call
            handler = _HANDLERS[type(event)] = \
                Scheduler.__dict__["_on"].dispatcher.dispatch(type(event))
        handler(self, event)
        self._dispatch()
        out, self._out = self._out, []
        return out

    # -- event handlers --

    @singledispatchmethod
    def _on(self, event):
        raise TypeError(f"unknown scheduler event {type(event).__name__}")

    @_on.register
    def _(self, ev: JobSubmitted):
        job = Job(ev.job, ev, self._now, stages=ev.stages(), hold=ev.hold)
        self.jobs[ev.job] = job
        name, grouping = job.stages[0]
        labels = list(ev.input_labels) or [0] * len(ev.inputs)
        groups = _group(grouping, [(inp, int(lab), None) for inp, lab in zip(ev.inputs, labels)])
        self._make_stage(job, groups)
        self._fact(job, "job_submitted", f"{len(job.tasks)} {name} tasks")
        self._advance(job)

    @_on.register
    def _(self, ev: NodeSlots):
        node = self.nodes.setdefault(ev.node, Node(ev.node))
        node.slots, node.queue = ev.slots, ev.queue
        node.blacklisted = ev.node in self.blacklist

    @_on.register
    def _(self, ev: NodeLost):
        self.nodes.pop(ev.node, None)  # unknown nodes too: a journal replay names dead nodes
        for job in self._active_jobs():
            for task in [t for t in job.tasks.values() if t.state == RUNNING]:
                if task.backup == ev.node:
                    task.backup = None  # its node is gone: nothing to cancel or give back
                elif task.node == ev.node and task.backup:
                    self._promote_backup(job, task, "node_lost")
                elif task.node == ev.node:
                    self._requeue(job, task, "node_lost")
            # a re-queued task makes its producers' outputs needed again: to a fixed point
            while True:
                lost = [t for t in job.tasks.values() if t.node == ev.node and t.state == DONE
                        and self._still_needed(job, t)]
                if not lost:
                    break
                for task in lost:
                    self._requeue(job, task, "output_lost")

    @_on.register
    def _(self, ev: TaskFinished):
        job, task = self._attempt(ev.task, ev.node)
        if task is None:
            return
        if not task.released:  # finished without a report first (a local replay)
            job.took(task.stage_no, self._now - task.started)
        self._release(task)
        task.state, task.outputs = DONE, list(ev.outputs)
        self._fact(job, "task_done", f"{task.id} done", task)
        self._advance(job)

    @_on.register
    def _(self, ev: TaskReported):
        job, task = self._attempt(ev.task, ev.node)
        if task is not None and not task.released:
            job.took(task.stage_no, self._now - task.started)
            self._release(task)
            task.released = True
            self.released += 1

    @_on.register
    def _(self, ev: TaskFailed):
        job, task = self._running_task(ev.task, ev.node)
        if task is None:
            job, task = self._running_task_backup(ev.task, ev.node)
            if task is not None:  # a backup attempt failed: the task itself runs on
                self._drop_backup(task, cancel=False)
                task.failed_on.add(ev.node)  # no attempt counted; no backup there again
                self._fact(job, "task_backup_failed", f"{task.id} backup on {ev.node} "
                           f"failed: {ev.error}", task)
            return
        if task.backup and ev.retryable:
            # the primary attempt failed while a backup runs: the backup carries on alone
            task.attempts += 1
            task.failed_on.add(ev.node)
            self._fact(job, "task_failed", f"{task.id} failed (attempt {task.attempts}): "
                       f"{ev.error}; its backup on {task.backup} goes on", task)
            self._promote_backup(job, task, "failed")
            return
        self._release(task)
        task.attempts += 1
        task.failed_on.add(ev.node)
        self._fact(job, "task_failed", f"{task.id} failed (attempt {task.attempts}): {ev.error}", task)
        task.state, task.node = PENDING, None  # before _fail, which cancels what is running
        limit = job.spec.max_failures
        # nodes it may still be tried on: a suspect member (no slots for now) counts too
        untried = [n for n in self.nodes.values() if not n.blacklisted
                   and n.name not in task.failed_on]
        if ev.elsewhere and ev.retryable and not untried:
            # what failed is the node's (a path it lacks); every node that could run it has
            # failed the same way, so no retry can help: say so now, not after `limit` tries
            tried = ", ".join(sorted(task.failed_on))
            self._fail(job, f"{ev.error} (on every node that could run it: {tried})",
                       task=task, traceback=ev.traceback, node=ev.node)
        elif not ev.retryable or task.attempts >= limit:
            why = ev.error if not ev.retryable else \
                f"{ev.error} (failed {task.attempts} times, limit {limit})"
            self._fail(job, why, task=task, traceback=ev.traceback, node=ev.node)

    @_on.register
    def _(self, ev: TaskRestored):
        job = self.jobs.get(ev.task.rsplit(":", 2)[0])
        if job is None or job.state != ACTIVE:
            return
        task = job.tasks.get(ev.task)
        if task is None:  # a later stage, not made yet: applied when it is
            job.restored[ev.task] = (ev.node, list(ev.outputs))
            return
        if task.state == DONE:
            return
        if task.state == RUNNING:
            self._release(task)
        task.state, task.node, task.outputs = DONE, ev.node, list(ev.outputs)
        self._fact(job, "task_restored", f"{task.id} done on {ev.node} (from the journal)", task)
        self._advance(job)

    @_on.register
    def _(self, ev: InputLost):
        job, task = self._running_task(ev.task, ev.node)
        if task is None:
            job, task = self._running_task_backup(ev.task, ev.node)
            if task is not None:
                self._drop_backup(task, cancel=False)
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
    def _(self, ev: ReleaseJob):
        job = self.jobs.get(ev.job)
        if job is not None and job.state == ACTIVE:
            job.hold = False
            self._advance(job)

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

    def _make_stage(self, job: Job, groups: list) -> None:
        """Make the tasks of stage ``job.made`` from its groups (see ``_group``)."""
        stage_no = job.made
        name, grouping = job.stages[stage_no]
        job.made += 1
        for index, label, host, members in groups:
            task = Task(f"{job.name}:{name}:{index}", job.name, name, index,
                        [url for url, _, _ in members], label, stage_no=stage_no,
                        grouping=grouping, host=host,
                        labels=[lab for _, lab, _ in members],
                        sources=[(pid, lab) for _, lab, pid in members if pid is not None])
            job.adopt(task)
            for pid in task.producers():
                job.consumers.setdefault(pid, []).append(task.id)
        for task_id in [t for t in job.restored if t in job.tasks]:
            node, outputs = job.restored.pop(task_id)
            task = job.tasks[task_id]
            task.state, task.node, task.outputs = DONE, node, outputs
            self._fact(job, "task_restored", f"{task.id} done on {node} (from the journal)", task)

    def _advance(self, job: Job) -> None:
        """Make the next stage when every task so far is done; end the job after the last."""
        while job.state == ACTIVE and job.all_done():
            if job.made == len(job.stages):
                if not job.hold:
                    self._finish(job)
                return
            previous = job.stages[job.made - 1][0] if job.made else None
            outputs = [(o["url"], int(o["label"]), t.id)
                       for t in sorted(job.tasks.values(), key=lambda t: t.index)
                       if t.stage_no == job.made - 1 for o in sorted(
                           t.outputs, key=lambda o: int(o["label"]))]
            name, grouping = job.stages[job.made]
            groups = _group(grouping, outputs)
            self._make_stage(job, groups)
            if previous is not None:
                self._fact(job, "stage_done", f"{previous} done; {len(groups)} {name} tasks",
                           stage=previous)

    def _running_task(self, task_id: str, node: str):
        job = self.jobs.get(task_id.rsplit(":", 2)[0])
        task = job.tasks.get(task_id) if job else None
        if task is None or task.state != RUNNING or task.node != node or job.state != ACTIVE:
            return job, None  # late or duplicate report: ignore
        return job, task

    def _running_task_backup(self, task_id: str, node: str):
        """The running task whose backup attempt runs on ``node``, if any."""
        job = self.jobs.get(task_id.rsplit(":", 2)[0])
        task = job.tasks.get(task_id) if job else None
        if task is None or task.state != RUNNING or task.backup != node or job.state != ACTIVE:
            return job, None
        return job, task

    def _attempt(self, task_id: str, node: str):
        """The running task that ``node`` reports on, by either attempt. When the backup is
        first, it becomes the task's attempt and the primary is cancelled; when the primary
        is, the backup is. Either way one attempt is left, on ``node``."""
        job, task = self._running_task(task_id, node)
        if task is not None:
            if not task.released:  # how long the node took, for _speculate's view of it
                job.took_on(task.stage_no, node, self._now - task.started)
            if task.backup:
                self._fact(job, "task_backup_lost", f"{task.id} done first on {node}; its "
                           f"backup on {task.backup} is cancelled", task)
                self._drop_backup(task, cancel=True)
            return job, task
        job, task = self._running_task_backup(task_id, node)
        if task is None:
            return job, None
        self._fact(job, "task_backup_won", f"{task.id} done first by its backup on {node}; "
                   f"the attempt on {task.node} is cancelled", task)
        if not task.released:
            self._release(task)
            self._out.append(CancelTask(task.node, task.id))
        task.node, task.backup = node, None
        return job, task

    def _promote_backup(self, job: Job, task: Task, why: str) -> None:
        """The primary attempt is gone (``why``): the backup is the task's attempt now."""
        self._release(task)
        task.node, task.backup, task.started = task.backup, None, self._now
        self._fact(job, "task_backup_promoted", f"{task.id}: {why}; its backup on "
                   f"{task.node} goes on", task)

    def _drop_backup(self, task: Task, cancel: bool) -> None:
        if task.backup is None:
            return
        node = self.nodes.get(task.backup)
        if node is not None:
            node.busy -= 1
        if cancel:
            self._out.append(CancelTask(task.backup, task.id))
        task.backup = None

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
            self._drop_backup(task, cancel=True)
        self._fact(job, "task_requeued", f"{task.id} re-queued: {why} on {task.node}", task)
        task.state, task.node, task.outputs = PENDING, None, []
        for cid in job.consumers.get(task.id, ()):  # they read what it makes: they wait for it
            consumer = job.tasks.get(cid)
            if consumer is not None and consumer.state == RUNNING:
                self._release(consumer)
                self._drop_backup(consumer, cancel=True)
                self._out.append(CancelTask(consumer.node, consumer.id))
                self._fact(job, "task_requeued", f"{cid} re-queued: waits for {task.id}",
                           consumer)
                consumer.state, consumer.node = PENDING, None
        for pid in task.producers():  # what it reads was on a node that is gone: made again
            producer = job.tasks.get(pid)
            if producer is not None and producer.state == DONE and producer.node not in self.nodes:
                self._requeue(job, producer, "output_lost")

    def _still_needed(self, job: Job, task: Task) -> bool:
        if task.stage_no == len(job.stages) - 1:
            # the job's results: needed while it runs, when they live on the node
            return any(isinstance(o["url"], str) and o["url"].startswith(("disco://", "dir://"))
                       for o in task.outputs)
        if job.made <= task.stage_no + 1:
            return True  # the next stage is not made yet
        return any(job.tasks[c].state != DONE for c in job.consumers.get(task.id, ())
                   if c in job.tasks)

    def _finish(self, job: Job) -> None:
        last = len(job.stages) - 1
        results = [o["url"] for t in sorted(job.tasks.values(), key=lambda t: t.index)
                   if t.stage_no == last for o in sorted(t.outputs, key=lambda o: o["label"])]
        job.state = FINISHED
        self._fact(job, "job_done", f"{len(results)} results")
        self._out.append(JobFinished(job.name, results))

    def _fail(self, job: Job, error: str, *, task: Task | None = None, traceback: str = "",
              status: str = FAILED, node: str | None = None) -> None:
        for other in job.tasks.values():
            if other.state == RUNNING:
                self._release(other)
                self._drop_backup(other, cancel=True)
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
        queued = False  # placing short tasks in queues beyond the nodes' slots
        while True:
            nodes = [] if queued else [n for n in self.nodes.values() if n.free() > 0]
            if not nodes:
                queued = True
                nodes = [n for n in self.nodes.values() if n.queue_free() > 0]
                if not nodes:
                    return
            task = self._next_task()
            if task is None:
                break  # free slots and nothing waiting: backups may use them
            job = self.jobs[task.job]
            if queued and not job.short(task.stage_no):
                break  # long tasks wait for a free slot (and might find a better node)
            node = self._place(task, nodes)
            task.state, task.node, task.started = RUNNING, node.name, self._now
            node.busy += 1
            hosts = {task.host} if task.host else _input_nodes(task.inputs)
            where = "" if not hosts else " (input local)" if node.name in hosts else \
                " (input remote)"
            self._fact(job, "task_started", f"{task.id} on {node.name}{where}", task)
            self._out.append(AssignTask(node.name, task.spec()))
        if self.settings.speculation:
            self._speculate()

    def _speculate(self) -> None:
        """Backup attempts for stragglers, on free slots no task is waiting for, on a node the
        task is not on and has not failed on; the first attempt done wins. A straggler is a
        task of a stage at least ``speculation_quantile`` done that has run longer than
        ``speculation_multiplier`` times the stage's median (and ``speculation_min_s``), or a
        task on a node known to be slow (its tasks of the stage took ``speculation_multiplier``
        times the median or more) that by that node's pace has longer left than that: a
        fresh attempt elsewhere is done sooner (LATE's rule). The one with the longest time
        left goes first."""
        st = self.settings
        if self._now - self._speculated_at < SPECULATE_EVERY_S:
            return  # at the tail of a big stage this runs after every event: not that often
        self._speculated_at = self._now
        if not any(n.free() > 0 for n in self.nodes.values()):
            return  # nowhere to run a backup
        late_after = {}  # (job, stage no) -> seconds a task must run to be a straggler
        medians = {}  # (job, stage no) -> the stage's median task seconds
        for job in self._active_jobs():
            if job.hold:
                continue
            for stage_no, took in job.durations.items():
                if len(took) < SPECULATE_MIN_SAMPLES:
                    continue
                median = took[len(took) // 2]  # kept sorted
                medians[job.name, stage_no] = median
                if len(took) >= st.speculation_quantile * job.stage_sizes[stage_no]:
                    late_after[job.name, stage_no] = max(st.speculation_min_s,
                                                         st.speculation_multiplier * median)
        if not medians:
            return
        while True:
            nodes = [n for n in self.nodes.values() if n.free() > 0]
            if not nodes:
                return
            best = None
            for job in self._active_jobs():
                for task in map(job.tasks.get, sorted(job.running_ids)):
                    median = medians.get((job.name, task.stage_no))
                    if median is None or task.backup or task.released:
                        continue
                    ran = self._now - task.started
                    pace = self._slow_pace(job, task, median)
                    left = max(0.0, pace - ran) if pace else 0.0  # by a slow node's pace
                    limit = late_after.get((job.name, task.stage_no))
                    if not (limit is not None and ran >= limit
                            or left > max(st.speculation_min_s, st.speculation_multiplier * median)):
                        continue
                    where = [n for n in nodes if n.name != task.node
                             and n.name not in task.failed_on]
                    if where and (best is None or (left, ran) > best[0]):
                        best = ((left, ran), job, task, where)
            if best is None:
                return
            _, job, task, where = best
            node = min(where, key=lambda n: (n.busy - n.slots, n.name))
            task.backup = node.name
            node.busy += 1
            self._fact(job, "task_backup", f"{task.id} backup on {node.name} (running "
                       f"{self._now - task.started:.1f} s on {task.node})", task)
            self._out.append(AssignTask(node.name, task.spec()))

    def _slow_pace(self, job: Job, task: Task, median: float) -> float | None:
        """The median seconds of the tasks of ``task``'s stage its node finished, if that is
        ``speculation_multiplier`` times the stage's ``median`` or more (a slow node); else
        None."""
        took = job.node_took.get((task.stage_no, task.node))
        if not took:
            return None
        mine = took[len(took) // 2]  # kept sorted
        return mine if mine >= self.settings.speculation_multiplier * median else None

    def _next_task(self) -> Task | None:
        """The next task of the job with the fewest running tasks that has one to run."""
        ready = sorted((j for j in self._active_jobs() if j.by_state[PENDING] > 0
                        and not j.hold),
                       key=lambda j: (j.running(), j.submitted))
        for job in ready:
            task = job.next_pending()
            if task is not None:
                return task
        return None

    def _place(self, task: Task, nodes: list) -> Node:
        hosts = {task.host} if task.host else _input_nodes(task.inputs)
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
                    if task.backup is not None:
                        assert task.backup != task.node, task
                        if task.backup in self.nodes:
                            busy[task.backup] = busy.get(task.backup, 0) + 1
                else:
                    assert not task.released and task.backup is None, task
            if job.state == FINISHED:
                assert all(t.state == DONE for t in job.tasks.values()), job.name
            actual = {PENDING: 0, RUNNING: 0, DONE: 0}
            for task in job.tasks.values():
                actual[task.state] += 1
            assert job.by_state == actual, (job.name, job.by_state, actual)
        for node in self.nodes.values():
            assert node.busy == busy.get(node.name, 0), (node.name, node.busy, busy)
            assert node.busy <= (1 + QUEUE_PER_SLOT) * node.slots or node.blacklisted, node


def _group(grouping: str, inputs: list) -> list:
    """A stage's tasks as ``(index, label, host, members)`` groups, by its grouping, from its
    inputs: ``(url, label, producer id or None)``, in order. ``host`` is the node a node
    grouping's inputs are on (None for inputs on no node). A ``group_label`` task's index is
    its label, so a classic job's reduce ``J:reduce:3`` reads partition 3."""
    if grouping == "split":
        return [(i, label, None, [(url, label, pid)]) for i, (url, label, pid) in enumerate(inputs)]
    if grouping == "group_all":
        return [(0, 0, None, list(inputs))] if inputs else []
    groups: dict = {}
    for item in inputs:
        url, label, _ = item
        host = min(_input_nodes([url]), default=None)
        key = {"group_label": (label, None), "group_node": (0, host),
               "group_node_label": (label, host)}[grouping]
        groups.setdefault(key, []).append(item)
    order = sorted(groups, key=lambda k: (k[0], k[1] or "")) if grouping != "group_node" else \
        sorted(groups, key=lambda k: k[1] or "")
    return [(label if grouping == "group_label" else i, label, host, groups[(label, host)])
            for i, (label, host) in enumerate(order)]


def _input_nodes(inputs: list) -> set:
    """Node names (host:port) that hold any of these inputs, from disco:// URLs."""
    hosts = set()
    for inp in inputs:
        for url in inp if isinstance(inp, (list, tuple)) else [inp]:
            if isinstance(url, str) and url.startswith(("disco://", "dir://")):
                hosts.add(url.split("/", 3)[2])
    return hosts
