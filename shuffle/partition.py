"""Stable partitioning of map output.

A key's partition is ``xxh64(key_bytes(key)) % nr_partitions``. ``key_bytes`` never involves
Python's salted ``hash``, so every process, whatever its ``PYTHONHASHSEED``, sends a key to the
same reducer. Encoding of a key:

- ``str``: UTF-8 (lone surrogates passed through), ``bytes``: as is,
- ``int`` (not ``bool``): its decimal string, so ``7`` and ``"7"`` share a partition,
- anything else: ``msgpack.packb`` (sets packed as their sorted packed elements, so their order
  does not depend on the hash seed); what msgpack cannot pack is pickled (protocol 4).

Equal keys of different types may differ in bytes (``1`` and ``1.0``, as in Disco's
``hash(str(key))``); keys whose pickle is not canonical (objects holding sets) may not be stable.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable

import msgpack
import xxhash

from common.error import UsageError

__all__ = ["default_partition", "key_bytes", "partition_pairs"]

_xxh64 = xxhash.xxh64_intdigest
_SET_EXT = 1


def _canonical(obj):
    """msgpack ``default`` hook: sets become an ExtType of their sorted packed elements."""
    if isinstance(obj, (set, frozenset)):
        return msgpack.ExtType(_SET_EXT, b"".join(sorted(_packb(e) for e in obj)))
    raise TypeError(f"cannot pack {type(obj).__name__}")


def _packb(obj) -> bytes:
    return msgpack.packb(obj, default=_canonical)


def _str_bytes(key: str) -> bytes:
    try:
        return key.encode()
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")


def _other_bytes(key) -> bytes:
    try:
        return _packb(key)
    except (TypeError, ValueError, OverflowError):
        return pickle.dumps(key, protocol=4)


_BY_TYPE = {str: _str_bytes, bytes: lambda k: k, int: lambda k: str(k).encode()}


def key_bytes(key) -> bytes:
    """The bytes a key is hashed by (see the module docstring)."""
    return _BY_TYPE.get(type(key), _other_bytes)(key)


def default_partition(key, nr_partitions: int, params=None) -> int:
    """Disco's default partition function, stable across processes."""
    return _xxh64(key_bytes(key)) % nr_partitions


def partition_pairs(pairs: Iterable[tuple], nr_partitions: int,
                    partition_fn: Callable = default_partition, params=None) -> list[list]:
    """Split pairs into ``nr_partitions`` lists, keeping their order within each list."""
    if nr_partitions < 1:
        raise UsageError(f"nr_partitions must be at least 1, got {nr_partitions}")
    if nr_partitions == 1:
        return [list(pairs)]
    parts: list[list] = [[] for _ in range(nr_partitions)]
    if partition_fn is default_partition:
        _split_default(pairs, nr_partitions, [p.append for p in parts])
    else:
        _split_custom(pairs, nr_partitions, partition_fn, params, [p.append for p in parts])
    return parts


def _split_default(pairs, n: int, appends: list) -> None:
    xxh, slow = _xxh64, key_bytes
    for pair in pairs:
        key = pair[0]
        kind = type(key)
        if kind is str:
            try:
                data = key.encode()
            except UnicodeEncodeError:
                data = slow(key)
        elif kind is bytes:
            data = key
        else:
            data = slow(key)
        appends[xxh(data) % n](pair)


def _split_custom(pairs, n: int, partition_fn: Callable, params, appends: list) -> None:
    for pair in pairs:
        p = partition_fn(pair[0], n, params)
        try:
            if 0 <= p < n:
                appends[p](pair)
                continue
        except TypeError:
            pass
        name = getattr(partition_fn, "__name__", repr(partition_fn))
        raise UsageError(f"partition function {name} returned {p!r} for key {pair[0]!r}; "
                         f"expected an int in 0..{n - 1}")
