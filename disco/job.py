"""Disco's ``disco.job``: ``Job``, ``SimpleJob``, ``JobChain`` and ``JobPack``.

``Job`` is :class:`disco.core.Job` (the same class). ``JobChain`` runs jobs whose inputs are
other jobs' results, each as soon as the jobs it reads are done::

    first = Job(name="count")
    second = Job(name="top")
    chain = JobChain({first: ["/data/a.txt"], second: [first]})
    # the jobs' functions are given as class attributes (subclasses of Job)
    chain.wait()

``JobPack`` is Disco's binary job pack (any worker program, any language; see
docs/worker-protocol.md); ``Disco.submit(pack.dumps())`` runs it.
"""
from __future__ import annotations

import time

from disco.core import Job
from disco.discopack import HEADER_SIZE, MAGIC, JobPack, JobPackError
from disco.error import JobError

__all__ = ["JOBPACK_VERSION1", "JOBPACK_VERSION2", "Job", "JobChain", "JobPack",
           "JobPackError", "SimpleJob"]

JOBPACK_VERSION1, JOBPACK_VERSION2 = 1, 2
_ = (HEADER_SIZE, MAGIC)


class SimpleJob(Job):
    """A job whose stages are its own methods: ``map(self, worker, task, **jobargs)`` and,
    if defined, ``reduce(...)``; ``worker.inputs()`` yields the task's input records (lines,
    then ``(key, value)`` pairs) and ``worker.output(label).add(key, value)`` writes."""

    def run(self, **jobargs) -> "Job":
        from disco.worker.pipeline.worker import Stage
        stages = [("split", Stage("map", init=_simple_init, process=_simple_collect,
                                  done=_SimpleCall(type(self), "map", jobargs)))]
        if callable(getattr(type(self), "reduce", None)):
            stages.append(("group_label", Stage("reduce", init=_simple_init,
                                                process=_simple_collect,
                                                done=_SimpleCall(type(self), "reduce", jobargs))))
        return super().run(pipeline=stages, **{k: v for k, v in jobargs.items()
                                               if k in ("input", "params", "name", "prefix",
                                                        "required_modules", "required_files",
                                                        "save_results", "lines")})


def _simple_init(interface, params):
    return []


def _simple_collect(interface, state, label, inp):
    state.extend(inp)


class _SimpleWorker:
    def __init__(self, interface, records):
        self._interface, self._records = interface, records

    def inputs(self):
        return iter(self._records)

    def output(self, label: int = 0):
        return self._interface.output(label)


class _SimpleCall:
    """A SimpleJob stage's ``done``: calls the job's method named after the stage."""

    def __init__(self, cls, stage: str, jobargs: dict):
        self.cls, self.stage = cls, stage
        self.jobargs = {k: v for k, v in jobargs.items() if k not in ("input",)}

    def __call__(self, interface, state):
        job = self.cls.__new__(self.cls)
        getattr(job, self.stage)(_SimpleWorker(interface, state), self.stage, **self.jobargs)


class JobChain(dict):
    """``{job: inputs}``: each job runs once every job among its inputs has finished, with
    those jobs' results in their place. ``wait()`` returns when all are done (a
    ``JobError`` if one fails); ``purge()`` purges them all."""

    def wait(self, poll_interval: float = 1, timeout: float | None = None) -> "JobChain":
        deadline = None if timeout is None else time.monotonic() + timeout
        # a job that has a name from the master ran already (Disco's ``JobChain.started``):
        # it is waited for, never run again
        started = {id(job) for job in self if job.name and "@" in job.name}
        while True:
            done = 0
            for job, inputs in self.items():
                if id(job) in started:
                    status, _ = job.results()
                    if status == "ready":
                        done += 1
                    elif status != "active":
                        job.wait(timeout=poll_interval + 5)  # raises the task's own error
                        raise JobError(job.name, f"status {status}")
                    continue
                resolved = self._inputs(inputs)
                if resolved is not None:
                    job.run(input=resolved)
                    started.add(id(job))
            if done == len(self):
                return self
            if deadline is not None and time.monotonic() > deadline:
                raise JobError(", ".join(str(j.name) for j in self),
                               f"job chain not done after {timeout:g} s")
            time.sleep(poll_interval)

    def _inputs(self, inputs):
        out = []
        for inp in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
            if isinstance(inp, Job):
                if inp not in self and inp.name is None:
                    raise JobError(str(inp), "an input job is neither in the chain nor run")
                if inp.name is None or "@" not in inp.name:
                    return None  # not started yet
                status, results = inp.results()
                if status in ("active", "unknown job"):
                    return None
                if status != "ready":
                    raise JobError(inp.name, f"status {status}")
                out.extend(results)
            else:
                out.append(inp)
        return out

    def purge(self) -> None:
        for job in self:
            if job.name and "@" in job.name:
                job.purge()
