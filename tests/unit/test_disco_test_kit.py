"""disco.test: Disco's kit for job tests, with a classic job on an embedded cluster."""
from __future__ import annotations

import os
import signal
import sys
import time
import types
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import disco.test
from disco.error import CommError, NoAnswer
from disco.settings import DiscoSettings
from disco.test import FailedReply, TestCase, TestJob, TestPipe, TestServer
from disco.util import kvgroup, load_oob, save_oob

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


# -- TestServer ---------------------------------------------------------------------------------

def test_server_answers_serve_and_gives_urls():
    def serve(path):
        if path == "fail":
            raise FailedReply("asked to fail")
        return b"\xffbytes" if path == "b" else f"text of {path}"

    server = TestServer.create(("127.0.0.1", 0), serve)
    server.start()
    try:
        urls = server.urls(["a", ["b", "c d"]])
        assert urls == [[f"{server.address}/a"], [f"{server.address}/b", f"{server.address}/c d"]]
        assert urllib.request.urlopen(urls[0][0], timeout=5).read() == b"text of a"
        assert urllib.request.urlopen(urls[1][0], timeout=5).read() == b"\xffbytes"
        assert urllib.request.urlopen(f"{server.address}/c%20d", timeout=5).read() == \
            b"text of c d"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{server.address}/fail", timeout=5)
        assert caught.value.code == 500
    finally:
        server.stop()
    assert not server.thread.is_alive()


# -- TestCase without a cluster -----------------------------------------------------------------

class _Assertions(TestCase):
    def runTest(self):
        pass


def test_assert_all_equal_checks_order_and_length():
    case = _Assertions()
    case.assertAllEqual(iter([1, 2]), [1, 2])
    for results, answers in (([1, 2], [1]), ([1], [1, 2]), ([2, 1], [1, 2])):
        with pytest.raises(AssertionError):
            case.assertAllEqual(results, answers)


def test_assert_comm_error_code():
    case = _Assertions()

    def raises(exc):
        def f():
            raise exc
        return f

    case.assertCommErrorCode("CommError", raises(NoAnswer("silent")))
    err = CommError("x")
    err.code = 404
    case.assertCommErrorCode(404, raises(err))
    with pytest.raises(AssertionError, match="expected 500"):
        case.assertCommErrorCode(500, raises(err))
    with pytest.raises(AssertionError, match="not raised"):
        case.assertCommErrorCode(404, lambda: 7)
    with pytest.raises(AssertionError, match="ValueError"):
        case.assertCommErrorCode(404, raises(ValueError("other")))


def test_setup_starts_a_server_only_when_serve_is_defined():
    class Served(TestCase):
        settings = DiscoSettings(DISCO_TEST_PORT=0, DISCO_TEST_HOST="127.0.0.1")

        def serve(self, path):
            return path.upper()

        def runTest(self):
            url = self.test_server.urls(["abc"])[0][0]
            self.assertEqual(urllib.request.urlopen(url, timeout=5).read(), b"ABC")

    case = Served()
    result = unittest.TestResult()
    case.run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert not case.test_server.thread.is_alive()
    assert signal.getsignal(signal.SIGINT) is not None
    assert not hasattr(_Assertions(), "test_server")


def test_test_job_profiles_with_disco_test_profile():
    assert TestJob(settings=DiscoSettings(DISCO_TEST_PROFILE="1")).profile is True
    assert TestJob(settings=DiscoSettings(DISCO_TEST_PROFILE="")).profile is False


def test_test_pipe_imports_the_pipeline_worker_only_when_made(monkeypatch):
    assert issubclass(TestPipe, TestJob)
    package = types.ModuleType("disco.worker.pipeline")
    worker = types.ModuleType("disco.worker.pipeline.worker")

    class Worker:
        made = 0

        def __init__(self):
            Worker.made += 1

    worker.Worker, worker.Stage = Worker, type("Stage", (), {})
    package.worker = worker
    monkeypatch.setitem(sys.modules, "disco.worker.pipeline", package)
    monkeypatch.setitem(sys.modules, "disco.worker.pipeline.worker", worker)
    pipe = TestPipe()
    assert isinstance(pipe.worker, Worker) and Worker.made == 1
    assert TestPipe.Stage is worker.Stage and TestPipe.Worker is Worker


def test_disco_test_does_not_import_the_pipeline_worker():
    import subprocess
    code = ("import sys, disco.test; "
            "print('disco.worker.pipeline.worker' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_runner_verbosity_follows_disco_debug():
    assert disco.test.TestRunner(DiscoSettings(DISCO_DEBUG="trace")).verbosity == 2
    assert disco.test.TestRunner(DiscoSettings(DISCO_DEBUG="off")).verbosity == 0


# -- a classic job on an embedded cluster -------------------------------------------------------

def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def embedded_cluster():
    from disco import embedded
    from disco.client import resolve_master
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISCO_MASTER", "local:2")
        address = resolve_master()
        procs = [e.proc for e in embedded._clusters.values()]
        yield address
        family = {p.pid for p in procs}
        for p in procs:
            family |= _descendants(p.pid)
        embedded._stop_all()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in family if _alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind by the embedded cluster: {left}"


class WordCount(TestJob):
    partitions = 1

    @staticmethod
    def map(line, params):
        for word in line.split():
            yield word, 1

    @staticmethod
    def reduce(iter, params):
        for word, counts in kvgroup(sorted(iter)):
            yield word, sum(counts)


TEXTS = {"one": "the cat\nthe dog\n", "two": "a cat", "three": ""}


@pytest.mark.cluster
@pytest.mark.usefixtures("embedded_cluster")
class WordCountTestCase(TestCase):
    settings = DiscoSettings(DISCO_TEST_PORT=0, DISCO_TEST_HOST="127.0.0.1")

    def serve(self, path):
        if path not in TEXTS:
            raise FailedReply(f"no input {path}")
        return TEXTS[path]

    def test_word_count_over_served_inputs(self):
        self.job = WordCount().run(input=self.test_server.urls(sorted(TEXTS)))
        answers = {"a": 1, "cat": 2, "dog": 1, "the": 2}
        self.assertEqual(dict(self.results(self.job)), answers)
        self.assertResults(self.job, sorted(answers.items()))  # one reduce: sorted output
        with self.assertRaises(AssertionError):
            self.assertResults(self.job, sorted(answers.items())[1:])
        self.assertEqual(sum(self.nodes.values()), self.num_workers)
        self.assertEqual(self.num_workers, 2)
        self.assertEqual(self.ddfs.master, self.disco.master)

    def test_out_of_band_values_over_ddfs(self):
        job = "OobTest@1"
        save_oob(self.disco.master, job, "answer", b"41")
        save_oob(self.disco.master, job, "answer", b"42")
        self.assertEqual(load_oob(self.disco.master, job, "answer"), b"42")
        self.ddfs.delete(f"disco:job:oob:{job}")


@pytest.mark.cluster
@pytest.mark.usefixtures("embedded_cluster")
class PartitionFixtureTestCase(disco.test.DiscoJobTestFixture, disco.test.DiscoTestCase):
    """Disco 0.3's fixture: the job comes from class attributes, runTest checks answers."""
    settings = DiscoSettings(DISCO_TEST_PORT=0, DISCO_TEST_HOST="127.0.0.1")
    inputs = ["a:1", "b:2", "a:3"]
    nr_reduces = 1
    sort = True

    def getdata(self, path):
        return f"{path}\n"

    @staticmethod
    def map(line, params):
        yield tuple(line.split(":"))

    @staticmethod
    def reduce(iter, out, params):
        from disco.util import kvgroup
        for key, values in kvgroup(iter):
            out.add(key, sum(int(v) for v in values))

    answers = [("a", 4), ("b", 2)]

    def test_disco_settings_and_runtest(self):
        self.assertIs(self.disco_settings, self.settings)
        self.runTest()
        self.answers = [("a", 4)]
        with self.assertRaises(AssertionError):
            self.runTest()
