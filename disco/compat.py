"""Disco's Python 2/3 compatibility names, for Python 3 only.

Code written for Disco imports these (``from disco.compat import bytes_to_str``); they keep
working here. New code can use the standard library directly: ``basestring`` is ``str``,
``file`` is ``io.FileIO``, the pickle names are the ``pickle`` module's.
"""
from __future__ import annotations

import http.client as httplib
import http.server as http_server
import pickle
import socketserver as socket_server
from io import BytesIO, FileIO as file, StringIO
from itertools import zip_longest
from urllib.parse import urlencode

__all__ = ["basestring", "bytes_of_int", "int_of_byte", "str_to_bytes", "bytes_to_str",
           "force_utf8", "force_ascii", "StringIO", "BytesIO", "file", "pickle_loads",
           "pickle_dumps", "pickle_load", "pickle_dump", "UnpicklingError", "socket_server",
           "urlencode", "httplib", "http_server", "zip_longest", "sort_cmd", "integer_types"]

basestring = str
integer_types = (int,)

pickle_loads, pickle_dumps = pickle.loads, pickle.dumps
pickle_load, pickle_dump = pickle.load, pickle.dump
UnpicklingError = pickle.UnpicklingError

SORT_FIELD_SEPARATOR = b"\xff"   # disk_sort's key/value separator (a byte UTF-8 never uses)


def bytes_of_int(i: int) -> bytes:
    """The one byte of value ``i`` (0 to 255)."""
    return bytes([i])


def int_of_byte(b) -> int:
    """The value of one byte: ``b`` is an int already (an item of ``bytes``) or a 1-byte string."""
    if isinstance(b, int):
        return b
    if len(b) != 1:
        raise ValueError(f"int_of_byte expects one byte, got {len(b)}: {b!r}")
    return b[0]


def str_to_bytes(s) -> bytes:
    """``s`` as UTF-8 bytes (bytes are returned as they are)."""
    if isinstance(s, (bytes, bytearray)):
        return bytes(s)
    return s.encode("utf-8")


def bytes_to_str(b) -> str:
    """``b`` decoded from UTF-8 (a ``str`` is returned as it is)."""
    if isinstance(b, str):
        return b
    return bytes(b).decode("utf-8")


def force_utf8(string) -> str:
    """Text as ``str``: a ``str`` as it is, bytes decoded from UTF-8 with bad bytes replaced."""
    if isinstance(string, str):
        return string
    return bytes(string).decode("utf-8", "replace")


def force_ascii(string) -> str:
    """Text with every non-ASCII character replaced by ``?``."""
    return force_utf8(string).encode("ascii", "replace").decode("ascii")


def sort_cmd(filename, sort_buffer_size) -> tuple[list[bytes], bool]:
    """Disco's Unix ``sort`` command for ``disk_sort``: ``(argv, shell)``.

    Sorts ``filename`` in place: NUL-terminated records, keyed by the bytes before the first
    ``\\xff``, using at most ``sort_buffer_size`` memory (``sort -S``: ``10%``, ``512M``) and the
    current directory for temporary files. ``argv`` is bytes (the separator is not valid UTF-8)
    and ``shell`` is False: run it with ``subprocess.run(argv, env={..., "LC_ALL": "C"})`` so
    keys compare byte by byte.
    """
    size = str_to_bytes(str(sort_buffer_size))
    path = str_to_bytes(str(filename)) if not isinstance(filename, bytes) else filename
    return ([b"sort", b"-z", b"-t", SORT_FIELD_SEPARATOR, b"-k", b"1,1", b"-T", b".",
             b"-S", size, b"-o", path, path], False)
