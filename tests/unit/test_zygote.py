"""The worker zygote (disco/worker/zygote.py) as the executor drives it: fork on request, each
worker on the channel it was handed, exits reported, gone with its daemon."""
from __future__ import annotations

import os
import signal
import sys
import time


from mesh import channel as ch
from mesh import message as m
from mesh.executor import _ROOT, Zygote


class _Zygote(Zygote):
    """The executor's zygote; ``spawn(wid)`` makes the worker's channel as the executor does
    and keeps the daemon's end in ``ends`` (closed at ``stop``)."""

    def spawn(self, wid: str):
        ours, theirs = ch.pair()
        try:
            worker = super().spawn(wid, theirs.fileno())
        finally:
            theirs.close()
        self.ends[wid] = ch.Channel(ours)
        return worker

    def stop(self) -> None:
        super().stop()
        for end in self.ends.values():
            end.close()


def zygote(tmp_path) -> _Zygote:
    (tmp_path / "logs").mkdir()
    env = {**os.environ, "PYTHONPATH": _ROOT}
    log = tmp_path / "logs" / "workers.log"
    z = _Zygote([sys.executable, "-m", "disco.worker.zygote",
                 str(tmp_path), "n", "127.0.0.1:1", str(log)], env, tmp_path, log)
    z.ends = {}
    return z


def pid_of(worker) -> int:
    """The worker's pid, once the zygote has said it (spawn does not wait for the fork)."""
    deadline = time.monotonic() + 10
    while worker.pid is None:
        assert time.monotonic() < deadline, "the zygote never said the worker's pid"
        time.sleep(0.005)
    return worker.pid


def test_workers_are_forked_and_their_exits_reported(tmp_path):
    z = zygote(tmp_path)
    try:
        first = z.spawn("w1")
        assert first is not None and first.poll() is None
        second = z.spawn("w2")
        assert second is not None and pid_of(second) != pid_of(first)
        # both are children of the one zygote, not interpreters of their own
        for w in (first, second):
            assert int(open(f"/proc/{w.pid}/stat").read().rsplit(")", 1)[1].split()[1]) == \
                z.proc.pid
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == -signal.SIGTERM
        assert second.poll() is None
        second.send_signal(signal.SIGKILL)
        assert second.wait(10) == -signal.SIGKILL
    finally:
        z.stop()
    assert not z.alive()


def test_workers_go_when_their_zygote_goes(tmp_path):
    z = zygote(tmp_path)
    worker = z.spawn("w1")
    z.proc.kill()
    z.proc.wait()
    deadline = time.monotonic() + 10
    while worker.poll() is None:  # the worker sees its parent gone (within its poll period)
        assert time.monotonic() < deadline, "the worker outlived its zygote"
        time.sleep(0.05)


def test_a_forked_worker_says_ready_on_its_own_channel(tmp_path):
    z = zygote(tmp_path)
    try:
        z.spawn("w1")
        z.spawn("w2")
        for wid in ("w2", "w1"):
            end = z.ends[wid]
            assert end.poll(20_000), f"{wid} never said it was ready"
            (frame,) = end.receive() or [end.recv()]
            msg = m.decode(frame)
            assert isinstance(msg, m.WorkerReady) and msg.worker == wid
    finally:
        z.stop()


def test_a_worker_whose_daemon_end_is_gone_does_not_hang(tmp_path):
    """Forked, then the daemon's end of its channel closes (the daemon is gone): it exits
    although its zygote still runs."""
    z = zygote(tmp_path)
    try:
        worker = z.spawn("w1")
        pid_of(worker)
        z.ends["w1"].close()
        deadline = time.monotonic() + 10
        while worker.poll() is None:
            assert time.monotonic() < deadline, "the worker hangs on a channel nobody serves"
            time.sleep(0.05)
        assert worker.poll() == 0
    finally:
        z.stop()


def test_a_signal_sent_before_the_fork_is_reported_reaches_the_worker(tmp_path):
    z = zygote(tmp_path)
    try:
        pid_of(z.spawn("w0"))  # the zygote is up
        z.proc.send_signal(signal.SIGSTOP)  # so it cannot fork w1 before we signal it
        worker = z.spawn("w1")
        worker.send_signal(signal.SIGKILL)
        assert worker.known_pid is None and z.signals == {"w1": signal.SIGKILL}  # kept
        z.proc.send_signal(signal.SIGCONT)
        assert worker.wait(10) == -signal.SIGKILL and not z.signals  # sent once forked
    finally:
        z.proc.send_signal(signal.SIGCONT)
        z.stop()


def test_a_worker_never_forked_counts_as_dead(tmp_path, monkeypatch):
    from mesh import spawner
    z = zygote(tmp_path)
    try:
        pid_of(z.spawn("w0"))  # the zygote is up
        z.proc.send_signal(signal.SIGSTOP)  # and now cannot fork
        monkeypatch.setattr(spawner, "SPAWN_TIMEOUT_S", 0.2)
        worker = z.spawn("w1")
        assert worker.poll() is None
        assert worker.wait(10) == -signal.SIGKILL and worker.pid is None
    finally:
        z.proc.send_signal(signal.SIGCONT)
        z.stop()


def test_a_worker_given_up_on_before_its_fork_is_killed_when_the_fork_is_reported(tmp_path):
    z = zygote(tmp_path)
    try:
        pid_of(z.spawn("w0"))  # the zygote is up
        z.proc.send_signal(signal.SIGSTOP)
        late = z.spawn("w1")
        z.forget("w1", None)  # buried without a pid (as after SPAWN_TIMEOUT_S)
        z.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while "w1" in z.abandoned:  # its pid line comes and the worker is killed
            assert time.monotonic() < deadline, "the late fork was never reported"
            z.pump()
            time.sleep(0.01)
        assert late.known_pid is None  # never managed
        exits = {}
        while not exits:  # the zygote reaps it: killed by a signal
            assert time.monotonic() < deadline
            z.pump()
            exits = {p: c for p, c in z.exits.items() if c == -signal.SIGKILL}
            time.sleep(0.01)
    finally:
        z.proc.send_signal(signal.SIGCONT)
        z.stop()


def test_a_zygote_that_keeps_dying_is_given_up_for_interpreters(tmp_path):
    from mesh import spawner
    z = zygote(tmp_path)
    for _ in range(spawner.MAX_ZYGOTE_RESTARTS + 1):
        assert z.spawn("w") is not None
        z.proc.kill()
        z.proc.wait()
    assert z.spawn("w") is None  # the executor starts its own interpreter then


def test_the_zygote_keeps_no_channel_and_a_killed_worker_closes_its_own(tmp_path):
    z = zygote(tmp_path)
    try:
        pid_of(z.spawn("w0"))  # the zygote is up
        fds = len(os.listdir(f"/proc/{z.proc.pid}/fd"))
        workers = [z.spawn(f"w{i}") for i in range(1, 11)]
        for w in workers:
            pid_of(w)
        assert len(os.listdir(f"/proc/{z.proc.pid}/fd")) == fds  # each end went to its worker
        workers[0].send_signal(signal.SIGKILL)
        end = z.ends["w1"]
        deadline = time.monotonic() + 10
        while not end.closed:  # its ready message, then the end: nobody else holds its end
            assert time.monotonic() < deadline, "a dead worker's channel stayed open"
            end.poll(100)
            end.receive()
    finally:
        z.stop()
