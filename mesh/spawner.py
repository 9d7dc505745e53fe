"""The daemon's handle on its worker zygote, and the environment workers start with.

Light on imports (the standard library only), so that ``disco nodaemon`` can start the zygote
before it imports the daemon itself: the zygote's imports (about half a second) then run
beside the daemon's instead of after them, and the node's first task finds a worker ready.
``mesh.executor`` uses what is here.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SPAWN_TIMEOUT_S = 10.0  # a worker the zygote has not forked by then never will be
MAX_ZYGOTE_RESTARTS = 3  # a zygote that died this often is not started again

# The checkout (or install) root that holds ``mesh`` (and, beside it, ``disco``).
_ROOT = str(Path(__file__).resolve().parent.parent)


def package_root() -> str:
    """The directory the daemon's own ``disco`` package was imported from (its parent), which
    its workers (``-m disco.worker.runtime``) must import too; this file's root if the daemon
    has not imported ``disco``."""
    disco = sys.modules.get("disco")
    path = getattr(disco, "__file__", None)
    return str(Path(path).resolve().parent.parent) if path else _ROOT


def worker_env(environ, root: str | None = None, cwd: str | None = None) -> dict:
    """The environment of worker processes: ``root`` (``package_root()``) first on
    ``PYTHONPATH``, the user's entries after it made absolute (against the daemon's ``cwd``),
    and ``PYTHONSAFEPATH`` so that ``python -m`` does not put the worker's working directory
    before them. The worker drops ``PYTHONSAFEPATH`` again once it runs (it is marked by
    ``DISCO_SAFE_PATH_SET``), so programs a task starts see the user's own environment."""
    root = root or package_root()
    cwd = cwd or os.getcwd()
    env = dict(environ)
    given = env.get("PYTHONPATH")
    rest = [os.path.abspath(os.path.join(cwd, p)) for p in given.split(os.pathsep)] if given else []
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([root, *rest]))
    if not env.get("PYTHONSAFEPATH"):
        env["PYTHONSAFEPATH"] = env["DISCO_SAFE_PATH_SET"] = "1"
    return env


class Forked:
    """A worker the zygote forks: ``poll``, ``send_signal``, ``wait`` as ``subprocess.Popen``
    has them; its pid and its exit come from the zygote's reports. The daemon does not wait
    for the fork: ``pid`` is None until the zygote has said it (a signal sent before then
    is sent when it does)."""

    def __init__(self, wid: str, zygote: "Zygote"):
        self.wid, self.zygote = wid, zygote
        self.asked = time.monotonic()

    @property
    def known_pid(self) -> int | None:
        """The pid if the zygote has said it, without reading its pipe (for other threads)."""
        return self.zygote.pids.get(self.wid)

    @property
    def pid(self) -> int | None:
        if self.known_pid is None:
            self.zygote.pump()
        return self.known_pid

    def poll(self) -> int | None:
        self.zygote.pump()
        pid = self.known_pid
        if pid is None:
            if not self.zygote.alive() or time.monotonic() - self.asked > SPAWN_TIMEOUT_S:
                return -signal.SIGKILL  # never forked, and never will be
            return None
        if pid in self.zygote.exits:
            return self.zygote.exits[pid]
        if not self.zygote.alive() and not _pid_alive(pid):
            return -signal.SIGKILL  # its zygote is gone and so is it
        return None

    def send_signal(self, sig: int) -> None:
        pid = self.pid
        if pid is None:
            self.zygote.signals[self.wid] = sig
        else:
            os.kill(pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("worker", timeout)
            time.sleep(0.01)


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours no longer runs
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Zygote:
    """The node's worker zygote (``disco.worker.zygote``), started at the first spawn (or
    before, by ``start_early``)."""

    def __init__(self, argv: list[str], env: dict, cwd: Path, log_path: Path):
        self.argv, self.env, self.cwd, self.log_path = argv, env, cwd, log_path
        self.proc: subprocess.Popen | None = None
        self.control: socket.socket | None = None  # our end of its stdin (SOCK_SEQPACKET)
        self.exits: dict[int, int] = {}
        self.pids: dict[str, int] = {}  # worker id -> pid, as the zygote says them
        self.signals: dict[str, int] = {}  # worker id -> a signal to send once its pid is known
        self.abandoned: set[str] = set()  # buried before their pid came: killed when it does
        self.restarts = 0
        self._buf = b""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, wid: str, channel_fd: int) -> Forked | None:
        """Ask for a worker that talks over ``channel_fd`` (the zygote gets a copy: the caller
        closes its own); None if the zygote cannot be asked (the caller starts one itself).
        The fork happens meanwhile: the daemon does not wait for it."""
        if not self.alive():
            if self.proc is not None:
                self.restarts += 1
            if self.restarts > MAX_ZYGOTE_RESTARTS:
                return None  # it keeps dying: workers are started as interpreters of their own
            self.start()
        try:
            socket.send_fds(self.control, [f"spawn {wid}".encode()], [channel_fd])
        except OSError:  # gone, or not reading (its queue is full): the caller starts one
            return None
        return Forked(wid, self)

    def start(self) -> None:
        if self.control is not None:
            self.control.close()
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.setblocking(False)  # a zygote that stopped reading never blocks the daemon
        try:
            with open(self.log_path, "ab") as err:
                self.proc = subprocess.Popen(self.argv, env=self.env, stdin=theirs.fileno(),
                                             stdout=subprocess.PIPE, stderr=err, cwd=self.cwd)
        finally:
            theirs.close()
        os.set_blocking(self.proc.stdout.fileno(), False)

    def pump(self) -> None:
        if self.proc is None:
            return
        try:
            data = self.proc.stdout.read()
        except (OSError, ValueError):
            data = None
        if data:
            self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            parts = line.decode(errors="replace").split()
            if len(parts) != 3:
                continue
            try:
                number = int(parts[2])
            except ValueError:
                continue
            if parts[0] == "exit":
                self.exits[int(parts[1])] = number
            elif parts[0] == "pid" and parts[1] in self.abandoned:
                self.abandoned.discard(parts[1])
                _signal_quietly(number, signal.SIGKILL)  # given up on: nobody would manage it
            elif parts[0] == "pid":
                self.pids[parts[1]] = number
                if parts[1] in self.signals:
                    _signal_quietly(number, self.signals.pop(parts[1]))

    def forget(self, wid: str, pid: int | None) -> None:
        """A buried worker's entries (one never forked yet is killed if it ever is)."""
        self.pids.pop(wid, None)
        self.signals.pop(wid, None)
        if pid is not None:
            self.exits.pop(pid, None)
        else:
            self.abandoned.add(wid)

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()  # it exits at EOF
            self.control = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def zygote_for(data_dir: Path, node: str, address: str) -> Zygote:
    """The zygote of the node ``node`` (at ``address``) over ``data_dir``, not started yet."""
    log = data_dir / "logs" / "workers.log"
    return Zygote([sys.executable, "-m", "disco.worker.zygote", str(data_dir), node, address,
                   str(log)], worker_env(os.environ), data_dir, log)


def start_early(data_dir: Path, node: str, address: str) -> Zygote | None:
    """The node's zygote, started now (the node's executor takes it over); None if it cannot
    be (the executor starts one at its first spawn, as without this)."""
    zygote = zygote_for(data_dir, node, address)
    zygote.env.pop("DISCO_EMBEDDED_BY", None)  # the daemon's own, not its workers'
    try:
        zygote.start()  # its log's directory is the caller's to make
    except OSError:
        return None
    return zygote
