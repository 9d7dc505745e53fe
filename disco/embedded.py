"""An embedded single-node cluster for the life of the client process.

``DISCO_MASTER=local`` (or ``local:N``) starts a real node daemon as a child process on free
loopback ports with a temporary data dir, and stops it (and removes the dir) at exit. Should
this process end without its exit handlers (SIGKILL, ``os._exit``), the node sees its parent
gone (``DISCO_EMBEDDED_BY``) within a second and stops by itself.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import disco
from common.error import PortInUse
from disco.error import CommError

_ROOT = str(Path(disco.__file__).resolve().parent.parent)
_clusters: dict[int, "Embedded"] = {}


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port P such that P, P+1 and P+2 (control, data, HTTP) are all free on ``host`` now."""
    for _ in range(100):
        with socket.socket() as a:
            a.bind((host, 0))
            port = a.getsockname()[1]
            if port >= 65533:
                continue
            with socket.socket() as b, socket.socket() as c:
                try:
                    b.bind((host, port + 1))
                    c.bind((host, port + 2))
                except OSError:
                    continue
                return port
    raise CommError("no three free consecutive loopback ports")


def start_on_free_ports(spawn, ready, attempts: int = 5):
    """``spawn(port)`` a node daemon on a free port triple (``free_port_pair``) and return it
    once ``ready(it)`` returns; on another triple if the daemon exited with
    ``PortInUse.EXIT_CODE``: a port found free was taken before it bound it (another process's
    outgoing connection takes its port from the same range). ``spawn``'s result has the
    daemon's ``proc``; ``ready`` raises when the daemon did not come up."""
    for attempt in range(attempts):
        started = spawn(free_port_pair())
        try:
            ready(started)
            return started
        except Exception:
            if started.proc.poll() != PortInUse.EXIT_CODE or attempt == attempts - 1:
                raise
    raise ValueError(f"attempts must be 1 or more, not {attempts}")


class Embedded:
    def __init__(self, slots: int):
        self.slots = slots
        self.data = tempfile.mkdtemp(prefix="disco-local-")
        env = self._env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p))
        env.pop("DISCO_MASTER", None)
        env["DISCO_EMBEDDED_BY"] = str(os.getpid())  # the node stops when this process is gone
        try:
            start_on_free_ports(self._spawn, Embedded._wait_ready)
        except BaseException:
            shutil.rmtree(self.data, ignore_errors=True)
            raise

    def _spawn(self, port: int) -> "Embedded":
        self.port, self.address = port, f"127.0.0.1:{port}"
        with open(Path(self.data) / "embedded.err", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "disco.cli", "nodaemon", "--no-console", "--port",
                 str(port), "--data", self.data, "--workers", str(self.slots),
                 "--host", "127.0.0.1"],
                env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        return self

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        from disco.client import await_started
        if await_started(self.proc, self.address, Path(self.data) / "disco.pid",
                         time.monotonic() + timeout_s):
            return
        if self.proc.poll() is not None:
            err = (Path(self.data) / "embedded.err").read_text(errors="replace")[-2000:]
            raise CommError(f"the embedded node exited with status {self.proc.returncode}: {err}")
        self.stop()
        raise CommError(f"the embedded node did not answer within {timeout_s:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def data_dir_of(address: str) -> Path | None:
    """The data dir of this process's embedded node at ``address`` (None for other nodes)."""
    for emb in _clusters.values():
        if emb.address == address and emb.proc.poll() is None:
            return Path(emb.data)
    return None


def cluster(slots: int | None) -> str:
    """The address of this process's embedded cluster with ``slots`` task slots."""
    slots = slots or max(2, os.cpu_count() or 2)
    if slots not in _clusters:
        _clusters[slots] = Embedded(slots)
    return _clusters[slots].address


@atexit.register
def _stop_all() -> None:
    for emb in _clusters.values():
        emb.stop()
    _clusters.clear()
