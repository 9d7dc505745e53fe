"""Running one map or reduce task inside a worker.

A map task reads its input through the map reader, calls ``map(entry, params)`` on every
entry, combines (``combiner(key, value, buffer, done, params)``) when a combiner is given,
partitions by ``partition(key, n, params)`` and writes one record file per partition label.
A reduce task reads every map output of its label (from disk when local, else from the
producing node's data port), sorts with an external merge sort when ``sort=True``, and
writes its result. Every output file appears only complete (temporary name, then rename), so a
re-run of a task replaces its output instead of duplicating it.
"""
from __future__ import annotations

import contextlib
import copy
import cProfile
import inspect
import os
import pickle
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, islice, repeat
from operator import add, itemgetter
from pathlib import Path

from disco.error import CommError, DataError, DiscoError
from disco import jobpack
from disco.worker import fuse, task_io
from disco.worker.classic.func import sum_combiner
from mesh.datadir import digest_of, write_atomic
from shuffle import record
from shuffle.partition import RangePartition, default_partition, partition_pairs
from shuffle.sort import ExternalSorter
from mesh import log as mesh_log
from mesh import spare, transfer
from mesh.transfer import open_disco

BATCH = 1 << 11  # pairs per hand-over from a map: small enough to stay in the CPU cache
CURRENT: dict = {"task": None, "ctx": None}  # the task this worker runs now (run_task sets it)
SORT_BUDGET = max(1, int(os.environ.get("DISCO_SORT_MB") or 256)) << 20  # per reduce task
RUN_DISTINCT = 1 << 18  # a map's counted output for a reduce is written as a run at this many distinct pairs
RUN_LOCAL = 1 << 13  # and its other output at this many pairs, sorted while in the CPU cache
FRAME_NOW_PAIRS = 1 << 8  # a label's cut of a run at least this big is its own frame
RAW_BUFFER_BYTES = 1 << 20  # a label's file written by the job's own output stream
RUN_SAMPLE = 1 << 16  # pairs of a run counted before deciding whether counting pays
_EXACT = frozenset((str, bytes, int, type(None)))  # types whose equal values are interchangeable
_first = itemgetter(0)
_DICT_ITEMS = type({}.items())
_INT = frozenset({int})


@dataclass
class JobContext:
    """A worker's job: its functions, params and where its files go."""

    name: str
    header: dict
    fn: dict
    node: str
    address: str
    data_dir: Path
    out_dir: Path = field(init=False)
    ddfs: object = field(default=None, init=False)  # a disco.ddfs.DDFS once results are saved
    initial: dict = field(default_factory=dict, init=False)  # the job's params, never handed out

    def __post_init__(self):
        self.out_dir = self.data_dir / "vol0" / "jobs" / self.name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._own_dir: tuple[int, Path] | None = None
        self._spares: tuple[int, spare.Spares] | None = None

    def spares(self) -> spare.Spares:
        """This worker process's taker of the node's spare files (``mesh.spare``)."""
        if self._spares is None or self._spares[0] != os.getpid():
            self._spares = (os.getpid(), spare.Spares(spare.spare_dir(self.data_dir / "vol0")))
        return self._spares[1]

    def own_dir(self) -> Path:
        """This worker process's directory of the job's outputs (``w<pid>/``, made once). Each
        worker creates and renames its files in its own directory: in one shared directory,
        workers queue on its lock for every output, and the file system allocates every new
        file's inode from the same place."""
        pid = os.getpid()
        if self._own_dir is None or self._own_dir[0] != pid:
            path = self.out_dir / f"w{pid}"
            path.mkdir(exist_ok=True)
            self._own_dir = (pid, path)
        return self._own_dir[1]

    @classmethod
    def load(cls, data_dir: Path, job: str, node: str, address: str, digest: str = "",
             urls=()) -> "JobContext":
        pack = jobpack.unpack(_jobpack(data_dir, digest, address, urls))
        jobpack.register_sources(pack["sources"])
        # As in Disco, tasks run in the job's home dir, next to the job's required files.
        work = data_dir / "jobs" / job / "home"
        work.mkdir(parents=True, exist_ok=True)
        for name, content in pack["files"].items():
            (work / os.path.basename(name)).write_bytes(content)
        sys.path.insert(0, str(work))
        os.chdir(work)
        code = pickle.loads(pack["code"])
        jobpack.import_required(pack["required"], code)
        jobpack.bind_worker_names(code)
        ctx = cls(job, pack["header"], code, node, address, data_dir)
        task_io.register_scheme("disco", ctx.open_disco)
        task_io.register_scheme("dir", ctx.open_disco)
        return ctx

    def open_disco(self, url: str):
        return open_disco(url.replace("dir://", "disco://", 1), self.address, self.data_dir)

    def url(self, path: Path) -> str:
        return f"disco://{self.address}/{path.relative_to(self.data_dir).as_posix()}"


def _jobpack(data_dir: Path, digest: str, address: str, urls) -> bytes:
    """The job pack, by content hash: on disk when this node holds it, else fetched from one of
    the nodes that stored it at submission (``urls``) and kept here for the job's next tasks."""
    path = data_dir / "jobpacks" / digest
    if path.exists():
        return path.read_bytes()
    errors = []
    for url in urls:
        try:
            fd, _, _ = open_disco(url, address, data_dir)
            with fd:
                blob = fd.read()
        except DiscoError as exc:
            errors.append(f"{url}: {exc}")
            continue
        if digest_of(blob) == digest:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, blob)  # a cache: not fsynced, the holders keep the durable copy
            return blob
        errors.append(f"{url}: content does not match its hash")
    raise CommError(f"job pack {digest[:12]} could not be fetched: {'; '.join(errors) or 'no holder'}")


class InputLostError(DataError):
    """An input made by an earlier task cannot be read: the master re-runs its producer."""

    def __init__(self, url: str, why: Exception):
        super().__init__(f"cannot read {url}: {why}")
        self.lost_url = url


class Output:
    """One record file per partition label, each written to a temporary name first.

    ``memo=True`` pickles its frames with the memo (``_Runs`` writes through it)."""

    def __init__(self, ctx: JobContext, stem: str, memo: bool = False):
        self.ctx, self.stem = ctx, stem
        self.writers: dict[int, tuple] = {}
        self.memo = memo

    def final_path(self, label: int) -> Path:
        return self.ctx.own_dir() / f"{self.stem}-{label}.drec"

    def writer(self, label: int):
        entry = self.writers.get(label)
        if entry is None:
            final = self.final_path(label)
            tmp = final.with_name(final.name + f".tmp{os.getpid()}")
            f = self.ctx.spares().create(tmp)
            writer = record.RecordWriter(f, memo=self.memo)
            entry = self.writers[label] = (writer, f, tmp, final)
        return entry[0]

    def raw(self, label: int):
        """The label's output file itself, for a stage's own output chain to write."""
        if label in self.writers:
            raise DiscoError(f"output {label} is open already")
        final = self.final_path(label)
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        # not a spare one: the user's chain may close it before commit; a big buffer, as the
        # chain's add(key, value) typically writes a few bytes at a time (measured: 100-byte
        # writes take half the time they do with the default 8 KiB buffer)
        f = open(tmp, "wb", buffering=RAW_BUFFER_BYTES)
        self.writers[label] = (None, f, tmp, final)
        return f

    def add_many(self, pairs: list, labels: int = 1, partition=None, params=None,
                 by_key: bool = False) -> None:
        for label, part in _labelled(pairs, labels, partition, params, by_key):
            self.writer(label).add_many(part)

    def set_memo(self, on: bool) -> None:
        """Pickle frames from now on with the memo (counted runs) or without (distinct pairs)."""
        self.memo = on
        for writer, *_ in self.writers.values():
            if writer is not None:
                writer.memo = on

    def commit(self) -> list:
        outputs = []
        for label, (writer, f, tmp, final) in sorted(self.writers.items()):
            if writer is not None:
                writer.close()
                f.truncate()  # a spare file's old bytes end here
            f.close()
            os.replace(tmp, final)
            outputs.append({"label": label, "url": self.ctx.url(final),
                            "size": final.stat().st_size,
                            "records": writer.records if writer is not None else 0})
        return outputs

    def abort(self) -> None:
        for _, f, tmp, _ in self.writers.values():
            f.close()
            tmp.unlink(missing_ok=True)


def _labelled(pairs: list, labels: int, partition, params, by_key: bool = False) -> list:
    """``(label, part)`` for each partition label that gets some of ``pairs`` (label 0 gets
    them all, even none, when there is nothing to partition); ``by_key``: each part sorted by
    key (``_sort_by_key``)."""
    if labels == 1 and partition is None:
        parts = [(0, pairs)]
    else:
        parts = partition_pairs(pairs, labels, partition or default_partition, params)
        parts = [(label, part) for label, part in enumerate(parts) if part]
    if by_key:
        for _, part in parts:
            _sort_by_key(part)
    return parts


def _sort_by_key(pairs: list) -> bool:
    """Sort pairs by key, stable, in place; keys that do not compare (mixed types) leave them
    unsorted (Disco promises no order) and give False."""
    try:
        pairs.sort(key=_first)
    except TypeError:
        return False
    return True


class _Runs:
    """A map's output for a reduce, written to ``out`` per label as runs sorted by key.

    Disco promises a reduce no order, and a reduce that sorts (``kvgroup(sorted(iter))``) merges
    a few sorted runs far faster than it sorts random pairs. Batches whose keys and values are
    all str, bytes, int or None (types whose equal values are the same value, so counting them
    loses nothing) are counted: a run holds each distinct pair once with its count, and is
    written as that one object repeated, which the frame pickles once (``Output(memo=True)``)
    and the reduce compares and groups by identity. With the default or range partitioner,
    which depend on the key alone, pairs are partitioned once per distinct pair, when the run
    is written. Output that hardly repeats (more than half its pairs distinct, in a run's first
    ``RUN_SAMPLE`` pairs or in a whole run) is not counted from then on. Any batch not counted
    is checked pair by pair and buffered as it is; every ``RUN_LOCAL`` pairs the buffer is
    sorted by key and split by label, one short run per label. Sorting a few thousand pairs the
    map has just made, while they are in the CPU cache, and pickling them then, costs about half
    what sorting a whole label's share does (its pairs scattered over the map's memory), more
    than the reduce's merge of the extra runs costs. Keys that do not compare (mixed types)
    leave a run grouped but unsorted."""

    def __init__(self, out: Output, labels: int, partition, params, task_id: str):
        self.out, self.labels, self.partition = out, labels, partition
        self.params, self.task_id = params, task_id
        self.later = labels == 1 or partition in (None, default_partition) \
            or type(partition) is RangePartition  # partition distinct pairs when written
        self.counting = True  # until the output shows it hardly repeats
        self.counted = 0  # pairs in self.counts
        self.counts: dict = {}  # label (None: not partitioned yet) -> Counter of its pairs
        self.plain: list = []  # pairs not counted, in the order the map gave them

    def add(self, batch: list) -> None:
        """A batch of the map's output, not yet checked to be pairs."""
        if self.counting and set(map(type, batch)) == {tuple} \
                and set(map(type, chain.from_iterable(batch))) <= _EXACT:
            parts = ((None, batch),) if self.later else self._labelled(batch)
            for label, part in parts:
                self.counts.setdefault(label, Counter()).update(part)
            before, self.counted = self.counted, self.counted + len(batch)
            if before < RUN_SAMPLE <= self.counted and self._distinct() * 2 > self.counted:
                self.flush()  # the run's first pairs hardly repeat: counting would cost, not pay
                return
        else:
            self.plain += pairs_of(batch, self.task_id)
            if len(self.plain) >= RUN_LOCAL:
                self._write_plain()
        if self._distinct() >= RUN_DISTINCT:
            self.flush()

    def _write_plain(self) -> None:
        """The pairs not counted, sorted by key while they are still in the CPU cache (the
        map made them moments ago), then each label's part written as a run: a stable split
        of sorted pairs leaves each part sorted."""
        pairs, self.plain = self.plain, []
        if not pairs:
            return
        if _sort_by_key(pairs) and self.labels > 1 and type(self.partition) is RangePartition:
            parts = self.partition.split_sorted(pairs, self.labels)  # labels follow keys
        else:
            parts = self._labelled(pairs)
        for label, part in parts:
            writer = self.out.writer(label)
            if len(part) >= FRAME_NOW_PAIRS:
                writer.add_frame(part)  # pickled now, while in the CPU cache
            else:  # many labels: frames this small would cost more than the cache saves
                writer.add_many(part)

    def _labelled(self, pairs: list):
        return _labelled(pairs, self.labels, self.partition, self.params)

    def _distinct(self) -> int:
        return sum(map(len, self.counts.values()))

    def flush(self) -> None:
        """Write what is buffered, one run per label."""
        if self.counted and self._distinct() * 2 > self.counted:
            self.counting = False
            self.out.set_memo(False)
        for key, counts in sorted(self.counts.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
            distinct = pairs_of(list(counts), self.task_id)  # shapes were not checked yet
            for label, part in ((key, distinct),) if key is not None else self._labelled(distinct):
                try:
                    part.sort()
                except TypeError:
                    pass  # mixed key types: equal pairs still come out next to each other
                self.out.writer(label).add_many(
                    chain.from_iterable(map(repeat, part, map(counts.__getitem__, part))))
        self.counts, self.counted = {}, 0
        self._write_plain()


class Adder:
    """The ``out`` of ``reduce(iter, out, params)``: ``out.add(key, value)``."""

    def __init__(self, output: Output):
        self.output, self.batch = output, []

    def add(self, key, value) -> None:
        self.batch.append((key, value))
        if len(self.batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.output.add_many(self.batch)
            self.batch = []


def run_task(ctx: JobContext, task: dict) -> tuple[list, dict]:
    """Run one task; return (outputs, stats). Raises whatever the user's code raises."""
    CURRENT.update(task=task, ctx=ctx)  # what disco.worker.classic.worker's this_*() read
    started = time.monotonic()
    fetched = transfer.FETCHED_BYTES
    # each task gets its own copy of the job's initial params, as in Disco: what one task's
    # map_init or map changes never reaches the worker's next task
    if "params" not in ctx.initial:
        ctx.initial["params"] = ctx.fn.get("params")
    ctx.fn = {**ctx.fn, "params": copy.deepcopy(ctx.initial["params"])}
    if ctx.fn.get("pipeline"):
        run = run_stage
    else:
        run = run_map if task["stage"] == "map" else run_reduce
    if ctx.fn.get("profile"):
        profiler = cProfile.Profile()
        outputs = profiler.runcall(run, ctx, task)
        _save_profile(ctx, task, profiler)
    else:
        outputs = run(ctx, task)
    final = task.get("final")
    if final is None:  # a master from before pipelines
        final = task["stage"] == ("reduce" if ctx.header.get("has_reduce") else "map")
    if ctx.header.get("save_results") and final:
        outputs = _save_outputs(ctx, task, outputs)
    stats = {"seconds": round(time.monotonic() - started, 4),
             "records": sum(o["records"] for o in outputs),
             "fetched_bytes": transfer.FETCHED_BYTES - fetched}
    return outputs, stats


def _save_outputs(ctx: JobContext, task: dict, outputs: list) -> list:
    """``save_results``: each final output becomes a DDFS blob with k copies; its URL is then
    the blob's replica set (the master tags them all ``disco:results:<job>`` at the end)."""
    from disco.ddfs import DDFS
    if ctx.ddfs is None:
        ctx.ddfs = DDFS(task.get("master") or ctx.address)
    saved = []
    for out in outputs:
        path = ctx.data_dir / out["url"].split("/", 3)[3]
        name = f"{ctx.name}:{path.stem}"
        saved.append({**out, "url": ctx.ddfs.put_blob(path, name=name)})
    return saved


def _save_profile(ctx: JobContext, task: dict, profiler) -> None:
    """``profile=True``: the task's cProfile stats become the job's out-of-band value
    ``profile-<stage>-<task index>`` (``Disco.profile_stats`` merges them)."""
    from disco.profiling import dump
    from disco.util import save_oob
    save_oob(task.get("master") or ctx.address, ctx.name,
             f"profile-{task['stage']}-{task['index']}", dump(profiler))


def _partitioning(ctx: JobContext) -> tuple[int, object]:
    labels = ctx.header["partitions"] if ctx.header.get("has_reduce") or ctx.header["partitions"] > 1 else 1
    partition = ctx.fn.get("partition")
    if labels > 1 and partition is None:
        partition = default_partition
    return labels, partition


def run_map(ctx: JobContext, task: dict) -> list:
    fn, params = ctx.fn, ctx.fn.get("params")
    fd, size, url = task_io.open_input(task["inputs"][0])
    combiner = fn.get("combiner")
    out_chain = fn.get("map_output_stream")
    sorted_runs = combiner is None and bool(ctx.header.get("has_reduce")) and not out_chain
    out = Output(ctx, f"map-{task['index']}", memo=sorted_runs)
    if out_chain:
        out = ChainedOutput(out, out_chain, params)
    try:
        stream, size, url = apply_input_chain(fn.get("map_input_stream"), fd, size, url, params)
        reader = fn.get("map_reader")
        if reader is None and stream is not fd and not hasattr(stream, "read"):
            entries = stream  # the chain's last stream gives the entries itself
        elif reader is None:
            entries = task_io.default_map_reader(stream, size, url, params,
                                                 lines=ctx.header.get("lines"))
        else:
            entries = task_io.call_reader(reader, stream, size, url, params)
        if fn.get("map_init"):
            fn["map_init"](entries, params)
        labels, partition = _partitioning(ctx)
        emit = lambda pairs: out.add_many(pairs, labels, partition, params)  # noqa: E731
        if sorted_runs:
            runs = _Runs(out, labels, partition, params, task["id"])
            _map_plain(fn["map"], entries, params, runs.add, task["id"], check=False)
            runs.flush()
        elif combiner is None:
            _map_plain(fn["map"], entries, params, emit, task["id"])
        elif combiner is sum_combiner:
            # for a reduce, each label's pairs sorted by key (one pair per key): a reduce that
            # sorts its input (kvgroup(sorted(iter))) then merges the maps' sorted runs, which
            # costs it less than the maps' sorts of their own smaller outputs do
            by_key = bool(ctx.header.get("has_reduce"))
            fused, why = fuse.fusion(fn["map"]) if fuse.enabled() else (None, None)
            if fused is not None:
                mesh_log.get().info("map_fused", job=ctx.name, task=task["id"])
            elif why:
                mesh_log.get().info("map_not_fused", job=ctx.name, task=task["id"], reason=why)
            _map_summing(fn["map"], entries, params,
                         lambda pairs: out.add_many(pairs, labels, partition, params, by_key),
                         fused)
        else:
            _map_combining(fn["map"], combiner, entries, params, emit)
        return out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        fd.close()


def _map_plain(mapf, entries, params, emit, task_id: str = "", check: bool = True) -> None:
    """``emit`` batches of the map's output, checked to be pairs unless ``check`` is false
    (the receiver checks them)."""
    batch = []
    extend = batch.extend
    for entry in entries:
        extend(mapf(entry, params))
        if len(batch) >= BATCH:
            emit(pairs_of(batch, task_id) if check else batch)
            batch = []
            extend = batch.extend
    if batch:
        emit(pairs_of(batch, task_id) if check else batch)


class MapOutputError(DiscoError):
    """A map yielded something that is not a (key, value) pair: the job's code is wrong, so
    no retry can help."""
    retryable = False


def pairs_of(batch: list, task_id: str) -> list:
    """``batch`` as (key, value) tuples, as Disco has them: a two-item list becomes a tuple,
    anything else is a ``MapOutputError`` naming the task."""
    if set(map(type, batch)) == {tuple} and set(map(len, batch)) == {2}:
        return batch
    out = []
    for item in batch:
        if type(item) is tuple and len(item) == 2:
            out.append(item)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            out.append(tuple(item))
        else:
            raise MapOutputError(f"task {task_id}: map must yield (key, value) pairs, but "
                                 f"yielded {item!r:.100}")
    return out


def _map_summing(mapf, entries, params, emit, fused=None) -> None:
    """``sum_combiner`` inlined: the same result as calling it once per pair, without the calls.

    ``fused`` (from ``fuse.summing(mapf)``, when the map could be fused) makes a copy of the
    map that adds its pairs into the buffer itself. Else a map that returns a dict's items
    (``Counter(...).items()``) has each key once, so its values are added to the buffer all at
    once, in C: ``buffer[key] = get(key, 0) + value`` for every key, in the same order, with the
    same result as the loop. Other output is added pair by pair the same way."""
    buffer: dict = {}
    if fused is not None:
        fuse.call(fused(buffer), entries, params)
        emit(list(buffer.items()))
        return
    get = buffer.get
    for entry in entries:
        out = mapf(entry, params)
        if type(out) is _DICT_ITEMS:
            counts = out.mapping
            if not buffer and set(map(type, counts.values())) <= _INT:
                buffer.update(counts)  # 0 + value is value itself
            else:
                buffer.update(zip(counts, map(add, map(get, counts, repeat(0)), counts.values())))
            continue
        for key, value in out:  # ``+``, never ``+=``: the user's values stay as they are
            buffer[key] = get(key, 0) + value
    emit(list(buffer.items()))


def _map_combining(mapf, combiner, entries, params, emit) -> None:
    buffer: dict = {}
    batch: list = []
    for entry in entries:
        for key, value in mapf(entry, params):
            extra = combiner(key, value, buffer, False, params)
            if extra:
                batch.extend(extra)
        if len(batch) >= BATCH:
            emit(batch)
            batch = []
    batch.extend(combiner(None, None, buffer, True, params) or ())
    if batch:
        emit(batch)


def _reduce_input(ctx: JobContext, task: dict):
    fn, params = ctx.fn, ctx.fn.get("params")
    reader = fn.get("reduce_reader")
    if reader is None and not ctx.header.get("has_map"):
        reader = _default_reader(ctx)
    chain_ = fn.get("reduce_input_stream")
    for inp in task["inputs"]:
        try:
            fd, size, url = task_io.open_input(inp)
            with fd:
                stream, size, url = apply_input_chain(chain_, fd, size, url, params)
                if reader is None and (stream is fd or hasattr(stream, "read")):
                    yield from record.iter_frames(stream)
                    continue
                if reader is not None:
                    stream = task_io.call_reader(reader, stream, size, url, params)
                records = iter(stream)
                while batch := list(islice(records, BATCH)):
                    yield batch
        except (CommError, DataError) as exc:
            if isinstance(inp, str) and inp.startswith(("disco://", "dir://")):
                raise InputLostError(inp, exc) from exc
            raise


@contextlib.contextmanager
def _sorter(ctx: JobContext, name: str):
    """An external sorter spilling into its own directory of the job's, removed after."""
    spill = ctx.out_dir / f"sort-{name}-{os.getpid()}"
    spill.mkdir(exist_ok=True)
    sorter = ExternalSorter(spill, SORT_BUDGET)
    try:
        yield sorter
    finally:
        sorter.close()
        try:
            spill.rmdir()
        except OSError:
            pass


def _sorted_input(ctx: JobContext, task: dict):
    """The reduce input sorted by key, as lists of pairs (spill files removed at the end)."""
    with _sorter(ctx, str(task["index"])) as sorter:
        for frame in _reduce_input(ctx, task):
            sorter.add_many(frame)
        yield from sorter.drain()


def run_reduce(ctx: JobContext, task: dict) -> list:
    fn, params = ctx.fn, ctx.fn.get("params")
    if ctx.fn.get("sort"):
        pairs = chain.from_iterable(_sorted_input(ctx, task))
    else:
        pairs = chain.from_iterable(_reduce_input(ctx, task))
    if fn.get("reduce_init"):
        fn["reduce_init"](pairs, params)
    out = Output(ctx, f"reduce-{task['label']}")
    if fn.get("reduce_output_stream"):
        out = ChainedOutput(out, fn["reduce_output_stream"], params)
    try:
        reducef = fn["reduce"]
        if _arity(reducef) >= 3:
            adder = Adder(out)
            reducef(pairs, adder, params)
            adder.flush()
        else:
            _drain(reducef(pairs, params), out.add_many)
        return [dict(o, label=task["label"]) for o in out.commit()]
    except BaseException:
        out.abort()
        raise


def _drain(pairs, emit) -> None:
    """``emit`` what ``pairs`` yields, a list of up to ``BATCH`` at a time."""
    it = iter(pairs)
    while batch := list(islice(it, BATCH)):
        emit(batch)


def _arity(func) -> int:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return 2
    return sum(1 for p in sig.parameters.values()
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


class ChainedOutput:
    """An ``Output`` written through the job's own ``map_output_stream`` or
    ``reduce_output_stream`` (Disco's ``f(stream, partition, url, params) -> stream`` chain over
    each label's file): every pair goes to the last stream's ``add(key, value)``, and that
    stream's ``close()``, if it has one, is called when the task ends."""

    def __init__(self, output: Output, chain, params):
        self.output, self.chain, self.params = output, chain, params
        self.streams: dict[int, object] = {}
        self.records: dict[int, int] = {}

    def add_many(self, pairs: list, labels: int = 1, partition=None, params=None,
                 by_key: bool = False) -> None:
        for label, part in _labelled(pairs, labels, partition, params, by_key):
            stream = self.streams.get(label)
            if stream is None:
                stream = _open_output_chain(self.output, label, self.chain, self.params)
                self.streams[label], self.records[label] = stream, 0
            add = stream.add
            for key, value in part:
                add(key, value)
            self.records[label] += len(part)

    def commit(self) -> list:
        for stream in self.streams.values():
            close = getattr(stream, "close", None)
            if callable(close):
                close()
        return [dict(o, records=self.records.get(o["label"], 0)) for o in self.output.commit()]

    def abort(self) -> None:
        self.output.abort()


def apply_input_chain(chain, fd, size, url, params) -> tuple:
    """Disco's input chain over an opened input: each ``f(stream, size, url[, params])`` gives
    ``(stream, size, url)`` or the next stream; ``task_input_stream`` is skipped (the input is
    open already). Without a chain, the input itself."""
    stream = fd
    for f in chain or ():
        if getattr(f, "__name__", "") == "task_input_stream":
            continue
        got = f(stream, size, url, params) if _arity(f) >= 4 else f(stream, size, url)
        if isinstance(got, tuple) and len(got) == 3:
            stream, size, url = got
        else:
            stream = got
    return stream, size, url


# -- pipeline stages ------------------------------------------------------------------------------

class StageOutput:
    """``interface.output(label)``: what ``add(key, value)`` writes goes to the task's output of
    that label (through the stage's ``output_chain`` when it has one)."""

    def __init__(self, output: Output, label: int, chain=(), params=None):
        self.output, self.label, self.batch = output, label, []
        self.stream = None
        if chain:
            self.stream = _open_output_chain(output, label, chain, params)

    def add(self, key, value) -> None:
        if self.stream is not None:
            self.stream.add(key, value)
            return
        self.batch.append((key, value))
        if len(self.batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.output.writer(self.label).add_many(self.batch)
            self.batch = []


def _open_output_chain(output: Output, label: int, chain, params):
    """A stage's own ``output_chain``: Disco's ``f(stream, partition, url, params) -> stream``
    functions over the label's raw output file; the last one's ``add`` is used."""
    writer = output.raw(label)
    stream, url = writer, output.ctx.url(output.final_path(label))
    for f in chain:
        if getattr(f, "__name__", "") == "task_output_stream":
            continue  # the file is open already
        got = f(stream, label, url, params) if _arity(f) >= 4 else f(stream, label, url)
        stream = got[0] if isinstance(got, tuple) else got
    if not hasattr(stream, "add"):
        raise DiscoError(f"the output_chain's last stream ({stream!r:.60}) has no add(key, value)")
    return stream


def _stage_of(ctx: JobContext, name: str):
    for index, (grouping, stage, *_rest) in enumerate(ctx.fn["pipeline"]):
        if stage.name == name:
            return index, grouping, stage
    raise DiscoError(f"the job's pipeline has no stage {name!r}")


def _stage_input(ctx: JobContext, stage, first: bool, inp, params):
    """One input of a stage's task, as the records ``process`` iterates over."""
    try:
        fd, size, url = task_io.open_input(inp)
    except (CommError, DataError) as exc:
        if isinstance(inp, str) and inp.startswith(("disco://", "dir://")):
            raise InputLostError(inp, exc) from exc
        raise
    with fd:
        if stage.input_chain:
            yield from apply_input_chain(stage.input_chain, fd, size, url, params)[0]
        elif first:
            yield from _default_reader(ctx)(fd, size, url, params)
        else:
            yield from task_io.chain_reader(fd, size, url, params)


def _default_reader(ctx: JobContext):
    lines = ctx.header.get("lines")
    return lambda fd, size, url, params: task_io.default_map_reader(fd, size, url, params,
                                                                    lines=lines)


def run_stage(ctx: JobContext, task: dict) -> list:
    """Run one task of a pipeline stage: init, process per input (or per label when the stage
    combines), done; one output file per label the task wrote."""
    from disco.worker.pipeline.worker import DiscoTask, TaskInfo
    params = ctx.fn.get("params")
    index, grouping, stage = _stage_of(ctx, task["stage"])
    group = task.get("group") or [task.get("label", 0), None]
    stage.taskinfo = TaskInfo(jobname=task["job"], host=ctx.node, stage=stage.name,
                              group=group, label=group[0])
    out = Output(ctx, f"{stage.name}-{task['index']}")
    streams: dict[int, StageOutput] = {}

    def output(label: int = 0) -> StageOutput:
        label = int(label)
        if label < 0:
            raise DiscoError(f"output labels are 0 or more, not {label}")
        if label not in streams:
            streams[label] = StageOutput(out, label, stage.output_chain, params)
        return streams[label]

    interface = DiscoTask(output=output)
    inputs = list(task.get("inputs", ()))
    labels = list(task.get("labels") or [0] * len(inputs))
    by_label: dict[int, list] = {}
    for inp, label in zip(inputs, labels):
        by_label.setdefault(int(label), []).append(inp)
    try:
        state = stage.init(interface, params) if callable(stage.init) else None
        if callable(stage.process):
            order = stage.input_hook(state, list(by_label)) if stage.input_hook else sorted(by_label)
            for label in order:
                group_inputs = by_label.get(label, [])
                records = lambda inp: _stage_input(ctx, stage, index == 0, inp, params)  # noqa: E731
                if stage.combine:
                    merged = (r for inp in group_inputs for r in records(inp))
                    if stage.sort:
                        merged = _sorted_records(ctx, task, merged)
                    stage.process(interface, state, label, merged)
                else:
                    for inp in group_inputs:
                        stage.process(interface, state, label, records(inp))
        if callable(stage.done):
            stage.done(interface, state)
        for stream in streams.values():
            stream.flush()
            if stream.stream is not None and hasattr(stream.stream, "close"):
                stream.stream.close()
        return out.commit()
    except BaseException:
        out.abort()
        raise


def _sorted_records(ctx: JobContext, task: dict, records):
    with _sorter(ctx, f"{task['stage']}-{task['index']}") as sorter:
        batch = []
        for record_ in records:
            # a pair's value goes boxed, so a record that is no pair (a line) is told apart
            batch.append((record_[0], (record_[1],)) if type(record_) is tuple
                         and len(record_) == 2 else (record_, None))
            if len(batch) >= BATCH:
                sorter.add_many(batch)
                batch = []
        sorter.add_many(batch)
        for key, boxed in sorter:
            yield key if boxed is None else (key, boxed[0])
