"""``disco.client.await_started``: how ``disco start`` and ``local:N`` wait for the node daemon
they started (its pid file first, then ``Hello``)."""
from __future__ import annotations

import threading
import time

import pytest

from disco import client

pytestmark = pytest.mark.timeout(30)


class Proc:
    """What ``await_started`` uses of a ``subprocess.Popen``: ``pid`` and ``poll()``."""

    def __init__(self, pid: int, code=None):
        self.pid, self.code = pid, code

    def poll(self):
        return self.code


def test_it_asks_the_node_once_its_pid_file_names_it_and_not_before(tmp_path, monkeypatch):
    monkeypatch.setattr(client, "ASK_EVERY_S", 3600.0)  # no asking on a timer
    asked = []
    monkeypatch.setattr(client, "answers",
                        lambda address, timeout_s, pid=None: asked.append((address, pid)) or True)
    pid_file = tmp_path / "disco.pid"
    pid_file.write_text("999999\n")  # a node that ran from here before
    written = threading.Event()

    def node_comes_up():
        time.sleep(0.05)
        assert not asked  # the stale pid file was no reason to ask
        pid_file.write_text("4242\n")
        written.set()

    threading.Thread(target=node_comes_up).start()
    assert client.await_started(Proc(4242), "127.0.0.1:9", pid_file, time.monotonic() + 20)
    assert written.is_set() and asked == [("127.0.0.1:9", 4242)]


def test_it_asks_again_only_after_a_pause_when_the_node_does_not_answer_as_itself(
        tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(client, "answers",
                        lambda address, timeout_s, pid=None: asked.append(1) and False)
    (tmp_path / "disco.pid").write_text("4242\n")
    t0 = time.monotonic()
    assert not client.await_started(Proc(4242), "127.0.0.1:9", tmp_path / "disco.pid",
                                    t0 + 0.5)
    took = time.monotonic() - t0
    assert 1 <= len(asked) <= took / client.RETRY_S + 1  # no asking as fast as it can


def test_it_still_asks_now_and_then_when_the_pid_file_cannot_tell(tmp_path, monkeypatch):
    monkeypatch.setattr(client, "ASK_EVERY_S", 0.02)
    answers = iter([False, False, True])
    monkeypatch.setattr(client, "answers", lambda address, timeout_s, pid=None: next(answers))
    assert client.await_started(Proc(4242), "127.0.0.1:9", tmp_path / "missing.pid",
                                time.monotonic() + 20)
    assert next(answers, "used up") == "used up"


def test_it_gives_up_when_the_node_exits_or_the_deadline_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(client, "answers", lambda *a, **k: pytest.fail("asked a dead node"))
    (tmp_path / "disco.pid").write_text("4242\n")
    assert not client.await_started(Proc(4242, code=98), "127.0.0.1:9", tmp_path / "disco.pid",
                                    time.monotonic() + 20)
    monkeypatch.setattr(client, "answers", lambda *a, **k: False)
    t0 = time.monotonic()
    assert not client.await_started(Proc(4242), "127.0.0.1:9", tmp_path / "disco.pid",
                                    t0 + 0.2)
    assert time.monotonic() - t0 < 10
