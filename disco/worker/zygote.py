"""The worker zygote: one warm process per node that forks worker processes on request.

Starting a Python worker from scratch (the interpreter, then ``disco``, ``zmq``, ``cloudpickle``
and the task runner) takes about a quarter of a second; forking a process that has already
imported all of it takes a few milliseconds. The node daemon starts one zygote (``python -m
disco.worker.zygote DATA NODE ADDRESS LOG``) with a ``SOCK_SEQPACKET`` unix socket as its stdin
and a pipe as its stdout, one message per packet or line:

- daemon -> zygote: a ``spawn WID`` packet carrying one file descriptor (``SCM_RIGHTS``), the
  worker's end of its channel to the daemon (``mesh.channel``); the zygote forks a worker with
  that identity and channel, closes its own copy, and answers ``pid WID PID``;
- zygote -> daemon: ``exit PID CODE`` when a worker exits (``CODE`` negative for a signal, as
  ``subprocess`` has it).

The zygote holds no threads and no ZeroMQ context, so forking is safe; each worker makes what
it needs after the fork, opens the node's worker log as its stdout and stderr, and serves as
``disco.worker.runtime`` does. The zygote exits when its stdin closes (the daemon is gone); its
workers then see their channel close and exit too.
"""
from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys

from disco.worker import runtime  # everything a worker needs, imported once, before any fork


def _child(channel_fd: int, wid: str, data_dir: str, node: str, address: str, log: str,
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
    return runtime.main([f"fd:{channel_fd}", wid, data_dir, node, address, str(zygote)])


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
    data_dir, node, address, log = argv
    me = os.getpid()
    out = sys.stdout
    control = socket.socket(fileno=sys.stdin.fileno())  # SOCK_SEQPACKET: one spawn a packet
    # what is imported by now lives as long as every worker: out of the collector's sight, so
    # that no worker's full collection walks it (or writes to its shared pages)
    gc.freeze()
    while True:
        ready, _, _ = select.select([control], [], [], 0.2)
        _reap(out)
        if not ready:
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(control, 4096, 1)
        except InterruptedError:
            continue
        except OSError:
            return 0
        if not data and not fds:
            return 0  # the daemon is gone
        parts = data.decode(errors="replace").split()
        if len(parts) != 2 or parts[0] != "spawn" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        wid, channel_fd = parts[1], fds[0]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                control.detach()  # fd 0 becomes /dev/null in the child; the socket is not its
                code = _child(channel_fd, wid, data_dir, node, address, log, me)
            finally:
                os._exit(code)
        os.close(channel_fd)  # the worker's now: the daemon sees it close when the worker goes
        out.write(f"pid {wid} {pid}\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
