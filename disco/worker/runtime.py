"""The worker process: serves one job, running many of its tasks in turn.

Started by the node daemon as ``python -m disco.worker.runtime fd:N WID DATA NODE ADDRESS
PARENT_PID`` (or forked by its zygote), ``N`` being its end of a channel to the daemon
(``mesh.channel``, a socketpair). It says ``WorkerReady`` and then
runs each ``RunTask`` it is given, answering ``TaskDone`` (with its output URLs) or
``TaskFailed`` (with the task's own traceback). The first task binds the worker to its job:
the job pack is loaded once. Prints from task code become ``TaskMessage``s, rate-limited. The
worker exits on ``Shutdown`` or when its daemon is gone.
"""
from __future__ import annotations

import collections
import gc
import os
import sys
import time
import traceback
from pathlib import Path

from disco import log as disco_log
from disco.worker import task as task_mod  # imported before the first task: spares are warm
from disco.worker.classic import worker as _classic  # noqa: F401  every job's load binds its
# names (jobpack.bind_worker_names); imported here, the zygote's workers never compile it
from disco.worker import external_runner
from mesh import message as m
from mesh.channel import Channel, ChannelClosed

POLL_MS = 1000
GC_YOUNG = 20_000  # container allocations between collections of the youngest generation
MESSAGES_PER_S = 20


class EventStream:
    """A text stream that turns printed lines into task messages, at most MESSAGES_PER_S.

    What a process forked by the task (``multiprocessing``) prints is dropped: it shares the
    worker's channel, and its frames would mix with the worker's own."""

    def __init__(self, send):
        self._send, self._part = send, ""
        self.task = ""
        self._window, self._count, self.dropped = 0.0, 0, 0
        self._pid = os.getpid()

    def write(self, text: str) -> int:
        if os.getpid() != self._pid:
            return len(text)
        self._part += text
        *lines, self._part = self._part.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._part and os.getpid() == self._pid:
            self._emit(self._part)
            self._part = ""

    def finish(self) -> None:
        self.flush()
        if self.dropped:
            self._send(m.TaskMessage(task=self.task, msg=f"({self.dropped} more lines not shown)"))
        self.dropped, self._count = 0, 0

    def _emit(self, line: str) -> None:
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
        if self._count >= MESSAGES_PER_S:
            self.dropped += 1
            return
        self._count += 1
        self._send(m.TaskMessage(task=self.task, msg=line[:4096]))

    def isatty(self) -> bool:
        return False


class Worker:
    def __init__(self, channel: str, wid: str, data_dir: str, node: str, address: str,
                 parent: int):
        self.data_dir, self.node, self.address, self.parent = Path(data_dir), node, address, parent
        self.wid = wid
        if not channel.startswith("fd:") or not channel[3:].isdigit():
            raise SystemExit(f"disco.worker.runtime: expected fd:N as the channel, not {channel!r}")
        fd = int(channel[3:])
        os.set_inheritable(fd, False)  # programs a task starts do not get it
        self.channel = Channel.from_fd(fd)
        self.job = None  # a disco.worker.task.JobContext once bound
        self.events = EventStream(self.send)
        disco_log.configure(self.data_dir / "logs" / "workers.jsonl", console=False, node=node,
                            worker=wid)
        self.log = disco_log.get()

    def send(self, msg) -> None:
        self.channel.send(m.encode(msg))

    def serve(self) -> int:
        try:
            return self._serve()
        except ChannelClosed:
            return 0  # the daemon is gone; so are we

    def _serve(self) -> int:
        self.send(m.WorkerReady(worker=self.wid, job="", pid=os.getpid()))
        waiting: collections.deque = collections.deque()  # tasks sent ahead, in order
        channel = self.channel
        while True:
            if not waiting and not channel.poll(POLL_MS):
                if os.getppid() != self.parent:
                    return 0  # the daemon is gone; so are we
                continue
            while channel.poll(0):  # every message here by now, before the next task
                msg = m.decode(channel.recv())
                if isinstance(msg, m.Shutdown):
                    return 0
                if isinstance(msg, m.RunTask):
                    waiting.append(msg.task)
                elif isinstance(msg, m.SkipTask):  # too late (started or done): not answered
                    task = next((t for t in waiting if t["id"] == msg.task), None)
                    if task is not None:
                        waiting.remove(task)
                        self.send(m.TaskSkipped(task=msg.task))
            if waiting:
                self.send(self.run(waiting.popleft()))

    def run(self, task: dict):
        self.events.task = task["id"]
        # one summary line per task (STYLE): the node's task_done, with this worker's id and
        # the task's stats; a worker says only what went wrong
        real = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.events
        try:
            if self.job is None:
                external = external_runner.for_task(self.data_dir, self.address, task)
                if external is not None:  # a Disco job pack: its own program runs the task
                    return external.run(task, self)
                self.job = task_mod.JobContext.load(self.data_dir, task["job"], self.node,
                                                    self.address, task.get("jobpack", ""),
                                                    task.get("jobpack_urls", ()))
            outputs, stats = task_mod.run_task(self.job, task)
            return m.TaskDone(task=task["id"], outputs=outputs, stats=stats)
        except BaseException as exc:  # the user's code may raise anything, SystemExit included
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.log.warning("task_failed", job=task["job"], task=task["id"],
                             stage=task.get("stage"), inputs=len(task.get("inputs", ())),
                             error=_one_line(exc))
            return m.TaskFailed(task=task["id"], error=_one_line(exc),
                                traceback=traceback.format_exc(),
                                retryable=getattr(exc, "retryable", True),
                                elsewhere=bool(getattr(exc, "elsewhere", False)),
                                lost=getattr(exc, "lost_url", ""))
        finally:
            self.events.finish()
            sys.stdout, sys.stderr = real


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def batch_priority() -> None:
    """Run as ``SCHED_BATCH``: a worker woken by its next task no longer preempts its node's
    daemon (which hands out every task and answers every heartbeat); it gets the same share of
    the CPU otherwise."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: the default policy


def fewer_collections() -> None:
    """Run the cyclic garbage collector's young generation every ``GC_YOUNG`` container
    allocations instead of Python's 700: a task makes millions of short-lived tuples and
    lists, and at 700 the collections cost about 6 % of a sort map's instructions (cachegrind;
    at 20,000 they cost 2 %). Garbage in cycles waits a little longer to be freed; nothing
    else changes for the job's code."""
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG:
        gc.set_threshold(GC_YOUNG, middle, old)


def main(argv: list[str]) -> int:
    channel, wid, data_dir, node, address, parent = argv
    batch_priority()
    fewer_collections()
    worker = Worker(channel, wid, data_dir, node, address, int(parent))
    try:
        return worker.serve()
    finally:
        worker.channel.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

