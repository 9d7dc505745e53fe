"""The user's code on the node (real daemons): tracebacks that show the user's source,
``required_modules`` bound into job functions' globals, ``profile=True`` stats as out-of-band
values, the classic worker's helpers, workers that import the daemon's own ``disco``, and
results read over a corrupt replica."""
from __future__ import annotations

import importlib
import io
import linecache
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from disco.core import Disco, Job, result_iterator
from disco.error import JobError, RecordFormatError
from disco.util import kvgroup
from disco.worker.classic.worker import Worker

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def user_module(tmp_path):
    """``make(name, source)`` writes a module of the user's, imports it, and takes it away
    again at the end of the test."""
    made = []
    sys.path.insert(0, str(tmp_path))

    def make(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        made.append(name)
        return importlib.import_module(name)

    yield make
    sys.path.remove(str(tmp_path))
    for name in made:
        sys.modules.pop(name, None)


TRACEBACK_MODULE = '''\
    class Fatal(Exception):
        retryable = False


    def bad_map(line, params):
        words = line.split()
        raise Fatal(f"no good: {len(words)} words")
        yield
    '''


def test_a_traceback_names_the_users_file_and_line_with_its_source(node, user_module):
    mod = user_module("usermod_tb", TRACEBACK_MODULE)
    path = mod.__file__
    linecache.getlines(path)  # what the client's own tracebacks would show ...
    Path(path).rename(path + ".moved")  # ... but no node can read the file any more
    job = Job(master=node.address).run(input=["raw://a b c"], map=mod.bad_map)
    with pytest.raises(JobError) as err:
        job.wait(timeout=60)
    tb = err.value.traceback
    assert f'File "{path}", line 7, in bad_map' in tb, tb
    assert 'raise Fatal(f"no good: {len(words)} words")' in tb, tb
    assert "Fatal: no good: 3 words" in tb


def test_required_modules_are_bound_into_the_functions_globals(node, user_module):
    user_module("usermod_req", '''\
        SCALE = 7

        def scaled(n):
            return n * SCALE
        ''')

    def map(line, params):  # neither name is imported here nor in this file
        yield line, usermod_req.scaled(len(line)) + int(math.sqrt(16))  # noqa: F821

    job = Job(master=node.address).run(input=["raw://abc"], map=map,
                                        required_modules=["usermod_req", "math"])
    assert list(result_iterator(job.wait(timeout=60))) == [("abc", 3 * 7 + 4)]


def test_modules_imported_at_the_top_of_the_users_file_work_without_naming_them(
        node, user_module):
    helper = user_module("usermod_helper", '''\
        def double(n):
            return 2 * n
        ''')
    # a module of the user's whose functions use what it imported at its top
    mod = user_module("usermod_top", '''\
        import math
        import usermod_helper


        def map(line, params):
            yield line, usermod_helper.double(int(math.floor(len(line) + 0.5)))
        ''')
    assert mod.usermod_helper is helper
    job = Job(master=node.address).run(input=["raw://abcd"], map=mod.map)
    assert list(result_iterator(job.wait(timeout=60))) == [("abcd", 8)]


def wc_map(line, params):
    for word in line.split():
        yield word, 1


def wc_reduce(iter, params):
    for word, counts in kvgroup(sorted(iter)):
        yield word, sum(counts)


def test_profile_stats_merge_every_tasks_dump(node):
    job = Job(master=node.address).run(input=["raw://a b a", "raw://b c"], map=wc_map,
                                        reduce=wc_reduce, partitions=2, profile=True,
                                        split_size=None)
    assert dict(result_iterator(job.wait(timeout=60))) == {"a": 2, "b": 2, "c": 1}
    keys = job.oob_list()
    assert sorted(k for k in keys if k.startswith("profile-map")) == ["profile-map-0",
                                                                      "profile-map-1"]
    assert any(k.startswith("profile-reduce-") for k in keys)
    out = io.StringIO()
    stats = Disco(node.address).profile_stats(job.name, "map", stream=out)
    stats.print_stats()
    text = out.getvalue()
    assert "wc_map" in text and "cumulative" in text
    assert "wc_reduce" not in text  # only the map tasks' dumps
    assert stats.total_calls > 0
    with pytest.raises(JobError):
        job.profile_stats("nosuchstage")


def helpers_map(line, params):
    from disco.worker.classic import worker
    worker.put(f"seen-{worker.this_partition()}", line)
    yield "name", worker.this_name()
    yield "master", worker.this_master()
    yield "host", worker.this_host()
    yield "inputs", worker.this_inputs()


def helpers_reduce(iter, params):
    from disco.worker.classic import worker
    yield "got", worker.get("seen-0").decode()
    yield "partition", worker.this_partition()
    yield from iter


def test_classic_worker_helpers_inside_tasks(node):
    job = Job(master=node.address, worker=Worker(reduce=helpers_reduce)).run(
        input=["raw://hello"], map=helpers_map)
    got = dict(result_iterator(job.wait(timeout=60)))
    assert got == {"name": job.name, "master": node.address, "host": node.address,
                   "inputs": ["raw://hello"], "got": "hello", "partition": 0}
    assert job.oob_get("seen-0") == b"hello"
    assert "seen-0" in job.oob_list()


def env_map(line, params):
    import os
    yield from wc_map(line, params)
    yield "safe", os.environ.get("PYTHONSAFEPATH", "unset")


def test_workers_import_the_daemons_disco_not_a_fake_in_the_daemons_directory(
        node_factory, tmp_path, monkeypatch):
    """The daemon runs in a directory holding a fake ``disco`` package (its data dir: the
    workers' working directory), and its PYTHONPATH names another one after the real root."""
    home = tmp_path / "home"
    for place in (home, tmp_path / "other"):
        (place / "disco").mkdir(parents=True)
        (place / "disco" / "__init__.py").write_text("raise ImportError('fake disco')\n")
    from conftest import child_env, stop_group
    from disco.embedded import free_port_pair
    port = free_port_pair()
    env = child_env()
    env["PYTHONPATH"] = f"{ROOT}:{tmp_path / 'other'}"
    # -P: the daemon itself does not put its directory first (bin/disco's job, not ours)
    proc = subprocess.Popen([sys.executable, "-P", "-m", "disco.cli", "nodaemon", "--no-console",
                             "--port", str(port), "--data", str(home), "--workers", "1"],
                            env=env, cwd=home, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "err", "wb"),
                            start_new_session=True)
    try:
        from disco.client import answers
        from conftest import wait_for
        wait_for(lambda: answers(f"127.0.0.1:{port}", 0.3) or proc.poll() is not None, 30,
                 "the node to answer")
        assert proc.poll() is None, (tmp_path / "err").read_text()
        job = Job(master=f"127.0.0.1:{port}").run(input=["raw://x y x"], map=env_map)
        # and what the task itself sees of the environment is the user's
        assert sorted(result_iterator(job.wait(timeout=60))) == [
            ("safe", "unset"), ("x", 1), ("x", 1), ("y", 1)]
    finally:
        stop_group(proc)


def test_results_read_over_a_corrupt_replica_continue_from_the_next(node, tmp_path):
    from disco.worker.replicas import iter_replicas
    from disco.worker import task_io
    from mesh.transfer import open_disco
    words = " ".join(f"w{i}" for i in range(3000))
    job = Job(master=node.address).run(input=[f"raw://{words}"], map=wc_map)
    [url] = job.wait(timeout=60)
    path = node.data / url.split("/", 3)[3]
    copy = tmp_path / "corrupt.drec"
    shutil.copy(path, copy)
    data = bytearray(copy.read_bytes())
    data[-5] ^= 0xFF  # inside the last frame: the earlier frames read fine
    copy.write_bytes(bytes(data))
    task_io.register_scheme("disco", lambda u: open_disco(u, None, None))
    expected = list(result_iterator([url]))
    assert len(expected) == 3000
    alone = []
    with pytest.raises(RecordFormatError):  # the corrupt copy fails part way through
        for pair in iter_replicas([str(copy)]):
            alone.append(pair)
    assert 0 < len(alone) < 3000 and alone == expected[:len(alone)]
    assert list(iter_replicas([str(copy), url])) == expected
    # a copy on a node that is gone: the next one is read
    from disco.embedded import free_port_pair
    gone = url.replace(node.address, f"127.0.0.1:{free_port_pair()}")
    started = time.monotonic()
    assert list(iter_replicas([gone, url])) == expected
    assert time.monotonic() - started < 60
