"""Jobs over DDFS on real daemons: ``tag://`` inputs placed near their copies, and
``save_results`` outputs that outlive the node that computed them."""
from __future__ import annotations

import collections
import os
import signal

import pytest

from disco.core import Job, result_iterator
from disco.ddfs import DDFS
from disco.error import UsageError
from disco.util import kvgroup

from conftest import status_of, wait_for

pytestmark = pytest.mark.cluster


def wc_map(line, params):
    for word in line.split():
        yield word, 1


def wc_reduce(iter, params):
    for word, counts in kvgroup(sorted(iter)):
        yield word, sum(counts)






def cluster(node_factory, n: int, workers: int = 2):
    first = node_factory(workers=workers)
    nodes = [first] + [node_factory(workers=workers, args=("--join", first.address))
                       for _ in range(n - 1)]
    names = {x.address for x in nodes}
    for x in nodes:
        wait_for(lambda x=x: {m["name"] for m in status_of(x)["members"]
                              if m["state"] == "alive"} == names, what="all alive")
    wait_for(lambda: all(len(status_of(x)["voters"]) == n for x in nodes), what="all voters")
    ddfs = DDFS(first.address)
    wait_for(lambda: set(ddfs.status()["reported"]) == names, what="every node's blob report")
    return nodes


TEXTS = [" ".join(f"w{(i * 31 + j) % 97}" for j in range(3000)) + "\n" for i in range(6)]


def test_a_job_over_a_tag_reads_every_blob_and_runs_maps_next_to_their_copies(
        node_factory, tmp_path):
    nodes = cluster(node_factory, 3)
    ddfs = DDFS(nodes[0].address)
    paths = []
    for i, text in enumerate(TEXTS):
        path = tmp_path / f"part{i}.txt"
        path.write_text(text)
        paths.append(str(path))
    ddfs.push("data:parts", paths[:4])
    ddfs.push("data:more", paths[4:])
    ddfs.tag("data:all", [["tag://data:parts"], ["tag://data:more"]])  # a tag of tags
    job = Job(master=nodes[0].address).run(input=["tag://data:all"], map=wc_map,
                                            reduce=wc_reduce, partitions=2)
    got = dict(result_iterator(job.wait()))
    assert got == dict(collections.Counter(w for t in TEXTS for w in t.split()))
    starts = [e["msg"] for e in job.event_records() if e["type"] == "task_started"
              and e.get("stage") == "map"]
    assert len(starts) == 6
    # every blob has a copy on every one of the three nodes: each map's input is local
    assert all(s.endswith("(input local)") for s in starts), starts


def test_a_missing_tag_as_input_is_a_usage_error(node_factory):
    nodes = cluster(node_factory, 1)
    with pytest.raises(UsageError, match="no such tag"):
        Job(master=nodes[0].address).run(input=["tag://nothing:here"], map=wc_map)


def test_saved_results_are_a_tag_and_survive_the_loss_of_the_node_that_made_them(
        node_factory, tmp_path):
    nodes = cluster(node_factory, 4, workers=1)
    inputs = []
    for i, text in enumerate(TEXTS[:3]):
        path = tmp_path / f"in{i}.txt"
        path.write_text(text)
        inputs.append(str(path))
    master = nodes[0].address
    job = Job(master=master).run(input=inputs, map=wc_map, reduce=wc_reduce, partitions=2,
                                 save_results=True)
    results = job.wait()
    assert results == [f"tag://disco:results:{job.name}"]
    ddfs = DDFS(master)
    sets = ddfs.blobs(results[0])
    assert len(sets) == 2, (ddfs.get(results[0]), [e["msg"] for e in job.event_records()])
    assert len(sets) == 2 and all(len(set(s)) == 3 for s in sets)
    want = dict(collections.Counter(w for t in TEXTS[:3] for w in t.split()))
    assert dict(result_iterator(results, ddfs=master)) == want
    # kill -9 every node that ran a reduce task, except the first (it answers the client)
    reducers = {e["node"] for e in job.event_records() if e["type"] == "task_started"
                and e.get("stage") == "reduce"}
    victims = [n for n in nodes[1:] if n.address in reducers] or [nodes[1]]
    for victim in victims[:1]:
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
    alive = next(n for n in nodes if n.alive())
    assert dict(result_iterator(results, ddfs=alive.address)) == want
    # and once repaired, every copy the tag names is on a live node
    live = {n.address for n in nodes if n.alive()}
    wait_for(lambda: all(url.split("/")[2] in live for s in DDFS(alive.address).blobs(results[0])
                         for url in s), 60, "the results' tag to name live copies only")
