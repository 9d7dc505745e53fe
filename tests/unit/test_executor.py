"""The executor's bookkeeping (mesh.executor): no more tasks run at once than its slots, the
rest wait in its backlog and go to the first worker free, or, with every slot busy, ahead to
a busy worker of their job (skipped if cancelled before they start). Workers here are stand-ins that
never run: what is checked is which task the executor hands to which worker, and when."""
from __future__ import annotations

from pathlib import Path

import pytest

from mesh import message as m
from mesh.executor import Executor, WorkerProc

pytestmark = pytest.mark.timeout(30)


class _Proc:
    """Stands in for a worker process: alive until told otherwise."""

    def __init__(self, pid: int):
        self.pid, self.code = pid, None

    def poll(self):
        return self.code

    def send_signal(self, sig):
        self.code = -sig


class _Log:
    def bind(self, **kw):
        return self

    def __getattr__(self, name):
        return lambda *a, **kw: None


class Bench:
    def __init__(self, tmp_path: Path, slots: int | None = 2):
        self.sent: list[tuple[bytes, object]] = []
        self.lost: list[tuple[str, str]] = []
        self.ex = Executor(tmp_path, "n", "127.0.0.1:1",
                           lambda wid, msg: self.sent.append((wid, msg)),
                           lambda task, why: self.lost.append((task["id"], why)),
                           _Log(), spare=0, slots=slots)
        self.spawned: list[bytes] = []
        self.ex._spawn = self._spawn  # no processes: the bookkeeping is what is tested

    def _spawn(self, job: str) -> WorkerProc:
        wid = f"w{len(self.spawned)}".encode()
        self.spawned.append(wid)
        worker = self.ex.workers[wid] = WorkerProc(wid, _Proc(100 + len(self.spawned)), job=job)
        return worker

    def ready(self, wid: bytes) -> None:
        self.ex.on_message(wid, m.WorkerReady(worker=wid.decode(), job="", pid=1), 0.0)

    def done(self, wid: bytes, task: str):
        return self.ex.on_message(wid, m.TaskDone(task=task, outputs=[]), 0.0)

    def runs(self) -> list[tuple[bytes, str]]:
        out = [(wid, msg.task["id"]) for wid, msg in self.sent if isinstance(msg, m.RunTask)]
        self.sent.clear()
        return out

    def skips(self) -> list[tuple[bytes, str]]:
        return [(wid, msg.task) for wid, msg in self.sent if isinstance(msg, m.SkipTask)]


def task(i: int, job: str = "j") -> dict:
    return {"id": f"{job}:map:{i}", "job": job, "stage": "map"}


def one_running_one_ahead(tmp_path) -> Bench:
    """One slot, its worker up: j:map:0 runs on w0, j:map:1 is sent ahead to it."""
    b = Bench(tmp_path, slots=1)
    b.ex.assign(task(0))
    b.ex.assign(task(1))
    b.ready(b"w0")
    return b


def test_no_more_tasks_run_at_once_than_slots_the_rest_go_ahead_to_busy_workers(tmp_path):
    b = Bench(tmp_path)
    for i in range(5):
        b.ex.assign(task(i))
    assert b.spawned == [b"w0", b"w1"]  # two workers for two slots, not five
    b.ready(b"w0")
    b.ready(b"w1")
    # each runs one and has one more sent ahead, which it starts when its task ends
    assert b.runs() == [(b"w0", "j:map:0"), (b"w1", "j:map:1"), (b"w0", "j:map:2"),
                        (b"w1", "j:map:3")]
    assert [t["id"] for t in b.ex.backlog] == ["j:map:4"]
    assert sorted(b.ex.task_ids()) == [f"j:map:{i}" for i in range(5)]
    report = b.done(b"w1", "j:map:1")
    assert report.kind == "done" and report.task["id"] == "j:map:1"
    assert b.ex.task_of(b"w1")["id"] == "j:map:3"  # the one sent ahead runs now
    assert b.runs() == [(b"w1", "j:map:4")] and not b.ex.backlog  # and the next goes ahead
    assert b.done(b"w1", "j:map:4") is None  # not what it runs: ignored
    assert b.done(b"w0", "j:map:0").task["id"] == "j:map:0"
    assert b.done(b"w0", "j:map:2").task["id"] == "j:map:2"
    assert b.ex.task_of(b"w0") is None and b.runs() == []
    assert b.spawned == [b"w0", b"w1"]


def test_tasks_go_ahead_only_when_every_slot_is_busy(tmp_path):
    b = Bench(tmp_path, slots=2)
    b.ex.assign(task(0))
    b.ex.assign(task(1))
    b.ready(b"w0")
    assert b.runs() == [(b"w0", "j:map:0")]  # w1 comes up for the other: no send-ahead
    b.ready(b"w1")
    assert b.runs() == [(b"w1", "j:map:1")]


def test_a_task_sent_ahead_and_cancelled_is_skipped_or_its_worker_let_go(tmp_path):
    """A skip the worker has answered clears the task; one still unanswered when the worker
    reaches that task cannot say whether it started it, and a cancelled task must not hold a
    slot: the worker is killed and another takes the next task."""
    b = one_running_one_ahead(tmp_path)
    assert b.runs() == [(b"w0", "j:map:0"), (b"w0", "j:map:1")]
    b.ex.cancel("j:map:1")
    assert b.skips() == [(b"w0", "j:map:1")]
    assert b.ex.task_ids() == ["j:map:0"]
    assert b.done(b"w0", "j:map:0").task["id"] == "j:map:0"
    w0 = b.ex.workers[b"w0"]
    assert w0.dying and w0.task is None and w0.popen.code is not None  # killed
    assert b.ex.task_of(b"w0") is None
    assert b.ex.on_message(b"w0", m.TaskSkipped(task="j:map:1"), 0.0) is None
    b.ex.assign(task(2))
    assert b.spawned == [b"w0", b"w1"]
    b.ready(b"w1")
    assert b.runs()[-1] == (b"w1", "j:map:2")


def test_a_skip_for_a_task_not_cancelled_changes_nothing(tmp_path):
    b = one_running_one_ahead(tmp_path)
    assert b.ex.on_message(b"w0", m.TaskSkipped(task="j:map:1"), 0.0) is None
    assert b.ex.workers[b"w0"].next["id"] == "j:map:1"
    assert b.done(b"w0", "j:map:0").task["id"] == "j:map:0"
    assert b.done(b"w0", "j:map:1").task["id"] == "j:map:1"


def test_a_skip_answered_before_the_running_task_ends_clears_the_task_sent_ahead(tmp_path):
    """The worker reads every message before it starts a task, so it may skip the task sent
    ahead (and say so) before it answers for the one it was given first."""
    b = one_running_one_ahead(tmp_path)
    b.ex.cancel("j:map:1")
    assert b.ex.on_message(b"w0", m.TaskSkipped(task="j:map:1"), 0.0) is None
    assert b.done(b"w0", "j:map:0").task["id"] == "j:map:0"
    assert b.ex.workers[b"w0"].task is None  # free for the next one
    b.ex.assign(task(2))
    assert b.runs()[-1] == (b"w0", "j:map:2")


def test_a_cancelled_task_the_worker_ran_anyway_is_not_reported(tmp_path):
    b = one_running_one_ahead(tmp_path)
    b.ex.cancel("j:map:1")
    b.done(b"w0", "j:map:0")
    assert b.done(b"w0", "j:map:1") is None  # the skip came too late: ran, not reported
    assert b.ex.workers[b"w0"].task is None


def test_cancelling_the_running_task_puts_the_one_sent_ahead_back(tmp_path):
    b = one_running_one_ahead(tmp_path)
    b.runs()
    b.ex.cancel("j:map:0")  # its worker is killed, with j:map:1 sent ahead to it
    assert b.spawned == [b"w0", b"w1"] and [t["id"] for t in b.ex.backlog] == ["j:map:1"]
    b.ready(b"w1")
    assert b.runs() == [(b"w1", "j:map:1")]


def test_a_worker_that_dies_with_a_task_sent_ahead_gives_that_task_back(tmp_path):
    b = one_running_one_ahead(tmp_path)
    b.runs()
    b.ex.workers[b"w0"].popen.code = -9
    b.ex.tick(0.0)
    assert b.lost == [("j:map:0", "worker process died (signal 9)")]  # not j:map:1
    b.ready(b"w1")
    assert b.runs() == [(b"w1", "j:map:1")]


def test_a_busy_worker_of_an_ended_job_is_retired_once_idle(tmp_path):
    b = Bench(tmp_path, slots=1)
    b.ex.assign(task(0))
    b.ready(b"w0")
    b.runs()
    b.ex.job_ended("j")
    assert not [x for x in b.sent if isinstance(x[1], m.Shutdown)]
    b.done(b"w0", "j:map:0")
    assert [wid for wid, msg in b.sent if isinstance(msg, m.Shutdown)] == [b"w0"]


def test_a_cancelled_waiting_task_leaves_the_backlog(tmp_path):
    b = Bench(tmp_path, slots=1)
    b.ex.assign(task(0))
    b.ex.assign(task(1))
    b.ex.cancel("j:map:1")  # before any worker is up: it was still waiting
    b.ready(b"w0")
    b.done(b"w0", "j:map:0")
    assert b.runs() == [(b"w0", "j:map:0")] and not b.ex.backlog


def test_a_worker_that_dies_fails_its_task_and_a_new_one_takes_the_waiting_ones(tmp_path):
    b = one_running_one_ahead(tmp_path)
    b.runs()
    b.ex.workers[b"w0"].popen.code = -9
    b.ex.tick(0.0)
    assert b.lost == [("j:map:0", "worker process died (signal 9)")]
    assert b.spawned == [b"w0", b"w1"]
    b.ready(b"w1")
    assert b.runs() == [(b"w1", "j:map:1")]


def test_a_waiting_task_of_another_job_gets_a_worker_of_its_own_when_a_slot_frees(tmp_path):
    b = Bench(tmp_path, slots=1)
    b.ex.assign(task(0, "a"))
    b.ex.assign(task(0, "b"))
    assert b.spawned == [b"w0"]
    b.ready(b"w0")
    assert b.runs() == [(b"w0", "a:map:0")]
    b.done(b"w0", "a:map:0")  # w0 serves job a only: job b's task needs a worker of its own
    assert b.spawned == [b"w0", b"w1"] and b.runs() == []
    b.ready(b"w1")
    assert b.runs() == [(b"w1", "b:map:0")]


def test_without_a_slot_count_every_task_gets_a_worker(tmp_path):
    b = Bench(tmp_path, slots=None)
    for i in range(3):
        b.ex.assign(task(i))
    assert b.spawned == [b"w0", b"w1", b"w2"]
