"""One exception tree for the whole product, and the codes that carry it over the wire.

::

    DiscoError                     anything this product raises on purpose
    ├── CommError                  a node or the cluster could not be reached / answered badly
    │   ├── NotMaster              a job request reached a node that is not the master
    │   └── Unauthorized           a DDFS tag request lacks the tag's token (Disco's 401)
    ├── JobError                   a job failed or was killed (carries task, input, node, traceback)
    ├── DataError                  an input or stored datum is missing, unreadable or corrupt
    │   ├── InputError             an input URL could not be opened (retry elsewhere may help)
    │   │   └── DecodeError        an input's bytes are not valid UTF-8 text (never retried)
    │   ├── DataNotFound           a stored path does not exist or cannot be read on that node
    │   └── RecordFormatError      a record file or frame is malformed or fails its checksum
    ├── ProtocolError              a message broke the protocol (bad version, type, field, size)
    │   ├── RemoteProtocolError    the peer sent something malformed (``mesh.message.decode``)
    │   └── LocalProtocolError     we tried to send something invalid (``mesh.message.encode``)
    └── UsageError                 the user asked for something that cannot work (bad flag, name)
        ├── JobNotFound            no job of that name (also LookupError)
        └── ModUtilImportError     a module a job function uses cannot be found (also ImportError)

``retryable`` says whether running the same thing elsewhere may succeed.

On the wire an error is ``mesh.message.Error{rid, code, msg}``. ``CODES`` is the one table of
codes; they are stable names, so never rename one. A sender answers a failed request with
``Error(rid, code_of(exc), message_of(exc))``; the receiver raises ``error_for(code, msg)``,
which rebuilds the error as the sender saw it: ``protocol`` is the *node's*
``RemoteProtocolError``, i.e. the node found our frame malformed. ``internal`` is a bug of the
sender's (an exception outside this tree), never retried.

This module imports nothing of the project, so every package may use it.
"""
from __future__ import annotations

import re


class DiscoError(Exception):
    """Base of every error the product raises on purpose."""

    retryable = False

    @classmethod
    def from_wire(cls, msg: str) -> DiscoError:
        """The error a receiver raises for an ``Error`` of this class's code."""
        return cls(msg)

    def wire_message(self) -> str:
        """The ``msg`` an ``Error`` carries for this error: what ``from_wire`` rebuilds it from."""
        return str(self)


class CommError(DiscoError):
    """A node could not be reached or gave an unusable answer."""

    retryable = True


class NotMaster(CommError):
    """A job request reached a node that is not the master.

    ``master`` is the address of the master that node follows ("" while none is elected); it is
    also the exception's message argument and the ``msg`` on the wire. ``str()`` is the sentence
    for a human.
    """

    def __init__(self, master: str = ""):
        super().__init__(master)
        self.master = master

    def __str__(self) -> str:
        return f"not the master; the master is {self.master or 'not elected yet'}"

    def wire_message(self) -> str:
        return self.master


class NoAnswer(CommError):
    """A request got no answer in time (raised by the client itself, never sent): the node may
    be gone, so another may be asked. A ``CommError`` a node sends back is an answer."""


class Unauthorized(CommError):
    """A DDFS tag request without the token the tag asks for (``ddfs:read-token`` /
    ``ddfs:write-token``): Disco's HTTP 401. Retrying without the token cannot help."""

    retryable = False
    status = 401


class DataError(DiscoError):
    """An input or stored datum is missing, unreadable or corrupt."""

    retryable = True


class InputError(DataError):
    """An input URL could not be opened; ``url`` names it, ``status`` is an HTTP status if any.

    Retrying helps unless every node would see the same: an HTTP 4xx answer (but 408 and 429),
    or ``hopeless`` (an unknown URL scheme). ``elsewhere`` marks a failure of this node only
    (a local path it lacks): the task is tried on the nodes it has not failed on, and fails at
    once when there are none."""

    def __init__(self, message: str, url: str = "", status: int | None = None,
                 hopeless: bool = False, elsewhere: bool = False):
        super().__init__(message)
        self.url = url
        self.status = status
        self.hopeless, self.elsewhere = hopeless, elsewhere

    @property
    def retryable(self) -> bool:
        if self.hopeless:
            return False
        status = self.status
        return not (isinstance(status, int) and 400 <= status < 500 and status not in (408, 429))


class DecodeError(InputError):
    """An input's bytes are not valid UTF-8 where text lines were asked for.

    ``url`` names the input and ``offset`` the byte offset of the first bad byte. Reading the
    same bytes elsewhere gives the same error, so it is never retried; the message names the
    two ways out (an ``errors=`` handler such as ``'replace'``, or bytes lines).
    """

    retryable = False

    def __init__(self, message: str, url: str = "", status: int | None = None,
                 offset: int | None = None):
        super().__init__(message, url, status)
        self.offset = offset


class DataNotFound(DataError):
    """A stored path (a blob, a task output, a job pack) does not exist or cannot be read on
    the node asked; another replica may still have it."""


class RecordFormatError(DataError):
    """A record file or frame is malformed, of an unknown version, or fails its checksum."""


class ProtocolError(DiscoError):
    """A message broke the protocol: wrong version, unknown type, missing field, too large."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed: the frame failed to decode or validate, or the
    answer did not fit the request. Log it and drop or refuse that input; never crash on it."""


class LocalProtocolError(ProtocolError):
    """We tried to send something invalid (a field of the wrong type, an unpackable value):
    a bug on this side, found before the frame left."""


class UsageError(DiscoError):
    """The user asked for something that cannot work; the message says what to do instead."""


class PortInUse(UsageError):
    """A port the node must bind is taken. ``disco nodaemon`` exits with ``EXIT_CODE`` for
    it (and for no other failure), so whoever picked the port can pick another and retry."""

    EXIT_CODE = 98  # EADDRINUSE's number on Linux


class JobNotFound(UsageError, LookupError):
    """No job of that name on the master (or no such stage in it)."""


class ModUtilImportError(UsageError, ImportError):
    """A module that a job function uses could not be found (``disco.worker.modutil``).

    ``error`` is the ImportError met, ``function`` the job function whose modules were looked
    for (either may be None when rebuilt from the wire).
    """

    def __init__(self, error=None, function=None):
        self.error = error
        self.function = function
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.function is None:
            return str(self.error)
        name = getattr(self.function, "__qualname__", None) or repr(self.function)
        return (f"{self.error}: a module used by {name} could not be found; check the name, "
                "or list the job's modules yourself with required_modules=[...]")

    @classmethod
    def from_wire(cls, msg: str) -> "ModUtilImportError":
        return cls(msg)


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

    @classmethod
    def from_wire(cls, msg: str) -> JobError:
        """``job NAME failed: REST`` -> JobError(NAME, REST), whose ``str`` is ``msg`` again."""
        found = _JOB_FAILED.match(msg)
        return cls(found[1], found[2]) if found else cls("?", msg)


_JOB_FAILED = re.compile(r"job (\S*) failed: (.*)\Z", re.DOTALL)

INTERNAL = "internal"

# The wire codes, stable names: code -> the class a receiver raises (``error_for``). A class's
# code for senders (``code_of``) is the first listed for it or for its nearest ancestor.
CODES: dict[str, type[DiscoError]] = {
    "protocol": RemoteProtocolError,   # the request frame failed decode, or was of a wrong type
    INTERNAL: DiscoError,              # a bug of the sender's: an exception outside this tree
    "NotMaster": NotMaster,            # msg is the master's address ("" while none is known)
    "Unauthorized": Unauthorized,      # DDFS: the tag's read or write token is missing
    "JobNotFound": JobNotFound,
    "UsageError": UsageError,
    "DataNotFound": DataNotFound,      # data port: the path does not exist or cannot be read
    "JobError": JobError,
    "ProtocolError": ProtocolError,
    "DataError": DataError,
    "InputError": InputError,
    "RecordFormatError": RecordFormatError,
    "CommError": CommError,
    "DiscoError": DiscoError,
}

_CODE_OF: dict[type, str] = {LocalProtocolError: INTERNAL}  # ours to fix, not the peer's
for _code, _cls in CODES.items():
    if _code != INTERNAL:
        _CODE_OF.setdefault(_cls, _code)


def code_of(exc: BaseException) -> str:
    """The wire code for ``exc``: its class's or its nearest ancestor's; ``internal`` for an
    exception outside the tree (a bug of ours)."""
    for cls in type(exc).__mro__:
        if cls in _CODE_OF:
            return _CODE_OF[cls]
    return INTERNAL


def message_of(exc: BaseException) -> str:
    """The ``msg`` to send with ``code_of(exc)``: one sentence for a human (for ``NotMaster``,
    the master's address)."""
    if isinstance(exc, DiscoError):
        return exc.wire_message()
    return f"{type(exc).__name__}: {exc}"


def error_for(code: str, msg: str) -> DiscoError:
    """The error to raise for ``Error{code, msg}``; an unknown code is a plain ``DiscoError``."""
    return CODES.get(code, DiscoError).from_wire(msg)


__all__ = ["DiscoError", "CommError", "NoAnswer", "NotMaster", "Unauthorized", "JobError",
           "DataError", "InputError",
           "DecodeError", "DataNotFound", "RecordFormatError", "ProtocolError", "RemoteProtocolError",
           "LocalProtocolError", "UsageError", "JobNotFound", "ModUtilImportError", "CODES", "INTERNAL",
           "code_of", "message_of", "error_for"]
