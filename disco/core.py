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
from disco.error import CommError, DataError, DataNotFound, JobError, NoAnswer, UsageError
from disco.worker.classic.worker import Params
from mesh import message as m
from mesh.client import POOL

__all__ = ["Disco", "Job", "JobError", "Params", "client_version", "new_job", "result_iterator"]

FIND_MASTER_S = 30.0  # how long a client looks for a (new) master before giving up
REQUEST_TIMEOUT_S = 10.0
LONG_POLL_S = 5.0  # a wait re-asks this often, so a new master is found quickly
SPLIT_SIZE = 64 << 20  # Job.split_size's default: bytes of input per map task
HTTP_SIZE_PROBES = 64  # a job with more http inputs than this does not split them
MEMBERS_TTL_S = 60.0  # a process re-learns the cluster's members through a node this often
_MEMBERS: dict[str, tuple[float, list]] = {}  # node address -> (when, every member's address)
WATCH_TIMEOUT_S = 3.0  # show=True polls events: a master silent this long is looked for anew
JOB_ARGS = ("input", "map", "reduce", "combiner", "partition", "partitions", "sort", "params",
            "map_reader", "reduce_reader", "map_init", "reduce_init", "required_modules",
            "required_files", "save_results", "profile", "name", "prefix", "kill_on_exit",
            "pipeline", "lines", "split_size", "save", "owner", "scheduler", "status_interval",
            "ext_params", "save_info", "sort_buffer_size", "map_input_stream",
            "map_output_stream", "reduce_input_stream", "reduce_output_stream", "version",
            "merge_partitions", "reduce_shuffle")
# Disco's job keywords this project takes but does not act on (their job runs all the same)
IGNORED_ARGS = ("scheduler", "status_interval", "ext_params", "save_info", "sort_buffer_size",
                "version", "merge_partitions", "reduce_shuffle")
_DISCO_STATUS = {"active": "active", "finished": "ready", "failed": "dead", "killed": "dead"}


class Disco:
    """A handle on the cluster through one node: ``Disco("host:port")`` or ``Disco()``."""

    def __init__(self, master: str | None = None):
        self.master = resolve_master(master)  # the node we were told about
        self.address = self.master  # the node we ask: the master, once one named it
        self.on_switch = None  # called (old, new) when the node that answered is left behind
        self._answered: str | None = None

    @property
    def _known(self) -> list[str] | None:
        """Every member's address, as last learned through ``master`` (shared by this process's
        handles on the same node); None if never. An old list still serves to look for a new
        master: it is only learned again, after MEMBERS_TTL_S, when a request succeeds."""
        learned = _MEMBERS.get(self.master)
        return None if learned is None else learned[1]

    def _members_due(self) -> bool:
        learned = _MEMBERS.get(self.master)
        return learned is None or time.monotonic() - learned[0] > MEMBERS_TTL_S

    def _ask(self, cls, wait_s: float | None = None, **fields):
        """One request to the node we ask, on a connection of this process's pool."""
        conn = POOL.take(self.address, REQUEST_TIMEOUT_S)
        try:
            return conn.request(cls, wait_s=wait_s, **fields)
        finally:
            POOL.give(conn)

    def request(self, cls, wait_s: float | None = None, **fields):
        """Send a request to the master, following it from whichever node answers.

        A node that is not the master names it (``NotMaster``); a master that stops answering
        is looked for again through every member we know, until ``FIND_MASTER_S`` passes.
        """
        deadline = time.monotonic() + FIND_MASTER_S
        while True:
            try:
                reply = self._ask(cls, wait_s=wait_s, **fields)
                self._answered = self.address
                if self._members_due():
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
            lost = self.address
            if not target:
                time.sleep(0.2)
                target = self._find_master()
            self.address = target or self.master
            if self.on_switch is not None and lost == self._answered != self.address:
                self.on_switch(lost, self.address)  # the node that answered is gone

    def _learn_members(self) -> None:
        try:
            status = self._ask(m.GetStatus)
        except CommError:
            return  # not now: what was learned before (if anything) stays, tried again later
        _MEMBERS[self.master] = (time.monotonic(), [x["address"] for x in status["members"]])

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

    def submit(self, jobpack_bytes: bytes, prefix: str | None = None) -> str:
        """Submit a job pack; returns the job's name. Disco's own binary job packs
        (``disco.job.JobPack(...).dumps()``, any worker program) are taken too."""
        from disco import discopack
        if discopack.is_disco_pack(jobpack_bytes):
            jobpack_bytes, packed_prefix = discopack.to_internal(jobpack_bytes)
            prefix = prefix or packed_prefix
        return self.request(m.SubmitJob, prefix=prefix or "Job", jobpack=jobpack_bytes,
                            python=jobpack.PYTHON, token=uuid.uuid4().hex)["job"]

    def new_job(self, name: str | None = None, **jobargs) -> "Job":
        """``Job(name, master).run(**jobargs)``."""
        return Job(name, self.master).run(**jobargs)

    def jobs(self) -> list:
        """Every job the master knows: dicts with ``job``, ``status``, ``submitted``,
        ``finished``, oldest first."""
        return self.request(m.ListJobs)

    def joblist(self) -> list:
        """Disco's job list: ``[submitted (int seconds), status, name]``, newest first; status
        ``active``, ``ready`` (finished) or ``dead`` (failed or killed)."""
        return [[int(j["submitted"]), _DISCO_STATUS.get(j["status"], j["status"]), j["job"]]
                for j in sorted(self.jobs(), key=lambda j: j["submitted"], reverse=True)]

    def status(self, jobname: str) -> dict:
        return self.request(m.GetJobStatus, job=jobname)

    def jobinfo(self, jobname: str) -> dict:
        """Disco's job info: ``timestamp``, ``active`` (its status), ``pipeline`` rows
        ``[stage, pending, waiting, running, done, failed]``, ``results``, ``inputs``,
        ``worker``, ``hosts`` and ``owner``."""
        status = self.status(jobname)
        header = self.jobdict(jobname)
        counts = status.get("counts") or {}
        rows = []
        for stage in status.get("stages") or list(counts):
            c = counts.get(stage, {})
            rows.append([stage, c.get("pending", 0), 0, c.get("running", 0), c.get("done", 0),
                         c.get("failed", 0)])
        hosts = sorted({e["node"] for e in self.event_records(jobname)
                        if e["type"] == "task_started" and e.get("node")})
        return {"timestamp": status["submitted"],
                "active": _DISCO_STATUS.get(status["status"], status["status"]),
                "pipeline": rows, "results": status["results"],
                "inputs": header.get("inputs", []),
                "worker": (header.get("worker") or {}).get("path") or (
                    "disco.worker.pipeline" if header.get("pipeline") else "disco.worker.classic"),
                "hosts": hosts, "owner": header.get("owner", "")}

    def results(self, jobspec, timeout: float = 2000):
        """Disco's results: for one job, ``(status, results)`` (status ``active``, ``ready``,
        ``dead`` or ``unknown job``); for a list of jobs, ``(inactive, active)``: lists of
        ``(name, (status, results))``, after waiting up to ``timeout`` ms for one to end."""
        if isinstance(jobspec, (str, Job)):
            return self._result_of(_name_of(jobspec))
        names = [_name_of(j) for j in jobspec]
        deadline = time.monotonic() + max(0.0, timeout) / 1000.0
        while True:
            both = [(name, self._result_of(name)) for name in names]
            inactive = [x for x in both if x[1][0] != "active"]
            if inactive or time.monotonic() >= deadline:
                return inactive, [x for x in both if x[1][0] == "active"]
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _result_of(self, name: str) -> tuple:
        try:
            status = self.status(name)
        except UsageError:
            return "unknown job", []
        return _DISCO_STATUS.get(status["status"], status["status"]), status["results"]

    def stageresults(self, jobname: str, stage: str) -> list:
        """The outputs of one finished stage of a job (to resume a pipeline from it); a
        ``JobError`` if that stage has not finished."""
        status = self.request(m.GetJobStatus, job=jobname, stage=stage)
        if status.get("stage_results") is None:
            raise JobError(jobname, f"stage {stage!r} has not finished (or the master that "
                           "ran it is gone)")
        return status["stage_results"]

    def events(self, jobname: str, offset: int = 0):
        """Disco's events: yields ``(offset, (timestamp, host, message))``; pass the last offset
        back to read only what came after it."""
        records = self.event_records(jobname, offset)
        for i, e in enumerate(records, start=offset + 1):
            when = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(e["time"]))
            yield i, (when, e.get("node") or "master", f"{e['type']}: {e['msg']}")

    def event_records(self, jobname: str, offset: int = 0) -> list:
        """A job's events from ``offset`` on: dicts with ``time``, ``job``, ``type``, ``msg``,
        and ``task``, ``stage``, ``node`` where they apply."""
        return self.request(m.GetEvents, job=jobname, offset=offset)["events"]

    def kill(self, jobname: str) -> None:
        self.request(m.KillJob, job=_name_of(jobname))

    def purge(self, jobname: str) -> None:
        self.request(m.PurgeJob, job=_name_of(jobname))

    def clean(self, jobname: str) -> None:
        self.purge(jobname)

    def jobdict(self, jobname: str) -> dict:
        return self.request(m.GetJobDict, job=jobname)

    def nodeinfo(self) -> dict:
        """Disco's node info: ``{host: {max_workers, blacklisted, connected, tasks, ...}}``, one
        entry per live member, keyed by its address."""
        table = self.node_table()
        return {n["address"]: {"name": n["name"], "max_workers": n["slots"],
                               "blacklisted": n["blacklisted"],
                               "connected": n["state"] in ("alive", "suspect"),
                               "state": n["state"], "tasks": n["busy"], "job_ok": 0,
                               "data_error": 0, "error": 0}
                for n in table["nodes"]}

    def node_table(self) -> dict:
        """The nodes the master schedules on: ``{"master", "term", "nodes": [{name, address,
        slots, busy, blacklisted, state}]}``."""
        return self.request(m.GetNodeInfo)

    def oob_get(self, jobname: str, key: str) -> bytes:
        """The out-of-band value ``key`` a task of the job stored (``put(key, value)``)."""
        from disco import oob
        return oob.oob_get(self, _name_of(jobname), key)

    def oob_list(self, jobname: str) -> list:
        """The keys of the job's out-of-band values."""
        from disco import oob
        return oob.oob_list(self, _name_of(jobname))

    def profile_stats(self, jobname: str, mode: str = "", stream=None):
        """The job's tasks' cProfile statistics (``profile=True``) merged into one
        ``pstats.Stats``, sorted by cumulative time; ``mode`` picks a stage (``"map"``)."""
        from disco import profiling
        return profiling.profile_stats(self, _name_of(jobname), mode, stream)

    @property
    def ddfs(self):
        """``disco.ddfs.DDFS`` on the same cluster."""
        from disco.ddfs import DDFS
        return DDFS(self.master)

    @property
    def config(self) -> list:
        """Disco's node table, ``[[name, slots], ...]``: here, the members the master
        schedules on. Nodes join with ``disco start --join``; the table cannot be set."""
        return [[n["name"], str(n["slots"])] for n in self.node_table()["nodes"]]

    @config.setter
    def config(self, table) -> None:
        raise UsageError("nodes join and leave the cluster themselves (`disco start --join "
                         "HOST:PORT`, `disco stop`); there is no node table to set")

    def jobpack(self, jobname: str):
        """The job's pack as a ``disco.job.JobPack`` whose ``jobdict`` is the header the
        master holds (the code itself is not sent back)."""
        from disco.discopack import JobPack
        return JobPack(self.jobdict(_name_of(jobname)), {}, b"", b"")

    def mapresults(self, jobname: str) -> list:
        """The outputs of the job's map stage (``stageresults(job, "map")``)."""
        return self.stageresults(_name_of(jobname), "map")

    def rawevents(self, jobname: str, offset: int = 0) -> bytes:
        """The job's events as Disco's JSON lines, ``["YYYY/MM/DD HH:MM:SS", host, msg]``."""
        import json
        return "".join(json.dumps([when, host, msg]) + "\n"
                       for _, (when, host, msg) in self.events(jobname, offset)).encode()

    def master_version(self) -> str:
        from mesh.message import VERSION
        return str(self.request(m.Hello, python=jobpack.PYTHON).get("version", VERSION))

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


def _name_of(job) -> str:
    return job.name if isinstance(job, Job) else job


def client_version() -> str:
    """This client's version (the installed package's, else ``source``)."""
    try:
        from importlib.metadata import version
        return version("disco-mesh")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "source"


def new_job(name: str | None = None, master: str | None = None, **jobargs) -> "Job":
    """``Job(name, master).run(**jobargs)``."""
    return Job(name, master).run(**jobargs)


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

    pipeline = None  # [(grouping, Stage), ...]: a pipeline job (disco.worker.pipeline.worker)
    lines = None  # bytes (or "bytes"): the default reader gives bytes lines, as Disco did
    split_size = SPLIT_SIZE  # a bigger local or http input is read by several map tasks
    Worker = None  # a worker class (Disco's pipeline Worker makes a pipeline job)

    def __init__(self, name: str | None = None, master: str | None = None, worker=None,
                 settings=None):
        self._prefix = name
        self._master = master
        self._disco = None
        self._kill_on_exit = False
        self.worker = worker if worker is not None else (
            self.Worker() if isinstance(self.Worker, type) else None)
        self.settings = settings
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

    def _get(self, jobargs: dict, key: str):
        """A job parameter, as Disco looked it up: ``run`` keywords, then the job's attributes,
        then its worker's defaults."""
        if key in jobargs:
            return jobargs[key]
        value = getattr(self, key, None)
        if value is None:
            value = (getattr(self.worker, "defaults", None) or {}).get(key)
        return value

    def run(self, **jobargs) -> "Job":
        """Submit the job; returns self (``job.name`` is set)."""
        unknown = set(jobargs) - set(JOB_ARGS)
        if unknown:
            raise UsageError(f"Job.run got unknown keywords {sorted(unknown)}; "
                             f"known: {', '.join(JOB_ARGS)}")
        get = lambda key: self._get(jobargs, key)  # noqa: E731
        pipeline = get("pipeline")
        if pipeline is None and _is_pipeline_worker(self.worker):
            raise UsageError("a job with the pipeline worker needs pipeline=[(grouping, "
                             "Stage(...)), ...]")
        raw_input = get("input")
        if raw_input is None and pipeline is not None:
            raw_input = []
        inputs = self._expand_tags(_inputs(raw_input))
        lines = _lines_of(get("lines"))
        params = get("params")
        params = Params() if params is None else params
        if pipeline is not None:
            header, code = self._pipeline_job(pipeline, inputs, params)
        else:
            header, code = self._classic_job(get, inputs, params)
        header.update(lines=lines, save_results=bool(get("save_results") or get("save")),
                      profile=bool(get("profile")),
                      owner=get("owner") or f"{os.environ.get('USER', 'user')}@"
                                            f"{os.uname().nodename}")
        self._kill_on_exit = bool(get("kill_on_exit"))
        prefix = get("name") or get("prefix") or self._prefix or type(self).__name__
        header["prefix"] = prefix
        blob = jobpack.build(header, code, get("required_modules"), get("required_files"))
        self.name = self.disco.submit(blob, prefix)
        return self

    def _classic_job(self, get, inputs: list, params) -> tuple[dict, dict]:
        code = {name: get(name) for name in jobpack.FUNCTIONS}
        if code["map"] is None and code["reduce"] is None:
            raise UsageError("a job needs map=, reduce= or both (or a pipeline=)")
        code.update(params=params, sort=bool(get("sort")), profile=bool(get("profile")))
        for key in STREAMS:
            chain = stream_chain(key, get(key))
            if chain:
                code[key] = chain
        split_size = get("split_size")  # None (as a keyword or attribute) turns it off
        if code["map"] is not None and code["map_reader"] is None and code["map_init"] is None \
                and "map_input_stream" not in code and split_size:
            inputs = split_inputs(inputs, int(split_size))
        partitions = get("partitions")
        header = {"inputs": inputs, "has_map": code["map"] is not None,
                  "has_reduce": code["reduce"] is not None,
                  "partitions": 1 if partitions in (None, 0) else int(partitions),
                  "sort": bool(get("sort")),
                  "functions": {k: _describe(v) for k, v in code.items()
                                if k in jobpack.FUNCTIONS and v is not None}}
        return header, code

    def _pipeline_job(self, pipeline, inputs: list, params) -> tuple[dict, dict]:
        from disco.worker.pipeline.worker import check
        stages = check(pipeline)
        header = {"inputs": inputs, "has_map": True, "has_reduce": False, "partitions": 1,
                  "pipeline": [[stage.name, grouping, concurrent]
                               for grouping, stage, concurrent in stages],
                  "functions": {stage.name: _describe(stage.process) for _, stage, _ in stages}}
        code = {"pipeline": [(grouping, stage) for grouping, stage, _ in stages],
                "params": params}
        return header, code

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

    def events(self, offset: int = 0):
        """Disco's ``(offset, (timestamp, host, message))`` tuples (see ``event_records``)."""
        return self.disco.events(self._need_name(), offset)

    def event_records(self, offset: int = 0) -> list:
        return self.disco.event_records(self._need_name(), offset)

    def results(self, timeout: float = 2000):
        """Disco's ``(status, results)`` of this job."""
        return self.disco.results(self._need_name(), timeout)

    def stageresults(self, stage: str) -> list:
        return self.disco.stageresults(self._need_name(), stage)

    def mapresults(self) -> list:
        return self.disco.mapresults(self._need_name())

    def jobpack(self):
        return self.disco.jobpack(self._need_name())

    def jobdict(self) -> dict:
        return self.disco.jobdict(self._need_name())

    def oob_get(self, key: str) -> bytes:
        return self.disco.oob_get(self._need_name(), key)

    def oob_list(self) -> list:
        return self.disco.oob_list(self._need_name())

    def profile_stats(self, mode: str = "", stream=None):
        return self.disco.profile_stats(self._need_name(), mode, stream)

    def jobinfo(self) -> dict:
        return self.disco.jobinfo(self._need_name())

    def kill(self) -> None:
        self.disco.kill(self._need_name())

    def purge(self) -> None:
        self.disco.purge(self._need_name())

    def clean(self) -> None:
        self.purge()


def _is_pipeline_worker(worker) -> bool:
    return type(worker).__module__ == "disco.worker.pipeline.worker"


def _lines_of(value) -> str | None:
    if value is None:
        return None
    if value is bytes or value == "bytes":
        return "bytes"
    if value is str or value == "str":
        return "str"
    raise UsageError(f"lines must be str or bytes, not {value!r}")


def split_inputs(inputs: list, split_size: int) -> list:
    """Each local (``file://``) or http(s) input bigger than ``split_size`` bytes as several
    line-aligned byte ranges of that size, each read by its own map task. Inputs the client
    cannot size (a path only the nodes have, a server that does not say) stay whole."""
    if split_size <= 0:
        raise UsageError(f"split_size must be a positive number of bytes or None, not {split_size}")
    from disco.worker.task_io import range_url
    out = []
    # a HEAD request per http input: worth it for a few big files, not for thousands of inputs
    probe_http = sum(isinstance(i, str) and i.startswith(("http://", "https://"))
                     for i in inputs) <= HTTP_SIZE_PROBES
    for inp in inputs:
        size = _size_of(inp, probe_http) if isinstance(inp, str) else None
        if size is None or size <= split_size:
            out.append(inp)
            continue
        out.extend(range_url(inp, start, min(start + split_size, size))
                   for start in range(0, size, split_size))
    return out


def _size_of(url: str, probe_http: bool = True) -> int | None:
    if url.startswith("file://") and "#" not in url:
        try:
            return os.stat(url[len("file://"):]).st_size
        except OSError:
            return None
    if probe_http and url.startswith(("http://", "https://")) and "#" not in url:
        import urllib.request
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.headers.get("Accept-Ranges", "").lower() != "bytes":
                    return None
                length = resp.headers.get("Content-Length")
                return int(length) if length and length.isdigit() else None
        except (OSError, ValueError):
            return None
    return None


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


STREAMS = ("map_input_stream", "map_output_stream", "reduce_input_stream", "reduce_output_stream")
# the functions of Disco's default chains: a chain of only these is the built-in record path
_DEFAULT_STREAMS = {"input": ("task_input_stream",),
                    "output": ("task_output_stream", "disco_output_stream")}


def stream_chain(key: str, value) -> tuple:
    """A job's ``*_input_stream`` / ``*_output_stream`` keyword as a tuple of functions, empty
    when it is unset or only Disco's defaults (the built-in, faster path does the same)."""
    if value is None:
        return ()
    chain = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for f in chain:
        if not callable(f):
            raise UsageError(f"{key}: each item of the chain must be a function "
                             f"f(stream, ...), not {f!r:.60}")
    defaults = _DEFAULT_STREAMS["input" if key.endswith("input_stream") else "output"]
    if all(getattr(f, "__module__", "").startswith("disco.") and
           getattr(f, "__name__", "") in defaults for f in chain):
        return ()
    return chain


def _describe(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def result_iterator(results, notifier=None, reader=None, params=None, ddfs=None):
    """Yield the records of a job's results (URLs, or a list of alternative-URL lists)."""
    for frame in _result_frames(results, notifier, reader, params, ddfs):
        yield from frame  # the only layer that handles records one by one


def _result_frames(results, notifier, reader, params, ddfs):
    """The records of ``result_iterator`` as lists (record frames), one result after another."""
    from disco.worker import task_io
    from mesh.transfer import open_disco
    from disco import embedded

    def opener(url: str):
        url = url.replace("dir://", "disco://", 1)
        address = url.split("/", 3)[2]
        data = embedded.data_dir_of(address)  # our own embedded node: read its disk directly
        return open_disco(url, address if data else None, data)

    from disco.worker.replicas import iter_replica_frames
    task_io.register_scheme("disco", opener)
    task_io.register_scheme("dir", opener)
    reader = reader or task_io.chain_reader
    for url in _expand_results(results, ddfs):
        if isinstance(url, str) and url.startswith(("disco://", "dir://")):
            yield from _read_or_remake(url, reader, params, notifier, ddfs)
        else:
            # a copy that is corrupt or whose node goes away mid-read: on to the next,
            # skipping the records already given
            yield from iter_replica_frames(url, reader, params, notifier=notifier)


REMAKE_WAIT_S = 600.0  # how long a reader waits for a lost result to be made again


def _read_or_remake(url: str, reader, params, notifier, master):
    """The record frames of one result; if its node is gone, the master makes it again from
    the job's lineage and the frames come from the new copy (the records already given
    skipped). Each frame is counted as given when the next one is asked for."""
    from disco.worker.replicas import iter_replica_frames, skip_records
    given = 0
    try:
        for frame in iter_replica_frames(url, reader, params, notifier=notifier):
            count = len(frame)
            yield frame
            given += count
        return
    except (CommError, DataError, OSError) as exc:
        new = _remade(url, master)
        if new is None:
            raise exc from None
    yield from skip_records(iter_replica_frames(new, reader, params, notifier=notifier), given)


def _remade(url: str, master) -> str | None:
    """The URL of ``url`` made again (None if it cannot be: not a finished job's result, or
    its node is there and the read failed for another reason)."""
    from disco.util import jobname
    from scheduler.jobtable import current_result
    job = jobname(url)
    if not job or "@" not in job:
        return None
    disco = Disco(master)
    deadline = time.monotonic() + REMAKE_WAIT_S
    while True:
        try:
            status = disco.request(m.RemakeResult, wait_s=40.0, job=job, url=url,
                                   timeout_s=30.0)
        except UsageError:
            return None
        if not status.get("remaking") or time.monotonic() > deadline:
            break
    new = current_result(status["results"], url)
    return None if new in (None, url) or status.get("remaking") else new


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

classic_iterator = result_iterator  # Disco 0.4 name; __all__ below
__all__ += ["classic_iterator"]

from disco import func  # noqa: E402,F401 - Disco's code reaches the classic functions as disco.core.func
