"""The scheduler core (scheduler/core.py): scripted events in, exact actions out.

Every step in these tests also runs ``check_invariants``. The last test drives the core with
seeded random events and checks it against a small model of what must be running.
"""
from __future__ import annotations

import random

from scheduler import core

import pytest

from scheduler.core import (
    DONE,
    FINISHED,
    KILLED,
    PENDING,
    RUNNING,
    AssignTask,
    CancelTask,
    JobEvent,
    JobFailed,
    JobFinished,
    JobKilled,
    JobSubmitted,
    NodeBlacklisted,
    NodeLost,
    NodeSlots,
    NodeWhitelisted,
    Scheduler,
    SchedulerSettings,
    TaskFailed,
    TaskFinished,
    Tick,
)


class Run:
    """A scheduler plus a clock; every step checks the invariants."""

    def __init__(self, **settings):
        self.s = Scheduler(SchedulerSettings(**settings) if settings else None)
        self.now = 0.0

    def __call__(self, event, now: float | None = None) -> list:
        if now is not None:
            self.now = now
        actions = self.s.step(self.now, event)
        self.s.check_invariants()
        return actions

    def finish(self, task: str, node: str, *labels: int) -> list:
        return self(TaskFinished(task, node, [out(node, task, lb) for lb in labels or (0,)]))


def out(node: str, task: str, label: int = 0) -> dict:
    return {"label": label, "url": f"dir://{node}/{task}/{label}", "size": 1}


def url(node: str, task: str, label: int = 0) -> str:
    return out(node, task, label)["url"]


def of(actions: list, cls) -> list:
    return [a for a in actions if isinstance(a, cls)]


def assigned(actions: list) -> list:
    return [(a.node, a.task["id"]) for a in of(actions, AssignTask)]


def facts(actions: list) -> list:
    return [a.type for a in of(actions, JobEvent)]


def spec(job, stage, index, inputs, label=0, attempt=0, grouping=None, final=True,
         labels=None) -> dict:
    grouping = grouping or {"map": "split", "reduce": "group_label"}[stage]
    return {"id": f"{job}:{stage}:{index}", "job": job, "stage": stage, "index": index,
            "inputs": inputs, "labels": [label] * len(inputs) if labels is None else labels,
            "label": label, "grouping": grouping, "group": [label, None], "final": final,
            "attempt": attempt}


# ---- job shape --------------------------------------------------------------------------------


def test_one_map_task_per_input_assigned_when_slots_appear():
    run = Run()
    acts = run(JobSubmitted("j", ["raw://a", "raw://b", "raw://c"]))
    assert acts == [JobEvent("j", "job_submitted", "3 map tasks")]
    assert run.s.counts("j") == {"map": {PENDING: 3, RUNNING: 0, DONE: 0, "failed": 0}}
    acts = run(NodeSlots("n:1", 3))
    assert of(acts, AssignTask) == [
        AssignTask("n:1", spec("j", "map", i, [inp])) for i, inp in enumerate(["raw://a", "raw://b", "raw://c"])]
    assert facts(acts) == ["task_started"] * 3


def test_map_only_job_finishes_with_map_outputs_in_input_order():
    run = Run()
    run(NodeSlots("n:1", 3))
    run(JobSubmitted("j", ["raw://a", "raw://b", "raw://c"]))
    assert of(run.finish("j:map:2", "n:1"), JobFinished) == []
    assert of(run.finish("j:map:0", "n:1"), JobFinished) == []
    acts = run.finish("j:map:1", "n:1")
    assert of(acts, JobFinished) == [JobFinished("j", [url("n:1", f"j:map:{i}") for i in range(3)])]
    assert facts(acts) == ["task_done", "job_done"]
    assert run.s.jobs["j"].state == FINISHED


def test_job_without_inputs_finishes_at_once():
    run = Run()
    acts = run(JobSubmitted("j", []))
    assert of(acts, JobFinished) == [JobFinished("j", [])]


def test_reduce_tasks_per_label_created_after_last_map():
    run = Run()
    run(NodeSlots("a:1", 1))
    run(NodeSlots("b:1", 1))
    run(JobSubmitted("j", ["raw://x", "raw://y"], has_reduce=True, partitions=4))
    acts = run.finish("j:map:0", "a:1", 0, 2)
    assert of(acts, AssignTask) == [] and "j:reduce:0" not in run.s.jobs["j"].tasks
    acts = run.finish("j:map:1", "b:1", 2)
    assert "stage_done" in facts(acts)
    # one reduce per label produced (0 and 2, not 1 or 3), inputs grouped by label in map order
    assert of(acts, AssignTask) == [
        AssignTask("a:1", spec("j", "reduce", 0, [url("a:1", "j:map:0", 0)], label=0)),
        AssignTask("b:1", spec("j", "reduce", 2, [url("a:1", "j:map:0", 2), url("b:1", "j:map:1", 2)],
                               label=2)),
    ]
    assert of(run.finish("j:reduce:2", "b:1", 2), JobFinished) == []
    acts = run.finish("j:reduce:0", "a:1", 0)
    assert of(acts, JobFinished) == [JobFinished("j", [url("a:1", "j:reduce:0", 0),
                                                       url("b:1", "j:reduce:2", 2)])]


def test_reduce_job_whose_maps_produce_nothing_finishes_empty():
    run = Run()
    run(NodeSlots("a:1", 1))
    run(JobSubmitted("j", ["raw://x"], has_reduce=True))
    acts = run(TaskFinished("j:map:0", "a:1", []))
    assert of(acts, AssignTask) == [] and of(acts, JobFinished) == [JobFinished("j", [])]


def test_reduce_only_job_is_one_task_over_all_inputs():
    run = Run()
    run(NodeSlots("a:1", 2))
    acts = run(JobSubmitted("j", ["raw://x", "raw://y"], has_map=False, has_reduce=True))
    assert of(acts, AssignTask) == [AssignTask("a:1", spec("j", "reduce", 0, ["raw://x", "raw://y"],
                                                           grouping="group_all"))]
    assert of(run.finish("j:reduce:0", "a:1"), JobFinished) == [
        JobFinished("j", [url("a:1", "j:reduce:0")])]


# ---- slots and placement ------------------------------------------------------------------------


def test_tasks_only_go_to_advertised_free_slots():
    run = Run()
    assert assigned(run(JobSubmitted("j", [f"raw://{i}" for i in range(6)]))) == []
    assert assigned(run(NodeSlots("a:1", 2))) == [("a:1", "j:map:0"), ("a:1", "j:map:1")]
    assert assigned(run(NodeSlots("z:9", 0))) == []
    assert assigned(run.finish("j:map:0", "a:1")) == [("a:1", "j:map:2")]
    assert assigned(run(NodeSlots("b:1", 1))) == [("b:1", "j:map:3")]
    assert assigned(run(NodeSlots("a:1", 3))) == [("a:1", "j:map:4")]
    assert run.s.nodes["a:1"].busy == 3 and run.s.nodes["b:1"].busy == 1


def test_fewer_slots_than_running_tasks_gets_nothing_new_until_below():
    run = Run()
    run(NodeSlots("a:1", 3))
    run(JobSubmitted("j", [f"raw://{i}" for i in range(6)]))
    run.s.step(0, NodeSlots("a:1", 1))  # a re-advertises fewer slots while 3 tasks run
    # tasks that took a second each: not short, so nothing is queued beyond the slots
    assert assigned(run.s.step(1, TaskFinished("j:map:0", "a:1", [out("a:1", "x")]))) == []
    assert assigned(run.s.step(1, TaskFinished("j:map:1", "a:1", [out("a:1", "y")]))) == []
    assert assigned(run(TaskFinished("j:map:2", "a:1", [out("a:1", "z")]), now=1)) == \
        [("a:1", "j:map:3")]


def _finish_first(run: Run, node: str, took: float) -> list:
    """Finish the lowest-numbered task running on ``node``, ``took`` seconds from now."""
    job = run.s.jobs["j"]
    tid = min((t for t in job.running_ids if job.tasks[t].node == node),
              key=lambda t: int(t.rsplit(":", 1)[1]))
    return run(TaskFinished(tid, node, [out(node, tid)]), now=run.now + took)


def _short_stage(slots: int, tasks: int) -> Run:
    """One node a:1 of ``slots`` running job j of ``tasks`` maps whose stage has just become
    short (SPECULATE_MIN_SAMPLES tasks done in 1 ms each), so its queue is full."""
    run = Run()
    run(NodeSlots("a:1", slots))
    run(JobSubmitted("j", [f"raw://{i}" for i in range(tasks)]))
    for _ in range(core.SPECULATE_MIN_SAMPLES):
        _finish_first(run, "a:1", 0.001)
    assert run.s.nodes["a:1"].busy == (1 + core.QUEUE_PER_SLOT) * slots
    return run


def test_short_tasks_queue_up_to_queue_per_slot_times_the_slots_more():
    run = Run()
    run(NodeSlots("a:1", 2))
    assert len(assigned(run(JobSubmitted("j", [f"raw://{i}" for i in range(30)])))) == 2
    # the first SPECULATE_MIN_SAMPLES tasks are timed before the stage counts as short
    assert len(assigned(_finish_first(run, "a:1", 0.002))) == 1
    assert len(assigned(_finish_first(run, "a:1", 0.002))) == 1
    queued = core.QUEUE_PER_SLOT * 2
    assert len(assigned(_finish_first(run, "a:1", 0.002))) == 1 + queued  # one again + queued
    assert run.s.nodes["a:1"].busy == 2 + queued
    for _ in range(10):  # from now on each one done is one more queued, never above that
        assert len(assigned(_finish_first(run, "a:1", 0.004))) == 1
        assert run.s.nodes["a:1"].busy == 2 + queued


@pytest.mark.parametrize("queue, took", [(True, core.QUEUE_BELOW_S * 2), (False, 0.001)],
                         ids=["tasks that take long", "a node without a queue (suspect)"])
def test_no_task_is_queued_beyond_the_slots(queue, took):
    """Long tasks wait for a free slot; a suspect member keeps what it runs but is given
    nothing beyond its slots, however short its tasks."""
    run = Run()
    run(NodeSlots("a:1", 2, queue=queue))
    run(JobSubmitted("j", [f"raw://{i}" for i in range(20)]))
    for _ in range(8):
        assert len(assigned(_finish_first(run, "a:1", took))) == 1
        assert run.s.nodes["a:1"].busy == 2


def test_short_tasks_stop_queueing_when_they_get_long():
    run = _short_stage(slots=2, tasks=40)
    for _ in range(12):  # the average catches up with tasks of a second: the queue drains
        _finish_first(run, "a:1", 1.0)
    assert run.s.nodes["a:1"].busy == 2


def test_free_slots_are_filled_before_any_queue():
    run = _short_stage(slots=1, tasks=20)  # a:1 holds its slot's task and its queue's
    held = 1 + core.QUEUE_PER_SLOT
    first = core.SPECULATE_MIN_SAMPLES + held  # the first task no node has yet
    # a new node: its free slot, then its queue; a:1's full queue gets nothing
    assert assigned(run(NodeSlots("b:1", 1))) == [("b:1", f"j:map:{i}")
                                                  for i in range(first, first + held)]
    assert run.s.nodes["a:1"].busy == held and run.s.nodes["b:1"].busy == held
    assert assigned(_finish_first(run, "a:1", 0.001)) == [("a:1", f"j:map:{first + held}")]


def test_locality_prefers_the_node_holding_the_input():
    run = Run()
    for node in ("h1:1", "h2:2", "h3:3"):
        run(NodeSlots(node, 1))
    acts = run(JobSubmitted("j", ["disco://h3:3/ddfs/vol0/blob/x",
                                  ["disco://gone:7/a", "disco://h2:2/a"],  # replicas
                                  "http://elsewhere/z"]))
    assert assigned(acts) == [("h3:3", "j:map:0"), ("h2:2", "j:map:1"), ("h1:1", "j:map:2")]


def test_locality_for_reduce_inputs():
    run = Run()
    run(NodeSlots("a:1", 4))
    run(NodeSlots("b:1", 1))
    run(JobSubmitted("j", ["raw://x"], has_reduce=True))
    acts = run(TaskFinished("j:map:0", "a:1", [out("b:1", "j:map:0", 0)]))  # output held by b
    assert assigned(acts) == [("b:1", "j:reduce:0")]


def test_without_locality_the_node_with_most_free_slots_first():
    run = Run()
    run(NodeSlots("a:1", 1))
    run(NodeSlots("b:1", 3))
    acts = run(JobSubmitted("j", ["raw://1", "raw://2", "raw://3", "raw://4"]))
    assert assigned(acts) == [("b:1", "j:map:0"), ("b:1", "j:map:1"), ("a:1", "j:map:2"),
                              ("b:1", "j:map:3")]


def test_fair_share_between_two_jobs():
    run = Run()
    run(JobSubmitted("A", [f"raw://a{i}" for i in range(10)]), now=0)
    run(JobSubmitted("B", [f"raw://b{i}" for i in range(10)]), now=1)
    assert assigned(run(NodeSlots("n:1", 4))) == [
        ("n:1", "A:map:0"), ("n:1", "B:map:0"), ("n:1", "A:map:1"), ("n:1", "B:map:1")]
    assert assigned(run.finish("A:map:0", "n:1")) == [("n:1", "A:map:2")]


def test_late_job_gets_the_next_free_slot():
    run = Run()
    run(NodeSlots("n:1", 4))
    run(JobSubmitted("A", [f"raw://a{i}" for i in range(10)]), now=0)
    assert assigned(run(JobSubmitted("B", ["raw://b0", "raw://b1", "raw://b2"]), now=1)) == []
    assert assigned(run.finish("A:map:0", "n:1")) == [("n:1", "B:map:0")]
    assert assigned(run.finish("A:map:1", "n:1")) == [("n:1", "B:map:1")]
    assert assigned(run.finish("A:map:2", "n:1")) == [("n:1", "A:map:4")]  # 1 running vs 2


# ---- failures -----------------------------------------------------------------------------------


def test_failed_task_retried_elsewhere_then_job_fails_at_the_limit():
    run = Run()
    run(NodeSlots("a:1", 2))
    run(NodeSlots("b:1", 1))
    run(JobSubmitted("j", ["raw://bad", "raw://ok"], max_failures=3))
    assert run.s.jobs["j"].tasks["j:map:0"].node == "a:1"
    assert run.s.jobs["j"].tasks["j:map:1"].node == "a:1"
    acts = run(TaskFailed("j:map:0", "a:1", "boom", "Traceback 1"))
    # retried, on the node it has not failed on, with the attempt counted
    assert of(acts, AssignTask) == [AssignTask("b:1", spec("j", "map", 0, ["raw://bad"], attempt=1))]
    assert facts(acts) == ["task_failed", "task_started"]
    acts = run(TaskFailed("j:map:0", "b:1", "boom", "Traceback 2"))
    assert of(acts, AssignTask) == [AssignTask("a:1", spec("j", "map", 0, ["raw://bad"], attempt=2))]
    assert run.s.counts("j")["map"] == {PENDING: 0, RUNNING: 2, DONE: 0, "failed": 2}
    acts = run(TaskFailed("j:map:0", "a:1", "boom", "Traceback 3"))
    assert of(acts, CancelTask) == [CancelTask("a:1", "j:map:1")]
    assert of(acts, JobFailed) == [JobFailed(
        "j", "boom (failed 3 times, limit 3)", task="j:map:0", input="raw://bad", node="a:1",
        traceback="Traceback 3")]
    assert of(acts, AssignTask) == []
    assert run.s.nodes["a:1"].busy == 0 and run.s.nodes["b:1"].busy == 0
    # late reports of the failed job's tasks change nothing
    assert run.finish("j:map:1", "a:1") == []


def test_job_failed_names_the_node_of_the_last_failure():
    for first, last in (("a:1", "b:1"), ("b:1", "a:1")):
        run = Run()
        run(NodeSlots(first, 1))
        run(JobSubmitted("j", ["raw://bad"], max_failures=2))
        run(NodeSlots(last, 1))
        run(TaskFailed("j:map:0", first, "boom"))
        acts = run(TaskFailed("j:map:0", last, "boom", "tb"))
        assert of(acts, JobFailed)[0].node == last


def test_non_retryable_failure_fails_the_job_at_once():
    run = Run()
    run(NodeSlots("a:1", 1))
    run(JobSubmitted("j", [["disco://a:1/x", "disco://b:1/x"]], max_failures=10))
    acts = run(TaskFailed("j:map:0", "a:1", "no such module", "Traceback", retryable=False))
    assert of(acts, JobFailed) == [JobFailed(
        "j", "no such module", task="j:map:0", input=["disco://a:1/x", "disco://b:1/x"],
        node="a:1", traceback="Traceback")]
    assert of(acts, AssignTask) == []


def test_reports_from_the_wrong_node_or_unknown_tasks_are_ignored():
    run = Run()
    run(NodeSlots("a:1", 1))
    run(JobSubmitted("j", ["raw://x"]))
    assert run.finish("j:map:0", "b:1") == []
    assert run(TaskFailed("j:map:0", "b:1", "boom")) == []
    assert run.finish("nojob:map:0", "a:1") == []
    assert run.finish("garbage", "a:1") == []
    assert run.s.jobs["j"].tasks["j:map:0"].state == RUNNING


# ---- lost nodes ---------------------------------------------------------------------------------


def test_node_lost_requeues_its_running_tasks():
    run = Run()
    run(NodeSlots("a:1", 1))
    run(NodeSlots("b:1", 1))
    run(JobSubmitted("j", ["raw://x", "raw://y"]))
    assert run.s.jobs["j"].tasks["j:map:0"].node == "a:1"
    acts = run(NodeLost("a:1"))
    assert facts(acts) == ["task_requeued"] and assigned(acts) == []
    assert "a:1" not in run.s.nodes
    assert run.finish("j:map:0", "a:1") == []  # a late report from the lost node is ignored
    assert assigned(run.finish("j:map:1", "b:1")) == [("b:1", "j:map:0")]
    assert of(run.finish("j:map:0", "b:1"), JobFinished) == [
        JobFinished("j", [url("b:1", "j:map:0"), url("b:1", "j:map:1")])]


def test_node_lost_requeues_finished_maps_whose_outputs_are_still_needed():
    run = Run()
    run(NodeSlots("a:1", 1))
    run(NodeSlots("b:1", 1))
    run(JobSubmitted("j", ["raw://x", "raw://y"], has_reduce=True))
    run.finish("j:map:0", "a:1", 0)
    acts = run(NodeLost("a:1"))
    assert facts(acts) == ["task_requeued"]
    assert run.s.jobs["j"].tasks["j:map:0"].state == PENDING
    assert assigned(run.finish("j:map:1", "b:1", 0)) == [("b:1", "j:map:0")]


def test_a_running_jobs_results_on_a_lost_node_are_made_again():
    # a map-only job's outputs are its results: on a node that is gone they could not be read
    run = Run()
    run(NodeSlots("a:1", 1))
    run(NodeSlots("b:1", 1))
    run(JobSubmitted("j", ["raw://x", "raw://y"]))
    run.finish("j:map:0", "a:1")
    acts = run(NodeLost("a:1"))
    assert facts(acts) == ["task_requeued"]
    assert run.s.jobs["j"].tasks["j:map:0"].state == PENDING
    acts = run.finish("j:map:1", "b:1")
    assert assigned(acts) == [("b:1", "j:map:0")]
    acts = run.finish("j:map:0", "b:1")
    assert of(acts, JobFinished) == [JobFinished("j", [url("b:1", "j:map:0", 0),
                                                       url("b:1", "j:map:1", 0)])]


def test_saved_results_on_a_lost_node_are_not_made_again():
    # save_results outputs are DDFS replica sets, on no one node
    run = Run()
    run(NodeSlots("a:1", 1))
    run(NodeSlots("b:1", 1))
    run(JobSubmitted("j", ["raw://x", "raw://y"]))
    run(TaskFinished("j:map:0", "a:1", [{"label": 0, "url": ["disco://a:1/x", "disco://b:1/x"]}]))
    job = run.s.jobs["j"]
    assert run(NodeLost("a:1")) == []
    assert job.tasks["j:map:0"].state == DONE


def test_node_lost_during_reduce_reruns_map_and_then_every_reduce():
    run = Run()
    run(NodeSlots("a:1", 1))
    run(JobSubmitted("j", ["raw://x", "raw://y"], has_reduce=True))
    run(NodeSlots("b:1", 1))
    run.finish("j:map:0", "a:1", 0, 1)
    acts = run.finish("j:map:1", "b:1", 0, 1)
    assert assigned(acts) == [("a:1", "j:reduce:0"), ("b:1", "j:reduce:1")]
    run.finish("j:reduce:1", "b:1", 1)
    # a holds map 0's output, which the unfinished reduce 0 (running on a) still needs
    acts = run(NodeLost("a:1"))
    assert of(acts, CancelTask) == []  # nothing is sent to the node that is gone
    assert assigned(acts) == [("b:1", "j:map:0")]
    acts = run.finish("j:map:0", "b:1", 0, 1)
    assert of(acts, JobFinished) == []
    assert of(acts, AssignTask) == [AssignTask("b:1", spec(
        "j", "reduce", 0, [url("b:1", "j:map:0", 0), url("b:1", "j:map:1", 0)], label=0))]
    acts = run.finish("j:reduce:0", "b:1", 0)
    assert of(acts, JobFinished) == [JobFinished("j", [url("b:1", "j:reduce:0", 0),
                                                       url("b:1", "j:reduce:1", 1)])]


def test_lost_unknown_node_is_a_no_op():
    run = Run()
    assert run(NodeLost("ghost:1")) == []


# ---- kill, blacklist, stall ---------------------------------------------------------------------


def test_job_killed_cancels_running_tasks_and_frees_their_slots():
    run = Run()
    run(NodeSlots("a:1", 2))
    run(JobSubmitted("A", ["raw://1", "raw://2", "raw://3"]))
    run(JobSubmitted("B", ["raw://b"]))
    acts = run(JobKilled("A"))
    assert of(acts, CancelTask) == [CancelTask("a:1", "A:map:0"), CancelTask("a:1", "A:map:1")]
    assert of(acts, JobFailed) == [JobFailed("A", "killed by user", status=KILLED)]
    assert assigned(acts) == [("a:1", "B:map:0")]
    assert run.s.jobs["A"].state == KILLED
    assert run(JobKilled("A")) == [] and run(JobKilled("nope")) == []
    assert run.finish("A:map:0", "a:1") == []


def test_blacklisted_node_gets_no_new_tasks_until_whitelisted():
    run = Run()
    run(NodeBlacklisted("a:1"))
    run(NodeSlots("a:1", 2))  # joins already blacklisted
    run(NodeSlots("b:1", 1))
    assert assigned(run(JobSubmitted("j", ["disco://a:1/x", "raw://y", "raw://z"]))) == [
        ("b:1", "j:map:0")]
    run(NodeSlots("a:1", 2))  # re-advertising does not lift the blacklist
    assert assigned(run(NodeWhitelisted("a:1"))) == [("a:1", "j:map:1"), ("a:1", "j:map:2")]
    # blacklisting a busy node lets its running tasks finish but gives it nothing new
    run(JobSubmitted("k", ["raw://k0", "raw://k1"]))
    run(NodeBlacklisted("a:1"))
    acts = run.finish("j:map:1", "a:1")
    assert facts(acts) == ["task_done"]
    assert assigned(run.finish("j:map:0", "b:1")) == [("b:1", "k:map:0")]


def test_job_with_no_usable_node_fails_after_the_stall_timeout():
    run = Run(stall_timeout_s=5.0)
    run(JobSubmitted("j", ["raw://x"]), now=100)
    assert run(Tick(), now=100) == []
    assert run(Tick(), now=104.9) == []
    acts = run(Tick(), now=105)
    assert of(acts, JobFailed) == [JobFailed("j", "no node can run its tasks: no node has task slots")]
    assert run(Tick(), now=200) == []


def test_stall_reasons_and_reset():
    run = Run(stall_timeout_s=2.0)
    run(NodeSlots("a:1", 1))
    run(NodeBlacklisted("a:1"))
    run(JobSubmitted("j", ["raw://x"]))
    run(Tick(), now=1)
    assert run(NodeWhitelisted("a:1"), now=2) != []  # usable again: task assigned
    assert run(Tick(), now=2.5) == []  # stall clock reset
    run(NodeLost("a:1"))
    run(NodeSlots("z:1", 0))  # a node, but without slots, is not blacklisted
    run(Tick(), now=3)
    assert of(run(Tick(), now=5), JobFailed) == [
        JobFailed("j", "no node can run its tasks: no node has task slots")]
    run2 = Run(stall_timeout_s=2.0)
    run2(NodeSlots("a:1", 1))
    run2(NodeBlacklisted("a:1"))
    run2(JobSubmitted("j", ["raw://x"]))
    run2(Tick(), now=1)
    assert of(run2(Tick(), now=3), JobFailed) == [
        JobFailed("j", "no node can run its tasks: every node is blacklisted")]


def test_busy_cluster_is_not_a_stall():
    run = Run(stall_timeout_s=1.0)
    run(NodeSlots("a:1", 1))
    run(JobSubmitted("j", ["raw://x", "raw://y"]))
    for t in range(10):
        assert of(run(Tick(), now=t), JobFailed) == []


def test_settings_are_validated():
    with pytest.raises(ValueError):
        SchedulerSettings(stall_timeout_s=0)


def test_unknown_event_is_a_type_error():
    with pytest.raises(TypeError):
        Scheduler().step(0, object())


def test_counts_per_stage():
    run = Run()
    run(NodeSlots("a:1", 2))
    run(JobSubmitted("j", ["raw://1", "raw://2", "raw://3", "raw://4"], has_reduce=True))
    run.finish("j:map:0", "a:1", 0)
    run(TaskFailed("j:map:1", "a:1", "boom"))
    assert run.s.counts("j") == {"map": {PENDING: 1, RUNNING: 2, DONE: 1, "failed": 1}}
    for i in (1, 2, 3):
        run.finish(f"j:map:{i}", "a:1", 0)
    assert run.s.counts("j") == {"map": {PENDING: 0, RUNNING: 0, DONE: 4, "failed": 1},
                                 "reduce": {PENDING: 0, RUNNING: 1, DONE: 0, "failed": 0}}


# ---- seeded random operations -------------------------------------------------------------------

NODES = [f"h{i}:{9000 + i}" for i in range(4)]


def _map_labels(task_id: str) -> list:
    """Deterministic per task (a re-run makes the same partitions), like a real map."""
    r = random.Random(task_id)
    return sorted(r.sample(range(3), r.randint(0, 2)))


class Model:
    """What the test knows from the actions alone; compared with the core after every step."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        # speculation off: the model knows one attempt per task (backups: test_speculation)
        self.s = Scheduler(SchedulerSettings(stall_timeout_s=4.0, speculation=False))
        self.now = 0.0
        self.running: dict[str, tuple[str, dict]] = {}
        self.jobs: dict[str, JobSubmitted] = {}
        self.ended: dict[str, object] = {}
        self.lost: dict[str, tuple[str, dict]] = {}

    def step(self, event) -> list:
        if isinstance(event, (TaskFinished, TaskFailed)) and \
                self.running.get(event.task, ("",))[0] == event.node:
            del self.running[event.task]
        self.lost = {}
        if isinstance(event, NodeLost):  # its tasks stop; a cancel sent there is harmless
            self.lost = {t: v for t, v in self.running.items() if v[0] == event.node}
            self.running = {t: v for t, v in self.running.items() if v[0] != event.node}
        actions = self.s.step(self.now, event)
        for action in actions:
            self._apply(action)
        self.check()
        return actions

    def _apply(self, action) -> None:
        if isinstance(action, AssignTask):
            node = self.s.nodes[action.node]
            assert not node.blacklisted and action.task["id"] not in self.running
            self.running[action.task["id"]] = (action.node, action.task)
        elif isinstance(action, CancelTask):
            stopped = self.running.pop(action.task, None) or self.lost.pop(action.task)
            assert stopped[0] == action.node
        elif isinstance(action, (JobFinished, JobFailed)):
            assert action.job not in self.ended, f"{action.job} ended twice"
            self.ended[action.job] = action
            if isinstance(action, JobFinished):
                self._check_results(action)

    def _check_results(self, done: JobFinished) -> None:
        spec = self.jobs[done.job]
        if spec.has_reduce:
            want = sorted({lb for i in range(len(spec.inputs)) for lb in _map_labels(f"{done.job}:map:{i}")})
            assert [int(u.rsplit("/", 1)[1]) for u in done.results] == want, (done, want)
        else:
            assert [u.split("/")[3] for u in done.results] == [
                f"{done.job}:map:{i}" for i in range(len(spec.inputs))]

    def check(self) -> None:
        self.s.check_invariants()
        actual = {t.id: t.node for j in self.s.jobs.values() for t in j.tasks.values()
                  if t.state == RUNNING}
        assert actual == {t: v[0] for t, v in self.running.items()}
        assert all(node in self.s.nodes for node in actual.values())
        for name, job in self.s.jobs.items():
            assert (job.state in (FINISHED, "failed", KILLED)) == (name in self.ended)

    def outputs(self, task: dict, node: str) -> list:
        if task["stage"] == "reduce":
            labels = [task["label"]]
        elif self.jobs[task["job"]].has_reduce:
            labels = _map_labels(task["id"])
        else:
            labels = [0]
        return [out(node, task["id"], lb) for lb in labels]

    def random_event(self):
        r, nodes = self.rng, list(self.s.nodes)
        roll = r.random()
        if roll < 0.08 and len(self.jobs) < 10:
            name = f"J{len(self.jobs)}"
            inputs = [r.choice([f"disco://{r.choice(NODES)}/d/{i}", f"raw://{i}",
                                [f"disco://{r.choice(NODES)}/d/{i}", f"disco://{r.choice(NODES)}/d/{i}"]])
                      for i in range(r.randint(0, 5))]
            event = JobSubmitted(name, inputs, has_reduce=r.random() < 0.6, max_failures=r.randint(1, 4))
            self.jobs[name] = event
            return event
        if roll < 0.22:
            node = r.choice(NODES)
            busy = self.s.nodes[node].busy if node in self.s.nodes else 0
            return NodeSlots(node, max(busy, r.randint(0, 3)))
        if roll < 0.27 and nodes:
            return NodeLost(r.choice(nodes))
        if roll < 0.62 and self.running:
            tid = r.choice(sorted(self.running))
            node, task = self.running[tid]
            return TaskFinished(tid, node, self.outputs(task, node))
        if roll < 0.72 and self.running:
            tid = r.choice(sorted(self.running))
            return TaskFailed(tid, self.running[tid][0], "boom", "tb", retryable=r.random() < 0.9)
        if roll < 0.73 and self.jobs:
            return JobKilled(r.choice(sorted(self.jobs)))
        if roll < 0.78:
            return NodeBlacklisted(r.choice(NODES))
        if roll < 0.85:
            return NodeWhitelisted(r.choice(NODES))
        return Tick()

    def stale_report(self) -> None:
        """A report for a task that is not running there must change nothing."""
        tasks = [t for j in self.s.jobs.values() for t in j.tasks.values()]
        if not tasks:
            return
        task = self.rng.choice(tasks)
        node = self.rng.choice([n for n in NODES if not (task.state == RUNNING and task.node == n)])
        before = self.s.counts(task.job)
        assert self.step(TaskFinished(task.id, node, [out(node, task.id)])) == []
        assert self.s.counts(task.job) == before

    def drain(self) -> None:
        for node in NODES:
            self.step(NodeWhitelisted(node))
            self.step(NodeSlots(node, max(3, self.s.nodes[node].busy if node in self.s.nodes else 0)))
        for _ in range(500):
            if not self.running:
                break
            tid = min(self.running)
            node, task = self.running[tid]
            self.step(TaskFinished(tid, node, self.outputs(task, node)))
        assert not self.running
        assert set(self.ended) == set(self.jobs), "every job ends once the cluster is healthy"


@pytest.mark.parametrize("seed", range(40))
def test_random_operations_keep_invariants(seed):
    model = Model(seed)
    for _ in range(300):
        model.now += model.rng.choice([0, 0, 0.5, 1, 3])
        if model.rng.random() < 0.05:
            model.stale_report()
        else:
            model.step(model.random_event())
    model.drain()


def test_node_lost_requeues_every_needed_map_even_after_one_reduce_finished():
    s = core.Scheduler()
    s.step(0, core.NodeSlots("a", 4))
    s.step(0, core.NodeSlots("b", 4))
    s.step(0, core.JobSubmitted("j", ["raw://1", "raw://2", "raw://3"], True, True, 2))
    running = {t.id: t.node for t in s.jobs["j"].tasks.values()}
    for tid, node in running.items():
        idx = tid.rsplit(":", 1)[1]
        s.step(0, core.TaskFinished(tid, node, [{"label": 0, "url": f"disco://{node}/m{idx}-0", "size": 1},
                                               {"label": 1, "url": f"disco://{node}/m{idx}-1", "size": 1}]))
    reduces = [t for t in s.jobs["j"].tasks.values() if t.stage == "reduce"]
    first = reduces[0]
    s.step(0, core.TaskFinished(first.id, first.node, [{"label": 0, "url": "disco://x/r0", "size": 1}]))
    lost = "a"
    on_lost = {t.id for t in s.jobs["j"].tasks.values() if t.stage == "map" and t.node == lost}
    actions = s.step(1, core.NodeLost(lost))
    requeued = {a.task for a in actions if isinstance(a, core.JobEvent) and a.type == "task_requeued"}
    assert on_lost and on_lost <= requeued
    s.check_invariants()


# ---- a task reported done gives its slot back before the journal has it ------------------------

def test_a_reported_task_frees_its_slot_at_once_and_finishes_at_its_commit():
    r = Run()
    r(NodeSlots("h1", 1))
    acts = r(JobSubmitted("j", ["a", "b"]))
    assert assigned(acts) == [("h1", "j:map:0")]
    acts = r(core.TaskReported("j:map:0", "h1"))
    assert assigned(acts) == [("h1", "j:map:1")]  # the next task runs meanwhile
    assert r.s.released == 1 and r.s.nodes["h1"].busy == 1
    assert r.s.jobs["j"].tasks["j:map:0"].state == RUNNING
    r.finish("j:map:0", "h1")  # the commit: done, and no second slot given back
    assert r.s.nodes["h1"].busy == 1 and r.s.released == 0
    acts = r.finish("j:map:1", "h1")
    assert of(acts, JobFinished) and r.s.nodes["h1"].busy == 0


def test_a_reported_task_of_a_lost_node_runs_again_and_the_counts_stay_true():
    r = Run()
    r(NodeSlots("h1", 1))
    r(NodeSlots("h2", 1))
    r(JobSubmitted("j", ["a"]))
    node = r.s.jobs["j"].tasks["j:map:0"].node
    r(core.TaskReported("j:map:0", node))
    r(core.TaskReported("j:map:0", node))  # a duplicate report releases nothing more
    assert r.s.released == 1
    acts = r(NodeLost(node))  # lost before the commit: run again elsewhere
    assert r.s.released == 0 and len(assigned(acts)) == 1
    assert assigned(acts)[0][0] != node
