"""Disco's kit for testing jobs: ``TestCase``, ``TestJob``, ``TestPipe``, ``TestServer``.

Write a job test as Disco's users did::

    from disco.test import TestCase, TestJob

    class WordCount(TestJob):
        @staticmethod
        def map(line, params):
            for word in line.split():
                yield word, 1

    class WordCountTestCase(TestCase):
        def serve(self, path):              # GET /PATH on the test server answers this
            return f"{path} {path}\\n"

        def runTest(self):
            self.job = WordCount().run(input=self.test_server.urls(["a", "b"]))
            self.assertResults(self.job, [("a", 1), ("a", 1), ("b", 1), ("b", 1)])

The cluster is ``DISCO_MASTER`` (``DISCO_MASTER=local`` starts an embedded node for the test
process). A test case that defines ``serve`` gets an HTTP server for the test
(``self.test_server``, on ``DISCO_TEST_HOST:DISCO_TEST_PORT``; port 0 picks a free one);
``tearDown`` stops it and purges ``self.job`` when ``DISCO_TEST_PURGE`` is set (the default).
``TestPipe`` runs a pipeline job (``pipeline = [(grouping, Stage(...)), ...]``); the pipeline
worker is imported only when a ``TestPipe`` is made.
"""
from __future__ import annotations

import signal
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import SkipTest
from urllib.parse import unquote

from disco.core import Disco, Job, result_iterator
from common.error import code_of
from disco.error import CommError
from disco.settings import DiscoSettings, client_master
from disco.util import iterify

__all__ = ["DiscoJobTestFixture", "DiscoTestCase", "FailedReply", "InterruptTest", "SkipTest",
           "TestCase", "TestJob", "TestLoader", "TestPipe", "TestRunner", "TestServer",
           "handler"]

DEBUG_LEVELS = {"off": 0, "log": 1, "trace": 2}
_MISSING = object()


class InterruptTest(KeyboardInterrupt, SkipTest):
    """Raised by Ctrl-C in a running test: the test is skipped, not failed."""

    def __init__(self, test):
        super().__init__("test interrupted: it may not have finished cleaning up")
        self.test = test

    def __call__(self, signum, frame):
        if self.test.is_running:
            self.test.is_running = False
            raise self


class TestCase(unittest.TestCase):
    """A ``unittest.TestCase`` with the cluster at hand and assertions for job results."""

    settings = DiscoSettings()

    def _master(self) -> str | None:
        given = dict.get(self.settings, "DISCO_MASTER")
        return given or client_master()

    @property
    def disco(self) -> Disco:
        handle = self.__dict__.get("_disco_handle")
        if handle is None:
            handle = self.__dict__["_disco_handle"] = Disco(self._master())
        return handle

    @property
    def ddfs(self):
        from disco.ddfs import DDFS
        return DDFS(self.disco.master)

    def _node_rows(self) -> list[tuple[str, int, bool]]:
        """``(address, task slots, blacklisted)`` per node, from either shape of node info
        (Disco's ``{host: {max_workers, blacklisted}}`` or ``{"nodes": [...]}``)."""
        info = self.disco.nodeinfo()
        if isinstance(info.get("nodes"), list):
            return [(n["address"], n["slots"], n["blacklisted"]) for n in info["nodes"]]
        return [(host, n["max_workers"], n["blacklisted"]) for host, n in info.items()]

    @property
    def nodes(self) -> dict:
        """``{address: task slots}`` of the nodes that take tasks (not blacklisted)."""
        return {host: slots for host, slots, blacklisted in self._node_rows() if not blacklisted}

    @property
    def num_workers(self) -> int:
        return sum(slots for _host, slots, _blacklisted in self._node_rows())

    @property
    def test_server_address(self) -> tuple[str, int]:
        return (str(self.settings["DISCO_TEST_HOST"]), int(self.settings["DISCO_TEST_PORT"]))

    def assertAllEqual(self, results, answers) -> None:
        """Each result equals the answer in its place, and there are as many of each."""
        from itertools import zip_longest
        for n, (result, answer) in enumerate(zip_longest(results, answers, fillvalue=_MISSING)):
            if result is _MISSING:
                raise self.failureException(f"results end after {n}; answer {n} is {answer!r}")
            if answer is _MISSING:
                raise self.failureException(f"answers end after {n}; result {n} is {result!r}")
            self.assertEqual(result, answer, f"result {n}")

    def assertCommErrorCode(self, code, callable) -> None:
        """``callable()`` raises CommError with ``code``: its ``code`` or ``status`` attribute,
        or its wire code (``common.error.code_of``)."""
        try:
            ret = callable()
        except CommError as exc:
            codes = {getattr(exc, "code", None), getattr(exc, "status", None), code_of(exc)}
            if code not in codes:
                raise self.failureException(f"CommError {exc} has code {code_of(exc)!r}, "
                                            f"expected {code!r}") from None
            return
        except Exception as exc:  # noqa: BLE001 - reported as the assertion's failure
            raise self.failureException(f"CommError not raised, got {exc!r}") from exc
        raise self.failureException(f"CommError not raised (expected {code!r}), "
                                    f"returned {ret!r}")

    def assertResults(self, job, answers) -> None:
        """The job's results (waited for) are ``answers``, in order."""
        self.assertAllEqual(self.results(job), answers)

    def results(self, job, **kwargs):
        return result_iterator(job.wait(), **kwargs)

    def run(self, result=None):
        self.is_running = True
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, InterruptTest(self)) if main else None
        try:
            return super().run(result)
        finally:
            self.is_running = False
            if main:
                signal.signal(signal.SIGINT, previous)

    def setUp(self) -> None:
        if hasattr(self, "serve"):
            self.test_server = TestServer.create(self.test_server_address, self.serve)
            self.test_server.start()

    def tearDown(self) -> None:
        server = getattr(self, "test_server", None)
        if server is not None:
            server.stop()
        job = getattr(self, "job", None)
        if job is not None and getattr(job, "name", None) and self.settings["DISCO_TEST_PURGE"]:
            job.purge()


class TestJob(Job):
    """A ``disco.core.Job`` that profiles its tasks when ``DISCO_TEST_PROFILE`` is set."""

    __test__ = False  # a job, not a test for pytest to collect

    def __init__(self, name=None, master=None, worker=None, settings=None):
        super().__init__(name, master, worker, settings)
        self.settings = settings if settings is not None else DiscoSettings()

    @property
    def profile(self) -> bool:
        return bool(self.settings["DISCO_TEST_PROFILE"])


class _PipelineName:
    """A class attribute read from ``disco.worker.pipeline.worker`` when first used."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj, cls):
        from disco.worker.pipeline import worker
        return getattr(worker, self.name)


class TestPipe(TestJob):
    """A test job run by the pipeline worker: give it ``pipeline = [(grouping, Stage), ...]``.

    ``TestPipe.Stage`` and ``TestPipe.Worker`` are ``disco.worker.pipeline.worker``'s."""

    Worker = _PipelineName("Worker")
    Stage = _PipelineName("Stage")

    def __init__(self, name=None, master=None, worker=None, settings=None):
        if worker is None:
            worker = self.Worker()
        super().__init__(name, master, worker, settings)
        self.worker = worker


class TestLoader(unittest.TestLoader):
    """Loads tests, giving every ``TestCase`` these ``settings``."""

    __test__ = False

    def __init__(self, settings):
        super().__init__()
        self.settings = settings

    def loadTestsFromTestCase(self, testCaseClass):
        if issubclass(testCaseClass, TestCase):
            testCaseClass.settings = self.settings
        return super().loadTestsFromTestCase(testCaseClass)


class TestRunner(unittest.TextTestRunner):
    """Runs tests by name; ``DISCO_DEBUG`` (off, log, trace) sets the verbosity."""

    __test__ = False

    def __init__(self, settings):
        super().__init__(verbosity=DEBUG_LEVELS.get(str(settings["DISCO_DEBUG"]), 1))
        self.settings = settings

    def run(self, *names):
        suite = TestLoader(self.settings).loadTestsFromNames(names)
        return super().run(suite)


class TestServer(ThreadingHTTPServer):
    """An HTTP server on a thread of its own: GET /PATH answers ``data_generator(PATH)``."""

    __test__ = False

    allow_reuse_address = True
    daemon_threads = True

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port:d}"

    @classmethod
    def create(cls, server_address, data_generator) -> "TestServer":
        return cls(tuple(server_address), handler(data_generator))

    def start(self) -> None:
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True,
                                       name="disco-test-server")
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)

    def urls(self, inputs) -> list[list[str]]:
        """One input per item of ``inputs``: the URLs of its paths (a path, or a list of
        alternative paths) on this server."""
        return [[f"{self.address}/{path}" for path in iterify(item)] for item in inputs]


class FailedReply(Exception):
    """Raised by a ``serve`` function to answer 500 with this message."""


def handler(data_generator):
    """The request handler class serving ``data_generator(path)`` (str as UTF-8, or bytes)."""

    class Handler(BaseHTTPRequestHandler):
        def send_data(self, data) -> None:
            body = data.encode("utf-8") if isinstance(data, str) else bytes(data or b"")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                data = data_generator(unquote(self.path.strip("/")))
            except FailedReply as exc:
                self.send_error(500, str(exc))
                return
            try:
                self.send_data(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass  # a test's output stays the test's

    return Handler


class DiscoTestCase(TestCase):
    """Disco 0.3's name for ``TestCase`` (with ``disco_settings``, its name for ``settings``)."""

    @property
    def disco_settings(self) -> DiscoSettings:
        return self.settings


class DiscoJobTestFixture:
    """Disco 0.3's job fixture, mixed in before ``DiscoTestCase``: ``setUp`` serves
    ``getdata(path)`` on the test server and runs a job from the class's attributes named in
    ``jobargs`` (``inputs`` become the server's URLs as ``input``); ``runTest`` checks that
    ``self.results`` (read with ``result_reader``) equal ``self.answers`` one by one."""

    jobargs = ("input", "combiner", "map", "map_init", "map_input_stream",
               "map_output_stream", "map_reader", "map_writer", "params", "partition",
               "partitions", "nr_reduces", "profile", "save", "scheduler", "sort", "reduce",
               "reduce_init", "reduce_input_stream", "reduce_output_stream", "reduce_reader",
               "reduce_writer", "required_files", "required_modules", "merge_partitions")
    result_reader = None  # result_iterator's own

    @property
    def input(self) -> list:
        return self.test_server.urls(self.inputs)

    @property
    def results(self):
        kwargs = {} if self.result_reader is None else {"reader": self.result_reader}
        return result_iterator(self.job.wait(), **kwargs)

    def getdata(self, path):
        return None

    def setUp(self) -> None:
        self.test_server = TestServer.create(self.test_server_address, self.getdata)
        self.test_server.start()
        try:
            self.job = self.disco.new_job(name=type(self).__name__, **self._jobargs())
        except BaseException:
            self.test_server.stop()
            raise

    def _jobargs(self) -> dict:
        args = {}
        for name in self.jobargs:
            try:
                value = getattr(self, name)
            except AttributeError:  # e.g. ``input`` of a fixture without ``inputs``
                continue
            if name == "nr_reduces":
                name = "partitions"
            args.setdefault(name, value)
        return args

    def tearDown(self) -> None:
        self.test_server.stop()
        if self.settings["DISCO_TEST_PURGE"] and getattr(self, "job", None) is not None:
            self.job.purge()

    def runTest(self) -> None:
        # Disco's izip_longest: a missing result or answer is None
        from itertools import zip_longest
        for n, (result, answer) in enumerate(zip_longest(self.results, self.answers)):
            self.assertEqual(result, answer, f"result {n}")
