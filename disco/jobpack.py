"""The job pack: what a client sends to run a job.

A msgpack map ``{"header": {...}, "code": bytes, "files": {name: bytes}}``. The header is plain
data the master reads (inputs, stages, partitions, names); ``code`` is a cloudpickle of the job's
functions and params, only ever unpickled inside worker processes. The user's own modules
(``__main__``, modules next to the script, ``required_modules``) are pickled by value so that
nodes need no copy of the user's code.
"""
from __future__ import annotations

import os
import sys
import sysconfig
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
_OWN_PACKAGES = ("disco", "mesh", "scheduler", "shuffle", "storage")


def is_user_module(module) -> bool:
    """True for a module the user wrote (not stdlib, not installed, not ours)."""
    name = getattr(module, "__name__", "")
    path = getattr(module, "__file__", None)
    if not path or name.split(".")[0] in _OWN_PACKAGES or name == "__main__":
        return False
    real = str(Path(path).resolve())
    return not real.startswith(_SYSTEM_DIRS) and "site-packages" not in real


def _register_by_value(required_modules) -> None:
    for module in list(sys.modules.values()):
        if module is not None and is_user_module(module):
            cloudpickle.register_pickle_by_value(module)
    for entry in required_modules or ():
        name = entry[0] if isinstance(entry, (tuple, list)) else entry
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError as exc:
                raise UsageError(f"required module {name!r} cannot be imported: {exc}") from None
        if getattr(module, "__file__", None) and name.split(".")[0] not in _OWN_PACKAGES:
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:
                pass


def _read_files(required_files) -> dict:
    files = {}
    for path in required_files or ():
        try:
            files[os.path.basename(path)] = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"required file {path!r} cannot be read: {exc.strerror}") from None
    return files


def build(header: dict, code: dict, required_modules=(), required_files=()) -> bytes:
    """Pack a job: ``header`` is plain data, ``code`` a dict of functions and params."""
    _register_by_value(required_modules)
    try:
        pickled = cloudpickle.dumps(code, protocol=5)
    except Exception as exc:
        raise UsageError(f"the job's functions or params cannot be pickled: {exc}") from None
    header = {**header, "python": PYTHON}
    return msgpack.packb({"header": header, "code": pickled,
                          "files": _read_files(required_files)}, use_bin_type=True)


def load(blob: bytes) -> tuple[dict, dict, dict]:
    """Unpack a job pack into (header, code, files); only workers call this."""
    pack = msgpack.unpackb(blob, raw=False)
    header = pack["header"]
    if header.get("python") != PYTHON:
        raise UsageError(f"job was packed by Python {header.get('python')} but this worker "
                         f"runs Python {PYTHON}")
    import pickle
    return header, pickle.loads(pack["code"]), pack.get("files", {})
