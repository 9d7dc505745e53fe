"""The classic worker's public names: ``Worker``, ``Params`` and the helpers job functions call.

Inside a running task (a map, reduce, combiner, reader or pipeline stage function):

- ``get(key)`` / ``put(key, value)``: the running job's out-of-band values (``get(key, job)``
  reads another job's);
- ``this_name()`` the job's name, ``this_master()`` the master's address, ``this_host()`` this
  node, ``this_partition()`` the task's label, ``this_inputs()`` the task's inputs.

They read the task the worker runs now (``disco.worker.task.CURRENT``, set before any user code
of the task runs); outside a task they raise ``UsageError``.
"""
from __future__ import annotations

from disco.error import UsageError

__all__ = ["Params", "Worker", "get", "put", "this_host", "this_inputs", "this_master",
           "this_name", "this_partition"]


class Params:
    """A bag of attributes handed to every job function as ``params``.

    ``Params(k=1)`` gives ``params.k == 1``; any picklable values work.
    """

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in sorted(self.__dict__.items()))
        return f"Params({inner})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Params) and self.__dict__ == other.__dict__


class Worker:
    """The classic map/reduce worker, as ``Job(worker=Worker(...))`` takes it: keywords given
    here are the job's defaults (``run`` keywords and ``Job`` attributes come first)."""

    def __init__(self, **defaults):
        self.defaults = defaults

    def __repr__(self) -> str:
        return "disco.worker.classic.worker.Worker()"


def _running() -> tuple[dict, object]:
    from disco.worker import task as task_mod  # only ever inside a worker process
    task, ctx = task_mod.CURRENT["task"], task_mod.CURRENT["ctx"]
    if task is None:
        raise UsageError("this_name(), get(), put() and the like work only inside a running task")
    return task, ctx


def this_name() -> str:
    """The running job's name."""
    return _running()[0]["job"]


def this_master() -> str:
    """The address of the master that assigned the running task."""
    task, ctx = _running()
    return task.get("master") or ctx.address


def this_host() -> str:
    """The node the running task runs on."""
    return _running()[1].node


def this_partition() -> int:
    """The running task's label (a reduce's partition; 0 for a map)."""
    task = _running()[0]
    label = task.get("label")
    return int(label if label is not None else (task.get("group") or [0])[0] or 0)


def this_inputs() -> list:
    """The running task's inputs: each a URL or a list of alternative URLs."""
    return list(_running()[0].get("inputs", ()))


def put(key: str, value) -> None:
    """Store ``value`` (bytes or str) as the running job's out-of-band value ``key``."""
    from disco.util import save_oob
    save_oob(this_master(), this_name(), key, value)


def get(key: str, job: str | None = None) -> bytes:
    """The out-of-band value ``key`` of the running job (or of ``job``)."""
    from disco.util import load_oob
    return load_oob(this_master(), job or this_name(), key)
