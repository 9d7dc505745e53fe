"""A worker's side of Disco's worker protocol, for Python programs outside the classic API.

Use it to write a worker program that a Disco job pack (disco/discopack.py) names as its
``worker``: it runs in the job home, writes requests on stderr and reads replies on stdin
(docs/worker-protocol.md). Standard library only, so any Python 3 can run it::

    from disco.worker.protocol_worker import Worker

    def main(w):
        task = w.task()
        out = os.path.join(task["taskdir"], "out.txt")
        with open(out, "w") as f:
            for inp in w.inputs():
                for path in inp.paths():
                    f.write(open(path).read().upper())
        w.output(0, out)

    if __name__ == "__main__":
        Worker().serve(main)

``serve`` says ``WORKER``, calls ``main(worker)``, then sends ``DONE``; an exception becomes
``ERROR`` (retried elsewhere: ``OSError``, ``DataError``-like errors with ``retryable = True``)
or ``FATAL`` (the job ends: anything else), with its traceback.

``python -m disco.worker.protocol_worker MODULE:FUNCTION`` does the same for a function in a
module of the job home.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

try:
    from disco.worker import protocol
except ImportError:  # run from a job home with only this file and protocol.py next to it
    import protocol  # type: ignore[no-redef]

__all__ = ["Input", "ProtocolFailure", "Worker", "main"]


class ProtocolFailure(RuntimeError):
    """The node's answer was not what the protocol says (or the node is gone)."""


@dataclass
class Input:
    """One input of the task: ``id``, ``label`` and its replicas ``[(rep_id, url), ...]``."""

    id: int
    status: str
    label: object
    replicas: list

    @property
    def url(self) -> str:
        return self.replicas[0][1]

    def paths(self) -> list:
        """Local paths of this input's ``file://`` replicas (the node makes one for each
        input it can), first one first."""
        return [local_path(url) for _, url in self.replicas if url.startswith("file://")]


def local_path(url: str) -> str:
    return unquote(urlsplit(url).path) if url.startswith("file://") else url


class Worker:
    """The protocol over a pair of binary streams (default: our stderr out, stdin in)."""

    def __init__(self, out=None, inp=None):
        self.out = out if out is not None else sys.stderr.buffer
        self.inp = inp if inp is not None else sys.stdin.buffer
        self._decoder = protocol.FrameDecoder()
        self._frames: list = []
        self._task: dict | None = None

    # -- messages --

    def send(self, type_: str, payload: object = protocol.NO_PAYLOAD) -> None:
        self.out.write(protocol.encode(type_, payload))
        self.out.flush()

    def recv(self) -> protocol.Frame:
        while not self._frames:
            chunk = self.inp.read1(65536) if hasattr(self.inp, "read1") else self.inp.read(1)
            if not chunk:
                raise ProtocolFailure("the node closed the protocol stream (stdin)")
            self._frames.extend(self._decoder.feed(chunk))
        return self._frames.pop(0)

    def request(self, type_: str, payload: object = protocol.NO_PAYLOAD,
                expect: tuple = ("OK",)) -> protocol.Frame:
        self.send(type_, payload)
        reply = self.recv()
        if reply.type not in expect:
            raise ProtocolFailure(f"{type_} was answered {reply.type} {reply.payload!r:.200}, "
                                  f"expected {' or '.join(expect)}")
        return reply

    def hello(self) -> None:
        self.request("WORKER", {"version": protocol.VERSION, "pid": os.getpid()})

    def task(self) -> dict:
        """The task: host, master, jobname, taskid, stage, grouping, group, disco_port,
        put_port, disco_data, ddfs_data, jobfile (and here also id, attempt, taskdir)."""
        if self._task is None:
            self._task = self.request("TASK", expect=("TASK",)).payload
        return self._task

    def inputs(self, include=None, exclude=None) -> list:
        """The task's inputs, as ``Input`` s (the flag, always "done" here, is dropped)."""
        payload = protocol.NO_PAYLOAD
        if include is not None:
            payload = ["include", list(include)]
        elif exclude is not None:
            payload = ["exclude", list(exclude)]
        _flag, entries = self.request("INPUT", payload, expect=("INPUT",)).payload
        return [Input(*entry) for entry in entries]

    def input_err(self, input_id: int, rep_ids) -> list | None:
        """Report replicas that failed; the new ones to try, or None when there is none."""
        reply = self.request("INPUT_ERR", [input_id, list(rep_ids)],
                             expect=("RETRY", "FAIL", "WAIT"))
        return reply.payload if reply.type == "RETRY" else None

    def msg(self, text: str) -> None:
        self.request("MSG", str(text))

    def output(self, label: int, path: str, size: int | None = None) -> None:
        """Report an output file (a path in the task dir or job home) or a URL."""
        if size is None:
            size = os.path.getsize(path) if "://" not in path else 0
        self.request("OUTPUT", [int(label), str(path), int(size)])

    def ping(self) -> str:
        return self.request("PING").payload

    def done(self) -> None:
        self.request("DONE")

    def error(self, text: str) -> None:
        self.request("ERROR", str(text))

    def fatal(self, text: str) -> None:
        self.request("FATAL", str(text))

    # -- a whole session --

    def serve(self, main) -> int:
        """WORKER, ``main(self)``, DONE; an exception is reported as ERROR or FATAL."""
        self.hello()
        try:
            main(self)
        except ProtocolFailure:
            raise
        except BaseException as exc:  # the worker's own code may raise anything
            text = f"{type(exc).__name__}: {exc}\n\n" + "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__))
            retry = isinstance(exc, OSError) or getattr(exc, "retryable", False)
            (self.error if retry else self.fatal)(text)
            return 1
        self.done()
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        sys.stdout.write("usage: python -m disco.worker.protocol_worker MODULE:FUNCTION\n"
                         "runs FUNCTION(worker) of MODULE (found in the current directory) as "
                         "a Disco worker\n")
        return 2
    module, _, func = argv[0].partition(":")
    sys.path.insert(0, os.getcwd())
    return Worker().serve(getattr(importlib.import_module(module), func))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
