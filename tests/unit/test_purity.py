"""The cores (scheduler, membership, Raft) are pure: no sockets, clocks, threads, global
randomness or logging.

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
CORES = ["scheduler.core", "mesh.membership", "mesh.raft"]

NEVER_LOADED = {"zmq", "structlog", "socket", "logging", "threading", "random", "asyncio",
                "selectors", "msgpack"}
NEVER_IMPORTED = NEVER_LOADED | {"time", "os", "datetime", "subprocess", "signal", "mesh", "disco"}

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
    assert not top & NEVER_LOADED, sorted(top & NEVER_LOADED)
    new_top = {name.split(".")[0] for name in loaded["new"]}
    own = module.split(".")[0]
    assert own in new_top
    assert not (new_top - {own}) & NEVER_IMPORTED, sorted((new_top - {own}) & NEVER_IMPORTED)


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
    assert not imported & NEVER_IMPORTED, sorted(imported & NEVER_IMPORTED)
