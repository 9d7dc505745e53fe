"""The worker zygote: one warm process per node that forks worker processes on request.

Starting a Python worker from scratch (the interpreter, then ``disco``, ``zmq``, ``cloudpickle``
and the task runner) takes about a quarter of a second; forking a process that has already
imported all of it takes a few milliseconds. The node daemon starts one zygote (``python -m
disco.worker.zygote ENDPOINT DATA NODE ADDRESS LOG``) and talks to it over its stdin and stdout,
one line per message:

- daemon -> zygote: ``spawn WID`` forks a worker with that identity; the zygote answers
  ``pid WID PID``;
- zygote -> daemon: ``exit PID CODE`` when a worker exits (``CODE`` negative for a signal, as
  ``subprocess`` has it).

The zygote holds no threads and no ZeroMQ context, so forking is safe; each worker creates its
own after the fork, opens the node's worker log as its stdout and stderr, and serves as
``disco.worker.runtime`` does. The zygote exits when its stdin closes (the daemon is gone); its
workers then see their parent gone and exit too.
"""
from __future__ import annotations

import os
import select
import signal
import sys

from disco.worker import runtime  # everything a worker needs, imported once, before any fork


def _child(endpoint: str, wid: str, data_dir: str, node: str, address: str, log: str,
           zygote: int) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(data_dir)
    # the zygote's pid, taken before the fork: should it die before we ask, we still notice
    return runtime.main([endpoint, wid, data_dir, node, address, str(zygote)])


def _reap(out) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        out.write(f"exit {pid} {code}\n")
        out.flush()


def main(argv: list[str]) -> int:
    endpoint, data_dir, node, address, log = argv
    me = os.getpid()
    out = sys.stdout
    stdin = sys.stdin.fileno()
    buf = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.2)
        _reap(out)
        if not ready:
            continue
        data = os.read(stdin, 4096)
        if not data:
            return 0  # the daemon is gone
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            parts = line.decode().split()
            if len(parts) != 2 or parts[0] != "spawn":
                continue
            wid = parts[1]
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(endpoint, wid, data_dir, node, address, log, me)
                finally:
                    os._exit(code)
            out.write(f"pid {wid} {pid}\n")
            out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
