"""mesh.executor.worker_env: workers import the daemon's own ``disco``, whatever the user's
PYTHONPATH or working directory holds."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import disco
from mesh.executor import package_root, worker_env

pytestmark = pytest.mark.timeout(60)


def test_package_root_is_where_the_daemons_disco_came_from():
    assert Path(package_root()) == Path(disco.__file__).resolve().parent.parent


def test_root_comes_first_and_user_entries_follow_made_absolute(tmp_path):
    env = worker_env({"PYTHONPATH": f"/elsewhere/checkout{os.pathsep}rel{os.pathsep}"},
                     root="/the/root", cwd="/home/u")
    assert env["PYTHONPATH"].split(os.pathsep) == ["/the/root", "/elsewhere/checkout",
                                                   "/home/u/rel", "/home/u"]
    assert env["PYTHONSAFEPATH"] == "1" and env["DISCO_SAFE_PATH_SET"] == "1"


def test_no_user_path_gives_the_root_alone():
    env = worker_env({}, root="/r", cwd="/c")
    assert env["PYTHONPATH"] == "/r"


def test_a_users_own_safe_path_is_kept_unmarked():
    env = worker_env({"PYTHONSAFEPATH": "1"}, root="/r", cwd="/c")
    assert "DISCO_SAFE_PATH_SET" not in env


def test_a_worker_started_so_imports_the_real_disco_despite_fakes(tmp_path):
    """A fake ``disco`` package in the worker's directory and in a PYTHONPATH entry."""
    for place in (tmp_path / "cwd", tmp_path / "other"):
        (place / "disco").mkdir(parents=True)
        (place / "disco" / "__init__.py").write_text("raise ImportError('fake disco')\n")
    env = worker_env({**os.environ, "PYTHONPATH": str(tmp_path / "other")},
                     cwd=str(tmp_path / "cwd"))
    probe = [sys.executable, "-c", "import disco; print(disco.__file__)"]
    out = subprocess.run(probe, env=env, cwd=tmp_path / "cwd", capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == Path(disco.__file__).resolve()
    unsafe = {k: v for k, v in env.items() if k != "PYTHONSAFEPATH"}  # the check can fail
    out = subprocess.run(probe, env=unsafe, cwd=tmp_path / "cwd", capture_output=True,
                         text=True, timeout=30)
    assert "fake disco" in out.stderr
