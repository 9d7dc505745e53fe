"""Disco's pipeline model against real node daemons: every grouping on one node and on three.

Each job: ``map`` (split) emits ``(word, 1)`` under label ``len(word) % 3``; ``mid`` (the
grouping under test, combining and sorting) sums per word within its task; ``final``
(group_all) sums everything. The final counts must be the plain word counts, and the number
of ``mid`` tasks (and where they ran) must be what the grouping says for the map outputs.
"""
from __future__ import annotations

import collections
import re

import pytest

from disco.core import Job, result_iterator
from disco.error import JobError, UsageError
from disco.util import kvgroup
from disco.worker.pipeline.worker import Stage

pytestmark = pytest.mark.cluster

TEXTS = ["a bb ccc dddd a bb", "eeeee a ccc", "bb bb ff", "ggg a", "hh iii jjjj", "a a a"]
EXPECTED = dict(collections.Counter(w for t in TEXTS for w in t.split()))


def split_words(interface, state, label, inp):
    for line in inp:
        for word in line.split():
            interface.output(len(word) % 3).add(word, 1)


def sum_words(interface, state, label, inp):
    out = interface.output(0)
    for word, ones in kvgroup(inp):
        out.add(word, sum(ones))


def total_init(interface, params):
    return collections.Counter()


def total(interface, state, label, inp):
    for word, n in inp:
        state[word] += n


def total_done(interface, state):
    out = interface.output(0)
    for word in sorted(state):
        out.add(word, state[word])


def pipeline_of(grouping: str) -> list:
    return [("split", Stage("map", process=split_words)),
            (grouping, Stage("mid", process=sum_words, combine=True, sort=True)),
            ("group_all", Stage("final", init=total_init, process=total, done=total_done))]


def expected_mid_tasks(grouping: str, map_outputs: list) -> int:
    keys = []
    for url in map_outputs:
        host = url.split("/")[2]
        label = int(re.search(r"-(\d+)\.drec$", url)[1])
        keys.append({"split": url, "group_label": label, "group_node": host,
                     "group_node_label": (host, label), "group_all": 0}[grouping])
    return len(set(keys))


def run_and_check(master: str, grouping: str) -> None:
    job = Job(master=master).run(input=[f"raw://{t}" for t in TEXTS],
                                 pipeline=pipeline_of(grouping))
    results = job.wait(timeout=120)
    assert dict(result_iterator(results)) == EXPECTED
    maps = job.stageresults("map")
    assert len(maps) >= len(TEXTS)  # each map wrote one output per label it saw
    mids = {e["task"]: e for e in job.event_records()
            if e["type"] == "task_started" and e.get("stage") == "mid"}
    assert len(mids) == expected_mid_tasks(grouping, maps), (grouping, maps, mids)
    if grouping == "group_node":
        # a node's task runs on the node that holds its inputs (group_node_label's tasks of
        # one node may run elsewhere while that node's slot is busy: they prefer it, no more)
        assert all("(input local)" in e["msg"] for e in mids.values()), mids
    rows = {row[0]: row for row in job.jobinfo()["pipeline"]}
    assert list(rows) == ["map", "mid", "final"]
    assert rows["final"][4] == 1 and rows["map"][4] == len(TEXTS)


@pytest.mark.parametrize("grouping", ["split", "group_label", "group_node",
                                      "group_node_label", "group_all"])
def test_every_grouping_on_one_node(node, grouping):
    run_and_check(node.address, grouping)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three joined nodes for the module (started once: five groupings run on them)."""
    from tests.conftest import joined_nodes
    with joined_nodes(tmp_path_factory, 3, name="pipe-node") as nodes:
        yield nodes


@pytest.mark.parametrize("grouping", ["split", "group_label", "group_node",
                                      "group_node_label", "group_all"])
def test_every_grouping_on_three_nodes(three, grouping):
    run_and_check(three[0].address, grouping)


def test_maps_spread_over_three_nodes_and_group_node_runs_on_each(three):
    job = Job(master=three[1].address).run(input=[f"raw://{t}" for t in TEXTS * 3],
                                           pipeline=pipeline_of("group_node"))
    assert dict(result_iterator(job.wait(timeout=120))) == {
        w: 3 * n for w, n in EXPECTED.items()}
    map_nodes = {e["node"] for e in job.event_records()
                 if e["type"] == "task_started" and e.get("stage") == "map"}
    mid_nodes = [e["node"] for e in job.event_records()
                 if e["type"] == "task_started" and e.get("stage") == "mid"]
    assert sorted(mid_nodes) == sorted(map_nodes)  # one per node that ran maps, on it


def test_a_stage_with_no_inputs_has_no_tasks_nor_do_the_stages_after_it(node):
    def nothing(interface, state, label, inp):
        for _ in inp:
            pass

    def count_done(interface, state):
        interface.output(0).add("inputs", 0)

    job = Job(master=node.address).run(
        input=["raw://x"], pipeline=[("split", Stage("map", process=nothing)),
                                     ("group_label", Stage("never", process=nothing)),
                                     ("group_all", Stage("last", done=count_done))])
    # "never" gets no inputs (map wrote nothing): no tasks; so neither has "last"
    assert list(result_iterator(job.wait(timeout=60))) == []


def test_bytes_lines_and_input_hook_order(node):
    def first(interface, state, label, inp):
        for line in inp:
            assert isinstance(line, bytes), type(line)
            interface.output(int(line)).add(int(line), line.strip())

    def reverse(state, labels):
        return sorted(labels, reverse=True)

    def seen_init(interface, params):
        return []

    def seen(interface, state, label, inp):
        state.append(label)

    def seen_done(interface, state):
        interface.output(0).add("order", state)

    class Ordered(Job):
        lines = bytes
        pipeline = [("split", Stage("map", process=first)),
                    ("group_all", Stage("all", init=seen_init, process=seen, done=seen_done,
                                        input_hook=reverse, combine=True))]

    job = Ordered(master=node.address).run(input=["raw://1\n", "raw://0\n", "raw://2\n"])
    assert list(result_iterator(job.wait(timeout=60))) == [("order", [2, 1, 0])]


def test_pipeline_mistakes_are_usage_errors(node):
    with pytest.raises(UsageError, match="unknown grouping"):
        Job(master=node.address).run(input=["raw://x"], pipeline=[("group_sky", Stage("a"))])
    with pytest.raises(UsageError, match="twice"):
        Job(master=node.address).run(input=["raw://x"], pipeline=[
            ("split", Stage("a")), ("group_all", Stage("a"))])
    with pytest.raises(UsageError, match="Stage"):
        Job(master=node.address).run(input=["raw://x"], pipeline=[("split", split_words)])


def test_a_failing_stage_fails_the_job_naming_its_task(node):
    def boom(interface, state, label, inp):
        raise ValueError("stage went wrong")

    job = Job(master=node.address).run(input=["raw://x"], pipeline=[
        ("split", Stage("map", process=split_words)), ("group_all", Stage("bad", process=boom))])
    with pytest.raises(JobError) as err:
        job.wait(timeout=120)
    assert ":bad:0" in (err.value.task or "") and "stage went wrong" in str(err.value.traceback)


def test_the_kmeans_example_finds_the_centres(node, tmp_path):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "examples" / "kmeans.py"
    spec = importlib.util.spec_from_file_location("kmeans_example", path)
    kmeans = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kmeans)
    points = tmp_path / "points.txt"
    truth = kmeans.generate(points, 1500, 3)
    start = [[p - 1.5 for p in c] for c in truth]  # near, not at, the truth
    # two inputs: the assign stage has two tasks, update adds their partial sums
    half = tmp_path / "half.txt"
    half.write_text(points.read_text())
    found = kmeans.kmeans([str(points), str(half)], start, 4, master=node.address)
    for got, want in zip(sorted(found), sorted(truth)):
        assert all(abs(g - w) < 0.2 for g, w in zip(got, want)), (found, truth)
