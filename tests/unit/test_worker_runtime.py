"""A real worker process (disco.worker.runtime) fed over its channel as the node feeds it: it
answers every task it is sent, in order, running the ones sent ahead when its task ends and
skipping those the node cancelled before they started."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from disco import jobpack
from mesh import channel as ch
from mesh import message as m
from mesh.datadir import digest_of
from tests.conftest import child_env

pytestmark = pytest.mark.timeout(60)
JOB = "Slow@1"


def _slow_map(entry, params):
    print(f"started {entry}")  # a task_message: the test knows the task runs
    time.sleep(0.3)
    return [(entry, 1)]


def task(i: int, digest: str) -> dict:
    return {"id": f"{JOB}:map:{i}", "job": JOB, "stage": "map", "index": i,
            "inputs": [f"raw://e{i}"], "labels": [0], "label": 0, "grouping": "split",
            "group": [0, None], "final": True, "attempt": 0, "master": "127.0.0.1:1",
            "jobpack": digest, "jobpack_urls": []}


@pytest.fixture
def worker(tmp_path):
    pack = jobpack.build({"inputs": ["raw://e0"], "has_map": True, "has_reduce": False,
                          "partitions": 1}, {"map": _slow_map, "params": None})
    digest = digest_of(pack)
    (tmp_path / "jobpacks").mkdir()
    (tmp_path / "jobpacks" / digest).write_bytes(pack)
    (tmp_path / "logs").mkdir()
    ours, theirs = ch.pair()
    proc = subprocess.Popen([sys.executable, "-m", "disco.worker.runtime",
                             f"fd:{theirs.fileno()}", "w1", str(tmp_path), "n", "127.0.0.1:1",
                             str(os.getpid())], env=child_env(), cwd=tmp_path,
                            pass_fds=(theirs.fileno(),))
    theirs.close()
    end = ch.Channel(ours, blocking=True)
    try:
        assert end.poll(30_000), "the worker never said it was ready"
        ready = m.decode(end.recv())
        assert isinstance(ready, m.WorkerReady) and ready.worker == "w1"
        yield (lambda msg: end.send(m.encode(msg))), end, digest
    finally:
        proc.kill()
        proc.wait()
        end.close()


def started(router, entry: str) -> None:
    """Until the worker says the task reading ``entry`` started (it prints it)."""
    while True:
        assert router.poll(20_000), f"{entry} never started"
        msg = m.decode(router.recv())
        assert isinstance(msg, m.TaskMessage), msg
        if msg.msg == f"started {entry}":
            return


def answers(router, n: int) -> list:
    out = []
    while len(out) < n:
        assert router.poll(20_000), f"no answer after {out}"
        msg = m.decode(router.recv())
        if not isinstance(msg, m.TaskMessage):
            out.append((type(msg).__name__, msg.task))
    return out


def test_a_task_sent_ahead_runs_when_the_first_ends(worker):
    send, router, digest = worker
    send(m.RunTask(task=task(0, digest)))
    started(router, "e0")
    send(m.RunTask(task=task(1, digest)))
    assert answers(router, 2) == [("TaskDone", f"{JOB}:map:0"), ("TaskDone", f"{JOB}:map:1")]


def test_a_task_skipped_while_another_runs_is_answered_skipped_after_it(worker):
    send, router, digest = worker
    send(m.RunTask(task=task(0, digest)))
    started(router, "e0")
    send(m.RunTask(task=task(1, digest)))
    send(m.SkipTask(task=f"{JOB}:map:1"))
    assert answers(router, 2) == [("TaskDone", f"{JOB}:map:0"),
                                  ("TaskSkipped", f"{JOB}:map:1")]
    send(m.RunTask(task=task(2, digest)))  # and it goes on serving
    assert answers(router, 1) == [("TaskDone", f"{JOB}:map:2")]


def test_a_skip_sent_with_its_task_is_answered_whenever_it_is_read(worker):
    send, router, digest = worker
    for msg in (m.RunTask(task=task(0, digest)), m.RunTask(task=task(1, digest)),
                m.SkipTask(task=f"{JOB}:map:1")):
        send(msg)
    got = answers(router, 2)
    assert sorted(got) == [("TaskDone", f"{JOB}:map:0"), ("TaskSkipped", f"{JOB}:map:1")]


def test_a_skip_that_comes_too_late_changes_nothing(worker):
    send, router, digest = worker
    send(m.RunTask(task=task(0, digest)))
    assert answers(router, 1) == [("TaskDone", f"{JOB}:map:0")]
    send(m.SkipTask(task=f"{JOB}:map:0"))  # done already: no answer at all
    send(m.RunTask(task=task(1, digest)))
    assert answers(router, 1) == [("TaskDone", f"{JOB}:map:1")]
