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

``range_partition(low, high)`` makes a partition function that keeps key order instead: label
``i`` holds smaller keys than label ``i + 1``, so with ``sort=True`` the results read in label
order are sorted as a whole (a distributed sort, as terasort's range partitioner does).
"""
from __future__ import annotations

import pickle
from bisect import bisect_left
from collections.abc import Callable, Iterable
from operator import itemgetter

import msgpack
import xxhash

from common.error import UsageError

__all__ = ["default_partition", "key_bytes", "partition_pairs", "range_partition"]

_xxh64 = xxhash.xxh64_intdigest
_SET_EXT = 1
_first = itemgetter(0)
_BYTES = frozenset({bytes})


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
    elif type(partition_fn) is RangePartition:
        partition_fn.split(pairs, nr_partitions, [p.append for p in parts])
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


# -- range partitioning ------------------------------------------------------------------------

def range_partition(low: int = 0, high: int = 256) -> RangePartition:
    """A partition function ``f(key, n, params)`` that keeps the order of ``bytes`` keys
    (``str`` keys by their UTF-8, which orders like the ``str``): smaller keys get smaller or
    equal labels. ``low`` and ``high`` bound the byte values the keys are made of (for keys of
    printable ASCII: ``range_partition(33, 127)``); the labels split the keys' first two bytes,
    read as a two-digit number in base ``high - low``, into ``n`` equal ranges, so keys drawn
    evenly from that alphabet fill the labels evenly. Bytes outside ``[low, high)`` go to the
    first or last range; keys of any other type raise ``UsageError``.

    Use with ``partitions=N`` and ``sort=True``: each reduce gets one key range, sorted, and
    the job's results in label order are sorted as a whole."""
    return RangePartition(low, high)


class RangePartition:
    """``range_partition(low, high)``'s function (picklable; ``partition_pairs`` routes pairs
    through ``split``, table lookups per pair instead of a call)."""

    def __init__(self, low: int = 0, high: int = 256):
        if not 0 <= low < high <= 256:
            raise UsageError(f"range_partition needs 0 <= low < high <= 256, got {low}, {high}")
        self.low, self.high = low, high
        self._cache: dict[int, tuple] = {}

    def __getstate__(self):
        return {"low": self.low, "high": self.high}

    def __setstate__(self, state):
        self.__init__(state["low"], state["high"])

    def __repr__(self) -> str:
        return f"range_partition({self.low}, {self.high})"

    def __eq__(self, other) -> bool:
        return type(other) is RangePartition and (other.low, other.high) == (self.low, self.high)

    def __hash__(self) -> int:
        return hash((RangePartition, self.low, self.high))

    def position(self, key) -> int:
        """The key's place among ``span ** 2`` ranges (``span = high - low``), in key order."""
        if type(key) is str:
            key = _str_bytes(key)
        elif not isinstance(key, (bytes, bytearray, memoryview)):
            raise UsageError(f"range_partition orders bytes and str keys, not "
                             f"{type(key).__name__} ({key!r:.60})")
        low, span = self.low, self.high - self.low
        if not key:
            return 0
        first = key[0] - low
        if first < 0:
            return 0
        if first >= span:
            return span * span - 1
        second = key[1] - low if len(key) > 1 else 0
        return first * span + min(max(second, 0), span - 1)

    def __call__(self, key, nr_partitions: int, params=None) -> int:
        span = self.high - self.low
        return self.position(key) * nr_partitions // (span * span)

    def _tables(self, n: int) -> tuple[list, list]:
        """For each first byte: its label if every key starting with it has the same one, else
        None; and each first byte's row of labels by second byte."""
        tables = self._cache.get(n)
        if tables is None:
            low, span = self.low, self.high - self.low
            total = span * span
            seconds = [min(max(b - low, 0), span - 1) for b in range(256)]
            rows = [[0] * 256 if a < low else [(total - 1) * n // total] * 256 if a >= self.high
                    else [((a - low) * span + s) * n // total for s in seconds]
                    for a in range(256)]
            first = [row[0] if row.count(row[0]) == 256 else None for row in rows]
            tables = self._cache[n] = (first, rows)
        return tables

    def split_sorted(self, pairs: list, n: int) -> list[tuple[int, list]]:
        """``pairs`` sorted by key (bytes or str keys), cut into ``(label, part)`` for each
        label that gets some, in label order. Labels grow with keys, so each label's pairs are
        one slice of the list, found by bisection: a few dozen calls instead of a lookup per
        pair. Keys of another type raise ``UsageError``, as ``split`` does."""
        out: list[tuple[int, list]] = []
        start, total = 0, len(pairs)

        def label_of(pair) -> int:
            return self(pair[0], n)
        while start < total:
            label = label_of(pairs[start])
            end = bisect_left(pairs, label + 1, start + 1, total, key=label_of)
            out.append((label, pairs[start:end] if start or end < total else pairs))
            start = end
        return out

    def split(self, pairs: Iterable[tuple], n: int, appends: list) -> None:
        """Append each pair to its label's list (``partition_pairs``' fast path): a table
        lookup by the key's first byte, and its second where a label boundary falls."""
        pairs = pairs if type(pairs) is list else list(pairs)
        if not set(map(type, map(_first, pairs))) <= _BYTES:
            for pair in pairs:
                appends[self(pair[0], n)](pair)
            return
        first, rows = self._tables(n)
        by_first = [None if label is None else appends[label] for label in first]
        for pair in pairs:
            key = pair[0]
            try:
                append = by_first[key[0]]
                if append is None:
                    append = appends[rows[key[0]][key[1]]]
            except IndexError:  # b"" or a one-byte key at a boundary
                append = appends[self(key, n)]
            append(pair)
