"""Disco 0.3's worker events: what a task wrote to stderr for the master, and their parser.

An event is one text block, ``**<TYPE> YY/MM/DD HH:MM:SS TAGS\\nMESSAGE\\n<>**\\n``: ``TYPE``
says what it is (``MSG`` a message, ``ERR`` a failure, ``OUT`` an output URL, ``PID``, ``DAT``,
``OOB``, ``END``), tags are words (others are dropped). Creating an event writes it to
stderr, as Disco's did; :class:`EventRecord` parses one back. This project's workers talk to
their node over :mod:`disco.worker.protocol`, not in this format; the classes are here for
code and tests written against Disco 0.3.
"""
from __future__ import annotations

import os
import re
import sys
from datetime import datetime

__all__ = ["AnnouncePID", "DataUnavailable", "Event", "EventRecord", "Message", "OOBData",
           "OutputURL", "Signal", "TaskFailed", "WorkerDone"]


class Event:
    """One event: ``str(event)`` is its text block; created events are logged to stderr."""

    type = "EV"
    tag_re = re.compile(r"\w+\Z")
    timestamp_format = "%y/%m/%d %H:%M:%S"

    def __init__(self, message="", tags=()):
        self.message, self.tags = str(message), list(tags)
        self.time = datetime.now()
        self.log()

    @property
    def timestamp(self) -> str:
        return self.time.strftime(self.timestamp_format)

    def log(self) -> None:
        sys.stderr.write(str(self))

    def __str__(self) -> str:
        tags = " ".join(t for t in self.tags if self.tag_re.match(t))
        return f"**<{self.type}> {self.timestamp} {tags}\n{self.message}\n<>**\n"


class Message(Event):
    type = "MSG"


class Signal(Event):
    """An event that tells the master something about the task rather than the user."""


class AnnouncePID(Signal):
    type = "PID"


class DataUnavailable(Signal):
    type = "DAT"


class WorkerDone(Signal):
    type = "END"


class TaskFailed(Signal):
    type = "ERR"


class OutputURL(Signal):
    type = "OUT"


class OOBData(Signal):
    """An out-of-band value stored by ``task`` under ``key``: its file is ``task.home/oob/key``."""

    type = "OOB"

    def __init__(self, key: str, task):
        self.key, self.task = key, task
        super().__init__(f"{key} {os.path.join(task.home, 'oob', key)}")


_EVENT_RE = re.compile(r"\*\*<(?P<type>\w+)> (?P<timestamp>\d\d/\d\d/\d\d \d\d:\d\d:\d\d) "
                       r"(?P<tags>[^\n]*)\n(?P<message>.*)\n<>\*\*\n\Z", re.S)


class EventRecord:
    """An event parsed from its text block: ``type``, ``time`` (a datetime), ``tags``,
    ``message``. Text not in the format raises TypeError."""

    event_re = _EVENT_RE

    def __init__(self, string: str):
        match = self.event_re.match(string)
        if not match:
            raise TypeError(f"{string!r} is not in Event format")
        self.type = match["type"]
        self.time = datetime.strptime(match["timestamp"], Event.timestamp_format)
        self.tags = match["tags"].split()
        self.message = match["message"]
