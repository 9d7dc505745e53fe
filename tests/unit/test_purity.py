"""The pure modules (membership, Raft, the node core and its vocabulary, the job table, the
journal entries, the scheduler, the DDFS ring, tag store and repair planner, partitioning and
the record codec) do no I/O: no sockets,
clocks, threads, files, global randomness or logging.

Checked twice: by importing it in a fresh interpreter and looking at what got loaded, and by
reading its import statements with ``ast`` (which also catches ``time`` and ``os``, modules the
interpreter has loaded before any user code runs).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# State machines import nothing of the project but each other; codecs may use their libraries.
STATE_MACHINES = ["scheduler.core", "scheduler.entry", "scheduler.jobtable", "mesh.membership",
                  "mesh.raft", "storage.ring", "storage.tags", "storage.repair"]
NODE_CORE = ["mesh.node", "mesh.event", "mesh.request", "mesh.ddfs"]  # compose the state machines above
CODECS = ["shuffle.partition", "shuffle.record"]
CORES = STATE_MACHINES + NODE_CORE + CODECS

IO = {"zmq", "structlog", "socket", "logging", "threading", "random", "asyncio", "selectors",
      "subprocess", "signal", "shutil", "tempfile", "multiprocessing"}
NEVER_LOADED = {module: IO | ({"msgpack"} if module in STATE_MACHINES else set())
                for module in CORES}
# modules any interpreter has loaded before user code runs: only the source can tell
PRELOADED = {"time", "os", "pathlib"}
NEVER_IMPORTED = {module: NEVER_LOADED[module] | PRELOADED | {"disco"} |
                  ({"mesh", "shuffle"} if module in STATE_MACHINES else set()) |
                  ({"storage"} if module.startswith("scheduler.") else set())
                  for module in CORES}
# the node core may import only pure modules of mesh (and of scheduler, common)
PURE_MESH = {"mesh.membership", "mesh.raft", "mesh.message", "mesh.event", "mesh.request",
             "mesh.node", "mesh.ddfs"}
PURE_STORAGE = {"storage", "storage.ring", "storage.tags", "storage.repair"}

PROBE = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps({"new": sorted(set(sys.modules) - before), "all": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("module", CORES)
def test_importing_the_core_loads_no_io_clock_or_logging_module(module):
    proc = subprocess.run([sys.executable, "-c", PROBE.replace("{module}", module)], cwd=ROOT,
                          capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(proc.stdout)
    top = {name.split(".")[0] for name in loaded["all"]}
    assert not top & NEVER_LOADED[module], sorted(top & NEVER_LOADED[module])
    new_top = {name.split(".")[0] for name in loaded["new"]}
    own = module.split(".")[0]
    assert own in new_top
    bad = (new_top - {own}) & NEVER_IMPORTED[module]
    assert not bad, sorted(bad)
    if module in NODE_CORE:
        mesh_loaded = {name for name in loaded["new"] if name.startswith("mesh.")}
        assert mesh_loaded <= PURE_MESH, sorted(mesh_loaded - PURE_MESH)
        storage_loaded = {name for name in loaded["new"] if name.split(".")[0] == "storage"}
        assert storage_loaded <= PURE_STORAGE, sorted(storage_loaded - PURE_STORAGE)


@pytest.mark.parametrize("module", CORES)
def test_core_source_imports_only_pure_modules(module):
    imported = set()
    source = ROOT / (module.replace(".", "/") + ".py")
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported, "the walk found no imports at all"
    assert not imported & NEVER_IMPORTED[module], sorted(imported & NEVER_IMPORTED[module])


@pytest.mark.parametrize("forbidden", ["os", "time", "zmq", "threading", "socket", "logging",
                                       "random"])
def test_the_check_catches_each_forbidden_import(tmp_path, forbidden):
    """The test above would fail: a module importing ``forbidden`` is caught by the walk."""
    imported = {alias.name for node in ast.walk(ast.parse(f"import {forbidden}\n"))
                if isinstance(node, ast.Import) for alias in node.names}
    assert imported & NEVER_IMPORTED["mesh.node"] == {forbidden}
