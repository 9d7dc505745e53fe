"""Small helpers that Disco users know by name.

Use :func:`kvgroup` in a reduce to walk sorted pairs key by key, and the URL helpers when a job
function or a tool needs to tell which kind of input it was given. Nothing here does I/O.
"""
from __future__ import annotations

from itertools import groupby
from operator import itemgetter
from typing import Any, Iterable, Iterator

__all__ = ["flatten", "isiterable", "iterify", "jobname", "kvgroup", "schemesplit",
           "urllist", "urlsplit"]

_first = itemgetter(0)


def kvgroup(kviter: Iterable[tuple]) -> Iterator[tuple[Any, Iterator]]:
    """Group consecutive pairs with equal keys: yields ``(key, values)``, values as a generator.

    The input must already be sorted (or at least grouped) by key, as in
    ``for word, counts in kvgroup(sorted(iter))``. Consume each group's values before moving on
    to the next key; the values of a skipped group are gone.
    """
    for key, pairs in groupby(kviter, key=_first):
        yield key, (value for _key, value in pairs)


def isiterable(obj) -> bool:
    """True for iterables other than strings and bytes (which are treated as single items)."""
    if isinstance(obj, (str, bytes, bytearray)):
        return False
    try:
        iter(obj)
    except TypeError:
        return False
    return True


def iterify(obj) -> Iterable:
    """``obj`` itself if it is iterable (strings excepted), else a one-item list of it."""
    return obj if isiterable(obj) else [obj]


def flatten(iterable) -> Iterator:
    """Every non-iterable item of arbitrarily nested iterables, depth first; strings stay whole."""
    for item in iterable:
        if isiterable(item):
            yield from flatten(item)
        else:
            yield item


def schemesplit(url: str) -> tuple[str, str]:
    """``(scheme, rest)`` of a URL; a bare path has scheme ``file``."""
    if "://" in url:
        scheme, rest = url.split("://", 1)
        return scheme, rest
    return "file", url


def urlsplit(url: str) -> tuple[str, str, str]:
    """``(scheme, netloc, path)`` of a URL; a bare path is ``("file", "", path)``.

    ``raw://`` URLs keep all their data in ``path``; ``file://`` URLs have an empty netloc.
    """
    scheme, rest = schemesplit(url)
    if scheme in ("file", "raw"):
        return scheme, "", rest
    netloc, slash, path = rest.partition("/")
    return scheme, netloc, path


def urllist(url) -> list[str]:
    """One job input as a list of alternative URLs (replicas of the same data, nearest first).

    A string becomes a one-item list; a list or tuple of URLs is kept as given.
    """
    if isinstance(url, (list, tuple)):
        return [str(u) for u in url]
    return [str(url)]


def jobname(url: str) -> str:
    """Best-effort name of the job that produced a result URL, or ``""`` if it names none.

    Results live under ``.../jobs/<JOBNAME>/...``; failing that, the parent directory's name.
    """
    scheme, _netloc, path = urlsplit(url)
    if scheme == "raw":
        return ""
    parts = [p for p in path.split("/") if p]
    if "jobs" in parts:
        at = len(parts) - 1 - parts[::-1].index("jobs")
        if at + 1 < len(parts):
            return parts[at + 1]
    return parts[-2] if len(parts) >= 2 else ""
