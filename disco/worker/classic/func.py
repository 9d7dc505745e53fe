"""Ready-made job functions and readers, under the names Disco's users know.

Use them in place of writing your own::

    Job().run(input=urls, map=nop_map, reduce=sum_reduce, combiner=sum_combiner)

Readers (``chain_reader``, ``gzip_reader``, ``gzip_line_reader``, ``map_line_reader``,
``re_reader``) and Disco's stream functions (``string_input_stream``, ``task_input_stream``,
``task_output_stream``, ``disco_output_stream``) come from :mod:`disco.worker.task_io`;
``default_partition`` from :mod:`shuffle.partition`. :func:`disco_input_stream` reads record
files with Disco's ``ignore_corrupt`` switch.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from disco.error import RecordFormatError
from disco.worker.task_io import (chain_reader, disco_output_stream, gzip_line_reader,
                                  gzip_reader, map_line_reader, re_reader, string_input_stream,
                                  task_input_stream, task_output_stream)
from shuffle.partition import default_partition

__all__ = ["chain_reader", "default_partition", "disco_input_stream", "disco_output_stream",
           "gzip_line_reader", "gzip_reader", "map_line_reader", "nop_map", "nop_reduce",
           "re_reader", "string_input_stream", "sum_combiner", "sum_reduce",
           "task_input_stream", "task_output_stream"]


def disco_input_stream(stream, size=None, url=None, params=None,
                       ignore_corrupt: bool = False) -> Iterator[tuple]:
    """Each ``(key, value)`` of a record file (what :func:`disco_output_stream` writes), as
    :func:`chain_reader` reads it.

    A corrupt or truncated record raises :class:`~disco.error.DataError` (a
    ``RecordFormatError``) naming ``url``; with ``ignore_corrupt`` the records before it are
    kept and the rest of the input is skipped.
    """
    try:
        yield from chain_reader(stream, size, url)
    except RecordFormatError as exc:
        if not ignore_corrupt:
            raise RecordFormatError(f"{url}: {exc}") from exc


def nop_map(entry, params) -> Iterator[tuple]:
    """Pass input through: a ``(key, value)`` pair as it is, anything else as ``(entry, "")``.

    Use it to re-partition or reduce an earlier job's results without changing them.
    """
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        yield entry[0], entry[1]
    else:
        yield entry, ""


def nop_reduce(iter: Iterable[tuple], out, params) -> None:
    """Write every input pair to the output unchanged (the ``reduce(iter, out, params)`` form)."""
    for key, value in iter:
        out.add(key, value)


def sum_combiner(key, value, buffer: dict, done: bool, params):
    """Add up the values of each key in the map task, sending one pair per key at the end.

    Called once per pair with ``done`` False (returns None); then once with ``done`` True,
    when it returns the buffered ``(key, sum)`` pairs.
    """
    if done:
        return buffer.items()
    buffer[key] = buffer.get(key, 0) + value
    return None


def sum_reduce(iter: Iterable[tuple], params) -> Iterator[tuple]:
    """Yield ``(key, sum of its values)`` for each key, in the order keys first appear.

    Disco grouped sorted input with ``kvgroup``; this gives the same result on sorted input and
    stays correct when the job runs with ``sort=False``.
    """
    sums: dict = {}
    get = sums.get
    for key, value in iter:
        sums[key] = get(key, 0) + value
    yield from sums.items()


def __getattr__(name: str):
    if name == "default_partition":
        from shuffle.partition import default_partition
        return default_partition
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
