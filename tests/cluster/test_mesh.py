"""Several real daemons on loopback: join, master, scheduling across nodes, node loss (SPEC §2, §9)."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import zmq

from conftest import child_env, run_cli, status_of, wait_for
from disco.embedded import free_port_pair
from disco.core import Disco, Job, result_iterator
from disco.util import kvgroup
from disco.worker.classic.func import sum_combiner
from mesh import message as m

pytestmark = pytest.mark.cluster






def states(node) -> dict:
    return {x["name"]: x["state"] for x in status_of(node)["members"]}


@pytest.fixture
def trio(node_factory):
    first = node_factory(workers=1)
    others = [node_factory(workers=1, args=("--join", first.address)) for _ in range(2)]
    nodes = [first, *others]
    names = {n.address for n in nodes}
    for n in nodes:
        wait_for(lambda n=n: {k for k, v in states(n).items() if v == "alive"} == names,
                 what=f"{n.address} to see all three alive")
    # voters are added one at a time after a member is seen alive; a trio whose third member
    # is not a voter yet cannot survive the loss of the founder, so wait until all three vote
    wait_for(lambda: all(len(status_of(n)["voters"]) == 3 for n in nodes),
             what="all three to be voters")
    return nodes


def test_three_nodes_join_and_agree_on_one_master(trio, node_factory):
    views = [status_of(n) for n in trio]
    assert {v["master"] for v in views} == {trio[0].address}
    assert len({v["term"] for v in views}) == 1 and views[0]["term"] >= 1
    for view in views:
        assert sum(x["master"] for x in view["members"]) == 1
        assert all(x["slots"]["total"] == 1 for x in view["members"])
    # a late node joins through a non-master and learns everybody
    late = node_factory(workers=1, args=("--join", trio[2].address))
    wait_for(lambda: len([s for s in states(late).values() if s == "alive"]) == 4,
             what="the late node to see four members")
    wait_for(lambda: status_of(late)["master"] == trio[0].address, 5, "the late node's master")
    out = json.loads(run_cli("status", "--port", late.port, "--json").stdout)
    assert len(out["members"]) == 4


def words_map(line, params):
    for word in line.split():
        yield word, 1


def words_reduce(iter, params):
    for word, counts in kvgroup(sorted(iter)):
        yield word, sum(counts)


def slow_words_map(line, params):
    import time
    time.sleep(0.05)
    for word in line.split():
        yield word, 1


def make_inputs(tmp_path, n: int, lines: int = 20) -> tuple[list[str], dict]:
    paths, counter = [], collections.Counter()
    for i in range(n):
        text = "\n".join(f"w{(i * 7 + j) % 23} common x{j % 5}" for j in range(lines)) + "\n"
        counter.update(text.split())
        path = tmp_path / f"in{i}.txt"
        path.write_text(text)
        paths.append(str(path))
    return paths, dict(counter)


def test_job_through_a_non_master_runs_on_all_nodes(trio, tmp_path):
    inputs, expected = make_inputs(tmp_path, 9)
    job = Job(master=trio[2].address).run(input=inputs, map=slow_words_map, reduce=words_reduce,
                                          combiner=sum_combiner, partitions=3)
    results = job.wait(timeout=60)
    assert dict(result_iterator(results)) == expected
    started = [e for e in job.event_records() if e["type"] == "task_started"]
    assert {e["node"] for e in started} == {n.address for n in trio}
    assert {u.split("/")[2] for u in results} <= {n.address for n in trio}


def test_kill_9_of_a_node_mid_map_gives_exact_counts(trio, tmp_path):
    inputs, expected = make_inputs(tmp_path, 12, lines=40)
    job = Job(master=trio[0].address).run(input=inputs, map=slow_words_map, reduce=words_reduce,
                                          partitions=2)
    victim = trio[2]
    wait_for(lambda: any(e["type"] == "task_done" and e.get("node") == victim.address
                         for e in job.event_records()), what="a map to finish on the victim")
    os.killpg(victim.proc.pid, signal.SIGKILL)
    results = job.wait(timeout=90)
    pairs = list(result_iterator(results))
    assert len(pairs) == len({k for k, _ in pairs})  # no duplicate records
    assert dict(pairs) == expected
    assert all(victim.address not in u for u in results)
    wait_for(lambda: states(trio[0]).get(victim.address) == "dead", 10, "the victim to be dead")
    assert any(e["type"] == "task_requeued" for e in job.event_records())


def test_stopped_node_is_left_and_its_tasks_are_not_failures(trio, tmp_path):
    inputs, expected = make_inputs(tmp_path, 12, lines=40)
    job = Job(master=trio[0].address).run(input=inputs, map=slow_words_map, reduce=words_reduce)
    leaver = trio[1]
    wait_for(lambda: any(e["type"] == "task_started" and e.get("node") == leaver.address
                         for e in job.event_records()), what="a task to start on the leaver")
    leaver.proc.send_signal(signal.SIGTERM)
    assert leaver.proc.wait(20) == 0
    assert dict(result_iterator(job.wait(timeout=90))) == expected
    assert not any(e["type"] == "task_failed" for e in job.event_records())
    for node in (trio[0], trio[2]):
        wait_for(lambda node=node: states(node).get(leaver.address) == "left", 5, "left")
    time.sleep(4)  # longer than the dead timeout: left must stay left
    assert states(trio[0])[leaver.address] == "left"


def test_master_loss_elects_a_new_master_with_a_higher_term(trio):
    old_term = status_of(trio[1])["term"]
    os.killpg(trio[0].proc.pid, signal.SIGKILL)
    survivors = trio[1:]
    alive = {n.address for n in survivors}

    def agreed():
        views = [status_of(n) for n in survivors]
        masters = {v["master"] for v in views}
        return len(masters) == 1 and masters <= alive and views[0]

    new = wait_for(agreed, 10, "one new master on both survivors")
    assert new["term"] > old_term
    job = Job(master=trio[2].address).run(input=["raw://a b a"], map=words_map,
                                          reduce=words_reduce)
    assert dict(result_iterator(job.wait(timeout=30))) == {"a": 2, "b": 1}


def test_blacklisted_node_gets_no_tasks(trio, tmp_path):
    disco = Disco(trio[1].address)
    disco.blacklist(trio[2].address)
    inputs, expected = make_inputs(tmp_path, 6)
    job = Job(master=trio[1].address).run(input=inputs, map=words_map, reduce=words_reduce)
    assert dict(result_iterator(job.wait(timeout=60))) == expected
    nodes = {e["node"] for e in job.event_records() if e["type"] == "task_started"}
    assert trio[2].address not in nodes
    info = disco.node_table()
    assert [n["blacklisted"] for n in info["nodes"] if n["address"] == trio[2].address] == [True]
    assert disco.nodeinfo()[trio[2].address]["blacklisted"] is True  # Disco's shape


def slow_reduce(iter, params):
    import time
    for word, counts in kvgroup(sorted(iter)):
        time.sleep(0.02)
        yield word, sum(counts)


def test_kill_9_of_a_node_mid_reduce_gives_exact_counts(trio, tmp_path):
    inputs, expected = make_inputs(tmp_path, 6, lines=200)
    job = Job(master=trio[0].address).run(input=inputs, map=words_map, reduce=slow_reduce,
                                          partitions=3)
    victims = [n for n in trio[1:]]

    def reduce_running_on_victim():
        for e in job.event_records():
            if e["type"] == "task_started" and e.get("stage") == "reduce":
                for v in victims:
                    if e.get("node") == v.address:
                        return v
        return None

    victim = wait_for(reduce_running_on_victim, 30, "a reduce on a non-master node")
    os.killpg(victim.proc.pid, signal.SIGKILL)
    try:
        results = job.wait(timeout=40)
    except Exception:
        for e in job.event_records():
            print(round(e["time"] % 1000, 2), e["type"], e.get("node"), e["msg"])
        raise
    pairs = list(result_iterator(results))
    assert len(pairs) == len({k for k, _ in pairs})
    assert dict(pairs) == expected


def test_a_finished_jobs_result_on_a_lost_node_is_made_again_when_read(trio, tmp_path):
    inputs, expected = make_inputs(tmp_path, 6, lines=100)
    master = trio[0].address
    job = Job(master=master).run(input=inputs, map=words_map, reduce=words_reduce,
                                 partitions=3)
    results = job.wait(timeout=60)
    hosts = {url.split("/")[2] for url in results}
    victim = next((n for n in trio[1:] if n.address in hosts), None)
    if victim is None:  # every result on the master: nothing to lose without losing it
        pytest.skip(f"the scheduler put every result on the master ({results})")
    os.killpg(victim.proc.pid, signal.SIGKILL)
    wait_for(lambda: states(trio[0]).get(victim.address) == "dead", 20,
             f"{victim.address} to be seen dead")
    # the old result list, read after the loss: what was on the victim is made again
    pairs = list(result_iterator(results, ddfs=master))
    assert len(pairs) == len({k for k, _ in pairs})
    assert dict(pairs) == expected
    types = [e["type"] for e in job.event_records()]
    assert "job_remaking" in types and "job_remade" in types
    assert all(victim.address not in url for url in job.wait(timeout=10))


def test_restarted_node_rejoins_with_a_higher_incarnation(trio, node_factory):
    node = trio[1]
    before = {x["name"]: x for x in status_of(trio[0])["members"]}[node.address]["incarnation"]
    node.proc.send_signal(signal.SIGTERM)
    node.proc.wait(20)
    wait_for(lambda: states(trio[0]).get(node.address) == "left", 5, "left")
    proc = subprocess.Popen(
        [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--port", str(node.port),
         "--data", str(node.data), "--workers", "1", "--join", trio[0].address],
        env=child_env(), start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    node.proc = proc  # the fixture stops it
    wait_for(lambda: states(trio[0]).get(node.address) == "alive", 10, "the node to rejoin")
    after = {x["name"]: x for x in status_of(trio[0])["members"]}[node.address]["incarnation"]
    assert after > before


def test_joining_a_cluster_of_another_python_is_refused(tmp_path):
    port = free_port_pair()
    fake = zmq.Context.instance().socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    fake.bind(f"tcp://127.0.0.1:{port}")
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--port",
             str(free_port_pair()), "--data", str(tmp_path / "n"), "--join", f"127.0.0.1:{port}"],
            env=child_env(), stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert fake.poll(10000)
        ident, frame = fake.recv_multipart()
        hello = m.decode(frame)
        fake.send_multipart([ident, m.encode(m.Reply(rid=hello.rid, body={
            "version": m.VERSION, "python": "2.7", "node": "old", "master": None}))])
        _, err = child.communicate(timeout=20)
        assert child.returncode != 0
        assert "2.7" in err and f"{sys.version_info.major}.{sys.version_info.minor}" in err
    finally:
        fake.close()


def test_kill_9_of_the_master_mid_job_gives_identical_output(trio, tmp_path):
    inputs, expected = make_inputs(tmp_path, 12, lines=40)
    reference = Job(master=trio[1].address).run(input=inputs, map=slow_words_map,
                                                reduce=words_reduce, partitions=3)
    baseline = list(result_iterator(reference.wait(timeout=60)))
    master = next(n for n in trio if status_of(n)["master"] == n.address)
    client_via = next(n for n in trio if n is not master)
    job = Job(master=client_via.address).run(input=inputs, map=slow_words_map,
                                             reduce=words_reduce, partitions=3)
    wait_for(lambda: sum(e["type"] == "task_done" for e in job.event_records()) >= 3, 20,
             "three maps to finish")
    os.killpg(master.proc.pid, signal.SIGKILL)
    results = job.wait(timeout=90)  # the client finds the new master by itself
    assert list(result_iterator(results)) == baseline  # same records, same order
    assert dict(baseline) == expected
    assert master.address not in {u.split("/")[2] for u in results}
    survivors = [n for n in trio if n is not master]
    assert {status_of(n)["master"] for n in survivors} <= {n.address for n in survivors}
    history = {j["job"] for j in Disco(client_via.address).jobs()}
    assert {reference.name, job.name} <= history  # job history survived the failover
    # the new master's events never hand a task to the master that was lost
    started = [e for e in job.event_records() if e["type"] == "task_started"]
    assert started and all(e["node"] != master.address for e in started), started


def test_paused_master_steps_down_and_its_stale_term_is_refused(trio, tmp_path):
    master = next(n for n in trio if status_of(n)["master"] == n.address)
    others = [n for n in trio if n is not master]
    old_term = status_of(others[0])["term"]
    os.kill(master.proc.pid, signal.SIGSTOP)
    try:
        new = wait_for(lambda: (lambda v: v["master"] not in (None, master.address) and v)(
            status_of(others[0])), 10, "a new master while the old one is paused")
        assert new["term"] > old_term
    finally:
        os.kill(master.proc.pid, signal.SIGCONT)
    # the old master wakes up, hears the new term and follows; there is one master
    wait_for(lambda: status_of(master)["master"] == new["master"], 10, "the old master to follow")
    masters = {status_of(n)["master"] for n in trio}
    assert masters == {new["master"]}
    # a command in the old term is refused (commands are one-way: the refusal is logged)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"tcp://127.0.0.1:{others[0].port}")
    sock.send(m.encode(m.Assign(term=old_term, master=master.address,
                                task={"id": "x:map:0", "job": "x", "stage": "map"})))
    wait_for(lambda: "stale_term_refused" in others[0].log_text(), 5, "the refusal to be logged")
    sock.close()
    inputs, expected = make_inputs(tmp_path, 3)
    job = Job(master=master.address).run(input=inputs, map=words_map, reduce=words_reduce)
    assert dict(result_iterator(job.wait(timeout=60))) == expected


def test_five_nodes_converge_and_share_a_job(node_factory, tmp_path):
    first = node_factory(workers=1)
    nodes = [first] + [node_factory(workers=1, args=("--join", first.address)) for _ in range(4)]
    names = {n.address for n in nodes}
    for n in nodes:
        wait_for(lambda n=n: {k for k, v in states(n).items() if v == "alive"} == names, 20,
                 f"{n.address} to see all five alive")
    wait_for(lambda: len({status_of(n)["master"] for n in nodes}) == 1, 10, "one master")
    inputs, expected = make_inputs(tmp_path, 15)
    job = Job(master=nodes[4].address).run(input=inputs, map=slow_words_map, reduce=words_reduce,
                                           partitions=5)
    assert dict(result_iterator(job.wait(timeout=90))) == expected
    ran_on = {e["node"] for e in job.event_records() if e["type"] == "task_started"}
    assert len(ran_on) >= 4  # spread over the cluster (one node may stay busy elsewhere)


def test_dead_voters_are_dropped_so_losses_one_after_another_keep_a_master(node_factory,
                                                                             tmp_path):
    env = {"DISCO_DEAD_VOTER_S": 2}
    first = node_factory(workers=1, **env)
    nodes = [first] + [node_factory(workers=1, args=("--join", first.address), **env)
                       for _ in range(3)]
    names = {n.address for n in nodes}
    wait_for(lambda: {k for k, v in states(first).items() if v == "alive"} == names, 20, "four")
    master = status_of(first)["master"]
    victims = [n for n in nodes if n.address != master][:2]
    for victim in victims:  # 4 voters -> 3 -> 2: a majority remains after each loss
        os.killpg(victim.proc.pid, signal.SIGKILL)
        wait_for(lambda v=victim: v.address not in voters_of(first) and len(voters_of(first)) > 1,
                 20,
                 f"{victim.address} to stop being a voter")
    survivors = [n for n in nodes if n not in victims]
    job = Job(master=survivors[0].address).run(input=["raw://a b a"], map=words_map,
                                               reduce=words_reduce)
    assert dict(result_iterator(job.wait(timeout=60))) == {"a": 2, "b": 1}


def voters_of(node) -> set:
    return set(status_of(node)["voters"])
