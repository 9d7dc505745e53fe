"""Disco's ``disco.comm``: fetching and sending bytes by URL, under Disco's names.

Use :func:`download` for a URL's bytes, :func:`upload` to PUT the same bytes to several
URLs, :func:`open_url` (or :func:`open_remote`) for a file object to read, with ``len()``.
``http://`` and ``https://`` go through ``urllib`` (a ``token`` is sent as HTTP Basic
``token:TOKEN``, an ``offset`` as a ``Range``); every other scheme is read through this
project's openers (:func:`disco.worker.task_io.open_url`: ``file``, ``raw``, and a node's
``disco://HOST:PORT/path`` from its data port). A Disco-style ``disco://HOST/path`` (no
port) is ``http://HOST:DISCO_PORT/path``, as Disco resolved it.

Errors: an HTTP error status raises :class:`HTTPError` (``code`` is the status), a refused or
timed-out connection :class:`CommException` (``code`` None); both are ``CommError``. Opening
a non-HTTP URL raises the opener's ``InputError``. Unlike Disco, failed requests are not
retried here; the readers in :mod:`disco.worker.task_io` retry.
"""
from __future__ import annotations

import base64
import io
import os
import urllib.error
import urllib.request

from disco.error import CommError, UsageError
from disco.util import iterify, schemesplit, urlsplit

__all__ = ["BUFFER_SIZE", "CommException", "HTTPError", "auth_header", "download",
           "open_local", "open_remote", "open_url", "range_header", "request", "upload"]

BUFFER_SIZE = 1024 ** 2
TIMEOUT_S = 60.0


class CommException(CommError):
    """A URL could not be fetched or sent to: ``url`` names it, ``code`` is the HTTP status
    (None when no answer came)."""

    def __init__(self, message: str, url: str = "", code: int | None = None):
        super().__init__(message)
        self.url, self.code = url, code

    @property
    def status(self) -> int | None:
        return self.code


class HTTPError(CommException):
    """An HTTP server answered with an error status (``code``); ``str()`` is its body."""


def range_header(offset) -> dict:
    """``{"Range": "bytes=START-[END]"}`` for an offset or a ``(start, end)`` pair, else ``{}``."""
    if not offset:
        return {}
    bounds = [str(b) for b in iterify(offset)] + [""]
    return {"Range": f"bytes={bounds[0]}-{bounds[1]}"}


def auth_header(token) -> dict:
    """HTTP Basic ``token:TOKEN``, as Disco sent DDFS tokens; ``{}`` without a token."""
    if token is None:
        return {}
    raw = token.encode() if isinstance(token, str) else bytes(token)
    return {"Authorization": "Basic " + base64.b64encode(b"token:" + raw).decode("ascii")}


def _http_url(url: str) -> str | None:
    """The http(s) URL to fetch ``url`` from, or None when another opener reads it."""
    scheme, loc, path = urlsplit(url)
    return f"{scheme}://{loc}/{path}" if scheme in ("http", "https") else None


def request(method: str, url: str, data=None, headers: dict | None = None):
    """One HTTP request: the ``http.client.HTTPResponse`` of a 2xx answer (redirects
    followed), else :class:`HTTPError` / :class:`CommException`."""
    target = _http_url(url)
    if target is None:
        raise UsageError(f"{method} {url}: only http:// and https:// URLs take requests")
    if isinstance(data, str):
        data = data.encode("utf-8")
    req = urllib.request.Request(target, data=data, headers=headers or {}, method=method)
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        raise HTTPError(body or f"HTTP {exc.code} {exc.reason}", url, exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommException(f"{url}: {reason}", url) from None


def download(url: str, method: str = "GET", data=None, offset=(), token=None) -> bytes:
    """The bytes at ``url`` (POSTing ``data`` when given); ``offset`` asks for a range."""
    if _http_url(url) is not None:
        headers = {**range_header(offset), **auth_header(token)}
        with request(method if data is None else "POST", url, data, headers) as resp:
            return resp.read()
    if data is not None or method != "GET":
        raise UsageError(f"{method} {url}: only http(s) URLs take {method} requests")
    fd = open_url(url)
    try:
        start, end = _bounds(offset)
        if start:
            fd.read(start)
        return fd.read() if end is None else fd.read(end - start + 1)
    finally:
        fd.close()


def _bounds(offset) -> tuple[int, int | None]:
    if not offset:
        return 0, None
    parts = list(iterify(offset))
    return int(parts[0]), (int(parts[1]) if len(parts) > 1 else None)


def upload(urls, source, token=None, **_ignored) -> list[bytes]:
    """PUT the bytes of ``source`` (a path or a file object) to each http(s) URL in ``urls``;
    the answers' bodies, in order."""
    if hasattr(source, "read"):
        data = source.read()
    else:
        with open(source, "rb") as f:
            data = f.read()
    replies = []
    for url in iterify(urls):
        with request("PUT", url, data, auth_header(token)) as resp:
            replies.append(resp.read())
    return replies


class RemoteFile(io.BufferedIOBase):
    """A readable file over any URL: ``read``, line iteration, ``len()`` (0 when the size is
    not known), ``url``."""

    def __init__(self, fd, size: int | None, url: str):
        super().__init__()
        self._fd, self._size, self.url = fd, size, url

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._fd.read(-1 if size is None else size)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._fd.readline(-1 if size is None else size)

    def __len__(self) -> int:
        return self._size or 0

    def close(self) -> None:
        if not self.closed:
            self._fd.close()
        super().close()


def open_local(path: str) -> RemoteFile:
    """A local file, read as bytes."""
    return RemoteFile(open(path, "rb", BUFFER_SIZE), os.path.getsize(path), f"file://{path}")


def open_remote(url: str, token=None) -> RemoteFile:
    """A file object reading ``url`` (see the module docstring for the schemes)."""
    target = _http_url(url)
    if target is not None:
        resp = request("GET", url, headers=auth_header(token))
        length = resp.headers.get("Content-Length")
        return RemoteFile(resp, int(length) if length and length.isdigit() else None, url)
    from disco.worker import task_io
    scheme, _rest = schemesplit(url)
    if scheme in ("disco", "dir") and scheme not in task_io.SCHEMES:
        _register_disco()
    fd, size, url = task_io.open_url(url.replace("dir://", "disco://", 1))
    return RemoteFile(fd, size, url)


def open_url(url: str, token=None) -> RemoteFile:
    """:func:`open_local` for a path or ``file://`` URL, else :func:`open_remote`."""
    scheme, rest = schemesplit(url)
    if scheme == "file":
        return open_local(rest)
    return open_remote(url, token)


def _register_disco() -> None:
    """Read ``disco://HOST:PORT/path`` from the node's data port (or our embedded node's disk)."""
    from disco import embedded
    from disco.worker import task_io
    from mesh.transfer import open_disco

    def opener(url: str):
        address = url.split("/", 3)[2]
        data = embedded.data_dir_of(address)
        return open_disco(url, address if data else None, data)

    task_io.register_scheme("disco", opener)
