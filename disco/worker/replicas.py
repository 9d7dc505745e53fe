"""Reading one input from whichever of its replicas works, as Disco's result reader did.

An input is a URL or a list of alternative URLs (copies of one file). ``iter_replicas`` reads
the first copy that opens; when a copy fails part way (a checksum or format error in the record
format, a node that is gone, a copy that vanished) it goes on with the next copy, skipping as
many records as were already yielded, so every record comes out exactly once. Only when every
copy has failed does it raise, naming each copy and why.

Errors of the data (``DiscoError``: ``RecordFormatError``, ``DataError``, ``CommError``,
``InputError``) and of the system (``OSError``, ``EOFError``) move on to the next copy; any other
exception comes from the reader's own code and is raised at once, since another copy would
fail the same way.
"""
from __future__ import annotations

from typing import Callable, Iterator

from disco.error import DiscoError, InputError
from disco.util import urllist
from disco.worker import task_io

__all__ = ["iter_replicas", "FAILOVER_ERRORS"]

FAILOVER_ERRORS = (DiscoError, OSError, EOFError)


def iter_replicas(replicas, reader: Callable | None = None, params=None,
                  notifier: Callable | None = None) -> Iterator:
    """The records of one input read by ``reader(fd, size, url, params)`` (default
    ``chain_reader``), from its first working replica, failing over between them;
    ``notifier(url)`` is told of each replica once it is open."""
    urls = urllist(replicas)
    if not urls:
        raise InputError("an input is an empty list of alternative URLs; give at least one URL")
    reader = reader or task_io.chain_reader
    done, failures = 0, []
    for url in urls:
        try:
            for record in _skip(_read(url, reader, params, notifier), done):
                yield record
                done += 1
            return
        except FAILOVER_ERRORS as exc:
            failures.append((url, exc))
    if len(failures) == 1:
        raise failures[0][1]
    reasons = "; ".join(f"{url}: {exc}" for url, exc in failures)
    raise InputError(f"every one of {len(urls)} replicas failed after {done} records: {reasons}",
                     url=urls[0])


def _read(url: str, reader: Callable, params, notifier) -> Iterator:
    fd, size, real = task_io.open_url(url)
    try:
        if notifier is not None:
            notifier(real)
        yield from task_io.call_reader(reader, fd, size, real, params)
    finally:
        fd.close()


def _skip(records: Iterator, count: int) -> Iterator:
    """``records`` without its first ``count`` (those an earlier replica yielded already)."""
    for index, record in enumerate(records):
        if index >= count:
            yield record
