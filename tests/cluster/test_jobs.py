"""The classic API against one real node daemon (SPEC §4, §7, §9)."""
from __future__ import annotations

import collections
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from disco.core import Disco, Job, result_iterator
from disco.error import JobError, UsageError
from disco.util import kvgroup
from disco.worker.classic.func import sum_combiner

pytestmark = pytest.mark.cluster

TEXT = "the quick brown fox\njumps over the lazy dog\nthe end\n"


def wc_map(line, params):
    for word in line.split():
        yield word, 1


def wc_reduce(iter, params):
    for word, counts in kvgroup(sorted(iter)):
        yield word, sum(counts)


def expected_counts(*texts) -> dict:
    return dict(collections.Counter(w for t in texts for w in t.split()))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_word_count_exact_over_several_inputs_and_partitions(node, tmp_path):
    texts = [TEXT * (i + 1) + f"extra{i} " * i for i in range(4)]
    inputs = [write(tmp_path, f"in{i}.txt", t) for i, t in enumerate(texts)]
    job = Job(master=node.address).run(input=inputs, map=wc_map, reduce=wc_reduce,
                                        combiner=sum_combiner, partitions=3)
    results = job.wait()
    assert all(u.startswith(f"disco://{node.address}/") for u in results)
    assert dict(result_iterator(results)) == expected_counts(*texts)
    assert job.status() == "finished"
    assert job.name.startswith("Job@")
    lines = [json.loads(x) for x in (node.data / "logs" / "node.jsonl").read_text().splitlines()]
    mine = [x for x in lines if x.get("job") == job.name and x.get("task")]
    assert mine and all(x["node"] == node.address and x["stage"] for x in mine)
    done = [x for x in mine if x["event"] == "task_done"]  # one line a task, said by the node
    assert sorted(x["task"] for x in done) == sorted({x["task"] for x in done})
    assert len(done) == 4 + 3 and all(x["worker"] and "seconds" in x and "records" in x
                                      and "outputs" in x for x in done)


def _fused_tasks(node, job, event: str = "map_fused") -> dict:
    """task -> its ``event`` line in the node's workers.jsonl, for ``job``."""
    path = node.data / "logs" / "workers.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return {x["task"]: x for x in lines if x.get("event") == event and x["job"] == job.name}


def guarded_map(line, params):
    for word in line.split():
        try:
            yield word, 1
        finally:
            pass


def test_a_combined_map_is_fused_in_the_worker_and_counts_the_same_as_unfused(
        node, node_factory, tmp_path):
    texts = [TEXT * (i + 2) + f"odd{i}\n" for i in range(3)]
    inputs = [write(tmp_path, f"in{i}.txt", t) for i, t in enumerate(texts)]
    args = dict(input=inputs, map=wc_map, reduce=wc_reduce, combiner=sum_combiner, partitions=2)
    fused = Job(master=node.address).run(**args)
    got = list(result_iterator(fused.wait()))
    assert dict(got) == expected_counts(*texts)
    assert len(_fused_tasks(node, fused)) == 3  # every map task, from the job pack's source
    off = node_factory(DISCO_FUSE="0")
    plain = Job(master=off.address).run(**args)
    assert list(result_iterator(plain.wait())) == got  # the same pairs in the same order
    assert _fused_tasks(off, plain) == {} == _fused_tasks(off, plain, "map_not_fused")
    words = WordCount(master=node.address).run(input=inputs[:1])  # a staticmethod map
    assert dict(result_iterator(words.wait())) == {
        w.upper(): c for w, c in expected_counts(texts[0]).items()}
    assert len(_fused_tasks(node, words)) == 1
    guarded = Job(master=node.address).run(**{**args, "map": guarded_map})
    assert list(result_iterator(guarded.wait())) == got
    assert _fused_tasks(node, guarded) == {}
    refused = _fused_tasks(node, guarded, "map_not_fused")
    assert len(refused) == 3 and all("yields inside try or with" in x["reason"]
                                     for x in refused.values())


def test_reduce_with_out_arity_custom_partition_and_params(node, tmp_path):
    def partition(key, n, params):
        return len(key) % n

    def reduce(iter, out, params):
        for word, counts in kvgroup(sorted(iter)):
            out.add(word, sum(counts) * params.factor)

    from disco.core import Params
    job = Job(master=node.address).run(input=[write(tmp_path, "a.txt", TEXT)], map=wc_map,
                                        reduce=reduce, partition=partition, partitions=4,
                                        params=Params(factor=10))
    got = dict(result_iterator(job.wait()))
    assert got == {w: c * 10 for w, c in expected_counts(TEXT).items()}


class WordCount(Job):
    partitions = 2
    combiner = staticmethod(sum_combiner)

    @staticmethod
    def map(line, params):
        for word in line.split():
            yield word.upper(), 1

    def reduce(self, iter, params):
        for word, counts in kvgroup(sorted(iter)):
            yield word, sum(counts)


def test_job_subclass_with_staticmethods_and_methods(node, tmp_path):
    job = WordCount(master=node.address).run(input=[write(tmp_path, "a.txt", TEXT)])
    assert job.name.startswith("WordCount@")
    got = dict(result_iterator(job.wait()))
    assert got == {w.upper(): c for w, c in expected_counts(TEXT).items()}


def test_map_only_raw_inputs_map_reader_and_init(node):
    def map_init(iter, params):
        params.seen = "init"

    def map(entry, params):
        yield entry.upper(), params.seen

    job = Job(master=node.address).run(input=["raw://hello", "raw://world"], map=map,
                                        map_init=map_init)
    assert sorted(result_iterator(job.wait())) == [("HELLO", "init"), ("WORLD", "init")]


def gc_map(entry, params):
    import gc
    yield "young", gc.get_threshold()[0]
    yield "frozen", gc.get_freeze_count() > 0


def test_a_task_runs_with_fewer_young_collections_and_the_zygote_frozen(node):
    from disco.worker.runtime import GC_YOUNG
    job = Job(master=node.address).run(input=["raw://x"], map=gc_map)
    assert dict(result_iterator(job.wait())) == {"young": GC_YOUNG, "frozen": True}


def test_chaining_and_sort_true_with_spill(node_factory, tmp_path):
    node = node_factory(DISCO_SORT_MB=1)
    words = [f"k{i % 5000:05d}" for i in range(60000)]
    text = "\n".join(" ".join(words[i:i + 10]) for i in range(0, len(words), 10)) + "\n"
    first = Job(master=node.address).run(input=[write(tmp_path, "w.txt", text)], map=wc_map)

    def passthrough(iter, params):
        last = None
        for key, value in iter:
            assert last is None or last <= key, "reduce input is not sorted"
            last = key
            yield key, value

    second = Job(master=node.address).run(input=first.wait(), reduce=passthrough, sort=True,
                                           reduce_reader=None)
    pairs = list(result_iterator(second.wait()))
    assert len(pairs) == 60000
    assert [k for k, _ in pairs] == sorted(words)


def test_alternative_urls_are_tried_in_turn(node, tmp_path):
    good = write(tmp_path, "good.txt", TEXT)
    job = Job(master=node.address).run(input=[[str(tmp_path / "missing.txt"), good]],
                                        map=wc_map, reduce=wc_reduce)
    assert dict(result_iterator(job.wait())) == expected_counts(TEXT)


@pytest.fixture
def http_server(tmp_path):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def do_GET(self):
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/served.txt")
                self.end_headers()
                return
            ranged = self.headers.get("Range", "")
            path = tmp_path / self.path.lstrip("/")
            if ranged.startswith("bytes=") and path.is_file():  # "bytes=N-": from N to the end
                data = path.read_bytes()[int(ranged[6:].split("-")[0]):]
                self.send_response(206)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            super().do_GET()

        def end_headers(self):
            self.send_header("Accept-Ranges", "bytes")
            super().end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_input_follows_redirects_and_reports_404(node, tmp_path, http_server):
    write(tmp_path, "served.txt", TEXT)
    job = Job(master=node.address).run(input=[f"{http_server}/moved"], map=wc_map,
                                        reduce=wc_reduce)
    assert dict(result_iterator(job.wait())) == expected_counts(TEXT)

    bad = Job(master=node.address).run(input=[f"{http_server}/nope.txt"], map=wc_map)
    with pytest.raises(JobError) as err:
        bad.wait(timeout=60)
    assert "404" in str(err.value) and "nope.txt" in str(err.value)


def flaky_map(line, params):
    marker = Path(params.marker)
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError("transient trouble")
    yield line.strip(), 1


def test_failing_task_is_retried_then_succeeds(node, tmp_path):
    from disco.core import Params
    job = Job(master=node.address).run(input=["raw://x"], map=flaky_map,
                                        params=Params(marker=str(tmp_path / "m")))
    assert list(result_iterator(job.wait())) == [("x", 1)]
    types = [e["type"] for e in job.event_records()]
    assert types.count("task_failed") == 1


def always_raises(line, params):
    raise ValueError("boom in user code")
    yield


def test_task_failing_max_failures_times_fails_job_with_traceback(node_factory):
    node = node_factory(DISCO_MAX_FAILURES=3)
    job = Job(master=node.address).run(input=["raw://payload"], map=always_raises)
    with pytest.raises(JobError) as err:
        job.wait(timeout=60)
    exc = err.value
    assert "boom in user code" in exc.traceback and "always_raises" in exc.traceback
    assert exc.input and "raw://payload" in str(exc.input)
    assert exc.node == node.address
    assert [e["type"] for e in job.event_records()].count("task_failed") == 3
    assert job.status() == "failed"


def dies_once(line, params):
    marker = Path(params.marker)
    if not marker.exists():
        marker.write_text("died")
        os._exit(3)
    yield "ok", 1


def test_worker_death_fails_task_not_daemon(node, tmp_path):
    from disco.core import Params
    job = Job(master=node.address).run(input=["raw://x"], map=dies_once,
                                        params=Params(marker=str(tmp_path / "m")))
    assert list(result_iterator(job.wait(timeout=60))) == [("ok", 1)]
    assert node.alive()
    assert any(e["type"] == "task_failed" for e in job.event_records())


def chatty_map(line, params):
    for i in range(500):
        print(f"progress {i}")
    yield line, 1


def test_prints_reach_events_rate_limited(node):
    job = Job(master=node.address).run(input=["raw://x"], map=chatty_map)
    job.wait(timeout=60)
    messages = [e for e in job.event_records() if e["type"] == "task_message"]
    assert any("progress 0" in e["msg"] for e in messages)
    assert len(messages) < 500  # rate-limited: a burst is summarised, not relayed line by line


def slow_map(line, params):
    import time
    time.sleep(60)
    yield line, 1


def test_concurrent_jobs_kill_and_purge(node, tmp_path):
    slow = Job(master=node.address).run(input=["raw://a"], map=slow_map)
    fast = [Job(master=node.address).run(input=[write(tmp_path, f"f{i}.txt", TEXT)],
                                          map=wc_map, reduce=wc_reduce) for i in range(3)]
    for job in fast:
        assert dict(result_iterator(job.wait(timeout=60))) == expected_counts(TEXT)
    assert slow.status() == "active"
    slow.kill()
    assert slow.status() == "killed"  # kill() returns once the job's end is committed
    with pytest.raises(JobError):
        slow.wait(timeout=10)
    assert slow.status() == "killed"
    fast[0].purge()
    with pytest.raises(UsageError):
        fast[0].status()


def test_stalled_job_says_why_within_seconds(node):
    disco = Disco(node.address)
    disco.blacklist(node.address)
    job = Job(master=node.address).run(input=["raw://x"], map=wc_map)
    with pytest.raises(JobError) as err:
        job.wait(timeout=30)
    assert "node" in str(err.value).lower()
    disco.whitelist(node.address)
    again = Job(master=node.address).run(input=["raw://y"], map=wc_map)
    assert list(result_iterator(again.wait(timeout=30))) == [("y", 1)]


def test_required_files_and_profile(node, tmp_path):
    extra = tmp_path / "lookup.txt"
    extra.write_text("secret-value")

    def map(line, params):
        yield open("lookup.txt").read(), 1

    job = Job(master=node.address).run(input=["raw://x"], map=map, required_files=[str(extra)],
                                        profile=True)
    assert list(result_iterator(job.wait(timeout=60))) == [("secret-value", 1)]
    assert job.oob_list() == ["profile-map-0"]
    stats = job.profile_stats()
    assert any(name == "map" for (_file, _line, name) in stats.stats)


def test_bad_job_arguments_are_refused_in_the_client(node):
    with pytest.raises(UsageError):
        Job(master=node.address).run(input=["raw://x"])
    with pytest.raises(UsageError):
        Job(master=node.address).run(input=["raw://x"], map=wc_map, colour="blue")


def pid_map(line, params):
    yield os.getpid(), 1


def test_a_worker_runs_many_tasks_of_its_job(node):
    job = Job(master=node.address).run(input=[f"raw://{i}" for i in range(12)], map=pid_map)
    pids = {pid for pid, _ in result_iterator(job.wait(timeout=60))}
    # two slots and the node's one spare worker: at most three worker processes served the 12
    # tasks (the spare started for the next job can take a task while a new worker starts)
    assert 1 <= len(pids) <= 3
    again = Job(master=node.address).run(input=["raw://x"], map=pid_map)
    (pid, _), = result_iterator(again.wait(timeout=60))
    assert pid not in pids  # a worker serves one job only


# -- inputs no retry can help fail the job at once, saying why ------------------------------------

def failures_of(job) -> int:
    return [e["type"] for e in job.event_records()].count("task_failed")


def test_hopeless_inputs_fail_fast_with_the_reason(node, tmp_path, http_server):
    missing = Job(master=node.address).run(input=[str(tmp_path / "absent.txt")], map=wc_map)
    with pytest.raises(JobError) as err:
        missing.wait(timeout=60)
    # one node: the only node that could read it cannot, so the first failure is the last
    assert "absent.txt" in str(err.value) and "every node" in str(err.value)
    assert failures_of(missing) == 1

    gone = Job(master=node.address).run(input=[f"{http_server}/nope.txt"], map=wc_map)
    with pytest.raises(JobError, match="404"):
        gone.wait(timeout=60)
    assert failures_of(gone) == 1

    scheme = Job(master=node.address).run(input=["gopher://x/y"], map=wc_map)
    with pytest.raises(JobError, match="unknown URL scheme"):
        scheme.wait(timeout=60)
    assert failures_of(scheme) == 1

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ok\n".encode("latin-1"))
    undecodable = Job(master=node.address).run(input=[str(bad)], map=wc_map)
    with pytest.raises(JobError) as err:
        undecodable.wait(timeout=60)
    assert "byte 3" in str(err.value) and "errors=" in str(err.value) \
        and "bytes" in str(err.value)
    assert failures_of(undecodable) == 1


def test_a_missing_path_is_tried_on_the_other_nodes_first(node_factory, tmp_path):
    first = node_factory(workers=1)
    second = node_factory(workers=1, args=("--join", first.address))
    from tests.conftest import wait_for
    wait_for(lambda: sum(n["scheduled"] for n in Disco(first.address).node_table()["nodes"])
             == 2, what="the master's scheduler to have both nodes' slots")
    job = Job(master=first.address).run(input=[str(tmp_path / "absent.txt")], map=wc_map)
    with pytest.raises(JobError, match="every node"):
        job.wait(timeout=60)
    failed_on = {e["node"] for e in job.event_records() if e["type"] == "task_failed"}
    assert failed_on == {first.address, second.address}, [  # once on each, then no more
        (e["type"], e.get("node"), e["msg"]) for e in job.event_records()]


def bytes_map(line, params):
    assert isinstance(line, bytes), type(line)
    yield line.strip(), 1


def test_bytes_lines_for_a_job_and_for_the_cluster(node_factory, tmp_path):
    path = write(tmp_path, "b.txt", "x\ny\n")
    node = node_factory()
    job = Job(master=node.address).run(input=[path], map=bytes_map, lines=bytes)
    assert sorted(result_iterator(job.wait(timeout=60))) == [(b"x", 1), (b"y", 1)]
    cluster = node_factory(DISCO_LINES="bytes")
    job = Job(master=cluster.address).run(input=[path], map=bytes_map)
    assert sorted(result_iterator(job.wait(timeout=60))) == [(b"x", 1), (b"y", 1)]
    with pytest.raises(UsageError, match="lines"):
        Job(master=node.address).run(input=[path], map=bytes_map, lines="utf-16")


def test_a_big_input_is_split_and_gives_the_same_counts(node, tmp_path):
    import random
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta"]
    text = "".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) + "\n"
                   for _ in range(3000))
    path = write(tmp_path, "big.txt", text)
    whole = Job(master=node.address).run(input=[path], map=wc_map, reduce=wc_reduce,
                                          split_size=None)
    split = Job(master=node.address).run(input=[path], map=wc_map, reduce=wc_reduce,
                                          split_size=4096)
    assert dict(result_iterator(split.wait(timeout=120))) == \
        dict(result_iterator(whole.wait(timeout=120))) == expected_counts(text)
    maps = lambda j: {e["task"] for e in j.event_records()  # noqa: E731
                      if e["type"] == "task_started" and e.get("stage") == "map"}
    assert len(maps(whole)) == 1
    assert len(maps(split)) == -(-len(text.encode()) // 4096)
    # a job that reads its input its own way keeps Disco's one-task-per-input
    def own_reader(fd, size, url, params):
        for line in fd:
            yield line.decode()
    kept = Job(master=node.address).run(input=[path], map=wc_map, map_reader=own_reader,
                                         split_size=4096)
    kept.wait(timeout=120)
    assert len(maps(kept)) == 1


def test_a_big_http_input_is_split_by_range_requests(node, tmp_path, http_server):
    text = "".join(f"word{i % 17} other{i % 5}\n" for i in range(2000))
    write(tmp_path, "served.txt", text)
    job = Job(master=node.address).run(input=[f"{http_server}/served.txt"], map=wc_map,
                                        reduce=wc_reduce, split_size=5000)
    assert dict(result_iterator(job.wait(timeout=120))) == expected_counts(text)
    starts = [e for e in job.event_records() if e["type"] == "task_started"
              and e.get("stage") == "map"]
    assert len(starts) == -(-len(text) // 5000)


def test_job_functions_see_the_names_discos_worker_lent_them(node):
    # written as Disco code often was: time, msg and this_name used without an import
    source = ("def fmap(line, params):\n"
              "    time.sleep(0)\n"
              "    msg('seen ' + line.strip())\n"
              "    yield line.strip(), this_name()\n")
    namespace = {"__name__": "user_job_code_not_importable"}
    exec(compile(source, "user_job.py", "exec"), namespace)
    job = Job(master=node.address).run(input=["raw://x"], map=namespace["fmap"])
    [(key, name)] = list(result_iterator(job.wait(timeout=60)))
    assert key == "x" and name == job.name
    assert any(e["msg"] == "seen x" for e in job.event_records() if e["type"] == "task_message")


def _one_map(entry, params):
    yield entry[:1], 1


def _sum_reduce(iter, params):
    for key, counts in kvgroup(sorted(iter)):
        yield key, sum(counts)


def test_a_task_bigger_than_the_worker_channel_buffer_gets_through(node):
    """The reduce's RunTask names 4,000 map outputs, about 400 KB: more than a socketpair
    takes at once, so the node sends the rest as its worker reads (it polls for POLLOUT); a
    node that did not would leave the reduce waiting for the end of its task forever."""
    inputs = [f"raw://{'ab'[i % 2]}{i}" for i in range(4000)]
    job = Job(master=node.address).run(input=inputs, map=_one_map, reduce=_sum_reduce)
    assert dict(result_iterator(job.wait(timeout=120))) == {"a": 2000, "b": 2000}
