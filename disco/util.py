"""Helpers that Disco users know by name: iterables, URLs, inputs, sorting, out-of-band data.

Use :func:`kvgroup` in a reduce to walk sorted pairs key by key, the URL helpers when a job
function or a tool needs to tell which kind of input it was given, :func:`inputlist` to see
what a job's inputs expand to, :func:`disk_sort`/:func:`dsorted` to sort more than fits in
memory, and :func:`save_oob`/:func:`load_oob` for small values kept beside a job in DDFS.

Where this project differs from Disco: a bare path has the scheme ``file`` (Disco: ``""``);
strings count as single items, not iterables; ``dir://`` URLs name record files (the same as
``disco://``), so resolving one gives a ``disco://`` URL; ``jobname`` gives ``""`` for a URL
that names no job. The functions that read or write data (``read_index``, ``parse_dir``,
``inputexpand``, ``save_oob``, ``load_oob``) import what they need when called.
"""
from __future__ import annotations

import hashlib
import heapq
import os
import pickle
import random
import re
import tempfile
from itertools import chain, groupby, islice
from operator import itemgetter
from typing import Any, Iterable, Iterator

from disco.error import DataNotFound, UsageError

__all__ = ["argcount", "chainify", "deref", "disk_sort", "dsorted", "external", "flatten",
           "format_size", "hexhash", "identity", "ilen", "inputexpand", "inputlist",
           "isiterable", "iskv", "ispartitioned", "iterify", "jobname", "kvgroup", "kvify",
           "listify", "load_oob", "localize", "netloc", "parse_dir", "partition", "proxy_url",
           "read_index", "reify", "save_oob", "schemesplit", "shuffled", "urljoin", "urllist",
           "urlresolve", "urlsplit", "urltoken"]

_first = itemgetter(0)
_second = itemgetter(1)
OOB_KEY = re.compile(r"[A-Za-z0-9_\-:@]{1,256}\Z")   # Disco's rule for out-of-band keys
DSORT_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


# -- iterables ----------------------------------------------------------------------------------

def kvgroup(kviter: Iterable[tuple]) -> Iterator[tuple[Any, Iterator]]:
    """Group consecutive pairs with equal keys: yields ``(key, values)``, values as a generator.

    The input must already be sorted (or at least grouped) by key, as in
    ``for word, counts in kvgroup(sorted(iter))``. Consume each group's values before moving on
    to the next key; the values of a skipped group are gone.
    """
    for key, pairs in groupby(kviter, key=_first):
        yield key, map(_second, pairs)


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


def listify(obj) -> list:
    """``iterify(obj)`` as a new list."""
    return list(iterify(obj))


def flatten(iterable) -> Iterator:
    """Every non-iterable item of arbitrarily nested iterables, depth first; strings stay whole."""
    for item in iterable:
        if isiterable(item):
            yield from flatten(item)
        else:
            yield item


def chainify(iterable) -> list:
    """The items of the iterables in ``iterable``, one level flattened, as a list."""
    return list(chain.from_iterable(iterable))


def identity(obj):
    return obj


def ilen(iterable) -> int:
    """How many items ``iterable`` yields (it is consumed)."""
    return sum(1 for _ in iterable)


def iskv(obj) -> bool:
    """True for a 2-tuple, the shape of a ``(key, value)`` pair."""
    return isinstance(obj, tuple) and len(obj) == 2


def kvify(entry) -> tuple:
    """``entry`` if it is a pair, else ``(entry, None)``."""
    return entry if iskv(entry) else (entry, None)


def partition(iterable, fn) -> tuple[list, list]:
    """``(items for which fn is true, the others)``, each in the input's order."""
    true, false = [], []
    for item in iterable:
        (true if fn(item) else false).append(item)
    return true, false


def shuffled(obj) -> list:
    """A new list of ``obj``'s items in random order."""
    items = listify(obj)
    random.shuffle(items)
    return items


def reify(dotted_name: str, globals: dict | None = None):
    """The object a dotted name refers to: ``reify("os.path.join")``; a name without a dot is
    looked up in ``globals`` (default: the builtins)."""
    if not isinstance(dotted_name, str) or not dotted_name:
        raise UsageError(f"reify needs a dotted name such as 'os.path.join', got {dotted_name!r}")
    if "." not in dotted_name:
        import builtins
        scope = {**vars(builtins), **(globals or {})}
        if dotted_name not in scope:
            raise UsageError(f"reify: no object named {dotted_name!r}")
        return scope[dotted_name]
    module, name = dotted_name.rsplit(".", 1)
    import importlib
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return getattr(reify(module, globals), name)  # a class attribute: pkg.Class.attr
    except AttributeError:
        raise UsageError(f"reify: module {module!r} has no attribute {name!r}") from None


def argcount(func) -> int:
    """How many positional arguments ``func`` takes (a ``functools.partial``'s bound ones not
    counted; ``*args`` counts as many as asked for, reported as a large number)."""
    import inspect
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 0
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 1 << 16
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def hexhash(string) -> str:
    """The first two hex digits of the MD5 of ``string`` (str as UTF-8): a bucket name."""
    data = string.encode("utf-8") if isinstance(string, str) else bytes(string)
    return hashlib.md5(data).hexdigest()[:2]


def format_size(num) -> str:
    """A byte count for humans: ``format_size(1536) == '1.5KB'``."""
    for unit in (" bytes", "KB", "MB", "GB", "TB"):
        if abs(num) < 1024.0 or unit == "TB":
            return f"{num:3.1f}{unit}"
        num /= 1024.0
    raise AssertionError("unreachable")


# -- URLs ---------------------------------------------------------------------------------------

class netloc(tuple):
    """A URL's ``(host, port)``, as Disco had it; ``str()`` is ``host[:port]``.

    ``netloc.parse("user:tok@host:8989") == ("host", "8989")``: ``user:token@`` is dropped and
    ``port`` is ``""`` when absent. A netloc is false when it has no host. It also compares
    equal to its string form (``netloc.parse("h:1") == "h:1"``), so code that treated it as
    the ``host:port`` string keeps working. ``netloc("h:1")`` parses a string; ``netloc(("h",
    "1"))`` takes the pair.
    """

    def __new__(cls, hostport=("", "")):
        if isinstance(hostport, str):
            return cls.parse(hostport)
        host, port = hostport
        return super().__new__(cls, (str(host), str(port)))

    @classmethod
    def parse(cls, netlocstr: str) -> "netloc":
        hostport = netlocstr.rsplit("@", 1)[1] if "@" in netlocstr else netlocstr
        host, _colon, port = hostport.partition(":")
        return tuple.__new__(cls, (host, port))

    @property
    def host(self) -> str:
        return self[0]

    @property
    def port(self) -> str:
        return self[1]

    def __bool__(self) -> bool:
        return bool(self[0])

    def __str__(self) -> str:
        return f"{self[0]}:{self[1]}" if self[1] else self[0]

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            return str(self) == other
        return tuple.__eq__(self, other)

    def __ne__(self, other) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"netloc({tuple.__repr__(self)})"


def schemesplit(url: str) -> tuple[str, str]:
    """``(scheme, rest)`` of a URL; a bare path has scheme ``file``."""
    if "://" in url:
        scheme, rest = url.split("://", 1)
        return scheme, rest
    return "file", url


def urlsplit(url: str, localhost=None, disco_port=None, **localize_dirs) -> tuple[str, netloc, str]:
    """``(scheme, netloc, path)`` of a URL; a bare path is ``("file", netloc(), path)``.

    ``netloc`` is a :class:`netloc` (``(host, port)``). ``raw://`` URLs keep all their data in
    ``path``; ``file://`` URLs have an empty netloc; ``tag://NAME`` has the name as path.

    ``disco://HOST:PORT/path`` names a file of this project's node ``HOST:PORT``, and stays
    ``disco``. Disco's own shape, ``disco://HOST/path`` (no port), is read as Disco did: it is
    ``("http", (HOST, DISCO_PORT), path)``, with ``disco_port`` (default: the ``DISCO_PORT``
    setting). With ``localhost`` (a ``host[:port]``, or True for any), a ``disco://`` or
    ``dir://`` URL of that node becomes ``("file", netloc(), local path)``: this project's
    paths through :func:`localize` and ``localize_dirs`` (``disco_data=``, ``ddfs_data=``);
    Disco-shaped paths (``ddfs/...`` under ``ddfs_data``, any other first segment replaced by
    ``disco_data``) as Disco localized them.
    """
    scheme, rest = schemesplit(url)
    if scheme in ("file", "raw"):
        return scheme, netloc(), rest
    loc, _slash, path = rest.partition("/")
    if scheme == "tag" and not path:
        return scheme, netloc(), loc
    loc = netloc.parse(loc)
    if scheme not in ("disco", "dir"):
        return scheme, loc, path
    if localhost is True or (localhost and loc in (localhost, netloc.parse(localhost))):
        local = localize(path, **localize_dirs) if loc.port else _disco_localize(path, **localize_dirs)
        return "file", netloc(), local
    if scheme == "disco" and not loc.port:
        if disco_port is None:
            from disco.settings import DiscoSettings
            disco_port = DiscoSettings()["DISCO_PORT"]
        return "http", netloc((loc.host, disco_port)), path
    return scheme, loc, path


def _disco_localize(path: str, ddfs_data=None, disco_data=None) -> str:
    """Disco's rule for its own node paths: ``ddfs/REST`` is under ``ddfs_data``, any other
    ``FIRST/REST`` is ``REST`` under ``disco_data``."""
    first, _slash, rest = path.partition("/")
    base = ddfs_data if first == "ddfs" else disco_data
    if base is None:
        raise UsageError(f"localize({path!r}) needs {'ddfs' if first == 'ddfs' else 'disco'}"
                         "_data= (the node's data dir)")
    return os.path.join(os.fspath(base), rest)


def urljoin(scheme_netloc_path) -> str:
    """The inverse of :func:`urlsplit`: ``urljoin(("http", "h:80", "a/b")) == "http://h:80/a/b"``."""
    scheme, loc, path = scheme_netloc_path
    return f"{scheme or 'file'}://" + (f"{loc}/" if loc else "") + path


def urltoken(url: str) -> str | None:
    """The token in a URL's ``user:TOKEN@`` (or ``TOKEN@``) part, or None.

    A ``tag://NAME`` without a host has no such part (tag names may hold ``@``)."""
    scheme, rest = schemesplit(url)
    loc, slash, _path = rest.partition("/")
    if "@" not in loc or (scheme == "tag" and not slash):
        return None
    auth = loc.rsplit("@", 1)[0]
    return auth.split(":", 1)[1] if ":" in auth else auth


def localize(path: str, ddfs_data=None, disco_data=None) -> str:
    """The local file of a node path (the path part of a ``disco://`` URL of this node).

    Paths are relative to the node's data dir (``disco_data``); blob paths (``volN/blob/...``)
    go under ``ddfs_data`` when it is given."""
    is_blob = "/blob/" in f"/{path}"
    base = ddfs_data if (is_blob and ddfs_data) else (disco_data or ddfs_data)
    if base is None:
        raise UsageError(f"localize({path!r}) needs disco_data= (the node's data dir)")
    return os.path.join(os.fspath(base), path.lstrip("/"))


def proxy_url(url: str, proxy=None, meth: str = "GET", to_master: bool = True) -> str:
    """``url`` as seen through the proxy ``proxy`` (default: the ``DISCO_PROXY`` setting).

    ``to_master``: ``<proxy>/<path>``; else ``<proxy>/proxy/<host>/<METHOD>/<path>``. Without
    a proxy, and for ``tag://`` URLs, ``url`` is returned unchanged."""
    if proxy is None:
        from disco.settings import DiscoSettings
        proxy = DiscoSettings()["DISCO_PROXY"]
    scheme, loc, path = urlsplit(url)
    if not proxy or scheme == "tag":
        return url
    proxy = str(proxy).rstrip("/")
    if to_master:
        return f"{proxy}/{path}"
    return f"{proxy}/proxy/{loc.host}/{meth}/{path}"


def urlresolve(url: str, master=None) -> str:
    """``url`` in the form a reader opens: ``dir://`` becomes ``disco://`` (they name the same
    files here), ``tag://[HOST/]NAME`` becomes ``tag://NAME``; other URLs are kept.
    ``master`` is accepted for Disco's signature (tags are read through any node)."""
    scheme, loc, path = urlsplit(url)
    if scheme == "dir":
        return f"disco://{loc}/{path}"
    if scheme == "tag":
        from disco.ddfs import canonizetag
        return canonizetag(path)
    return url


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
    Use it as Disco's users do: ``Disco().purge(jobname(results[0]))``.
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


def external(files):
    from disco.worker.classic import external as _ext
    return _ext.package(files)


# -- inputs -------------------------------------------------------------------------------------

_LABEL_OF_OUTPUT = re.compile(r"-(\d+)\.drec\Z")


def read_index(dir: str) -> Iterator[tuple[int, str]]:
    """``(label, url)`` for each entry of a ``dir://`` URL (or any URL of an index).

    A task output (a record file, which is what ``dir://`` names here) is one entry, its label
    read from its name (``...-LABEL.drec``, else 0). A Disco index file (lines ``LABEL URL``,
    gzip-compressed if the URL ends in ``.gz``) gives one entry per line."""
    from disco.worker.task_io import open_input
    from shuffle.record import is_record_file
    url = urlresolve(dir)
    _client_schemes()
    fd, _size, real = open_input(url)
    try:
        if dir.endswith(".gz"):
            import gzip
            fd = gzip.GzipFile(fileobj=fd, mode="rb")
        fd = _peekable(fd)
        if is_record_file(fd):
            found = _LABEL_OF_OUTPUT.search(url)
            yield (int(found[1]) if found else 0), url
            return
        for n, line in enumerate(fd, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[0].isdigit():
                raise UsageError(f"{dir}: line {n} is not 'LABEL URL': {line[:80]!r}")
            yield int(fields[0]), fields[1].decode("utf-8")
    finally:
        fd.close()


def _peekable(fd):
    import io
    return fd if hasattr(fd, "peek") else io.BufferedReader(fd)


def _client_schemes() -> None:
    """Let this process open ``disco://`` URLs (a task has them already)."""
    from disco.ddfs import _register_disco_scheme
    _register_disco_scheme()


def parse_dir(dir_url: str, label=None) -> list[str]:
    """The URLs a ``dir://`` URL stands for (see :func:`read_index`), only those of ``label``
    when it is given, ordered by label."""
    return [url for lbl, url in sorted(read_index(dir_url)) if label in (None, lbl)]


def ispartitioned(input) -> bool:
    """True for a ``dir://`` URL or a non-empty list of only ``dir://`` URLs."""
    if isinstance(input, (list, tuple)):
        return bool(input) and all(ispartitioned(i) for i in input)
    return isinstance(input, str) and input.startswith("dir://")


def inputexpand(input, label=None, settings=None, ddfs=None) -> list:
    """What one job input stands for, as a list of inputs (each a URL or a replica list).

    ``tag://`` expands to the replica sets of the tag's blobs (links followed); ``dir://``
    (alone or as replicas) to its URLs per label (``label=False`` keeps it as it is); a list
    is one input with alternative URLs; anything else is itself. ``settings`` (a
    ``DiscoSettings``) gives the master; ``ddfs`` may be given instead."""
    if ispartitioned(input) and label is not False:
        columns = [parse_dir(i, label=label) for i in iterify(input)]
        return [list(group) for group in zip(*columns)]
    if isinstance(input, (list, tuple)):
        return [inputlist(input, label=label, settings=settings, ddfs=ddfs)]
    if isinstance(input, str) and input.startswith("tag://"):
        if ddfs is None:
            from disco.ddfs import DDFS
            master = settings["DISCO_MASTER"] if settings is not None else None
            ddfs = DDFS(master)
        return chainify(blobs for _name, _tags, blobs in ddfs.findtags([input]))
    return [input]


def inputlist(inputs, label=None, settings=None, ddfs=None) -> list:
    """Every input of ``inputs`` expanded with :func:`inputexpand`, empty ones dropped."""
    return [x for x in chainify(inputexpand(i, label=label, settings=settings, ddfs=ddfs)
                                for i in iterify(inputs)) if x]


def deref(inputs, resolve: bool = False, **expand) -> Iterator[list[str]]:
    """Each expanded input as a list of URLs, resolved with :func:`urlresolve` if asked."""
    fix = urlresolve if resolve else identity
    for input in inputlist(inputs, **expand):
        yield [fix(u) for u in iterify(input)]


# -- sorting ------------------------------------------------------------------------------------

def disk_sort(worker, input, filename, sort_buffer_size="10%") -> Iterator[tuple]:
    """Sort ``(key, value)`` pairs by key with bounded memory; yields them sorted (stable).

    ``sort_buffer_size`` is the memory to use, in ``sort -S`` syntax: ``"10%"`` of the
    machine's memory, ``"512M"``, ``"2G"``; a plain number is KiB. Sorted runs spill beside
    ``filename`` and are removed once iteration ends. Unlike Disco's (Unix ``sort``), keys may
    be any objects (mixed types are grouped by type). ``worker`` is accepted for Disco's
    signature."""
    from shuffle.sort import ExternalSorter
    budget = memory_bytes(sort_buffer_size)
    spill_dir = os.path.dirname(os.path.abspath(os.fspath(filename)))
    with ExternalSorter(spill_dir, budget) as sorter:
        for pair in input:
            if not iskv(pair) and not (isinstance(pair, list) and len(pair) == 2):
                raise UsageError(f"disk_sort sorts (key, value) pairs, got {pair!r}")
            sorter.add(pair[0], pair[1])
        yield from sorter.sorted_pairs()


_SIZE_SUFFIX = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def memory_bytes(size) -> int:
    """Bytes meant by a ``sort -S`` size: ``"10%"``, ``"512M"``, ``"2G"``, a number (KiB)."""
    text = str(size).strip().lower()
    try:
        if text.endswith("%"):
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            value = int(total * float(text[:-1]) / 100)
        elif text and text[-1] in _SIZE_SUFFIX:
            value = int(float(text[:-1]) * _SIZE_SUFFIX[text[-1]])
        else:
            value = int(float(text) * 1024)
    except ValueError:
        raise UsageError(f"sort buffer size {size!r}: expected e.g. '10%', '512M' or '2G'") from None
    if value <= 0:
        raise UsageError(f"sort buffer size {size!r} must be more than 0")
    return value


def dsorted(iterable, buffer_size=1e6, tempdir=".") -> Iterator:
    """The items of ``iterable`` sorted, holding at most ``buffer_size`` of them in memory:
    sorted runs are pickled to temporary files in ``tempdir`` and merged."""
    size = int(buffer_size)
    if size < 1:
        raise UsageError(f"dsorted buffer_size must be at least 1, got {buffer_size!r}")
    it = iter(iterable)
    first = sorted(islice(it, size))
    if len(first) < size:
        yield from first
        return
    runs = [_spill_run(first, tempdir)]
    while batch := sorted(islice(it, size)):
        runs.append(_spill_run(batch, tempdir))
    try:
        yield from heapq.merge(*(_read_run(f) for f in runs))
    finally:
        for f in runs:
            f.close()


def _spill_run(items: list, tempdir):
    f = tempfile.TemporaryFile(dir=tempdir)
    pickler = pickle.Pickler(f, DSORT_PICKLE_PROTOCOL)
    for item in items:
        pickler.dump(item)
        pickler.clear_memo()
    f.seek(0)
    return f


def _read_run(f) -> Iterator:
    unpickler = pickle.Unpickler(f)
    while True:
        try:
            yield unpickler.load()
        except EOFError:
            return


# -- out-of-band values -------------------------------------------------------------------------

def _oob_tag(name: str) -> str:
    return f"disco:job:oob:{name}"


def _check_oob_key(key: str) -> None:
    if not isinstance(key, str) or not OOB_KEY.match(key):
        raise UsageError(f"out-of-band key {key!r}: use 1 to 256 of A-Z a-z 0-9 _ - : @")


def save_oob(host, name: str, key: str, value, ddfs_token=None) -> None:
    """Store ``value`` (bytes, or str as UTF-8) under ``key`` for job ``name``: a blob in the
    DDFS tag ``disco:job:oob:<name>``. Saving a key again makes a newer version."""
    from disco.ddfs import DDFS
    import io
    _check_oob_key(key)
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    DDFS(host).push(_oob_tag(name), [(io.BytesIO(data), key)], replicas=None)


def load_oob(host, name: str, key: str) -> bytes:
    """The latest value saved under ``key`` for job ``name`` (bytes); DataNotFound if none."""
    from disco.ddfs import DDFS, open_blob
    _check_oob_key(key)
    ddfs = DDFS(host)
    try:
        blobs = ddfs.blobs(_oob_tag(name), ignore_missing=False)
    except DataNotFound:
        blobs = []
    for replicas in blobs:  # a tag lists its newest blobs first
        if oob_key_of(replicas[0]) == key:
            fd, _size, _url = open_blob(replicas)
            with fd:
                return fd.read()
    raise DataNotFound(f"job {name} has no out-of-band value {key!r}")


def oob_key_of(url: str) -> str:
    """The key of an out-of-band blob URL: its file name up to the ``$`` DDFS adds."""
    return url.rstrip("/").rsplit("/", 1)[-1].split("$", 1)[0]
