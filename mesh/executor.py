"""The node's side of running tasks: worker processes it starts, feeds and supervises.

A worker serves one job and runs many of its tasks in turn (ARCHITECTURE "Processes"). Workers
are forked by the node's zygote (``disco.worker.zygote``: one process that imported everything
once), so a new worker is ready in milliseconds rather than after an interpreter start; should
the zygote be gone, a worker is started as its own interpreter. Each worker talks to the node
over its own channel (``mesh.channel``: a socketpair, the worker's end handed to it as it
starts), which the daemon polls. The executor also keeps ``spare`` warm workers not yet bound
to a job. A worker that dies fails the task it was running, never the daemon.

Worker states: starting -> idle -> busy -> idle ... -> stopping. A worker is bound to a job by
the first task it is given.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mesh import channel as ch
from mesh import log as mesh_log
from mesh import message as m
from mesh.event import LocalReport

from mesh.spawner import (  # noqa: F401 - names of this module before they moved
    _ROOT, MAX_ZYGOTE_RESTARTS, SPAWN_TIMEOUT_S, Forked, Zygote, _pid_alive, _signal_quietly,
    package_root, worker_env, zygote_for)


@dataclass
class WorkerProc:
    wid: bytes
    popen: object  # subprocess.Popen, or Forked by the zygote
    job: str = ""
    task: dict | None = None
    ready: bool = False
    idle_since: float = 0.0
    dying: bool = False  # cancelled or retired: never handed a task again
    next: dict | None = None  # a task sent ahead: the worker starts it when ``task`` ends
    next_cancelled: bool = False  # and ``SkipTask`` was sent for it
    retire: bool = False  # its job ended while it was busy: retired once idle
    channel: "ch.Channel | None" = None  # the node's end of the worker's channel


class Executor:
    """Runs assigned tasks; reports through ``send(wid, msg)`` and ``report(event)`` callbacks."""

    def __init__(self, data_dir: Path, node: str, address: str, send, report,
                 log, spare: int = 1, idle_timeout_s: float = 30.0, slots: int | None = None,
                 zygote: Zygote | None = None):
        self.data_dir, self.node, self.address = data_dir, node, address
        self._send, self._report, self.log = send, report, log
        self.spare, self.idle_timeout_s = spare, idle_timeout_s
        self.slots = slots  # tasks run at once; more wait in the backlog (None: no limit)
        self.workers: dict[bytes, WorkerProc] = {}
        self.backlog: list[dict] = []  # tasks waiting for a worker to become ready
        self.stopping = False
        self.fetched_bytes = 0  # what its workers read from other nodes (shuffle bytes in)
        self._env = worker_env(os.environ)
        # ``zygote``: one started already for this node (``mesh.spawner.start_early``)
        self.zygote = zygote or zygote_for(self.data_dir, self.node, self.address)

    # -- from the master --

    def assign(self, task: dict) -> None:
        """Run ``task`` now if a slot is free, else when one is (the master queues short
        tasks beyond the slots, so each slot's next task is here when its last one ends)."""
        self.backlog.append(task)
        self._feed()

    def _feed(self) -> None:
        """Waiting tasks go, oldest first, to idle workers of their job (or spare ones) while
        fewer than ``slots`` tasks run; workers are started for those no idle worker takes,
        no more than there is room for."""
        room = self._room()
        i = 0
        while room > 0 and i < len(self.backlog):
            task = self.backlog[i]
            worker = self._idle_worker(task["job"]) or self._idle_worker("")
            if worker is None:
                i += 1
                continue
            del self.backlog[i]
            self._start(worker, task)
            room -= 1
        starting = sum(1 for w in self.workers.values()
                       if not w.ready and not w.dying and w.task is None)
        for job in dict.fromkeys(t["job"] for t in self.backlog):
            if starting >= room:
                break
            if self._starting(job) < sum(t["job"] == job for t in self.backlog):
                self._spawn(job=job)  # only as many as there are tasks to take
                starting += 1
        if room > 0 or not self.backlog:
            return
        # every slot busy: a waiting task goes ahead to a busy worker of its job, which
        # starts it when its task ends, without waiting for this loop to hear of it
        for worker in self.workers.values():
            if worker.task is None or worker.next is not None or worker.dying \
                    or worker.retire or not worker.ready:
                continue
            task = next((t for t in self.backlog if t["job"] == worker.job), None)
            if task is not None:
                self.backlog.remove(task)
                worker.next, worker.next_cancelled = task, False
                self._send(worker.wid, m.RunTask(task=task))

    def _room(self) -> int:
        if self.slots is None:
            return len(self.backlog)
        return self.slots - sum(1 for w in self.workers.values() if w.task is not None)

    def _starting(self, job: str) -> int:
        """Workers on their way up that will take one of ``job``'s waiting tasks."""
        return sum(1 for w in self.workers.values()
                   if not w.ready and not w.dying and w.task is None and w.job in (job, ""))

    def cancel(self, task_id: str) -> None:
        self.backlog = [t for t in self.backlog if t["id"] != task_id]
        for worker in list(self.workers.values()):
            if worker.next and worker.next["id"] == task_id and not worker.next_cancelled:
                worker.next_cancelled = True  # the worker answers it skipped (or ran) it
                self._send(worker.wid, m.SkipTask(task=task_id))
            elif worker.task and worker.task["id"] == task_id:
                self._take_back_next(worker)
                self._let_go(worker)
        self._feed()  # a slot it held is free

    def _let_go(self, worker: WorkerProc) -> None:
        """Kill a worker whose task is cancelled: its death is not a task failure, and it is
        given nothing more."""
        worker.task, worker.ready, worker.dying = None, False, True
        self._kill(worker)

    def _take_back_next(self, worker: WorkerProc) -> None:
        """A worker that will not live to run the task sent ahead to it: the task waits again."""
        if worker.next is not None and not worker.next_cancelled:
            self.backlog.insert(0, worker.next)
        worker.next, worker.next_cancelled = None, False

    def job_ended(self, job: str) -> None:
        self.backlog = [t for t in self.backlog if t["job"] != job]
        for worker in list(self.workers.values()):
            if worker.job != job:
                continue
            if worker.task is None:
                self._retire(worker)
            else:
                worker.retire = True

    # -- from workers --

    def on_ready(self, wid: bytes, now: float) -> None:
        worker = self.workers.get(wid)
        if worker is None:
            return
        worker.ready, worker.idle_since = True, now
        self._feed()

    def on_message(self, wid: bytes, msg, now: float):
        """A worker's message: the ``LocalReport`` it makes for the node core, if any."""
        if isinstance(msg, m.WorkerReady):
            self.on_ready(wid, now)
        elif isinstance(msg, m.TaskMessage):
            task = self.task_of(wid)
            return LocalReport(task, "message", {"msg": msg.msg}) if task else None
        elif isinstance(msg, (m.TaskDone, m.TaskFailed, m.TaskSkipped)):
            task = self.on_task_end(wid, msg.task, now)
            if task is None or isinstance(msg, m.TaskSkipped):
                return None
            where = {"job": task["job"], "task": msg.task, "stage": task["stage"],
                     "worker": wid.decode(errors="replace")}  # one dict: no bound logger a task
            if isinstance(msg, m.TaskDone):
                fetched = msg.stats.get("fetched_bytes", 0)
                if isinstance(fetched, int) and fetched > 0:
                    self.fetched_bytes += fetched
                self.log.info("task_done", **where, outputs=len(msg.outputs),
                              **{k: v for k, v in msg.stats.items() if isinstance(v, (int, float))
                                 and k != "outputs" and k not in where})
                return LocalReport(task, "done", {"outputs": list(msg.outputs)})
            self.log.warning("task_failed", **where, error=msg.error, lost=msg.lost or None)
            return LocalReport(task, "failed", {"error": msg.error, "traceback": msg.traceback,
                                                "retryable": msg.retryable, "lost": msg.lost,
                                                "elsewhere": msg.elsewhere})
        return None

    def on_task_end(self, wid: bytes, task_id: str, now: float) -> dict | None:
        """The worker answered for its task ``task_id`` and goes on with the one sent ahead,
        if any; returns the task answered for (None if it is not what the worker runs: a
        cancelled one's worker was let go)."""
        worker = self.workers.get(wid)
        if worker is not None and worker.next is not None and worker.next_cancelled \
                and worker.next["id"] == task_id:
            worker.next, worker.next_cancelled = None, False  # skipped before it started
            return None
        if worker is None or worker.task is None or worker.task["id"] != task_id:
            return None  # unknown, cancelled and being killed, or not what it runs
        task, worker.task, cancelled_next = worker.task, worker.next, worker.next_cancelled
        worker.next, worker.next_cancelled = None, False
        worker.idle_since = now
        if cancelled_next:
            # it starts the cancelled task sent ahead unless our skip came first: whether it
            # did cannot be known, and a cancelled task must not hold a slot
            self._let_go(worker)
        elif worker.task is None and worker.retire:
            self._retire(worker)
        self._feed()
        return task

    def channels(self) -> dict[int, "WorkerProc"]:
        """Each live worker channel's fd and its worker, for the daemon to poll."""
        return {w.channel.fd: w for w in self.workers.values()
                if w.channel is not None and not w.channel.closed}

    def task_of(self, wid: bytes) -> dict | None:
        worker = self.workers.get(wid)
        return worker.task if worker else None

    # -- housekeeping, once per loop turn --

    def tick(self, now: float) -> None:
        for worker in list(self.workers.values()):
            code = worker.popen.poll()
            if code is not None:
                self._buried(worker, code)
            elif (worker.ready and worker.task is None and worker.job
                  and now - worker.idle_since > self.idle_timeout_s):
                self._retire(worker)
        self._top_up_spares()

    def _top_up_spares(self) -> None:
        generic = sum(1 for w in self.workers.values() if not w.job and not w.dying)
        if not self.stopping and generic < self.spare:
            self._spawn(job="")

    def task_ids(self) -> list[str]:
        """Every task this node holds, running or waiting for a worker."""
        return [w.task["id"] for w in self.workers.values() if w.task is not None] + \
            [w.next["id"] for w in self.workers.values()
             if w.next is not None and not w.next_cancelled] + \
            [t["id"] for t in self.backlog]

    def stop(self, grace_s: float = 5.0) -> None:
        self.stopping = True
        for worker in self.workers.values():
            self._kill(worker, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for worker in self.workers.values():
            try:
                worker.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._kill(worker)
                worker.popen.wait()
            if worker.channel is not None:
                worker.channel.close()
        self.workers.clear()
        self.zygote.stop()

    # -- helpers --

    def _idle_worker(self, job: str) -> WorkerProc | None:
        return next((w for w in self.workers.values()
                     if w.ready and w.task is None and w.job == job), None)

    def _start(self, worker: WorkerProc, task: dict) -> None:
        spare = not worker.job
        worker.job, worker.task = task["job"], task
        self._send(worker.wid, m.RunTask(task=task))
        if spare:
            self._top_up_spares()  # the next job finds a warm spare too

    def _spawn(self, job: str) -> WorkerProc:
        wid = uuid.uuid4().hex[:12].encode()
        log_path = self.data_dir / "logs" / "workers.log"
        limit, keep = mesh_log._limits()
        try:
            if log_path.stat().st_size >= limit:  # workers' raw output: rotated at a spawn
                mesh_log.rotate(log_path, keep)
        except OSError:
            pass
        ours, theirs = ch.pair()
        try:
            popen = self.zygote.spawn(wid.decode(), theirs.fileno())
            if popen is None:  # no zygote: an interpreter of its own
                argv = [sys.executable, "-m", "disco.worker.runtime", f"fd:{theirs.fileno()}",
                        wid.decode(), str(self.data_dir), self.node, self.address,
                        str(os.getpid())]
                with open(log_path, "ab") as err:
                    popen = subprocess.Popen(argv, env=self._env, stdin=subprocess.DEVNULL,
                                             stdout=err, stderr=err, cwd=self.data_dir,
                                             pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker's (or the zygote's) copy is what keeps it open
        worker = WorkerProc(wid, popen, job=job, channel=ch.Channel(ours))
        self.workers[wid] = worker
        self.log.debug("worker_spawned", worker=wid.decode(), job=job or None)
        return worker

    def _buried(self, worker: WorkerProc, code: int) -> None:
        del self.workers[worker.wid]
        if worker.channel is not None:
            worker.channel.close()
        self._take_back_next(worker)
        if isinstance(worker.popen, Forked):
            self.zygote.forget(worker.popen.wid, worker.popen.pid)
        if worker.task is not None and not self.stopping:
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            self.log.warning("worker_died", worker=worker.wid.decode(), how=how,
                             task=worker.task["id"])
            self._report(worker.task, f"worker process died ({how})")
        if not self.stopping:
            self._feed()  # a worker for its job's waiting tasks, if none is left

    def _retire(self, worker: WorkerProc) -> None:
        self._send(worker.wid, m.Shutdown(reason="idle"))
        worker.ready, worker.dying = False, True  # it will exit; tick() buries it

    def _kill(self, worker: WorkerProc, sig: int = signal.SIGKILL) -> None:
        try:
            worker.popen.send_signal(sig)
        except ProcessLookupError:
            pass
