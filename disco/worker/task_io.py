"""Opening job inputs and reading them: one opener per URL scheme, readers with Disco's signature.

Theory of operation
-------------------
An input is a URL or a list of alternative URLs (replicas of the same data, nearest first).
:func:`open_input` tries each alternative with :func:`open_url`, which looks the URL's scheme
up in :data:`SCHEMES` and calls its opener; of several alternatives, one is taken only once its
first bytes have arrived, so a copy on a node that is gone makes the next one be tried. An
opener takes the URL and returns ``(fileobj, size, url)``: a binary file object, its size in
bytes if known (else None), and the URL it opened. Every opener raises
:class:`~disco.error.InputError` when the input cannot be opened, so the next alternative can
be tried.

Built in: ``file://`` and bare paths, ``raw://DATA`` and ``http(s)://``. The cluster registers
``disco://``, ``dir://`` and ``tag://`` with :func:`register_scheme` when it starts a task.
A ``file://`` or ``http(s)://`` URL ending in ``#range=START-END`` names the lines of that
byte range of the file (see :func:`line_range_reader`): the opener starts reading at
``START - 1`` (http asks for it with a ``Range`` header), and the line readers then yield
exactly the lines that start in ``[START, END)``, so the ranges of a file, read one by one,
give each of its lines once.

A reader turns the opened file into entries for ``map`` or ``reduce``:
``reader(fd, size, url, params)``. :func:`default_map_reader` is used when a job names none: it
yields the pairs of a record file (a previous job's results) and the lines of anything else.
Lines are ``str`` (UTF-8) by default, or ``bytes`` with ``lines="bytes"`` (Disco's Python 3
behaviour; ``DISCO_LINES=bytes`` makes it the default). Bytes that are not UTF-8 raise
:class:`~disco.error.DecodeError`, naming the URL and the byte, unless ``errors=`` names a
codec error handler such as ``'replace'``.

Disco's streams are here too: an input stream is ``f(stream, size, url, params)`` returning
``(stream, size, url)`` or an iterable of entries, an output stream
``f(stream, partition, url, params)`` returning an object with ``add(k, v)``; a chain of them
is applied left to right (:class:`StreamCombiner`), ``params`` passed only to functions that
take four positional arguments (:func:`call_reader`).
"""
from __future__ import annotations

import codecs
import gzip
import http.client
import io
import os
import re
import sys
import time
import urllib.error
import urllib.request
from itertools import chain, repeat
from typing import BinaryIO, Callable, Iterator

from disco.fileutils import DiscoOutputStream_v0 as DiscoPlainOut
from disco.error import DataError, DecodeError, DiscoError, InputError, UsageError
from disco.util import argcount, schemesplit, urllist

__all__ = ["SCHEMES", "StreamCombiner", "DiscoPlainOut", "call_reader", "chain_reader",
           "chain_stream", "default_map_reader", "default_stream", "disco_input_stream",
           "disco_output_stream", "gzip_line_reader", "gzip_line_stream", "gzip_reader",
           "gzip_stream", "line_range_reader", "line_reader", "map_line_reader",
           "old_netstr_reader", "open_file", "open_http", "open_input", "open_raw", "open_url",
           "plain_output_stream", "range_url", "re_reader", "register_scheme",
           "split_range", "string_input_stream", "task_input_stream", "task_output_stream"]

Opener = Callable[[str], "tuple[BinaryIO, int | None, str]"]

HTTP_ATTEMPTS = 3           # tries per http(s) URL, the first included
HTTP_BACKOFF_S = 0.2        # wait before the second try; doubles before each later one
HTTP_TIMEOUT_S = 30.0       # connect and read timeout of one try
BUFFER_BYTES = 256 << 10    # read buffer put in front of streams that need one
RANGE_BLOCK_BYTES = 1 << 20  # a ranged input's lines are read and decoded this much at a time
RECORD_MAGIC_BYTES = 4      # how much default_map_reader sniffs
NETSTR_LENGTH_DIGITS = 10   # old_netstr_reader: longest length field
LINES = ("str", "bytes")    # what the line readers can yield

_sleep = time.sleep         # tests may replace it

SCHEMES: dict[str, Opener] = {}


def register_scheme(name: str, opener: Opener) -> None:
    """Make ``open_url`` open ``name://...`` URLs with ``opener(url) -> (fd, size, url)``.

    Registering a name again replaces its opener (a task registers ``disco`` for its node).
    """
    SCHEMES[name] = opener


def open_url(url: str) -> tuple[BinaryIO, int | None, str]:
    """Open one URL (a bare path is a local file) with the opener registered for its scheme."""
    scheme, _rest = schemesplit(url)
    opener = SCHEMES.get(scheme)
    if opener is None:
        known = ", ".join(f"{name}://" for name in sorted(SCHEMES))
        raise InputError(f"{url}: unknown URL scheme {scheme!r}; known schemes: {known}", url=url,
                         hopeless=True)
    return opener(url)


def open_input(input) -> tuple[BinaryIO, int | None, str]:
    """Open a job input: a URL, or a list of alternative URLs tried in turn until one opens.

    Raises InputError naming every URL and why it failed when none opens.
    """
    urls = urllist(input)
    if not urls:
        raise UsageError("an input is an empty list of alternative URLs; give at least one URL")
    failures: list[tuple[str, Exception]] = []
    for url in urls:
        try:
            fd, size, real = open_url(url)
        except (DiscoError, OSError) as exc:
            failures.append((url, exc))
            continue
        if len(urls) == 1:
            return fd, size, real
        try:  # a copy on a node that is gone fails here, so the next one is tried
            return _first_read(fd), size, real
        except (DiscoError, OSError) as exc:
            fd.close()
            failures.append((url, exc))
    if len(failures) == 1 and isinstance(failures[0][1], InputError):
        raise failures[0][1]
    reasons = "; ".join(f"{url}: {_reason(url, exc)}" for url, exc in failures)
    errors = [exc for _, exc in failures]
    hopeless = all(isinstance(e, DiscoError) and not e.retryable for e in errors)
    elsewhere = not hopeless and all(getattr(e, "elsewhere", False) or (
        isinstance(e, DiscoError) and not e.retryable) for e in errors)
    raise InputError(f"none of {len(urls)} alternative URLs could be opened: {reasons}",
                     url=urls[0], hopeless=hopeless, elsewhere=elsewhere)


def _first_read(fd):
    """``fd`` (buffered if it was not) with its first bytes read already."""
    if not hasattr(fd, "peek"):
        fd = io.BufferedReader(_Prefixed(b"", fd), BUFFER_BYTES)
    fd.peek(1)
    return fd


def _reason(url: str, exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[len(url) + 2:] if text.startswith(url + ": ") else text


# -- openers ------------------------------------------------------------------------------------

_RANGE = re.compile(r"#range=(\d+)-(\d+)\Z")


def range_url(url: str, start: int, end: int) -> str:
    """``url`` naming the lines that start in bytes ``[start, end)`` of its file."""
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
        raise UsageError(f"a byte range needs 0 <= start <= end, got {start!r}-{end!r}")
    return f"{split_range(url)[0]}#range={start}-{end}"


def split_range(url: str) -> tuple[str, int | None, int | None]:
    """``(url without its range, start, end)``; ``(url, None, None)`` when it has no range."""
    found = _RANGE.search(url) if url.startswith(("file://", "http://", "https://")) else None
    if found is None:
        return url, None, None
    start, end = int(found[1]), int(found[2])
    if start > end:
        raise InputError(f"{url}: the range starts after it ends", url=url)
    return url[:found.start()], start, end


def open_file(url: str) -> tuple[BinaryIO, int | None, str]:
    """Open ``file://PATH`` or a bare ``PATH`` on this machine.

    ``file://PATH#range=START-END`` opens it at byte ``START - 1`` (0 for 0), size unknown."""
    base, start, _end = split_range(url)
    path = base[len("file://"):] if base.startswith("file://") else base
    try:
        f = open(path, "rb")
    except OSError as exc:  # this node lacks it; another may not (a path on every node)
        raise InputError(f"{path}: {exc.strerror or exc}", url=url, elsewhere=True) from None
    if start is not None:
        f.seek(max(0, start - 1))
        return f, None, url
    return f, os.fstat(f.fileno()).st_size, url


def open_raw(url: str) -> tuple[BinaryIO, int | None, str]:
    """Open ``raw://DATA``: the rest of the URL is the input itself, as UTF-8."""
    data = url[len("raw://"):].encode("utf-8")
    return io.BytesIO(data), len(data), url


def open_http(url: str) -> tuple[BinaryIO, int | None, str]:
    """Open an ``http://`` or ``https://`` URL, following redirects.

    Transient failures (refused or reset connections, timeouts, HTTP 5xx and 429) are retried
    up to ``HTTP_ATTEMPTS`` times with doubling waits; other 4xx answers fail at once.
    """
    base, start, _end = split_range(url)
    skip = max(0, start - 1) if start is not None else 0
    request = urllib.request.Request(base, headers={"Range": f"bytes={skip}-"} if skip else {})
    error: Exception | None = None
    for attempt in range(HTTP_ATTEMPTS):
        if attempt:
            _sleep(HTTP_BACKOFF_S * 2 ** (attempt - 1))
        try:
            resp = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - sorted into retry or fail just below
            error = _http_failure(url, exc)
            continue
        if start is None:
            return resp, _content_length(resp), url
        if skip and resp.status != 206:  # the server sent the whole file: skip to the range
            _discard(resp, skip, url)
        return resp, None, url
    status = getattr(error, "code", None)
    raise InputError(f"{url}: failed after {HTTP_ATTEMPTS} attempts: {_http_text(error)}",
                     url=url, status=status)


def _discard(fd, n: int, url: str) -> None:
    while n > 0:
        got = fd.read(min(n, BUFFER_BYTES))
        if not got:
            raise InputError(f"{url}: the file ends before the range starts", url=url)
        n -= len(got)


def _http_failure(url: str, exc: Exception) -> Exception:
    """Return ``exc`` if trying again may help, else raise it as an InputError."""
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
        if exc.code >= 500 or exc.code == 429:
            return exc
        raise InputError(f"{url}: {_http_text(exc)}", url=url, status=exc.code) from None
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (ConnectionError, TimeoutError, http.client.HTTPException)):
        return exc
    if isinstance(exc, (OSError, ValueError, http.client.HTTPException)):
        raise InputError(f"{url}: {_http_text(exc)}", url=url) from None
    raise exc


def _http_text(exc: Exception | None) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", exc)
    return str(reason) or type(reason).__name__


def _content_length(resp) -> int | None:
    value = resp.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


register_scheme("file", open_file)
register_scheme("raw", open_raw)
register_scheme("http", open_http)
register_scheme("https", open_http)


# -- readers ------------------------------------------------------------------------------------

def call_reader(reader, fd, size, url, params):
    """``reader(fd, size, url, params)``, or ``reader(fd, size, url)`` when the reader takes
    fewer than four positional arguments (Disco's rule, for readers written without params)."""
    if argcount(reader) >= 4:
        return reader(fd, size, url, params)
    return reader(fd, size, url)


def lines_kind(lines=None) -> str:
    """``"str"`` or ``"bytes"``: ``lines`` as given (also the types ``str``/``bytes``), else
    the ``DISCO_LINES`` setting, else ``"str"``."""
    if lines is None:
        from disco.settings import DiscoSettings
        lines = DiscoSettings()["DISCO_LINES"] or "str"
    kind = {str: "str", bytes: "bytes"}.get(lines, lines)
    if kind not in LINES:
        raise UsageError(f"lines={lines!r}: use 'str' (text, the default) or 'bytes'")
    return kind


def line_reader(fd, size=None, url=None, params=None, *, lines=None,
                errors: str = "strict") -> Iterator:
    """Each line of the input, its ``"\\n"`` kept: ``str`` (UTF-8, the default) or, with
    ``lines="bytes"``, ``bytes``. ``errors`` is the codec error handler for text
    (``'strict'``: bad bytes raise DecodeError; ``'replace'``, ``'ignore'``, ...).

    A URL with ``#range=START-END`` yields only the lines of that range
    (:func:`line_range_reader`).

    The lines are read (and decoded) about ``RANGE_BLOCK_BYTES`` at a time and handed out by
    a C-level iterator: a map over millions of short lines pays no generator step per line.
    So bad arguments raise when it is called, and an undecodable byte raises when its block
    is read, before that block's earlier lines are handed out (the error names its offset)."""
    kind = lines_kind(lines)
    _base, start, end = split_range(url) if isinstance(url, str) else (url, None, None)
    if start is not None:
        return line_range_reader(fd, start, end, url, lines=kind, errors=errors)
    return chain.from_iterable(_blocks(fd, url, kind, errors))


map_line_reader = line_reader


def decode_error(url, offset: int, exc: UnicodeDecodeError) -> DecodeError:
    """The DecodeError for bytes at ``offset`` of ``url`` that are not UTF-8."""
    bad = exc.object[exc.start:exc.end]
    where = url or "input"
    return DecodeError(
        f"{where}: byte {offset} is not valid UTF-8 ({bad!r}: {exc.reason}); read it with "
        "errors='replace' (or another codec error handler), or as bytes lines: "
        "set Job.lines = bytes, or DISCO_LINES=bytes for the cluster",
        url=str(url or ""), offset=offset)


def line_range_reader(fd, start: int, end: int, url=None, *, lines=None,
                      errors: str = "strict") -> Iterator:
    """The lines of the byte range ``[start, end)`` of a file, Hadoop's way: every line that
    starts in the range, read through to its end (which may lie past ``end``).

    ``fd`` reads the file from byte ``max(start - 1, 0)`` on (a ranged URL's opener gives such
    a file; a seekable ``fd`` is moved there). If ``start > 0`` the bytes up to and including
    the first ``"\\n"`` at or after ``start - 1`` belong to the line before and are skipped.
    So the ranges ``[0, a), [a, b), ..., [z, size)`` together yield every line once."""
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
        raise UsageError(f"a byte range needs 0 <= start <= end, got {start!r}-{end!r}")
    return chain.from_iterable(_blocks(fd, url, lines_kind(lines), errors, start, end))


def _blocks(fd, url, kind: str, errors: str, start: int = 0, end: int | None = None) -> Iterator:
    """The lines of ``fd`` a block (a list) at a time: from where it stands to its end, or, with
    ``end``, those of the range ``[start, end)`` (see ``line_range_reader``). ``pos`` is the
    byte offset (in the file, or from where ``fd`` stood) that decode errors name."""
    pos = 0
    if end is not None:
        pos = max(0, start - 1)
        seekable = getattr(fd, "seekable", None)
        if seekable is not None and seekable():
            fd.seek(pos)
    buffered = _buffered(fd)
    readlines = buffered.readlines
    if start > 0:
        pos += len(buffered.readline())
    while end is None or pos < end:
        block = readlines(RANGE_BLOCK_BYTES)  # whole lines, about this many bytes
        if not block:
            return
        at, size = pos, sum(map(len, block))
        if end is None or pos + size - len(block[-1]) < end:  # every line starts in range
            pos += size
        else:  # the range ends in this block: its lines up to the one that starts before end
            kept = 0
            while pos < end:
                pos += len(block[kept])
                kept += 1
            block = block[:kept]
        yield block if kind == "bytes" else _decoded(block, at, url, errors)


def _decoded(block: list, at: int, url, errors: str) -> list[str]:
    """The bytes lines of ``block`` (starting at byte ``at``) as str, each decoded by itself
    (a "\\n" never falls inside a UTF-8 character); an undecodable line raises the
    DecodeError naming its byte offset."""
    try:
        return list(map(bytes.decode, block, repeat("utf-8"), repeat(errors)))
    except UnicodeDecodeError:
        for raw in block:  # find the line, for the offset
            try:
                raw.decode("utf-8", errors)
            except UnicodeDecodeError as exc:
                raise decode_error(url, at + exc.start, exc) from None
            at += len(raw)
        raise


def chain_reader(fd, size=None, url=None, params=None) -> Iterator[tuple]:
    """Each ``(key, value)`` of a record file: use it to feed one job's results to the next.

    Input in Disco's old text format (``"<len> <key> <len> <value>"``, what
    :func:`plain_output_stream` writes) is read with :func:`old_netstr_reader`."""
    from shuffle.record import is_record_file, iter_records
    head, fd = _sniff(fd, RECORD_MAGIC_BYTES)
    if head[:1].isdigit() and not is_record_file(head):
        yield from old_netstr_reader(fd, size, url)
        return
    yield from iter_records(fd)


disco_input_stream = chain_reader


def gzip_line_reader(fd, size=None, url=None, params=None, *, lines=None,
                     errors: str = "strict") -> Iterator:
    """Each line of a gzip-compressed input, as :func:`line_reader` gives them."""
    yield from line_reader(gzip.GzipFile(fileobj=fd, mode="rb"), None, url, params,
                           lines=lines, errors=errors)


def gzip_reader(fd, size=None, url=None, params=None, *, lines=None,
                errors: str = "strict") -> Iterator:
    """Disco's name for reading gzip-compressed text: the same lines as :func:`gzip_line_reader`.

    (Disco's returned the decompressed stream; iterating it gave the same lines.)"""
    yield from gzip_line_reader(fd, size, url, params, lines=lines, errors=errors)


def default_map_reader(fd, size=None, url=None, params=None, *, lines=None,
                       errors: str = "strict") -> Iterator:
    """Pairs if the input is a record file (an earlier job's results), else lines (``str`` by
    default; ``lines`` and ``errors`` as for :func:`line_reader`). A ranged URL is lines."""
    from shuffle.record import is_record_file
    if isinstance(url, str) and split_range(url)[1] is not None:
        return line_reader(fd, size, url, params, lines=lines, errors=errors)
    head, fd = _sniff(fd, RECORD_MAGIC_BYTES)
    if is_record_file(head):
        return chain_reader(fd, size, url, params)
    return line_reader(fd, size, url, params, lines=lines, errors=errors)


def re_reader(item_re_str, fd, size, fname, output_tail: bool = False,
              read_buffer_size: int = 8192) -> Iterator:
    """Entries parsed by a regular expression: yields ``match.groups()`` of each consecutive
    match from the start of the unread input.

    A ``str`` pattern reads the input as UTF-8 text, a ``bytes`` one as bytes. When the input
    ends with bytes no match covers, they are yielded as ``[tail]`` with ``output_tail``, else
    a warning goes to stderr. Input shorter than ``size`` (when given) raises DataError.
    Example: ``for x in re_reader(r"<doc>(.*?)</doc>", fd, size, url): yield x[0]``."""
    item_re = item_re_str if hasattr(item_re_str, "match") else re.compile(item_re_str)
    text = isinstance(item_re.pattern, str)
    decoder = codecs.getincrementaldecoder("utf-8")() if text else None
    buf = "" if text else b""
    total = 0
    while True:
        want = read_buffer_size if not size else min(read_buffer_size, size - total)
        chunk = fd.read(want) if want > 0 else b""
        total += len(chunk)
        done = not chunk or (size is not None and size and total >= size)
        buf += decoder.decode(chunk, done) if text else chunk
        found = item_re.match(buf)
        while found:
            if found.end() == 0:
                raise UsageError(f"re_reader pattern {item_re.pattern!r} matches the empty "
                                 "string; it must consume input")
            yield found.groups()
            buf = buf[found.end():]
            found = item_re.match(buf)
        if done:
            break
    if size and total < size:
        raise DataError(f"{fname}: truncated input: expected {size} bytes, got {total}")
    if buf:
        if output_tail:
            yield [buf]
        else:
            print(f"re_reader: {fname}: the last {len(buf)} characters matched nothing and "
                  "were dropped", file=sys.stderr)


def old_netstr_reader(fd, size, fname, head: bytes = b"") -> Iterator[tuple[str, str]]:
    """``(key, value)`` of each record in Disco's oldest format, ``"<len> <key> <len> <value>\\n"``
    (what :func:`plain_output_stream` writes), as ``str``.

    Reads ``size`` bytes, or to the end when ``size`` is None; ``head`` is bytes already read
    from ``fd``. Malformed or truncated input raises DataError with the byte offset."""
    stream = _buffered(_Prefixed(head, fd) if head else fd)
    offset = 0
    while size is None or offset < size:
        key, offset = _netstr(stream, offset, fname, first=True)
        if key is None:
            return
        value, offset = _netstr(stream, offset, fname)
        yield key, value
    if size is not None and offset > size:
        raise DataError(f"{fname}: corrupt input: records run past its {size} bytes")


def _netstr(stream, offset: int, fname, first: bool = False):
    """One ``<len> <data><sep>`` field: ``(data as str, new offset)``; ``(None, offset)`` at a
    clean end of input (only where a record may start)."""
    digits = b""
    while True:
        c = stream.read(1)
        if not c:
            if first and not digits:
                return None, offset
            raise DataError(f"{fname}: truncated input at byte {offset + len(digits)}")
        if c == b" ":
            break
        if not c.isdigit() or len(digits) >= NETSTR_LENGTH_DIGITS:
            raise DataError(f"{fname}: corrupt input: no value length at byte {offset}")
        digits += c
    if not digits:
        raise DataError(f"{fname}: corrupt input: no value length at byte {offset}")
    n = int(digits)
    data = stream.read(n + 1)
    if len(data) < n + 1:
        raise DataError(f"{fname}: truncated input: a {n}-byte value at byte {offset} is cut "
                        "short")
    return data[:n].decode("utf-8", "replace"), offset + len(digits) + 1 + n + 1


# -- Disco's streams ----------------------------------------------------------------------------

def task_input_stream(stream, size, url, params):
    """Open ``url`` (or a list of alternative URLs) with the opener of its scheme:
    ``(fd, size, url)``. The first input stream of every default chain."""
    return open_input(url)


def string_input_stream(string, size, url, params):
    """A string (or bytes) as an input stream: ``(fd, size, url)``."""
    data = string.encode("utf-8") if isinstance(string, str) else bytes(string)
    return io.BytesIO(data), len(data), url


def task_output_stream(stream, partition, url, params):
    """An :class:`~disco.fileutils.AtomicFile` at the path ``url``: a failed task leaves no
    partial output under that name."""
    from disco.fileutils import AtomicFile
    return AtomicFile(url)


def disco_output_stream(stream, partition, url, params):
    """A record-format writer on ``stream`` (``add(k, v)``, ``close()``)."""
    from disco.fileutils import DiscoOutputStream
    return DiscoOutputStream(stream)


def plain_output_stream(stream, partition, url, params):
    """A writer of Disco's oldest text format on ``stream`` (see :func:`old_netstr_reader`)."""
    return DiscoPlainOut(stream)


default_stream = (task_input_stream,)
chain_stream = (task_input_stream, chain_reader)
gzip_stream = (task_input_stream, gzip_reader)
gzip_line_stream = (task_input_stream, gzip_line_reader)


class StreamCombiner:
    """A chain of input streams applied to ``url``; iterating it iterates the last one.

    Each function gets what the previous returned (``(fd, size, url)``, or ``(fd, url)``),
    with ``params`` when it takes four positional arguments. ``url == "-"`` reads standard
    input. ``close()`` closes every stream opened, last first."""

    def __init__(self, url, streams, params, fd=None, size=None):
        self.fds = []
        for stream in streams:
            if url == "-":
                fd = sys.stdin.buffer
            else:
                fd = call_reader(stream, fd, size, url, params)
                if isinstance(fd, tuple):
                    fd, size, url = fd if len(fd) == 3 else (fd[0], size, fd[1])
            self.fds.append(fd)
        if not self.fds:
            raise UsageError("a stream chain needs at least one input stream")

    def __iter__(self):
        return iter(self.fds[-1])

    def close(self) -> None:
        for fd in reversed(self.fds):
            if hasattr(fd, "close") and fd is not sys.stdin.buffer:
                fd.close()

    def __enter__(self) -> "StreamCombiner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- helpers ------------------------------------------------------------------------------------

def _buffered(fd):
    """``fd`` itself if it reads lines efficiently, else wrapped in a buffer."""
    if isinstance(fd, io.RawIOBase) or not isinstance(fd, io.IOBase):
        return io.BufferedReader(_Prefixed(b"", fd), BUFFER_BYTES)
    return fd


def _sniff(fd, n: int) -> tuple[bytes, BinaryIO]:
    """The first ``n`` bytes of ``fd`` and a file object that still starts with them."""
    seekable = getattr(fd, "seekable", None)
    if seekable is not None and seekable():
        pos = fd.tell()
        head = fd.read(n)
        fd.seek(pos)
        return head, fd
    head = b""
    while len(head) < n:
        more = fd.read(n - len(head))
        if not more:
            break
        head += more
    return head, io.BufferedReader(_Prefixed(head, fd), BUFFER_BYTES)


class _Prefixed(io.RawIOBase):
    """A raw stream of ``prefix`` followed by the rest of ``fd``; closing it closes ``fd``."""

    def __init__(self, prefix: bytes, fd):
        super().__init__()
        self._prefix, self._fd = prefix, fd
        self._read = getattr(fd, "read1", fd.read)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n], self._prefix = self._prefix[:n], self._prefix[n:]
            return n
        data = self._read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fd.close()
        super().close()
