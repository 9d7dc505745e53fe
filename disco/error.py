"""One exception tree for the whole product.

::

    DiscoError                     anything this package raises on purpose
    ├── CommError                  a node or the cluster could not be reached / answered badly
    ├── JobError                   a job failed or was killed (carries task, input, node, traceback)
    ├── DataError                  an input or stored datum is missing, unreadable or corrupt
    │   ├── InputError             an input URL could not be opened (retry elsewhere may help)
    │   └── RecordFormatError      a record file or frame is malformed or fails its checksum
    ├── ProtocolError              a message broke the protocol (bad version, type, field, size)
    └── UsageError                 the user asked for something that cannot work (bad flag, name)

``retryable`` says whether running the same thing elsewhere may succeed.
"""
from __future__ import annotations


class DiscoError(Exception):
    """Base of every error the product raises on purpose."""

    retryable = False


class CommError(DiscoError):
    """A node could not be reached or gave an unusable answer."""

    retryable = True


class DataError(DiscoError):
    """An input or stored datum is missing, unreadable or corrupt."""

    retryable = True


class InputError(DataError):
    """An input URL could not be opened; ``url`` names it, ``status`` is an HTTP status if any."""

    def __init__(self, message: str, url: str = "", status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class RecordFormatError(DataError):
    """A record file or frame is malformed, of an unknown version, or fails its checksum."""


class ProtocolError(DiscoError):
    """A message broke the protocol: wrong version, unknown type, missing field, too large."""


class UsageError(DiscoError):
    """The user asked for something that cannot work; the message says what to do instead."""


class JobError(DiscoError):
    """A job failed or was killed.

    ``task``, ``input`` and ``node`` name the failing task; ``traceback`` is the task's own
    traceback text, always shown to the user.
    """

    def __init__(self, job: str, message: str, *, task: str | None = None,
                 input: object = None, node: str | None = None, traceback: str = ""):
        self.job = job
        self.message = message
        self.task = task
        self.input = input
        self.node = node
        self.traceback = traceback
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.task:
            where.append(f"task {self.task}")
        if self.input is not None:
            where.append(f"input {self.input!r}")
        if self.node:
            where.append(f"node {self.node}")
        head = f"job {self.job} failed: {self.message}"
        if where:
            head += " (" + ", ".join(where) + ")"
        if self.traceback:
            head += "\n" + self.traceback.rstrip()
        return head
