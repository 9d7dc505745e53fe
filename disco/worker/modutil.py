"""Finding the modules that job functions use, for ``required_modules``.

Use it when the modules a job ships need to be listed by hand::

    required_modules = find_modules([my_map, my_reduce]) + ["time"]

A module definition is a name (``"PIL.Image"``: imported on the node, which must have it) or
``(name, path)`` (the file is sent with the job). :func:`parse_function` guesses the modules a
function uses from its bytecode: names used with a dot (``random.uniform``), including inside
nested functions, lambdas and comprehensions; a global bound to a module counts as that module
(``import numpy as np`` gives ``numpy``), a global bound to anything else is left out.
:func:`locate_modules` finds each module's file: one under a directory of ``PYTHONPATH`` or
the current directory is *local* and sent; others (the standard library, installed packages)
are only named. :func:`find_modules` combines the two.
"""
from __future__ import annotations

import builtins
import dis
import functools
import importlib.util
import modulefinder
import os
import sys
import types

from disco.error import ModUtilImportError

__all__ = ["ModUtilImportError", "find_modules", "locate_modules", "parse_function",
           "user_paths"]

_ATTRIBUTE_OPS = {"LOAD_ATTR", "LOAD_METHOD"}


def user_paths() -> set[str]:
    """The directories whose modules are local: each ``PYTHONPATH`` entry and the current
    directory."""
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {os.path.realpath(os.path.abspath(p)) for p in entries + [os.getcwd()]}


def parse_function(function) -> list[str]:
    """The names of the modules ``function`` seems to use (see the module's notes)."""
    if isinstance(function, functools.partial):
        return parse_function(function.func)
    function = getattr(function, "__func__", function)  # a bound or static method
    code = getattr(function, "__code__", None)
    if code is None:
        raise TypeError(f"parse_function needs a Python function, got {function!r}")
    scope = getattr(function, "__globals__", {})
    found: dict[str, None] = {}
    for name in _dotted_globals(code):
        value = scope.get(name, _UNBOUND)
        if isinstance(value, types.ModuleType):
            found[value.__name__] = None
        elif value is _UNBOUND and not hasattr(builtins, name):
            found[name] = None
    return list(found)


_UNBOUND = object()


def _dotted_globals(code) -> list[str]:
    """Global names followed by an attribute access, in ``code`` and its nested code."""
    names: list[str] = []
    previous = None
    for instr in dis.get_instructions(code):
        if instr.opname in _ATTRIBUTE_OPS and previous is not None and \
                previous.opname == "LOAD_GLOBAL":
            names.append(previous.argval)
        previous = instr
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_dotted_globals(const))
    return names


def _module_file(name: str) -> str | None:
    """The real path of module ``name``'s source file, None for a built-in; ImportError if it
    cannot be found."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise ImportError(f"No module named {name!r} ({exc})") from None
    if spec is None:
        raise ImportError(f"No module named {name!r}")
    origin = spec.origin
    return os.path.realpath(origin) if origin and os.path.isfile(origin) else None


def _recurse_module(path: str, local: set[str]) -> dict[str, str]:
    """The local modules that the module file at ``path`` imports, directly or not."""
    finder = modulefinder.ModuleFinder(path=sorted(local))
    finder.run_script(path)
    return {name: os.path.realpath(module.__file__) for name, module in finder.modules.items()
            if name != "__main__" and module.__file__}


def locate_modules(modules, recurse: bool = True, include_sys: bool = False) -> list[tuple]:
    """``(name, path)`` for each local module of ``modules`` (and, with ``recurse``, each
    local module they import); ``(name, None)`` for the others when ``include_sys``.

    Raises ImportError for a module that cannot be found."""
    local = user_paths()
    found: dict[str, str | None] = {}
    for name in modules:
        path = _module_file(name)
        if path is not None and os.path.dirname(path) in local:
            found[name] = path
            if recurse:
                found.update(_recurse_module(path, local))
        elif include_sys:
            found.setdefault(name, None)
    return list(found.items())


def find_modules(functions, send_modules: bool = True, recurse: bool = True,
                 exclude=()) -> list:
    """The ``required_modules`` list for ``functions``: ``(name, path)`` for each local
    module (sent to the nodes), the bare name for the others.

    ``send_modules=False`` gives names only (nothing is sent; no recursion). ``exclude``
    names modules to leave out. A module that cannot be found raises ModUtilImportError
    naming the function."""
    modules: dict = {}
    for function in functions:
        names = [m for m in parse_function(function) if m not in exclude]
        if not send_modules:
            modules.update(dict.fromkeys(names))
            continue
        try:
            located = locate_modules(names, recurse, include_sys=True)
        except ImportError as exc:
            raise ModUtilImportError(exc, function) from None
        modules.update(dict.fromkeys((k, v) if v else k for k, v in located))
    return list(modules)


if sys.version_info < (3, 11):  # pragma: no cover - the project needs 3.11
    raise ImportError("disco.worker.modutil needs Python 3.11 or later")
