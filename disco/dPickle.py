"""Disco's ``disco.dPickle``: pickling that also takes functions, closures and partials.

Disco shipped job functions to the nodes by pickling their code. Here :func:`dumps` is
cloudpickle's, which pickles lambdas, nested functions, ``functools.partial`` objects and
functions of ``__main__`` by value, and everything else as ``pickle`` does; :func:`loads` is
``pickle.loads`` (what cloudpickle's output needs). Only load what you trust: unpickling runs
code.
"""
from __future__ import annotations

import pickle

import cloudpickle

__all__ = ["HIGHEST_PROTOCOL", "dump", "dumps", "load", "loads"]

HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL


def dumps(obj, protocol: int | None = None) -> bytes:
    """``obj`` pickled, functions included. ``protocol`` -1 or None means the highest."""
    if protocol is None or protocol < 0:
        protocol = HIGHEST_PROTOCOL
    return cloudpickle.dumps(obj, protocol=protocol)


def loads(data: bytes):
    """The object :func:`dumps` pickled."""
    return pickle.loads(data)


def dump(obj, fileobj, protocol: int | None = None) -> None:
    fileobj.write(dumps(obj, protocol))


def load(fileobj):
    return pickle.load(fileobj)
