"""Disco's old ``disco.func``: the classic job functions under the module name Disco 0.3 used.

Everything :mod:`disco.worker.classic.func` exports is here, with the names Disco 0.3 code
imports from ``disco.func``: the default streams (``map_input_stream`` and
``reduce_input_stream`` open a URL, ``map_output_stream`` and ``reduce_output_stream`` open
the task's output file) and the object reader and writer (:func:`object_writer`,
:func:`object_reader`), which store any picklable key and value. New code imports from
:mod:`disco.worker.classic.func` and :mod:`disco.worker.task_io`.
"""
from __future__ import annotations

import pickle
from typing import Iterator

from disco.error import DataError
from disco.worker.classic.func import *  # noqa: F403 - this module re-exports it
from disco.worker.classic.func import __all__ as _classic_names
from disco.worker.classic.func import task_input_stream, task_output_stream
from disco.worker.task_io import (NETSTR_LENGTH_DIGITS, gzip_line_stream,  # noqa: F401
                                  gzip_stream, old_netstr_reader, plain_output_stream)

__all__ = sorted({*_classic_names, "gzip_line_stream", "gzip_stream", "map_input_stream",
                  "map_output_stream", "netstr_reader", "object_reader", "object_writer",
                  "old_netstr_reader", "plain_output_stream", "reduce_input_stream",
                  "reduce_output_stream"})

map_input_stream = reduce_input_stream = task_input_stream
map_output_stream = reduce_output_stream = task_output_stream
netstr_reader = old_netstr_reader


def object_writer(fd, key, value, params=None) -> None:
    """Write one pair, each side pickled, as ``"<len> <key> <len> <value>\\n"`` (bytes) to
    ``fd``; read it back with :func:`object_reader`."""
    for i, obj in enumerate((key, value)):
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        fd.write(b"%d %s%s" % (len(data), data, b"\n" if i else b" "))


def object_reader(fd, size=None, url=None, params=None) -> Iterator[tuple]:
    """Each ``(key, value)`` :func:`object_writer` wrote to ``fd``, unpickled. Truncated or
    malformed input raises :class:`~disco.error.DataError` naming ``url``."""
    read = 0
    while size is None or read < size:
        key, read = _field(fd, read, url, first=True)
        if key is None:
            return
        value, read = _field(fd, read, url)
        yield pickle.loads(key), pickle.loads(value)


def _field(fd, offset: int, url, first: bool = False) -> tuple[bytes | None, int]:
    digits = b""
    while True:
        c = fd.read(1)
        if not c:
            if first and not digits:
                return None, offset
            raise DataError(f"{url}: truncated object record at byte {offset}")
        if c == b" " and digits:
            break
        if not c.isdigit() or len(digits) >= NETSTR_LENGTH_DIGITS:
            raise DataError(f"{url}: corrupt object record: no length at byte {offset}")
        digits += c
    n = int(digits)
    data = fd.read(n + 1)
    if len(data) < n + 1:
        raise DataError(f"{url}: truncated object record: {n} bytes at byte {offset}")
    return data[:n], offset + len(digits) + 2 + n
