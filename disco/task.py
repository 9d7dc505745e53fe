"""Disco's ``disco.task``: ``Task``, what a job function knew about the task running it, and
``jobdata``.

A :class:`Task` holds the task's ``host``, ``jobname``, ``master``, ``mode`` (the stage:
``map`` or ``reduce``), ``taskid`` and ``home`` (the directory the task runs in: the job's
home, where its required files are). ``Task()`` with no arguments describes the process it
is made in (home: the current directory). ``put``/``get`` store and read out-of-band values,
as the worker's ``put``/``get`` do.
"""
from __future__ import annotations

import os
import time

from disco.util import hexhash

__all__ = ["Task", "jobdata"]


def jobdata(*objs) -> bytes:
    """``objs`` pickled (functions included) with :mod:`disco.dPickle`, as Disco's job data."""
    from disco import dPickle
    return dPickle.dumps(objs, -1)


class Task:
    """One task's facts; see the module docstring."""

    def __init__(self, host: str = "", jobname: str = "", master=None, mode=None,
                 taskid: int = -1, home: str | None = None, **_disco_args):
        self.host, self.jobname, self.master = host, jobname, master
        self.mode, self.taskid = mode, taskid
        self.home = os.getcwd() if home is None else home
        self.outputs: dict = {}
        stamp = hexhash(str(time.time()))
        self.uid = f"{mode}:{taskid}-{stamp}-{os.getpid()}"

    def path(self, name: str) -> str:
        """``name`` under the task's home."""
        return os.path.join(self.home, name)

    def put(self, key: str, value) -> None:
        from disco.worker.classic.worker import put
        put(key, value)

    def get(self, key: str, job: str | None = None):
        from disco.worker.classic.worker import get
        return get(key, job)

    def __repr__(self) -> str:
        return f"Task(host={self.host!r}, jobname={self.jobname!r}, mode={self.mode!r}, " \
               f"taskid={self.taskid})"
