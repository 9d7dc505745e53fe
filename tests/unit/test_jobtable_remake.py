"""A finished job's results on a lost node are made again from the job's lineage (the
journal's finished tasks): the master's job table, scripted events in, exact actions out."""
from __future__ import annotations

import pytest

from scheduler import core
from scheduler import entry as en
from scheduler import jobtable as jt


class Cluster:
    """A job table and the journal state it proposes into; tasks "run" where assigned."""

    def __init__(self, nodes):
        self.table, self.state, self.now = jt.JobTable(), en.JournalState(), 0.0
        self.closed, self.assigned = [], []
        for node in nodes:
            self.step(core.NodeSlots(node, 2))

    def step(self, event) -> list:
        self.now += 0.01
        actions = self.table.step(self.now, event)
        for action in actions:
            if isinstance(action, jt.Propose):
                entry = action.entry if not isinstance(action.entry, dict) else None
                if entry is not None:
                    self.commit(entry)
            elif isinstance(action, core.AssignTask):
                self.assigned.append((action.node, action.task))
            elif isinstance(action, jt.JobClosed):
                self.closed.append(action.job)
        return actions

    def commit(self, entry) -> None:
        self.state.apply(entry)
        self.step(jt.Committed(entry))

    def run_assigned(self) -> list:
        """Finish every assigned task on its node (outputs named by task and label)."""
        ran = []
        while self.assigned:
            node, task = self.assigned.pop(0)
            labels = [0, 1] if task["stage"] == "map" else [task["label"]]
            outputs = tuple({"label": lb, "url": f"disco://{node}/vol0/jobs/{task['job']}/"
                             f"{task['stage']}-{task['index']}-{lb}.drec", "size": 1}
                            for lb in labels)
            self.step(core.TaskReported(task["id"], node))
            self.commit(en.Done(task["id"], node, outputs))
            ran.append((node, task["id"]))
        return ran


def finished_job(cluster) -> str:
    header = {"inputs": ["raw://a", "raw://b"], "has_map": True, "has_reduce": True,
              "partitions": 2}
    cluster.commit(en.Submit("J@1", header, "d" * 64, 0.0))
    while cluster.assigned:
        cluster.run_assigned()
    assert cluster.table.record("J@1").status == core.FINISHED
    return "J@1"


def test_a_lost_result_is_made_again_with_what_it_was_made_of():
    cluster = Cluster(["n1:1", "n2:1"])
    job = finished_job(cluster)
    results = cluster.table.record(job).results
    lost = [r for r in results if "//n2:1/" in r]
    assert lost
    before = dict(cluster.state.jobs[job].done)
    was_on_n2 = {t for t, (n, _) in before.items() if n == "n2:1"}
    cluster.step(jt.RemakeAsked(job, lost[0], frozenset({"n1:1"}), before))
    assert cluster.table.record(job).remaking
    assert cluster.table.status(job)["remaking"] is True
    ran = []
    while cluster.assigned:
        ran += cluster.run_assigned()
    assert all(node == "n1:1" for node, _ in ran)
    # what ran again is what was on n2 and is still needed: no task that lived on n1
    assert {t for _, t in ran} == was_on_n2 and was_on_n2
    record = cluster.table.record(job)
    assert not record.remaking and cluster.closed[-1] == job
    assert all("//n1:1/" in r for r in record.results)
    assert jt.current_result(record.results, lost[0]).endswith(lost[0].split("/", 3)[3])
    # the journal holds the new results too (a new master starts from them)
    assert list(cluster.state.jobs[job].end.results) == record.results


def test_a_result_whose_node_is_alive_is_not_made_again():
    cluster = Cluster(["n1:1", "n2:1"])
    job = finished_job(cluster)
    url = cluster.table.record(job).results[0]
    cluster.step(jt.RemakeAsked(job, url, frozenset({"n1:1", "n2:1"}),
                                dict(cluster.state.jobs[job].done)))
    assert not cluster.table.record(job).remaking and not cluster.assigned


def test_only_a_finished_jobs_own_results_are_made_again():
    cluster = Cluster(["n1:1"])
    job = finished_job(cluster)
    with pytest.raises(jt.BadJob, match="not a result"):
        cluster.step(jt.RemakeAsked(job, "disco://n9:1/elsewhere.drec", frozenset(), {}))
    header = {"inputs": ["raw://a"], "has_map": True, "partitions": 1}
    cluster.commit(en.Submit("K@1", header, "e" * 64, 0.0))  # runs: not finished
    with pytest.raises(jt.BadJob, match="only a finished job"):
        cluster.step(jt.RemakeAsked("K@1", "disco://n1:1/x", frozenset(), {}))
    with pytest.raises(jt.JobNotFound):
        cluster.step(jt.RemakeAsked("Nope@1", "disco://n1:1/x", frozenset(), {}))


def test_a_remake_with_no_lineage_left_runs_the_whole_job_again():
    cluster = Cluster(["n1:1", "n2:1"])
    job = finished_job(cluster)
    lost = [r for r in cluster.table.record(job).results if "//n2:1/" in r][0]
    cluster.step(jt.RemakeAsked(job, lost, frozenset({"n1:1"}), {}))  # no finished tasks known
    ran = []
    while cluster.assigned:
        ran += cluster.run_assigned()
    assert sorted(t for _, t in ran) == ["J@1:map:0", "J@1:map:1", "J@1:reduce:0",
                                         "J@1:reduce:1"]
    assert all("//n1:1/" in r for r in cluster.table.record(job).results)


def test_the_journal_keeps_an_ended_jobs_finished_tasks_and_applies_remade():
    state = en.replay([en.Submit("J@1", {}, "d", 0.0), en.Done("J@1:map:0", "n1:1", ({"u": 1},)),
                       en.End("J@1", "finished", 1.0, ("disco://n1:1/a",)),
                       en.Done("J@1:map:0", "n2:1", ({"u": 2},)),
                       en.Remade("J@1", ("disco://n2:1/a",))])
    job = state.jobs["J@1"]
    assert job.done == {"J@1:map:0": ("n2:1", [{"u": 2}])}
    assert job.end.results == ("disco://n2:1/a",) and job.end.status == "finished"
    again = en.JournalState.from_snapshot(state.snapshot())
    assert again.jobs["J@1"].end.results == ("disco://n2:1/a",)
    assert en.from_wire(en.to_wire(en.Remade("J@1", ("x",)))) == en.Remade("J@1", ("x",))


def test_a_remade_result_is_found_in_another_workers_directory_on_another_node():
    old = "disco://n2:1/vol0/jobs/J@1/w41/reduce-0-0.drec"
    results = ["disco://n1:1/vol0/jobs/J@1/w7/reduce-1-0.drec",
               "disco://n1:1/vol0/jobs/J@1/w9/reduce-0-0.drec"]
    assert jt.current_result(results, old) == results[1]
    assert jt.current_result(results, "disco://n2:1/vol0/jobs/J@2/w41/reduce-0-0.drec") is None
    assert jt.current_result(results, results[0]) == results[0]
    assert jt.current_result(["raw://x"], "raw://y") is None


def test_running_tasks_lists_what_runs_and_is_not_yet_reported_done():
    cluster = Cluster(["n1:1", "n2:1"])
    header = {"inputs": [f"raw://{i}" for i in range(6)], "has_map": True, "has_reduce": False,
              "partitions": 1}
    cluster.commit(en.Submit("J@1", header, "d" * 64, 0.0))
    running = sorted((task["id"], node) for node, task in cluster.assigned)
    assert len(running) == 4 and cluster.table.running_tasks() == running  # 2 slots a node
    node, task = cluster.assigned.pop(0)
    cluster.step(core.TaskReported(task["id"], node))  # done, not yet committed: its slot is free
    running.remove((task["id"], node))
    assert sorted(cluster.table.running_tasks()) == sorted(
        running + [(t["id"], n) for n, t in cluster.assigned if (t["id"], n) not in running])
    cluster.commit(en.Done(task["id"], node, ()))
    assert (task["id"], node) not in cluster.table.running_tasks()
