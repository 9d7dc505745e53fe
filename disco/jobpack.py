"""The job pack: what a client sends to run a job.

A msgpack map ``{"header": {...}, "code": bytes, "files": {name: bytes}}``. The header is plain
data the master reads (inputs, stages, partitions, names); ``code`` is a cloudpickle of the job's
functions and params, only ever unpickled inside worker processes. The user's own modules
(``__main__``, modules next to the script, ``required_modules``) are pickled by value so that
nodes need no copy of the user's code.

Two more fields serve the worker: ``sources`` maps each file pickled by value to its text, so
that a traceback on a node shows the user's lines (the worker puts them in ``linecache``);
``required`` lists ``required_modules`` as ``[name, source or None]``, each imported on the node
(from its shipped source when it is the user's own) and bound into the job functions' globals,
as Disco did.
"""
from __future__ import annotations

import importlib.util
import io
import linecache
import os
import sys
import sysconfig
import types
from pathlib import Path

import cloudpickle
import msgpack

from disco.error import UsageError
from disco.settings import PYTHON

FUNCTIONS = ("map", "reduce", "combiner", "partition", "map_reader", "reduce_reader",
             "map_init", "reduce_init")
_SYSTEM_DIRS = tuple({str(Path(p).resolve()) for p in (
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
    sysconfig.get_paths()["platlib"], sys.prefix, sys.base_prefix)})
_OWN_PACKAGES = ("common", "disco", "mesh", "scheduler", "shuffle", "storage")
MAX_SOURCE_BYTES = 1 << 20  # a bigger file is not shipped for tracebacks

# Worker processes start with PYTHONSAFEPATH (mesh.executor.worker_env), so that their working
# directory cannot shadow ``disco``; once started (this module is imported before any fork or
# task), the programs their tasks run get the user's environment back.
if os.environ.pop("DISCO_SAFE_PATH_SET", None):
    os.environ.pop("PYTHONSAFEPATH", None)


def is_user_module(module) -> bool:
    """True for a module the user wrote (not stdlib, not installed, not ours)."""
    name = getattr(module, "__name__", "")
    path = getattr(module, "__file__", None)
    if not path or name.split(".")[0] in _OWN_PACKAGES or name == "__main__":
        return False
    known = _USER_PATHS.get(path)
    if known is None:  # resolving every module's path costs ~40 ms per submit: once each
        real = str(Path(path).resolve())
        known = _USER_PATHS[path] = not real.startswith(_SYSTEM_DIRS) \
            and "site-packages" not in real
    return known


_USER_PATHS: dict[str, bool] = {}  # a module file's path -> whether it is the user's


def _register_by_value(required_modules) -> tuple[list, list]:
    """Register the user's modules to be pickled by value; return the by-value modules and
    ``required`` (``[name, module]`` of each required module)."""
    by_value = [mod for mod in list(sys.modules.values())
                if mod is not None and is_user_module(mod)]
    required = []
    for entry in required_modules or ():
        name = entry[0] if isinstance(entry, (tuple, list)) else entry
        path = entry[1] if isinstance(entry, (tuple, list)) and len(entry) > 1 else None
        module = _import_required(name, path)
        required.append([name, module])
        if getattr(module, "__file__", None) and name.split(".")[0] not in _OWN_PACKAGES \
                and is_user_module(module):
            by_value.append(module)
    for module in by_value:
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:
            pass
    return by_value, required


def _import_required(name: str, path: str | None):
    module = sys.modules.get(name)
    if module is not None:
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if path is None:
            raise UsageError(f"required module {name!r} cannot be imported: {exc}") from None
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"required module {name!r}: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (OSError, SyntaxError, ImportError) as exc:
        raise UsageError(f"required module {name!r} cannot be loaded from {path}: {exc}") from None
    sys.modules[name] = module
    return module


def source_of(module) -> tuple[str, str] | None:
    """``(filename, text)`` of a module's source as its code objects name it, else None."""
    filename = getattr(module, "__file__", None)
    if not filename or not filename.endswith(".py"):
        return None
    lines = linecache.getlines(filename, getattr(module, "__dict__", None))
    text = "".join(lines)
    if not lines or len(text) > MAX_SOURCE_BYTES:
        return None
    return filename, text


def _sources(modules, filenames) -> dict:
    """The source text of each of ``filenames`` (the files whose code was pickled by value)."""
    by_file = {getattr(mod, "__file__", None): mod for mod in [sys.modules.get("__main__"),
                                                               *modules] if mod is not None}
    out = {}
    for filename in filenames:
        module = by_file.get(filename)
        found = source_of(module) if module is not None else None
        if found:
            out[found[0]] = found[1]
    return out


def _read_files(required_files) -> dict:
    files = {}
    for path in required_files or ():
        try:
            files[os.path.basename(path)] = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"required file {path!r} cannot be read: {exc.strerror}") from None
    return files


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, keeping each code object's file name (cloudpickle 3 writes
    ``<dynamic-code>``) so that a traceback on a node names the user's file; ``filenames``
    collects the files whose code it pickled."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.filenames: set[str] = set()

    def reducer_override(self, obj):
        reduce_code = getattr(cloudpickle.cloudpickle, "_code_reduce", None)
        if isinstance(obj, types.CodeType) and reduce_code is not None:
            self.filenames.add(obj.co_filename)
            make, args = reduce_code(obj)
            return make, tuple(obj.co_filename if isinstance(a, str) and a == "<dynamic-code>"
                               else a for a in args)
        return super().reducer_override(obj)


def _dumps(obj) -> tuple[bytes, set]:
    buf = io.BytesIO()
    pickler = _Pickler(buf, protocol=5)
    pickler.dump(obj)
    return buf.getvalue(), pickler.filenames


def dumps(obj) -> bytes:
    """``obj`` pickled as a job pack's code is (cloudpickle, file names kept)."""
    return _dumps(obj)[0]


def build(header: dict, code: dict, required_modules=(), required_files=()) -> bytes:
    """Pack a job: ``header`` is plain data, ``code`` a dict of functions and params."""
    by_value, required = _register_by_value(required_modules)
    try:
        pickled, filenames = _dumps(code)
    except Exception as exc:
        raise UsageError(f"the job's functions or params cannot be pickled: {exc}") from None
    header = {**header, "python": PYTHON}
    sources = _sources(by_value, filenames | {getattr(mod, "__file__", None)
                                              for _, mod in required})
    shipped = []
    for name, mod in required:
        filename = getattr(mod, "__file__", None) or ""
        text = sources.get(filename) if mod in by_value \
            and not filename.endswith("__init__.py") else None
        shipped.append([name, [filename, text] if text is not None else None])
    return msgpack.packb({"header": header, "code": pickled,
                          "files": _read_files(required_files), "sources": sources,
                          "required": shipped}, use_bin_type=True)


def unpack(blob: bytes) -> dict:
    """The job pack's fields (``header``, ``code`` still pickled, ``files``, ``sources``,
    ``required``), after checking its Python version; only workers call this."""
    pack = msgpack.unpackb(blob, raw=False)
    header = pack["header"]
    if header.get("python") != PYTHON:
        raise UsageError(f"job was packed by Python {header.get('python')} but this worker "
                         f"runs Python {PYTHON}")
    return {"files": {}, "sources": {}, "required": [], **pack}


def load(blob: bytes) -> tuple[dict, dict, dict]:
    """Unpack a job pack into (header, code, files); only workers call this."""
    pack = unpack(blob)
    import pickle
    return pack["header"], pickle.loads(pack["code"]), pack["files"]


# -- the worker's side ----------------------------------------------------------------------------

def register_sources(sources: dict) -> None:
    """Put the pack's source texts in ``linecache``, so tracebacks show the user's lines though
    this node has no copy of the files (an entry without mtime is never checked against disk)."""
    for filename, text in sources.items():
        lines = text.splitlines(keepends=True)
        linecache.cache[filename] = (len(text), None, lines, filename)


def import_required(required, code) -> dict:
    """Import each required module (a shipped source first, else this node's copy) and bind its
    top-level name into the globals of the job's functions where they lack it, as Disco did."""
    modules = {}
    for name, source in required:
        if isinstance(name, (list, tuple)):
            name = name[0]
        module = _module_from_source(name, source) if source else None
        if module is None:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise UsageError(f"required module {name!r} cannot be imported on this node: "
                                 f"{exc}") from None
        top = name.split(".")[0]
        modules[top] = sys.modules[top]
    if not modules:
        return modules
    for func in functions_of(code):
        for top, module in modules.items():
            func.__globals__.setdefault(top, module)
    return modules


def bind_worker_names(code) -> None:
    """Give the job's functions the names Disco's worker module lent them (where they lack
    them): the modules ``os``, ``sys``, ``time`` and ``traceback``; the classic worker's ``get``,
    ``put``, ``this_name``, ``this_master``, ``this_host``, ``this_partition``, ``this_inputs``
    and ``Params``; ``msg(text)`` (a line in the job's events); and the classic functions and
    readers (``nop_map``, ``sum_combiner``, ``chain_reader``, ``re_reader``, ...). Code
    written for Disco often used them without importing them."""
    names = worker_names()
    for func in functions_of(code):
        glob = func.__globals__
        for name, value in names.items():
            if name not in glob:
                glob[name] = value


def worker_names() -> dict:
    import time
    import traceback
    from disco.worker import task_io
    from disco.worker.classic import func as classic_func
    from disco.worker.classic import worker as classic_worker
    names = {"os": os, "sys": sys, "time": time, "traceback": traceback, "msg": _msg,
             "re_reader": task_io.re_reader, "chain_reader": task_io.chain_reader,
             "netstr_reader": task_io.old_netstr_reader}
    names.update({n: getattr(classic_func, n) for n in classic_func.__all__})
    names.update({n: getattr(classic_worker, n) for n in classic_worker.__all__})
    return names


def _msg(message) -> None:
    """Disco's ``msg(text)``: the text becomes a message in the job's events."""
    print(message)


def _module_from_source(name: str, source) -> types.ModuleType | None:
    """A user's module (not a package) made from its shipped source, as an import would."""
    filename, text = source if isinstance(source, (list, tuple)) else (None, source)
    if "." in name or sys.modules.get(name) is not None:
        return sys.modules.get(name)
    module = types.ModuleType(name)
    module.__file__ = filename or f"<{name}>"
    sys.modules[name] = module
    try:
        exec(compile(text, module.__file__, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def functions_of(obj, depth: int = 0):
    """The plain functions in the job's code: its function slots, pipeline stages, params."""
    if isinstance(obj, types.FunctionType):
        yield obj
    elif depth > 4 or isinstance(obj, (str, bytes, int, float, type, types.ModuleType)):
        return
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from functions_of(value, depth + 1)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            yield from functions_of(value, depth + 1)
    elif hasattr(obj, "__dict__"):
        yield from functions_of(vars(obj), depth + 1)
