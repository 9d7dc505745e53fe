"""Speculative execution in the scheduler core: a straggler gets a backup attempt on another
node; the first attempt done wins and the other is cancelled."""
from __future__ import annotations

from scheduler.core import (DONE, RUNNING, CancelTask, JobEvent, JobFinished,
                            JobSubmitted, NodeLost, NodeSlots, TaskFailed,
                            TaskFinished, TaskReported, Tick)
from tests.unit.test_scheduler import Run, assigned, of


def out(node, task):
    return [{"label": 0, "url": f"disco://{node}/{task}", "size": 1}]


def started(settings=None):
    """Four maps on two nodes of two slots; three finish after 1 s, j:map:3 (on b) runs on."""
    run = Run(**(settings or {}))
    run(NodeSlots("a:1", 2), now=0.0)
    run(NodeSlots("b:1", 2), now=0.0)
    acts = run(JobSubmitted("j", [f"raw://{i}" for i in range(4)]), now=0.0)
    where = dict((t, n) for n, t in assigned(acts))
    slow = "j:map:3"
    assert where[slow] == "b:1"
    for task, node in where.items():
        if task != slow:
            run(TaskReported(task, node), now=1.0)
            run(TaskFinished(task, node, out(node, task)), now=1.0)
    return run, slow


def backups(acts):
    return [e for e in of(acts, JobEvent) if e.type == "task_backup"]


def test_a_straggler_gets_a_backup_and_the_backup_wins():
    run, slow = started()
    assert backups(run(Tick(), now=1.2)) == []  # 1.2 s < 1.5 x the 1 s median
    acts = run(Tick(), now=1.6)
    assert assigned(acts) == [("a:1", slow)] and len(backups(acts)) == 1
    job = run.s.jobs["j"]
    assert job.tasks[slow].backup == "a:1" and run.s.nodes["a:1"].busy == 1
    acts = run(TaskReported(slow, "a:1"), now=1.8)
    assert of(acts, CancelTask) == [CancelTask("b:1", slow)]  # the slow attempt is stopped
    assert job.tasks[slow].node == "a:1" and job.tasks[slow].backup is None
    acts = run(TaskFinished(slow, "a:1", out("a:1", slow)), now=1.8)
    [finished] = of(acts, JobFinished)
    assert "disco://a:1/j:map:3" in finished.results
    # the slow attempt's late report changes nothing
    assert run(TaskReported(slow, "b:1"), now=2.0) == []


def test_when_the_primary_wins_the_backup_is_cancelled():
    run, slow = started()
    run(Tick(), now=1.6)
    acts = run(TaskReported(slow, "b:1"), now=1.7)
    assert of(acts, CancelTask) == [CancelTask("a:1", slow)]
    assert run.s.nodes["a:1"].busy == 0
    acts = run(TaskFinished(slow, "b:1", out("b:1", slow)), now=1.7)
    assert of(acts, JobFinished)


def test_a_failed_backup_leaves_the_primary_running_and_counts_no_attempt():
    run, slow = started()
    run(Tick(), now=1.6)
    run(TaskFailed(slow, "a:1", "boom"), now=1.7)
    task = run.s.jobs["j"].tasks[slow]
    assert task.state == RUNNING and task.node == "b:1" and task.backup is None
    assert task.attempts == 0 and run.s.nodes["a:1"].busy == 0


def test_a_failed_primary_leaves_the_backup_running():
    run, slow = started()
    run(Tick(), now=1.6)
    run(TaskFailed(slow, "b:1", "disk trouble"), now=1.7)
    task = run.s.jobs["j"].tasks[slow]
    assert task.state == RUNNING and task.node == "a:1" and task.backup is None
    assert task.attempts == 1 and "b:1" in task.failed_on


def test_the_primarys_node_lost_promotes_the_backup():
    run, slow = started()
    run(Tick(), now=1.6)
    acts = run(NodeLost("b:1"), now=1.7)
    task = run.s.jobs["j"].tasks[slow]
    assert task.state == RUNNING and task.node == "a:1"
    assert slow not in [t for _, t in assigned(acts)]  # not started again: its backup goes on


def test_the_backups_node_lost_drops_it():
    run, slow = started()
    run(Tick(), now=1.6)
    run(NodeLost("a:1"), now=1.7)
    task = run.s.jobs["j"].tasks[slow]
    assert task.node == "b:1" and task.backup is None


def test_no_backup_while_tasks_wait_or_when_turned_off():
    run, slow = started({"speculation": False})
    assert assigned(run(Tick(), now=5.0)) == []
    # with waiting tasks the free slots go to them, not to backups
    run = Run()
    run(NodeSlots("a:1", 1), now=0.0)
    run(JobSubmitted("j", [f"raw://{i}" for i in range(3)]), now=0.0)
    acts = run(TaskReported("j:map:0", "a:1"), now=1.0)
    assert assigned(acts) == [("a:1", "j:map:1")]
    run(TaskFinished("j:map:0", "a:1", out("a:1", "j:map:0")), now=1.0)
    assert assigned(run(Tick(), now=9.0)) == []  # one slot, busy: map 1 is not backed up


def test_one_backup_per_task_on_a_node_it_has_not_failed_on():
    run, slow = started()
    run(Tick(), now=1.6)
    assert assigned(run(Tick(), now=3.0)) == []  # it has its backup already
    task = run.s.jobs["j"].tasks[slow]
    assert task.backup != task.node
    assert all(t.state == DONE for t in run.s.jobs["j"].tasks.values() if t.id != slow)


def test_random_attempts_with_backups_keep_the_invariants_and_finish():
    import random
    backed_up = 0
    for seed in range(30):
        rng = random.Random(seed)
        run = Run(speculation_min_s=0.1)
        nodes = [f"n{i}:1" for i in range(3)]
        for n in nodes:
            run(NodeSlots(n, 2), now=0.0)
        run(JobSubmitted("j", [f"raw://{i}" for i in range(8)], has_reduce=True,
                         partitions=2), now=0.0)
        now = 0.0
        for _ in range(400):
            job = run.s.jobs["j"]
            if job.state != "active":
                break
            now += rng.choice([0.05, 0.2, 0.5])
            running = [t for t in job.tasks.values() if t.state == RUNNING]
            if not running:
                backed_up += len(backups(run(Tick(), now=now)))
                continue
            task = rng.choice(running)
            node = rng.choice([x for x in (task.node, task.backup) if x])
            roll = rng.random()
            if roll < 0.5:
                backed_up += len(backups(run(TaskReported(task.id, node), now=now)))
                run(TaskFinished(task.id, node, out(node, task.id)), now=now)
            elif roll < 0.6:
                run(TaskFailed(task.id, node, "flaky"), now=now)
            else:
                backed_up += len(backups(run(Tick(), now=now)))
        assert run.s.jobs["j"].state == "finished", seed
    assert backed_up > 10  # the runs did exercise backup attempts


def _slow_node_run(settings=None):
    """Three one-slot nodes, twelve maps of 1 s; c takes 4 s a task. At t = 4 every task is
    out (c has its second), a and b finish theirs at t = 5: free slots, nothing waiting."""
    run = Run(**(settings or {}))
    for node in ("a:1", "b:1", "c:1"):
        run(NodeSlots(node, 1), now=0.0)
    where = dict((t, n) for n, t in assigned(
        run(JobSubmitted("j", [f"raw://{i}" for i in range(12)]), now=0.0)))

    def finish(task, now):
        node = where.pop(task)
        acts = run(TaskReported(task, node), now=now)
        acts += run(TaskFinished(task, node, out(node, task)), now=now)
        where.update((t, n) for n, t in assigned(acts) if n == node)
        return acts

    for now in (1.0, 2.0, 3.0, 4.0):
        for task in sorted(t for t, n in where.items() if n != "c:1"):
            finish(task, now)
    [first_on_c] = [t for t, n in where.items() if n == "c:1"]
    finish(first_on_c, 4.0)  # c took 4 s: slow, and now runs its second task
    assert run.s.jobs["j"].by_state["pending"] == 0
    [on_c] = [t for t, n in where.items() if n == "c:1"]
    acts = []
    for task in sorted(t for t, n in where.items() if n != "c:1"):
        acts += finish(task, 5.0)
    return run, on_c, acts


def test_a_task_on_a_node_known_to_be_slow_gets_a_backup_as_soon_as_a_slot_is_idle():
    run, on_c, acts = _slow_node_run()
    # it has run 1 s, under 1.5 x the 1 s median, but at c's pace it has 3 s left
    assert [e.task for e in backups(acts)] == [on_c]
    assert run.s.jobs["j"].tasks[on_c].backup in ("a:1", "b:1")


def test_without_the_slow_nodes_pace_the_task_waits_until_it_is_late():
    run, on_c, acts = _slow_node_run({"speculation_multiplier": 5.0})  # c is "not slow"
    assert backups(acts) == []
    assert backups(run(Tick(), now=5.9)) == []  # 1.9 s < max(0.5, 5 x 1 s)
    assert [e.task for e in backups(run(Tick(), now=9.5))] == [on_c]


def test_durations_are_kept_sorted_so_medians_need_no_sort():
    run, _ = started()
    job = run.s.jobs["j"]
    for seconds in (3.0, 0.5, 2.0, 0.25):
        job.took(0, seconds)
        job.took_on(0, "z:1", seconds)
    assert job.durations[0] == sorted(job.durations[0]) and len(job.durations[0]) == 7
    assert job.node_took[0, "z:1"] == [0.25, 0.5, 2.0, 3.0]
    # the median a straggler is measured against: of the sorted times
    assert job.durations[0][len(job.durations[0]) // 2] == 1.0
