"""Speculative execution on real daemons: a node stopped most of the time gets its tasks
backed up elsewhere, the first attempt done wins, and the output is what a healthy run gives."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from disco.core import Job, Params, result_iterator
from tests.conftest import joined_nodes

pytestmark = pytest.mark.cluster


def spin(entry, params):
    deadline = time.process_time() + params.cpu_s
    while time.process_time() < deadline:
        pass
    yield entry.strip(), 1


@pytest.fixture
def three(tmp_path_factory):
    with joined_nodes(tmp_path_factory, 3, name="spec") as nodes:
        yield nodes


def test_a_stopped_nodes_task_is_backed_up_and_the_output_is_unchanged(three):
    master = three[0].address
    victim = next(n for n in three[1:])
    stop = threading.Event()

    def slow_down():  # the victim runs 10 % of the time
        while not stop.is_set():
            os.killpg(victim.proc.pid, signal.SIGSTOP)
            time.sleep(0.09)
            os.killpg(victim.proc.pid, signal.SIGCONT)
            time.sleep(0.01)

    inputs = [f"raw://t{i}" for i in range(9)]
    thread = threading.Thread(target=slow_down, daemon=True)
    thread.start()
    try:
        job = Job(master=master).run(input=inputs, map=spin, params=Params(cpu_s=0.3))
        results = job.wait(timeout=120)
    finally:
        stop.set()
        thread.join()
        os.killpg(victim.proc.pid, signal.SIGCONT)
    assert sorted(result_iterator(results, ddfs=master)) == sorted((f"t{i}", 1)
                                                                   for i in range(9))
    types = [e["type"] for e in job.event_records()]
    assert "task_backup" in types, types
    assert types.count("task_backup_won") + types.count("task_backup_lost") >= 1
