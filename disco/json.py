"""Disco's ``disco.json``: ``dumps`` and ``loads`` that take the bytes Disco's code passes.

Disco ran on Python 2, where a ``str`` was bytes, so its code hands JSON both bytes to parse
and bytes inside the objects to encode. Here :func:`loads` takes ``str``, ``bytes`` or
``bytearray`` (UTF-8), and :func:`dumps` writes a ``bytes`` value as the string it decodes to
(UTF-8; bytes that are not UTF-8 are read as Latin-1, one character per byte, as Python 2's
``json`` did with ``encoding='latin-1'``). ``dumps`` returns ``str``, as Python 2's did.
Use the standard ``json`` module in new code.
"""
from __future__ import annotations

import json as _json
from typing import Any

__all__ = ["JSONDecodeError", "dump", "dumps", "load", "loads"]

JSONDecodeError = _json.JSONDecodeError


def _text(data) -> str:
    raw = bytes(data)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _default(obj):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _text(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _keys(obj):
    """Dict keys that are bytes become strings (json refuses bytes keys)."""
    if isinstance(obj, dict):
        return {(_text(k) if isinstance(k, (bytes, bytearray)) else k): _keys(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_keys(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """``obj`` as a JSON string; bytes (also as dict keys) are written as text."""
    kwargs.setdefault("default", _default)
    return _json.dumps(_keys(obj), **kwargs)


def loads(data, **kwargs) -> Any:
    """The object a JSON document (``str``, ``bytes`` or ``bytearray``) encodes."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = _text(data)
    return _json.loads(data, **kwargs)


def dump(obj: Any, fileobj, **kwargs) -> None:
    """Write ``dumps(obj)`` to a text file, or UTF-8 encoded to a binary one."""
    text = dumps(obj, **kwargs)
    try:
        fileobj.write(text)
    except TypeError:
        fileobj.write(text.encode("utf-8"))


def load(fileobj, **kwargs) -> Any:
    """The object the JSON in a text or binary file encodes."""
    return loads(fileobj.read(), **kwargs)
