"""Sorting reduce input by key with an external merge sort (SPEC sections 7 and 11).

Order: keys of one type in their natural order; keys of mixed types grouped by type name first
(``sort_key``). Tuples and lists compare element by element with the same rule, sets and dicts
by their sorted contents, so mixed-type containers never raise ``TypeError``.

``ExternalSorter`` buffers pairs in memory. When the estimated size of the buffer passes
``memory_budget_bytes`` it sorts the buffer and spills it as one record file (a run) into
``spill_dir``. Iterating merges the runs and the sorted in-memory remainder a batch of frames
at a time (``merge_runs``); the sort is stable (pairs with equal keys keep the order they
were added in).
Size is estimated from a few sampled pairs per batch, never per pair. When every key in a
buffer has one plain type (str, bytes, int, float) it sorts on the key itself, which orders
exactly like ``sort_key`` and is several times faster; a big buffer of only ``bytes`` or only
``str`` keys in no particular order is first grouped by the keys' first two items
(``_prefix_sort``): the same order with fewer comparisons, and each group's sort stays in the
CPU cache (measured 10-15 % faster on 670k random 10-byte keys). A buffer made of sorted runs
(its first keys in order) is left to one ``sort``, which merges runs faster than grouping.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from bisect import bisect_left, bisect_right
from itertools import islice
from operator import itemgetter, le

from shuffle.record import RecordWriter, iter_frames

__all__ = ["ExternalSorter", "merge_runs", "sort_key"]

MEMORY_BUDGET_BYTES = 256 << 20
SPILL_FRAME_BYTES = 64 << 10
ADD_CHUNK_RECORDS = 1 << 16
DRAIN_CHUNK_RECORDS = 1 << 10
PREFIX_SORT_RECORDS = 1 << 12  # buffers this big or bigger, of bytes or str keys only
_PREFIXED = (frozenset({bytes}), frozenset({str}))
_PLAIN_TYPES = frozenset({str, bytes, int, float})
_first = itemgetter(0)
_getsizeof = sys.getsizeof


def sort_key(pair: tuple) -> tuple:
    """Key for ``sorted(pairs, key=sort_key)``: (type name, comparable form of the key)."""
    return _canon(pair[0])


def _canon(key) -> tuple:
    kind = type(key)
    if kind in _PLAIN_TYPES:
        return (kind.__name__, key)
    convert = _CONVERT.get(kind)
    if convert is None:
        for base, fn in _CONVERT.items():
            if isinstance(key, base):
                convert = fn
                break
        else:
            return (kind.__name__, key)
    return (kind.__name__, convert(key))


_CONVERT = {
    type(None): lambda k: 0,
    bool: int,
    tuple: lambda k: tuple(map(_canon, k)),
    list: lambda k: tuple(map(_canon, k)),
    frozenset: lambda k: tuple(sorted(map(_canon, k))),
    set: lambda k: tuple(sorted(map(_canon, k))),
    dict: lambda k: tuple(sorted((_canon(a), _canon(b)) for a, b in k.items())),
}


def _key_for(pairs: list, kinds: set | None = None):
    """itemgetter(0) when all keys share one plain type (same order, faster), else sort_key;
    ``kinds``, the keys' types, if known already."""
    if kinds is None:
        kinds = set(map(type, map(_first, pairs)))
    if len(kinds) == 1 and kinds <= _PLAIN_TYPES:
        return _first, kinds
    return sort_key, kinds


def _sorted(pairs: list, kinds: set | None = None) -> tuple[list, set]:
    """``pairs`` sorted by key, stable (in place unless prefix-sorted), and their key types
    (``kinds``, if known already)."""
    key, kinds = _key_for(pairs, kinds)
    if len(pairs) >= PREFIX_SORT_RECORDS and kinds in _PREFIXED and not _runs_ahead(pairs):
        return _prefix_sort(pairs), kinds
    pairs.sort(key=key)
    return pairs, kinds


def _runs_ahead(pairs: list, probe: int = 64) -> bool:
    """True if the first ``probe`` keys are in order: the buffer is likely made of sorted runs
    (sorted map output), which one ``sort`` merges faster than grouping would."""
    keys = list(map(_first, pairs[:probe]))
    return all(map(le, keys, keys[1:]))


def _prefix_sort(pairs: list) -> list:
    """Pairs whose keys are all ``bytes`` (or all ``str``) sorted by key, stable: grouped by
    the keys' first two items (in arrival order), the groups sorted each and joined in prefix
    order. Two keys with different prefixes compare as their prefixes do, so this is the order
    of one ``sort``, with about log2(groups) fewer comparisons per pair."""
    groups: dict = {}
    get = groups.get
    for pair in pairs:
        prefix = pair[0][:2]
        group = get(prefix)
        if group is None:
            groups[prefix] = [pair]
        else:
            group.append(pair)
    out: list = []
    for prefix in sorted(groups):
        group = groups[prefix]
        group.sort(key=_first)
        out += group
    return out


def _pair_size(pair) -> int:
    """Rough bytes held by one pair and its list slot."""
    return 8 + _getsizeof(pair) + _getsizeof(pair[0]) + _getsizeof(pair[1])


class ExternalSorter:
    """Sorts any number of pairs by key in bounded memory, spilling sorted runs to disk.

    Use as a context manager, or call ``close()`` to remove the spill files. ``spills`` counts
    the runs written so far.
    """

    def __init__(self, spill_dir: str | os.PathLike,
                 memory_budget_bytes: int = MEMORY_BUDGET_BYTES):
        self.spill_dir = os.fspath(spill_dir)
        self.memory_budget_bytes = memory_budget_bytes
        self.spills = 0
        self.records = 0
        self._buf: list = []
        self._estimated_bytes = 0
        self._pair_bytes = 0
        self._run_paths: list[str] = []
        self._run_kinds: set = set()
        # the buffer's key types, gathered as lists are added (each while in the CPU cache, not
        # in one pass over the whole buffer before sorting it); None: unknown
        self._buf_kinds: set | None = set()
        self._prefix = f"sort-{os.urandom(4).hex()}"

    def add(self, key, value) -> None:
        self._buf.append((key, value))
        self._buf_kinds = None
        self.records += 1
        self._estimated_bytes += self._pair_bytes
        if not self._pair_bytes or self._estimated_bytes > self.memory_budget_bytes:
            self._account([])

    def add_many(self, pairs: Iterable[tuple]) -> None:
        if type(pairs) is not list:
            it = iter(pairs)
            while chunk := list(islice(it, ADD_CHUNK_RECORDS)):
                self.add_many(chunk)
            return
        self._buf.extend(pairs)
        if self._buf_kinds is not None:
            self._buf_kinds.update(map(type, map(_first, pairs)))
        self.records += len(pairs)
        self._account(pairs)

    def _account(self, batch: list) -> None:
        """Re-estimate pair size from a sample of ``batch`` (or the buffer), spill if over."""
        sample = batch or self._buf[-3:]
        if sample:
            n = len(sample)
            picks = (sample[0], sample[n // 2], sample[-1])
            size = sum(map(_pair_size, picks)) // 3
            self._pair_bytes = (self._pair_bytes + size) // 2 if self._pair_bytes else size
        self._estimated_bytes = len(self._buf) * self._pair_bytes
        if self._estimated_bytes > self.memory_budget_bytes:
            self.spill()

    def spill(self) -> None:
        """Sort the buffered pairs and write them as one run file."""
        if not self._buf:
            return
        buf, kinds = _sorted(*self._take())
        self._run_kinds |= kinds
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, f"{self._prefix}-{len(self._run_paths)}.drec")
        self._run_paths.append(path)
        with open(path, "wb") as f:
            writer = RecordWriter(f, frame_bytes=SPILL_FRAME_BYTES)
            writer.add_many(buf)
            writer.close()
        self.spills += 1

    def _take(self) -> tuple[list, set | None]:
        """The buffer and its key types, leaving both empty."""
        taken = self._buf, self._buf_kinds
        self._buf, self._buf_kinds, self._estimated_bytes = [], set(), 0
        return taken

    def sorted_pairs(self) -> Iterator[tuple]:
        """All pairs added so far, sorted by key (stable)."""
        self._buf, kinds = _sorted(self._buf, self._buf_kinds)
        if not self._run_paths:
            return iter(self._buf)
        kinds |= self._run_kinds
        merge_key = _first if len(kinds) == 1 and kinds <= _PLAIN_TYPES else sort_key
        runs = [_read_run(path) for path in self._run_paths]
        runs.append(iter([self._buf]))
        return merge_runs(runs, merge_key)

    __iter__ = sorted_pairs

    def drain(self, chunk: int = DRAIN_CHUNK_RECORDS) -> Iterator[list]:
        """All pairs added so far, sorted by key (stable), as lists of up to ``chunk`` pairs,
        leaving the sorter empty. The sorter lets go of each list's pairs as it hands the list
        over, so a pair is freed soon after its consumer is done with it, while it is still in
        the CPU cache, instead of with all the others when the sort is dropped (measured on
        670k sort records: freed cold at the end, 135 ms; handed over this way, the whole
        hand-over took 30-100 ms less than before)."""
        if self._run_paths:  # the merge makes each batch anew and drops it after
            pairs = self.sorted_pairs()
            while part := list(islice(pairs, chunk)):
                yield part
            self._take()
            return
        buf, _ = _sorted(*self._take())
        box: list = []  # what is yielded is popped from it: this frame keeps no reference
        blank = [None] * chunk
        for start in range(0, len(buf), chunk):
            box.append(buf[start:start + chunk])
            buf[start:start + chunk] = blank[:len(box[0])]  # the same length: no moving
            yield box.pop()

    def close(self) -> None:
        """Remove the spill files and drop the buffer."""
        for path in self._run_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._run_paths = []
        self._take()

    def __enter__(self) -> ExternalSorter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_run(path: str) -> Iterator[list]:
    with open(path, "rb") as f:
        yield from iter_frames(f)


def merge_runs(runs: list[Iterator[list]], key) -> Iterator[tuple]:
    """Stable merge of sorted runs, each given as an iterator of sorted lists (frames).

    Works a batch at a time instead of a pair at a time (``heapq.merge``): ``bound`` is the
    smallest last key among the runs' current frames; every pair below it, from every run, is
    cut out with ``bisect``, concatenated in run order and sorted (Timsort merges the sorted
    slices in C). Pairs equal to ``bound`` are taken from runs up to and including the first
    run whose frame ends at ``bound`` (its next frame may hold more of them), so equal keys
    keep run order. That first run's frame is used up, so each round makes progress.
    """
    heads = [[frame, 0, it] for it in runs if (frame := _next_frame(it)) is not None]
    while heads:
        bound = min(key(head[0][-1]) for head in heads)
        batch: list = []
        take_equal = True
        for head in heads:
            frame, pos = head[0], head[1]
            cut = (bisect_right if take_equal else bisect_left)(frame, bound, pos, key=key)
            batch.extend(frame[pos:cut] if pos or cut < len(frame) else frame)
            head[1] = cut
            if take_equal and cut == len(frame) and key(frame[-1]) == bound:
                take_equal = False
        heads = [h for h in heads if h[1] < len(h[0]) or _advance(h)]
        batch.sort(key=key)
        yield from batch


def _next_frame(it: Iterator[list]) -> list | None:
    for frame in it:
        if frame:
            return frame
    return None


def _advance(head: list) -> bool:
    frame = _next_frame(head[2])
    if frame is None:
        return False
    head[0], head[1] = frame, 0
    return True
