"""The scheduler core's pipeline model: groupings, producers holding consumers back, lineage,
restored tasks of stages not made yet, and failures that no retry on another node can help."""
from __future__ import annotations

import pytest

from scheduler.core import (DONE, PENDING, NodeBlacklisted, RUNNING, AssignTask, CancelTask, JobFailed,
                            JobFinished, JobSubmitted, NodeLost, NodeSlots, TaskFailed,
                            TaskFinished, TaskRestored, _group)
from tests.unit.test_scheduler import Run, assigned, of

PIPE = (("a", "split"), ("b", "group_node"), ("c", "group_all"))


def out(node, task, label=0):
    return {"label": label, "url": f"disco://{node}/{task}-{label}", "size": 1}


def finish(run, task, node, *labels):
    return run(TaskFinished(task, node, [out(node, task, lb) for lb in labels or (0,)]))


@pytest.mark.parametrize("grouping,expected", [
    ("split", [(0, 0, None, 1), (1, 1, None, 1), (2, 0, None, 1), (3, 1, None, 1)]),
    ("group_label", [(0, 0, None, 2), (1, 1, None, 2)]),
    ("group_node", [(0, 0, "n1:1", 2), (1, 0, "n2:1", 2)]),
    ("group_node_label", [(0, 0, "n1:1", 1), (1, 0, "n2:1", 1), (2, 1, "n1:1", 1),
                          (3, 1, "n2:1", 1)]),
    ("group_all", [(0, 0, None, 4)]),
])
def test_groupings(grouping, expected):
    inputs = [("disco://n1:1/x-0", 0, "j:a:0"), ("disco://n1:1/x-1", 1, "j:a:0"),
              ("disco://n2:1/y-0", 0, "j:a:1"), ("disco://n2:1/y-1", 1, "j:a:1")]
    got = [(i, label, host, len(members)) for i, label, host, members in _group(grouping, inputs)]
    assert got == expected
    assert _group(grouping, []) == []


def test_three_stages_run_in_order_node_groups_on_their_node():
    run = Run()
    run(NodeSlots("n1:1", 2))
    run(NodeSlots("n2:1", 2))
    acts = run(JobSubmitted("j", ["raw://1", "raw://2", "raw://3"], pipeline=PIPE))
    assert sorted(t for _, t in assigned(acts)) == ["j:a:0", "j:a:1", "j:a:2"]
    finish(run, "j:a:0", "n1:1")
    finish(run, "j:a:1", "n2:1")
    acts = finish(run, "j:a:2", "n1:1")
    # one b task per node holding a's outputs, placed on that node
    assert sorted(assigned(acts)) == [("n1:1", "j:b:0"), ("n2:1", "j:b:1")]
    spec = {a.task["id"]: a.task for a in of(acts, AssignTask)}
    assert spec["j:b:0"]["inputs"] == ["disco://n1:1/j:a:0-0", "disco://n1:1/j:a:2-0"]
    assert spec["j:b:0"]["grouping"] == "group_node" and spec["j:b:0"]["final"] is False
    finish(run, "j:b:0", "n1:1")
    acts = finish(run, "j:b:1", "n2:1")
    [(where, task)] = assigned(acts)
    assert task == "j:c:0"
    acts = finish(run, "j:c:0", where)
    assert of(acts, JobFinished) == [JobFinished("j", [f"disco://{where}/j:c:0-0"])]


def test_a_lost_producer_holds_its_pending_consumer_and_cancels_a_running_one():
    run = Run()
    run(NodeSlots("n1:1", 1))
    run(NodeSlots("n2:1", 1))
    run(JobSubmitted("j", ["raw://1", "raw://2"], pipeline=(("a", "split"), ("b", "group_label"))))
    finish(run, "j:a:0", "n1:1", 0, 1)
    acts = finish(run, "j:a:1", "n2:1", 0, 1)
    assert sorted(assigned(acts)) == [("n1:1", "j:b:0"), ("n2:1", "j:b:1")]
    finish(run, "j:b:1", "n2:1")  # label 1 done (its output on n2), label 0 runs on n1
    job = run.s.jobs["j"]
    acts = run(NodeLost("n1:1"))
    # b:0 ran on n1 (node lost); a:0's output on n1 is needed by b:0 again: made again on n2
    assert job.tasks["j:a:0"].state == RUNNING and job.tasks["j:a:0"].node == "n2:1"
    assert job.tasks["j:b:0"].state == PENDING
    assert job.tasks["j:b:1"].state == DONE  # its inputs were read already: kept
    acts = finish(run, "j:a:0", "n2:1", 0, 1)
    spec = {a.task["id"]: a.task for a in of(acts, AssignTask)}
    assert spec["j:b:0"]["inputs"] == ["disco://n2:1/j:a:0-0", "disco://n2:1/j:a:1-0"]
    acts = finish(run, "j:b:0", "n2:1")
    assert of(acts, JobFinished) == [JobFinished("j", ["disco://n2:1/j:b:0-0",
                                                       "disco://n2:1/j:b:1-0"])]


def test_a_consumer_running_when_its_producer_reruns_is_cancelled_and_waits():
    run = Run()
    run(NodeSlots("n1:1", 1))
    run(NodeSlots("n2:1", 1))
    run(NodeSlots("n3:1", 1))
    run(JobSubmitted("j", ["raw://1", "raw://2"], pipeline=(("a", "split"), ("b", "group_all"))))
    finish(run, "j:a:0", "n1:1")
    acts = finish(run, "j:a:1", "n2:1")
    [(where, _)] = assigned(acts)
    assert where == "n1:1"  # b:0 runs on n1, which holds a:0's output
    acts = run(NodeLost("n2:1"))  # a:1's output is gone while b:0 reads it
    assert of(acts, CancelTask) == [CancelTask("n1:1", "j:b:0")]
    job = run.s.jobs["j"]
    assert job.tasks["j:b:0"].state == PENDING and job.tasks["j:a:1"].state == RUNNING


def test_lineage_reaches_back_two_stages():
    run = Run()
    run(NodeSlots("n1:1", 1))
    run(JobSubmitted("j", ["raw://1"], pipeline=(("a", "split"), ("b", "split"),
                                                 ("c", "split"))))
    finish(run, "j:a:0", "n1:1")
    job = run.s.jobs["j"]
    assert job.tasks["j:b:0"].node == "n1:1"  # made, running on n1 (the only node)
    run(NodeSlots("n2:1", 1))
    run(NodeBlacklisted("n1:1"))  # n1 takes no more tasks, but keeps its data
    finish(run, "j:b:0", "n1:1")
    assert job.tasks["j:c:0"].node == "n2:1"  # c:0 runs on n2, reading b's output on n1
    run(NodeSlots("n3:1", 1))
    acts = run(NodeLost("n1:1"))
    # c:0 cannot read b's output now: c waits, b is made again, and b needs a's output,
    # which was on n1 too: a is made again first
    assert of(acts, CancelTask) == [CancelTask("n2:1", "j:c:0")]
    assert job.tasks["j:c:0"].state == PENDING and job.tasks["j:b:0"].state == PENDING
    assert job.tasks["j:a:0"].state == RUNNING
    acts = finish(run, "j:a:0", job.tasks["j:a:0"].node)
    assert [t for _, t in assigned(acts)] == ["j:b:0"]


def test_restored_tasks_of_a_later_stage_apply_when_it_is_made():
    run = Run()
    run(NodeSlots("n1:1", 1))
    run(JobSubmitted("j", ["raw://1"], pipeline=(("a", "split"), ("b", "group_all"))))
    run(TaskRestored("j:b:0", "n1:1", [out("n1:1", "j:b:0")]))  # before a:0 comes back
    acts = run(TaskRestored("j:a:0", "n1:1", [out("n1:1", "j:a:0")]))
    assert of(acts, JobFinished) == [JobFinished("j", ["disco://n1:1/j:b:0-0"])]


def test_a_node_only_failure_is_tried_on_the_others_then_fails_at_once():
    run = Run()
    run(NodeSlots("n1:1", 1))
    run(NodeSlots("n2:1", 1))
    run(JobSubmitted("j", ["file:///only/on/some"], max_failures=10))
    acts = run(TaskFailed("j:map:0", "n1:1", "InputError: no such file", elsewhere=True))
    assert assigned(acts) == [("n2:1", "j:map:0")]
    acts = run(TaskFailed("j:map:0", "n2:1", "InputError: no such file", elsewhere=True))
    [failed] = of(acts, JobFailed)
    assert "every node" in failed.error and "n1:1, n2:1" in failed.error


def test_a_node_only_failure_on_a_one_node_cluster_fails_at_once():
    run = Run()
    run(NodeSlots("n1:1", 2))
    run(JobSubmitted("j", ["file:///nope"]))
    [failed] = of(run(TaskFailed("j:map:0", "n1:1", "InputError: nope", elsewhere=True)),
                  JobFailed)
    assert failed.task == "j:map:0" and "every node" in failed.error
