"""Progress while waiting (disco/progress.py): plain lines off a terminal, a live display on
one; notes about the wait itself."""
from __future__ import annotations

import io

from disco.progress import Progress


def reply(done, running, failed=0, pending=0, events=()):
    return {"events": list(events), "counts": {"map": {"pending": pending, "running": running,
                                                       "done": done, "failed": failed}}}


def test_plain_lines_when_counts_change_and_for_notable_events():
    out = io.StringIO()
    p = Progress("J@1", out, live=False)
    p.show(reply(0, 2, pending=2))
    p.show(reply(0, 2, pending=2))  # no change: no line
    p.show(reply(1, 2, failed=1, pending=1, events=[
        {"type": "task_failed", "msg": "ValueError: x", "node": "h:1"}]))
    p.note("the master changed")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("J@1: map 0/4 done, 2 running, 0 failed")
    assert lines[1] == "J@1: task_failed [h:1]: ValueError: x"
    assert lines[2].startswith("J@1: map 1/4 done, 2 running, 1 failed")
    assert lines[3] == "J@1: the master changed"
    assert len(lines) == 4


def test_the_jobs_end_is_said_after_the_counts_that_led_to_it():
    out = io.StringIO()
    p = Progress("J@1", out, live=False)
    p.show(reply(3, 1))
    p.show(reply(4, 0, events=[{"type": "stage_done", "msg": "map done"},
                               {"type": "job_done", "msg": "finished"}]))
    lines = out.getvalue().splitlines()[1:]
    assert lines[0] == "J@1: stage_done: map done"
    assert lines[1].startswith("J@1: map 4/4 done, 0 running")
    assert lines[2] == "J@1: job_done: finished"


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_live_display_on_a_terminal():
    out = Tty()
    p = Progress("J@1", out)
    assert p._live is not None
    p.show(reply(3, 1, failed=2, events=[{"type": "task_failed", "msg": "boom"}]))
    p.close()
    text = out.getvalue()
    assert "J@1 map" in text and "3/4" in text and "1 running, 2 failed" in text
    assert "task_failed: boom" in text


def test_a_transfer_bar_on_a_terminal_and_nothing_elsewhere():
    from disco.progress import Transfer
    out = Tty()
    bar = Transfer("push data:x", 4 << 20, out)
    bar.advance(1 << 20)
    bar.advance(3 << 20)
    bar.note("a.txt: 3 copies")
    bar.close()
    text = out.getvalue()
    assert "push data:x" in text and "4.2/4.2 MB" in text and "a.txt: 3 copies" in text
    plain = io.StringIO()
    bar = Transfer("push data:x", 10, plain)
    bar.advance(10)
    bar.note("quiet")
    bar.close()
    assert plain.getvalue() == "" and bar.done == 10
