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

A reader turns the opened file into entries for ``map`` or ``reduce``:
``reader(fd, size, url, params)``. :func:`default_map_reader` is used when a job names none: it
yields the pairs of a record file (a previous job's results) and the lines of anything else.
"""
from __future__ import annotations

import gzip
import http.client
import io
import os
import time
import urllib.error
import urllib.request
from typing import BinaryIO, Callable, Iterator

from disco.error import DiscoError, InputError, UsageError
from disco.util import schemesplit, urllist

__all__ = ["SCHEMES", "chain_reader", "default_map_reader", "gzip_line_reader", "gzip_reader",
           "line_reader", "map_line_reader", "open_file", "open_http", "open_input",
           "open_raw", "open_url", "register_scheme"]

Opener = Callable[[str], "tuple[BinaryIO, int | None, str]"]

HTTP_ATTEMPTS = 3           # tries per http(s) URL, the first included
HTTP_BACKOFF_S = 0.2        # wait before the second try; doubles before each later one
HTTP_TIMEOUT_S = 30.0       # connect and read timeout of one try
BUFFER_BYTES = 256 << 10    # read buffer put in front of streams that need one
RECORD_MAGIC_BYTES = 4      # how much default_map_reader sniffs

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
        raise InputError(f"{url}: unknown URL scheme {scheme!r}; known schemes: {known}", url=url)
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
    raise InputError(f"none of {len(urls)} alternative URLs could be opened: {reasons}",
                     url=urls[0])


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

def open_file(url: str) -> tuple[BinaryIO, int | None, str]:
    """Open ``file://PATH`` or a bare ``PATH`` on this machine."""
    path = url[len("file://"):] if url.startswith("file://") else url
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}", url=url) from None
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
    error: Exception | None = None
    for attempt in range(HTTP_ATTEMPTS):
        if attempt:
            _sleep(HTTP_BACKOFF_S * 2 ** (attempt - 1))
        try:
            resp = urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - sorted into retry or fail just below
            error = _http_failure(url, exc)
            continue
        return resp, _content_length(resp), url
    status = getattr(error, "code", None)
    raise InputError(f"{url}: failed after {HTTP_ATTEMPTS} attempts: {_http_text(error)}",
                     url=url, status=status)


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

def line_reader(fd, size=None, url=None, params=None) -> Iterator[str]:
    """Each line of the input as ``str`` (UTF-8), its ``"\\n"`` kept. The default for text."""
    yield from io.TextIOWrapper(_buffered(fd), encoding="utf-8", newline="\n")


map_line_reader = line_reader


def chain_reader(fd, size=None, url=None, params=None) -> Iterator[tuple]:
    """Each ``(key, value)`` of a record file: use it to feed one job's results to the next."""
    from shuffle.record import iter_records
    yield from iter_records(fd)


def gzip_line_reader(fd, size=None, url=None, params=None) -> Iterator[str]:
    """Each line of a gzip-compressed input as ``str`` (UTF-8), newline kept."""
    yield from line_reader(gzip.GzipFile(fileobj=fd, mode="rb"), None, url, params)


def gzip_reader(fd, size=None, url=None, params=None) -> Iterator[str]:
    """Disco's name for reading gzip-compressed text: the same lines as :func:`gzip_line_reader`."""
    yield from gzip_line_reader(fd, size, url, params)


def default_map_reader(fd, size=None, url=None, params=None) -> Iterator:
    """Pairs if the input is a record file (an earlier job's results), else lines as ``str``."""
    from shuffle.record import is_record_file
    head, fd = _sniff(fd, RECORD_MAGIC_BYTES)
    if is_record_file(head):
        return chain_reader(fd, size, url, params)
    return line_reader(fd, size, url, params)


def _buffered(fd):
    """``fd`` itself if TextIOWrapper can read it efficiently, else wrapped in a buffer."""
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
