"""Disco's classic API: ``Job``, ``Disco``, ``result_iterator``.

Use ``Job().run(input=..., map=..., reduce=...)`` and ``job.wait()``; or subclass ``Job`` and
set the same names as class attributes (functions as staticmethods or methods). ``Disco`` is
the lower-level handle on the cluster that ``disco`` the command uses too.
"""
from __future__ import annotations

import os
import sys
import time
import uuid

from disco import jobpack
from disco.client import Connection, NotMaster, resolve_master
from disco.error import CommError, DataNotFound, JobError, NoAnswer, UsageError
from disco.worker.classic.worker import Params
from mesh import message as m

__all__ = ["Disco", "Job", "JobError", "Params", "result_iterator"]

FIND_MASTER_S = 30.0  # how long a client looks for a (new) master before giving up
REQUEST_TIMEOUT_S = 10.0
LONG_POLL_S = 5.0  # a wait re-asks this often, so a new master is found quickly
WATCH_TIMEOUT_S = 3.0  # show=True polls events: a master silent this long is looked for anew
JOB_ARGS = ("input", "map", "reduce", "combiner", "partition", "partitions", "sort", "params",
            "map_reader", "reduce_reader", "map_init", "reduce_init", "required_modules",
            "required_files", "save_results", "profile", "name", "prefix", "kill_on_exit")


class Disco:
    """A handle on the cluster through one node: ``Disco("host:port")`` or ``Disco()``."""

    def __init__(self, master: str | None = None):
        self.master = resolve_master(master)  # the node we were told about
        self.conn = Connection(self.master, REQUEST_TIMEOUT_S)
        self._known: list[str] | None = None  # every member's address, learned once
        self.on_switch = None  # called (old, new) when the node that answered is left behind
        self._answered: str | None = None

    def request(self, cls, wait_s: float | None = None, **fields):
        """Send a request to the master, following it from whichever node answers.

        A node that is not the master names it (``NotMaster``); a master that stops answering
        is looked for again through every member we know, until ``FIND_MASTER_S`` passes.
        """
        deadline = time.monotonic() + FIND_MASTER_S
        while True:
            try:
                reply = self.conn.request(cls, wait_s=wait_s, **fields)
                self._answered = self.conn.address
                if self._known is None:
                    self._learn_members()
                return reply
            except NotMaster as exc:
                target = exc.master
            except NoAnswer:
                if not self._known or time.monotonic() > deadline:
                    raise
                target = None
            if time.monotonic() > deadline:
                raise CommError(f"no master found through {self.master} within "
                                f"{FIND_MASTER_S:g} s")
            self.conn.close()
            lost = self.conn.address
            if not target:
                time.sleep(0.2)
                target = self._find_master()
            self.conn = Connection(target or self.master, REQUEST_TIMEOUT_S)
            if self.on_switch is not None and lost == self._answered != self.conn.address:
                self.on_switch(lost, self.conn.address)  # the node that answered is gone

    def _learn_members(self) -> None:
        try:
            status = self.conn.request(m.GetStatus)
            self._known = [x["address"] for x in status["members"]]
        except CommError:
            self._known = []

    def _find_master(self) -> str | None:
        """Ask each member we know who the master is."""
        for address in self._known or [self.master]:
            conn = Connection(address, 1.0)
            try:
                hello = conn.request(m.Hello, python=jobpack.PYTHON)
            except CommError:
                continue
            finally:
                conn.close()
            if hello.get("master"):
                return hello["master"]
        return None

    def submit(self, jobpack_bytes: bytes, prefix: str) -> str:
        return self.request(m.SubmitJob, prefix=prefix, jobpack=jobpack_bytes,
                            python=jobpack.PYTHON, token=uuid.uuid4().hex)["job"]

    def jobs(self) -> list:
        return self.request(m.ListJobs)

    def status(self, jobname: str) -> dict:
        return self.request(m.GetJobStatus, job=jobname)

    def jobinfo(self, jobname: str) -> dict:
        return self.status(jobname)

    def results(self, jobname: str) -> tuple[str, list]:
        status = self.status(jobname)
        return status["status"], status["results"]

    def events(self, jobname: str, offset: int = 0) -> list:
        return self.request(m.GetEvents, job=jobname, offset=offset)["events"]

    def kill(self, jobname: str) -> None:
        self.request(m.KillJob, job=jobname)

    def purge(self, jobname: str) -> None:
        self.request(m.PurgeJob, job=jobname)

    def clean(self, jobname: str) -> None:
        self.purge(jobname)

    def jobdict(self, jobname: str) -> dict:
        return self.request(m.GetJobDict, job=jobname)

    def nodeinfo(self) -> dict:
        return self.request(m.GetNodeInfo)

    def blacklist(self, node: str) -> None:
        self.request(m.Blacklist, node=node)

    def whitelist(self, node: str) -> None:
        self.request(m.Whitelist, node=node)

    def cluster_status(self) -> dict:
        return self.request(m.GetStatus)

    def wait(self, jobname: str, poll_interval: float = 0.5, timeout: float | None = None,
             clean: bool = False, show: bool | None = None, kill_on_exit: bool = False) -> list:
        """Block until the job ends; return its result URLs or raise JobError.

        Ctrl-C ends the wait with one line on stderr and exit status 130; the job goes on
        running (the line says how to kill it), or is killed with ``kill_on_exit``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            status = self._watch(jobname, poll_interval, deadline) if show else \
                self._long_poll(jobname, deadline)
        except KeyboardInterrupt:
            if kill_on_exit:
                self.kill(jobname)
                print(f"disco: interrupted; job {jobname} was killed", file=sys.stderr)
            else:
                print(f"disco: interrupted; job {jobname} is still running (stop it with "
                      f"`disco kill {jobname}`)", file=sys.stderr)
            raise SystemExit(130) from None
        if status["status"] == "active":
            raise JobError(jobname, f"still running after {timeout:g} s (wait timed out)")
        if status["status"] != "finished":
            err = status.get("error") or {}
            raise JobError(jobname, err.get("msg") or status["status"], task=err.get("task"),
                           input=err.get("input"), node=err.get("node"),
                           traceback=err.get("traceback") or "")
        if clean:
            self.purge(jobname)
        return status["results"]

    def _long_poll(self, jobname: str, deadline: float | None) -> dict:
        while True:
            left = LONG_POLL_S if deadline is None else \
                max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
            status = self.request(m.WaitJob, wait_s=left + REQUEST_TIMEOUT_S, job=jobname,
                                  timeout_s=left)
            if status["status"] != "active" or (deadline and time.monotonic() >= deadline):
                return status

    def _watch(self, jobname: str, poll_interval: float, deadline: float | None) -> dict:
        from disco.progress import Progress
        progress = Progress(jobname, sys.stderr)
        offset = 0

        def switched(old: str, new: str) -> None:
            nonlocal offset
            progress.note(f"{old} does not answer as master; following {new} (the new "
                          "master's event list starts again)")
            offset = 0
        self.on_switch = switched
        try:
            while True:
                reply = self.request(m.GetEvents, wait_s=WATCH_TIMEOUT_S, job=jobname,
                                     offset=offset)
                offset = reply["offset"]
                progress.show(reply)
                if reply["status"] != "active" or (deadline and time.monotonic() >= deadline):
                    return reply
                if len(reply["events"]) < 5000:
                    time.sleep(min(poll_interval, 0.5))
        finally:
            self.on_switch = None
            progress.close()

    def result_iterator(self, *args, **kwargs):
        return result_iterator(*args, **kwargs)


class Job:
    """A Disco job. Set the job's functions as ``run`` keywords or class attributes."""

    input = None
    map = None
    reduce = None
    combiner = None
    partition = None
    partitions = 1
    sort = False
    params = None
    map_reader = None
    reduce_reader = None
    map_init = None
    reduce_init = None
    required_modules = ()
    required_files = ()
    save_results = False
    profile = False
    kill_on_exit = False  # Ctrl-C in wait() kills the job instead of leaving it running

    def __init__(self, name: str | None = None, master: str | None = None, worker=None,
                 settings=None):
        self._prefix = name
        self._master = master
        self._disco = None
        self._kill_on_exit = False
        self.name = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_disco"] = None
        return state

    @property
    def disco(self) -> Disco:
        if self._disco is None:
            self._disco = Disco(self._master)
        return self._disco

    def run(self, **jobargs) -> "Job":
        """Submit the job; returns self (``job.name`` is set)."""
        unknown = set(jobargs) - set(JOB_ARGS)
        if unknown:
            raise UsageError(f"Job.run got unknown keywords {sorted(unknown)}; "
                             f"known: {', '.join(JOB_ARGS)}")
        get = lambda key: jobargs[key] if key in jobargs else getattr(self, key, None)  # noqa: E731
        inputs = self._expand_tags(_inputs(get("input")))
        code = {name: get(name) for name in jobpack.FUNCTIONS}
        if code["map"] is None and code["reduce"] is None:
            raise UsageError("a job needs map=, reduce= or both")
        params = get("params")
        code.update(params=Params() if params is None else params, sort=bool(get("sort")),
                    profile=bool(get("profile")))
        partitions = get("partitions")
        header = {"inputs": inputs, "has_map": code["map"] is not None,
                  "has_reduce": code["reduce"] is not None,
                  "partitions": 1 if partitions in (None, 0) else int(partitions),
                  "sort": bool(get("sort")), "profile": bool(get("profile")),
                  "save_results": bool(get("save_results")),
                  "owner": f"{os.environ.get('USER', 'user')}@{os.uname().nodename}",
                  "functions": {k: _describe(v) for k, v in code.items()
                                if k in jobpack.FUNCTIONS and v is not None}}
        self._kill_on_exit = bool(get("kill_on_exit"))
        prefix = get("name") or get("prefix") or self._prefix or type(self).__name__
        header["prefix"] = prefix
        blob = jobpack.build(header, code, get("required_modules"), get("required_files"))
        self.name = self.disco.submit(blob, prefix)
        return self

    def _expand_tags(self, inputs: list) -> list:
        """``tag://NAME`` inputs become the replica sets of the tag's blobs (links followed),
        so each blob is one map task placed near a copy."""
        if not any(isinstance(i, str) and i.startswith("tag://") for i in inputs):
            return inputs
        from disco.ddfs import DDFS
        ddfs = DDFS(self.disco.master)
        out = []
        for inp in inputs:
            if isinstance(inp, str) and inp.startswith("tag://"):
                try:
                    out.extend(ddfs.blobs(inp, ignore_missing=False))
                except DataNotFound:
                    raise UsageError(f"input {inp}: no such tag (see `ddfs ls`)") from None
            else:
                out.append(inp)
        return out

    # -- the job's life --

    def _need_name(self) -> str:
        if self.name is None:
            raise UsageError("this job has not been run yet (call job.run(...) first)")
        return self.name

    def wait(self, show: bool | None = None, poll_interval: float = 0.5,
             timeout: float | None = None, clean: bool = False) -> list:
        return self.disco.wait(self._need_name(), poll_interval, timeout, clean, show,
                               kill_on_exit=self._kill_on_exit)

    def status(self) -> str:
        return self.disco.status(self._need_name())["status"]

    def events(self, offset: int = 0) -> list:
        return self.disco.events(self._need_name(), offset)

    def results(self) -> list:
        return self.disco.results(self._need_name())[1]

    def jobinfo(self) -> dict:
        return self.disco.jobinfo(self._need_name())

    def kill(self) -> None:
        self.disco.kill(self._need_name())

    def purge(self) -> None:
        self.disco.purge(self._need_name())

    def clean(self) -> None:
        self.purge()


def _inputs(value) -> list:
    if value is None:
        raise UsageError("a job needs input=[...] (paths, URLs or an earlier job's results)")
    if isinstance(value, (str, bytes)):
        value = [value]
    out = []
    for inp in value:
        if isinstance(inp, (list, tuple)):
            out.append([_absolute(u) for u in inp])
        else:
            out.append(_absolute(inp))
    return out


def _absolute(url) -> str:
    if isinstance(url, bytes):
        url = url.decode()
    if not isinstance(url, str):
        raise UsageError(f"input {url!r} is not a path or URL")
    if "://" in url:
        return url
    return "file://" + os.path.abspath(os.path.expanduser(url))


def _describe(func) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def result_iterator(results, notifier=None, reader=None, params=None, ddfs=None):
    """Yield the records of a job's results (URLs, or a list of alternative-URL lists)."""
    from disco.worker import task_io
    from mesh.transfer import open_disco
    from disco import embedded

    def opener(url: str):
        url = url.replace("dir://", "disco://", 1)
        address = url.split("/", 3)[2]
        data = embedded.data_dir_of(address)  # our own embedded node: read its disk directly
        return open_disco(url, address if data else None, data)

    task_io.register_scheme("disco", opener)
    task_io.register_scheme("dir", opener)
    reader = reader or task_io.chain_reader
    for url in _expand_results(results, ddfs):
        fd, size, real = task_io.open_input(url)
        if notifier is not None:
            notifier(real)
        try:
            yield from reader(fd, size, real, params)
        finally:
            fd.close()



def _expand_results(results, master=None):
    """Result URLs, with ``tag://`` ones (saved results) replaced by their blobs' replica
    sets, copies on members that are not alive put last."""
    dd, alive = None, set()
    for url in results:
        if isinstance(url, str) and url.startswith("tag://"):
            if dd is None:
                from disco.ddfs import DDFS
                dd = DDFS(master)
                alive = {x["address"] for x in dd.disco.cluster_status()["members"]
                         if x["state"] in ("alive", "suspect")}
            for replicas in dd.blobs(url, ignore_missing=False):
                yield sorted(replicas, key=lambda u: u.split("/")[2] not in alive)
        else:
            yield url
